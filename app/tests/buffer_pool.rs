//! The DMA buffer pool as an operator meets it: SPDK's `iobuf_set_options` (through SPDK's own
//! client, spdk-rpc 25.9) sizes it, a start whose pool build fails can be retried with smaller
//! sizes, the sizes round-trip through save_config and load_config, `bdev_set_options`' iobuf
//! cache sizes take effect (`iobuf_get_stats` reports them and the buffers taken) and are
//! saved, and a pool that cannot be locked in memory is reported by a warning while I/O on it
//! works.
//!
//! The failures are real: the target runs under an address-space limit (RLIMIT_AS) that the
//! first pool size does not fit in, and under a locked-memory limit of 0 (for root, without
//! CAP_IPC_LOCK, dropped from the bounding set before exec).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;

use common::*;
use serde_json::json;

/// `CAP_IPC_LOCK` (linux/capability.h).
const CAP_IPC_LOCK: libc::c_ulong = 14;

/// Makes `c` run with an address-space limit of `as_bytes` (when given) and no locked memory.
fn limited(c: &mut Command, as_bytes: Option<u64>) {
    // SAFETY: the closure runs in the child between fork and exec and only makes
    // async-signal-safe system calls (setrlimit, prctl) on plain values.
    unsafe {
        c.pre_exec(move || {
            let zero = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &zero) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(b) = as_bytes {
                let lim = libc::rlimit {
                    rlim_cur: b,
                    rlim_max: b,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Root ignores the locked-memory limit through CAP_IPC_LOCK: drop it from the
            // bounding set, so the exec'd program does not get it. (Without CAP_SETPCAP this
            // fails, and then the process has no CAP_IPC_LOCK to drop.)
            if libc::geteuid() == 0
                && libc::prctl(libc::PR_CAPBSET_DROP, CAP_IPC_LOCK, 0, 0, 0) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn iobuf_options_round_trip_and_a_failed_pool_build_can_be_retried() {
    let dir = TempDir::new("iobuf-opts");
    let sock = dir.join("t.sock");
    let log = dir.join("t.log");
    let mut c = Command::new(BIN);
    c.arg("tgt")
        .arg("-r")
        .arg(&sock)
        .arg("--wait-for-rpc")
        .current_dir(&dir.path);
    // 4 GiB of address space: the target runs, an 8 GiB pool does not fit.
    limited(&mut c, Some(4 << 30));
    let mut t = Target::spawn_cmd(c, &sock, &log);
    t.wait_ready();

    // Bad values name the parameter; per-NUMA pools are refused.
    let (code, msg) = spdk25().err(&sock, &["iobuf_set_options", "--small-pool-count", "0"]);
    assert_eq!(code, -32602, "{msg}");
    assert!(
        msg.contains("small buffer count 0 is out of range"),
        "{msg}"
    );
    let (code, msg) = spdk25().err(
        &sock,
        &[
            "iobuf_set_options",
            "--small-bufsize",
            "65536",
            "--large-bufsize",
            "16384",
        ],
    );
    assert_eq!(code, -32602, "{msg}");
    assert!(msg.contains("large buffer size 16384 is smaller"), "{msg}");
    let (code, msg) = spdk25().err(&sock, &["iobuf_set_options", "--enable-numa"]);
    assert_eq!(code, -32602, "{msg}");
    assert!(msg.contains("enable_numa"), "{msg}");

    // An 8 GiB small pool: the start fails, and the target stays in the startup state.
    spdk25().ok(
        &sock,
        &["iobuf_set_options", "--small-pool-count", "1048576"],
    );
    let (code, msg) = spdk25().err(&sock, &["framework_start_init"]);
    assert_eq!(code, -libc::ENOMEM as i64, "{msg}");
    assert!(msg.contains("cannot build the DMA buffer pool"), "{msg}");
    // Smaller sizes, and the start succeeds.
    spdk25().ok(
        &sock,
        &[
            "iobuf_set_options",
            "--small-pool-count",
            "2048",
            "--large-pool-count",
            "128",
            "--small-bufsize",
            "16384",
            "--large-bufsize",
            "262144",
        ],
    );
    spdk25().ok(
        &sock,
        &[
            "bdev_set_options",
            "--iobuf-small-cache-size",
            "32",
            "--iobuf-large-cache-size",
            "4",
        ],
    );
    spdk25().ok(&sock, &["framework_start_init"]);
    let text = t.log_text();
    assert!(
        text.contains("DMA buffer pool ready: 2048 x 16 KiB small, 128 x 256 KiB large"),
        "{text}"
    );
    // The locked-memory limit of 0 refused mlock: said once, with the reason.
    assert_eq!(
        text.matches("DMA buffer pool: mlock of").count(),
        1,
        "{text}"
    );
    assert!(text.contains("not locked in memory"), "{text}");
    let (code, _) = spdk25().err(&sock, &["iobuf_set_options", "--small-pool-count", "4096"]);
    assert_eq!(code, -1);

    // The sizes are saved in the iobuf subsystem (first, as SPDK orders it) and load back.
    spdk25().ok(&sock, &["bdev_malloc_create", "-b", "M0", "8", "4096"]);
    // SPDK's shape; the cache sizes set above are in force, and the pool served the examine
    // of M0 (its reads take pool buffers).
    let st = spdk25().ok(&sock, &["iobuf_get_stats"]).json();
    assert_eq!(st.as_array().map(Vec::len), Some(1), "{st}");
    assert_eq!(st[0]["module"], "bdev", "{st}");
    assert_eq!(st[0]["small_pool"]["cache_size"], 32, "{st}");
    assert_eq!(st[0]["large_pool"]["cache_size"], 4, "{st}");
    for class in ["small_pool", "large_pool"] {
        for k in ["cache", "main", "retry"] {
            assert!(st[0][class][k].is_u64(), "{class}.{k}: {st}");
        }
    }
    let taken = |c: &str| st[0][c]["cache"].as_u64().unwrap() + st[0][c]["main"].as_u64().unwrap();
    assert!(taken("small_pool") + taken("large_pool") > 0, "{st}");
    // The method takes no parameters (SPDK's client sends none): any are refused, clearly.
    let e = rpc(&sock, "iobuf_get_stats", json!({"module": "bdev"})).unwrap_err();
    assert_eq!(e.code, -32602, "{e:?}");
    assert!(e.message.contains("no parameters"), "{e:?}");
    let want = json!([{"method": "iobuf_set_options", "params": {
        "small_pool_count": 2048, "large_pool_count": 128,
        "small_bufsize": 16384, "large_bufsize": 262144}}]);
    let doc = t.save_config();
    assert_eq!(doc["subsystems"][0]["subsystem"], "iobuf", "{doc}");
    assert_eq!(doc["subsystems"][0]["config"], want, "{doc}");
    assert_eq!(
        spdk25()
            .ok(&sock, &["framework_get_config", "iobuf"])
            .json(),
        want
    );
    let f = dir.join("saved.json");
    std::fs::write(&f, doc.to_string()).unwrap();
    let d = Target::start_in(&dir, "d", &["--wait-for-rpc"]);
    spdk25().ok(&d.sock, &["load_config", "-j", f.to_str().unwrap()]);
    assert_eq!(d.save_config(), doc);
    assert!(
        d.log_text()
            .contains("DMA buffer pool ready: 2048 x 16 KiB small, 128 x 256 KiB large"),
        "{}",
        d.log_text()
    );
}

#[test]
fn an_unlocked_pool_is_reported_and_works() {
    let dir = TempDir::new("iobuf-unlocked");
    let conf = dir.join("conf.json");
    let doc = json!({"subsystems": [{"subsystem": "bdev", "config": [
        {"method": "bdev_malloc_create", "params": {
            "name": "M0", "num_blocks": 16384, "block_size": 512}}]}]});
    std::fs::write(&conf, doc.to_string()).unwrap();
    let mut c = Command::new(BIN);
    c.arg("bench")
        .arg("-c")
        .arg(&conf)
        .args(["-q", "8", "-o", "65536", "-w", "verify", "-t", "0.5"]);
    limited(&mut c, None);
    let r = run(&mut c, None);
    let all = r.all();
    assert!(r.ok(), "{all}");
    assert_eq!(all.matches("DMA buffer pool: mlock of").count(), 1, "{all}");
    assert!(
        all.contains("locked-memory limit 0 KiB") && all.contains("the pool works, but unpinned"),
        "{all}"
    );
}
