//! JSON-RPC methods of the malloc module: `bdev_malloc_create`, `bdev_malloc_delete`.

use ferrite_bdev::rpc::{register_on_app, reply, NameParams};
use ferrite_reactor::ThreadHandle;
use ferrite_rpc::{Registry, RpcError, RUNTIME};
use serde::Deserialize;

use crate::control::{create, delete, MallocOpts};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateReq {
    num_blocks: u64,
    block_size: u32,
    name: Option<String>,
    uuid: Option<String>,
    physical_block_size: Option<u32>,
    optimal_io_boundary: Option<u32>,
    md_size: Option<u32>,
    md_interleave: Option<bool>,
    dif_type: Option<i32>,
    dif_is_head_of_md: Option<bool>,
    dif_pi_format: Option<u32>,
}

/// Registers the malloc module's methods; handlers run on `app`.
pub fn register_rpcs(reg: &Registry, app: &ThreadHandle) {
    register_on_app(
        reg,
        app,
        "bdev_malloc_create",
        RUNTIME,
        true,
        |q: CreateReq, r| {
            if q.md_interleave.unwrap_or(false)
                || q.dif_type.unwrap_or(0) != 0
                || q.dif_is_head_of_md.unwrap_or(false)
                || q.dif_pi_format.unwrap_or(0) != 0
            {
                return r.err(RpcError::invalid_params(
                "parameters 'md_interleave', 'dif_type', 'dif_is_head_of_md', 'dif_pi_format': interleaved metadata and protection information are not supported",
            ));
            }
            let _ = q.physical_block_size; // accepted for compatibility
            let opts = MallocOpts {
                name: q.name,
                num_blocks: q.num_blocks,
                block_size: q.block_size,
                uuid: q.uuid,
                optimal_io_boundary: q.optimal_io_boundary.unwrap_or(0),
                md_size: q.md_size.unwrap_or(0),
            };
            reply(r, create(&opts));
        },
    );
    register_on_app(
        reg,
        app,
        "bdev_malloc_delete",
        RUNTIME,
        true,
        |q: NameParams, r| delete(&q.name, move |res| reply(r, res.map(|()| true))),
    );
}
