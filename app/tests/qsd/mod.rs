//! qemu-storage-daemon serving a vhost-user-blk export, killed on drop. A missing binary is a
//! failure that says what to install.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::common::TempDir;

/// The daemon.
pub const QSD: &str = "qemu-storage-daemon";

/// A running qemu-storage-daemon.
pub struct Qsd {
    child: Option<Child>,
    /// Its vhost-user socket.
    pub sock: PathBuf,
    /// Its output.
    pub log: PathBuf,
    /// Process id.
    pub pid: u32,
}

impl Qsd {
    /// `null-co` export of `size` bytes with logical block size `bs`.
    pub fn null(dir: &TempDir, name: &str, size: u64, bs: u32, writable: bool) -> Qsd {
        let blockdev = format!("driver=null-co,node-name=disk0,size={size},read-zeroes=on");
        Qsd::start(dir, name, &blockdev, bs, writable, 2)
    }

    /// A file export (a new sparse file of `size` bytes in `dir`).
    pub fn file(dir: &TempDir, name: &str, size: u64, readonly: bool) -> Qsd {
        let img = dir.join(&format!("{name}.img"));
        std::fs::File::create(&img)
            .unwrap_or_else(|e| panic!("create {img:?}: {e}"))
            .set_len(size)
            .unwrap_or_else(|e| panic!("size {img:?}: {e}"));
        let blockdev = format!(
            "driver=file,node-name=disk0,filename={},cache.direct=off,aio=threads",
            img.display()
        );
        Qsd::start(dir, name, &blockdev, 512, !readonly, 2)
    }

    /// Any blockdev, `num_queues` queues.
    pub fn start(
        dir: &TempDir,
        name: &str,
        blockdev: &str,
        bs: u32,
        writable: bool,
        nq: u32,
    ) -> Qsd {
        let sock = dir.join(&format!("{name}.vhost.sock"));
        let log = dir.join(&format!("{name}.qsd.log"));
        let f = std::fs::File::create(&log).unwrap_or_else(|e| panic!("create {log:?}: {e}"));
        let export = format!(
            "type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path={},writable={},num-queues={nq},logical-block-size={bs}",
            sock.display(),
            if writable { "on" } else { "off" }
        );
        let child = Command::new(QSD)
            .arg("--blockdev")
            .arg(blockdev)
            .arg("--export")
            .arg(&export)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap_or_else(|e| panic!("log: {e}")))
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {QSD} ({e}): install it (Debian: apt-get install qemu-system-common)")
            });
        let mut q = Qsd {
            pid: child.id(),
            child: Some(child),
            sock,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !q.sock.exists() {
            if let Some(c) = q.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!(
                        "{QSD} exited with {st}: {}",
                        std::fs::read_to_string(&q.log).unwrap_or_default()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "{QSD} did not create {:?}",
                q.sock
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        q
    }

    /// SIGKILLs the daemon now.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Qsd {
    fn drop(&mut self) {
        self.kill();
    }
}
