//! JSON-RPC methods of the bdev layer itself (`bdev_get_bdevs`, `bdev_get_iostat`,
//! `bdev_wait_for_examine`) and the helpers every module's `rpc.rs` uses to run its handlers on
//! the app thread.

use std::sync::{Arc, Mutex};

use ferrite_reactor::{clock, ThreadHandle};
use ferrite_rpc::{decode, no_params, Params, Registry, Responder, RpcError, RUNTIME, STARTUP};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::bdev::Bdev;
use crate::error::BdevError;
use crate::stats::{IoStats, OpStats};

/// Converts a bdev error to SPDK's form: code = -errno, message naming the object.
pub fn rpc_err(e: BdevError) -> RpcError {
    RpcError::from_errno(e.errno(), e.to_string())
}

/// Runs `f` on `thread` (normally the app thread) with the responder. If the thread cannot
/// take the message the client gets an internal error saying so. Returns before `f` runs.
pub fn on_thread(
    thread: &ThreadHandle,
    resp: Responder,
    f: impl FnOnce(Responder) + Send + 'static,
) {
    let slot = Arc::new(Mutex::new(Some(resp)));
    let s2 = slot.clone();
    let sent = thread.send(move || {
        if let Some(r) = s2.lock().ok().and_then(|mut g| g.take()) {
            f(r)
        }
    });
    if let Err(e) = sent {
        if let Some(r) = slot.lock().ok().and_then(|mut g| g.take()) {
            r.err(RpcError::internal(format!(
                "cannot reach thread '{}': {e}",
                thread.name()
            )));
        }
    }
}

/// Registers `method`, the way every module registers its methods: the parameters are decoded
/// strictly into `P` on the RPC thread (an unknown, missing or mistyped parameter answers
/// -32602 naming it, and `f` never runs), then `f(params, responder)` runs on `app`. `f` may
/// answer before returning or later, from any thread.
pub fn register_on_app<P, F>(
    reg: &Registry,
    app: &ThreadHandle,
    method: &'static str,
    states: u32,
    mutates: bool,
    f: F,
) where
    P: serde::de::DeserializeOwned + Send + 'static,
    F: Fn(P, Responder) + Send + Sync + 'static,
{
    let app = app.clone();
    let f = Arc::new(f);
    reg.register_fn(method, states, mutates, move |p, r| {
        let q: P = match decode(p) {
            Ok(q) => q,
            Err(e) => return r.err(e),
        };
        let f = f.clone();
        on_thread(&app, r, move |r| f(q, r));
    });
}

/// Answers with the value, or with the bdev error in SPDK's form (-errno, message naming the
/// object).
pub fn reply<T: serde::Serialize>(r: Responder, res: crate::error::Result<T>) {
    match res {
        Ok(v) => r.ok(v),
        Err(e) => r.err(rpc_err(e)),
    }
}

/// Parameters of the delete methods: `{"name": ...}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameParams {
    /// The bdev.
    pub name: String,
}

/// Registers the bdev layer's methods. Handlers run on `app`.
pub fn register_rpcs(reg: &Registry, app: &ThreadHandle) {
    let a = app.clone();
    reg.register_fn("bdev_get_bdevs", RUNTIME, false, move |p, r| {
        get_bdevs(&a, p, r)
    });
    let a = app.clone();
    reg.register_fn("bdev_get_iostat", RUNTIME, false, move |p, r| {
        get_iostat(&a, p, r)
    });
    let a = app.clone();
    reg.register_fn("bdev_wait_for_examine", RUNTIME, false, move |p, r| {
        if let Err(e) = no_params(&p) {
            return r.err(e);
        }
        on_thread(&a, r, |r| {
            crate::registry::wait_for_examine(move || r.ok(true))
        });
    });
    reg.register_fn("bdev_set_options", STARTUP, true, set_options);
    crate::buf_rpc::register(reg);
}

/// `bdev_set_options`: every option takes effect (each thread sets up its bdev state after the
/// startup state, and reads the iobuf cache sizes when it returns a buffer) and is saved by
/// `save_config` when it differs from SPDK's default.
fn set_options(p: Params, r: Responder) {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Opts {
        bdev_io_pool_size: Option<u32>,
        bdev_io_cache_size: Option<u32>,
        bdev_auto_examine: Option<bool>,
        iobuf_small_cache_size: Option<u32>,
        iobuf_large_cache_size: Option<u32>,
    }
    let o = match decode::<Opts>(p) {
        Ok(o) => o,
        Err(e) => return r.err(e),
    };
    if o.bdev_auto_examine == Some(false) {
        return r.err(RpcError::invalid_params(
            "parameter 'bdev_auto_examine': false is not supported (every bdev is examined)",
        ));
    }
    let cur = crate::options::options();
    let new = crate::options::BdevOptions {
        bdev_io_pool_size: o.bdev_io_pool_size.unwrap_or(cur.bdev_io_pool_size),
        bdev_io_cache_size: o.bdev_io_cache_size.unwrap_or(cur.bdev_io_cache_size),
        iobuf_small_cache_size: o
            .iobuf_small_cache_size
            .unwrap_or(cur.iobuf_small_cache_size),
        iobuf_large_cache_size: o
            .iobuf_large_cache_size
            .unwrap_or(cur.iobuf_large_cache_size),
    };
    match crate::options::set_options(&new) {
        Ok(()) => r.ok(true),
        Err(e) if e.kind() == crate::error::ErrorKind::InvalidArgument => {
            r.err(RpcError::invalid_params(e.to_string()))
        }
        Err(e) => r.err(rpc_err(e)),
    }
}

