//! Final results: bdevperf's table (plus percentile and CPU sections) and JSON.
//!
//! The table reproduces bdevperf's format string for string (`Latency(us)` header,
//! `Device Information` columns, a `Job:` line and a row per job, the `====` rule and the
//! `Total` row), minus the `\r` bdevperf uses to overwrite its progress line. Our extras
//! follow it: latency percentiles per job and in total, and per-reactor CPU usage with
//! "IOPS per busy core".

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::Write;

use serde::Serialize;

use crate::error::BenchError;
use crate::plan::JobPlan;
pub use crate::progress::ProgressPrinter;
use crate::stats::{Counters, JobStats, Percentiles};
use crate::units::mib_per_s;

/// How a job ended (bdevperf's `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Ran for the whole time.
    Finished,
    /// Stopped early because of an I/O error or miscompare.
    Failed,
    /// Stopped early by a shutdown request.
    Terminated,
}

impl JobStatus {
    /// bdevperf's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Finished => "finished",
            JobStatus::Failed => "failed",
            JobStatus::Terminated => "terminated",
        }
    }
}

/// One job's outcome, as the engine hands it over.
#[derive(Debug, Clone)]
pub struct JobResult {
    /// What was run.
    pub plan: JobPlan,
    /// What was measured.
    pub stats: JobStats,
    /// Seconds from the start of the run to the end of this job.
    pub runtime_s: f64,
    /// How it ended.
    pub status: JobStatus,
}

/// Busy/idle time of one reactor during the run, in ticks of `tick_rate` Hz.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReactorCpu {
    /// The core the reactor runs on.
    pub core: usize,
    /// Ticks spent doing work.
    pub busy_ticks: u64,
    /// Ticks spent polling with nothing to do.
    pub idle_ticks: u64,
}

impl ReactorCpu {
    /// Busy share in percent (0 when no ticks were counted).
    pub fn busy_pct(&self) -> f64 {
        let total = self.busy_ticks as f64 + self.idle_ticks as f64;
        if total > 0.0 {
            100.0 * self.busy_ticks as f64 / total
        } else {
            0.0
        }
    }

    /// Idle share in percent (0 when no ticks were counted).
    pub fn idle_pct(&self) -> f64 {
        let total = self.busy_ticks as f64 + self.idle_ticks as f64;
        if total > 0.0 {
            100.0 * self.idle_ticks as f64 / total
        } else {
            0.0
        }
    }
}

/// The numbers of one table row, in bdevperf's units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Run time in seconds.
    pub runtime_s: f64,
    /// Successful I/O per second.
    pub iops: f64,
    /// MiB per second.
    pub mibps: f64,
    /// Failed I/O per second.
    pub fail_per_s: f64,
    /// Timed-out I/O per second.
    pub timeout_per_s: f64,
    /// Mean latency, µs.
    pub avg_us: f64,
    /// Minimum latency, µs.
    pub min_us: f64,
    /// Maximum latency, µs.
    pub max_us: f64,
    /// Percentiles, ns.
    pub percentiles: Percentiles,
    /// The raw counters.
    pub counters: Counters,
}

fn ns_to_us(ns: f64) -> f64 {
    ns / 1000.0
}

impl JobResult {
    /// This job's row.
    pub fn summary(&self) -> Summary {
        let c = self.stats.counters();
        let rate = |n: f64| {
            if self.runtime_s > 0.0 {
                n / self.runtime_s
            } else {
                0.0
            }
        };
        Summary {
            runtime_s: self.runtime_s,
            iops: rate(c.ios as f64),
            mibps: mib_per_s(rate(c.bytes as f64)),
            fail_per_s: rate(c.failed as f64),
            timeout_per_s: rate(c.timed_out as f64),
            avg_us: ns_to_us(c.avg_latency_ns()),
            min_us: ns_to_us(c.min_latency_ns() as f64),
            max_us: ns_to_us(c.lat_max_ns as f64),
            percentiles: self.stats.percentiles(),
            counters: c,
        }
    }
}

