//! NVMe controllers: attach (one bdev per active namespace), detach, reset, listing; the
//! namespace bdevs' backend; the admin poller (abort completions, fatal status → reset).
//!
//! Thread contract: `attach`, `detach`, `reset` and `list` run on the app thread; their
//! callbacks run there too, later. Blocking work (VFIO open, controller enable, Identify,
//! disable/enable for a reset) runs on a short-lived helper OS thread so no reactor blocks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};

use ferrite_bdev::uuid::Uuid;
use ferrite_bdev::{BackendChannel, Bdev, BdevBackend, BdevError, BdevProps, ErrorKind, IoType};
use ferrite_nvme::identify::NsData;
use ferrite_nvme::{Bar, Controller, CtrlrOpts, Dma, Status};
use ferrite_reactor::{IoDevice, PollerHandle, ThreadHandle};
use serde_json::{json, Value};

use crate::io::{CtrlrChannel, NsChannel};

/// Controller states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CtrlrState {
    /// Serving I/O.
    Enabled = 0,
    /// Being reset: new I/O waits (NOMEM retries), in-flight I/O is resubmitted afterwards.
    Resetting = 1,
    /// Unusable (reset failed, device gone): I/O fails.
    Failed = 2,
    /// Being detached.
    Detaching = 3,
}

impl CtrlrState {
    fn name(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Resetting => "resetting",
            Self::Failed => "failed",
            Self::Detaching => "deleting",
        }
    }
}

/// How an attached controller was attached (its `save_config` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachParams {
    /// Bdev name prefix.
    pub name: String,
    /// Transport type as given ("PCIe").
    pub trtype: String,
    /// PCI address.
    pub traddr: String,
    /// I/O queue pairs to ask for.
    pub num_io_queues: Option<u32>,
}

/// One attached controller.
pub struct NvmeCtrlr {
    pub(crate) name: String,
    pub(crate) params: AttachParams,
    pub(crate) driver: Controller,
    pub(crate) device: IoDevice<CtrlrChannel>,
    state: AtomicU8,
    resets: std::sync::atomic::AtomicU64,
    app: ThreadHandle,
    namespaces: Mutex<Vec<(u32, String)>>,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    admin_poller: Mutex<Option<PollerHandle>>,
    detach_done: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
    _keep: Option<Box<dyn std::any::Any + Send + Sync>>,
}

static CTRLRS: Mutex<Vec<Arc<NvmeCtrlr>>> = Mutex::new(Vec::new());
/// Names being attached (reserved until the attach finishes).
static PENDING: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn ctrlrs() -> std::sync::MutexGuard<'static, Vec<Arc<NvmeCtrlr>>> {
    CTRLRS.lock().unwrap_or_else(|p| p.into_inner())
}

/// The attached controller `name`.
pub fn lookup(name: &str) -> Option<Arc<NvmeCtrlr>> {
    ctrlrs().iter().find(|c| c.name == name).cloned()
}

/// Every attached controller.
pub fn all() -> Vec<Arc<NvmeCtrlr>> {
    ctrlrs().clone()
}

impl NvmeCtrlr {
    /// The state.
    pub fn state(&self) -> CtrlrState {
        match self.state.load(Ordering::Acquire) {
            0 => CtrlrState::Enabled,
            1 => CtrlrState::Resetting,
            2 => CtrlrState::Failed,
            _ => CtrlrState::Detaching,
        }
    }
    fn set_state(&self, s: CtrlrState) {
        self.state.store(s as u8, Ordering::Release);
    }
    /// Completed controller resets.
    pub fn resets(&self) -> u64 {
        self.resets.load(Ordering::Relaxed)
    }
    /// The driver's controller.
    pub fn driver(&self) -> &Controller {
        &self.driver
    }

