//! Ferrite's vhost-user-blk target seen from a real guest (QEMU under TCG, see common/guest.rs):
//! the disk's size, data integrity (pattern and fio crc32c verify), multiqueue, the packed ring,
//! a read-only controller, discard and write-zeroes read back, and live recovery: the target
//! SIGKILLed and restarted (and restarted gracefully) under a guest fio verify run.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::guest::{self, Guest, GuestSpec, Image, VhostBlk};
use common::{Target, TempDir};
use serde_json::json;

/// The controller every test creates.
const CTRLR: &str = "vhost.0";

/// A target serving vhost-user sockets in `dir/vhost` (`-S`), RPC on `dir/NAME.sock`.
fn start_target(dir: &TempDir, name: &str, extra: &[&str]) -> Target {
    let vdir = vhost_dir(dir);
    std::fs::create_dir_all(&vdir).unwrap();
    let vdir = vdir.display().to_string();
    let mut args = vec!["-S", vdir.as_str()];
    args.extend_from_slice(extra);
    Target::start_in(dir, name, &args)
}

fn vhost_dir(dir: &TempDir) -> PathBuf {
    dir.join("vhost")
}

/// `vhost_create_blk_controller` for `bdev`; returns the socket QEMU connects to.
fn create_ctrlr(t: &Target, dir: &TempDir, bdev: &str, readonly: bool, packed: bool) -> PathBuf {
    t.call(
        "vhost_create_blk_controller",
        json!({"ctrlr": CTRLR, "dev_name": bdev, "readonly": readonly, "packed_ring": packed}),
    );
    let sock = vhost_dir(dir).join(CTRLR);
    assert!(sock.exists(), "no vhost socket at {}", sock.display());
    sock
}

/// A malloc bdev of `mib` MiB with 512-byte blocks; returns its size in bytes.
fn malloc(t: &Target, name: &str, mib: u64) -> u64 {
    let blocks = mib << 11;
    t.call(
        "bdev_malloc_create",
        json!({"name": name, "num_blocks": blocks, "block_size": 512}),
    );
    blocks * 512
}

/// A guest running `blk.sh` with `checks` against the vhost-user-blk device `dev`.
fn blk_spec(dev: &VhostBlk, checks: &str, size: u64) -> GuestSpec {
    let mut spec = GuestSpec::new("blk")
        .param("checks", checks)
        .param("size", size)
        .param("queues", dev.num_queues);
    spec.shared_mem = true;
    // virtio-blk uses at most one queue per guest CPU.
    spec.smp = dev.num_queues.clamp(1, 4);
    spec.qemu_args = guest::vhost_user_blk(dev);
    spec
}

fn boot_and_check(img: &Image, t: &Target, spec: &GuestSpec, expected: &[&str]) {
    let t0 = Instant::now();
    let run = spec.boot(img).finish();
    if !(run.failed.is_empty() && run.exit == Some(0)) {
        eprintln!("target log:\n{}", t.log_text());
    }
    run.assert_passed(expected);
    eprintln!("guest checks {expected:?} passed in {:?}", t0.elapsed());
}

#[test]
fn disk_size_data_multiqueue_discard_write_zeroes() {
    let img = guest::image(&[]);
    let dir = TempDir::new("gvb-basic");
    let t = start_target(&dir, "tgt", &[]);
    let size = malloc(&t, "Malloc0", 192);
    let sock = create_ctrlr(&t, &dir, "Malloc0", false, false);
    let mut dev = VhostBlk::new(&sock);
    dev.num_queues = 2;
    let checks = "size,queues,pattern,fio,discard,zeroes";
    let spec = blk_spec(&dev, checks, size);
    boot_and_check(
        &img,
        &t,
        &spec,
        &["size", "queues", "pattern", "fio", "discard", "zeroes"],
    );
}

#[test]
fn packed_ring() {
    let img = guest::image(&[]);
    let dir = TempDir::new("gvb-packed");
    let t = start_target(&dir, "tgt", &[]);
    let size = malloc(&t, "Malloc0", 128);
    let sock = create_ctrlr(&t, &dir, "Malloc0", false, true);
    let mut dev = VhostBlk::new(&sock);
    dev.packed = true;
    let spec = blk_spec(&dev, "packed,size,pattern,fio", size);
    boot_and_check(&img, &t, &spec, &["packed", "size", "pattern", "fio"]);
}

#[test]
fn readonly_controller() {
    let img = guest::image(&[]);
    let dir = TempDir::new("gvb-ro");
    let t = start_target(&dir, "tgt", &[]);
    let size = malloc(&t, "Malloc0", 64);
    let sock = create_ctrlr(&t, &dir, "Malloc0", true, false);
    let spec = blk_spec(&VhostBlk::new(&sock), "size,ro", size);
    boot_and_check(&img, &t, &spec, &["size", "ro-flag", "ro-write", "ro-read"]);
}

