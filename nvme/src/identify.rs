//! Identify Controller and Identify Namespace data (4096 bytes each), parsed defensively: the
//! data comes from a device and is checked, never trusted to index memory.

/// What the driver uses of Identify Controller.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CtrlrData {
    /// PCI vendor ID.
    pub vid: u16,
    /// Serial number (trimmed).
    pub serial: String,
    /// Model number (trimmed).
    pub model: String,
    /// Firmware revision (trimmed).
    pub firmware: String,
    /// Maximum data transfer size as a power of two of the minimum page size (0 = no limit).
    pub mdts: u8,
    /// Controller ID.
    pub cntlid: u16,
    /// Optional NVM command support (ONCS).
    pub oncs: u16,
    /// Fused operation support (FUSES bit 0: Compare and Write).
    pub fuses: u16,
    /// Volatile write cache present.
    pub vwc: bool,
    /// Number of namespaces.
    pub nn: u32,
    /// Abort command limit (ACL + 1).
    pub acl: u8,
    /// SGL support (SGLS).
    pub sgls: u32,
}

impl CtrlrData {
    /// Compare supported (ONCS bit 0).
    pub fn compare(&self) -> bool {
        self.oncs & 1 != 0
    }
    /// Write Uncorrectable (bit 1) is not used; Dataset Management (bit 2).
    pub fn dsm(&self) -> bool {
        self.oncs & (1 << 2) != 0
    }
    /// Write Zeroes (bit 3).
    pub fn write_zeroes(&self) -> bool {
        self.oncs & (1 << 3) != 0
    }
    /// Fused Compare and Write (FUSES bit 0).
    pub fn compare_and_write(&self) -> bool {
        self.fuses & 1 != 0
    }
    /// Largest transfer in bytes for page size `mps_min` (`None` = unlimited).
    pub fn max_transfer(&self, mps_min: usize) -> Option<usize> {
        (self.mdts != 0).then(|| mps_min << self.mdts.min(20))
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_matches(|c: char| c == ' ' || c == '\0')
        .to_string()
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u32_at(b, o) as u64 | ((u32_at(b, o + 4) as u64) << 32)
}

/// Parses Identify Controller data (`b` must be 4096 bytes).
pub fn parse_ctrlr(b: &[u8; 4096]) -> CtrlrData {
    CtrlrData {
        vid: u16_at(b, 0),
        serial: text(&b[4..24]),
        model: text(&b[24..64]),
        firmware: text(&b[64..72]),
        mdts: b[77],
        cntlid: u16_at(b, 78),
        acl: b[258].saturating_add(1),
        oncs: u16_at(b, 520),
        fuses: u16_at(b, 522),
        vwc: b[525] & 1 != 0,
        nn: u32_at(b, 516),
        sgls: u32_at(b, 536),
    }
}

/// What the driver uses of Identify Namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NsData {
    /// Size in logical blocks.
    pub nsze: u64,
    /// Capacity in logical blocks.
    pub ncap: u64,
    /// Logical block size in bytes of the format in use.
    pub block_size: u32,
    /// Metadata bytes per block of the format in use.
    pub md_size: u16,
    /// NGUID (zero when not reported).
    pub nguid: [u8; 16],
    /// EUI64 (zero when not reported).
    pub eui64: [u8; 8],
    /// Namespace UUID from the identification descriptors (zero when not reported).
    pub uuid: [u8; 16],
}

