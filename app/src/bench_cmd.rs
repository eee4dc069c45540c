//! `ferrite bench`: bdevperf's options and output, run inside the framework.
//!
//! Start-up as the target (core mask, modules, SPDK JSON config through the RPC method table),
//! then resolve the bdevs (default: every bdev nobody has claimed, as bdevperf's leaf bdevs),
//! plan the jobs, run them, print the table (or JSON), draw the plot, remove the bdevs and stop.
//! SIGINT/SIGTERM end the run early: jobs report `terminated`, results are still printed.

use std::sync::{mpsc, Arc};
use std::time::Duration;

use ferrite_bench::engine::{self, EngineConfig, Interrupt};
use ferrite_bench::{
    jobs_from_options, jobs_from_specs, parse_job_file, BdevInfo, BenchError, BenchOptions,
    JobDefaults, JobStatus, OutputFormat, ProgressPrinter,
};
use ferrite_reactor::{CpuMask, PollMode, Runtime, RuntimeConfig};
use ferrite_rpc::{Registry, ServerState, STARTUP};

use crate::config::{apply, parse_config, ApplyOptions};
use crate::framework_rpc::{self, FrameworkCtx};

/// Runs `ferrite bench ARGS`; returns the exit code.
pub fn run(args: Vec<String>) -> i32 {
    crate::tgt::block_signals();
    let mut argv = vec!["ferrite bench".to_string()];
    argv.extend(args);
    let (opts, warnings) = match BenchOptions::parse_and_validate(&argv) {
        Ok(x) => x,
        Err(BenchError::Help(h)) => {
            println!("{h}");
            return 0;
        }
        Err(e) => {
            eprintln!("ferrite bench: {e}");
            return 2;
        }
    };
    if let Err(e) = crate::logging::init("WARNING", &[]) {
        eprintln!("ferrite bench: {e}");
        return 2;
    }
    for w in warnings {
        eprintln!("ferrite bench: warning: {w}");
    }
    match bench(&opts) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ferrite bench: {e}");
            1
        }
    }
}

fn bench(opts: &BenchOptions) -> Result<i32, String> {
    let mask_text = opts.cpumask.clone().unwrap_or_else(|| "0x1".into());
    let mask = CpuMask::parse(&mask_text).map_err(|e| e.to_string())?;
    let rt = Runtime::start(RuntimeConfig {
        cpumask: mask.clone(),
        // Adaptive: identical to poll while any poller has work (null, malloc, NVMe, vhost
        // with I/O in flight); sleeps while every I/O waits in the kernel (disk files), where
        // spinning only competes with the completion work (docs/PERFORMANCE.md).
        mode: opts.poll_mode.unwrap_or(PollMode::Adaptive),
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;
    let result = bench_on(&rt, opts, &mask);
    // Tear down: remove every bdev (waits for nothing: the jobs are done), stop reactors.
    let (tx, rx) = mpsc::channel();
    let _ = rt.app_thread().send(move || {
        ferrite_bdev::unregister_all(move || {
            let _ = tx.send(());
        })
    });
    let _ = rx.recv_timeout(Duration::from_secs(30));
    rt.stop();
    result
}

fn bench_on(rt: &Arc<Runtime>, opts: &BenchOptions, mask: &CpuMask) -> Result<i32, String> {
    crate::modules::register_bdev_modules();
    let state = Arc::new(ServerState::new(STARTUP));
    let registry = Registry::new(state.clone());
    framework_rpc::register(&FrameworkCtx {
        runtime: rt.clone(),
        registry: registry.clone(),
        shutdown: Arc::new(|| {}),
    });
    crate::modules::register_rpcs(&registry, &rt.app_thread());
    if let Some(path) = &opts.config {
        let source = format!("config file '{}'", path.display());
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {source}: {e}"))?;
        let entries = parse_config(&text, &source)?;
        let ao = ApplyOptions {
            source,
            ignore_errors: false,
            start_init: true,
            timeout: Duration::from_secs(60),
        };
        apply(&registry, &entries, &ao)?;
    }
    // The buffer pool is built now (with the config's start-up options), not by the first I/O.
    if state.get() == STARTUP {
        framework_rpc::start_framework(&state)?;
    }
    let (tx, rx) = mpsc::channel();
    rt.app_thread()
        .send(move || {
            ferrite_bdev::wait_for_examine(move || {
                let _ = tx.send(());
            })
        })
        .map_err(|e| e.to_string())?;
    rx.recv_timeout(Duration::from_secs(30))
        .map_err(|_| "examine of the configured bdevs did not finish".to_string())?;
    let infos: Vec<BdevInfo> = ferrite_bdev::list()
        .iter()
        .filter(|b| b.claim().is_none() || opts.targets.iter().any(|t| t == b.name()))
        .map(|b| BdevInfo {
            name: b.name().to_string(),
            block_size: b.block_size(),
            num_blocks: b.num_blocks(),
        })
        .collect();
    let cores = mask.cores().to_vec();
    let plans = match &opts.job_file {
        Some(jf) => {
            let specs =
                parse_job_file(jf, &JobDefaults::from_options(opts)).map_err(|e| e.to_string())?;
            jobs_from_specs(&specs, opts, &infos, &cores, &jf.display().to_string())
                .map_err(|e| e.to_string())?
        }
        None => jobs_from_options(opts, &infos, &cores).map_err(|e| e.to_string())?,
    };
    let interval = if opts.status_interval_s > 0.0 {
        opts.status_interval_s
    } else {
        1.0
    };
    let print_progress = opts.status_interval_s > 0.0;
    let mut printer = ProgressPrinter::for_options(opts);
    let cfg = EngineConfig {
        plans,
        run_time: opts.run_time(),
        sample_interval: Duration::from_secs_f64(interval),
        io_timeout: opts.io_timeout(),
        continue_on_failure: opts.continue_on_failure,
    };
    let out = engine::run(
        rt,
        cfg,
        |el, c| {
            if print_progress {
                let _ = printer.update(el, c);
            }
        },
        |wait| match crate::tgt::wait_signal(wait.as_millis() as u64) {
            Some(_) => Interrupt::Stop,
            None => Interrupt::None,
        },
    )
    .map_err(|e| e.to_string())?;
    if print_progress {
        let _ = printer.finish();
    }
    for e in &out.errors {
        eprintln!("ferrite bench: {e}");
    }
    for m in &out.mismatches {
        eprintln!("ferrite bench: verify failed: {m}");
    }
    match opts.format {
        OutputFormat::Json => println!(
            "{}",
            ferrite_bench::report::to_json(&out.results, &out.cpu, out.tick_rate)
                .map_err(|e| e.to_string())?
        ),
        OutputFormat::Table => {
            ferrite_bench::report::print_table(&out.results, &out.cpu, out.tick_rate)
                .map_err(|e| e.to_string())?
        }
    }
    if let Some(p) = &opts.plot {
        ferrite_bench::plot::write_svg(p, &out.results).map_err(|e| e.to_string())?;
    }
    let failed = out.results.iter().any(|r| r.status == JobStatus::Failed);
    Ok(if failed { 1 } else { 0 })
}
