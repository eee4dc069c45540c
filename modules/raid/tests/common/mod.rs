//! Helpers for the raid tests: a test disk whose data survives unregistering its bdev (to
//! simulate a restart), with switches to fail or hold its I/O, plus a per-OS-thread
//! completion log and I/O helpers.
// Test code: a failed unwrap is a failed test; not every test binary uses every helper.
#![allow(dead_code, clippy::unwrap_used)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ferrite_bdev::uuid::Uuid;
use ferrite_bdev::{
    BackendChannel, Bdev, BdevBackend, BdevChannel, BdevIo, BdevProps, IoStatus, IoType, IoVec,
};
use ferrite_reactor::harness::Harness;
use ferrite_reactor::PollerHandle;
use serde_json::Value;

/// Bound on harness rounds for anything expected to finish.
pub const ROUNDS: usize = 50_000;

/// Runs the harness until `cond` holds; fails the test if it does not within [`ROUNDS`].
pub fn run_until(h: &mut Harness, what: &str, cond: impl FnMut() -> bool) {
    assert!(h.run_until(ROUNDS, cond), "timed out waiting for: {what}");
}

/// Registers the raid module (idempotent); logs go to the test output with `RUST_LOG`.
pub fn setup(h: &mut Harness) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    h.on(0, || {
        ferrite_bdev::register_module(Arc::new(ferrite_raid::RaidModule));
    });
}

// ---- the test disk ------------------------------------------------------------------------------

/// Storage and switches of a test disk. The data lives here, not in the bdev: unregistering
/// the bdev and registering a new one over the same `Disk` is a restart.
pub struct Disk {
    pub block_size: u32,
    pub blocks: u64,
    pub data: Mutex<Vec<u8>>,
    /// Complete reads with `IoStatus::Failed`.
    pub fail_read: AtomicBool,
    /// Complete writes (and unmap, write-zeroes, flush) with `IoStatus::Failed`.
    pub fail_write: AtomicBool,
    /// Hold every I/O until cleared.
    pub hold: AtomicBool,
    /// Complete flushes with `IoStatus::Failed` (writes still succeed).
    pub fail_flush: AtomicBool,
    /// Complete writes to block 0 (a raid superblock) with `IoStatus::Failed`.
    pub fail_block0: AtomicBool,
    /// Registered as having a volatile write cache (read at registration).
    pub write_cache: AtomicBool,
    /// Writes (with their offset) and flushes that succeeded, in order.
    pub log: Mutex<Vec<(IoType, u64)>>,
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub unmaps: AtomicU64,
    pub flushes: AtomicU64,
    held: AtomicU64,
}

impl Disk {
    pub fn new(block_size: u32, blocks: u64) -> Arc<Disk> {
        Arc::new(Disk {
            block_size,
            blocks,
            data: Mutex::new(vec![0; (u64::from(block_size) * blocks) as usize]),
            fail_read: AtomicBool::new(false),
            fail_write: AtomicBool::new(false),
            hold: AtomicBool::new(false),
            fail_flush: AtomicBool::new(false),
            fail_block0: AtomicBool::new(false),
            write_cache: AtomicBool::new(false),
            log: Mutex::new(Vec::new()),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            unmaps: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            held: AtomicU64::new(0),
        })
    }

    /// Bytes of blocks `[off, off + n)`.
    pub fn read(&self, off: u64, n: u64) -> Vec<u8> {
        let bs = u64::from(self.block_size);
        let d = self.data.lock().unwrap();
        d[(off * bs) as usize..((off + n) * bs) as usize].to_vec()
    }

    /// Overwrites bytes at byte offset `at`.
    pub fn poke(&self, at: usize, bytes: &[u8]) {
        let mut d = self.data.lock().unwrap();
        d[at..at + bytes.len()].copy_from_slice(bytes);
    }

