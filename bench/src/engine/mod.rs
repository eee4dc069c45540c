//! The engine: runs [`JobPlan`]s on a running Ferrite runtime and returns their results.
//!
//! One lightweight thread per reactor used ("bench_<core>") hosts that core's jobs. The calling
//! OS thread (not a reactor) coordinates: it starts the jobs, asks for counters every status
//! interval (for progress lines and plots), stops the jobs at the end (or on a stop request),
//! and collects their statistics. Reactor busy/idle time is sampled around the run.

mod buffers;
mod job;
pub use job::describe_failure;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_bdev::{BdevEvent, Desc};
use ferrite_reactor::{clock, register_poller, PollerHandle, Runtime, ThreadHandle};

use crate::error::BenchError;
use crate::inflight::InFlight;
use crate::plan::JobPlan;
use crate::report::{JobResult, JobStatus, ReactorCpu};
use crate::stats::{Counters, JobStats};
use job::{Job, Phase, Slot, BENCH};

/// What to run.
pub struct EngineConfig {
    /// The jobs (from `jobs_from_options` / `jobs_from_specs`).
    pub plans: Vec<JobPlan>,
    /// How long.
    pub run_time: Duration,
    /// Seconds between interval samples (progress and plot points).
    pub sample_interval: Duration,
    /// I/O outstanding longer than this counts as timed out.
    pub io_timeout: Option<Duration>,
    /// Keep a job running after a failed I/O (`-f`); by default it stops, as bdevperf's.
    pub continue_on_failure: bool,
}

/// What came out.
pub struct EngineOutput {
    /// One per job, in plan order.
    pub results: Vec<JobResult>,
    /// Busy/idle of every reactor during the run.
    pub cpu: Vec<ReactorCpu>,
    /// Ticks per second of the figures above.
    pub tick_rate: u64,
    /// The first data mismatch of each failed verify job.
    pub mismatches: Vec<String>,
    /// The first failed I/O of each job that had one ([`describe_failure`]), and for each job
    /// whose bdev was removed during the run, that.
    pub errors: Vec<String>,
    /// One line per job whose bdev was removed during the run (it ended early, failed):
    /// "job 'J' ended early: bdev 'B' was removed during the run".
    pub removed: Vec<String>,
}

/// The longest the coordinator waits before it looks again whether any job is still running.
const END_POLL: Duration = Duration::from_millis(20);

/// Why the coordinator should look up from waiting.
pub enum Interrupt {
    /// Keep going.
    None,
    /// Stop now and report (e.g. SIGINT).
    Stop,
}

/// A finished job.
struct JobDone {
    /// Plan index.
    index: usize,
    stats: JobStats,
    status: JobStatus,
    /// End tick (early end only).
    end_tsc: u64,
    /// First mismatch.
    mismatch: Option<String>,
    /// First failed I/O.
    error: Option<String>,
    /// Its bdev was removed during the run.
    removed: bool,
}

enum Msg {
    Started(Result<(), BenchError>),
    Sample(Counters),
    Done(Vec<JobDone>),
}

struct ThreadPollers {
    _timeout: Option<PollerHandle>,
    _reset: Vec<PollerHandle>,
}

#[derive(Default)]
struct PollerSlot(std::cell::RefCell<Option<ThreadPollers>>);

