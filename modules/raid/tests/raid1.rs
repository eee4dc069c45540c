//! raid1: mirrored writes, reads that survive a failing member, degraded mode on failure,
//! removal and hot-remove, re-add with rebuild while I/O continues, and the rebuild state
//! machine losing a member (target, one source, the last source) in every state.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use common::*;
use ferrite_bdev::{BdevChannel, Desc, IoStatus};
use ferrite_raid::{RaidOpts, RebuildState};
use ferrite_reactor::harness::Harness;

const BS: usize = 512;
const BLOCKS: u64 = 512;

struct Setup {
    disks: Vec<Arc<Disk>>,
    desc: Option<Desc>,
    ch: Option<BdevChannel>,
    model: Vec<u8>,
    arena: Arena,
    tag: u64,
}

impl Setup {
    /// Submits a write of fresh data (recorded in the model) without waiting.
    fn write(&mut self, h: &mut Harness, off: u64, n: u64) {
        self.tag += 1;
        let data = noise(self.tag * 7919 + off, n as usize * BS);
        self.model[off as usize * BS..(off + n) as usize * BS].copy_from_slice(&data);
        let (ch, arena, tag) = (self.ch.as_ref().unwrap(), &self.arena, self.tag);
        h.on(1, || write_at(ch, arena, off, data, tag));
    }

    /// Reads everything back through the raid and compares with the model.
    fn verify(&mut self, h: &mut Harness) {
        let (ch, arena) = (self.ch.as_ref().unwrap(), &self.arena);
        let blocks = (self.model.len() / BS) as u64;
        let idx = h.on(1, || read_at(ch, arena, 0, blocks, 77_777));
        h.run_until_idle();
        let d = take_done();
        assert!(d.iter().all(|d| d.status == IoStatus::Success), "{d:?}");
        assert!(
            self.arena.get(idx) == self.model,
            "raid content differs from the model"
        );
    }

    fn close(mut self, h: &mut Harness) {
        let ch = self.ch.take();
        let desc = self.desc.take();
        h.on(1, move || drop(ch));
        h.on(1, move || drop(desc));
        h.run_until_idle();
    }
}

fn all_ok(what: &str) {
    let d = take_done();
    assert!(
        d.iter().all(|d| d.status == IoStatus::Success),
        "{what}: {:?}",
        d.iter()
            .filter(|d| d.status != IoStatus::Success)
            .collect::<Vec<_>>()
    );
}

/// A raid1 `name` over `n` fresh disks `{name}d{i}`, filled with data.
fn raid1(h: &mut Harness, name: &str, n: usize) -> Setup {
    setup(h);
    let disks: Vec<Arc<Disk>> = (0..n).map(|_| Disk::new(512, BLOCKS)).collect();
    let names: Vec<String> = (0..n).map(|i| format!("{name}d{i}")).collect();
    let (d2, n2) = (disks.clone(), names.clone());
    h.on(0, move || {
        for (d, n) in d2.iter().zip(&n2) {
            register_disk(n, d, None);
        }
    });
    let o = RaidOpts {
        name: name.into(),
        raid_level: "raid1".into(),
        base_bdevs: names,
        ..Default::default()
    };
    let r = call(h, move |done| ferrite_raid::create(&o, done));
    assert!(r.is_ok(), "{r:?}");
    let nm = name.to_string();
    let desc = h.on(1, move || Desc::open(&nm, true, |_| {}).unwrap());
    let ch = h.on(1, || desc.channel().unwrap());
    let mut s = Setup {
        disks,
        desc: Some(desc),
        ch: Some(ch),
        model: vec![0; BLOCKS as usize * BS],
        arena: Arena::default(),
        tag: 0,
    };
    for i in 0..8 {
        s.write(h, i * 64, 64);
    }
    h.run_until_idle();
    all_ok("initial fill");
    s
}

