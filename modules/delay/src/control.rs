//! Delay bdev control path: configuration list, attach on examine, latency updates,
//! hot-remove, delete.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ferrite_bdev::uuid::Uuid;
use ferrite_bdev::{
    BackendChannel, Bdev, BdevBackend, BdevError, BdevEvent, BdevModule, BdevProps, ClaimKind,
    Desc, ErrorKind, IoType, Result,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::io::{AVG_READ, AVG_WRITE, P99_READ, P99_WRITE};

/// Module name (claims, `unregister` checks).
const MODULE: &str = "delay";

/// Parameters of `bdev_delay_create`. Latencies in microseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayOpts {
    /// Name of the base bdev (name, alias or UUID).
    pub base_bdev_name: String,
    /// Name of the delay bdev.
    pub name: String,
    /// UUID of the delay bdev (random when absent; kept for save_config).
    pub uuid: Option<String>,
    /// Latency of 99 reads in 100.
    pub avg_read_latency: u64,
    /// Latency of the other read in 100 (≥ `avg_read_latency`).
    pub p99_read_latency: u64,
    /// Latency of 99 writes in 100.
    pub avg_write_latency: u64,
    /// Latency of the other write in 100 (≥ `avg_write_latency`).
    pub p99_write_latency: u64,
}

/// Which latency `bdev_delay_update_latency` changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatencyType {
    /// Average read latency.
    AvgRead,
    /// p99 read latency.
    P99Read,
    /// Average write latency.
    AvgWrite,
    /// p99 write latency.
    P99Write,
}

impl LatencyType {
    fn index(self) -> usize {
        match self {
            Self::AvgRead => AVG_READ,
            Self::P99Read => P99_READ,
            Self::AvgWrite => AVG_WRITE,
            Self::P99Write => P99_WRITE,
        }
    }
}

/// The four latencies of one delay bdev, shared by its configuration entry, its backend and
/// every channel: microseconds (what save_config reports) and ticks (what the data path adds),
/// indexed like the channel queues.
pub(crate) struct Latencies {
    us: [AtomicU64; 4],
    ticks: [AtomicU64; 4],
    /// The threads holding delayed I/O, and the resets in progress.
    pub(crate) holders: crate::held::Holders,
}

impl Latencies {
    fn new(o: &DelayOpts) -> Self {
        let l = Self {
            us: Default::default(),
            ticks: Default::default(),
            holders: Default::default(),
        };
        l.set(AVG_READ, o.avg_read_latency);
        l.set(P99_READ, o.p99_read_latency);
        l.set(AVG_WRITE, o.avg_write_latency);
        l.set(P99_WRITE, o.p99_write_latency);
        l
    }

    fn set(&self, i: usize, us: u64) {
        self.us[i].store(us, Ordering::Relaxed);
        self.ticks[i].store(ferrite_reactor::clock::us_to_ticks(us), Ordering::Relaxed);
    }

    fn us(&self, i: usize) -> u64 {
        self.us[i].load(Ordering::Relaxed)
    }

    /// The latency `i` in ticks (data path: one relaxed load).
    #[inline]
    pub(crate) fn ticks(&self, i: usize) -> u64 {
        self.ticks[i].load(Ordering::Relaxed)
    }

    fn all_us(&self) -> [u64; 4] {
        [
            self.us(AVG_READ),
            self.us(P99_READ),
            self.us(AVG_WRITE),
            self.us(P99_WRITE),
        ]
    }
}

fn params_json(name: &str, base: &str, uuid: &Uuid, lat: &Latencies) -> Value {
    json!({
        "name": name,
        "base_bdev_name": base,
        "uuid": uuid.to_string(),
        "avg_read_latency": lat.us(AVG_READ),
        "p99_read_latency": lat.us(P99_READ),
        "avg_write_latency": lat.us(AVG_WRITE),
        "p99_write_latency": lat.us(P99_WRITE),
    })
}

