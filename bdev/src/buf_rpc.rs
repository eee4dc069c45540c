//! SPDK's `iobuf_set_options` and `iobuf_get_stats` on Ferrite's data buffer pool
//! ([`crate::buf`]), and the `iobuf` subsystem's `save_config` entry.
//!
//! The parameters map one to one onto [`crate::buf::BufPoolConfig`]: `small_pool_count` and
//! `large_pool_count` are the buffers of each class, `small_bufsize` and `large_bufsize` their
//! sizes (rounded up to 4 KiB when the pool is built). As in SPDK the method is allowed in the
//! startup state only: the pool is built when the framework starts (`framework_start_init`),
//! with the sizes set by then. A start whose build fails leaves the target in the startup
//! state, so the sizes can be lowered and the start retried. `enable_numa` (per-NUMA pools) is
//! not implemented: `false` is accepted, `true` refused.
//!
//! `iobuf_get_stats` answers SPDK's shape: one entry per module using the pool. Every buffer
//! of Ferrite's pool is taken through the bdev layer, so there is one entry, `bdev`, with each
//! class's buffers taken from a thread's cache (`cache`), from the global queue (`main`), the
//! requests that waited (`retry`) and the per-thread cache size (`cache_size`).
//!
//! Thread contract: the handlers run on the RPC server's thread (they touch no bdev state).

use ferrite_rpc::{decode, no_params, Params, Registry, Responder, RpcError, RUNTIME, STARTUP};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::buf::{self, BufPoolConfig};
use crate::error::ErrorKind;
use crate::rpc::rpc_err;

/// Registers `iobuf_set_options` and `iobuf_get_stats`.
pub(crate) fn register(reg: &Registry) {
    reg.register_fn("iobuf_set_options", STARTUP, true, set_options);
    reg.register_fn("iobuf_get_stats", RUNTIME, false, get_stats);
}

fn get_stats(p: Params, r: Responder) {
    if let Err(e) = no_params(&p) {
        return r.err(e);
    }
    let s = buf::iobuf_stats();
    let class = |c: buf::ClassStats| json!({"cache": c.cache, "main": c.main, "retry": c.retry, "cache_size": c.cache_size});
    r.ok(json!([{
        "module": "bdev",
        "small_pool": class(s.small),
        "large_pool": class(s.large),
    }]));
}

fn set_options(p: Params, r: Responder) {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Opts {
        small_pool_count: Option<u64>,
        large_pool_count: Option<u64>,
        small_bufsize: Option<u64>,
        large_bufsize: Option<u64>,
        enable_numa: Option<bool>,
    }
    let o = match decode::<Opts>(p) {
        Ok(o) => o,
        Err(e) => return r.err(e),
    };
    if o.enable_numa == Some(true) {
        return r.err(RpcError::invalid_params(
            "parameter 'enable_numa': per-NUMA buffer pools are not supported (one pool for the process)",
        ));
    }
    let cur = buf::config();
    let pick = |name: &str, v: Option<u64>, cur: usize| -> Result<usize, RpcError> {
        match v {
            None => Ok(cur),
            Some(v) => usize::try_from(v).map_err(|_| {
                RpcError::invalid_params(format!("parameter '{name}': {v} is out of range"))
            }),
        }
    };
    let cfg = (|| {
        Ok::<_, RpcError>(BufPoolConfig {
            small_count: pick("small_pool_count", o.small_pool_count, cur.small_count)?,
            large_count: pick("large_pool_count", o.large_pool_count, cur.large_count)?,
            small_size: pick("small_bufsize", o.small_bufsize, cur.small_size)?,
            large_size: pick("large_bufsize", o.large_bufsize, cur.large_size)?,
        })
    })();
    let cfg = match cfg {
        Ok(c) => c,
        Err(e) => return r.err(e),
    };
    match buf::configure(cfg) {
        Ok(()) => r.ok(true),
        Err(e) if e.kind() == ErrorKind::InvalidArgument => {
            r.err(RpcError::invalid_params(format!("iobuf_set_options: {e}")))
        }
        Err(e) => r.err(rpc_err(e)),
    }
}

/// The `iobuf` subsystem's `save_config` entries: `iobuf_set_options` with every size when
/// they differ from the defaults, nothing otherwise (a configuration saved with the defaults
/// stays as it was).
///
/// Thread contract: any thread.
pub fn config_entries() -> Vec<Value> {
    let c = buf::config();
    if c == BufPoolConfig::default() {
        return Vec::new();
    }
    vec![json!({
        "method": "iobuf_set_options",
        "params": {
            "small_pool_count": c.small_count,
            "large_pool_count": c.large_count,
            "small_bufsize": c.small_size,
            "large_bufsize": c.large_size,
        }
    })]
}
