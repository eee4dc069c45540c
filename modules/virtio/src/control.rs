//! Attaching and detaching virtio-user controllers; the bdev each one exposes; the monitor
//! thread that notices a server going away.
//!
//! Life of a controller: `attach` checks the name on the app thread, runs the vhost-user
//! handshake on a short-lived OS thread (socket timeouts: a silent server cannot block a
//! reactor), registers the bdev (named as the controller, as SPDK names virtio-blk bdevs) on
//! the app thread, then hands the connection to a monitor thread. The monitor waits for the
//! socket to hang up (server gone: the controller is marked broken, requests in flight fail,
//! every channel's reactor is woken, and the bdev is unregistered) or for the stop signal
//! sent by `destruct` (detach: it closes the connection) or by a request timeout
//! (`timeout.rs`: the controller is marked failed; it closes the connection, the bdev stays
//! until detached).
//!
//! Thread contract: `attach`, `detach`, `list` run on the app thread; `done` callbacks run on
//! the app thread after the call returned.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ferrite_bdev::uuid::Uuid;
use ferrite_bdev::{
    BackendChannel, Bdev, BdevBackend, BdevError, BdevModule, BdevProps, ErrorKind, IoType, Result,
};
use ferrite_reactor::ThreadHandle;
use serde_json::{json, Value};
use vhost::vhost_user::Frontend;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::frontend::{self, feat, BlkConfig, Session};
use crate::mem::SharedMem;
use crate::queue::{Queue, QueueStats, BOUNCE_SIZE};

/// Default queue count and size (SPDK's for trtype user).
pub const DEFAULT_VQ_COUNT: u16 = 1;
/// Default queue size.
pub const DEFAULT_VQ_SIZE: u16 = 512;

/// Parameters of `bdev_virtio_attach_controller` for trtype user, dev_type blk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachOpts {
    /// Controller and bdev name.
    pub name: String,
    /// vhost-user socket path.
    pub traddr: String,
    /// Queues wanted (the server may offer fewer).
    pub vq_count: u16,
    /// Descriptors per queue (a power of two).
    pub vq_size: u16,
    /// Longest a request may stay unanswered before the controller is marked failed and its
    /// requests in flight fail, in microseconds; 0: no timeout (a Ferrite addition; see
    /// `timeout.rs`).
    pub timeout_us: u64,
}

/// A connected controller, shared by its bdev backend and its channels.
pub(crate) struct Ctrl {
    pub name: String,
    pub opts: AttachOpts,
    pub queue_count: u16,
    queues: Mutex<Vec<Option<Queue>>>,
    calls: Vec<Arc<EventFd>>,
    stats: Vec<Arc<QueueStats>>,
    pub broken: AtomicBool,
    pub features: u64,
    pub protocol: u64,
    pub config: BlkConfig,
    pub max_discard_sectors: u32,
    pub max_discard_seg: u32,
    pub max_wz_sectors: u32,
    pub max_wz_seg: u32,
    /// Shared DMA pool ranges (start, end): single-segment I/O inside one goes zero-copy.
    pub zero_copy: Vec<(usize, usize)>,
    stop: EventFd,
    // Last: unmapped after the queues (which point into it) are gone.
    mem: SharedMem,
}

impl Ctrl {
    pub(crate) fn take_queue(&self) -> Option<Queue> {
        let mut g = self.queues.lock().ok()?;
        g.iter_mut().find_map(|q| q.take())
    }

    pub(crate) fn return_queue(&self, q: Queue) {
        if let Ok(mut g) = self.queues.lock() {
            let i = usize::from(q.index);
            if let Some(s) = g.get_mut(i) {
                *s = Some(q);
            }
        }
    }

    fn readonly(&self) -> bool {
        self.features & feat::RO != 0
    }

    /// Marks the controller failed after a request timed out: broken (every channel fails its
    /// I/O in flight) and the connection closed by the monitor thread; the bdev stays until
    /// it is detached.
    pub(crate) fn fail(&self) {
        self.set_broken();
        let _ = self.stop.write(1);
    }

    /// Marks the controller broken and wakes every channel's reactor so in-flight I/O fails.
    fn set_broken(&self) {
        self.broken.store(true, Ordering::SeqCst);
        for c in &self.calls {
            let _ = c.write(1);
        }
    }
}

static CTRLS: Mutex<BTreeMap<String, Arc<Ctrl>>> = Mutex::new(BTreeMap::new());

struct VirtioBackend {
    ctrl: Arc<Ctrl>,
}

