//! Raids with superblocks across process restarts, through the real binary on aio bdevs
//! (files that outlive the process): reassembly with no RPC (same UUID), degraded or waiting
//! assembly when a member's file is left out of the configuration or deleted, members taken
//! back when they return, data written by `ferrite bench` in between, and SIGKILL in the
//! middle of a raid1 rebuild, 20 times: the raid reassembles, the source is intact, the
//! rebuild resumes and completes with identical members.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Data starts 1 MiB into every member (the superblock area).
const DATA_OFFSET: u64 = 1 << 20;

/// A directory for data files on the disk (the target dir), removed on drop.
struct DataDir(PathBuf);

impl DataDir {
    fn new(tag: &str) -> DataDir {
        let p = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("raid_restart-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        DataDir(p)
    }

    /// A file of `len` bytes filled with `fill(i)` for its i-th 4 KiB page.
    fn file(&self, name: &str, len: u64, seed: u64) -> String {
        let p = self.0.join(name);
        let mut f = std::fs::File::create(&p).unwrap();
        let mut page = vec![0u8; 4096];
        for i in 0..len / 4096 {
            pattern(seed, i, &mut page);
            f.write_all(&page).unwrap();
        }
        p.display().to_string()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deterministic content of page `i` for `seed` (0: zeroes).
fn pattern(seed: u64, i: u64, page: &mut [u8]) {
    if seed == 0 {
        page.fill(0);
        return;
    }
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03);
    for c in page.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
    }
}

/// The bytes of `path` from `DATA_OFFSET` on.
fn data_area(path: &str) -> Vec<u8> {
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(DATA_OFFSET)).unwrap();
    let mut v = Vec::new();
    f.read_to_end(&mut v).unwrap();
    v
}

/// A configuration with one `bdev_aio_create` per (name, file, uuid), preceded by `extra`.
fn config(dir: &TempDir, tag: &str, extra: &[Value], bdevs: &[(&str, &str, &str)]) -> String {
    let mut entries: Vec<Value> = extra.to_vec();
    for (name, file, uuid) in bdevs {
        entries.push(json!({"method": "bdev_aio_create",
                            "params": {"name": name, "filename": file, "uuid": uuid}}));
    }
    let doc = json!({"subsystems": [{"subsystem": "bdev", "config": entries}]});
    let p = dir.join(&format!("{tag}.json"));
    std::fs::write(&p, doc.to_string()).unwrap();
    p.display().to_string()
}

fn raids(t: &Target) -> Vec<Value> {
    t.call("bdev_raid_get_bdevs", json!({"category": "all"}))
        .as_array()
        .unwrap()
        .clone()
}

fn raid(t: &Target, name: &str) -> Option<Value> {
    raids(t).into_iter().find(|r| r["name"] == name)
}

