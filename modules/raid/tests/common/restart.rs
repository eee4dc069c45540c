//! Helpers for the superblock tests: disks that survive a "restart" (unregister, register
//! again over the same data), raids with a superblock, stepping a paused rebuild, settling
//! examine.

use std::sync::atomic::{AtomicUsize, Ordering};

use ferrite_bdev::Desc;
use ferrite_raid::superblock::Superblock;
use ferrite_raid::{RaidOpts, RebuildState};

use super::*;

pub const BS: usize = 512;
/// 2 MiB disks: 1 MiB superblock area, 1 MiB of data.
pub const DISK_BLOCKS: u64 = 4096;
pub const OFF: u64 = 2048;

pub struct Disks {
    pub disks: Vec<Arc<Disk>>,
    pub names: Vec<String>,
    pub uuids: Vec<Uuid>,
}

pub fn disks(h: &mut Harness, prefix: &str, n: usize) -> Disks {
    disks_with_cache(h, prefix, n, false)
}

/// As [`disks`], registered as having a volatile write cache (`write_cache`): flushes then
/// go to them.
pub fn disks_with_cache(h: &mut Harness, prefix: &str, n: usize, cache: bool) -> Disks {
    let d = Disks {
        disks: (0..n).map(|_| Disk::new(512, DISK_BLOCKS)).collect(),
        names: (0..n).map(|i| format!("{prefix}{i}")).collect(),
        uuids: (0..n).map(|_| Uuid::new_v4()).collect(),
    };
    for i in 0..n {
        d.disks[i].write_cache.store(cache, Ordering::SeqCst);
        register(h, &d, i);
    }
    d
}

pub fn register(h: &mut Harness, d: &Disks, i: usize) {
    let (disk, name, uuid) = (d.disks[i].clone(), d.names[i].clone(), d.uuids[i]);
    h.on(0, move || {
        register_disk(&name, &disk, Some(uuid));
    });
    h.run_until_idle();
}

pub fn unregister(h: &mut Harness, name: &str) {
    let done = Arc::new(AtomicUsize::new(0));
    let d2 = done.clone();
    let n = name.to_string();
    h.on(0, move || {
        ferrite_bdev::unregister(&n, None, move |r| {
            assert!(r.is_ok());
            d2.store(1, Ordering::SeqCst);
        })
    });
    run_until(h, "unregister", || done.load(Ordering::SeqCst) == 1);
    h.run_until_idle();
}

pub fn sb_of(disk: &Disk, uuid: Uuid) -> Superblock {
    Superblock::decode(&disk.read(0, 8), 512, DISK_BLOCKS, uuid).unwrap()
}

pub fn io_channel(h: &mut Harness, name: &str) -> (Desc, BdevChannel) {
    let n = name.to_string();
    let desc = h.on(1, move || Desc::open(&n, true, |_| {}).unwrap());
    let ch = h.on(1, || desc.channel().unwrap());
    (desc, ch)
}

pub fn close(h: &mut Harness, desc: Desc, ch: BdevChannel) {
    h.on(1, move || drop(ch));
    h.on(1, move || drop(desc));
    h.run_until_idle();
}

pub fn write(h: &mut Harness, ch: &BdevChannel, arena: &Arena, off: u64, data: Vec<u8>) {
    h.on(1, || write_at(ch, arena, off, data, 1));
    h.run_until_idle();
    assert!(take_done().iter().all(|d| d.status == IoStatus::Success));
}

pub fn read(h: &mut Harness, ch: &BdevChannel, off: u64, n: u64) -> Vec<u8> {
    let arena = Arena::default();
    let i = h.on(1, || read_at(ch, &arena, off, n, 2));
    h.run_until_idle();
    assert!(take_done().iter().all(|d| d.status == IoStatus::Success));
    arena.get(i)
}

pub fn create(h: &mut Harness, name: &str, level: &str, strip: u32, d: &Disks) -> String {
    let uuid = Uuid::new_v4().to_string();
    let o = RaidOpts {
        name: name.into(),
        raid_level: level.into(),
        base_bdevs: d.names.clone(),
        strip_size_kb: strip,
        uuid: Some(uuid.clone()),
        superblock: true,
    };
    let r = call(h, move |done| ferrite_raid::create(&o, done));
    assert!(r.is_ok(), "{r:?}");
    uuid
}

/// Deletes the raid (superblocks stay) and unregisters its disks: the "shutdown".
pub fn shutdown(h: &mut Harness, name: &str, d: &Disks) {
    let n = name.to_string();
    assert!(call(h, move |done| ferrite_raid::delete(&n, done)).is_ok());
    for nm in &d.names {
        if ferrite_bdev::lookup(nm).is_some() {
            unregister(h, nm);
        }
    }
}

/// Writes `data` over the whole raid `name`.
pub fn fill(h: &mut Harness, name: &str, data: &[u8]) {
    let (desc, ch) = io_channel(h, name);
    let arena = Arena::default();
    write(h, &ch, &arena, 0, data.to_vec());
    close(h, desc, ch);
}

/// Steps a rebuild paused on entering Locking by `windows` windows.
pub fn step_rebuild(h: &mut Harness, name: &str, windows: usize) {
    for w in 0..windows {
        ferrite_raid::resume_rebuild(name);
        h.run_until_idle();
        assert_eq!(
            ferrite_raid::rebuild_state(name),
            Some((RebuildState::Locking, true)),
            "window {w}: {:?} {:?}",
            ferrite_raid::last_rebuild(name),
            info(name)
        );
    }
}

/// Runs until raid `name`'s rebuild has ended; its report.
pub fn rebuild_report(h: &mut Harness, name: &str) -> ferrite_raid::RebuildReport {
    run_until(h, "rebuild", || {
        ferrite_raid::rebuild_state(name).is_none() && ferrite_raid::last_rebuild(name).is_some()
    });
    h.run_until_idle();
    ferrite_raid::last_rebuild(name).unwrap()
}

/// Runs `wait_for_examine` and waits for its callback; returns whether raid `name` was
/// registered when the waiter ran.
pub fn settle(h: &mut Harness, name: &str) -> bool {
    let seen: Arc<std::sync::Mutex<Option<bool>>> = Arc::default();
    let (s2, n2) = (seen.clone(), name.to_string());
    h.on(0, move || {
        ferrite_bdev::wait_for_examine(move || {
            *s2.lock().unwrap() = Some(ferrite_bdev::lookup(&n2).is_some());
        })
    });
    run_until(h, "examine settled", || seen.lock().unwrap().is_some());
    h.run_until_idle();
    let r = seen.lock().unwrap().unwrap();
    r
}

/// The bitmap's first bits on `disk` (byte 64 KiB + 64: the first region byte).
pub fn bitmap_byte(disk: &Disk) -> u8 {
    disk.read(128, 1)[64]
}
