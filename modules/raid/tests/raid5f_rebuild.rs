//! raid5f rebuild: a replaced member is reconstructed stripe by stripe (XOR of the others)
//! by the same state machine as raid1, while full-stripe writes continue; the machine loses
//! a member (the target, a source; by RPC or by I/O error) in every state.
//!
//! Every test here uses 8 KiB rebuild windows (`bdev_raid_set_options` is global to the
//! process: tests of this binary must not set different values).

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
const STRIP: u64 = 8; // 4 KiB
const DISK: u64 = 512; // member blocks: 64 strip rows

struct R5 {
    n: usize,
    disks: Vec<Arc<Disk>>,
    desc: Option<Desc>,
    ch: Option<BdevChannel>,
    model: Vec<u8>,
    arena: Arena,
    tag: u64,
}

impl R5 {
    fn stripe(&self) -> u64 {
        STRIP * (self.n as u64 - 1)
    }
    fn blocks(&self) -> u64 {
        DISK * (self.n as u64 - 1)
    }

    /// Writes stripe `s` with fresh data (recorded in the model) without waiting.
    fn write_stripe(&mut self, h: &mut Harness, s: u64) {
        self.tag += 1;
        let st = self.stripe();
        let data = noise(self.tag * 131 + s, st as usize * BS);
        let at = (s * st) as usize * BS;
        self.model[at..at + data.len()].copy_from_slice(&data);
        let (ch, arena, tag) = (self.ch.as_ref().unwrap(), &self.arena, self.tag);
        h.on(1, || write_at(ch, arena, s * st, data, tag));
    }

