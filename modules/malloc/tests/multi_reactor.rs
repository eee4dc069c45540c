//! Data round trips on a real runtime: two reactors, several lightweight threads each, random
//! offsets, sizes and segment layouts, on malloc, passthru-on-malloc and null. Each thread owns
//! a disjoint region of the bdev, writes random data in a random segment layout, reads it back
//! in another layout, and compares.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::cell::RefCell;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use ferrite_bdev::{BdevChannel, BdevIo, Desc, IoStatus, IoVec};
use ferrite_reactor::{CpuMask, PollMode, Runtime, RuntimeConfig};

const BS: u64 = 512;
const REGION_BLOCKS: u64 = 256;
const ROUNDS: u32 = 200;

#[derive(Default)]
struct Worker {
    st: RefCell<Option<State>>,
}

struct State {
    ch: BdevChannel,
    _desc: Desc,
    base: u64,
    rng: u64,
    round: u32,
    wbuf: Vec<u8>,
    rbuf: Vec<u8>,
    check_data: bool,
    result: mpsc::Sender<Result<u32, String>>,
}

fn rand(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// Splits `buf` into 1..=4 random segments.
fn segments(buf: &mut [u8], rng: &mut u64) -> Vec<IoVec> {
    let n = 1 + (rand(rng) % 4) as usize;
    let len = buf.len();
    let mut cuts: Vec<usize> = (0..n - 1).map(|_| (rand(rng) as usize) % len).collect();
    cuts.push(0);
    cuts.push(len);
    cuts.sort_unstable();
    cuts.dedup();
    let base = buf.as_mut_ptr();
    cuts.windows(2)
        .map(|w| {
            // SAFETY: w[0] < w[1] <= len: inside `buf`.
            let b = unsafe { base.add(w[0]) };
            IoVec {
                base: b,
                len: w[1] - w[0],
            }
        })
        .collect()
}

fn with_state(f: impl FnOnce(&mut State)) {
    ferrite_reactor::with_local(|w: &Worker| {
        if let Some(s) = w.st.borrow_mut().as_mut() {
            f(s)
        }
    });
}

fn finish(r: Result<u32, String>) {
    ferrite_reactor::with_local(|w: &Worker| {
        if let Some(s) = w.st.borrow_mut().take() {
            let _ = s.result.send(r);
        }
    });
}

fn start_write(mut io: Box<BdevIo>) {
    with_state(|s| {
        if s.round == ROUNDS {
            return;
        }
        let blocks = 1 + rand(&mut s.rng) % 16;
        let off = s.base + rand(&mut s.rng) % (REGION_BLOCKS - blocks);
        let len = (blocks * BS) as usize;
        s.wbuf.resize(len, 0);
        for b in s.wbuf.iter_mut() {
            *b = rand(&mut s.rng) as u8;
        }
        let mut rng = s.rng;
        let segs = segments(&mut s.wbuf, &mut rng);
        s.rng = rng;
        io.prep_write(off, blocks, write_done);
        io.user = [off, blocks];
        // SAFETY: wbuf lives in this thread's Worker and is not touched until completion.
        unsafe { io.set_iovs(&segs) };
    });
    let done =
        ferrite_reactor::with_local(|w: &Worker| w.st.borrow().as_ref().map(|s| s.round == ROUNDS))
            .flatten();
    if done == Some(true) {
        ferrite_bdev::free_io(io);
        let r = ferrite_reactor::with_local(|w: &Worker| w.st.borrow().as_ref().map(|s| s.round))
            .flatten();
        return finish(Ok(r.unwrap_or(0)));
    }
    submit(io);
}

fn submit(io: Box<BdevIo>) {
    let ch = ferrite_reactor::with_local(|w: &Worker| {
        w.st.borrow().as_ref().map(|s| &s.ch as *const BdevChannel)
    })
    .flatten();
    match ch {
        // SAFETY: the channel lives in this thread's Worker state, which is only taken by
        // `finish`, never during a submit.
        Some(ch) => unsafe { &*ch }.submit(io),
        None => ferrite_bdev::free_io(io),
    }
}

fn write_done(mut io: Box<BdevIo>) {
    if io.status() != IoStatus::Success {
        ferrite_bdev::free_io(io);
        return finish(Err("write failed".into()));
    }
    let [off, blocks] = io.user;
    with_state(|s| {
        s.rbuf.clear();
        s.rbuf.resize((blocks * BS) as usize, 0);
        let mut rng = s.rng;
        let segs = segments(&mut s.rbuf, &mut rng);
        s.rng = rng;
        io.prep_read(off, blocks, read_done);
        // SAFETY: rbuf lives in this thread's Worker and is untouched until completion.
        unsafe { io.set_iovs(&segs) };
    });
    submit(io);
}

fn read_done(io: Box<BdevIo>) {
    if io.status() != IoStatus::Success {
        ferrite_bdev::free_io(io);
        return finish(Err("read failed".into()));
    }
    let mut bad = None;
    with_state(|s| {
        if s.check_data && s.rbuf != s.wbuf {
            bad = Some(format!(
                "data mismatch at block {} ({} blocks), round {}",
                io.user[0], io.user[1], s.round
            ));
        }
        s.round += 1;
    });
    if let Some(b) = bad {
        ferrite_bdev::free_io(io);
        return finish(Err(b));
    }
    start_write(io);
}

fn run_on(rt: &Arc<Runtime>, bdev: &'static str, threads: usize, check_data: bool) {
    let (tx, rx) = mpsc::channel();
    for i in 0..threads {
        let t = rt
            .spawn_thread(&format!("w{i}"), Some(i % rt.reactor_count()))
            .unwrap();
        let tx = tx.clone();
        t.send(move || {
            let desc = Desc::open(bdev, true, |_| {}).unwrap();
            let ch = desc.channel().unwrap();
            ferrite_reactor::with_local(|w: &Worker| {
                *w.st.borrow_mut() = Some(State {
                    ch,
                    _desc: desc,
                    base: i as u64 * REGION_BLOCKS,
                    rng: 0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1),
                    round: 0,
                    wbuf: Vec::new(),
                    rbuf: Vec::new(),
                    check_data,
                    result: tx,
                })
            });
            let io = ferrite_bdev::alloc_io().unwrap();
            start_write(io);
        })
        .unwrap();
    }
    drop(tx);
    for _ in 0..threads {
        let r = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("a worker did not finish in 60 s");
        assert_eq!(r, Ok(ROUNDS), "{bdev}");
    }
}

