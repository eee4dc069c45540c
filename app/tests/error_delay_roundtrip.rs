//! The error and delay modules through the real binary: created with `ferrite rpc` over malloc
//! (a delay stacked on an error bdev, a delay on its own, an error bdev still waiting for its
//! base), injections armed (runtime state: not saved), a latency updated (saved), then
//! `save_config` → restart with `-c` → `save_config` gives the identical document.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};

/// `ferrite rpc -s SOCK ARGS..` that must succeed; its result.
fn rpc_ok(t: &Target, args: &[&str]) -> Value {
    let r = ferrite_rpc(&t.sock, args, None);
    assert!(
        r.ok(),
        "ferrite rpc {args:?}: {}\n{}",
        r.all(),
        t.log_text()
    );
    r.json()
}

fn save_text(t: &Target) -> String {
    let r = ferrite_rpc(&t.sock, &["save_config"], None);
    assert!(r.ok(), "{}", r.all());
    r.stdout
}

#[test]
fn error_and_delay_save_config_round_trip() {
    let dir = TempDir::new("rt-errdelay");
    let a = Target::start_in(&dir, "a", &[]);
    for (name, uuid) in [
        ("M0", "a0a0a0a0-0000-4000-8000-0000000000e0"),
        ("M1", "a0a0a0a0-0000-4000-8000-0000000000e1"),
    ] {
        rpc_ok(
            &a,
            &[
                "bdev_malloc_create",
                "--name",
                name,
                "--num-blocks",
                "256",
                "--block-size",
                "512",
                "--uuid",
                uuid,
            ],
        );
    }
    // SPDK answers `true` to bdev_error_create and the name to bdev_delay_create.
    assert_eq!(
        rpc_ok(&a, &["bdev_error_create", "--base-name", "M0"]),
        json!(true)
    );
    assert_eq!(
        rpc_ok(
            &a,
            &[
                "bdev_delay_create",
                "--base-bdev-name",
                "EE_M0",
                "--name",
                "D0",
                "--avg-read-latency",
                "10",
                "--p99-read-latency",
                "100",
                "--avg-write-latency",
                "20",
                "--p99-write-latency",
                "200",
            ],
        ),
        json!("D0")
    );
    assert_eq!(
        rpc_ok(
            &a,
            &[
                "bdev_delay_create",
                "--base-bdev-name",
                "M1",
                "--name",
                "D1",
                "--uuid",
                "d1d1d1d1-0000-4000-8000-0000000000d1",
                "--avg-read-latency",
                "1",
                "--p99-read-latency",
                "2",
                "--avg-write-latency",
                "3",
                "--p99-write-latency",
                "4",
            ],
        ),
        json!("D1")
    );
    assert_eq!(
        rpc_ok(
            &a,
            &[
                "bdev_delay_update_latency",
                "--delay-bdev-name",
                "D1",
                "--latency-type",
                "p99_write",
                "--latency-us",
                "9000",
            ],
        ),
        json!(true)
    );
    // An error bdev whose base does not exist yet: saved by the module, created on load.
    assert_eq!(
        rpc_ok(&a, &["bdev_error_create", "--base-name", "Later"]),
        json!(true)
    );
    // Runtime state that must not be saved.
    assert_eq!(
        rpc_ok(
            &a,
            &[
                "bdev_error_inject_error",
                "--name",
                "EE_M0",
                "--io-type",
                "all",
                "--error-type",
                "failure",
                "--num",
                "3",
            ],
        ),
        json!(true)
    );
    // Errors through the CLI name what is wrong.
    let r = ferrite_rpc(
        &a.sock,
        &[
            "bdev_error_inject_error",
            "--name",
            "EE_M0",
            "--io-type",
            "sideways",
            "--error-type",
            "failure",
        ],
        None,
    );
    assert!(!r.ok());
    assert!(
        r.stderr.contains("-32602") && r.stderr.contains("sideways"),
        "{}",
        r.all()
    );
    let r = ferrite_rpc(
        &a.sock,
        &[
            "bdev_error_inject_error",
            "--name",
            "EE_none",
            "--io-type",
            "read",
            "--error-type",
            "failure",
        ],
        None,
    );
    assert!(!r.ok());
    assert!(
        r.stderr.contains("-19") && r.stderr.contains("EE_none"),
        "{}",
        r.all()
    );

    // What bdev_get_bdevs says about them.
    let ee = a.bdev("EE_M0");
    assert_eq!(ee["product_name"], "Error Injection Disk");
    assert_eq!(
        ee["driver_specific"]["error_disk"],
        json!({"base_bdev": "M0"})
    );
    assert_eq!(ee["claimed"], true, "{ee}");
    let d1 = a.bdev("D1");
    assert_eq!(d1["driver_specific"]["delay"]["p99_write_latency"], 9000);
    assert_eq!(
        d1["uuid"],
        json!("d1d1d1d1-0000-4000-8000-0000000000d1"),
        "{d1}"
    );

    // The saved document: creation entries with the current latencies, no injections.
    let text_a = save_text(&a);
    let doc_a: Value = serde_json::from_str(&text_a).unwrap();
    let entries = bdev_entries(&doc_a);
    let methods: Vec<&str> = entries
        .iter()
        .map(|e| e["method"].as_str().unwrap())
        .collect();
    assert!(!methods.contains(&"bdev_error_inject_error"), "{methods:?}");
    let find = |m: &str, key: &str, val: &str| -> Value {
        entries
            .iter()
            .find(|e| e["method"] == m && e["params"][key] == val)
            .cloned()
            .unwrap_or_else(|| panic!("no {m} with {key}={val} in {text_a}"))
    };
    let e0 = find("bdev_error_create", "base_name", "M0");
    assert_eq!(e0["params"]["uuid"], ee["uuid"]);
    assert_eq!(e0["params"].as_object().unwrap().len(), 2, "{e0}");
    find("bdev_error_create", "base_name", "Later");
    let d0 = find("bdev_delay_create", "name", "D0");
    assert_eq!(d0["params"]["base_bdev_name"], "EE_M0");
    assert_eq!(
        (
            &d0["params"]["avg_read_latency"],
            &d0["params"]["p99_write_latency"]
        ),
        (&json!(10), &json!(200))
    );
    let d1e = find("bdev_delay_create", "name", "D1");
    assert_eq!(d1e["params"]["p99_write_latency"], 9000);
    // The error bdev comes after its base, the delay after the error bdev under it.
    let pos = |m: &str, key: &str, val: &str| {
        entries
            .iter()
            .position(|e| e["method"] == m && e["params"][key] == val)
            .unwrap()
    };
    assert!(pos("bdev_malloc_create", "name", "M0") < pos("bdev_error_create", "base_name", "M0"));
    assert!(pos("bdev_error_create", "base_name", "M0") < pos("bdev_delay_create", "name", "D0"));

    // Restart from the saved file: the same document, the same bdevs.
    let f = dir.join("saved.json");
    std::fs::write(&f, &text_a).unwrap();
    let b = Target::start_in(&dir, "b", &["-c", f.to_str().unwrap()]);
    let text_b = save_text(&b);
    assert_eq!(text_b, text_a, "-c load: documents differ");
    assert_eq!(b.bdev_names(), a.bdev_names());
    assert_eq!(b.bdev("D0")["uuid"], a.bdev("D0")["uuid"]);
    // And once more from B's own output: a fixed point.
    let f2 = dir.join("saved-b.json");
    std::fs::write(&f2, &text_b).unwrap();
    let c = Target::start_in(&dir, "c", &["-c", f2.to_str().unwrap()]);
    assert_eq!(save_text(&c), text_a);
    // Delete through the CLI; save_config forgets them.
    assert_eq!(
        rpc_ok(&c, &["bdev_delay_delete", "--name", "D0"]),
        json!(true)
    );
    assert_eq!(
        rpc_ok(&c, &["bdev_error_delete", "--name", "EE_M0"]),
        json!(true)
    );
    assert_eq!(
        rpc_ok(&c, &["bdev_error_delete", "--name", "EE_Later"]),
        json!(true)
    );
    let left = bdev_entries(&c.save_config());
    assert!(
        !left.iter().any(|e| e["method"] == "bdev_error_create"
            || (e["method"] == "bdev_delay_create" && e["params"]["name"] == "D0")),
        "{left:?}"
    );
}
