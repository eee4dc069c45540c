//! Examine: modules see bdevs registered after them, asynchronous examines keep
//! `is_examined` / `wait_for_examine` pending until they finish, a claim in `examine_config`
//! skips `examine_disk`, and passthru attaches on examine (save_config before and after).
//!
//! Modules are process-global: each test module acts only on bdevs with its own name prefix.
// Helpers outside #[test] functions unwrap too: this is test code.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ferrite_bdev::{Bdev, BdevModule, ClaimKind, Desc, ExamineDone};
use ferrite_reactor::harness::Harness;
use serde_json::Value;

fn null(name: &str) {
    ferrite_null::create(&ferrite_null::NullOpts {
        name: name.to_string(),
        num_blocks: 128,
        block_size: 512,
        uuid: None,
        md_size: 0,
    })
    .unwrap();
}

fn delete(h: &mut Harness, name: &str) {
    let n = name.to_string();
    h.on(0, move || {
        ferrite_bdev::unregister(&n, None, |r| r.unwrap())
    });
    h.run_until_idle();
    assert!(ferrite_bdev::lookup(name).is_none());
}

// ---- a watcher --------------------------------------------------------------------------------

static SEEN_CONFIG: Mutex<Vec<String>> = Mutex::new(Vec::new());
static SEEN_DISK: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Watcher;

impl BdevModule for Watcher {
    fn name(&self) -> &'static str {
        "ex_watcher"
    }
    fn examine_config(&self, bdev: &Arc<Bdev>) {
        SEEN_CONFIG.lock().unwrap().push(bdev.name().to_string());
    }
    fn examine_disk(&self, bdev: &Arc<Bdev>, done: ExamineDone) {
        SEEN_DISK.lock().unwrap().push(bdev.name().to_string());
        done.finish();
    }
}

// ---- a module claiming "ExClaim*" in examine_config -----------------------------------------

static CLAIMER_DESCS: Mutex<Vec<Desc>> = Mutex::new(Vec::new());

struct Claimer;

impl BdevModule for Claimer {
    fn name(&self) -> &'static str {
        "ex_claimer"
    }
    fn examine_config(&self, bdev: &Arc<Bdev>) {
        if bdev.name().starts_with("ExClaim") {
            let d = Desc::open_bdev(bdev, false, |_| {}).unwrap();
            d.claim(ClaimKind::ExclusiveWrite, "ex_claimer").unwrap();
            CLAIMER_DESCS.lock().unwrap().push(d);
        }
    }
}

#[test]
fn modules_see_bdevs_registered_after_them() {
    let mut h = Harness::new(1, 21);
    h.on(0, || null("ExBefore"));
    h.on(0, || {
        ferrite_bdev::register_module(Arc::new(Watcher));
        // Idempotent by name.
        ferrite_bdev::register_module(Arc::new(Watcher));
    });
    assert_eq!(
        ferrite_bdev::modules()
            .iter()
            .filter(|m| m.name() == "ex_watcher")
            .count(),
        1
    );
    h.on(0, || null("ExAfter"));
    let cfg = SEEN_CONFIG.lock().unwrap().clone();
    let disk = SEEN_DISK.lock().unwrap().clone();
    assert!(cfg.contains(&"ExAfter".to_string()), "{cfg:?}");
    assert!(disk.contains(&"ExAfter".to_string()), "{disk:?}");
    assert!(!cfg.contains(&"ExBefore".to_string()), "{cfg:?}");
    assert!(ferrite_bdev::lookup("ExAfter").unwrap().is_examined());

    // A claim taken in examine_config means no module runs examine_disk on it.
    h.on(0, || ferrite_bdev::register_module(Arc::new(Claimer)));
    h.on(0, || null("ExClaimed"));
    let b = ferrite_bdev::lookup("ExClaimed").unwrap();
    assert_eq!(
        b.claim(),
        Some((ClaimKind::ExclusiveWrite, "ex_claimer".to_string()))
    );
    assert!(SEEN_CONFIG
        .lock()
        .unwrap()
        .contains(&"ExClaimed".to_string()));
    assert!(
        !SEEN_DISK.lock().unwrap().contains(&"ExClaimed".to_string()),
        "examine_disk ran on a bdev claimed in examine_config"
    );
    assert!(b.is_examined());
    CLAIMER_DESCS.lock().unwrap().clear();
    assert_eq!(b.claim(), None);
    for n in ["ExBefore", "ExAfter", "ExClaimed"] {
        delete(&mut h, n);
    }
}