/// The `Total` row: rates summed over jobs (as bdevperf), latency averaged over all
/// completions, min/max over all jobs, percentiles of the merged histogram.
pub fn total_summary(results: &[JobResult]) -> Result<Summary, BenchError> {
    let merged = JobStats::merged(results.iter().map(|r| &r.stats))?;
    let c = merged.counters();
    let mut t = Summary {
        runtime_s: results.iter().map(|r| r.runtime_s).fold(0.0, f64::max),
        iops: 0.0,
        mibps: 0.0,
        fail_per_s: 0.0,
        timeout_per_s: 0.0,
        avg_us: ns_to_us(c.avg_latency_ns()),
        min_us: ns_to_us(c.min_latency_ns() as f64),
        max_us: ns_to_us(c.lat_max_ns as f64),
        percentiles: merged.percentiles(),
        counters: c,
    };
    for r in results {
        let s = r.summary();
        t.iops += s.iops;
        t.mibps += s.mibps;
        t.fail_per_s += s.fail_per_s;
        t.timeout_per_s += s.timeout_per_s;
    }
    Ok(t)
}

/// Distinct cores used by the jobs (bdevperf's `core_count`).
pub fn core_count(results: &[JobResult]) -> usize {
    results
        .iter()
        .map(|r| r.plan.core)
        .collect::<HashSet<_>>()
        .len()
}

/// Total IOPS divided by the number of busy cores (Σ busy share over reactors);
/// `None` when no busy time was reported.
pub fn iops_per_busy_core(total_iops: f64, cpu: &[ReactorCpu]) -> Option<f64> {
    let busy_cores: f64 = cpu.iter().map(|c| c.busy_pct() / 100.0).sum();
    (busy_cores > 0.0).then(|| total_iops / busy_cores)
}

/// Row labels: the job name, or `name (core N)` when several jobs share a name.
fn row_labels(results: &[JobResult]) -> Vec<String> {
    let mut seen = HashSet::new();
    let duplicated = results.iter().any(|r| !seen.insert(r.plan.name.as_str()));
    results
        .iter()
        .map(|r| {
            if duplicated {
                r.plan.label()
            } else {
                r.plan.name.clone()
            }
        })
        .collect()
}

const RULE_WIDTH: usize = 115;
const LATENCY_HEADER_WIDTH: usize = 107;

