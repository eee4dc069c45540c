//! Helpers shared by the bdev integration tests: a configurable test backend (RAM, held I/O,
//! NoMem injection, delayed out-of-order completion, an operation log), a stacked test bdev
//! over other bdevs (for the forwarding tests), a per-OS-thread completion log for `fn`
//! callbacks, a buffer arena for `set_iovs`, and statistics and channel helpers.
#![allow(dead_code, clippy::unwrap_used)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ferrite_bdev::stats::IoStats;
use ferrite_bdev::{
    BackendChannel, Bdev, BdevBackend, BdevChannel, BdevIo, BdevProps, Desc, IoStatus, IoType,
    IoVec,
};
use ferrite_reactor::harness::Harness;
use ferrite_reactor::PollerHandle;
use serde_json::{json, Value};

/// Bound on harness rounds for anything expected to finish.
pub const ROUNDS: usize = 20_000;

/// Runs the harness until `cond` holds; fails the test if it does not within [`ROUNDS`].
pub fn run_until(h: &mut Harness, what: &str, cond: impl FnMut() -> bool) {
    assert!(h.run_until(ROUNDS, cond), "timed out waiting for: {what}");
}

// ---- completion log ----------------------------------------------------------------------------

/// One completed I/O as seen by its submitter's callback.
#[derive(Debug, Clone)]
pub struct Done {
    pub tag: u64,
    pub status: IoStatus,
    pub io_type: IoType,
    pub offset: u64,
    pub num: u64,
    /// Lightweight thread the callback ran on.
    pub thread: u64,
    /// Copy of the attached/supplied buffer, if any.
    pub data: Option<Vec<u8>>,
    /// The device status the backend attached, if any.
    pub dev: Option<ferrite_bdev::DeviceStatus>,
}

thread_local! {
    // Callbacks run on the OS thread that drives the harness, i.e. the test's own thread, so a
    // thread-local log keeps parallel tests apart.
    static DONE: RefCell<Vec<Done>> = const { RefCell::new(Vec::new()) };
}

/// The completion callback used by the tests: logs the I/O and frees it.
pub fn record(io: Box<BdevIo>) {
    let d = Done {
        tag: io.user[0],
        status: io.status(),
        io_type: io.io_type(),
        offset: io.offset_blocks(),
        num: io.num_blocks(),
        thread: ferrite_reactor::current().map(|t| t.id()).unwrap_or(0),
        data: io.buf().map(|b| b.as_slice().to_vec()),
        dev: io.device_status(),
    };
    DONE.with(|l| l.borrow_mut().push(d));
    ferrite_bdev::free_io(io);
}

/// Number of completions logged so far on this OS thread.
pub fn done_count() -> usize {
    DONE.with(|l| l.borrow().len())
}

