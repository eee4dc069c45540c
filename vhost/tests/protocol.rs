//! The target driven through its Unix socket by the rust-vmm `vhost` crate's frontend:
//! negotiation, config space, memory table (memfd), a split ring driven by hand, reads and
//! writes checked against a malloc bdev, flush, GET_ID, failing requests, ring stop/restart,
//! controller errors, delete.
#![allow(clippy::unwrap_used)] // tests

mod common;

use common::*;
use ferrite_vhost::blk::request::{req_type, status};
use vhost::vhost_user::VhostUserFrontend;
use vhost::VhostBackend;

#[test]
fn negotiate_read_write_and_fail_cleanly() {
    let env = env();
    env.malloc("Malloc0", 2048, 512);
    env.create("vhost.0", "Malloc0", false).unwrap();
    let sock = env.dir.join("vhost.0");
    let mode = std::fs::metadata(&sock).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);

    let mut d = Driver::connect(&sock);
    assert_eq!(d.fe.get_queue_num().unwrap(), 16);
    // config space: capacity in sectors, blk_size; shorter and longer reads
    let c = d.config(60);
    assert_eq!(u64::from_le_bytes(c[0..8].try_into().unwrap()), 2048);
    assert_eq!(u32::from_le_bytes(c[20..24].try_into().unwrap()), 512);
    assert_eq!(d.config(8), c[..8]);
    // SPDK's virtio-user asks for the whole 256-byte config window: the structure, then zeros
    let w = d.config(256);
    assert_eq!(w.len(), 256);
    assert_eq!(w[..60], c[..]);
    assert!(w[60..].iter().all(|&b| b == 0), "{w:?}");

    // write 4 KiB at sector 8 in two segments, read it back in one
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    d.mem.write(0x20000, &pattern);
    let (st, _) = d.request(req_type::OUT, 8, &[(0x20000, 2048), (0x20800, 2048)], false);
    assert_eq!(st, status::OK);
    // EVENT_IDX: the driver's used_event is 0, so the first used entry is signalled
    assert!(d.call.read().is_ok(), "the call eventfd was not signalled");
    let (st, len) = d.request(req_type::IN, 8, &[(0x40000, 4096)], true);
    assert_eq!(st, status::OK);
    assert_eq!(len, 4097);
    assert_eq!(d.mem.read(0x40000, 4096), pattern);
    // the data is on the bdev: read it with the bdev layer itself
    let on_bdev = read_bdev(env, "Malloc0", 8, 8);
    assert_eq!(on_bdev, pattern);

    let (st, _) = d.request(req_type::FLUSH, 0, &[], false);
    assert_eq!(st, status::OK);
    let (st, len) = d.request(req_type::GET_ID, 0, &[(0x50000, 20)], true);
    assert_eq!(st, status::OK);
    assert_eq!(&d.mem.read(0x50000, 7), b"Malloc0");
    assert_eq!(len, 21, "20 id bytes (zero padded) and the status");
    // failures: unsupported type, out of range, read into a read-only buffer, data
    // outside guest memory
    assert_eq!(d.request(77, 0, &[], false).0, status::UNSUPP);
    assert_eq!(
        d.request(req_type::IN, 4096, &[(0x40000, 512)], true).0,
        status::IOERR
    );
    assert_eq!(
        d.request(req_type::IN, 0, &[(0x40000, 512)], false).0,
        status::IOERR
    );
    // a data buffer outside guest memory: the ring refuses the chain but finds its status
    // descriptor; the request fails with IOERR (more in tests/hostile.rs)
    d.mem.write(0x9000, &[0xff]);
    let head = d.submit(&[(0x8000, 16, 0), (0xff000, 0x2000, 0), (0x9000, 1, F_WRITE)]);
    assert_eq!(d.wait_used(), (u32::from(head), 1));
    assert_eq!(d.mem.read(0x9000, 1)[0], status::IOERR);
    // the queue still serves
    assert_eq!(
        d.request(req_type::IN, 8, &[(0x40000, 512)], true).0,
        status::OK
    );

    // stop the ring: its position comes back; restart from it
    let base = d.fe.get_vring_base(0).unwrap();
    assert_eq!(base, u32::from(d.used_seen));
    d.fe.set_vring_base(0, base as u16).unwrap();
    d.fe.set_vring_kick(0, &d.kick).unwrap();
    d.fe.set_vring_enable(0, true).unwrap();
    assert_eq!(
        d.request(req_type::IN, 8, &[(0x40000, 4096)], true).0,
        status::OK
    );
    assert_eq!(d.mem.read(0x40000, 4096), pattern);

    // bdev in use: deleting it is hot-remove, the controller stops serving
    drop(d);
    env.delete("vhost.0").unwrap();
    assert!(
        !sock.exists(),
        "the socket file is removed with the controller"
    );
}

