//! `BdevChannel::free_io` / `alloc_io`: the objects a channel gets back serve its next
//! allocations (the same objects, reset), at most 128 are kept and the rest go to the
//! thread's pool, everything goes back to the pool when the channel is dropped, and on
//! another thread the channel keeps nothing. The deterministic harness, no real reactors.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::{register_test, TestCfg};
use ferrite_bdev::{BdevIo, Desc, IoStatus};
use ferrite_reactor::harness::Harness;

fn addr(io: &BdevIo) -> usize {
    std::ptr::from_ref(io) as usize
}

#[test]
fn a_channel_reuses_what_it_got_back() {
    let mut h = Harness::new(2, 11);
    h.on(0, || register_test("SpareT", 512, 64, TestCfg::default()));
    let d = h.on(0, || Desc::open("SpareT", true, |_| {}).unwrap());
    let ch = h.on(0, || d.channel().unwrap());
    h.on(0, || {
        let created = ferrite_bdev::ios_allocated();
        // Ten out and back: the next ten are the same objects, most recently freed first,
        // reset (no leftover words, pending).
        let ios: Vec<Box<BdevIo>> = (0..10).map(|_| ch.alloc_io().unwrap()).collect();
        let freed: Vec<usize> = ios.iter().map(|io| addr(io)).collect();
        for mut io in ios {
            io.user = [7, 8];
            ch.free_io(io);
        }
        let again: Vec<Box<BdevIo>> = (0..10).map(|_| ch.alloc_io().unwrap()).collect();
        let got: Vec<usize> = again.iter().map(|io| addr(io)).collect();
        let mut want = freed.clone();
        want.reverse();
        assert_eq!(got, want);
        assert!(again
            .iter()
            .all(|io| io.user == [0, 0] && io.status() == IoStatus::Pending));
        for io in again {
            ch.free_io(io);
        }
        assert_eq!(
            ferrite_bdev::ios_allocated(),
            created,
            "nothing new was created"
        );

        // 200 out and back: the channel keeps 128, the thread's pool gets the rest.
        let ios: Vec<Box<BdevIo>> = (0..200).map(|_| ch.alloc_io().unwrap()).collect();
        for io in ios {
            ch.free_io(io);
        }
        let created = ferrite_bdev::ios_allocated();
        let from_pool: Vec<Box<BdevIo>> =
            (0..72).map(|_| ferrite_bdev::alloc_io().unwrap()).collect();
        let from_chan: Vec<Box<BdevIo>> = (0..128).map(|_| ch.alloc_io().unwrap()).collect();
        assert_eq!(
            ferrite_bdev::ios_allocated(),
            created,
            "the 200 were split between the channel and the pool"
        );
        for io in from_pool.into_iter().chain(from_chan) {
            ch.free_io(io);
        }
    });
    // On another thread the channel keeps nothing: the object goes to that thread's pool.
    let io = h.on(1, || ferrite_bdev::alloc_io().unwrap());
    let created1 = h.on(1, ferrite_bdev::ios_allocated);
    let a = addr(&io);
    h.on(1, || ch.free_io(io));
    let back = h.on(1, || ferrite_bdev::alloc_io().unwrap());
    assert_eq!(addr(&back), a, "thread 1's pool got its object back");
    h.on(1, || ferrite_bdev::free_io(back));
    assert_eq!(h.on(1, ferrite_bdev::ios_allocated), created1);
    // Dropping the channel gives what it kept to the thread's pool: 200 objects without
    // creating any.
    let created = h.on(0, ferrite_bdev::ios_allocated);
    h.on(0, || drop(ch));
    h.run_until_idle(); // the channel context goes when the reactor releases it
    h.on(0, || {
        let ios: Vec<Box<BdevIo>> = (0..200)
            .map(|_| ferrite_bdev::alloc_io().unwrap())
            .collect();
        assert_eq!(ferrite_bdev::ios_allocated(), created);
        for io in ios {
            ferrite_bdev::free_io(io);
        }
    });
    h.on(0, || drop(d));
}