/// Takes the completion log.
pub fn take_done() -> Vec<Done> {
    DONE.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

/// A copy of the completion log.
pub fn peek_done() -> Vec<Done> {
    DONE.with(|l| l.borrow().clone())
}

// ---- buffers -----------------------------------------------------------------------------------

/// Owns test buffers whose addresses stay fixed (boxed slices) for as long as the arena lives.
/// Keep it alive until every I/O using its segments has completed.
#[derive(Default)]
pub struct Arena(RefCell<Vec<Box<[u8]>>>);

impl Arena {
    /// Stores `data`; returns its index and a segment covering it.
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

    /// Stores `data` and cuts it into segments of the given lengths (the rest in a last one).
    pub fn add_split(&self, data: Vec<u8>, cuts: &[usize]) -> (usize, Vec<IoVec>) {
        let (i, whole) = self.add(data);
        let mut out = Vec::new();
        let mut pos = 0usize;
        for &c in cuts {
            if pos + c >= whole.len {
                break;
            }
            // SAFETY: pos + c < whole.len, so the segment stays inside the boxed slice.
            let base = unsafe { whole.base.add(pos) };
            out.push(IoVec { base, len: c });
            pos += c;
        }
        // SAFETY: pos < whole.len (checked in the loop), inside the boxed slice.
        let base = unsafe { whole.base.add(pos) };
        out.push(IoVec {
            base,
            len: whole.len - pos,
        });
        (i, out)
    }

    /// A copy of buffer `i` (call only once the I/O using it has completed).
    pub fn get(&self, i: usize) -> Vec<u8> {
        self.0.borrow()[i].to_vec()
    }
}

/// Submits a write of `data` (owned by `arena`) at `off`, tagged `tag`, split into segments
/// at `cuts`.
pub fn write_at(
    ch: &BdevChannel,
    arena: &Arena,
    off: u64,
    data: Vec<u8>,
    cuts: &[usize],
    tag: u64,
) {
    let bs = u64::from(ch.bdev().block_size());
    let n = data.len() as u64 / bs;
    let (_, iovs) = arena.add_split(data, cuts);
    let mut io = ch.alloc_io().unwrap();
    io.prep_write(off, n, record);
    io.user[0] = tag;
    // SAFETY: the segments point into `arena`, which the caller keeps alive and untouched until
    // the I/O completes.
    unsafe { io.set_iovs(&iovs) };
    ch.submit(io);
}

/// Submits a read of `n` blocks at `off` into a zeroed arena buffer; returns its arena index.
pub fn read_at(
    ch: &BdevChannel,
    arena: &Arena,
    off: u64,
    n: u64,
    cuts: &[usize],
    tag: u64,
) -> usize {
    let bs = ch.bdev().block_size() as usize;
    let (i, iovs) = arena.add_split(vec![0; n as usize * bs], cuts);
    let mut io = ch.alloc_io().unwrap();
    io.prep_read(off, n, record);
    io.user[0] = tag;
    // SAFETY: as in write_at.
    unsafe { io.set_iovs(&iovs) };
    ch.submit(io);
    i
}

/// Submits a read with no buffer (the bdev layer supplies one, logged in `Done::data`).
pub fn read_auto(ch: &BdevChannel, off: u64, n: u64, tag: u64) {
    let mut io = ch.alloc_io().unwrap();
    io.prep_read(off, n, record);
    io.user[0] = tag;
    ch.submit(io);
}

/// Submits an I/O prepared by `prep` (no data), tagged `tag`.
pub fn submit_plain(ch: &BdevChannel, tag: u64, prep: impl FnOnce(&mut BdevIo)) {
    let mut io = ch.alloc_io().unwrap();
    prep(&mut io);
    io.user[0] = tag;
    ch.submit(io);
}

/// `n` bytes of a repeated little-endian `u32` word.
pub fn pattern(word: u32, n: usize) -> Vec<u8> {
    word.to_le_bytes().iter().copied().cycle().take(n).collect()
}

/// Bytes that differ at every position (for detecting misplaced data).
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

// ---- the test backend --------------------------------------------------------------------------

/// How a [`TestBackend`] behaves.
#[derive(Debug, Clone)]
pub struct TestCfg {
    /// Types it handles natively.
    pub supported: Vec<IoType>,
    /// Keep data in RAM (else reads return nothing and writes are discarded).
    pub ram: bool,
    /// Complete I/O later, from a per-channel poller, in a seeded random order.
    pub delay_seed: Option<u64>,
    /// Optimal I/O boundary in blocks (split on it when non-zero).
    pub boundary: u32,
}

impl Default for TestCfg {
    fn default() -> Self {
        Self {
            supported: vec![IoType::Read, IoType::Write, IoType::Flush],
            ram: true,
            delay_seed: None,
            boundary: 0,
        }
    }
}

/// One operation as the backend applied it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub t: IoType,
    pub off: u64,
    pub n: u64,
    /// Name of the lightweight thread it ran on.
    pub thread: String,
    /// First little-endian word of the data read or written (RAM reads/writes only).
    pub word: Option<u32>,
    /// True if the data read or written was one repeated word.
    pub uniform: bool,
}