// ---- a slow examiner ----------------------------------------------------------------------------

static SLOW_PENDING: Mutex<Vec<ExamineDone>> = Mutex::new(Vec::new());
static SLOW_CALLS: AtomicUsize = AtomicUsize::new(0);

struct Slow;

impl BdevModule for Slow {
    fn name(&self) -> &'static str {
        "ex_slow"
    }
    fn examine_disk(&self, bdev: &Arc<Bdev>, done: ExamineDone) {
        if bdev.name().starts_with("ExSlow") {
            SLOW_CALLS.fetch_add(1, Ordering::SeqCst);
            SLOW_PENDING.lock().unwrap().push(done);
        } else {
            done.finish();
        }
    }
}

#[test]
fn slow_examine_keeps_wait_for_examine_pending() {
    let mut h = Harness::new(2, 22);
    h.on(0, || ferrite_bdev::register_module(Arc::new(Slow)));
    h.on(0, || null("ExSlow1"));
    let b = ferrite_bdev::lookup("ExSlow1").unwrap();
    assert_eq!(SLOW_CALLS.load(Ordering::SeqCst), 1);
    assert!(!b.is_examined());
    let fired = Arc::new(AtomicBool::new(false));
    let f = fired.clone();
    h.on(1, move || {
        ferrite_bdev::wait_for_examine(move || f.store(true, Ordering::SeqCst))
    });
    // Nothing else finishes it: it stays pending however long we run.
    for _ in 0..50 {
        h.poll_all();
    }
    assert!(!fired.load(Ordering::SeqCst), "wait_for_examine ran early");
    assert!(!b.is_examined());
    // Finishing on another thread, later: now examined, and the waiter runs.
    let done = SLOW_PENDING.lock().unwrap().pop().unwrap();
    h.on(1, move || done.finish());
    assert!(b.is_examined());
    // Another test of this binary may be registering a bdev right now; allow it to finish.
    common::run_until(&mut h, "wait_for_examine callback", || {
        fired.load(Ordering::SeqCst)
    });

    // Dropping the ExamineDone finishes it too.
    h.on(0, || null("ExSlow2"));
    let b2 = ferrite_bdev::lookup("ExSlow2").unwrap();
    assert!(!b2.is_examined());
    let fired2 = Arc::new(AtomicBool::new(false));
    let f2 = fired2.clone();
    h.on(0, move || {
        ferrite_bdev::wait_for_examine(move || f2.store(true, Ordering::SeqCst))
    });
    assert!(!fired2.load(Ordering::SeqCst));
    drop(SLOW_PENDING.lock().unwrap().pop().unwrap());
    assert!(b2.is_examined());
    common::run_until(&mut h, "wait_for_examine callback", || {
        fired2.load(Ordering::SeqCst)
    });
    for n in ["ExSlow1", "ExSlow2"] {
        delete(&mut h, n);
    }
}

// ---- passthru on examine -----------------------------------------------------------------------

const PT_UUID: &str = "6f0c2c1e-8a7b-4c3d-9e2f-0a1b2c3d4e5f";

fn entries(method: &str, name: &str) -> Vec<(usize, Value)> {
    ferrite_bdev::config::subsystem_config()
        .into_iter()
        .enumerate()
        .filter(|(_, e)| e["method"] == method && e["params"]["name"] == name)
        .collect()
}

