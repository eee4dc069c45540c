//! Framework-level JSON-RPC methods: version, init state, subsystems and their config,
//! reactors and threads, log levels, save/load of the whole config, and shutdown.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrite_reactor::{clock, Runtime};
use ferrite_rpc::{
    decode, no_params, Params, Registry, Responder, RpcError, ServerState, RUNTIME, STARTUP,
};
use serde::Deserialize;
use serde_json::{json, Value};

/// Version fields as `spdk_get_version` reports them.
pub fn version_json() -> Value {
    let v = env!("CARGO_PKG_VERSION");
    let mut it = v.split('.').map(|x| x.parse::<u32>().unwrap_or(0));
    let (major, minor, patch) = (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    );
    json!({"version": format!("Ferrite v{v}"), "fields": {"major": major, "minor": minor, "patch": patch, "suffix": ""}})
}

/// What the handlers need.
#[derive(Clone)]
pub struct FrameworkCtx {
    /// The runtime (reactors, threads).
    pub runtime: Arc<Runtime>,
    /// The method table (for load_config).
    pub registry: Registry,
    /// Asks the main thread to shut down (spdk_kill_instance).
    pub shutdown: Arc<dyn Fn() + Send + Sync>,
}

/// Leaves the startup state (`framework_start_init`, or start-up without `--wait-for-rpc`):
/// builds what SPDK builds at subsystem init with the start-up options now applied (the DMA
/// buffer pool, so that no I/O pays for it), then enters the runtime state. Fails, staying in
/// the startup state, if the pool cannot be built; nothing of the failed build is kept, so
/// `framework_start_init` may be retried (after `iobuf_set_options` with smaller sizes, or
/// once memory is free).
///
/// Thread contract: any non-reactor thread or the RPC handler; blocks while the pool is built.
pub fn start_framework(state: &ServerState) -> Result<(), String> {
    let st = ferrite_bdev::buf::init().map_err(|e| e.message().to_string())?;
    tracing::info!(
        "DMA buffer pool ready: {} x {} KiB small, {} x {} KiB large buffers{}{}",
        st.small_total,
        st.small_size / 1024,
        st.large_total,
        st.large_size / 1024,
        if st.hugepages { " (hugepages)" } else { "" },
        if st.locked {
            ""
        } else {
            " (not locked in memory: see the warning above)"
        }
    );
    state.set_state(RUNTIME);
    tracing::info!("framework initialised (runtime state)");
    Ok(())
}

