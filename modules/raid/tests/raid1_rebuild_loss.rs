//! raid1 rebuild losing a member (the target, one source, the last source; removed or
//! failing I/O) in every state of the machine, and while its I/O is in flight.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;

use common::mirror::*;
use common::*;
use ferrite_bdev::Desc;
use ferrite_raid::RebuildState;
use ferrite_reactor::harness::Harness;

/// What is lost while the rebuild sits in a state.
#[derive(Debug, Clone, Copy)]
enum Loss {
    /// The member being rebuilt (removed by RPC).
    Target,
    /// One of two sources (removed by RPC): the copy continues from the other.
    OneSource,
    /// The only source (removed by RPC): the raid goes offline.
    LastSource,
    /// The target fails its write (I/O error).
    TargetFails,
    /// A source fails its read (I/O error), another source remains.
    SourceFails,
}

fn loss_case(state: RebuildState, loss: Loss, seed: u64) {
    let mut h = Harness::new(2, seed);
    let name = format!("S{seed}");
    let three = matches!(loss, Loss::OneSource | Loss::SourceFails);
    let mut s = raid1(&mut h, &name, if three { 3 } else { 2 });
    let n = s.disks.len();
    assert!(ferrite_raid::set_options(Some(8), None).is_ok());
    // Take the last member out and put a fresh disk in its place, pausing in `state`.
    let last = format!("{name}d{}", n - 1);
    assert!(call(&mut h, move |d| ferrite_raid::remove_base_bdev(&last, d)).is_ok());
    let tname = format!("{name}t");
    let target = add_disk(&mut h, &tname);
    // Let it run a few windows first, then pause in the state under test.
    ferrite_raid::set_rebuild_pause(&name, Some(state));
    let (nm, tn) = (name.clone(), tname.clone());
    assert!(call(&mut h, move |d| ferrite_raid::add_base_bdev(&nm, &tn, d)).is_ok());
    let nm = name.clone();
    run_until(&mut h, "first pause", || {
        ferrite_raid::rebuild_state(&nm) == Some((state, true))
    });
    ferrite_raid::resume_rebuild(&name);
    let nm = name.clone();
    run_until(&mut h, "second pause", || {
        ferrite_raid::rebuild_state(&nm) == Some((state, true))
    });
    // User writes while paused (some overlap the window, which may be locked).
    let progress = info(&name).unwrap()["process"]["progress"]["blocks"]
        .as_u64()
        .unwrap();
    s.write(&mut h, progress, 4);
    s.write(&mut h, BLOCKS - 16, 16);
    h.run_until_idle();
    // The loss.
    let pending = match loss {
        Loss::Target => {
            let t = tname.clone();
            Some(start_call(&mut h, move |d| {
                ferrite_raid::remove_base_bdev(&t, d)
            }))
        }
        Loss::OneSource | Loss::LastSource => {
            let src = format!("{name}d0");
            Some(start_call(&mut h, move |d| {
                ferrite_raid::remove_base_bdev(&src, d)
            }))
        }
        Loss::TargetFails => {
            target.fail_write.store(true, Ordering::SeqCst);
            None
        }
        Loss::SourceFails => {
            // The machine copies from the lowest source: member 0.
            s.disks[0].fail_read.store(true, Ordering::SeqCst);
            None
        }
    };
    h.run_until_idle();
    ferrite_raid::set_rebuild_pause(&name, None);
    ferrite_raid::resume_rebuild(&name);
    h.run_until_idle();
    let mut s = Some(s);
    if matches!(loss, Loss::LastSource) {
        // Going offline: the raid bdev leaves once its user closed it.
        if let Some(s) = s.take() {
            s.close(&mut h);
        }
    }
    if let Some(p) = pending {
        run_until(&mut h, "removal", || p.lock().unwrap().is_some());
        let r = p.lock().unwrap().take().unwrap();
        assert!(r.is_ok(), "{state:?} {loss:?}: {r:?}");
    }
    h.run_until_idle();
    let ctx = format!("{state:?}/{loss:?}");
    assert!(ferrite_raid::rebuild_state(&name).is_none(), "{ctx}");
    let v = info(&name).unwrap();
    assert!(v.get("process").is_none(), "{ctx}: {v}");
    match loss {
        Loss::Target | Loss::TargetFails => {
            all_ok(&ctx);
            assert_eq!(v["state"], "online", "{ctx}");
            assert_eq!(v["num_base_bdevs_operational"], 1, "{ctx}");
            assert!(!member_names(&name).contains(&Some(tname.clone())), "{ctx}");
            s.as_mut().unwrap().verify(&mut h);
            assert!(
                s.as_ref().unwrap().disks[0].read(0, BLOCKS) == s.as_ref().unwrap().model,
                "{ctx}"
            );
            // The target was released.
            let t = tname.clone();
            h.on(0, move || drop(Desc::open(&t, true, |_| {}).unwrap()));
        }
        Loss::OneSource | Loss::SourceFails => {
            all_ok(&ctx);
            assert_eq!(v["state"], "online", "{ctx}");
            assert_eq!(v["num_base_bdevs_operational"], 2, "{ctx}: {v}");
            s.as_mut().unwrap().verify(&mut h);
            // The remaining source and the rebuilt target are identical to the model.
            assert!(
                s.as_ref().unwrap().disks[1].read(0, BLOCKS) == s.as_ref().unwrap().model,
                "{ctx}: source"
            );
            assert!(
                target.read(0, BLOCKS) == s.as_ref().unwrap().model,
                "{ctx}: target"
            );
        }
        Loss::LastSource => {
            assert_eq!(v["state"], "offline", "{ctx}");
            assert!(ferrite_bdev::lookup(&name).is_none(), "{ctx}");
            take_done();
        }
    }
    if let Some(s) = s {
        s.close(&mut h);
    }
    let nm = name.clone();
    assert!(
        call(&mut h, move |d| ferrite_raid::delete(&nm, d)).is_ok(),
        "{ctx}"
    );
    assert!(info(&name).is_none());
}