/// Reads blocks straight from the bdev (not through the target), on the app thread.
fn read_bdev(env: &Env, name: &str, block: u64, blocks: u64) -> Vec<u8> {
    use std::sync::mpsc;
    struct Ctx {
        tx: mpsc::Sender<Vec<u8>>,
        _ch: ferrite_bdev::BdevChannel,
        _desc: ferrite_bdev::Desc,
    }
    fn done(mut io: Box<ferrite_bdev::BdevIo>) {
        // SAFETY: user[0] is the Box<Ctx> leaked below, taken back exactly once.
        let ctx = unsafe { Box::from_raw(io.user[0] as *mut Ctx) };
        let v = io
            .take_buf()
            .map(|b| b.as_slice().to_vec())
            .unwrap_or_default();
        ferrite_bdev::free_io(io);
        let _ = ctx.tx.send(v);
    }
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let n = name.to_string();
    env.app(move || {
        let desc = ferrite_bdev::Desc::open(&n, false, |_| {}).unwrap();
        let ch = desc.channel().unwrap();
        let mut io = ch.alloc_io().unwrap();
        let buf = ferrite_bdev::DmaBuf::get(blocks as usize * 512)
            .unwrap()
            .unwrap();
        io.prep_read(block, blocks, done).attach_buf(buf);
        let ch2 = desc.channel().unwrap();
        let ctx = Box::new(Ctx {
            tx,
            _ch: ch2,
            _desc: desc,
        });
        io.user[0] = Box::into_raw(ctx) as u64;
        ch.submit(io);
    });
    let mut v = rx.recv_timeout(WAIT).unwrap();
    v.truncate(blocks as usize * 512);
    v
}

