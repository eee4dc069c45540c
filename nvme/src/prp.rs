//! Physical Region Page (PRP) construction for any segment layout.
//!
//! A transfer is a list of segments, each contiguous on the bus. PRP can express it when every
//! segment but the first starts on a page boundary, every segment but the last ends on one,
//! and the first starts on a dword boundary. One entry names each page touched; PRP1 is the
//! first, PRP2 the second when there are exactly two, else the bus address of a PRP list
//! holding entries 2..n. The list is one page per command slot (up to page/8 entries), which
//! covers the largest transfer the driver lets through (MDTS, split by the bdev layer).
//! A layout PRP cannot express, or memory the controller cannot reach, is reported as such:
//! the queue pair then bounces the data through a driver buffer.

use crate::error::{ErrorKind, NvmeError};
use crate::regs::Dma;

const NOT_EXPRESSIBLE: NvmeError = NvmeError::fixed(
    ErrorKind::PrpNotExpressible,
    "a data segment cannot be expressed as PRPs (page-boundary rules, or not dword aligned)",
);
const UNTRANSLATABLE: NvmeError = NvmeError::fixed(
    ErrorKind::Untranslatable,
    "a data segment is not reachable by the controller (not mapped for DMA)",
);
const TOO_LONG: NvmeError = NvmeError::fixed(
    ErrorKind::PrpTooLong,
    "the transfer needs more pages than one PRP list holds",
);
const EMPTY: NvmeError = NvmeError::fixed(ErrorKind::EmptyTransfer, "the transfer is empty");

/// The result: PRP1, PRP2 and how many list entries were written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Prps {
    /// PRP entry 1.
    pub prp1: u64,
    /// PRP entry 2 (second page, list address or 0).
    pub prp2: u64,
    /// Entries written to the list.
    pub list_len: usize,
}

/// Builds PRPs for `segs` (virtual address, length) translated through `dma`, with page size
/// `page`, writing list entries to `list` (one page of the slot's list memory, at bus address
/// `list_iova`). No allocation; runs on the I/O path.
pub fn build(
    dma: &dyn Dma,
    page: usize,
    segs: impl Iterator<Item = (*const u8, usize)> + Clone,
    list: &mut [u64],
    list_iova: u64,
) -> Result<Prps, NvmeError> {
    let mask = page as u64 - 1;
    let nsegs = segs.clone().count();
    let mut out = Prps::default();
    let mut n = 0usize; // entries emitted
    for (i, (va, len)) in segs.enumerate() {
        if len == 0 {
            return Err(NOT_EXPRESSIBLE);
        }
        let iova = dma.translate(va, len).ok_or(UNTRANSLATABLE)?;
        let end = iova + len as u64;
        if i == 0 && iova & 3 != 0 {
            return Err(NOT_EXPRESSIBLE);
        }
        if i > 0 && iova & mask != 0 {
            return Err(NOT_EXPRESSIBLE);
        }
        if i + 1 < nsegs && end & mask != 0 {
            return Err(NOT_EXPRESSIBLE);
        }
        let mut p = iova;
        while p < end {
            match n {
                0 => out.prp1 = p,
                1 => out.prp2 = p,
                _ => {
                    // Entries from the second on go to the list (the second is copied there
                    // when the third appears).
                    let idx = n - 1;
                    if idx >= list.len() {
                        return Err(TOO_LONG);
                    }
                    if n == 2 {
                        list[0] = out.prp2;
                    }
                    list[idx] = p;
                }
            }
            n += 1;
            p = (p & !mask) + page as u64;
        }
    }
    if n == 0 {
        return Err(EMPTY);
    }
    if n > 2 {
        out.prp2 = list_iova;
        out.list_len = n - 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regs::DmaRegion;

    /// Identity translation for addresses below 1 << 40, none above.
    struct Ident;
    impl Dma for Ident {
        fn alloc(&self, _: usize, _: usize) -> crate::Result<DmaRegion> {
            unreachable!()
        }
        fn free(&self, _: DmaRegion) {}
        fn register(&self, _: *mut u8, _: usize) -> crate::Result<()> {
            Ok(())
        }
        fn translate(&self, v: *const u8, _: usize) -> Option<u64> {
            ((v as u64) < (1 << 40)).then_some(v as u64)
        }
    }

    fn run(segs: &[(u64, usize)]) -> (Result<Prps, NvmeError>, Vec<u64>) {
        let mut list = vec![0u64; 512];
        let r = build(
            &Ident,
            4096,
            segs.iter().map(|&(a, l)| (a as *const u8, l)),
            &mut list,
            0x9000_0000,
        );
        let n = r.as_ref().map(|p| p.list_len).unwrap_or(0);
        list.truncate(n);
        (r, list)
    }

    #[test]
    fn one_and_two_pages() {
        let r = run(&[(0x10_0200, 512)]).0.unwrap();
        assert_eq!(r.prp1, 0x10_0200);
        assert_eq!(r.prp2, 0);
        let r = run(&[(0x10_0200, 4096)]).0.unwrap();
        assert_eq!((r.prp1, r.prp2), (0x10_0200, 0x10_1000));
        let r = run(&[(0x10_0000, 4096), (0x20_0000, 4096)]).0.unwrap();
        assert_eq!((r.prp1, r.prp2), (0x10_0000, 0x20_0000));
    }

    #[test]
    fn lists_for_many_pages_and_segments() {
        let (r, list) = run(&[(0x10_0800, 2048), (0x30_0000, 8192), (0x50_0000, 100)]);
        let r = r.unwrap();
        assert_eq!(r.prp1, 0x10_0800);
        assert_eq!(r.prp2, 0x9000_0000);
        assert_eq!(list, vec![0x30_0000, 0x30_1000, 0x50_0000]);
        // 128 KiB contiguous: 32 entries, 31 in the list.
        let (r, list) = run(&[(0x40_0000, 128 * 1024)]);
        assert_eq!(r.unwrap().list_len, 31);
        assert_eq!(list[30], 0x40_0000 + 31 * 4096);
    }

    #[test]
    fn rejects_what_prp_cannot_express() {
        let kind = |segs: &[(u64, usize)]| run(segs).0.unwrap_err().kind();
        // Second segment not page aligned.
        assert_eq!(
            kind(&[(0x10_0000, 4096), (0x20_0200, 512)]),
            ErrorKind::PrpNotExpressible
        );
        // First segment ends mid-page with another following.
        assert_eq!(
            kind(&[(0x10_0000, 512), (0x20_0000, 512)]),
            ErrorKind::PrpNotExpressible
        );
        // Not dword aligned.
        assert_eq!(kind(&[(0x10_0001, 512)]), ErrorKind::PrpNotExpressible);
        assert_eq!(kind(&[(1 << 41, 512)]), ErrorKind::Untranslatable);
        assert_eq!(kind(&[]), ErrorKind::EmptyTransfer);
        // 513 pages do not fit one list page (1 in PRP1 + 512 in the list is the limit).
        assert_eq!(kind(&[(0x100_0000, 514 * 4096)]), ErrorKind::PrpTooLong);
        assert!(run(&[(0x100_0000, 513 * 4096)]).0.is_ok());
        // The messages say what is wrong.
        assert!(run(&[(1 << 41, 512)])
            .0
            .unwrap_err()
            .to_string()
            .contains("not reachable by the controller"));
    }
}
