//! The on-disk superblock: a small header at block 0 of every member that lets a raid
//! reassemble itself when its bases appear (examine), with no RPC.
//!
//! Layout (little-endian), `HEADER_LEN` bytes then one `MEMBER_LEN` entry per member:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `FERAIDSB` |
//! | 8 | 4 | version (1) |
//! | 12 | 4 | length in bytes (header + member table) |
//! | 16 | 4 | CRC32C of `length` bytes, computed with this field zero |
//! | 20 | 4 | flags (0) |
//! | 24 | 16 | raid UUID |
//! | 40 | 64 | raid name, UTF-8, NUL-padded |
//! | 104 | 8 | sequence number (incremented on every update) |
//! | 112 | 8 | raid size in blocks |
//! | 120 | 4 | block size |
//! | 124 | 4 | level (SPDK's codes: 0, 1, 95, 99) |
//! | 128 | 4 | strip size in blocks (0 for raid1) |
//! | 132 | 4 | number of members |
//! | 136 | 4 | slot of the member this copy is on |
//! | 140 | 20 | reserved (zero) |
//! | 160 + 48 i | 16 | member i: UUID (zero if none) |
//! | +16 | 8 | data offset (blocks) |
//! | +24 | 8 | data size (blocks) |
//! | +32 | 4 | member state (1 configured, 2 missing, 3 failed, 4 rebuilding) |
//! | +36 | 8 | rebuild checkpoint (blocks of the raid already copied; state 4 only, else 0) |
//! | +44 | 4 | flags: bit 0 = missing, and every write since it left is marked in the persisted write-intent bitmap (see `control/bitmap.rs`); other bits zero |
//!
//! Data starts at `data_offset` on each member (1 MiB, as SPDK, so the superblock can grow).
//! Nothing read from disk is trusted: [`Superblock::decode`] checks every field against
//! the bdev it was read from and returns the reason it refuses a copy.

use ferrite_bdev::uuid::Uuid;

use crate::types::{MemberState, RaidLevel, MAX_BASE_BDEVS, MAX_NAME_LEN};

/// Magic at offset 0.
pub const MAGIC: [u8; 8] = *b"FERAIDSB";
/// Format version written and accepted.
pub const VERSION: u32 = 1;
/// Bytes before the member table.
pub const HEADER_LEN: usize = 160;
/// Bytes per member entry.
pub const MEMBER_LEN: usize = 48;
/// Longest superblock (a full member table).
pub const MAX_LEN: usize = HEADER_LEN + MEMBER_LEN * MAX_BASE_BDEVS;
/// Bytes reserved at the start of every member for the superblock (data starts after).
pub const RESERVED_BYTES: u64 = 1024 * 1024;

/// One member as recorded in the superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SbMember {
    /// UUID of the base bdev (`None` for an empty slot).
    pub uuid: Option<Uuid>,
    /// First data block on the base.
    pub data_offset: u64,
    /// Data blocks on the base.
    pub data_size: u64,
    /// State.
    pub state: MemberState,
    /// For a member being rebuilt: the raid blocks `[0, rebuilt)` are known to be copied to
    /// it (a restarted rebuild resumes there). 0 otherwise.
    pub rebuilt: u64,
    /// State Missing only: the writes it missed are all marked in the persisted write-intent
    /// bitmap (it can come back with a resync).
    pub tracked: bool,
}

/// Member flag: [`SbMember::tracked`].
const FLAG_TRACKED: u32 = 1;

/// A decoded superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// Raid UUID.
    pub uuid: Uuid,
    /// Raid name.
    pub name: String,
    /// Sequence number.
    pub seq: u64,
    /// Raid size in blocks.
    pub num_blocks: u64,
    /// Block size.
    pub block_size: u32,
    /// Level.
    pub level: RaidLevel,
    /// Strip size in blocks.
    pub strip_blocks: u32,
    /// Slot of the member this copy was read from (or is written to).
    pub slot: u32,
    /// Member table.
    pub members: Vec<SbMember>,
}

// ---- CRC32C (Castagnoli), table-driven -------------------------------------------------------

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC32C of `data` (initial value and final XOR `!0`, as iSCSI/ext4/SPDK).
pub fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

