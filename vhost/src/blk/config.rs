//! virtio-blk feature bits and the device configuration space.

/// Bits of the virtio-blk device.
pub mod feature {
    /// `seg_max` is valid.
    pub const SEG_MAX: u64 = 1 << 2;
    /// The device is read-only.
    pub const RO: u64 = 1 << 5;
    /// `blk_size` is valid.
    pub const BLK_SIZE: u64 = 1 << 6;
    /// FLUSH is supported.
    pub const FLUSH: u64 = 1 << 9;
    /// `num_queues` is valid.
    pub const MQ: u64 = 1 << 12;
    /// DISCARD is supported.
    pub const DISCARD: u64 = 1 << 13;
    /// WRITE_ZEROES is supported.
    pub const WRITE_ZEROES: u64 = 1 << 14;
    /// Indirect descriptors.
    pub const RING_INDIRECT_DESC: u64 = 1 << 28;
    /// used_event / avail_event notification suppression.
    pub const RING_EVENT_IDX: u64 = 1 << 29;
    /// vhost-user protocol features are negotiated.
    pub const PROTOCOL_FEATURES: u64 = 1 << 30;
    /// A modern (virtio 1.x) device.
    pub const VERSION_1: u64 = 1 << 32;
    /// The packed ring layout.
    pub const RING_PACKED: u64 = 1 << 34;
}

/// Size of `struct virtio_blk_config` up to and including the write-zeroes fields (what
/// QEMU 7.2's vhost-user-blk device asks for); GET_CONFIG never returns more of it.
pub const CONFIG_SIZE: usize = 60;

/// Largest number of data segments in one request advertised as `seg_max`.
pub const SEG_MAX: u32 = 126;

/// Largest discard / write-zeroes, in 512-byte sectors (one request of at most 4 GiB - 512).
pub const MAX_DISCARD_SECTORS: u32 = u32::MAX >> 9;

/// Most queues a controller offers.
pub const MAX_QUEUES: u16 = 16;

/// What the device needs to know about its bdev to describe itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlkGeometry {
    /// Bdev block size in bytes.
    pub block_size: u32,
    /// Bdev size in blocks.
    pub num_blocks: u64,
    /// Number of queues offered.
    pub num_queues: u16,
    /// Read-only controller.
    pub readonly: bool,
    /// The bdev supports flush.
    pub flush: bool,
    /// The bdev supports unmap.
    pub discard: bool,
    /// The bdev supports write-zeroes.
    pub write_zeroes: bool,
    /// Offer the packed ring.
    pub packed: bool,
}

impl BlkGeometry {
    /// Capacity in 512-byte sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.num_blocks.saturating_mul(u64::from(self.block_size)) / 512
    }

    /// The virtio feature bits this device offers.
    pub fn features(&self) -> u64 {
        let mut f = feature::VERSION_1
            | feature::RING_EVENT_IDX
            | feature::RING_INDIRECT_DESC
            | feature::PROTOCOL_FEATURES
            | feature::SEG_MAX
            | feature::BLK_SIZE
            | feature::MQ;
        if self.packed {
            f |= feature::RING_PACKED;
        }
        if self.readonly {
            f |= feature::RO;
        } else {
            if self.discard {
                f |= feature::DISCARD;
            }
            if self.write_zeroes {
                f |= feature::WRITE_ZEROES;
            }
        }
        if self.flush {
            f |= feature::FLUSH;
        }
        f
    }

    /// The configuration space, little-endian, `CONFIG_SIZE` bytes.
    pub fn config_space(&self) -> [u8; CONFIG_SIZE] {
        let mut c = [0u8; CONFIG_SIZE];
        put(&mut c, 0, &self.capacity_sectors().to_le_bytes());
        // size_max (8) unused: no SIZE_MAX feature.
        put(&mut c, 12, &SEG_MAX.to_le_bytes());
        // geometry (16..20) unused.
        put(&mut c, 20, &self.block_size.to_le_bytes());
        // topology (24..32) unused; writeback (32) 0.
        put(&mut c, 34, &self.num_queues.to_le_bytes());
        let sectors_per_block = (self.block_size / 512).max(1);
        if self.discard && !self.readonly {
            put(&mut c, 36, &MAX_DISCARD_SECTORS.to_le_bytes());
            put(&mut c, 40, &1u32.to_le_bytes());
            put(&mut c, 44, &sectors_per_block.to_le_bytes());
        }
        if self.write_zeroes && !self.readonly {
            put(&mut c, 48, &MAX_DISCARD_SECTORS.to_le_bytes());
            put(&mut c, 52, &1u32.to_le_bytes());
            c[56] = 0; // write_zeroes_may_unmap
        }
        c
    }

    /// GET_CONFIG: `size` bytes from `offset`. Bytes past the end of the structure read as
    /// zero (the vhost-user framing requires the reply to be exactly as long as the request);
    /// a request that lies wholly past the structure, or exceeds the protocol's 256-byte
    /// config window, is refused.
    pub fn read_config(&self, offset: u32, size: u32) -> Option<Vec<u8>> {
        let (offset, size) = (offset as usize, size as usize);
        if size == 0 || offset >= CONFIG_SIZE || offset + size > 256 {
            return None;
        }
        let space = self.config_space();
        let mut out = vec![0u8; size];
        let n = size.min(CONFIG_SIZE - offset);
        out[..n].copy_from_slice(&space[offset..offset + n]);
        Some(out)
    }
}

