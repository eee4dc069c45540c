//! The hot-path rule for the virtio-user bdev: in steady state, reads and writes through a
//! virtio-user bdev attached to qemu-storage-daemon's vhost-user-blk export perform no heap
//! allocation on the submitting thread (submit, ring, bounce copies, used-ring polling,
//! completion). A counting global allocator counts allocations made on the test's OS thread
//! while a queue-depth-32 workload runs on a harness thread. Also reports how many kicks
//! (eventfd writes) the run needed per request: EVENT_IDX decides, not every submit.
//! Needs `qemu-storage-daemon` (Debian package qemu-system-common).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::cell::Cell;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrite_bdev::{BdevChannel, BdevIo, Desc, DmaBuf, IoStatus, IoVec};
use ferrite_reactor::harness::Harness;

#[global_allocator]
static GLOBAL: ferrite_reactor::alloc_count::CountingAlloc =
    ferrite_reactor::alloc_count::CountingAlloc;

static COMPLETED: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);

struct Job {
    ch: BdevChannel,
    blocks: u64,
    next: Cell<u64>,
    /// Heap buffers (outside shared memory: bounced), one per I/O, when set.
    heap: Option<*mut u8>,
}

thread_local! {
    static JOB: Cell<*const Job> = const { Cell::new(std::ptr::null()) };
}

fn resubmit(mut io: Box<BdevIo>) {
    JOB.with(|j| {
        let p = j.get();
        if p.is_null() {
            return ferrite_bdev::free_io(io);
        }
        // SAFETY: the Job outlives the run; set before the first submit, cleared after.
        let job = unsafe { &*p };
        let off = job.next.get();
        job.next.set((off + 8) % job.blocks);
        if off % 16 == 0 {
            io.prep_write(off, 8, done);
        } else {
            io.prep_read(off, 8, done);
        }
        let base = match job.heap {
            // SAFETY: user[0] < 32 indexes this I/O's own 4 KiB in the 128 KiB heap area.
            Some(h) => unsafe { h.add(io.user[0] as usize * 4096) },
            None => io.buf().map(|b| b.as_ptr()).unwrap(),
        };
        // SAFETY: the buffer is 4 KiB and owned by this I/O for the whole run.
        unsafe { io.set_iovs(&[IoVec { base, len: 4096 }]) };
        job.ch.submit(io);
    });
}

fn done(io: Box<BdevIo>) {
    COMPLETED.fetch_add(1, Ordering::Relaxed);
    if io.status() != IoStatus::Success {
        FAILED.fetch_add(1, Ordering::Relaxed);
    }
    resubmit(io);
}

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
    ferrite_reactor::alloc_count::start();
    let b = std::hint::black_box(Box::new(7u64));
    ferrite_reactor::alloc_count::stop();
    drop(b);
    assert_eq!(
        ferrite_reactor::alloc_count::take(),
        1,
        "the counter missed an allocation"
    );

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
    let desc = h.on(0, || Desc::open("VZ", true, |_| {}).expect("open"));
    let job = Box::new(Job {
        ch: h.on(0, || desc.channel().expect("channel")),
        blocks: 8192,
        next: Cell::new(0),
        heap,
    });
    JOB.with(|j| j.set(&*job as *const Job));
    let next_user = Cell::new(0u64);
    let start_ios = |h: &mut Harness, n: usize| {
        h.on(0, || {
            for _ in 0..n {
                let mut io = job.ch.alloc_io().expect("io");
                io.attach_buf(DmaBuf::get(4096).expect("pool").expect("a buffer"));
                io.user[0] = next_user.get();
                next_user.set(next_user.get() + 1);
                resubmit(io);
            }
        })
    };
    let poll_for = |h: &mut Harness, ios: u64| {
        let start = COMPLETED.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(60);
        while COMPLETED.load(Ordering::Relaxed) - start < ios && Instant::now() < deadline {
            h.poll_thread(0);
        }
    };
    start_ios(h, 1);
    poll_for(h, 200);
    start_ios(h, 31);
    poll_for(h, 5_000);
    let before = COMPLETED.load(Ordering::Relaxed);
    ferrite_reactor::alloc_count::start();
    poll_for(h, 20_000);
    ferrite_reactor::alloc_count::stop();
    let n = COMPLETED.load(Ordering::Relaxed) - before;
    let allocs = ferrite_reactor::alloc_count::take();
    assert_eq!(FAILED.load(Ordering::Relaxed), 0, "I/O failed");
    assert!(n >= 20_000, "steady state too short: {n} I/O");
    assert_eq!(
        allocs,
        0,
        "virtio-user allocated {allocs} times in {n} I/O (heap buffers: {})",
        heap.is_some()
    );

    JOB.with(|j| j.set(std::ptr::null()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.on(0, || job.ch.inflight()) > 0 && Instant::now() < deadline {
        h.poll_thread(0);
    }
    let info = ferrite_virtio::list(Some("VZ")).unwrap().remove(0);
    eprintln!(
        "controller after the run (heap buffers: {}): {info}",
        heap.is_some()
    );
    h.on(0, || drop(job));
    h.on(0, || drop(desc));
    (n, info)
}
