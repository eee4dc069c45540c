//! The vhost-user-blk target's RPC methods through SPDK's own client (`spdk-rpc` 25.9) and the
//! binary: create (socket in `-S DIR`, mode 0600), list in SPDK's shape, coalescing, errors
//! with SPDK's codes, bdev hot-remove under a controller, save_config → `-c` restores the
//! controllers, delete removes the socket.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use common::*;
use serde_json::{json, Value};

fn vhost_entries(doc: &Value) -> Vec<Value> {
    doc["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subsystem"] == "vhost_blk")
        .and_then(|s| s["config"].as_array().cloned())
        .unwrap_or_else(|| panic!("no vhost_blk subsystem in {doc}"))
}

#[test]
fn vhost_methods_with_spdk_rpc_and_config_round_trip() {
    let dir = TempDir::new("vhost-rpc");
    let vdir = dir.join("vsock");
    std::fs::create_dir_all(&vdir).unwrap();
    let vd = vdir.display().to_string();
    let t = Target::start_in(&dir, "t", &["-S", &vd]);
    let s = t.sock.clone();
    spdk25().ok(&s, &["bdev_malloc_create", "-b", "Malloc0", "16", "512"]);
    spdk25().ok(&s, &["bdev_malloc_create", "-b", "Malloc1", "16", "4096"]);
    spdk25().ok(&s, &["bdev_malloc_create", "-b", "Malloc2", "16", "512"]);
    spdk25().ok(
        &s,
        &[
            "vhost_create_blk_controller",
            "--cpumask",
            "0x1",
            "vhost.0",
            "Malloc0",
        ],
    );
    spdk25().ok(
        &s,
        &["vhost_create_blk_controller", "-r", "vhost.ro", "Malloc1"],
    );
    spdk25().ok(
        &s,
        &[
            "vhost_create_blk_controller",
            "-p",
            "vhost.packed",
            "Malloc2",
        ],
    );
    let sock0 = vdir.join("vhost.0");
    let md = std::fs::metadata(&sock0).unwrap();
    assert!(md.file_type().is_socket());
    assert_eq!(md.permissions().mode() & 0o777, 0o600);

    // SPDK's result shape
    let l = spdk25()
        .ok(&s, &["vhost_get_controllers", "-n", "vhost.0"])
        .json();
    let c = &l[0];
    assert_eq!(c["ctrlr"], "vhost.0");
    assert_eq!(c["cpumask"], "0x1");
    assert_eq!(c["delay_base_us"], 0);
    assert_eq!(c["iops_threshold"], 0);
    assert_eq!(c["socket"], sock0.display().to_string());
    assert_eq!(c["sessions"], json!([]));
    assert_eq!(
        c["backend_specific"],
        json!({"block": {"readonly": false, "bdev": "Malloc0", "transport": "vhost_user_blk"}})
    );
    let all = spdk25().ok(&s, &["vhost_get_controllers"]).json();
    assert_eq!(all.as_array().unwrap().len(), 3);
    spdk25().ok(
        &s,
        &["vhost_controller_set_coalescing", "vhost.0", "20", "60000"],
    );
    let c = spdk25()
        .ok(&s, &["vhost_get_controllers", "-n", "vhost.0"])
        .json();
    assert_eq!(
        (
            c[0]["delay_base_us"].clone(),
            c[0]["iops_threshold"].clone()
        ),
        (json!(20), json!(60000))
    );

    // errors, with SPDK's codes and messages that name the object
    let (code, msg) = spdk25().err(&s, &["vhost_create_blk_controller", "vhost.0", "Malloc0"]);
    assert_eq!(code, -17);
    assert!(msg.contains("'vhost.0' already exists"), "{msg}");
    let (code, msg) = spdk25().err(&s, &["vhost_create_blk_controller", "vhost.x", "Nope"]);
    assert_eq!(code, -19);
    assert!(msg.contains("Nope"), "{msg}");
    let (code, msg) = spdk25().err(
        &s,
        &[
            "vhost_create_blk_controller",
            "--cpumask",
            "0x100",
            "vhost.y",
            "Malloc0",
        ],
    );
    assert_eq!(code, -22);
    assert!(msg.contains("cpumask"), "{msg}");
    let (code, msg) = spdk25().err(
        &s,
        &[
            "vhost_create_blk_controller",
            "--cpumask",
            "zz",
            "vhost.y",
            "Malloc0",
        ],
    );
    assert_eq!(code, -22, "{msg}");
    let (code, msg) = spdk25().err(&s, &["vhost_get_controllers", "-n", "none"]);
    assert_eq!(code, -19);
    assert!(msg.contains("'none'"), "{msg}");
    let (code, _) = spdk25().err(&s, &["vhost_delete_controller", "none"]);
    assert_eq!(code, -19);
    let (code, _) = spdk25().err(&s, &["vhost_controller_set_coalescing", "none", "1", "1"]);
    assert_eq!(code, -19);
    // strict decoding: an unknown parameter
    let e = t
        .rpc(
            "vhost_create_blk_controller",
            json!({"ctrlr": "a", "dev_name": "Malloc0", "bogus": 1}),
        )
        .unwrap_err();
    assert_eq!(e.code, -32602, "{e:?}");

    // save_config: the vhost_blk subsystem after bdev (after iobuf), loadable by -c
    let doc = t.save_config();
    let subs: Vec<&str> = doc["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["subsystem"].as_str().unwrap())
        .collect();
    assert_eq!(subs, ["iobuf", "bdev", "vhost_blk"]);
    let v = vhost_entries(&doc);
    assert_eq!(v.len(), 4, "{v:?}");
    assert_eq!(v[0]["method"], "vhost_create_blk_controller");
    assert_eq!(
        v[0]["params"],
        json!({"ctrlr": "vhost.0", "dev_name": "Malloc0", "cpumask": "0x1", "readonly": false,
               "packed_ring": false, "transport": "vhost_user_blk"})
    );
    assert_eq!(v[1]["method"], "vhost_controller_set_coalescing");
    assert_eq!(v[2]["params"]["readonly"], true);
    assert_eq!(v[3]["params"]["packed_ring"], true);
    let conf = dir.join("saved.json");
    std::fs::write(&conf, serde_json::to_string_pretty(&doc).unwrap()).unwrap();

    // hot-remove: deleting the bdev under a controller stops it serving; the controller stays
    spdk25().ok(&s, &["bdev_malloc_delete", "Malloc2"]);
    let c = spdk25()
        .ok(&s, &["vhost_get_controllers", "-n", "vhost.packed"])
        .json();
    assert_eq!(c[0]["backend_specific"]["block"]["bdev"], Value::Null);
    spdk25().ok(&s, &["vhost_delete_controller", "vhost.packed"]);
    assert!(!vdir.join("vhost.packed").exists());
    drop(t);

    // a new target from the saved file has the same controllers, listening again
    let t2 = Target::start_in(&dir, "t2", &["-S", &vd, "-c", &conf.display().to_string()]);
    let doc2 = t2.save_config();
    assert_eq!(vhost_entries(&doc2), v, "save_config → -c → save_config");
    assert!(vdir.join("vhost.0").exists());
    let s2 = t2.sock.clone();
    for c in ["vhost.0", "vhost.ro", "vhost.packed"] {
        spdk25().ok(&s2, &["vhost_delete_controller", c]);
        assert!(!vdir.join(c).exists(), "{c}: socket removed");
    }
    assert_eq!(
        spdk25().ok(&s2, &["vhost_get_controllers"]).json(),
        json!([])
    );
}