fn member_names(name: &str) -> Vec<Option<String>> {
    info(name).unwrap()["base_bdevs_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().map(str::to_string))
        .collect()
}

fn add_disk(h: &mut Harness, name: &str) -> Arc<Disk> {
    let d = Disk::new(512, BLOCKS);
    let (d2, n2) = (d.clone(), name.to_string());
    h.on(0, move || {
        register_disk(&n2, &d2, None);
    });
    d
}

/// Starts a control call on thread 0 without waiting; the result lands in the slot.
fn start_call(
    h: &mut Harness,
    f: impl FnOnce(Box<dyn FnOnce(ferrite_bdev::Result<()>) + Send>) + Send + 'static,
) -> Arc<Mutex<Option<ferrite_bdev::Result<()>>>> {
    let slot: Arc<Mutex<Option<ferrite_bdev::Result<()>>>> = Arc::new(Mutex::new(None));
    let s2 = slot.clone();
    h.on(0, move || {
        f(Box::new(move |r| {
            *s2.lock().unwrap() = Some(r);
        }))
    });
    slot
}

#[test]
fn mirrored_writes_and_reads_spread() {
    let mut h = Harness::new(2, 21);
    let mut s = raid1(&mut h, "M1", 2);
    let v = info("M1").unwrap();
    assert_eq!(v["state"], "online");
    assert_eq!(v["strip_size_kb"], 0);
    assert_eq!(v["num_base_bdevs_operational"], 2);
    assert_eq!(ferrite_bdev::lookup("M1").unwrap().num_blocks(), BLOCKS);
    s.verify(&mut h);
    // Both members hold the raid's data (no superblock: data offset 0).
    for d in &s.disks {
        assert!(d.read(0, BLOCKS) == s.model);
    }
    // Reads are spread over both members.
    let before: Vec<u64> = s
        .disks
        .iter()
        .map(|d| d.reads.load(Ordering::SeqCst))
        .collect();
    for i in 0..16 {
        let (ch, arena) = (s.ch.as_ref().unwrap(), &s.arena);
        h.on(1, || read_at(ch, arena, i * 8, 8, 500 + i));
    }
    h.run_until_idle();
    all_ok("reads");
    for (i, d) in s.disks.iter().enumerate() {
        assert!(
            d.reads.load(Ordering::SeqCst) > before[i],
            "member {i} never read"
        );
    }
    s.close(&mut h);
    assert!(call(&mut h, |d| ferrite_raid::delete("M1", d)).is_ok());
}

#[test]
fn failing_member_under_load_degrades_without_errors() {
    for (what, read) in [("write failure", false), ("read failure", true)] {
        let mut h = Harness::new(2, 22 + read as u64);
        let name = if read { "F1r" } else { "F1w" };
        let mut s = raid1(&mut h, name, 2);
        // A verify-style workload: batches of writes and reads in flight together; member 1
        // starts failing while a batch is held in it.
        let mut rng = Rng(99);
        for round in 0..20 {
            if round == 5 {
                s.disks[1].hold.store(true, Ordering::SeqCst);
            }
            for _ in 0..6 {
                let n = 1 + rng.below(30);
                let off = rng.below(BLOCKS - n);
                s.write(&mut h, off, n);
            }
            h.run_until_idle();
            if round == 5 {
                assert!(s.disks[1].held() > 0);
                if read {
                    s.disks[1].fail_read.store(true, Ordering::SeqCst);
                } else {
                    s.disks[1].fail_write.store(true, Ordering::SeqCst);
                }
                s.disks[1].hold.store(false, Ordering::SeqCst);
                h.run_until_idle();
            }
            all_ok(what);
            s.verify(&mut h);
        }
        let v = info(name).unwrap();
        assert_eq!(v["state"], "online", "{what}");
        assert_eq!(v["num_base_bdevs_operational"], 1, "{what}: {v}");
        assert_eq!(v["base_bdevs_list"][1]["is_configured"], false, "{what}");
        assert!(v["base_bdevs_list"][1]["name"].is_null(), "{what}");
        // The survivor holds everything; the failed member was released.
        assert!(s.disks[0].read(0, BLOCKS) == s.model, "{what}");
        let d1 = format!("{name}d1");
        h.on(0, move || drop(Desc::open(&d1, true, |_| {}).unwrap()));
        s.close(&mut h);
        assert!(call(&mut h, move |d| ferrite_raid::delete(name, d)).is_ok());
    }
}

#[test]
fn remove_then_readd_rebuilds_while_io_continues() {
    let mut h = Harness::new(3, 23);
    let mut s = raid1(&mut h, "R1", 2);
    // Small windows: many rounds of the machine.
    assert!(ferrite_raid::set_options(Some(1024), None).is_ok());
    let r = call(&mut h, |d| ferrite_raid::remove_base_bdev("R1d1", d));
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(member_names("R1"), vec![Some("R1d0".into()), None]);
    // Degraded writes.
    for i in 0..10 {
        s.write(&mut h, i * 37, 20);
    }
    h.run_until_idle();
    all_ok("degraded writes");
    s.verify(&mut h);
    // Removing again: not a member any more.
    let e = call(&mut h, |d| ferrite_raid::remove_base_bdev("R1d1", d)).unwrap_err();
    assert_eq!(e.errno(), libc::ENODEV);
    // Re-add the same disk (stale data) and rebuild while writes go on.
    ferrite_raid::set_rebuild_pause("R1", Some(RebuildState::Locking));
    let r = call(&mut h, |d| ferrite_raid::add_base_bdev("R1", "R1d1", d));
    assert!(r.is_ok(), "{r:?}");
    let v = info("R1").unwrap();
    assert_eq!(v["process"]["type"], "rebuild");
    assert_eq!(v["process"]["target"], "R1d1");
    assert_eq!(v["process"]["progress"]["blocks"], 0);
    assert_eq!(v["process"]["progress"]["percent"], 0);
    assert_eq!(v["num_base_bdevs_operational"], 2);
    // Only one rebuild at a time.
    let e = call(&mut h, |d| ferrite_raid::add_base_bdev("R1", "R1d1", d)).unwrap_err();
    assert_eq!(e.errno(), libc::EPERM, "{e}");
    ferrite_raid::set_rebuild_pause("R1", None);
    ferrite_raid::resume_rebuild("R1");
    let mut rng = Rng(5);
    let mut saw_progress = false;
    while ferrite_raid::rebuild_state("R1").is_some() {
        for _ in 0..3 {
            let n = 1 + rng.below(24);
            let off = rng.below(BLOCKS - n);
            s.write(&mut h, off, n);
        }
        for _ in 0..5 {
            h.poll_all();
        }
        if let Some(v) = info("R1") {
            if let Some(b) = v["process"]["progress"]["blocks"].as_u64() {
                saw_progress |= b > 0 && b < BLOCKS;
            }
        }
    }
    h.run_until_idle();
    all_ok("writes during rebuild");
    assert!(saw_progress, "progress never reported mid-way");
    let v = info("R1").unwrap();
    assert!(v.get("process").is_none(), "{v}");
    assert_eq!(v["num_base_bdevs_operational"], 2);
    s.verify(&mut h);
    for (i, d) in s.disks.iter().enumerate() {
        assert!(
            d.read(0, BLOCKS) == s.model,
            "member {i} differs after rebuild"
        );
    }
    // The rebuilt member serves reads now.
    let before = s.disks[1].reads.load(Ordering::SeqCst);
    for i in 0..8 {
        let (ch, arena) = (s.ch.as_ref().unwrap(), &s.arena);
        h.on(1, || read_at(ch, arena, i * 8, 8, 900 + i));
    }
    h.run_until_idle();
    all_ok("reads after rebuild");
    assert!(s.disks[1].reads.load(Ordering::SeqCst) > before);
    // Adding a third disk to a full raid1: no empty slot.
    add_disk(&mut h, "R1x");
    let e = call(&mut h, |d| ferrite_raid::add_base_bdev("R1", "R1x", d)).unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL);
    s.close(&mut h);
    assert!(call(&mut h, |d| ferrite_raid::delete("R1", d)).is_ok());
    assert!(ferrite_raid::set_options(Some(1024), None).is_ok());
}

