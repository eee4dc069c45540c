//! Controllers: creation (open and claim the bdev, spawn the queue threads, bind the socket,
//! start the control thread), listing, coalescing settings, deletion, bdev hot-remove, and
//! their save_config entries.
//!
//! Thread contract: `create`, `delete`, `list`, `set_coalescing` and `config_json` run on the
//! app thread (RPC handlers); `delete` finishes on a helper OS thread because stopping a
//! controller waits for its rings to drain, which a reactor must not do.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use ferrite_bdev::{BdevEvent, ClaimKind, Desc, IoType};
use ferrite_reactor::{CpuMask, ThreadHandle};

use crate::blk::config::{BlkGeometry, MAX_QUEUES};
use crate::device::Device;
use crate::error::{ErrorKind, Result, VhostError};
use crate::listener::ControlThread;

mod info;
mod linger;
pub use info::{config_json, list, names, set_coalescing};
use linger::{exit_threads, Lingering};

/// Target-wide settings given by `ferrite tgt` at start-up.
#[derive(Debug, Clone)]
pub struct VhostSettings {
    /// Directory where controller sockets are created (`ferrite tgt -S`).
    pub socket_dir: PathBuf,
    /// Permissions of controller sockets.
    pub socket_mode: u32,
    /// Core of each reactor, by reactor index.
    pub reactor_cores: Vec<usize>,
}

static SETTINGS: OnceLock<VhostSettings> = OnceLock::new();

/// Sets the target-wide settings (once, before any controller is created). Later calls are
/// ignored. Any thread.
pub fn init(s: VhostSettings) {
    let _ = SETTINGS.set(s);
}

fn settings() -> VhostSettings {
    SETTINGS.get().cloned().unwrap_or_else(|| VhostSettings {
        socket_dir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        socket_mode: 0o600,
        reactor_cores: vec![0],
    })
}

/// Parameters of `vhost_create_blk_controller`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateOpts {
    /// Controller (and socket file) name.
    pub ctrlr: String,
    /// The bdev.
    pub dev_name: String,
    /// Cores whose reactors poll the queues (default: every reactor).
    pub cpumask: Option<String>,
    /// Fail writes and advertise RO.
    pub readonly: bool,
    /// Offer the packed ring.
    pub packed_ring: bool,
}

/// State shared by a controller's control thread and its queue pollers.
pub struct CtrlShared {
    /// Controller name.
    pub name: String,
    pub(crate) bdev_name: String,
    pub(crate) readonly: bool,
    pub(crate) packed: bool,
    pub(crate) cpumask: String,
    geometry: BlkGeometry,
    /// The descriptor (holding our claim); `None` once the bdev is gone.
    pub(crate) desc: Mutex<Option<Arc<Desc>>>,
    /// One lightweight thread per reactor of the cpumask; queue `q` runs on `threads[q % n]`.
    pub(crate) threads: Vec<ThreadHandle>,
    pub(crate) delay_base_us: AtomicU32,
    pub(crate) iops_threshold: AtomicU32,
    /// Bit `q` set: queue `q` is broken (it refused a chain it could not answer, or its ring
    /// could not be accessed) until the frontend restarts it; `vhost_get_controllers` shows it.
    broken_queues: AtomicU32,
    /// Bit `q` set: ring `q` of the connected frontend is running. Written by the control
    /// thread when it starts or stops a ring, read by `vhost_get_controllers` on a reactor,
    /// which must never wait for the device lock: the control thread holds it while it waits
    /// for that reactor to start or drain a ring.
    running_queues: AtomicU32,
    removed: AtomicBool,
    session: Mutex<Option<Arc<Mutex<Device>>>>,
    pub(crate) serial: [u8; crate::blk::request::ID_LEN],
    /// Requests each queue has in flight (popped, not yet answered), as its poller last saw
    /// them: written by that poller when the count changed (once per poll, not per request;
    /// a cache line each), summed by `vhost_get_controllers`.
    queue_inflight: [QueueCount; MAX_QUEUES as usize],
    /// Per queue thread (as `threads`): abandoned queues still waiting for their I/O, and
    /// whether the thread was asked to exit (`linger` module docs).
    lingering: Vec<Lingering>,
}

/// One queue's count, alone on its cache line (queues poll on different reactors).
#[repr(align(64))]
#[derive(Default)]
struct QueueCount(AtomicU32);