    /// Number of I/O held now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::SeqCst)
    }

    fn execute(&self, io: &BdevIo) -> IoStatus {
        let bs = u64::from(self.block_size);
        let (off, n) = (io.offset_blocks(), io.num_blocks());
        let t = io.io_type();
        if t == IoType::Read && self.fail_read.load(Ordering::SeqCst) {
            return IoStatus::Failed;
        }
        if t != IoType::Read && self.fail_write.load(Ordering::SeqCst) {
            return IoStatus::Failed;
        }
        if t == IoType::Flush && self.fail_flush.load(Ordering::SeqCst) {
            return IoStatus::Failed;
        }
        if t == IoType::Write && off == 0 && self.fail_block0.load(Ordering::SeqCst) {
            return IoStatus::Failed;
        }
        let mut d = self.data.lock().unwrap();
        let mut pos = (off * bs) as usize;
        match t {
            IoType::Read => {
                self.reads.fetch_add(1, Ordering::Relaxed);
                for v in io.iovs() {
                    // SAFETY: the submitter vouches for its segments until completion.
                    let s = unsafe { std::slice::from_raw_parts_mut(v.base, v.len) };
                    s.copy_from_slice(&d[pos..pos + v.len]);
                    pos += v.len;
                }
            }
            IoType::Write => {
                self.writes.fetch_add(1, Ordering::Relaxed);
                self.log.lock().unwrap().push((t, off));
                for v in io.iovs() {
                    // SAFETY: as above.
                    let s = unsafe { std::slice::from_raw_parts(v.base, v.len) };
                    d[pos..pos + v.len].copy_from_slice(s);
                    pos += v.len;
                }
            }
            IoType::Unmap | IoType::WriteZeroes => {
                if t == IoType::Unmap {
                    self.unmaps.fetch_add(1, Ordering::Relaxed);
                }
                d[pos..pos + (n * bs) as usize].fill(0);
            }
            IoType::Flush => {
                self.flushes.fetch_add(1, Ordering::Relaxed);
                self.log.lock().unwrap().push((t, off));
            }
            _ => return IoStatus::Invalid,
        }
        IoStatus::Success
    }
}

struct DiskBackend(Arc<Disk>);

struct DiskChannel {
    disk: Arc<Disk>,
    held: Arc<Mutex<VecDeque<Box<BdevIo>>>>,
    _poller: Option<PollerHandle>,
}

impl BackendChannel for DiskChannel {
    fn submit(&mut self, io: Box<BdevIo>) {
        if self.disk.hold.load(Ordering::SeqCst) {
            self.disk.held.fetch_add(1, Ordering::SeqCst);
            self.held.lock().unwrap().push_back(io);
            return;
        }
        let st = self.disk.execute(&io);
        io.complete(st);
    }
}

impl BdevBackend for DiskBackend {
    fn module_name(&self) -> &'static str {
        "testdisk"
    }
    fn io_type_supported(&self, t: IoType) -> bool {
        matches!(
            t,
            IoType::Read | IoType::Write | IoType::Unmap | IoType::Flush | IoType::WriteZeroes
        )
    }
    fn create_channel(&self) -> Box<dyn BackendChannel> {
        let disk = self.0.clone();
        let held: Arc<Mutex<VecDeque<Box<BdevIo>>>> = Arc::default();
        let (d2, h2) = (disk.clone(), held.clone());
        // Completes this channel's held I/O (on its own thread) once the hold is lifted.
        let poller = ferrite_reactor::register_poller("testdisk_release", 0, move || {
            if d2.hold.load(Ordering::SeqCst) {
                return 0;
            }
            let list: Vec<Box<BdevIo>> = h2.lock().unwrap().drain(..).collect();
            let n = list.len();
            for io in list {
                d2.held.fetch_sub(1, Ordering::SeqCst);
                let st = d2.execute(&io);
                io.complete(st);
            }
            n
        })
        .ok();
        Box::new(DiskChannel {
            disk,
            held,
            _poller: poller,
        })
    }
    fn config_entry(&self, _bdev: &Bdev) -> Option<Value> {
        None
    }
}

/// Registers a bdev named `name` over `disk` (with `uuid`, or a random one).
pub fn register_disk(name: &str, disk: &Arc<Disk>, uuid: Option<Uuid>) -> Arc<Bdev> {
    let mut p = BdevProps::new(name, "Test disk", disk.block_size, disk.blocks);
    p.uuid = uuid;
    p.write_cache = disk.write_cache.load(Ordering::SeqCst);
    ferrite_bdev::register(p, Arc::new(DiskBackend(disk.clone()))).unwrap()
}

// ---- completion log -----------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Done {
    pub tag: u64,
    pub status: IoStatus,
}

thread_local! {
    static DONE: RefCell<Vec<Done>> = const { RefCell::new(Vec::new()) };
}

pub fn record(io: Box<BdevIo>) {
    DONE.with(|l| {
        l.borrow_mut().push(Done {
            tag: io.user[0],
            status: io.status(),
        })
    });
    ferrite_bdev::free_io(io);
}

pub fn done_count() -> usize {
    DONE.with(|l| l.borrow().len())
}

pub fn take_done() -> Vec<Done> {
    DONE.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

// ---- buffers and I/O ----------------------------------------------------------------------------

/// Buffers with fixed addresses, kept until the I/O using them completed.
#[derive(Default)]
pub struct Arena(RefCell<Vec<Box<[u8]>>>);

impl Arena {
    pub fn add(&self, data: Vec<u8>) -> (usize, IoVec) {
        let mut b = data.into_boxed_slice();
        let v = IoVec {
            base: b.as_mut_ptr(),
            len: b.len(),
        };
        let mut a = self.0.borrow_mut();
        a.push(b);
        (a.len() - 1, v)
    }

    pub fn get(&self, i: usize) -> Vec<u8> {
        self.0.borrow()[i].to_vec()
    }
}

/// Splits a segment in pieces of `cut` bytes (to exercise multi-segment parents).
fn cut(v: IoVec, cut: usize) -> Vec<IoVec> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < v.len {
        let len = cut.min(v.len - pos);
        // SAFETY: pos < v.len: inside the arena buffer.
        let base = unsafe { v.base.add(pos) };
        out.push(IoVec { base, len });
        pos += len;
    }
    out
}

