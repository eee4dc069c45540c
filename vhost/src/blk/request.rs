//! Parsing a virtio-blk request out of a validated descriptor chain (a list of guest-physical
//! segments), without allocating.
//!
//! The request is read as one byte stream over the segments, whatever their framing: the
//! first 16 bytes are the header (`type`, reserved, `sector`), the last byte is the status the
//! device writes, and what lies between is the data. So a header in its own descriptor (Linux,
//! QEMU) and a header sharing a descriptor with data both work.
//!
//! Outcomes: a [`Parsed`] request; an error of kind `BadRequest` or `UnsupportedRequest` (the
//! status byte is writable, at `Parsed::status_gpa`: the request is answered with the status
//! [`answer_status`] gives); an error of kind `Unanswerable` (no writable status byte: nothing
//! can be answered, the queue is stopped and the device marked broken). The errors carry fixed
//! messages: parsing never allocates.

use crate::error::{ErrorKind, VhostError};
use crate::memory::MemTable;

/// virtio-blk request types.
pub mod req_type {
    /// Read.
    pub const IN: u32 = 0;
    /// Write.
    pub const OUT: u32 = 1;
    /// Flush.
    pub const FLUSH: u32 = 4;
    /// Device id string.
    pub const GET_ID: u32 = 8;
    /// Discard.
    pub const DISCARD: u32 = 11;
    /// Write zeroes.
    pub const WRITE_ZEROES: u32 = 13;
}

/// Status bytes.
pub mod status {
    /// Success.
    pub const OK: u8 = 0;
    /// I/O error.
    pub const IOERR: u8 = 1;
    /// Unsupported request.
    pub const UNSUPP: u8 = 2;
}

/// Length of the request header.
pub const HEADER_LEN: u64 = 16;
/// Length of the GET_ID answer.
pub const ID_LEN: usize = 20;
/// Largest number of data segments kept per request (`seg_max` plus framing slack).
pub const MAX_DATA_SEGS: usize = crate::blk::config::SEG_MAX as usize + 2;

/// One segment as the ring hands it over.
#[allow(clippy::len_without_is_empty)] // a segment, not a collection
pub trait SegView {
    /// Guest-physical address.
    fn addr(&self) -> u64;
    /// Length in bytes.
    fn len(&self) -> u32;
    /// The device may write it.
    fn writable(&self) -> bool;
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Read into the data segments.
    Read,
    /// Write from the data segments.
    Write,
    /// Flush the write cache.
    Flush,
    /// Write the device id into the data segment.
    GetId,
    /// Discard the range described in the data.
    Discard,
    /// Write zeroes to the range described in the data.
    WriteZeroes,
}

/// A piece of the data area, guest-physical.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataSeg {
    /// Guest-physical address.
    pub gpa: u64,
    /// Length in bytes.
    pub len: u32,
}

/// A parsed request; lives in a per-queue pool slot (no allocation).
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The request type.
    pub kind: Kind,
    /// First 512-byte sector (read/write).
    pub sector: u64,
    /// Guest-physical address of the status byte.
    pub status_gpa: u64,
    /// Host address of the status byte (in the memory table `parse` was given).
    pub status_host: *mut u8,
    /// Host address of the one data piece when the one-step parse found it (null otherwise:
    /// translate `segs` through the memory table).
    pub data_host: *mut u8,
    /// Data pieces (`segs[..nsegs]`).
    pub segs: [DataSeg; MAX_DATA_SEGS],
    /// Number of data pieces.
    pub nsegs: usize,
    /// Total data bytes.
    pub data_len: u64,
}

impl Default for Parsed {
    fn default() -> Self {
        Self {
            kind: Kind::Flush,
            sector: 0,
            status_gpa: 0,
            status_host: std::ptr::null_mut(),
            data_host: std::ptr::null_mut(),
            segs: [DataSeg::default(); MAX_DATA_SEGS],
            nsegs: 0,
            data_len: 0,
        }
    }
}

impl Parsed {
    /// The data pieces.
    pub fn data(&self) -> &[DataSeg] {
        &self.segs[..self.nsegs]
    }
}

/// The status byte a request that failed parsing is answered with: IOERR for `BadRequest`,
/// UNSUPP for `UnsupportedRequest`; `None` when it cannot be answered (`Unanswerable`).
pub fn answer_status(e: &VhostError) -> Option<u8> {
    match e.kind() {
        ErrorKind::UnsupportedRequest => Some(status::UNSUPP),
        ErrorKind::Unanswerable => None,
        _ => Some(status::IOERR),
    }
}

const fn unanswerable(reason: &'static str) -> VhostError {
    VhostError::fixed(ErrorKind::Unanswerable, reason)
}