/// Shared state of a test backend, for the test to steer and inspect.
pub struct TestState {
    pub block_size: u32,
    pub num_blocks: u64,
    /// Hold data I/O (everything but reset) until [`TestState::release_here`].
    pub hold: AtomicBool,
    /// Complete this many submissions with `IoStatus::NoMem` before serving any.
    pub nomem_left: AtomicUsize,
    pub held: Mutex<Vec<(u64, Box<BdevIo>)>>,
    pub log: Mutex<Vec<Op>>,
    pub submits: AtomicUsize,
    pub destructs: AtomicUsize,
    pub channels_created: AtomicUsize,
    pub ram: Option<Mutex<Vec<u8>>>,
}

impl TestState {
    /// Number of I/O currently held.
    pub fn held_count(&self) -> usize {
        self.held.lock().unwrap().len()
    }

    /// Completes the I/O held for the calling lightweight thread, each with the status
    /// `status(io)` returns (data is applied for successes). Returns how many.
    pub fn release_here(&self, status: impl Fn(&BdevIo) -> IoStatus) -> usize {
        let me = ferrite_reactor::current().unwrap().id();
        let mine: Vec<Box<BdevIo>> = {
            let mut h = self.held.lock().unwrap();
            let (mine, rest): (Vec<_>, Vec<_>) = h.drain(..).partition(|(t, _)| *t == me);
            *h = rest;
            mine.into_iter().map(|(_, io)| io).collect()
        };
        let n = mine.len();
        for io in mine {
            let st = status(&io);
            let st = if st == IoStatus::Success {
                self.apply(&io)
            } else {
                st
            };
            io.complete(st);
        }
        n
    }

    /// A copy of the operation log.
    pub fn ops(&self) -> Vec<Op> {
        self.log.lock().unwrap().clone()
    }

    /// A copy of the RAM contents of `[off, off+n)` blocks.
    pub fn ram_blocks(&self, off: u64, n: u64) -> Vec<u8> {
        let bs = self.block_size as usize;
        let r = self.ram.as_ref().unwrap().lock().unwrap();
        r[off as usize * bs..(off + n) as usize * bs].to_vec()
    }

    /// Fills the RAM contents of `[off, off+n)` blocks with `byte`.
    pub fn fill_ram(&self, off: u64, n: u64, byte: u8) {
        let bs = self.block_size as usize;
        let mut r = self.ram.as_ref().unwrap().lock().unwrap();
        r[off as usize * bs..(off + n) as usize * bs].fill(byte);
    }

    /// Applies `io` to the RAM (if any), logs it, and returns the status to complete it with.
    fn apply(&self, io: &BdevIo) -> IoStatus {
        let thread = ferrite_reactor::current()
            .map(|t| t.name().to_string())
            .unwrap_or_default();
        let bs = self.block_size as usize;
        let in_range = io
            .offset_blocks()
            .checked_add(io.num_blocks())
            .is_some_and(|e| e <= self.num_blocks);
        let mut op = Op {
            t: io.io_type(),
            off: io.offset_blocks(),
            n: io.num_blocks(),
            thread,
            word: None,
            uniform: false,
        };
        let mut status = IoStatus::Success;
        match (&self.ram, in_range) {
            (_, false) => status = IoStatus::Failed,
            (None, true) => {}
            (Some(ram), true) => {
                let mut ram = ram.lock().unwrap();
                let start = io.offset_blocks() as usize * bs;
                let len = io.num_blocks() as usize * bs;
                let region = &mut ram[start..start + len];
                match io.io_type() {
                    IoType::Read | IoType::Write => {
                        let mut pos = 0usize;
                        for v in io.iovs() {
                            let take = v.len.min(len - pos);
                            // SAFETY: the bdev layer hands the backend segments that the
                            // submitter keeps valid and untouched until the I/O completes.
                            let seg = unsafe { std::slice::from_raw_parts_mut(v.base, take) };
                            if io.io_type() == IoType::Read {
                                seg.copy_from_slice(&region[pos..pos + take]);
                            } else {
                                region[pos..pos + take].copy_from_slice(seg);
                            }
                            pos += take;
                        }
                        if region.len() >= 4 {
                            let w =
                                u32::from_le_bytes([region[0], region[1], region[2], region[3]]);
                            op.word = Some(w);
                            op.uniform = region.chunks(4).all(|c| c == &region[..4]);
                        }
                    }
                    IoType::Unmap | IoType::WriteZeroes => region.fill(0),
                    _ => {}
                }
            }
        }
        self.log.lock().unwrap().push(op);
        status
    }
}

