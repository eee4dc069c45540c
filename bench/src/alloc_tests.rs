//! Proves the hot-path functions do not allocate, with a counting global allocator
//! (test builds only). Counting is per thread, so tests running in parallel do not
//! disturb each other.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use crate::offsets::{OffsetGen, RandomMap, Sequential, Uniform, Zipf};
use crate::opmix::OpMix;
use crate::stats::JobStats;
use crate::verify;
use crate::workload::Workload;

struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn bump() {
    // `try_with` fails only while the thread-local is being destroyed; not counting
    // then is harmless.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees carry over; the counter update neither allocates nor unwinds.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: same contract as our caller's (`layout` has non-zero size).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (via this allocator) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        // SAFETY: `ptr`/`layout` come from this allocator, which delegates to `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn allocations_during(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn the_counter_sees_allocations() {
    let n = allocations_during(|| {
        let v: Vec<u8> = std::hint::black_box(Vec::with_capacity(100));
        assert!(v.capacity() >= 100);
    });
    assert!(n >= 1);
}

#[test]
fn offset_generators_do_not_allocate() {
    let mut gens = [
        OffsetGen::Sequential(Sequential::new(1000)),
        OffsetGen::Uniform(Uniform::new(1000, 1)),
        OffsetGen::RandomMap(RandomMap::new(1000, 1)),
        OffsetGen::Zipf(Zipf::new(1000, 1.1, 1)),
    ];
    let n = allocations_during(|| {
        for g in &mut gens {
            for _ in 0..10_000 {
                std::hint::black_box(g.next());
            }
        }
    });
    assert_eq!(n, 0);
}

#[test]
fn in_flight_tracking_does_not_allocate() {
    let mut busy = crate::inflight::InFlight::new(128);
    let mut g = OffsetGen::Zipf(Zipf::new(1000, 1.2, 1));
    let n = allocations_during(|| {
        let mut ring = [0u64; 128];
        for i in 0..10_000usize {
            if i >= 128 {
                busy.remove(ring[i % 128]);
            }
            let s = g.next_free(&busy);
            assert!(busy.insert(s));
            ring[i % 128] = s;
        }
    });
    assert_eq!(n, 0);
}

#[test]
fn op_mix_does_not_allocate() {
    let mut m = OpMix::new(Workload::RandRw, 70, 1);
    let n = allocations_during(|| {
        for _ in 0..10_000 {
            std::hint::black_box(m.next());
        }
    });
    assert_eq!(n, 0);
}

#[test]
fn verify_does_not_allocate() {
    let mut buf = vec![0u8; 64 * 1024];
    let n = allocations_during(|| {
        verify::fill(&mut buf, 4096, 0x10000, 7, 3);
        assert!(verify::check(&buf, 4096, 0x10000, 7, 3).is_ok());
        buf[100] ^= 1;
        assert!(verify::check(&buf, 4096, 0x10000, 7, 3).is_err());
    });
    assert_eq!(n, 0);
}

#[test]
fn recording_does_not_allocate() {
    let mut s = JobStats::new(4).unwrap();
    let n = allocations_during(|| {
        for i in 0..100_000u64 {
            s.record(i * 37 % 5_000_000, 4096, i % 1000 != 0);
        }
        s.record(0, 1, true);
        s.record(u64::MAX, 1, true);
        s.record_timeout();
        s.mark_interval(1.0);
        s.mark_interval(2.0);
        std::hint::black_box(s.counters());
    });
    assert_eq!(n, 0);
}