#[test]
fn random_round_trips_on_two_reactors() {
    let cores = ferrite_reactor::CpuMask::parse("0x3").unwrap();
    let rt = Runtime::start(RuntimeConfig {
        cpumask: cores,
        mode: PollMode::Adaptive,
        pin: false,
        ..Default::default()
    })
    .or_else(|_| {
        Runtime::start(RuntimeConfig {
            cpumask: CpuMask::from_cores(&[0]),
            pin: false,
            ..Default::default()
        })
    })
    .unwrap();
    let (tx, rx) = mpsc::channel();
    rt.app_thread()
        .send(move || {
            ferrite_bdev::register_module(Arc::new(ferrite_passthru::PassthruModule));
            let r = (|| {
                ferrite_malloc::create(&ferrite_malloc::MallocOpts {
                    name: Some("MR0".into()),
                    num_blocks: 8 * REGION_BLOCKS,
                    block_size: BS as u32,
                    ..Default::default()
                })?;
                ferrite_malloc::create(&ferrite_malloc::MallocOpts {
                    name: Some("MR1".into()),
                    num_blocks: 8 * REGION_BLOCKS,
                    block_size: BS as u32,
                    optimal_io_boundary: 8,
                    ..Default::default()
                })?;
                ferrite_passthru::create(&ferrite_passthru::PassthruOpts {
                    base_bdev_name: "MR1".into(),
                    name: "PR1".into(),
                    uuid: None,
                })?;
                ferrite_null::create(&ferrite_null::NullOpts {
                    name: "NR0".into(),
                    num_blocks: 8 * REGION_BLOCKS,
                    block_size: BS as u32,
                    uuid: None,
                    md_size: 0,
                })
            })();
            tx.send(r.map(|_| ())).unwrap();
        })
        .unwrap();
    rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
    run_on(&rt, "MR0", 4, true);
    run_on(&rt, "PR1", 4, true); // passthru over a malloc that splits on an 8-block boundary
    run_on(&rt, "NR0", 4, false);
    rt.stop();
}
