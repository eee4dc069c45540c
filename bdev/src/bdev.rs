//! The bdev object, its properties, and what a module implements to back one.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use ferrite_reactor::{IoDevice, ThreadHandle};
use serde_json::Value;

use crate::channel::ChannelCtx;
use crate::io::BdevIo;
use crate::types::{BdevEvent, ClaimKind, IoType};
use crate::uuid::Uuid;

/// What a module gives to create a bdev.
#[derive(Debug, Clone)]
pub struct BdevProps {
    /// Unique name.
    pub name: String,
    /// Extra names (unique too).
    pub aliases: Vec<String>,
    /// UUID; a random one when `None`.
    pub uuid: Option<Uuid>,
    /// Shown as `product_name` ("Null disk", "Malloc disk", ...).
    pub product_name: String,
    /// Bytes per block (a multiple of 512).
    pub block_size: u32,
    /// Number of blocks.
    pub num_blocks: u64,
    /// Metadata bytes per block (0 = none).
    pub md_size: u32,
    /// Volatile write cache present (flush matters).
    pub write_cache: bool,
    /// Optimal I/O boundary in blocks (0 = none).
    pub optimal_io_boundary: u32,
    /// Split I/O that crosses the boundary.
    pub split_on_optimal_io_boundary: bool,
}

impl BdevProps {
    /// Properties with the given name and geometry and defaults elsewhere.
    pub fn new(name: &str, product_name: &str, block_size: u32, num_blocks: u64) -> Self {
        Self {
            name: name.to_string(),
            aliases: Vec::new(),
            uuid: None,
            product_name: product_name.to_string(),
            block_size,
            num_blocks,
            md_size: 0,
            write_cache: false,
            optimal_io_boundary: 0,
            split_on_optimal_io_boundary: false,
        }
    }
}

/// A module's per-thread I/O path for one bdev. Lives on one thread; `submit` is called on it.
pub trait BackendChannel: Send {
    /// Takes ownership of `io` and completes it later (or now: completion is always deferred
    /// by the bdev layer). Never called for types the backend reports unsupported.
    fn submit(&mut self, io: Box<BdevIo>);

    /// For a stacked bdev that sends *every* I/O unchanged, at the same offset, to one base
    /// (passthru): hand this thread's channel to that base over to the bdev layer. Called
    /// once, right after [`BdevBackend::create_channel`], on the channel's thread. If it
    /// returns a channel, the layer forwards each I/O to it itself
    /// ([`crate::BdevChannel::forward`] semantics: the base accounts it, its completion comes
    /// back through this layer) and never calls `submit` on this backend channel; the common
    /// case takes no module call and no re-validation on the base (type, block size and
    /// thread are checked once here, only the range is checked per I/O, as the base may be
    /// resized). The default, `None`, keeps every I/O going to `submit`.
    fn forward_all(&mut self) -> Option<crate::BdevChannel> {
        None
    }

    /// For a striped stacked bdev (raid0 over a power-of-two number of members): hand the
    /// layer this thread's channels to the members with the stripe geometry
    /// ([`crate::StripeMap`]). Called once, right after [`BdevBackend::create_channel`] (and
    /// `forward_all`), on the channel's thread. If it returns a map, the layer forwards a read
    /// or write that falls within one strip to its member itself, at the mapped offset
    /// ([`crate::BdevChannel::forward`] semantics), while the map's `gate` reads zero; every
    /// other I/O (other types, I/O across strips, a closed gate, a member resized below the
    /// mapped range) still goes to `submit`. The checks `forward` makes per I/O (thread,
    /// block size, the member accepting reads and writes on this descriptor) are made once
    /// here; a map that fails them is dropped and everything goes to `submit`. The default,
    /// `None`, keeps every I/O going to `submit`.
    fn forward_striped(&mut self) -> Option<crate::StripeMap> {
        None
    }