#[test]
fn controller_errors_are_clear() {
    let env = env();
    env.malloc("Malloc9", 64, 512);
    env.create("err.0", "Malloc9", false).unwrap();
    let e = env.create("err.0", "Malloc9", false).unwrap_err();
    assert_eq!(e.kind(), ferrite_vhost::ErrorKind::Exists);
    assert!(e.message().contains("'err.0' already exists"), "{e}");
    let e = env.create("err.1", "NoSuchBdev", false).unwrap_err();
    assert_eq!(e.kind(), ferrite_vhost::ErrorKind::NotFound);
    assert!(e.message().contains("NoSuchBdev"), "{e}");
    // Malloc9 is claimed by err.0
    let e = env.create("err.2", "Malloc9", false).unwrap_err();
    assert!(e.message().contains("claimed"), "{e}");
    let o = ferrite_vhost::CreateOpts {
        ctrlr: "err.3".into(),
        dev_name: "Malloc9".into(),
        cpumask: Some("0x4".into()),
        readonly: false,
        packed_ring: false,
    };
    let e = env.app(move || ferrite_vhost::create(&o)).unwrap_err();
    assert_eq!(e.kind(), ferrite_vhost::ErrorKind::InvalidArgument);
    assert!(e.message().contains("cpumask '0x4'"), "{e}");
    let e = env.create("a/b", "Malloc9", false).unwrap_err();
    assert!(e.message().contains("invalid"), "{e}");
    let e = env.delete("nope").unwrap_err();
    assert!(e.message().contains("'nope' does not exist"), "{e}");
    let e = env
        .app(|| ferrite_vhost::set_coalescing("err.0", 10, 0))
        .unwrap_err();
    assert!(e.message().contains("iops_threshold"), "{e}");
    env.app(|| ferrite_vhost::set_coalescing("err.0", 10, 1000))
        .unwrap();
    let cfg = env.app(ferrite_vhost::config_json);
    let mine: Vec<_> = cfg
        .iter()
        .filter(|v| v["params"]["ctrlr"] == "err.0")
        .collect();
    assert_eq!(mine.len(), 2, "{cfg:?}");
    assert_eq!(mine[0]["method"], "vhost_create_blk_controller");
    assert_eq!(mine[0]["params"]["dev_name"], "Malloc9");
    assert_eq!(mine[1]["method"], "vhost_controller_set_coalescing");
    assert_eq!(mine[1]["params"]["delay_base_us"], 10);
    let l = env.app(|| ferrite_vhost::list(Some("err.0"))).unwrap();
    assert_eq!(l[0]["backend_specific"]["block"]["bdev"], "Malloc9");
    assert_eq!(l[0]["iops_threshold"], 1000);
    env.delete("err.0").unwrap();
}

