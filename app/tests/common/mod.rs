//! Helpers shared by the integration tests that run the real `ferrite` binary: private temp
//! dirs, a target guard that always kills its process, a small JSON-RPC client, and commands
//! run with a deadline.
#![allow(dead_code)]

pub mod guest;
mod spdk_rpc;
#[allow(unused_imports)]
pub use spdk_rpc::*;

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_ferrite");

/// Longest wait for a target to come up (a debug build on a busy 2-core machine).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// What the target logs once its configuration is applied and it serves.
pub const READY_LINE: &str = "ferrite target running";
/// Longest wait for any one command or RPC.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(60);

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("app/ has a parent")
        .to_path_buf()
}

/// A private directory under the system temp dir, removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "fe-{tag}-{}-{}-{nanos:x}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }

    /// Names of the entries in the directory, sorted.
    pub fn list(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.path)
            .expect("read temp dir")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .to_string()
            })
            .collect();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A JSON-RPC error answer.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcErr {
    pub code: i64,
    pub message: String,
}

/// One JSON-RPC call on `sock` (params omitted when `Value::Null`), with a deadline.
pub fn rpc(sock: &Path, method: &str, params: Value) -> Result<Value, RpcErr> {
    let mut s =
        UnixStream::connect(sock).unwrap_or_else(|e| panic!("connect {}: {e}", sock.display()));
    s.set_read_timeout(Some(CMD_TIMEOUT)).expect("timeout");
    s.set_write_timeout(Some(CMD_TIMEOUT)).expect("timeout");
    let mut req = json!({"jsonrpc": "2.0", "method": method, "id": 1});
    if !params.is_null() {
        req["params"] = params;
    }
    s.write_all(req.to_string().as_bytes()).expect("send");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let n = s
            .read(&mut chunk)
            .unwrap_or_else(|e| panic!("{method}: no answer: {e}"));
        assert!(n > 0, "{method}: connection closed without an answer");
        buf.extend_from_slice(&chunk[..n]);
        let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
        match it.next() {
            Some(Ok(v)) => {
                assert_eq!(v["jsonrpc"], "2.0", "{v}");
                assert_eq!(v["id"], 1, "{v}");
                if let Some(e) = v.get("error") {
                    return Err(RpcErr {
                        code: e["code"].as_i64().expect("error code"),
                        message: e["message"].as_str().expect("error message").to_string(),
                    });
                }
                return Ok(v["result"].clone());
            }
            Some(Err(e)) if e.is_eof() => continue,
            None => continue,
            Some(Err(e)) => panic!("{method}: malformed answer: {e}"),
        }
    }
}

/// Reads plus writes completed on bdev `name` (`bdev_get_iostat` on `sock`); 0 if the call
/// fails.
pub fn bdev_ops(sock: &Path, name: &str) -> u64 {
    rpc(sock, "bdev_get_iostat", json!({ "name": name }))
        .ok()
        .and_then(|v| {
            let b = &v["bdevs"][0];
            Some(b["num_read_ops"].as_u64()? + b["num_write_ops"].as_u64()?)
        })
        .unwrap_or(0)
}

/// A command's outcome.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.status.success()
    }
    /// stdout and stderr together.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
    /// stdout parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// A command running in the background, killed on drop if still running.
pub struct Bg {
    child: Option<Child>,
    out: Option<std::thread::JoinHandle<(String, String)>>,
    started: Instant,
}

