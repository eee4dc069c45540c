//! save_config round trips: state built by RPC in target A, saved, loaded into a fresh target B
//! (with `-c FILE`, and through `ferrite rpc load_config`), saved again: identical documents.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};

/// `ferrite rpc save_config` output (the exact text a user would store).
fn save_text(t: &Target) -> String {
    let r = ferrite_rpc(&t.sock, &["save_config"], None);
    assert!(r.ok(), "{}", r.all());
    r.stdout
}

/// A → file → `-c` into B → identical; A → `ferrite rpc save_config > f` →
/// `ferrite rpc load_config < f` into C (runtime) and D (--wait-for-rpc) → identical.
/// Returns B for further checks.
fn round_trip(dir: &TempDir, a: &Target) -> Target {
    let text_a = save_text(a);
    let doc_a: Value = serde_json::from_str(&text_a).unwrap();
    assert_eq!(doc_a, a.save_config());
    let f = dir.join("saved.json");
    std::fs::write(&f, &text_a).unwrap();

    let b = Target::start_in(dir, "b", &["-c", f.to_str().unwrap()]);
    let text_b = save_text(&b);
    assert_eq!(text_b, text_a, "-c load: documents differ");
    assert_eq!(b.bdev_names(), a.bdev_names());

    for (name, extra) in [("c", &[][..]), ("d", &["--wait-for-rpc"][..])] {
        let c = Target::start_in(dir, name, extra);
        let r = ferrite_rpc(&c.sock, &["load_config"], Some(text_a.clone().into_bytes()));
        assert!(r.ok(), "{}\n{}", r.all(), c.log_text());
        assert_eq!(r.json(), json!(true));
        assert_eq!(
            save_text(&c),
            text_a,
            "load_config into {name} ({extra:?}): documents differ"
        );
    }
    // And once more from B's own output: a fixed point.
    let f2 = dir.join("saved-b.json");
    std::fs::write(&f2, &text_b).unwrap();
    let e = Target::start_in(dir, "e", &["-c", f2.to_str().unwrap()]);
    assert_eq!(save_text(&e), text_a);
    b
}

fn entries_of(t: &Target) -> Vec<Value> {
    bdev_entries(&t.save_config())
}

#[test]
fn null_round_trip() {
    let dir = TempDir::new("rt-null");
    let a = Target::start_in(&dir, "a", &[]);
    a.call(
        "bdev_null_create",
        json!({"name": "N0", "num_blocks": 1024, "block_size": 512,
               "uuid": "a0a0a0a0-0000-4000-8000-000000000001"}),
    );
    a.call(
        "bdev_null_create",
        json!({"name": "N1", "num_blocks": 256, "block_size": 4096}),
    );
    a.call(
        "bdev_null_create",
        json!({"name": "N2", "num_blocks": 64, "block_size": 512, "md_size": 8}),
    );
    a.call("bdev_null_resize", json!({"name": "N1", "new_size": 2}));
    let e = entries_of(&a);
    assert_eq!(e.len(), 4, "{e:?}");
    assert_eq!(
        e[0],
        json!({"method": "bdev_null_create", "params": {"name": "N0", "num_blocks": 1024,
               "block_size": 512, "uuid": "a0a0a0a0-0000-4000-8000-000000000001"}})
    );
    // A random UUID is saved, so it survives the trip; the resize is saved as the new size.
    assert_eq!(e[1]["params"]["num_blocks"], 512);
    assert_eq!(e[1]["params"]["uuid"], a.bdev("N1")["uuid"]);
    assert_eq!(e[2]["params"]["md_size"], 8);
    assert_eq!(e[3], json!({"method": "bdev_wait_for_examine"}));
    let b = round_trip(&dir, &a);
    for n in ["N0", "N1", "N2"] {
        assert_eq!(b.bdev(n), a.bdev(n), "{n}");
    }
}

#[test]
fn malloc_round_trip() {
    let dir = TempDir::new("rt-malloc");
    let a = Target::start_in(&dir, "a", &[]);
    a.call(
        "bdev_malloc_create",
        json!({"name": "M0", "num_blocks": 2048, "block_size": 512,
               "uuid": "b0b0b0b0-0000-4000-8000-000000000001"}),
    );
    let auto = a.call(
        "bdev_malloc_create",
        json!({"num_blocks": 64, "block_size": 4096, "optimal_io_boundary": 8}),
    );
    let auto = auto.as_str().unwrap().to_string();
    assert!(auto.starts_with("Malloc"), "{auto}");
    a.call(
        "bdev_malloc_create",
        json!({"name": "M2", "num_blocks": 32, "block_size": 512, "md_size": 16}),
    );
    let e = entries_of(&a);
    assert_eq!(e.len(), 4, "{e:?}");
    assert_eq!(
        e[0],
        json!({"method": "bdev_malloc_create", "params": {"name": "M0", "num_blocks": 2048,
               "block_size": 512, "uuid": "b0b0b0b0-0000-4000-8000-000000000001",
               "optimal_io_boundary": 0}})
    );
    // The generated name is saved explicitly, so B gets the same name.
    assert_eq!(e[1]["params"]["name"], auto.as_str());
    assert_eq!(e[1]["params"]["optimal_io_boundary"], 8);
    assert_eq!(e[2]["params"]["md_size"], 16);
    let b = round_trip(&dir, &a);
    for n in ["M0", auto.as_str(), "M2"] {
        assert_eq!(b.bdev(n), a.bdev(n), "{n}");
    }
}

