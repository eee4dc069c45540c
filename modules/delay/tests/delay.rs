//! The delay bdev on a malloc base, driven by the deterministic harness and its virtual clock:
//! an I/O does not complete before its delay and does right after; about one in a hundred gets
//! the p99 latency; updates take effect; unmap and flush are not delayed (as SPDK); deleting
//! with I/O held completes that I/O when its delay expires, once; configuration round trips;
//! the RPC methods' errors. And on a real reactor in interrupt mode: a held I/O keeps the
//! reactor from sleeping, so it completes on time.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use ferrite_bdev::{BdevChannel, BdevIo, Desc, DmaBuf, ErrorKind, IoStatus};
use ferrite_delay::{DelayOpts, LatencyType};
use ferrite_reactor::harness::Harness;
use ferrite_rpc::{Registry, Responder, RpcError, ServerState, RUNTIME};
use serde_json::{json, Value};

const APP: usize = 0;
const USER: usize = 1;
const BS: u64 = 512;

static LOG: Mutex<Vec<(u64, IoStatus)>> = Mutex::new(Vec::new());

fn record(io: Box<BdevIo>) {
    LOG.lock().unwrap().push((io.user[0], io.status()));
    ferrite_bdev::free_io(io);
}

fn calls(tag: u64) -> usize {
    LOG.lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| *t == tag)
        .count()
}

fn status(tag: u64) -> Option<IoStatus> {
    let l = LOG.lock().unwrap();
    let v: Vec<_> = l.iter().filter(|(t, _)| *t == tag).collect();
    assert!(v.len() <= 1, "callback of {tag:#x} ran {} times", v.len());
    v.first().map(|(_, s)| *s)
}

fn done_count(tags: &[u64]) -> usize {
    tags.iter().filter(|t| status(**t).is_some()).count()
}

fn opts(name: &str, base: &str, lat: [u64; 4]) -> DelayOpts {
    DelayOpts {
        base_bdev_name: base.into(),
        name: name.into(),
        uuid: None,
        avg_read_latency: lat[0],
        p99_read_latency: lat[1],
        avg_write_latency: lat[2],
        p99_write_latency: lat[3],
    }
}

fn malloc(name: &str, blocks: u64) {
    ferrite_malloc::create(&ferrite_malloc::MallocOpts {
        name: Some(name.into()),
        num_blocks: blocks,
        block_size: BS as u32,
        ..Default::default()
    })
    .unwrap();
}

struct Env {
    h: Harness,
    desc: Option<Desc>,
    ch: Option<BdevChannel>,
    test: u64,
    n: u64,
    /// One block of data every write sends (writes only read it).
    wbuf: DmaBuf,
    /// One block every read lands in.
    rbuf: DmaBuf,
}

impl Env {
    /// Malloc `base` with delay bdev `name` on it (latencies in µs: avg/p99 read, avg/p99
    /// write), opened on the user thread.
    fn new(test: u64, name: &str, base: &str, lat: [u64; 4]) -> Env {
        let mut h = Harness::new(2, test);
        h.on(APP, || {
            ferrite_bdev::register_module(Arc::new(ferrite_delay::DelayModule));
            malloc(base, 1024);
            assert_eq!(ferrite_delay::create(&opts(name, base, lat)).unwrap(), name);
        });
        let desc = h.on(USER, || Desc::open(name, true, |_| {}).unwrap());
        let ch = h.on(USER, || desc.channel().unwrap());
        Env {
            h,
            desc: Some(desc),
            ch: Some(ch),
            test,
            n: 0,
            wbuf: DmaBuf::get(BS as usize).unwrap().unwrap(),
            rbuf: DmaBuf::get(BS as usize).unwrap().unwrap(),
        }
    }

    fn submit(&mut self, prep: impl FnOnce(&mut BdevIo)) -> u64 {
        self.n += 1;
        let tag = (self.test << 32) | self.n;
        let ch = self.ch.as_ref().unwrap();
        self.h.on(USER, || {
            let mut io = ch.alloc_io().unwrap();
            prep(&mut io);
            io.user[0] = tag;
            ch.submit(io);
        });
        tag
    }

