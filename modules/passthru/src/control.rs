//! Passthru control path: configuration list, attach on examine, hot-remove, delete.

use std::sync::{Arc, Mutex};

use ferrite_bdev::uuid::Uuid;
use ferrite_bdev::{
    BackendChannel, Bdev, BdevBackend, BdevError, BdevEvent, BdevModule, BdevProps, ClaimKind,
    Desc, ErrorKind, IoType, Result,
};
use serde_json::{json, Value};

/// Parameters of `bdev_passthru_create`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassthruOpts {
    /// Name of the base bdev (name, alias or UUID).
    pub base_bdev_name: String,
    /// Name of the passthru bdev.
    pub name: String,
    /// UUID of the passthru bdev (random when absent; kept for save_config).
    pub uuid: Option<String>,
}

struct ConfigEntry {
    opts: PassthruOpts,
    uuid: Uuid,
    attached: bool,
}

/// Configured pairs, attached or waiting for their base. A module-level list, as SPDK's.
static CONFIG: Mutex<Vec<ConfigEntry>> = Mutex::new(Vec::new());

fn config() -> std::sync::MutexGuard<'static, Vec<ConfigEntry>> {
    CONFIG.lock().unwrap_or_else(|p| p.into_inner())
}

/// The backend of one passthru bdev.
struct PassthruBackend {
    name: String,
    base_name: String,
    uuid: Uuid,
    /// The base descriptor holding our exclusive-write claim. `None` after destruct.
    base: Mutex<Option<Desc>>,
    base_bdev: Arc<Bdev>,
}

impl BdevBackend for PassthruBackend {
    fn module_name(&self) -> &'static str {
        "passthru"
    }

    /// Whatever the base accepts (natively or emulated by its own bdev layer), we forward.
    /// Reset is forwarded too (after our own layer has drained our channels); abort stays in
    /// our layer, which aborts what is queued on our channels.
    fn io_type_supported(&self, t: IoType) -> bool {
        match t {
            IoType::Abort => false,
            IoType::Reset => true,
            _ => self.base_bdev.io_type_supported(t),
        }
    }

    /// Step 3: a channel to the base on the calling thread.
    fn create_channel(&self) -> Box<dyn BackendChannel> {
        let base = self
            .base
            .lock()
            .ok()
            .and_then(|d| d.as_ref().and_then(|d| d.channel().ok()));
        if base.is_none() {
            tracing::warn!(
                "passthru '{}': no channel to base '{}' on this thread",
                self.name,
                self.base_name
            );
        }
        Box::new(crate::io::PassthruChannel { base })
    }

    /// Step 6: our bdev is out of the registry and no descriptor is open. Release the base:
    /// dropping the descriptor releases the claim and closes it (finishing the base's own
    /// removal if the base is being removed too).
    fn destruct(&self) {
        if let Some(e) = config().iter_mut().find(|e| e.opts.name == self.name) {
            e.attached = false;
        }
        let desc = self.base.lock().ok().and_then(|mut d| d.take());
        drop(desc);
        tracing::info!(
            "passthru '{}' released base '{}'",
            self.name,
            self.base_name
        );
    }

    fn driver_specific(&self) -> Option<(&'static str, Value)> {
        Some((
            "passthru",
            json!({"name": self.name, "base_bdev_name": self.base_name}),
        ))
    }

    fn config_entry(&self, bdev: &Bdev) -> Option<Value> {
        Some(json!({"method": "bdev_passthru_create", "params": {
            "base_bdev_name": self.base_name,
            "name": bdev.name(),
            "uuid": self.uuid.to_string(),
        }}))
    }
}

/// The passthru module: attaches configured pairs when their base appears.
pub struct PassthruModule;

impl BdevModule for PassthruModule {
    fn name(&self) -> &'static str {
        "passthru"
    }

    /// Step 1b: a bdev registered; attach every configured pair waiting for it.
    fn examine_config(&self, bdev: &Arc<Bdev>) {
        let waiting: Vec<PassthruOpts> = config()
            .iter()
            .filter(|e| !e.attached && names_match(&e.opts.base_bdev_name, bdev))
            .map(|e| e.opts.clone())
            .collect();
        for opts in waiting {
            if let Err(e) = attach(&opts) {
                tracing::error!(
                    "passthru '{}': could not attach to '{}': {e}",
                    opts.name,
                    bdev.name()
                );
            }
        }
    }

    /// Pairs still waiting for their base are saved here (attached ones by their bdev).
    fn config_json(&self) -> Vec<Value> {
        config()
            .iter()
            .filter(|e| !e.attached)
            .map(|e| {
                json!({"method": "bdev_passthru_create", "params": {
                    "base_bdev_name": e.opts.base_bdev_name,
                    "name": e.opts.name,
                    "uuid": e.uuid.to_string(),
                }})
            })
            .collect()
    }
}

fn names_match(want: &str, b: &Bdev) -> bool {
    b.name() == want || b.aliases().iter().any(|a| a == want) || b.uuid().to_string() == want
}

