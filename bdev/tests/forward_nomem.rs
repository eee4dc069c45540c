//! `forward_with` past the frame stack with the thread's I/O pool exhausted: the child that
//! would carry the I/O cannot be had, and the forward's hook still runs — once, with
//! `NoMem`, after the submit returned; the hook hands the I/O back, the forwarding layer
//! parks it and retries it whole once I/O objects are free again, and it then succeeds.
//! (Its own test binary: it empties the pool, which every thread of a process shares.)
// Helpers outside #[test] functions unwrap too: this is test code.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{open_channel, run_until, take_done, Arena, StackedKind, TestCfg};
use ferrite_bdev::{BackendChannel, BdevChannel, BdevIo, IoStatus, IoType, MAX_FORWARD_DEPTH};
use ferrite_reactor::harness::Harness;

const BS: u32 = 512;

/// What the hooks saw: calls, and calls with `NoMem`.
#[derive(Default)]
struct Hooks {
    calls: AtomicUsize,
    nomem: AtomicUsize,
}

/// Forwards every I/O to its base: with a hook (`hooks` is `Some`), else plainly.
struct Fwd {
    base: BdevChannel,
    hooks: Option<Arc<Hooks>>,
}

impl BackendChannel for Fwd {
    fn submit(&mut self, io: Box<BdevIo>) {
        let off = io.offset_blocks();
        match &self.hooks {
            Some(h) => {
                let w = Arc::as_ptr(h) as u64;
                self.base.forward_with(io, off, Some(hook), [w, 0, 0]);
            }
            None => self.base.forward(io, off),
        }
    }
}

fn hook(io: Box<BdevIo>, w: [u64; 3]) -> Option<Box<BdevIo>> {
    // SAFETY: the `Hooks` of the channel that forwarded this I/O, kept alive by the test
    // (an `Arc` it holds until the end).
    let h = unsafe { &*(w[0] as *const Hooks) };
    h.calls.fetch_add(1, Ordering::SeqCst);
    if io.status() == IoStatus::NoMem {
        h.nomem.fetch_add(1, Ordering::SeqCst);
    }
    Some(io)
}

const KIND: StackedKind = StackedKind {
    module: "fwd_nomem_test",
    types: &[IoType::Read, IoType::Write],
    product: "Forwarding test disk",
};

fn stack(name: &str, base: &str, hooks: Option<Arc<Hooks>>) {
    let make: common::MakeChannel = Box::new(move |mut bases| {
        Box::new(Fwd {
            base: bases.remove(0),
            hooks: hooks.clone(),
        })
    });
    common::register_stacked(&KIND, name, &[base], BS, 64, true, make);
}

#[test]
fn a_forward_past_the_frame_stack_without_io_objects_reaches_its_hook_with_nomem() {
    let mut h = Harness::new(1, 31);
    let st = h.on(0, || {
        common::register_test("FnBase", BS, 64, TestCfg::default()).1
    });
    st.fill_ram(4, 2, 0x6d);
    let hooks = Arc::new(Hooks::default());
    let hk = hooks.clone();
    // The hooked layer at the bottom; plain layers above fill the frame stack.
    h.on(0, || stack("Fn0", "FnBase", Some(hk)));
    for k in 1..=MAX_FORWARD_DEPTH {
        let (below, name) = (format!("Fn{}", k - 1), format!("Fn{k}"));
        h.on(0, || stack(&name, &below, None));
    }
    let (_d, ch) = open_channel(&mut h, &format!("Fn{MAX_FORWARD_DEPTH}"));
    let arena = Arena::default();
    let (i, iovs) = arena.add_split(vec![0; 2 * BS as usize], &[]);
    let hoard = h.on(0, || {
        let mut io = ch.alloc_io().unwrap();
        io.prep_read(4, 2, common::record);
        io.user[0] = 7;
        // SAFETY: the arena outlives the I/O.
        unsafe { io.set_iovs(&iovs) };
        // Every other I/O object of the thread taken: the child past the frame stack cannot be.
        let mut hoard = Vec::new();
        while let Some(x) = ferrite_bdev::alloc_io() {
            hoard.push(x);
        }
        ch.submit(io);
        assert_eq!(
            hooks.calls.load(Ordering::SeqCst),
            0,
            "hook ran inside submit"
        );
        hoard
    });
    run_until(&mut h, "the hook with NoMem", || {
        hooks.nomem.load(Ordering::SeqCst) == 1
    });
    assert_eq!(common::done_count(), 0, "parked for a retry, not completed");
    h.on(0, || hoard.into_iter().for_each(ferrite_bdev::free_io));
    run_until(&mut h, "the retried read", || common::done_count() == 1);
    let d = take_done();
    assert_eq!((d[0].tag, d[0].status), (7, IoStatus::Success), "{d:?}");
    assert_eq!(arena.get(i), vec![0x6d; 2 * BS as usize]);
    assert_eq!(hooks.nomem.load(Ordering::SeqCst), 1, "one NoMem");
    assert_eq!(
        hooks.calls.load(Ordering::SeqCst),
        2,
        "the hook ran once per forward"
    );
    h.on(0, || {
        assert_eq!(ch.inflight(), 0);
        drop(ch)
    });
}
