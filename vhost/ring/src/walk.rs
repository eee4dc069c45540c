//! Validation shared by split and packed chains: adding a segment with its checks, and
//! following an indirect table.

use crate::mem::{range_ok, read_desc, F_INDIRECT, F_NEXT, F_WRITE};
use crate::{Chain, ChainError, GuestMemory, Segment, MAX_SEGS};

/// Most entries an indirect table may have (its length is a u32; the table is walked with
/// 16-bit indices).
const MAX_INDIRECT: u32 = crate::MAX_QUEUE_SIZE as u32;

/// Validation state while a chain is built into a [`Chain`].
pub(crate) struct Builder {
    seen_writable: bool,
    total: u64,
}

impl Builder {
    pub(crate) fn new() -> Self {
        Builder {
            seen_writable: false,
            total: 0,
        }
    }

    /// Adds one buffer to `out`, checking length, direction order, count, total size and
    /// that it lies in guest memory.
    #[inline]
    pub(crate) fn add(
        &mut self,
        mem: &GuestMemory,
        out: &mut Chain,
        addr: u64,
        len: u32,
        writable: bool,
    ) -> Result<(), ChainError> {
        if len == 0 {
            return Err(ChainError::ZeroLength);
        }
        if !writable && self.seen_writable {
            return Err(ChainError::WrongDirection);
        }
        let n = out.count as usize;
        if n >= MAX_SEGS {
            return Err(ChainError::TooLong { max: MAX_SEGS });
        }
        self.total += u64::from(len);
        if self.total > u64::from(u32::MAX) {
            return Err(ChainError::Oversize);
        }
        if !range_ok(mem, addr, u64::from(len)) {
            return Err(ChainError::OutOfMemory { addr, len });
        }
        self.seen_writable |= writable;
        out.segs[n] = Segment {
            addr,
            len,
            device_writable: writable,
        };
        out.count += 1;
        Ok(())
    }

    /// Follows the indirect table `[addr, addr + len)`. Split tables are walked by their
    /// `next` links from entry 0; packed tables are read in order, every entry.
    pub(crate) fn indirect(
        &mut self,
        mem: &GuestMemory,
        out: &mut Chain,
        addr: u64,
        len: u32,
        packed: bool,
    ) -> Result<(), ChainError> {
        if len == 0 || !len.is_multiple_of(16) || len / 16 > MAX_INDIRECT {
            return Err(ChainError::BadIndirectLength { len });
        }
        if !range_ok(mem, addr, u64::from(len)) {
            return Err(ChainError::OutOfMemory { addr, len });
        }
        let n = (len / 16) as u16;
        let mut i: u16 = 0;
        let mut steps: u32 = 0;
        loop {
            let at = addr + 16 * u64::from(i);
            let d = read_desc(mem, at).ok_or(ChainError::Unreadable { addr: at })?;
            let flags = if packed { d.w14 } else { d.w12 };
            if flags & F_INDIRECT != 0 {
                return Err(ChainError::NestedIndirect);
            }
            self.add(mem, out, d.addr, d.len, flags & F_WRITE != 0)?;
            steps += 1;
            if packed {
                if steps == u32::from(n) {
                    return Ok(());
                }
                i += 1;
            } else {
                if flags & F_NEXT == 0 {
                    return Ok(());
                }
                if d.w14 >= n {
                    return Err(ChainError::IndexOutOfRange {
                        index: d.w14,
                        size: n,
                    });
                }
                if steps >= u32::from(n) {
                    return Err(ChainError::Loop);
                }
                i = d.w14;
            }
        }
    }
}
