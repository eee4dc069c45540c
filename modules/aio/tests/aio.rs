//! The aio bdev on real files (on the disk under the target dir, in the system temp dir, on
//! tmpfs) and, where the machine allows, on a loop block device: random data round trips from
//! two reactors checked against the file itself, back-pressure, flush / unmap / write-zeroes,
//! rescan after growth, read-only bdevs, the buffered fallback, create errors, and an
//! interrupt-mode reactor woken by the channel's eventfd.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::scenarios::{self, completions_wake_the_reactor, RoundTripParams};
use common::*;
use ferrite_aio::AioOpts;
use ferrite_bdev::{BdevEvent, IoStatus, IoType};
use ferrite_reactor::PollMode;

fn create(env: &Env, opts: AioOpts) -> Result<String, ferrite_aio::FileError> {
    env.app(move || ferrite_aio::create(&opts))
}

fn opts(name: &str, file: &str) -> AioOpts {
    AioOpts {
        name: name.into(),
        filename: file.into(),
        fallocate: true,
        ..Default::default()
    }
}

fn delete(env: &Env, name: &str) {
    env.delete(ferrite_aio::delete, name).unwrap();
}

/// Round trips and a burst past the channel's slots (see `common::scenarios`).
fn round_trips_and_file_contents(env: &Env, name: &str, path: &str) {
    let p = RoundTripParams {
        slots: ferrite_aio::AIO_SLOTS,
        seed: 0x1234,
        burst_worker: 0,
        slot_bound: true,
    };
    scenarios::round_trips_and_file_contents(env, name, path, &p);
}

fn non_data_ops(env: &Env, name: &str, path: &str) {
    scenarios::non_data_ops(env, name, path, 99);
}

#[test]
fn random_round_trips_on_disk_and_tmpfs() {
    let env = Env::start(PollMode::Adaptive);
    for (k, (label, parent)) in test_dirs().into_iter().enumerate() {
        let dir = Dir::new(&parent, "aio-rt");
        let path = dir.file("disk.img", 4 << 20);
        let name = format!("AioRt{k}");
        create(&env, opts(&name, &path)).unwrap();
        let ds = &info(&name)["driver_specific"]["aio"];
        eprintln!("{label}: {ds}");
        assert_eq!(ds["filename"], path.as_str());
        round_trips_and_file_contents(&env, &name, &path);
        if ds["o_direct"] == true {
            // Odd segment layouts had to be bounced rather than refused.
            assert!(
                ferrite_aio::bounces(&name).unwrap() > 0,
                "{label}: no bounce"
            );
        }
        delete(&env, &name);
        assert!(ferrite_bdev::lookup(&name).is_none());
    }
}

#[test]
fn flush_unmap_write_zeroes() {
    let env = Env::start(PollMode::Adaptive);
    for (k, (label, parent)) in test_dirs().into_iter().enumerate() {
        let dir = Dir::new(&parent, "aio-ops");
        let path = dir.file("disk.img", 1 << 20);
        let name = format!("AioOps{k}");
        create(&env, opts(&name, &path)).unwrap();
        let b = ferrite_bdev::lookup(&name).unwrap();
        assert!(b.io_type_supported(IoType::Unmap), "{label}: unmap");
        assert!(b.io_type_supported(IoType::Flush), "{label}: flush");
        // Native where the filesystem has ZERO_RANGE, emulated with writes elsewhere (tmpfs).
        assert!(
            b.io_type_supported(IoType::WriteZeroes),
            "{label}: write_zeroes"
        );
        eprintln!(
            "{label}: write_zeroes native (fallocate ZERO_RANGE): {}",
            b.backend().io_type_supported(IoType::WriteZeroes)
        );
        drop(b);
        non_data_ops(&env, &name, &path);
        delete(&env, &name);
    }
}

#[test]
fn without_fallocate_unmap_is_not_offered() {
    let env = Env::start(PollMode::Adaptive);
    let dir = Dir::new(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")),
        "aio-nofa",
    );
    let path = dir.file("disk.img", 1 << 20);
    let mut o = opts("AioNoFa", &path);
    o.fallocate = false;
    create(&env, o).unwrap();
    let v = info("AioNoFa");
    assert_eq!(v["supported_io_types"]["unmap"], false, "{v}");
    assert_eq!(v["driver_specific"]["aio"]["fallocate"], false, "{v}");
    let w = &env.workers[0];
    let r = io(w, "AioNoFa", Op::Unmap { off: 0, blocks: 1 });
    assert_eq!(r.status, IoStatus::Invalid);
    // Write-zeroes is emulated by the bdev layer with writes.
    assert_eq!(
        io(w, "AioNoFa", Op::write(0, vec![7; 4096])).status,
        IoStatus::Success
    );
    assert_eq!(
        io(w, "AioNoFa", Op::Zeroes { off: 0, blocks: 8 }).status,
        IoStatus::Success
    );
    let r = io(w, "AioNoFa", Op::Read { off: 0, blocks: 8 });
    assert!(r.data.iter().all(|b| *b == 0));
    delete(&env, "AioNoFa");
}