/// The common request in one step: a read or write of three segments (16-byte header,
/// data, 1-byte status) that the general path below would accept. Fills `out` exactly as
/// the general path does and returns true; anything else (other shapes, types, any check
/// failing) returns false and leaves the verdict, error included, to the general path.
#[inline]
pub(crate) fn parse_common<S: SegView>(
    segs: &[S],
    mem: &MemTable,
    readonly: bool,
    out: &mut Parsed,
) -> bool {
    parse_common_with(segs, [None; 3], mem, readonly, out)
}

/// [`parse_common`] given the host addresses of the three segments where they are known
/// (`known[i]`: the address of segment `i`'s first byte, with the whole segment mapped in one
/// piece; `None`: translate it through `mem`). The queue passes the addresses its ring walk
/// already found ([`ferrite_vring::Chain::host_addr`]), so the request needs no lookups.
#[inline]
pub(crate) fn parse_common_with<S: SegView>(
    segs: &[S],
    known: [Option<*mut u8>; 3],
    mem: &MemTable,
    readonly: bool,
    out: &mut Parsed,
) -> bool {
    #[inline(always)]
    fn pick(known: Option<*mut u8>, mem: &MemTable, gpa: u64, len: u64) -> Option<*mut u8> {
        match known {
            Some(p) => Some(p),
            None => mem.host_ptr(gpa, len),
        }
    }
    let [h, d, st] = segs else {
        return false;
    };
    if h.len() != HEADER_LEN as u32 || h.writable() || st.len() != 1 || !st.writable() {
        return false;
    }
    let dlen = u64::from(d.len());
    if dlen == 0 || !dlen.is_multiple_of(512) {
        return false;
    }
    let (Some(status_host), Some(hp)) = (
        pick(known[2], mem, st.addr(), 1),
        pick(known[0], mem, h.addr(), HEADER_LEN),
    ) else {
        return false;
    };
    let mut hdr = [0u8; HEADER_LEN as usize];
    // SAFETY: `hp` points at 16 mapped bytes of guest memory (checked by host_ptr); the
    // destination has room for them.
    unsafe { std::ptr::copy_nonoverlapping(hp, hdr.as_mut_ptr(), hdr.len()) };
    let rtype = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let kind = match rtype {
        req_type::IN => Kind::Read,
        req_type::OUT if !readonly => Kind::Write,
        _ => return false,
    };
    if d.writable() != (kind == Kind::Read) {
        return false;
    }
    let mut sector = [0u8; 8];
    sector.copy_from_slice(&hdr[8..16]);
    out.kind = kind;
    out.sector = u64::from_le_bytes(sector);
    out.status_gpa = st.addr();
    out.status_host = status_host;
    // Not found in one piece: the submit translates it again (and fails it).
    out.data_host = pick(known[1], mem, d.addr(), dlen).unwrap_or(std::ptr::null_mut());
    out.segs[0] = DataSeg {
        gpa: d.addr(),
        len: d.len(),
    };
    out.nsegs = 1;
    out.data_len = dlen;
    true
}

/// Parses the chain `segs` into `out`. `readonly` fails writes (IOERR). Reads the header
/// through `mem`; a header outside guest memory fails the request. On an answerable error
/// `out.status_gpa` holds the status byte's address.
pub fn parse<S: SegView>(
    segs: &[S],
    mem: &MemTable,
    readonly: bool,
    out: &mut Parsed,
) -> Result<(), VhostError> {
    if parse_common(segs, mem, readonly, out) {
        return Ok(());
    }
    parse_general(segs, mem, readonly, out)
}

