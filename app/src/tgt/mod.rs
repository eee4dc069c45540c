//! `ferrite tgt`: the long-running target.
//!
//! Start-up: block signals → logging → reactors → modules and RPC methods → config
//! (`--persist` file if it exists, else `-c`, else the embedded default when started with no
//! arguments; with `--wait-for-rpc` only its startup-state entries) → runtime state (unless
//! `--wait-for-rpc`) → every bdev examined → RPC server. A client that sees the socket sees the
//! configuration applied and every configured bdev listed.
//! Shutdown (SIGINT/SIGTERM or `spdk_kill_instance`): stop the RPC server (no new work), remove
//! every bdev top of the graph first (each removal waits for its in-flight I/O and open
//! descriptors), stop the reactors (threads, channels and pollers are dropped on their
//! threads), exit 0. A second signal exits at once with status 1.

mod options;
mod signals;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use ferrite_reactor::{CpuMask, PollMode, Runtime};
use ferrite_rpc::{Registry, Server, ServerConfig, ServerState, STARTUP};

pub use options::TgtOptions;

/// Blocks SIGINT/SIGTERM in this and every later thread (see `signals`).
pub fn block_signals() {
    signals::block();
}

/// Waits up to `ms` for SIGINT/SIGTERM.
pub fn wait_signal(ms: u64) -> Option<i32> {
    signals::wait(ms)
}

use crate::config::{apply, parse_config, ApplyOptions, Persister};
use crate::framework_rpc::{self, FrameworkCtx};

/// The embedded default configuration: a malloc bdev and a passthru on it.
pub const DEFAULT_CONFIG: &str = include_str!("../default_config.json");

/// Runs the target until shut down; returns the process exit code.
pub fn run(opts: TgtOptions, embedded_default: bool) -> i32 {
    signals::block();
    if let Err(e) = crate::logging::init(&opts.log_level, &opts.log_flags) {
        eprintln!("ferrite tgt: {e}");
        return 2;
    }
    match start_and_serve(opts, embedded_default) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("ferrite tgt: {e}");
            1
        }
    }
}

fn start_and_serve(opts: TgtOptions, embedded_default: bool) -> Result<i32, String> {
    let mask = CpuMask::parse(&opts.cpumask).map_err(|e| e.to_string())?;
    let mode: PollMode = opts
        .poll_mode
        .parse()
        .map_err(|e: ferrite_reactor::ReactorError| e.to_string())?;
    let sock_mode =
        u32::from_str_radix(opts.rpc_socket_mode.trim_start_matches("0o"), 8).map_err(|_| {
            format!(
                "invalid --rpc-socket-mode '{}': expected an octal mode such as 0600",
                opts.rpc_socket_mode
            )
        })?;
    let vhost_mode = u32::from_str_radix(opts.vhost_socket_mode.trim_start_matches("0o"), 8)
        .map_err(|_| {
            format!(
                "invalid --vhost-socket-mode '{}': expected an octal mode such as 0600",
                opts.vhost_socket_mode
            )
        })?;
    let vhost_dir = match &opts.vhost_sock_dir {
        Some(d) => d.clone(),
        None => std::env::current_dir()
            .map_err(|e| format!("cannot read the working directory: {e}"))?,
    };
    if !vhost_dir.is_dir() {
        return Err(format!(
            "vhost socket directory '{}' does not exist",
            vhost_dir.display()
        ));
    }
    // Read the config before starting anything, so a bad file fails fast.
    let config = load_config_text(&opts, embedded_default)?;
    let runtime = Runtime::start(opts.runtime_config(mask, mode)).map_err(|e| e.to_string())?;
    crate::proc_stat::init();
    crate::modules::register_bdev_modules();
    ferrite_vhost::init(ferrite_vhost::VhostSettings {
        socket_dir: vhost_dir,
        socket_mode: vhost_mode,
        reactor_cores: runtime.reactors().iter().map(|r| r.lcore).collect(),
    });

    let state = Arc::new(ServerState::new(STARTUP));
    let registry = Registry::new(state.clone());
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let stop_tx = Arc::new(std::sync::Mutex::new(stop_tx));
    let shutdown = {
        let tx = stop_tx.clone();
        Arc::new(move || {
            if let Ok(t) = tx.lock() {
                let _ = t.send(());
            }
        })
    };
    framework_rpc::register(&FrameworkCtx {
        runtime: runtime.clone(),
        registry: registry.clone(),
        shutdown,
    });
    crate::modules::register_rpcs(&registry, &runtime.app_thread());

    let persister = match &opts.persist {
        Some(p) => {
            let per = Persister::start(p.clone())
                .map_err(|e| format!("cannot start --persist worker: {e}"))?;
            let after_write = per.after_write();
            let armed = Arc::new(AtomicBool::new(false));
            let a2 = armed.clone();
            // The answer to a state-changing RPC is sent once the change is on disk.
            registry.on_success_deferred(move |_, release| {
                if a2.load(Ordering::Acquire) {
                    after_write(release)
                } else {
                    release()
                }
            });
            Some((per, armed))
        }
        None => None,
    };

    // Apply the config, then start the framework (unless told to wait for RPC). On failure,
    // undo everything and exit non-zero.
    let mut startup_failed = None;
    if let Some((text, source)) = config {
        let entries = parse_config(&text, &source);
        let res = entries.and_then(|entries| {
            let ao = ApplyOptions {
                source: source.clone(),
                ignore_errors: opts.json_ignore_init_errors,
                start_init: !opts.wait_for_rpc,
                timeout: Duration::from_secs(60),
            };
            apply(&registry, &entries, &ao)
        });
        match res {
            Ok(n) => tracing::info!("{source}: applied {n} entries"),
            Err(e) => {
                tracing::error!("{e}");
                startup_failed = Some(e);
            }
        }
    }
    if startup_failed.is_none() && !opts.wait_for_rpc && state.get() == STARTUP {
        startup_failed = framework_rpc::start_framework(&state).err();
    }
    if let Some(e) = startup_failed {
        shutdown_all(
            &runtime,
            None,
            persister.map(|p| p.0),
            Duration::from_secs(opts.shutdown_timeout),
        );
        return Err(e);
    }
    // Every configured bdev is examined (and listed by bdev_get_bdevs) before the socket
    // appears: a client that sees the socket sees the configuration applied.
    wait_examined(&runtime, Duration::from_secs(60));
    let server = if opts.no_rpc_server {
        None
    } else {
        let mut cfg = ServerConfig::new(&opts.rpc_socket);
        cfg.mode = sock_mode;
        match Server::start(cfg, registry.clone()) {
            Ok(s) => {
                tracing::info!("RPC server listening on {}", opts.rpc_socket.display());
                Some(s)
            }
            Err(e) => {
                shutdown_all(
                    &runtime,
                    None,
                    persister.map(|p| p.0),
                    Duration::from_secs(opts.shutdown_timeout),
                );
                return Err(format!("cannot start the RPC server: {e}"));
            }
        }
    };

    if let Some((per, armed)) = &persister {
        armed.store(true, Ordering::Release);
        // Record the state we came up with (also creates the file on first start), through the
        // worker: it is the file's only writer.
        if !per.write_and_wait(Duration::from_secs(60)) {
            tracing::error!("--persist: the initial write did not finish");
        }
    }
    tracing::info!("ferrite target running (pid {})", std::process::id());

    // Wait for a signal or spdk_kill_instance.
    loop {
        if let Some(sig) = signals::wait(200) {
            tracing::info!("{} received: shutting down", signals::name(sig));
            break;
        }
        if stop_rx.try_recv().is_ok() {
            tracing::info!("shutdown requested by RPC");
            break;
        }
    }
    let ok = shutdown_all(
        &runtime,
        server,
        persister.map(|p| p.0),
        Duration::from_secs(opts.shutdown_timeout),
    );
    Ok(if ok { 0 } else { 1 })
}