/// Registers every framework method.
pub fn register(ctx: &FrameworkCtx) {
    let reg = &ctx.registry;
    reg.register_fn(
        "spdk_get_version",
        STARTUP | RUNTIME,
        false,
        |p, r| match no_params(&p) {
            Ok(()) => r.ok(version_json()),
            Err(e) => r.err(e),
        },
    );
    let state = reg.state().clone();
    reg.register_fn("framework_start_init", STARTUP, false, move |p, r| {
        if let Err(e) = no_params(&p) {
            return r.err(e);
        }
        match start_framework(&state) {
            Ok(()) => r.ok(true),
            Err(e) => r.err(RpcError::from_errno(libc::ENOMEM, e)),
        }
    });
    let state = reg.state().clone();
    reg.register_fn(
        "framework_wait_init",
        STARTUP | RUNTIME,
        false,
        move |p, r| {
            if let Err(e) = no_params(&p) {
                return r.err(e);
            }
            if state.get() == RUNTIME {
                return r.ok(true);
            }
            let slot = Arc::new(Mutex::new(Some(r)));
            let s2 = slot.clone();
            state.on_change(move |_, new| {
                if new == RUNTIME {
                    if let Some(r) = s2.lock().ok().and_then(|mut g| g.take()) {
                        r.ok(true);
                    }
                }
            });
            // The state may have changed between the check and the hook.
            if state.get() == RUNTIME {
                if let Some(r) = slot.lock().ok().and_then(|mut g| g.take()) {
                    r.ok(true);
                }
            }
        },
    );
    reg.register_fn("framework_get_subsystems", RUNTIME, false, |p, r| {
        if let Err(e) = no_params(&p) {
            return r.err(e);
        }
        let v: Vec<Value> = crate::modules::SUBSYSTEMS
            .iter()
            .map(|(n, d)| json!({"subsystem": n, "depends_on": d}))
            .collect();
        r.ok(v)
    });
    reg.register_fn("framework_get_config", RUNTIME, false, |p, r| {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Q {
            name: String,
        }
        match decode::<Q>(p) {
            Ok(q) => match crate::config::save::subsystem_config(&q.name) {
                Some(c) => r.ok(c),
                // SPDK answers -32602 for an unknown subsystem.
                None => r.err(RpcError::invalid_params(format!(
                    "parameter 'name': subsystem '{}' not found",
                    q.name
                ))),
            },
            Err(e) => r.err(e),
        }
    });
    let rt = ctx.runtime.clone();
    reg.register_fn("framework_get_reactors", RUNTIME, false, move |p, r| {
        if let Err(e) = no_params(&p) {
            return r.err(e);
        }
        let mask = |core: usize| ferrite_reactor::CpuMask::from_cores(&[core]).to_string();
        let stat = crate::proc_stat::snapshot().unwrap_or_default();
        let reactors: Vec<Value> = rt
            .reactors()
            .into_iter()
            .map(|ri| {
                let lw: Vec<Value> = ri
                    .threads
                    .iter()
                    .map(|t| {
                        let (b, i) = t.busy_idle_ticks();
                        json!({"name": t.name(), "id": t.id(), "cpumask": mask(ri.lcore), "elapsed": b + i})
                    })
                    .collect();
                // The core's kernel-counted time, as SPDK reports it (0 if unreadable).
                let (usr, sys, irq) =
                    crate::proc_stat::core_times(&stat, ri.lcore).unwrap_or_default();
                json!({"lcore": ri.lcore, "tid": ri.tid, "busy": ri.busy, "idle": ri.idle,
                       "in_interrupt": ri.in_interrupt, "irq": irq, "sys": sys, "usr": usr,
                       "sleeps": ri.sleeps, "lw_threads": lw})
            })
            .collect();
        r.ok(json!({"tick_rate": clock::tick_rate(), "pid": std::process::id(), "poll_mode": rt.mode().as_str(), "reactors": reactors}))
    });
    let rt = ctx.runtime.clone();
    reg.register_fn(
        "thread_get_stats",
        RUNTIME,
        false,
        move |p, r| match no_params(&p) {
            Ok(()) => thread_stats(&rt, r, false),
            Err(e) => r.err(e),
        },
    );
    let rt = ctx.runtime.clone();
    reg.register_fn(
        "thread_get_pollers",
        RUNTIME,
        false,
        move |p, r| match no_params(&p) {
            Ok(()) => thread_stats(&rt, r, true),
            Err(e) => r.err(e),
        },
    );
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Level {
        level: String,
    }
    for name in ["log_set_level", "log_set_print_level"] {
        reg.register_fn(name, STARTUP | RUNTIME, false, |p, r| {
            match decode::<Level>(p) {
                Ok(q) => match crate::logging::set_level(&q.level) {
                    Ok(()) => r.ok(true),
                    Err(e) => r.err(RpcError::invalid_params(format!("parameter 'level': {e}"))),
                },
                Err(e) => r.err(e),
            }
        });
    }
    for name in ["log_get_level", "log_get_print_level"] {
        reg.register_fn(name, STARTUP | RUNTIME, false, |p, r| match no_params(&p) {
            Ok(()) => r.ok(crate::logging::level()),
            Err(e) => r.err(e),
        });
    }
    reg.register_fn("save_config", RUNTIME, false, |p, r| match no_params(&p) {
        Ok(()) => r.ok(crate::config::save_config()),
        Err(e) => r.err(e),
    });
    let reg2 = ctx.registry.clone();
    reg.register_fn("load_config", STARTUP | RUNTIME, true, move |p, r| {
        load_config(&reg2, p, r)
    });
    let shutdown = ctx.shutdown.clone();
    reg.register_fn(
        "spdk_kill_instance",
        STARTUP | RUNTIME,
        false,
        move |p, r| {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Q {
                sig_name: String,
            }
            match decode::<Q>(p) {
                Ok(q)
                    if ["SIGINT", "SIGTERM", "SIGQUIT", "SIGKILL"]
                        .contains(&q.sig_name.as_str()) =>
                {
                    r.ok(true);
                    shutdown();
                }
                Ok(q) => r.err(RpcError::invalid_params(format!(
                    "parameter 'sig_name': unknown signal '{}'",
                    q.sig_name
                ))),
                Err(e) => r.err(e),
            }
        },
    );
}

