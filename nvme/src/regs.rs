//! Controller registers (BAR0) and the access traits the driver is written against: [`Bar`]
//! (MMIO) and [`Dma`] (memory the controller can reach, and virtual→IOVA translation).

/// Controller Capabilities (64 bits).
pub const CAP: usize = 0x00;
/// Version.
pub const VS: usize = 0x08;
/// Controller Configuration.
pub const CC: usize = 0x14;
/// Controller Status.
pub const CSTS: usize = 0x1c;
/// Admin Queue Attributes.
pub const AQA: usize = 0x24;
/// Admin Submission Queue base address (64 bits).
pub const ASQ: usize = 0x28;
/// Admin Completion Queue base address (64 bits).
pub const ACQ: usize = 0x30;
/// First doorbell.
pub const DOORBELL_BASE: usize = 0x1000;

/// CC.EN.
pub const CC_EN: u32 = 1;
/// CSTS.RDY.
pub const CSTS_RDY: u32 = 1;
/// CSTS.CFS (controller fatal status).
pub const CSTS_CFS: u32 = 1 << 1;

/// Decoded CAP register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap(pub u64);

impl Cap {
    /// Maximum queue entries supported (MQES + 1).
    pub fn max_queue_entries(self) -> u32 {
        (self.0 & 0xffff) as u32 + 1
    }
    /// Worst-case time for CSTS.RDY to change, in milliseconds (TO × 500 ms).
    pub fn timeout_ms(self) -> u64 {
        ((self.0 >> 24) & 0xff) * 500
    }
    /// Doorbell stride in bytes (4 << DSTRD).
    pub fn doorbell_stride(self) -> usize {
        4 << ((self.0 >> 32) & 0xf)
    }
    /// NVM command set supported (CSS bit 0).
    pub fn nvm_css(self) -> bool {
        (self.0 >> 37) & 1 != 0
    }
    /// Minimum memory page size in bytes (4 KiB << MPSMIN).
    pub fn mps_min(self) -> usize {
        4096 << ((self.0 >> 48) & 0xf)
    }
    /// Maximum memory page size in bytes.
    pub fn mps_max(self) -> usize {
        4096 << ((self.0 >> 52) & 0xf)
    }
    /// Contiguous queues required.
    pub fn cqr(self) -> bool {
        (self.0 >> 16) & 1 != 0
    }
}

/// Offset of submission queue `qid`'s tail doorbell.
pub fn sq_doorbell(qid: u16, stride: usize) -> usize {
    DOORBELL_BASE + (2 * qid as usize) * stride
}

/// Offset of completion queue `qid`'s head doorbell.
pub fn cq_doorbell(qid: u16, stride: usize) -> usize {
    DOORBELL_BASE + (2 * qid as usize + 1) * stride
}

/// Builds CC: enable, NVM command set, page size `mps` bytes, 64-byte SQ and 16-byte CQ
/// entries, round robin arbitration.
pub fn cc_value(mps: usize) -> u32 {
    let mps_field = (mps.trailing_zeros().saturating_sub(12)) & 0xf;
    CC_EN | (mps_field << 7) | (6 << 16) | (4 << 20)
}

/// MMIO access to the controller's registers (BAR0). Implementations: the VFIO mapping and the
/// in-memory model.
///
/// Thread contract: the driver calls it from the thread that owns the queue the register
/// belongs to (doorbells) or under the controller's admin lock (everything else); an
/// implementation must make 32-bit accesses single volatile accesses.
pub trait Bar: Send + Sync {
    /// Reads a 32-bit register.
    fn read32(&self, off: usize) -> u32;
    /// Writes a 32-bit register (a doorbell write is the only MMIO on the I/O path).
    fn write32(&self, off: usize, v: u32);
    /// Reads a 64-bit register as two 32-bit reads (low first).
    fn read64(&self, off: usize) -> u64 {
        self.read32(off) as u64 | ((self.read32(off + 4) as u64) << 32)
    }
    /// Writes a 64-bit register as two 32-bit writes (low first).
    fn write64(&self, off: usize, v: u64) {
        self.write32(off, v as u32);
        self.write32(off + 4, (v >> 32) as u32);
    }
}

/// Memory the controller can reach: `vaddr` in this process, `iova` on the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaRegion {
    /// Address in this process.
    pub vaddr: *mut u8,
    /// Address the controller uses.
    pub iova: u64,
    /// Length in bytes.
    pub len: usize,
}

// SAFETY: a region is a plain description of memory owned by a `Dma` implementation; whoever
// dereferences `vaddr` synchronises (each queue's memory is touched by one thread at a time).
unsafe impl Send for DmaRegion {}
// SAFETY: as above; the descriptor itself is immutable.
unsafe impl Sync for DmaRegion {}

/// DMA memory and translation (VFIO container or the in-memory model's identity mapping).
///
/// Thread contract: `alloc`/`free`/`register` are control-path calls from any thread;
/// `translate` is called on the I/O path and must not allocate, lock or make a system call.
pub trait Dma: Send + Sync {
    /// Allocates zeroed memory of `len` bytes aligned to at least `align` (a power of two up to
    /// 2 MiB), mapped for the controller.
    fn alloc(&self, len: usize, align: usize) -> crate::Result<DmaRegion>;
    /// Frees a region returned by `alloc`.
    fn free(&self, r: DmaRegion);
    /// Makes memory the caller owns (such as the bdev buffer pool) reachable by the controller.
    /// The memory must stay mapped until the driver is dropped.
    fn register(&self, vaddr: *mut u8, len: usize) -> crate::Result<()>;
    /// Bus address of `[vaddr, vaddr+len)` if the whole range is reachable and contiguous on
    /// the bus; `None` otherwise (the data is then bounced).
    fn translate(&self, vaddr: *const u8, len: usize) -> Option<u64>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_fields_and_doorbells() {
        // MQES 1023, CQR, TO 20, DSTRD 2, CSS NVM, MPSMIN 0, MPSMAX 4.
        let cap = Cap(1023 | (1 << 16) | (20 << 24) | (2 << 32) | (1 << 37) | (4u64 << 52));
        assert_eq!(cap.max_queue_entries(), 1024);
        assert!(cap.cqr());
        assert_eq!(cap.timeout_ms(), 10_000);
        assert_eq!(cap.doorbell_stride(), 16);
        assert!(cap.nvm_css());
        assert_eq!(cap.mps_min(), 4096);
        assert_eq!(cap.mps_max(), 65536);
        assert_eq!(sq_doorbell(0, 16), 0x1000);
        assert_eq!(cq_doorbell(0, 16), 0x1010);
        assert_eq!(sq_doorbell(3, 4), 0x1018);
        assert_eq!(cq_doorbell(3, 4), 0x101c);
        assert_eq!(cc_value(4096), 1 | (6 << 16) | (4 << 20));
        assert_eq!(cc_value(8192) >> 7 & 0xf, 1);
    }
}
