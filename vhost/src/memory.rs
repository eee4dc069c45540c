//! The guest memory table: the regions a frontend shares with SET_MEM_TABLE, mapped into this
//! process, with the two translations the target needs.
//!
//! - frontend virtual address → guest-physical (SET_VRING_ADDR gives ring addresses in QEMU's
//!   own address space);
//! - guest-physical range → host pointer, for descriptors. A range must lie inside one region:
//!   a range that crosses into a neighbour or runs outside every region is refused (the
//!   request is failed), so the target never touches memory outside the guest's regions.
//!
//! Thread contract: built on the control thread; shared read-only (`Arc`) with the queue
//! threads, which translate without locks. A table is replaced only while every queue that
//! uses it is stopped (see `session.rs`); the mappings live as long as the last `Arc`.

use std::fs::File;

use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

use crate::error::{ErrorKind, Result, VhostError};

/// Most regions a frontend may send (QEMU's limit for SET_MEM_TABLE is 8; ADD_MEM_REGION is
/// not offered).
pub const MAX_REGIONS: usize = 8;

/// One region as the frontend describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionDesc {
    /// Guest-physical start.
    pub gpa: u64,
    /// Length in bytes.
    pub size: u64,
    /// Start in the frontend's virtual address space.
    pub uaddr: u64,
    /// Offset of the region in its file.
    pub mmap_offset: u64,
}

#[derive(Debug, Clone, Copy)]
struct Region {
    gpa: u64,
    size: u64,
    uaddr: u64,
    host: *mut u8,
}

/// The mapped regions of one frontend.
pub struct MemTable {
    regions: Vec<Region>,
    guest: GuestMemoryMmap<()>,
}

// SAFETY: the raw host pointers point into mappings owned by `guest` (kept alive with the
// table); the table is never mutated after construction, so sharing it between threads only
// shares read-only addresses. Accesses through the pointers are the guest's shared memory,
// synchronised by the virtio ring protocol.
unsafe impl Send for MemTable {}
// SAFETY: as above; no interior mutability.
unsafe impl Sync for MemTable {}

impl std::fmt::Debug for MemTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.regions.iter().map(|r| (r.gpa, r.size, r.uaddr)))
            .finish()
    }
}

impl MemTable {
    /// Maps every region from its file. Errors (clear, no panic): more than [`MAX_REGIONS`],
    /// a region count that does not match the files, an empty or overflowing region,
    /// overlapping guest ranges, or a failing mmap. The regions may come in any order.
    pub fn map(descs: &[RegionDesc], files: Vec<File>) -> Result<Self> {
        if descs.len() > MAX_REGIONS {
            return Err(bad(format!(
                "memory table has {} regions (at most {MAX_REGIONS})",
                descs.len()
            )));
        }
        if descs.len() != files.len() {
            return Err(bad(format!(
                "memory table has {} regions but {} file descriptors",
                descs.len(),
                files.len()
            )));
        }
        for (i, d) in descs.iter().enumerate() {
            check_desc(i, d)?;
            for (j, o) in descs.iter().enumerate().take(i) {
                if d.gpa < o.gpa + o.size && o.gpa < d.gpa + d.size {
                    return Err(bad(format!(
                        "memory regions {j} and {i} overlap in guest-physical space"
                    )));
                }
            }
        }
        // vm-memory wants its regions sorted by guest address; the protocol does not promise
        // an order, so the table is sorted here (the regions keep their message index in
        // error messages).
        let mut files: Vec<Option<File>> = files.into_iter().map(Some).collect();
        let mut order: Vec<usize> = (0..descs.len()).collect();
        order.sort_by_key(|&i| descs[i].gpa);
        let mut mapped = Vec::with_capacity(descs.len());
        let mut regions = Vec::with_capacity(descs.len());
        for i in order {
            let d = &descs[i];
            let f = files[i]
                .take()
                .ok_or_else(|| bad(format!("memory region {i} has no file descriptor")))?;
            let size = usize::try_from(d.size)
                .map_err(|_| bad(format!("memory region {i} is too large")))?;
            // A region announced beyond the end of its file maps, but touching that part
            // raises SIGBUS: refuse it (found by the hostile frontend test).
            if let Ok(md) = f.metadata() {
                if md.is_file() && d.mmap_offset.saturating_add(d.size) > md.len() {
                    return Err(bad(format!(
                        "memory region {i} (offset {:#x}, size {:#x}) extends beyond its file ({:#x} bytes)",
                        d.mmap_offset,
                        d.size,
                        md.len()
                    )));
                }
            }
            let m = MmapRegion::<()>::from_file(FileOffset::new(f, d.mmap_offset), size).map_err(
                |e| {
                    VhostError::new(
                        ErrorKind::Io,
                        format!("cannot map memory region {i} ({} bytes): {e}", d.size),
                    )
                },
            )?;
            let host = m.as_ptr();
            let r = GuestRegionMmap::new(m, GuestAddress(d.gpa))
                .ok_or_else(|| bad(format!("memory region {i} overflows")))?;
            mapped.push(r);
            regions.push(Region {
                gpa: d.gpa,
                size: d.size,
                uaddr: d.uaddr,
                host,
            });
        }
        let guest = GuestMemoryMmap::from_regions(mapped)
            .map_err(|e| bad(format!("invalid memory table: {e}")))?;
        Ok(Self { regions, guest })
    }