    /// A one-block read into the Env's scratch block (no pool buffer: nothing waits for one).
    fn read(&mut self, off: u64) -> u64 {
        let seg = ferrite_bdev::IoVec {
            base: self.rbuf.as_ptr(),
            len: BS as usize,
        };
        self.submit(|io| {
            io.prep_read(off, 1, record);
            // SAFETY: `rbuf` lives as long as the Env, which outlives every I/O of the test;
            // the tests never look at what is read into it, and every write into it is made on
            // this one OS thread, one copy at a time.
            unsafe { io.set_iovs(&[seg]) };
        })
    }

    fn write(&mut self, off: u64) -> u64 {
        let seg = ferrite_bdev::IoVec {
            base: self.wbuf.as_ptr(),
            len: BS as usize,
        };
        self.submit(|io| {
            io.prep_write(off, 1, record);
            // SAFETY: `wbuf` lives as long as the Env, which outlives every I/O of the test;
            // writes only read it (several at once is fine), nobody writes it meanwhile.
            unsafe { io.set_iovs(&[seg]) };
        })
    }

    fn run(&mut self) {
        self.h.run_until_idle();
    }

    /// Advances the virtual clock by `us` and runs until idle.
    fn after(&mut self, us: u64) {
        self.h.advance_us(us);
        self.run();
    }

    fn held(&mut self) -> usize {
        self.h.on(USER, ferrite_delay::held_on_thread)
    }

    fn close(&mut self) {
        let ch = self.ch.take();
        let desc = self.desc.take();
        self.h.on(USER, move || {
            drop(ch);
            drop(desc);
        });
        self.run();
    }
}

type Slot = Arc<Mutex<Option<Result<(), String>>>>;

fn delete(env: &mut Env, name: &'static str) -> Slot {
    let slot: Slot = Arc::new(Mutex::new(None));
    let s = slot.clone();
    env.h.on(APP, move || {
        ferrite_delay::delete(name, move |r| {
            *s.lock().unwrap() = Some(r.map_err(|e| format!("{}|{e}", e.errno())))
        })
    });
    slot
}

#[test]
fn reads_and_writes_complete_after_their_delay_not_before() {
    // p99 = avg: every I/O gets exactly this latency.
    let mut env = Env::new(201, "Dly1", "DlyM1", [100, 100, 250, 250]);
    let r = env.read(0);
    let w = env.write(1);
    env.run();
    // The base has completed both; they are held.
    assert_eq!((status(r), status(w)), (None, None));
    assert_eq!(env.held(), 2);
    env.after(99);
    assert_eq!(status(r), None, "read completed before its 100 us");
    env.after(1);
    assert_eq!(status(r), Some(IoStatus::Success));
    assert_eq!(status(w), None);
    env.after(149);
    assert_eq!(status(w), None, "write completed before its 250 us");
    env.after(1);
    assert_eq!(status(w), Some(IoStatus::Success));
    assert_eq!(env.held(), 0);
    // Unmap, flush and write_zeroes are not delayed (SPDK v25.09 delays reads and writes only).
    let u = env.submit(|io| {
        io.prep_unmap(0, 8, record);
    });
    let f = env.submit(|io| {
        io.prep_flush(0, 8, record);
    });
    let z = env.submit(|io| {
        io.prep_write_zeroes(0, 8, record);
    });
    env.run();
    for t in [u, f, z] {
        assert_eq!(status(t), Some(IoStatus::Success));
    }
    env.close();
}

