//! JSON-RPC methods of the NVMe module with SPDK v25.09's parameters:
//! `bdev_nvme_attach_controller`, `bdev_nvme_detach_controller`, `bdev_nvme_get_controllers`,
//! `bdev_nvme_reset_controller`, `bdev_nvme_set_options`.

use ferrite_bdev::rpc::{register_on_app, reply};
use ferrite_bdev::{BdevError, ErrorKind};
use ferrite_reactor::ThreadHandle;
use ferrite_rpc::{Registry, RpcError, RUNTIME, STARTUP};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::control::{self, AttachParams};

/// `bdev_nvme_attach_controller`: the PCIe fields are used; the fabrics fields SPDK accepts
/// are accepted (and must be absent or default for PCIe).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttachReq {
    name: String,
    trtype: String,
    traddr: String,
    adrfam: Option<String>,
    trsvcid: Option<String>,
    subnqn: Option<String>,
    hostnqn: Option<String>,
    hostaddr: Option<String>,
    hostsvcid: Option<String>,
    priority: Option<String>,
    prchk_reftag: Option<bool>,
    prchk_guard: Option<bool>,
    hdgst: Option<bool>,
    ddgst: Option<bool>,
    fabrics_connect_timeout_us: Option<u64>,
    multipath: Option<String>,
    num_io_queues: Option<u32>,
    ctrlr_loss_timeout_sec: Option<i32>,
    reconnect_delay_sec: Option<u32>,
    fast_io_fail_timeout_sec: Option<u32>,
    psk: Option<String>,
    max_bdevs: Option<u32>,
    dhchap_key: Option<String>,
    dhchap_ctrlr_key: Option<String>,
    allow_unrecognized_csi: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DetachReq {
    name: String,
    trtype: Option<String>,
    traddr: Option<String>,
    adrfam: Option<String>,
    trsvcid: Option<String>,
    subnqn: Option<String>,
    hostaddr: Option<String>,
    hostsvcid: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OptName {
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetReq {
    name: String,
    cntlid: Option<u16>,
}

fn not_found(name: &str) -> BdevError {
    BdevError::new(
        ErrorKind::NotFound,
        format!("nvme controller '{name}' not found"),
    )
}

/// Registers the module's methods; handlers run on `app`.
pub fn register_rpcs(reg: &Registry, app: &ThreadHandle) {
    register_on_app(
        reg,
        app,
        "bdev_nvme_attach_controller",
        RUNTIME,
        true,
        |q: AttachReq, r| {
            let fabrics = [
                &q.adrfam,
                &q.trsvcid,
                &q.subnqn,
                &q.hostaddr,
                &q.hostsvcid,
                &q.psk,
            ]
            .iter()
            .any(|f| f.is_some());
            if fabrics && q.trtype.eq_ignore_ascii_case("pcie") {
                return r.err(RpcError::from_errno(
                    libc::EINVAL,
                    format!(
                        "nvme controller '{}': adrfam/trsvcid/subnqn/hostaddr/hostsvcid/psk do not apply to PCIe",
                        q.name
                    ),
                ));
            }
            let _ = (
                &q.hostnqn,
                &q.priority,
                &q.prchk_reftag,
                &q.prchk_guard,
                &q.hdgst,
                &q.ddgst,
                &q.fabrics_connect_timeout_us,
                &q.multipath,
                &q.ctrlr_loss_timeout_sec,
                &q.reconnect_delay_sec,
                &q.fast_io_fail_timeout_sec,
                &q.max_bdevs,
                &q.dhchap_key,
                &q.dhchap_ctrlr_key,
                &q.allow_unrecognized_csi,
            );
            let p = AttachParams {
                name: q.name,
                trtype: q.trtype,
                traddr: q.traddr,
                num_io_queues: q.num_io_queues,
            };
            control::attach(p, move |res| reply(r, res));
        },
    );
    register_on_app(
        reg,
        app,
        "bdev_nvme_detach_controller",
        RUNTIME,
        true,
        |q: DetachReq, r| {
            let _ = (
                &q.trtype,
                &q.adrfam,
                &q.trsvcid,
                &q.subnqn,
                &q.hostaddr,
                &q.hostsvcid,
            );
            if let (Some(a), Some(c)) = (&q.traddr, control::lookup(&q.name)) {
                let same = ferrite_nvme::vfio::parse_bdf(a).map(|a| a == c.params.traddr);
                if same.ok() != Some(true) {
                    return r.err(RpcError::from_errno(
                        libc::ENODEV,
                        format!("nvme controller '{}' has no path {a}", q.name),
                    ));
                }
            }
            control::detach(&q.name, move |res| reply(r, res.map(|()| true)));
        },
    );
    register_on_app(
        reg,
        app,
        "bdev_nvme_get_controllers",
        STARTUP | RUNTIME,
        false,
        |q: OptName, r| {
            let name = q.name;
            let list: Vec<Value> = control::all()
                .iter()
                .filter(|c| name.as_deref().is_none_or(|n| n == c.name))
                .map(|c| c.info())
                .collect();
            match name {
                Some(n) if list.is_empty() => reply::<Value>(r, Err(not_found(&n))),
                _ => r.ok(list),
            }
        },
    );
    register_on_app(
        reg,
        app,
        "bdev_nvme_reset_controller",
        RUNTIME,
        false,
        |q: ResetReq, r| {
            let Some(c) = control::lookup(&q.name) else {
                return reply::<bool>(r, Err(not_found(&q.name)));
            };
            if let Some(id) = q.cntlid {
                if id != c.driver().data().cntlid {
                    return r.err(RpcError::from_errno(
                        libc::ENODEV,
                        format!("nvme controller '{}' has no cntlid {id}", q.name),
                    ));
                }
            }
            control::reset(&c, move |res| reply(r, res.map(|()| true)));
        },
    );
    register_on_app(
        reg,
        app,
        "bdev_nvme_set_options",
        STARTUP | RUNTIME,
        true,
        |q: Map<String, Value>, r| {
            if !control::all().is_empty() {
                return r.err(RpcError::from_errno(
                    libc::EPERM,
                    "bdev_nvme_set_options must be called before any controller is attached",
                ));
            }
            match crate::opts::update(q) {
                Ok(_) => r.ok(true),
                Err(e) => r.err(RpcError::invalid_params(e)),
            }
        },
    );
}
