//! Test support shared by the aio and uring tests (the uring tests include this file by
//! path): a real runtime with worker threads on two reactors, synchronous I/O helpers, a
//! random round-trip workload with several I/O in flight per thread, aligned buffers, and
//! temp files on disk and on tmpfs; `scenarios` holds the checks both test suites run.
#![allow(dead_code)]

use std::alloc::Layout;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use ferrite_bdev::{BdevChannel, BdevEvent, BdevIo, Desc, IoStatus, IoVec};
use ferrite_reactor::{CpuMask, PollMode, Runtime, RuntimeConfig, ThreadHandle};

pub mod scenarios;

/// Longest wait for anything in these tests.
pub const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Runtime.

/// The completion a module's `delete` gets.
pub type DeleteDone = Box<dyn FnOnce(ferrite_bdev::Result<()>) + Send>;

/// A runtime with two worker threads (on two reactors when the machine has two cores).
pub struct Env {
    pub rt: Arc<Runtime>,
    pub workers: Vec<ThreadHandle>,
}

/// The reactors' sleep cap in these tests: a lost wake-up costs this long.
pub const LOST_WAKEUP_MS: u32 = 60_000;

impl Env {
    pub fn start(mode: PollMode) -> Env {
        let cfg = |mask: CpuMask| RuntimeConfig {
            cpumask: mask,
            mode,
            pin: false,
            // A lost wake-up then stalls an I/O for a minute, which no loaded machine does
            // (`scenarios::completions_wake_the_reactor` tells the two apart).
            max_sleep_ms: LOST_WAKEUP_MS,
            ..Default::default()
        };
        let rt = CpuMask::parse("0x3")
            .ok()
            .and_then(|m| Runtime::start(cfg(m)).ok())
            .unwrap_or_else(|| {
                Runtime::start(cfg(CpuMask::from_cores(&[0]))).expect("start a runtime")
            });
        let n = rt.reactor_count();
        let workers = (0..2)
            .map(|i| {
                rt.spawn_thread(&format!("worker{i}"), Some(i % n))
                    .expect("spawn a worker thread")
            })
            .collect();
        Env { rt, workers }
    }

    /// Runs `f` on the app thread and returns its result.
    pub fn app<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        on(&self.rt.app_thread(), f)
    }

    /// Deletes a bdev with a module's `delete(name, done)` and waits for the outcome.
    pub fn delete(&self, del: fn(&str, DeleteDone), name: &str) -> ferrite_bdev::Result<()> {
        for w in &self.workers {
            close(w, name);
        }
        let (tx, rx) = mpsc::channel();
        let n = name.to_string();
        self.rt
            .app_thread()
            .send(move || {
                del(
                    &n,
                    Box::new(move |r| {
                        let _ = tx.send(r);
                    }),
                )
            })
            .expect("send to the app thread");
        rx.recv_timeout(WAIT).expect("delete did not finish")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for w in &self.workers {
            let _ = w.send(|| {
                ferrite_reactor::with_local(|o: &Opened| o.map.borrow_mut().clear());
            });
        }
        std::thread::sleep(Duration::from_millis(20));
        self.rt.stop();
    }
}

/// Runs `f` on lightweight thread `t` and returns its result.
pub fn on<R: Send + 'static>(t: &ThreadHandle, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    t.send(move || {
        let _ = tx.send(f());
    })
    .expect("send to a lightweight thread");
    rx.recv_timeout(WAIT)
        .expect("the lightweight thread did not answer")
}

// ---------------------------------------------------------------------------------------------
// Aligned buffers.

/// A heap buffer whose data starts `misalign` bytes after a 4 KiB boundary.
pub struct AlignedBuf {
    ptr: *mut u8,
    layout: Layout,
    off: usize,
    len: usize,
}

