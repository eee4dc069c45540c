//! The NVMe bdev module over the driver's in-memory controller model: attach with two
//! namespaces, I/O through the bdev layer (pool buffers, bounced heap buffers, segment layouts
//! that need PRP lists), unmap, write zeroes beyond one command, compare-and-write, back-pressure
//! from a small queue, a controller reset with I/O in flight, save_config, detach, and no heap
//! allocation per I/O in steady state. A device error reaches the submitter by name (the I/O's
//! device status, and the bench's error line).
#![allow(clippy::unwrap_used)] // tests

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ferrite_bdev::{BdevChannel, BdevIo, Desc, DeviceStatus, DmaBuf, IoStatus, IoVec};
use ferrite_bdev_nvme::{AttachParams, NvmeModule};
use ferrite_nvme::model::{Model, ModelConfig};
use ferrite_reactor::harness::Harness;

#[global_allocator]
static GLOBAL: ferrite_reactor::alloc_count::CountingAlloc =
    ferrite_reactor::alloc_count::CountingAlloc;

static DONE: Mutex<Vec<(u64, IoStatus)>> = Mutex::new(Vec::new());
/// The last failed I/O: its device status and the bench's line for it.
static LAST_FAIL: Mutex<Option<(Option<DeviceStatus>, String)>> = Mutex::new(None);

fn cb(io: Box<BdevIo>) {
    if io.status() == IoStatus::Failed {
        let line = ferrite_bench::engine::describe_failure("Nvme0n1", &io);
        *LAST_FAIL.lock().unwrap() = Some((io.device_status(), line));
    }
    DONE.lock().unwrap().push((io.user[0], io.status()));
}

fn take_done() -> Vec<(u64, IoStatus)> {
    std::mem::take(&mut *DONE.lock().unwrap())
}

