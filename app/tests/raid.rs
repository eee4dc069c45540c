//! The raid module through the real binary: its RPC methods (results and SPDK's error codes),
//! member removal and re-add with rebuild, a `save_config` round trip, and `ferrite bench -w
//! verify` on raid0, raid1 and raid5f.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn malloc(t: &Target, name: &str, blocks: u64) {
    t.call(
        "bdev_malloc_create",
        json!({"name": name, "num_blocks": blocks, "block_size": 512}),
    );
}

fn raid(t: &Target, name: &str) -> Value {
    let all = t.call("bdev_raid_get_bdevs", json!({"category": "all"}));
    all.as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("raid {name} not listed: {all}"))
}

fn err(t: &Target, method: &str, params: Value) -> RpcErr {
    match t.rpc(method, params.clone()) {
        Err(e) => e,
        Ok(v) => panic!("{method} {params}: expected an error, got {v}"),
    }
}

#[test]
fn rpc_methods_results_and_errors() {
    let dir = TempDir::new("raid-rpc");
    let t = Target::start_in(&dir, "t", &[]);
    for i in 0..6 {
        malloc(&t, &format!("M{i}"), 8192);
    }
    let r = t.call(
        "bdev_raid_create",
        json!({"name": "R0", "raid_level": "RAID0", "base_bdevs": ["M0", "M1"],
               "strip_size_kb": 64}),
    );
    assert_eq!(r, json!(true));
    let v = raid(&t, "R0");
    assert_eq!(v["state"], "online");
    assert_eq!(v["raid_level"], "raid0");
    assert_eq!(v["strip_size_kb"], 64);
    assert_eq!(v["superblock"], false);
    assert_eq!(v["num_base_bdevs"], 2);
    assert_eq!(v["num_base_bdevs_discovered"], 2);
    assert_eq!(v["num_base_bdevs_operational"], 2);
    let list = v["base_bdevs_list"].as_array().unwrap();
    assert_eq!(list[0]["name"], "M0");
    assert_eq!(list[0]["uuid"], t.bdev("M0")["uuid"]);
    assert_eq!(list[1]["is_configured"], true);
    assert_eq!(list[1]["data_offset"], 0);
    assert_eq!(list[1]["data_size"], 8192);
    let b = t.bdev("R0");
    assert_eq!(b["num_blocks"], 16384);
    assert_eq!(b["product_name"], "Raid Volume");
    assert_eq!(b["uuid"], v["uuid"]);
    assert_eq!(b["driver_specific"]["raid"]["raid_level"], "raid0");
    assert_eq!(t.bdev("M0")["claimed"], true);
    assert_eq!(t.bdev("M0")["claim_type"], "exclusive_write");

    // Categories.
    let on = t.call("bdev_raid_get_bdevs", json!({"category": "online"}));
    assert_eq!(on.as_array().unwrap().len(), 1);
    let conf = t.call("bdev_raid_get_bdevs", json!({"category": "configuring"}));
    assert_eq!(conf, json!([]));
    assert_eq!(
        err(&t, "bdev_raid_get_bdevs", json!({"category": "bogus"})).code,
        -22
    );
    assert_eq!(err(&t, "bdev_raid_get_bdevs", json!({})).code, -32602);

    // Errors, with SPDK's codes.
    let cases = [
        (
            json!({"name": "X", "raid_level": "raid6", "base_bdevs": ["M2"], "strip_size_kb": 64}),
            -22,
            "raid6",
        ),
        (
            json!({"name": "X", "raid_level": "raid0", "base_bdevs": ["M2"], "strip_size_kb": 48}),
            -22,
            "power of two",
        ),
        (
            json!({"name": "X", "raid_level": "raid0", "base_bdevs": ["M2"]}),
            -22,
            "power of two",
        ),
        (
            json!({"name": "X", "raid_level": "raid1", "base_bdevs": ["M2", "M3"], "strip_size_kb": 64}),
            -22,
            "raid1",
        ),
        (
            json!({"name": "R0", "raid_level": "raid1", "base_bdevs": ["M2", "M3"]}),
            -17,
            "exists",
        ),
        (
            json!({"name": "X", "raid_level": "raid1", "base_bdevs": ["M2", "M0"]}),
            -1,
            "'raid'",
        ),
    ];
    for (p, code, text) in cases {
        let e = err(&t, "bdev_raid_create", p.clone());
        assert_eq!(e.code, code, "{p}: {e:?}");
        assert!(e.message.contains(text), "{p}: {e:?}");
        assert!(
            e.message.starts_with("Failed to create RAID bdev X") || code == -17,
            "{e:?}"
        );
    }
    // A base claimed by another module: the message names the holder.
    t.call(
        "bdev_passthru_create",
        json!({"base_bdev_name": "M5", "name": "PT5"}),
    );
    let e = err(
        &t,
        "bdev_raid_create",
        json!({"name": "X", "raid_level": "0", "base_bdevs": ["M5"], "strip_size_kb": 4}),
    );
    assert_eq!(e.code, -1);
    assert!(e.message.contains("passthru"), "{e:?}");
    // Nothing was left behind by the failures; M2 is free again.
    assert!(t
        .call("bdev_raid_get_bdevs", json!({"category": "all"}))
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["name"] != "X"));
    assert_eq!(t.bdev("M2")["claimed"], false);
    assert_eq!(
        err(
            &t,
            "bdev_raid_create",
            json!({"name": "X", "raid_level": "raid0"})
        )
        .code,
        -32602
    );
    assert_eq!(
        err(&t, "bdev_raid_create", json!({"name": "X", "raid_level": "raid0", "base_bdevs": ["M2"], "strip_size_kb": 4, "bogus": 1})).code,
        -32602
    );

    // raid1: remove a member, re-add it, rebuild.
    t.call(
        "bdev_raid_create",
        json!({"name": "R1", "raid_level": "1", "base_bdevs": ["M2", "M3"]}),
    );
    assert_eq!(raid(&t, "R1")["strip_size_kb"], 0);
    assert_eq!(
        t.call("bdev_raid_remove_base_bdev", json!({"name": "M3"})),
        json!(true)
    );
    let v = raid(&t, "R1");
    assert_eq!(v["state"], "online");
    assert_eq!(v["num_base_bdevs_operational"], 1);
    assert!(v["base_bdevs_list"][1]["name"].is_null());
    assert_eq!(t.bdev("M3")["claimed"], false);
    assert_eq!(
        err(&t, "bdev_raid_remove_base_bdev", json!({"name": "M3"})).code,
        -19
    );
    assert_eq!(
        err(&t, "bdev_raid_remove_base_bdev", json!({"name": "nope"})).code,
        -19
    );
    assert_eq!(
        t.call(
            "bdev_raid_add_base_bdev",
            json!({"raid_bdev": "R1", "base_bdev": "M3"})
        ),
        json!(true)
    );
    wait_until(Duration::from_secs(30), "rebuild", || {
        raid(&t, "R1").get("process").is_none()
    });
    let v = raid(&t, "R1");
    assert_eq!(v["num_base_bdevs_operational"], 2);
    assert_eq!(v["base_bdevs_list"][1]["name"], "M3");
    assert_eq!(
        err(
            &t,
            "bdev_raid_add_base_bdev",
            json!({"raid_bdev": "nope", "base_bdev": "M4"})
        )
        .code,
        -19
    );
    assert_eq!(
        err(
            &t,
            "bdev_raid_add_base_bdev",
            json!({"raid_bdev": "R1", "base_bdev": "M4"})
        )
        .code,
        -22
    );
    t.call(
        "bdev_raid_set_options",
        json!({"process_window_size_kb": 512}),
    );
    assert_eq!(
        err(
            &t,
            "bdev_raid_set_options",
            json!({"process_window_size_kb": 0})
        )
        .code,
        -22
    );

    // Delete.
    assert_eq!(
        t.call("bdev_raid_delete", json!({"name": "R0"})),
        json!(true)
    );
    assert_eq!(err(&t, "bdev_raid_delete", json!({"name": "R0"})).code, -19);
    assert_eq!(t.bdev("M0")["claimed"], false);
    assert!(!t.bdev_names().contains(&"R0".to_string()));
    assert_eq!(
        t.call("bdev_raid_delete", json!({"name": "R1"})),
        json!(true)
    );
}