// SAFETY: uniquely owned memory, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    pub fn new(len: usize, misalign: usize) -> AlignedBuf {
        let layout = Layout::from_size_align(len + misalign + 4096, 4096).expect("layout");
        // SAFETY: non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "out of memory");
        AlignedBuf {
            ptr,
            layout,
            off: misalign,
            len,
        }
    }

    pub fn from_slice(data: &[u8], misalign: usize) -> AlignedBuf {
        let mut b = AlignedBuf::new(data.len(), misalign);
        b.as_mut_slice().copy_from_slice(data);
        b
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        // SAFETY: off + len is inside the allocation.
        unsafe { self.ptr.add(self.off) }
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: off..off+len is inside the allocation, initialised (zeroed) at creation.
        unsafe { std::slice::from_raw_parts(self.ptr.add(self.off), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self makes it exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(self.off), self.len) }
    }

    /// The whole buffer as one segment.
    pub fn iov(&mut self) -> IoVec {
        IoVec {
            base: self.as_mut_ptr(),
            len: self.len,
        }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

// ---------------------------------------------------------------------------------------------
// Descriptors and synchronous I/O.

type Events = Arc<Mutex<Vec<BdevEvent>>>;

#[derive(Default)]
struct Opened {
    map: RefCell<Vec<(String, BdevChannel, Desc, Events)>>,
}

/// Opens `bdev` for writing on the calling lightweight thread (once) and runs `f` with its
/// channel.
fn with_channel<R>(bdev: &str, f: impl FnOnce(&BdevChannel) -> R) -> Result<R, String> {
    ferrite_reactor::with_local(|o: &Opened| {
        let missing = !o.map.borrow().iter().any(|e| e.0 == bdev);
        if missing {
            let ev: Events = Arc::default();
            let ev2 = ev.clone();
            let desc = Desc::open(bdev, true, move |e| {
                if let Ok(mut v) = ev2.lock() {
                    v.push(e)
                }
            })
            .map_err(|e| e.to_string())?;
            let ch = desc.channel().map_err(|e| e.to_string())?;
            o.map.borrow_mut().push((bdev.to_string(), ch, desc, ev));
        }
        let m = o.map.borrow();
        let e = m
            .iter()
            .find(|e| e.0 == bdev)
            .ok_or_else(|| "no channel".to_string())?;
        Ok(f(&e.1))
    })
    .ok_or_else(|| "not on a lightweight thread".to_string())?
}

/// Closes this thread's descriptor of `bdev` (if open).
pub fn close(t: &ThreadHandle, bdev: &str) {
    let b = bdev.to_string();
    on(t, move || {
        ferrite_reactor::with_local(|o: &Opened| o.map.borrow_mut().retain(|e| e.0 != b));
    });
}

/// Events delivered to thread `t`'s descriptor of `bdev` so far.
pub fn events(t: &ThreadHandle, bdev: &str) -> Vec<BdevEvent> {
    let b = bdev.to_string();
    on(t, move || {
        ferrite_reactor::with_local(|o: &Opened| {
            o.map
                .borrow()
                .iter()
                .find(|e| e.0 == b)
                .map(|e| e.3.lock().map(|v| v.clone()).unwrap_or_default())
                .unwrap_or_default()
        })
        .unwrap_or_default()
    })
}

/// Opens the descriptor now (so that it sees events), without I/O.
pub fn open(t: &ThreadHandle, bdev: &str) -> Result<(), String> {
    let b = bdev.to_string();
    on(t, move || with_channel(&b, |_| ()))
}

/// One request.
#[derive(Debug, Clone)]
pub enum Op {
    Read {
        off: u64,
        blocks: u64,
    },
    /// Data from a buffer `misalign` bytes off a page boundary, in segments of these lengths
    /// (one segment when empty).
    Write {
        off: u64,
        data: Vec<u8>,
        misalign: usize,
        segs: Vec<usize>,
    },
    Flush,
    Unmap {
        off: u64,
        blocks: u64,
    },
    Zeroes {
        off: u64,
        blocks: u64,
    },
}

impl Op {
    pub fn write(off: u64, data: Vec<u8>) -> Op {
        Op::Write {
            off,
            data,
            misalign: 0,
            segs: Vec::new(),
        }
    }
}

/// A finished request: its status and, for a read, the data.
#[derive(Debug, Clone)]
pub struct Out {
    pub status: IoStatus,
    pub data: Vec<u8>,
    pub latency: Duration,
    /// The submitting thread's reactor went to sleep between the submission and the
    /// completion (known only for [`batch_watching`]).
    pub slept_in_flight: bool,
}

struct Ctx {
    idx: usize,
    buf: Option<AlignedBuf>,
    tx: mpsc::Sender<(usize, Out)>,
    start: std::time::Instant,
    watch: Option<(Arc<Runtime>, usize, u64)>,
}

fn reactor_sleeps(rt: &Runtime, idx: usize) -> u64 {
    rt.reactors().get(idx).map(|r| r.sleeps).unwrap_or(0)
}

fn batch_done(mut io: Box<BdevIo>) {
    // SAFETY: user[0] is the Box<Ctx> leaked by `batch` for this I/O, taken back once here.
    let ctx = unsafe { Box::from_raw(io.user[0] as *mut Ctx) };
    io.user[0] = 0;
    let data = match (&ctx.buf, io.io_type()) {
        (Some(b), ferrite_bdev::IoType::Read) => b.as_slice().to_vec(),
        _ => Vec::new(),
    };
    let slept_in_flight = match &ctx.watch {
        Some((rt, idx, before)) => reactor_sleeps(rt, *idx) > *before,
        None => false,
    };
    let out = Out {
        status: io.status(),
        data,
        latency: ctx.start.elapsed(),
        slept_in_flight,
    };
    ferrite_bdev::free_io(io);
    let _ = ctx.tx.send((ctx.idx, out));
}

fn seg_iovs(buf: &mut AlignedBuf, segs: &[usize]) -> Vec<IoVec> {
    if segs.is_empty() {
        return vec![buf.iov()];
    }
    let mut p = buf.as_mut_ptr();
    segs.iter()
        .map(|&l| {
            let v = IoVec { base: p, len: l };
            // SAFETY: the segment lengths add up to the buffer length.
            p = unsafe { p.add(l) };
            v
        })
        .collect()
}

/// Submits every op at once on thread `t` (so more than a channel's slots can be in flight)
/// and waits for all; results in op order.
pub fn batch(t: &ThreadHandle, bdev: &str, ops: Vec<Op>) -> Vec<Out> {
    batch_impl(t, bdev, ops, None)
}

/// As [`batch`], also telling for each I/O whether the reactor slept while it was in flight.
pub fn batch_watching(rt: &Arc<Runtime>, t: &ThreadHandle, bdev: &str, ops: Vec<Op>) -> Vec<Out> {
    batch_impl(t, bdev, ops, Some(rt.clone()))
}

fn batch_impl(t: &ThreadHandle, bdev: &str, ops: Vec<Op>, rt: Option<Arc<Runtime>>) -> Vec<Out> {
    let n = ops.len();
    let (tx, rx) = mpsc::channel();
    let b = bdev.to_string();
    let sent: Result<(), String> = on(t, move || {
        with_channel(&b, |ch| {
            let bs = ch.bdev().block_size() as u64;
            for (idx, op) in ops.into_iter().enumerate() {
                let mut io = ch.alloc_io().expect("an I/O object");
                let mut buf = None;
                match op {
                    Op::Read { off, blocks } => {
                        let mut bf = AlignedBuf::new((blocks * bs) as usize, 0);
                        io.prep_read(off, blocks, batch_done);
                        let v = bf.iov();
                        // SAFETY: the buffer lives in the Ctx until the callback.
                        unsafe { io.set_iovs(&[v]) };
                        buf = Some(bf);
                    }
                    Op::Write {
                        off,
                        data,
                        misalign,
                        segs,
                    } => {
                        let mut bf = AlignedBuf::from_slice(&data, misalign);
                        io.prep_write(off, data.len() as u64 / bs, batch_done);
                        let v = seg_iovs(&mut bf, &segs);
                        // SAFETY: as above.
                        unsafe { io.set_iovs(&v) };
                        buf = Some(bf);
                    }
                    Op::Flush => {
                        io.prep_flush(0, ch.bdev().num_blocks(), batch_done);
                    }
                    Op::Unmap { off, blocks } => {
                        io.prep_unmap(off, blocks, batch_done);
                    }
                    Op::Zeroes { off, blocks } => {
                        io.prep_write_zeroes(off, blocks, batch_done);
                    }
                }
                // Read before the submission: the I/O reaches the kernel only at the next poll.
                let watch = rt.as_ref().map(|rt| {
                    let r = ferrite_reactor::current()
                        .and_then(|t| t.reactor())
                        .unwrap_or(0);
                    (rt.clone(), r, reactor_sleeps(rt, r))
                });
                let ctx = Box::new(Ctx {
                    idx,
                    buf,
                    tx: tx.clone(),
                    start: std::time::Instant::now(),
                    watch,
                });
                io.user[0] = Box::into_raw(ctx) as u64;
                ch.submit(io);
            }
        })
    });
    sent.expect("open the bdev");
    let mut outs: Vec<Option<Out>> = vec![None; n];
    for _ in 0..n {
        let (i, o) = rx.recv_timeout(WAIT).expect("an I/O did not complete");
        outs[i] = Some(o);
    }
    outs.into_iter()
        .map(|o| o.expect("every I/O answered"))
        .collect()
}

/// One request, synchronously.
pub fn io(t: &ThreadHandle, bdev: &str, op: Op) -> Out {
    batch(t, bdev, vec![op]).pop().expect("one result")
}

// ---------------------------------------------------------------------------------------------
// Random round trips with several I/O in flight per thread.

pub fn rand(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// What one thread does: `lanes` concurrent write/read-back loops, each on its own region of
/// `region_blocks` blocks starting at `first_block + lane * region_blocks`.
#[derive(Debug, Clone)]
pub struct RoundTrips {
    pub bdev: String,
    pub first_block: u64,
    pub region_blocks: u64,
    pub lanes: usize,
    pub rounds: u32,
    pub max_blocks: u64,
    pub seed: u64,
}

struct Lane {
    base: u64,
    shadow: Vec<u8>,
    wbuf: Option<AlignedBuf>,
    rbuf: Option<AlignedBuf>,
    rng: u64,
    round: u32,
    off: u64,
    blocks: u64,
}

struct RtState {
    cfg: RoundTrips,
    bs: u64,
    lanes: Vec<Lane>,
    finished: usize,
    error: Option<String>,
    tx: Option<mpsc::Sender<Result<Vec<Vec<u8>>, String>>>,
}

#[derive(Default)]
struct RtSlot(RefCell<Option<RtState>>);

/// Cuts `len` bytes at `base` into segments: one, several at 512-byte multiples, or several
/// at arbitrary byte positions.
fn random_segments(base: *mut u8, len: usize, rng: &mut u64, arbitrary: bool) -> Vec<IoVec> {
    let mode = rand(rng) % 3;
    if mode == 0 && !arbitrary {
        return vec![IoVec { base, len }];
    }
    let n = 2 + (rand(rng) % 4) as usize;
    let unit = if arbitrary { 1 } else { 512 };
    let units = len / unit;
    let mut cuts: Vec<usize> = (0..n - 1)
        .map(|_| (rand(rng) as usize % units.max(1)) * unit)
        .collect();
    cuts.push(0);
    cuts.push(len);
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2)
        .map(|w| IoVec {
            // SAFETY: w[0] < w[1] <= len: inside the buffer.
            base: unsafe { base.add(w[0]) },
            len: w[1] - w[0],
        })
        .collect()
}

fn rt_with(f: impl FnOnce(&mut RtState)) {
    ferrite_reactor::with_local(|s: &RtSlot| {
        if let Some(st) = s.0.borrow_mut().as_mut() {
            f(st)
        }
    });
}

fn rt_fail(msg: String) {
    rt_with(|st| {
        if st.error.is_none() {
            st.error = Some(msg);
        }
    });
}

fn lane_write(lane: usize, mut io: Box<BdevIo>) {
    let mut go = true;
    rt_with(|st| {
        let bs = st.bs;
        let cfg = st.cfg.clone();
        let l = &mut st.lanes[lane];
        if l.round == cfg.rounds || st.error.is_some() {
            go = false;
            return;
        }
        let blocks = 1 + rand(&mut l.rng) % cfg.max_blocks;
        let off = l.base + rand(&mut l.rng) % (cfg.region_blocks - blocks + 1);
        let len = (blocks * bs) as usize;
        // Odd layouts (misaligned start, arbitrary cuts) one time in three: bounced.
        let odd = rand(&mut l.rng).is_multiple_of(3);
        let misalign = if odd {
            1 + (rand(&mut l.rng) % 511) as usize
        } else {
            0
        };
        let mut w = AlignedBuf::new(len, misalign);
        for b in w.as_mut_slice().iter_mut() {
            *b = rand(&mut l.rng) as u8;
        }
        let mut rng = l.rng;
        let segs = random_segments(w.as_mut_ptr(), len, &mut rng, odd);
        l.rng = rng;
        l.off = off;
        l.blocks = blocks;
        l.wbuf = Some(w);
        io.prep_write(off, blocks, write_done);
        io.user = [lane as u64, 0];
        // SAFETY: the buffer stays in the lane until the completion.
        unsafe { io.set_iovs(&segs) };
    });
    if !go {
        return lane_finish(io);
    }
    rt_submit(io);
}

fn rt_submit(io: Box<BdevIo>) {
    let bdev = ferrite_reactor::with_local(|s: &RtSlot| {
        s.0.borrow().as_ref().map(|st| st.cfg.bdev.clone())
    })
    .flatten();
    match bdev {
        Some(b) => {
            let r = with_channel(&b, move |ch| ch.submit(io));
            if let Err(e) = r {
                rt_fail(e);
            }
        }
        None => ferrite_bdev::free_io(io),
    }
}

fn write_done(mut io: Box<BdevIo>) {
    let lane = io.user[0] as usize;
    if io.status() != IoStatus::Success {
        rt_fail(format!("write failed: {:?}", io.status()));
        return lane_finish(io);
    }
    rt_with(|st| {
        let bs = st.bs as usize;
        let l = &mut st.lanes[lane];
        let start = ((l.off - l.base) as usize) * bs;
        if let Some(w) = &l.wbuf {
            l.shadow[start..start + w.as_slice().len()].copy_from_slice(w.as_slice());
        }
        let len = l.blocks as usize * bs;
        let odd = rand(&mut l.rng).is_multiple_of(3);
        let misalign = if odd {
            1 + (rand(&mut l.rng) % 511) as usize
        } else {
            0
        };
        let mut r = AlignedBuf::new(len, misalign);
        r.as_mut_slice().fill(0xee);
        let mut rng = l.rng;
        let segs = random_segments(r.as_mut_ptr(), len, &mut rng, odd);
        l.rng = rng;
        l.rbuf = Some(r);
        io.prep_read(l.off, l.blocks, read_done);
        // SAFETY: the buffer stays in the lane until the completion.
        unsafe { io.set_iovs(&segs) };
    });
    rt_submit(io);
}

fn read_done(io: Box<BdevIo>) {
    let lane = io.user[0] as usize;
    if io.status() != IoStatus::Success {
        rt_fail(format!("read failed: {:?}", io.status()));
        return lane_finish(io);
    }
    let mut bad = None;
    rt_with(|st| {
        let bs = st.bs as usize;
        let l = &mut st.lanes[lane];
        let start = ((l.off - l.base) as usize) * bs;
        if let Some(r) = &l.rbuf {
            let want = &l.shadow[start..start + r.as_slice().len()];
            if r.as_slice() != want {
                let at = r
                    .as_slice()
                    .iter()
                    .zip(want)
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                bad = Some(format!(
                    "lane {lane} round {}: data read at block {} ({} blocks) differs at byte {at}",
                    l.round, l.off, l.blocks
                ));
            }
        }
        l.round += 1;
    });
    if let Some(b) = bad {
        rt_fail(b);
        return lane_finish(io);
    }
    lane_write(lane, io);
}

fn lane_finish(io: Box<BdevIo>) {
    ferrite_bdev::free_io(io);
    rt_with(|st| {
        st.finished += 1;
        if st.finished == st.lanes.len() {
            if let Some(tx) = st.tx.take() {
                let r = match &st.error {
                    Some(e) => Err(e.clone()),
                    None => Ok(st.lanes.iter().map(|l| l.shadow.clone()).collect()),
                };
                let _ = tx.send(r);
            }
        }
    });
}

/// Starts the workload on thread `t`; the receiver gets each lane's expected region contents
/// (the lanes' regions start zeroed).
pub fn start_round_trips(
    t: &ThreadHandle,
    cfg: RoundTrips,
) -> mpsc::Receiver<Result<Vec<Vec<u8>>, String>> {
    let (tx, rx) = mpsc::channel();
    t.send(move || {
        let bs = match with_channel(&cfg.bdev, |ch| ch.bdev().block_size() as u64) {
            Ok(b) => b,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let lanes = (0..cfg.lanes)
            .map(|i| Lane {
                base: cfg.first_block + i as u64 * cfg.region_blocks,
                shadow: vec![0; (cfg.region_blocks * bs) as usize],
                wbuf: None,
                rbuf: None,
                rng: cfg.seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1)),
                round: 0,
                off: 0,
                blocks: 0,
            })
            .collect();
        let n = cfg.lanes;
        ferrite_reactor::with_local(|s: &RtSlot| {
            *s.0.borrow_mut() = Some(RtState {
                cfg,
                bs,
                lanes,
                finished: 0,
                error: None,
                tx: Some(tx),
            })
        });
        for lane in 0..n {
            match ferrite_bdev::alloc_io() {
                Some(io) => lane_write(lane, io),
                None => rt_fail("no I/O object".into()),
            }
        }
    })
    .expect("send to the worker");
    rx
}

