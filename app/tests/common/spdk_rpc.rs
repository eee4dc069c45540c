//! SPDK's own RPC client, `spdk-rpc` from PyPI's `spdk` package, as
//! `scripts/setup-spdk-venvs.sh` installs it under `target/spdk-venv/<version>`.

use std::path::{Path, PathBuf};
use std::process::Command;

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
