//! The userspace NVMe driver on QEMU's emulated NVMe controller in a TCG guest (q35 with an
//! intel-iommu, the controller bound to vfio-pci): `ferrite bench` workloads on two namespaces
//! (scripts/guest/tests/nvme.sh), then the host checks that the data the guest wrote through
//! the driver is in the image file.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::guest;
use common::TempDir;

#[test]
fn nvme_bdev_workloads_in_guest() {
    let ferrite = guest::static_ferrite();
    let img = guest::image(&[&ferrite]);
    let dir = TempDir::new("guest-nvme");
    let (a, b) = (dir.join("ns1.img"), dir.join("ns2.img"));
    std::fs::File::create(&a)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    std::fs::File::create(&b)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let mut spec = guest::nvme_vfio(&[&a, &b], "", Some("nvme"))
        .param("hugepages", 16)
        .param("qsize", 64)
        .param("seed", 4242);
    spec.timeout = Duration::from_secs(400);
    let run = spec.boot(&img).finish();
    run.assert_passed(&[
        "vfio-bind",
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