// ---------------------------------------------------------------------------------------------
// Files.

/// A directory removed on drop.
pub struct Dir {
    pub path: PathBuf,
}

impl Dir {
    /// A fresh directory under `parent`.
    pub fn new(parent: &Path, tag: &str) -> Dir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = parent.join(format!(
            "ferrite-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a test directory");
        Dir { path }
    }

    /// A zero-filled file of `len` bytes in the directory; returns its path as a string.
    pub fn file(&self, name: &str, len: u64) -> String {
        let p = self.path.join(name);
        let f = std::fs::File::create(&p).expect("create a test file");
        f.set_len(len).expect("size the test file");
        p.display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

const TMPFS_MAGIC: i64 = 0x0102_1994;

fn fs_magic(p: &Path) -> Option<i64> {
    let c = std::ffi::CString::new(p.display().to_string()).ok()?;
    // SAFETY: all-zero is a valid statfs.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: live C string and live struct.
    if unsafe { libc::statfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)]
    Some(s.f_type as i64)
}

/// The directories to test on: one on the disk under the target dir, the system temp dir, and
/// /dev/shm when it is a tmpfs. (label, parent).
pub fn test_dirs() -> Vec<(String, PathBuf)> {
    let mut v = vec![
        (
            "target-dir".to_string(),
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
        ),
        ("temp-dir".to_string(), std::env::temp_dir()),
    ];
    let shm = PathBuf::from("/dev/shm");
    if fs_magic(&shm) == Some(TMPFS_MAGIC) {
        v.push(("tmpfs".to_string(), shm));
    } else {
        eprintln!("note: /dev/shm is not a tmpfs here; tmpfs runs are skipped");
    }
    for (label, p) in &v {
        let kind = match fs_magic(p) {
            Some(TMPFS_MAGIC) => "tmpfs".to_string(),
            Some(m) => format!("fs magic {m:#x}"),
            None => "unknown fs".to_string(),
        };
        eprintln!("test dir {label}: {} ({kind})", p.display());
    }
    v
}

/// Random bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..len).map(|_| rand(&mut s) as u8).collect()
}

