//! The target's life: start with no config and with the embedded default, clean exits on
//! SIGTERM/SIGINT/`spdk_kill_instance`, a prompt exit on a second signal during a slow shutdown,
//! and clear failures (exit non-zero, naming file, entry and field, no socket left) on bad
//! configurations and core masks.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn empty_config() -> Value {
    json!({"subsystems": [
        {"subsystem": "iobuf", "config": []},
        {"subsystem": "bdev", "config": [{"method": "bdev_wait_for_examine"}]},
        {"subsystem": "vhost_blk", "config": []},
    ]})
}

#[test]
fn no_config_starts_empty_in_runtime_state() {
    let dir = TempDir::new("lc-empty");
    let mut t = Target::start_in(&dir, "t", &[]);
    assert_eq!(t.call("bdev_get_bdevs", Value::Null), json!([]));
    assert_eq!(t.save_config(), empty_config());
    // Runtime state: startup-only methods are refused.
    let e = t.rpc("framework_start_init", Value::Null).unwrap_err();
    assert_eq!(e.code, -1);
    t.signal(libc::SIGTERM);
    assert_eq!(t.exit_code(Duration::from_secs(20)), 0);
    assert!(!t.sock.exists());
}

const POOL_LINE: &str = "DMA buffer pool ready";

/// Index of the first log line containing `needle`, with the log in the panic message.
fn line_of(log: &str, needle: &str) -> usize {
    log.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with '{needle}' in the log:\n{log}"))
}

/// The DMA buffer pool is built at start-up, after the config's start-up entries
/// (`bdev_set_options`, still in effect) and before its bdevs exist or any I/O is submitted;
/// with `--wait-for-rpc` it waits for `framework_start_init`.
#[test]
fn buffer_pool_is_built_at_startup_after_startup_options() {
    let dir = TempDir::new("lc-pool");
    let cfg = dir.join("cfg.json");
    let opts = json!({"method": "bdev_set_options", "params": {
        "bdev_io_pool_size": 8192, "bdev_io_cache_size": 512, "bdev_auto_examine": true,
        "iobuf_small_cache_size": 128, "iobuf_large_cache_size": 16}});
    let doc = json!({"subsystems": [{"subsystem": "bdev", "config": [
        {"method": "bdev_malloc_create",
         "params": {"name": "M0", "num_blocks": 2048, "block_size": 512}},
        opts,
    ]}]});
    std::fs::write(&cfg, doc.to_string()).unwrap();
    let t = Target::start_in(&dir, "t", &["-c", cfg.to_str().unwrap()]);
    let log = t.log_text();
    let pool = line_of(&log, POOL_LINE);
    assert!(
        log.lines()
            .nth(pool)
            .unwrap()
            .contains("8192 x 8 KiB small"),
        "{log}"
    );
    assert!(pool < line_of(&log, "framework initialised"), "{log}");
    assert!(pool < line_of(&log, "applied 2 entries"), "{log}");
    assert_eq!(bdev_entries(&t.save_config())[0], opts);
    // M0 is created (and examined: its first read I/O) in the runtime pass, after the pool.
    let stat = t.call("bdev_get_iostat", json!({"name": "M0"}));
    assert_eq!(stat["bdevs"][0]["failed_ops"], 0, "{stat}");

    let mut w = Target::start_in(&dir, "w", &["--wait-for-rpc"]);
    assert!(!w.log_text().contains(POOL_LINE), "{}", w.log_text());
    w.call("framework_start_init", Value::Null);
    let log = w.log_text();
    assert!(
        line_of(&log, POOL_LINE) < line_of(&log, "framework initialised"),
        "{log}"
    );
    w.signal(libc::SIGTERM);
    assert_eq!(w.exit_code(Duration::from_secs(20)), 0);
}

fn bdev_entries(doc: &Value) -> Vec<Value> {
    doc["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subsystem"] == "bdev")
        .unwrap()["config"]
        .as_array()
        .unwrap()
        .clone()
}

/// Serializes the tests that need SPDK's default socket, /var/tmp/spdk.sock, across test
/// processes (an flock, released when dropped).
struct DefaultSocketLock {
    _file: File,
}