    /// An ABORT submitted on this channel: complete with [`crate::IoStatus::Aborted`] every
    /// I/O this backend channel keeps waiting on its own (taken from `submit`, not yet sent
    /// anywhere: a raid's write parked behind a rebuild window) that `target` names
    /// ([`crate::AbortTarget::names`]), and return how many. Called on the channel's thread,
    /// the abort's; the completions are deferred by the bdev layer, so their callbacks run
    /// after this returns. I/O held by a module *below* is reached through
    /// [`crate::HeldIo`] instead. The default keeps nothing waiting.
    fn abort_waiting(&mut self, target: &crate::AbortTarget) -> usize {
        let _ = target;
        0
    }
}

/// What a module implements to back a bdev (control path; any thread may call these unless
/// noted).
pub trait BdevBackend: Send + Sync + 'static {
    /// The module's name ("null", "malloc", "passthru").
    fn module_name(&self) -> &'static str;
    /// True if the backend handles `t` itself. The bdev layer emulates write_zeroes (with
    /// writes), compare and compare-and-write (with reads and a quiesce), and handles abort
    /// and reset draining, when the backend does not.
    fn io_type_supported(&self, t: IoType) -> bool;
    /// Creates this thread's channel; called on the thread that will use it.
    fn create_channel(&self) -> Box<dyn BackendChannel>;
    /// Called once after unregistration, when no descriptor remains open, on the thread that
    /// closed the last one.
    fn destruct(&self) {}
    /// `driver_specific` content for `bdev_get_bdevs`: (key, value).
    fn driver_specific(&self) -> Option<(&'static str, Value)> {
        None
    }
    /// The `{"method":..,"params":..}` entry that recreates this bdev, for `save_config`.
    fn config_entry(&self, bdev: &Bdev) -> Option<Value>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Registered,
    Unregistering,
    Gone,
}

pub(crate) type EventCb = Arc<dyn Fn(BdevEvent) + Send + Sync>;

pub(crate) struct DescEntry {
    pub id: u64,
    pub thread: Option<ThreadHandle>,
    pub write: bool,
    pub event_cb: EventCb,
}

pub(crate) struct ClaimEntry {
    pub desc_id: u64,
    pub kind: ClaimKind,
    pub module: String,
}

pub(crate) struct BdevState {
    pub status: Status,
    pub descs: Vec<DescEntry>,
    pub claims: Vec<ClaimEntry>,
    /// Grants of write access so far (see `desc::WriteMark`).
    pub write_grants: u64,
    pub unregister_done: Vec<Box<dyn FnOnce() + Send>>,
}

pub(crate) struct QuiesceState {
    pub active: bool,
    pub waiters: std::collections::VecDeque<Box<dyn FnOnce() + Send>>,
}

/// A registered block device. Shared (`Arc`); lookups go through the registry.
pub struct Bdev {
    pub(crate) name: String,
    pub(crate) aliases: Mutex<Vec<String>>,
    pub(crate) uuid: Uuid,
    pub(crate) product_name: String,
    pub(crate) block_size: u32,
    pub(crate) num_blocks: AtomicU64,
    pub(crate) md_size: u32,
    pub(crate) write_cache: bool,
    pub(crate) optimal_io_boundary: u32,
    pub(crate) split_on_boundary: bool,
    pub(crate) backend: Arc<dyn BdevBackend>,
    pub(crate) supported: u32,
    /// Bits of the types `io_type_supported` accepts (native or emulated).
    pub(crate) accepted: u32,
    /// Bits of the types the generic layer handles itself (reset, abort, emulations).
    pub(crate) routed: u32,
    /// Bits of the types a channel's fast dispatch leaves to the general path: `routed`,
    /// and the types a quiesce does not wait for (counted apart, see `ChannelState`).
    pub(crate) slow: u32,
    /// Boundary to split on, in blocks (0: none).
    pub(crate) split_bound: u64,
    pub(crate) device: IoDevice<ChannelCtx>,
    pub(crate) state: Mutex<BdevState>,
    pub(crate) quiesce: Mutex<QuiesceState>,
    pub(crate) quiesced: AtomicBool,
    pub(crate) examine_pending: AtomicU32,
    /// Figures of channels already destroyed (kept in the totals, as SPDK does).
    pub(crate) retired_stats: Mutex<crate::stats::IoStats>,
}

