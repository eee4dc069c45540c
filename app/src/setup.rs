//! `ferrite setup`: what SPDK's setup.sh does for NVMe, as a subcommand. Lists NVMe PCI
//! functions (class 0x010802) with their driver and IOMMU group, binds them to vfio-pci or
//! back to the kernel driver through `driver_override`, and reports IOMMU, VFIO, hugepage and
//! locked-memory status with advice. On a machine without any of it, it lists nothing and says
//! why.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

/// Options of `ferrite setup`.
#[derive(Args, Debug)]
pub struct SetupOptions {
    #[command(subcommand)]
    cmd: Option<SetupCmd>,
    /// Root of sysfs (for tests).
    #[arg(long, default_value = "/sys", hide = true)]
    sysfs: PathBuf,
}

#[derive(Subcommand, Debug)]
enum SetupCmd {
    /// List NVMe functions and the status of IOMMU, VFIO, hugepages and the memlock limit.
    List,
    /// Bind NVMe functions to vfio-pci (for `bdev_nvme_attach_controller`). A function whose
    /// namespaces are mounted or used as swap is refused.
    Bind {
        /// PCI addresses (0000:00:04.0).
        #[arg(required = true)]
        bdfs: Vec<String>,
    },
    /// Give NVMe functions back to the kernel's nvme driver.
    Unbind {
        /// PCI addresses; none with --all.
        bdfs: Vec<String>,
        /// Every NVMe function bound to vfio-pci.
        #[arg(long)]
        all: bool,
    },
}

struct Func {
    bdf: String,
    id: String,
    driver: Option<String>,
    group: Option<String>,
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn link(p: &Path) -> Option<String> {
    std::fs::read_link(p)
        .ok()
        .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()))
}

fn nvme_functions(sys: &Path) -> Vec<Func> {
    let mut out = Vec::new();
    let dir = sys.join("bus/pci/devices");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if read(&p.join("class")) != "0x010802" {
            continue;
        }
        let v = read(&p.join("vendor"));
        let d = read(&p.join("device"));
        out.push(Func {
            bdf: e.file_name().to_string_lossy().into_owned(),
            id: format!(
                "{}:{}",
                v.trim_start_matches("0x"),
                d.trim_start_matches("0x")
            ),
            driver: link(&p.join("driver")),
            group: link(&p.join("iommu_group")),
        });
    }
    out.sort_by(|a, b| a.bdf.cmp(&b.bdf));
    out
}

fn memlock() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return None;
    }
    Some(lim.rlim_cur)
}