#[test]
fn idle_queue_lets_the_reactor_sleep_and_a_kick_wakes_it() {
    let env = env();
    env.malloc("MallocIdle", 256, 512);
    env.create("idle.0", "MallocIdle", false).unwrap();
    let mut d = Driver::connect(&env.dir.join("idle.0"));
    assert_eq!(d.request(req_type::FLUSH, 0, &[], false).0, status::OK);
    let sleeps = || env.rt.reactors().iter().map(|r| r.sleeps).sum::<u64>();
    // The reactor goes to sleep again (a sleep ends at the latest at its fallback timeout,
    // so a new one starts within about a second of idleness; a loaded machine gets longer).
    let (s0, cpu0, t0) = (sleeps(), cpu_ms(), std::time::Instant::now());
    while sleeps() <= s0 {
        assert!(
            t0.elapsed() < WAIT,
            "the reactor never slept with an idle queue ({s0} sleeps)"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    eprintln!(
        "idle: process CPU {} ms over {:?} (debug build)",
        cpu_ms() - cpu0,
        t0.elapsed()
    );
    // a kick wakes the sleeping reactor and the request is served
    let (st, _) = d.request(req_type::IN, 0, &[(0x40000, 512)], true);
    assert_eq!(st, status::OK);
    drop(d);
    env.delete("idle.0").unwrap();
}

fn cpu_ms() -> u64 {
    // SAFETY: getrusage fills the zeroed struct we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let ms = |t: libc::timeval| t.tv_sec as u64 * 1000 + t.tv_usec as u64 / 1000;
    ms(ru.ru_utime) + ms(ru.ru_stime)
}

#[test]
fn malformed_messages_are_refused_and_the_next_frontend_is_served() {
    use std::io::Write;
    let env = env();
    env.malloc("MallocBad", 256, 512);
    env.create("bad.0", "MallocBad", false).unwrap();
    let sock = env.dir.join("bad.0");
    let garbage: [&[u8]; 4] = [
        // SET_VRING_NUM (8) for ring 200
        &[8, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0, 200, 0, 0, 0, 0, 1, 0, 0],
        // an unknown request with a body larger than any message
        &[0xff, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0, 0],
        // GET_CONFIG (24) whose size field disagrees with the payload
        &[
            24, 0, 0, 0, 1, 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0,
        ],
        // half a header
        &[1, 0, 0],
    ];
    for g in garbage {
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        let _ = s.write_all(g);
        drop(s);
    }
    // the controller still serves a well-behaved frontend
    let mut d = Driver::connect(&sock);
    assert_eq!(d.request(req_type::FLUSH, 0, &[], false).0, status::OK);
    drop(d);
    env.delete("bad.0").unwrap();
}

#[test]
fn bdev_hot_remove_fails_requests_and_keeps_the_frontend() {
    let env = env();
    env.malloc("MallocGone", 256, 512);
    env.create("gone.0", "MallocGone", false).unwrap();
    let mut d = Driver::connect(&env.dir.join("gone.0"));
    assert_eq!(
        d.request(req_type::OUT, 0, &[(0x20000, 512)], false).0,
        status::OK
    );
    let (tx, rx) = std::sync::mpsc::channel();
    env.app(move || {
        ferrite_malloc::delete("MallocGone", move |r| {
            let _ = tx.send(r.is_ok());
        })
    });
    assert!(
        rx.recv_timeout(WAIT).unwrap(),
        "the bdev under a controller can be removed"
    );
    assert_eq!(
        d.request(req_type::IN, 0, &[(0x40000, 512)], true).0,
        status::IOERR
    );
    let l = env.app(|| ferrite_vhost::list(Some("gone.0"))).unwrap();
    assert_eq!(
        l[0]["backend_specific"]["block"]["bdev"],
        serde_json::Value::Null
    );
    drop(d);
    env.delete("gone.0").unwrap();
}

/// A request the target had taken from the ring but not completed when its frontend went
/// away (recorded in the inflight region) is resubmitted when a frontend comes back with the
/// region, before anything new: the guest gets its answer though it never resubmits.
#[test]
fn inflight_request_is_resubmitted_after_reconnect() {
    let env = env();
    env.malloc("MallocInf", 256, 512);
    env.create("inf.0", "MallocInf", false).unwrap();
    let sock = env.dir.join("inf.0");
    let mut d = Driver::connect_with(&sock, GuestMem::new(1 << 20), Inflight::Get, 0, 0);
    let pattern: Vec<u8> = (0..512u32).map(|i| (i * 13 + 1) as u8).collect();
    d.mem.write(0x20000, &pattern);
    assert_eq!(
        d.request(req_type::OUT, 4, &[(0x20000, 512)], false).0,
        status::OK
    );
    let (mem, region, avail, next) = d.disconnect();
    let (info, file) = region.unwrap();
    wait_until_no_session(env, "inf.0");

    // The chain the "crashed" target had popped: on the ring, and in flight in the region.
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&req_type::IN.to_le_bytes());
    h[8..16].copy_from_slice(&4u64.to_le_bytes());
    mem.write(0x8000, &h);
    mem.write(0x9000, &[0xff]);
    mem.write(0x40000, &[0u8; 512]);
    let chain = [
        (0x8000u64, 16u32, 0u16),
        (0x40000, 512, F_WRITE),
        (0x9000, 1, F_WRITE),
    ];
    let mut tmp = Driver::detached(mem, avail, next);
    let head = tmp.publish_only(&chain);
    let mem = tmp.into_mem();
    mark_inflight(&file, head, 100);

    let mut d = Driver::connect_with(
        &sock,
        mem,
        Inflight::Set(info, file),
        avail + 1,
        (next + 3) % QSIZE,
    );
    d.used_seen = avail;
    let (id, len) = d.wait_used();
    assert_eq!(
        (id, len),
        (u32::from(head), 513),
        "the in-flight read was resubmitted"
    );
    assert_eq!(d.mem.read(0x9000, 1)[0], status::OK);
    assert_eq!(d.mem.read(0x40000, 512), pattern);
    // and the ring goes on with new requests
    assert_eq!(d.request(req_type::FLUSH, 0, &[], false).0, status::OK);
    drop(d);
    env.delete("inf.0").unwrap();
}

/// `vhost_get_controllers` runs on a reactor while frontends come and go. The control thread
/// holds its device while it waits for that reactor to start or drain a ring, so the listing
/// must never wait for the device: it answers every time, and says whether the session's
/// rings run.
#[test]
fn listing_controllers_while_frontends_come_and_go_never_blocks() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let env = env();
    env.malloc("MallocList", 256, 512);
    env.create("list.0", "MallocList", false).unwrap();
    let sock = env.dir.join("list.0");
    let done = Arc::new(AtomicBool::new(false));
    let (listed, d2) = (Arc::new(AtomicUsize::new(0)), done.clone());
    let l2 = listed.clone();
    let lister = std::thread::spawn(move || {
        let mut seen_started = false;
        while !d2.load(Ordering::Relaxed) {
            // `on` fails the test if the reactor does not answer within WAIT.
            let l = env.app(|| ferrite_vhost::list(Some("list.0"))).unwrap();
            let sessions = l[0]["sessions"].as_array().unwrap().clone();
            assert!(sessions.len() <= 1, "{l}");
            seen_started |= sessions.first().is_some_and(|s| s["started"] == true);
            l2.fetch_add(1, Ordering::Relaxed);
        }
        seen_started
    });
    for round in 0..30u8 {
        let mut d = Driver::connect(&sock);
        d.mem.write(0x20000, &[round; 512]);
        assert_eq!(
            d.request(req_type::OUT, 0, &[(0x20000, 512)], false).0,
            status::OK
        );
        drop(d);
    }
    wait_until_no_session(env, "list.0");
    done.store(true, Ordering::Relaxed);
    assert!(lister.join().unwrap(), "a listing saw the rings running");
    assert!(
        listed.load(Ordering::Relaxed) > 30,
        "the lister kept listing"
    );
    let l = env.app(|| ferrite_vhost::list(Some("list.0"))).unwrap();
    assert_eq!(l[0]["sessions"], serde_json::json!([]));
    env.delete("list.0").unwrap();
}