#[test]
fn hot_remove_of_a_member_degrades_and_last_member_loss_goes_offline() {
    let mut h = Harness::new(2, 24);
    let mut s = raid1(&mut h, "H1", 2);
    let gone = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let g2 = gone.clone();
    h.on(0, move || {
        ferrite_bdev::unregister("H1d0", None, move |r| {
            assert!(r.is_ok());
            g2.store(true, Ordering::SeqCst);
        })
    });
    run_until(&mut h, "member hot-remove", || gone.load(Ordering::SeqCst));
    h.run_until_idle();
    assert_eq!(info("H1").unwrap()["state"], "online");
    assert_eq!(info("H1").unwrap()["num_base_bdevs_operational"], 1);
    s.write(&mut h, 3, 9);
    h.run_until_idle();
    all_ok("writes after hot-remove");
    s.verify(&mut h);
    // Losing the last member: offline. The raid bdev goes away once its user closes it.
    let p = start_call(&mut h, |d| ferrite_raid::remove_base_bdev("H1d1", d));
    h.run_until_idle();
    assert!(
        p.lock().unwrap().is_none(),
        "waits for the raid bdev's user"
    );
    s.close(&mut h);
    run_until(&mut h, "offline", || p.lock().unwrap().is_some());
    assert!(p.lock().unwrap().take().unwrap().is_ok());
    h.run_until_idle();
    assert!(ferrite_bdev::lookup("H1").is_none());
    // Offline with no member left: forgotten (as SPDK).
    assert!(info("H1").is_none());
    let e = call(&mut h, |d| ferrite_raid::delete("H1", d)).unwrap_err();
    assert_eq!(e.errno(), libc::ENODEV);
}

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

