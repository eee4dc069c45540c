//! JSON-RPC methods of the vhost target, as SPDK v25.09: `vhost_create_blk_controller`,
//! `vhost_get_controllers`, `vhost_delete_controller`, `vhost_controller_set_coalescing`.

use ferrite_bdev::rpc::register_on_app;
use ferrite_reactor::ThreadHandle;
use ferrite_rpc::{Registry, Responder, RUNTIME};
use serde::Deserialize;

use crate::controller::{self, CreateOpts};
use crate::error::Result;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateReq {
    ctrlr: String,
    dev_name: String,
    cpumask: Option<String>,
    transport: Option<String>,
    #[serde(default)]
    readonly: bool,
    #[serde(default)]
    packed_ring: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetReq {
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CtrlrReq {
    ctrlr: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CoalescingReq {
    ctrlr: String,
    delay_base_us: u32,
    iops_threshold: u32,
}

fn answer<T: serde::Serialize>(r: Responder, res: Result<T>) {
    match res {
        Ok(v) => r.ok(v),
        Err(e) => r.err(e.to_rpc()),
    }
}

/// Registers the vhost methods; handlers run on `app`.
pub fn register_rpcs(reg: &Registry, app: &ThreadHandle) {
    register_on_app(
        reg,
        app,
        "vhost_create_blk_controller",
        RUNTIME,
        true,
        |q: CreateReq, r| {
            if let Some(t) = &q.transport {
                if t != "vhost_user_blk" {
                    return r.err(ferrite_rpc::RpcError::from_errno(
                        libc::EINVAL,
                        format!(
                            "vhost controller '{}': unknown transport '{t}' (only vhost_user_blk)",
                            q.ctrlr
                        ),
                    ));
                }
            }
            let opts = CreateOpts {
                ctrlr: q.ctrlr,
                dev_name: q.dev_name,
                cpumask: q.cpumask,
                readonly: q.readonly,
                packed_ring: q.packed_ring,
            };
            answer(r, controller::create(&opts).map(|()| true));
        },
    );
    register_on_app(
        reg,
        app,
        "vhost_get_controllers",
        RUNTIME,
        false,
        |q: Option<GetReq>, r| {
            let name = q.and_then(|q| q.name);
            answer(r, controller::list(name.as_deref()));
        },
    );
    register_on_app(
        reg,
        app,
        "vhost_delete_controller",
        RUNTIME,
        true,
        |q: CtrlrReq, r| {
            controller::delete(&q.ctrlr, move |res| answer(r, res.map(|()| true)));
        },
    );
    register_on_app(
        reg,
        app,
        "vhost_controller_set_coalescing",
        RUNTIME,
        true,
        |q: CoalescingReq, r| {
            answer(
                r,
                controller::set_coalescing(&q.ctrlr, q.delay_base_us, q.iops_threshold)
                    .map(|()| true),
            );
        },
    );
}
