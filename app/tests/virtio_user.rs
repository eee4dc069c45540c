//! The virtio-user bdev (a vhost-user-blk frontend) against qemu-storage-daemon's
//! vhost-user-blk export, through the real binary: attach/inspect/detach over RPC, save_config
//! round trip, `ferrite bench -w verify` on a file export, geometry, a read-only export, and
//! the server going away while I/O runs. Needs `qemu-storage-daemon` (Debian package
//! qemu-system-common).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;
mod qsd;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use qsd::Qsd;
use serde_json::{json, Value};

fn bench_conf(dir: &TempDir, sock: &Path, extra: &[Value]) -> std::path::PathBuf {
    let conf = dir.join("conf.json");
    let mut cfg = vec![
        json!({"method": "bdev_virtio_attach_controller", "params": {
        "name": "VirtioBlk0", "trtype": "user", "traddr": sock.display().to_string(),
        "dev_type": "blk", "vq_count": 2, "vq_size": 512}}),
    ];
    cfg.extend_from_slice(extra);
    let doc = json!({"subsystems": [{"subsystem": "bdev", "config": cfg}]});
    std::fs::write(&conf, doc.to_string()).unwrap();
    conf
}

fn bench_cmd(conf: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("bench").arg("-c").arg(conf).args(args);
    c
}

#[test]
fn attach_inspect_roundtrip_detach() {
    let dir = TempDir::new("virtio-rpc");
    let q = Qsd::null(&dir, "q", 64 << 20, 4096, true);
    let t = Target::start_in(&dir, "t", &[]);
    let sock = q.sock.display().to_string();

    let r = t.call(
        "bdev_virtio_attach_controller",
        json!({"name": "VirtioBlk0", "trtype": "user", "traddr": sock,
               "dev_type": "blk", "vq_count": 2, "vq_size": 256, "timeout_us": 5000000}),
    );
    assert_eq!(r, json!(["VirtioBlk0"]));
    let b = t.bdev("VirtioBlk0");
    assert_eq!(b["product_name"], "VirtioBlk Disk", "{b}");
    assert_eq!(b["block_size"], 4096, "{b}");
    assert_eq!(b["num_blocks"], (64 << 20) / 4096, "{b}");
    assert_eq!(b["supported_io_types"]["write"], true, "{b}");
    assert_eq!(b["supported_io_types"]["flush"], true, "{b}");
    let ds = &b["driver_specific"]["virtio_blk"];
    assert_eq!(ds["vq_count"], 2, "{b}");
    assert_eq!(ds["timeout_us"], 5000000, "{b}");
    assert_eq!(ds["traddr"], sock.as_str(), "{b}");
    let l = t.call("bdev_virtio_blk_get_controllers", json!(null));
    assert_eq!(l.as_array().unwrap().len(), 1, "{l}");

    // Same name again, a socket nobody listens on, unsupported transports: clear errors.
    let e = t
        .rpc(
            "bdev_virtio_attach_controller",
            json!({"name": "VirtioBlk0", "trtype": "user", "traddr": sock, "dev_type": "blk"}),
        )
        .unwrap_err();
    assert_eq!(e.code, -i64::from(libc::EEXIST), "{}", e.message);
    let e = t
        .rpc(
            "bdev_virtio_attach_controller",
            json!({"name": "V1", "trtype": "user", "traddr": dir.join("none.sock"), "dev_type": "blk"}),
        )
        .unwrap_err();
    assert!(
        e.message.contains("V1") && e.message.contains("connect"),
        "{}",
        e.message
    );
    let e = t
        .rpc(
            "bdev_virtio_attach_controller",
            json!({"name": "V2", "trtype": "pci", "traddr": "0000:00:01.0", "dev_type": "blk"}),
        )
        .unwrap_err();
    assert!(e.message.contains("trtype"), "{}", e.message);
    let e = t
        .rpc(
            "bdev_virtio_attach_controller",
            json!({"name": "V3", "trtype": "user", "traddr": sock, "dev_type": "scsi"}),
        )
        .unwrap_err();
    assert!(e.message.contains("dev_type"), "{}", e.message);
    let e = t
        .rpc(
            "bdev_virtio_attach_controller",
            json!({"name": "V4", "trtype": "user", "traddr": sock, "dev_type": "blk",
                   "timeout_us": 7_200_000_000u64}),
        )
        .unwrap_err();
    assert!(
        e.message.contains("V4") && e.message.contains("timeout_us 7200000000 exceeds"),
        "{}",
        e.message
    );

    // save_config → a fresh target loads it → the same document.
    let doc = t.save_config();
    let entries = bdev_entries(&doc);
    let v: Vec<&Value> = entries
        .iter()
        .filter(|e| e["method"] == "bdev_virtio_attach_controller")
        .collect();
    assert_eq!(v.len(), 1, "{doc}");
    assert_eq!(
        v[0]["params"],
        json!({"name": "VirtioBlk0", "dev_type": "blk", "trtype": "user",
               "traddr": sock, "vq_count": 2, "vq_size": 256, "timeout_us": 5000000}),
        "{doc}"
    );
    assert_eq!(
        t.call(
            "bdev_virtio_detach_controller",
            json!({"name": "VirtioBlk0"})
        ),
        json!(true)
    );
    assert!(!t.bdev_names().contains(&"VirtioBlk0".to_string()));
    let conf = dir.join("saved.json");
    std::fs::write(&conf, doc.to_string()).unwrap();
    drop(t);
    let t2 = Target::start_in(&dir, "t2", &["-c", conf.to_str().unwrap()]);
    assert_eq!(bdev_entries(&t2.save_config()), entries);
    assert_eq!(
        t2.call(
            "bdev_virtio_detach_controller",
            json!({"name": "VirtioBlk0"})
        ),
        json!(true)
    );
    let e = t2
        .rpc(
            "bdev_virtio_detach_controller",
            json!({"name": "VirtioBlk0"}),
        )
        .unwrap_err();
    assert_eq!(e.code, -i64::from(libc::ENODEV), "{}", e.message);
}