/// The write-intent bitmap: a member removed in sync and added back copies only the regions
/// written while it was away (64 KiB regions: 128 blocks); a failed member, or another disk
/// in its slot, gets a full rebuild.
#[test]
fn returning_member_resyncs_only_what_it_missed() {
    const BIG: u64 = 8192;
    let mut h = Harness::new(2, 400);
    setup(&mut h);
    let disks: Vec<Arc<Disk>> = (0..2).map(|_| Disk::new(512, BIG)).collect();
    let (d2, names) = (disks.clone(), ["W1d0", "W1d1"]);
    h.on(0, move || {
        for (d, n) in d2.iter().zip(names) {
            register_disk(n, d, None);
        }
    });
    let o = RaidOpts {
        name: "W1".into(),
        raid_level: "raid1".into(),
        base_bdevs: names.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    assert!(call(&mut h, move |d| ferrite_raid::create(&o, d)).is_ok());
    let desc = h.on(1, || Desc::open("W1", true, |_| {}).unwrap());
    let ch = h.on(1, || desc.channel().unwrap());
    let mut s = Setup {
        disks,
        desc: Some(desc),
        ch: Some(ch),
        model: vec![0; BIG as usize * BS],
        arena: Arena::default(),
        tag: 0,
    };
    for i in 0..16 {
        s.write(&mut h, i * 512, 64);
    }
    h.run_until_idle();
    all_ok("fill");

    // Removed in sync; writes touch regions 0, 7 and 39-41 while it is away.
    assert!(call(&mut h, |d| ferrite_raid::remove_base_bdev("W1d1", d)).is_ok());
    s.write(&mut h, 0, 10);
    s.write(&mut h, 1000, 10);
    s.write(&mut h, 5000, 300);
    h.run_until_idle();
    all_ok("writes while away");
    // Back: a resync. Writes meanwhile, to clean and to marked regions, reach it directly.
    ferrite_raid::set_rebuild_pause("W1", Some(RebuildState::Reading));
    assert!(call(&mut h, |d| ferrite_raid::add_base_bdev("W1", "W1d1", d)).is_ok());
    s.write(&mut h, 3000, 20); // clean region 23
    s.write(&mut h, 5100, 8); // marked region 39
    h.run_until_idle();
    ferrite_raid::set_rebuild_pause("W1", None);
    ferrite_raid::resume_rebuild("W1");
    run_until(&mut h, "resync", || {
        ferrite_raid::rebuild_state("W1").is_none()
    });
    h.run_until_idle();
    all_ok("writes during resync");
    let rep = ferrite_raid::last_rebuild("W1").unwrap();
    assert!(rep.resync, "{rep:?}");
    assert_eq!(rep.error, None);
    assert_eq!(rep.total_blocks, BIG);
    // Regions 0, 7, 39, 40, 41 (the write to region 23 came after the return).
    assert_eq!(rep.copied_blocks, 5 * 128, "{rep:?}");
    for (i, d) in s.disks.iter().enumerate() {
        let got = d.read(0, BIG);
        let bad: Vec<usize> = (0..BIG as usize)
            .filter(|b| got[b * BS..(b + 1) * BS] != s.model[b * BS..(b + 1) * BS])
            .collect();
        assert!(
            bad.is_empty(),
            "member {i}: {} blocks differ, first {:?}",
            bad.len(),
            &bad[..bad.len().min(10)]
        );
    }
    s.verify(&mut h);
    for (i, d) in s.disks.iter().enumerate() {
        assert!(d.read(0, BIG) == s.model, "member {i} after resync");
    }

    // Nobody away any more: a later departure starts from a clean bitmap.
    assert!(call(&mut h, |d| ferrite_raid::remove_base_bdev("W1d1", d)).is_ok());
    s.write(&mut h, 8000, 1);
    h.run_until_idle();
    assert!(call(&mut h, |d| ferrite_raid::add_base_bdev("W1", "W1d1", d)).is_ok());
    run_until(&mut h, "resync 2", || {
        ferrite_raid::rebuild_state("W1").is_none()
    });
    h.run_until_idle();
    let rep = ferrite_raid::last_rebuild("W1").unwrap();
    assert!(rep.resync);
    assert_eq!(rep.copied_blocks, 128, "{rep:?}");

    // A member that failed comes back: everything is copied.
    s.disks[1].fail_write.store(true, Ordering::SeqCst);
    s.write(&mut h, 64, 8);
    h.run_until_idle();
    all_ok("write with a failing member");
    assert_eq!(info("W1").unwrap()["num_base_bdevs_operational"], 1);
    s.disks[1].fail_write.store(false, Ordering::SeqCst);
    assert!(call(&mut h, |d| ferrite_raid::add_base_bdev("W1", "W1d1", d)).is_ok());
    run_until(&mut h, "rebuild", || {
        ferrite_raid::rebuild_state("W1").is_none()
    });
    h.run_until_idle();
    let rep = ferrite_raid::last_rebuild("W1").unwrap();
    assert!(!rep.resync, "{rep:?}");
    assert_eq!(rep.copied_blocks, BIG);

    // Another disk in the slot of one that left in sync: a full rebuild too.
    assert!(call(&mut h, |d| ferrite_raid::remove_base_bdev("W1d1", d)).is_ok());
    let other = Disk::new(512, BIG);
    let o2 = other.clone();
    h.on(0, move || {
        register_disk("W1x", &o2, None);
    });
    assert!(call(&mut h, |d| ferrite_raid::add_base_bdev("W1", "W1x", d)).is_ok());
    run_until(&mut h, "rebuild x", || {
        ferrite_raid::rebuild_state("W1").is_none()
    });
    h.run_until_idle();
    let rep = ferrite_raid::last_rebuild("W1").unwrap();
    assert!(!rep.resync);
    assert_eq!(rep.copied_blocks, BIG);
    assert!(other.read(0, BIG) == s.model);
    s.close(&mut h);
    assert!(call(&mut h, |d| ferrite_raid::delete("W1", d)).is_ok());
}