/// `vhost_get_controllers` counts a session's requests in flight (`inflight_task_cnt`): a
/// read that a delay bdev holds shows as 1 until it is answered, then the count is back to 0.
#[test]
fn listing_counts_the_requests_in_flight() {
    let env = env();
    slow_reads(env, "MallocCnt", "DlyCnt");
    env.create("cnt.0", "DlyCnt", false).unwrap();
    let mut d = Driver::connect(&env.dir.join("cnt.0"));
    let count = || inflight_count(env, "cnt.0");
    let wait_for = |n: u64| {
        let start = std::time::Instant::now();
        while count() != n {
            assert!(start.elapsed() < WAIT, "inflight_task_cnt never {n}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };
    assert_eq!(count(), 0, "nothing submitted yet");
    let head = submit_read(&mut d);
    // The delay holds the read for 3 s: the listing sees it meanwhile.
    wait_for(1);
    assert_eq!(d.wait_used().0, u32::from(head));
    assert_eq!(d.mem.read(0x9000, 1)[0], status::OK);
    wait_for(0);
    drop(d);
    wait_until_no_session(env, "cnt.0");
    env.delete("cnt.0").unwrap();
}

/// A bdev that holds a request longer than the drain timeout does not hold the controller:
/// GET_VRING_BASE answers the ring's true position (not its start) at once, the frontend can
/// leave and come back on the same guest memory, and the abandoned queue never writes to the
/// ring again: once the bdev has completed the held read, its status byte is untouched and no
/// used entry appeared for it, while the new session's requests go on in step. (A frontend
/// that comes back with the inflight region gets such a request again:
/// `inflight_request_is_resubmitted_after_reconnect`.)
#[test]
fn a_ring_stuck_behind_a_held_request_is_abandoned_cleanly() {
    let env = env();
    slow_reads(env, "MallocAb", "DlyAb");
    env.create("ab.0", "DlyAb", false).unwrap();
    let _timeout = DrainTimeout::set(std::time::Duration::from_millis(200));
    let sock = env.dir.join("ab.0");
    let mut d = Driver::connect(&sock);
    submit_read(&mut d);
    // The read is taken (and held by the delay) before the ring is stopped.
    let start = std::time::Instant::now();
    while inflight_count(env, "ab.0") != 1 {
        assert!(start.elapsed() < WAIT, "the read was never taken");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let base = d.fe.get_vring_base(0).unwrap();
    assert_eq!(
        base, 1,
        "the position after the held request, not the ring's start"
    );
    let (mem, _, avail, next) = d.disconnect();
    assert_eq!(avail, 1);
    wait_until_no_session(env, "ab.0");
    // The frontend comes back on the same memory, at the base it was given.
    let mut d = Driver::connect_with(&sock, mem, Inflight::None, 1, next);
    d.used_seen = 0;
    assert_eq!(
        inflight_count(env, "ab.0"),
        0,
        "the new session has nothing in flight"
    );
    // Until the delay bdev has completed the held read (its read count)...
    let start = std::time::Instant::now();
    while reads_done(env, "DlyAb") == 0 {
        assert!(start.elapsed() < WAIT, "the delay never completed the read");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // (the count is taken on the completing thread after the completion callback ran):
    assert_eq!(
        d.mem.read(0x9000, 1)[0],
        0xff,
        "the held read's status byte is untouched"
    );
    assert_eq!(d.mem.u16(USED + 2), 0, "no used entry for the held read");
    // The new session's ring is in step: its first request gets used entry 0.
    assert_eq!(d.request(req_type::FLUSH, 0, &[], false).0, status::OK);
    assert_eq!(d.mem.u16(USED + 2), 1);
    drop(d);
    wait_until_no_session(env, "ab.0");
    env.delete("ab.0").unwrap();
}

/// Deleting a controller whose ring was abandoned with a read held by the bdev keeps the
/// queue's thread until the bdev gives the read back; then the queue is freed, and with it
/// the target's mapping of the guest's memory, and the thread exits. (Before, the thread
/// exited at the deletion: the delay bdev's poller went with it, the read never completed and
/// the queue kept the guest memory mapped until the process exited.)
#[test]
fn a_deleted_controller_frees_its_abandoned_queue_once_the_bdev_is_done() {
    let env = env();
    slow_reads(env, "MallocLg", "DlyLg");
    env.create("lg.0", "DlyLg", false).unwrap();
    let _timeout = DrainTimeout::set(std::time::Duration::from_millis(200));
    let mut d = Driver::connect(&env.dir.join("lg.0"));
    submit_read(&mut d);
    let start = std::time::Instant::now();
    while inflight_count(env, "lg.0") != 1 {
        assert!(start.elapsed() < WAIT, "the read was never taken");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    // The frontend goes away with the read held: its ring is abandoned after 200 ms.
    let (mem, ..) = d.disconnect();
    wait_until_no_session(env, "lg.0");
    let inode = inode_of(&mem.file);
    assert_eq!(
        mappings_of(inode),
        2,
        "the guest memory is mapped here and by the abandoned queue"
    );
    env.delete("lg.0").unwrap();
    assert_eq!(
        reads_done(env, "DlyLg"),
        0,
        "the delay still holds the read"
    );
    assert!(
        thread_named("vhost.lg.0.0"),
        "the queue thread stays while its abandoned queue waits"
    );
    let start = std::time::Instant::now();
    while reads_done(env, "DlyLg") == 0 {
        assert!(start.elapsed() < WAIT, "the delay never completed the read");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let start = std::time::Instant::now();
    while mappings_of(inode) != 1 || thread_named("vhost.lg.0.0") {
        assert!(
            start.elapsed() < WAIT,
            "the queue kept the guest memory mapped ({} mappings) or its thread lives on",
            mappings_of(inode)
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // The abandoned read's status byte was never written (the ring was handed back).
    assert_eq!(mem.read(0x9000, 1)[0], 0xff);
}

fn inode_of(f: &std::fs::File) -> u64 {
    use std::os::unix::fs::MetadataExt;
    f.metadata().unwrap().ino()
}

/// Mappings of the file with inode `ino` in this process (the test's own and the target's).
fn mappings_of(ino: u64) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(4)
                .and_then(|i| i.parse::<u64>().ok())
                == Some(ino)
                && l.contains("memfd:")
        })
        .count()
}

fn thread_named(name: &str) -> bool {
    env().rt.threads().iter().any(|t| t.name() == name)
}

/// Sets the process's vhost drain timeout for one test and restores the default after it,
/// even if the test fails.
struct DrainTimeout;

impl DrainTimeout {
    fn set(d: std::time::Duration) -> DrainTimeout {
        ferrite_vhost::queue::set_drain_timeout(d);
        DrainTimeout
    }
}

impl Drop for DrainTimeout {
    fn drop(&mut self) {
        ferrite_vhost::queue::set_drain_timeout(std::time::Duration::from_secs(60));
    }
}

/// Reads the bdev `name` has completed, over all its channels.
fn reads_done(env: &Env, name: &'static str) -> u64 {
    let (tx, rx) = std::sync::mpsc::channel();
    env.app(move || {
        let b = ferrite_bdev::lookup(name).unwrap();
        ferrite_bdev::collect_iostat(&b, move |total, _| {
            let _ = tx.send(total.read.ops);
        });
    });
    rx.recv_timeout(WAIT).unwrap()
}

/// A malloc bdev `base` under a delay bdev `name` that holds every read for 3 s.
fn slow_reads(env: &Env, base: &str, name: &str) {
    env.malloc(base, 256, 512);
    let (b, n) = (base.to_string(), name.to_string());
    env.app(move || {
        ferrite_bdev::register_module(std::sync::Arc::new(ferrite_delay::DelayModule));
        ferrite_delay::create(&ferrite_delay::DelayOpts {
            base_bdev_name: b,
            name: n,
            uuid: None,
            avg_read_latency: 3_000_000,
            p99_read_latency: 3_000_000,
            avg_write_latency: 0,
            p99_write_latency: 0,
        })
    })
    .unwrap();
}

/// Puts a 512-byte read of sector 0 into 0x40000 on the ring (header at 0x8000, status at
/// 0x9000) without waiting for it; returns its head.
fn submit_read(d: &mut Driver) -> u16 {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&req_type::IN.to_le_bytes());
    d.mem.write(0x8000, &h);
    d.mem.write(0x9000, &[0xff]);
    d.submit(&[
        (0x8000, 16, 0),
        (0x40000, 512, F_WRITE),
        (0x9000, 1, F_WRITE),
    ])
}

/// `inflight_task_cnt` of the controller's session (0 without one).
fn inflight_count(env: &Env, ctrlr: &'static str) -> u64 {
    let l = env.app(move || ferrite_vhost::list(Some(ctrlr))).unwrap();
    l[0]["sessions"][0]["inflight_task_cnt"]
        .as_u64()
        .unwrap_or(0)
}

fn wait_until_no_session(env: &Env, ctrlr: &'static str) {
    let start = std::time::Instant::now();
    loop {
        let l = env.app(move || ferrite_vhost::list(Some(ctrlr))).unwrap();
        if l[0]["sessions"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(start.elapsed() < WAIT, "the controller kept its session");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // A session is listed until its rings have stopped: they are stopped now.
}

/// Marks descriptor `head` in flight in the split-ring inflight region of queue 0 (layout of
/// QEMU's docs/interop/vhost-user.rst: a 16-byte header, then 16 bytes per descriptor:
/// inflight u8, padding, next u16 at 6, counter u64 at 8).
fn mark_inflight(file: &std::fs::File, head: u16, counter: u64) {
    use std::os::unix::fs::FileExt;
    let at = 16 + 16 * u64::from(head);
    file.write_all_at(&[1], at).unwrap();
    file.write_all_at(&counter.to_le_bytes(), at + 8).unwrap();
}