/// [`parse`] for any chain.
pub(crate) fn parse_general<S: SegView>(
    segs: &[S],
    mem: &MemTable,
    readonly: bool,
    out: &mut Parsed,
) -> Result<(), VhostError> {
    // The status byte: the last byte of the last segment, which must be device-writable.
    let Some(last) = segs.iter().rposition(|s| s.len() > 0) else {
        return Err(unanswerable("empty descriptor chain"));
    };
    let ls = &segs[last];
    if !ls.writable() {
        return Err(unanswerable("status descriptor is not device-writable"));
    }
    let status_gpa = ls.addr().wrapping_add(u64::from(ls.len()) - 1);
    let Some(status_host) = mem.host_ptr(status_gpa, 1) else {
        return Err(unanswerable("status byte is outside guest memory"));
    };
    out.status_gpa = status_gpa;
    let fail = |st: u8, reason: &'static str| {
        let kind = if st == status::UNSUPP {
            ErrorKind::UnsupportedRequest
        } else {
            ErrorKind::BadRequest
        };
        VhostError::fixed(kind, reason)
    };
    // The header: the first 16 bytes, all device-readable.
    let mut hdr = [0u8; HEADER_LEN as usize];
    let mut got = 0usize;
    let mut pos = 0usize; // segment index where data begins
    let mut pos_off = 0u64; // offset inside it
    for (i, s) in segs.iter().enumerate() {
        if got == hdr.len() {
            break;
        }
        if s.len() == 0 {
            continue;
        }
        if i == last {
            // the header cannot reach the status byte's segment
            return Err(fail(status::IOERR, "request shorter than its header"));
        }
        if s.writable() && s.len() > 0 {
            return Err(fail(status::IOERR, "request header is device-writable"));
        }
        let take = (hdr.len() - got).min(s.len() as usize);
        let Some(p) = mem.host_ptr(s.addr(), take as u64) else {
            return Err(fail(status::IOERR, "request header outside guest memory"));
        };
        // SAFETY: `p` points at `take` bytes of mapped guest memory (checked by host_ptr);
        // the destination has room for them.
        unsafe { std::ptr::copy_nonoverlapping(p, hdr.as_mut_ptr().add(got), take) };
        got += take;
        pos = i;
        pos_off = take as u64;
    }
    if got < hdr.len() {
        return Err(fail(status::IOERR, "request shorter than its header"));
    }
    let rtype = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let sector = u64::from_le_bytes([
        hdr[8], hdr[9], hdr[10], hdr[11], hdr[12], hdr[13], hdr[14], hdr[15],
    ]);
    let kind = match rtype {
        req_type::IN => Kind::Read,
        req_type::OUT => Kind::Write,
        req_type::FLUSH => Kind::Flush,
        req_type::GET_ID => Kind::GetId,
        req_type::DISCARD => Kind::Discard,
        req_type::WRITE_ZEROES => Kind::WriteZeroes,
        _ => return Err(fail(status::UNSUPP, "unsupported request type")),
    };
    // The data: from (pos, pos_off) to the byte before the status byte.
    let device_writes = matches!(kind, Kind::Read | Kind::GetId);
    out.nsegs = 0;
    out.data_len = 0;
    for (i, s) in segs.iter().enumerate().skip(pos) {
        if i > last {
            break;
        }
        let start = if i == pos { pos_off } else { 0 };
        let end = if i == last {
            u64::from(s.len()) - 1
        } else {
            u64::from(s.len())
        };
        if end <= start {
            continue;
        }
        if s.writable() != device_writes {
            return Err(fail(
                status::IOERR,
                "data descriptor has the wrong direction",
            ));
        }
        if out.nsegs == MAX_DATA_SEGS {
            return Err(fail(status::IOERR, "too many data segments"));
        }
        let len = end - start;
        out.segs[out.nsegs] = DataSeg {
            gpa: s.addr().wrapping_add(start),
            len: len as u32,
        };
        out.nsegs += 1;
        out.data_len += len;
    }
    out.kind = kind;
    out.sector = sector;
    out.status_host = status_host;
    out.data_host = std::ptr::null_mut();
    match kind {
        Kind::Read | Kind::Write if out.data_len == 0 || !out.data_len.is_multiple_of(512) => {
            return Err(fail(status::IOERR, "data length is not a multiple of 512"));
        }
        Kind::GetId if out.data_len == 0 => {
            return Err(fail(status::IOERR, "GET_ID without a data buffer"));
        }
        Kind::Discard | Kind::WriteZeroes if out.data_len != 16 || out.nsegs != 1 => {
            return Err(fail(
                status::IOERR,
                "discard/write-zeroes needs one 16-byte range",
            ));
        }
        _ => {}
    }
    if readonly && matches!(kind, Kind::Write | Kind::Discard | Kind::WriteZeroes) {
        return Err(fail(status::IOERR, "write to a read-only controller"));
    }
    Ok(())
}

/// A discard / write-zeroes range read from guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// First sector.
    pub sector: u64,
    /// Number of sectors.
    pub num_sectors: u32,
    /// Flags (bit 0: unmap).
    pub flags: u32,
}

/// Reads the one range of a discard / write-zeroes request.
pub fn read_range(p: &Parsed, mem: &MemTable) -> Option<Range> {
    let s = p.data().first()?;
    let ptr = mem.host_ptr(s.gpa, 16)?;
    let mut b = [0u8; 16];
    // SAFETY: host_ptr checked 16 mapped bytes at `ptr`.
    unsafe { std::ptr::copy_nonoverlapping(ptr, b.as_mut_ptr(), 16) };
    Some(Range {
        sector: u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        num_sectors: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        flags: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
    })
}
