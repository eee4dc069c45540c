//! The userspace NVMe driver on QEMU's emulated NVMe controller in a TCG guest (q35 with an
//! intel-iommu, the controller bound to vfio-pci): `ferrite bench` workloads on two namespaces
//! (scripts/guest/tests/nvme.sh), then the host checks that the data the guest wrote through
//! the driver is in the image file.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::guest;
use common::{Target, TempDir};
use serde_json::json;

const HOST_UUID: &str = "6e766d65-0000-4000-8000-000000000003";

/// Data written on the host: a ferrite target on the host creates a raid1 with an on-disk
/// superblock over an aio bdev on `img` (and a malloc bdev), which writes the CRC-checked
/// superblock into the file. The guest must read it back through the NVMe driver.
fn host_raid_superblock(dir: &TempDir, img: &std::path::Path) {
    let mut t = Target::start_in(dir, "host", &[]);
    t.call(
        "bdev_aio_create",
        json!({"name": "A0", "filename": img.display().to_string(), "block_size": 512,
               "uuid": HOST_UUID}),
    );
    t.call(
        "bdev_malloc_create",
        json!({"name": "M0", "num_blocks": 16384, "block_size": 512}),
    );
    t.call(
        "bdev_raid_create",
        json!({"name": "HostRaid", "raid_level": "raid1", "base_bdevs": ["A0", "M0"],
               "superblock": true}),
    );
    t.signal(libc::SIGTERM);
    assert_eq!(t.exit_code(Duration::from_secs(30)), 0, "{}", t.log_text());
    let data = std::fs::read(img).unwrap();
    assert!(data.iter().any(|&b| b != 0), "no superblock written");
}

#[test]
fn nvme_bdev_workloads_in_guest() {
    let ferrite = guest::static_ferrite();
    let img = guest::image(&[&ferrite]);
    let dir = TempDir::new("guest-nvme");
    let (a, b, c) = (
        dir.join("ns1.img"),
        dir.join("ns2.img"),
        dir.join("ns3.img"),
    );
    for (p, size) in [(&a, 64 << 20), (&b, 16 << 20), (&c, 8 << 20)] {
        std::fs::File::create(p).unwrap().set_len(size).unwrap();
    }
    host_raid_superblock(&dir, &c);
    let mut spec = guest::nvme_vfio(&[&a, &b, &c], "", Some("nvme"))
        .param("hostraid", "HostRaid")
        .param("hugepages", 16)
        .param("qsize", 64)
        .param("seed", 4242);
    spec.timeout = Duration::from_secs(400);
    // Under TCG on a loaded host the kernel's check of the timer through the interrupt-
    // remapped IO-APIC can fail and panic at boot ("timer doesn't work through Interrupt-
    // remapped IO-APIC"); skip that check.
    spec.kernel_args.push("no_timer_check".into());
    // Namespace 3 carries the host aio bdev's UUID, so the raid recognises it as its member.
    for arg in spec.qemu_args.iter_mut() {
        if arg.starts_with("nvme-ns,") && arg.ends_with("nsid=3") {
            arg.push_str(&format!(",uuid={HOST_UUID}"));
        }
    }
    let run = spec.boot(&img).finish();
    run.assert_passed(&[
        "vfio-bind",
        "host-pattern",
        "verify-qd1",
        "verify-deep",
        "verify-prp-list",
        "randrw",
        "unmap",
        "write-zeroes",
        "flush",
        "two-namespaces",
        "pattern-out",
        "reset-rpc",
        "reset-during-io",
        "controllers",
        "save-config-round-trip",
    ]);

    for l in run.console.iter().filter(|l| l.contains("GUEST: INFO")) {
        eprintln!("{l}");
    }
    // The controller came back from the reset with its queue pair.
    assert!(
        run.console
            .iter()
            .any(|l| l.contains("\"state\": \"enabled\"")),
        "no enabled controller after the reset:\n{}",
        guest::tail(&run.console, 40)
    );

    // Data written in the guest is in the image: every block a verify run wrote on namespace
    // 2 (512-byte blocks) names its own offset and checks out in full against the pattern.
    let data = std::fs::read(&b).unwrap();
    let mut found = 0;
    for (i, blk) in data.chunks(512).enumerate() {
        let w = |k: usize| u64::from_le_bytes(blk[8 * k..8 * k + 8].try_into().unwrap());
        if w(0) != ferrite_bench::verify::MAGIC {
            continue;
        }
        let off = (i * 512) as u64;
        assert_eq!(w(1), off, "block {i} names another offset");
        ferrite_bench::verify::check(blk, 512, off, w(2), w(3) as u32)
            .unwrap_or_else(|e| panic!("block {i}: {e:?}"));
        found += 1;
    }
    assert!(found > 100, "only {found} verify blocks in the image");
}