#[test]
fn about_one_in_a_hundred_gets_the_p99_latency() {
    let mut env = Env::new(202, "Dly2", "DlyM2", [10, 1000, 20, 2000]);
    let n = 5000u64;
    let reads: Vec<u64> = (0..n).map(|i| env.read(i % 1024)).collect();
    let writes: Vec<u64> = (0..n).map(|i| env.write(i % 1024)).collect();
    env.run();
    assert_eq!(done_count(&reads) + done_count(&writes), 0);
    env.after(20);
    let slow_r = reads.len() - done_count(&reads);
    let slow_w = writes.len() - done_count(&writes);
    // Binomial(5000, 1%): mean 50, standard deviation 7; these bounds are > 4 deviations out.
    for (what, slow) in [("reads", slow_r), ("writes", slow_w)] {
        assert!(
            (20..=90).contains(&slow),
            "{slow} of {n} {what} got the p99 latency"
        );
    }
    env.after(979);
    assert_eq!(
        reads.len() - done_count(&reads),
        slow_r,
        "p99 read done early"
    );
    env.after(1);
    assert_eq!(done_count(&reads), reads.len());
    env.after(999);
    assert_eq!(
        writes.len() - done_count(&writes),
        slow_w,
        "p99 write done early"
    );
    env.after(1);
    assert_eq!(done_count(&writes), writes.len());
    assert!(reads
        .iter()
        .chain(&writes)
        .all(|t| status(*t) == Some(IoStatus::Success) && calls(*t) == 1));
    env.close();
}

#[test]
fn update_latency_takes_effect_and_is_saved() {
    let mut env = Env::new(203, "Dly3", "DlyM3", [100, 100, 100, 100]);
    env.h
        .on(APP, || {
            ferrite_delay::update_latency("Dly3", LatencyType::AvgWrite, 1000)?;
            ferrite_delay::update_latency("Dly3", LatencyType::P99Write, 1000)?;
            ferrite_delay::update_latency("Dly3", LatencyType::AvgRead, 5)?;
            ferrite_delay::update_latency("Dly3", LatencyType::P99Read, 5)
        })
        .unwrap();
    assert_eq!(ferrite_delay::latencies("Dly3"), Some([5, 5, 1000, 1000]));
    let w = env.write(0);
    let r = env.read(0);
    env.run();
    env.after(5);
    assert_eq!(status(r), Some(IoStatus::Success));
    env.after(100);
    assert_eq!(status(w), None, "the old write latency was used");
    env.after(895);
    assert_eq!(status(w), Some(IoStatus::Success));
    // save_config carries the current latencies.
    let d = ferrite_bdev::lookup("Dly3").unwrap();
    let e = d.backend().config_entry(&d).unwrap();
    assert_eq!(e["method"], "bdev_delay_create");
    let p = &e["params"];
    assert_eq!(
        (
            &p["name"],
            &p["base_bdev_name"],
            &p["avg_read_latency"],
            &p["p99_read_latency"],
            &p["avg_write_latency"],
            &p["p99_write_latency"]
        ),
        (
            &json!("Dly3"),
            &json!("DlyM3"),
            &json!(5),
            &json!(5),
            &json!(1000),
            &json!(1000)
        )
    );
    assert_eq!(p["uuid"], d.uuid().to_string());
    // Unknown bdev.
    let e = env
        .h
        .on(APP, || {
            ferrite_delay::update_latency("DlyNone", LatencyType::AvgRead, 1)
        })
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.message().contains("DlyNone"), "{e}");
    env.close();
}

#[test]
fn delete_with_io_held_completes_it_when_due() {
    let mut env = Env::new(204, "Dly4", "DlyM4", [500, 500, 500, 500]);
    let w = env.write(3);
    let r = env.read(3);
    env.run();
    assert_eq!(env.held(), 2);
    let done = delete(&mut env, "Dly4");
    env.run();
    // The user closes at once, with I/O still held: the bdev goes, the I/O stays held.
    env.close();
    assert_eq!(*done.lock().unwrap(), Some(Ok(())));
    assert!(ferrite_bdev::lookup("Dly4").is_none());
    assert_eq!((status(w), status(r)), (None, None));
    assert_eq!(env.held(), 2);
    // When due, each completes with the base's status, its callback once.
    env.after(500);
    for t in [w, r] {
        assert_eq!(status(t), Some(IoStatus::Success));
        assert_eq!(calls(t), 1);
    }
    assert_eq!(env.held(), 0);
    // The base is free again.
    let base = env.h.on(USER, || Desc::open("DlyM4", true, |_| {}));
    assert!(base.is_ok(), "{base:?}");
    env.h.on(USER, move || drop(base));
    env.run();
}

