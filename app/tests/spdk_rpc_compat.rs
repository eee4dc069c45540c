//! `ferrite tgt` driven by SPDK's own RPC client, `spdk-rpc` from PyPI's `spdk` package, in both
//! versions that `scripts/setup-spdk-venvs.sh` installs: 25.9 (matches the v25.09 contract) and
//! 26.9 (the newest; SPDK documents it as partly incompatible with a v25.09 target). Every call
//! uses spdk-rpc's own command-line syntax, and results are checked field by field from its JSON
//! output.
//!
//! Where a client version cannot work against a v25.09 target (or has a bug of its own), the
//! test asserts exactly what happens and says why in a comment; nothing is skipped.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const V25: &str = "25.9";
const V26: &str = "26.9";

const NOT_INITIALIZED: &str =
    "Method may only be called after framework is initialized using framework_start_init RPC.";
const ALREADY_INITIALIZED: &str = "Method may only be called before framework is initialized";

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

const ALL_METHODS: &[&str] = &[
    "bdev_get_bdevs",
    "bdev_get_iostat",
    "bdev_malloc_create",
    "bdev_malloc_delete",
    "bdev_null_create",
    "bdev_null_delete",
    "bdev_null_resize",
    "bdev_passthru_create",
    "bdev_passthru_delete",
    "bdev_wait_for_examine",
    "framework_get_config",
    "framework_get_reactors",
    "framework_get_subsystems",
    "framework_start_init",
    "framework_wait_init",
    "iobuf_get_stats",
    "log_get_level",
    "log_set_level",
    "rpc_get_methods",
    "spdk_get_version",
    "spdk_kill_instance",
    "thread_get_stats",
    "vhost_controller_set_coalescing",
    "vhost_create_blk_controller",
    "vhost_delete_controller",
    "vhost_get_controllers",
];
const STARTUP_ONLY: &[&str] = &[
    "framework_start_init",
    "bdev_set_options",
    "iobuf_set_options",
];
const ANY_STATE: &[&str] = &[
    "framework_wait_init",
    "rpc_get_methods",
    "spdk_get_version",
    "log_set_level",
    "log_get_level",
    "spdk_kill_instance",
];
const RUNTIME_ONLY: &[&str] = &[
    "iobuf_get_stats",
    "bdev_get_bdevs",
    "bdev_get_iostat",
    "bdev_malloc_create",
    "bdev_malloc_delete",
    "bdev_null_create",
    "bdev_null_delete",
    "bdev_null_resize",
    "bdev_passthru_create",
    "bdev_passthru_delete",
    "bdev_wait_for_examine",
    "framework_get_config",
    "framework_get_subsystems",
    "framework_get_reactors",
    "thread_get_stats",
    "vhost_controller_set_coalescing",
    "vhost_create_blk_controller",
    "vhost_delete_controller",
    "vhost_get_controllers",
];

fn assert_has(list: &[String], want: &[&str], not: &[&str], what: &str) {
    for m in want {
        assert!(
            list.iter().any(|x| x == m),
            "{what}: {m} missing from {list:?}"
        );
    }
    for m in not {
        assert!(
            !list.iter().any(|x| x == m),
            "{what}: {m} must not be listed: {list:?}"
        );
    }
}