impl DefaultSocketLock {
    fn take() -> DefaultSocketLock {
        let f = File::create("/var/tmp/ferrite-tests-default-socket.lock").expect("lock file");
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            // SAFETY: flock(2) on a descriptor we own for the lifetime of `f`.
            let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return DefaultSocketLock { _file: f };
            }
            assert!(
                Instant::now() < deadline,
                "could not take the /var/tmp/spdk.sock test lock"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `ferrite` / `ferrite tgt` with no arguments at all: the embedded default (Malloc0 with
/// Passthru0 on it) on SPDK's default socket.
fn check_embedded_default(args: &[&str]) {
    let _lock = DefaultSocketLock::take();
    let sock = Path::new(ferrite_rpc_default());
    if sock.exists() {
        assert!(
            std::os::unix::net::UnixStream::connect(sock).is_err(),
            "another process is listening on {}: stop it to run this test",
            sock.display()
        );
    }
    let dir = TempDir::new("lc-default");
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut t = Target::spawn_raw(&args, sock, &dir.join("t.log"), Some(&dir.path));
    t.wait_ready();
    assert_eq!(
        t.bdev_names(),
        ["Malloc0", "Passthru0"].map(String::from).to_vec()
    );
    let m = t.bdev("Malloc0");
    assert_eq!(m["product_name"], "Malloc disk");
    assert_eq!(
        (m["num_blocks"].clone(), m["block_size"].clone()),
        (json!(131072), json!(512))
    );
    assert_eq!(m["claimed"], true);
    assert_eq!(m["claim_type"], "exclusive_write");
    let p = t.bdev("Passthru0");
    assert_eq!(p["product_name"], "passthru");
    assert_eq!(
        (p["num_blocks"].clone(), p["block_size"].clone()),
        (json!(131072), json!(512))
    );
    assert_eq!(
        p["driver_specific"],
        json!({"passthru": {"name": "Passthru0", "base_bdev_name": "Malloc0"}})
    );
    let methods: Vec<Value> = bdev_entries(&t.save_config())
        .iter()
        .map(|e| e["method"].clone())
        .collect();
    assert_eq!(
        methods,
        [
            json!("bdev_malloc_create"),
            json!("bdev_passthru_create"),
            json!("bdev_wait_for_examine")
        ]
    );
    t.signal(libc::SIGTERM);
    assert_eq!(t.exit_code(Duration::from_secs(20)), 0, "{}", t.log_text());
    assert!(!sock.exists(), "{} left behind", sock.display());
    assert!(
        t.log_text().contains("embedded default"),
        "{}",
        t.log_text()
    );
}

fn ferrite_rpc_default() -> &'static str {
    "/var/tmp/spdk.sock"
}

#[test]
fn embedded_default_with_no_arguments() {
    check_embedded_default(&[]);
    check_embedded_default(&["tgt"]);
}

/// Starts a target with --persist and a few bdevs, for the shutdown tests.
fn populated(dir: &TempDir, name: &str, extra: &[&str]) -> Target {
    let f = dir.join(&format!("{name}.json"));
    let mut args = vec!["--persist", f.to_str().unwrap()];
    args.extend(extra);
    let t = Target::start_in(dir, name, &args);
    t.call(
        "bdev_malloc_create",
        json!({"name": "M0", "num_blocks": 1024, "block_size": 512}),
    );
    t.call(
        "bdev_passthru_create",
        json!({"base_bdev_name": "M0", "name": "P0"}),
    );
    t.call(
        "bdev_null_create",
        json!({"name": "N0", "num_blocks": 64, "block_size": 512}),
    );
    t
}

#[test]
fn sigterm_and_sigint_exit_zero_and_leave_nothing_behind() {
    for (sig, name) in [(libc::SIGTERM, "term"), (libc::SIGINT, "int")] {
        let dir = TempDir::new(&format!("lc-{name}"));
        let mut t = populated(&dir, name, &[]);
        t.signal(sig);
        assert_eq!(t.exit_code(Duration::from_secs(20)), 0, "{}", t.log_text());
        assert!(!t.sock.exists(), "socket left behind");
        // Only the persisted config and our log remain: no socket, no temp files.
        assert_eq!(
            dir.list(),
            [format!("{name}.json"), format!("{name}.log")].to_vec()
        );
        let log = t.log_text();
        assert!(log.contains("received: shutting down"), "{log}");
        assert!(log.contains("ferrite target stopped"), "{log}");
        // SAFETY: kill(2) with signal 0 only checks existence; the child is reaped.
        let alive = unsafe { libc::kill(t.pid as libc::pid_t, 0) };
        assert_eq!(alive, -1, "process gone");
    }
}

#[test]
fn spdk_kill_instance_shuts_down() {
    let dir = TempDir::new("lc-kill");
    let mut t = populated(&dir, "t", &[]);
    let r = ferrite_rpc(
        &t.sock,
        &["spdk_kill_instance", "--sig_name", "SIGHUP"],
        None,
    );
    assert!(!r.ok());
    assert!(
        r.stderr.contains("-32602") && r.stderr.contains("sig_name"),
        "{}",
        r.stderr
    );
    assert!(t.try_status().is_none(), "a refused kill leaves it running");
    let r = ferrite_rpc(
        &t.sock,
        &["spdk_kill_instance", "--sig_name", "SIGTERM"],
        None,
    );
    assert!(r.ok(), "{}", r.all());
    assert_eq!(r.json(), json!(true));
    assert_eq!(t.exit_code(Duration::from_secs(20)), 0, "{}", t.log_text());
    assert!(!t.sock.exists());
    assert!(t.log_text().contains("shutdown requested by RPC"));

    // Also in the startup state.
    let mut w = Target::start_in(&dir, "w", &["--wait-for-rpc"]);
    w.call("spdk_kill_instance", json!({"sig_name": "SIGINT"}));
    assert_eq!(w.exit_code(Duration::from_secs(20)), 0, "{}", w.log_text());
    assert!(!w.sock.exists());
}

/// A thread of the target held in ptrace-stop: the rest of the process runs on.
struct Stopped {
    tid: libc::pid_t,
    done: bool,
}

impl Stopped {
    fn stop(tid: libc::pid_t) -> Stopped {
        let null = std::ptr::null_mut::<libc::c_void>();
        // SAFETY: ptrace(2) on a thread of our own child process; no memory is passed.
        let rc = unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid, null, null) };
        assert_eq!(
            rc,
            0,
            "PTRACE_SEIZE {tid}: {}",
            std::io::Error::last_os_error()
        );
        let me = Stopped { tid, done: false };
        // SAFETY: as above; the thread is now our tracee.
        let rc = unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tid, null, null) };
        assert_eq!(
            rc,
            0,
            "PTRACE_INTERRUPT: {}",
            std::io::Error::last_os_error()
        );
        let mut status = 0;
        // SAFETY: waitpid(2) for our tracee, writing only into `status`.
        let r = unsafe { libc::waitpid(tid, &mut status, libc::__WALL) };
        assert_eq!(r, tid, "waitpid: {}", std::io::Error::last_os_error());
        assert!(libc::WIFSTOPPED(status), "status {status:#x}");
        me
    }

    /// Waits for the target to exit while reaping the traced thread (the kernel reports the
    /// process only once its traced thread is reaped by us, the tracer). Returns the exit code.
    fn exit_code(&mut self, t: &mut Target, limit: Duration) -> i32 {
        let deadline = Instant::now() + limit;
        loop {
            if !self.done {
                let mut status = 0;
                // SAFETY: as in `stop`, non-blocking.
                let r =
                    unsafe { libc::waitpid(self.tid, &mut status, libc::__WALL | libc::WNOHANG) };
                if r == -1
                    || (r == self.tid && (libc::WIFEXITED(status) || libc::WIFSIGNALED(status)))
                {
                    self.done = true;
                }
            }
            if let Some(st) = t.try_status() {
                return st.code().unwrap_or_else(|| panic!("killed: {st:?}"));
            }
            assert!(
                Instant::now() < deadline,
                "ferrite did not exit within {limit:?}:\n{}",
                t.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Reaps the traced thread once the process is gone (bounded).
    fn reap(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.done && Instant::now() < deadline {
            let mut status = 0;
            // SAFETY: as in `stop`, non-blocking.
            let r = unsafe { libc::waitpid(self.tid, &mut status, libc::__WALL | libc::WNOHANG) };
            if r == -1 || (r == self.tid && (libc::WIFEXITED(status) || libc::WIFSIGNALED(status)))
            {
                self.done = true;
            } else {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let null = std::ptr::null_mut::<libc::c_void>();
        // SAFETY: detaching our tracee (fails harmlessly if it is already gone).
        if unsafe { libc::ptrace(libc::PTRACE_DETACH, self.tid, null, null) } == 0 {
            self.done = true;
        } else {
            self.reap();
        }
    }
}

/// The reactor thread hosting app_thread, where shutdown removes the bdevs.
fn app_reactor_tid(t: &Target) -> libc::pid_t {
    let r = t.call("framework_get_reactors", Value::Null);
    let reactors = r["reactors"].as_array().unwrap();
    let app = reactors
        .iter()
        .find(|x| {
            x["lw_threads"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["name"] == "app_thread")
        })
        .unwrap_or_else(|| panic!("no reactor with app_thread: {r}"));
    let tid = app["tid"].as_i64().unwrap() as libc::pid_t;
    assert_ne!(
        tid, t.pid as libc::pid_t,
        "the reactor is not the main thread"
    );
    tid
}

#[test]
fn second_signal_during_slow_shutdown_exits_promptly() {
    let dir = TempDir::new("lc-second");
    let mut t = populated(&dir, "t", &[]);
    // Make the shutdown slow: hold the reactor that must remove the bdevs.
    let mut stopped = Stopped::stop(app_reactor_tid(&t));
    t.signal(libc::SIGTERM);
    // The RPC server goes first; the bdev removal then waits on the held reactor.
    wait_until(Duration::from_secs(10), "socket removed", || {
        !t.sock.exists()
    });
    assert!(
        t.wait_exit(Duration::from_millis(1500)).is_none(),
        "the shutdown should be stuck:\n{}",
        t.log_text()
    );
    // The second signal forces the exit: well before the default shutdown timeout (30 s)
    // would end the stuck shutdown.
    t.signal(libc::SIGINT);
    let code = stopped.exit_code(&mut t, Duration::from_secs(20));
    assert_eq!(code, 1, "a forced exit is not a success");
    assert!(t
        .log_text()
        .contains("received during shutdown: exiting now"));
    // The persisted configuration was finished before the bdevs were touched.
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("t.json")).unwrap()).unwrap();
    assert_eq!(bdev_entries(&doc).len(), 4, "{doc}");
}

#[test]
fn shutdown_timeout_bounds_a_stuck_shutdown() {
    let dir = TempDir::new("lc-timeout");
    let mut t = populated(&dir, "t", &["--shutdown-timeout", "1"]);
    let mut stopped = Stopped::stop(app_reactor_tid(&t));
    let sent = Instant::now();
    t.signal(libc::SIGTERM);
    let code = stopped.exit_code(&mut t, Duration::from_secs(10));
    assert_eq!(code, 1, "{}", t.log_text());
    assert!(
        sent.elapsed() >= Duration::from_secs(1),
        "{:?}",
        sent.elapsed()
    );
    assert!(t.log_text().contains("shutdown did not finish within 1 s"));
    assert!(!t.sock.exists());
}

/// Starts `ferrite tgt -r SOCK ARGS..`, which must fail; returns its log (stderr).
fn must_fail(dir: &TempDir, name: &str, args: &[&str]) -> String {
    let mut t = Target::spawn_in(dir, name, args);
    let code = t.exit_code(Duration::from_secs(20));
    let log = t.log_text();
    assert_ne!(code, 0, "{args:?} should fail:\n{log}");
    assert!(!t.sock.exists(), "{args:?}: socket file left behind");
    log
}

fn assert_contains(text: &str, want: &[&str]) {
    for w in want {
        assert!(text.contains(w), "missing {w:?} in:\n{text}");
    }
}

#[test]
fn bad_configs_fail_naming_file_entry_and_field() {
    let dir = TempDir::new("lc-badcfg");
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let missing = dir.join("missing.json").to_str().unwrap().to_string();
    let log = must_fail(&dir, "missing", &["-c", &missing]);
    assert_contains(
        &log,
        &[
            &format!("cannot read config file '{missing}'"),
            "No such file",
        ],
    );

    let adir = dir.join("adir.json");
    std::fs::create_dir(&adir).unwrap();
    let adir = adir.to_str().unwrap().to_string();
    let log = must_fail(&dir, "dir", &["-c", &adir]);
    assert_contains(&log, &[&format!("cannot read config file '{adir}'")]);

    let f = write(
        "syntax.json",
        "{\n  \"subsystems\": [\n    {\"subsystem\": \"bdev\" \"config\": []}\n  ]\n}\n",
    );
    let log = must_fail(&dir, "syntax", &["-c", &f]);
    assert_contains(
        &log,
        &[
            &format!("config file '{f}'"),
            "invalid JSON at line 3 column",
        ],
    );

    let f = write("shape.json", "{}");
    let log = must_fail(&dir, "shape", &["-c", &f]);
    assert_contains(&log, &[&format!("config file '{f}'"), "'subsystems'"]);

    let f = write(
        "unknown.json",
        r#"{"subsystems":[{"subsystem":"bdev","config":[
            {"method":"bdev_null_create","params":{"name":"A","num_blocks":8,"block_size":512}},
            {"method":"bdev_frobnicate","params":{}}]}]}"#,
    );
    let log = must_fail(&dir, "unknown", &["-c", &f]);
    assert_contains(
        &log,
        &[
            &format!("config file '{f}'"),
            "subsystem 'bdev' entry 1 (bdev_frobnicate)",
            "unknown method 'bdev_frobnicate'",
        ],
    );

    let f = write(
        "type.json",
        r#"{"subsystems":[{"subsystem":"bdev","config":[
            {"method":"bdev_malloc_create","params":{"name":"A","num_blocks":"lots","block_size":512}}]}]}"#,
    );
    let log = must_fail(&dir, "type", &["-c", &f]);
    assert_contains(
        &log,
        &[
            &format!("config file '{f}'"),
            "subsystem 'bdev' entry 0 (bdev_malloc_create)",
            "parameter 'num_blocks'",
            "code -32602",
        ],
    );

    let f = write(
        "missing-param.json",
        r#"{"subsystems":[{"subsystem":"bdev","config":[
            {"method":"bdev_null_create","params":{"name":"A","num_blocks":8}}]}]}"#,
    );
    let log = must_fail(&dir, "mparam", &["-c", &f]);
    assert_contains(
        &log,
        &["entry 0 (bdev_null_create)", "block_size", "code -32602"],
    );

    let f = write(
        "key.json",
        r#"{"subsystems":[{"subsystem":"bdev","config":[
            {"method":"bdev_null_create","parms":{"name":"A"}}]}]}"#,
    );
    let log = must_fail(&dir, "key", &["-c", &f]);
    assert_contains(&log, &["entry 0 (bdev_null_create)", "unknown key 'parms'"]);

    let dup = write(
        "dup.json",
        r#"{"subsystems":[{"subsystem":"bdev","config":[
            {"method":"bdev_malloc_create","params":{"name":"A","num_blocks":64,"block_size":512}},
            {"method":"bdev_null_create","params":{"name":"A","num_blocks":64,"block_size":512}},
            {"method":"bdev_null_create","params":{"name":"B","num_blocks":64,"block_size":512}}]}]}"#,
    );
    let log = must_fail(&dir, "dup", &["-c", &dup]);
    assert_contains(
        &log,
        &[
            &format!("config file '{dup}'"),
            "subsystem 'bdev' entry 1 (bdev_null_create)",
            "bdev name 'A' already exists",
            "code -17",
        ],
    );

    // Comments are allowed, as in SPDK's loader.
    let f = write(
        "comments.json",
        "// a comment\n{\"subsystems\": [ /* none */ ]}\n",
    );
    let mut t = Target::start_in(&dir, "comments", &["-c", &f]);
    assert_eq!(t.call("bdev_get_bdevs", Value::Null), json!([]));
    t.signal(libc::SIGTERM);
    assert_eq!(t.exit_code(Duration::from_secs(20)), 0);

    // --json-ignore-init-errors keeps going past the failed entries.
    let f = write(
        "ignore.json",
        r#"{"subsystems":[{"subsystem":"bdev","config":[
            {"method":"bdev_malloc_create","params":{"name":"A","num_blocks":64,"block_size":512}},
            {"method":"bdev_null_create","params":{"name":"A","num_blocks":64,"block_size":512}},
            {"method":"bdev_frobnicate"},
            {"method":"bdev_null_create","params":{"name":"C","num_blocks":"x","block_size":512}},
            {"method":"bdev_null_create","params":{"name":"B","num_blocks":64,"block_size":512}}]}]}"#,
    );
    let t = Target::start_in(&dir, "ignore", &["-c", &f, "--json-ignore-init-errors"]);
    assert_eq!(t.bdev_names(), ["A", "B"].map(String::from).to_vec());
    assert_eq!(t.bdev("A")["product_name"], "Malloc disk");
    let log = t.log_text();
    assert_contains(
        &log,
        &[
            "entry 1 (bdev_null_create): bdev name 'A' already exists (code -17) (ignored)",
            "entry 2 (bdev_frobnicate): unknown method 'bdev_frobnicate' (ignored)",
            "entry 3 (bdev_null_create): parameter 'num_blocks'",
        ],
    );
}

