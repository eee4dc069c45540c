//! Splitting on the optimal I/O boundary: the pieces a backend receives, data integrity with
//! multi-segment buffers that cross boundaries, reads with supplied buffers, and the I/O the
//! bdev layer itself generates (emulation) respecting the boundary too.
// Helpers outside #[test] functions unwrap too: this is test code.
#![allow(clippy::unwrap_used)]

mod common;

use common::{register_test, run_until, take_done, Arena, TestCfg};
use ferrite_bdev::{Desc, IoStatus, IoType};
use ferrite_reactor::harness::Harness;

const BS: usize = 512;

#[test]
fn backend_receives_pieces_split_at_the_boundary() {
    let mut h = Harness::new(1, 41);
    let cfg = TestCfg {
        supported: vec![IoType::Read, IoType::Write, IoType::Unmap, IoType::Flush],
        boundary: 8,
        ..Default::default()
    };
    let (b, state) = h.on(0, || register_test("SpRec", BS as u32, 64, cfg));
    assert_eq!(b.optimal_io_boundary(), 8);
    assert!(b.split_on_optimal_io_boundary());
    let d = h.on(0, || Desc::open("SpRec", true, |_| {}).unwrap());
    let ch = h.on(0, || d.channel().unwrap());
    let arena = Arena::default();
    // (type, offset, blocks, expected pieces)
    type Case = (IoType, u64, u64, Vec<(u64, u64)>);
    let cases: Vec<Case> = vec![
        (IoType::Write, 5, 10, vec![(5, 3), (8, 7)]),
        (IoType::Write, 0, 24, vec![(0, 8), (8, 8), (16, 8)]),
        (IoType::Write, 8, 8, vec![(8, 8)]),
        (IoType::Read, 7, 2, vec![(7, 1), (8, 1)]),
        (IoType::Read, 1, 30, vec![(1, 7), (8, 8), (16, 8), (24, 7)]),
        (IoType::Read, 40, 3, vec![(40, 3)]),
        (IoType::Unmap, 62, 2, vec![(62, 2)]),
        (IoType::Unmap, 3, 20, vec![(3, 5), (8, 8), (16, 7)]),
    ];
    for (i, (t, off, n, want)) in cases.iter().enumerate() {
        state.log.lock().unwrap().clear();
        let tag = i as u64;
        h.on(0, || match t {
            IoType::Write => {
                common::write_at(&ch, &arena, *off, vec![1; *n as usize * BS], &[], tag)
            }
            IoType::Read => {
                common::read_at(&ch, &arena, *off, *n, &[], tag);
            }
            _ => common::submit_plain(&ch, tag, |io| {
                io.prep_unmap(*off, *n, common::record);
            }),
        });
        run_until(&mut h, "completion", || common::done_count() == 1);
        let done = take_done();
        assert_eq!(done[0].status, IoStatus::Success);
        // The submitter sees its own request, not the pieces.
        assert_eq!(
            (done[0].offset, done[0].num, done[0].io_type),
            (*off, *n, *t)
        );
        let got: Vec<(u64, u64)> = state
            .ops()
            .iter()
            .map(|o| {
                assert_eq!(o.t, *t);
                (o.off, o.n)
            })
            .collect();
        assert_eq!(&got, want, "case {i}: {t:?} {off}+{n}");
        for (o, n) in &got {
            assert_eq!(o / 8, (o + n - 1) / 8, "piece {o}+{n} crosses a boundary");
        }
    }
    // Statistics count the parent once.
    let total = std::sync::Arc::new(std::sync::Mutex::new(None));
    let t2 = total.clone();
    let b2 = b.clone();
    h.on(0, move || {
        ferrite_bdev::collect_iostat(&b2, move |t, _| *t2.lock().unwrap() = Some(t))
    });
    let tt = total.clone();
    run_until(&mut h, "iostat", || tt.lock().unwrap().is_some());
    let t = total.lock().unwrap().unwrap();
    assert_eq!((t.write.ops, t.read.ops, t.unmap.ops), (3, 3, 2));
    assert_eq!(t.write.bytes, (10 + 24 + 8) * BS as u64);
    h.on(0, || drop(ch));
    drop(d);
    h.on(0, || {
        ferrite_bdev::unregister("SpRec", None, |r| r.unwrap())
    });
    h.run_until_idle();
}