impl CtrlShared {
    /// What the device tells the frontend about itself.
    pub fn geometry(&self) -> BlkGeometry {
        self.geometry
    }

    /// True once the bdev has been hot-removed (or the controller deleted).
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// Marks queue `q` broken (`true`, from its poller) or running again (`false`, when the
    /// frontend restarts the ring). Thread contract: any thread.
    pub(crate) fn set_queue_broken(&self, q: u16, broken: bool) {
        set_queue_bit(&self.broken_queues, usize::from(q), broken);
    }

    /// The queues that are broken now, in order. Thread contract: any thread.
    pub fn broken_queues(&self) -> Vec<u16> {
        let bits = self.broken_queues.load(Ordering::Relaxed);
        (0..32u16).filter(|q| bits & (1 << q) != 0).collect()
    }

    /// Records that ring `q` started (`true`) or stopped. Thread contract: the control thread,
    /// as it starts or stops the ring.
    pub(crate) fn set_queue_running(&self, q: usize, running: bool) {
        set_queue_bit(&self.running_queues, q, running);
    }

    /// Records that queue `q` has `n` requests in flight. Thread contract: the queue's poller.
    pub(crate) fn set_queue_inflight(&self, q: u16, n: usize) {
        if let Some(c) = self.queue_inflight.get(usize::from(q)) {
            c.0.store(u32::try_from(n).unwrap_or(u32::MAX), Ordering::Relaxed);
        }
    }

    /// Requests in flight on every queue, as their pollers last saw them. Thread contract:
    /// any thread; never blocks.
    pub fn inflight(&self) -> u64 {
        self.queue_inflight
            .iter()
            .map(|c| u64::from(c.0.load(Ordering::Relaxed)))
            .sum()
    }

    /// True while a ring of the connected frontend runs. Thread contract: any thread; never
    /// blocks.
    pub fn started(&self) -> bool {
        self.running_queues.load(Ordering::Acquire) != 0
    }

    /// Sets the connected frontend's device; a new connection or a disconnect forgets which
    /// queues the previous one had broken.
    pub(crate) fn set_session(&self, s: Option<Arc<Mutex<Device>>>) {
        self.broken_queues.store(0, Ordering::Relaxed);
        if let Ok(mut g) = self.session.lock() {
            *g = s;
        }
    }

    /// The connected frontend's device. Thread contract: any thread (the session slot's lock
    /// is only ever held to read or replace it; the device's own lock is the caller's
    /// business, and never a reactor's: see `started`).
    pub(crate) fn session(&self) -> Option<Arc<Mutex<Device>>> {
        self.session.lock().ok().and_then(|g| g.clone())
    }
}

/// Sets (`on`) or clears bit `q` of a per-queue bitmask (queues beyond 32 have no bit).
fn set_queue_bit(word: &AtomicU32, q: usize, on: bool) {
    let bit = u32::try_from(q)
        .ok()
        .and_then(|q| 1u32.checked_shl(q))
        .unwrap_or(0);
    if on {
        word.fetch_or(bit, Ordering::AcqRel);
    } else {
        word.fetch_and(!bit, Ordering::AcqRel);
    }
}

struct Controller {
    shared: Arc<CtrlShared>,
    socket: PathBuf,
    control: Option<ControlThread>,
}

static CONTROLLERS: Mutex<Vec<Controller>> = Mutex::new(Vec::new());

fn controllers() -> MutexGuard<'static, Vec<Controller>> {
    CONTROLLERS.lock().unwrap_or_else(|p| p.into_inner())
}

fn bad(msg: String) -> VhostError {
    VhostError::new(ErrorKind::InvalidArgument, msg)
}

