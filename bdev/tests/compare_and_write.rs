//! Compare-and-write atomicity (emulated by the bdev layer with quiesce + read + compare +
//! write), under concurrent whole-range writes and C&W from several threads, over many seeds;
//! plus plain compare.
//!
//! Every value ever written to the range is unique (a repeated `u32`), so once the range
//! leaves a value it never holds it again. Hence, for any interleaving:
//! - at most one C&W per compare value succeeds;
//! - a C&W whose compare value only a failed C&W would have written never succeeds;
//! - the range always holds one whole value (never a mix);
//! - with a backend whose operation log gives the true order of effects, each successful C&W's
//!   write is immediately preceded by its compare read, which saw exactly its compare value.
// Helpers outside #[test] functions unwrap too: this is test code.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::{pattern, register_test, run_until, take_done, Arena, TestCfg};
use ferrite_bdev::{BdevChannel, Desc, IoStatus, IoType};
use ferrite_reactor::harness::Harness;

const BS: usize = 512;
const OFF: u64 = 8;
const N: u64 = 4;
const LEN: usize = N as usize * BS;
const V0: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Write { val: u32 },
    Caw { cmp: u32, val: u32 },
    Compare { cmp: u32 },
}

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn submit(ch: &BdevChannel, arena: &Arena, kind: Kind, tag: u64, rng: &mut Rng) {
    let cuts: &[usize] = match rng.below(3) {
        0 => &[],
        1 => &[512, 512],
        _ => &[100, 900, 3],
    };
    let mut io = ch.alloc_io().unwrap();
    io.user[0] = tag;
    match kind {
        Kind::Write { val } => {
            let (_, w) = arena.add_split(pattern(val, LEN), cuts);
            io.prep_write(OFF, N, common::record);
            // SAFETY: the arena outlives every I/O of the test.
            unsafe { io.set_iovs(&w) };
        }
        Kind::Caw { cmp, val } => {
            let (_, w) = arena.add_split(pattern(val, LEN), cuts);
            let (_, c) = arena.add_split(pattern(cmp, LEN), &[700]);
            io.prep_compare_and_write(OFF, N, common::record);
            // SAFETY: as above.
            unsafe {
                io.set_iovs(&w);
                io.set_cmp_iovs(&c);
            }
        }
        Kind::Compare { cmp } => {
            let (_, c) = arena.add_split(pattern(cmp, LEN), cuts);
            io.prep_compare(OFF, N, common::record);
            // SAFETY: as above.
            unsafe { io.set_iovs(&c) };
        }
    }
    ch.submit(io);
}

/// Runs a seeded mix on bdev `name` (already created, range initialised to `V0`) from
/// `threads` harness threads; returns the ops by tag and their completion statuses.
fn run_mix(
    h: &mut Harness,
    name: &str,
    threads: usize,
    seed: u64,
    only_v0_caw: bool,
) -> (HashMap<u64, Kind>, HashMap<u64, IoStatus>) {
    let d = h.on(0, || Desc::open(name, true, |_| {}).unwrap());
    let chans: Vec<BdevChannel> = (0..threads)
        .map(|t| h.on(t, || d.channel().unwrap()))
        .collect();
    let arena = Arena::default();
    let mut rng = Rng::new(seed);
    let mut ops: HashMap<u64, Kind> = HashMap::new();
    let mut written: Vec<u32> = vec![V0];
    let mut next_val = 100u32;
    let mut tag = 0u64;
    for _wave in 0..4 {
        for (t, ch) in chans.iter().enumerate() {
            let count = 1 + rng.below(4);
            for _ in 0..count {
                next_val += 1;
                let kind = if only_v0_caw {
                    Kind::Caw {
                        cmp: V0,
                        val: next_val,
                    }
                } else {
                    match rng.below(5) {
                        0 | 1 => Kind::Caw {
                            cmp: written[rng.below(written.len() as u64) as usize],
                            val: next_val,
                        },
                        2 => Kind::Caw {
                            cmp: V0,
                            val: next_val,
                        },
                        3 => Kind::Write { val: next_val },
                        _ => Kind::Compare {
                            cmp: written[rng.below(written.len() as u64) as usize],
                        },
                    }
                };
                if !matches!(kind, Kind::Compare { .. }) {
                    written.push(next_val);
                }
                tag += 1;
                ops.insert(tag, kind);
                let (a, r) = (&arena, &mut rng);
                h.on(t, || submit(ch, a, kind, tag, r));
            }
        }
        for _ in 0..rng.below(6) {
            h.poll_all();
        }
    }
    let total = ops.len();
    run_until(h, "all ops", || common::done_count() == total);
    let done = take_done();
    let mut status = HashMap::new();
    for dn in done {
        assert!(
            status.insert(dn.tag, dn.status).is_none(),
            "completed twice"
        );
    }
    for (t, ch) in chans.into_iter().enumerate() {
        h.on(t, || drop(ch));
    }
    drop(d);
    h.run_until_idle();
    (ops, status)
}

