//! A device status attached by a backend to a failed I/O reaches the submitter: through a
//! passthru (the same I/O forwarded to the base), and through a split on the base (the parent
//! takes its failing child's status), and through a stack of passthrus deeper than the frame
//! stack (the deepest layers forward with a child I/O). A later successful I/O on the same pooled object does not
//! carry a stale status.
// Helpers outside #[test] functions unwrap too: this is test code.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::{register_test, run_until, take_done, Arena, TestCfg, TestState};
use ferrite_bdev::{BdevIo, Desc, DeviceStatus, IoStatus, MAX_FORWARD_DEPTH};
use ferrite_reactor::harness::Harness;

const LBA_OUT_OF_RANGE: DeviceStatus = DeviceStatus::Nvme {
    sct: 0,
    sc: 0x80,
    name: "LBA Out of Range",
};

/// Completes the I/O the base holds: the one at `bad` fails with the device status, the
/// others succeed.
fn release(st: &TestState, bad: u64) -> usize {
    let held: Vec<Box<BdevIo>> = st
        .held
        .lock()
        .unwrap()
        .drain(..)
        .map(|(_, io)| io)
        .collect();
    let n = held.len();
    for mut io in held {
        if io.offset_blocks() == bad {
            io.set_device_status(LBA_OUT_OF_RANGE);
            io.complete(IoStatus::Failed);
        } else {
            io.complete(IoStatus::Success);
        }
    }
    n
}

fn passthru_over(h: &mut Harness, base: &str, pt: &str, cfg: TestCfg) -> Arc<TestState> {
    let (b, p) = (base.to_string(), pt.to_string());
    h.on(0, move || {
        ferrite_bdev::register_module(Arc::new(ferrite_passthru::PassthruModule));
        let (_, state) = register_test(&b, 512, 1024, cfg);
        ferrite_passthru::create(&ferrite_passthru::PassthruOpts {
            base_bdev_name: b,
            name: p,
            uuid: None,
        })
        .unwrap();
        state
    })
}

#[test]
fn passthru_keeps_the_base_device_status() {
    let mut h = Harness::new(1, 41);
    let st = passthru_over(&mut h, "DsBase1", "DsPt1", TestCfg::default());
    st.hold.store(true, Ordering::SeqCst);
    let d = h.on(0, || Desc::open("DsPt1", true, |_| {}).unwrap());
    let ch = h.on(0, || d.channel().unwrap());
    let arena = Arena::default();
    h.on(0, || common::read_at(&ch, &arena, 7, 2, &[], 1));
    run_until(&mut h, "held", || st.held_count() == 1);
    h.on(0, || assert_eq!(release(&st, 7), 1));
    run_until(&mut h, "read", || common::done_count() == 1);
    let done = take_done();
    assert_eq!(done[0].status, IoStatus::Failed);
    assert_eq!(done[0].dev, Some(LBA_OUT_OF_RANGE));
    assert_eq!(
        LBA_OUT_OF_RANGE.to_string(),
        "NVMe status LBA Out of Range (sct 0 sc 0x80)"
    );
    // The pooled object comes back for the next I/O without the old status.
    st.hold.store(false, Ordering::SeqCst);
    h.on(0, || common::read_at(&ch, &arena, 7, 2, &[], 2));
    run_until(&mut h, "second read", || common::done_count() == 1);
    let done = take_done();
    assert_eq!((done[0].status, done[0].dev), (IoStatus::Success, None));
    h.on(0, || drop(ch));
}

#[test]
fn a_split_parent_takes_its_failing_childs_device_status() {
    let mut h = Harness::new(1, 42);
    let cfg = TestCfg {
        boundary: 8,
        ..TestCfg::default()
    };
    let st = passthru_over(&mut h, "DsBase2", "DsPt2", cfg);
    st.hold.store(true, Ordering::SeqCst);
    let d = h.on(0, || Desc::open("DsPt2", true, |_| {}).unwrap());
    let ch = h.on(0, || d.channel().unwrap());
    let arena = Arena::default();
    // Blocks 4..20 on a boundary of 8: children at 4, 8 and 16; the one at 8 fails.
    h.on(0, || common::read_at(&ch, &arena, 4, 16, &[], 1));
    run_until(&mut h, "held", || st.held_count() == 3);
    h.on(0, || assert_eq!(release(&st, 8), 3));
    run_until(&mut h, "read", || common::done_count() == 1);
    let done = take_done();
    assert_eq!(
        (done[0].status, done[0].offset, done[0].num, done[0].dev),
        (IoStatus::Failed, 4, 16, Some(LBA_OUT_OF_RANGE))
    );
    h.on(0, || drop(ch));
}

#[test]
fn a_stack_deeper_than_the_frame_stack_keeps_the_device_status() {
    let mut h = Harness::new(1, 43);
    let st = passthru_over(&mut h, "DsBase3", "DsPt3_1", TestCfg::default());
    let layers = MAX_FORWARD_DEPTH + 2;
    for k in 2..=layers {
        let (below, name) = (format!("DsPt3_{}", k - 1), format!("DsPt3_{k}"));
        h.on(0, move || {
            ferrite_passthru::create(&ferrite_passthru::PassthruOpts {
                base_bdev_name: below,
                name,
                uuid: None,
            })
            .unwrap()
        });
    }
    st.hold.store(true, Ordering::SeqCst);
    let top = format!("DsPt3_{layers}");
    let d = h.on(0, || Desc::open(&top, true, |_| {}).unwrap());
    let ch = h.on(0, || d.channel().unwrap());
    let arena = Arena::default();
    h.on(0, || common::read_at(&ch, &arena, 3, 1, &[], 1));
    run_until(&mut h, "held", || st.held_count() == 1);
    h.on(0, || assert_eq!(release(&st, 3), 1));
    run_until(&mut h, "read", || common::done_count() == 1);
    let done = take_done();
    assert_eq!(
        (done[0].status, done[0].dev),
        (IoStatus::Failed, Some(LBA_OUT_OF_RANGE))
    );
    h.on(0, || drop(ch));
}