/// A [`BdevBackend`] for tests, configured by [`TestCfg`] and steered through [`TestState`].
pub struct TestBackend {
    pub cfg: TestCfg,
    pub state: Arc<TestState>,
}

struct TestChannel {
    state: Arc<TestState>,
    delayed: Option<Arc<Mutex<VecDeque<Box<BdevIo>>>>>,
    _poller: Option<PollerHandle>,
}

impl BackendChannel for TestChannel {
    fn submit(&mut self, io: Box<BdevIo>) {
        let s = &self.state;
        s.submits.fetch_add(1, Ordering::SeqCst);
        let nomem = s
            .nomem_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if nomem {
            return io.complete(IoStatus::NoMem);
        }
        if s.hold.load(Ordering::SeqCst) && io.io_type() != IoType::Reset {
            let me = ferrite_reactor::current().unwrap().id();
            s.held.lock().unwrap().push((me, io));
            return;
        }
        if let Some(q) = &self.delayed {
            q.lock().unwrap().push_back(io);
            return;
        }
        let st = s.apply(&io);
        io.complete(st);
    }
}

impl BdevBackend for TestBackend {
    fn module_name(&self) -> &'static str {
        "test"
    }
    fn io_type_supported(&self, t: IoType) -> bool {
        self.cfg.supported.contains(&t)
    }
    fn create_channel(&self) -> Box<dyn BackendChannel> {
        self.state.channels_created.fetch_add(1, Ordering::SeqCst);
        let (delayed, poller) = match self.cfg.delay_seed {
            None => (None, None),
            Some(seed) => {
                let q: Arc<Mutex<VecDeque<Box<BdevIo>>>> = Arc::default();
                let name = ferrite_reactor::current()
                    .map(|t| t.name().to_string())
                    .unwrap_or_default();
                let mut x = name.bytes().fold(seed ^ 0x5DEE_CE66_D1CE_4E5B, |a, b| {
                    a.rotate_left(5) ^ u64::from(b)
                }) | 1;
                let (q2, state) = (q.clone(), self.state.clone());
                let p = ferrite_reactor::register_poller("test_backend", 0, move || {
                    let mut rnd = || {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x
                    };
                    let len = q2.lock().unwrap().len();
                    if len == 0 {
                        return 0;
                    }
                    // Complete 0..=2 of the queued I/O, picked at random (out of order).
                    let k = (rnd() % 3) as usize;
                    for _ in 0..k.min(len) {
                        let io = {
                            let mut q = q2.lock().unwrap();
                            let i = (rnd() % q.len() as u64) as usize;
                            q.remove(i)
                        };
                        if let Some(io) = io {
                            let st = state.apply(&io);
                            io.complete(st);
                        }
                    }
                    len
                })
                .unwrap();
                (Some(q), Some(p))
            }
        };
        Box::new(TestChannel {
            state: self.state.clone(),
            delayed,
            _poller: poller,
        })
    }
    fn destruct(&self) {
        self.state.destructs.fetch_add(1, Ordering::SeqCst);
    }
    fn config_entry(&self, bdev: &Bdev) -> Option<Value> {
        Some(json!({"method": "test_create", "params": {"name": bdev.name()}}))
    }
}