/// Creates a controller. Errors name the controller and what failed: duplicate name,
/// invalid name, unknown bdev, bdev already claimed, cpumask with no reactor, socket
/// cannot be bound.
pub fn create(opts: &CreateOpts) -> Result<()> {
    let name = &opts.ctrlr;
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(bad(format!(
            "vhost controller name '{name}' is invalid (it names a socket file)"
        )));
    }
    if controllers().iter().any(|c| c.shared.name == *name) {
        return Err(VhostError::new(
            ErrorKind::Exists,
            format!("vhost controller '{name}' already exists"),
        ));
    }
    let set = settings();
    // Reactors of the cpumask.
    let indices: Vec<usize> = match &opts.cpumask {
        None => (0..set.reactor_cores.len()).collect(),
        Some(m) => {
            let mask = CpuMask::parse(m).map_err(|e| {
                bad(format!(
                    "vhost controller '{name}': invalid cpumask '{m}': {e}"
                ))
            })?;
            let idx: Vec<usize> = set
                .reactor_cores
                .iter()
                .enumerate()
                .filter(|(_, c)| mask.cores().contains(c))
                .map(|(i, _)| i)
                .collect();
            if idx.is_empty() {
                return Err(bad(format!(
                    "vhost controller '{name}': cpumask '{m}' contains no core of the target's reactors (cores {:?})",
                    set.reactor_cores
                )));
            }
            idx
        }
    };
    let cores: Vec<usize> = indices.iter().map(|i| set.reactor_cores[*i]).collect();
    let cpumask = mask_string(&cores);
    // Open and claim the bdev.
    let ev_name = name.clone();
    let desc = Desc::open(&opts.dev_name, !opts.readonly, move |ev| {
        on_bdev_event(&ev_name, ev)
    })
    .map_err(|e| {
        let e = VhostError::from(e);
        VhostError::new(
            e.kind(),
            format!("vhost controller '{name}': {}", e.message()),
        )
    })?;
    let kind = if opts.readonly {
        ClaimKind::ReadManyWriteNone
    } else {
        ClaimKind::ExclusiveWrite
    };
    desc.claim(kind, "vhost_blk").map_err(|e| {
        VhostError::new(
            ErrorKind::Claimed,
            format!(
                "vhost controller '{name}': cannot claim bdev: {}",
                e.message()
            ),
        )
    })?;
    let bdev = desc.bdev().clone();
    let geometry = BlkGeometry {
        block_size: bdev.block_size(),
        num_blocks: bdev.num_blocks(),
        num_queues: MAX_QUEUES,
        readonly: opts.readonly,
        flush: bdev.io_type_supported(IoType::Flush),
        discard: bdev.io_type_supported(IoType::Unmap),
        write_zeroes: bdev.io_type_supported(IoType::WriteZeroes),
        packed: opts.packed_ring,
    };
    if bdev.block_size() < 512 || bdev.block_size() % 512 != 0 {
        return Err(bad(format!(
            "vhost controller '{name}': bdev '{}' has block size {} (a multiple of 512 is needed)",
            bdev.name(),
            bdev.block_size()
        )));
    }
    // Queue threads, one per reactor of the mask.
    let mut threads = Vec::with_capacity(indices.len());
    for i in &indices {
        let t =
            ferrite_reactor::spawn_thread(&format!("vhost.{name}.{i}"), Some(*i)).map_err(|e| {
                VhostError::new(ErrorKind::Io, format!("vhost controller '{name}': {e}"))
            })?;
        threads.push(t);
    }
    let mut serial = [0u8; crate::blk::request::ID_LEN];
    let b = bdev.name().as_bytes();
    let n = b.len().min(serial.len());
    serial[..n].copy_from_slice(&b[..n]);
    let shared = Arc::new(CtrlShared {
        name: name.clone(),
        bdev_name: bdev.name().to_string(),
        readonly: opts.readonly,
        packed: opts.packed_ring,
        cpumask,
        geometry,
        desc: Mutex::new(Some(Arc::new(desc))),
        threads,
        delay_base_us: AtomicU32::new(0),
        iops_threshold: AtomicU32::new(0),
        broken_queues: AtomicU32::new(0),
        running_queues: AtomicU32::new(0),
        removed: AtomicBool::new(false),
        session: Mutex::new(None),
        serial,
        queue_inflight: Default::default(),
        lingering: (0..indices.len()).map(|_| Lingering::default()).collect(),
    });
    let socket = set.socket_dir.join(name);
    let fail = |shared: &Arc<CtrlShared>, e: VhostError| {
        exit_threads(shared);
        e
    };
    let listener = bind(&socket, set.socket_mode).map_err(|e| {
        fail(
            &shared,
            VhostError::new(
                ErrorKind::Io,
                format!(
                    "vhost controller '{name}': cannot listen on {}: {e}",
                    socket.display()
                ),
            ),
        )
    })?;
    let control = ControlThread::start(shared.clone(), listener).map_err(|e| {
        let _ = std::fs::remove_file(&socket);
        fail(
            &shared,
            VhostError::new(ErrorKind::Io, format!("vhost controller '{name}': {e}")),
        )
    })?;
    tracing::info!(
        "vhost controller '{name}' on bdev '{}' listening on {}",
        shared.bdev_name,
        socket.display()
    );
    controllers().push(Controller {
        shared,
        socket,
        control: Some(control),
    });
    Ok(())
}