#[test]
fn passthru_round_trip_with_waiting_passthru() {
    let dir = TempDir::new("rt-pt");
    let a = Target::start_in(&dir, "a", &[]);
    a.call(
        "bdev_malloc_create",
        json!({"name": "Base", "num_blocks": 128, "block_size": 512}),
    );
    a.call(
        "bdev_passthru_create",
        json!({"base_bdev_name": "Base", "name": "PT"}),
    );
    // One whose base never appears: saved as configured, still waiting after the load.
    a.call(
        "bdev_passthru_create",
        json!({"base_bdev_name": "Ghost", "name": "PG",
               "uuid": "c0c0c0c0-0000-4000-8000-000000000001"}),
    );
    let e = entries_of(&a);
    let methods: Vec<&str> = e.iter().map(|x| x["method"].as_str().unwrap()).collect();
    assert_eq!(
        methods,
        [
            "bdev_passthru_create",
            "bdev_malloc_create",
            "bdev_passthru_create",
            "bdev_wait_for_examine"
        ]
    );
    assert_eq!(
        e[0]["params"],
        json!({"base_bdev_name": "Ghost", "name": "PG", "uuid": "c0c0c0c0-0000-4000-8000-000000000001"})
    );
    assert_eq!(e[2]["params"]["base_bdev_name"], "Base");
    assert_eq!(e[2]["params"]["uuid"], a.bdev("PT")["uuid"]);
    let b = round_trip(&dir, &a);
    assert_eq!(b.bdev_names(), ["Base", "PT"].map(String::from).to_vec());
    assert_eq!(b.bdev("PT"), a.bdev("PT"));
    assert_eq!(b.bdev("Base")["claim_type"], "exclusive_write");
    // The waiting one attaches in B once its base shows up there.
    b.call(
        "bdev_null_create",
        json!({"name": "Ghost", "num_blocks": 16, "block_size": 512}),
    );
    b.call("bdev_wait_for_examine", Value::Null);
    let pg = b.bdev("PG");
    assert_eq!(pg["uuid"], "c0c0c0c0-0000-4000-8000-000000000001");
    assert_eq!(pg["driver_specific"]["passthru"]["base_bdev_name"], "Ghost");
}

#[test]
fn mixed_graph_round_trip() {
    let dir = TempDir::new("rt-mixed");
    let a = Target::start_in(&dir, "a", &[]);
    // A passthru configured before its base, then the base: attached.
    a.call(
        "bdev_passthru_create",
        json!({"base_bdev_name": "M0", "name": "P0"}),
    );
    a.call(
        "bdev_malloc_create",
        json!({"name": "M0", "num_blocks": 256, "block_size": 512}),
    );
    a.call(
        "bdev_null_create",
        json!({"name": "N0", "num_blocks": 512, "block_size": 4096}),
    );
    a.call(
        "bdev_passthru_create",
        json!({"base_bdev_name": "N0", "name": "P1"}),
    );
    // A passthru stacked on a passthru.
    a.call(
        "bdev_passthru_create",
        json!({"base_bdev_name": "P1", "name": "P2"}),
    );
    a.call(
        "bdev_passthru_create",
        json!({"base_bdev_name": "Nowhere", "name": "PW"}),
    );
    // Something created and removed leaves no trace.
    a.call(
        "bdev_null_create",
        json!({"name": "Gone", "num_blocks": 8, "block_size": 512}),
    );
    a.call("bdev_null_delete", json!({"name": "Gone"}));
    a.call("bdev_wait_for_examine", Value::Null);
    assert_eq!(
        a.bdev_names(),
        ["M0", "N0", "P0", "P1", "P2"].map(String::from).to_vec()
    );
    assert_eq!(a.bdev("P1")["claim_type"], "exclusive_write");
    let b = round_trip(&dir, &a);
    for n in ["M0", "N0", "P0", "P1", "P2"] {
        assert_eq!(b.bdev(n), a.bdev(n), "{n}");
    }
}

#[test]
fn load_config_rpc_reports_a_bad_entry() {
    let dir = TempDir::new("rt-bad");
    let t = Target::start_in(&dir, "t", &[]);
    let doc = json!({"subsystems": [{"subsystem": "bdev", "config": [
        {"method": "bdev_null_create", "params": {"name": "X", "num_blocks": 8, "block_size": 512}},
        {"method": "bdev_null_create", "params": {"name": "X", "num_blocks": 8, "block_size": 512}}
    ]}]});
    let r = ferrite_rpc(
        &t.sock,
        &["load_config"],
        Some(doc.to_string().into_bytes()),
    );
    assert!(!r.ok());
    assert!(
        r.stderr.contains("entry 1 (bdev_null_create)") && r.stderr.contains("'X' already exists"),
        "{}",
        r.stderr
    );
    // The target keeps running with what did apply.
    assert_eq!(t.bdev_names(), vec!["X".to_string()]);
}