struct ConfigEntry {
    name: String,
    base_bdev_name: String,
    uuid: Uuid,
    lat: Arc<Latencies>,
    attached: bool,
}

/// Configured delay bdevs, attached or waiting for their base. A module-level list, as SPDK's.
static CONFIG: Mutex<Vec<ConfigEntry>> = Mutex::new(Vec::new());

fn config() -> MutexGuard<'static, Vec<ConfigEntry>> {
    CONFIG.lock().unwrap_or_else(|p| p.into_inner())
}

/// The backend of one delay bdev.
struct DelayBackend {
    name: String,
    base_name: String,
    uuid: Uuid,
    /// The base descriptor holding our exclusive-write claim. `None` after destruct.
    base: Mutex<Option<Desc>>,
    base_bdev: Arc<Bdev>,
    lat: Arc<Latencies>,
}

impl BdevBackend for DelayBackend {
    fn module_name(&self) -> &'static str {
        MODULE
    }

    /// Whatever the base accepts we forward (as passthru); abort stays in our bdev layer.
    fn io_type_supported(&self, t: IoType) -> bool {
        match t {
            IoType::Abort => false,
            IoType::Reset => true,
            _ => self.base_bdev.io_type_supported(t),
        }
    }

    /// Step 3: a channel to the base, its queues and its poller, on the calling thread.
    fn create_channel(&self) -> Box<dyn BackendChannel> {
        let base = self
            .base
            .lock()
            .ok()
            .and_then(|d| d.as_ref().and_then(|d| d.channel().ok()));
        if base.is_none() {
            tracing::warn!(
                "delay bdev '{}': no channel to base '{}' on this thread",
                self.name,
                self.base_name
            );
        }
        Box::new(crate::io::DelayChannel::new(
            &self.name,
            base,
            self.lat.clone(),
        ))
    }

    /// Step 6: out of the registry, no descriptor open. Release the base.
    fn destruct(&self) {
        if let Some(e) = config().iter_mut().find(|e| e.name == self.name) {
            e.attached = false;
        }
        let desc = self.base.lock().ok().and_then(|mut d| d.take());
        drop(desc);
        tracing::info!(
            "delay bdev '{}' released base '{}'",
            self.name,
            self.base_name
        );
    }

    fn driver_specific(&self) -> Option<(&'static str, Value)> {
        Some((
            "delay",
            params_json(&self.name, &self.base_name, &self.uuid, &self.lat),
        ))
    }

    /// The current latencies (updates included), as SPDK saves them.
    fn config_entry(&self, bdev: &Bdev) -> Option<Value> {
        Some(json!({"method": "bdev_delay_create",
            "params": params_json(bdev.name(), &self.base_name, &self.uuid, &self.lat)}))
    }
}

/// The delay module: attaches configured delay bdevs when their base appears.
pub struct DelayModule;

impl BdevModule for DelayModule {
    fn name(&self) -> &'static str {
        MODULE
    }

    /// Step 1b: a bdev registered; attach every delay bdev waiting for it.
    fn examine_config(&self, bdev: &Arc<Bdev>) {
        let waiting: Vec<String> = config()
            .iter()
            .filter(|e| !e.attached && names_match(&e.base_bdev_name, bdev))
            .map(|e| e.name.clone())
            .collect();
        for name in waiting {
            if let Err(e) = attach(&name) {
                tracing::error!(
                    "delay bdev '{name}': could not attach to '{}': {e}",
                    bdev.name()
                );
            }
        }
    }

    /// Delay bdevs still waiting for their base are saved here (attached ones by their bdev).
    fn config_json(&self) -> Vec<Value> {
        config()
            .iter()
            .filter(|e| !e.attached)
            .map(|e| {
                json!({"method": "bdev_delay_create",
                    "params": params_json(&e.name, &e.base_bdev_name, &e.uuid, &e.lat)})
            })
            .collect()
    }
}

