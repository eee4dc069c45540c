//! JSON-RPC methods of the error module: `bdev_error_create`, `bdev_error_delete`,
//! `bdev_error_inject_error` (SPDK v25.09's parameters and results).

use ferrite_bdev::rpc::{register_on_app, reply, NameParams};
use ferrite_reactor::ThreadHandle;
use ferrite_rpc::{Registry, RUNTIME};
use serde::Deserialize;

use crate::control::{create, delete, inject_error, ErrorOpts};
use crate::inject::{ErrorType, InjectIoType, InjectOpts};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateReq {
    base_name: String,
    uuid: Option<String>,
}

fn default_num() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InjectReq {
    name: String,
    io_type: InjectIoType,
    error_type: ErrorType,
    #[serde(default = "default_num")]
    num: u32,
    #[serde(default)]
    queue_depth: u64,
    #[serde(default)]
    corrupt_offset: u64,
    #[serde(default)]
    corrupt_value: u8,
}

/// Registers the error module's methods; handlers run on `app`.
pub fn register_rpcs(reg: &Registry, app: &ThreadHandle) {
    // SPDK answers `true` (not the new bdev's name, which is always `EE_<base_name>`).
    register_on_app(
        reg,
        app,
        "bdev_error_create",
        RUNTIME,
        true,
        |q: CreateReq, r| {
            let opts = ErrorOpts {
                base_name: q.base_name,
                uuid: q.uuid,
            };
            reply(r, create(&opts).map(|_| true));
        },
    );
    register_on_app(
        reg,
        app,
        "bdev_error_delete",
        RUNTIME,
        true,
        |q: NameParams, r| delete(&q.name, move |res| reply(r, res.map(|()| true))),
    );
    // Injections are runtime state, not configuration: not a state-changing method for
    // `--persist` (save_config does not include them, as SPDK's).
    register_on_app(
        reg,
        app,
        "bdev_error_inject_error",
        RUNTIME,
        false,
        |q: InjectReq, r| {
            let opts = InjectOpts {
                io_type: q.io_type,
                error_type: q.error_type,
                num: q.num,
                queue_depth: q.queue_depth,
                corrupt_offset: q.corrupt_offset,
                corrupt_value: q.corrupt_value,
            };
            reply(r, inject_error(&q.name, &opts).map(|()| true));
        },
    );
}
