//! JSON-RPC methods of the virtio-user bdev: `bdev_virtio_attach_controller` and
//! `bdev_virtio_detach_controller` with SPDK v25.09's parameters (trtype `user`, dev_type
//! `blk` only; plus `timeout_us`, a Ferrite addition: see `timeout.rs`), and
//! `bdev_virtio_blk_get_controllers` (a Ferrite addition: SPDK lists only
//! virtio-scsi devices by RPC).

use ferrite_bdev::rpc::{register_on_app, reply, NameParams};
use ferrite_reactor::ThreadHandle;
use ferrite_rpc::{Registry, RpcError, RUNTIME};
use serde::Deserialize;

use crate::control::{attach, detach, list, AttachOpts, DEFAULT_VQ_COUNT, DEFAULT_VQ_SIZE};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttachReq {
    name: String,
    trtype: String,
    traddr: String,
    dev_type: String,
    vq_count: Option<u32>,
    vq_size: Option<u32>,
    /// A Ferrite addition (SPDK's bdev_virtio has no request timeout): microseconds, 0 = none.
    timeout_us: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ListReq {
    name: Option<String>,
}

fn check(q: &AttachReq) -> Result<AttachOpts, String> {
    if !q.dev_type.eq_ignore_ascii_case("blk") {
        return Err(format!(
            "controller '{}': dev_type '{}' is not supported (only 'blk')",
            q.name, q.dev_type
        ));
    }
    if !q.trtype.eq_ignore_ascii_case("user") {
        return Err(format!(
            "controller '{}': trtype '{}' is not supported (only 'user')",
            q.name, q.trtype
        ));
    }
    let count = match q.vq_count.unwrap_or(0) {
        0 => DEFAULT_VQ_COUNT,
        n => u16::try_from(n)
            .map_err(|_| format!("controller '{}': vq_count {n} is too large", q.name))?,
    };
    let size = match q.vq_size.unwrap_or(0) {
        0 => DEFAULT_VQ_SIZE,
        n => u16::try_from(n)
            .map_err(|_| format!("controller '{}': vq_size {n} is too large", q.name))?,
    };
    Ok(AttachOpts {
        name: q.name.clone(),
        traddr: q.traddr.clone(),
        vq_count: count,
        vq_size: size,
        timeout_us: q.timeout_us.unwrap_or(0),
    })
}

/// Registers the module's methods; handlers run on `app`.
pub fn register_rpcs(reg: &Registry, app: &ThreadHandle) {
    let a = app.clone();
    register_on_app(
        reg,
        app,
        "bdev_virtio_attach_controller",
        RUNTIME,
        true,
        move |q: AttachReq, r| match check(&q) {
            Ok(opts) => attach(opts, a.clone(), move |res| reply(r, res)),
            Err(m) => r.err(RpcError::invalid_params(m)),
        },
    );
    register_on_app(
        reg,
        app,
        "bdev_virtio_detach_controller",
        RUNTIME,
        true,
        |q: NameParams, r| detach(&q.name, move |res| reply(r, res.map(|()| true))),
    );
    register_on_app(
        reg,
        app,
        "bdev_virtio_blk_get_controllers",
        RUNTIME,
        false,
        |q: Option<ListReq>, r| {
            let q = q.unwrap_or_default();
            reply(r, list(q.name.as_deref()))
        },
    );
}
