//! Per-channel statistics summed across threads (`collect_iostat`), their reset
//! (`reset_iostat`, full and max/min only), and figures of channels already closed.
// Helpers outside #[test] functions unwrap too: this is test code.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::{run_until, take_done, Arena};
use ferrite_bdev::stats::IoStats;
use ferrite_bdev::{Bdev, BdevChannel, Desc, IoStatus};
use ferrite_reactor::harness::Harness;

const BS: u64 = 4096;

type Collected = Arc<Mutex<Option<(IoStats, Vec<(u64, IoStats)>)>>>;

fn collect(h: &mut Harness, b: &Arc<Bdev>) -> (IoStats, Vec<(u64, IoStats)>) {
    let out: Collected = Arc::default();
    let o = out.clone();
    let b = b.clone();
    h.on(0, move || {
        ferrite_bdev::collect_iostat(&b, move |t, per| *o.lock().unwrap() = Some((t, per)))
    });
    let o = out.clone();
    run_until(h, "collect_iostat", || o.lock().unwrap().is_some());
    let r = out.lock().unwrap().take().unwrap();
    r
}

fn reset(h: &mut Harness, b: &Arc<Bdev>, maxmin_only: bool) {
    let done = Arc::new(Mutex::new(false));
    let d = done.clone();
    let b = b.clone();
    h.on(0, move || {
        ferrite_bdev::reset_iostat(&b, maxmin_only, move || *d.lock().unwrap() = true)
    });
    let d = done.clone();
    run_until(h, "reset_iostat", || *d.lock().unwrap());
}

/// Thread `t` does (t+1) reads of 2 blocks, (t+2) writes of 1 block, t unmaps of 8 blocks,
/// 1 write_zeroes of 3 blocks and 2 flushes.
fn workload(h: &mut Harness, t: usize, ch: &BdevChannel, arena: &Arena) -> usize {
    let mut n = 0;
    h.on(t, || {
        for i in 0..=t {
            common::read_at(ch, arena, i as u64 * 2, 2, &[], 0);
            n += 1;
        }
        for i in 0..t + 2 {
            common::write_at(
                ch,
                arena,
                100 + i as u64,
                vec![t as u8; BS as usize],
                &[],
                0,
            );
            n += 1;
        }
        for i in 0..t {
            common::submit_plain(ch, 0, |io| {
                io.prep_unmap(200 + 8 * i as u64, 8, common::record);
            });
            n += 1;
        }
        common::submit_plain(ch, 0, |io| {
            io.prep_write_zeroes(300, 3, common::record);
        });
        for _ in 0..2 {
            common::submit_plain(ch, 0, |io| {
                io.prep_flush(0, 0, common::record);
            });
        }
        n += 3;
    });
    n
}

fn check_thread(s: &IoStats, t: u64) {
    assert_eq!((s.read.ops, s.read.bytes), (t + 1, (t + 1) * 2 * BS));
    assert_eq!((s.write.ops, s.write.bytes), (t + 2, (t + 2) * BS));
    assert_eq!((s.unmap.ops, s.unmap.bytes), (t, t * 8 * BS));
    assert_eq!((s.write_zeroes.ops, s.write_zeroes.bytes), (1, 3 * BS));
    assert_eq!((s.other.ops, s.other.bytes), (2, 0));
    assert_eq!((s.compare.ops, s.failed, s.miscompares), (0, 0, 0));
    for o in [&s.read, &s.write, &s.write_zeroes, &s.other] {
        assert!(o.latency_ticks >= o.max_latency_ticks);
        assert!(
            o.min_latency_ticks > 0 && o.min_latency_ticks <= o.max_latency_ticks,
            "{o:?}"
        );
    }
}