/// What `io_type_supported` says for `t`, given the backend's native types.
fn accepts(native: impl Fn(IoType) -> bool, t: IoType) -> bool {
    match t {
        IoType::WriteZeroes => native(IoType::Write) || native(t),
        IoType::Compare => native(IoType::Read) || native(t),
        // Emulated as a compare then a write: a bdev that cannot write (a readonly file)
        // does not offer it.
        IoType::CompareAndWrite => (native(IoType::Read) && native(IoType::Write)) || native(t),
        IoType::Abort | IoType::Reset => true,
        _ => native(t),
    }
}

impl std::fmt::Debug for Bdev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bdev({})", self.name)
    }
}

impl Bdev {
    pub(crate) fn build(props: BdevProps, backend: Arc<dyn BdevBackend>) -> Arc<Bdev> {
        let mut supported = 0u32;
        for t in crate::types::ALL_IO_TYPES {
            if backend.io_type_supported(t) {
                supported |= 1 << (t as u8);
            }
        }
        let native = |t: IoType| supported & (1 << (t as u8)) != 0;
        let mut accepted = 0u32;
        let mut routed = IoType::Reset.bit() | IoType::Abort.bit();
        for t in crate::types::ALL_IO_TYPES {
            if accepts(native, t) {
                accepted |= t.bit();
            }
            if matches!(
                t,
                IoType::WriteZeroes | IoType::Compare | IoType::CompareAndWrite
            ) && !native(t)
            {
                routed |= t.bit();
            }
        }
        let split_bound = if props.split_on_optimal_io_boundary {
            u64::from(props.optimal_io_boundary)
        } else {
            0
        };
        Arc::new_cyclic(|weak: &Weak<Bdev>| {
            let w = weak.clone();
            let device = IoDevice::new(&props.name, move || ChannelCtx::new(w.clone()));
            Bdev {
                name: props.name.clone(),
                aliases: Mutex::new(props.aliases.clone()),
                uuid: props.uuid.unwrap_or_else(Uuid::new_v4),
                product_name: props.product_name.clone(),
                block_size: props.block_size,
                num_blocks: AtomicU64::new(props.num_blocks),
                md_size: props.md_size,
                write_cache: props.write_cache,
                optimal_io_boundary: props.optimal_io_boundary,
                split_on_boundary: props.split_on_optimal_io_boundary,
                backend,
                supported,
                accepted,
                routed,
                slow: routed | crate::channel::NO_DRAIN_TYPES,
                split_bound,
                device,
                state: Mutex::new(BdevState {
                    status: Status::Registered,
                    descs: Vec::new(),
                    claims: Vec::new(),
                    write_grants: 0,
                    unregister_done: Vec::new(),
                }),
                quiesce: Mutex::new(QuiesceState {
                    active: false,
                    waiters: Default::default(),
                }),
                quiesced: AtomicBool::new(false),
                examine_pending: AtomicU32::new(0),
                retired_stats: Mutex::new(Default::default()),
            }
        })
    }