    /// Counts a failed command's status by name (error path only).
    pub(crate) fn note_error(&self, st: Status) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(st.name())
            .or_default() += 1;
    }

    /// Failed-command counts by status name.
    pub fn errors(&self) -> BTreeMap<&'static str, u64> {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Asks the app thread to reset the controller (any thread).
    pub(crate) fn request_reset(self: &Arc<Self>, why: &'static str) {
        let c = self.clone();
        let _ = self.app.send(move || {
            if c.state() == CtrlrState::Enabled {
                tracing::warn!("nvme controller '{}': resetting ({why})", c.name);
                reset(&c, |r| {
                    if let Err(e) = r {
                        tracing::error!("{e}");
                    }
                });
            }
        });
    }

    /// The `bdev_nvme_get_controllers` entry.
    pub fn info(&self) -> Value {
        let d = self.driver.data();
        json!({
            "name": self.name,
            "ctrlrs": [{
                "state": self.state().name(),
                "cntlid": d.cntlid,
                "trid": {"trtype": "PCIe", "traddr": self.params.traddr},
                "host": {"nqn": "", "addr": "", "svcid": ""},
            }],
            "ferrite": {
                "serial_number": d.serial,
                "model_number": d.model,
                "firmware_revision": d.firmware,
                "io_queues_granted": self.driver.granted_io_queues(),
                "io_queues_in_use": self.driver.io_queues_in_use(),
                "max_transfer_bytes": self.driver.max_transfer(),
                "namespaces": self.namespaces.lock().unwrap_or_else(|p| p.into_inner())
                    .iter().map(|(id, b)| json!({"nsid": id, "bdev": b})).collect::<Vec<_>>(),
                "errors": self.errors(),
                "resets": self.resets(),
            }
        })
    }

    /// The `save_config` entry that attaches it again.
    pub fn config_entry(&self) -> Value {
        let mut p = json!({
            "name": self.params.name,
            "trtype": self.params.trtype,
            "traddr": self.params.traddr,
        });
        if let Some(n) = self.params.num_io_queues {
            p["num_io_queues"] = json!(n);
        }
        json!({"method": "bdev_nvme_attach_controller", "params": p})
    }
}

struct NsBackend {
    ctrlr: Arc<NvmeCtrlr>,
    nsid: u32,
}

impl BdevBackend for NsBackend {
    fn module_name(&self) -> &'static str {
        "nvme"
    }

    fn io_type_supported(&self, t: IoType) -> bool {
        let d = self.ctrlr.driver.data();
        match t {
            IoType::Read | IoType::Write | IoType::Flush => true,
            IoType::Unmap => d.dsm(),
            IoType::WriteZeroes => d.write_zeroes(),
            IoType::Compare => d.compare(),
            IoType::CompareAndWrite => d.compare() && d.compare_and_write(),
            _ => false,
        }
    }

    fn create_channel(&self) -> Box<dyn BackendChannel> {
        let ch = match self.ctrlr.device.get_channel() {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!("nvme controller '{}': no channel: {e}", self.ctrlr.name);
                None
            }
        };
        Box::new(NsChannel {
            ch,
            nsid: self.nsid,
        })
    }

    fn destruct(&self) {
        let last = {
            let mut ns = self
                .ctrlr
                .namespaces
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            ns.retain(|(id, _)| *id != self.nsid);
            ns.is_empty()
        };
        if last && self.ctrlr.state() == CtrlrState::Detaching {
            finish_detach(&self.ctrlr);
        }
    }

    fn driver_specific(&self) -> Option<(&'static str, Value)> {
        let d = self.ctrlr.driver.data();
        Some((
            "nvme",
            json!([{
                "pci_address": self.ctrlr.params.traddr,
                "trid": {"trtype": "PCIe", "traddr": self.ctrlr.params.traddr},
                "ctrlr_data": {
                    "cntlid": d.cntlid,
                    "vendor_id": format!("{:#06x}", d.vid),
                    "serial_number": d.serial,
                    "model_number": d.model,
                    "firmware_revision": d.firmware,
                    "oacs": {},
                },
                "ns_data": {"id": self.nsid},
            }]),
        ))
    }

    fn config_entry(&self, _bdev: &Bdev) -> Option<Value> {
        None // the controller's attach entry (module level) recreates every namespace bdev
    }
}

/// What the helper thread found: the driver, the namespaces, and what keeps the device open.
pub struct Probed {
    driver: Controller,
    namespaces: Vec<(u32, NsData)>,
    keep: Option<Box<dyn std::any::Any + Send + Sync>>,
}

