//! JSON-RPC methods of the aio module: `bdev_aio_create`, `bdev_aio_delete`,
//! `bdev_aio_rescan`, with SPDK v25.09's parameters.

use ferrite_bdev::rpc::{register_on_app, reply, NameParams};
use ferrite_reactor::ThreadHandle;
use ferrite_rpc::{Registry, Responder, RpcError, RUNTIME};
use serde::Deserialize;

use crate::control::{create, delete, rescan, AioOpts};
use crate::file::FileError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateReq {
    name: String,
    filename: String,
    block_size: Option<u32>,
    readonly: Option<bool>,
    fallocate: Option<bool>,
    uuid: Option<String>,
}

/// A create/rescan error as SPDK answers it: `-errno` and the message.
pub fn file_err(e: FileError) -> RpcError {
    RpcError::from_errno(e.errno(), e.message())
}

/// Answers with the value, or with the file error in SPDK's form.
pub fn file_reply<T: serde::Serialize>(r: Responder, res: Result<T, FileError>) {
    match res {
        Ok(v) => r.ok(v),
        Err(e) => r.err(file_err(e)),
    }
}

/// Registers the aio module's methods; handlers run on `app`.
pub fn register_rpcs(reg: &Registry, app: &ThreadHandle) {
    register_on_app(
        reg,
        app,
        "bdev_aio_create",
        RUNTIME,
        true,
        |q: CreateReq, r| {
            let opts = AioOpts {
                name: q.name,
                filename: q.filename,
                block_size: q.block_size.unwrap_or(0),
                readonly: q.readonly.unwrap_or(false),
                fallocate: q.fallocate.unwrap_or(false),
                uuid: q.uuid,
            };
            file_reply(r, create(&opts));
        },
    );
    register_on_app(
        reg,
        app,
        "bdev_aio_delete",
        RUNTIME,
        true,
        |q: NameParams, r| delete(&q.name, move |res| reply(r, res.map(|()| true))),
    );
    // Rescan changes no configuration (the size is not part of it).
    register_on_app(
        reg,
        app,
        "bdev_aio_rescan",
        RUNTIME,
        false,
        |q: NameParams, r| file_reply(r, rescan(&q.name).map(|_| true)),
    );
}