/// Registers a test bdev (call on a harness thread).
pub fn register_test(
    name: &str,
    block_size: u32,
    num_blocks: u64,
    cfg: TestCfg,
) -> (Arc<Bdev>, Arc<TestState>) {
    let state = Arc::new(TestState {
        block_size,
        num_blocks,
        hold: AtomicBool::new(false),
        nomem_left: AtomicUsize::new(0),
        held: Mutex::new(Vec::new()),
        log: Mutex::new(Vec::new()),
        submits: AtomicUsize::new(0),
        destructs: AtomicUsize::new(0),
        channels_created: AtomicUsize::new(0),
        ram: cfg
            .ram
            .then(|| Mutex::new(vec![0u8; block_size as usize * num_blocks as usize])),
    });
    let mut props = BdevProps::new(name, "Test disk", block_size, num_blocks);
    props.optimal_io_boundary = cfg.boundary;
    props.split_on_optimal_io_boundary = cfg.boundary > 0;
    let backend = Arc::new(TestBackend {
        cfg,
        state: state.clone(),
    });
    let b = ferrite_bdev::register(props, backend).unwrap();
    (b, state)
}

/// Creates a null bdev `name` of 64 blocks of 512 bytes on harness thread 0 and returns it.
pub fn null64(h: &mut Harness, name: &str) -> Arc<Bdev> {
    h.on(0, || {
        ferrite_null::create(&ferrite_null::NullOpts {
            name: name.to_string(),
            num_blocks: 64,
            block_size: 512,
            uuid: None,
            md_size: 0,
        })
        .unwrap();
        ferrite_bdev::lookup(name).unwrap()
    })
}

/// Creates a malloc bdev named `name` (call on a harness thread).
pub fn malloc(name: &str, num_blocks: u64, block_size: u32, boundary: u32) {
    ferrite_malloc::create(&ferrite_malloc::MallocOpts {
        name: Some(name.to_string()),
        num_blocks,
        block_size,
        optimal_io_boundary: boundary,
        ..Default::default()
    })
    .unwrap();
}

// ---- stacked test bdevs ------------------------------------------------------------------------

/// Builds a stacked test bdev's backend channel from one channel of each of its bases.
pub type MakeChannel = Box<dyn Fn(Vec<BdevChannel>) -> Box<dyn BackendChannel> + Send + Sync>;

/// A [`BdevBackend`] over other bdevs (the forwarding tests' stacked bdevs): what its channel
/// does with I/O is up to `make`.
pub struct StackedBackend {
    module: &'static str,
    types: &'static [IoType],
    bases: Mutex<Vec<Desc>>,
    make: MakeChannel,
}

impl BdevBackend for StackedBackend {
    fn module_name(&self) -> &'static str {
        self.module
    }
    fn io_type_supported(&self, t: IoType) -> bool {
        self.types.contains(&t)
    }
    fn create_channel(&self) -> Box<dyn BackendChannel> {
        let bases = self
            .bases
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.channel().unwrap())
            .collect();
        (self.make)(bases)
    }
    fn config_entry(&self, _bdev: &Bdev) -> Option<Value> {
        None
    }
}

/// What a stacked test bdev is: its module name, the types it supports, its product name.
pub struct StackedKind {
    pub module: &'static str,
    pub types: &'static [IoType],
    pub product: &'static str,
}

/// Registers a stacked test bdev `name` of `num_blocks` blocks of `block_size` over `bases`
/// (opened writable if `write`), its channels built by `make` (call on a harness thread).
pub fn register_stacked(
    kind: &StackedKind,
    name: &str,
    bases: &[&str],
    block_size: u32,
    num_blocks: u64,
    write: bool,
    make: MakeChannel,
) {
    let descs = bases
        .iter()
        .map(|b| Desc::open(b, write, |_| {}).unwrap())
        .collect();
    let backend = Arc::new(StackedBackend {
        module: kind.module,
        types: kind.types,
        bases: Mutex::new(descs),
        make,
    });
    ferrite_bdev::register(
        BdevProps::new(name, kind.product, block_size, num_blocks),
        backend,
    )
    .unwrap();
}