pub fn write_at(ch: &BdevChannel, arena: &Arena, off: u64, data: Vec<u8>, tag: u64) {
    let bs = u64::from(ch.bdev().block_size());
    let n = data.len() as u64 / bs;
    let (_, v) = arena.add(data);
    let mut io = ch.alloc_io().unwrap();
    io.prep_write(off, n, record);
    io.user[0] = tag;
    // SAFETY: the segments are in `arena`, kept alive and untouched until completion.
    unsafe { io.set_iovs(&cut(v, 1536)) };
    ch.submit(io);
}

pub fn read_at(ch: &BdevChannel, arena: &Arena, off: u64, n: u64, tag: u64) -> usize {
    let bs = ch.bdev().block_size() as usize;
    let (i, v) = arena.add(vec![0xEE; n as usize * bs]);
    let mut io = ch.alloc_io().unwrap();
    io.prep_read(off, n, record);
    io.user[0] = tag;
    // SAFETY: as in write_at.
    unsafe { io.set_iovs(&cut(v, 2560)) };
    ch.submit(io);
    i
}

pub fn plain(ch: &BdevChannel, tag: u64, prep: impl FnOnce(&mut BdevIo)) {
    let mut io = ch.alloc_io().unwrap();
    prep(&mut io);
    io.user[0] = tag;
    ch.submit(io);
}

/// Deterministic bytes.
pub fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A small deterministic generator.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The raid's `bdev_raid_get_bdevs` object.
pub fn info(name: &str) -> Option<Value> {
    ferrite_raid::get_bdevs("all")
        .unwrap()
        .into_iter()
        .find(|v| v["name"] == name)
}

/// Runs a control call with a completion callback on thread 0 and waits for its result.
pub fn call(
    h: &mut Harness,
    f: impl FnOnce(Box<dyn FnOnce(ferrite_bdev::Result<()>) + Send>) + Send + 'static,
) -> ferrite_bdev::Result<()> {
    let slot: Arc<Mutex<Option<ferrite_bdev::Result<()>>>> = Arc::new(Mutex::new(None));
    let s2 = slot.clone();
    h.on(0, move || {
        f(Box::new(move |r| {
            *s2.lock().unwrap() = Some(r);
        }))
    });
    run_until(h, "control call", || slot.lock().unwrap().is_some());
    h.run_until_idle();
    let r = slot.lock().unwrap().take();
    r.unwrap()
}

pub mod mirror;
pub mod restart;

/// Creates the raid `o` (which must succeed) and opens it for writing on harness thread 1,
/// with a channel there.
pub fn create_and_open(
    h: &mut Harness,
    o: ferrite_raid::RaidOpts,
) -> (ferrite_bdev::Desc, BdevChannel) {
    let nm = o.name.clone();
    let r = call(h, move |done| ferrite_raid::create(&o, done));
    assert!(r.is_ok(), "{r:?}");
    let desc = h.on(1, move || {
        ferrite_bdev::Desc::open(&nm, true, |_| {}).unwrap()
    });
    let ch = h.on(1, || desc.channel().unwrap());
    (desc, ch)
}

/// Drops `ch` and `desc` on harness thread 1, then deletes the raid `name` (which must
/// succeed).
pub fn close_and_delete(
    h: &mut Harness,
    name: &'static str,
    desc: ferrite_bdev::Desc,
    ch: BdevChannel,
) {
    h.on(1, move || {
        drop(ch);
        drop(desc);
    });
    h.run_until_idle();
    assert!(call(h, move |d| ferrite_raid::delete(name, d)).is_ok());
}

/// A latency no test waits out (10 minutes): I/O in a delay bdev with it stays held until a
/// reset or an abort releases it.
pub const LONG_US: u64 = 600_000_000;

/// A delay bdev `Dly{base}` over `base` holding every read and write for [`LONG_US`]; its name.
pub fn delay_on(base: &str) -> String {
    delay_for(base, LONG_US)
}

/// A delay bdev `Dly{base}` over `base` holding every read and write for `us`; its name.
pub fn delay_for(base: &str, us: u64) -> String {
    let name = format!("Dly{base}");
    ferrite_delay::create(&ferrite_delay::DelayOpts {
        base_bdev_name: base.into(),
        name: name.clone(),
        uuid: None,
        avg_read_latency: us,
        p99_read_latency: us,
        avg_write_latency: us,
        p99_write_latency: us,
    })
    .unwrap()
}