    fn verify(&self, h: &mut Harness) {
        let (ch, arena) = (self.ch.as_ref().unwrap(), &self.arena);
        let blocks = self.blocks();
        let idx = h.on(1, || read_at(ch, arena, 0, blocks, 77_777));
        h.run_until_idle();
        let d = take_done();
        assert!(d.iter().all(|d| d.status == IoStatus::Success), "{d:?}");
        assert!(self.arena.get(idx) == self.model, "raid content differs");
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

/// Every stripe: data strips on their members equal the model, parity is their XOR.
fn check_layout(disks: &[Arc<Disk>], model: &[u8], what: &str) {
    let n = disks.len();
    let stripe = STRIP * (n as u64 - 1);
    let sbytes = STRIP as usize * BS;
    for s in 0..DISK / STRIP {
        let p = n - 1 - (s % n as u64) as usize;
        let mut parity = vec![0u8; sbytes];
        for k in 0..n - 1 {
            let m = if k < p { k } else { k + 1 };
            let at = (s * stripe + k as u64 * STRIP) as usize * BS;
            let want = &model[at..at + sbytes];
            assert!(
                disks[m].read(s * STRIP, STRIP) == want,
                "{what}: stripe {s} strip {k} on member {m}"
            );
            for (x, y) in parity.iter_mut().zip(want) {
                *x ^= *y;
            }
        }
        assert!(
            disks[p].read(s * STRIP, STRIP) == parity,
            "{what}: stripe {s}: parity on member {p}"
        );
    }
}

fn raid5f(h: &mut Harness, name: &str, n: usize) -> R5 {
    setup(h);
    let disks: Vec<Arc<Disk>> = (0..n).map(|_| Disk::new(512, DISK)).collect();
    let names: Vec<String> = (0..n).map(|i| format!("{name}d{i}")).collect();
    let (d2, n2) = (disks.clone(), names.clone());
    h.on(0, move || {
        for (d, nm) in d2.iter().zip(&n2) {
            register_disk(nm, d, None);
        }
    });
    let o = RaidOpts {
        name: name.into(),
        raid_level: "raid5f".into(),
        base_bdevs: names,
        strip_size_kb: 4,
        ..Default::default()
    };
    let r = call(h, move |d| ferrite_raid::create(&o, d));
    assert!(r.is_ok(), "{r:?}");
    let nm = name.to_string();
    let desc = h.on(1, move || Desc::open(&nm, true, |_| {}).unwrap());
    let ch = h.on(1, || desc.channel().unwrap());
    let mut r = R5 {
        n,
        disks,
        desc: Some(desc),
        ch: Some(ch),
        model: vec![0; (DISK * (n as u64 - 1)) as usize * BS],
        arena: Arena::default(),
        tag: 0,
    };
    for s in 0..DISK / STRIP {
        r.write_stripe(h, s);
    }
    h.run_until_idle();
    all_ok("fill");
    r
}

fn add_disk(h: &mut Harness, name: &str) -> Arc<Disk> {
    let d = Disk::new(512, DISK);
    let (d2, n2) = (d.clone(), name.to_string());
    h.on(0, move || {
        register_disk(&n2, &d2, None);
    });
    d
}

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

/// Lose a member, write degraded, add a fresh disk: rebuilt while full-stripe writes go on
/// (above and below the rebuild point, and into the window being copied); afterwards every
/// stripe's data and parity are right on every member, and reads use the new member.
fn rebuild_case(n: usize, seed: u64) {
    let mut h = Harness::new(2, seed);
    let name = format!("G{seed}");
    let mut r = raid5f(&mut h, &name, n);
    // Windows of two strip rows: many rounds of the machine.
    assert!(ferrite_raid::set_options(Some(8), None).is_ok());
    let victim = format!("{name}d1");
    assert!(call(&mut h, move |d| ferrite_raid::remove_base_bdev(&victim, d)).is_ok());
    for s in [0u64, 5, 33, 63] {
        r.write_stripe(&mut h, s);
    }
    h.run_until_idle();
    all_ok("degraded writes");
    r.verify(&mut h);
    let tname = format!("{name}t");
    let target = add_disk(&mut h, &tname);
    ferrite_raid::set_rebuild_pause(&name, Some(RebuildState::Writing));
    let (nm, tn) = (name.clone(), tname.clone());
    let res = call(&mut h, move |d| ferrite_raid::add_base_bdev(&nm, &tn, d));
    assert!(res.is_ok(), "{res:?}");
    let v = info(&name).unwrap();
    assert_eq!(v["process"]["type"], "rebuild");
    assert_eq!(v["process"]["target"], tname.as_str());
    assert_eq!(v["num_base_bdevs_operational"], n);
    let nm = name.clone();
    run_until(&mut h, "pause in Writing", || {
        ferrite_raid::rebuild_state(&nm) == Some((RebuildState::Writing, true))
    });
    // The window is read and not yet written: a write to it waits for the window (else the
    // copy would overwrite it on the new member with older data); one elsewhere does not.
    r.write_stripe(&mut h, 0);
    h.run_until_idle();
    assert_eq!(
        done_count(),
        0,
        "a write into the window being copied went through"
    );
    r.write_stripe(&mut h, 40);
    h.run_until_idle();
    assert_eq!(done_count(), 1, "a write outside the window waited");
    ferrite_raid::set_rebuild_pause(&name, None);
    ferrite_raid::resume_rebuild(&name);
    let mut rng = Rng(seed | 1);
    let mut saw_progress = false;
    let rows = DISK / STRIP;
    while ferrite_raid::rebuild_state(&name).is_some() {
        // Writes at the rebuild point (the window), below and above it.
        let at = info(&name).unwrap()["process"]["progress"]["blocks"]
            .as_u64()
            .unwrap_or(0);
        let cur = (at / r.stripe()).min(rows - 1);
        r.write_stripe(&mut h, cur);
        r.write_stripe(&mut h, rng.below(rows));
        for _ in 0..4 {
            h.poll_all();
        }
        if let Some(v) = info(&name) {
            if let Some(b) = v["process"]["progress"]["blocks"].as_u64() {
                saw_progress |= b > 0 && b < r.blocks();
            }
        }
    }
    h.run_until_idle();
    all_ok("writes during rebuild");
    assert!(
        saw_progress,
        "progress never reported mid-way: {:?}",
        ferrite_raid::last_rebuild(&name)
    );
    let rep = ferrite_raid::last_rebuild(&name).unwrap();
    assert_eq!(rep.error, None, "{rep:?}");
    assert_eq!(rep.copied_blocks, r.blocks(), "{rep:?}");
    let v = info(&name).unwrap();
    assert!(v.get("process").is_none(), "{v}");
    assert_eq!(v["num_base_bdevs_operational"], n, "{v}");
    let mut members = r.disks.clone();
    members[1] = target.clone();
    check_layout(&members, &r.model, "after rebuild");
    r.verify(&mut h);
    // The new member serves reads again (no reconstruction).
    let before = target.reads.load(Ordering::SeqCst);
    r.verify(&mut h);
    assert!(target.reads.load(Ordering::SeqCst) > before);
    r.close(&mut h);
    let nm = name.clone();
    assert!(call(&mut h, move |d| ferrite_raid::delete(&nm, d)).is_ok());
}

#[test]
fn raid5f_rebuilds_a_replaced_member_while_writes_continue() {
    rebuild_case(3, 600);
    rebuild_case(4, 601);
}

#[derive(Debug, Clone, Copy)]
enum Loss {
    /// The member being rebuilt, removed by RPC: the raid stays degraded.
    Target,
    /// A source, removed by RPC: a second member lost, the raid goes offline.
    Source,
    /// The target fails its write.
    TargetFails,
    /// A source fails its read: offline.
    SourceFails,
}

fn loss_case(state: RebuildState, loss: Loss, seed: u64) {
    let mut h = Harness::new(2, seed);
    let name = format!("L{seed}");
    let mut r = raid5f(&mut h, &name, 3);
    assert!(ferrite_raid::set_options(Some(8), None).is_ok());
    let victim = format!("{name}d2");
    assert!(call(&mut h, move |d| ferrite_raid::remove_base_bdev(&victim, d)).is_ok());
    let tname = format!("{name}t");
    let target = add_disk(&mut h, &tname);
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
    // Writes while paused: into the window (which may be locked) and far from it.
    let at = info(&name).unwrap()["process"]["progress"]["blocks"]
        .as_u64()
        .unwrap();
    let row = at / r.stripe();
    r.write_stripe(&mut h, row);
    r.write_stripe(&mut h, DISK / STRIP - 1);
    h.run_until_idle();
    let pending = match loss {
        Loss::Target => {
            let t = tname.clone();
            Some(start_call(&mut h, move |d| {
                ferrite_raid::remove_base_bdev(&t, d)
            }))
        }
        Loss::Source => {
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
            r.disks[0].fail_read.store(true, Ordering::SeqCst);
            None
        }
    };
    h.run_until_idle();
    ferrite_raid::set_rebuild_pause(&name, None);
    ferrite_raid::resume_rebuild(&name);
    h.run_until_idle();
    let offline = matches!(loss, Loss::Source | Loss::SourceFails);
    let mut r = Some(r);
    if offline {
        if let Some(r) = r.take() {
            r.close(&mut h);
        }
    }
    if let Some(p) = pending {
        run_until(&mut h, "removal", || p.lock().unwrap().is_some());
        let res = p.lock().unwrap().take().unwrap();
        assert!(res.is_ok(), "{state:?} {loss:?}: {res:?}");
    }
    h.run_until_idle();
    let ctx = format!("{state:?}/{loss:?}");
    assert!(ferrite_raid::rebuild_state(&name).is_none(), "{ctx}");
    let v = info(&name).unwrap();
    assert!(v.get("process").is_none(), "{ctx}: {v}");
    if offline {
        assert_eq!(v["state"], "offline", "{ctx}");
        assert!(ferrite_bdev::lookup(&name).is_none(), "{ctx}");
        take_done();
    } else {
        all_ok(&ctx);
        let r = r.as_mut().unwrap();
        assert_eq!(v["state"], "online", "{ctx}");
        assert_eq!(v["num_base_bdevs_operational"], 2, "{ctx}: {v}");
        // Degraded but intact: every stripe reads back (reconstructed where needed).
        r.verify(&mut h);
        let t = tname.clone();
        h.on(0, move || drop(Desc::open(&t, true, |_| {}).unwrap()));
    }
    if let Some(r) = r {
        r.close(&mut h);
    }
    let nm = name.clone();
    assert!(
        call(&mut h, move |d| ferrite_raid::delete(&nm, d)).is_ok(),
        "{ctx}"
    );
}

#[test]
fn raid5f_rebuild_loses_a_member_in_every_state() {
    let mut seed = 700;
    for st in [
        RebuildState::Locking,
        RebuildState::Reading,
        RebuildState::Writing,
        RebuildState::Advancing,
    ] {
        for loss in [Loss::Target, Loss::Source] {
            seed += 1;
            loss_case(st, loss, seed);
        }
    }
    loss_case(RebuildState::Writing, Loss::TargetFails, 790);
    loss_case(RebuildState::Reading, Loss::SourceFails, 791);
}
