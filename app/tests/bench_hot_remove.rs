//! A bdev hot-removed under a `perform_tests` run (`ferrite bench -z`), as bdevperf handles it:
//! the job on it stops, drains its I/O and closes its descriptor and channel at once (the
//! `bdev_malloc_delete` answer comes while the run goes on, and the bdev is gone), the other
//! job runs to the end, `perform_tests` answers an error naming the job and the bdev, and the
//! server stays healthy: later runs, on a surviving and on a re-created bdev, succeed.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn names(sock: &std::path::Path) -> Vec<String> {
    let v = rpc(sock, "bdev_get_bdevs", Value::Null).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn bdev_removed_during_perform_tests_ends_its_job_and_frees_the_bdev() {
    let dir = TempDir::new("bench-hotremove");
    let cfg = dir.join("cfg.json");
    let doc = json!({"subsystems": [{"subsystem": "bdev", "config": [
        {"method": "bdev_malloc_create",
         "params": {"name": "Malloc0", "num_blocks": 16384, "block_size": 512}},
        {"method": "bdev_malloc_create",
         "params": {"name": "Malloc1", "num_blocks": 16384, "block_size": 512}},
    ]}]});
    std::fs::write(&cfg, doc.to_string()).unwrap();
    let sock = dir.join("bench.sock");
    let log = dir.join("bench.log");
    let args: Vec<String> = [
        "bench",
        "-z",
        "-r",
        sock.to_str().unwrap(),
        "-c",
        cfg.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut b = Target::spawn_raw(&args, &sock, &log, None);
    let deadline = Instant::now() + START_TIMEOUT;
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(
            b.try_status().is_none(),
            "bench -z exited:\n{}",
            b.log_text()
        );
        assert!(Instant::now() < deadline, "bench -z did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    let ops = |name: &str| bdev_ops(&sock, name);
    // What examine read before any job (the jobs' I/O comes on top).
    let examined = ops("Malloc0");
    // A 20 s verify run on both bdevs (one job each); Malloc0 is deleted once its job is
    // doing I/O.
    let s2 = sock.clone();
    let started = Instant::now();
    let perf = std::thread::spawn(move || {
        rpc(
            &s2,
            "perform_tests",
            json!({"queue_depth": 16, "io_size": "4k", "workload_type": "verify",
                   "time_in_sec": 20}),
        )
    });
    wait_until(Duration::from_secs(15), "Malloc0's job doing I/O", || {
        ops("Malloc0") > examined
    });
    assert!(
        !perf.is_finished(),
        "perform_tests ended before the removal"
    );
    let r = rpc(&sock, "bdev_malloc_delete", json!({"name": "Malloc0"}));
    assert!(r.is_ok(), "delete: {:?}", r.err().map(|e| e.message));
    // The removal did not wait for the end of the run: the job let go of the bdev at once
    // (with the descriptor held to the end, the answer would come only after the run), and
    // the other job goes on.
    assert!(
        !perf.is_finished(),
        "bdev_malloc_delete waited for the run to end ({:?})",
        started.elapsed()
    );
    let before = ops("Malloc1");
    wait_until(Duration::from_secs(15), "Malloc1's job going on", || {
        ops("Malloc1") > before
    });
    assert_eq!(names(&sock), ["Malloc1"]);

    let e = perf.join().unwrap().unwrap_err();
    assert_eq!(e.code, -libc::ENODEV as i64, "{}", e.message);
    assert!(
        e.message
            .contains("ended early: bdev 'Malloc0' was removed during the run"),
        "{}",
        e.message
    );
    assert!(!e.message.contains("Malloc1"), "{}", e.message);
    let text = b.log_text();
    assert!(
        text.contains("bdev 'Malloc0' is being removed: stopping the job"),
        "{text}"
    );
    assert!(!text.contains("verify failed"), "{text}");

    // Healthy afterwards: a run on the survivor, then on it and a re-created Malloc0.
    let run = |targets: Option<Vec<&str>>| {
        let mut p = json!({"queue_depth": 8, "io_size": "4k", "workload_type": "verify",
                           "time_in_sec": 1});
        if let Some(t) = targets {
            p["targets"] = json!(t);
        }
        rpc(&sock, "perform_tests", p).unwrap_or_else(|e| panic!("perform_tests: {}", e.message))
    };
    let v = run(None);
    let jobs = v["results"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{v}");
    assert_eq!(jobs[0]["status"], "finished", "{v}");
    assert_eq!(jobs[0]["io_failed"], 0, "{v}");
    rpc(
        &sock,
        "bdev_malloc_create",
        json!({"name": "Malloc0", "num_blocks": 16384, "block_size": 512}),
    )
    .unwrap();
    let v = run(Some(vec!["Malloc0", "Malloc1"]));
    let jobs = v["results"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{v}");
    for j in jobs {
        assert_eq!(j["status"], "finished", "{v}");
        assert_eq!(j["io_failed"], 0, "{v}");
        assert!(j["iops"].as_f64().unwrap() > 0.0, "{v}");
    }

    assert!(!b.log_text().contains("panicked"), "{}", b.log_text());
    b.signal(libc::SIGTERM);
    let st = b.wait_exit(Duration::from_secs(30));
    assert!(st.is_some_and(|s| s.success()), "{st:?}\n{}", b.log_text());
}
