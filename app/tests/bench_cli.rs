//! `ferrite bench` end to end: the real binary, a JSON config in a temp dir, short runs.
//!
//! Covers every workload on null and malloc bdevs (JSON results), verify on malloc and on
//! passthru-on-malloc (also with `-m 0x3 -C`), verify failing on null, the text table, the
//! plot, option errors that must stop before anything runs, job files, and SIGINT.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Null0 (512-byte blocks, 128 MiB) and Malloc0 (512-byte blocks, 32 MiB).
const CONF_NULL_MALLOC: &str = r#"{"subsystems":[{"subsystem":"bdev","config":[
 {"method":"bdev_null_create","params":{"name":"Null0","num_blocks":262144,"block_size":512}},
 {"method":"bdev_malloc_create","params":{"name":"Malloc0","num_blocks":65536,"block_size":512}}]}]}"#;

/// The issue's example: Null0, Malloc0 and PT0 (a passthru claiming Malloc0).
const CONF_EXAMPLE: &str = r#"{"subsystems":[{"subsystem":"bdev","config":[
 {"method":"bdev_null_create","params":{"name":"Null0","num_blocks":262144,"block_size":512}},
 {"method":"bdev_malloc_create","params":{"name":"Malloc0","num_blocks":65536,"block_size":512}},
 {"method":"bdev_passthru_create","params":{"base_bdev_name":"Malloc0","name":"PT0"}}]}]}"#;

/// Malloc0 on its own, and PT1 on Malloc1: the default job set is {Malloc0, PT1}.
const CONF_MALLOC_PT: &str = r#"{"subsystems":[{"subsystem":"bdev","config":[
 {"method":"bdev_malloc_create","params":{"name":"Malloc0","num_blocks":65536,"block_size":512}},
 {"method":"bdev_malloc_create","params":{"name":"Malloc1","num_blocks":65536,"block_size":512}},
 {"method":"bdev_passthru_create","params":{"base_bdev_name":"Malloc1","name":"PT1"}}]}]}"#;

/// Null0 (512) and Null4K (4096-byte blocks).
const CONF_TWO_BLOCK_SIZES: &str = r#"{"subsystems":[{"subsystem":"bdev","config":[
 {"method":"bdev_null_create","params":{"name":"Null0","num_blocks":262144,"block_size":512}},
 {"method":"bdev_null_create","params":{"name":"Null4K","num_blocks":32768,"block_size":4096}}]}]}"#;

/// Longest any single invocation may take before the test kills it and fails.
const PROCESS_LIMIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Helpers.

/// A fresh directory under cargo's per-target temp dir.
fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "bench_cli-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create the temp dir");
    d
}

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write the file");
    p
}

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Run {
    fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal: {:?}\n{}", self.status, self.stderr))
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    fn ok(self) -> Run {
        assert_eq!(
            self.code(),
            0,
            "exit code; stderr:\n{}\nstdout:\n{}",
            self.stderr,
            self.stdout
        );
        self
    }
}

/// A running `ferrite bench`; stderr arrives line by line on `stderr_lines` as well.
struct Proc {
    child: Child,
    started: Instant,
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
    stderr_lines: mpsc::Receiver<String>,
}

fn spawn_bench(conf: &Path, args: &[&str]) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .arg("bench")
        .arg("-c")
        .arg(conf)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferrite bench");
    let mut out = child.stdout.take().expect("piped stdout");
    let err = child.stderr.take().expect("piped stderr");
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let (tx, stderr_lines) = mpsc::channel();
    let stderr = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            let _ = tx.send(line);
        }
        all
    });
    Proc {
        child,
        started: Instant::now(),
        stdout,
        stderr,
        stderr_lines,
    }
}

impl Proc {
    /// Waits for the exit (killing the process and failing after `limit`).
    fn wait(mut self, limit: Duration) -> Run {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait for ferrite bench") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "ferrite bench did not exit within {limit:?}; stderr:\n{}",
                    self.stderr.join().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let elapsed = self.started.elapsed();
        Run {
            status,
            stdout: self.stdout.join().expect("stdout reader"),
            stderr: self.stderr.join().expect("stderr reader"),
            elapsed,
        }
    }
}