#[test]
fn rescan_picks_up_a_grown_file() {
    let env = Env::start(PollMode::Adaptive);
    for (k, (_label, parent)) in test_dirs().into_iter().enumerate() {
        let dir = Dir::new(&parent, "aio-resize");
        let path = dir.file("disk.img", 1 << 20);
        let name = format!("AioResize{k}");
        create(&env, opts(&name, &path)).unwrap();
        let w = &env.workers[0];
        open(w, &name).unwrap();
        assert_eq!(info(&name)["num_blocks"], 2048);
        // Unchanged: no event.
        env.app({
            let n = name.clone();
            move || ferrite_aio::rescan(&n)
        })
        .unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(3 << 20)
            .unwrap();
        let n2 = name.clone();
        assert_eq!(env.app(move || ferrite_aio::rescan(&n2)).unwrap(), 6144);
        assert_eq!(info(&name)["num_blocks"], 6144);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(events(w, &name), vec![BdevEvent::Resize]);
        // The new end is usable.
        let data = random_bytes(4096, 5);
        assert_eq!(
            io(w, &name, Op::write(6136, data.clone())).status,
            IoStatus::Success
        );
        let r = io(
            w,
            &name,
            Op::Read {
                off: 6136,
                blocks: 8,
            },
        );
        assert!(r.data == data);
        let file = std::fs::read(&path).unwrap();
        assert!(file[6136 * 512..] == data[..]);
        // A size that create would refuse (not whole blocks) is refused: nothing changes.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len((3 << 20) + 100)
            .unwrap();
        let n4 = name.clone();
        let e = env.app(move || ferrite_aio::rescan(&n4)).unwrap_err();
        assert_eq!(e.errno(), libc::EINVAL, "{e}");
        assert!(e.to_string().contains("not a multiple"), "{e}");
        assert_eq!(info(&name)["num_blocks"], 6144);
        // Shrinking under an open descriptor is refused.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let n3 = name.clone();
        let e = env.app(move || ferrite_aio::rescan(&n3)).unwrap_err();
        assert_eq!(e.errno(), libc::EBUSY, "{e}");
        delete(&env, &name);
    }
    let e = env.app(|| ferrite_aio::rescan("NoSuchAio")).unwrap_err();
    assert_eq!(e.errno(), libc::ENODEV, "{e}");
}