    /// The vm-memory view of the same mappings (what the ring code reads).
    pub fn guest(&self) -> &GuestMemoryMmap<()> {
        &self.guest
    }

    /// Number of regions.
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    /// True without regions.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// Translates a frontend virtual address to guest-physical, requiring `len` bytes from it to
    /// lie in the same region.
    pub fn va_to_gpa(&self, va: u64, len: u64) -> Result<u64> {
        for r in &self.regions {
            if va >= r.uaddr && va - r.uaddr < r.size {
                let off = va - r.uaddr;
                if len > r.size - off {
                    return Err(fault(format!(
                        "frontend address {va:#x}+{len:#x} crosses the end of its memory region"
                    )));
                }
                return Ok(r.gpa + off);
            }
        }
        Err(fault(format!(
            "frontend address {va:#x} is in no memory region"
        )))
    }

    /// Host pointer of the guest-physical range `[gpa, gpa+len)`, which must lie inside one
    /// region. `None` when it does not (outside memory, or spanning two regions). Lock-free,
    /// allocation-free: the data path calls it per segment.
    #[inline]
    pub fn host_ptr(&self, gpa: u64, len: u64) -> Option<*mut u8> {
        for r in &self.regions {
            if gpa >= r.gpa && gpa - r.gpa < r.size {
                let off = gpa - r.gpa;
                if len > r.size - off {
                    return None;
                }
                // SAFETY: `off < r.size` and the mapping is `r.size` bytes long, so the result
                // stays inside the mapping.
                return Some(unsafe { r.host.add(off as usize) });
            }
        }
        None
    }
}

fn check_desc(i: usize, d: &RegionDesc) -> Result<()> {
    if d.size == 0 {
        return Err(bad(format!("memory region {i} is empty")));
    }
    if d.gpa.checked_add(d.size).is_none()
        || d.uaddr.checked_add(d.size).is_none()
        || d.mmap_offset.checked_add(d.size).is_none()
    {
        return Err(bad(format!(
            "memory region {i} (gpa {:#x}, size {:#x}) overflows the address space",
            d.gpa, d.size
        )));
    }
    Ok(())
}

fn bad(msg: String) -> VhostError {
    VhostError::new(ErrorKind::InvalidArgument, msg)
}

