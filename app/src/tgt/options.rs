//! `ferrite tgt` options, named as SPDK's application options where SPDK has them.

use std::path::PathBuf;

use clap::Args;
use ferrite_reactor::{CpuMask, PollMode, RuntimeConfig};

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
    /// In adaptive mode, how long every thread must be idle before its reactor sleeps when a
    /// poller has I/O in the kernel whose completion will wake it (aio, uring) (µs; 0: at once).
    #[arg(long = "kernel-wait-us", default_value_t = 0)]
    pub kernel_wait_us: u64,
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

impl TgtOptions {
    /// The reactors' configuration these options ask for, on the cores of `cpumask` in `mode`
    /// (both already parsed from [`TgtOptions::cpumask`] and [`TgtOptions::poll_mode`]).
    ///
    /// Thread contract: any thread.
    pub fn runtime_config(&self, cpumask: CpuMask, mode: PollMode) -> RuntimeConfig {
        RuntimeConfig {
            cpumask,
            mode,
            idle_threshold_us: self.idle_threshold_us,
            kernel_wait_us: self.kernel_wait_us,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        o: TgtOptions,
    }

    fn config(args: &[&str]) -> RuntimeConfig {
        let o = Cli::try_parse_from(std::iter::once("tgt").chain(args.iter().copied()))
            .unwrap()
            .o;
        let mask = CpuMask::parse(&o.cpumask).unwrap();
        let mode: PollMode = o.poll_mode.parse().unwrap();
        o.runtime_config(mask, mode)
    }

    #[test]
    fn sleep_options_reach_the_runtime_config() {
        let d = config(&[]);
        let def = RuntimeConfig::default();
        assert_eq!(d.kernel_wait_us, def.kernel_wait_us);
        assert_eq!(d.idle_threshold_us, def.idle_threshold_us);
        assert_eq!(d.mode, PollMode::Adaptive);
        let c = config(&[
            "--kernel-wait-us",
            "40",
            "--idle-threshold-us",
            "500",
            "--poll-mode",
            "interrupt",
            "-m",
            "0x3",
        ]);
        assert_eq!(c.kernel_wait_us, 40);
        assert_eq!(c.idle_threshold_us, 500);
        assert_eq!(c.mode, PollMode::Interrupt);
        assert_eq!(c.cpumask.cores(), &[0, 1]);
        assert!(Cli::try_parse_from(["tgt", "--kernel-wait-us", "-1"]).is_err());
    }
}