// ---- statistics and channels -------------------------------------------------------------------

/// The I/O statistics of bdev `name`, collected on harness thread 0.
pub fn iostat(h: &mut Harness, name: &str) -> IoStats {
    let b = ferrite_bdev::lookup(name).unwrap();
    let out: Arc<Mutex<Option<IoStats>>> = Arc::default();
    let o = out.clone();
    h.on(0, move || {
        ferrite_bdev::collect_iostat(&b, move |t, _| *o.lock().unwrap() = Some(t))
    });
    let o = out.clone();
    run_until(h, "collect_iostat", || o.lock().unwrap().is_some());
    let s = out.lock().unwrap().take().unwrap();
    s
}

/// Opens bdev `name` writable and a channel on it, on harness thread 0.
pub fn open_channel(h: &mut Harness, name: &str) -> (Desc, BdevChannel) {
    let d = h.on(0, || Desc::open(name, true, |_| {}).unwrap());
    let ch = h.on(0, || d.channel().unwrap());
    (d, ch)
}

/// The forwarding tests' reset check, whatever forwards (`forward`, `forward_all`): a reset of
/// the stacked bdev open as `ch` waits for three reads held on the base `st`, completes last,
/// and I/O flows again after it. Drops `ch` on thread 0 at the end.
pub fn reset_waits_for_io_held_on_the_base(h: &mut Harness, ch: BdevChannel, st: &TestState) {
    let arena = Arena::default();
    st.hold.store(true, Ordering::SeqCst);
    h.on(0, || {
        for k in 0..3 {
            read_at(&ch, &arena, k * 8, 8, &[], 10 + k);
        }
        submit_plain(&ch, 99, |io| {
            io.prep_reset(record);
        });
    });
    run_until(h, "reads held", || st.held_count() == 3);
    for _ in 0..200 {
        h.poll_all();
    }
    assert_eq!(done_count(), 0, "reset finished with I/O still on the base");
    h.on(0, || st.release_here(|_| IoStatus::Success));
    run_until(h, "all", || done_count() == 4);
    let done = take_done();
    assert!(
        done.iter().all(|d| d.status == IoStatus::Success),
        "{done:?}"
    );
    assert_eq!(
        done.last().unwrap().tag,
        99,
        "the reset completes last: {done:?}"
    );
    st.hold.store(false, Ordering::SeqCst);
    h.on(0, || read_at(&ch, &arena, 0, 1, &[], 5));
    run_until(h, "read after reset", || done_count() == 1);
    assert_eq!(take_done()[0].status, IoStatus::Success);
    h.on(0, || drop(ch));
}

/// The forwarding tests' split check: a 16-block write at block 4 through the stacked bdev
/// `top` (open as `ch`) reaches the base `base` (state `st`, split boundary 8 blocks) as three
/// pieces on that boundary, lands intact, and counts once on each bdev. Drops `ch`.
pub fn base_splits_what_it_is_forwarded(
    h: &mut Harness,
    ch: BdevChannel,
    st: &TestState,
    (top, base): (&str, &str),
    bs: u32,
) {
    let arena = Arena::default();
    let data = noise(8, 16 * bs as usize);
    h.on(0, || write_at(&ch, &arena, 4, data.clone(), &[], 1));
    run_until(h, "write", || done_count() == 1);
    assert_eq!(take_done()[0].status, IoStatus::Success);
    assert_eq!(st.ram_blocks(4, 16), data);
    let writes: Vec<(u64, u64)> = st
        .ops()
        .iter()
        .filter(|o| o.t == IoType::Write)
        .map(|o| (o.off, o.n))
        .collect();
    assert_eq!(
        writes,
        vec![(4, 4), (8, 8), (16, 4)],
        "split on the base's boundary"
    );
    let (t, b) = (iostat(h, top), iostat(h, base));
    assert_eq!(
        (t.write.ops, b.write.ops),
        (1, 1),
        "a split I/O counts once"
    );
    h.on(0, || drop(ch));
}