fn put(c: &mut [u8], at: usize, bytes: &[u8]) {
    c[at..at + bytes.len()].copy_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    fn geo() -> BlkGeometry {
        BlkGeometry {
            block_size: 4096,
            num_blocks: 1000,
            num_queues: 4,
            readonly: false,
            flush: true,
            discard: true,
            write_zeroes: false,
            packed: false,
        }
    }

    #[test]
    fn config_space_encoding() {
        let c = geo().config_space();
        assert_eq!(u64::from_le_bytes(c[0..8].try_into().unwrap()), 8000);
        assert_eq!(u32::from_le_bytes(c[12..16].try_into().unwrap()), SEG_MAX);
        assert_eq!(u32::from_le_bytes(c[20..24].try_into().unwrap()), 4096);
        assert_eq!(u16::from_le_bytes(c[34..36].try_into().unwrap()), 4);
        assert_eq!(u32::from_le_bytes(c[40..44].try_into().unwrap()), 1);
        assert_eq!(u32::from_le_bytes(c[44..48].try_into().unwrap()), 8);
        assert_eq!(
            u32::from_le_bytes(c[52..56].try_into().unwrap()),
            0,
            "no write zeroes"
        );
    }

    #[test]
    fn features_follow_the_bdev_and_readonly() {
        let f = geo().features();
        assert!(f & feature::DISCARD != 0 && f & feature::WRITE_ZEROES == 0);
        assert!(f & feature::RING_PACKED == 0 && f & feature::RO == 0);
        let ro = BlkGeometry {
            readonly: true,
            packed: true,
            ..geo()
        };
        let f = ro.features();
        assert!(f & feature::RO != 0 && f & feature::DISCARD == 0 && f & feature::RING_PACKED != 0);
        assert_eq!(ro.config_space()[36..60], [0u8; 24]);
    }

    #[test]
    fn get_config_sizes() {
        let g = geo();
        // shorter requests are truncated, never failed
        for size in 1..=CONFIG_SIZE as u32 {
            let v = g.read_config(0, size).unwrap();
            assert_eq!(v[..], g.config_space()[..size as usize]);
        }
        // an offset inside the structure
        assert_eq!(g.read_config(20, 4).unwrap(), 4096u32.to_le_bytes());
        // longer (SPDK's client asks 256): the structure then zeros
        let v = g.read_config(0, 256).unwrap();
        assert_eq!(v.len(), 256);
        assert_eq!(v[..CONFIG_SIZE], g.config_space()[..]);
        assert!(v[CONFIG_SIZE..].iter().all(|b| *b == 0));
        assert!(g.read_config(0, 0).is_none());
        assert!(g.read_config(CONFIG_SIZE as u32, 4).is_none());
        assert!(g.read_config(8, 256).is_none());
    }
}
