//! A PCI function bound to vfio-pci: container and group (`vfio-ioctls`), BAR0 mapped with
//! `mmap` on the device file at the region's offset, bus mastering enabled through config
//! space, and DMA memory mapped into the IOMMU through the container at IOVAs from a simple
//! allocator (a bump pointer from 4 GiB: IOVA space is large and mappings are long-lived).
//!
//! DMA memory comes from 2 MiB hugepages (`MAP_HUGETLB`) when an allocation is large enough
//! and the kernel has free ones, else from ordinary anonymous memory; VFIO pins either while
//! it is mapped. Memory owned by others (the bdev buffer pool) is added with
//! [`Dma::register`]; everything else the bdev layer hands down is bounced by the queue pair.
//!
//! Thread contract: opening and DMA allocation are control-path calls (any thread);
//! [`Bar`] accesses and [`Dma::translate`] run on the I/O path without locks or syscalls.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use vfio_ioctls::{VfioContainer, VfioDevice, VfioOps};

use crate::regs::{Bar, Dma, DmaRegion};
use crate::table::IovaTable;
use crate::{ErrorKind, NvmeError, Result};

const BAR0: u32 = 0;
const CONFIG_REGION: u32 = 7;
const REGION_FLAG_MMAP: u32 = 4;
const HUGE: usize = 2 << 20;

/// Checks a PCI address of the form `DDDD:BB:DD.F` (lower-case hex); returns it normalised.
pub fn parse_bdf(s: &str) -> Result<String> {
    let bad = || {
        NvmeError::new(
            ErrorKind::InvalidArgument,
            format!("invalid PCI address '{s}': expected domain:bus:device.function such as 0000:00:04.0"),
        )
    };
    let t = s.trim().to_ascii_lowercase();
    let (dom, rest) = match t.matches(':').count() {
        2 => t.split_once(':').ok_or_else(bad)?,
        1 => ("0000", t.as_str()),
        _ => return Err(bad()),
    };
    let (bus, rest) = rest.split_once(':').ok_or_else(bad)?;
    let (dev, func) = rest.split_once('.').ok_or_else(bad)?;
    let hex = |x: &str, max: u32| {
        u32::from_str_radix(x, 16)
            .ok()
            .filter(|v| *v <= max && !x.is_empty())
    };
    let (Some(d), Some(b), Some(v), Some(f)) = (
        hex(dom, 0xffff),
        hex(bus, 0xff),
        hex(dev, 0x1f),
        hex(func, 7),
    ) else {
        return Err(bad());
    };
    Ok(format!("{d:04x}:{b:02x}:{v:02x}.{f:x}"))
}

fn sysfs(bdf: &str) -> PathBuf {
    Path::new("/sys/bus/pci/devices").join(bdf)
}

fn link_name(p: &Path) -> Option<String> {
    std::fs::read_link(p)
        .ok()
        .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()))
}

/// Checks that `bdf` can be opened through VFIO; the error says what to do otherwise.
pub fn check_function(bdf: &str) -> Result<u32> {
    let dev = sysfs(bdf);
    if !dev.exists() {
        return Err(NvmeError::new(
            ErrorKind::NotFound,
            format!("PCI function {bdf} not found (list NVMe functions with `ferrite setup`)"),
        ));
    }
    let class = std::fs::read_to_string(dev.join("class")).unwrap_or_default();
    if class.trim() != "0x010802" {
        return Err(NvmeError::new(
            ErrorKind::NotFound,
            format!(
                "PCI function {bdf} is not an NVMe controller (class {}; list NVMe functions with `ferrite setup`)",
                class.trim()
            ),
        ));
    }
    match link_name(&dev.join("driver")).as_deref() {
        Some("vfio-pci") => {}
        other => {
            return Err(NvmeError::new(
                ErrorKind::NotBound,
                format!(
                    "PCI function {bdf} is {}, not to vfio-pci: run `ferrite setup bind {bdf}` (needs vfio-pci and vfio_iommu_type1 loaded)",
                    match other {
                        Some(d) => format!("bound to '{d}'"),
                        None => "not bound to any driver".to_string(),
                    }
                ),
            ))
        }
    }
    let group = link_name(&dev.join("iommu_group"))
        .and_then(|g| g.parse::<u32>().ok())
        .ok_or_else(|| {
            NvmeError::new(
                ErrorKind::NoIommuGroup,
                format!(
                    "PCI function {bdf} has no IOMMU group: enable the IOMMU (intel_iommu=on or amd_iommu=on on the kernel command line, VT-d/AMD-Vi in the firmware)"
                ),
            )
        })?;
    if !Path::new(&format!("/dev/vfio/{group}")).exists() {
        return Err(NvmeError::new(
            ErrorKind::Vfio,
            format!("/dev/vfio/{group} (IOMMU group of {bdf}) is missing: load vfio-pci and vfio_iommu_type1"),
        ));
    }
    Ok(group)
}