/// Enables the controller behind `bar`/`dma`, registers the bdev buffer pool for DMA and
/// identifies the namespaces. Blocking: call on a helper thread.
pub fn probe(
    bar: Arc<dyn Bar>,
    dma: Arc<dyn Dma>,
    num_io_queues: Option<u32>,
    keep: Option<Box<dyn std::any::Any + Send + Sync>>,
) -> ferrite_nvme::Result<Probed> {
    let o = crate::opts::current();
    let mut copts = CtrlrOpts::default();
    if let Some(n) = num_io_queues {
        copts.io_queues = n.clamp(1, 65535) as u16;
    }
    if o.io_queue_requests > 0 {
        copts.io_entries = o.io_queue_requests.clamp(2, 4096) as u16;
    }
    if o.timeout_admin_us > 0 {
        copts.admin_timeout_ms = o.timeout_admin_us.div_ceil(1000);
    }
    let driver = Controller::init(bar, dma.clone(), copts)?;
    match ferrite_bdev::buf::regions() {
        Ok(regions) => {
            for r in regions {
                if let Err(e) = dma.register(r.addr as *mut u8, r.len) {
                    tracing::warn!("bdev buffer pool region not mapped for DMA ({e}): its buffers will be bounced");
                }
            }
        }
        Err(e) => tracing::warn!("no bdev buffer pool ({e}): pool buffers will be bounced"),
    }
    let mut namespaces = Vec::new();
    for nsid in driver.active_namespaces()? {
        match driver.namespace(nsid) {
            Ok(Some(ns)) => namespaces.push((nsid, ns)),
            Ok(None) => {
                tracing::info!("nvme namespace {nsid}: inactive or unusable format, skipped")
            }
            Err(e) => tracing::warn!("nvme namespace {nsid}: {e}"),
        }
    }
    Ok(Probed {
        driver,
        namespaces,
        keep,
    })
}

fn bdev_err(kind: ErrorKind, msg: String) -> BdevError {
    BdevError::new(kind, msg)
}

fn nvme_err(e: ferrite_nvme::NvmeError, ctx: &str) -> BdevError {
    let kind = match e.kind() {
        ferrite_nvme::ErrorKind::InvalidArgument => ErrorKind::InvalidArgument,
        ferrite_nvme::ErrorKind::NotFound
        | ferrite_nvme::ErrorKind::NotBound
        | ferrite_nvme::ErrorKind::NoIommuGroup => ErrorKind::NotFound,
        ferrite_nvme::ErrorKind::Busy => ErrorKind::Busy,
        ferrite_nvme::ErrorKind::Memlock | ferrite_nvme::ErrorKind::NoMemory => ErrorKind::NoMemory,
        _ => ErrorKind::Io,
    };
    bdev_err(kind, format!("{ctx}: {e}"))
}

/// Checks a new controller's name and reserves it.
pub fn reserve(name: &str, traddr: &str) -> ferrite_bdev::Result<()> {
    if name.is_empty() {
        return Err(bdev_err(
            ErrorKind::InvalidArgument,
            "controller name must not be empty".into(),
        ));
    }
    let cs = ctrlrs();
    let mut p = PENDING.lock().unwrap_or_else(|p| p.into_inner());
    if cs.iter().any(|c| c.name == name) || p.iter().any(|n| n == name) {
        return Err(bdev_err(
            ErrorKind::Exists,
            format!("nvme controller '{name}' already exists"),
        ));
    }
    if let Some(c) = cs.iter().find(|c| c.params.traddr == traddr) {
        return Err(bdev_err(
            ErrorKind::Exists,
            format!(
                "PCI function {traddr} is already attached as controller '{}'",
                c.name
            ),
        ));
    }
    p.push(name.to_string());
    Ok(())
}

fn unreserve(name: &str) {
    PENDING
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|n| n != name);
}