/// A reset aborts the I/O waiting out its latency (as SPDK's delay bdev: every channel's
/// queues, before the base is reset) and completes without waiting for it, however long the
/// latency; afterwards I/O is delayed again.
#[test]
fn reset_aborts_held_io_and_completes_at_once() {
    const LONG_US: u64 = 60_000_000;
    let mut env = Env::new(207, "Dly8", "DlyM8", [LONG_US; 4]);
    let w = env.write(0);
    let r = env.read(1);
    env.run();
    assert_eq!(env.held(), 2);
    let reset = env.submit(|io| {
        io.prep_reset(record);
    });
    // No time passes: the reset does not wait for the latency.
    env.run();
    assert_eq!(status(w), Some(IoStatus::Aborted));
    assert_eq!(status(r), Some(IoStatus::Aborted));
    assert_eq!(status(reset), Some(IoStatus::Success));
    for t in [w, r, reset] {
        assert_eq!(calls(t), 1);
    }
    assert_eq!(env.held(), 0);
    // Delayed again once the reset is over.
    let r2 = env.read(2);
    env.run();
    assert_eq!((status(r2), env.held()), (None, 1));
    env.after(LONG_US);
    assert_eq!(status(r2), Some(IoStatus::Success));
    env.close();
}

/// A reset reaches the I/O held on every thread with a channel, not only its own.
#[test]
fn reset_aborts_held_io_on_another_thread() {
    const LONG_US: u64 = 60_000_000;
    let mut env = Env::new(208, "Dly9", "DlyM9", [LONG_US; 4]);
    let t2 = env.h.add_thread("user2");
    let d2 = env.h.on(t2, || Desc::open("Dly9", true, |_| {}).unwrap());
    let c2 = env.h.on(t2, || d2.channel().unwrap());
    let buf = DmaBuf::get(BS as usize).unwrap().unwrap();
    let seg = ferrite_bdev::IoVec {
        base: buf.as_ptr(),
        len: BS as usize,
    };
    let tag2 = (208u64 << 32) | 0xffff;
    env.h.on(t2, || {
        let mut io = c2.alloc_io().unwrap();
        io.prep_read(5, 1, record);
        // SAFETY: `buf` outlives the I/O (it completes before the test ends).
        unsafe { io.set_iovs(&[seg]) };
        io.user[0] = tag2;
        c2.submit(io);
    });
    let w = env.write(0);
    env.run();
    assert_eq!((status(w), status(tag2)), (None, None));
    let reset = env.submit(|io| {
        io.prep_reset(record);
    });
    env.run();
    assert_eq!(status(w), Some(IoStatus::Aborted));
    assert_eq!(status(tag2), Some(IoStatus::Aborted));
    assert_eq!(status(reset), Some(IoStatus::Success));
    assert_eq!(env.h.on(t2, ferrite_delay::held_on_thread), 0);
    env.h.on(t2, move || {
        drop(c2);
        drop(d2);
    });
    env.close();
    drop(buf);
}

