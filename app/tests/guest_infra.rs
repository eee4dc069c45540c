//! The QEMU guest test infrastructure itself (common/guest.rs, scripts/guest/): a guest boots
//! and runs its script, and a vhost-user-blk disk served by qemu-storage-daemon (the reference
//! server) passes the virtio-blk checks the Ferrite target tests use.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::guest::{self, GuestSpec, Qsd, VhostBlk};
use common::TempDir;

#[test]
fn guest_boots_and_reports() {
    let img = guest::image(&[]);
    let run = GuestSpec::new("boot")
        .param("echo", "hello")
        .boot(&img)
        .finish();
    run.assert_passed(&["cmdline", "fio"]);
}

#[test]
fn vhost_user_blk_against_qemu_storage_daemon() {
    let img = guest::image(&[]);
    let dir = TempDir::new("guest-qsd");
    let size: u64 = 256 << 20;
    let disk = dir.join("disk.img");
    std::fs::File::create(&disk).unwrap().set_len(size).unwrap();
    let sock = dir.join("vub.sock");
    let _qsd = Qsd::start(&sock, size, Some(&disk), 2);
    let mut dev = VhostBlk::new(&sock);
    dev.num_queues = 2;
    let mut spec = GuestSpec::new("blk")
        .param("checks", "size,queues,pattern,fio")
        .param("size", size)
        .param("queues", 2);
    spec.shared_mem = true;
    // virtio-blk uses at most one queue per guest CPU.
    spec.smp = 2;
    spec.qemu_args = guest::vhost_user_blk(&dev);
    let run = spec.boot(&img).finish();
    run.assert_passed(&["size", "queues", "pattern", "fio"]);
}

/// The VFIO path the userspace NVMe driver is tested on: a static `ferrite` runs in a guest
/// whose emulated NVMe controller (two namespaces) is bound to vfio-pci.
#[test]
fn nvme_bound_to_vfio_runs_static_ferrite() {
    let ferrite = guest::static_ferrite();
    let img = guest::image(&[&ferrite]);
    let dir = TempDir::new("guest-vfio");
    let (a, b) = (dir.join("ns1.img"), dir.join("ns2.img"));
    for p in [&a, &b] {
        std::fs::File::create(p).unwrap().set_len(64 << 20).unwrap();
    }
    let cmd = "ferrite --version && test -c /dev/vfio/$NVME_GROUP";
    let run = guest::nvme_vfio(&[&a, &b], cmd, None)
        .param("hugepages", 16)
        .boot(&img)
        .finish();
    run.assert_passed(&["vfio-bind", "cmd"]);
    assert!(
        run.console.iter().any(|l| l.contains("ferrite ")),
        "no version line:\n{}",
        guest::tail(&run.console, 30)
    );
}
