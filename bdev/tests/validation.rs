//! Validation (rejections reach the callback with `IoStatus::Invalid`, never inside submit,
//! and never reach the backend), reset draining in-flight I/O, and abort of I/O parked for
//! NoMem, and the drain count across a freeze whose parked I/O is aborted.
// Helpers outside #[test] functions unwrap too: this is test code.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;

use common::{register_test, run_until, take_done, Arena, TestCfg};
use ferrite_bdev::{Desc, IoStatus, IoType, IoVec};
use ferrite_reactor::harness::Harness;

const BS: usize = 512;

#[test]
fn invalid_requests_complete_with_invalid_via_the_callback() {
    let mut h = Harness::new(1, 71);
    let cfg = TestCfg {
        supported: vec![IoType::Read, IoType::Write, IoType::Flush],
        ..Default::default()
    };
    let (b, state) = h.on(0, || register_test("VaInv", BS as u32, 64, cfg));
    assert!(!b.io_type_supported(IoType::Unmap));
    assert!(
        b.io_type_supported(IoType::WriteZeroes),
        "emulated with writes"
    );
    let d = h.on(0, || Desc::open("VaInv", true, |_| {}).unwrap());
    let ro = h.on(0, || Desc::open("VaInv", false, |_| {}).unwrap());
    let ch = h.on(0, || d.channel().unwrap());
    let ch_ro = h.on(0, || ro.channel().unwrap());
    let arena = Arena::default();
    let (_, blk) = arena.add(vec![0; BS]);
    let (_, two) = arena.add(vec![0; 2 * BS]);
    let (_, short) = arena.add(vec![0; 2 * BS - 1]);
    // (what, read-only channel?, type, offset, blocks, segments, compare segments)
    type Case = (&'static str, bool, IoType, u64, u64, Vec<IoVec>, Vec<IoVec>);
    let cases: Vec<Case> = vec![
        (
            "read past the end",
            false,
            IoType::Read,
            63,
            2,
            vec![two],
            vec![],
        ),
        (
            "read at the end",
            false,
            IoType::Read,
            64,
            1,
            vec![blk],
            vec![],
        ),
        (
            "write past the end",
            false,
            IoType::Write,
            60,
            8,
            vec![],
            vec![],
        ),
        (
            "offset overflow",
            false,
            IoType::Write,
            u64::MAX - 1,
            2,
            vec![two],
            vec![],
        ),
        (
            "block count overflow",
            false,
            IoType::Read,
            1,
            u64::MAX,
            vec![blk],
            vec![],
        ),
        (
            "huge count, auto buffer",
            false,
            IoType::Read,
            0,
            u64::MAX / 2,
            vec![],
            vec![],
        ),
        (
            "zero-length read",
            false,
            IoType::Read,
            0,
            0,
            vec![],
            vec![],
        ),
        (
            "zero-length write",
            false,
            IoType::Write,
            3,
            0,
            vec![],
            vec![],
        ),
        (
            "segments too short",
            false,
            IoType::Write,
            0,
            2,
            vec![short],
            vec![],
        ),
        (
            "segments too long",
            false,
            IoType::Write,
            0,
            1,
            vec![two],
            vec![],
        ),
        (
            "read segments short",
            false,
            IoType::Read,
            0,
            2,
            vec![blk],
            vec![],
        ),
        (
            "write on read-only",
            true,
            IoType::Write,
            0,
            1,
            vec![blk],
            vec![],
        ),
        (
            "write_zeroes on read-only",
            true,
            IoType::WriteZeroes,
            0,
            1,
            vec![],
            vec![],
        ),
        (
            "unsupported unmap",
            false,
            IoType::Unmap,
            0,
            1,
            vec![],
            vec![],
        ),
        (
            "C&W compare short",
            false,
            IoType::CompareAndWrite,
            0,
            2,
            vec![two],
            vec![blk],
        ),
        (
            "C&W on read-only",
            true,
            IoType::CompareAndWrite,
            0,
            2,
            vec![two],
            vec![two],
        ),
        (
            "compare past the end",
            false,
            IoType::Compare,
            64,
            1,
            vec![blk],
            vec![],
        ),
    ];
    for (i, (what, ro_ch, t, off, n, iovs, cmp)) in cases.into_iter().enumerate() {
        let c = if ro_ch { &ch_ro } else { &ch };
        h.on(0, || {
            let mut io = c.alloc_io().unwrap();
            match t {
                IoType::Read => io.prep_read(off, n, common::record),
                IoType::Write => io.prep_write(off, n, common::record),
                IoType::Unmap => io.prep_unmap(off, n, common::record),
                IoType::WriteZeroes => io.prep_write_zeroes(off, n, common::record),
                IoType::Compare => io.prep_compare(off, n, common::record),
                IoType::CompareAndWrite => io.prep_compare_and_write(off, n, common::record),
                _ => unreachable!(),
            };
            io.user[0] = i as u64;
            // SAFETY: every segment points into `arena`, alive until the end of the test.
            unsafe {
                io.set_iovs(&iovs);
                io.set_cmp_iovs(&cmp);
            }
            c.submit(io);
            assert_eq!(common::done_count(), 0, "{what}: completed inside submit");
        });
        run_until(&mut h, what, || common::done_count() == 1);
        let done = take_done();
        assert_eq!(done[0].status, IoStatus::Invalid, "{what}");
        assert_eq!(done[0].tag, i as u64);
        assert_eq!(
            state.submits.load(Ordering::SeqCst),
            0,
            "{what} reached the backend"
        );
    }
    // Zero-length flush is valid; so is a well-formed read on the read-only channel.
    h.on(0, || {
        common::submit_plain(&ch, 100, |io| {
            io.prep_flush(0, 0, common::record);
        });
        common::read_at(&ch_ro, &arena, 63, 1, &[], 101);
    });
    run_until(&mut h, "valid I/O", || common::done_count() == 2);
    assert!(take_done().iter().all(|d| d.status == IoStatus::Success));
    // Only accepted I/O is counted in the statistics.
    let total = std::sync::Arc::new(std::sync::Mutex::new(None));
    let t2 = total.clone();
    h.on(0, move || {
        ferrite_bdev::collect_iostat(&b, move |t, _| *t2.lock().unwrap() = Some(t))
    });
    let tt = total.clone();
    run_until(&mut h, "iostat", || tt.lock().unwrap().is_some());
    let t = total.lock().unwrap().unwrap();
    assert_eq!(
        (t.read.ops, t.write.ops, t.other.ops, t.failed),
        (1, 0, 1, 0)
    );
    h.on(0, || drop(ch));
    h.on(0, || drop(ch_ro));
    drop((d, ro));
    h.on(0, || {
        ferrite_bdev::unregister("VaInv", None, |r| r.unwrap())
    });
    h.run_until_idle();
}

#[test]
fn reset_waits_for_in_flight_io_on_every_thread() {
    let mut h = Harness::new(2, 72);
    let cfg = TestCfg {
        supported: vec![IoType::Read, IoType::Write, IoType::Reset],
        ..Default::default()
    };
    let (_, state) = h.on(0, || register_test("VaReset", BS as u32, 64, cfg));
    let d = h.on(0, || Desc::open("VaReset", true, |_| {}).unwrap());
    let ch0 = h.on(0, || d.channel().unwrap());
    let ch1 = h.on(1, || d.channel().unwrap());
    let arena = Arena::default();
    state.hold.store(true, Ordering::SeqCst);
    // Two writes held on thread 1.
    h.on(1, || {
        common::write_at(&ch1, &arena, 1, vec![1; BS], &[], 1);
        common::write_at(&ch1, &arena, 2, vec![2; BS], &[], 2);
    });
    let st = state.clone();
    run_until(&mut h, "held", || st.held_count() == 2);
    // Reset from thread 0.
    h.on(0, || {
        common::submit_plain(&ch0, 10, |io| {
            io.prep_reset(common::record);
        })
    });
    for _ in 0..200 {
        h.poll_all();
    }
    assert_eq!(common::done_count(), 0, "reset finished with I/O in flight");
    // New I/O during the reset waits (it does not reach the backend).
    state.hold.store(false, Ordering::SeqCst);
    let before = state.submits.load(Ordering::SeqCst);
    h.on(0, || common::write_at(&ch0, &arena, 3, vec![3; BS], &[], 3));
    h.on(1, || common::read_at(&ch1, &arena, 1, 1, &[], 4));
    for _ in 0..50 {
        h.poll_all();
    }
    assert_eq!(state.submits.load(Ordering::SeqCst), before);
    assert_eq!(common::done_count(), 0);
    // Release: the writes complete, then the reset (which reaches the backend only now), then
    // the I/O that waited.
    let st = state.clone();
    h.on(1, || st.release_here(|_| IoStatus::Success));
    run_until(&mut h, "all", || common::done_count() == 5);
    let order: Vec<u64> = take_done()
        .iter()
        .map(|d| {
            assert_eq!(d.status, IoStatus::Success, "{d:?}");
            d.tag
        })
        .collect();
    let pos = |t: u64| order.iter().position(|x| *x == t).unwrap();
    assert!(pos(1) < pos(10) && pos(2) < pos(10), "{order:?}");
    assert!(pos(10) < pos(3) && pos(10) < pos(4), "{order:?}");
    let ops: Vec<IoType> = state.ops().iter().map(|o| o.t).collect();
    assert_eq!(
        &ops[..3],
        &[IoType::Write, IoType::Write, IoType::Reset],
        "{ops:?}"
    );
    assert_eq!(ops.len(), 5);
    h.on(0, || drop(ch0));
    h.on(1, || drop(ch1));
    drop(d);
    h.on(0, || {
        ferrite_bdev::unregister("VaReset", None, |r| r.unwrap())
    });
    h.run_until_idle();
}

#[test]
fn reset_completes_with_io_parked_for_nomem() {
    let mut h = Harness::new(1, 73);
    let (_, state) = h.on(0, || {
        register_test("VaResetNm", BS as u32, 64, TestCfg::default())
    });
    state.nomem_left.store(5, Ordering::SeqCst);
    let d = h.on(0, || Desc::open("VaResetNm", true, |_| {}).unwrap());
    let ch = h.on(0, || d.channel().unwrap());
    let arena = Arena::default();
    h.on(0, || common::write_at(&ch, &arena, 1, vec![1; BS], &[], 1));
    h.poll_all();
    h.on(0, || {
        common::submit_plain(&ch, 2, |io| {
            io.prep_reset(common::record);
        })
    });
    run_until(&mut h, "write and reset", || common::done_count() == 2);
    let done = take_done();
    assert!(
        done.iter().all(|d| d.status == IoStatus::Success),
        "{done:?}"
    );
    assert_eq!(done[0].tag, 1, "the reset drained the parked write first");
    h.on(0, || drop(ch));
    drop(d);
    h.on(0, || {
        ferrite_bdev::unregister("VaResetNm", None, |r| r.unwrap())
    });
    h.run_until_idle();
}

#[test]
fn abort_of_io_parked_for_nomem() {
    let mut h = Harness::new(1, 74);
    let (_, state) = h.on(0, || {
        register_test("VaAbort", BS as u32, 64, TestCfg::default())
    });
    state.nomem_left.store(usize::MAX, Ordering::SeqCst);
    let d = h.on(0, || Desc::open("VaAbort", true, |_| {}).unwrap());
    let ch = h.on(0, || d.channel().unwrap());
    let arena = Arena::default();
    h.on(0, || {
        common::write_at(&ch, &arena, 1, vec![1; BS], &[], 42);
        common::write_at(&ch, &arena, 2, vec![2; BS], &[], 7);
        common::write_at(&ch, &arena, 3, vec![3; BS], &[], 42);
    });
    for _ in 0..5 {
        h.poll_all();
    }
    assert_eq!(common::done_count(), 0);
    assert!(state.submits.load(Ordering::SeqCst) >= 3);
    // Abort tag 42: both of its I/O complete Aborted, the abort itself succeeds.
    h.on(0, || {
        common::submit_plain(&ch, 1000, |io| {
            io.prep_abort(42, common::record);
        })
    });
    // Abort of a tag nobody uses fails.
    h.on(0, || {
        common::submit_plain(&ch, 1001, |io| {
            io.prep_abort(99, common::record);
        })
    });
    run_until(&mut h, "aborts", || common::done_count() == 4);
    let done = take_done();
    let st = |tag: u64| {
        done.iter()
            .filter(|d| d.tag == tag)
            .map(|d| d.status)
            .collect::<Vec<_>>()
    };
    assert_eq!(st(42), vec![IoStatus::Aborted, IoStatus::Aborted]);
    assert_eq!(st(1000), vec![IoStatus::Success]);
    assert_eq!(st(1001), vec![IoStatus::Failed]);
    // The other one goes through once resources return.
    state.nomem_left.store(0, Ordering::SeqCst);
    run_until(&mut h, "tag 7", || common::done_count() == 1);
    assert_eq!(take_done()[0].status, IoStatus::Success);
    assert_eq!(state.ram_blocks(2, 1), vec![2; BS]);
    assert_eq!(
        state.ram_blocks(1, 1),
        vec![0; BS],
        "an aborted write was applied"
    );
    h.run_until_idle();
    assert_eq!(h.on(0, || ch.inflight()), 0);
    h.on(0, || drop(ch));
    drop(d);
    h.on(0, || {
        ferrite_bdev::unregister("VaAbort", None, |r| r.unwrap())
    });
    h.run_until_idle();
}

#[test]
fn auto_buffer_read_larger_than_any_pool_buffer_fails() {
    let mut h = Harness::new(1, 75);
    let (_, state) = h.on(0, || {
        register_test("VaBig", BS as u32, 2048, TestCfg::default())
    });
    let d = h.on(0, || Desc::open("VaBig", false, |_| {}).unwrap());
    let ch = h.on(0, || d.channel().unwrap());
    let large = ferrite_bdev::buf::stats().unwrap().large_size as u64;
    let n = large / BS as u64 + 1;
    h.on(0, || common::read_auto(&ch, 0, n, 1));
    // The largest size that fits still works.
    h.on(0, || common::read_auto(&ch, 0, n - 1, 2));
    run_until(&mut h, "reads", || common::done_count() == 2);
    let done = take_done();
    let big = done.iter().find(|d| d.tag == 1).unwrap();
    assert_eq!(
        big.status,
        IoStatus::Failed,
        "no buffer can hold it: {big:?}"
    );
    assert!(big.data.is_none());
    let ok = done.iter().find(|d| d.tag == 2).unwrap();
    assert_eq!(ok.status, IoStatus::Success);
    assert_eq!(ok.data.as_ref().map(Vec::len), Some((n - 1) as usize * BS));
    assert_eq!(state.ops().len(), 1, "the failed read reached the backend");
    h.on(0, || drop(ch));
    drop(d);
    h.on(0, || {
        ferrite_bdev::unregister("VaBig", None, |r| r.unwrap())
    });
    h.run_until_idle();
}

/// The drain's count stays right across a freeze whose parked I/O is aborted: I/O parked by
/// the freeze is counted apart (a drain does not wait for it) until the thaw dispatches it or
/// an abort completes it; a later reset must still wait for I/O in flight.
#[test]
fn reset_after_aborting_io_parked_by_a_freeze_still_drains() {
    let mut h = Harness::new(1, 75);
    let cfg = TestCfg {
        supported: vec![IoType::Read, IoType::Write, IoType::Reset],
        ..Default::default()
    };
    let (_, state) = h.on(0, || register_test("VaReAb", BS as u32, 64, cfg));
    let d = h.on(0, || Desc::open("VaReAb", true, |_| {}).unwrap());
    let ch = h.on(0, || d.channel().unwrap());
    let arena = Arena::default();
    // A held write, then a reset: the reset freezes the channel and waits for the write.
    state.hold.store(true, Ordering::SeqCst);
    h.on(0, || common::write_at(&ch, &arena, 1, vec![1; BS], &[], 1));
    let st = state.clone();
    run_until(&mut h, "held", || st.held_count() == 1);
    h.on(0, || {
        common::submit_plain(&ch, 10, |io| {
            io.prep_reset(common::record);
        })
    });
    for _ in 0..200 {
        h.poll_all();
    }
    assert_eq!(common::done_count(), 0, "the first reset did not wait");
    // Two writes parked by the freeze; one of them aborted while parked.
    h.on(0, || common::write_at(&ch, &arena, 2, vec![2; BS], &[], 42));
    h.on(0, || common::write_at(&ch, &arena, 3, vec![3; BS], &[], 43));
    h.on(0, || {
        common::submit_plain(&ch, 1000, |io| {
            io.prep_abort(42, common::record);
        })
    });
    run_until(&mut h, "abort", || common::done_count() == 2);
    // Release the held write: the drain ends, the reset completes, the thaw dispatches the
    // parked write that is left (held in turn), then release that.
    let st = state.clone();
    h.on(0, || st.release_here(|_| IoStatus::Success));
    let st = state.clone();
    run_until(&mut h, "reset done, parked write held", || {
        common::done_count() == 4 && st.held_count() == 1
    });
    state.hold.store(false, Ordering::SeqCst);
    let st = state.clone();
    h.on(0, || st.release_here(|_| IoStatus::Success));
    run_until(&mut h, "first reset", || common::done_count() == 5);
    let done = take_done();
    let status = |tag: u64| done.iter().find(|d| d.tag == tag).map(|d| d.status);
    assert_eq!(status(42), Some(IoStatus::Aborted), "{done:?}");
    assert_eq!(status(1000), Some(IoStatus::Success), "{done:?}");
    for tag in [1, 10, 43] {
        assert_eq!(status(tag), Some(IoStatus::Success), "{tag}: {done:?}");
    }
    // Again: a held write and a reset, which must wait for it.
    state.hold.store(true, Ordering::SeqCst);
    h.on(0, || common::write_at(&ch, &arena, 4, vec![4; BS], &[], 4));
    let st = state.clone();
    run_until(&mut h, "held again", || st.held_count() == 1);
    h.on(0, || {
        common::submit_plain(&ch, 11, |io| {
            io.prep_reset(common::record);
        })
    });
    for _ in 0..200 {
        h.poll_all();
    }
    assert_eq!(common::done_count(), 0, "the second reset did not wait");
    state.hold.store(false, Ordering::SeqCst);
    let st = state.clone();
    h.on(0, || st.release_here(|_| IoStatus::Success));
    run_until(&mut h, "second reset", || common::done_count() == 2);
    let order: Vec<u64> = take_done().iter().map(|d| d.tag).collect();
    assert_eq!(order, vec![4, 11]);
    h.on(0, || drop(ch));
    drop(d);
    h.on(0, || {
        ferrite_bdev::unregister("VaReAb", None, |r| r.unwrap())
    });
    h.run_until_idle();
}
