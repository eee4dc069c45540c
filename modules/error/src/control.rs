//! Error bdev control path: configuration list, attach on examine, injections, hot-remove,
//! delete.

use std::sync::{Arc, Mutex, MutexGuard};

use ferrite_bdev::uuid::Uuid;
use ferrite_bdev::{
    BackendChannel, Bdev, BdevBackend, BdevError, BdevEvent, BdevModule, BdevProps, ClaimKind,
    Desc, ErrorKind, IoType, Result,
};
use serde_json::{json, Value};

use crate::inject::{ErrorType, InjectIoType, InjectOpts, Injections, SlotStatus};

/// Module name (claims, `product_name` lookups, `unregister` checks).
const MODULE: &str = "error";

/// Parameters of `bdev_error_create`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorOpts {
    /// Name of the base bdev; the error bdev is `EE_<base_name>`.
    pub base_name: String,
    /// UUID of the error bdev (random when absent; kept for save_config).
    pub uuid: Option<String>,
}

struct ConfigEntry {
    base_name: String,
    uuid: Uuid,
    attached: bool,
}

impl ConfigEntry {
    fn name(&self) -> String {
        vbdev_name(&self.base_name)
    }

    fn config_json(&self) -> Value {
        json!({"method": "bdev_error_create", "params": {
            "base_name": self.base_name,
            "uuid": self.uuid.to_string(),
        }})
    }
}

/// Configured error bdevs (one per base, as SPDK), attached or waiting for their base.
static CONFIG: Mutex<Vec<ConfigEntry>> = Mutex::new(Vec::new());

/// Injection state of every attached error bdev, by name: how `bdev_error_inject_error`
/// reaches a bdev's backend (control path only; channels hold their own `Arc`).
static DISKS: Mutex<Vec<(String, Arc<Injections>)>> = Mutex::new(Vec::new());

fn config() -> MutexGuard<'static, Vec<ConfigEntry>> {
    CONFIG.lock().unwrap_or_else(|p| p.into_inner())
}

fn disks() -> MutexGuard<'static, Vec<(String, Arc<Injections>)>> {
    DISKS.lock().unwrap_or_else(|p| p.into_inner())
}

fn injections_of(name: &str) -> Option<Arc<Injections>> {
    disks()
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, i)| i.clone())
}

/// The name of the error bdev over `base_name`.
fn vbdev_name(base_name: &str) -> String {
    format!("EE_{base_name}")
}

/// The backend of one error bdev.
struct ErrorBackend {
    name: String,
    base_name: String,
    uuid: Uuid,
    /// The base descriptor holding our exclusive-write claim. `None` after destruct.
    base: Mutex<Option<Desc>>,
    base_bdev: Arc<Bdev>,
    inj: Arc<Injections>,
}

impl BdevBackend for ErrorBackend {
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

    /// Step 3: a channel to the base on the calling thread, plus its slot for held I/O.
    fn create_channel(&self) -> Box<dyn BackendChannel> {
        let base = self
            .base
            .lock()
            .ok()
            .and_then(|d| d.as_ref().and_then(|d| d.channel().ok()));
        if base.is_none() {
            tracing::warn!(
                "error bdev '{}': no channel to base '{}' on this thread",
                self.name,
                self.base_name
            );
        }
        Box::new(crate::io::ErrorChannel::new(base, self.inj.clone()))
    }

    /// Step 7: out of the registry, no descriptor open. Disarm (releasing anything still
    /// held), forget the injection state, release the base.
    fn destruct(&self) {
        self.inj.clear();
        disks().retain(|(n, i)| !(n == &self.name && Arc::ptr_eq(i, &self.inj)));
        if let Some(e) = config().iter_mut().find(|e| e.base_name == self.base_name) {
            e.attached = false;
        }
        let desc = self.base.lock().ok().and_then(|mut d| d.take());
        drop(desc);
        tracing::info!(
            "error bdev '{}' released base '{}'",
            self.name,
            self.base_name
        );
    }

    fn driver_specific(&self) -> Option<(&'static str, Value)> {
        Some(("error_disk", json!({"base_bdev": self.base_bdev.name()})))
    }

    fn config_entry(&self, _bdev: &Bdev) -> Option<Value> {
        Some(json!({"method": "bdev_error_create", "params": {
            "base_name": self.base_name,
            "uuid": self.uuid.to_string(),
        }}))
    }
}