/// Checks the locked-memory limit against `needed` bytes of DMA memory. Root (with
/// CAP_IPC_LOCK) is not limited.
pub fn check_memlock(needed: usize) -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if rc == 0 && !root && lim.rlim_cur != libc::RLIM_INFINITY && (lim.rlim_cur as usize) < needed {
        return Err(NvmeError::new(
            ErrorKind::Memlock,
            format!(
                "locked memory limit is {} KiB but DMA mappings need about {} KiB: raise it (`ulimit -l unlimited`, LimitMEMLOCK=infinity in a systemd unit, or memlock in /etc/security/limits.conf) or run with CAP_IPC_LOCK",
                lim.rlim_cur / 1024,
                needed / 1024
            ),
        ));
    }
    Ok(())
}

/// BAR0 of the device: an mmap of the device file.
pub struct VfioBar {
    base: *mut u8,
    len: usize,
    _device: Arc<VfioDevice>,
}

// SAFETY: the mapping is device memory accessed only with volatile 32-bit operations; the
// device object it comes from is shared and immutable.
unsafe impl Send for VfioBar {}
// SAFETY: as above.
unsafe impl Sync for VfioBar {}

impl Bar for VfioBar {
    fn read32(&self, off: usize) -> u32 {
        if off + 4 > self.len {
            return u32::MAX;
        }
        // SAFETY: `off + 4 <= len` inside the BAR mapping; registers are 4-byte aligned.
        unsafe { std::ptr::read_volatile(self.base.add(off) as *const u32) }
    }
    fn write32(&self, off: usize, v: u32) {
        if off + 4 > self.len {
            return;
        }
        // SAFETY: as in read32.
        unsafe { std::ptr::write_volatile(self.base.add(off) as *mut u32, v) }
    }
}

impl Drop for VfioBar {
    fn drop(&mut self) {
        // SAFETY: the mapping was created in `open` with this length.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
    }
}

struct Owned {
    vaddr: usize,
    len: usize,
    iova: u64,
}

/// DMA memory mapped through the VFIO container.
pub struct VfioDma {
    container: Arc<VfioContainer>,
    table: IovaTable,
    next_iova: Mutex<u64>,
    owned: Mutex<Vec<Owned>>,
    registered: Mutex<Vec<(usize, usize, u64)>>,
    hugepage_bytes: std::sync::atomic::AtomicUsize,
}

impl VfioDma {
    fn take_iova(&self, len: usize) -> u64 {
        let mut n = self.next_iova.lock().unwrap_or_else(|p| p.into_inner());
        let align = if len >= HUGE { HUGE as u64 } else { 4096 };
        let iova = n.div_ceil(align) * align;
        *n = iova + len as u64;
        iova
    }

    fn map(&self, vaddr: *mut u8, len: usize) -> Result<u64> {
        let iova = self.take_iova(len);
        // SAFETY: the memory stays mapped until `free`/drop unmaps it from the IOMMU first;
        // the driver only touches it through raw pointers and volatile accesses.
        unsafe { self.container.vfio_dma_map(iova, len, vaddr) }.map_err(|e| {
            let msg = e.to_string();
            let kind = if msg.contains("Cannot allocate memory") || msg.contains("ENOMEM") {
                ErrorKind::Memlock
            } else {
                ErrorKind::Vfio
            };
            NvmeError::new(
                kind,
                format!(
                    "IOMMU mapping of {len} bytes failed: {msg}{}",
                    if kind == ErrorKind::Memlock {
                        " (locked memory limit too low? `ulimit -l unlimited` or CAP_IPC_LOCK)"
                    } else {
                        ""
                    }
                ),
            )
        })?;
        if !self.table.insert(vaddr as usize, len, iova) {
            let _ = self.container.vfio_dma_unmap(iova, len);
            return Err(NvmeError::new(
                ErrorKind::NoMemory,
                "DMA translation table is full",
            ));
        }
        Ok(iova)
    }