fn list(sys: &Path) -> i32 {
    let funcs = nvme_functions(sys);
    if funcs.is_empty() {
        println!(
            "No NVMe PCI function (class 0x010802) found under {}.",
            sys.join("bus/pci/devices").display()
        );
    } else {
        println!(
            "{:<14} {:<10} {:<10} {:<6} status",
            "BDF", "ID", "DRIVER", "GROUP"
        );
        for f in &funcs {
            let status = match (f.driver.as_deref(), f.group.as_deref()) {
                (_, None) => "no IOMMU group: enable the IOMMU".to_string(),
                (Some("vfio-pci"), Some(_)) => "ready for bdev_nvme_attach_controller".to_string(),
                (Some(d), Some(_)) => format!("in use by {d}: `ferrite setup bind {}`", f.bdf),
                (None, Some(_)) => format!("no driver: `ferrite setup bind {}`", f.bdf),
            };
            println!(
                "{:<14} {:<10} {:<10} {:<6} {status}",
                f.bdf,
                f.id,
                f.driver.as_deref().unwrap_or("-"),
                f.group.as_deref().unwrap_or("-"),
            );
        }
    }
    let groups = std::fs::read_dir(sys.join("kernel/iommu_groups"))
        .map(|r| r.count())
        .unwrap_or(0);
    if groups > 0 {
        println!("IOMMU: enabled ({groups} groups)");
    } else {
        println!("IOMMU: not enabled (no IOMMU groups): boot with intel_iommu=on or amd_iommu=on and enable VT-d/AMD-Vi; VFIO needs it");
    }
    let vfio_pci = sys.join("bus/pci/drivers/vfio-pci").exists();
    let container = Path::new("/dev/vfio/vfio").exists();
    println!(
        "VFIO: vfio-pci driver {}, /dev/vfio/vfio {}{}",
        if vfio_pci { "loaded" } else { "not loaded" },
        if container { "present" } else { "missing" },
        if vfio_pci && container {
            ""
        } else {
            " (modprobe vfio_iommu_type1; modprobe vfio-pci)"
        }
    );
    let free = read(&sys.join("kernel/mm/hugepages/hugepages-2048kB/free_hugepages"));
    let total = read(&sys.join("kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"));
    println!(
        "Hugepages (2 MiB): {} free of {} (optional: DMA memory uses them when free, ordinary pinned memory otherwise)",
        if free.is_empty() { "0" } else { &free },
        if total.is_empty() { "0" } else { &total }
    );
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    match memlock() {
        Some(l) if l == libc::RLIM_INFINITY => println!("Locked memory limit: unlimited"),
        Some(l) => println!(
            "Locked memory limit: {} KiB{}",
            l / 1024,
            if root {
                " (root: not enforced for VFIO mappings)".to_string()
            } else if l < 512 << 20 {
                " — too low for DMA mappings of the buffer pool: `ulimit -l unlimited`, LimitMEMLOCK=infinity, or memlock in /etc/security/limits.conf".to_string()
            } else {
                String::new()
            }
        ),
        None => println!("Locked memory limit: unknown"),
    }
    0
}

fn write(p: &Path, v: &str) -> Result<(), String> {
    std::fs::write(p, v).map_err(|e| format!("writing '{v}' to {}: {e}", p.display()))
}

fn select(
    sys: &Path,
    bdfs: &[String],
    all: bool,
    pick: impl Fn(&Func) -> bool,
) -> Result<Vec<String>, String> {
    let funcs = nvme_functions(sys);
    if all {
        return Ok(funcs
            .iter()
            .filter(|f| pick(f))
            .map(|f| f.bdf.clone())
            .collect());
    }
    if bdfs.is_empty() {
        return Err("name the PCI functions (e.g. 0000:00:04.0) or pass --all".into());
    }
    let mut out = Vec::new();
    for b in bdfs {
        let bdf = ferrite_nvme::vfio::parse_bdf(b).map_err(|e| e.to_string())?;
        if !funcs.iter().any(|f| f.bdf == bdf) {
            return Err(format!(
                "{bdf} is not an NVMe PCI function (see `ferrite setup list`)"
            ));
        }
        out.push(bdf);
    }
    Ok(out)
}