impl BdevBackend for VirtioBackend {
    fn module_name(&self) -> &'static str {
        "virtio_blk"
    }

    fn io_type_supported(&self, t: IoType) -> bool {
        let f = self.ctrl.features;
        let rw = !self.ctrl.readonly();
        match t {
            IoType::Read => true,
            IoType::Write => rw,
            IoType::Flush => f & feat::FLUSH != 0,
            IoType::Unmap => rw && f & feat::DISCARD != 0,
            IoType::WriteZeroes => rw && f & feat::WRITE_ZEROES != 0,
            _ => false,
        }
    }

    fn create_channel(&self) -> Box<dyn BackendChannel> {
        Box::new(crate::io::VirtioChannel::new(self.ctrl.clone()))
    }

    fn destruct(&self) {
        let c = &self.ctrl;
        if let Ok(mut g) = CTRLS.lock() {
            if g.get(&c.name).is_some_and(|x| Arc::ptr_eq(x, c)) {
                g.remove(&c.name);
            }
        }
        c.set_broken();
        let _ = c.stop.write(1);
    }

    fn driver_specific(&self) -> Option<(&'static str, Value)> {
        Some(("virtio_blk", info(&self.ctrl)))
    }

    fn config_entry(&self, _bdev: &Bdev) -> Option<Value> {
        let o = &self.ctrl.opts;
        let mut e = json!({
            "method": "bdev_virtio_attach_controller",
            "params": {
                "name": o.name,
                "dev_type": "blk",
                "trtype": "user",
                "traddr": o.traddr,
                "vq_count": o.vq_count,
                "vq_size": o.vq_size,
            }
        });
        // Only when set: a configuration without it stays loadable by SPDK.
        if o.timeout_us != 0 {
            e["params"]["timeout_us"] = json!(o.timeout_us);
        }
        Some(e)
    }
}

fn info(c: &Ctrl) -> Value {
    let sum = |f: fn(&QueueStats) -> &std::sync::atomic::AtomicU64| -> u64 {
        c.stats.iter().map(|s| f(s).load(Ordering::Relaxed)).sum()
    };
    json!({
        "requests": sum(|s| &s.requests),
        "kicks": sum(|s| &s.kicks),
        "bounces": sum(|s| &s.bounces),
        "zero_copy_regions": c.zero_copy.len(),
        "name": c.name,
        "trtype": "user",
        "traddr": c.opts.traddr,
        "vq_count": c.queue_count,
        "vq_size": c.opts.vq_size,
        "timeout_us": c.opts.timeout_us,
        "features": format!("{:#x}", c.features),
        "protocol_features": format!("{:#x}", c.protocol),
        "readonly": c.readonly(),
        "capacity_sectors": c.config.capacity,
        "blk_size": c.config.blk_size,
        "shared_memory_bytes": c.mem.len(),
        "hugetlb": c.mem.hugetlb(),
        "broken": c.broken.load(Ordering::Relaxed),
    })
}

/// The module (nothing to examine).
pub struct VirtioModule;

impl BdevModule for VirtioModule {
    fn name(&self) -> &'static str {
        "virtio_blk"
    }
}

fn invalid(name: &str, msg: &str) -> BdevError {
    BdevError::new(
        ErrorKind::InvalidArgument,
        format!("virtio-user '{name}': {msg}"),
    )
}

/// Attaches a controller: on success `done` gets the names of the bdevs created (one).
/// Call on the app thread `app`; `done` runs on it later.
pub fn attach(
    opts: AttachOpts,
    app: ThreadHandle,
    done: impl FnOnce(Result<Vec<String>>) + Send + 'static,
) {
    if opts.name.is_empty() {
        return done(Err(invalid("", "name must not be empty")));
    }
    if !(4..=32768).contains(&opts.vq_size) || !opts.vq_size.is_power_of_two() {
        return done(Err(invalid(
            &opts.name,
            &format!(
                "vq_size {} must be a power of two from 4 to 32768",
                opts.vq_size
            ),
        )));
    }
    if opts.vq_count == 0 {
        return done(Err(invalid(&opts.name, "vq_count must be at least 1")));
    }
    if opts.timeout_us > crate::timeout::MAX_TIMEOUT_US {
        return done(Err(invalid(
            &opts.name,
            &format!(
                "timeout_us {} exceeds the limit of {} (one hour; 0: no timeout)",
                opts.timeout_us,
                crate::timeout::MAX_TIMEOUT_US
            ),
        )));
    }
    if ferrite_bdev::lookup(&opts.name).is_some()
        || CTRLS
            .lock()
            .map(|g| g.contains_key(&opts.name))
            .unwrap_or(false)
    {
        return done(Err(BdevError::new(
            ErrorKind::Exists,
            format!(
                "virtio-user '{}': a bdev or controller of that name exists",
                opts.name
            ),
        )));
    }
    let spawned = std::thread::Builder::new()
        .name("virtio-attach".into())
        .spawn(move || {
            let res = frontend::connect(&opts.name, &opts.traddr, opts.vq_count, opts.vq_size);
            let app2 = app.clone();
            let sent = app.send(move || match res {
                Ok(s) => done(register(opts, s, app2)),
                Err(e) => done(Err(e)),
            });
            if sent.is_err() {
                tracing::error!("virtio-user: the app thread is gone; attach abandoned");
            }
        });
    if let Err(e) = spawned {
        tracing::error!("virtio-user: cannot start the attach thread: {e}");
    }
}