fn wait_raid(t: &Target, name: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(r) = raid(t, name) {
            if f(&r) {
                return r;
            }
            last = r;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: {what}: last seen {last}\n{}",
            t.log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn stop(mut t: Target) {
    t.signal(libc::SIGTERM);
    assert_eq!(t.exit_code(Duration::from_secs(30)), 0, "{}", t.log_text());
}

fn bench_verify(cfg: &str, bdev: &str) {
    let mut cmd = Command::new(BIN);
    cmd.args(["bench", "-c", cfg, "-q", "8", "-o", "4k", "-w", "verify"])
        .args(["-t", "0.5", "-T", bdev, "--output-json"]);
    let r = run(&mut cmd, None);
    assert!(r.ok(), "{bdev}: {}", r.all());
    assert!(!r.stderr.contains("verify failed"), "{bdev}: {}", r.stderr);
    let res = &r.json()["results"][0];
    assert_eq!(res["job"], bdev, "{}", r.stdout);
    assert_eq!(res["io_failed"], 0, "{}", r.stdout);
}

const U: [&str; 6] = [
    "aaaaaaaa-0000-4000-8000-000000000000",
    "aaaaaaaa-0000-4000-8000-000000000001",
    "bbbbbbbb-0000-4000-8000-000000000000",
    "bbbbbbbb-0000-4000-8000-000000000001",
    "cccccccc-0000-4000-8000-000000000000",
    "cccccccc-0000-4000-8000-000000000001",
];

#[test]
fn superblock_raids_reassemble_after_restart() {
    let dir = TempDir::new("raid-restart");
    let data = DataDir::new("sb");
    let size = 8 << 20;
    let a0 = data.file("a0.img", size, 0);
    let a1 = data.file("a1.img", size, 0);
    let b0 = data.file("b0.img", size, 0);
    let b1 = data.file("b1.img", size, 0);
    let all = config(
        &dir,
        "all",
        &[],
        &[
            ("A0", &a0, U[0]),
            ("A1", &a1, U[1]),
            ("B0", &b0, U[2]),
            ("B1", &b1, U[3]),
        ],
    );

    // Target a: the raids are created by RPC, then it stops.
    let a = Target::start_in(&dir, "a", &["-c", &all]);
    a.call(
        "bdev_raid_create",
        json!({"name": "R1", "raid_level": "raid1", "base_bdevs": ["A0", "A1"],
               "superblock": true}),
    );
    a.call(
        "bdev_raid_create",
        json!({"name": "R0", "raid_level": "raid0", "base_bdevs": ["B0", "B1"],
               "strip_size_kb": 64, "superblock": true}),
    );
    let u1 = raid(&a, "R1").unwrap()["uuid"].clone();
    let u0 = raid(&a, "R0").unwrap()["uuid"].clone();
    for r in raids(&a) {
        assert_eq!(r["state"], "online", "{r}");
    }
    stop(a);

    // Another process on the same files: the raids assemble themselves, data goes through.
    bench_verify(&all, "R1");
    bench_verify(&all, "R0");
    let (d0, d1) = (data_area(&a0), data_area(&a1));
    assert!(d0.iter().any(|b| *b != 0), "bench wrote nothing to R1");
    assert!(d0 == d1, "R1's members differ after a clean run");

    // Target b: aio bdevs only; both raids online with their UUIDs, no RPC.
    let b = Target::start_in(&dir, "b", &["-c", &all]);
    let r1 = wait_raid(&b, "R1", "online", |r| r["state"] == "online");
    assert_eq!(r1["uuid"], u1);
    assert_eq!(r1["num_base_bdevs_operational"], 2, "{r1}");
    let r0 = wait_raid(&b, "R0", "online", |r| r["state"] == "online");
    assert_eq!(r0["uuid"], u0);
    assert_eq!(b.bdev("R1")["uuid"], u1);
    assert_eq!(b.bdev("R0")["uuid"], u0);
    assert_eq!(b.bdev("R0")["num_blocks"], 2 * (size - DATA_OFFSET) / 512);
    // Their configuration lives in the superblocks, not in save_config.
    let saved = b.save_config().to_string();
    assert!(!saved.contains("bdev_raid_create"), "{saved}");
    stop(b);

    // One member of each left out of the configuration while recorded in sync: once the
    // configuration is loaded and examined, R1 (which can do without it) starts degraded;
    // R0 (raid0 cannot) waits for it.
    let half = config(&dir, "half", &[], &[("A0", &a0, U[0]), ("B1", &b1, U[3])]);
    let c = Target::start_in(&dir, "c", &["-c", &half]);
    let r1 = raid(&c, "R1").unwrap();
    assert_eq!(r1["state"], "online", "degraded at once: {r1}");
    assert_eq!(r1["uuid"], u1);
    assert_eq!(r1["num_base_bdevs_operational"], 1, "{r1}");
    assert_eq!(r1["num_base_bdevs_discovered"], 1, "{r1}");
    let r0 = raid(&c, "R0").unwrap();
    assert_eq!(r0["state"], "configuring", "{r0}");
    assert_eq!(r0["uuid"], u0);
    assert_eq!(r0["num_base_bdevs_discovered"], 1, "{r0}");
    stop(c);

    // All files again: A1, left behind while still listing itself in sync, is taken back
    // automatically as a returning member and rebuilt (the raid went on without it).
    let d = Target::start_in(&dir, "d", &["-c", &all]);
    wait_raid(&d, "R0", "online", |r| r["state"] == "online");
    let r1 = wait_raid(&d, "R1", "A1 back", |r| {
        r["state"] == "online" && r.get("process").is_none() && r["num_base_bdevs_operational"] == 2
    });
    assert_eq!(r1["base_bdevs_list"][1]["name"], "A1", "{r1}");
    assert!(
        d.log_text().contains("member 'A1' is back"),
        "{}",
        d.log_text()
    );
    // A1 leaves R1 by RPC while it runs (recorded missing in A0's superblock, and in its
    // own): a restart without it brings R1 up degraded at once; R0 still waits.
    d.call("bdev_raid_remove_base_bdev", json!({"name": "A1"}));
    assert_eq!(
        sb_member(&a1, 1).0,
        2,
        "A1's own superblock records it missing"
    );
    stop(d);
    let e = Target::start_in(&dir, "e", &["-c", &half]);
    let r1 = wait_raid(&e, "R1", "online degraded", |r| r["state"] == "online");
    assert_eq!(r1["uuid"], u1);
    assert_eq!(r1["num_base_bdevs_operational"], 1, "{r1}");
    assert_eq!(r1["num_base_bdevs_discovered"], 1, "{r1}");
    assert_eq!(raid(&e, "R0").unwrap()["state"], "configuring");
    stop(e);
    // The degraded raid1 serves data, written to A0 only (the persisted write-intent bitmap
    // records where).
    bench_verify(&half, "R1");
    assert!(data_area(&a0) != data_area(&a1));

    // Everything back: A1 (removed by RPC) is not put back silently; re-added by RPC, it is
    // resynced from the bitmap (it was not written while away) and the members are
    // identical again.
    let f = Target::start_in(&dir, "f", &["-c", &all]);
    let r1 = wait_raid(&f, "R1", "online", |r| r["state"] == "online");
    assert_eq!(r1["num_base_bdevs_operational"], 1, "{r1}");
    assert!(
        r1["write_intent_bitmap"]["dirty_regions"].as_u64().unwrap() > 0,
        "{r1}"
    );
    wait_raid(&f, "R0", "online", |r| r["state"] == "online");
    f.call(
        "bdev_raid_add_base_bdev",
        json!({"raid_bdev": "R1", "base_bdev": "A1"}),
    );
    wait_raid(&f, "R1", "rebuilt", |r| {
        r.get("process").is_none() && r["num_base_bdevs_operational"] == 2
    });
    assert!(
        f.log_text().contains("resync of 'A1' done"),
        "{}",
        f.log_text()
    );
    // The superblock update that records A1 in sync is written after the rebuild is reported
    // done: wait for it. Then the process is killed, not stopped: A1 was registered before
    // R1 came online but joined it later, and the shutdown removes bdevs in reverse
    // registration order (`ferrite_bdev::unregister_all`), so a clean stop would hot-remove
    // A1 from the running raid first and record it missing.
    wait_until(Duration::from_secs(10), "A1 recorded in sync", || {
        sb_member(&a0, 1).0 == 1 && sb_member(&a1, 1).0 == 1
    });
    let mut f = f;
    f.kill9();
    assert!(
        data_area(&a0) == data_area(&a1),
        "R1's members differ after the rebuild"
    );
    let g = Target::start_in(&dir, "g", &["-c", &all]);
    let r1 = wait_raid(&g, "R1", "online", |r| r["state"] == "online");
    assert_eq!(r1["num_base_bdevs_operational"], 2, "{r1}");
    stop(g);
}

/// The member table entry `slot` of the superblock on `path`: (state code, checkpoint).
fn sb_member(path: &str, slot: usize) -> (u32, u64) {
    let mut f = std::fs::File::open(path).unwrap();
    let mut b = vec![0u8; 512];
    f.read_exact(&mut b).unwrap();
    assert_eq!(&b[..8], b"FERAIDSB", "{path}");
    let o = 160 + 48 * slot;
    let st = u32::from_le_bytes(b[o + 32..o + 36].try_into().unwrap());
    let ck = u64::from_le_bytes(b[o + 36..o + 44].try_into().unwrap());
    (st, ck)
}

#[test]
fn sigkill_during_rebuild_twenty_times() {
    const KILLS: usize = 20;
    let dir = TempDir::new("raid-kill");
    let data = DataDir::new("kill");
    let size: u64 = 32 << 20;
    let a0 = data.file("a0.img", size, 7);
    let x = data.file("x.img", size, 0);
    let a1 = data.file("a1.img", size, 9);
    let source = data_area(&a0);
    // Small windows: the rebuild takes long enough to be killed in the middle.
    let opts = [json!({"method": "bdev_raid_set_options",
                       "params": {"process_window_size_kb": 32}})];
    let mut gen = 0usize;
    let uuid_of = |g: usize| format!("dddddddd-0000-4000-8000-{g:012}");

    // raid1 on A0 and X; X leaves, A1 (another bdev) comes in: a full rebuild from A0.
    let cfg0 = config(
        &dir,
        "cfg0",
        &opts,
        &[("A0", &a0, U[4]), ("X", &x, U[5]), ("A1", &a1, &uuid_of(0))],
    );
    let t = Target::start_in(&dir, "t0", &["-c", &cfg0]);
    t.call(
        "bdev_raid_create",
        json!({"name": "R", "raid_level": "raid1", "base_bdevs": ["A0", "X"],
               "superblock": true}),
    );
    let ruuid = raid(&t, "R").unwrap()["uuid"].clone();
    t.call("bdev_raid_remove_base_bdev", json!({"name": "X"}));
    t.call(
        "bdev_raid_add_base_bdev",
        json!({"raid_bdev": "R", "base_bdev": "A1"}),
    );
    let mut t = Some(t);
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut resumed_at_checkpoint = 0;
    let mut killed_resumed = 0;
    let mut rebuilds = 1;
    let started = Instant::now();
    for kill in 0..KILLS {
        let cur = t.take().unwrap();
        // Kill at a varied moment: right away, or once a chosen share is copied.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let aim = seed % 90;
        if aim >= 10 {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                let r = raid(&cur, "R").unwrap();
                let pct = r["process"]["progress"]["percent"].as_u64();
                if pct.is_none_or(|p| p >= aim) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let mut cur = cur;
        cur.kill9();
        let (state, ckpt) = sb_member(&a0, 1);
        // The source is untouched whatever happened.
        assert!(data_area(&a0) == source, "kill {kill}: the source changed");

        // Restart with the aio bdevs only (the member being rebuilt first).
        let cfg = config(
            &dir,
            &format!("cfg{}", kill + 1),
            &opts,
            &[("A1", &a1, &uuid_of(gen)), ("A0", &a0, U[4])],
        );
        let n = Target::start_in(&dir, &format!("t{}", kill + 1), &["-c", &cfg]);
        let r = wait_raid(&n, "R", "online", |r| r["state"] == "online");
        assert_eq!(r["uuid"], ruuid, "kill {kill}");
        if state == 4 {
            // It was being rebuilt: the rebuild resumes (at the checkpoint if the member
            // was taken back before the raid came online, else from the start).
            let log_has = |s: &str| n.log_text().contains(s);
            wait_until(Duration::from_secs(10), "rebuild resumed", || {
                log_has("resuming the rebuild") || log_has("rebuilding it again")
            });
            if ckpt > 0 && log_has(&format!("resuming the rebuild of slot 1 at block {ckpt}")) {
                resumed_at_checkpoint += 1;
            }
        }
        // Now and then the resumed rebuild is killed in turn (before it is done).
        let again = seed & 0x300 == 0x300
            && kill + 1 < KILLS
            && raid(&n, "R").unwrap().get("process").is_some();
        if again {
            killed_resumed += 1;
            t = Some(n);
            continue;
        }
        let r = wait_raid(&n, "R", "rebuild done", |r| {
            r.get("process").is_none() && r["num_base_bdevs_operational"] == 2
        });
        assert_eq!(r["base_bdevs_list"][1]["uuid"], uuid_of(gen), "{r}");
        // Done: the members are identical (the source intact).
        assert!(data_area(&a0) == source, "kill {kill}: the source changed");
        assert!(
            data_area(&a1) == source,
            "kill {kill}: the rebuilt member differs\n{}",
            n.log_text()
        );
        if kill + 1 < KILLS {
            // Start another full rebuild for the next kill: A1 leaves and comes back as
            // another bdev (new UUID) over scribbled data.
            n.call("bdev_raid_remove_base_bdev", json!({"name": "A1"}));
            n.call("bdev_aio_delete", json!({"name": "A1"}));
            gen += 1;
            {
                let mut f = std::fs::OpenOptions::new().write(true).open(&a1).unwrap();
                f.seek(SeekFrom::Start(DATA_OFFSET + (gen as u64 % 8) * 4096 * 97))
                    .unwrap();
                f.write_all(&vec![gen as u8; 1 << 20]).unwrap();
            }
            n.call(
                "bdev_aio_create",
                json!({"name": "A1", "filename": a1, "uuid": uuid_of(gen)}),
            );
            n.call(
                "bdev_raid_add_base_bdev",
                json!({"raid_bdev": "R", "base_bdev": "A1"}),
            );
            rebuilds += 1;
        }
        t = Some(n);
    }
    let last = t.take().unwrap();
    let r = raid(&last, "R").unwrap();
    assert!(r.get("process").is_none(), "{r}");
    stop(last);
    assert!(data_area(&a1) == source, "the rebuilt member differs");
    // The member being rebuilt is listed first, so it is normally back before the raid
    // comes online and the copy resumes at the recorded checkpoint.
    assert!(
        resumed_at_checkpoint > 0,
        "no rebuild resumed at its checkpoint"
    );
    eprintln!(
        "{KILLS} kills in {:?}: {rebuilds} rebuilds, {resumed_at_checkpoint} resumed at a checkpoint, {killed_resumed} resumed ones killed",
        started.elapsed()
    );
}

#[test]
fn raid1_with_a_deleted_member_file_starts_degraded_and_takes_a_new_member() {
    let dir = TempDir::new("raid-deleted");
    let data = DataDir::new("deleted");
    let size = 4 << 20;
    let m0 = data.file("m0.img", size, 0);
    let m1 = data.file("m1.img", size, 0);
    let both = config(&dir, "both", &[], &[("M0", &m0, U[0]), ("M1", &m1, U[1])]);
    let a = Target::start_in(&dir, "a", &["-c", &both]);
    a.call(
        "bdev_raid_create",
        json!({"name": "R", "raid_level": "raid1", "base_bdevs": ["M0", "M1"],
               "superblock": true}),
    );
    let uuid = raid(&a, "R").unwrap()["uuid"].clone();
    stop(a);
    // Data through the healthy raid (assembled by `ferrite bench` itself).
    bench_verify(&both, "R");
    assert!(data_area(&m0) == data_area(&m1));

    // M1's file is gone: the configuration that names only M0 brings R up degraded, and the
    // verify workload runs through it (reads from the one member left).
    std::fs::remove_file(&m1).unwrap();
    let only = config(&dir, "only", &[], &[("M0", &m0, U[0])]);
    bench_verify(&only, "R");
    let t = Target::start_in(&dir, "t", &["-c", &only]);
    let r = raid(&t, "R").unwrap();
    assert_eq!(r["state"], "online", "{r}");
    assert_eq!(r["uuid"], uuid);
    assert_eq!(r["num_base_bdevs_operational"], 1, "{r}");
    assert_eq!(r["base_bdevs_list"][1]["is_configured"], false, "{r}");
    // A new file takes M1's place: rebuilt from M0.
    let m2 = data.file("m2.img", size, 5);
    t.call(
        "bdev_aio_create",
        json!({"name": "M2", "filename": m2, "uuid": U[2]}),
    );
    t.call(
        "bdev_raid_add_base_bdev",
        json!({"raid_bdev": "R", "base_bdev": "M2"}),
    );
    let r = wait_raid(&t, "R", "rebuilt", |r| {
        r.get("process").is_none() && r["num_base_bdevs_operational"] == 2
    });
    assert_eq!(r["base_bdevs_list"][1]["name"], "M2", "{r}");
    wait_until(Duration::from_secs(10), "M2 recorded in sync", || {
        sb_member(&m0, 1).0 == 1 && sb_member(&m2, 1).0 == 1
    });
    stop(t);
    assert!(
        data_area(&m0) == data_area(&m2),
        "the members differ after the rebuild"
    );
    // Both members assemble the raid again, and it verifies.
    let cfg = config(&dir, "new", &[], &[("M0", &m0, U[0]), ("M2", &m2, U[2])]);
    let t = Target::start_in(&dir, "u", &["-c", &cfg]);
    let r = raid(&t, "R").unwrap();
    assert_eq!(r["state"], "online", "{r}");
    assert_eq!(r["num_base_bdevs_operational"], 2, "{r}");
    stop(t);
    bench_verify(&cfg, "R");
    assert!(data_area(&m0) == data_area(&m2));
}

/// raid5f through the binary: data written by `ferrite bench -w verify` (full stripes), a
/// member replaced by a new file and rebuilt by RPC; afterwards every stripe of the members'
/// files XORs to zero (parity consistent) and the data verifies again.
#[test]
fn raid5f_member_replaced_and_rebuilt() {
    let dir = TempDir::new("raid5f-rebuild");
    let data = DataDir::new("r5");
    let size = 4 << 20;
    let f: Vec<String> = (0..4)
        .map(|i| data.file(&format!("f{i}.img"), size, if i == 3 { 5 } else { 0 }))
        .collect();
    let u = |i: usize| format!("eeeeeeee-0000-4000-8000-{i:012}");
    let three = config(
        &dir,
        "three",
        &[],
        &[
            ("F0", &f[0], &u(0)),
            ("F1", &f[1], &u(1)),
            ("F2", &f[2], &u(2)),
        ],
    );
    let t = Target::start_in(&dir, "a", &["-c", &three]);
    t.call(
        "bdev_raid_create",
        json!({"name": "R5", "raid_level": "raid5f", "base_bdevs": ["F0", "F1", "F2"],
               "strip_size_kb": 4, "superblock": true}),
    );
    stop(t);
    let mut cmd = Command::new(BIN);
    cmd.args(["bench", "-c", &three, "-q", "8", "-o", "8k", "-w", "verify"])
        .args(["-t", "0.5", "-T", "R5", "--output-json"]);
    let r = run(&mut cmd, None);
    assert!(r.ok(), "{}", r.all());
    assert_eq!(r.json()["results"][0]["io_failed"], 0, "{}", r.stdout);

    // F1 is replaced by F3 (a file of other data): rebuilt from the others.
    let cfg = config(
        &dir,
        "four",
        &[json!({"method": "bdev_raid_set_options",
                 "params": {"process_window_size_kb": 16}})],
        &[
            ("F0", &f[0], &u(0)),
            ("F1", &f[1], &u(1)),
            ("F2", &f[2], &u(2)),
            ("F3", &f[3], &u(3)),
        ],
    );
    let t = Target::start_in(&dir, "b", &["-c", &cfg]);
    let v = raid(&t, "R5").unwrap();
    assert_eq!(v["state"], "online", "{v}");
    t.call("bdev_raid_remove_base_bdev", json!({"name": "F1"}));
    assert_eq!(raid(&t, "R5").unwrap()["num_base_bdevs_operational"], 2);
    t.call(
        "bdev_raid_add_base_bdev",
        json!({"raid_bdev": "R5", "base_bdev": "F3"}),
    );
    let v = wait_raid(&t, "R5", "rebuilt", |r| {
        r.get("process").is_none() && r["num_base_bdevs_operational"] == 3
    });
    assert_eq!(v["base_bdevs_list"][1]["name"], "F3", "{v}");
    wait_until(Duration::from_secs(10), "F3 recorded in sync", || {
        sb_member(&f[0], 1).0 == 1 && sb_member(&f[3], 1).0 == 1
    });
    stop(t);
    // Every stripe row XORs to zero across the members: parity matches the data.
    let areas = [data_area(&f[0]), data_area(&f[3]), data_area(&f[2])];
    assert!(areas[0].iter().any(|b| *b != 0), "no data was written");
    let bad = (0..areas[0].len())
        .filter(|&i| areas[0][i] ^ areas[1][i] ^ areas[2][i] != 0)
        .count();
    assert_eq!(bad, 0, "bytes where parity does not match the data");
    // The data verifies through the raid of the rebuilt members.
    let rebuilt = config(
        &dir,
        "rebuilt",
        &[],
        &[
            ("F0", &f[0], &u(0)),
            ("F3", &f[3], &u(3)),
            ("F2", &f[2], &u(2)),
        ],
    );
    let t = Target::start_in(&dir, "c", &["-c", &rebuilt]);
    let v = raid(&t, "R5").unwrap();
    assert_eq!(v["state"], "online", "{v}");
    assert_eq!(v["num_base_bdevs_operational"], 3, "{v}");
    stop(t);
    let mut cmd = Command::new(BIN);
    cmd.args([
        "bench", "-c", &rebuilt, "-q", "8", "-o", "8k", "-w", "verify",
    ])
    .args(["-t", "0.5", "-T", "R5", "--output-json"]);
    let r = run(&mut cmd, None);
    assert!(r.ok(), "{}", r.all());
    assert_eq!(r.json()["results"][0]["io_failed"], 0, "{}", r.stdout);
}

/// The write-intent bitmap survives a restart: a raid1 member removed by RPC misses writes to
/// two 64 KiB regions (made by `ferrite bench` in another process); after a restart the raid
/// reports them dirty, and re-adding the member copies exactly those regions.
#[test]
fn persisted_bitmap_resyncs_only_what_changed_across_restarts() {
    let dir = TempDir::new("raid-bitmap");
    let data = DataDir::new("bitmap");
    let size = 4 << 20;
    let a0 = data.file("a0.img", size, 3);
    let a1 = data.file("a1.img", size, 3);
    let cfg = config(&dir, "cfg", &[], &[("A0", &a0, U[0]), ("A1", &a1, U[1])]);
    let t = Target::start_in(&dir, "a", &["-c", &cfg]);
    t.call(
        "bdev_raid_create",
        json!({"name": "R", "raid_level": "raid1", "base_bdevs": ["A0", "A1"],
               "superblock": true}),
    );
    t.call("bdev_raid_remove_base_bdev", json!({"name": "A1"}));
    let r = raid(&t, "R").unwrap();
    assert_eq!(r["write_intent_bitmap"]["persistent"], true, "{r}");
    assert_eq!(r["write_intent_bitmap"]["region_size_kb"], 64, "{r}");
    assert_eq!(r["write_intent_bitmap"]["dirty_regions"], 0, "{r}");
    stop(t);

    // Another process writes two regions of the degraded raid (4 KiB writes in [0, 64k) and
    // [1m, 1m + 64k)).
    let job = dir.join("two-regions.job");
    std::fs::write(
        &job,
        "[global]\nbs=4k\niodepth=2\nrw=write\nfilename=R\n\n[low]\noffset=0\nlength=64k\n\n[high]\noffset=1m\nlength=64k\n",
    )
    .unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["bench", "-c", &cfg, "-j"])
        .arg(&job)
        .args(["-t", "0.3", "--output-json"]);
    let out = run(&mut cmd, None);
    assert!(out.ok(), "{}", out.all());
    assert!(data_area(&a0) != data_area(&a1), "the bench wrote nothing");

    // Restarted: the bitmap is read back from disk.
    let t = Target::start_in(&dir, "b", &["-c", &cfg]);
    let r = raid(&t, "R").unwrap();
    assert_eq!(r["state"], "online", "{r}");
    assert_eq!(r["num_base_bdevs_operational"], 1, "{r}");
    assert_eq!(r["write_intent_bitmap"]["dirty_regions"], 2, "{r}");
    t.call(
        "bdev_raid_add_base_bdev",
        json!({"raid_bdev": "R", "base_bdev": "A1"}),
    );
    wait_raid(&t, "R", "resynced", |r| {
        r.get("process").is_none() && r["num_base_bdevs_operational"] == 2
    });
    let total = (size - DATA_OFFSET) / 512;
    let line = format!("resync of 'A1' done: 256 of {total} blocks copied");
    wait_until(Duration::from_secs(10), "resync logged", || {
        t.log_text().contains(&line)
    });
    wait_until(Duration::from_secs(10), "A1 recorded in sync", || {
        sb_member(&a0, 1).0 == 1 && sb_member(&a1, 1).0 == 1
    });
    stop(t);
    assert!(data_area(&a0) == data_area(&a1), "the members differ");
}