/// Start-up state, init, framework methods, log levels and shutdown by RPC.
fn framework(ver: &'static str) {
    let c = SpdkRpc::new(ver);
    let dir = TempDir::new(&format!("compat-fw-{ver}"));
    let mut t = Target::start_in(&dir, "t", &["--wait-for-rpc"]);
    let s = t.sock.clone();

    // rpc_get_methods: everything, then only what the startup state allows.
    let all = strs(&c.json(&s, &["rpc_get_methods"]));
    assert_has(&all, ALL_METHODS, &[], "rpc_get_methods");
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), all.len(), "no duplicates: {all:?}");
    let cur = strs(&c.json(&s, &["rpc_get_methods", "--current"]));
    let mut startup_ok: Vec<&str> = STARTUP_ONLY.to_vec();
    startup_ok.extend(ANY_STATE);
    assert_has(
        &cur,
        &startup_ok,
        RUNTIME_ONLY,
        "rpc_get_methods --current (startup)",
    );

    // spdk_get_version works in both states.
    let v = c.json(&s, &["spdk_get_version"]);
    assert_eq!(
        v["version"],
        format!("Ferrite v{}", env!("CARGO_PKG_VERSION")),
        "{v}"
    );
    let mut parts = env!("CARGO_PKG_VERSION")
        .split('.')
        .map(|x| x.parse::<u64>().unwrap());
    assert_eq!(v["fields"]["major"], parts.next().unwrap());
    assert_eq!(v["fields"]["minor"], parts.next().unwrap());
    assert_eq!(v["fields"]["patch"], parts.next().unwrap());
    assert!(v["fields"]["suffix"].is_string(), "{v}");

    // A runtime method before init: SPDK's invalid-state error.
    for args in [
        &["bdev_get_bdevs"][..],
        &["bdev_malloc_create", "8", "512", "-b", "M0"],
        &["framework_get_subsystems"],
    ] {
        let (code, msg) = c.err(&s, args);
        assert_eq!((code, msg.as_str()), (-1, NOT_INITIALIZED), "{args:?}");
    }

    // framework_wait_init blocks until framework_start_init. The waiter goes through a
    // proxy, so the test knows its request reached the target; a later round trip on a new
    // connection (the server reads connections in the order they became readable) shows the
    // target has taken it in; and no byte of answer may have come back before init.
    let proxy = RpcProxy::new(&s, &dir.path);
    let mut waiter = c.spawn(&proxy.path, &["framework_wait_init"]);
    let req = proxy.wait_request(Duration::from_secs(60));
    assert_eq!(req["method"], "framework_wait_init", "{req}");
    c.ok(&s, &["spdk_get_version"]);
    assert_eq!(
        proxy.answered(),
        0,
        "framework_wait_init answered before init"
    );
    assert!(waiter.running(), "framework_wait_init returned before init");
    c.ok(&s, &["framework_start_init"]);
    let w = waiter.wait(Duration::from_secs(20));
    assert!(w.ok(), "framework_wait_init: {}", w.all());
    // After init it returns at once.
    c.ok(&s, &["framework_wait_init"]);

    // A startup-only method after init: the reverse message.
    let (code, msg) = c.err(&s, &["framework_start_init"]);
    assert_eq!(code, -1);
    assert!(msg.starts_with(ALREADY_INITIALIZED), "{msg}");

    let cur = strs(&c.json(&s, &["rpc_get_methods", "--current"]));
    let mut runtime_ok: Vec<&str> = RUNTIME_ONLY.to_vec();
    runtime_ok.extend(ANY_STATE);
    assert_has(
        &cur,
        &runtime_ok,
        STARTUP_ONLY,
        "rpc_get_methods --current (runtime)",
    );
    assert_eq!(c.json(&s, &["bdev_get_bdevs"]), json!([]));

    // Subsystems and their config.
    assert_eq!(
        c.json(&s, &["framework_get_subsystems"]),
        json!([
            {"subsystem": "iobuf", "depends_on": []},
            {"subsystem": "bdev", "depends_on": ["iobuf"]},
            {"subsystem": "vhost_blk", "depends_on": ["bdev"]}
        ])
    );
    if ver == V25 {
        assert_eq!(
            c.json(&s, &["framework_get_config", "bdev"]),
            json!([{"method": "bdev_wait_for_examine"}])
        );
        let (code, msg) = c.err(&s, &["framework_get_config", "nvmf"]);
        assert_eq!(code, -32602, "{msg}");
        assert!(msg.contains("subsystem 'nvmf' not found"), "{msg}");
    } else {
        // spdk-rpc 26.9 always sends `with_batches` (added after v25.09); a v25.09 target's
        // strict decoder rejects the unknown key with -32602 (spdk-rpc.md §2.4), as we do.
        let (code, msg) = c.err(&s, &["framework_get_config", "bdev"]);
        assert_eq!(code, -32602, "{msg}");
        assert!(msg.contains("with_batches"), "{msg}");
    }

    // Reactors and threads.
    let r = c.json(&s, &["framework_get_reactors"]);
    assert_eq!(r["pid"], t.pid, "{r}");
    assert!(r["tick_rate"].as_u64().unwrap() > 0, "{r}");
    let reactors = r["reactors"].as_array().unwrap();
    assert_eq!(reactors.len(), 1, "-m 0x1 is one reactor: {r}");
    let r0 = &reactors[0];
    assert_eq!(r0["lcore"], 0, "{r}");
    for k in ["tid", "busy", "idle", "irq", "sys", "usr"] {
        assert!(r0[k].is_u64(), "{k}: {r}");
    }
    // The core's time as /proc/stat counts it since the target started: it only grows.
    let times = |r: &Value| ["usr", "sys", "irq"].map(|k| r["reactors"][0][k].as_u64().unwrap());
    let before = times(&r);
    let later = c.json(&s, &["framework_get_reactors"]);
    let after = times(&later);
    assert!(
        before.iter().zip(after).all(|(b, a)| *b <= a),
        "{before:?} then {after:?}"
    );
    assert!(r0["in_interrupt"].is_boolean(), "{r}");
    let app = r0["lw_threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "app_thread")
        .unwrap_or_else(|| panic!("no app_thread: {r}"))
        .clone();
    assert_eq!(app["cpumask"], "0x1", "{app}");
    assert!(app["id"].is_u64() && app["elapsed"].is_u64(), "{app}");

    let st = c.json(&s, &["thread_get_stats"]);
    assert!(st["tick_rate"].as_u64().unwrap() > 0, "{st}");
    let th = st["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "app_thread")
        .unwrap_or_else(|| panic!("no app_thread: {st}"))
        .clone();
    assert_eq!(th["id"], app["id"], "{th}");
    assert_eq!(th["cpumask"], "0x1", "{th}");
    for k in [
        "busy",
        "idle",
        "active_pollers_count",
        "timed_pollers_count",
        "paused_pollers_count",
    ] {
        assert!(th[k].is_u64(), "{k}: {th}");
    }

    // Log levels.
    assert_eq!(c.json(&s, &["log_get_level"]), json!("NOTICE"));
    if ver == V25 {
        // spdk-rpc 25.9 cannot send log_set_level at all: its JSONRPCClient has a Python method
        // of its own named `log_set_level(self, lvl)` (the client's logger), which shadows the
        // RPC, so the CLI dies with a TypeError before connecting. Nothing reaches the target.
        let r = c.run(&s, &["log_set_level", "DEBUG"]);
        assert!(!r.ok(), "{}", r.all());
        assert!(
            r.all().contains("unexpected keyword argument 'level'"),
            "{}",
            r.all()
        );
        assert_eq!(c.json(&s, &["log_get_level"]), json!("NOTICE"));
        // log_set_print_level is not shadowed and goes through.
        c.ok(&s, &["log_set_print_level", "DEBUG"]);
        assert_eq!(c.json(&s, &["log_get_print_level"]), json!("DEBUG"));
        let (code, msg) = c.err(&s, &["log_set_print_level", "bogus"]);
        assert_eq!(code, -32602, "{msg}");
        assert!(
            msg.contains("level") && msg.to_lowercase().contains("bogus"),
            "{msg}"
        );
        assert_eq!(c.json(&s, &["log_get_print_level"]), json!("DEBUG"));
    } else {
        c.ok(&s, &["log_set_level", "DEBUG"]);
        assert_eq!(c.json(&s, &["log_get_level"]), json!("DEBUG"));
        c.ok(&s, &["log_set_level", "ERROR"]);
        assert_eq!(c.json(&s, &["log_get_level"]), json!("ERROR"));
        // 26.9 checks the level itself (argparse choices): exit 2, nothing sent.
        let r = c.run(&s, &["log_set_level", "bogus"]);
        assert_eq!(r.status.code(), Some(2), "{}", r.all());
        assert!(r.stderr.contains("invalid choice"), "{}", r.stderr);
        assert_eq!(c.json(&s, &["log_get_level"]), json!("ERROR"));
    }

    // spdk_kill_instance: a clean shutdown, socket removed.
    let sig = if ver == V25 { "SIGTERM" } else { "SIGINT" };
    c.ok(&s, &["spdk_kill_instance", sig]);
    assert_eq!(t.exit_code(Duration::from_secs(20)), 0, "{}", t.log_text());
    assert!(!s.exists(), "socket file left behind");
}

#[test]
fn framework_and_states_spdk_25_9() {
    framework(V25);
}

#[test]
fn framework_and_states_spdk_26_9() {
    framework(V26);
}

fn check_io_types(b: &Value) {
    let t = b["supported_io_types"]
        .as_object()
        .unwrap_or_else(|| panic!("supported_io_types: {b}"));
    for k in [
        "read",
        "write",
        "unmap",
        "write_zeroes",
        "flush",
        "reset",
        "compare",
        "compare_and_write",
        "abort",
        "nvme_admin",
        "nvme_io",
    ] {
        assert!(t.get(k).is_some_and(Value::is_boolean), "{k}: {b}");
    }
    for k in ["read", "write", "unmap", "write_zeroes", "flush", "reset"] {
        assert_eq!(t[k], true, "{k}: {b}");
    }
    for k in ["nvme_admin", "nvme_io"] {
        assert_eq!(t[k], false, "{k}: {b}");
    }
}

fn check_common(b: &Value, name: &str, product: &str, block_size: u64, num_blocks: u64) {
    assert_eq!(b["name"], name, "{b}");
    assert_eq!(b["product_name"], product, "{b}");
    assert_eq!(b["block_size"], block_size, "{b}");
    assert_eq!(b["num_blocks"], num_blocks, "{b}");
    assert_eq!(b["aliases"], json!([]), "{b}");
    assert_eq!(b["zoned"], false, "{b}");
    assert_eq!(
        b["assigned_rate_limits"],
        json!({"rw_ios_per_sec": 0, "rw_mbytes_per_sec": 0, "r_mbytes_per_sec": 0, "w_mbytes_per_sec": 0}),
        "{b}"
    );
    let u = b["uuid"].as_str().unwrap_or_else(|| panic!("uuid: {b}"));
    assert_eq!(u.len(), 36, "{u}");
    check_io_types(b);
}

fn one(v: &Value) -> Value {
    let a = v.as_array().unwrap_or_else(|| panic!("not an array: {v}"));
    assert_eq!(a.len(), 1, "{v}");
    a[0].clone()
}

const U1: &str = "0c0a7a1e-5d6b-4c39-9d5e-2b7f6a1d0001";
const U2: &str = "0c0a7a1e-5d6b-4c39-9d5e-2b7f6a1d0002";
const U3: &str = "0c0a7a1e-5d6b-4c39-9d5e-2b7f6a1d0003";

const IOSTAT_COUNTERS: &[&str] = &[
    "bytes_read",
    "num_read_ops",
    "bytes_written",
    "num_write_ops",
    "bytes_unmapped",
    "num_unmap_ops",
    "read_latency_ticks",
    "max_read_latency_ticks",
    "min_read_latency_ticks",
    "write_latency_ticks",
    "max_write_latency_ticks",
    "min_write_latency_ticks",
    "unmap_latency_ticks",
    "max_unmap_latency_ticks",
    "min_unmap_latency_ticks",
];

/// No I/O has run but examine's: the raid module reads the first blocks of every new bdev
/// looking for a superblock (as SPDK's raid examine does), so reads may show a few small
/// operations; writes and unmaps must be zero.
fn check_zero_stats(e: &Value) {
    for k in IOSTAT_COUNTERS.iter().filter(|k| !k.contains("read")) {
        assert_eq!(e[*k], 0, "{k}: {e}");
    }
    let reads = e["num_read_ops"].as_u64().unwrap_or(u64::MAX);
    assert!(reads <= 8, "more reads than examine does: {e}");
}

/// Every bdev method, through spdk-rpc's syntax.
fn bdev_methods(ver: &'static str) {
    let c = SpdkRpc::new(ver);
    let dir = TempDir::new(&format!("compat-bdev-{ver}"));
    let t = Target::start_in(&dir, "t", &[]);
    let s = t.sock.clone();
    assert_eq!(c.json(&s, &["bdev_get_bdevs"]), json!([]));

    // malloc: total size in MB and block size positionally.
    assert_eq!(
        c.line(
            &s,
            &["bdev_malloc_create", "8", "512", "-b", "M0", "-u", U1]
        ),
        "M0"
    );
    let m0 = one(&c.json(&s, &["bdev_get_bdevs", "-b", "M0"]));
    check_common(&m0, "M0", "Malloc disk", 512, 16384);
    assert_eq!(m0["uuid"], U1);
    assert_eq!(m0["claimed"], false);
    assert!(m0.get("claim_type").is_none(), "{m0}");
    assert_eq!(m0["driver_specific"], json!({}), "{m0}");
    // By UUID too.
    assert_eq!(
        one(&c.json(&s, &["bdev_get_bdevs", "-b", U1]))["name"],
        "M0"
    );

    let auto = c.line(&s, &["bdev_malloc_create", "2", "4096"]);
    assert!(
        auto.strip_prefix("Malloc")
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())),
        "auto name {auto}"
    );
    check_common(
        &one(&c.json(&s, &["bdev_get_bdevs", "-b", &auto])),
        &auto,
        "Malloc disk",
        4096,
        512,
    );
    let (code, msg) = c.err(&s, &["bdev_malloc_create", "1", "1000", "-b", "Bad"]);
    assert_eq!(code, -22, "{msg}");
    assert!(msg.contains("block_size"), "{msg}");

    // null: name, total size in MB, block size.
    assert_eq!(
        c.line(&s, &["bdev_null_create", "N0", "16", "4096", "-u", U2]),
        "N0"
    );
    let n0 = one(&c.json(&s, &["bdev_get_bdevs", "-b", "N0"]));
    check_common(&n0, "N0", "Null disk", 4096, 4096);
    assert_eq!(n0["uuid"], U2);
    let (code, msg) = c.err(&s, &["bdev_null_create", "N0", "1", "512"]);
    assert_eq!(code, -17, "{msg}");
    assert!(msg.contains("'N0' already exists"), "{msg}");
    c.ok(&s, &["bdev_null_resize", "N0", "32"]);
    assert_eq!(
        one(&c.json(&s, &["bdev_get_bdevs", "-b", "N0"]))["num_blocks"],
        8192
    );
    let (code, msg) = c.err(&s, &["bdev_null_resize", "Nope", "1"]);
    assert_eq!((code, msg.as_str()), (-19, "bdev 'Nope' not found"));

    // passthru on an existing base.
    assert_eq!(
        c.line(
            &s,
            &["bdev_passthru_create", "-b", "M0", "-p", "P0", "-u", U3]
        ),
        "P0"
    );
    let p0 = one(&c.json(&s, &["bdev_get_bdevs", "-b", "P0"]));
    check_common(&p0, "P0", "passthru", 512, 16384);
    assert_eq!(p0["uuid"], U3);
    assert_eq!(p0["claimed"], false);
    assert_eq!(
        p0["driver_specific"],
        json!({"passthru": {"name": "P0", "base_bdev_name": "M0"}})
    );
    let m0 = one(&c.json(&s, &["bdev_get_bdevs", "-b", "M0"]));
    assert_eq!(m0["claimed"], true, "{m0}");
    assert_eq!(m0["claim_type"], "exclusive_write", "{m0}");

    // passthru before its base: accepted, waits, attaches when the base appears.
    assert_eq!(
        c.line(&s, &["bdev_passthru_create", "-b", "Base1", "-p", "P1"]),
        "P1"
    );
    let (code, msg) = c.err(&s, &["bdev_get_bdevs", "-b", "P1"]);
    assert_eq!((code, msg.as_str()), (-19, "bdev 'P1' not found"));
    assert_eq!(
        c.line(&s, &["bdev_malloc_create", "4", "512", "-b", "Base1"]),
        "Base1"
    );
    c.ok(&s, &["bdev_wait_for_examine"]);
    let p1 = one(&c.json(&s, &["bdev_get_bdevs", "-b", "P1"]));
    check_common(&p1, "P1", "passthru", 512, 8192);
    assert_eq!(p1["driver_specific"]["passthru"]["base_bdev_name"], "Base1");
    let b1 = one(&c.json(&s, &["bdev_get_bdevs", "-b", "Base1"]));
    assert_eq!(
        (b1["claimed"].clone(), b1["claim_type"].clone()),
        (json!(true), json!("exclusive_write"))
    );

    // -t: wait for a bdev that another client creates meanwhile.
    // The target shows the wait as a timed poller on the app thread (thread_get_pollers in
    // SPDK's shape): the bdev is created only once the wait is known to be under way.
    let mut waiter = c.spawn(&s, &["bdev_get_bdevs", "-b", "Late", "-t", "20000"]);
    let t0 = Instant::now();
    let wait_poller = loop {
        let v = c.json(&s, &["thread_get_pollers"]);
        let found = v["threads"]
            .as_array()
            .expect("threads")
            .iter()
            .find_map(|t| {
                let mut keys: Vec<&str> = t
                    .as_object()
                    .expect("thread")
                    .keys()
                    .map(|k| k.as_str())
                    .collect();
                keys.sort_unstable();
                assert_eq!(
                    keys,
                    [
                        "active_pollers",
                        "id",
                        "name",
                        "paused_pollers",
                        "timed_pollers"
                    ],
                    "SPDK's keys, no others: {t}"
                );
                t["timed_pollers"]
                    .as_array()
                    .expect("timed_pollers")
                    .iter()
                    .find(|p| p["name"] == "bdev_get_bdevs_wait")
                    .cloned()
            });
        if let Some(p) = found {
            break p;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no wait poller: {v}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(wait_poller["state"], "waiting", "{wait_poller}");
    assert!(
        wait_poller["period_ticks"].as_u64().unwrap() > 0,
        "{wait_poller}"
    );
    assert!(waiter.running(), "bdev_get_bdevs -t returned early");
    t.call(
        "bdev_null_create",
        json!({"name": "Late", "num_blocks": 64, "block_size": 512}),
    );
    let w = waiter.wait(Duration::from_secs(30));
    assert!(w.ok(), "{}", w.all());
    let late = one(&w.json());
    // (Success proves the bdev's arrival ended the wait: its 20 s timeout answers -19.)
    check_common(&late, "Late", "Null disk", 512, 64);
    // ... and one that never comes: -19 after the timeout.
    let r = c.run(&s, &["bdev_get_bdevs", "-b", "Never", "-t", "300"]);
    assert!(!r.ok() && r.elapsed >= Duration::from_millis(300), "{r:?}");
    let (code, msg) = rpc_error_of(&r).expect("error");
    assert_eq!(code, -19);
    assert!(msg.starts_with("bdev 'Never' not found"), "{msg}");
    let (code, msg) = c.err(&s, &["bdev_get_bdevs", "-b", "nope"]);
    assert_eq!((code, msg.as_str()), (-19, "bdev 'nope' not found"));

    let mut names = vec![
        "Base1".to_string(),
        "Late".into(),
        "M0".into(),
        "N0".into(),
        "P0".into(),
        "P1".into(),
        auto.clone(),
    ];
    names.sort();
    let listed: Vec<String> = {
        let mut v: Vec<String> = c
            .json(&s, &["bdev_get_bdevs"])
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["name"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(listed, names);

    // bdev_get_iostat: no I/O has run but examine's (see check_zero_stats).
    let st = c.json(&s, &["bdev_get_iostat"]);
    assert!(st["tick_rate"].as_u64().unwrap() > 0 && st["ticks"].as_u64().unwrap() > 0);
    let mut stat_names: Vec<String> = st["bdevs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            check_zero_stats(b);
            b["name"].as_str().unwrap().to_string()
        })
        .collect();
    stat_names.sort();
    assert_eq!(stat_names, names);
    if ver == V25 {
        let st = c.json(&s, &["bdev_get_iostat", "-b", "M0"]);
        let e = one(&st["bdevs"]);
        assert_eq!(e["name"], "M0");
        check_zero_stats(&e);
        // Per channel: SPDK's flat shape {tick_rate, ticks, name, channels}.
        let pc = c.json(&s, &["bdev_get_iostat", "-b", "M0", "-c"]);
        assert_eq!(pc["name"], "M0", "{pc}");
        assert!(
            pc["channels"].is_array() && pc.get("bdevs").is_none(),
            "{pc}"
        );
        assert!(pc["tick_rate"].as_u64().unwrap() > 0, "{pc}");
        for ch in pc["channels"].as_array().unwrap() {
            assert!(ch["thread_id"].is_u64(), "{pc}");
            check_zero_stats(ch);
        }
        let st = c.json(&s, &["bdev_get_iostat", "-b", "N0", "--reset-mode", "all"]);
        check_zero_stats(&one(&st["bdevs"]));
        let (code, msg) = c.err(&s, &["bdev_get_iostat", "-b", "nope"]);
        assert_eq!((code, msg.as_str()), (-19, "bdev 'nope' not found"));
    } else {
        // 26.9 has no -b: it sends `names` (an array, added in v26.01), which a v25.09
        // target rejects as an unknown parameter.
        let (code, msg) = c.err(&s, &["bdev_get_iostat", "--names", "M0"]);
        assert_eq!((code, msg.as_str()), (-32602, "unknown parameter 'names'"));
        let st = c.json(&s, &["bdev_get_iostat", "--reset-mode", "maxmin"]);
        assert_eq!(st["bdevs"].as_array().unwrap().len(), names.len());
        // Reset mode "error" is newer than v25.09 too.
        let (code, msg) = c.err(&s, &["bdev_get_iostat", "--reset-mode", "error"]);
        assert_eq!(code, -32602, "{msg}");
        assert!(msg.contains("reset_mode"), "{msg}");
    }
    // Per channel without a bdev name: -EINVAL, as SPDK.
    let (code, msg) = c.err(&s, &["bdev_get_iostat", "-c"]);
    assert_eq!(code, -22, "{msg}");
    assert!(msg.contains("per_channel") && msg.contains("name"), "{msg}");

    // Deletion.
    c.ok(&s, &["bdev_passthru_delete", "P0"]);
    let m0 = one(&c.json(&s, &["bdev_get_bdevs", "-b", "M0"]));
    assert_eq!(m0["claimed"], false, "{m0}");
    assert!(m0.get("claim_type").is_none(), "{m0}");
    c.ok(&s, &["bdev_malloc_delete", "M0"]);
    let (code, msg) = c.err(&s, &["bdev_get_bdevs", "-b", "M0"]);
    assert_eq!((code, msg.as_str()), (-19, "bdev 'M0' not found"));
    let (code, msg) = c.err(&s, &["bdev_malloc_delete", "N0"]);
    assert_eq!(code, -19, "{msg}");
    assert!(msg.contains("'N0'") && msg.contains("malloc"), "{msg}");
    c.ok(&s, &["bdev_null_delete", "N0"]);
    let (code, msg) = c.err(&s, &["bdev_null_delete", "N0"]);
    assert_eq!((code, msg.as_str()), (-19, "bdev 'N0' not found"));
    let (code, msg) = c.err(&s, &["bdev_passthru_delete", "Nope"]);
    assert_eq!((code, msg.as_str()), (-19, "bdev 'Nope' not found"));
    // Deleting a claimed base removes the passthru on it first (hot-remove), as SPDK does.
    c.ok(&s, &["bdev_malloc_delete", "Base1"]);
    c.ok(&s, &["bdev_wait_for_examine"]);
    let mut left = vec![auto, "Late".to_string()];
    left.sort();
    assert_eq!(t.bdev_names(), left);
}

#[test]
fn bdev_methods_spdk_25_9() {
    bdev_methods(V25);
}

#[test]
fn bdev_methods_spdk_26_9() {
    bdev_methods(V26);
}

/// save_config / load_config, which spdk-rpc composes on the client side.
fn save_and_load(ver: &'static str) {
    let c = SpdkRpc::new(ver);
    let c25 = SpdkRpc::new(V25);
    let dir = TempDir::new(&format!("compat-cfg-{ver}"));
    let a = Target::start_in(&dir, "a", &[]);
    let s = a.sock.clone();
    c.ok(
        &s,
        &[
            "bdev_malloc_create",
            "4",
            "4096",
            "-b",
            "M0",
            "-u",
            U1,
            "-o",
            "16",
        ],
    );
    c.ok(&s, &["bdev_null_create", "N0", "8", "512", "-u", U2]);
    c.ok(
        &s,
        &["bdev_passthru_create", "-b", "M0", "-p", "P0", "-u", U3],
    );
    c.ok(&s, &["bdev_passthru_create", "-b", "Missing", "-p", "PW"]);
    assert_eq!(
        one(&c.json(&s, &["bdev_get_bdevs", "-b", "M0"]))["optimal_io_boundary"],
        16
    );

    let saved = if ver == V25 {
        c.ok(&s, &["save_config"]).stdout
    } else {
        // spdk-rpc 26.9's save_config calls framework_get_config with `with_batches`, which a
        // v25.09 target rejects (-32602, spdk-rpc.md §2.4): it cannot save from us. Its
        // load_config works, so the document is saved with 25.9 and loaded with 26.9.
        let (code, msg) = c.err(&s, &["save_config"]);
        assert_eq!(code, -32602, "{msg}");
        assert!(msg.contains("with_batches"), "{msg}");
        c25.ok(&s, &["save_config"]).stdout
    };
    let doc: Value = serde_json::from_str(&saved).unwrap();
    assert_eq!(
        doc,
        a.save_config(),
        "client-composed == server save_config"
    );
    let entries = bdev_entries(&doc);
    let methods: Vec<&str> = entries
        .iter()
        .map(|e| e["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        methods,
        [
            "bdev_passthru_create",
            "bdev_malloc_create",
            "bdev_null_create",
            "bdev_passthru_create",
            "bdev_wait_for_examine"
        ],
        "{doc}"
    );
    assert_eq!(
        entries[0]["params"],
        json!({"base_bdev_name": "Missing", "name": "PW", "uuid": entries[0]["params"]["uuid"]})
    );
    assert_eq!(
        entries[1]["params"],
        json!({"name": "M0", "num_blocks": 1024, "block_size": 4096, "uuid": U1, "optimal_io_boundary": 16})
    );
    assert_eq!(
        entries[2]["params"],
        json!({"name": "N0", "num_blocks": 16384, "block_size": 512, "uuid": U2})
    );
    assert_eq!(
        entries[3]["params"],
        json!({"base_bdev_name": "M0", "name": "P0", "uuid": U3})
    );

    // Into a fresh target in the runtime state, from standard input.
    let b = Target::start_in(&dir, "b", &[]);
    let r = c.run_stdin(&b.sock, &["load_config"], &saved);
    assert!(r.ok(), "{}", r.all());
    assert_eq!(b.save_config(), doc);
    let p0 = b.bdev("P0");
    assert_eq!(p0["uuid"], U3);
    assert_eq!(p0["driver_specific"]["passthru"]["base_bdev_name"], "M0");
    assert_eq!(b.bdev("M0")["claim_type"], "exclusive_write");
    assert_eq!(b.bdev("M0")["optimal_io_boundary"], 16);
    assert_eq!(
        b.bdev_names(),
        ["M0", "N0", "P0"].map(String::from).to_vec()
    );

    // Into a fresh target waiting for RPC, from a file: load_config also starts the framework.
    let f = dir.join("saved.json");
    std::fs::write(&f, &saved).unwrap();
    let d = Target::start_in(&dir, "d", &["--wait-for-rpc"]);
    let r = c.run(&d.sock, &["load_config", "-j", f.to_str().unwrap()]);
    assert!(r.ok(), "{}", r.all());
    assert_eq!(d.save_config(), doc);
    c.ok(&d.sock, &["framework_wait_init"]);
    assert_eq!(d.bdev_names(), b.bdev_names());
}

#[test]
fn save_and_load_config_spdk_25_9() {
    save_and_load(V25);
}

#[test]
fn save_and_load_config_spdk_26_9() {
    save_and_load(V26);
}

/// `bdev_set_options` in the startup state: bounds answered with -32602 naming the option, the
/// values in the bdev subsystem's saved config, refused after init with SPDK's state error, and
/// the saved config loading back into a fresh target (startup entries first).
fn bdev_options(ver: &'static str) {
    let c = SpdkRpc::new(ver);
    let dir = TempDir::new(&format!("compat-opts-{ver}"));
    let t = Target::start_in(&dir, "t", &["--wait-for-rpc"]);
    let s = t.sock.clone();
    let (code, msg) = c.err(&s, &["bdev_set_options", "-p", "100", "-c", "64"]);
    assert_eq!(code, -32602, "{msg}");
    assert!(
        msg.contains("bdev_io_pool_size 100 is too small for bdev_io_cache_size 64"),
        "{msg}"
    );
    let (code, msg) = c.err(&s, &["bdev_set_options", "-c", "70000"]);
    assert_eq!(code, -32602, "{msg}");
    assert!(
        msg.contains("bdev_io_cache_size 70000 is out of range"),
        "{msg}"
    );
    let (code, msg) = c.err(
        &s,
        &["bdev_set_options", "--iobuf-large-cache-size", "5000000"],
    );
    assert_eq!(code, -32602, "{msg}");
    assert!(
        msg.contains("iobuf_large_cache_size 5000000 is out of range"),
        "{msg}"
    );
    c.ok(
        &s,
        &[
            "bdev_set_options",
            "-p",
            "8192",
            "-c",
            "512",
            "--iobuf-small-cache-size",
            "256",
        ],
    );
    c.ok(&s, &["framework_start_init"]);
    let (code, msg) = c.err(&s, &["bdev_set_options", "-c", "128"]);
    assert_eq!(code, -1);
    assert!(msg.starts_with(ALREADY_INITIALIZED), "{msg}");
    c.ok(&s, &["bdev_null_create", "N0", "8", "512"]);
    let doc = t.save_config();
    let entries = bdev_entries(&doc);
    assert_eq!(
        entries[0],
        json!({"method": "bdev_set_options", "params": {
            "bdev_io_pool_size": 8192, "bdev_io_cache_size": 512, "bdev_auto_examine": true,
            "iobuf_small_cache_size": 256, "iobuf_large_cache_size": 16}}),
        "{doc}"
    );
    let f = dir.join("saved.json");
    std::fs::write(&f, doc.to_string()).unwrap();
    let d = Target::start_in(&dir, "d", &["--wait-for-rpc"]);
    let r = c.run(&d.sock, &["load_config", "-j", f.to_str().unwrap()]);
    assert!(r.ok(), "{}", r.all());
    assert_eq!(d.save_config(), doc);
}

#[test]
fn bdev_set_options_spdk_25_9() {
    bdev_options(V25);
}

#[test]
fn bdev_set_options_spdk_26_9() {
    bdev_options(V26);
}