fn register(opts: AttachOpts, s: Session, app: ThreadHandle) -> Result<Vec<String>> {
    let name = opts.name.clone();
    let cfg = s.config;
    let block_size = if s.features & feat::BLK_SIZE != 0 && cfg.blk_size != 0 {
        cfg.blk_size
    } else {
        512
    };
    if !block_size.is_multiple_of(512) || block_size as usize > BOUNCE_SIZE {
        return Err(invalid(
            &name,
            &format!("the server's block size {block_size} is not a multiple of 512 up to 128 KiB"),
        ));
    }
    let num_blocks = cfg.capacity * 512 / u64::from(block_size);
    if num_blocks == 0 {
        return Err(invalid(&name, "the server reports a capacity of 0"));
    }
    let stop = EventFd::new(EFD_NONBLOCK).map_err(|e| {
        BdevError::new(ErrorKind::Io, format!("virtio-user '{name}': eventfd: {e}"))
    })?;
    let Session {
        frontend,
        features,
        protocol,
        config,
        mem,
        queues,
        calls,
        zero_copy,
    } = s;
    let queue_count = queues.len() as u16;
    let stats = queues.iter().map(|q| q.stats.clone()).collect();
    let ctrl = Arc::new(Ctrl {
        name: name.clone(),
        opts,
        queue_count,
        queues: Mutex::new(queues.into_iter().map(Some).collect()),
        calls,
        stats,
        broken: AtomicBool::new(false),
        features,
        protocol,
        config,
        max_discard_sectors: config.max_discard_sectors,
        max_discard_seg: config.max_discard_seg,
        max_wz_sectors: config.max_write_zeroes_sectors,
        max_wz_seg: config.max_write_zeroes_seg,
        zero_copy,
        stop,
        mem,
    });
    let mut props = BdevProps::new(&name, "VirtioBlk Disk", block_size, num_blocks);
    props.uuid = Some(Uuid::new_v4());
    props.write_cache = features & feat::CONFIG_WCE != 0 || features & feat::FLUSH != 0;
    props.optimal_io_boundary = (BOUNCE_SIZE / block_size as usize) as u32;
    props.split_on_optimal_io_boundary = true;
    let backend = Arc::new(VirtioBackend { ctrl: ctrl.clone() });
    ferrite_bdev::register(props, backend)?;
    if let Ok(mut g) = CTRLS.lock() {
        g.insert(name.clone(), ctrl.clone());
    }
    start_monitor(ctrl, frontend, app);
    Ok(vec![name])
}

fn start_monitor(ctrl: Arc<Ctrl>, fe: Frontend, app: ThreadHandle) {
    let c2 = ctrl.clone();
    let r = std::thread::Builder::new()
        .name(format!("virtio-{}", ctrl.name))
        .spawn(move || monitor(c2, fe, app));
    if let Err(e) = r {
        tracing::error!(
            "virtio-user '{}': cannot start the monitor thread ({e}); a server going away will not be noticed",
            ctrl.name
        );
    }
}

/// Waits for the server to hang up or for `destruct`'s stop signal; owns the connection.
fn monitor(ctrl: Arc<Ctrl>, fe: Frontend, app: ThreadHandle) {
    let mut fds = [
        libc::pollfd {
            fd: fe.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        },
        libc::pollfd {
            fd: ctrl.stop.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: fds is a valid array of two pollfd; both fds stay open during the call (the
        // connection and the eventfd are owned by this thread / the controller it holds).
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if r < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        if fds[1].revents != 0 {
            // Detach: close the connection.
            drop(fe);
            return;
        }
        if fds[0].revents != 0 {
            break;
        }
    }
    tracing::warn!(
        "virtio-user '{}': the server at {} went away; failing I/O and removing the bdev",
        ctrl.name,
        ctrl.opts.traddr
    );
    ctrl.set_broken();
    drop(fe);
    let name = ctrl.name.clone();
    let _ = app.send(move || {
        ferrite_bdev::unregister(&name, Some("virtio_blk"), |_| {});
    });
}

/// Detaches controller `name` (unregisters its bdev; the connection closes when the last
/// descriptor is gone). `done` runs once the bdev is gone.
pub fn detach(name: &str, done: impl FnOnce(Result<()>) + Send + 'static) {
    ferrite_bdev::unregister(name, Some("virtio_blk"), done);
}

/// The attached controllers, as `bdev_virtio_blk_get_controllers` lists them.
pub fn list(name: Option<&str>) -> Result<Vec<Value>> {
    let g = CTRLS
        .lock()
        .map_err(|_| BdevError::new(ErrorKind::Io, "virtio-user registry poisoned"))?;
    match name {
        Some(n) => g
            .get(n)
            .map(|c| vec![info(c)])
            .ok_or_else(|| BdevError::not_found(n)),
        None => Ok(g.values().map(|c| info(c)).collect()),
    }
}
