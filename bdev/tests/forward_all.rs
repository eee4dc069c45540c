//! A backend that forwards everything (`BackendChannel::forward_all`, what passthru does): the
//! bdev layer forwards each I/O to the base channel itself, with the checks settled at channel
//! creation. Checked here over the test backend: statistics on both bdevs, completion never
//! inside submit, reset draining I/O held on the base, a base resized below the stacked bdev,
//! a read-only base (no fast path: every I/O fully checked), stacks deeper than the frame
//! stack, and a base that splits what it is forwarded.
// Helpers outside #[test] functions unwrap too: this is test code.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::{iostat, open_channel, run_until, take_done, Arena, StackedKind, TestCfg, TestState};
use ferrite_bdev::{
    BackendChannel, Bdev, BdevChannel, BdevIo, IoStatus, IoType, MAX_FORWARD_DEPTH,
};
use ferrite_reactor::harness::Harness;

const BS: u32 = 512;

struct AllChannel {
    base: Option<BdevChannel>,
}

impl BackendChannel for AllChannel {
    fn submit(&mut self, io: Box<BdevIo>) {
        panic!("submit called on a forward_all backend: {io:?}");
    }
    fn forward_all(&mut self) -> Option<BdevChannel> {
        self.base.take()
    }
}

const ALL: StackedKind = StackedKind {
    module: "fwd_all_test",
    types: &[IoType::Read, IoType::Write, IoType::Flush, IoType::Reset],
    product: "Forward-all test disk",
};

/// Registers a forward-all bdev `name` of `num_blocks` over `base` (call on a harness thread).
fn stack(name: &str, base: &str, num_blocks: u64, write: bool) {
    let make: common::MakeChannel =
        Box::new(|mut bases| Box::new(AllChannel { base: bases.pop() }));
    common::register_stacked(&ALL, name, &[base], BS, num_blocks, write, make);
}

fn base(name: &str, num_blocks: u64, cfg: TestCfg) -> (Arc<Bdev>, Arc<TestState>) {
    common::register_test(name, BS, num_blocks, cfg)
}

#[test]
fn io_is_counted_on_both_bdevs_and_never_completes_inside_submit() {
    let mut h = Harness::new(1, 21);
    let (_, st) = h.on(0, || base("FaBase1", 256, TestCfg::default()));
    h.on(0, || stack("FaTop1", "FaBase1", 256, true));
    let (_d, ch) = open_channel(&mut h, "FaTop1");
    let arena = Arena::default();
    let data = common::noise(5, 4 * BS as usize);
    h.on(0, || {
        common::write_at(&ch, &arena, 10, data.clone(), &[BS as usize], 1);
        assert_eq!(common::done_count(), 0, "completed inside submit");
    });
    run_until(&mut h, "write", || common::done_count() == 1);
    h.on(0, || {
        common::read_auto(&ch, 10, 4, 2);
        assert_eq!(common::done_count(), 1, "completed inside submit");
    });
    run_until(&mut h, "read", || common::done_count() == 2);
    let done = take_done();
    assert!(
        done.iter()
            .all(|d| d.status == IoStatus::Success && d.offset == 10 && d.num == 4),
        "{done:?}"
    );
    assert_eq!(done[1].data.as_deref(), Some(&data[..]), "read back");
    assert_eq!(st.ram_blocks(10, 4), data);
    let (top, bot) = (iostat(&mut h, "FaTop1"), iostat(&mut h, "FaBase1"));
    for s in [&top, &bot] {
        assert_eq!((s.read.ops, s.read.bytes), (1, 4 * u64::from(BS)));
        assert_eq!((s.write.ops, s.write.bytes), (1, 4 * u64::from(BS)));
        assert!(s.read.min_latency_ticks > 0 && s.write.min_latency_ticks > 0);
    }
    assert_eq!(top.read.latency_ticks, bot.read.latency_ticks);
    h.on(0, || {
        assert_eq!(ch.inflight(), 0);
        drop(ch)
    });
}

#[test]
fn reset_of_the_stacked_bdev_waits_for_io_held_on_the_base() {
    let mut h = Harness::new(1, 22);
    let (_, st) = h.on(0, || base("FaBase2", 256, TestCfg::default()));
    h.on(0, || stack("FaTop2", "FaBase2", 256, true));
    let (_d, ch) = open_channel(&mut h, "FaTop2");
    common::reset_waits_for_io_held_on_the_base(&mut h, ch, &st);
}

