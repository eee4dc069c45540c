//! JSON-RPC methods of the null module: `bdev_null_create`, `bdev_null_delete`,
//! `bdev_null_resize`, with SPDK v25.09's parameters.

use ferrite_bdev::rpc::{register_on_app, reply, NameParams};
use ferrite_reactor::ThreadHandle;
use ferrite_rpc::{Registry, RpcError, RUNTIME};
use serde::Deserialize;

use crate::control::{create, delete, resize, NullOpts};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateReq {
    name: String,
    num_blocks: u64,
    block_size: u32,
    uuid: Option<String>,
    physical_block_size: Option<u32>,
    md_size: Option<u32>,
    dif_type: Option<i32>,
    dif_is_head_of_md: Option<bool>,
    dif_pi_format: Option<u32>,
    preferred_write_alignment: Option<u32>,
    preferred_write_granularity: Option<u32>,
    optimal_write_size: Option<u32>,
    preferred_unmap_alignment: Option<u32>,
    preferred_unmap_granularity: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResizeReq {
    name: String,
    new_size: u64,
}

/// Registers the null module's methods; handlers run on `app`.
pub fn register_rpcs(reg: &Registry, app: &ThreadHandle) {
    register_on_app(
        reg,
        app,
        "bdev_null_create",
        RUNTIME,
        true,
        |q: CreateReq, r| {
            if q.dif_type.unwrap_or(0) != 0
                || q.dif_is_head_of_md.unwrap_or(false)
                || q.dif_pi_format.unwrap_or(0) != 0
            {
                return r.err(RpcError::invalid_params(format!(
                "bdev '{}': parameters 'dif_type', 'dif_is_head_of_md', 'dif_pi_format': protection information is not supported",
                q.name
            )));
            }
            // Accepted for compatibility; a null bdev has no use for these hints.
            let _ = (
                q.physical_block_size,
                q.preferred_write_alignment,
                q.preferred_write_granularity,
            );
            let _ = (
                q.optimal_write_size,
                q.preferred_unmap_alignment,
                q.preferred_unmap_granularity,
            );
            let opts = NullOpts {
                name: q.name,
                num_blocks: q.num_blocks,
                block_size: q.block_size,
                uuid: q.uuid,
                md_size: q.md_size.unwrap_or(0),
            };
            reply(r, create(&opts));
        },
    );
    register_on_app(
        reg,
        app,
        "bdev_null_delete",
        RUNTIME,
        true,
        |q: NameParams, r| delete(&q.name, move |res| reply(r, res.map(|()| true))),
    );
    register_on_app(
        reg,
        app,
        "bdev_null_resize",
        RUNTIME,
        true,
        |q: ResizeReq, r| reply(r, resize(&q.name, q.new_size).map(|()| true)),
    );
}