    /// Bytes of DMA memory allocated from hugepages.
    pub fn hugepage_bytes(&self) -> usize {
        self.hugepage_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Dma for VfioDma {
    fn alloc(&self, len: usize, align: usize) -> Result<DmaRegion> {
        if align > HUGE {
            return Err(NvmeError::new(
                ErrorKind::InvalidArgument,
                "alignment above 2 MiB",
            ));
        }
        let mut huge = len >= HUGE / 2;
        let alloc_len = if huge {
            len.div_ceil(HUGE) * HUGE
        } else {
            len.div_ceil(4096) * 4096
        };
        let mut p = libc::MAP_FAILED;
        if huge {
            // SAFETY: anonymous mapping, no hint; result checked.
            p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    alloc_len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB,
                    -1,
                    0,
                )
            };
        }
        let len_mapped = if p == libc::MAP_FAILED {
            huge = false;
            let l = len.div_ceil(4096) * 4096;
            // SAFETY: as above. Page alignment (4 KiB) covers every alignment the driver asks
            // below 2 MiB except for huge allocations, which come from hugepages or fail below.
            p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    l,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(NvmeError::new(
                    ErrorKind::NoMemory,
                    format!(
                        "mmap of {l} bytes of DMA memory failed: {}",
                        std::io::Error::last_os_error()
                    ),
                ));
            }
            l
        } else {
            alloc_len
        };
        if align > 4096 && !huge && !(p as usize).is_multiple_of(align) {
            // SAFETY: the mapping made above.
            unsafe { libc::munmap(p, len_mapped) };
            return Err(NvmeError::new(
                ErrorKind::NoMemory,
                "DMA memory alignment not met",
            ));
        }
        let vaddr = p as *mut u8;
        let iova = match self.map(vaddr, len_mapped) {
            Ok(i) => i,
            Err(e) => {
                // SAFETY: the mapping made above.
                unsafe { libc::munmap(p, len_mapped) };
                return Err(e);
            }
        };
        if huge {
            self.hugepage_bytes
                .fetch_add(len_mapped, std::sync::atomic::Ordering::Relaxed);
        }
        self.owned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Owned {
                vaddr: vaddr as usize,
                len: len_mapped,
                iova,
            });
        Ok(DmaRegion { vaddr, iova, len })
    }

    fn free(&self, r: DmaRegion) {
        let mut o = self.owned.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = o.iter().position(|x| x.vaddr == r.vaddr as usize) {
            let x = o.swap_remove(i);
            self.table.remove(x.vaddr);
            let _ = self.container.vfio_dma_unmap(x.iova, x.len);
            // SAFETY: the mapping made by `alloc`, no longer reachable by the device.
            unsafe { libc::munmap(x.vaddr as *mut libc::c_void, x.len) };
        }
    }

    fn register(&self, vaddr: *mut u8, len: usize) -> Result<()> {
        if !(vaddr as usize).is_multiple_of(4096) || !len.is_multiple_of(4096) || len == 0 {
            return Err(NvmeError::new(
                ErrorKind::InvalidArgument,
                "DMA registration needs page-aligned memory",
            ));
        }
        let iova = self.map(vaddr, len)?;
        self.registered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((vaddr as usize, len, iova));
        Ok(())
    }

    fn translate(&self, vaddr: *const u8, len: usize) -> Option<u64> {
        self.table.translate(vaddr as usize, len)
    }
}

impl Drop for VfioDma {
    fn drop(&mut self) {
        for x in self
            .owned
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = self.container.vfio_dma_unmap(x.iova, x.len);
            // SAFETY: the mapping made by `alloc`.
            unsafe { libc::munmap(x.vaddr as *mut libc::c_void, x.len) };
        }
        for (_, len, iova) in self
            .registered
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = self.container.vfio_dma_unmap(iova, len);
        }
    }
}