/// `load_config` with the config document as params (or `{"subsystems":..}` wrapped in
/// nothing). Runs on its own OS thread so the RPC server keeps serving meanwhile.
fn load_config(reg: &Registry, p: Params, r: Responder) {
    let Some(doc) = p else {
        return r.err(RpcError::invalid_params(
            "missing required parameter 'subsystems'",
        ));
    };
    let entries = match crate::config::parse::entries_from_value(&doc, "load_config") {
        Ok(e) => e,
        Err(e) => return r.err(RpcError::invalid_params(e)),
    };
    let reg = reg.clone();
    let spawned = std::thread::Builder::new()
        .name("load_config".into())
        .spawn(move || {
            let opts = crate::config::ApplyOptions {
                source: "load_config".into(),
                ignore_errors: false,
                start_init: true,
                timeout: Duration::from_secs(60),
            };
            match crate::config::apply(&reg, &entries, &opts) {
                Ok(_) => r.ok(true),
                Err(e) => r.err(RpcError::from_errno(libc::EINVAL, e)),
            }
        });
    if let Err(e) = spawned {
        tracing::error!("load_config: cannot start worker thread: {e}");
    }
}

/// One thread's entry in `thread_get_stats` (SPDK's fields), on that thread.
fn thread_stats_json(th: &ferrite_reactor::ThreadHandle) -> Value {
    let stats = ferrite_reactor::poller_stats();
    let (busy, idle) = th.busy_idle_ticks();
    let core = th.reactor().unwrap_or(0);
    let count = |kind: &str| stats.iter().filter(|s| s.state == kind).count();
    json!({
        "name": th.name(), "id": th.id(),
        "cpumask": ferrite_reactor::CpuMask::from_cores(&[core]).to_string(),
        "busy": busy, "idle": idle,
        "active_pollers_count": count("active"),
        "timed_pollers_count": count("timed"),
        "paused_pollers_count": count("paused"),
    })
}

/// One thread's entry in `thread_get_pollers`, on that thread: exactly SPDK's keys (its
/// `spdk_top` decodes them strictly), one array per kind of poller. A listed poller is
/// "waiting" (this runs between polls) or "paused"; those with a period carry it.
fn thread_pollers_json(th: &ferrite_reactor::ThreadHandle) -> Value {
    let stats = ferrite_reactor::poller_stats();
    let mut v = json!({"name": th.name(), "id": th.id()});
    for (key, kind) in [
        ("active_pollers", "active"),
        ("timed_pollers", "timed"),
        ("paused_pollers", "paused"),
    ] {
        let list: Vec<Value> = stats
            .iter()
            .filter(|s| s.state == kind)
            .map(|s| {
                let state = if kind == "paused" {
                    "paused"
                } else {
                    "waiting"
                };
                let mut p = json!({"name": s.name, "id": s.id, "state": state,
                    "run_count": s.run_count, "busy_count": s.busy_count});
                if s.period_us > 0 {
                    p["period_ticks"] = json!(clock::us_to_ticks(s.period_us));
                }
                p
            })
            .collect();
        v[key] = Value::Array(list);
    }
    v
}

/// Asks every thread for its poller statistics and answers once all have replied.
fn thread_stats(rt: &Arc<Runtime>, r: Responder, pollers: bool) {
    let threads = rt.threads();
    let n = threads.len();
    let acc: Arc<Mutex<Vec<(usize, Value)>>> = Arc::new(Mutex::new(Vec::new()));
    let left = Arc::new(AtomicUsize::new(n));
    let resp = Arc::new(Mutex::new(Some(r)));
    let finish = {
        let acc = acc.clone();
        let resp = resp.clone();
        move || {
            let mut v = acc.lock().map(|a| a.clone()).unwrap_or_default();
            v.sort_by_key(|(i, _)| *i);
            let list: Vec<Value> = v.into_iter().map(|(_, x)| x).collect();
            if let Some(r) = resp.lock().ok().and_then(|mut g| g.take()) {
                r.ok(json!({"tick_rate": clock::tick_rate(), "threads": list}));
            }
        }
    };
    let finish = Arc::new(finish);
    if n == 0 {
        return finish();
    }
    for (i, t) in threads.into_iter().enumerate() {
        let acc = acc.clone();
        let left2 = left.clone();
        let fin = finish.clone();
        let th = t.clone();
        let sent = t.send(move || {
            let v = if pollers {
                thread_pollers_json(&th)
            } else {
                thread_stats_json(&th)
            };
            if let Ok(mut a) = acc.lock() {
                a.push((i, v));
            }
            if left2.fetch_sub(1, Ordering::AcqRel) == 1 {
                fin();
            }
        });
        if sent.is_err() && left.fetch_sub(1, Ordering::AcqRel) == 1 {
            finish();
        }
    }
}