#[test]
fn create_checks_waits_for_base_and_deletes() {
    let mut h = Harness::new(1, 205);
    h.on(APP, || {
        ferrite_bdev::register_module(Arc::new(ferrite_delay::DelayModule))
    });
    // p99 below average.
    let e = h
        .on(APP, || {
            ferrite_delay::create(&opts("Dly5", "DlyM5", [100, 99, 1, 1]))
        })
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(
        e.message().contains("Dly5") && e.message().contains("p99_read_latency"),
        "{e}"
    );
    let e = h
        .on(APP, || {
            ferrite_delay::create(&opts("Dly5", "DlyM5", [1, 1, 10, 9]))
        })
        .unwrap_err();
    assert!(e.message().contains("p99_write_latency"), "{e}");
    // Before its base: remembered and saved by the module.
    let mut o = opts("Dly5", "DlyM5", [1, 2, 3, 4]);
    o.uuid = Some("d0d0d0d0-0000-4000-8000-00000000d205".into());
    assert_eq!(h.on(APP, || ferrite_delay::create(&o)).unwrap(), "Dly5");
    let want = json!({"method": "bdev_delay_create", "params": {
        "name": "Dly5", "base_bdev_name": "DlyM5",
        "uuid": "d0d0d0d0-0000-4000-8000-00000000d205",
        "avg_read_latency": 1, "p99_read_latency": 2,
        "avg_write_latency": 3, "p99_write_latency": 4}});
    let saved = |name: &str| -> Vec<Value> {
        ferrite_bdev::modules()
            .iter()
            .flat_map(|m| m.config_json())
            .filter(|e| e["params"]["name"] == name)
            .collect()
    };
    assert_eq!(saved("Dly5"), std::slice::from_ref(&want));
    let e = h.on(APP, || ferrite_delay::create(&o)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Exists);
    // The base appears: attached, claimed, saved by its bdev with the same entry.
    h.on(APP, || malloc("DlyM5", 128));
    let d = ferrite_bdev::lookup("Dly5").expect("attached on examine");
    assert_eq!(d.num_blocks(), 128);
    assert_eq!(d.product_name(), "delay");
    assert_eq!(
        ferrite_bdev::lookup("DlyM5").unwrap().claim().map(|c| c.1),
        Some("delay".to_string())
    );
    assert_eq!(d.backend().config_entry(&d), Some(want));
    assert!(saved("Dly5").is_empty());
    // Delete: gone and forgotten; unknown names fail naming them.
    let mut env = Env {
        h,
        desc: None,
        ch: None,
        test: 205,
        n: 0,
        wbuf: DmaBuf::get(512).unwrap().unwrap(),
        rbuf: DmaBuf::get(512).unwrap().unwrap(),
    };
    let done = delete(&mut env, "Dly5");
    env.run();
    assert_eq!(*done.lock().unwrap(), Some(Ok(())));
    assert!(ferrite_bdev::lookup("Dly5").is_none());
    assert!(ferrite_delay::latencies("Dly5").is_none());
    let done = delete(&mut env, "Dly5");
    assert_eq!(
        *done.lock().unwrap(),
        Some(Err("19|bdev 'Dly5' not found".into()))
    );
    let done = delete(&mut env, "DlyM5");
    let e = done.lock().unwrap().clone().unwrap().unwrap_err();
    assert!(e.contains("not a delay bdev"), "{e}");
}

fn call(h: &mut Harness, reg: &Registry, method: &str, params: Value) -> Result<Value, RpcError> {
    let slot: Arc<Mutex<Option<Result<Value, RpcError>>>> = Arc::new(Mutex::new(None));
    let s = slot.clone();
    reg.call(
        method,
        Some(params),
        Responder::new(move |r| *s.lock().unwrap() = Some(r)),
    );
    h.run_until(1000, || slot.lock().unwrap().is_some());
    let r = slot.lock().unwrap().take();
    r.unwrap()
}