#[test]
fn core_masks() {
    let dir = TempDir::new("lc-mask");
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let core = ncpu.max(20);
    let mask = format!("{:#x}", 1u64 << core);
    let log = must_fail(&dir, "absent", &["-m", &mask]);
    assert_contains(&log, &[&format!("core {core}"), &mask]);
    let log = must_fail(&dir, "zz", &["-m", "zz"]);
    assert_contains(&log, &["invalid core mask 'zz'"]);
    let log = must_fail(&dir, "zero", &["-m", "0x0"]);
    assert_contains(&log, &["invalid core mask '0x0'", "no core"]);
    let log = must_fail(&dir, "list", &["-m", "[0,"]);
    assert_contains(&log, &["core mask", "[0,"]);

    // A good list mask: one reactor per core.
    let want: Vec<usize> = (0..ncpu.min(2)).collect();
    let list = format!(
        "[{}]",
        want.iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let t = Target::start_in(&dir, "ok", &["-m", &list]);
    let r = t.call("framework_get_reactors", Value::Null);
    let lcores: Vec<usize> = r["reactors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["lcore"].as_u64().unwrap() as usize)
        .collect();
    assert_eq!(lcores, want, "{r}");
}

#[test]
fn socket_in_use_and_stale_socket() {
    let dir = TempDir::new("lc-sock");
    let t = Target::start_in(&dir, "a", &[]);
    // A second target on the same socket refuses to start and leaves the first alone.
    let mut b = Target::spawn_raw(
        &["tgt".into(), "-r".into(), t.sock.to_str().unwrap().into()],
        &t.sock,
        &dir.join("b.log"),
        None,
    );
    assert_ne!(b.exit_code(Duration::from_secs(20)), 0);
    assert_contains(&b.log_text(), &["another process is listening"]);
    assert_eq!(t.call("bdev_get_bdevs", Value::Null), json!([]));
    drop(t);

    // A stale socket file (its process died with SIGKILL) is replaced.
    let stale = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let mut c = Target::start_in(&dir, "stale", &[]);
    assert_eq!(c.call("bdev_get_bdevs", Value::Null), json!([]));
    c.signal(libc::SIGTERM);
    assert_eq!(c.exit_code(Duration::from_secs(20)), 0);
    assert!(!stale.exists());
}

#[test]
fn socket_mode_and_poll_modes() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("lc-modes");
    let t = Target::start_in(&dir, "m", &["--rpc-socket-mode", "0660"]);
    let mode = std::fs::metadata(&t.sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    drop(t);
    let log = must_fail(&dir, "badmode", &["--rpc-socket-mode", "rw"]);
    assert_contains(&log, &["invalid --rpc-socket-mode 'rw'"]);
    for mode in ["poll", "interrupt", "adaptive"] {
        let t = Target::start_in(&dir, mode, &["--poll-mode", mode]);
        t.call(
            "bdev_null_create",
            json!({"name": "N", "num_blocks": 8, "block_size": 512}),
        );
        let r = t.call("framework_get_reactors", Value::Null);
        assert_eq!(r["poll_mode"], mode, "{r}");
        assert_eq!(t.bdev_names(), vec!["N".to_string()]);
    }
    let log = must_fail(&dir, "badpoll", &["--poll-mode", "sometimes"]);
    assert_contains(&log, &["sometimes"]);
}