/// An opened VFIO function: its BAR0 and its DMA memory.
pub struct VfioPci {
    /// The PCI address.
    pub bdf: String,
    /// IOMMU group.
    pub group: u32,
    /// BAR0.
    pub bar: Arc<VfioBar>,
    /// DMA memory.
    pub dma: Arc<VfioDma>,
}

/// Opens `bdf` (bound to vfio-pci): container, group, device, BAR0 mapping, bus mastering.
/// `dma_bytes` is the DMA memory expected (for the locked-memory check).
pub fn open(bdf: &str, dma_bytes: usize) -> Result<VfioPci> {
    let bdf = parse_bdf(bdf)?;
    let group = check_function(&bdf)?;
    check_memlock(dma_bytes)?;
    let vfio_err = |what: &str, e: vfio_ioctls::VfioError| {
        let msg = format!("{e}");
        let hint =
            if msg.contains("ENODEV") || msg.contains("No such device") || msg.contains("IOMMU") {
                " (is vfio_iommu_type1 loaded?)"
            } else if msg.contains("Device or resource busy") || msg.contains("EBUSY") {
                " (is the device already open in another process?)"
            } else {
                ""
            };
        NvmeError::new(ErrorKind::Vfio, format!("{bdf}: {what}: {msg}{hint}"))
    };
    let container =
        Arc::new(VfioContainer::new(None).map_err(|e| vfio_err("opening /dev/vfio/vfio", e))?);
    let ops: Arc<dyn VfioOps> = container.clone();
    let device = Arc::new(
        VfioDevice::new(&sysfs(&bdf), ops, false).map_err(|e| vfio_err("opening the device", e))?,
    );
    // Memory space and bus master enable (PCI command register).
    let mut cmd = [0u8; 2];
    device.region_read(CONFIG_REGION, &mut cmd, 4);
    let v = u16::from_le_bytes(cmd) | 0x2 | 0x4;
    device.region_write(CONFIG_REGION, &v.to_le_bytes(), 4);
    let flags = device.get_region_flags(BAR0);
    let size = device.get_region_size(BAR0) as usize;
    let offset = device.get_region_offset(BAR0);
    if flags & REGION_FLAG_MMAP == 0 || size < 0x2000 {
        return Err(NvmeError::new(
            ErrorKind::Vfio,
            format!("{bdf}: BAR0 cannot be mapped (flags {flags:#x}, size {size})"),
        ));
    }
    use std::os::fd::AsRawFd;
    // SAFETY: maps the BAR0 region of the device file at the offset VFIO reported; the
    // result is checked.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            device.as_raw_fd(),
            offset as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(NvmeError::new(
            ErrorKind::Vfio,
            format!(
                "{bdf}: mmap of BAR0 failed: {}",
                std::io::Error::last_os_error()
            ),
        ));
    }
    let bar = Arc::new(VfioBar {
        base: p as *mut u8,
        len: size,
        _device: device,
    });
    let dma = Arc::new(VfioDma {
        container,
        table: IovaTable::new(),
        next_iova: Mutex::new(1 << 32),
        owned: Mutex::new(Vec::new()),
        registered: Mutex::new(Vec::new()),
        hugepage_bytes: Default::default(),
    });
    Ok(VfioPci {
        bdf,
        group,
        bar,
        dma,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bdf_parsing_and_host_errors() {
        assert_eq!(parse_bdf("0000:00:04.0").unwrap(), "0000:00:04.0");
        assert_eq!(parse_bdf("00:04.0").unwrap(), "0000:00:04.0");
        assert_eq!(parse_bdf("0000:0A:1f.7").unwrap(), "0000:0a:1f.7");
        for bad in [
            "",
            "0000:00:04",
            "0000:00:20.0",
            "0000:00:04.8",
            "x:00:04.0",
            "1:2:3:4.0",
        ] {
            assert_eq!(
                parse_bdf(bad).unwrap_err().kind(),
                ErrorKind::InvalidArgument,
                "{bad}"
            );
        }
        let e = check_function("ffff:ff:1f.7").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.message().contains("ferrite setup"));
    }
}