/// Attaches a PCIe controller bound to vfio-pci; `done` gets the bdev names (on the app
/// thread). Must run on the app thread.
pub fn attach(
    params: AttachParams,
    done: impl FnOnce(ferrite_bdev::Result<Vec<String>>) + Send + 'static,
) {
    if !params.trtype.eq_ignore_ascii_case("pcie") {
        return done(Err(bdev_err(
            ErrorKind::InvalidArgument,
            format!(
                "trtype '{}' is not supported: only PCIe controllers can be attached",
                params.trtype
            ),
        )));
    }
    let traddr = match ferrite_nvme::vfio::parse_bdf(&params.traddr) {
        Ok(t) => t,
        Err(e) => {
            return done(Err(nvme_err(
                e,
                &format!("nvme controller '{}'", params.name),
            )))
        }
    };
    let params = AttachParams { traddr, ..params };
    attach_with(
        params,
        move |p| {
            let pool = ferrite_bdev::buf::regions()
                .map(|r| r.iter().map(|x| x.len).sum())
                .unwrap_or(0);
            let v = ferrite_nvme::vfio::open(&p.traddr, pool + (64 << 20))?;
            let keep: Box<dyn std::any::Any + Send + Sync> = Box::new(v.bar.clone());
            probe(v.bar, v.dma, p.num_io_queues, Some(keep))
        },
        done,
    )
}

/// Attaches a controller found by `open` (run on a helper thread): the VFIO path above, or
/// the in-memory model in tests. Must run on the app thread.
pub fn attach_with(
    params: AttachParams,
    open: impl FnOnce(&AttachParams) -> ferrite_nvme::Result<Probed> + Send + 'static,
    done: impl FnOnce(ferrite_bdev::Result<Vec<String>>) + Send + 'static,
) {
    if let Err(e) = reserve(&params.name, &params.traddr) {
        return done(Err(e));
    }
    let Some(app) = ferrite_reactor::current() else {
        unreserve(&params.name);
        return done(Err(bdev_err(
            ErrorKind::InvalidArgument,
            "attach outside a thread".into(),
        )));
    };
    let app2 = app.clone();
    let spawned = std::thread::Builder::new()
        .name("nvme-attach".into())
        .spawn(move || {
            let res = open(&params);
            let _ = app2.send(move || finish_attach(params, res, done));
        });
    if let Err(e) = spawned {
        tracing::error!("nvme: cannot start the attach thread: {e}");
    }
}

fn finish_attach(
    params: AttachParams,
    res: ferrite_nvme::Result<Probed>,
    done: impl FnOnce(ferrite_bdev::Result<Vec<String>>),
) {
    unreserve(&params.name);
    let p = match res {
        Ok(p) => p,
        Err(e) => {
            return done(Err(nvme_err(
                e,
                &format!("nvme controller '{}' at {}", params.name, params.traddr),
            )))
        }
    };
    let Some(app) = ferrite_reactor::current() else {
        return;
    };
    let name = params.name.clone();
    let ctrlr = Arc::new_cyclic(|weak: &Weak<NvmeCtrlr>| {
        let w = weak.clone();
        NvmeCtrlr {
            name: name.clone(),
            params,
            driver: p.driver,
            device: IoDevice::new(&format!("nvme_{name}"), move || {
                // The device lives inside the controller: while a channel is created the
                // controller is alive.
                CtrlrChannel::new(w.upgrade().unwrap_or_else(unreachable_ctrlr))
            }),
            state: AtomicU8::new(CtrlrState::Enabled as u8),
            resets: Default::default(),
            app: app.clone(),
            namespaces: Mutex::new(Vec::new()),
            errors: Mutex::new(BTreeMap::new()),
            admin_poller: Mutex::new(None),
            detach_done: Mutex::new(Vec::new()),
            _keep: p.keep,
        }
    });
    ctrlrs().push(ctrlr.clone());
    let mut names = Vec::new();
    for (nsid, ns) in &p.namespaces {
        let bname = format!("{name}n{nsid}");
        let mut props = BdevProps::new(&bname, "NVMe disk", ns.block_size, ns.nsze);
        props.write_cache = ctrlr.driver.data().vwc;
        let max_blocks = (ctrlr.driver.max_transfer() / ns.block_size as usize).max(1) as u32;
        props.optimal_io_boundary = max_blocks;
        props.split_on_optimal_io_boundary = true;
        // The namespace's UUID, else its NGUID, else a random one.
        if ns.uuid != [0; 16] {
            props.uuid = Some(Uuid(ns.uuid));
        } else if ns.nguid != [0; 16] {
            props.uuid = Some(Uuid(ns.nguid));
        }
        let backend = Arc::new(NsBackend {
            ctrlr: ctrlr.clone(),
            nsid: *nsid,
        });
        ctrlr
            .namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((*nsid, bname.clone()));
        match ferrite_bdev::register(props, backend) {
            Ok(_) => names.push(bname),
            Err(e) => {
                ctrlr
                    .namespaces
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|(id, _)| id != nsid);
                tracing::error!("nvme controller '{name}': namespace {nsid} not registered: {e}");
            }
        }
    }
    let period = crate::opts::current().nvme_adminq_poll_period_us.max(1000);
    let c = Arc::downgrade(&ctrlr);
    let poller = ferrite_reactor::register_poller("nvme_admin", period, move || {
        let Some(c) = c.upgrade() else { return 0 };
        if c.state() == CtrlrState::Enabled && c.driver.poll_admin() {
            if c.driver.is_gone() {
                // Hot-remove: the function no longer answers; its bdevs go away.
                tracing::error!("nvme controller '{}': device removed", c.name);
                c.set_state(CtrlrState::Failed);
                c.driver.set_failed();
                let name = c.name.clone();
                detach(&name, |r| {
                    if let Err(e) = r {
                        tracing::warn!("nvme hot-remove: {e}");
                    }
                });
            } else {
                c.request_reset("controller fatal status");
            }
        }
        0
    });
    *ctrlr.admin_poller.lock().unwrap_or_else(|p| p.into_inner()) = poller.ok();
    tracing::info!(
        "nvme controller '{name}' at {}: {} ({}), bdevs {names:?}",
        ctrlr.params.traddr,
        ctrlr.driver.data().model,
        ctrlr.driver.data().serial
    );
    if names.is_empty() && p.namespaces.is_empty() {
        tracing::warn!("nvme controller '{name}' has no active namespace");
    }
    done(Ok(names));
}