#[test]
fn rebuild_loses_a_member_in_every_state() {
    let states = [
        RebuildState::Locking,
        RebuildState::Reading,
        RebuildState::Writing,
        RebuildState::Advancing,
    ];
    let mut seed = 100;
    for st in states {
        for loss in [Loss::Target, Loss::OneSource, Loss::LastSource] {
            seed += 1;
            loss_case(st, loss, seed);
        }
    }
    // I/O errors where they can happen: the target fails its write (Writing), a source its
    // read (Reading).
    loss_case(RebuildState::Writing, Loss::TargetFails, 200);
    loss_case(RebuildState::Reading, Loss::SourceFails, 201);
}

#[test]
fn member_lost_while_rebuild_io_is_in_flight() {
    // The machine is busy (its read or write held in a disk) when the member goes: it lets
    // go at its next safe point.
    for (held_source, seed) in [(true, 300u64), (false, 301)] {
        let mut h = Harness::new(2, seed);
        let name = format!("B{seed}");
        let mut s = raid1(&mut h, &name, 3);
        assert!(ferrite_raid::set_options(Some(8), None).is_ok());
        let last = format!("{name}d2");
        assert!(call(&mut h, move |d| ferrite_raid::remove_base_bdev(&last, d)).is_ok());
        let tname = format!("{name}t");
        let target = add_disk(&mut h, &tname);
        let state = if held_source {
            RebuildState::Reading
        } else {
            RebuildState::Writing
        };
        ferrite_raid::set_rebuild_pause(&name, Some(state));
        let (nm, tn) = (name.clone(), tname.clone());
        assert!(call(&mut h, move |d| ferrite_raid::add_base_bdev(&nm, &tn, d)).is_ok());
        let nm = name.clone();
        run_until(&mut h, "pause", || {
            ferrite_raid::rebuild_state(&nm) == Some((state, true))
        });
        // Hold the disk the next step uses, then let the machine issue it.
        let held = if held_source { &s.disks[0] } else { &target };
        held.hold.store(true, Ordering::SeqCst);
        ferrite_raid::set_rebuild_pause(&name, None);
        ferrite_raid::resume_rebuild(&name);
        h.run_until_idle();
        assert_eq!(held.held(), 1, "the machine's I/O is held");
        // Remove the member whose I/O is in flight.
        let victim = if held_source {
            format!("{name}d0")
        } else {
            tname.clone()
        };
        let p = start_call(&mut h, move |d| ferrite_raid::remove_base_bdev(&victim, d));
        h.run_until_idle();
        assert!(
            p.lock().unwrap().is_none(),
            "removal waited for the machine"
        );
        held.hold.store(false, Ordering::SeqCst);
        run_until(&mut h, "removal", || p.lock().unwrap().is_some());
        assert!(p.lock().unwrap().take().unwrap().is_ok());
        let nm = name.clone();
        run_until(&mut h, "rebuild end", || {
            ferrite_raid::rebuild_state(&nm).is_none()
        });
        h.run_until_idle();
        let v = info(&name).unwrap();
        assert_eq!(v["state"], "online");
        s.write(&mut h, 1, 3);
        h.run_until_idle();
        all_ok("after");
        s.verify(&mut h);
        if held_source {
            // Rebuilt from the other source.
            assert_eq!(v["num_base_bdevs_operational"], 2, "{v}");
            assert!(target.read(0, BLOCKS) == s.model);
        } else {
            assert_eq!(v["num_base_bdevs_operational"], 2, "{v}");
            assert!(!member_names(&name).contains(&Some(tname.clone())));
        }
        s.close(&mut h);
        let nm = name.clone();
        assert!(call(&mut h, move |d| ferrite_raid::delete(&nm, d)).is_ok());
    }
}