fn bench(conf: &Path, args: &[&str]) -> Run {
    spawn_bench(conf, args).wait(PROCESS_LIMIT)
}

fn conf(tag: &str, text: &str) -> (PathBuf, PathBuf) {
    let dir = temp_dir(tag);
    let c = write_file(&dir, "conf.json", text);
    (dir, c)
}

fn results(doc: &Value) -> &Vec<Value> {
    doc["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results array: {doc}"))
}

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("'{key}' is not a number in {v}"))
}

/// The common checks of a successful job.
fn check_finished(r: &Value, job: &str, workload: &str, qd: u64, io_size: u64) {
    assert_eq!(r["job"], job, "{r}");
    assert_eq!(r["workload"], workload, "{r}");
    assert_eq!(r["status"], "finished", "{r}");
    assert_eq!(r["queue_depth"], qd, "{r}");
    assert_eq!(r["io_size"], io_size, "{r}");
    assert!(f(r, "iops") > 0.0, "{r}");
    assert!(f(r, "mibps") > 0.0, "{r}");
    assert_eq!(r["io_failed"], 0, "{r}");
    assert_eq!(r["io_timeout"], 0, "{r}");
    let runtime = f(r, "runtime");
    assert!((0.4..3.0).contains(&runtime), "runtime {runtime}: {r}");
    let (min, avg, max) = (
        f(r, "min_latency_us"),
        f(r, "avg_latency_us"),
        f(r, "max_latency_us"),
    );
    assert!(0.0 < min && min <= avg && avg <= max, "{r}");
    let p = &r["latency_percentiles_us"];
    let ps: Vec<f64> = ["p50", "p90", "p99", "p99.9", "p99.99"]
        .iter()
        .map(|k| f(p, k))
        .collect();
    assert!(ps[0] > 0.0 && ps.windows(2).all(|w| w[0] <= w[1]), "{p}");
    let verifies = matches!(workload, "verify" | "reset");
    assert_eq!(r.get("verify_range").is_some(), verifies, "{r}");
    let mixed = matches!(workload, "rw" | "randrw");
    assert_eq!(r.get("percentage").is_some(), mixed, "{r}");
}

// ---------------------------------------------------------------------------------------------
// Workloads.

/// Every non-verifying workload on Null0 and Malloc0 (one job each, one run per workload).
fn run_workloads(tag: &str, workloads: &[(&str, Option<u64>)]) {
    let (_d, c) = conf(tag, CONF_NULL_MALLOC);
    for &(w, mix) in workloads {
        let m = mix.map(|m| m.to_string());
        let mut args = vec!["-q", "8", "-o", "4k", "-w", w, "-t", "0.5", "--output-json"];
        if let Some(m) = &m {
            args.extend(["-M", m.as_str()]);
        }
        let run = bench(&c, &args).ok();
        let doc = run.json();
        let rs = results(&doc);
        assert_eq!(rs.len(), 2, "{w}: {doc}");
        for (r, bdev) in rs.iter().zip(["Null0", "Malloc0"]) {
            check_finished(r, bdev, w, 8, 4096);
            assert_eq!(r["core_mask"], "0x1", "{r}");
            if let Some(m) = mix {
                assert_eq!(r["percentage"], m, "{w}: {r}");
            }
        }
        assert_eq!(doc["core_count"], 1);
        assert_eq!(doc["total"]["io_failed"], 0);
        let total = f(&doc["total"], "iops");
        let sum: f64 = rs.iter().map(|r| f(r, "iops")).sum();
        assert!((total - sum).abs() <= 1e-6 * sum, "{total} vs {sum}");
    }
}

#[test]
fn read_and_write_workloads_on_null_and_malloc() {
    run_workloads(
        "rw",
        &[
            ("read", None),
            ("write", None),
            ("randread", None),
            ("randwrite", None),
        ],
    );
}