/// Step 1: remember the pair, then attach if the base exists. Returns the passthru's name.
/// Errors: the name is configured already, the UUID is malformed, or attaching failed (then
/// the pair is forgotten again).
pub fn create(opts: &PassthruOpts) -> Result<String> {
    let uuid = match &opts.uuid {
        Some(u) => Uuid::parse(u)?,
        None => Uuid::new_v4(),
    };
    {
        let mut cfg = config();
        if cfg.iter().any(|e| e.opts.name == opts.name)
            || ferrite_bdev::lookup(&opts.name).is_some()
        {
            return Err(BdevError::new(
                ErrorKind::Exists,
                format!("bdev name '{}' already exists", opts.name),
            ));
        }
        cfg.push(ConfigEntry {
            opts: PassthruOpts {
                uuid: Some(uuid.to_string()),
                ..opts.clone()
            },
            uuid,
            attached: false,
        });
    }
    if ferrite_bdev::lookup(&opts.base_bdev_name).is_none() {
        tracing::info!(
            "passthru '{}': base '{}' not present yet; will attach when it appears",
            opts.name,
            opts.base_bdev_name
        );
        return Ok(opts.name.clone());
    }
    let with_uuid = PassthruOpts {
        uuid: Some(uuid.to_string()),
        ..opts.clone()
    };
    match attach(&with_uuid) {
        Ok(()) => Ok(opts.name.clone()),
        Err(e) => {
            config().retain(|c| c.opts.name != opts.name);
            Err(e)
        }
    }
}

/// Step 2: open, claim, register. Every failure unwinds what came before.
fn attach(opts: &PassthruOpts) -> Result<()> {
    let base_name = opts.base_bdev_name.clone();
    let my_name = opts.name.clone();
    // 2a. Open the base for writing, with the hot-remove callback (step 5).
    let desc = Desc::open(&base_name, true, move |ev| on_base_event(&my_name, ev))?;
    // 2b. Claim it: nobody else may write under us. (On error `desc` drops: closed.)
    desc.claim(ClaimKind::ExclusiveWrite, "passthru")
        .map_err(|e| {
            BdevError::new(
                e.kind(),
                format!(
                    "passthru '{}': cannot claim base: {}",
                    opts.name,
                    e.message()
                ),
            )
        })?;
    let base = desc.bdev().clone();
    // 2c. Copy the geometry.
    let uuid = match &opts.uuid {
        Some(u) => Uuid::parse(u)?,
        None => Uuid::new_v4(),
    };
    let mut props = BdevProps::new(&opts.name, "passthru", base.block_size(), base.num_blocks());
    props.uuid = Some(uuid);
    props.md_size = base.md_size();
    props.write_cache = base.write_cache();
    props.optimal_io_boundary = base.optimal_io_boundary();
    props.split_on_optimal_io_boundary = false; // the base splits for itself
    let backend = Arc::new(PassthruBackend {
        name: opts.name.clone(),
        base_name: base.name().to_string(),
        uuid,
        base: Mutex::new(Some(desc)),
        base_bdev: base.clone(),
    });
    // 2d. Register. On failure the backend (and with it the descriptor and claim) is dropped.
    let bdev = ferrite_bdev::register(props, backend)?;
    // A reset of ours reaches I/O held inside the base (an error or delay bdev).
    ferrite_bdev::set_held_io_bases(&bdev, &[&base]);
    if let Some(e) = config().iter_mut().find(|e| e.opts.name == opts.name) {
        e.attached = true;
    }
    tracing::info!(
        "passthru '{}' attached to base '{}'",
        opts.name,
        opts.base_bdev_name
    );
    Ok(())
}

/// Step 5: the base is being removed (or resized). On removal, unregister our bdev; the base
/// finishes its removal once our destruct drops the descriptor.
fn on_base_event(name: &str, ev: BdevEvent) {
    match ev {
        BdevEvent::Remove => {
            tracing::info!("passthru '{name}': base is being removed; removing passthru");
            let n = name.to_string();
            ferrite_bdev::unregister(name, Some("passthru"), move |r| {
                if let Err(e) = r {
                    tracing::warn!("passthru '{n}': {e}");
                }
            });
        }
        BdevEvent::Resize => {
            if let (Some(me), Some(base)) = (ferrite_bdev::lookup(name), base_of(name)) {
                me.notify_resize(base.num_blocks());
            }
        }
    }
}

fn base_of(name: &str) -> Option<Arc<Bdev>> {
    let base = config()
        .iter()
        .find(|e| e.opts.name == name)
        .map(|e| e.opts.base_bdev_name.clone())?;
    ferrite_bdev::lookup(&base)
}

/// Step 7: delete by RPC. Forgets the configured pair (attached or waiting), then unregisters
/// the bdev if it exists; `done` runs once it is gone.
pub fn delete(name: &str, done: impl FnOnce(Result<()>) + Send + 'static) {
    let known = {
        let mut cfg = config();
        let before = cfg.len();
        let attached = cfg.iter().any(|e| e.opts.name == name && e.attached);
        cfg.retain(|e| e.opts.name != name || attached);
        (before != cfg.len(), attached)
    };
    match known {
        (true, false) => done(Ok(())), // was only waiting for its base
        (_, true) => {
            let n = name.to_string();
            ferrite_bdev::unregister(name, Some("passthru"), move |r| {
                config().retain(|e| e.opts.name != n);
                done(r)
            })
        }
        (false, false) => done(Err(BdevError::not_found(name))),
    }
}
