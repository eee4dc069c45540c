//! The registry of bdevs and modules: registration with examine, lookup by name, alias or
//! UUID, and unregistration (hot-remove) that waits for every descriptor to close.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::bdev::{deliver_event, Bdev, BdevBackend, BdevProps, Status};
use crate::error::{BdevError, ErrorKind, Result};
use crate::module::{BdevModule, ExamineDone, ExamineHold};
use crate::types::BdevEvent;
use crate::uuid::Uuid;

/// Longest bdev name or alias accepted.
pub const MAX_NAME_LEN: usize = 255;

type Waiter = Box<dyn FnOnce() + Send>;

struct Registry {
    bdevs: Vec<Arc<Bdev>>,
    modules: Vec<Arc<dyn BdevModule>>,
    examine_waiters: Vec<Waiter>,
}

static REG: Mutex<Registry> = Mutex::new(Registry {
    bdevs: Vec::new(),
    modules: Vec::new(),
    examine_waiters: Vec::new(),
});

fn reg() -> std::sync::MutexGuard<'static, Registry> {
    REG.lock().unwrap_or_else(|p| p.into_inner())
}

/// Adds a module (its examine hooks see every bdev registered afterwards). Idempotent by name.
pub fn register_module(m: Arc<dyn BdevModule>) {
    let mut r = reg();
    if !r.modules.iter().any(|x| x.name() == m.name()) {
        r.modules.push(m);
    }
}

/// Registered modules, in registration order.
pub fn modules() -> Vec<Arc<dyn BdevModule>> {
    reg().modules.clone()
}

fn name_taken(r: &Registry, name: &str) -> bool {
    r.bdevs.iter().any(|b| {
        b.name == name || b.aliases().iter().any(|a| a == name) || b.uuid.to_string() == name
    })
}

fn check_name(kind: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(|c| c.is_control()) {
        return Err(BdevError::new(
            ErrorKind::InvalidArgument,
            format!("invalid {kind} '{name}': must be 1 to {MAX_NAME_LEN} printable characters"),
        ));
    }
    Ok(())
}

/// Registers a bdev and runs every module's examine on it. Fails if the name, an alias or
/// the UUID is taken, or the geometry is invalid (block size a non-zero multiple of 512, at
/// least one block). Call on a lightweight thread (the app thread): examine hooks run on it
/// before this returns, and asynchronous examines finish later.
pub fn register(props: BdevProps, backend: Arc<dyn BdevBackend>) -> Result<Arc<Bdev>> {
    check_name("bdev name", &props.name)?;
    for a in &props.aliases {
        check_name("alias", a)?;
    }
    if props.block_size == 0 || !props.block_size.is_multiple_of(512) {
        return Err(BdevError::new(
            ErrorKind::InvalidArgument,
            format!(
                "bdev '{}': block size {} is not a non-zero multiple of 512",
                props.name, props.block_size
            ),
        ));
    }
    if props.num_blocks == 0 {
        return Err(BdevError::new(
            ErrorKind::InvalidArgument,
            format!("bdev '{}': number of blocks must be at least 1", props.name),
        ));
    }
    let (bdev, modules) = {
        let mut r = reg();
        let names: Vec<&String> = std::iter::once(&props.name)
            .chain(props.aliases.iter())
            .collect();
        for (i, n) in names.iter().enumerate() {
            // Taken by another bdev, or given twice in this registration.
            if name_taken(&r, n) || names[..i].contains(n) {
                return Err(BdevError::new(
                    ErrorKind::Exists,
                    format!("bdev name '{n}' already exists"),
                ));
            }
        }
        if let Some(u) = props.uuid {
            if r.bdevs.iter().any(|b| b.uuid == u) {
                return Err(BdevError::new(
                    ErrorKind::Exists,
                    format!("bdev '{}': UUID {u} is already used", props.name),
                ));
            }
        }
        let bdev = Bdev::build(props, backend);
        // Examine pending = one per module + one for the synchronous phase below.
        bdev.examine_pending
            .store(r.modules.len() as u32 + 1, Ordering::Release);
        r.bdevs.push(bdev.clone());
        (bdev, r.modules.clone())
    };
    tracing::info!(
        "bdev '{}' registered ({} blocks of {} bytes, module {})",
        bdev.name,
        bdev.num_blocks(),
        bdev.block_size,
        bdev.module_name()
    );
    for m in &modules {
        m.examine_config(&bdev);
    }
    let claimed = bdev.claim().is_some();
    for m in &modules {
        let done = ExamineDone {
            bdev: Some(bdev.clone()),
        };
        if claimed {
            done.finish();
        } else {
            m.examine_disk(&bdev, done);
        }
    }
    ExamineDone {
        bdev: Some(bdev.clone()),
    }
    .finish();
    Ok(bdev)
}

fn settled(r: &Registry) -> bool {
    ExamineHold::count() == 0 && r.bdevs.iter().all(|b| b.is_examined())
}

/// Runs the waiters if examine has settled and someone waits; modules first get
/// [`BdevModule::examine_settled`] (which may start more examine work: then the waiters wait
/// for it too).
pub(crate) fn examine_finished() {
    let modules = {
        let r = reg();
        if r.examine_waiters.is_empty() || !settled(&r) {
            return;
        }
        r.modules.clone()
    };
    for m in &modules {
        m.examine_settled();
    }
    let waiters: Vec<Waiter> = {
        let mut r = reg();
        if settled(&r) {
            std::mem::take(&mut r.examine_waiters)
        } else {
            Vec::new()
        }
    };
    for w in waiters {
        w();
    }
}