/// Reads the range on thread 0; returns its bytes.
fn read_range(h: &mut Harness, name: &str) -> Vec<u8> {
    let d = h.on(0, || Desc::open(name, false, |_| {}).unwrap());
    let ch = h.on(0, || d.channel().unwrap());
    h.on(0, || common::read_auto(&ch, OFF, N, 0));
    run_until(h, "read", || common::done_count() == 1);
    let dn = take_done().pop().unwrap();
    assert_eq!(dn.status, IoStatus::Success);
    h.on(0, || drop(ch));
    drop(d);
    dn.data.unwrap()
}

fn write_initial(h: &mut Harness, name: &str) {
    let d = h.on(0, || Desc::open(name, true, |_| {}).unwrap());
    let ch = h.on(0, || d.channel().unwrap());
    let arena = Arena::default();
    h.on(0, || {
        common::write_at(&ch, &arena, OFF, pattern(V0, LEN), &[], 0)
    });
    run_until(h, "initial write", || common::done_count() == 1);
    assert_eq!(take_done()[0].status, IoStatus::Success);
    h.on(0, || drop(ch));
    drop(d);
}

/// The whole value the range holds; fails on a mix.
fn whole_value(data: &[u8]) -> u32 {
    let w = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    assert!(
        data.chunks(4).all(|c| c == &data[..4]),
        "range holds a mix of values"
    );
    w
}

/// The checks that hold for any interleaving; returns the number of successful C&W.
fn check_history(
    ops: &HashMap<u64, Kind>,
    status: &HashMap<u64, IoStatus>,
    final_val: u32,
) -> usize {
    assert_eq!(ops.len(), status.len());
    let mut wins_per_cmp: HashMap<u32, usize> = HashMap::new();
    let mut writer_of: HashMap<u32, (Kind, IoStatus)> = HashMap::new();
    for (tag, k) in ops {
        let st = status[tag];
        match *k {
            Kind::Write { val } => {
                assert_eq!(st, IoStatus::Success, "plain write {tag}");
                writer_of.insert(val, (*k, st));
            }
            Kind::Caw { cmp, val } => {
                assert!(
                    matches!(st, IoStatus::Success | IoStatus::Miscompare),
                    "C&W {tag}: {st:?}"
                );
                if st == IoStatus::Success {
                    *wins_per_cmp.entry(cmp).or_default() += 1;
                }
                writer_of.insert(val, (*k, st));
            }
            Kind::Compare { .. } => {
                assert!(
                    matches!(st, IoStatus::Success | IoStatus::Miscompare),
                    "compare {tag}: {st:?}"
                );
            }
        }
    }
    for (cmp, wins) in &wins_per_cmp {
        assert!(*wins <= 1, "{wins} C&W succeeded against value {cmp}");
        // The compare value was really there at some point: written by a successful op.
        if *cmp != V0 {
            let (_, st) = writer_of[cmp];
            assert_eq!(
                st,
                IoStatus::Success,
                "a C&W matched {cmp}, which only a failed C&W would have written"
            );
        }
    }
    // The final value was written by a successful op (or is the initial one).
    if final_val != V0 {
        let (_, st) = writer_of
            .get(&final_val)
            .unwrap_or_else(|| panic!("final value {final_val} never written"));
        assert_eq!(*st, IoStatus::Success, "final value from a failed C&W");
    }
    // A compare succeeding against a value needs that value to have been there.
    for (tag, k) in ops {
        if let Kind::Compare { cmp } = *k {
            if status[tag] == IoStatus::Success && cmp != V0 {
                assert_eq!(writer_of[&cmp].1, IoStatus::Success);
            }
        }
    }
    wins_per_cmp.values().sum()
}

#[test]
fn racing_caw_on_the_initial_value_has_exactly_one_winner_on_malloc() {
    for seed in 0..24u64 {
        let name = format!("CwOne{seed}");
        let mut h = Harness::new(3, 600 + seed);
        let boundary = if seed % 2 == 1 { 2 } else { 0 };
        h.on(0, || common::malloc(&name, 32, BS as u32, boundary));
        let b = ferrite_bdev::lookup(&name).unwrap();
        assert!(b.io_type_supported(IoType::CompareAndWrite));
        assert!(b.io_type_supported(IoType::Compare));
        write_initial(&mut h, &name);
        let (ops, status) = run_mix(&mut h, &name, 3, seed, true);
        let final_val = whole_value(&read_range(&mut h, &name));
        let wins = check_history(&ops, &status, final_val);
        assert_eq!(
            wins, 1,
            "seed {seed}: exactly one C&W on the initial value wins"
        );
        let winner = ops
            .iter()
            .find(|(t, _)| status[*t] == IoStatus::Success)
            .map(|(_, k)| *k)
            .unwrap();
        assert_eq!(
            winner,
            Kind::Caw {
                cmp: V0,
                val: final_val
            }
        );
        let n = name.clone();
        h.on(0, move || ferrite_malloc::delete(&n, |r| r.unwrap()));
        h.run_until_idle();
    }
}