fn unreachable_ctrlr() -> Arc<NvmeCtrlr> {
    // A channel is only created through a namespace bdev, which holds the controller.
    panic!("nvme: channel created for a controller that is gone")
}

/// Detaches controller `name`: its bdevs are unregistered, then the controller is shut down.
/// `done` runs on the app thread. Must run on the app thread.
pub fn detach(name: &str, done: impl FnOnce(ferrite_bdev::Result<()>) + Send + 'static) {
    let Some(c) = lookup(name) else {
        return done(Err(bdev_err(
            ErrorKind::NotFound,
            format!("nvme controller '{name}' not found"),
        )));
    };
    if c.state() == CtrlrState::Detaching {
        return done(Err(bdev_err(
            ErrorKind::Busy,
            format!("nvme controller '{name}' is already being detached"),
        )));
    }
    c.set_state(CtrlrState::Detaching);
    let app = c.app.clone();
    c.detach_done
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Box::new(move || {
            let _ = app.send(move || done(Ok(())));
        }));
    let bdevs: Vec<String> = c
        .namespaces
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(_, b)| b.clone())
        .collect();
    if bdevs.is_empty() {
        finish_detach(&c);
    }
    for b in bdevs {
        ferrite_bdev::unregister(&b, Some("nvme"), |r| {
            if let Err(e) = r {
                tracing::warn!("nvme detach: {e}");
            }
        });
    }
}

fn finish_detach(c: &Arc<NvmeCtrlr>) {
    ctrlrs().retain(|x| !Arc::ptr_eq(x, c));
    c.admin_poller
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    c.device.unregister();
    let dones: Vec<_> =
        std::mem::take(&mut *c.detach_done.lock().unwrap_or_else(|p| p.into_inner()));
    // Queue pairs still held by closing channels are dropped without admin commands.
    c.driver.set_failed();
    let c2 = c.clone();
    // Shutdown waits for the controller: on a helper thread.
    let _ = std::thread::Builder::new()
        .name("nvme-detach".into())
        .spawn(move || {
            c2.driver.shutdown();
            c2.driver.set_failed();
            tracing::info!("nvme controller '{}' detached", c2.name);
            for d in dones {
                d();
            }
        });
}