impl Bg {
    pub fn spawn(cmd: &mut Command, stdin: Option<Vec<u8>>) -> Bg {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let started = Instant::now();
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        if let Some(data) = stdin {
            let mut w = child.stdin.take().expect("stdin");
            std::thread::spawn(move || {
                let _ = w.write_all(&data);
            });
        }
        let mut so = child.stdout.take().expect("stdout");
        let mut se = child.stderr.take().expect("stderr");
        let out = std::thread::spawn(move || {
            let t = std::thread::spawn(move || {
                let mut s = String::new();
                let _ = se.read_to_string(&mut s);
                s
            });
            let mut o = String::new();
            let _ = so.read_to_string(&mut o);
            (o, t.join().unwrap_or_default())
        });
        Bg {
            child: Some(child),
            out: Some(out),
            started,
        }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Waits for it (panics after `limit`, killing it).
    pub fn wait(mut self, limit: Duration) -> Run {
        let mut child = self.child.take().expect("child");
        let deadline = self.started + limit;
        let status = loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("command did not finish within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let elapsed = self.started.elapsed();
        let (stdout, stderr) = self.out.take().expect("output").join().unwrap_or_default();
        Run {
            status,
            stdout,
            stderr,
            elapsed,
        }
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs a command to completion with a deadline, feeding `stdin`.
pub fn run(cmd: &mut Command, stdin: Option<Vec<u8>>) -> Run {
    Bg::spawn(cmd, stdin).wait(CMD_TIMEOUT)
}

/// `ferrite rpc -s SOCK ARGS..`.
pub fn ferrite_rpc(sock: &Path, args: &[&str], stdin: Option<Vec<u8>>) -> Run {
    let mut c = Command::new(BIN);
    c.arg("rpc").arg("-s").arg(sock).args(args);
    run(&mut c, stdin)
}

/// A running `ferrite tgt`, SIGKILLed on drop unless it already exited.
pub struct Target {
    child: Option<Child>,
    pub sock: PathBuf,
    pub log: PathBuf,
    pub pid: u32,
    status: Option<ExitStatus>,
}

impl Target {
    /// Spawns `ferrite ARGS..` (no implicit arguments) with its output in `log`; does not wait.
    pub fn spawn_raw(args: &[String], sock: &Path, log: &Path, cwd: Option<&Path>) -> Target {
        let mut c = Command::new(BIN);
        c.args(args);
        if let Some(d) = cwd {
            c.current_dir(d);
        }
        Target::spawn_cmd(c, sock, log)
    }

    /// Spawns `c` (a `ferrite` command the caller prepared, e.g. with resource limits) with its
    /// output in `log`, answering RPC on `sock`; does not wait.
    pub fn spawn_cmd(mut c: Command, sock: &Path, log: &Path) -> Target {
        let f = File::create(log).expect("create log");
        c.stdin(Stdio::null())
            .stdout(f.try_clone().expect("clone log"))
            .stderr(f);
        let child = c.spawn().unwrap_or_else(|e| panic!("spawn ferrite: {e}"));
        Target {
            pid: child.id(),
            child: Some(child),
            sock: sock.to_path_buf(),
            log: log.to_path_buf(),
            status: None,
        }
    }

    /// `ferrite tgt -r DIR/NAME.sock EXTRA..`, logging to DIR/NAME.log; does not wait.
    pub fn spawn_in(dir: &TempDir, name: &str, extra: &[&str]) -> Target {
        let sock = dir.join(&format!("{name}.sock"));
        let log = dir.join(&format!("{name}.log"));
        let mut args: Vec<String> = vec!["tgt".into(), "-r".into(), sock.display().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        Target::spawn_raw(&args, &sock, &log, None)
    }

    /// Like `spawn_in`, then waits until the RPC socket answers.
    pub fn start_in(dir: &TempDir, name: &str, extra: &[&str]) -> Target {
        let mut t = Target::spawn_in(dir, name, extra);
        t.wait_ready();
        t
    }

    /// Waits (bounded) until the target has applied its configuration (it logs
    /// [`READY_LINE`]) and its socket answers `spdk_get_version`; panics with the log if the
    /// process exits first. (The socket listens while the configuration is still being
    /// applied, as SPDK's does, so the socket alone does not mean "configured".)
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(st) = self.try_status() {
                panic!(
                    "ferrite exited during start-up ({st:?}):\n{}",
                    self.log_text()
                );
            }
            if self.sock.exists()
                && self.log_text().contains(READY_LINE)
                && UnixStream::connect(&self.sock).is_ok()
                && rpc(&self.sock, "spdk_get_version", Value::Null).is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "ferrite did not listen on {} within {START_TIMEOUT:?}:\n{}",
                self.sock.display(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status if it has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(s)) = c.try_wait() {
                    self.status = Some(s);
                }
            }
        }
        self.status
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for exit and returns its code; panics (with the log) if it does not exit in time or
    /// was killed by a signal.
    pub fn exit_code(&mut self, limit: Duration) -> i32 {
        let st = self.wait_exit(limit).unwrap_or_else(|| {
            panic!(
                "ferrite did not exit within {limit:?}:\n{}",
                self.log_text()
            )
        });
        st.code().unwrap_or_else(|| {
            panic!(
                "ferrite killed by signal {:?}:\n{}",
                st.signal(),
                self.log_text()
            )
        })
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with our own child's pid (still unreaped, so the pid is not reused).
        let rc = unsafe { libc::kill(self.pid as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.pid);
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            if let Ok(s) = c.wait() {
                self.status = Some(s);
            }
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A JSON-RPC call to this target.
    pub fn rpc(&self, method: &str, params: Value) -> Result<Value, RpcErr> {
        rpc(&self.sock, method, params)
    }

    /// A JSON-RPC call that must succeed.
    pub fn call(&self, method: &str, params: Value) -> Value {
        self.rpc(method, params.clone())
            .unwrap_or_else(|e| panic!("{method} {params}: {e:?}\n{}", self.log_text()))
    }

    /// The whole configuration (`save_config`, served by ferrite itself).
    pub fn save_config(&self) -> Value {
        self.call("save_config", Value::Null)
    }

    /// bdev_get_bdevs for one name.
    pub fn bdev(&self, name: &str) -> Value {
        let v = self.call("bdev_get_bdevs", json!({ "name": name }));
        v.as_array()
            .and_then(|a| a.first())
            .cloned()
            .unwrap_or_else(|| panic!("bdev_get_bdevs {name}: {v}"))
    }

    /// Sorted names of all bdevs.
    pub fn bdev_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .call("bdev_get_bdevs", Value::Null)
            .as_array()
            .expect("array")
            .iter()
            .map(|b| b["name"].as_str().expect("name").to_string())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.kill9();
        }
    }
}

/// The config entries of subsystem `bdev` in a save_config document.
pub fn bdev_entries(doc: &Value) -> Vec<Value> {
    doc["subsystems"]
        .as_array()
        .expect("subsystems")
        .iter()
        .find(|s| s["subsystem"] == "bdev")
        .and_then(|s| s["config"].as_array().cloned())
        .expect("bdev subsystem config")
}

/// Polls `f` until it returns true (panics with `what` after `limit`).
pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