/// Parses Identify Namespace data. `None` for an inactive namespace (size 0) or an
/// unusable format (block size below 512 or above 64 KiB, format index out of range).
pub fn parse_ns(b: &[u8; 4096]) -> Option<NsData> {
    let nsze = u64_at(b, 0);
    if nsze == 0 {
        return None;
    }
    let nlbaf = b[25] as usize + 1;
    let flbas = b[26];
    let idx = ((flbas & 0xf) | ((flbas >> 1) & 0x30)) as usize;
    if idx >= nlbaf.min(64) {
        return None;
    }
    let lbaf = u32_at(b, 128 + 4 * idx);
    let lbads = (lbaf >> 16) & 0xff;
    if !(9..=16).contains(&lbads) {
        return None;
    }
    let mut nguid = [0u8; 16];
    nguid.copy_from_slice(&b[104..120]);
    let mut eui64 = [0u8; 8];
    eui64.copy_from_slice(&b[120..128]);
    Some(NsData {
        nsze,
        ncap: u64_at(b, 8),
        block_size: 1 << lbads,
        md_size: lbaf as u16,
        nguid,
        eui64,
        uuid: [0; 16],
    })
}

/// The UUID in a Namespace Identification Descriptor list (CNS 3), if any. Malformed lists
/// end the walk.
pub fn parse_ns_uuid(b: &[u8; 4096]) -> Option<[u8; 16]> {
    let mut o = 0;
    while o + 4 <= b.len() {
        let (nidt, nidl) = (b[o], b[o + 1] as usize);
        if nidt == 0 || nidl == 0 || o + 4 + nidl > b.len() {
            return None;
        }
        if nidt == 3 && nidl == 16 {
            let mut u = [0u8; 16];
            u.copy_from_slice(&b[o + 4..o + 20]);
            return Some(u);
        }
        o += 4 + nidl;
    }
    None
}

/// Parses an active namespace ID list (CNS 2): ascending IDs up to the first zero.
pub fn parse_ns_list(b: &[u8; 4096]) -> impl Iterator<Item = u32> + '_ {
    (0..1024)
        .map(move |i| u32_at(b, 4 * i))
        .take_while(|&n| n != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_and_namespace() {
        let mut b = [0u8; 4096];
        b[0..2].copy_from_slice(&0x1b36u16.to_le_bytes());
        b[4..12].copy_from_slice(b"nvme0001");
        b[12..24].fill(b' ');
        b[24..34].copy_from_slice(b"QEMU NVMe ");
        b[77] = 7;
        b[520..522].copy_from_slice(&0x000du16.to_le_bytes());
        b[522] = 1;
        b[525] = 1;
        b[516..520].copy_from_slice(&256u32.to_le_bytes());
        let c = parse_ctrlr(&b);
        assert_eq!(c.vid, 0x1b36);
        assert_eq!(c.serial, "nvme0001");
        assert_eq!(c.model, "QEMU NVMe");
        assert!(c.compare() && c.dsm() && c.write_zeroes() && c.compare_and_write() && c.vwc);
        assert_eq!(c.max_transfer(4096), Some(512 * 1024));
        assert_eq!(c.nn, 256);

        let mut n = [0u8; 4096];
        n[0..8].copy_from_slice(&1000u64.to_le_bytes());
        n[25] = 1; // two formats
        n[26] = 1; // format 1 in use
        n[132..136].copy_from_slice(&(12u32 << 16).to_le_bytes());
        let ns = parse_ns(&n).unwrap();
        assert_eq!((ns.nsze, ns.block_size, ns.md_size), (1000, 4096, 0));
        n[26] = 5; // out of range
        assert_eq!(parse_ns(&n), None);
        n[26] = 0; // format 0 has LBADS 0: unusable
        assert_eq!(parse_ns(&n), None);

        let mut d = [0u8; 4096];
        d[0] = 1; // EUI64
        d[1] = 8;
        d[12] = 3; // UUID
        d[13] = 16;
        d[16..32].copy_from_slice(&[7u8; 16]);
        assert_eq!(parse_ns_uuid(&d), Some([7u8; 16]));
        d[13] = 200; // runs past the end
        assert_eq!(parse_ns_uuid(&d), None);
        assert_eq!(parse_ns_uuid(&[0u8; 4096]), None);

        let mut l = [0u8; 4096];
        l[0..4].copy_from_slice(&1u32.to_le_bytes());
        l[4..8].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(parse_ns_list(&l).collect::<Vec<_>>(), vec![1, 3]);
    }
}