#[test]
fn stats_from_three_threads_sum_and_reset() {
    let mut h = Harness::new(3, 81);
    h.on(0, || common::malloc("IsMal", 1024, BS as u32, 0));
    let b = ferrite_bdev::lookup("IsMal").unwrap();
    let d = h.on(0, || Desc::open("IsMal", true, |_| {}).unwrap());
    let chans: Vec<BdevChannel> = (0..3).map(|t| h.on(t, || d.channel().unwrap())).collect();
    let arena = Arena::default();
    let mut total_ios = 0;
    for (t, ch) in chans.iter().enumerate() {
        total_ios += workload(&mut h, t, ch, &arena);
    }
    run_until(&mut h, "workload", || common::done_count() == total_ios);
    assert!(take_done().iter().all(|d| d.status == IoStatus::Success));

    let (total, per) = collect(&mut h, &b);
    assert_eq!(per.len(), 3, "one entry per channel");
    let ids: HashMap<u64, u64> = (0..3).map(|t| (h.handle(t).id(), t as u64)).collect();
    for (tid, s) in &per {
        check_thread(s, ids[tid]);
    }
    assert_eq!((total.read.ops, total.read.bytes), (6, 12 * BS));
    assert_eq!((total.write.ops, total.write.bytes), (9, 9 * BS));
    assert_eq!((total.unmap.ops, total.unmap.bytes), (3, 24 * BS));
    assert_eq!(
        (total.write_zeroes.ops, total.write_zeroes.bytes),
        (3, 9 * BS)
    );
    assert_eq!(total.other.ops, 6);
    let max = per
        .iter()
        .map(|(_, s)| s.read.max_latency_ticks)
        .max()
        .unwrap();
    let min = per
        .iter()
        .map(|(_, s)| s.read.min_latency_ticks)
        .min()
        .unwrap();
    assert_eq!(
        (total.read.max_latency_ticks, total.read.min_latency_ticks),
        (max, min)
    );

    // Max/min reset keeps the counts; the next I/O sets fresh extremes.
    reset(&mut h, &b, true);
    let (t2, _) = collect(&mut h, &b);
    assert_eq!(t2.read.ops, 6);
    assert_eq!(
        (t2.read.max_latency_ticks, t2.read.min_latency_ticks),
        (0, 0)
    );
    h.on(1, || common::read_at(&chans[1], &arena, 0, 1, &[], 0));
    run_until(&mut h, "read", || common::done_count() == 1);
    take_done();
    let (t3, _) = collect(&mut h, &b);
    assert_eq!(t3.read.ops, 7);
    assert!(t3.read.max_latency_ticks > 0);
    assert_eq!(
        t3.read.min_latency_ticks, t3.read.max_latency_ticks,
        "one read since the max/min reset: min must be its latency"
    );

    // Full reset.
    reset(&mut h, &b, false);
    let (t4, per4) = collect(&mut h, &b);
    assert_eq!(t4, IoStats::default());
    assert!(per4.iter().all(|(_, s)| *s == IoStats::default()));
    h.on(2, || {
        common::write_at(&chans[2], &arena, 5, vec![9; BS as usize], &[], 0)
    });
    run_until(&mut h, "write", || common::done_count() == 1);
    take_done();
    let (t5, _) = collect(&mut h, &b);
    assert_eq!((t5.write.ops, t5.write.bytes, t5.read.ops), (1, BS, 0));

    for (t, ch) in chans.into_iter().enumerate() {
        h.on(t, || drop(ch));
    }
    drop(d);
    h.on(0, || ferrite_malloc::delete("IsMal", |r| r.unwrap()));
    h.run_until_idle();
}

/// As SPDK: the figures of a channel that was closed stay in the bdev's totals.
#[test]
fn stats_of_closed_channels_are_kept() {
    let mut h = Harness::new(2, 82);
    h.on(0, || common::malloc("IsClosed", 1024, BS as u32, 0));
    let b = ferrite_bdev::lookup("IsClosed").unwrap();
    let d = h.on(0, || Desc::open("IsClosed", true, |_| {}).unwrap());
    let arena = Arena::default();
    let ch1 = h.on(1, || d.channel().unwrap());
    let n = workload(&mut h, 1, &ch1, &arena);
    run_until(&mut h, "workload", || common::done_count() == n);
    take_done();
    h.on(1, || drop(ch1));
    h.run_until_idle();
    let (total, per) = collect(&mut h, &b);
    assert!(per.is_empty(), "no channel is open");
    check_thread(&total, 1);
    // A live channel adds to them.
    let ch0 = h.on(0, || d.channel().unwrap());
    h.on(0, || common::read_at(&ch0, &arena, 0, 1, &[], 0));
    run_until(&mut h, "read", || common::done_count() == 1);
    take_done();
    let (total, per) = collect(&mut h, &b);
    assert_eq!(per.len(), 1);
    assert_eq!((total.read.ops, total.write.ops), (3, 3));
    // A full reset clears them too.
    reset(&mut h, &b, false);
    let (total, _) = collect(&mut h, &b);
    assert_eq!(total, IoStats::default());
    h.on(0, || drop(ch0));
    drop(d);
    h.on(0, || ferrite_malloc::delete("IsClosed", |r| r.unwrap()));
    h.run_until_idle();
}
