//! What the virtio-user tests share: qemu-storage-daemon exporting a null device over
//! vhost-user-blk, and attaching a controller to it on a harness thread.
//! Needs `qemu-storage-daemon` (Debian package qemu-system-common).

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrite_reactor::harness::Harness;

/// A running qemu-storage-daemon (killed, its directory removed, on drop).
pub struct Qsd(std::process::Child, std::path::PathBuf);

impl Drop for Qsd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// Starts qemu-storage-daemon exporting a 64 MiB null-co device (`extra`: more null-co
/// options, e.g. `,latency-ns=...`); returns it and its socket path.
pub fn start_qsd(tag: &str, extra: &str) -> (Qsd, String) {
    let dir = std::env::temp_dir().join(format!("virtio-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("vhost.sock");
    let child = Command::new("qemu-storage-daemon")
        .arg("--blockdev")
        .arg(format!(
            "driver=null-co,node-name=disk0,size=67108864,read-zeroes=on{extra}"
        ))
        .arg("--export")
        .arg(format!(
            "type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path={},writable=on",
            sock.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run qemu-storage-daemon ({e}): install it (Debian: apt-get install qemu-system-common)")
        });
    let q = Qsd(child, dir);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() {
        assert!(
            Instant::now() < deadline,
            "qemu-storage-daemon did not create its socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (q, sock.display().to_string())
}

type AttachResult = Result<Vec<String>, String>;

/// Attaches `opts` on harness thread 0 (as its app thread) and waits for the answer.
pub fn attach(h: &mut Harness, opts: ferrite_virtio::AttachOpts) -> AttachResult {
    let res: Arc<Mutex<Option<AttachResult>>> = Arc::new(Mutex::new(None));
    let r2 = res.clone();
    h.on(0, move || {
        let app = ferrite_reactor::current().unwrap();
        ferrite_virtio::attach(opts, app, move |r| {
            *r2.lock().unwrap() = Some(r.map_err(|e| e.to_string()));
        });
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while res.lock().unwrap().is_none() && Instant::now() < deadline {
        h.poll_thread(0);
        std::thread::sleep(Duration::from_millis(1));
    }
    let got = res.lock().unwrap().take();
    got.expect("the attach did not answer within 20 s")
}