#[test]
fn multi_segment_data_crossing_boundaries_reads_back_identically() {
    for seed in 0..4u64 {
        let name = format!("SpMal{seed}");
        let mut h = Harness::new(2, 42 + seed);
        h.on(0, || common::malloc(&name, 128, BS as u32, 8));
        let b = ferrite_bdev::lookup(&name).unwrap();
        assert_eq!(b.optimal_io_boundary(), 8);
        assert!(b.split_on_optimal_io_boundary());
        let d = h.on(0, || Desc::open(&name, true, |_| {}).unwrap());
        let ch0 = h.on(0, || d.channel().unwrap());
        let ch1 = h.on(1, || d.channel().unwrap());
        let arena = Arena::default();
        // 3..23 crosses 8 and 16; segments of odd lengths that straddle the boundaries.
        let data = common::noise(seed, 20 * BS);
        h.on(0, || {
            common::write_at(&ch0, &arena, 3, data.clone(), &[100, 2000, 7, 3000, 1], 1)
        });
        run_until(&mut h, "write", || common::done_count() == 1);
        assert_eq!(take_done()[0].status, IoStatus::Success);
        // Read back on the other thread with a different segment layout.
        let idx = h.on(1, || {
            common::read_at(&ch1, &arena, 3, 20, &[513, 511, 4096, 9], 2)
        });
        // And with no buffer at all, across the same boundaries.
        h.on(1, || common::read_auto(&ch1, 3, 20, 3));
        // A read that starts and ends mid-way, inside the written range.
        let idx2 = h.on(0, || common::read_at(&ch0, &arena, 7, 10, &[1, 1, 1], 4));
        run_until(&mut h, "reads", || common::done_count() == 3);
        let done = take_done();
        assert!(
            done.iter().all(|d| d.status == IoStatus::Success),
            "{done:?}"
        );
        assert_eq!(arena.get(idx), data);
        let auto = done.iter().find(|d| d.tag == 3).unwrap();
        assert_eq!(
            auto.data.as_deref(),
            Some(&data[..]),
            "supplied-buffer read"
        );
        assert_eq!(arena.get(idx2), data[4 * BS..14 * BS].to_vec());
        h.on(0, || drop(ch0));
        h.on(1, || drop(ch1));
        drop(d);
        let n = name.clone();
        h.on(0, move || ferrite_malloc::delete(&n, |r| r.unwrap()));
        h.run_until_idle();
        assert!(ferrite_bdev::lookup(&name).is_none());
    }
}

/// I/O that the bdev layer generates for a backend (emulated write_zeroes and compare) goes
/// through the same boundary rule as the submitter's own I/O.
#[test]
fn emulated_io_is_split_on_the_boundary_too() {
    let mut h = Harness::new(1, 43);
    let cfg = TestCfg {
        supported: vec![IoType::Read, IoType::Write],
        boundary: 8,
        ..Default::default()
    };
    let (b, state) = h.on(0, || register_test("SpEmu", BS as u32, 64, cfg));
    assert!(b.io_type_supported(IoType::WriteZeroes));
    state.fill_ram(0, 64, 0xee);
    let d = h.on(0, || Desc::open("SpEmu", true, |_| {}).unwrap());
    let ch = h.on(0, || d.channel().unwrap());
    h.on(0, || {
        common::submit_plain(&ch, 1, |io| {
            io.prep_write_zeroes(5, 20, common::record);
        })
    });
    run_until(&mut h, "write_zeroes", || common::done_count() == 1);
    assert_eq!(take_done()[0].status, IoStatus::Success);
    let ops = state.ops();
    assert!(ops.iter().all(|o| o.t == IoType::Write), "{ops:?}");
    for o in &ops {
        assert_eq!(
            o.off / 8,
            (o.off + o.n - 1) / 8,
            "piece crosses a boundary: {o:?}"
        );
    }
    assert_eq!(ops.iter().map(|o| o.n).sum::<u64>(), 20);
    assert!(state.ram_blocks(5, 20).iter().all(|b| *b == 0));
    assert!(state.ram_blocks(0, 5).iter().all(|b| *b == 0xee));
    assert!(state.ram_blocks(25, 39).iter().all(|b| *b == 0xee));
    // Emulated compare reads.
    state.log.lock().unwrap().clear();
    let arena = Arena::default();
    let (_, iov) = arena.add(vec![0; 20 * BS]);
    let mut io = h.on(0, || ch.alloc_io().unwrap());
    io.prep_compare(5, 20, common::record);
    // SAFETY: `arena` outlives the I/O (it is dropped at the end of the test, after completion).
    unsafe { io.set_iovs(&[iov]) };
    h.on(0, || ch.submit(io));
    run_until(&mut h, "compare", || common::done_count() == 1);
    assert_eq!(take_done()[0].status, IoStatus::Success);
    let ops = state.ops();
    assert!(ops.iter().all(|o| o.t == IoType::Read), "{ops:?}");
    for o in &ops {
        assert_eq!(
            o.off / 8,
            (o.off + o.n - 1) / 8,
            "piece crosses a boundary: {o:?}"
        );
    }
    h.on(0, || drop(ch));
    drop(d);
    h.on(0, || {
        ferrite_bdev::unregister("SpEmu", None, |r| r.unwrap())
    });
    h.run_until_idle();
}
