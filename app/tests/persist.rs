//! `ferrite tgt --persist FILE`: the file follows every successful state-changing RPC (and is
//! already up to date when the RPC answers), is never seen partially written, and brings a
//! killed target back as it was.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn read_doc(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: not JSON ({e}):\n{text}", p.display()))
}

/// (method, name) of each bdev entry of the persisted file.
fn persisted(p: &Path) -> Vec<(String, String)> {
    bdev_entries(&read_doc(p))
        .iter()
        .map(|e| {
            (
                e["method"].as_str().unwrap().to_string(),
                e["params"]["name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn file_follows_every_change_and_survives_sigkill() {
    let dir = TempDir::new("persist-kill");
    let f = dir.join("state.json");
    let fs = f.to_str().unwrap();
    let mut a = Target::start_in(&dir, "a", &["--persist", fs]);
    // Created at start (no config yet: just the examine barrier).
    wait_until(Duration::from_secs(10), "persist file created", || {
        f.exists()
    });
    assert_eq!(persisted(&f), pairs(&[("bdev_wait_for_examine", "")]));

    // Each answer comes only once the file holds the change: read right after it.
    a.call(
        "bdev_null_create",
        json!({"name": "N0", "num_blocks": 64, "block_size": 512,
               "uuid": "d0d0d0d0-0000-4000-8000-000000000001"}),
    );
    assert_eq!(
        persisted(&f),
        pairs(&[("bdev_null_create", "N0"), ("bdev_wait_for_examine", "")])
    );
    assert_eq!(
        bdev_entries(&read_doc(&f))[0]["params"],
        json!({"name": "N0", "num_blocks": 64, "block_size": 512,
               "uuid": "d0d0d0d0-0000-4000-8000-000000000001"})
    );
    a.call(
        "bdev_malloc_create",
        json!({"name": "M0", "num_blocks": 128, "block_size": 512}),
    );
    a.call(
        "bdev_passthru_create",
        json!({"base_bdev_name": "M0", "name": "P0"}),
    );
    a.call(
        "bdev_passthru_create",
        json!({"base_bdev_name": "Later", "name": "PW"}),
    );
    assert_eq!(
        persisted(&f),
        pairs(&[
            ("bdev_passthru_create", "PW"),
            ("bdev_null_create", "N0"),
            ("bdev_malloc_create", "M0"),
            ("bdev_passthru_create", "P0"),
            ("bdev_wait_for_examine", "")
        ])
    );
    a.call("bdev_null_resize", json!({"name": "N0", "new_size": 1}));
    assert_eq!(bdev_entries(&read_doc(&f))[1]["params"]["num_blocks"], 2048);
    a.call("bdev_null_delete", json!({"name": "N0"}));
    assert_eq!(
        persisted(&f),
        pairs(&[
            ("bdev_passthru_create", "PW"),
            ("bdev_malloc_create", "M0"),
            ("bdev_passthru_create", "P0"),
            ("bdev_wait_for_examine", "")
        ])
    );
    // A failed call changes nothing.
    let before = std::fs::read_to_string(&f).unwrap();
    let e = a
        .rpc(
            "bdev_malloc_create",
            json!({"name": "M0", "num_blocks": 8, "block_size": 512}),
        )
        .unwrap_err();
    assert_eq!(e.code, -17);
    assert_eq!(std::fs::read_to_string(&f).unwrap(), before);

    let saved = a.save_config();
    assert_eq!(read_doc(&f), saved);
    a.kill9();
    assert!(f.exists());

    // Restart on the same file (a -c file is ignored while the persisted file exists).
    let other = dir.join("other.json");
    std::fs::write(
        &other,
        r#"{"subsystems":[{"subsystem":"bdev","config":[
            {"method":"bdev_null_create","params":{"name":"FromC","num_blocks":8,"block_size":512}}]}]}"#,
    )
    .unwrap();
    let b = Target::start_in(&dir, "b", &["--persist", fs, "-c", other.to_str().unwrap()]);
    assert_eq!(b.save_config(), saved);
    assert_eq!(b.bdev_names(), ["M0", "P0"].map(String::from).to_vec());
    assert_eq!(
        b.bdev("P0")["driver_specific"]["passthru"]["base_bdev_name"],
        "M0"
    );
    // The waiting passthru came back too.
    b.call(
        "bdev_null_create",
        json!({"name": "Later", "num_blocks": 8, "block_size": 512}),
    );
    b.call("bdev_wait_for_examine", Value::Null);
    assert_eq!(
        b.bdev("PW")["driver_specific"]["passthru"]["base_bdev_name"],
        "Later"
    );
    assert_eq!(read_doc(&f), b.save_config());
}