#[test]
fn rpc_methods_and_their_errors() {
    let mut h = Harness::new(1, 206);
    h.on(APP, || {
        ferrite_bdev::register_module(Arc::new(ferrite_delay::DelayModule));
        malloc("DlyM6", 64);
    });
    let reg = Registry::new(Arc::new(ServerState::new(RUNTIME)));
    ferrite_delay::register_rpcs(&reg, &h.handle(APP));
    let create = json!({"base_bdev_name": "DlyM6", "name": "Dly6",
        "avg_read_latency": 10, "p99_read_latency": 20,
        "avg_write_latency": 30, "p99_write_latency": 40});
    // SPDK answers with the name.
    assert_eq!(
        call(&mut h, &reg, "bdev_delay_create", create.clone()),
        Ok(json!("Dly6"))
    );
    assert_eq!(
        call(&mut h, &reg, "bdev_delay_create", create.clone())
            .unwrap_err()
            .code,
        -17
    );
    // Every latency is required.
    let mut missing = create.clone();
    missing.as_object_mut().unwrap().remove("p99_write_latency");
    missing["name"] = json!("Dly6b");
    let e = call(&mut h, &reg, "bdev_delay_create", missing).unwrap_err();
    assert_eq!(e.code, -32602);
    assert!(e.message.contains("p99_write_latency"), "{}", e.message);
    let mut bad = create.clone();
    bad["name"] = json!("Dly6c");
    bad["p99_read_latency"] = json!(5);
    let e = call(&mut h, &reg, "bdev_delay_create", bad).unwrap_err();
    assert_eq!(e.code, -22);
    assert!(e.message.contains("Dly6c"), "{}", e.message);
    // Update.
    let r = call(
        &mut h,
        &reg,
        "bdev_delay_update_latency",
        json!({"delay_bdev_name": "Dly6", "latency_type": "p99_write", "latency_us": 77}),
    );
    assert_eq!(r, Ok(json!(true)));
    assert_eq!(ferrite_delay::latencies("Dly6"), Some([10, 20, 30, 77]));
    let e = call(
        &mut h,
        &reg,
        "bdev_delay_update_latency",
        json!({"delay_bdev_name": "Dly6", "latency_type": "p50_read", "latency_us": 1}),
    )
    .unwrap_err();
    assert_eq!(e.code, -32602);
    assert!(
        e.message.contains("latency_type") && e.message.contains("p50_read"),
        "{}",
        e.message
    );
    // SPDK: an unknown delay bdev is -32602 here.
    let e = call(
        &mut h,
        &reg,
        "bdev_delay_update_latency",
        json!({"delay_bdev_name": "Nope", "latency_type": "avg_read", "latency_us": 1}),
    )
    .unwrap_err();
    assert_eq!(e.code, -32602);
    assert!(e.message.contains("'Nope'"), "{}", e.message);
    // Delete.
    let e = call(&mut h, &reg, "bdev_delay_delete", json!({"name": "Nope"})).unwrap_err();
    assert_eq!((e.code, e.message.as_str()), (-19, "bdev 'Nope' not found"));
    assert_eq!(
        call(&mut h, &reg, "bdev_delay_delete", json!({"name": "Dly6"})),
        Ok(json!(true))
    );
    assert!(ferrite_bdev::lookup("Dly6").is_none());
}