/// Runs `done` once no bdev has an examine in progress (now, if none has), after the modules'
/// [`BdevModule::examine_settled`] hooks and whatever they started.
pub fn wait_for_examine(done: impl FnOnce() + Send + 'static) {
    reg().examine_waiters.push(Box::new(done));
    examine_finished();
}

/// Finds a registered bdev by name, alias or UUID.
pub fn lookup(name: &str) -> Option<Arc<Bdev>> {
    let r = reg();
    let by_uuid = Uuid::parse(name).ok();
    r.bdevs
        .iter()
        .find(|b| {
            b.name == name || b.aliases().iter().any(|a| a == name) || Some(b.uuid) == by_uuid
        })
        .cloned()
}

/// Every registered bdev, in registration order.
pub fn list() -> Vec<Arc<Bdev>> {
    reg().bdevs.clone()
}

/// Adds an alias to a bdev.
pub fn add_alias(bdev: &Arc<Bdev>, alias: &str) -> Result<()> {
    check_name("alias", alias)?;
    let r = reg();
    if name_taken(&r, alias) {
        return Err(BdevError::new(
            ErrorKind::Exists,
            format!("bdev name '{alias}' already exists"),
        ));
    }
    bdev.aliases
        .lock()
        .map_err(|_| BdevError::new(ErrorKind::Busy, "alias list poisoned"))?
        .push(alias.to_string());
    Ok(())
}

/// Starts removing the bdev `name`: new opens fail, every open descriptor gets
/// `BdevEvent::Remove` on its thread, and once the last one is closed the bdev leaves the
/// registry, its backend is destructed, and `done(Ok(()))` runs (on the thread that closed the
/// last descriptor, or before this returns if none was open). If `module` is given, the bdev
/// must belong to it.
pub fn unregister(
    name: &str,
    module: Option<&str>,
    done: impl FnOnce(Result<()>) + Send + 'static,
) {
    let Some(bdev) = lookup(name) else {
        return done(Err(BdevError::not_found(name)));
    };
    if let Some(m) = module {
        if bdev.module_name() != m {
            return done(Err(BdevError::new(
                ErrorKind::NotFound,
                format!(
                    "bdev '{name}' is not a {m} bdev (it belongs to module '{}')",
                    bdev.module_name()
                ),
            )));
        }
    }
    unregister_bdev(&bdev, done);
}

/// As [`unregister`], for a bdev in hand.
pub fn unregister_bdev(bdev: &Arc<Bdev>, done: impl FnOnce(Result<()>) + Send + 'static) {
    let (targets, finish_now) = {
        let mut st = match bdev.state.lock() {
            Ok(s) => s,
            Err(_) => return done(Err(BdevError::new(ErrorKind::Busy, "bdev state poisoned"))),
        };
        match st.status {
            Status::Gone => {
                drop(st);
                return done(Err(BdevError::not_found(&bdev.name)));
            }
            Status::Unregistering => {
                st.unregister_done.push(Box::new(move || done(Ok(()))));
                return;
            }
            Status::Registered => {}
        }
        st.status = Status::Unregistering;
        st.unregister_done.push(Box::new(move || done(Ok(()))));
        let t: Vec<_> = st
            .descs
            .iter()
            .map(|d| (d.thread.clone(), d.event_cb.clone()))
            .collect();
        let empty = st.descs.is_empty();
        (t, empty)
    };
    tracing::info!(
        "bdev '{}' is being removed ({} open descriptor(s))",
        bdev.name,
        targets.len()
    );
    if finish_now {
        finish_unregister(bdev);
        return;
    }
    for (t, cb) in targets {
        deliver_event(t, cb, BdevEvent::Remove);
    }
}

pub(crate) fn finish_unregister(bdev: &Arc<Bdev>) {
    let done = match bdev.state.lock() {
        Ok(mut st) => {
            if st.status == Status::Gone {
                return;
            }
            st.status = Status::Gone;
            std::mem::take(&mut st.unregister_done)
        }
        Err(_) => Vec::new(),
    };
    reg().bdevs.retain(|b| !Arc::ptr_eq(b, bdev));
    bdev.device.unregister();
    bdev.backend.destruct();
    tracing::info!("bdev '{}' removed", bdev.name);
    for d in done {
        d();
    }
    examine_finished();
}

/// Removes every bdev, top of the graph first, one at a time, then runs `done`. Used at
/// shutdown. Call on a lightweight thread.
///
/// "Top" means unclaimed: a bdev nobody stacks on. Among those the most recently registered
/// goes first. Registration order alone is not enough: a base can be registered before the
/// virtual bdev that later claims it (a member added to a raid by RPC), and removing it first
/// would look like a hot-remove to its user (SPDK's bdev_finish also removes unclaimed bdevs
/// first). Only if every remaining bdev is claimed (which a correct graph never leaves) does the
/// most recent one go.
pub fn unregister_all(done: impl FnOnce() + Send + 'static) {
    let all = list(); // a snapshot: no registry lock held while reading claims
    let next = all
        .iter()
        .rev()
        .find(|b| b.claim().is_none())
        .or_else(|| all.last())
        .cloned();
    match next {
        None => done(),
        Some(b) => {
            let this = ferrite_reactor::current();
            unregister_bdev(&b, move |_| {
                let cont = move || unregister_all(done);
                match this {
                    Some(t) => {
                        if let Err(e) = t.send(cont) {
                            tracing::error!("shutdown: cannot continue removing bdevs: {e}");
                        }
                    }
                    None => cont(),
                }
            });
        }
    }
}