fn attach(h: &mut Harness, model: &Arc<Model>, name: &str) -> Vec<String> {
    let out: Arc<Mutex<Option<ferrite_bdev::Result<Vec<String>>>>> = Arc::default();
    let o = out.clone();
    let m = model.clone();
    h.on(0, move || {
        ferrite_bdev_nvme::attach_with(
            AttachParams {
                name: name.into(),
                trtype: "PCIe".into(),
                traddr: format!("model-{name}"),
                num_io_queues: None,
            },
            move |_| ferrite_bdev_nvme::probe(m.clone(), m.dma(), None, None),
            move |r| *o.lock().unwrap() = Some(r),
        )
    });
    for _ in 0..2000 {
        if out.lock().unwrap().is_some() {
            break;
        }
        h.poll_all();
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let r = out.lock().unwrap().take().expect("attach finished");
    r.unwrap()
}

fn wait(h: &mut Harness, n: usize) -> Vec<(u64, IoStatus)> {
    let mut got = Vec::new();
    for _ in 0..100_000 {
        got.extend(take_done());
        if got.len() >= n {
            break;
        }
        h.poll_all();
    }
    got.sort_by_key(|g| g.0);
    got
}

/// Submits one I/O prepared by `prep` with segments `iovs` and waits for it.
fn one(
    h: &mut Harness,
    ch: &BdevChannel,
    tag: u64,
    iovs: &[IoVec],
    prep: impl FnOnce(&mut BdevIo),
) -> IoStatus {
    h.on(1, || {
        let mut io = ch.alloc_io().unwrap();
        io.user[0] = tag;
        prep(&mut io);
        if !iovs.is_empty() {
            // SAFETY: the buffers outlive the I/O (the test waits for it).
            unsafe { io.set_iovs(iovs) };
        }
        ch.submit(io);
    });
    let r = wait(h, 1);
    assert_eq!(r.len(), 1);
    r[0].1
}

fn heap_iov(v: &mut [u8]) -> IoVec {
    IoVec {
        base: v.as_mut_ptr(),
        len: v.len(),
    }
}

#[test]
fn bdevs_io_reset_detach_on_the_model() {
    let model = Model::new(ModelConfig {
        namespaces: vec![(1, 140_000), (2, 4096)],
        max_entries: 16,
        ..ModelConfig::default()
    });
    let mut h = Harness::new(2, 7);
    h.on(0, || ferrite_bdev::register_module(Arc::new(NvmeModule)));
    let mut names = attach(&mut h, &model, "Nvme0");
    names.sort();
    assert_eq!(names, vec!["Nvme0n1", "Nvme0n2"]);
    let dup = {
        let m = model.clone();
        let out: Arc<Mutex<Option<String>>> = Arc::default();
        let o = out.clone();
        h.on(0, move || {
            ferrite_bdev_nvme::attach_with(
                AttachParams {
                    name: "Nvme0".into(),
                    trtype: "PCIe".into(),
                    traddr: "x".into(),
                    num_io_queues: None,
                },
                move |_| ferrite_bdev_nvme::probe(m.clone(), m.dma(), None, None),
                move |r| *o.lock().unwrap() = Some(r.unwrap_err().to_string()),
            )
        });
        let s = out.lock().unwrap().take().unwrap();
        s
    };
    assert!(dup.contains("already exists"), "{dup}");

    let desc = h.on(1, || Desc::open("Nvme0n1", true, |_| {}).unwrap());
    let ch = h.on(1, || desc.channel().unwrap());

    // Pool buffer write/read.
    let buf = DmaBuf::get(8192).unwrap().unwrap();
    // SAFETY: the buffer is ours.
    unsafe { std::ptr::write_bytes(buf.as_ptr(), 0xa5, 8192) };
    let iov = [IoVec {
        base: buf.as_ptr(),
        len: 8192,
    }];
    assert_eq!(
        one(&mut h, &ch, 1, &iov, |io| {
            io.prep_write(100, 16, cb);
        }),
        IoStatus::Success
    );
    let mut disk = vec![0u8; 8192];
    model.read_disk(1, 100 * 512, &mut disk);
    assert!(disk.iter().all(|&b| b == 0xa5));

    // Heap buffers in a layout PRP cannot express: bounced, data intact.
    let mut a = vec![0u8; 700];
    let mut b = vec![0u8; 324];
    let iov = [heap_iov(&mut a), heap_iov(&mut b)];
    assert_eq!(
        one(&mut h, &ch, 2, &iov, |io| {
            io.prep_read(100, 2, cb);
        }),
        IoStatus::Success
    );
    assert!(a.iter().chain(b.iter()).all(|&x| x == 0xa5));

    // Out of range is refused by the bdev layer; a device error carries through as a failure
    // after the retries, and is counted by name.
    model.inject(
        ferrite_nvme::spec::io::READ,
        ferrite_nvme::Status::new(2, 0x81),
        10,
    );
    assert_eq!(
        one(&mut h, &ch, 3, &iov, |io| {
            io.prep_read(0, 2, cb);
        }),
        IoStatus::Failed
    );
    let c = ferrite_bdev_nvme::lookup("Nvme0").unwrap();
    assert_eq!(
        c.errors().get("Unrecovered Read Error"),
        Some(&4),
        "1 try + 3 retries"
    );
    let (dev, line) = LAST_FAIL.lock().unwrap().take().unwrap();
    assert_eq!(
        dev,
        Some(DeviceStatus::Nvme {
            sct: 2,
            sc: 0x81,
            name: "Unrecovered Read Error"
        })
    );
    assert_eq!(
        line,
        "Nvme0n1: read at offset 0 failed: NVMe status Unrecovered Read Error (sct 2 sc 0x81)"
    );
    model.inject(
        ferrite_nvme::spec::io::READ,
        ferrite_nvme::Status::SUCCESS,
        0,
    );
    // Do Not Retry: fails at once, named.
    model.inject(
        ferrite_nvme::spec::io::READ,
        ferrite_nvme::Status(ferrite_nvme::Status::LBA_OUT_OF_RANGE.0 | 1 << 14),
        1,
    );
    assert_eq!(
        one(&mut h, &ch, 30, &iov, |io| {
            io.prep_read(4, 2, cb);
        }),
        IoStatus::Failed
    );
    let (_, line) = LAST_FAIL.lock().unwrap().take().unwrap();
    assert_eq!(
        line,
        "Nvme0n1: read at offset 2048 failed: NVMe status LBA Out of Range (sct 0 sc 0x80)"
    );

    // Unmap and write zeroes (larger than one command).
    model.write_disk(1, 0, &vec![1u8; 512 * 8]);
    assert_eq!(
        one(&mut h, &ch, 4, &[], |io| {
            io.prep_unmap(0, 4, cb);
        }),
        IoStatus::Success
    );
    let mut d = vec![9u8; 512 * 8];
    model.read_disk(1, 0, &mut d);
    assert!(d[..2048].iter().all(|&x| x == 0) && d[2048..].iter().all(|&x| x == 1));
    model.write_disk(1, 139_000 * 512, &[3u8; 512]);
    assert_eq!(
        one(&mut h, &ch, 5, &[], |io| {
            io.prep_write_zeroes(0, 140_000, cb);
        }),
        IoStatus::Success
    );
    let mut d = [9u8; 512];
    model.read_disk(1, 139_000 * 512, &mut d);
    assert!(d.iter().all(|&x| x == 0));

    // Compare-and-write (fused on the device).
    let mut cmpb = vec![0u8; 512];
    let mut newb = vec![0x42u8; 512];
    let (ci, wi) = (heap_iov(&mut cmpb), heap_iov(&mut newb));
    let st = one(&mut h, &ch, 6, &[wi], |io| {
        io.prep_compare_and_write(7, 1, cb);
        // SAFETY: the buffer outlives the I/O.
        unsafe { io.set_cmp_iovs(&[ci]) };
    });
    assert_eq!(st, IoStatus::Success);
    let st = one(&mut h, &ch, 7, &[wi], |io| {
        io.prep_compare_and_write(7, 1, cb);
        // SAFETY: as above.
        unsafe { io.set_cmp_iovs(&[ci]) };
    });
    assert_eq!(st, IoStatus::Miscompare);

    // Queue depth far above the queue (15 usable entries): back-pressure, nothing lost.
    // Then a controller reset with commands in flight: they are resubmitted afterwards.
    model.set_auto(false);
    let bufs: Vec<DmaBuf> = (0..64)
        .map(|_| DmaBuf::get(4096).unwrap().unwrap())
        .collect();
    h.on(1, || {
        for (i, bf) in bufs.iter().enumerate() {
            // SAFETY: ours.
            unsafe { std::ptr::write_bytes(bf.as_ptr(), i as u8, 4096) };
            let mut io = ch.alloc_io().unwrap();
            io.user[0] = 100 + i as u64;
            io.prep_write(1000 + 8 * i as u64, 8, cb);
            // SAFETY: the buffers outlive the I/O.
            unsafe {
                io.set_iovs(&[IoVec {
                    base: bf.as_ptr(),
                    len: 4096,
                }])
            };
            ch.submit(io);
        }
    });
    for _ in 0..20 {
        h.poll_all();
    }
    assert!(model.queued() > 0);
    let reset_done: Arc<Mutex<Option<bool>>> = Arc::default();
    let rd = reset_done.clone();
    let c2 = c.clone();
    h.on(0, move || {
        ferrite_bdev_nvme::reset(&c2, move |r| *rd.lock().unwrap() = Some(r.is_ok()))
    });
    for _ in 0..5000 {
        if reset_done.lock().unwrap().is_some() {
            break;
        }
        h.poll_all();
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    assert_eq!(*reset_done.lock().unwrap(), Some(true));
    assert_eq!(c.resets(), 1);
    model.set_auto(true);
    let mut got = Vec::new();
    for _ in 0..100_000 {
        got.extend(take_done());
        if got.len() >= 64 {
            break;
        }
        model.step();
        h.poll_all();
    }
    assert_eq!(got.len(), 64);
    assert!(got.iter().all(|g| g.1 == IoStatus::Success), "{got:?}");
    for i in 0..64usize {
        let mut d = [0u8; 4096];
        model.read_disk(1, (1000 + 8 * i) * 512, &mut d);
        assert!(d.iter().all(|&x| x == i as u8), "block of I/O {i}");
    }

    // save_config: the controller (options only once changed), then options too.
    let cfg = ferrite_bdev_nvme::control::config_json();
    assert_eq!(cfg.len(), 1);
    assert_eq!(cfg[0]["method"], "bdev_nvme_attach_controller");
    assert_eq!(cfg[0]["params"]["name"], "Nvme0");
    let mut m = serde_json::Map::new();
    m.insert("bdev_retry_count".into(), 5.into());
    ferrite_bdev_nvme::opts::update(m).unwrap();
    let cfg = ferrite_bdev_nvme::control::config_json();
    assert_eq!(cfg[0]["method"], "bdev_nvme_set_options");
    assert_eq!(cfg[0]["params"]["bdev_retry_count"], 5);
    assert_eq!(cfg[1]["method"], "bdev_nvme_attach_controller");

    zero_alloc(&mut h, &ch);

    // Detach: both bdevs go away.
    drop(ch);
    drop(desc);
    let detached: Arc<AtomicU64> = Arc::default();
    let dd = detached.clone();
    h.on(0, move || {
        ferrite_bdev_nvme::detach("Nvme0", move |r| {
            r.unwrap();
            dd.store(1, Ordering::SeqCst);
        })
    });
    for _ in 0..5000 {
        if detached.load(Ordering::SeqCst) == 1 {
            break;
        }
        h.poll_all();
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    assert_eq!(detached.load(Ordering::SeqCst), 1);
    assert!(ferrite_bdev::lookup("Nvme0n1").is_none());
    assert!(ferrite_bdev_nvme::lookup("Nvme0").is_none());
}

static ZA_COUNT: AtomicU64 = AtomicU64::new(0);
thread_local! {
    static ZA_CH: std::cell::Cell<*const BdevChannel> = const { std::cell::Cell::new(std::ptr::null()) };
}

fn za_cb(mut io: Box<BdevIo>) {
    assert_eq!(io.status(), IoStatus::Success);
    ZA_COUNT.fetch_add(1, Ordering::Relaxed);
    let ch = ZA_CH.with(|c| c.get());
    if ch.is_null() {
        return;
    }
    let off = (io.offset_blocks() + 8) % 4096;
    if off.is_multiple_of(16) {
        io.prep_write(off, 8, za_cb);
    } else {
        io.prep_read(off, 8, za_cb);
    }
    // SAFETY: set while the test runs.
    unsafe { &*ch }.submit(io);
}

fn zero_alloc(h: &mut Harness, ch: &BdevChannel) {
    ZA_CH.with(|c| c.set(ch as *const BdevChannel));
    h.on(1, || {
        // Depth 8: below the queue's 15 entries (back-pressure retries are the bdev layer's
        // business and were exercised above).
        for i in 0..8u64 {
            let mut io = ch.alloc_io().unwrap();
            io.attach_buf(DmaBuf::get(4096).unwrap().unwrap());
            io.prep_read(i * 8, 8, za_cb);
            ch.submit(io);
        }
    });
    for _ in 0..300 {
        h.poll_thread(1);
    }
    let before = ZA_COUNT.load(Ordering::Relaxed);
    ferrite_reactor::alloc_count::start();
    for _ in 0..1000 {
        h.poll_thread(1);
    }
    ferrite_reactor::alloc_count::stop();
    let n = ZA_COUNT.load(Ordering::Relaxed) - before;
    assert!(n > 2000, "steady state too short: {n}");
    assert_eq!(
        ferrite_reactor::alloc_count::take(),
        0,
        "allocations per I/O"
    );
    ZA_CH.with(|c| c.set(std::ptr::null()));
    // Drain what is in flight.
    for _ in 0..200 {
        h.poll_thread(1);
    }
}

#[test]
fn attach_rejects_bad_parameters_with_clear_errors() {
    let mut h = Harness::new(1, 3);
    let errs: Arc<Mutex<Vec<String>>> = Arc::default();
    for (trtype, traddr) in [
        ("TCP", "0000:00:04.0"),
        ("PCIe", "0000:00:04"),
        ("pcie", "ffff:ff:1f.7"),
    ] {
        let e = errs.clone();
        h.on(0, move || {
            ferrite_bdev_nvme::attach(
                AttachParams {
                    name: "Bad".into(),
                    trtype: trtype.into(),
                    traddr: traddr.into(),
                    num_io_queues: None,
                },
                move |r| e.lock().unwrap().push(r.unwrap_err().to_string()),
            )
        });
    }
    for _ in 0..2000 {
        if errs.lock().unwrap().len() == 3 {
            break;
        }
        h.poll_all();
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let e = errs.lock().unwrap().clone();
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(e[0].contains("only PCIe"), "{}", e[0]);
    assert!(e[1].contains("invalid PCI address"), "{}", e[1]);
    assert!(
        e[2].contains("not found") && e[2].contains("ferrite setup"),
        "{}",
        e[2]
    );
    assert!(ferrite_bdev_nvme::lookup("Bad").is_none());
}