#[test]
fn a_base_resized_below_the_stacked_bdev_refuses_what_lies_beyond() {
    let mut h = Harness::new(1, 23);
    let (b, st) = h.on(0, || base("FaBase3", 256, TestCfg::default()));
    h.on(0, || stack("FaTop3", "FaBase3", 256, true));
    let (_d, ch) = open_channel(&mut h, "FaTop3");
    let arena = Arena::default();
    h.on(0, || b.notify_resize(100));
    h.on(0, || {
        common::read_at(&ch, &arena, 98, 4, &[], 1);
        common::read_at(&ch, &arena, 90, 4, &[], 2);
        assert_eq!(common::done_count(), 0, "completed inside submit");
    });
    run_until(&mut h, "reads", || common::done_count() == 2);
    let mut done = take_done();
    done.sort_by_key(|d| d.tag);
    assert_eq!(done[0].status, IoStatus::Invalid);
    assert_eq!(done[1].status, IoStatus::Success);
    assert_eq!(st.submits.load(Ordering::SeqCst), 1);
    h.on(0, || {
        assert_eq!(ch.inflight(), 0);
        drop(ch)
    });
}

#[test]
fn a_read_only_base_refuses_writes_and_serves_reads() {
    let mut h = Harness::new(1, 24);
    let (_, st) = h.on(0, || base("FaBase4", 64, TestCfg::default()));
    st.fill_ram(3, 1, 0x3c);
    h.on(0, || stack("FaTop4", "FaBase4", 64, false));
    let (_d, ch) = open_channel(&mut h, "FaTop4");
    let arena = Arena::default();
    let i = h.on(0, || {
        common::write_at(&ch, &arena, 3, vec![0x77; BS as usize], &[], 1);
        common::read_at(&ch, &arena, 3, 1, &[], 2)
    });
    run_until(&mut h, "both", || common::done_count() == 2);
    let mut done = take_done();
    done.sort_by_key(|d| d.tag);
    assert_eq!(
        (done[0].status, done[1].status),
        (IoStatus::Invalid, IoStatus::Success)
    );
    assert_eq!(arena.get(i), vec![0x3c; BS as usize]);
    assert_eq!(st.ram_blocks(3, 1), vec![0x3c; BS as usize], "not written");
    h.on(0, || drop(ch));
}

#[test]
fn a_stack_deeper_than_the_frame_stack_still_works() {
    let mut h = Harness::new(1, 25);
    let (_, st) = h.on(0, || base("FaDeep0", 128, TestCfg::default()));
    let layers = MAX_FORWARD_DEPTH + 3;
    for k in 1..=layers {
        let below = format!("FaDeep{}", k - 1);
        let name = format!("FaDeep{k}");
        h.on(0, || stack(&name, &below, 128, true));
    }
    let (_d, ch) = open_channel(&mut h, &format!("FaDeep{layers}"));
    let arena = Arena::default();
    let data = common::noise(4, 2 * BS as usize);
    h.on(0, || {
        common::write_at(&ch, &arena, 7, data.clone(), &[100], 1)
    });
    run_until(&mut h, "write", || common::done_count() == 1);
    let i = h.on(0, || common::read_at(&ch, &arena, 7, 2, &[], 2));
    run_until(&mut h, "read", || common::done_count() == 2);
    let done = take_done();
    assert!(
        done.iter().all(|d| d.status == IoStatus::Success),
        "{done:?}"
    );
    assert_eq!(arena.get(i), data);
    assert_eq!(st.ram_blocks(7, 2), data);
    for k in 0..=layers {
        let s = iostat(&mut h, &format!("FaDeep{k}"));
        assert_eq!((s.read.ops, s.write.ops), (1, 1), "layer {k}");
    }
    h.on(0, || {
        assert_eq!(ch.inflight(), 0);
        drop(ch)
    });
}

#[test]
fn the_base_splits_what_it_is_forwarded_on_its_own_boundary() {
    let mut h = Harness::new(1, 26);
    let cfg = TestCfg {
        boundary: 8,
        ..TestCfg::default()
    };
    let (_, st) = h.on(0, || base("FaBase5", 256, cfg));
    h.on(0, || stack("FaTop5", "FaBase5", 256, true));
    let (_d, ch) = open_channel(&mut h, "FaTop5");
    common::base_splits_what_it_is_forwarded(&mut h, ch, &st, ("FaTop5", "FaBase5"), BS);
}