/// A file-backed (aio) controller persisted in `dir/config.json`, so a restarted target
/// (`--persist`) brings the bdev and the controller back with the data.
fn start_persisted(dir: &TempDir, name: &str) -> Target {
    let persist = dir.join("config.json").display().to_string();
    start_target(dir, name, &["--persist", &persist])
}

/// Lets the guest's fio loop run for `d`, then checks it is still running and has not failed.
fn during_fio(g: &Guest, d: Duration) {
    std::thread::sleep(d);
    let c = g.console();
    assert!(
        !c.iter()
            .any(|l| l.contains("GUEST: PASS fioloop") || l.contains("GUEST: FAIL")),
        "the guest's fio loop ended early:\n{}",
        guest::tail(&c, 40)
    );
}

/// The number of fio runs the guest has completed.
fn fio_runs(g: &Guest) -> usize {
    g.console()
        .iter()
        .filter(|l| l.contains("GUEST: INFO fio run"))
        .count()
}

#[test]
fn live_recovery_sigkill() {
    recovery("gvb-kill", libc::SIGKILL, 3);
}

#[test]
fn live_recovery_graceful_restart() {
    recovery("gvb-term", libc::SIGTERM, 2);
}

/// A guest runs fio verify loops on a file-backed controller (QEMU reconnects) while the target
/// is stopped with `sig` (SIGKILL, or SIGTERM: a graceful exit with status 0) and restarted
/// from its persisted config `restarts` times, 1.5 s of guest I/O apart; then one whole fio run
/// must complete, and no run may fail.
fn recovery(tag: &str, sig: i32, restarts: usize) {
    let img = guest::image(&[]);
    let dir = TempDir::new(tag);
    let disk = dir.join("disk.img");
    let size: u64 = 512 << 20;
    std::fs::File::create(&disk).unwrap().set_len(size).unwrap();
    let mut t = start_persisted(&dir, "tgt0");
    t.call(
        "bdev_aio_create",
        json!({"name": "Aio0", "filename": disk.display().to_string(), "block_size": 512}),
    );
    let sock = create_ctrlr(&t, &dir, "Aio0", false, false);
    let mut dev = VhostBlk::new(&sock);
    dev.reconnect = true;
    // Back-to-back 16 MiB fio verify runs until the host writes the stop marker.
    let mut spec = blk_spec(&dev, "size,fioloop", size).param("fio_mb", 16);
    spec.timeout = Duration::from_secs(180);
    let t0 = Instant::now();
    let mut g = spec.boot(&img);
    g.wait_line("GUEST: INFO fio started", Duration::from_secs(60));
    for i in 1..=restarts {
        during_fio(&g, Duration::from_millis(1500));
        if sig == libc::SIGKILL {
            t.kill9();
        } else {
            t.signal(sig);
            let code = t.exit_code(Duration::from_secs(30));
            assert_eq!(code, 0, "graceful shutdown:\n{}", t.log_text());
        }
        eprintln!("signal {sig} ({i}) at {:?}", t0.elapsed());
        t = start_persisted(&dir, &format!("tgt{i}"));
        assert_restored(&t, &sock);
    }
    // One more whole fio run after the last restart, then stop the loop.
    let runs = fio_runs(&g);
    let want = format!("GUEST: INFO fio run {} ok", runs + 2);
    if let Err(e) = g.try_wait_line(&want, Duration::from_secs(60)) {
        panic!(
            "guest I/O did not go on after the restarts: {e}\n{}",
            target_logs(&dir)
        );
    }
    eprintln!("{} fio runs by {:?}; stopping", runs + 2, t0.elapsed());
    stop_marker(&disk);
    let run = g.finish();
    if !(run.failed.is_empty() && run.exit == Some(0)) {
        eprintln!("{}", target_logs(&dir));
    }
    run.assert_passed(&["size", "fioloop"]);
    eprintln!("live recovery run took {:?}", t0.elapsed());
}

/// The last lines of each target incarnation's log (tgt0.log, tgt1.log, ..).
fn target_logs(dir: &TempDir) -> String {
    let mut out = String::new();
    for n in dir.list().iter().filter(|n| n.ends_with(".log")) {
        let text = std::fs::read_to_string(dir.join(n)).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(String::from).collect();
        out.push_str(&format!("--- {n}:\n{}\n", guest::tail(&lines, 25)));
    }
    out
}

/// Writes the guest's stop marker into the first bytes of the backing file (the target has no
/// cache; the guest reads the disk with O_DIRECT).
fn stop_marker(disk: &Path) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(disk).unwrap();
    f.write_all_at(b"FE-STOP!", 0).unwrap();
    f.sync_all().unwrap();
}

/// The restarted target (ready: its config is applied) lists the controller again and its
/// socket exists.
fn assert_restored(t: &Target, sock: &Path) {
    let c = t.call("vhost_get_controllers", json!({ "name": CTRLR }));
    assert_eq!(c[0]["ctrlr"], CTRLR, "controller not restored: {c}");
    assert!(sock.exists(), "no vhost socket after restart");
}
