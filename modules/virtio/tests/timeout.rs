//! The request timeout (`timeout_us`): against a server that stays connected but never answers
//! (qemu-storage-daemon's null-co device with a 60 s latency), the I/O in flight fails once the
//! timeout passes, the controller is reported broken, new I/O fails at once, and the option is
//! saved with the controller; against a server that answers, I/O keeps running with the same
//! timeout and nothing fails. Needs `qemu-storage-daemon` (Debian package qemu-system-common).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferrite_bdev::{BdevIo, Desc, DmaBuf, IoStatus};
use ferrite_reactor::harness::Harness;
use ferrite_virtio::AttachOpts;
use serde_json::json;

static DONE: Mutex<Vec<IoStatus>> = Mutex::new(Vec::new());

fn record(io: Box<BdevIo>) {
    DONE.lock().unwrap().push(io.status());
    ferrite_bdev::free_io(io);
}

fn opts(name: &str, traddr: &str, timeout_us: u64) -> AttachOpts {
    AttachOpts {
        name: name.into(),
        traddr: traddr.into(),
        vq_count: 1,
        vq_size: 64,
        timeout_us,
    }
}

/// Polls harness thread 0 with its virtual clock following real time, until `cond` or 10 s.
fn poll_until(h: &mut Harness, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    let mut last = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        h.advance_us(last.elapsed().as_micros() as u64);
        last = Instant::now();
        h.poll_thread(0);
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// Polls thread 0 until `cond`, for at most 10 s of real time, without advancing the
/// harness's clock (nothing timed can fire).
fn poll_frozen(h: &mut Harness, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        h.poll_thread(0);
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

const TIMEOUT_US: u64 = 300_000;

#[test]
fn unanswered_requests_time_out_and_fail_the_controller() {
    let (_hung, hung_sock) = common::start_qsd("timeout-hung", ",latency-ns=60000000000");
    let (_ok, ok_sock) = common::start_qsd("timeout-ok", "");
    let mut h = Harness::new(1, 1);

    // Out of bounds: refused, naming the option.
    let e = common::attach(
        &mut h,
        opts("VBad", &hung_sock, ferrite_virtio::MAX_TIMEOUT_US + 1),
    )
    .unwrap_err();
    assert!(e.contains("timeout_us 3600000001 exceeds the limit"), "{e}");

    // A server that answers: a second of I/O with the timeout armed, nothing fails.
    assert_eq!(
        common::attach(&mut h, opts("VOk", &ok_sock, TIMEOUT_US)),
        Ok(vec!["VOk".to_string()])
    );
    let d = ferrite_bdev::testing::Driver::open(&mut h, "VOk", 8192, None);
    d.start(&mut h, 4);
    let before = ferrite_bdev::testing::completed();
    assert!(
        poll_until(&mut h, || ferrite_bdev::testing::completed() - before > 100),
        "fewer than 100 I/O completed against the answering server"
    );
    assert_eq!(ferrite_bdev::testing::failed(), 0, "I/O failed");
    d.close(&mut h, Duration::from_secs(10));
    assert_eq!(
        ferrite_virtio::list(Some("VOk")).unwrap()[0]["broken"],
        false
    );

    // A server that never answers in time.
    assert_eq!(
        common::attach(&mut h, opts("VHung", &hung_sock, TIMEOUT_US)),
        Ok(vec!["VHung".to_string()])
    );
    let info = &ferrite_virtio::list(Some("VHung")).unwrap()[0];
    assert_eq!(info["timeout_us"], TIMEOUT_US, "{info}");
    assert_eq!(info["broken"], false, "{info}");
    // Saved with the controller (only when set: without it the entry stays SPDK's).
    let saved = ferrite_bdev::config::subsystem_config();
    let entry = saved
        .iter()
        .find(|e| e["params"]["name"] == "VHung")
        .unwrap();
    assert_eq!(
        entry["params"],
        json!({"name": "VHung", "dev_type": "blk", "trtype": "user", "traddr": hung_sock,
               "vq_count": 1, "vq_size": 64, "timeout_us": TIMEOUT_US})
    );

    let desc = h.on(0, || Desc::open("VHung", true, |_| {}).unwrap());
    let ch = h.on(0, || desc.channel().unwrap());
    let submit = |h: &mut Harness, n: u64| {
        h.on(0, || {
            for i in 0..n {
                let mut io = ch.alloc_io().unwrap();
                io.attach_buf(DmaBuf::get(4096).unwrap().unwrap());
                io.prep_read(i * 8, 8, record);
                ch.submit(io);
            }
        })
    };
    let t0 = Instant::now();
    submit(&mut h, 4);
    assert!(
        poll_until(&mut h, || DONE.lock().unwrap().len() == 4),
        "the I/O did not fail within 10 s: {:?}",
        DONE.lock().unwrap()
    );
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_micros(TIMEOUT_US),
        "failed before the timeout: {waited:?}"
    );
    assert_eq!(*DONE.lock().unwrap(), vec![IoStatus::Failed; 4]);
    assert_eq!(
        ferrite_virtio::list(Some("VHung")).unwrap()[0]["broken"],
        true
    );
    // The controller is failed: new I/O fails at once, without waiting for a timeout.
    // (The harness's clock stands still meanwhile: no timeout can end it.)
    DONE.lock().unwrap().clear();
    submit(&mut h, 1);
    assert!(poll_frozen(&mut h, || DONE.lock().unwrap().len() == 1));
    assert_eq!(*DONE.lock().unwrap(), vec![IoStatus::Failed]);
    // The bdev stays, reported broken, until detached.
    assert!(ferrite_bdev::lookup("VHung").is_some());
    h.on(0, move || drop(ch));
    h.on(0, move || drop(desc));
    let gone = std::sync::Arc::new(Mutex::new(None));
    let g2 = gone.clone();
    h.on(0, move || {
        ferrite_virtio::detach("VHung", move |r| *g2.lock().unwrap() = Some(r.is_ok()))
    });
    assert!(poll_until(&mut h, || gone.lock().unwrap().is_some()));
    assert_eq!(*gone.lock().unwrap(), Some(true));
    assert!(ferrite_bdev::lookup("VHung").is_none());
}
