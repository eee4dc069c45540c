//! JSON-RPC methods of the delay module: `bdev_delay_create`, `bdev_delay_delete`,
//! `bdev_delay_update_latency` (SPDK v25.09's parameters, results and error codes).

use ferrite_bdev::rpc::{register_on_app, reply, NameParams};
use ferrite_reactor::ThreadHandle;
use ferrite_rpc::{Registry, RpcError, RUNTIME};
use serde::Deserialize;

use crate::control::{create, delete, update_latency, DelayOpts, LatencyType};

/// Every latency is required, as in SPDK's decoder.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateReq {
    base_bdev_name: String,
    name: String,
    uuid: Option<String>,
    avg_read_latency: u64,
    p99_read_latency: u64,
    avg_write_latency: u64,
    p99_write_latency: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateReq {
    delay_bdev_name: String,
    latency_type: LatencyType,
    latency_us: u64,
}

/// Registers the delay module's methods; handlers run on `app`.
pub fn register_rpcs(reg: &Registry, app: &ThreadHandle) {
    register_on_app(
        reg,
        app,
        "bdev_delay_create",
        RUNTIME,
        true,
        |q: CreateReq, r| {
            let opts = DelayOpts {
                base_bdev_name: q.base_bdev_name,
                name: q.name,
                uuid: q.uuid,
                avg_read_latency: q.avg_read_latency,
                p99_read_latency: q.p99_read_latency,
                avg_write_latency: q.avg_write_latency,
                p99_write_latency: q.p99_write_latency,
            };
            reply(r, create(&opts));
        },
    );
    register_on_app(
        reg,
        app,
        "bdev_delay_delete",
        RUNTIME,
        true,
        |q: NameParams, r| delete(&q.name, move |res| reply(r, res.map(|()| true))),
    );
    // SPDK answers an unknown bdev here with -32602 (invalid params), naming it.
    register_on_app(
        reg,
        app,
        "bdev_delay_update_latency",
        RUNTIME,
        true,
        |q: UpdateReq, r| match update_latency(&q.delay_bdev_name, q.latency_type, q.latency_us) {
            Ok(()) => r.ok(true),
            Err(e) => r.err(RpcError::invalid_params(e.to_string())),
        },
    );
}
