//! Typed per-thread locals (`with_local`) under the deterministic harness.
#![allow(clippy::unwrap_used)]

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ferrite_reactor::harness::Harness;
use ferrite_reactor::{current, exit_current, with_local};

#[derive(Default)]
struct Counter(Cell<u64>);

#[derive(Default)]
struct Name(Mutex<String>);

static DROPS: AtomicUsize = AtomicUsize::new(0);
static DROPPED_ON: Mutex<Vec<Option<u64>>> = Mutex::new(Vec::new());

#[derive(Default)]
struct Tracked(u8);
impl Drop for Tracked {
    fn drop(&mut self) {
        DROPS.fetch_add(1, Ordering::SeqCst);
        DROPPED_ON.lock().unwrap().push(current().map(|t| t.id()));
    }
}

fn bump() -> u64 {
    with_local::<Counter, _>(|c| {
        c.0.set(c.0.get() + 1);
        c.0.get()
    })
    .unwrap()
}

#[test]
fn locals_are_per_thread_and_per_type() {
    let mut h = Harness::new(3, 1);
    assert_eq!(h.on(0, bump), 1);
    assert_eq!(h.on(0, bump), 2);
    assert_eq!(h.on(1, bump), 1, "each thread has its own instance");
    assert_eq!(
        h.on(2, || with_local::<Counter, _>(|c| c.0.get())),
        Some(0),
        "created with Default"
    );
    h.on(0, || {
        with_local::<Name, _>(|n| *n.0.lock().unwrap() = "zero".into())
    });
    assert_eq!(
        h.on(0, || with_local::<Name, _>(|n| n.0.lock().unwrap().clone())),
        Some("zero".into())
    );
    assert_eq!(
        h.on(1, || with_local::<Name, _>(|n| n.0.lock().unwrap().clone())),
        Some(String::new())
    );
    assert_eq!(h.on(0, bump), 3, "another type does not disturb the first");
    // Nested use of a different type is fine.
    let nested = h.on(0, || {
        with_local::<Counter, _>(|c| {
            with_local::<Name, _>(|n| (c.0.get(), n.0.lock().unwrap().len()))
        })
    });
    assert_eq!(nested, Some(Some((3, 4))));
}

#[test]
fn locals_persist_across_messages_and_polls() {
    let mut h = Harness::new(2, 4);
    let seen = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..5 {
        let s = seen.clone();
        h.handle(1)
            .send(move || s.lock().unwrap().push(bump()))
            .unwrap();
        h.run_until_idle();
    }
    assert_eq!(*seen.lock().unwrap(), vec![1, 2, 3, 4, 5]);
}

#[test]
fn outside_a_thread_there_is_no_local() {
    assert_eq!(with_local::<Counter, _>(|c| c.0.get()), None);
}

#[test]
fn locals_are_dropped_on_their_thread_when_it_exits() {
    let mut h = Harness::new(2, 1);
    let t0 = h.handle(0).id();
    let t1 = h.handle(1).id();
    h.on(0, || with_local::<Tracked, _>(|t| t.0));
    h.on(1, || with_local::<Tracked, _>(|t| t.0));
    h.handle(0).send(exit_current).unwrap();
    h.run_until_idle();
    assert_eq!(DROPS.load(Ordering::SeqCst), 1);
    h.remove_thread(1);
    assert_eq!(DROPS.load(Ordering::SeqCst), 2);
    assert_eq!(*DROPPED_ON.lock().unwrap(), vec![Some(t0), Some(t1)]);
}