/// Runs the jobs. `progress(elapsed_s, merged counters)` is called every sample interval;
/// `interrupt(wait)` is polled while waiting, for at most [`END_POLL`] at a time (return `Stop`
/// to end early: jobs end `Terminated`). The run ends at `run_time`, or as soon as every job
/// has ended by itself (failed I/O, miscompare, its bdev removed), as bdevperf ends its test
/// when its last job has ended; each job's result is then what it would have been at
/// `run_time`. Blocks; call from a non-reactor thread.
pub fn run(
    rt: &Arc<Runtime>,
    cfg: EngineConfig,
    mut progress: impl FnMut(f64, &Counters),
    mut interrupt: impl FnMut(Duration) -> Interrupt,
) -> Result<EngineOutput, BenchError> {
    let cores: Vec<usize> = rt.reactors().iter().map(|r| r.lcore).collect();
    let mut by_reactor: Vec<Vec<(usize, JobPlan)>> = vec![Vec::new(); cores.len()];
    for (i, p) in cfg.plans.iter().enumerate() {
        let r = cores
            .iter()
            .position(|c| *c == p.core)
            .ok_or_else(|| BenchError::CpuMask {
                mask: p.core_mask(),
                reason: format!(
                    "job '{}' is on core {} which runs no reactor",
                    p.label(),
                    p.core
                ),
            })?;
        by_reactor[r].push((i, p.clone()));
    }
    let samples = (cfg.run_time.as_secs_f64() / cfg.sample_interval.as_secs_f64().max(0.001)).ceil()
        as usize
        + 2;
    let (tx, rx) = mpsc::channel::<Msg>();
    // Jobs submit their first I/O as soon as they are set up, before the coordinator's clock
    // below starts: a job that ends early (miscompare) is timed from here, as bdevperf times
    // every job from its `g_start_tsc`.
    let launch_tsc = clock::ticks();
    // Jobs still running: each counts itself off once it has stopped with no I/O outstanding.
    let running = Arc::new(AtomicUsize::new(cfg.plans.len()));
    let mut threads: Vec<ThreadHandle> = Vec::new();
    for (r, jobs) in by_reactor.into_iter().enumerate() {
        if jobs.is_empty() {
            continue;
        }
        let t = rt
            .spawn_thread(&format!("bench_{}", cores[r]), Some(r))
            .map_err(|e| io_err("spawning a bench thread", e))?;
        let tx2 = tx.clone();
        let stop_on_failure = !cfg.continue_on_failure;
        let timeout_ticks = cfg
            .io_timeout
            .map(|d| clock::us_to_ticks(d.as_micros() as u64));
        let running2 = running.clone();
        t.send(move || {
            let r = start_jobs(jobs, samples, timeout_ticks, stop_on_failure, running2);
            let _ = tx2.send(Msg::Started(r));
        })
        .map_err(|e| io_err("starting a bench thread", e))?;
        threads.push(t);
    }
    for _ in 0..threads.len() {
        match recv(&rx, Duration::from_secs(30))? {
            Msg::Started(Ok(())) => {}
            Msg::Started(Err(e)) => {
                stop_all(&threads, &tx);
                let _ = drain_done(&rx, threads.len(), Duration::from_secs(30));
                return Err(e);
            }
            _ => {}
        }
    }
    let cpu0 = rt.reactors();
    let start = Instant::now();
    let mut next_sample = cfg.sample_interval;
    let mut terminated = false;
    let mut all_ended = false;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= cfg.run_time {
            break;
        }
        if !cfg.plans.is_empty() && running.load(Ordering::Acquire) == 0 {
            all_ended = true;
            break;
        }
        let wait = next_sample
            .min(cfg.run_time)
            .saturating_sub(elapsed)
            .min(END_POLL);
        if let Interrupt::Stop = interrupt(wait) {
            terminated = true;
            break;
        }
        if start.elapsed() >= next_sample && next_sample < cfg.run_time {
            let el = start.elapsed().as_secs_f64();
            let mut total = Counters::default();
            for t in &threads {
                let tx2 = tx.clone();
                let _ = t.send(move || {
                    let c = sample(el);
                    let _ = tx2.send(Msg::Sample(c));
                });
            }
            for _ in 0..threads.len() {
                if let Ok(Msg::Sample(c)) = recv(&rx, Duration::from_secs(10)) {
                    total.merge(&c);
                }
            }
            progress(el, &total);
            next_sample += cfg.sample_interval;
        }
    }
    let end_elapsed = start.elapsed().as_secs_f64();
    // Every job ended by itself: each one's own end time stands, up to the planned run time.
    let cap_s = if all_ended {
        cfg.run_time.as_secs_f64()
    } else {
        end_elapsed
    };
    let stop_tsc = clock::ticks();
    stop_all(&threads, &tx);
    let done = drain_done(&rx, threads.len(), Duration::from_secs(60))?;
    let cpu1 = rt.reactors();
    let cpu = cpu1
        .iter()
        .zip(cpu0.iter())
        .map(|(b, a)| ReactorCpu {
            core: b.lcore,
            busy_ticks: b.busy.saturating_sub(a.busy),
            idle_ticks: b.idle.saturating_sub(a.idle),
        })
        .collect();
    let mut results: Vec<Option<JobResult>> = cfg.plans.iter().map(|_| None).collect();
    let mut mismatches = Vec::new();
    let mut errors = Vec::new();
    let mut removed = Vec::new();
    let rate = clock::tick_rate() as f64;
    for d in done {
        let JobDone {
            index: idx,
            stats,
            status,
            end_tsc,
            mismatch: mm,
            error: err,
            removed: gone,
        } = d;
        let status = if terminated && status == JobStatus::Finished {
            JobStatus::Terminated
        } else {
            status
        };
        // A job that stopped early (miscompare) ran until its own end.
        let runtime_s = if end_tsc != 0 && end_tsc < stop_tsc {
            (end_tsc.saturating_sub(launch_tsc) as f64 / rate).min(cap_s)
        } else {
            end_elapsed
        };
        if let Some(m) = mm {
            mismatches.push(m);
        }
        if let Some(e) = err {
            errors.push(e);
        }
        if gone {
            let p = &cfg.plans[idx];
            let line = format!(
                "job '{}' ended early: bdev '{}' was removed during the run",
                p.label(),
                p.bdev
            );
            errors.push(line.clone());
            removed.push(line);
        }
        results[idx] = Some(JobResult {
            plan: cfg.plans[idx].clone(),
            stats,
            runtime_s,
            status,
        });
    }
    let results: Vec<JobResult> = results.into_iter().flatten().collect();
    Ok(EngineOutput {
        results,
        cpu,
        tick_rate: clock::tick_rate(),
        mismatches,
        errors,
        removed,
    })
}