fn bind(path: &std::path::Path, mode: u32) -> std::io::Result<UnixListener> {
    // A socket file left by a killed target: replace it (what a restart after SIGKILL finds).
    if let Ok(md) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if md.file_type().is_socket() {
            std::fs::remove_file(path)?;
        } else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a socket exists there",
            ));
        }
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(l)
}

fn mask_string(cores: &[usize]) -> String {
    let mut bits: Vec<u64> = Vec::new();
    for c in cores {
        let (w, b) = (c / 64, c % 64);
        if bits.len() <= w {
            bits.resize(w + 1, 0);
        }
        bits[w] |= 1 << b;
    }
    let mut s = String::from("0x");
    for (i, w) in bits.iter().rev().enumerate() {
        if i == 0 {
            s.push_str(&format!("{w:x}"));
        } else {
            s.push_str(&format!("{w:016x}"));
        }
    }
    s
}

/// Stops a controller taken out of the list: control thread (rings drained), queue threads,
/// socket file, bdev descriptor. Blocks: call on a non-reactor thread.
fn teardown(mut c: Controller) {
    c.shared.removed.store(true, Ordering::Release);
    if let Some(ct) = c.control.take() {
        ct.stop(&c.shared);
    }
    exit_threads(&c.shared);
    let _ = std::fs::remove_file(&c.socket);
    let desc = c.shared.desc.lock().ok().and_then(|mut d| d.take());
    drop(desc);
    tracing::info!("vhost controller '{}' deleted", c.shared.name);
}

/// Deletes a controller; `done` runs on a helper thread once it is gone (its frontend
/// disconnected, rings drained, bdev released).
pub fn delete(name: &str, done: impl FnOnce(Result<()>) + Send + 'static) {
    let c = {
        let mut list = controllers();
        match list.iter().position(|c| c.shared.name == name) {
            Some(i) => list.remove(i),
            None => {
                return done(Err(VhostError::new(
                    ErrorKind::NotFound,
                    format!("vhost controller '{name}' does not exist"),
                )))
            }
        }
    };
    let spawned = std::thread::Builder::new()
        .name("vhost-delete".into())
        .spawn(move || {
            teardown(c);
            done(Ok(()));
        });
    if let Err(e) = spawned {
        tracing::error!("vhost: cannot start the teardown thread: {e}");
    }
}

/// Stops every controller (target shutdown), before the bdevs are removed. Blocks: call on
/// a non-reactor thread.
pub fn shutdown() {
    let all: Vec<Controller> = controllers().drain(..).collect();
    for c in all {
        teardown(c);
    }
}

/// The bdev under a controller is going away: the rings finish the I/O they have on it and
/// release their channels, then the descriptor is released so the removal can finish. The
/// controller stays listed (`bdev: null`) and its frontend stays connected, every later
/// request failing with IOERR (as SPDK's), until the controller is deleted.
fn on_bdev_event(name: &str, ev: BdevEvent) {
    if !matches!(ev, BdevEvent::Remove) {
        return;
    }
    let shared = controllers()
        .iter()
        .find(|c| c.shared.name == name)
        .map(|c| c.shared.clone());
    let Some(shared) = shared else { return };
    tracing::warn!(
        "vhost controller '{name}': bdev '{}' is being removed; the controller stops serving",
        shared.bdev_name
    );
    shared.removed.store(true, Ordering::Release);
    let _ = std::thread::Builder::new()
        .name("vhost-hotremove".into())
        .spawn(move || {
            if let Some(dev) = shared.session() {
                if let Ok(mut d) = dev.lock() {
                    d.detach_bdev();
                }
            }
            let desc = shared.desc.lock().ok().and_then(|mut d| d.take());
            drop(desc);
        });
}