/// The error module: attaches configured error bdevs when their base appears.
pub struct ErrorModule;

impl BdevModule for ErrorModule {
    fn name(&self) -> &'static str {
        MODULE
    }

    /// Step 1b: a bdev registered; attach the error bdev waiting for it, if any.
    fn examine_config(&self, bdev: &Arc<Bdev>) {
        let waiting: Vec<(String, Uuid)> = config()
            .iter()
            .filter(|e| !e.attached && names_match(&e.base_name, bdev))
            .map(|e| (e.base_name.clone(), e.uuid))
            .collect();
        for (base_name, uuid) in waiting {
            if let Err(e) = attach(&base_name, uuid) {
                tracing::error!(
                    "error bdev '{}': could not attach to '{}': {e}",
                    vbdev_name(&base_name),
                    bdev.name()
                );
            }
        }
    }

    /// Error bdevs still waiting for their base are saved here (attached ones by their bdev).
    fn config_json(&self) -> Vec<Value> {
        config()
            .iter()
            .filter(|e| !e.attached)
            .map(ConfigEntry::config_json)
            .collect()
    }
}

fn names_match(want: &str, b: &Bdev) -> bool {
    b.name() == want || b.aliases().iter().any(|a| a == want) || b.uuid().to_string() == want
}

/// Step 1: remember the base, then attach if it exists. Returns the error bdev's name
/// (`EE_<base_name>`). Errors: an error bdev for that base (or a bdev with that name) exists,
/// the UUID is malformed, or attaching failed (then the configuration is forgotten again).
pub fn create(opts: &ErrorOpts) -> Result<String> {
    let uuid = match &opts.uuid {
        Some(u) => Uuid::parse(u)?,
        None => Uuid::new_v4(),
    };
    let name = vbdev_name(&opts.base_name);
    {
        let mut cfg = config();
        if cfg.iter().any(|e| e.base_name == opts.base_name) {
            return Err(BdevError::new(
                ErrorKind::Exists,
                format!(
                    "an error bdev on base '{}' is already configured ('{name}')",
                    opts.base_name
                ),
            ));
        }
        if ferrite_bdev::lookup(&name).is_some() {
            return Err(BdevError::new(
                ErrorKind::Exists,
                format!("bdev name '{name}' already exists"),
            ));
        }
        cfg.push(ConfigEntry {
            base_name: opts.base_name.clone(),
            uuid,
            attached: false,
        });
    }
    if ferrite_bdev::lookup(&opts.base_name).is_none() {
        tracing::info!(
            "error bdev '{name}': base '{}' not present yet; will attach when it appears",
            opts.base_name
        );
        return Ok(name);
    }
    match attach(&opts.base_name, uuid) {
        Ok(()) => Ok(name),
        Err(e) => {
            config().retain(|c| c.base_name != opts.base_name);
            Err(e)
        }
    }
}

/// Step 2: open, claim, register. Every failure unwinds what came before.
fn attach(base_name: &str, uuid: Uuid) -> Result<()> {
    let name = vbdev_name(base_name);
    let in_context = |e: BdevError, what: &str| {
        BdevError::new(
            e.kind(),
            format!("error bdev '{name}': cannot {what} base: {}", e.message()),
        )
    };
    // 2a. Open the base for writing, with the hot-remove callback (step 6).
    let me = name.clone();
    let desc = Desc::open(base_name, true, move |ev| on_base_event(&me, ev))
        .map_err(|e| in_context(e, "open"))?;
    // 2b. Claim it: nobody else may write under us. (On error `desc` drops: closed.)
    desc.claim(ClaimKind::ExclusiveWrite, MODULE)
        .map_err(|e| in_context(e, "claim"))?;
    let base = desc.bdev().clone();
    // 2c. Copy the geometry.
    let mut props = BdevProps::new(
        &name,
        "Error Injection Disk",
        base.block_size(),
        base.num_blocks(),
    );
    props.uuid = Some(uuid);
    props.md_size = base.md_size();
    props.write_cache = base.write_cache();
    props.optimal_io_boundary = base.optimal_io_boundary();
    props.split_on_optimal_io_boundary = false; // the base splits for itself
    let inj = Arc::new(Injections::new(&name));
    let backend = Arc::new(ErrorBackend {
        name: name.clone(),
        base_name: base_name.to_string(),
        uuid,
        base: Mutex::new(Some(desc)),
        base_bdev: base.clone(),
        inj: inj.clone(),
    });
    // 2d. Register. On failure the backend (and with it the descriptor and claim) is dropped.
    let bdev = ferrite_bdev::register(props, backend)?;
    // A reset of the bdev completes what its `pending` injections hold (see `HeldIo`).
    ferrite_bdev::set_held_io(&bdev, Arc::new(crate::inject::ResetHook(inj.clone())));
    ferrite_bdev::set_held_io_bases(&bdev, &[&base]);
    disks().push((name.clone(), inj));
    if let Some(e) = config().iter_mut().find(|e| e.base_name == base_name) {
        e.attached = true;
    }
    tracing::info!("error bdev '{name}' attached to base '{base_name}'");
    Ok(())
}