#[test]
fn passthru_attaches_when_its_base_registers() {
    let mut h = Harness::new(1, 23);
    h.on(0, || {
        ferrite_bdev::register_module(Arc::new(ferrite_passthru::PassthruModule));
        ferrite_passthru::create(&ferrite_passthru::PassthruOpts {
            base_bdev_name: "ExPtBase".into(),
            name: "ExPt".into(),
            uuid: Some(PT_UUID.into()),
        })
        .unwrap()
    });
    assert!(
        ferrite_bdev::lookup("ExPt").is_none(),
        "attached without a base"
    );
    let check_pending = || {
        let pend = entries("bdev_passthru_create", "ExPt");
        assert_eq!(pend.len(), 1, "{pend:?}");
        let p = &pend[0].1["params"];
        assert_eq!(p["base_bdev_name"], "ExPtBase");
        assert_eq!(p["uuid"], PT_UUID);
        let all = ferrite_bdev::config::subsystem_config();
        assert_eq!(
            all.last().unwrap()["method"],
            "bdev_wait_for_examine",
            "{all:?}"
        );
    };
    check_pending();
    // The base appears: examine attaches the passthru before register returns.
    h.on(0, || {
        ferrite_malloc::create(&ferrite_malloc::MallocOpts {
            name: Some("ExPtBase".into()),
            num_blocks: 200,
            block_size: 4096,
            ..Default::default()
        })
        .unwrap()
    });
    let pt = ferrite_bdev::lookup("ExPt").expect("passthru attached on examine");
    let base = ferrite_bdev::lookup("ExPtBase").unwrap();
    assert!(base.is_examined() && pt.is_examined());
    assert_eq!(
        base.claim(),
        Some((ClaimKind::ExclusiveWrite, "passthru".to_string()))
    );
    assert_eq!(pt.uuid().to_string(), PT_UUID);
    assert_eq!((pt.num_blocks(), pt.block_size()), (200, 4096));
    let check_attached = || {
        let pts = entries("bdev_passthru_create", "ExPt");
        assert_eq!(pts.len(), 1, "listed twice or not at all: {pts:?}");
        let bases = entries("bdev_malloc_create", "ExPtBase");
        assert_eq!(bases.len(), 1);
        assert!(bases[0].0 < pts[0].0, "base must come before the passthru");
        let p = &pts[0].1["params"];
        assert_eq!(p["base_bdev_name"], "ExPtBase");
        assert_eq!(p["uuid"], PT_UUID);
    };
    check_attached();
    // Hot-removing the base removes the passthru; its configuration waits again.
    let gone = Arc::new(AtomicBool::new(false));
    let g = gone.clone();
    h.on(0, move || {
        ferrite_malloc::delete("ExPtBase", move |r| {
            r.unwrap();
            g.store(true, Ordering::SeqCst)
        })
    });
    common::run_until(&mut h, "base removal", || gone.load(Ordering::SeqCst));
    assert!(ferrite_bdev::lookup("ExPt").is_none());
    assert!(ferrite_bdev::lookup("ExPtBase").is_none());
    check_pending();
    // The base comes back: the passthru attaches again, same UUID.
    h.on(0, || {
        ferrite_malloc::create(&ferrite_malloc::MallocOpts {
            name: Some("ExPtBase".into()),
            num_blocks: 200,
            block_size: 4096,
            ..Default::default()
        })
        .unwrap()
    });
    let pt = ferrite_bdev::lookup("ExPt").expect("re-attached");
    assert_eq!(pt.uuid().to_string(), PT_UUID);
    check_attached();
    // Deleting the passthru forgets it entirely and frees the base.
    h.on(0, || ferrite_passthru::delete("ExPt", |r| r.unwrap()));
    h.run_until_idle();
    assert!(ferrite_bdev::lookup("ExPt").is_none());
    assert!(entries("bdev_passthru_create", "ExPt").is_empty());
    assert_eq!(ferrite_bdev::lookup("ExPtBase").unwrap().claim(), None);
    delete(&mut h, "ExPtBase");
    // Deleting a passthru that only waits for its base works too.
    h.on(0, || {
        ferrite_passthru::create(&ferrite_passthru::PassthruOpts {
            base_bdev_name: "ExNoSuchBase".into(),
            name: "ExPtWaiting".into(),
            uuid: None,
        })
        .unwrap()
    });
    assert_eq!(entries("bdev_passthru_create", "ExPtWaiting").len(), 1);
    h.on(0, || {
        ferrite_passthru::delete("ExPtWaiting", |r| r.unwrap())
    });
    assert!(entries("bdev_passthru_create", "ExPtWaiting").is_empty());
}