/// The `bdev_get_bdevs` entry of `name` (from any OS thread).
pub fn info(name: &str) -> serde_json::Value {
    let b = ferrite_bdev::lookup(name).unwrap_or_else(|| panic!("bdev {name} not registered"));
    ferrite_bdev::rpc::bdev_info(&b)
}

/// The bdev's NOMEM retries so far (all channels).
pub fn nomem_retries(env: &Env, name: &str) -> u64 {
    let b = ferrite_bdev::lookup(name).unwrap_or_else(|| panic!("bdev {name} not registered"));
    let (tx, rx) = mpsc::channel();
    env.rt
        .app_thread()
        .send(move || {
            ferrite_bdev::collect_iostat(&b, move |total, _| {
                let _ = tx.send(total.nomem_retries);
            })
        })
        .expect("send to the app thread");
    rx.recv_timeout(WAIT).expect("iostat")
}

/// A loop device over `file` if this machine allows it (root, losetup present); detached on
/// drop.
pub struct Loop {
    pub dev: String,
}

impl Loop {
    pub fn attach(file: &str) -> Option<Loop> {
        let out = std::process::Command::new("losetup")
            .args(["-f", "--show", file])
            .output();
        let err = match &out {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(String::from_utf8_lossy(&o.stderr).trim().to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(err) = err {
            // As root (the test suite's set-up, and CI) a loop device must be had: a block
            // device case that silently skipped would pass without testing anything.
            // SAFETY: geteuid has no preconditions.
            let euid = unsafe { libc::geteuid() };
            assert!(euid != 0, "losetup failed as root: {err}");
            eprintln!("note: losetup failed ({err}); block device runs are skipped (not root)");
            return None;
        }
        let out = out.ok()?;
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (!dev.is_empty()).then_some(Loop { dev })
    }

    /// Tells the loop driver the backing file changed size.
    pub fn refresh(&self) {
        let _ = std::process::Command::new("losetup")
            .args(["-c", &self.dev])
            .status();
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.dev])
            .status();
    }
}
