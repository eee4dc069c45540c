//! Command timeouts through the bdev module, on the driver's controller model: with
//! `action_on_timeout: abort` a command the controller sits on is aborted and the I/O fails
//! (no retries configured) with the status counted by name; with `reset` the controller is
//! reset and the I/O completes after it.
#![allow(clippy::unwrap_used)] // tests

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrite_bdev::{BdevIo, Desc, DmaBuf, IoStatus, IoVec};
use ferrite_bdev_nvme::{AttachParams, NvmeModule};
use ferrite_nvme::model::{Model, ModelConfig};
use ferrite_reactor::harness::Harness;

static DONE: Mutex<Vec<IoStatus>> = Mutex::new(Vec::new());

fn cb(io: Box<BdevIo>) {
    DONE.lock().unwrap().push(io.status());
}

fn attach(h: &mut Harness, model: &Arc<Model>, name: &'static str) {
    let out: Arc<Mutex<Option<bool>>> = Arc::default();
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
            move |r| *o.lock().unwrap() = Some(r.is_ok()),
        )
    });
    for _ in 0..2000 {
        if out.lock().unwrap().is_some() {
            break;
        }
        h.poll_all();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(*out.lock().unwrap(), Some(true));
}

/// Submits one read that the (non-executing) model holds, then polls until it completes.
/// `step_when(executed at submission)` says when the model may execute what it holds.
fn held_read(
    h: &mut Harness,
    model: &Model,
    bdev: &str,
    step_when: &dyn Fn(u64) -> bool,
) -> IoStatus {
    let desc = h.on(1, || Desc::open(bdev, true, |_| {}).unwrap());
    let ch = h.on(1, || desc.channel().unwrap());
    let buf = DmaBuf::get(4096).unwrap().unwrap();
    model.set_auto(false);
    h.on(1, || {
        let mut io = ch.alloc_io().unwrap();
        io.prep_read(0, 8, cb);
        // SAFETY: the buffer outlives the I/O (we wait for it below).
        unsafe {
            io.set_iovs(&[IoVec {
                base: buf.as_ptr(),
                len: 4096,
            }])
        };
        ch.submit(io);
    });
    let base = model.executed();
    let start = std::time::Instant::now();
    loop {
        if let Some(s) = DONE.lock().unwrap().pop() {
            drop(ch);
            drop(desc);
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "I/O never completed"
        );
        if step_when(base) {
            model.set_auto(true);
            model.step();
        }
        h.poll_all();
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn timed_out_commands_are_aborted_or_reset() {
    let mut h = Harness::new(2, 5);
    h.on(0, || ferrite_bdev::register_module(Arc::new(NvmeModule)));
    let mut m = serde_json::Map::new();
    m.insert("timeout_us".into(), 20_000.into());
    m.insert("action_on_timeout".into(), "abort".into());
    m.insert("bdev_retry_count".into(), 0.into());
    ferrite_bdev_nvme::opts::update(m).unwrap();

    // Abort: the model holds the read; the driver's Abort (admin queue) marks it, and the
    // next execution completes it as "Command Abort Requested".
    let model = Model::new(ModelConfig::default());
    attach(&mut h, &model, "T0");
    // Execute queued commands only once the Abort (admin commands run at once) arrived.
    let m2 = model.clone();
    let st = held_read(&mut h, &model, "T0n1", &move |base| m2.executed() > base);
    assert_eq!(st, IoStatus::Failed);
    let c = ferrite_bdev_nvme::lookup("T0").unwrap();
    assert_eq!(
        c.errors().get("Command Abort Requested"),
        Some(&1),
        "{:?}",
        c.errors()
    );

    // Reset: a second controller (options are read when a controller's channel is created).
    let mut m = serde_json::Map::new();
    m.insert("action_on_timeout".into(), "reset".into());
    m.insert("bdev_retry_count".into(), 3.into());
    ferrite_bdev_nvme::opts::update(m).unwrap();
    let model_b = Model::new(ModelConfig::default());
    attach(&mut h, &model_b, "T1");
    // The held read is failed back by the reset and resubmitted; the model executes it once
    // the reset is over.
    let c = ferrite_bdev_nvme::lookup("T1").unwrap();
    let c2 = c.clone();
    let st = held_read(&mut h, &model_b, "T1n1", &move |_| c2.resets() >= 1);
    assert_eq!(st, IoStatus::Success);
    assert_eq!(c.state(), ferrite_bdev_nvme::CtrlrState::Enabled);
    assert!(c.resets() >= 1, "the timeout reset the controller");
    assert_eq!(ferrite_bdev_nvme::lookup("T0").unwrap().resets(), 0);
}
