//! JSON-RPC methods of the passthru module: `bdev_passthru_create`, `bdev_passthru_delete`.

use ferrite_bdev::rpc::{on_thread, rpc_err};
use ferrite_reactor::ThreadHandle;
use ferrite_rpc::{decode, Registry, RUNTIME};
use serde::Deserialize;

use crate::control::{create, delete, PassthruOpts};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateReq {
    base_bdev_name: String,
    name: String,
    uuid: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameReq {
    name: String,
}

/// Registers the passthru module's methods; handlers run on `app`.
pub fn register_rpcs(reg: &Registry, app: &ThreadHandle) {
    let a = app.clone();
    reg.register_fn("bdev_passthru_create", RUNTIME, true, move |p, r| {
        let q: CreateReq = match decode(p) {
            Ok(q) => q,
            Err(e) => return r.err(e),
        };
        let opts = PassthruOpts {
            base_bdev_name: q.base_bdev_name,
            name: q.name,
            uuid: q.uuid,
        };
        on_thread(&a, r, move |r| match create(&opts) {
            Ok(name) => r.ok(name),
            Err(e) => r.err(rpc_err(e)),
        });
    });
    let a = app.clone();
    reg.register_fn("bdev_passthru_delete", RUNTIME, true, move |p, r| {
        let q: NameReq = match decode(p) {
            Ok(q) => q,
            Err(e) => return r.err(e),
        };
        on_thread(&a, r, move |r| {
            delete(&q.name, move |res| match res {
                Ok(()) => r.ok(true),
                Err(e) => r.err(rpc_err(e)),
            })
        });
    });
}