fn get_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn get_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// Length in bytes of a superblock with `n` members.
pub fn encoded_len(n: usize) -> usize {
    HEADER_LEN + MEMBER_LEN * n
}

/// Blocks the superblock of `n` members occupies with `block_size`-byte blocks.
pub fn blocks_for(n: usize, block_size: u32) -> u64 {
    (encoded_len(n) as u64).div_ceil(u64::from(block_size))
}

/// Data offset (blocks) used on members of a raid with a superblock.
pub fn data_offset_blocks(block_size: u32) -> u64 {
    RESERVED_BYTES.div_ceil(u64::from(block_size))
}

impl Superblock {
    /// Serialises into `out` (at least `encoded_len(members)` bytes; the rest is zeroed).
    pub fn encode(&self, out: &mut [u8]) {
        let len = encoded_len(self.members.len());
        out.fill(0);
        out[0..8].copy_from_slice(&MAGIC);
        put_u32(out, 8, VERSION);
        put_u32(out, 12, len as u32);
        put_u32(out, 20, 0);
        out[24..40].copy_from_slice(&self.uuid.0);
        let name = self.name.as_bytes();
        let n = name.len().min(MAX_NAME_LEN);
        out[40..40 + n].copy_from_slice(&name[..n]);
        put_u64(out, 104, self.seq);
        put_u64(out, 112, self.num_blocks);
        put_u32(out, 120, self.block_size);
        put_u32(out, 124, self.level.code());
        put_u32(out, 128, self.strip_blocks);
        put_u32(out, 132, self.members.len() as u32);
        put_u32(out, 136, self.slot);
        for (i, m) in self.members.iter().enumerate() {
            let o = HEADER_LEN + i * MEMBER_LEN;
            out[o..o + 16].copy_from_slice(&m.uuid.unwrap_or_default().0);
            put_u64(out, o + 16, m.data_offset);
            put_u64(out, o + 24, m.data_size);
            put_u32(out, o + 32, m.state.code());
            put_u64(out, o + 36, m.rebuilt);
            put_u32(out, o + 44, if m.tracked { FLAG_TRACKED } else { 0 });
        }
        let crc = crc32c(&out[..len]);
        put_u32(out, 16, crc);
    }

    /// True if `buf` starts with the superblock magic (whatever the rest holds).
    pub fn has_magic(buf: &[u8]) -> bool {
        buf.len() >= 8 && buf[0..8] == MAGIC
    }

    /// The length the header of `buf` claims, if `buf` holds at least a header with the magic
    /// (to know how much more to read); not validated beyond that.
    pub fn claimed_len(buf: &[u8]) -> Option<usize> {
        if buf.len() < HEADER_LEN || !Self::has_magic(buf) {
            return None;
        }
        Some(get_u32(buf, 12) as usize)
    }

