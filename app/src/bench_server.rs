//! `ferrite bench -z`: bdevperf's "wait for RPC" mode. The framework starts with an RPC server
//! (every method of the target) plus `perform_tests`, which runs one benchmark with the given
//! parameters and answers with the JSON report. Ends on SIGINT/SIGTERM or `spdk_kill_instance`.
//!
//! `perform_tests` parameters (all optional except as the workload needs; names follow
//! bdevperf's options): `queue_depth`, `io_size` (bytes, or a string with k/m suffix),
//! `workload_type`, `time_in_sec` (default 1), `rw_percentage` (read share for mixes),
//! `targets` (bdev names; default every unclaimed bdev), `seed`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use clap::Parser;
use ferrite_bench::engine::{self, EngineConfig, Interrupt};
use ferrite_bench::{jobs_from_options, BdevInfo, BenchOptions};
use ferrite_reactor::{CpuMask, PollMode, Runtime, RuntimeConfig};
use ferrite_rpc::{
    decode, Params, Registry, Responder, RpcError, Server, ServerConfig, ServerState, RUNTIME,
    STARTUP,
};
use serde::Deserialize;

use crate::config::{apply, parse_config, ApplyOptions};
use crate::framework_rpc::{self, FrameworkCtx};

/// Options of `ferrite bench -z`.
#[derive(Debug, Parser)]
#[command(name = "ferrite bench -z")]
struct ServerOpts {
    /// Wait for `perform_tests` over RPC.
    #[arg(short = 'z')]
    _z: bool,
    /// Core mask.
    #[arg(short = 'm', long = "cpumask", default_value = "0x1")]
    cpumask: String,
    /// SPDK JSON config.
    #[arg(short = 'c', long = "json")]
    json: Option<std::path::PathBuf>,
    /// RPC socket.
    #[arg(short = 'r', long = "rpc-socket", default_value = ferrite_rpc::DEFAULT_RPC_ADDR)]
    rpc_socket: std::path::PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PerformTests {
    queue_depth: Option<u32>,
    io_size: Option<serde_json::Value>,
    workload_type: Option<String>,
    time_in_sec: Option<f64>,
    rw_percentage: Option<u32>,
    targets: Option<Vec<String>>,
    seed: Option<u64>,
}

/// Runs the server mode; returns the exit code.
pub fn run(args: &[String]) -> i32 {
    crate::tgt::block_signals();
    let mut argv = vec!["ferrite bench".to_string()];
    argv.extend(args.iter().cloned());
    let o = match ServerOpts::try_parse_from(&argv) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    if let Err(e) = crate::logging::init("NOTICE", &[]) {
        eprintln!("ferrite bench: {e}");
        return 2;
    }
    match serve(o) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferrite bench: {e}");
            1
        }
    }
}