#[test]
fn readonly_bdev_refuses_writes() {
    let env = Env::start(PollMode::Adaptive);
    let dir = Dir::new(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")), "aio-ro");
    let path = dir.file("disk.img", 1 << 20);
    std::fs::write(&path, random_bytes(1 << 20, 3)).unwrap();
    let mut o = opts("AioRo", &path);
    o.readonly = true;
    create(&env, o).unwrap();
    let v = info("AioRo");
    for t in ["write", "unmap", "write_zeroes"] {
        assert_eq!(v["supported_io_types"][t], false, "{t}: {v}");
    }
    assert_eq!(v["supported_io_types"]["read"], true);
    // The bdev layer emulates compare (a read) but not compare-and-write (it would write).
    let b = ferrite_bdev::lookup("AioRo").unwrap();
    assert!(b.io_type_supported(ferrite_bdev::IoType::Compare));
    assert!(!b.io_type_supported(ferrite_bdev::IoType::CompareAndWrite));
    drop(b);
    assert_eq!(v["driver_specific"]["aio"]["readonly"], true);
    let w = &env.workers[0];
    assert_eq!(
        io(w, "AioRo", Op::write(0, vec![1; 512])).status,
        IoStatus::Invalid
    );
    assert_eq!(
        io(w, "AioRo", Op::Zeroes { off: 0, blocks: 1 }).status,
        IoStatus::Invalid
    );
    let r = io(w, "AioRo", Op::Read { off: 4, blocks: 4 });
    assert_eq!(r.status, IoStatus::Success);
    assert!(r.data[..] == std::fs::read(&path).unwrap()[2048..4096]);
    delete(&env, "AioRo");
}

#[test]
fn buffered_fallback_when_o_direct_is_refused() {
    let env = Env::start(PollMode::Adaptive);
    let dir = Dir::new(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")), "aio-buf");
    let path = dir.file("disk.img", 2 << 20);
    ferrite_aio::file::simulate_no_direct(true);
    let r = create(&env, opts("AioBuf", &path));
    ferrite_aio::file::simulate_no_direct(false);
    r.unwrap();
    assert_eq!(info("AioBuf")["driver_specific"]["aio"]["o_direct"], false);
    round_trips_and_file_contents(&env, "AioBuf", &path);
    assert_eq!(
        ferrite_aio::bounces("AioBuf").unwrap(),
        0,
        "buffered I/O never bounces"
    );
    delete(&env, "AioBuf");
}

#[test]
fn create_errors_name_the_file_and_the_reason() {
    let env = Env::start(PollMode::Adaptive);
    let dir = Dir::new(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")), "aio-err");
    let err = |o: AioOpts| create(&env, o).unwrap_err();

    let missing = dir.path.join("nope/disk.img").display().to_string();
    let e = err(opts("A0", &missing));
    assert_eq!(e.errno(), libc::ENOENT, "{e}");
    assert_eq!(
        e.message(),
        format!("bdev 'A0': cannot open '{missing}' read-write: No such file or directory")
    );

    let d = dir.path.display().to_string();
    let e = err(opts("A0", &d));
    assert_eq!(e.errno(), libc::EISDIR, "{e}");
    assert!(
        e.message().contains(&d) && e.message().contains("directory"),
        "{e}"
    );

    let odd = dir.file("odd.img", 1000);
    let e = err(opts("A0", &odd));
    assert_eq!(e.errno(), libc::EINVAL, "{e}");
    assert!(
        e.message().contains(&odd) && e.message().contains("not a multiple"),
        "{e}"
    );

    let empty = dir.file("empty.img", 0);
    let e = err(opts("A0", &empty));
    assert_eq!(e.errno(), libc::EINVAL, "{e}");
    assert!(
        e.message().contains(&empty) && e.message().contains("size 0"),
        "{e}"
    );

    let ok = dir.file("ok.img", 1 << 20);
    let mut o = opts("A0", &ok);
    o.block_size = 1000;
    let e = err(o);
    assert_eq!(e.errno(), libc::EINVAL, "{e}");
    assert!(e.message().contains("block size 1000"), "{e}");

    let mut o = opts("A0", &ok);
    o.uuid = Some("not-a-uuid".into());
    assert_eq!(err(o).errno(), libc::EINVAL);

    // Unwritable for a read-write open (still fine read-only).
    let ro = dir.file("ro.img", 1 << 20);
    match make_unwritable(&ro) {
        Some(guard) => {
            let e = err(opts("A0", &ro));
            assert!(
                e.errno() == libc::EACCES || e.errno() == libc::EPERM,
                "{e} ({})",
                e.errno()
            );
            assert!(
                e.message()
                    .starts_with(&format!("bdev 'A0': cannot open '{ro}' read-write: ")),
                "{e}"
            );
            let mut o = opts("A0ro", &ro);
            o.readonly = true;
            create(&env, o).unwrap();
            delete(&env, "A0ro");
            drop(guard);
        }
        None => eprintln!(
            "note: cannot make a file unwritable here (root without FS_IOC_SETFLAGS); case skipped"
        ),
    }

    create(&env, opts("A0", &ok)).unwrap();
    let e = err(opts("A0", &ok));
    assert_eq!(e.errno(), libc::EEXIST, "{e}");
    delete(&env, "A0");
}

/// Makes `path` refuse a read-write open even for root (immutable attribute), or by mode bits
/// for other users; undone on drop.
pub struct Unwritable(String, bool);

const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
const FS_IOC_SETFLAGS: libc::c_ulong = 0x4008_6602;
const FS_IMMUTABLE_FL: libc::c_long = 0x10;

fn set_immutable(path: &str, on: bool) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(f) = std::fs::File::open(path) else {
        return false;
    };
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one long to the live `flags`.
    if unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_GETFLAGS, &mut flags) } != 0 {
        return false;
    }
    if on {
        flags |= FS_IMMUTABLE_FL;
    } else {
        flags &= !FS_IMMUTABLE_FL;
    }
    // SAFETY: FS_IOC_SETFLAGS reads one long from the live `flags`.
    unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_SETFLAGS, &flags) == 0 }
}

pub fn make_unwritable(path: &str) -> Option<Unwritable> {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: geteuid has no arguments.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        // Mode bits do not stop root: use the immutable attribute.
        return set_immutable(path, true).then(|| Unwritable(path.to_string(), true));
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444)).ok()?;
    Some(Unwritable(path.to_string(), false))
}

impl Drop for Unwritable {
    fn drop(&mut self) {
        if self.1 {
            set_immutable(&self.0, false);
        }
    }
}