fn io_err(what: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Io {
        context: what.to_string(),
        source: std::io::Error::other(e.to_string()),
    }
}

fn recv(rx: &Receiver<Msg>, t: Duration) -> Result<Msg, BenchError> {
    rx.recv_timeout(t).map_err(|_| {
        io_err(
            "waiting for a bench thread",
            format!("no answer within {} s", t.as_secs()),
        )
    })
}

fn stop_all(threads: &[ThreadHandle], tx: &Sender<Msg>) {
    for t in threads {
        let tx2 = tx.clone();
        let _ = t.send(move || stop_jobs(tx2));
    }
}

fn drain_done(rx: &Receiver<Msg>, n: usize, t: Duration) -> Result<Vec<JobDone>, BenchError> {
    let mut out = Vec::new();
    let mut got = 0;
    let deadline = Instant::now() + t;
    while got < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Msg::Done(v)) => {
                out.extend(v);
                got += 1;
            }
            Ok(_) => {}
            Err(_) => {
                return Err(io_err(
                    "stopping the jobs",
                    "outstanding I/O did not complete within 60 s",
                ))
            }
        }
    }
    Ok(out)
}

/// Runs on a bench thread: opens the bdevs, creates the jobs, submits the first I/O.
fn start_jobs(
    plans: Vec<(usize, JobPlan)>,
    samples: usize,
    timeout_ticks: Option<u64>,
    stop_on_failure: bool,
    running: Arc<AtomicUsize>,
) -> Result<(), BenchError> {
    let ns_mult = ((1_000_000_000u128) << 32) / u128::from(clock::tick_rate());
    let mut jobs = Vec::new();
    for (local, (index, plan)) in plans.into_iter().enumerate() {
        let write =
            plan.workload.writes() || plan.workload.verifies() || plan.workload.modifies_data();
        // A hot remove reaches the job on this thread (events come by message, after the jobs
        // are in place): it stops and closes its descriptor (see `Job::on_removed`).
        let desc = Desc::open(&plan.bdev, write, move |ev| {
            if let BdevEvent::Remove = ev {
                job_removed(local);
            }
        })
        .map_err(|e| {
            io_err(
                &format!(
                    "cannot open bdev '{}' for job '{}'",
                    plan.bdev,
                    plan.label()
                ),
                e,
            )
        })?;
        let ch = desc
            .channel()
            .map_err(|e| io_err("getting a bdev channel", e))?;
        let qd = plan.queue_depth as usize;
        let bufs = buffers::SlotBuffers::new(plan.io_size as usize, qd)?;
        let slots = vec![
            Slot {
                phase: Phase::Idle,
                offset_slot: 0,
                generation: 0,
                submit_tsc: 0,
                timed_out: false,
                verify_start: 0,
            };
            qd
        ];
        let stats = JobStats::new(samples)?;
        jobs.push(Job {
            index,
            local,
            gen: plan.offset_gen(),
            mix: plan.op_mix(),
            busy: InFlight::new(qd),
            plan,
            ch: Some(ch),
            desc: Some(desc),
            stats,
            bufs,
            slots,
            outstanding: 0,
            stopping: false,
            status: JobStatus::Finished,
            generation: 0,
            end_tsc: 0,
            mismatch: None,
            first_error: None,
            ns_mult,
            track_timeouts: timeout_ticks.is_some(),
            stop_on_failure,
            me: 0,
            io_blocks: 0,
            first_block: 0,
            verifies: false,
            removed: false,
            running: running.clone(),
            ended: false,
        });
    }
    let n = jobs.len();
    let resets: Vec<(usize, Duration)> = jobs
        .iter()
        .filter_map(|j| j.plan.reset_interval().map(|d| (j.local, d)))
        .collect();
    let jobs: Vec<Box<std::cell::RefCell<Job>>> = jobs
        .into_iter()
        .map(|j| {
            let cell = Box::new(std::cell::RefCell::new(j));
            let me = &*cell as *const std::cell::RefCell<Job> as u64;
            cell.borrow_mut().precompute(me);
            cell
        })
        .collect();
    BENCH.with(|l| *l.jobs.borrow_mut() = jobs);
    // First I/O of every slot.
    for local in 0..n {
        let qd = BENCH
            .with(|l| l.jobs.borrow()[local].borrow().plan.queue_depth)
            .unwrap_or(0);
        for s in 0..qd as usize {
            let Some(io) = ferrite_bdev::alloc_io() else {
                return Err(io_err(
                    "allocating I/O",
                    "the thread's I/O pool is exhausted",
                ));
            };
            BENCH.with(|l| {
                let jobs = l.jobs.borrow();
                let mut j = jobs[local].borrow_mut();
                j.outstanding += 1;
                j.submit_next(io, s);
            });
        }
    }
    let timeout = match timeout_ticks {
        Some(t) => Some(
            register_poller("bench_timeouts", 10_000, move || {
                BENCH
                    .with(|l| {
                        l.jobs
                            .borrow()
                            .iter()
                            .map(|j| j.borrow_mut().check_timeouts(t))
                            .sum()
                    })
                    .unwrap_or(0)
            })
            .map_err(|e| io_err("registering the timeout poller", e))?,
        ),
        None => None,
    };
    let mut reset = Vec::new();
    for (local, every) in resets {
        let h = register_poller("bench_reset", every.as_micros() as u64, move || {
            let ch = BENCH.with(|l| {
                let jobs = l.jobs.borrow();
                let j = jobs[local].borrow();
                if j.stopping {
                    return 0;
                }
                if let (Some(ch), Some(mut io)) = (&j.ch, ferrite_bdev::alloc_io()) {
                    io.prep_reset(job::on_reset_done);
                    ch.submit(io);
                }
                1
            });
            ch.unwrap_or(0)
        })
        .map_err(|e| io_err("registering the reset poller", e))?;
        reset.push(h);
    }
    ferrite_reactor::with_local(|p: &PollerSlot| {
        *p.0.borrow_mut() = Some(ThreadPollers {
            _timeout: timeout,
            _reset: reset,
        })
    });
    Ok(())
}

