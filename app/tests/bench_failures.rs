//! bdevperf's failure semantics: a job stops at its first failed I/O (status "failed"), unless
//! `-f` keeps it running, in which case every injected failure is counted. Failures come from
//! the error bdev (`bdev_error_inject_error` in the config).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use serde_json::Value;

fn run(extra: &[&str]) -> (i32, Value) {
    let dir = std::env::temp_dir().join(format!(
        "ferrite-benchfail-{}-{}",
        std::process::id(),
        extra.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("cfg.json");
    std::fs::write(
        &cfg,
        r#"{"subsystems":[{"subsystem":"bdev","config":[
            {"method":"bdev_malloc_create","params":{"name":"Malloc0","num_blocks":8192,"block_size":512}},
            {"method":"bdev_error_create","params":{"base_name":"Malloc0"}},
            {"method":"bdev_error_inject_error","params":{"name":"EE_Malloc0","io_type":"read","error_type":"failure","num":5}}]}]}"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["bench", "-c"])
        .arg(&cfg)
        .args([
            "-q",
            "8",
            "-o",
            "4k",
            "-w",
            "randread",
            "-t",
            "1",
            "-T",
            "EE_Malloc0",
            "--output-json",
        ])
        .args(extra)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

#[test]
fn a_failed_io_stops_the_job_by_default() {
    let (code, v) = run(&[]);
    let r = &v["results"][0];
    assert_eq!(code, 1, "{v}");
    assert_eq!(r["status"], "failed", "{v}");
    let failed = r["io_failed"].as_u64().unwrap();
    assert!((1..=5).contains(&failed), "{v}");
    assert!(
        r["runtime"].as_f64().unwrap() < 0.5,
        "the job did not stop early: {v}"
    );
}

#[test]
fn continue_on_failure_counts_every_injected_failure() {
    let (code, v) = run(&["-f"]);
    let r = &v["results"][0];
    assert_eq!(code, 1, "a run with failed I/O still exits non-zero: {v}");
    assert_eq!(r["io_failed"], 5, "{v}");
    assert!(
        r["runtime"].as_f64().unwrap() >= 0.9,
        "the job stopped early: {v}"
    );
    assert!(r["iops"].as_f64().unwrap() > 0.0, "{v}");
}
