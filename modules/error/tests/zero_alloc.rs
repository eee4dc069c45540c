//! The hot-path rule for the error bdev: in steady state, I/O through error-on-null performs
//! no heap allocation — with nothing armed (the fast path) and with `corrupt_data` armed on
//! every read and write (the injection path: a compare-and-swap per I/O, the corruption of a
//! write before it goes down and of a read after it came back). A counting global allocator
//! counts allocations made on this test's OS thread while a queue-depth-64 workload runs.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Barrier};
use std::time::Duration;

use ferrite_bdev::testing::{check_counter, completed, failed, steady_state as run, Driver};
use ferrite_reactor::harness::Harness;

#[global_allocator]
static GLOBAL: ferrite_reactor::alloc_count::CountingAlloc =
    ferrite_reactor::alloc_count::CountingAlloc;

fn null(name: &str) {
    ferrite_null::create(&ferrite_null::NullOpts {
        name: name.into(),
        num_blocks: 1024,
        block_size: 512,
        uuid: None,
        md_size: 0,
    })
    .unwrap();
}

#[test]
fn steady_state_error_io_does_not_allocate() {
    check_counter();
    let mut h = Harness::new(1, 1);
    h.on(0, || {
        ferrite_bdev::register_module(Arc::new(ferrite_error::ErrorModule));
        null("ZNull0");
        null("ZNull1");
        ferrite_error::create(&ferrite_error::ErrorOpts {
            base_name: "ZNull0".into(),
            uuid: None,
        })
        .unwrap();
        ferrite_error::create(&ferrite_error::ErrorOpts {
            base_name: "ZNull1".into(),
            uuid: None,
        })
        .unwrap();
        ferrite_error::inject_error(
            "EE_ZNull1",
            &ferrite_error::InjectOpts {
                io_type: ferrite_error::InjectIoType::All,
                error_type: ferrite_error::ErrorType::CorruptData,
                num: u32::MAX,
                queue_depth: 0,
                corrupt_offset: 100,
                corrupt_value: 0x80,
            },
        )
        .unwrap();
    });
    let allocs = run("EE_ZNull0", 64, 0, 20_000, |_| {});
    assert_eq!(
        allocs, 0,
        "error-on-null (nothing armed) allocated {allocs} times in steady state"
    );
    let allocs = run("EE_ZNull1", 64, 0, 20_000, |_| {});
    assert_eq!(
        allocs, 0,
        "error-on-null (corrupt_data armed) allocated {allocs} times in steady state"
    );
    let s = h
        .on(0, || ferrite_error::injection_status("EE_ZNull1"))
        .unwrap();
    assert!(s[0].injected > 10_000 && s[1].injected > 1_000, "{s:?}");
    drop(h);
}

