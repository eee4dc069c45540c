//! Back-pressure: a tiny data buffer pool under 500 buffer-less reads, and a backend that
//! answers NoMem. Every test of this binary configures the same pool first (the pool is
//! process-global and fixed once it is built).
// Helpers outside #[test] functions unwrap too: this is test code.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, Once};

use common::{register_test, run_until, take_done, Arena, TestCfg};
use ferrite_bdev::buf::{self, BufPoolConfig};
use ferrite_bdev::{Desc, IoStatus, IoType};
use ferrite_reactor::harness::Harness;

fn small_pool() -> BufPoolConfig {
    BufPoolConfig {
        small_count: 4,
        large_count: 2,
        ..Default::default()
    }
}

/// Builds the tiny pool once for the whole process and serializes this binary's tests: the
/// pool is process-global, and under `cargo test` (one process, a thread per test) a test
/// counting free buffers would otherwise see another test's. Hold the guard for the test.
fn configure() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    static BUILT: Once = Once::new();
    let guard = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    BUILT.call_once(|| {
        // Until the pool is built the sizes may change (the last call wins).
        buf::configure(BufPoolConfig::default()).unwrap();
        buf::configure(small_pool()).unwrap();
        assert_eq!(buf::config(), small_pool());
        buf::init().unwrap();
    });
    // Once built, the same sizes are accepted and others refused.
    buf::configure(small_pool()).unwrap();
    let e = buf::configure(BufPoolConfig::default()).unwrap_err();
    assert_eq!(e.kind(), ferrite_bdev::ErrorKind::Busy);
    assert_eq!(buf::config(), small_pool());
    guard
}

#[test]
fn five_hundred_reads_on_a_tiny_pool_all_complete() {
    let _serial = configure();
    let mut h = Harness::new(1, 51);
    h.on(0, || common::malloc("BpMal", 1024, 512, 0));
    let d = h.on(0, || Desc::open("BpMal", true, |_| {}).unwrap());
    let ch = h.on(0, || d.channel().unwrap());
    // Fill the bdev with known data (from test memory, not the pool).
    let arena = Arena::default();
    let data = common::noise(5, 1024 * 512);
    h.on(0, || common::write_at(&ch, &arena, 0, data.clone(), &[], 0));
    run_until(&mut h, "fill", || common::done_count() == 1);
    assert_eq!(take_done()[0].status, IoStatus::Success);
    let before = buf::stats().unwrap();
    assert_eq!((before.small_total, before.large_total), (4, 2));
    // 500 reads at once, without buffers: small (1..=16 blocks) and large (17..=64 blocks).
    let mut reqs = Vec::new();
    h.on(0, || {
        for i in 0..500u64 {
            let n = if i % 5 == 4 { 17 + i % 48 } else { 1 + i % 16 };
            let off = (i * 37) % (1024 - n);
            common::read_auto(&ch, off, n, i);
            reqs.push((off, n));
        }
        assert_eq!(common::done_count(), 0, "completed inside submit");
    });
    run_until(&mut h, "500 reads", || common::done_count() == 500);
    let done = take_done();
    let mut seen = vec![false; 500];
    for d in &done {
        assert_eq!(d.status, IoStatus::Success, "{d:?}");
        let (off, n) = reqs[d.tag as usize];
        assert_eq!((d.offset, d.num), (off, n));
        let got = d.data.as_ref().expect("a supplied buffer");
        assert_eq!(
            got[..],
            data[off as usize * 512..(off + n) as usize * 512],
            "read {} returned wrong data",
            d.tag
        );
        assert!(!seen[d.tag as usize], "completed twice");
        seen[d.tag as usize] = true;
    }
    let after = buf::stats().unwrap();
    assert!(
        after.waits > before.waits,
        "no read ever waited for a buffer: {after:?}"
    );
    assert!(after.gets >= before.gets + 500);
    h.on(0, || drop(ch));
    drop(d);
    h.on(0, || ferrite_malloc::delete("BpMal", |r| r.unwrap()));
    h.run_until_idle();
}