fn names_match(want: &str, b: &Bdev) -> bool {
    b.name() == want || b.aliases().iter().any(|a| a == want) || b.uuid().to_string() == want
}

fn check_latencies(o: &DelayOpts) -> Result<()> {
    for (what, avg, p99) in [
        ("read", o.avg_read_latency, o.p99_read_latency),
        ("write", o.avg_write_latency, o.p99_write_latency),
    ] {
        if p99 < avg {
            return Err(BdevError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "delay bdev '{}': p99_{what}_latency ({p99} us) is less than \
                     avg_{what}_latency ({avg} us)",
                    o.name
                ),
            ));
        }
    }
    Ok(())
}

/// Step 1: check, remember, then attach if the base exists. Returns the delay bdev's name.
/// Errors: p99 below average, the name is taken, the UUID is malformed, or attaching failed
/// (then the entry is forgotten again).
pub fn create(opts: &DelayOpts) -> Result<String> {
    check_latencies(opts)?;
    let uuid = match &opts.uuid {
        Some(u) => Uuid::parse(u)?,
        None => Uuid::new_v4(),
    };
    {
        let mut cfg = config();
        if cfg.iter().any(|e| e.name == opts.name) || ferrite_bdev::lookup(&opts.name).is_some() {
            return Err(BdevError::new(
                ErrorKind::Exists,
                format!("bdev name '{}' already exists", opts.name),
            ));
        }
        cfg.push(ConfigEntry {
            name: opts.name.clone(),
            base_bdev_name: opts.base_bdev_name.clone(),
            uuid,
            lat: Arc::new(Latencies::new(opts)),
            attached: false,
        });
    }
    if ferrite_bdev::lookup(&opts.base_bdev_name).is_none() {
        tracing::info!(
            "delay bdev '{}': base '{}' not present yet; will attach when it appears",
            opts.name,
            opts.base_bdev_name
        );
        return Ok(opts.name.clone());
    }
    match attach(&opts.name) {
        Ok(()) => Ok(opts.name.clone()),
        Err(e) => {
            config().retain(|c| c.name != opts.name);
            Err(e)
        }
    }
}

/// Step 2: open, claim, register the configured delay bdev `name`. Every failure unwinds.
fn attach(name: &str) -> Result<()> {
    let (base_name, uuid, lat) = config()
        .iter()
        .find(|e| e.name == name)
        .map(|e| (e.base_bdev_name.clone(), e.uuid, e.lat.clone()))
        .ok_or_else(|| BdevError::not_found(name))?;
    let in_context = |e: BdevError, what: &str| {
        BdevError::new(
            e.kind(),
            format!("delay bdev '{name}': cannot {what} base: {}", e.message()),
        )
    };
    // 2a. Open the base for writing, with the hot-remove callback (step 5).
    let me = name.to_string();
    let desc = Desc::open(&base_name, true, move |ev| on_base_event(&me, ev))
        .map_err(|e| in_context(e, "open"))?;
    // 2b. Claim it: nobody else may write under us. (On error `desc` drops: closed.)
    desc.claim(ClaimKind::ExclusiveWrite, MODULE)
        .map_err(|e| in_context(e, "claim"))?;
    let base = desc.bdev().clone();
    // 2c. Copy the geometry.
    let mut props = BdevProps::new(name, "delay", base.block_size(), base.num_blocks());
    props.uuid = Some(uuid);
    props.md_size = base.md_size();
    props.write_cache = base.write_cache();
    props.optimal_io_boundary = base.optimal_io_boundary();
    props.split_on_optimal_io_boundary = false; // the base splits for itself
    let backend = Arc::new(DelayBackend {
        name: name.to_string(),
        base_name: base.name().to_string(),
        uuid,
        base: Mutex::new(Some(desc)),
        base_bdev: base.clone(),
        lat: lat.clone(),
    });
    // 2d. Register. On failure the backend (and with it the descriptor and claim) is dropped.
    let bdev = ferrite_bdev::register(props, backend)?;
    // A reset of the bdev aborts what waits out its latency (see `held`).
    ferrite_bdev::set_held_io(
        &bdev,
        Arc::new(crate::held::ResetHook {
            name: name.to_string(),
            lat,
        }),
    );
    ferrite_bdev::set_held_io_bases(&bdev, &[&base]);
    if let Some(e) = config().iter_mut().find(|e| e.name == name) {
        e.attached = true;
    }
    tracing::info!("delay bdev '{name}' attached to base '{base_name}'");
    Ok(())
}