#[test]
fn caw_mixed_with_writes_on_malloc_many_seeds() {
    for seed in 0..40u64 {
        let name = format!("CwMix{seed}");
        let mut h = Harness::new(3, 700 + seed);
        let boundary = if seed % 3 == 0 { 2 } else { 0 };
        h.on(0, || common::malloc(&name, 32, BS as u32, boundary));
        write_initial(&mut h, &name);
        let (ops, status) = run_mix(&mut h, &name, 3, seed, false);
        let final_val = whole_value(&read_range(&mut h, &name));
        check_history(&ops, &status, final_val);
        let n = name.clone();
        h.on(0, move || ferrite_malloc::delete(&n, |r| r.unwrap()));
        h.run_until_idle();
    }
}

/// With a backend that completes out of order from a poller (so plain writes really are in
/// flight while a C&W runs), the backend's own log proves the read-compare-write was atomic.
#[test]
fn caw_is_atomic_against_in_flight_writes_per_backend_log() {
    let mut total_wins = 0;
    for seed in 0..40u64 {
        let name = format!("CwLog{seed}");
        let mut h = Harness::new(3, 800 + seed);
        let cfg = TestCfg {
            supported: vec![IoType::Read, IoType::Write],
            delay_seed: Some(seed),
            ..Default::default()
        };
        let (b, state) = h.on(0, || register_test(&name, BS as u32, 32, cfg));
        assert!(!b.io_type_supported(IoType::Unmap));
        write_initial(&mut h, &name);
        state.log.lock().unwrap().clear();
        let (ops, status) = run_mix(&mut h, &name, 3, seed, false);
        let log = state.ops();
        let final_val = whole_value(&state.ram_blocks(OFF, N));
        total_wins += check_history(&ops, &status, final_val);
        for o in &log {
            assert_eq!((o.off, o.n), (OFF, N));
            assert!(o.uniform, "seed {seed}: mixed data {o:?}");
        }
        let last_write = log
            .iter()
            .rev()
            .find(|o| o.t == IoType::Write)
            .map(|o| o.word);
        if let Some(w) = last_write {
            assert_eq!(w, Some(final_val));
        }
        for (tag, k) in &ops {
            let st = status[tag];
            match *k {
                Kind::Caw { cmp, val } => {
                    let at: Vec<usize> = log
                        .iter()
                        .enumerate()
                        .filter(|(_, o)| o.t == IoType::Write && o.word == Some(val))
                        .map(|(i, _)| i)
                        .collect();
                    if st != IoStatus::Success {
                        assert!(at.is_empty(), "seed {seed}: failed C&W {tag} wrote");
                        continue;
                    }
                    assert_eq!(at.len(), 1, "seed {seed}: C&W {tag} writes");
                    let i = at[0];
                    assert!(i > 0);
                    let prev = &log[i - 1];
                    assert_eq!(
                        (prev.t, prev.word),
                        (IoType::Read, Some(cmp)),
                        "seed {seed}: C&W {tag} ({cmp}->{val}) not atomic: {:?}",
                        &log[i.saturating_sub(3)..(i + 1).min(log.len())]
                    );
                }
                Kind::Write { val } => {
                    let n = log
                        .iter()
                        .filter(|o| o.t == IoType::Write && o.word == Some(val))
                        .count();
                    assert_eq!(n, 1, "seed {seed}: write {tag}");
                }
                Kind::Compare { .. } => {}
            }
        }
        let n = name.clone();
        h.on(0, move || {
            ferrite_bdev::unregister(&n, None, |r| r.unwrap())
        });
        h.run_until_idle();
    }
    assert!(
        total_wins > 10,
        "the mix hardly exercised successful C&W: {total_wins}"
    );
}