/// `bdev_get_bdevs` entry for one bdev, in SPDK's shape.
pub fn bdev_info(b: &Bdev) -> Value {
    let mut v = json!({
        "name": b.name(),
        "aliases": b.aliases(),
        "product_name": b.product_name(),
        "block_size": b.block_size(),
        "num_blocks": b.num_blocks(),
        "uuid": b.uuid().to_string(),
        "assigned_rate_limits": {
            "rw_ios_per_sec": 0, "rw_mbytes_per_sec": 0, "r_mbytes_per_sec": 0, "w_mbytes_per_sec": 0
        },
        "claimed": b.claim().is_some(),
        "zoned": false,
        "supported_io_types": b.supported_io_types_json(),
        "driver_specific": {},
    });
    if let Some((kind, _)) = b.claim() {
        v["claim_type"] = json!(kind.spdk_name());
    }
    if b.md_size() > 0 {
        v["md_size"] = json!(b.md_size());
        v["md_interleave"] = json!(false);
        v["dif_type"] = json!(0);
    }
    if b.optimal_io_boundary() > 0 {
        v["optimal_io_boundary"] = json!(b.optimal_io_boundary());
    }
    v["write_cache"] = json!(b.write_cache());
    if let Some((k, d)) = b.backend().driver_specific() {
        v["driver_specific"] = json!({ k: d });
    }
    v
}

/// Longest `timeout` accepted by `bdev_get_bdevs` (a limit on everything): one hour.
pub const MAX_GET_BDEVS_TIMEOUT_MS: u64 = 3_600_000;

fn get_bdevs(app: &ThreadHandle, p: Params, r: Responder) {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Req {
        name: Option<String>,
        timeout: Option<u64>,
    }
    let req = match decode::<Req>(p) {
        Ok(q) => q,
        Err(e) => return r.err(e),
    };
    let timeout = req.timeout.unwrap_or(0);
    if timeout > MAX_GET_BDEVS_TIMEOUT_MS {
        return r.err(RpcError::invalid_params(format!(
            "parameter 'timeout': {timeout} ms exceeds the limit of {MAX_GET_BDEVS_TIMEOUT_MS} ms"
        )));
    }
    on_thread(app, r, move |r| match req.name {
        None => r.ok(Value::Array(
            crate::registry::list()
                .iter()
                .map(|b| bdev_info(b))
                .collect(),
        )),
        Some(name) => {
            if let Some(b) = crate::registry::lookup(&name) {
                return r.ok(json!([bdev_info(&b)]));
            }
            if timeout == 0 {
                return r.err(rpc_err(BdevError::not_found(&name)));
            }
            wait_for_bdev(name, timeout, r);
        }
    });
}

/// Polls for `name` every millisecond until it appears or `timeout_ms` passes (on the app
/// thread, with a timed poller that unregisters itself).
fn wait_for_bdev(name: String, timeout_ms: u64, r: Responder) {
    let deadline = clock::ticks() + clock::us_to_ticks(timeout_ms * 1000);
    let slot: Arc<Mutex<Option<ferrite_reactor::PollerHandle>>> = Arc::new(Mutex::new(None));
    let s2 = slot.clone();
    let mut resp = Some(r);
    let poller = ferrite_reactor::register_poller("bdev_get_bdevs_wait", 1000, move || {
        let Some(r) = resp.take() else { return 0 };
        if let Some(b) = crate::registry::lookup(&name) {
            r.ok(json!([bdev_info(&b)]));
        } else if clock::ticks() >= deadline {
            r.err(rpc_err(BdevError::new(
                crate::error::ErrorKind::NotFound,
                format!("bdev '{name}' not found (waited {timeout_ms} ms)"),
            )));
        } else {
            resp = Some(r);
            return 0;
        }
        if let Ok(mut g) = s2.lock() {
            g.take(); // unregister ourselves; takes effect after this call
        }
        1
    });
    match poller {
        Ok(h) => {
            if let Ok(mut g) = slot.lock() {
                *g = Some(h);
            }
        }
        Err(e) => tracing::error!("bdev_get_bdevs: cannot wait: {e}"),
    }
}

