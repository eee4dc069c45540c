//! `ferrite`: the storage target (`tgt`, the default), its RPC client (`rpc`), the benchmark
//! (`bench`) and NVMe device setup (`setup`).
//!
//! With no arguments at all, `ferrite` starts the target on an embedded default configuration.

mod bench_cmd;
mod bench_server;
mod config;
mod framework_rpc;
mod logging;
mod modules;
mod proc_stat;
mod rpc_client;
mod setup;
mod tgt;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ferrite", version, about = "Ferrite storage framework")]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the storage target.
    Tgt(tgt::TgtOptions),
    /// Call a JSON-RPC method on a running target.
    Rpc(rpc_client::RpcOptions),
    /// NVMe devices for the userspace driver: list, bind to vfio-pci, unbind.
    Setup(setup::SetupOptions),
    /// Benchmark bdevs (bdevperf's options; `ferrite bench --help`).
    #[command(disable_help_flag = true)]
    Bench {
        /// bdevperf-style options.
        #[arg(allow_hyphen_values = true, trailing_var_arg = true)]
        args: Vec<String>,
    },
}

fn main() {
    let no_args = std::env::args().len() <= 1;
    let cli = Cli::parse();
    let code = match cli.cmd {
        None => {
            let opts = <tgt::TgtOptions as clap::FromArgMatches>::from_arg_matches(
                &<tgt::TgtOptions as clap::Args>::augment_args(clap::Command::new("tgt"))
                    .get_matches_from(["tgt"]),
            );
            match opts {
                Ok(o) => tgt::run(o, true),
                Err(e) => {
                    eprintln!("{e}");
                    2
                }
            }
        }
        Some(Cmd::Tgt(o)) => {
            let plain =
                no_args || (o.json.is_none() && o.persist.is_none() && std::env::args().len() <= 2);
            tgt::run(o, plain)
        }
        Some(Cmd::Rpc(o)) => rpc_client::run(o),
        Some(Cmd::Setup(o)) => setup::run(o),
        Some(Cmd::Bench { args }) if args.iter().any(|a| a == "-z") => bench_server::run(&args),
        Some(Cmd::Bench { args }) => bench_cmd::run(args),
    };
    std::process::exit(code);
}