#[test]
fn save_config_round_trip() {
    let dir = TempDir::new("raid-rt");
    let a = Target::start_in(&dir, "a", &[]);
    for i in 0..8 {
        malloc(&a, &format!("M{i}"), 4096);
    }
    a.call(
        "bdev_raid_create",
        json!({"name": "R0", "raid_level": "raid0", "base_bdevs": ["M0", "M1", "M2"],
               "strip_size_kb": 16, "uuid": "11111111-2222-4333-8444-555555555555"}),
    );
    a.call(
        "bdev_raid_create",
        json!({"name": "R1", "raid_level": "raid1", "base_bdevs": ["M3", "M4"]}),
    );
    a.call(
        "bdev_raid_create",
        json!({"name": "C0", "raid_level": "concat", "base_bdevs": ["M5", "M6"],
               "strip_size_kb": 8}),
    );
    // Waiting for a base that does not exist (yet).
    a.call(
        "bdev_raid_create",
        json!({"name": "W0", "raid_level": "raid1", "base_bdevs": ["M7", "Later"]}),
    );
    assert_eq!(raid(&a, "W0")["state"], "configuring");
    let text_a = ferrite_rpc(&a.sock, &["save_config"], None);
    assert!(text_a.ok(), "{}", text_a.all());
    let doc_a: Value = serde_json::from_str(&text_a.stdout).unwrap();
    let entries = bdev_entries(&doc_a);
    let pos = |m: &str, n: &str| {
        entries
            .iter()
            .position(|e| e["method"] == m && e["params"]["name"] == n)
            .unwrap_or_else(|| panic!("{m} {n} missing: {entries:?}"))
    };
    // Each online raid is created after its bases.
    assert!(pos("bdev_raid_create", "R0") > pos("bdev_malloc_create", "M2"));
    assert!(pos("bdev_raid_create", "C0") > pos("bdev_malloc_create", "M6"));
    let r0 = &entries[pos("bdev_raid_create", "R0")]["params"];
    assert_eq!(
        *r0,
        json!({"name": "R0", "uuid": "11111111-2222-4333-8444-555555555555",
               "raid_level": "raid0", "strip_size_kb": 16, "base_bdevs": ["M0", "M1", "M2"]})
    );
    let f = dir.join("saved.json");
    std::fs::write(&f, &text_a.stdout).unwrap();
    let b = Target::start_in(&dir, "b", &["-c", f.to_str().unwrap()]);
    let text_b = ferrite_rpc(&b.sock, &["save_config"], None);
    assert_eq!(text_b.stdout, text_a.stdout, "documents differ");
    for n in ["R0", "R1", "C0"] {
        assert_eq!(raid(&b, n)["state"], "online", "{n}");
        assert_eq!(b.bdev(n)["uuid"], a.bdev(n)["uuid"], "{n}");
    }
    assert_eq!(raid(&b, "W0")["state"], "configuring");
    assert_eq!(raid(&b, "W0")["num_base_bdevs_discovered"], 1);
    // The missing base appears: W0 comes online.
    malloc(&b, "Later", 4096);
    wait_until(Duration::from_secs(10), "W0 online", || {
        raid(&b, "W0")["state"] == "online"
    });
}