/// On a real reactor in interrupt mode (it sleeps whenever its threads are idle), a held I/O
/// must keep it awake: if the delay poller let it sleep, nothing would wake it until the
/// reactor's one-second safety timeout.
#[test]
fn held_io_keeps_an_interrupt_mode_reactor_awake() {
    use ferrite_reactor::clock::{ticks, ticks_to_ns, us_to_ticks};
    use ferrite_reactor::{CpuMask, PollMode, Runtime, RuntimeConfig};
    use std::sync::mpsc;
    use std::time::Duration;

    // Times in ticks (`ferrite_reactor::clock`), the delay module's own clock.
    static TX: Mutex<Option<mpsc::Sender<u64>>> = Mutex::new(None);
    fn on_done(io: Box<BdevIo>) {
        assert_eq!(io.status(), IoStatus::Success);
        if let Some(tx) = TX.lock().unwrap().as_ref() {
            let _ = tx.send(ticks());
        }
        ferrite_bdev::free_io(io);
    }

    let rt = Runtime::start(RuntimeConfig {
        cpumask: CpuMask::from_cores(&[0]),
        mode: PollMode::Interrupt,
        idle_threshold_us: 0,
        pin: false,
        // A reactor sleeping through the delay then wakes only after a minute.
        max_sleep_ms: 60_000,
        ..Default::default()
    })
    .unwrap();
    let (tx, rx) = mpsc::channel();
    *TX.lock().unwrap() = Some(tx);
    let app = rt.app_thread();
    let (stx, srx) = mpsc::channel::<u64>();
    app.send(move || {
        ferrite_bdev::register_module(Arc::new(ferrite_delay::DelayModule));
        malloc("DlyM7", 64);
        ferrite_delay::create(&opts("Dly7", "DlyM7", [3000, 3000, 3000, 3000])).unwrap();
    })
    .unwrap();
    // Open, then submit from a message of its own (after the open's poll has finished).
    #[derive(Default)]
    struct Holder(std::cell::RefCell<Option<(Desc, BdevChannel)>>);
    let (otx, orx) = mpsc::channel::<()>();
    app.send(move || {
        let desc = Desc::open("Dly7", true, |_| {}).unwrap();
        let ch = desc.channel().unwrap();
        // The read below takes a buffer from the DMA pool. The first buffer taken in the
        // process builds the whole pool (maps and locks it: a hundred milliseconds or more,
        // far longer under load, and other tests of this binary may be building it right
        // now): done here, before the timed window.
        drop(DmaBuf::get(BS as usize).unwrap().unwrap());
        ferrite_reactor::with_local(|h: &Holder| *h.0.borrow_mut() = Some((desc, ch)));
        let _ = otx.send(());
    })
    .unwrap();
    orx.recv_timeout(Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    app.send(move || {
        ferrite_reactor::with_local(|h: &Holder| {
            let held = h.0.borrow();
            let (_, ch) = held.as_ref().unwrap();
            let mut io = ch.alloc_io().unwrap();
            io.prep_read(0, 1, on_done);
            // The delay runs from the thread's poll clock (when this poll began, before this
            // message ran): the start of the window, so its lower bound is exact.
            let _ = stx.send(ferrite_reactor::now());
            ch.submit(io);
        });
    })
    .unwrap();
    let t0 = srx.recv_timeout(Duration::from_secs(90)).unwrap();
    let t1 = rx.recv_timeout(Duration::from_secs(90)).unwrap();
    let took = Duration::from_nanos(ticks_to_ns(t1 - t0));
    assert!(t1 - t0 >= us_to_ticks(3000), "completed after {took:?}");
    // A reactor that slept through the delay would wake only at its safety timeout (a
    // minute here); half of that separates the two cases on any machine.
    assert!(
        took < Duration::from_secs(30),
        "completed after {took:?}: the reactor slept through the delay"
    );
    rt.stop();
}

/// An abort naming an I/O waiting out its latency completes it Aborted at once and succeeds
/// (as SPDK's delay bdev); the others keep waiting and complete when due. An abort naming an
/// I/O that is not held (any more) fails.
#[test]
fn abort_of_a_delayed_io_aborts_only_it() {
    const LONG_US: u64 = 60_000_000;
    let mut env = Env::new(209, "Dly10", "DlyM10", [LONG_US; 4]);
    let w0 = env.write(0);
    let w1 = env.write(1);
    let r2 = env.read(2);
    env.run();
    assert_eq!(env.held(), 3);
    let a = env.submit(|io| {
        io.prep_abort(w1, record);
    });
    // No time passes: the abort does not wait for the latency.
    env.run();
    assert_eq!(status(w1), Some(IoStatus::Aborted));
    assert_eq!(status(a), Some(IoStatus::Success));
    assert_eq!((status(w0), status(r2), env.held()), (None, None, 2));
    // Naming it again, or naming nothing held: the abort fails, nothing else moves.
    let again = env.submit(|io| {
        io.prep_abort(w1, record);
    });
    let stray = env.submit(|io| {
        io.prep_abort(0xdead, record);
    });
    env.run();
    assert_eq!(status(again), Some(IoStatus::Failed));
    assert_eq!(status(stray), Some(IoStatus::Failed));
    assert_eq!(env.held(), 2);
    // The latency releases the others.
    env.after(LONG_US);
    assert_eq!(status(w0), Some(IoStatus::Success));
    assert_eq!(status(r2), Some(IoStatus::Success));
    for t in [w0, w1, r2, a, again, stray] {
        assert_eq!(calls(t), 1);
    }
    assert_eq!(env.held(), 0);
    env.close();
}