fn op_json(prefix: &str, noun: &str, s: &OpStats, out: &mut serde_json::Map<String, Value>) {
    out.insert(format!("bytes_{noun}"), json!(s.bytes));
    out.insert(format!("num_{prefix}_ops"), json!(s.ops));
    out.insert(format!("{prefix}_latency_ticks"), json!(s.latency_ticks));
    out.insert(
        format!("max_{prefix}_latency_ticks"),
        json!(s.max_latency_ticks),
    );
    out.insert(
        format!("min_{prefix}_latency_ticks"),
        json!(if s.ops == 0 { 0 } else { s.min_latency_ticks }),
    );
}

/// SPDK's iostat object for one set of statistics.
pub fn iostat_json(s: &IoStats) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    op_json("read", "read", &s.read, &mut m);
    op_json("write", "written", &s.write, &mut m);
    op_json("unmap", "unmapped", &s.unmap, &mut m);
    op_json("copy", "copied", &OpStats::default(), &mut m);
    m.insert("num_write_zeroes_ops".into(), json!(s.write_zeroes.ops));
    m.insert("bytes_write_zeroes".into(), json!(s.write_zeroes.bytes));
    m.insert("num_compare_ops".into(), json!(s.compare.ops));
    m.insert("num_other_ops".into(), json!(s.other.ops));
    m.insert("io_error".into(), json!({}));
    m.insert("failed_ops".into(), json!(s.failed));
    m.insert("miscompares".into(), json!(s.miscompares));
    m.insert("nomem_retries".into(), json!(s.nomem_retries));
    m
}

fn get_iostat(app: &ThreadHandle, p: Params, r: Responder) {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Req {
        name: Option<String>,
        per_channel: Option<bool>,
        reset_mode: Option<String>,
    }
    let req = match decode::<Req>(p) {
        Ok(q) => q,
        Err(e) => return r.err(e),
    };
    let reset = req.reset_mode.clone().unwrap_or_else(|| "none".into());
    if !["all", "maxmin", "none"].contains(&reset.as_str()) {
        return r.err(RpcError::invalid_params(format!(
            "parameter 'reset_mode': '{reset}' is not one of all, maxmin, none"
        )));
    }
    let per_channel = req.per_channel.unwrap_or(false);
    if per_channel && req.name.is_none() {
        // SPDK answers -EINVAL: per-channel statistics are for one named bdev.
        return r.err(RpcError::from_errno(
            libc::EINVAL,
            "parameter 'per_channel': requires parameter 'name' (per-channel statistics are for one bdev)",
        ));
    }
    on_thread(app, r, move |r| {
        let bdevs = match &req.name {
            Some(n) => match crate::registry::lookup(n) {
                Some(b) => vec![b],
                None => return r.err(rpc_err(BdevError::not_found(n))),
            },
            None => crate::registry::list(),
        };
        collect_all(bdevs, per_channel, reset, Vec::new(), r);
    });
}

fn collect_all(
    mut rest: Vec<Arc<Bdev>>,
    per_channel: bool,
    reset: String,
    mut acc: Vec<Value>,
    r: Responder,
) {
    if rest.is_empty() {
        // Per channel (one named bdev), SPDK's result is flat: {tick_rate, ticks, name,
        // channels}; otherwise {tick_rate, ticks, bdevs: [..]}.
        if per_channel {
            if let Some(Value::Object(one)) = acc.pop() {
                let mut m = serde_json::Map::new();
                m.insert("tick_rate".into(), json!(clock::tick_rate()));
                m.insert("ticks".into(), json!(clock::ticks()));
                m.extend(one);
                return r.ok(Value::Object(m));
            }
        }
        return r
            .ok(json!({"tick_rate": clock::tick_rate(), "ticks": clock::ticks(), "bdevs": acc}));
    }
    let b = rest.remove(0);
    let b2 = b.clone();
    crate::iostat::collect_iostat(&b, move |total, per| {
        let mut entry = if per_channel {
            let chans: Vec<Value> = per
                .iter()
                .map(|(tid, s)| {
                    let mut m = iostat_json(s);
                    m.insert("thread_id".into(), json!(tid));
                    Value::Object(m)
                })
                .collect();
            let mut m = serde_json::Map::new();
            m.insert("channels".into(), Value::Array(chans));
            m
        } else {
            iostat_json(&total)
        };
        entry.insert("name".into(), json!(b2.name()));
        acc.push(Value::Object(entry));
        let mode = reset.clone();
        let next = move || collect_all(rest, per_channel, reset, acc, r);
        match mode.as_str() {
            "all" => crate::iostat::reset_iostat(&b2, false, next),
            "maxmin" => crate::iostat::reset_iostat(&b2, true, next),
            _ => next(),
        }
    });
}