/// Renders the full text report.
pub fn render_table(
    results: &[JobResult],
    cpu: &[ReactorCpu],
    tick_rate: u64,
) -> Result<String, BenchError> {
    let mut s = String::new();
    // `write!` into a String cannot fail; the results are ignored deliberately.
    let _ = writeln!(s);
    let _ = writeln!(s, "{:>LATENCY_HEADER_WIDTH$}", "Latency(us)");
    let _ = writeln!(
        s,
        " {:<28}: {:>10} {:>10} {:>10} {:>10} {:>8} {:>10} {:>10} {:>10}",
        "Device Information",
        "runtime(s)",
        "IOPS",
        "MiB/s",
        "Fail/s",
        "TO/s",
        "Average",
        "min",
        "max"
    );
    for r in results {
        let p = &r.plan;
        let j = r.summary();
        if p.workload.is_mixed() {
            let _ = writeln!(
                s,
                "Job: {} (Core Mask {}, workload: {}, percentage: {}, depth: {}, IO size: {})",
                p.name,
                p.core_mask(),
                p.workload,
                p.rwmixread,
                p.queue_depth,
                p.io_size
            );
        } else {
            let _ = writeln!(
                s,
                "Job: {} (Core Mask {}, workload: {}, depth: {}, IO size: {})",
                p.name,
                p.core_mask(),
                p.workload,
                p.queue_depth,
                p.io_size
            );
        }
        if r.status == JobStatus::Failed {
            let _ = writeln!(
                s,
                "Job: {} ended in about {:.2} seconds with error",
                p.name, r.runtime_s
            );
        }
        if p.workload.verifies() {
            let _ = writeln!(
                s,
                "\t Verification LBA range: start {:#x} length {:#x}",
                p.offset / p.io_size.max(1),
                p.num_slots()
            );
        }
        let _ = writeln!(
            s,
            "\t {:<20}: {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>8.2} {:>10.2} {:>10.2} {:>10.2}",
            p.name,
            j.runtime_s,
            j.iops,
            j.mibps,
            j.fail_per_s,
            j.timeout_per_s,
            j.avg_us,
            j.min_us,
            j.max_us
        );
    }
    let total = total_summary(results)?;
    let _ = writeln!(s, " {}", "=".repeat(RULE_WIDTH));
    let _ = writeln!(
        s,
        " {:<28}: {:>10} {:>10.2} {:>10.2} {:>10.2} {:>8.2} {:>10.2} {:>10.2} {:>10.2}",
        "Total",
        "",
        total.iops,
        total.mibps,
        total.fail_per_s,
        total.timeout_per_s,
        total.avg_us,
        total.min_us,
        total.max_us
    );

    // Percentiles.
    let pct_width = 1 + 28 + 2 + 5 * 11 - 1;
    let _ = writeln!(s);
    let _ = writeln!(s, "{:>pct_width$}", "Latency percentiles(us)");
    let _ = write!(s, " {:<28}:", "Device Information");
    for (label, _) in Percentiles::POINTS {
        let _ = write!(s, " {label:>10}");
    }
    let _ = writeln!(s);
    for (r, label) in results.iter().zip(row_labels(results)) {
        let _ = write!(s, "\t {label:<20}:");
        for v in r.stats.percentiles().values_ns() {
            let _ = write!(s, " {:>10.2}", ns_to_us(v as f64));
        }
        let _ = writeln!(s);
    }
    let _ = write!(s, " {:<28}:", "Total");
    for v in total.percentiles.values_ns() {
        let _ = write!(s, " {:>10.2}", ns_to_us(v as f64));
    }
    let _ = writeln!(s);

    // CPU.
    if !cpu.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(s, " CPU usage per reactor (tick rate {tick_rate} Hz)");
        let _ = writeln!(
            s,
            " {:>6} {:>12} {:>8} {:>8}",
            "Core", "busy(s)", "Busy%", "Idle%"
        );
        for c in cpu {
            let busy_s = if tick_rate > 0 {
                c.busy_ticks as f64 / tick_rate as f64
            } else {
                0.0
            };
            let _ = writeln!(
                s,
                " {:>6} {:>12.2} {:>8.2} {:>8.2}",
                c.core,
                busy_s,
                c.busy_pct(),
                c.idle_pct()
            );
        }
        match iops_per_busy_core(total.iops, cpu) {
            Some(v) => {
                let _ = writeln!(s, " IOPS per busy core: {v:.2}");
            }
            None => {
                let _ = writeln!(s, " IOPS per busy core: n/a (no busy time reported)");
            }
        }
    }
    Ok(s)
}

/// Writes the text report to `out`.
pub fn write_table<W: Write>(
    out: &mut W,
    results: &[JobResult],
    cpu: &[ReactorCpu],
    tick_rate: u64,
) -> Result<(), BenchError> {
    let text = render_table(results, cpu, tick_rate)?;
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|source| BenchError::Io {
            context: "cannot write the results table".to_string(),
            source,
        })
}

/// Prints the text report to standard output.
pub fn print_table(
    results: &[JobResult],
    cpu: &[ReactorCpu],
    tick_rate: u64,
) -> Result<(), BenchError> {
    write_table(&mut std::io::stdout().lock(), results, cpu, tick_rate)
}

/// Percentiles in µs, keyed as in the table.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PercentilesUs {
    /// Median.
    pub p50: f64,
    /// 90th.
    pub p90: f64,
    /// 99th.
    pub p99: f64,
    /// 99.9th.
    #[serde(rename = "p99.9")]
    pub p99_9: f64,
    /// 99.99th.
    #[serde(rename = "p99.99")]
    pub p99_99: f64,
}

impl From<Percentiles> for PercentilesUs {
    fn from(p: Percentiles) -> Self {
        let us = |ns: u64| ns_to_us(ns as f64);
        PercentilesUs {
            p50: us(p.p50),
            p90: us(p.p90),
            p99: us(p.p99),
            p99_9: us(p.p99_9),
            p99_99: us(p.p99_99),
        }
    }
}

