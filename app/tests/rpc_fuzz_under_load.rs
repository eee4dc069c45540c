//! Thousands of random and malformed JSON-RPC requests while a workload runs inside the same
//! process (`ferrite bench -z` + `perform_tests`): the server keeps answering every valid
//! request correctly and no I/O of the workload fails.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Proc(Child, PathBuf);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_file(&self.1);
    }
}

fn call(sock: &Path, req: &Value, timeout: Duration) -> Value {
    let mut s = UnixStream::connect(sock).expect("connect");
    s.set_read_timeout(Some(timeout)).unwrap();
    s.write_all(req.to_string().as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let n = s.read(&mut chunk).expect("answer in time");
        assert!(n > 0, "connection closed without an answer to {req}");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(Ok(v)) = serde_json::Deserializer::from_slice(&buf)
            .into_iter::<Value>()
            .next()
        {
            return v;
        }
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[(self.next() % v.len() as u64) as usize]
    }
}

/// A malformed or hostile request; never a valid call that changes state.
fn junk(rng: &mut Rng) -> Vec<u8> {
    let valid = [
        r#"{"jsonrpc":"2.0","id":1,"method":"bdev_get_bdevs","params":{"name":"Malloc0"}}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"bdev_malloc_create","params":{"num_blocks":"x","block_size":512}}"#,
        r#"{"jsonrpc":"2.0","id":3,"method":"bdev_get_iostat","params":{"reset_mode":"bogus"}}"#,
        r#"{"jsonrpc":"2.0","id":4,"method":"perform_tests","params":{"queue_depth":0}}"#,
    ];
    match rng.next() % 8 {
        0 => (0..(rng.next() % 200)).map(|_| rng.next() as u8).collect(),
        1 => {
            let v = rng.pick(&valid).as_bytes().to_vec();
            let cut = (rng.next() as usize) % v.len();
            v[..cut].to_vec()
        }
        2 => {
            let mut v = rng.pick(&valid).as_bytes().to_vec();
            for _ in 0..3 {
                let i = (rng.next() as usize) % v.len();
                v[i] = rng.next() as u8;
            }
            v
        }
        3 => format!(
            r#"{{"jsonrpc":"2.0","id":{},"method":"no_such_{}"}}"#,
            rng.next() % 1000,
            rng.next()
        )
        .into_bytes(),
        4 => format!(
            r#"{{"jsonrpc":"2.0","id":9,"method":"bdev_get_bdevs","params":{{"name":{}}}}}"#,
            rng.next()
        )
        .into_bytes(),
        5 => "[".repeat(1 + (rng.next() % 3000) as usize).into_bytes(),
        6 => r#"[{"jsonrpc":"2.0","id":1,"method":"spdk_get_version"},{"bad":1},7]"#
            .as_bytes()
            .to_vec(),
        _ => rng.pick(&valid).as_bytes().to_vec(),
    }
}

#[test]
fn malformed_requests_do_not_disturb_a_running_workload() {
    let dir = std::env::temp_dir().join(format!("ferrite-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("bench.sock");
    let cfg = dir.join("cfg.json");
    std::fs::write(
        &cfg,
        r#"{"subsystems":[{"subsystem":"bdev","config":[
            {"method":"bdev_malloc_create","params":{"name":"Malloc0","num_blocks":32768,"block_size":512}}]}]}"#,
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["bench", "-z", "-m", "0x1", "-r"])
        .arg(&sock)
        .arg("-c")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = Proc(child, sock.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(&sock).is_err() {
        assert!(
            Instant::now() < deadline,
            "bench -z did not start listening"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The workload: verify on malloc for 6 s (any I/O error or miscompare shows in the result).
    let s2 = sock.clone();
    let workload = std::thread::spawn(move || {
        call(
            &s2,
            &json!({"jsonrpc":"2.0","id":100,"method":"perform_tests","params":{
                "queue_depth": 32, "io_size": "4k", "workload_type": "verify", "time_in_sec": 6}}),
            Duration::from_secs(60),
        )
    });
    std::thread::sleep(Duration::from_millis(300));

    // Four fuzzing clients, 1000 requests each, plus valid calls checked as they go.
    let mut fuzzers = Vec::new();
    for t in 0..4u64 {
        let s = sock.clone();
        fuzzers.push(std::thread::spawn(move || {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t + 1));
            let mut valid_ok = 0;
            for i in 0..1000 {
                if let Ok(mut c) = UnixStream::connect(&s) {
                    let _ = c.write_all(&junk(&mut rng));
                    if rng.next().is_multiple_of(2) {
                        // Wait briefly: an error answer, a close, or nothing (incomplete).
                        c.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
                        let mut b = [0u8; 4096];
                        let _ = c.read(&mut b);
                    } // else: hang up at once, mid-request or not
                }
                if i % 50 == 0 {
                    let v = call(&s, &json!({"jsonrpc":"2.0","id":i,"method":"bdev_get_bdevs","params":{"name":"Malloc0"}}), Duration::from_secs(10));
                    assert_eq!(v["result"][0]["name"], "Malloc0", "{v}");
                    assert_eq!(v["result"][0]["num_blocks"], 32768, "{v}");
                    valid_ok += 1;
                }
            }
            valid_ok
        }));
    }
    let valid: usize = fuzzers.into_iter().map(|f| f.join().unwrap()).sum();
    assert_eq!(valid, 80);

    let res = workload.join().unwrap();
    let r = &res["result"]["results"][0];
    assert_eq!(r["status"], "finished", "{res}");
    assert_eq!(r["io_failed"], 0, "{res}");
    assert!(r["iops"].as_f64().unwrap() > 0.0, "{res}");

    // And the server still answers normally afterwards.
    let v = call(
        &sock,
        &json!({"jsonrpc":"2.0","id":7,"method":"spdk_get_version"}),
        Duration::from_secs(10),
    );
    assert!(
        v["result"]["version"]
            .as_str()
            .unwrap()
            .starts_with("Ferrite"),
        "{v}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