#[test]
fn nomem_from_the_backend_is_retried_until_success() {
    let _serial = configure();
    let mut h = Harness::new(2, 52);
    const N: usize = 40;
    const IOS: u64 = 60;
    let (b, state) = h.on(0, || register_test("BpNoMem", 512, 256, TestCfg::default()));
    state.nomem_left.store(N, Ordering::SeqCst);
    let d = h.on(0, || Desc::open("BpNoMem", true, |_| {}).unwrap());
    let ch0 = h.on(0, || d.channel().unwrap());
    let ch1 = h.on(1, || d.channel().unwrap());
    let arena = Arena::default();
    for (t, ch) in [(0usize, &ch0), (1, &ch1)] {
        h.on(t, || {
            for i in 0..IOS / 2 {
                let tag = t as u64 * 1000 + i;
                let off = t as u64 * 100 + i;
                common::write_at(ch, &arena, off, common::pattern(tag as u32, 512), &[], tag);
            }
        });
    }
    run_until(&mut h, "all writes", || {
        common::done_count() == IOS as usize
    });
    let done = take_done();
    assert!(
        done.iter().all(|d| d.status == IoStatus::Success),
        "{done:?}"
    );
    let mut tags: Vec<u64> = done.iter().map(|d| d.tag).collect();
    tags.sort_unstable();
    tags.dedup();
    assert_eq!(tags.len(), IOS as usize, "an I/O completed twice or never");
    assert_eq!(state.nomem_left.load(Ordering::SeqCst), 0);
    assert_eq!(
        state.submits.load(Ordering::SeqCst),
        IOS as usize + N,
        "each NoMem is one extra submission"
    );
    // Data landed where it should.
    for t in [0u64, 1] {
        for i in 0..IOS / 2 {
            let tag = t * 1000 + i;
            assert_eq!(
                state.ram_blocks(t * 100 + i, 1),
                common::pattern(tag as u32, 512)
            );
        }
    }
    // Retries are counted, the callers saw no failure.
    let total = Arc::new(Mutex::new(None));
    let t2 = total.clone();
    let b2 = b.clone();
    h.on(0, move || {
        ferrite_bdev::collect_iostat(&b2, move |t, _| *t2.lock().unwrap() = Some(t))
    });
    let tt = total.clone();
    run_until(&mut h, "iostat", || tt.lock().unwrap().is_some());
    let t = total.lock().unwrap().unwrap();
    assert_eq!(t.nomem_retries, N as u64);
    assert_eq!(t.failed, 0);
    assert_eq!(t.write.ops, IOS);
    // The run terminates: nothing left to do.
    h.run_until_idle();
    assert!(b.io_type_supported(IoType::Write));
    h.on(0, || drop(ch0));
    h.on(1, || drop(ch1));
    drop(d);
    h.on(0, || {
        ferrite_bdev::unregister("BpNoMem", None, |r| r.unwrap())
    });
    h.run_until_idle();
}

/// Emulated compare-and-write (which holds the bdev quiesced while it reads, compares and
/// writes) competing with reads for the same tiny buffer pool.
#[test]
fn compare_and_write_with_the_pool_exhausted() {
    let _serial = configure();
    let mut h = Harness::new(2, 53);
    h.on(0, || common::malloc("BpCaw", 256, 512, 0));
    let d = h.on(0, || Desc::open("BpCaw", true, |_| {}).unwrap());
    let ch0 = h.on(0, || d.channel().unwrap());
    let ch1 = h.on(1, || d.channel().unwrap());
    let arena = Arena::default();
    let mut expected = 0;
    for round in 0..20u32 {
        // Reads that take every buffer, on both threads, around C&W on thread 0.
        h.on(1, || {
            for i in 0..10 {
                common::read_auto(&ch1, i, 8, 1);
            }
        });
        h.on(0, || {
            for i in 0..10 {
                common::read_auto(&ch0, i, 16, 1);
            }
            let (_, w) = arena.add(common::pattern(round + 1, 1024));
            let (_, c) = arena.add(common::pattern(round, 1024));
            let mut io = ch0.alloc_io().unwrap();
            io.prep_compare_and_write(100, 2, common::record);
            io.user[0] = 1000 + u64::from(round);
            // SAFETY: the arena outlives the I/O.
            unsafe {
                io.set_iovs(&[w]);
                io.set_cmp_iovs(&[c]);
            }
            ch0.submit(io);
            for i in 0..10 {
                common::read_auto(&ch0, i, 1, 1);
            }
        });
        expected += 31;
        if round == 0 {
            // Start from the pattern the first C&W compares with.
            h.on(1, || {
                common::write_at(&ch1, &arena, 100, common::pattern(0, 1024), &[], 2)
            });
            expected += 1;
        }
        let e = expected;
        run_until(&mut h, "round", || common::done_count() == e);
    }
    let done = take_done();
    let caw: Vec<IoStatus> = done
        .iter()
        .filter(|d| d.tag >= 1000)
        .map(|d| d.status)
        .collect();
    assert_eq!(caw.len(), 20);
    assert!(done
        .iter()
        .filter(|d| d.tag < 1000)
        .all(|d| d.status == IoStatus::Success));
    assert!(
        caw.iter()
            .all(|s| matches!(s, IoStatus::Success | IoStatus::Miscompare)),
        "{caw:?}"
    );
    h.on(0, || drop(ch0));
    h.on(1, || drop(ch1));
    drop(d);
    h.on(0, || ferrite_malloc::delete("BpCaw", |r| r.unwrap()));
    h.run_until_idle();
}