/// Back-pressure: while the backend answers NOMEM, the bdev layer parks the I/O and retries it
/// every poll; that loop must not allocate either. `nomem` is armed for a fixed number of I/O
/// that lasts through the warm-up into the measured window, then the I/O goes through.
///
/// The depth is above the default per-thread prefill (`bdev_io_cache_size` 256): when the
/// backend recovers, every parked I/O goes down at once, each taking a child, so parents and
/// children need twice the depth. With `bdev_io_cache_size` set to cover that, the recovery
/// burst takes them from the prefilled pool instead of allocating in the measured window.
#[test]
fn nomem_retries_do_not_allocate() {
    check_counter();
    ferrite_bdev::set_options(&ferrite_bdev::BdevOptions {
        bdev_io_pool_size: 65_535,
        bdev_io_cache_size: 2 * NOMEM_DEPTH as u32 + 64,
        ..ferrite_bdev::BdevOptions::default()
    })
    .unwrap();
    let mut h = Harness::new(1, 1);
    h.on(0, || {
        ferrite_bdev::register_module(Arc::new(ferrite_error::ErrorModule));
        null("ZNull2");
        ferrite_error::create(&ferrite_error::ErrorOpts {
            base_name: "ZNull2".into(),
            uuid: None,
        })
        .unwrap();
        ferrite_error::inject_error(
            "EE_ZNull2",
            &ferrite_error::InjectOpts {
                io_type: ferrite_error::InjectIoType::All,
                error_type: ferrite_error::ErrorType::Nomem,
                num: NOMEM_INJECTIONS,
                queue_depth: 0,
                corrupt_offset: 0,
                corrupt_value: 0,
            },
        )
        .unwrap();
    });
    let status = |h: &mut Harness| {
        h.on(0, || ferrite_error::injection_status("EE_ZNull2"))
            .unwrap()
    };
    let mut at_start = None;
    let allocs = run("EE_ZNull2", NOMEM_DEPTH, 0, 1_000, |h| {
        at_start = Some(status(h))
    });
    let at_start = at_start.unwrap();
    let at_end = status(&mut h);
    // Reads and writes each have their own count (`All` arms every type); the job alternates
    // writes and reads, so both run down together.
    let injected = |s: &[ferrite_error::SlotStatus]| s[0].injected + s[1].injected;
    assert!(
        at_start[0].remaining > 0 && injected(&at_start) < injected(&at_end),
        "the NOMEM phase did not reach into the measured window: {at_start:?} / {at_end:?}"
    );
    assert!(
        at_end[0].remaining == 0 && at_end[1].remaining == 0,
        "the NOMEM phase did not end inside the run: {at_end:?}"
    );
    assert_eq!(
        allocs, 0,
        "error-on-null answering NOMEM allocated {allocs} times in steady state"
    );
    drop(h);
}

/// Queue depth of the NOMEM test: above the default per-thread prefill of 256.
const NOMEM_DEPTH: usize = 320;

/// How many reads (and then writes) the nomem injection refuses. The parked reads, retried
/// every poll or two, take most of the read count in the 500-poll warm-up; the rest, then the
/// whole write count, go in the first part of the 1500 measured polls (the test asserts both:
/// the phase overlaps the window and ends inside it).
const NOMEM_INJECTIONS: u32 = 125_000;

/// The testing driver's counts are its own: two drivers running at once on two threads of this
/// process (as two tests of one binary under `cargo test`), one on an error bdev failing every
/// I/O, one on a clean null bdev, each count only their own I/O.
#[test]
fn drivers_on_two_threads_count_only_their_own_io() {
    let mut h = Harness::new(1, 1);
    h.on(0, || {
        ferrite_bdev::register_module(Arc::new(ferrite_error::ErrorModule));
        null("CNull0");
        null("CNull1");
        ferrite_error::create(&ferrite_error::ErrorOpts {
            base_name: "CNull1".into(),
            uuid: None,
        })
        .unwrap();
        ferrite_error::inject_error(
            "EE_CNull1",
            &ferrite_error::InjectOpts {
                io_type: ferrite_error::InjectIoType::All,
                error_type: ferrite_error::ErrorType::Failure,
                num: u32::MAX,
                queue_depth: 0,
                corrupt_offset: 0,
                corrupt_value: 0,
            },
        )
        .unwrap();
    });
    let barrier = Arc::new(Barrier::new(2));
    let spawn = |bdev: &'static str| {
        let b = barrier.clone();
        std::thread::spawn(move || {
            let mut h = Harness::new(1, 1);
            let d = Driver::open(&mut h, bdev, 1024, None);
            // Both drivers are open and both run from here on.
            b.wait();
            d.start(&mut h, 16);
            d.poll(&mut h, 2_000, 0);
            let counts = (completed(), failed());
            // Neither closes (and stops) before the other has read its counts.
            b.wait();
            d.close(&mut h, Duration::from_secs(10));
            counts
        })
    };
    let clean = spawn("CNull0");
    let failing = spawn("EE_CNull1");
    let (clean, failing) = (clean.join().unwrap(), failing.join().unwrap());
    assert!(clean.0 > 1_000, "clean driver completed {clean:?}");
    assert_eq!(clean.1, 0, "the clean driver counted failures: {clean:?}");
    assert!(failing.0 > 1_000, "failing driver completed {failing:?}");
    assert_eq!(failing.1, failing.0, "{failing:?}");
    drop(h);
}