/// Runs on a bench thread: the bdev of its job number `local` is being removed.
fn job_removed(local: usize) {
    BENCH.with(|l| {
        if let Some(j) = l.jobs.borrow().get(local) {
            j.borrow_mut().on_removed();
        }
    });
}

/// Runs on a bench thread: interim counters of its jobs, and a plot point for each.
fn sample(elapsed_s: f64) -> Counters {
    BENCH
        .with(|l| {
            let mut total = Counters::default();
            for j in l.jobs.borrow().iter() {
                let mut j = j.borrow_mut();
                j.stats.mark_interval(elapsed_s);
                total.merge(&j.stats.counters());
            }
            total
        })
        .unwrap_or_default()
}

/// Runs on a bench thread: stop submitting; once every job has no I/O outstanding, send the
/// statistics back and exit the thread.
fn stop_jobs(tx: Sender<Msg>) {
    ferrite_reactor::with_local(|p: &PollerSlot| p.0.borrow_mut().take());
    BENCH.with(|l| {
        for j in l.jobs.borrow().iter() {
            let mut j = j.borrow_mut();
            j.stopping = true;
            if j.outstanding == 0 {
                if j.end_tsc == 0 {
                    j.end_tsc = clock::ticks();
                }
                j.ended();
            }
        }
    });
    let mut tx = Some(tx);
    let slot: Arc<std::sync::Mutex<Option<PollerHandle>>> = Arc::default();
    let s2 = slot.clone();
    let h = register_poller("bench_drain", 0, move || {
        let all_idle = BENCH
            .with(|l| l.jobs.borrow().iter().all(|j| j.borrow().outstanding == 0))
            .unwrap_or(true);
        if !all_idle {
            return 0;
        }
        let jobs = BENCH
            .with(|l| std::mem::take(&mut *l.jobs.borrow_mut()))
            .unwrap_or_default();
        let out = jobs
            .into_iter()
            .map(|j| {
                let mut j = j.into_inner();
                j.stats.settle();
                let end = if j.status == JobStatus::Failed {
                    j.end_tsc
                } else {
                    0
                };
                JobDone {
                    index: j.index,
                    stats: j.stats,
                    status: j.status,
                    end_tsc: end,
                    mismatch: j.mismatch,
                    error: j.first_error,
                    removed: j.removed,
                }
            })
            .collect();
        if let Some(tx) = tx.take() {
            let _ = tx.send(Msg::Done(out));
        }
        if let Ok(mut g) = s2.lock() {
            g.take();
        }
        ferrite_reactor::exit_current();
        1
    });
    match h {
        Ok(h) => {
            if let Ok(mut g) = slot.lock() {
                *g = Some(h);
            }
        }
        Err(e) => tracing::error!("bench: cannot drain: {e}"),
    }
}
