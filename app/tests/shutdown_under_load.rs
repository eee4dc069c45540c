//! SIGTERM with I/O in flight: `ferrite bench -z` runs a workload started by `perform_tests`;
//! SIGTERM stops it (the client gets its results, status "terminated", no failed I/O), the
//! bdevs are removed, and the process exits 0 promptly leaving no socket file behind.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[test]
fn sigterm_with_io_in_flight_exits_zero_and_cleans_up() {
    let dir = std::env::temp_dir().join(format!("ferrite-sigterm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("b.sock");
    let cfg = dir.join("cfg.json");
    std::fs::write(
        &cfg,
        r#"{"subsystems":[{"subsystem":"bdev","config":[
            {"method":"bdev_malloc_create","params":{"name":"Malloc0","num_blocks":32768,"block_size":512}},
            {"method":"bdev_passthru_create","params":{"base_bdev_name":"Malloc0","name":"PT0"}}]}]}"#,
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["bench", "-z", "-r"])
        .arg(&sock)
        .arg("-c")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "bench -z did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // I/O count of PT0 (asked on a connection of its own).
    let ops = || common::bdev_ops(&sock, "PT0");
    // What examine read before the run (the run's I/O comes on top).
    let examined = ops();
    // A 30 s verify workload through passthru.
    let mut c = UnixStream::connect(&sock).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(br#"{"jsonrpc":"2.0","id":1,"method":"perform_tests","params":{"queue_depth":64,"io_size":"4k","workload_type":"verify","time_in_sec":30}}"#).unwrap();
    // The run is under way once PT0 has done I/O of its own.
    common::wait_until(Duration::from_secs(20), "the verify run doing I/O", || {
        ops() > examined
    });
    // SAFETY: plain kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let t0 = Instant::now();
    // The client gets the results of the stopped run.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let reply: Value = loop {
        let n = c.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed without the results");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(Ok(v)) = serde_json::Deserializer::from_slice(&buf)
            .into_iter::<Value>()
            .next()
        {
            break v;
        }
    };
    let r = &reply["result"]["results"][0];
    assert_eq!(r["status"], "terminated", "{reply}");
    assert_eq!(r["io_failed"], 0, "{reply}");
    assert!(r["iops"].as_f64().unwrap() > 0.0, "{reply}");
    // The process exits 0, promptly, and removes its socket.
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no exit within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    assert!(status.success(), "exit status {status:?}; stderr:\n{err}");
    assert!(!sock.exists(), "socket file left behind");
    assert!(
        err.contains("bdev 'PT0' removed") && err.contains("bdev 'Malloc0' removed"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
