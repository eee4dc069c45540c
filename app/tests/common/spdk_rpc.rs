//! SPDK's own RPC client, `spdk-rpc` from PyPI's `spdk` package, as
//! `scripts/setup-spdk-venvs.sh` installs it under `target/spdk-venv/<version>`.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{run, workspace_root, Bg, Run};

/// The version matching the v25.09 contract.
pub const SPDK_V25: &str = "25.9";

/// spdk-rpc 25.9.
pub fn spdk25() -> SpdkRpc {
    SpdkRpc::new(SPDK_V25)
}

/// SPDK's client of one version.
pub struct SpdkRpc {
    exe: PathBuf,
    pub ver: &'static str,
}

impl SpdkRpc {
    pub fn new(ver: &'static str) -> SpdkRpc {
        let exe = workspace_root()
            .join("target/spdk-venv")
            .join(ver)
            .join("bin/spdk-rpc");
        assert!(
            exe.is_file(),
            "SPDK's client spdk-rpc {ver} is missing ({}): run scripts/setup-spdk-venvs.sh",
            exe.display()
        );
        SpdkRpc { exe, ver }
    }

    pub fn cmd(&self, sock: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg("-s").arg(sock).arg("-t").arg("60").args(args);
        c.env("PYTHONDONTWRITEBYTECODE", "1");
        c
    }

    pub fn run(&self, sock: &Path, args: &[&str]) -> Run {
        run(&mut self.cmd(sock, args), None)
    }

    pub fn run_stdin(&self, sock: &Path, args: &[&str], stdin: &str) -> Run {
        run(&mut self.cmd(sock, args), Some(stdin.as_bytes().to_vec()))
    }

    pub fn spawn(&self, sock: &Path, args: &[&str]) -> Bg {
        Bg::spawn(&mut self.cmd(sock, args), None)
    }

    /// Must succeed; returns the output.
    pub fn ok(&self, sock: &Path, args: &[&str]) -> Run {
        let r = self.run(sock, args);
        assert!(
            r.ok(),
            "spdk-rpc {} {args:?} failed:\n{}",
            self.ver,
            r.all()
        );
        r
    }

    /// Must succeed and print JSON.
    pub fn json(&self, sock: &Path, args: &[&str]) -> Value {
        self.ok(sock, args).json()
    }

    /// Must succeed and print one line (a name).
    pub fn line(&self, sock: &Path, args: &[&str]) -> String {
        self.ok(sock, args).stdout.trim().to_string()
    }

    /// Must fail with a JSON-RPC error from the target; returns (code, message).
    pub fn err(&self, sock: &Path, args: &[&str]) -> (i64, String) {
        let r = self.run(sock, args);
        assert!(
            !r.ok(),
            "spdk-rpc {} {args:?} should fail:\n{}",
            self.ver,
            r.all()
        );
        rpc_error_of(&r).unwrap_or_else(|| {
            panic!(
                "spdk-rpc {} {args:?}: no JSON-RPC error in the output:\n{}",
                self.ver,
                r.all()
            )
        })
    }
}

/// The error object spdk-rpc prints after "response:".
pub fn rpc_error_of(r: &Run) -> Option<(i64, String)> {
    let all = r.all();
    let at = all.rfind("response:")?;
    let rest = &all[at + "response:".len()..];
    let v: Value = serde_json::Deserializer::from_str(rest)
        .into_iter::<Value>()
        .next()?
        .ok()?;
    Some((v["code"].as_i64()?, v["message"].as_str()?.to_string()))
}

/// A forwarding socket between one client and the target, so that a test knows when the
/// client's request has been handed to the target and whether any answer has come back
/// (`Bg::running` alone cannot tell a client that is waiting for an answer from one that
/// has not connected yet).
pub struct RpcProxy {
    pub path: PathBuf,
    up: Arc<Mutex<Vec<u8>>>,
    down: Arc<AtomicUsize>,
}

impl RpcProxy {
    /// Listens at `dir/proxy.sock` for one client and forwards it to `target`.
    pub fn new(target: &Path, dir: &Path) -> RpcProxy {
        let path = dir.join("proxy.sock");
        let listener = UnixListener::bind(&path).expect("bind the proxy socket");
        let up = Arc::new(Mutex::new(Vec::new()));
        let down = Arc::new(AtomicUsize::new(0));
        let (up2, down2, target) = (up.clone(), down.clone(), target.to_path_buf());
        std::thread::spawn(move || {
            let Ok((mut client, _)) = listener.accept() else {
                return;
            };
            let mut server = UnixStream::connect(&target).expect("proxy: connect to the target");
            let (mut c2, mut s2) = (
                client.try_clone().expect("clone"),
                server.try_clone().expect("clone"),
            );
            std::thread::spawn(move || {
                let mut b = [0u8; 4096];
                while let Ok(n @ 1..) = s2.read(&mut b) {
                    // Counted before it is passed on: an answer is seen as soon as it exists.
                    down2.fetch_add(n, Ordering::SeqCst);
                    if c2.write_all(&b[..n]).is_err() {
                        break;
                    }
                }
                let _ = c2.shutdown(std::net::Shutdown::Write);
            });
            let mut b = [0u8; 4096];
            while let Ok(n @ 1..) = client.read(&mut b) {
                if server.write_all(&b[..n]).is_err() {
                    break;
                }
                up2.lock().unwrap().extend_from_slice(&b[..n]);
            }
            let _ = server.shutdown(std::net::Shutdown::Write);
        });
        RpcProxy { path, up, down }
    }

    /// Waits until the client has sent one whole JSON request, already written to the
    /// target's socket; returns it.
    pub fn wait_request(&self, limit: Duration) -> Value {
        let t0 = Instant::now();
        loop {
            let bytes = self.up.lock().unwrap().clone();
            if let Some(Ok(v)) = serde_json::Deserializer::from_slice(&bytes)
                .into_iter::<Value>()
                .next()
            {
                return v;
            }
            assert!(
                t0.elapsed() < limit,
                "no whole request through the proxy in {limit:?}: {:?}",
                String::from_utf8_lossy(&bytes)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Bytes of answer the target has sent back so far.
    pub fn answered(&self) -> usize {
        self.down.load(Ordering::SeqCst)
    }
}
