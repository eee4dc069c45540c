//! `ferrite tgt` options, named as SPDK's application options where SPDK has them.

use std::path::PathBuf;

use clap::Args;

/// Options of the long-running target.
#[derive(Debug, Clone, Args)]
pub struct TgtOptions {
    /// Core mask for reactors: hex (0x3) or list ([0,1], [0-3]). The first core hosts the main
    /// reactor.
    #[arg(short = 'm', long = "cpumask", default_value = "0x1")]
    pub cpumask: String,
    /// SPDK JSON config file to load at start-up.
    #[arg(short = 'c', long = "json")]
    pub json: Option<PathBuf>,
    /// RPC listen socket.
    #[arg(short = 'r', long = "rpc-socket", default_value = ferrite_rpc::DEFAULT_RPC_ADDR)]
    pub rpc_socket: PathBuf,
    /// Permissions of the RPC socket (octal).
    #[arg(long = "rpc-socket-mode", default_value = "0600")]
    pub rpc_socket_mode: String,
    /// Do not start an RPC server.
    #[arg(long = "no-rpc-server")]
    pub no_rpc_server: bool,
    /// Stay in the startup state until `framework_start_init`.
    #[arg(long = "wait-for-rpc")]
    pub wait_for_rpc: bool,
    /// Keep loading a config after an entry fails (each failure is logged).
    #[arg(long = "json-ignore-init-errors")]
    pub json_ignore_init_errors: bool,
    /// Reactor poll mode: poll, adaptive or interrupt.
    #[arg(long = "poll-mode", default_value = "adaptive")]
    pub poll_mode: String,
    /// In adaptive mode, how long every thread must be idle before its reactor sleeps (µs).
    #[arg(long = "idle-threshold-us", default_value_t = 1000)]
    pub idle_threshold_us: u64,
    /// Log level: ERROR, WARNING, NOTICE, INFO, DEBUG.
    #[arg(long = "log-level", default_value = "NOTICE")]
    pub log_level: String,
    /// Enable debug logging for a component (reactor, bdev, rpc, null, malloc, passthru, all).
    #[arg(short = 'L', long = "logflag")]
    pub log_flags: Vec<String>,
    /// Keep the configuration in this file: loaded at start if it exists, rewritten atomically
    /// after every successful state-changing RPC.
    #[arg(long = "persist")]
    pub persist: Option<PathBuf>,
    /// Directory where vhost-user controller sockets are created (default: the working
    /// directory), as SPDK's `-S`.
    #[arg(short = 'S', long = "vhost-sock-dir")]
    pub vhost_sock_dir: Option<PathBuf>,
    /// Permissions of vhost-user controller sockets (octal).
    #[arg(long = "vhost-socket-mode", default_value = "0600")]
    pub vhost_socket_mode: String,
    /// Seconds a graceful shutdown may take before the process gives up and exits non-zero.
    #[arg(long = "shutdown-timeout", default_value_t = 30)]
    pub shutdown_timeout: u64,
}