/// Resets controller `c`: new I/O waits, the controller is disabled, commands in flight are
/// failed back to the bdev layer (which resubmits them), the controller is enabled and every
/// thread's queue pair re-created. `done` runs on the app thread. Must run on the app thread.
pub fn reset(c: &Arc<NvmeCtrlr>, done: impl FnOnce(ferrite_bdev::Result<()>) + Send + 'static) {
    if c.state
        .compare_exchange(
            CtrlrState::Enabled as u8,
            CtrlrState::Resetting as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        return done(Err(bdev_err(
            ErrorKind::Busy,
            format!(
                "nvme controller '{}' is {}, not enabled",
                c.name,
                c.state().name()
            ),
        )));
    }
    let c1 = c.clone();
    let fail = move |e: String| {
        c1.set_state(CtrlrState::Failed);
        c1.driver.set_failed();
        Err(bdev_err(
            ErrorKind::Io,
            format!("nvme controller '{}': reset failed: {e}", c1.name),
        ))
    };
    let c = c.clone();
    run_blocking(
        &c.app.clone(),
        {
            let c = c.clone();
            move || c.driver.disable().map_err(|e| e.to_string())
        },
        move |r| {
            if let Err(e) = r {
                return done(fail(e));
            }
            let c2 = c.clone();
            let walk = c.device.for_each_channel(crate::io::fail_all, move || {
                let c3 = c2.clone();
                run_blocking(
                    &c2.app.clone(),
                    move || c3.driver.enable().map_err(|e| e.to_string()),
                    move |r| {
                        if let Err(e) = r {
                            return done(fail(e));
                        }
                        let c4 = c2.clone();
                        let walk = c2.device.for_each_channel(
                            |ch| {
                                if let Err(e) = crate::io::recreate(ch) {
                                    tracing::error!(
                                        "nvme: queue pair not re-created after reset: {e}"
                                    );
                                }
                            },
                            move || {
                                c4.resets.fetch_add(1, Ordering::Relaxed);
                                c4.set_state(CtrlrState::Enabled);
                                tracing::info!("nvme controller '{}' reset", c4.name);
                                done(Ok(()));
                            },
                        );
                        if let Err(e) = walk {
                            tracing::error!("nvme reset: {e}");
                        }
                    },
                );
            });
            if let Err(e) = walk {
                tracing::error!("nvme reset: {e}");
            }
        },
    );
}

/// Runs `f` on a helper OS thread, then `then(result)` on `back`.
fn run_blocking<T: Send + 'static>(
    back: &ThreadHandle,
    f: impl FnOnce() -> T + Send + 'static,
    then: impl FnOnce(T) + Send + 'static,
) {
    let back = back.clone();
    let r = std::thread::Builder::new()
        .name("nvme-ctrl".into())
        .spawn(move || {
            let v = f();
            let _ = back.send(move || then(v));
        });
    if let Err(e) = r {
        tracing::error!("nvme: cannot start a helper thread: {e}");
    }
}

/// Module-level `save_config` entries: options (when changed from the defaults, as the raid
/// module does), then one attach per controller.
pub fn config_json() -> Vec<Value> {
    let mut v = Vec::new();
    if crate::opts::current() != crate::opts::NvmeOpts::default() {
        v.push(crate::opts::config_entry());
    }
    v.extend(
        all()
            .iter()
            .filter(|c| c.state() != CtrlrState::Detaching)
            .map(|c| c.config_entry()),
    );
    v
}

/// Every thread's queue pair counters of controller `c` (bounces, doorbells, timeouts...),
/// collected thread by thread; `done` runs on the calling thread. Must run on a lightweight
/// thread.
pub fn queue_stats(
    c: &Arc<NvmeCtrlr>,
    done: impl FnOnce(Vec<ferrite_nvme::QpStats>) + Send + 'static,
) -> ferrite_reactor::Result<()> {
    let acc: Arc<Mutex<Vec<ferrite_nvme::QpStats>>> = Arc::default();
    let a = acc.clone();
    c.device.for_each_channel(
        move |ch| {
            if let Some(s) = crate::io::qp_stats(ch) {
                a.lock().unwrap_or_else(|p| p.into_inner()).push(s);
            }
        },
        move || {
            done(std::mem::take(
                &mut *acc.lock().unwrap_or_else(|p| p.into_inner()),
            ))
        },
    )
}
