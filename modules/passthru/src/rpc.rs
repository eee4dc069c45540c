//! JSON-RPC methods of the passthru module: `bdev_passthru_create`, `bdev_passthru_delete`.

use ferrite_bdev::rpc::{register_on_app, reply, NameParams};
use ferrite_reactor::ThreadHandle;
use ferrite_rpc::{Registry, RUNTIME};
use serde::Deserialize;

use crate::control::{create, delete, PassthruOpts};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateReq {
    base_bdev_name: String,
    name: String,
    uuid: Option<String>,
}

/// Registers the passthru module's methods; handlers run on `app`.
pub fn register_rpcs(reg: &Registry, app: &ThreadHandle) {
    register_on_app(
        reg,
        app,
        "bdev_passthru_create",
        RUNTIME,
        true,
        |q: CreateReq, r| {
            let opts = PassthruOpts {
                base_bdev_name: q.base_bdev_name,
                name: q.name,
                uuid: q.uuid,
            };
            reply(r, create(&opts));
        },
    );
    register_on_app(
        reg,
        app,
        "bdev_passthru_delete",
        RUNTIME,
        true,
        |q: NameParams, r| delete(&q.name, move |res| reply(r, res.map(|()| true))),
    );
}