fn serve(o: ServerOpts) -> Result<i32, String> {
    let mask = CpuMask::parse(&o.cpumask).map_err(|e| e.to_string())?;
    let rt = Runtime::start(RuntimeConfig {
        cpumask: mask.clone(),
        mode: PollMode::Adaptive,
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;
    crate::proc_stat::init();
    crate::modules::register_bdev_modules();
    let state = Arc::new(ServerState::new(STARTUP));
    let registry = Registry::new(state.clone());
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let stop_tx = std::sync::Mutex::new(stop_tx);
    let shutdown = Arc::new(move || {
        if let Ok(t) = stop_tx.lock() {
            let _ = t.send(());
        }
    });
    framework_rpc::register(&FrameworkCtx {
        runtime: rt.clone(),
        registry: registry.clone(),
        shutdown,
    });
    crate::modules::register_rpcs(&registry, &rt.app_thread());
    let busy = Arc::new(Busy::default());
    let stopping = Arc::new(AtomicBool::new(false));
    let (rt2, mask2, busy2, stop2) = (rt.clone(), mask.clone(), busy.clone(), stopping.clone());
    registry.register_fn("perform_tests", RUNTIME, false, move |p, r| {
        perform_tests(&rt2, &mask2, &busy2, &stop2, p, r)
    });
    // The config is applied and examined before the socket appears (see `ferrite tgt`).
    if let Err(e) = load_json(&registry, o.json.as_deref()) {
        rt.stop();
        return Err(e);
    }
    if state.get() == STARTUP {
        if let Err(e) = framework_rpc::start_framework(&state) {
            rt.stop();
            return Err(e);
        }
    }
    wait_examined(&rt);
    let server = match Server::start(ServerConfig::new(&o.rpc_socket), registry.clone()) {
        Ok(s) => s,
        Err(e) => {
            rt.stop();
            return Err(e.to_string());
        }
    };
    tracing::info!(
        "bench waiting for perform_tests on {}",
        o.rpc_socket.display()
    );
    loop {
        if crate::tgt::wait_signal(200).is_some() || stop_rx.try_recv().is_ok() {
            break;
        }
    }
    // Stop a running test first: its jobs drain their I/O and close their descriptors, and
    // its client gets the (terminated) results. Then no new work, then remove the bdevs.
    stopping.store(true, Ordering::Release);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while busy.unanswered.load(Ordering::Acquire) > 0 && std::time::Instant::now() < deadline {
        if crate::tgt::wait_signal(50).is_some() {
            tracing::warn!("second signal during shutdown: exiting now");
            std::process::exit(1);
        }
    }
    server.stop();
    let (tx, rx) = mpsc::channel();
    let _ = rt.app_thread().send(move || {
        ferrite_bdev::unregister_all(move || {
            let _ = tx.send(());
        })
    });
    let _ = rx.recv_timeout(Duration::from_secs(30));
    rt.stop();
    Ok(0)
}

fn load_json(registry: &Registry, path: Option<&std::path::Path>) -> Result<(), String> {
    let Some(path) = path else { return Ok(()) };
    let source = format!("config file '{}'", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {source}: {e}"))?;
    let entries = parse_config(&text, &source)?;
    apply(
        registry,
        &entries,
        &ApplyOptions {
            source,
            ignore_errors: false,
            start_init: true,
            timeout: Duration::from_secs(60),
        },
    )?;
    Ok(())
}

fn wait_examined(rt: &Arc<Runtime>) {
    let (tx, rx) = mpsc::channel();
    let sent = rt.app_thread().send(move || {
        ferrite_bdev::wait_for_examine(move || {
            let _ = tx.send(());
        })
    });
    if sent.is_err() || rx.recv_timeout(Duration::from_secs(60)).is_err() {
        tracing::warn!("examine of the configured bdevs did not finish within 60 s");
    }
}

/// What `perform_tests` has under way.
#[derive(Default)]
struct Busy {
    /// A test runs (another is refused with EBUSY). Cleared before its answer is sent, so a
    /// client may start the next test as soon as it has the answer.
    running: AtomicBool,
    /// Tests whose answer is not sent yet: shutdown waits for them before closing the server.
    unanswered: AtomicUsize,
}

fn perform_tests(
    rt: &Arc<Runtime>,
    mask: &CpuMask,
    busy: &Arc<Busy>,
    stopping: &Arc<AtomicBool>,
    p: Params,
    r: Responder,
) {
    let q: PerformTests = match decode(p) {
        Ok(q) => q,
        Err(e) => return r.err(e),
    };
    let mut argv: Vec<String> = vec!["perform_tests".into(), "-m".into(), mask.to_string()];
    let mut push = |k: &str, v: String| {
        argv.push(k.into());
        argv.push(v);
    };
    if let Some(v) = q.queue_depth {
        push("-q", v.to_string());
    }
    match q.io_size {
        Some(serde_json::Value::Number(n)) => push("-o", n.to_string()),
        Some(serde_json::Value::String(s)) => push("-o", s),
        Some(_) => {
            return r.err(RpcError::invalid_params(
                "parameter 'io_size': expected a number or a string such as \"4k\"",
            ))
        }
        None => {}
    }
    if let Some(w) = q.workload_type {
        push("-w", w);
    }
    push("-t", q.time_in_sec.unwrap_or(1.0).to_string());
    if let Some(m) = q.rw_percentage {
        push("-M", m.to_string());
    }
    if let Some(s) = q.seed {
        push("--seed", s.to_string());
    }
    for t in q.targets.unwrap_or_default() {
        push("-T", t);
    }
    let opts = match BenchOptions::parse_and_validate(&argv) {
        Ok((o, _)) => o,
        Err(e) => return r.err(RpcError::invalid_params(e.to_string())),
    };
    if stopping.load(Ordering::Acquire) {
        return r.err(RpcError::from_errno(
            libc::ESHUTDOWN,
            "perform_tests: the application is shutting down",
        ));
    }
    if busy.running.swap(true, Ordering::AcqRel) {
        return r.err(RpcError::from_errno(
            libc::EBUSY,
            "perform_tests: a test is already running",
        ));
    }
    let (rt, busy, stopping, cores) = (
        rt.clone(),
        busy.clone(),
        stopping.clone(),
        mask.cores().to_vec(),
    );
    busy.unanswered.fetch_add(1, Ordering::AcqRel);
    let busy2 = busy.clone();
    let spawned = std::thread::Builder::new()
        .name("perform_tests".into())
        .spawn(move || {
            let res = run_tests(&rt, &opts, &cores, &stopping);
            // The test is over before its client hears of it; the server stays up until the
            // answer is out (shutdown waits for `unanswered`).
            busy.running.store(false, Ordering::Release);
            match res {
                Ok(v) => r.ok(v),
                Err(e) => r.err(e),
            }
            busy.unanswered.fetch_sub(1, Ordering::AcqRel);
        });
    if let Err(e) = spawned {
        tracing::error!("perform_tests: cannot start: {e}");
        busy2.running.store(false, Ordering::Release);
        busy2.unanswered.fetch_sub(1, Ordering::AcqRel);
    }
}

fn run_tests(
    rt: &Arc<Runtime>,
    opts: &BenchOptions,
    cores: &[usize],
    stopping: &AtomicBool,
) -> Result<serde_json::Value, RpcError> {
    let inval = |e: String| RpcError::from_errno(libc::EINVAL, format!("perform_tests: {e}"));
    let infos: Vec<BdevInfo> = ferrite_bdev::list()
        .iter()
        .filter(|b| b.claim().is_none() || opts.targets.iter().any(|t| t == b.name()))
        .map(|b| BdevInfo {
            name: b.name().to_string(),
            block_size: b.block_size(),
            num_blocks: b.num_blocks(),
        })
        .collect();
    let plans = jobs_from_options(opts, &infos, cores).map_err(|e| inval(e.to_string()))?;
    let cfg = EngineConfig {
        plans,
        run_time: opts.run_time(),
        sample_interval: Duration::from_secs(1),
        io_timeout: opts.io_timeout(),
        continue_on_failure: opts.continue_on_failure,
    };
    let out = engine::run(
        rt,
        cfg,
        |_, _| {},
        |wait| {
            std::thread::sleep(wait.min(Duration::from_millis(20)));
            if stopping.load(Ordering::Acquire) {
                Interrupt::Stop
            } else {
                Interrupt::None
            }
        },
    )
    .map_err(|e| inval(e.to_string()))?;
    // The answer keeps bdevperf's format; failures are named in the log, as the CLI prints them.
    for e in &out.errors {
        tracing::warn!("perform_tests: {e}");
    }
    for m in &out.mismatches {
        tracing::warn!("perform_tests: verify failed: {m}");
    }
    // A job whose bdev was removed during the run ended early: the test failed (as bdevperf's
    // perform_tests answers an error then), naming the job and the bdev.
    if !out.removed.is_empty() {
        return Err(RpcError::from_errno(
            libc::ENODEV,
            format!("perform_tests: {}", out.removed.join("; ")),
        ));
    }
    let text = ferrite_bench::report::to_json(&out.results, &out.cpu, out.tick_rate)
        .map_err(|e| inval(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| inval(e.to_string()))
}