/// Step 6: the base is being removed (or resized). On removal, release what we hold and
/// unregister our bdev; the base finishes its removal once our destruct drops the descriptor.
fn on_base_event(name: &str, ev: BdevEvent) {
    match ev {
        BdevEvent::Remove => {
            tracing::info!("error bdev '{name}': base is being removed; removing it");
            if let Some(inj) = injections_of(name) {
                inj.clear();
            }
            let n = name.to_string();
            ferrite_bdev::unregister(name, Some(MODULE), move |r| {
                if let Err(e) = r {
                    tracing::warn!("error bdev '{n}': {e}");
                }
            });
        }
        BdevEvent::Resize => {
            let base = name.strip_prefix("EE_").and_then(ferrite_bdev::lookup);
            if let (Some(me), Some(base)) = (ferrite_bdev::lookup(name), base) {
                me.notify_resize(base.num_blocks());
            }
        }
    }
}

/// Step 8: delete by RPC. Forgets the configuration (attached or waiting); an attached bdev
/// first releases what it holds, then is unregistered; `done` runs once it is gone.
pub fn delete(name: &str, done: impl FnOnce(Result<()>) + Send + 'static) {
    let (known, attached) = {
        let mut cfg = config();
        let before = cfg.len();
        let attached = cfg.iter().any(|e| e.name() == name && e.attached);
        cfg.retain(|e| e.name() != name || attached);
        (before != cfg.len(), attached)
    };
    if known && !attached {
        return done(Ok(())); // was only waiting for its base
    }
    if !attached {
        return done(Err(not_error_bdev(name)));
    }
    // Held I/O would keep users from closing their descriptors: release it first, and disarm
    // so that nothing new is held while the bdev goes.
    if let Some(inj) = injections_of(name) {
        inj.clear();
    }
    let n = name.to_string();
    ferrite_bdev::unregister(name, Some(MODULE), move |r| {
        config().retain(|e| e.name() != n);
        done(r)
    })
}

fn not_error_bdev(name: &str) -> BdevError {
    match ferrite_bdev::lookup(name) {
        Some(b) => BdevError::new(
            ErrorKind::NotFound,
            format!(
                "bdev '{name}' is not an error bdev (it belongs to module '{}')",
                b.module_name()
            ),
        ),
        None => BdevError::not_found(name),
    }
}

/// `bdev_error_inject_error`: arms an injection on the error bdev `name`, or with
/// `InjectIoType::Clear` disarms all of them and releases every held I/O.
pub fn inject_error(name: &str, opts: &InjectOpts) -> Result<()> {
    if opts.error_type == ErrorType::CorruptData && opts.corrupt_value == 0 {
        return Err(BdevError::new(
            ErrorKind::InvalidArgument,
            format!(
                "error bdev '{name}': corrupt_value must be non-zero for corrupt_data \
                 (it is XORed into the data)"
            ),
        ));
    }
    let inj = injections_of(name).ok_or_else(|| not_error_bdev(name))?;
    if opts.io_type == InjectIoType::Clear {
        inj.clear();
        tracing::info!("error bdev '{name}': injections cleared");
    } else {
        inj.arm(opts);
        tracing::info!(
            "error bdev '{name}': {} x {} on {:?} (queue_depth {})",
            opts.num,
            opts.error_type.spdk_name(),
            opts.io_type,
            opts.queue_depth
        );
    }
    Ok(())
}

/// The injection state of the error bdev `name` (slots read, write, unmap, flush): for tests
/// and diagnostics. `None` if there is no such attached error bdev.
pub fn injection_status(name: &str) -> Option<[SlotStatus; 4]> {
    injections_of(name).map(|i| i.status())
}
