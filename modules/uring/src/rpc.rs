//! JSON-RPC methods of the uring module: `bdev_uring_create`, `bdev_uring_delete`,
//! `bdev_uring_rescan`, with SPDK v25.09's parameters.

use ferrite_aio::file_reply;
use ferrite_bdev::rpc::{register_on_app, reply, NameParams};
use ferrite_reactor::ThreadHandle;
use ferrite_rpc::{Registry, RUNTIME};
use serde::Deserialize;

use crate::control::{create, delete, rescan, UringOpts};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateReq {
    name: String,
    filename: String,
    block_size: Option<u32>,
    uuid: Option<String>,
}

/// Registers the uring module's methods; handlers run on `app`.
pub fn register_rpcs(reg: &Registry, app: &ThreadHandle) {
    register_on_app(
        reg,
        app,
        "bdev_uring_create",
        RUNTIME,
        true,
        |q: CreateReq, r| {
            let opts = UringOpts {
                name: q.name,
                filename: q.filename,
                block_size: q.block_size.unwrap_or(0),
                uuid: q.uuid,
            };
            file_reply(r, create(&opts));
        },
    );
    register_on_app(
        reg,
        app,
        "bdev_uring_delete",
        RUNTIME,
        true,
        |q: NameParams, r| delete(&q.name, move |res| reply(r, res.map(|()| true))),
    );
    // Rescan changes no configuration (the size is not part of it).
    register_on_app(
        reg,
        app,
        "bdev_uring_rescan",
        RUNTIME,
        false,
        |q: NameParams, r| file_reply(r, rescan(&q.name).map(|_| true)),
    );
}