/// `verify_range` of a verify job, in I/O units (as bdevperf).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VerifyRange {
    /// First I/O slot (region offset / io_size).
    pub start: u64,
    /// Number of slots.
    pub length: u64,
}

/// One entry of `results`, field for field as bdevperf's perform_tests, plus extras.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JsonJob {
    /// Job name (the bdev name).
    pub job: String,
    /// `0x…` core mask.
    pub core_mask: String,
    /// Workload name.
    pub workload: crate::workload::Workload,
    /// Read percentage, rw/randrw only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentage: Option<u8>,
    /// finished / failed / terminated.
    pub status: JobStatus,
    /// Verify region, verify/reset only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_range: Option<VerifyRange>,
    /// Queue depth.
    pub queue_depth: u32,
    /// I/O size in bytes.
    pub io_size: u64,
    /// Run time, s.
    pub runtime: f64,
    /// I/O per second.
    pub iops: f64,
    /// MiB per second.
    pub mibps: f64,
    /// Failed I/O count.
    pub io_failed: u64,
    /// Timed-out I/O count.
    pub io_timeout: u64,
    /// Mean latency, µs.
    pub avg_latency_us: f64,
    /// Minimum latency, µs.
    pub min_latency_us: f64,
    /// Maximum latency, µs.
    pub max_latency_us: f64,
    /// Our extra: percentiles, µs.
    pub latency_percentiles_us: PercentilesUs,
    /// Our extra: the bdev.
    pub bdev: String,
    /// Our extra: the core.
    pub core: usize,
    /// Our extra: the job-file section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub section: Option<String>,
}

/// The `total` object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JsonTotal {
    /// Summed IOPS.
    pub iops: f64,
    /// Summed MiB/s.
    pub mibps: f64,
    /// Failed I/O count.
    pub io_failed: u64,
    /// Timed-out I/O count.
    pub io_timeout: u64,
    /// Mean latency over all completions, µs.
    pub avg_latency_us: f64,
    /// Minimum latency, µs.
    pub min_latency_us: f64,
    /// Maximum latency, µs.
    pub max_latency_us: f64,
    /// Percentiles of all jobs together, µs.
    pub latency_percentiles_us: PercentilesUs,
}

/// One entry of `cpu`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JsonCpu {
    /// Core.
    pub core: usize,
    /// Busy ticks.
    pub busy_ticks: u64,
    /// Idle ticks.
    pub idle_ticks: u64,
    /// Busy seconds (`busy_ticks / tick_rate`).
    pub busy_s: f64,
    /// Busy share, %.
    pub busy_pct: f64,
    /// Idle share, %.
    pub idle_pct: f64,
}

/// The whole JSON document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JsonReport {
    /// Per-job results (bdevperf's shape).
    pub results: Vec<JsonJob>,
    /// Distinct cores used by the jobs.
    pub core_count: usize,
    /// Our extra: totals.
    pub total: JsonTotal,
    /// Our extra: per-reactor CPU usage.
    pub cpu: Vec<JsonCpu>,
    /// Our extra: total IOPS per busy core (null when unknown).
    pub iops_per_busy_core: Option<f64>,
    /// Our extra: the tick rate of the CPU numbers, Hz.
    pub tick_rate: u64,
}