/// Waits (bounded) until no bdev has an examine in progress.
fn wait_examined(runtime: &Arc<Runtime>, limit: Duration) {
    let (tx, rx) = mpsc::channel();
    let sent = runtime.app_thread().send(move || {
        ferrite_bdev::wait_for_examine(move || {
            let _ = tx.send(());
        })
    });
    if sent.is_err() || rx.recv_timeout(limit).is_err() {
        tracing::warn!(
            "examine of the configured bdevs did not finish within {} s",
            limit.as_secs()
        );
    }
}

fn load_config_text(
    opts: &TgtOptions,
    embedded_default: bool,
) -> Result<Option<(String, String)>, String> {
    if let Some(p) = &opts.persist {
        if p.exists() {
            let t = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read persisted config '{}': {e}", p.display()))?;
            tracing::info!("loading persisted config {}", p.display());
            return Ok(Some((t, format!("persisted config '{}'", p.display()))));
        }
    }
    if let Some(p) = &opts.json {
        let t = std::fs::read_to_string(p)
            .map_err(|e| format!("cannot read config file '{}': {e}", p.display()))?;
        return Ok(Some((t, format!("config file '{}'", p.display()))));
    }
    if embedded_default {
        tracing::info!("no arguments: starting on the embedded default configuration (Malloc0, 64 MiB, with Passthru0 on it)");
        return Ok(Some((
            DEFAULT_CONFIG.to_string(),
            "embedded default config".into(),
        )));
    }
    Ok(None)
}

/// Graceful shutdown; returns false if it timed out or was forced.
fn shutdown_all(
    runtime: &Arc<Runtime>,
    server: Option<Server>,
    persister: Option<Persister>,
    limit: Duration,
) -> bool {
    if let Some(s) = server {
        s.stop();
    }
    // Stop persisting before the bdevs go: the file keeps the configuration to come back to.
    if let Some(p) = persister {
        p.stop();
    }
    // vhost controllers first: their frontends are disconnected and their rings drained, and
    // they release the bdevs they claim.
    ferrite_vhost::shutdown();
    let (tx, rx) = mpsc::channel();
    let sent = runtime.app_thread().send(move || {
        ferrite_bdev::unregister_all(move || {
            let _ = tx.send(());
        })
    });
    let mut ok = sent.is_ok();
    if ok {
        let start = Instant::now();
        loop {
            if rx.recv_timeout(Duration::from_millis(100)).is_ok() {
                break;
            }
            if let Some(sig) = signals::wait(0) {
                tracing::warn!(
                    "{} received during shutdown: exiting now",
                    signals::name(sig)
                );
                std::process::exit(1);
            }
            if start.elapsed() > limit {
                tracing::error!(
                    "shutdown did not finish within {} s: exiting",
                    limit.as_secs()
                );
                ok = false;
                break;
            }
        }
    }
    if ok {
        runtime.stop();
        tracing::info!("ferrite target stopped");
    }
    ok
}