#[test]
fn mixed_workloads_on_null_and_malloc() {
    run_workloads("mixed", &[("rw", Some(70)), ("randrw", Some(30))]);
}

#[test]
fn mixed_workload_without_rwmixread_warns_and_uses_50() {
    let (_d, c) = conf("mixdefault", CONF_NULL_MALLOC);
    let run = bench(
        &c,
        &[
            "-q",
            "4",
            "-o",
            "4k",
            "-w",
            "randrw",
            "-t",
            "0.3",
            "-T",
            "Null0",
            "--output-json",
        ],
    )
    .ok();
    assert!(
        run.stderr
            .contains("-M/--rwmixread not given for 'randrw'; using 50% reads"),
        "{}",
        run.stderr
    );
    let doc = run.json();
    assert_eq!(results(&doc)[0]["percentage"], 50);
}

#[test]
fn command_workloads_on_null_and_malloc() {
    run_workloads(
        "cmds",
        &[("unmap", None), ("flush", None), ("write_zeroes", None)],
    );
}

#[test]
fn verify_and_reset_pass_on_malloc_and_passthru() {
    let (d, example) = conf("verify", CONF_EXAMPLE);
    // Malloc0 is claimed by PT0 in the example: write to it directly in a config without PT0.
    let plain = write_file(&d, "plain.json", CONF_NULL_MALLOC);
    for (w, bdev, cfg) in [
        ("verify", "Malloc0", &plain),
        ("reset", "Malloc0", &plain),
        ("verify", "PT0", &example),
    ] {
        let run = bench(
            cfg,
            &[
                "-q",
                "8",
                "-o",
                "4k",
                "-w",
                w,
                "-t",
                "0.5",
                "-T",
                bdev,
                "--output-json",
            ],
        )
        .ok();
        assert!(!run.stderr.contains("verify failed"), "{}", run.stderr);
        let doc = run.json();
        let rs = results(&doc);
        assert_eq!(rs.len(), 1, "{doc}");
        check_finished(&rs[0], bdev, w, 8, 4096);
        // 65536 blocks of 512 bytes = 8192 I/O of 4 KiB.
        assert_eq!(rs[0]["verify_range"]["start"], 0);
        assert_eq!(rs[0]["verify_range"]["length"], 8192);
    }
}

#[test]
fn verify_and_reset_fail_on_null() {
    let (_d, c) = conf("verifynull", CONF_NULL_MALLOC);
    // Null returns no data, so the read-back never matches (reset runs the verify flow too).
    for w in ["verify", "reset"] {
        let run = bench(
            &c,
            &[
                "-q",
                "8",
                "-o",
                "4k",
                "-w",
                w,
                "-t",
                "0.5",
                "-T",
                "Null0",
                "--output-json",
            ],
        );
        assert_eq!(run.code(), 1, "{w}: {}", run.stderr);
        let line = run
            .stderr
            .lines()
            .find(|l| l.contains("verify failed"))
            .unwrap_or_else(|| panic!("{w}: no miscompare message:\n{}", run.stderr));
        assert!(
            line.starts_with("ferrite bench: verify failed: bdev 'Null0': miscompare at offset 0x"),
            "{line}"
        );
        assert!(
            line.contains("(block does not hold a verify pattern)"),
            "{line}"
        );
        let doc = run.json();
        let r = &results(&doc)[0];
        assert_eq!(r["job"], "Null0");
        assert_eq!(r["workload"], w);
        assert_eq!(r["status"], "failed", "{r}");
        // The job stopped at the miscompare: a short, non-zero runtime.
        let runtime = f(r, "runtime");
        assert!(runtime > 0.0 && runtime < 0.45, "runtime {runtime}");
    }
}

