//! aio and uring bdevs through the real binary: the RPC methods (create, inspect, rescan,
//! delete, errors as SPDK codes), save_config round trips, and `ferrite bench -w verify` on
//! files. Data files live on the disk under the target dir, and for the uring bdev's
//! memory-copy path also on tmpfs (/dev/shm).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{json, Value};

/// A directory for data files on the disk (the target dir), removed on drop.
struct DataDir(PathBuf);

impl DataDir {
    fn new(tag: &str) -> DataDir {
        Self::new_in(Path::new(env!("CARGO_TARGET_TMPDIR")), tag)
    }

    fn new_in(parent: &Path, tag: &str) -> DataDir {
        let p = parent.join(format!("file_bdevs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        DataDir(p)
    }

    fn file(&self, name: &str, len: u64) -> String {
        let p = self.0.join(name);
        std::fs::File::create(&p).unwrap().set_len(len).unwrap();
        p.display().to_string()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn grow(path: &str, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn rpc_create_inspect_rescan_delete() {
    let dir = TempDir::new("filebdev-rpc");
    let data = DataDir::new("rpc");
    let fa = data.file("a.img", 1 << 20);
    let fu = data.file("u.img", 1 << 20);
    let t = Target::start_in(&dir, "t", &[]);

    let r = t.call(
        "bdev_aio_create",
        json!({"name": "A0", "filename": fa, "fallocate": true}),
    );
    assert_eq!(r, json!("A0"));
    let r = t.call("bdev_uring_create", json!({"name": "U0", "filename": fu}));
    assert_eq!(r, json!("U0"));

    let a = t.bdev("A0");
    assert_eq!(a["product_name"], "AIO disk", "{a}");
    assert_eq!(a["block_size"], 512, "{a}");
    assert_eq!(a["num_blocks"], 2048, "{a}");
    let ds = &a["driver_specific"]["aio"];
    assert_eq!(ds["filename"], fa.as_str(), "{a}");
    assert_eq!(ds["block_size_override"], false, "{a}");
    assert_eq!(ds["readonly"], false, "{a}");
    assert_eq!(ds["fallocate"], true, "{a}");
    assert_eq!(a["supported_io_types"]["unmap"], true, "{a}");
    assert_eq!(a["supported_io_types"]["flush"], true, "{a}");
    let u = t.bdev("U0");
    assert_eq!(u["product_name"], "URING bdev", "{u}");
    assert_eq!(
        u["driver_specific"]["uring"]["filename"],
        fu.as_str(),
        "{u}"
    );
    // A file on the disk goes through the ring (tmpfs would use the memory-copy path).
    assert_eq!(u["driver_specific"]["uring"]["io_path"], "ring", "{u}");

    // Rescan after growth.
    grow(&fa, 2 << 20);
    grow(&fu, 3 << 20);
    assert_eq!(
        t.call("bdev_aio_rescan", json!({"name": "A0"})),
        json!(true)
    );
    assert_eq!(
        t.call("bdev_uring_rescan", json!({"name": "U0"})),
        json!(true)
    );
    assert_eq!(t.bdev("A0")["num_blocks"], 4096);
    assert_eq!(t.bdev("U0")["num_blocks"], 6144);

    // Errors: SPDK's -errno codes, messages naming the file and the reason.
    let missing = data.0.join("missing.img").display().to_string();
    let e = t
        .rpc(
            "bdev_aio_create",
            json!({"name": "A1", "filename": missing}),
        )
        .unwrap_err();
    assert_eq!(e.code, -2, "{e:?}");
    assert_eq!(
        e.message,
        format!("bdev 'A1': cannot open '{missing}' read-write: No such file or directory")
    );
    let odd = data.file("odd.img", 1000);
    let e = t
        .rpc("bdev_uring_create", json!({"name": "U1", "filename": odd}))
        .unwrap_err();
    assert_eq!(e.code, -22, "{e:?}");
    assert!(
        e.message.contains(&odd) && e.message.contains("not a multiple"),
        "{e:?}"
    );
    let e = t
        .rpc("bdev_aio_create", json!({"name": "A0", "filename": fa}))
        .unwrap_err();
    assert_eq!(e.code, -17, "{e:?}");
    let e = t
        .rpc(
            "bdev_aio_create",
            json!({"name": "A2", "filename": fa, "bogus": 1}),
        )
        .unwrap_err();
    assert_eq!(e.code, -32602, "{e:?}");
    let e = t.rpc("bdev_aio_rescan", json!({"name": "U0"})).unwrap_err();
    assert_eq!(e.code, -19, "{e:?}");

    assert_eq!(
        t.call("bdev_aio_delete", json!({"name": "A0"})),
        json!(true)
    );
    assert_eq!(
        t.call("bdev_uring_delete", json!({"name": "U0"})),
        json!(true)
    );
    let e = t.rpc("bdev_aio_delete", json!({"name": "A0"})).unwrap_err();
    assert_eq!(e.code, -19, "{e:?}");
    assert!(t.bdev_names().is_empty(), "{:?}", t.bdev_names());
}

#[test]
fn save_config_recreates_file_bdevs() {
    let dir = TempDir::new("filebdev-cfg");
    let data = DataDir::new("cfg");
    let fa = data.file("a.img", 1 << 20);
    let fr = data.file("r.img", 1 << 20);
    let fu = data.file("u.img", 1 << 20);
    let a = Target::start_in(&dir, "a", &[]);
    a.call(
        "bdev_aio_create",
        json!({"name": "A0", "filename": fa, "block_size": 4096, "fallocate": true,
               "uuid": "0f8e6a52-6d3b-4f43-9a57-3d1c2b0a9e11"}),
    );
    a.call(
        "bdev_aio_create",
        json!({"name": "R0", "filename": fr, "readonly": true}),
    );
    a.call("bdev_uring_create", json!({"name": "U0", "filename": fu}));
    let doc = a.save_config();
    let entries = bdev_entries(&doc);
    let find = |n: &str| -> Value {
        entries
            .iter()
            .find(|e| e["params"]["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("no entry for {n}: {doc}"))
    };
    let e = find("A0");
    assert_eq!(e["method"], "bdev_aio_create");
    assert_eq!(
        e["params"],
        json!({"name": "A0", "filename": fa, "block_size": 4096, "readonly": false,
               "fallocate": true, "uuid": "0f8e6a52-6d3b-4f43-9a57-3d1c2b0a9e11"})
    );
    let r = find("R0");
    assert_eq!(r["params"]["readonly"], true, "{r}");
    assert!(r["params"].get("block_size").is_none(), "{r}");
    let u = find("U0");
    assert_eq!(u["method"], "bdev_uring_create");
    assert_eq!(u["params"]["uuid"], a.bdev("U0")["uuid"], "{u}");

    let uuids: Vec<Value> = ["A0", "R0", "U0"]
        .iter()
        .map(|n| a.bdev(n)["uuid"].clone())
        .collect();
    let names = a.bdev_names();
    // The files are opened by two targets in turn: stop the first one.
    a.signal(libc::SIGTERM);
    let mut a = a;
    assert_eq!(
        a.exit_code(std::time::Duration::from_secs(30)),
        0,
        "{}",
        a.log_text()
    );

    let f = dir.join("saved.json");
    std::fs::write(&f, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    let b = Target::start_in(&dir, "b", &["-c", f.to_str().unwrap()]);
    assert_eq!(b.bdev_names(), names);
    for (n, id) in ["A0", "R0", "U0"].iter().zip(&uuids) {
        assert_eq!(&b.bdev(n)["uuid"], id, "{n}");
    }
    assert_eq!(b.bdev("A0")["block_size"], 4096);
    assert_eq!(b.bdev("R0")["supported_io_types"]["write"], false);
    assert_eq!(bdev_entries(&b.save_config()), entries, "documents differ");
}

fn bench(conf: &Path, args: &[&str]) -> Run {
    let mut c = Command::new(BIN);
    c.arg("bench").arg("-c").arg(conf).args(args);
    run(&mut c, None)
}

/// `ferrite bench -w verify` of 4 KiB for 1 s with `args` (queue depth, poll mode) on the
/// three bdevs of `conf`: every job finishes with verified data, no failed I/O, some I/O done.
fn verify(conf: &Path, args: &[&str]) {
    let mut all = args.to_vec();
    all.extend(["-o", "4096", "-w", "verify", "-t", "1", "--output-json"]);
    let r = bench(conf, &all);
    assert!(r.ok(), "{}", r.all());
    assert!(!r.stderr.contains("verify failed"), "{}", r.stderr);
    let out = r.json();
    let results = out["results"].as_array().unwrap();
    let mut jobs: Vec<String> = results
        .iter()
        .map(|j| j["job"].as_str().unwrap().to_string())
        .collect();
    jobs.sort();
    assert_eq!(jobs, ["Aio0", "Uring0", "UringShm0"], "{out}");
    for j in results {
        assert_eq!(j["status"], "finished", "{j}");
        assert_eq!(j["workload"], "verify", "{j}");
        assert_eq!(j["io_failed"], 0, "{j}");
        assert!(j["iops"].as_f64().unwrap() > 0.0, "{j}");
    }
}

#[test]
fn bench_verify_passes_on_aio_and_uring_files() {
    let data = DataDir::new("bench");
    let fa = data.file("a.img", 16 << 20);
    let fu = data.file("u.img", 16 << 20);
    // The uring bdev on tmpfs: reads and writes through its memory-copy path.
    let shm = DataDir::new_in(Path::new("/dev/shm"), "bench");
    let fs = shm.file("s.img", 16 << 20);
    let conf = data.0.join("conf.json");
    let doc = json!({"subsystems": [{"subsystem": "bdev", "config": [
        {"method": "bdev_aio_create", "params": {"name": "Aio0", "filename": fa}},
        {"method": "bdev_uring_create", "params": {"name": "Uring0", "filename": fu}},
        {"method": "bdev_uring_create", "params": {"name": "UringShm0", "filename": fs}},
    ]}]});
    std::fs::write(&conf, doc.to_string()).unwrap();
    verify(&conf, &["-q", "16"]);
    // And a mixed random workload with several cores, one job per core and bdev.
    let r = bench(
        &conf,
        &[
            "-m",
            "0x3",
            "-C",
            "-q",
            "32",
            "-o",
            "4096",
            "-w",
            "randrw",
            "-M",
            "50",
            "-t",
            "1",
            "--output-json",
        ],
    );
    assert!(r.ok(), "{}", r.all());
    for j in r.json()["results"].as_array().unwrap() {
        assert_eq!(j["io_failed"], 0, "{j}");
    }
    // Verify again with a reactor that sleeps whenever every I/O is in the kernel: the rings'
    // and AIO contexts' eventfds must wake it.
    verify(&conf, &["--poll-mode", "interrupt", "-q", "8"]);
}