#[test]
fn bench_verify_on_a_file_export() {
    let dir = TempDir::new("virtio-verify");
    let q = Qsd::file(&dir, "q", 32 << 20, false);
    let conf = bench_conf(&dir, &q.sock, &[]);
    let r = run(
        &mut bench_cmd(
            &conf,
            &[
                "-q",
                "32",
                "-o",
                "4096",
                "-w",
                "verify",
                "-t",
                "2",
                "--output-json",
            ],
        ),
        None,
    );
    assert!(r.ok(), "{}", r.all());
    let out = r.json();
    let j = &out["results"][0];
    assert_eq!(j["job"], "VirtioBlk0", "{out}");
    assert_eq!(j["status"], "finished", "{out}");
    assert_eq!(j["io_failed"], 0, "{out}");
    assert!(j["iops"].as_f64().unwrap() > 0.0, "{out}");
    // Large and odd sizes cross the bounce size and are split by the bdev layer.
    let r = run(
        &mut bench_cmd(
            &conf,
            &[
                "-q",
                "8",
                "-o",
                "196608",
                "-w",
                "verify",
                "-t",
                "1",
                "--output-json",
            ],
        ),
        None,
    );
    assert!(r.ok(), "{}", r.all());
    assert_eq!(r.json()["results"][0]["io_failed"], 0, "{}", r.all());
}

#[test]
fn readonly_export_refuses_writes() {
    let dir = TempDir::new("virtio-ro");
    let q = Qsd::file(&dir, "q", 8 << 20, true);
    let t = Target::start_in(&dir, "t", &[]);
    let r = t.call(
        "bdev_virtio_attach_controller",
        json!({"name": "Ro0", "trtype": "user", "traddr": q.sock, "dev_type": "blk"}),
    );
    assert_eq!(r, json!(["Ro0"]));
    let b = t.bdev("Ro0");
    assert_eq!(b["supported_io_types"]["write"], false, "{b}");
    assert_eq!(b["supported_io_types"]["read"], true, "{b}");
    assert_eq!(b["driver_specific"]["virtio_blk"]["readonly"], true, "{b}");
    drop(t);
    let conf = dir.join("ro.json");
    let doc = json!({"subsystems": [{"subsystem": "bdev", "config": [
        {"method": "bdev_virtio_attach_controller", "params": {
            "name": "Ro0", "trtype": "user", "traddr": q.sock, "dev_type": "blk"}}]}]});
    std::fs::write(&conf, doc.to_string()).unwrap();
    let r = run(
        &mut bench_cmd(
            &conf,
            &["-q", "4", "-o", "4096", "-w", "randread", "-t", "1"],
        ),
        None,
    );
    assert!(r.ok(), "{}", r.all());
    let r = run(
        &mut bench_cmd(&conf, &["-q", "4", "-o", "4096", "-w", "write", "-t", "1"]),
        None,
    );
    assert!(
        !r.ok(),
        "a write run on a read-only export succeeded: {}",
        r.all()
    );
}