    /// Decodes and validates a copy read from a bdev with `block_size`-byte blocks,
    /// `num_blocks` blocks and UUID `bdev_uuid`. The error says why the copy is refused.
    pub fn decode(
        buf: &[u8],
        block_size: u32,
        num_blocks: u64,
        bdev_uuid: Uuid,
    ) -> std::result::Result<Superblock, String> {
        if buf.len() < HEADER_LEN {
            return Err(format!("{} bytes is shorter than a header", buf.len()));
        }
        if !Self::has_magic(buf) {
            return Err("no superblock magic".into());
        }
        let version = get_u32(buf, 8);
        if version != VERSION {
            return Err(format!("unsupported version {version}"));
        }
        let len = get_u32(buf, 12) as usize;
        let n = get_u32(buf, 132) as usize;
        if n == 0 || n > MAX_BASE_BDEVS {
            return Err(format!(
                "member count {n} out of range 1..={MAX_BASE_BDEVS}"
            ));
        }
        if len != encoded_len(n) {
            return Err(format!("length {len} does not match {n} members"));
        }
        if len > buf.len() {
            return Err(format!("length {len} exceeds the {} bytes read", buf.len()));
        }
        let want = get_u32(buf, 16);
        let mut copy = [0u8; MAX_LEN];
        copy[..len].copy_from_slice(&buf[..len]);
        put_u32(&mut copy, 16, 0);
        let got = crc32c(&copy[..len]);
        if got != want {
            return Err(format!(
                "bad CRC (stored {want:#010x}, computed {got:#010x})"
            ));
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&buf[24..40]);
        let uuid = Uuid(uuid);
        if uuid == Uuid::default() {
            return Err("null raid UUID".into());
        }
        let raw_name = &buf[40..104];
        let end = raw_name.iter().position(|c| *c == 0).unwrap_or(64);
        let name = std::str::from_utf8(&raw_name[..end])
            .map_err(|_| "raid name is not UTF-8".to_string())?
            .to_string();
        if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(|c| c.is_control()) {
            return Err("invalid raid name".into());
        }
        let seq = get_u64(buf, 104);
        let raid_blocks = get_u64(buf, 112);
        let bs = get_u32(buf, 120);
        if bs != block_size {
            return Err(format!(
                "block size {bs} differs from the bdev's {block_size}"
            ));
        }
        let level_code = get_u32(buf, 124);
        let level = RaidLevel::from_code(level_code)
            .ok_or_else(|| format!("unknown raid level code {level_code}"))?;
        let strip = get_u32(buf, 128);
        if level.has_strip() {
            if strip == 0 || !strip.is_power_of_two() {
                return Err(format!("strip size {strip} blocks is not a power of two"));
            }
        } else if strip != 0 {
            return Err(format!("strip size {strip} for {}", level.name()));
        }
        if n < level.min_base_bdevs() {
            return Err(format!("{n} members is too few for {}", level.name()));
        }
        let slot = get_u32(buf, 136);
        if slot as usize >= n {
            return Err(format!("slot {slot} out of range for {n} members"));
        }
        if raid_blocks == 0 {
            return Err("raid size is zero".into());
        }
        let mut members = Vec::with_capacity(n);
        for i in 0..n {
            let o = HEADER_LEN + i * MEMBER_LEN;
            let mut u = [0u8; 16];
            u.copy_from_slice(&buf[o..o + 16]);
            let u = Uuid(u);
            let data_offset = get_u64(buf, o + 16);
            let data_size = get_u64(buf, o + 24);
            let sc = get_u32(buf, o + 32);
            let state = MemberState::from_code(sc)
                .ok_or_else(|| format!("member {i}: unknown state code {sc}"))?;
            let rebuilt = get_u64(buf, o + 36);
            let flags = get_u32(buf, o + 44);
            if flags & !FLAG_TRACKED != 0 {
                return Err(format!("member {i}: unknown flags {flags:#x}"));
            }
            let tracked = flags & FLAG_TRACKED != 0;
            if tracked && state != MemberState::Missing {
                return Err(format!("member {i}: bitmap-tracked but not missing"));
            }
            if rebuilt > raid_blocks {
                return Err(format!(
                    "member {i}: rebuild checkpoint {rebuilt} beyond the raid's {raid_blocks} blocks"
                ));
            }
            let uuid = if u == Uuid::default() { None } else { Some(u) };
            if state == MemberState::Configured && uuid.is_none() {
                return Err(format!("member {i}: configured with a null UUID"));
            }
            if data_offset.checked_add(data_size).is_none() {
                return Err(format!("member {i}: data range overflows"));
            }
            members.push(SbMember {
                uuid,
                data_offset,
                data_size,
                state,
                rebuilt,
                tracked,
            });
        }
        let me = &members[slot as usize];
        if me.uuid != Some(bdev_uuid) {
            return Err(format!(
                "slot {slot} records another bdev's UUID ({})",
                me.uuid
                    .map(|u| u.to_string())
                    .unwrap_or_else(|| "none".into())
            ));
        }
        if me.data_offset < blocks_for(n, block_size) {
            return Err(format!(
                "data offset {} overlaps the superblock",
                me.data_offset
            ));
        }
        if me.data_offset + me.data_size > num_blocks {
            return Err(format!(
                "data range {}+{} exceeds the bdev's {num_blocks} blocks",
                me.data_offset, me.data_size
            ));
        }
        Ok(Superblock {
            uuid,
            name,
            seq,
            num_blocks: raid_blocks,
            block_size: bs,
            level,
            strip_blocks: strip,
            slot,
            members,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Superblock, Uuid) {
        let me = Uuid::new_v4();
        let sb = Superblock {
            uuid: Uuid::new_v4(),
            name: "r1".into(),
            seq: 7,
            num_blocks: 4096,
            block_size: 512,
            level: RaidLevel::Raid1,
            strip_blocks: 0,
            slot: 1,
            members: vec![
                SbMember {
                    uuid: Some(Uuid::new_v4()),
                    data_offset: 2048,
                    data_size: 4096,
                    state: MemberState::Configured,
                    rebuilt: 0,
                    tracked: false,
                },
                SbMember {
                    uuid: Some(me),
                    data_offset: 2048,
                    data_size: 4096,
                    state: MemberState::Configured,
                    rebuilt: 0,
                    tracked: false,
                },
            ],
        };
        (sb, me)
    }

    #[test]
    fn crc32c_known_value() {
        // The standard check value of CRC-32C.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn round_trip_and_rejections() {
        let (sb, me) = sample();
        let mut buf = vec![0u8; 512];
        sb.encode(&mut buf);
        assert_eq!(Superblock::decode(&buf, 512, 8192, me), Ok(sb.clone()));
        // Wrong bdev, wrong block size, too small a bdev.
        assert!(Superblock::decode(&buf, 512, 8192, Uuid::new_v4()).is_err());
        assert!(Superblock::decode(&buf, 4096, 8192, me).is_err());
        assert!(Superblock::decode(&buf, 512, 4000, me).is_err());
        // Any flipped byte in the header or table is caught (CRC or a field check).
        for i in 0..encoded_len(2) {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(
                Superblock::decode(&bad, 512, 8192, me).is_err(),
                "flip at {i} accepted"
            );
        }
        // Truncated, garbage, zeroes.
        assert!(Superblock::decode(&buf[..100], 512, 8192, me).is_err());
        assert!(Superblock::decode(&[0u8; 512], 512, 8192, me).is_err());
        let junk: Vec<u8> = (0..512u32).map(|i| (i * 31 + 7) as u8).collect();
        assert!(Superblock::decode(&junk, 512, 8192, me).is_err());
    }

    #[test]
    fn rebuild_checkpoint_round_trips_and_is_bounded() {
        let (mut sb, me) = sample();
        sb.members[0].state = MemberState::Rebuilding;
        sb.members[0].rebuilt = 1234;
        let mut buf = vec![0u8; 512];
        sb.encode(&mut buf);
        let got = Superblock::decode(&buf, 512, 8192, me).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got.members[0].rebuilt, 1234);
        assert_eq!(got, sb);
        // A checkpoint beyond the raid is refused (CRC recomputed: only the field check).
        sb.members[0].rebuilt = sb.num_blocks + 1;
        sb.encode(&mut buf);
        assert!(Superblock::decode(&buf, 512, 8192, me).is_err());
    }

    #[test]
    fn tracked_flag_round_trips_and_is_checked() {
        let (mut sb, me) = sample();
        sb.members[0].state = MemberState::Missing;
        sb.members[0].tracked = true;
        let mut buf = vec![0u8; 512];
        sb.encode(&mut buf);
        let got = Superblock::decode(&buf, 512, 8192, me).unwrap_or_else(|e| panic!("{e}"));
        assert!(got.members[0].tracked);
        // Only a missing member can be tracked.
        sb.members[0].state = MemberState::Configured;
        sb.encode(&mut buf);
        assert!(Superblock::decode(&buf, 512, 8192, me).is_err());
    }

    #[test]
    fn hostile_lengths_do_not_panic() {
        let (sb, me) = sample();
        let mut buf = vec![0u8; 512];
        sb.encode(&mut buf);
        for (len, n) in [
            (u32::MAX, 2u32),
            (0, 2),
            (200, 2),
            (208, 1),
            (256, 1000),
            (256, 0),
        ] {
            let mut bad = buf.clone();
            put_u32(&mut bad, 12, len);
            put_u32(&mut bad, 132, n);
            assert!(Superblock::decode(&bad, 512, 8192, me).is_err());
        }
    }
}
