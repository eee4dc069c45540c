//! `ferrite-bench`: the pure-logic half of Ferrite's bdevperf-compatible benchmark.
//!
//! Everything here works without a block device; the engine that drives bdevs uses it
//! like this:
//!
//! 1. [`BenchOptions::parse_from`] + [`BenchOptions::validate`] (print the warnings).
//! 2. Resolve the bdevs into [`BdevInfo`]s and the reactor cores (from `-m`).
//! 3. [`jobs_from_options`] → `Vec<JobPlan>` (handles `-T`, `-C` and `-j` job files).
//! 4. Per job: [`JobPlan::offset_gen`] → [`OffsetGen`], [`JobPlan::op_mix`] →
//!    [`OpMix`], [`JobStats::new`]; keep `queue_depth` I/O outstanding, each at
//!    [`JobPlan::slot_offset`]`(gen.next())` with command `mix.next()`; for verify jobs
//!    pick slots with [`OffsetGen::next_free`] against an [`InFlight`] set, call
//!    [`verify::fill`] before the write and [`verify::check`] after reading back;
//!    [`JobStats::record`] every completion, [`JobStats::record_timeout`] on `-k` expiry.
//! 5. Every `status_interval_s`: [`JobStats::mark_interval`] on each job and
//!    [`ProgressPrinter::update`] with the merged [`Counters`].
//! 6. At the end: [`JobResult`]s → [`report::print_table`] or [`report::to_json`], and
//!    [`plot::write_svg`] when `--plot` was given.
//!
//! Hot-path pieces ([`OffsetGen::next`], [`OffsetGen::next_free`], [`InFlight`],
//! [`OpMix::next`], [`verify::fill`],
//! [`verify::check`], [`JobStats::record`]) never allocate.

pub mod cpumask;
pub mod engine;
pub mod error;
mod fasthist;
pub mod inflight;
pub mod jobfile;
pub mod offsets;
pub mod opmix;
pub mod options;
pub mod permutation;
pub mod plan;
pub mod plot;
pub mod progress;
pub mod report;
pub mod rng;
pub mod stats;
pub mod units;
pub mod verify;
pub mod workload;

#[cfg(test)]
mod alloc_tests;

pub use cpumask::{format_core_mask, parse_cpumask};
pub use error::{BenchError, ErrorKind};
pub use inflight::InFlight;
pub use jobfile::{parse_job_file, parse_job_str, JobDefaults, JobSpec};
pub use offsets::{OffsetGen, RandomMap, Sequential, Uniform, Zipf};
pub use opmix::{IoOp, OpMix};
pub use options::{check_io_size, BenchOptions, OutputFormat, ProgressMode};
pub use plan::{jobs_from_options, jobs_from_specs, BdevInfo, JobPlan, OffsetPattern};
pub use progress::ProgressPrinter;
pub use report::{JobResult, JobStatus, ReactorCpu};
pub use stats::{Counters, IntervalSample, JobStats, Percentiles};
pub use verify::{Mismatch, MismatchCause};
pub use workload::Workload;