/// Builds the JSON document.
pub fn json_report(
    results: &[JobResult],
    cpu: &[ReactorCpu],
    tick_rate: u64,
) -> Result<JsonReport, BenchError> {
    let jobs = results
        .iter()
        .map(|r| {
            let p = &r.plan;
            let s = r.summary();
            JsonJob {
                job: p.name.clone(),
                core_mask: p.core_mask(),
                workload: p.workload,
                percentage: p.workload.is_mixed().then_some(p.rwmixread),
                status: r.status,
                verify_range: p.workload.verifies().then(|| VerifyRange {
                    start: p.offset / p.io_size.max(1),
                    length: p.num_slots(),
                }),
                queue_depth: p.queue_depth,
                io_size: p.io_size,
                runtime: s.runtime_s,
                iops: s.iops,
                mibps: s.mibps,
                io_failed: s.counters.failed,
                io_timeout: s.counters.timed_out,
                avg_latency_us: s.avg_us,
                min_latency_us: s.min_us,
                max_latency_us: s.max_us,
                latency_percentiles_us: s.percentiles.into(),
                bdev: p.bdev.clone(),
                core: p.core,
                section: p.section.clone(),
            }
        })
        .collect();
    let t = total_summary(results)?;
    Ok(JsonReport {
        results: jobs,
        core_count: core_count(results),
        total: JsonTotal {
            iops: t.iops,
            mibps: t.mibps,
            io_failed: t.counters.failed,
            io_timeout: t.counters.timed_out,
            avg_latency_us: t.avg_us,
            min_latency_us: t.min_us,
            max_latency_us: t.max_us,
            latency_percentiles_us: t.percentiles.into(),
        },
        cpu: cpu
            .iter()
            .map(|c| JsonCpu {
                core: c.core,
                busy_ticks: c.busy_ticks,
                idle_ticks: c.idle_ticks,
                busy_s: if tick_rate > 0 {
                    c.busy_ticks as f64 / tick_rate as f64
                } else {
                    0.0
                },
                busy_pct: c.busy_pct(),
                idle_pct: c.idle_pct(),
            })
            .collect(),
        iops_per_busy_core: iops_per_busy_core(t.iops, cpu),
        tick_rate,
    })
}