#[test]
fn verify_every_core_on_two_cores() {
    let (_d, c) = conf("verifyC", CONF_MALLOC_PT);
    let run = bench(
        &c,
        &[
            "-q",
            "8",
            "-o",
            "4k",
            "-w",
            "verify",
            "-t",
            "0.5",
            "-m",
            "0x3",
            "-C",
            "--output-json",
        ],
    )
    .ok();
    let doc = run.json();
    let rs = results(&doc);
    // Malloc1 is claimed by PT1 and not benchmarked; every core drives each of the others.
    let jobs: Vec<(String, u64, String)> = rs
        .iter()
        .map(|r| {
            (
                r["job"].as_str().unwrap().to_string(),
                r["core"].as_u64().unwrap(),
                r["core_mask"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, u64, String)> = [
        ("Malloc0", 0, "0x1"),
        ("Malloc0", 1, "0x2"),
        ("PT1", 0, "0x1"),
        ("PT1", 1, "0x2"),
    ]
    .iter()
    .map(|(j, c, m)| (j.to_string(), *c, m.to_string()))
    .collect();
    assert_eq!(jobs, want);
    for (i, r) in rs.iter().enumerate() {
        check_finished(r, &want[i].0, "verify", 8, 4096);
        // Each core verifies its own half: 4096 of the 8192 I/O-sized slots.
        let start = if i % 2 == 0 { 0 } else { 4096 };
        assert_eq!(r["verify_range"]["start"], start, "{r}");
        assert_eq!(r["verify_range"]["length"], 4096, "{r}");
    }
    assert_eq!(doc["core_count"], 2);
    let cpu = doc["cpu"].as_array().unwrap();
    assert_eq!(cpu.len(), 2, "{doc}");
    for (i, c) in cpu.iter().enumerate() {
        assert_eq!(c["core"], i as u64);
        assert!(c["busy_ticks"].as_u64().unwrap() > 0, "{c}");
    }
}

#[test]
fn two_cores_without_every_core_assign_bdevs_round_robin() {
    let (_d, c) = conf("rr", CONF_NULL_MALLOC);
    let run = bench(
        &c,
        &[
            "-q",
            "8",
            "-o",
            "4k",
            "-w",
            "randread",
            "-t",
            "0.4",
            "-m",
            "0x3",
            "--output-json",
        ],
    )
    .ok();
    let doc = run.json();
    let rs = results(&doc);
    let placed: Vec<(&str, &str)> = rs
        .iter()
        .map(|r| (r["job"].as_str().unwrap(), r["core_mask"].as_str().unwrap()))
        .collect();
    assert_eq!(placed, vec![("Null0", "0x1"), ("Malloc0", "0x2")]);
    for r in rs {
        assert!(f(r, "iops") > 0.0, "{r}");
    }
    assert_eq!(doc["core_count"], 2);
    assert_eq!(doc["cpu"].as_array().unwrap().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Output.

#[test]
fn table_output_percentiles_cpu_and_plot() {
    let (d, c) = conf("table", CONF_NULL_MALLOC);
    let svg = d.join("plot.svg");
    let run = bench(
        &c,
        &[
            "-q",
            "8",
            "-o",
            "4k",
            "-w",
            "randread",
            "-t",
            "0.6",
            "-S",
            "0.2",
            "--progress",
            "lines",
            "--plot",
            svg.to_str().unwrap(),
        ],
    )
    .ok();
    let out = &run.stdout;
    // Progress lines first, then bdevperf's table.
    let first = out.lines().next().unwrap_or_default();
    assert!(first.starts_with('[') && first.contains(" IOPS, "), "{out}");
    let header = out
        .lines()
        .find(|l| l.contains("Device Information") && l.contains("runtime(s)"))
        .unwrap_or_else(|| panic!("no table header:\n{out}"));
    let cols = [
        "Device Information",
        "runtime(s)",
        "IOPS",
        "MiB/s",
        "Fail/s",
        "TO/s",
        "Average",
        "min",
        "max",
    ];
    let mut at = 0;
    for col in cols {
        let i = header[at..]
            .find(col)
            .unwrap_or_else(|| panic!("'{col}' missing or out of order in {header:?}"));
        at += i + col.len();
    }
    assert!(out.contains("Latency(us)"), "{out}");
    for bdev in ["Null0", "Malloc0"] {
        assert!(
            out.contains(&format!(
                "Job: {bdev} (Core Mask 0x1, workload: randread, depth: 8, IO size: 4096)"
            )),
            "{out}"
        );
        let row = out
            .lines()
            .find(|l| l.starts_with(&format!("\t {bdev} ")) && l.contains(':'))
            .unwrap_or_else(|| panic!("no row for {bdev}:\n{out}"));
        let nums: Vec<f64> = row
            .split(':')
            .nth(1)
            .unwrap()
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(nums.len(), 8, "{row}");
        assert!(nums[1] > 0.0, "IOPS: {row}");
        assert_eq!(nums[3], 0.0, "Fail/s: {row}");
    }
    let total = out
        .lines()
        .find(|l| l.trim_start().starts_with("Total") && l.contains(':'))
        .unwrap_or_else(|| panic!("no Total row:\n{out}"));
    let total_iops: f64 = total
        .split(':')
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(total_iops > 0.0, "{total}");
    assert!(out.contains(&format!(" {}", "=".repeat(100))), "{out}");
    // Our extras: percentiles and CPU.
    assert!(out.contains("Latency percentiles(us)"), "{out}");
    let pct_header = out
        .lines()
        .find(|l| l.contains("p50"))
        .unwrap_or_else(|| panic!("no percentile header:\n{out}"));
    for p in ["p50", "p90", "p99", "p99.9", "p99.99"] {
        assert!(pct_header.contains(p), "{pct_header}");
    }
    assert!(out.contains("CPU usage per reactor"), "{out}");
    assert!(out.contains("Busy%") && out.contains("Idle%"), "{out}");
    assert!(out.contains("IOPS per busy core: "), "{out}");

    let svg = std::fs::read_to_string(&svg).expect("--plot wrote the SVG");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("Null0") && svg.contains("Malloc0"), "{svg}");
    assert!(svg.contains("IOPS over time") && svg.contains("<polyline"));
}

#[test]
fn job_file_with_global_section_runs_both_jobs() {
    let (d, c) = conf("jobfile", CONF_NULL_MALLOC);
    let jf = write_file(
        &d,
        "jobs.fio",
        "[global]\nbs=4k\niodepth=8\nrw=randread\n\n[jobA]\nfilename=Null0\n\n\
         [jobB]\nfilename=Malloc0\nrw=randwrite\niodepth=4\n",
    );
    let run = bench(
        &c,
        &["-j", jf.to_str().unwrap(), "-t", "0.5", "--output-json"],
    )
    .ok();
    let doc = run.json();
    let rs = results(&doc);
    assert_eq!(rs.len(), 2, "{doc}");
    check_finished(&rs[0], "Null0", "randread", 8, 4096);
    assert_eq!(rs[0]["section"], "jobA");
    check_finished(&rs[1], "Malloc0", "randwrite", 4, 4096);
    assert_eq!(rs[1]["section"], "jobB");
}

// ---------------------------------------------------------------------------------------------
// Errors before anything runs: the run time is 600 s, so an exit within `PROCESS_LIMIT`
// proves no run started.

fn assert_fails_early(conf_text: &str, args: &[&str], code: i32, message: &str) {
    let (_d, c) = conf("err", conf_text);
    let run = bench(&c, args);
    assert_eq!(run.code(), code, "{args:?}: {}", run.stderr);
    assert!(
        run.stderr.contains(message),
        "{args:?}: expected {message:?} in:\n{}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "{args:?}: printed:\n{}", run.stdout);
    assert!(run.elapsed < PROCESS_LIMIT, "{args:?}: {:?}", run.elapsed);
}

#[test]
fn bad_options_are_clear_errors() {
    assert_fails_early(
        CONF_NULL_MALLOC,
        &["-q", "8", "-o", "4k", "-w", "randomread", "-t", "600"],
        2,
        "ferrite bench: -w/--workload: unknown workload 'randomread'; valid workloads are: \
         read, write, randread, randwrite, rw, randrw, verify, reset, unmap, flush, write_zeroes",
    );
    assert_fails_early(
        CONF_NULL_MALLOC,
        &["-q", "0", "-o", "4k", "-w", "read", "-t", "600"],
        2,
        "ferrite bench: -q/--queue-depth: must be between 1 and 65536, got 0",
    );
    assert_fails_early(
        CONF_NULL_MALLOC,
        &["-q", "8", "-o", "4k", "-w", "read"],
        2,
        "ferrite bench: -t/--time: is required (run time in seconds)",
    );
    assert_fails_early(
        CONF_NULL_MALLOC,
        &["-q", "8", "-o", "1000", "-w", "read", "-t", "600"],
        1,
        "ferrite bench: I/O size 1000 is not a multiple of bdev 'Null0' block size 512",
    );
    // The message names the bdev whose block size does not fit.
    assert_fails_early(
        CONF_TWO_BLOCK_SIZES,
        &["-q", "8", "-o", "2k", "-w", "read", "-t", "600"],
        1,
        "ferrite bench: I/O size 2048 is not a multiple of bdev 'Null4K' block size 4096",
    );
    assert_fails_early(
        CONF_NULL_MALLOC,
        &[
            "-q", "8", "-o", "4k", "-w", "read", "-t", "600", "-T", "Nope0",
        ],
        1,
        "ferrite bench: bdev 'Nope0' does not exist",
    );
    assert_fails_early(
        CONF_NULL_MALLOC,
        &[
            "-q", "8", "-o", "4k", "-w", "read", "-t", "600", "-m", "0x3", "-C", "-T", "Nope0",
        ],
        1,
        "ferrite bench: bdev 'Nope0' does not exist",
    );
}

#[test]
fn writing_to_a_claimed_bdev_is_a_clear_error() {
    // Malloc0 is claimed by PT0: it can be named with -T but not written.
    assert_fails_early(
        CONF_EXAMPLE,
        &[
            "-q", "8", "-o", "4k", "-w", "write", "-t", "600", "-T", "Malloc0",
        ],
        1,
        "ferrite bench: cannot open bdev 'Malloc0' for job 'Malloc0 (core 0)': cannot open for \
         writing: bdev 'Malloc0' is claimed",
    );
}

// ---------------------------------------------------------------------------------------------
// SIGINT.

#[test]
fn sigint_ends_the_run_with_terminated_results() {
    let (_d, c) = conf("sigint", CONF_NULL_MALLOC);
    let p = spawn_bench(
        &c,
        &[
            "-q",
            "8",
            "-o",
            "4k",
            "-w",
            "randread",
            "-t",
            "600",
            "-S",
            "0.2",
            "--progress",
            "lines",
            "--output-json",
        ],
    );
    // Wait for the first progress line (on stderr with --output-json): the run is going.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match p.stderr_lines.recv_timeout(left) {
            Ok(l) if l.starts_with('[') && l.contains(" IOPS, ") => break,
            Ok(_) => {}
            Err(e) => panic!("no progress line from the run: {e}"),
        }
    }
    let pid = i32::try_from(p.child.id()).unwrap();
    let sent = Instant::now();
    // SAFETY: kill(2) with our own child's pid and a valid signal number; no memory involved.
    let rc = unsafe { libc::kill(pid, libc::SIGINT) };
    assert_eq!(rc, 0);
    let run = p.wait(Duration::from_secs(60));
    let after_signal = sent.elapsed();
    assert_eq!(run.code(), 0, "{}", run.stderr);
    // Ended by the signal, not by the 600 s run time.
    assert!(
        after_signal < Duration::from_secs(60),
        "exit took {after_signal:?} after SIGINT"
    );
    let doc = run.json();
    let rs = results(&doc);
    assert_eq!(rs.len(), 2, "{doc}");
    for r in rs {
        assert_eq!(r["status"], "terminated", "{r}");
        assert!(f(r, "iops") > 0.0, "{r}");
        assert_eq!(r["io_failed"], 0, "{r}");
        let runtime = f(r, "runtime");
        assert!(runtime > 0.1 && runtime < 8.0, "runtime {runtime}");
    }
}