fn fault(msg: String) -> VhostError {
    VhostError::new(ErrorKind::BadAddress, msg)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    pub(crate) fn memfd(size: u64) -> File {
        use std::os::fd::FromRawFd;
        // SAFETY: memfd_create with a valid NUL-terminated name; the fd is owned by the File.
        let fd = unsafe { libc::memfd_create(c"ferrite-test".as_ptr(), 0) };
        assert!(fd >= 0);
        // SAFETY: fd is a fresh, owned descriptor.
        let f = unsafe { File::from_raw_fd(fd) };
        f.set_len(size).unwrap();
        f
    }

    fn two_regions() -> MemTable {
        let descs = [
            RegionDesc {
                gpa: 0,
                size: 0x10000,
                uaddr: 0x7000_0000,
                mmap_offset: 0,
            },
            RegionDesc {
                gpa: 0x10000,
                size: 0x10000,
                uaddr: 0x9000_0000,
                mmap_offset: 0x1000,
            },
        ];
        MemTable::map(&descs, vec![memfd(0x10000), memfd(0x11000)]).unwrap()
    }

    #[test]
    fn translation_edges() {
        let m = two_regions();
        assert_eq!(m.len(), 2);
        assert_eq!(m.va_to_gpa(0x7000_0000, 16).unwrap(), 0);
        assert_eq!(m.va_to_gpa(0x9000_0010, 16).unwrap(), 0x10010);
        // last byte of a region
        assert_eq!(m.va_to_gpa(0x7000_ffff, 1).unwrap(), 0xffff);
        let e = m.va_to_gpa(0x7000_fff0, 0x20).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadAddress);
        assert!(e.message().contains("crosses"), "{e}");
        assert!(m.va_to_gpa(0x8000_0000, 1).is_err());
        // host pointers: inside, at the end, spanning two regions, outside
        assert!(m.host_ptr(0, 0x10000).is_some());
        assert!(m.host_ptr(0xfff0, 0x10).is_some());
        assert!(m.host_ptr(0xfff0, 0x11).is_none(), "spans two regions");
        assert!(m.host_ptr(0x20000, 1).is_none(), "outside");
        assert!(m.host_ptr(u64::MAX, 2).is_none());
        // the mapping is really the file at its offset: write through one pointer, read back
        let p = m.host_ptr(0x10000, 4).unwrap();
        // SAFETY: p points at 4 mapped bytes.
        unsafe { p.write(0xab) };
        // SAFETY: same.
        assert_eq!(unsafe { p.read() }, 0xab);
    }

    #[test]
    fn unsorted_regions_are_sorted() {
        // The higher region first, as a frontend may send them: accepted and usable.
        let descs = [
            RegionDesc {
                gpa: 0x10000,
                size: 0x10000,
                uaddr: 0x9000_0000,
                mmap_offset: 0,
            },
            RegionDesc {
                gpa: 0,
                size: 0x10000,
                uaddr: 0x7000_0000,
                mmap_offset: 0,
            },
        ];
        let m = MemTable::map(&descs, vec![memfd(0x10000), memfd(0x10000)]).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m.va_to_gpa(0x9000_0010, 16).unwrap(), 0x10010);
        assert_eq!(m.va_to_gpa(0x7000_0010, 16).unwrap(), 0x10);
        // Each guest address reaches its own file: a byte written through the host pointer
        // of one region is read back through vm-memory at the same guest address.
        use vm_memory::{Bytes, GuestAddress};
        for (gpa, v) in [(0x10u64, 0x11u8), (0x10010, 0x22)] {
            let p = m.host_ptr(gpa, 1).unwrap();
            // SAFETY: p points at one mapped byte.
            unsafe { p.write(v) };
            let got: u8 = m.guest().read_obj(GuestAddress(gpa)).unwrap();
            assert_eq!(got, v);
        }
        // Unsorted and overlapping: still refused, with a clear message.
        let overlap = [
            RegionDesc {
                gpa: 0x1000,
                size: 0x2000,
                uaddr: 0x10000,
                mmap_offset: 0,
            },
            RegionDesc {
                gpa: 0,
                size: 0x2000,
                uaddr: 0,
                mmap_offset: 0,
            },
        ];
        let e = MemTable::map(&overlap, vec![memfd(0x2000), memfd(0x2000)]).unwrap_err();
        assert!(e.message().contains("overlap"), "{e}");
    }

    #[test]
    fn bad_tables_are_refused() {
        let overlap = [
            RegionDesc {
                gpa: 0,
                size: 0x2000,
                uaddr: 0,
                mmap_offset: 0,
            },
            RegionDesc {
                gpa: 0x1000,
                size: 0x2000,
                uaddr: 0x10000,
                mmap_offset: 0,
            },
        ];
        let e = MemTable::map(&overlap, vec![memfd(0x2000), memfd(0x2000)]).unwrap_err();
        assert!(e.message().contains("overlap"), "{e}");
        let one = [RegionDesc {
            gpa: 0,
            size: 0x1000,
            uaddr: 0,
            mmap_offset: 0,
        }];
        let e = MemTable::map(&one, vec![]).unwrap_err();
        assert!(e.message().contains("file descriptors"), "{e}");
        let empty = [RegionDesc {
            gpa: 0,
            size: 0,
            uaddr: 0,
            mmap_offset: 0,
        }];
        assert!(MemTable::map(&empty, vec![memfd(0x1000)]).is_err());
        let wrap = [RegionDesc {
            gpa: u64::MAX - 10,
            size: 0x1000,
            uaddr: 0,
            mmap_offset: 0,
        }];
        assert!(MemTable::map(&wrap, vec![memfd(0x1000)]).is_err());
    }
}