/// A compare-and-write that finds no buffer for its compare read while it holds the bdev
/// quiesced waits (parked for NoMem, not abortable) and resumes once buffers return.
#[test]
fn compare_and_write_waiting_for_a_buffer_while_quiesced() {
    let _serial = configure();
    let mut h = Harness::new(2, 54);
    h.on(0, || common::malloc("BpCawHeld", 256, 512, 0));
    let b = ferrite_bdev::lookup("BpCawHeld").unwrap();
    let d = h.on(0, || Desc::open("BpCawHeld", true, |_| {}).unwrap());
    let ch0 = h.on(0, || d.channel().unwrap());
    let ch1 = h.on(1, || d.channel().unwrap());
    let arena = Arena::default();
    // 32 KiB: a large buffer. Take every large buffer (other tests return theirs quickly).
    const LEN: usize = 32 * 1024;
    let mut held = Vec::new();
    for _ in 0..common::ROUNDS {
        if held.len() == 2 {
            break;
        }
        match ferrite_bdev::DmaBuf::get(LEN).unwrap() {
            Some(b) => held.push(b),
            None => {
                h.poll_all();
            }
        }
    }
    assert_eq!(held.len(), 2, "could not take the large buffers");
    h.on(0, || {
        let (_, w) = arena.add(common::pattern(9, LEN));
        let (_, c) = arena.add(vec![0; LEN]);
        let mut io = ch0.alloc_io().unwrap();
        io.prep_compare_and_write(0, 64, common::record);
        io.user[0] = 5;
        // SAFETY: the arena outlives the I/O.
        unsafe {
            io.set_iovs(&[w]);
            io.set_cmp_iovs(&[c]);
        }
        ch0.submit(io);
    });
    // Once the quiesce has frozen every channel, a write on the other thread waits.
    for _ in 0..10 {
        h.poll_all();
    }
    h.on(1, || {
        common::write_at(&ch1, &arena, 200, vec![1; 512], &[], 6)
    });
    for _ in 0..50 {
        h.poll_all();
    }
    assert_eq!(common::done_count(), 0);
    // It cannot be aborted while it holds the bdev; the write parked behind it can.
    h.on(0, || {
        common::submit_plain(&ch0, 7, |io| {
            io.prep_abort(5, common::record);
        })
    });
    run_until(&mut h, "abort", || common::done_count() == 1);
    assert_eq!(take_done()[0].status, IoStatus::Failed);
    h.on(1, || {
        common::write_at(&ch1, &arena, 201, vec![2; 512], &[], 8)
    });
    h.on(1, || {
        common::submit_plain(&ch1, 9, |io| {
            io.prep_abort(8, common::record);
        })
    });
    run_until(&mut h, "abort of the parked write", || {
        common::done_count() == 2
    });
    let done = take_done();
    let st = |tag: u64| done.iter().find(|d| d.tag == tag).unwrap().status;
    assert_eq!((st(8), st(9)), (IoStatus::Aborted, IoStatus::Success));
    drop(held);
    run_until(&mut h, "C&W and write", || common::done_count() == 2);
    let done = take_done();
    assert!(
        done.iter().all(|d| d.status == IoStatus::Success),
        "{done:?}"
    );
    assert_eq!(done[0].tag, 5, "the write waited for the C&W");
    let total = Arc::new(Mutex::new(None));
    let t2 = total.clone();
    h.on(0, move || {
        ferrite_bdev::collect_iostat(&b, move |t, _| *t2.lock().unwrap() = Some(t))
    });
    let tt = total.clone();
    run_until(&mut h, "iostat", || tt.lock().unwrap().is_some());
    assert!(total.lock().unwrap().unwrap().nomem_retries > 0);
    // The bdev is usable afterwards, and holds the C&W's data.
    let i = h.on(1, || common::read_at(&ch1, &arena, 0, 64, &[], 10));
    run_until(&mut h, "read", || common::done_count() == 1);
    assert_eq!(take_done()[0].status, IoStatus::Success);
    assert_eq!(arena.get(i), common::pattern(9, LEN));
    h.on(0, || drop(ch0));
    h.on(1, || drop(ch1));
    drop(d);
    h.on(0, || ferrite_malloc::delete("BpCawHeld", |r| r.unwrap()));
    h.run_until_idle();
}