/// A block device of this function (namespace or partition) that is mounted or swap.
fn in_use(dev: &Path) -> Option<String> {
    let mut names = Vec::new();
    for c in std::fs::read_dir(dev.join("nvme"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for n in std::fs::read_dir(c.path()).into_iter().flatten().flatten() {
            let name = n.file_name().to_string_lossy().into_owned();
            if name.starts_with("nvme") && name.contains('n') {
                names.push(name);
            }
        }
    }
    let used = std::fs::read_to_string("/proc/mounts").unwrap_or_default()
        + &std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    names.into_iter().find(|n| {
        used.lines().any(|l| {
            l.split_whitespace()
                .next()
                .and_then(|d| d.strip_prefix("/dev/"))
                .is_some_and(|d| {
                    d == n || (d.starts_with(n.as_str()) && d[n.len()..].starts_with('p'))
                })
        })
    })
}

fn bind(sys: &Path, bdf: &str, driver: Option<&str>) -> Result<(), String> {
    let dev = sys.join("bus/pci/devices").join(bdf);
    if driver.is_some() && !sys.join("bus/pci/drivers/vfio-pci").exists() {
        return Err("vfio-pci is not loaded: modprobe vfio_iommu_type1; modprobe vfio-pci".into());
    }
    if driver.is_some() && link(&dev.join("iommu_group")).is_none() {
        return Err(format!(
            "{bdf} has no IOMMU group: enable the IOMMU (intel_iommu=on or amd_iommu=on)"
        ));
    }
    if driver.is_some() {
        if let Some(ns) = in_use(&dev) {
            return Err(format!(
                "{bdf}: {ns} is mounted or used as swap: not rebinding it"
            ));
        }
    }
    write(&dev.join("driver_override"), driver.unwrap_or("\n"))?;
    if dev.join("driver").exists() {
        write(&dev.join("driver/unbind"), bdf)?;
    }
    write(&sys.join("bus/pci/drivers_probe"), bdf)?;
    let now = link(&dev.join("driver"));
    println!("{bdf}: driver {}", now.as_deref().unwrap_or("none"));
    Ok(())
}

/// Runs `ferrite setup`; returns the exit status.
pub fn run(o: SetupOptions) -> i32 {
    let sys = o.sysfs.as_path();
    let res = match o.cmd.unwrap_or(SetupCmd::List) {
        SetupCmd::List => return list(sys),
        SetupCmd::Bind { bdfs } => select(sys, &bdfs, false, |_| true)
            .and_then(|v| v.iter().try_for_each(|b| bind(sys, b, Some("vfio-pci")))),
        SetupCmd::Unbind { bdfs, all } => {
            select(sys, &bdfs, all, |f| f.driver.as_deref() == Some("vfio-pci"))
                .and_then(|v| v.iter().try_for_each(|b| bind(sys, b, None)))
        }
    };
    match res {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ferrite setup: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests
    use super::*;

    fn fake_sys() -> PathBuf {
        let d = std::env::temp_dir().join(format!("ferrite-setup-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let dev = d.join("bus/pci/devices/0000:00:04.0");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(dev.join("class"), "0x010802\n").unwrap();
        std::fs::write(dev.join("vendor"), "0x1b36\n").unwrap();
        std::fs::write(dev.join("device"), "0x0010\n").unwrap();
        std::fs::create_dir_all(d.join("kernel/iommu_groups/3")).unwrap();
        std::os::unix::fs::symlink(d.join("kernel/iommu_groups/3"), dev.join("iommu_group"))
            .unwrap();
        let other = d.join("bus/pci/devices/0000:00:02.0");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("class"), "0x030000\n").unwrap();
        std::fs::create_dir_all(d.join("bus/pci/drivers/vfio-pci")).unwrap();
        d
    }

    #[test]
    fn lists_and_binds_through_driver_override() {
        let sys = fake_sys();
        let f = nvme_functions(&sys);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].bdf, "0000:00:04.0");
        assert_eq!(f[0].id, "1b36:0010");
        assert_eq!(f[0].group.as_deref(), Some("3"));
        assert_eq!(list(&sys), 0);
        assert!(select(&sys, &["0000:00:02.0".into()], false, |_| true)
            .unwrap_err()
            .contains("not an NVMe"));
        assert!(select(&sys, &[], false, |_| true).is_err());
        let v = select(&sys, &[], true, |f| f.driver.is_none()).unwrap();
        assert_eq!(v, vec!["0000:00:04.0"]);
        bind(&sys, "0000:00:04.0", Some("vfio-pci")).unwrap();
        let dev = sys.join("bus/pci/devices/0000:00:04.0");
        assert_eq!(read(&dev.join("driver_override")), "vfio-pci");
        assert_eq!(read(&sys.join("bus/pci/drivers_probe")), "0000:00:04.0");
        std::fs::remove_dir_all(&sys).unwrap();
    }

    #[test]
    fn host_without_devices_lists_nothing_and_explains() {
        let d = std::env::temp_dir().join(format!("ferrite-setup-empty-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        assert!(nvme_functions(&d).is_empty());
        assert_eq!(list(&d), 0);
        assert!(bind(&d, "0000:00:04.0", Some("vfio-pci"))
            .unwrap_err()
            .contains("vfio-pci is not loaded"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