/// The JSON document as pretty-printed text (fields in the documented order).
pub fn to_json(
    results: &[JobResult],
    cpu: &[ReactorCpu],
    tick_rate: u64,
) -> Result<String, BenchError> {
    Ok(serde_json::to_string_pretty(&json_report(
        results, cpu, tick_rate,
    )?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::OffsetPattern;
    use crate::workload::Workload;

    pub(crate) fn plan(name: &str, core: usize, workload: Workload) -> JobPlan {
        JobPlan {
            name: name.into(),
            section: None,
            bdev: name.into(),
            block_size: 512,
            core,
            workload,
            io_size: 4096,
            queue_depth: 128,
            rwmixread: 70,
            offset: 0,
            length: 4096 * 1000,
            pattern: OffsetPattern::Sequential,
            seed: 1,
            verify_seed: 1,
        }
    }

    /// 10 s, 1 000 000 ok I/O of 4 KiB: 500 000 at 5 µs and 500 000 at 15 µs, 20
    /// failures at 10 µs, 3 timeouts.
    pub(crate) fn result(name: &str, core: usize, workload: Workload) -> JobResult {
        let mut stats = JobStats::new(16).unwrap();
        for i in 0..1_000_000u64 {
            stats.record(if i % 2 == 0 { 5_000 } else { 15_000 }, 4096, true);
            if i % 100_000 == 99_999 {
                stats.mark_interval(((i + 1) / 100_000) as f64);
            }
        }
        for _ in 0..20 {
            stats.record(10_000, 4096, false);
        }
        for _ in 0..3 {
            stats.record_timeout();
        }
        JobResult {
            plan: plan(name, core, workload),
            stats,
            runtime_s: 10.0,
            status: JobStatus::Finished,
        }
    }

    #[test]
    fn summary_numbers() {
        let s = result("Null0", 0, Workload::RandRead).summary();
        assert_eq!(s.iops, 100_000.0);
        assert_eq!(s.mibps, 100_000.0 * 4096.0 / 1048576.0);
        assert_eq!(s.fail_per_s, 2.0);
        assert_eq!(s.timeout_per_s, 0.3);
        assert!((s.avg_us - 10.0).abs() < 1e-9);
        assert_eq!((s.min_us, s.max_us), (5.0, 15.0));
    }

    #[test]
    fn golden_table() {
        let mut a = result("Null0", 0, Workload::RandRead);
        let mut b = result("Malloc0", 1, Workload::RandRw);
        b.runtime_s = 5.0;
        b.status = JobStatus::Failed;
        a.plan.queue_depth = 32;
        let cpu = [
            ReactorCpu {
                core: 0,
                busy_ticks: 750,
                idle_ticks: 250,
            },
            ReactorCpu {
                core: 1,
                busy_ticks: 250,
                idle_ticks: 750,
            },
        ];
        let text = render_table(&[a, b], &cpu, 100).unwrap();
        let expected = concat!(
            "\n",
            "                                                                                                Latency(us)\n",
            " Device Information          : runtime(s)       IOPS      MiB/s     Fail/s     TO/s    Average        min        max\n",
            "Job: Null0 (Core Mask 0x1, workload: randread, depth: 32, IO size: 4096)\n",
            "\t Null0               :      10.00  100000.00     390.62       2.00     0.30      10.00       5.00      15.00\n",
            "Job: Malloc0 (Core Mask 0x2, workload: randrw, percentage: 70, depth: 128, IO size: 4096)\n",
            "Job: Malloc0 ended in about 5.00 seconds with error\n",
            "\t Malloc0             :       5.00  200000.00     781.25       4.00     0.60      10.00       5.00      15.00\n",
            " ===================================================================================================================\n",
            " Total                       :             300000.00    1171.88       6.00     0.90      10.00       5.00      15.00\n",
            "\n",
            "                                                              Latency percentiles(us)\n",
            " Device Information          :        p50        p90        p99      p99.9     p99.99\n",
            "\t Null0               :      10.01      15.01      15.01      15.01      15.01\n",
            "\t Malloc0             :      10.01      15.01      15.01      15.01      15.01\n",
            " Total                       :      10.01      15.01      15.01      15.01      15.01\n",
            "\n",
            " CPU usage per reactor (tick rate 100 Hz)\n",
            "   Core      busy(s)    Busy%    Idle%\n",
            "      0         7.50    75.00    25.00\n",
            "      1         2.50    25.00    75.00\n",
            " IOPS per busy core: 300000.00\n",
        );
        assert_eq!(text, expected, "\n--- got ---\n{text}");
    }

    #[test]
    fn column_alignment_matches_bdevperf() {
        let text = render_table(&[result("Null0", 0, Workload::Read)], &[], 1).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1].len(), 107);
        let pct_header = lines
            .iter()
            .position(|l| l.contains("percentiles"))
            .unwrap();
        assert_eq!(lines[pct_header].len(), lines[pct_header + 1].len());
        assert_eq!(lines[2].len(), 116);
        let rule = lines.iter().find(|l| l.contains("====")).unwrap();
        assert_eq!(rule.len(), 116);
        let total = lines.iter().find(|l| l.starts_with(" Total")).unwrap();
        assert_eq!(total.len(), 116);
        // No CPU section without CPU data.
        assert!(!text.contains("CPU usage"));
    }

    #[test]
    fn verify_jobs_show_lba_range_and_duplicates_get_core_labels() {
        let mut a = result("Null0", 0, Workload::Verify);
        a.plan.offset = 4096 * 16;
        let b = result("Null0", 1, Workload::Verify);
        let text = render_table(&[a, b], &[], 1).unwrap();
        assert!(
            text.contains("\t Verification LBA range: start 0x10 length 0x3e8\n"),
            "{text}"
        );
        assert!(text.contains("\t Null0 (core 0)      :"), "{text}");
        assert!(text.contains("\t Null0 (core 1)      :"), "{text}");
    }

    #[test]
    fn empty_results() {
        let text = render_table(&[], &[], 0).unwrap();
        let total_row = format!(" {:<28}: {:>10} {:>10}", "Total", "", "0.00");
        assert!(text.contains(&total_row), "{text}");
        let r = json_report(&[], &[], 0).unwrap();
        assert_eq!(r.core_count, 0);
        assert!(r.results.is_empty());
    }

    #[test]
    fn cpu_without_busy_time() {
        let cpu = [ReactorCpu {
            core: 3,
            busy_ticks: 0,
            idle_ticks: 0,
        }];
        assert_eq!((cpu[0].busy_pct(), cpu[0].idle_pct()), (0.0, 0.0));
        assert_eq!(iops_per_busy_core(1000.0, &cpu), None);
        let text = render_table(&[result("A", 3, Workload::Read)], &cpu, 0).unwrap();
        assert!(text.contains("IOPS per busy core: n/a"), "{text}");
    }

    #[test]
    fn json_shape() {
        let a = result("Null0", 0, Workload::RandRead);
        let mut b = result("Malloc0", 2, Workload::RandRw);
        b.plan.section = Some("job1".into());
        let mut c = result("Null0", 2, Workload::Verify);
        c.status = JobStatus::Terminated;
        let cpu = [ReactorCpu {
            core: 0,
            busy_ticks: 50,
            idle_ticks: 50,
        }];
        let text = to_json(&[a, b, c], &cpu, 1000).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["core_count"], 2);
        let r0 = &v["results"][0];
        for key in [
            "job",
            "core_mask",
            "workload",
            "status",
            "queue_depth",
            "io_size",
            "runtime",
            "iops",
            "mibps",
            "io_failed",
            "io_timeout",
            "avg_latency_us",
            "min_latency_us",
            "max_latency_us",
            "latency_percentiles_us",
        ] {
            assert!(r0.get(key).is_some(), "missing {key}");
        }
        assert_eq!(r0["job"], "Null0");
        assert_eq!(r0["core_mask"], "0x1");
        assert_eq!(r0["workload"], "randread");
        assert_eq!(r0["status"], "finished");
        assert_eq!(r0["queue_depth"], 128);
        assert_eq!(r0["io_size"], 4096);
        assert_eq!(r0["runtime"], 10.0);
        assert_eq!(r0["iops"], 100_000.0);
        assert_eq!(r0["io_failed"], 20);
        assert_eq!(r0["io_timeout"], 3);
        assert_eq!(r0["min_latency_us"], 5.0);
        assert!(r0.get("percentage").is_none());
        assert!(r0.get("verify_range").is_none());
        assert!(r0.get("section").is_none());
        let pct = &r0["latency_percentiles_us"];
        // The median falls on the 20 failed I/O at 10 µs (histogram bucket 10.007 µs).
        assert_eq!(pct["p50"], 10.007);
        assert!(pct.get("p99.9").is_some() && pct.get("p99.99").is_some());
        let r1 = &v["results"][1];
        assert_eq!(r1["percentage"], 70);
        assert_eq!(r1["section"], "job1");
        assert_eq!(r1["core_mask"], "0x4");
        let r2 = &v["results"][2];
        assert_eq!(r2["status"], "terminated");
        assert_eq!(r2["verify_range"]["start"], 0);
        assert_eq!(r2["verify_range"]["length"], 1000);
        assert_eq!(v["total"]["iops"], 300_000.0);
        assert_eq!(v["total"]["io_failed"], 60);
        assert_eq!(v["cpu"][0]["busy_pct"], 50.0);
        assert_eq!(v["cpu"][0]["busy_s"], 0.05);
        assert_eq!(v["iops_per_busy_core"], 600_000.0);
        assert_eq!(v["tick_rate"], 1000);
        // Field order follows bdevperf's.
        let job_pos = text.find("\"job\"").unwrap();
        let mask_pos = text.find("\"core_mask\"").unwrap();
        let max_pos = text.find("\"max_latency_us\"").unwrap();
        assert!(job_pos < mask_pos && mask_pos < max_pos);
    }

    #[test]
    fn status_names() {
        assert_eq!(JobStatus::Finished.as_str(), "finished");
        assert_eq!(JobStatus::Failed.as_str(), "failed");
        assert_eq!(JobStatus::Terminated.as_str(), "terminated");
        assert_eq!(
            serde_json::to_string(&JobStatus::Failed).unwrap(),
            "\"failed\""
        );
    }

    #[test]
    fn write_table_to_a_writer() {
        let mut out = Vec::new();
        write_table(&mut out, &[result("A", 0, Workload::Read)], &[], 1).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("Job: A (Core Mask 0x1"));
    }
}