#[test]
fn config_entry_and_driver_specific() {
    let env = Env::start(PollMode::Adaptive);
    let dir = Dir::new(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")), "aio-cfg");
    let path = dir.file("disk.img", 1 << 20);
    let mut o = opts("AioCfg", &path);
    o.uuid = Some("6b1c3e0e-4c7f-4a3a-9d5e-1f2a3b4c5d6e".into());
    o.block_size = 4096;
    create(&env, o).unwrap();
    let b = ferrite_bdev::lookup("AioCfg").unwrap();
    assert_eq!(b.block_size(), 4096);
    assert_eq!(b.num_blocks(), 256);
    assert_eq!(b.product_name(), "AIO disk");
    let e = b.backend().config_entry(&b).unwrap();
    assert_eq!(e["method"], "bdev_aio_create");
    let p = &e["params"];
    assert_eq!(p["name"], "AioCfg");
    assert_eq!(p["filename"], path.as_str());
    assert_eq!(p["block_size"], 4096);
    assert_eq!(p["readonly"], false);
    assert_eq!(p["fallocate"], true);
    assert_eq!(p["uuid"], "6b1c3e0e-4c7f-4a3a-9d5e-1f2a3b4c5d6e");
    let ds = &ferrite_bdev::rpc::bdev_info(&b)["driver_specific"]["aio"];
    assert_eq!(ds["block_size_override"], true, "{ds}");
    assert_eq!(ds["readonly"], false, "{ds}");
    assert_eq!(ds["fallocate"], true, "{ds}");
    drop(b);
    delete(&env, "AioCfg");
    // Detected block size: not written back.
    create(&env, opts("AioCfg2", &path)).unwrap();
    let b = ferrite_bdev::lookup("AioCfg2").unwrap();
    let e = b.backend().config_entry(&b).unwrap();
    assert!(e["params"].get("block_size").is_none(), "{e}");
    assert_eq!(
        ferrite_bdev::rpc::bdev_info(&b)["driver_specific"]["aio"]["block_size_override"],
        false
    );
    drop(b);
    delete(&env, "AioCfg2");
}

#[test]
fn block_device_via_loop() {
    let env = Env::start(PollMode::Adaptive);
    let dir = Dir::new(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")),
        "aio-loop",
    );
    let backing = dir.file("backing.img", 4 << 20);
    let Some(lo) = Loop::attach(&backing) else {
        return;
    };
    create(&env, opts("AioLoop", &lo.dev)).unwrap();
    let v = info("AioLoop");
    assert_eq!(v["block_size"], 512, "{v}");
    assert_eq!(v["num_blocks"], 8192, "{v}");
    round_trips_and_file_contents(&env, "AioLoop", &lo.dev);
    non_data_ops(&env, "AioLoop", &lo.dev);
    // Grow the backing file, tell the loop driver, rescan.
    let w = &env.workers[0];
    open(w, "AioLoop").unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&backing)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    lo.refresh();
    assert_eq!(env.app(|| ferrite_aio::rescan("AioLoop")).unwrap(), 16384);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(events(w, "AioLoop"), vec![BdevEvent::Resize]);
    delete(&env, "AioLoop");
}

#[test]
fn interrupt_mode_reactor_is_woken_by_completions() {
    let env = Env::start(PollMode::Interrupt);
    let dir = Dir::new(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")),
        "aio-intr",
    );
    let path = dir.file("disk.img", 1 << 20);
    create(&env, opts("AioIntr", &path)).unwrap();
    completions_wake_the_reactor(&env, "AioIntr", &env.workers[0]);
    delete(&env, "AioIntr");
}

#[test]
fn flush_falls_back_to_a_helper_thread_when_fdsync_is_refused() {
    let env = Env::start(PollMode::Adaptive);
    let dir = Dir::new(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")),
        "aio-fdsync",
    );
    let path = dir.file("disk.img", 1 << 20);
    create(&env, opts("AioFdsync", &path)).unwrap();
    let w = &env.workers[0];
    assert_eq!(io(w, "AioFdsync", Op::Flush).status, IoStatus::Success);
    assert!(!ferrite_aio::flush_on_helper("AioFdsync").unwrap());
    ferrite_aio::file::simulate_fdsync_einval(true);
    let data = random_bytes(4096, 11);
    let outs = batch(
        w,
        "AioFdsync",
        vec![Op::write(0, data.clone()), Op::Flush, Op::Flush],
    );
    ferrite_aio::file::simulate_fdsync_einval(false);
    assert!(
        outs.iter().all(|o| o.status == IoStatus::Success),
        "{outs:?}"
    );
    assert!(ferrite_aio::flush_on_helper("AioFdsync").unwrap());
    // From now on flushes go straight to the helper thread.
    assert_eq!(io(w, "AioFdsync", Op::Flush).status, IoStatus::Success);
    assert!(std::fs::read(&path).unwrap()[..4096] == data[..]);
    delete(&env, "AioFdsync");
}