#[test]
fn plain_compare_and_miscompare_status() {
    let mut h = Harness::new(1, 61);
    h.on(0, || common::malloc("CwCmp", 32, BS as u32, 0));
    write_initial(&mut h, "CwCmp");
    let d = h.on(0, || Desc::open("CwCmp", false, |_| {}).unwrap());
    let ch = h.on(0, || d.channel().unwrap());
    let arena = Arena::default();
    let mut rng = Rng::new(1);
    // Compare is not a write: a read-only descriptor may compare.
    h.on(0, || {
        submit(&ch, &arena, Kind::Compare { cmp: V0 }, 1, &mut rng)
    });
    h.on(0, || {
        submit(&ch, &arena, Kind::Compare { cmp: 2 }, 2, &mut rng)
    });
    // Equal in the first block only.
    let mut half = pattern(V0, LEN);
    half[LEN - 1] ^= 1;
    let (_, iov) = arena.add(half);
    let mut io = h.on(0, || ch.alloc_io().unwrap());
    io.prep_compare(OFF, N, common::record);
    io.user[0] = 3;
    // SAFETY: the arena outlives the I/O.
    unsafe { io.set_iovs(&[iov]) };
    h.on(0, || ch.submit(io));
    // C&W needs a writable descriptor.
    h.on(0, || {
        submit(&ch, &arena, Kind::Caw { cmp: V0, val: 5 }, 4, &mut rng)
    });
    run_until(&mut h, "compares", || common::done_count() == 4);
    let st: HashMap<u64, IoStatus> = take_done().iter().map(|d| (d.tag, d.status)).collect();
    assert_eq!(st[&1], IoStatus::Success);
    assert_eq!(st[&2], IoStatus::Miscompare);
    assert_eq!(st[&3], IoStatus::Miscompare);
    assert_eq!(st[&4], IoStatus::Invalid);
    let total = Arc::new(Mutex::new(None));
    let t2 = total.clone();
    let b = d.bdev().clone();
    h.on(0, move || {
        ferrite_bdev::collect_iostat(&b, move |t, _| *t2.lock().unwrap() = Some(t))
    });
    let tt = total.clone();
    run_until(&mut h, "iostat", || tt.lock().unwrap().is_some());
    let t = total.lock().unwrap().unwrap();
    assert_eq!(t.compare.ops, 3);
    assert_eq!(t.miscompares, 2);
    // Contents untouched.
    assert_eq!(whole_value(&read_range(&mut h, "CwCmp")), V0);
    h.on(0, || drop(ch));
    drop(d);
    h.on(0, || ferrite_malloc::delete("CwCmp", |r| r.unwrap()));
    h.run_until_idle();
}

/// A C&W the emulation cannot serve (larger than any pool buffer) is refused without leaving
/// the bdev quiesced.
#[test]
fn oversized_caw_is_refused_and_releases_the_bdev() {
    let mut h = Harness::new(2, 62);
    h.on(0, || common::malloc("CwBig", 2048, BS as u32, 0));
    let d = h.on(0, || Desc::open("CwBig", true, |_| {}).unwrap());
    let ch0 = h.on(0, || d.channel().unwrap());
    let ch1 = h.on(1, || d.channel().unwrap());
    let large = ferrite_bdev::buf::stats().unwrap().large_size;
    let n = (large / BS + 1) as u64;
    let arena = Arena::default();
    let (_, w) = arena.add(vec![1; n as usize * BS]);
    let (_, c) = arena.add(vec![0; n as usize * BS]);
    let mut io = h.on(0, || ch0.alloc_io().unwrap());
    io.prep_compare_and_write(0, n, common::record);
    io.user[0] = 1;
    // SAFETY: the arena outlives the I/O.
    unsafe {
        io.set_iovs(&[w]);
        io.set_cmp_iovs(&[c]);
    }
    h.on(0, || ch0.submit(io));
    run_until(&mut h, "C&W", || common::done_count() == 1);
    assert_eq!(take_done()[0].status, IoStatus::Invalid);
    // I/O still flows on every thread.
    h.on(0, || common::write_at(&ch0, &arena, 0, vec![2; BS], &[], 2));
    h.on(1, || common::write_at(&ch1, &arena, 1, vec![3; BS], &[], 3));
    run_until(&mut h, "writes after the C&W", || common::done_count() == 2);
    assert!(take_done().iter().all(|d| d.status == IoStatus::Success));
    // And a later C&W works.
    h.on(1, || {
        let (_, w) = arena.add(vec![4; BS]);
        let (_, c) = arena.add(vec![3; BS]);
        let mut io = ch1.alloc_io().unwrap();
        io.prep_compare_and_write(1, 1, common::record);
        // SAFETY: the arena outlives the I/O.
        unsafe {
            io.set_iovs(&[w]);
            io.set_cmp_iovs(&[c]);
        }
        ch1.submit(io);
    });
    run_until(&mut h, "second C&W", || common::done_count() == 1);
    assert_eq!(take_done()[0].status, IoStatus::Success);
    h.on(0, || drop(ch0));
    h.on(1, || drop(ch1));
    drop(d);
    h.on(0, || ferrite_malloc::delete("CwBig", |r| r.unwrap()));
    h.run_until_idle();
}
