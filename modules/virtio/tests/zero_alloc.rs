//! The hot-path rule for the virtio-user bdev: in steady state, reads and writes through a
//! virtio-user bdev attached to qemu-storage-daemon's vhost-user-blk export perform no heap
//! allocation on the submitting thread (submit, ring, bounce copies, used-ring polling,
//! completion). A counting global allocator counts allocations made on the test's OS thread
//! while a queue-depth-32 workload runs on a harness thread. Also reports how many kicks
//! (eventfd writes) the run needed per request: EVENT_IDX decides, not every submit.
//! Needs `qemu-storage-daemon` (Debian package qemu-system-common).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrite_bdev::testing::{check_counter, failed, Driver};
use ferrite_reactor::harness::Harness;

#[global_allocator]
static GLOBAL: ferrite_reactor::alloc_count::CountingAlloc =
    ferrite_reactor::alloc_count::CountingAlloc;

struct Qsd(std::process::Child, std::path::PathBuf);

impl Drop for Qsd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn start_qsd() -> (Qsd, String) {
    let dir = std::env::temp_dir().join(format!("virtio-zero-alloc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("vhost.sock");
    let child = Command::new("qemu-storage-daemon")
        .args([
            "--blockdev",
            "driver=null-co,node-name=disk0,size=67108864,read-zeroes=on",
            "--export",
        ])
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

#[test]
fn steady_state_io_does_not_allocate() {
    check_counter();

    let (_qsd, sock) = start_qsd();
    let mut h = Harness::new(1, 1);
    let res: Arc<Mutex<Option<AttachResult>>> = Arc::new(Mutex::new(None));
    let r2 = res.clone();
    h.on(0, move || {
        let app = ferrite_reactor::current().unwrap();
        let opts = ferrite_virtio::AttachOpts {
            name: "VZ".into(),
            traddr: sock,
            vq_count: 1,
            vq_size: 256,
        };
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
    assert_eq!(got, Some(Ok(vec!["VZ".to_string()])));

    let mut heap = vec![0u8; 32 * 4096];
    // Pool buffers (shared with the server: zero-copy), then heap buffers (bounced).
    let (n, info) = steady_state(&mut h, None);
    assert_eq!(info["bounces"], 0, "pool buffers were bounced: {info}");
    assert!(info["requests"].as_u64().unwrap() >= n, "{info}");
    let before = info["bounces"].as_u64().unwrap();
    let (n, info) = steady_state(&mut h, Some(heap.as_mut_ptr()));
    assert!(
        info["bounces"].as_u64().unwrap() - before >= n,
        "heap buffers were not bounced: {info}"
    );
    assert!(
        info["kicks"].as_u64().unwrap() <= info["requests"].as_u64().unwrap(),
        "{info}"
    );
}

/// Runs a queue-depth-32 workload, counts allocations in steady state (must be 0), and
/// returns the I/O counted and the controller's counters.
fn steady_state(h: &mut Harness, heap: Option<*mut u8>) -> (u64, serde_json::Value) {
    let d = Driver::open(h, "VZ", 8192, heap);
    let limit = Duration::from_secs(60);
    d.start(h, 1);
    d.poll_for(h, 200, limit);
    d.start(h, 31);
    d.poll_for(h, 5_000, limit);
    let w = d.measure(h, |h| d.poll_for(h, 20_000, limit));
    assert_eq!(failed(), 0, "I/O failed");
    assert!(w.ios >= 20_000, "steady state too short: {} I/O", w.ios);
    assert_eq!(
        w.allocs,
        0,
        "virtio-user allocated {} times in {} I/O (heap buffers: {})",
        w.allocs,
        w.ios,
        heap.is_some()
    );
    d.close(h, Duration::from_secs(30));
    let info = ferrite_virtio::list(Some("VZ")).unwrap().remove(0);
    eprintln!(
        "controller after the run (heap buffers: {}): {info}",
        heap.is_some()
    );
    (w.ios, info)
}
