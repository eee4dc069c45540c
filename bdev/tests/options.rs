//! `bdev_set_options` takes effect: each thread's I/O pool is prefilled with
//! `bdev_io_cache_size` objects when it opens its first channel, all threads together create at
//! most `bdev_io_pool_size`, the bdev subsystem's config carries the options, and they cannot
//! change once a channel exists. One test: the options are process-wide.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::{register_test, TestCfg};
use ferrite_bdev::{BdevOptions, Desc, ErrorKind};
use ferrite_reactor::harness::Harness;
use serde_json::json;

fn opts(pool: u32, cache: u32) -> BdevOptions {
    BdevOptions {
        bdev_io_pool_size: pool,
        bdev_io_cache_size: cache,
        ..BdevOptions::default()
    }
}

#[test]
fn pool_prefill_and_limit_follow_the_options() {
    // Defaults: SPDK's, and no entry in the saved config.
    assert_eq!(ferrite_bdev::options::options(), opts(65_535, 256));
    assert!(!ferrite_bdev::config::subsystem_config()
        .iter()
        .any(|e| e["method"] == "bdev_set_options"));
    // Out of bounds: refused, naming the option; nothing changes.
    let e = ferrite_bdev::set_options(&opts(10, 8)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(
        e.to_string().contains("bdev_io_pool_size 10 is too small"),
        "{e}"
    );
    assert_eq!(ferrite_bdev::options::options(), opts(65_535, 256));

    // A cache of 300 (above the default 256) on a pool of 700: two threads get 300 each, the
    // third the 100 left, and then the pool is used up.
    let with_small_cache = |o: BdevOptions| BdevOptions {
        iobuf_small_cache_size: 3,
        ..o
    };
    ferrite_bdev::set_options(&with_small_cache(opts(700, 300))).unwrap();
    let saved = ferrite_bdev::config::subsystem_config();
    assert_eq!(
        saved[0],
        json!({"method": "bdev_set_options", "params": {
            "bdev_io_pool_size": 700, "bdev_io_cache_size": 300, "bdev_auto_examine": true,
            "iobuf_small_cache_size": 3, "iobuf_large_cache_size": 16}})
    );
    let mut h = Harness::new(3, 7);
    h.on(0, || register_test("OptT", 512, 64, TestCfg::default()));
    let d = h.on(0, || Desc::open("OptT", true, |_| {}).unwrap());
    let mut chans = Vec::new();
    for (t, want) in [(0, 300), (1, 300), (2, 100)] {
        chans.push(h.on(t, || d.channel().unwrap()));
        assert_eq!(
            h.on(t, ferrite_bdev::ios_allocated),
            want,
            "thread {t}: the pool is prefilled with the cache size, as far as the pool allows"
        );
    }
    // Thread 2 takes its 100, then gets none: the pool is shared by all threads.
    let ios = h.on(2, || {
        let mut v = Vec::new();
        while let Some(io) = ferrite_bdev::alloc_io() {
            v.push(io);
            assert!(v.len() <= 100, "more than the pool");
        }
        v
    });
    assert_eq!(ios.len(), 100);
    // Thread 0 takes beyond its prefill from its own pool only: none left to create.
    let n0 = h.on(0, || {
        let mut v = Vec::new();
        while let Some(io) = ferrite_bdev::alloc_io() {
            v.push(io);
        }
        let n = v.len();
        v.into_iter().for_each(ferrite_bdev::free_io);
        n
    });
    assert_eq!(n0, 300);
    h.on(2, || ios.into_iter().for_each(ferrite_bdev::free_io));

    // Channels exist: a change is refused naming the option; the same values are accepted.
    let e = ferrite_bdev::set_options(&opts(800, 300)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy);
    assert!(
        e.to_string()
            .starts_with("cannot change bdev_io_pool_size: I/O channels already exist"),
        "{e}"
    );
    let e = ferrite_bdev::set_options(&opts(700, 200)).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cannot change bdev_io_cache_size"),
        "{e}"
    );
    let e = ferrite_bdev::set_options(&opts(700, 300)).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cannot change iobuf_small_cache_size"),
        "{e}"
    );
    ferrite_bdev::set_options(&with_small_cache(opts(700, 300))).unwrap();

    // The small-buffer cache holds 3: of 10 buffers a thread returns it keeps 3, and of the
    // next 10 it takes, 3 come from its cache and 7 from the global queue (iobuf_get_stats).
    let total = ferrite_bdev::buf::stats().unwrap().small_total;
    let before = ferrite_bdev::buf::iobuf_stats();
    let take = || {
        (0..10)
            .map(|_| ferrite_bdev::DmaBuf::get(4096).unwrap().unwrap())
            .collect::<Vec<_>>()
    };
    let bufs = h.on(1, take);
    h.on(1, move || drop(bufs));
    assert_eq!(ferrite_bdev::buf::stats().unwrap().small_free, total - 3);
    let bufs = h.on(1, take);
    let after = ferrite_bdev::buf::iobuf_stats();
    assert_eq!(after.small.cache - before.small.cache, 3, "{after:?}");
    assert_eq!(after.small.main - before.small.main, 17, "{after:?}");
    assert_eq!(after.small.cache_size, 3);
    assert_eq!(after.large.cache_size, 16);
    h.on(1, move || drop(bufs));

    // A thread torn down gives its objects back to the pool: a new thread gets its cache.
    let c2 = chans.pop().unwrap();
    h.on(2, move || drop(c2));
    h.remove_thread(2);
    let t3 = h.add_thread("t3");
    let _c3 = h.on(t3, || d.channel().unwrap());
    assert_eq!(h.on(t3, ferrite_bdev::ios_allocated), 100);
}