#[test]
fn bench_verify_on_raid_levels() {
    let dir = TempDir::new("raid-bench");
    let conf = r#"{"subsystems":[{"subsystem":"bdev","config":[
 {"method":"bdev_malloc_create","params":{"name":"M0","num_blocks":32768,"block_size":512}},
 {"method":"bdev_malloc_create","params":{"name":"M1","num_blocks":32768,"block_size":512}},
 {"method":"bdev_malloc_create","params":{"name":"M2","num_blocks":32768,"block_size":512}},
 {"method":"bdev_malloc_create","params":{"name":"M3","num_blocks":32768,"block_size":512}},
 {"method":"bdev_malloc_create","params":{"name":"M4","num_blocks":32768,"block_size":512}},
 {"method":"bdev_malloc_create","params":{"name":"M5","num_blocks":32768,"block_size":512}},
 {"method":"bdev_malloc_create","params":{"name":"M6","num_blocks":32768,"block_size":512}},
 {"method":"bdev_raid_create","params":{"name":"R0","raid_level":"raid0","base_bdevs":["M0","M1"],"strip_size_kb":8}},
 {"method":"bdev_raid_create","params":{"name":"R1","raid_level":"raid1","base_bdevs":["M2","M3"],"superblock":true}},
 {"method":"bdev_raid_create","params":{"name":"R5","raid_level":"raid5f","base_bdevs":["M4","M5","M6"],"strip_size_kb":4}}
]}]}"#;
    let c = dir.join("conf.json");
    std::fs::write(&c, conf).unwrap();
    // raid0: 12 KiB I/O cross its 8 KiB strips; raid1: 4 KiB; raid5f: one 8 KiB stripe.
    for (bdev, size) in [("R0", "12k"), ("R1", "4k"), ("R5", "8k")] {
        let mut cmd = Command::new(BIN);
        cmd.args(["bench", "-c"]).arg(&c).args([
            "-q",
            "16",
            "-o",
            size,
            "-w",
            "verify",
            "-t",
            "0.5",
            "-T",
            bdev,
            "--output-json",
        ]);
        let r = run(&mut cmd, None);
        assert!(r.ok(), "{bdev}: {}", r.all());
        assert!(!r.stderr.contains("verify failed"), "{bdev}: {}", r.stderr);
        let doc = r.json();
        let res = &doc["results"][0];
        assert_eq!(res["job"], bdev, "{doc}");
        assert_eq!(res["status"], "finished", "{doc}");
        assert_eq!(res["io_failed"], 0, "{doc}");
        assert!(res["iops"].as_f64().unwrap() > 0.0, "{doc}");
    }
}