    /// Name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Aliases.
    pub fn aliases(&self) -> Vec<String> {
        self.aliases.lock().map(|a| a.clone()).unwrap_or_default()
    }
    /// UUID.
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }
    /// Product name.
    pub fn product_name(&self) -> &str {
        &self.product_name
    }
    /// Bytes per block.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }
    /// Current number of blocks.
    pub fn num_blocks(&self) -> u64 {
        self.num_blocks.load(Ordering::Acquire)
    }
    /// Metadata size per block.
    pub fn md_size(&self) -> u32 {
        self.md_size
    }
    /// Write cache flag.
    pub fn write_cache(&self) -> bool {
        self.write_cache
    }
    /// Optimal I/O boundary in blocks.
    pub fn optimal_io_boundary(&self) -> u32 {
        self.optimal_io_boundary
    }
    /// Whether I/O is split on that boundary.
    pub fn split_on_optimal_io_boundary(&self) -> bool {
        self.split_on_boundary
    }
    /// Name of the module that created it.
    pub fn module_name(&self) -> &'static str {
        self.backend.module_name()
    }
    /// The backend, for its module (downcast through the module's own registry).
    pub fn backend(&self) -> &Arc<dyn BdevBackend> {
        &self.backend
    }
    /// True if I/O of type `t` is accepted (natively or emulated).
    pub fn io_type_supported(&self, t: IoType) -> bool {
        self.accepted & t.bit() != 0
    }
    pub(crate) fn native(&self, t: IoType) -> bool {
        self.supported & (1 << (t as u8)) != 0
    }
    /// Current claim, if any: (kind, module name).
    pub fn claim(&self) -> Option<(ClaimKind, String)> {
        let st = self.state.lock().ok()?;
        st.claims.first().map(|c| (c.kind, c.module.clone()))
    }
    /// True once examine by every module has finished.
    pub fn is_examined(&self) -> bool {
        self.examine_pending.load(Ordering::Acquire) == 0
    }
    /// Number of open descriptors.
    pub fn open_count(&self) -> usize {
        self.state.lock().map(|s| s.descs.len()).unwrap_or(0)
    }
    /// True while registered (not being removed).
    pub fn is_registered(&self) -> bool {
        self.state
            .lock()
            .map(|s| s.status == Status::Registered)
            .unwrap_or(false)
    }
    /// The `supported_io_types` object of `bdev_get_bdevs`.
    ///
    /// Reported as SPDK reports it: write_zeroes counts as supported when it is emulated with
    /// writes, but compare and compare-and-write only when the backend does them itself (the
    /// bdev layer still accepts them, emulated, whatever this says), and reset/abort as the
    /// backend declares them.
    pub fn supported_io_types_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        for t in crate::types::ALL_IO_TYPES {
            let v = match t {
                IoType::Compare | IoType::CompareAndWrite | IoType::Reset | IoType::Abort => {
                    self.native(t)
                }
                _ => self.io_type_supported(t),
            };
            m.insert(t.spdk_name().to_string(), Value::Bool(v));
        }
        for extra in [
            "nvme_admin",
            "nvme_io",
            "zcopy",
            "get_zone_info",
            "zone_management",
            "zone_append",
            "seek_hole",
            "seek_data",
            "copy",
            "nvme_iov_md",
        ] {
            m.insert(extra.to_string(), Value::Bool(false));
        }
        Value::Object(m)
    }

    /// Changes the block count and tells every open descriptor (`BdevEvent::Resize`).
    /// Shrinking below a claimed or open size is the module's decision; this only announces.
    pub fn notify_resize(&self, num_blocks: u64) {
        self.num_blocks.store(num_blocks, Ordering::Release);
        let targets: Vec<(Option<ThreadHandle>, EventCb)> = self
            .state
            .lock()
            .map(|s| {
                s.descs
                    .iter()
                    .map(|d| (d.thread.clone(), d.event_cb.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for (t, cb) in targets {
            deliver_event(t, cb, BdevEvent::Resize);
        }
    }
}

pub(crate) fn deliver_event(thread: Option<ThreadHandle>, cb: EventCb, ev: BdevEvent) {
    match thread {
        Some(t) => {
            if let Err(e) = t.send(move || cb(ev)) {
                tracing::warn!("bdev event {ev:?} not delivered: {e}");
            }
        }
        None => cb(ev),
    }
}