/// Step 5: the base is being removed (or resized). On removal, unregister our bdev; the base
/// finishes its removal once our destruct drops the descriptor.
fn on_base_event(name: &str, ev: BdevEvent) {
    match ev {
        BdevEvent::Remove => {
            tracing::info!("delay bdev '{name}': base is being removed; removing it");
            let n = name.to_string();
            ferrite_bdev::unregister(name, Some(MODULE), move |r| {
                if let Err(e) = r {
                    tracing::warn!("delay bdev '{n}': {e}");
                }
            });
        }
        BdevEvent::Resize => {
            let base = config()
                .iter()
                .find(|e| e.name == name)
                .map(|e| e.base_bdev_name.clone());
            if let (Some(me), Some(base)) = (
                ferrite_bdev::lookup(name),
                base.and_then(|b| ferrite_bdev::lookup(&b)),
            ) {
                me.notify_resize(base.num_blocks());
            }
        }
    }
}

/// Step 7: delete by RPC. Forgets the entry (attached or waiting), then unregisters the bdev
/// if it exists; `done` runs once it is gone. I/O still held completes when its delay expires.
pub fn delete(name: &str, done: impl FnOnce(Result<()>) + Send + 'static) {
    let (known, attached) = {
        let mut cfg = config();
        let before = cfg.len();
        let attached = cfg.iter().any(|e| e.name == name && e.attached);
        cfg.retain(|e| e.name != name || attached);
        (before != cfg.len(), attached)
    };
    match (known, attached) {
        (true, false) => done(Ok(())), // was only waiting for its base
        (_, true) => {
            let n = name.to_string();
            ferrite_bdev::unregister(name, Some(MODULE), move |r| {
                config().retain(|e| e.name != n);
                done(r)
            })
        }
        (false, false) => done(Err(match ferrite_bdev::lookup(name) {
            Some(b) => BdevError::new(
                ErrorKind::NotFound,
                format!(
                    "bdev '{name}' is not a delay bdev (it belongs to module '{}')",
                    b.module_name()
                ),
            ),
            None => BdevError::not_found(name),
        })),
    }
}

/// `bdev_delay_update_latency`: sets one latency of the attached delay bdev `name`. Takes
/// effect for every I/O whose base completion comes after it (I/O already held keeps its due
/// time), as SPDK. Not checked against the other latency of the pair, as SPDK.
pub fn update_latency(name: &str, t: LatencyType, latency_us: u64) -> Result<()> {
    let cfg = config();
    let e = cfg
        .iter()
        .find(|e| e.name == name && e.attached)
        .ok_or_else(|| {
            BdevError::new(
                ErrorKind::NotFound,
                format!("delay bdev '{name}' does not exist"),
            )
        })?;
    e.lat.set(t.index(), latency_us);
    tracing::info!("delay bdev '{name}': {t:?} latency set to {latency_us} us");
    Ok(())
}

/// The current latencies of the delay bdev `name` in µs (avg read, p99 read, avg write, p99
/// write), attached or waiting. For tests and diagnostics.
pub fn latencies(name: &str) -> Option<[u64; 4]> {
    config()
        .iter()
        .find(|e| e.name == name)
        .map(|e| e.lat.all_us())
}