#[test]
fn file_is_never_seen_partial() {
    let dir = TempDir::new("persist-atomic");
    let f = dir.join("state.json");
    let t = Target::start_in(&dir, "t", &["--persist", f.to_str().unwrap()]);
    wait_until(Duration::from_secs(10), "persist file created", || {
        f.exists()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (stop, reads, f) = (stop.clone(), reads.clone(), f.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let text = std::fs::read_to_string(&f).expect("the file is always there");
                let v: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("partial or invalid file ({e}):\n{text}"));
                assert!(v["subsystems"].is_array(), "{v}");
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Enough entries that a non-atomic write would be caught half-way.
    for i in 0..40 {
        t.call(
            "bdev_null_create",
            json!({"name": format!("n{i}"), "num_blocks": 8, "block_size": 512}),
        );
    }
    for round in 0..30 {
        let name = format!("churn{round}");
        t.call(
            "bdev_malloc_create",
            json!({"name": name, "num_blocks": 16, "block_size": 512}),
        );
        t.call("bdev_malloc_delete", json!({ "name": name }));
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("reader saw only whole documents");
    assert!(reads.load(Ordering::Relaxed) > 10, "the reader ran");
    assert_eq!(bdev_entries(&read_doc(&f)).len(), 41);
    // No temporary file is left beside it.
    let names = dir.list();
    assert!(
        names.iter().all(|n| !n.contains(".tmp")),
        "leftover temp files: {names:?}"
    );
}

#[test]
fn leftover_temp_file_does_not_break_start() {
    let dir = TempDir::new("persist-leftover");
    let f = dir.join("state.json");
    std::fs::write(
        &f,
        r#"{"subsystems":[{"subsystem":"bdev","config":[
            {"method":"bdev_null_create","params":{"name":"N0","num_blocks":8,"block_size":512}},
            {"method":"bdev_wait_for_examine"}]}]}"#,
    )
    .unwrap();
    // What a crash in the middle of a write leaves: a truncated temporary file.
    let leftover = dir.join(".state.json.tmp.4242");
    std::fs::write(&leftover, r#"{"subsystems":[{"subsystem":"bd"#).unwrap();
    let t = Target::start_in(&dir, "t", &["--persist", f.to_str().unwrap()]);
    assert_eq!(t.bdev_names(), vec!["N0".to_string()]);
    t.call(
        "bdev_null_create",
        json!({"name": "N1", "num_blocks": 8, "block_size": 512}),
    );
    assert_eq!(
        persisted(&f),
        pairs(&[
            ("bdev_null_create", "N0"),
            ("bdev_null_create", "N1"),
            ("bdev_wait_for_examine", "")
        ])
    );
}

#[test]
fn graceful_shutdown_keeps_the_configuration() {
    let dir = TempDir::new("persist-term");
    let f = dir.join("state.json");
    let fs = f.to_str().unwrap();
    let mut t = Target::start_in(&dir, "t", &["--persist", fs]);
    t.call(
        "bdev_malloc_create",
        json!({"name": "M0", "num_blocks": 64, "block_size": 512}),
    );
    t.call(
        "bdev_passthru_create",
        json!({"base_bdev_name": "M0", "name": "P0"}),
    );
    let saved = t.save_config();
    t.signal(libc::SIGTERM);
    assert_eq!(t.exit_code(Duration::from_secs(20)), 0, "{}", t.log_text());
    // Shutdown removes every bdev, but the file keeps what to come back to.
    assert_eq!(read_doc(&f), saved);
    assert_eq!(
        dir.list(),
        ["state.json", "t.log"].map(String::from).to_vec()
    );
    let t2 = Target::start_in(&dir, "t2", &["--persist", fs]);
    assert_eq!(t2.save_config(), saved);
}

#[test]
fn corrupt_persisted_file_fails_clearly() {
    let dir = TempDir::new("persist-corrupt");
    let f = dir.join("state.json");
    std::fs::write(&f, "{\"subsystems\": [\n").unwrap();
    let mut t = Target::spawn_in(&dir, "t", &["--persist", f.to_str().unwrap()]);
    assert_eq!(t.exit_code(Duration::from_secs(20)), 1);
    let log = t.log_text();
    assert!(
        log.contains(&format!("persisted config '{}'", f.display())) && log.contains("line 2"),
        "{log}"
    );
    assert!(!t.sock.exists());
    // The file is left as it was for the operator to look at.
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "{\"subsystems\": [\n");
}