#[test]
fn server_going_away_fails_io_and_removes_the_bdev() {
    let dir = TempDir::new("virtio-gone");
    let mut q = Qsd::null(&dir, "q", 64 << 20, 512, true);
    let conf = bench_conf(&dir, &q.sock, &[]);
    // A long run, which ends by itself once its only job has stopped with its bdev removed
    // (far before its 600 s): every step waits on what it needs (I/O flowing, then the loss
    // noticed), with deadlines, instead of fixed sleeps (a slow start-up under load once meant
    // the server was killed before the bdev existed).
    let log = dir.join("bench.log");
    let args: Vec<String> = [
        "bench",
        "-c",
        conf.to_str().unwrap(),
        "-q",
        "32",
        "-o",
        "4096",
        "-w",
        "randread",
        "-t",
        "600",
        "-S",
        "0.2",
        "--progress",
        "lines",
        "-f",
        "--output-json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut b = Target::spawn_raw(&args, &dir.join("unused.sock"), &log, None);
    // A progress line with a non-zero rate: the bdev is attached and reads complete.
    wait_until(START_TIMEOUT, "the bench reports completed reads", || {
        assert!(b.try_status().is_none(), "bench exited: {}", b.log_text());
        b.log_text()
            .lines()
            .any(|l| l.starts_with('[') && l.contains(" IOPS") && !l.contains("] 0 IOPS"))
    });
    q.kill();
    wait_until(
        Duration::from_secs(60),
        "the bench notices the server went away",
        || b.log_text().contains("went away"),
    );
    // The bdev is removed under the job, which ends early and fails.
    wait_until(
        Duration::from_secs(60),
        "the job reports its bdev removed",
        || b.log_text().contains("is being removed: stopping the job"),
    );
    // No signal: the run ends because no job is left running.
    let st = b.wait_exit(Duration::from_secs(60));
    let all = b.log_text();
    assert!(
        st.is_some(),
        "bench ran on after its only job had ended: {all}"
    );
    assert!(!all.contains("panicked"), "{all}");
    assert!(
        all.contains("bdev 'VirtioBlk0' was removed during the run"),
        "{all}"
    );
    assert_ne!(st.unwrap().code(), Some(0), "{all}");
}

#[test]
fn detach_while_io_runs() {
    let dir = TempDir::new("virtio-detach");
    let q = Qsd::null(&dir, "q", 64 << 20, 512, true);
    let t = Target::start_in(&dir, "t", &[]);
    let sock = q.sock.display().to_string();
    // Attach, detach while idle, attach again.
    for _ in 0..2 {
        let r = t.call(
            "bdev_virtio_attach_controller",
            json!({"name": "V0", "trtype": "user", "traddr": sock, "dev_type": "blk"}),
        );
        assert_eq!(r, json!(["V0"]));
        assert_eq!(
            t.call("bdev_virtio_detach_controller", json!({"name": "V0"})),
            json!(true)
        );
    }
    drop(t);
    // bench -z: a test runs over RPC while another client detaches the controller.
    let bsock = dir.join("bench.sock");
    let log = dir.join("bench.log");
    let conf = bench_conf(&dir, &q.sock, &[]);
    let args: Vec<String> = [
        "bench",
        "-z",
        "-r",
        bsock.to_str().unwrap(),
        "-c",
        conf.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut b = Target::spawn_raw(&args, &bsock, &log, None);
    wait_until(START_TIMEOUT, "bench socket", || {
        std::os::unix::net::UnixStream::connect(&bsock).is_ok()
    });
    // I/O the examine pass did before the run: the run has started (its jobs hold the bdev
    // open) once the count grows past this.
    let before = bdev_ops(&bsock, "VirtioBlk0");
    // A long run: the detach always lands during it, and the run ends with its only job
    // (as bdevperf's) instead of at its end time; the answer comes within the client's
    // 60 s read timeout only because of that.
    const RUN_S: u64 = 600;
    let sent = std::time::Instant::now();
    let s2 = bsock.clone();
    let perf = std::thread::spawn(move || {
        rpc(
            &s2,
            "perform_tests",
            json!({"queue_depth": 32, "io_size": "4k",
        "workload_type": "randread", "time_in_sec": RUN_S}),
        )
    });
    wait_until(START_TIMEOUT, "perform_tests reads the bdev", || {
        bdev_ops(&bsock, "VirtioBlk0") > before
    });
    let r = rpc(
        &bsock,
        "bdev_virtio_detach_controller",
        json!({"name": "VirtioBlk0"}),
    );
    assert!(r.is_ok(), "detach: {:?}", r.err().map(|e| e.message));
    // The bdev went away under the run: it fails with ENODEV naming the bdev (as bdevperf's
    // perform_tests), and it ended well before its end time.
    let e = perf.join().unwrap().unwrap_err();
    let took = sent.elapsed();
    assert_eq!(e.code, -libc::ENODEV as i64, "{e:?}");
    assert!(
        e.message
            .contains("bdev 'VirtioBlk0' was removed during the run"),
        "{e:?}"
    );
    assert!(
        took < Duration::from_secs(RUN_S / 5),
        "the run went on after its only bdev was removed: {took:?}"
    );
    let names = rpc(&bsock, "bdev_get_bdevs", json!(null)).unwrap();
    assert_eq!(names, json!([]), "{names}");
    assert!(!b.log_text().contains("panicked"), "{}", b.log_text());
    // The application still serves: a new controller on the same server attaches, and a
    // test runs on it.
    let r = rpc(
        &bsock,
        "bdev_virtio_attach_controller",
        json!({"name": "V1", "trtype": "user", "traddr": q.sock, "dev_type": "blk"}),
    );
    assert_eq!(r, Ok(json!(["V1"])), "{}", b.log_text());
    let pr = rpc(
        &bsock,
        "perform_tests",
        json!({"queue_depth": 4, "io_size": "4k", "workload_type": "randread",
               "time_in_sec": 0.5}),
    );
    let v = pr.unwrap_or_else(|e| panic!("perform_tests after re-attach: {e:?}"));
    assert_eq!(v["results"][0]["job"], "V1", "{v}");
    b.signal(libc::SIGTERM);
    assert!(
        b.wait_exit(Duration::from_secs(30)).is_some(),
        "{}",
        b.log_text()
    );
}

/// The same verify against Ferrite's own vhost-user-blk target serving a malloc bdev, with two
/// reactors on the client (two channels, so two virtqueues).
#[test]
fn bench_verify_against_ferrite_target() {
    let dir = TempDir::new("virtio-ferrite");
    let tconf = dir.join("tgt.json");
    let doc = json!({"subsystems": [
        {"subsystem": "bdev", "config": [{"method": "bdev_malloc_create",
            "params": {"name": "Malloc0", "num_blocks": 32768, "block_size": 4096}}]},
        {"subsystem": "vhost_blk", "config": [{"method": "vhost_create_blk_controller",
            "params": {"ctrlr": "vhost.0", "dev_name": "Malloc0"}}]}]});
    std::fs::write(&tconf, doc.to_string()).unwrap();
    let d = dir.path.display().to_string();
    let t = Target::start_in(
        &dir,
        "t",
        &["-m", "0x1", "-S", &d, "-c", tconf.to_str().unwrap()],
    );
    let vsock = dir.join("vhost.0");
    let conf = bench_conf(&dir, &vsock, &[]);
    let r = run(
        &mut bench_cmd(
            &conf,
            &[
                "-m",
                "0x3",
                "-C",
                "-q",
                "32",
                "-o",
                "8192",
                "-w",
                "verify",
                "-t",
                "2",
                "--output-json",
            ],
        ),
        None,
    );
    assert!(r.ok(), "{}", r.all());
    let out = r.json();
    let res = out["results"].as_array().unwrap();
    assert_eq!(res.len(), 2, "{out}");
    for j in res {
        assert_eq!(j["status"], "finished", "{j}");
        assert_eq!(j["io_failed"], 0, "{j}");
        assert!(j["iops"].as_f64().unwrap() > 0.0, "{j}");
    }
    // Geometry through a client target attaching over RPC.
    let c = Target::start_in(&dir, "client", &["-m", "0x2"]);
    let r = c.call(
        "bdev_virtio_attach_controller",
        json!({"name": "VirtioBlk1", "trtype": "user", "traddr": vsock, "dev_type": "blk"}),
    );
    assert_eq!(r, json!(["VirtioBlk1"]));
    let b = c.bdev("VirtioBlk1");
    assert_eq!(b["block_size"], 4096, "{b}");
    assert_eq!(b["num_blocks"], 32768, "{b}");
    assert_eq!(
        c.call(
            "bdev_virtio_detach_controller",
            json!({"name": "VirtioBlk1"})
        ),
        json!(true)
    );
    assert!(!t.log_text().contains("panicked"));
}

/// SPDK's own client (spdk-rpc 25.9, installed by scripts/setup-spdk-venvs.sh) drives the
/// methods with its command-line options: attach prints the created bdev, detach succeeds.
#[test]
fn spdk_client_attaches_and_detaches() {
    let client = spdk25();
    let dir = TempDir::new("virtio-spdk");
    let q = Qsd::null(&dir, "q", 16 << 20, 512, true);
    let t = Target::start_in(&dir, "t", &[]);
    let spdk = |args: &[&str]| client.run(&t.sock, args);
    let sock = q.sock.display().to_string();
    let r = spdk(&[
        "bdev_virtio_attach_controller",
        "--dev-type",
        "blk",
        "--trtype",
        "user",
        "--traddr",
        &sock,
        "--vq-count",
        "2",
        "--vq-size",
        "128",
        "VirtioBlk7",
    ]);
    assert!(r.ok(), "{}", r.all());
    assert!(r.stdout.contains("VirtioBlk7"), "{}", r.all());
    assert_eq!(t.bdev("VirtioBlk7")["num_blocks"], (16 << 20) / 512);
    let r = spdk(&["bdev_virtio_detach_controller", "VirtioBlk7"]);
    assert!(r.ok(), "{}", r.all());
    assert!(!t.bdev_names().contains(&"VirtioBlk7".to_string()));
}
