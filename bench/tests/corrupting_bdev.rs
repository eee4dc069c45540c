//! Engine-level tests of `ferrite_bench::engine::run` on a real runtime (no binary):
//!
//! * a test-only bdev whose backend flips one byte of every read that covers a known bdev
//!   offset: verify must fail, naming the bdev and that exact offset (and, with `-C`, only
//!   the job whose slice holds the byte);
//! * the same backend without corruption: verify passes and the data really went through it;
//! * randread on a null bdev with `-C` on two reactors: IOPS, percentiles, CPU figures.
//!
//! The bdev registry is process-wide, so the tests take a lock and each starts and stops its
//! own runtime.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ferrite_bdev::{BackendChannel, Bdev, BdevBackend, BdevIo, BdevProps, IoStatus, IoType};
use ferrite_bench::engine::{self, EngineConfig, EngineOutput, Interrupt};
use ferrite_bench::{jobs_from_options, BdevInfo, BenchOptions, JobPlan, JobStatus, Percentiles};
use ferrite_reactor::{CpuMask, PollMode, Runtime, RuntimeConfig};
use serde_json::Value;

const BLOCK_SIZE: u32 = 512;
const NUM_BLOCKS: u64 = 128; // 64 KiB: 16 slots of 4 KiB, so the job reaches block 37 at once.

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// The test bdev.

/// Backing store shared by every thread's channel; optionally corrupts one byte on reads.
struct Store {
    data: Mutex<Vec<u8>>,
    /// Byte offset on the bdev whose value reads return flipped (`None`: a clean disk).
    corrupt_at: Option<u64>,
    reads: AtomicU64,
    writes: AtomicU64,
    corrupted_reads: AtomicU64,
}

struct TestBackend {
    store: Arc<Store>,
}

struct TestChannel {
    store: Arc<Store>,
}

impl BdevBackend for TestBackend {
    fn module_name(&self) -> &'static str {
        "bench_test"
    }

    fn io_type_supported(&self, t: IoType) -> bool {
        matches!(
            t,
            IoType::Read
                | IoType::Write
                | IoType::Unmap
                | IoType::WriteZeroes
                | IoType::Flush
                | IoType::Reset
        )
    }

    fn create_channel(&self) -> Box<dyn BackendChannel> {
        Box::new(TestChannel {
            store: self.store.clone(),
        })
    }

    fn config_entry(&self, _bdev: &Bdev) -> Option<Value> {
        None
    }
}

impl BackendChannel for TestChannel {
    fn submit(&mut self, io: Box<BdevIo>) {
        let bs = io.block_size() as usize;
        let off = io.offset_blocks() as usize * bs;
        let len = io.num_blocks() as usize * bs;
        let st = &self.store;
        let Ok(mut data) = st.data.lock() else {
            return io.complete(IoStatus::Failed);
        };
        if off + len > data.len() {
            drop(data);
            return io.complete(IoStatus::Failed);
        }
        match io.io_type() {
            IoType::Read => {
                st.reads.fetch_add(1, Ordering::Relaxed);
                let mut pos = off;
                for v in io.iovs() {
                    // SAFETY: the bdev layer validated the range against the bdev size (checked
                    // again above against the store); the segment is valid for `v.len` bytes and
                    // owned by this I/O until it completes; the store and the segment are
                    // distinct allocations.
                    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr().add(pos), v.base, v.len) };
                    if let Some(bad) = st.corrupt_at.map(|b| b as usize) {
                        if (pos..pos + v.len).contains(&bad) {
                            // SAFETY: `bad - pos < v.len`, so the byte is inside the segment.
                            unsafe { *v.base.add(bad - pos) ^= 0xFF };
                            st.corrupted_reads.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    pos += v.len;
                }
            }
            IoType::Write => {
                st.writes.fetch_add(1, Ordering::Relaxed);
                let mut pos = off;
                for v in io.iovs() {
                    // SAFETY: as for reads, in the other direction.
                    unsafe {
                        std::ptr::copy_nonoverlapping(v.base, data.as_mut_ptr().add(pos), v.len)
                    };
                    pos += v.len;
                }
            }
            IoType::Unmap | IoType::WriteZeroes => data[off..off + len].fill(0),
            IoType::Flush | IoType::Reset => {}
            _ => {
                drop(data);
                return io.complete(IoStatus::Failed);
            }
        }
        drop(data);
        io.complete(IoStatus::Success);
    }
}

// ---------------------------------------------------------------------------------------------
// Runtime plumbing.

/// A runtime that unregisters every bdev and stops its reactors when dropped (also on panic).
struct TestRt {
    rt: Arc<Runtime>,
}

impl TestRt {
    fn start(cores: &[usize]) -> TestRt {
        let rt = Runtime::start(RuntimeConfig {
            cpumask: CpuMask::from_cores(cores),
            mode: PollMode::Poll,
            pin: false,
            ..Default::default()
        })
        .expect("runtime starts");
        TestRt { rt }
    }

    /// Runs `f` on the app thread and returns its result.
    fn on_app<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::channel();
        self.rt
            .app_thread()
            .send(move || {
                let _ = tx.send(f());
            })
            .expect("app thread takes a message");
        rx.recv_timeout(Duration::from_secs(10))
            .expect("app thread answers")
    }

    fn register_test_bdev(&self, name: &str, corrupt_at: Option<u64>) -> Arc<Store> {
        let store = Arc::new(Store {
            data: Mutex::new(vec![0u8; (NUM_BLOCKS * u64::from(BLOCK_SIZE)) as usize]),
            corrupt_at,
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            corrupted_reads: AtomicU64::new(0),
        });
        let backend = Arc::new(TestBackend {
            store: store.clone(),
        });
        let props = BdevProps::new(name, "Corrupting test disk", BLOCK_SIZE, NUM_BLOCKS);
        self.on_app(move || ferrite_bdev::register(props, backend).map(|_| ()))
            .expect("test bdev registers");
        store
    }

    fn register_null(&self, name: &str, num_blocks: u64) {
        let opts = ferrite_null::NullOpts {
            name: name.to_string(),
            num_blocks,
            block_size: BLOCK_SIZE,
            uuid: None,
            md_size: 0,
        };
        self.on_app(move || ferrite_null::create(&opts).map(|_| ()))
            .expect("null bdev registers");
    }

    fn cores(&self) -> Vec<usize> {
        self.rt.reactors().iter().map(|r| r.lcore).collect()
    }
}

impl Drop for TestRt {
    fn drop(&mut self) {
        let (tx, rx) = mpsc::channel();
        let _ = self.rt.app_thread().send(move || {
            ferrite_bdev::unregister_all(move || {
                let _ = tx.send(());
            })
        });
        let _ = rx.recv_timeout(Duration::from_secs(10));
        self.rt.stop();
    }
}

fn options(args: &[&str]) -> BenchOptions {
    let opts = BenchOptions::parse_from(std::iter::once("x").chain(args.iter().copied()))
        .expect("options parse");
    opts.validate().expect("options are valid");
    opts
}

fn plan(opts: &BenchOptions, bdev: &str, num_blocks: u64, cores: &[usize]) -> Vec<JobPlan> {
    let infos = [BdevInfo {
        name: bdev.to_string(),
        block_size: BLOCK_SIZE,
        num_blocks,
    }];
    jobs_from_options(opts, &infos, cores).expect("jobs plan")
}

/// Runs the plans for `opts`' run time; returns the output and the number of progress calls.
fn run(t: &TestRt, opts: &BenchOptions, plans: Vec<JobPlan>) -> (EngineOutput, usize) {
    let cfg = EngineConfig {
        plans,
        run_time: opts.run_time(),
        sample_interval: Duration::from_secs_f64(opts.status_interval_s),
        io_timeout: opts.io_timeout(),
        continue_on_failure: false,
    };
    let mut samples = 0;
    let started = Instant::now();
    let out = engine::run(
        &t.rt,
        cfg,
        |elapsed, _| {
            assert!(elapsed > 0.0);
            samples += 1;
        },
        |wait| {
            std::thread::sleep(wait);
            Interrupt::None
        },
    )
    .expect("engine runs");
    let took = started.elapsed();
    // A run lasts its run time, unless every job ended by itself before (then it ends with
    // the last job, as bdevperf's): the callers check which.
    assert!(
        took < opts.run_time() + Duration::from_secs(5),
        "run took {took:?}"
    );
    if out.results.iter().any(|r| r.status == JobStatus::Finished) {
        assert!(took >= opts.run_time(), "run took {took:?}");
    }
    (out, samples)
}

fn assert_monotonic(p: &Percentiles, what: &str) {
    let v = p.values_ns();
    assert!(v[0] > 0, "{what}: p50 is 0: {p:?}");
    assert!(v.windows(2).all(|w| w[0] <= w[1]), "{what}: {p:?}");
}

/// Pulls `expected 0x…, found 0x…` out of a mismatch message.
fn expected_found(msg: &str) -> (u64, u64) {
    let word = |key: &str| {
        let at = msg
            .find(key)
            .unwrap_or_else(|| panic!("no '{key}' in {msg}"))
            + key.len();
        u64::from_str_radix(&msg[at..at + 16], 16).expect("16 hex digits")
    };
    (word("expected 0x"), word("found 0x"))
}

// ---------------------------------------------------------------------------------------------
// Tests.

/// Verify against a disk that flips byte `byte_in_block` of block 37 on reads.
fn corrupted_verify_fails_at_the_byte(name: &str, byte_in_block: u64, cause: &str) {
    let _g = serial();
    let t = TestRt::start(&[0]);
    let bad = 37 * u64::from(BLOCK_SIZE) + byte_in_block;
    let store = t.register_test_bdev(name, Some(bad));
    // The job meets block 37 within its first few I/O and stops: the run ends with it, long
    // before its 600 s (the deadline below is generous for a starved machine).
    let opts = options(&[
        "-q", "8", "-o", "4096", "-w", "verify", "-t", "600", "-T", name, "--seed", "7",
    ]);
    let plans = plan(&opts, name, NUM_BLOCKS, &t.cores());
    assert_eq!(plans.len(), 1);
    let started = Instant::now();
    let (out, _) = run(&t, &opts, plans);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(60),
        "the run went on after its only job had ended: {took:?}"
    );

    assert!(
        store.corrupted_reads.load(Ordering::Relaxed) >= 1,
        "the job never read block 37"
    );
    assert_eq!(out.results.len(), 1);
    let r = &out.results[0];
    assert_eq!(r.status, JobStatus::Failed);
    assert_eq!(r.plan.bdev, name);
    let c = r.stats.counters();
    assert_eq!(c.failed, 0, "the I/O succeeded; only the data is wrong");
    assert!(c.ios > 0);
    // The job stopped at the miscompare: its runtime is the time to get there, measured from
    // the start of the run (not 0, not the whole run).
    assert!(
        r.runtime_s > 0.0 && r.runtime_s <= took.as_secs_f64(),
        "runtime of the failed job: {}",
        r.runtime_s
    );
    let s = r.summary();
    assert!(s.iops.is_finite() && s.iops > 0.0, "{s:?}");

    assert_eq!(out.mismatches.len(), 1, "{:?}", out.mismatches);
    let m = &out.mismatches[0];
    let head = format!("bdev '{name}': miscompare at offset {bad:#x} (block 37): ");
    assert!(m.starts_with(&head), "{m}\n  does not start with\n{head}");
    assert!(m.ends_with(&format!("({cause})")), "{m}");
    // The reported words differ in exactly the flipped byte.
    let (expected, found) = expected_found(m);
    assert_eq!(expected ^ found, 0xFF << (8 * (bad % 8)), "{m}");
}

#[test]
fn verify_reports_corrupted_data_byte() {
    corrupted_verify_fails_at_the_byte(
        "Corrupt0",
        100,
        "data corrupted inside a correctly labelled block",
    );
}

#[test]
fn verify_reports_corrupted_header_byte() {
    corrupted_verify_fails_at_the_byte("Corrupt1", 5, "block does not hold a verify pattern");
}

#[test]
fn verify_passes_on_a_clean_disk() {
    let _g = serial();
    let t = TestRt::start(&[0]);
    let store = t.register_test_bdev("Clean0", None);
    let opts = options(&[
        "-q", "8", "-o", "4096", "-w", "verify", "-t", "0.5", "-T", "Clean0", "-S", "0.2",
    ]);
    let plans = plan(&opts, "Clean0", NUM_BLOCKS, &t.cores());
    let (out, samples) = run(&t, &opts, plans);
    assert!(samples >= 2, "{samples} progress samples");
    assert!(out.mismatches.is_empty(), "{:?}", out.mismatches);
    assert_eq!(out.results.len(), 1);
    let r = &out.results[0];
    assert_eq!(r.status, JobStatus::Finished);
    let c = r.stats.counters();
    assert!(c.ios > 100, "{c:?}");
    assert_eq!(c.failed, 0);
    assert!((0.45..2.0).contains(&r.runtime_s), "{}", r.runtime_s);
    // Every verified write was read back through the backend.
    let (reads, writes) = (
        store.reads.load(Ordering::Relaxed),
        store.writes.load(Ordering::Relaxed),
    );
    assert!(
        reads > 0 && writes >= reads && writes - reads <= 8,
        "{reads} {writes}"
    );
    // What is on the disk is the verify pattern (block 0 starts with the magic).
    assert_eq!(&store.data.lock().unwrap()[..8], b"FERRVRFY");
}

#[test]
fn every_core_verify_fails_only_the_slice_with_the_bad_byte() {
    let _g = serial();
    let t = TestRt::start(&[0, 1]);
    let bad = 37 * u64::from(BLOCK_SIZE) + 200; // in the first half: core 0's slice
    let store = t.register_test_bdev("Corrupt2", Some(bad));
    let opts = options(&[
        "-q", "4", "-o", "4096", "-w", "verify", "-t", "0.5", "-T", "Corrupt2", "-C",
    ]);
    let plans = plan(&opts, "Corrupt2", NUM_BLOCKS, &t.cores());
    assert_eq!(plans.len(), 2);
    let half = NUM_BLOCKS / 2 * u64::from(BLOCK_SIZE);
    assert_eq!(
        plans
            .iter()
            .map(|p| (p.core, p.offset, p.length))
            .collect::<Vec<_>>(),
        vec![(0, 0, half), (1, half, half)]
    );
    let (out, _) = run(&t, &opts, plans);
    assert!(store.corrupted_reads.load(Ordering::Relaxed) >= 1);
    let st: Vec<(usize, JobStatus)> = out
        .results
        .iter()
        .map(|r| (r.plan.core, r.status))
        .collect();
    assert_eq!(st, vec![(0, JobStatus::Failed), (1, JobStatus::Finished)]);
    assert!(out.results[1].stats.counters().ios > 0);
    assert_eq!(out.mismatches.len(), 1, "{:?}", out.mismatches);
    assert!(
        out.mismatches[0].starts_with(&format!(
            "bdev 'Corrupt2': miscompare at offset {bad:#x} (block 37)"
        )),
        "{}",
        out.mismatches[0]
    );
    assert_eq!(out.cpu.len(), 2);
}

#[test]
fn null_randread_results() {
    let _g = serial();
    let t = TestRt::start(&[0, 1]);
    let blocks = 1 << 18;
    t.register_null("NullBench0", blocks);
    let opts = options(&[
        "-q",
        "16",
        "-o",
        "4k",
        "-w",
        "randread",
        "-t",
        "0.5",
        "-T",
        "NullBench0",
        "-C",
        "-S",
        "0.1",
    ]);
    let plans = plan(&opts, "NullBench0", blocks, &t.cores());
    assert_eq!(
        plans.iter().map(|p| p.core).collect::<Vec<_>>(),
        vec![0, 1],
        "-C: one job per core"
    );
    let (out, samples) = run(&t, &opts, plans);
    assert!(samples >= 3, "{samples} progress samples");
    assert!(out.mismatches.is_empty());
    assert_eq!(out.results.len(), 2);
    for r in &out.results {
        assert_eq!(r.status, JobStatus::Finished);
        assert_eq!(r.plan.bdev, "NullBench0");
        let s = r.summary();
        assert!(s.iops > 0.0, "{s:?}");
        assert_eq!(s.counters.failed, 0);
        assert!(s.min_us <= s.avg_us && s.avg_us <= s.max_us, "{s:?}");
        assert!((0.45..2.0).contains(&r.runtime_s), "{}", r.runtime_s);
        assert_monotonic(&r.stats.percentiles(), &r.plan.label());
        assert!(!r.stats.samples().is_empty(), "no IOPS-over-time samples");
    }
    let total = ferrite_bench::report::total_summary(&out.results).unwrap();
    assert_monotonic(&total.percentiles, "total");
    assert!((total.iops - out.results.iter().map(|r| r.summary().iops).sum::<f64>()).abs() < 1e-6);

    assert!(out.tick_rate > 0);
    assert_eq!(out.cpu.len(), t.rt.reactor_count(), "one entry per reactor");
    assert_eq!(
        out.cpu.iter().map(|c| c.core).collect::<Vec<_>>(),
        t.cores()
    );
    for c in &out.cpu {
        assert!(c.busy_ticks > 0, "{c:?}");
        // Busy + idle cover (about) the run.
        let secs = (c.busy_ticks + c.idle_ticks) as f64 / out.tick_rate as f64;
        assert!((0.3..3.0).contains(&secs), "{c:?}: {secs} s");
    }
}

/// The only bdev of a long run is deleted during it: its job stops, and the run ends with it
/// (as bdevperf's, whose test ends when its last job has), far before its 600 s, with the job
/// failed and the removal named.
#[test]
fn run_ends_when_its_only_bdev_is_removed() {
    let _g = serial();
    let t = TestRt::start(&[0]);
    t.register_null("NullGone0", 1 << 16);
    let opts = options(&[
        "-q",
        "8",
        "-o",
        "4096",
        "-w",
        "randread",
        "-t",
        "600",
        "-T",
        "NullGone0",
        "-S",
        "0.1",
    ]);
    let plans = plan(&opts, "NullGone0", 1 << 16, &t.cores());
    let cfg = EngineConfig {
        plans,
        run_time: opts.run_time(),
        sample_interval: Duration::from_secs_f64(opts.status_interval_s),
        io_timeout: None,
        continue_on_failure: false,
    };
    let app = t.rt.app_thread();
    let (deleted_tx, deleted_rx) = mpsc::channel();
    let mut deleting = false;
    let started = Instant::now();
    let out = engine::run(
        &t.rt,
        cfg,
        // The first progress sample with I/O done: the job runs; delete its bdev.
        |_, c| {
            if !deleting && c.ios > 0 {
                deleting = true;
                let tx = deleted_tx.clone();
                app.send(move || {
                    ferrite_null::delete("NullGone0", move |r| {
                        let _ = tx.send(r.map_err(|e| e.to_string()));
                    })
                })
                .expect("app thread takes a message");
            }
        },
        |wait| {
            std::thread::sleep(wait);
            Interrupt::None
        },
    )
    .expect("engine runs");
    let took = started.elapsed();
    assert!(deleting, "the job never completed an I/O");
    assert_eq!(
        deleted_rx.recv_timeout(Duration::from_secs(10)),
        Ok(Ok(())),
        "bdev_null_delete"
    );
    assert!(
        took < Duration::from_secs(60),
        "the run went on after its only bdev was removed: {took:?}"
    );
    assert_eq!(out.results.len(), 1);
    let r = &out.results[0];
    assert_eq!(r.status, JobStatus::Failed);
    assert!(r.stats.counters().ios > 0);
    assert!(
        r.runtime_s > 0.0 && r.runtime_s <= took.as_secs_f64(),
        "{}",
        r.runtime_s
    );
    assert_eq!(
        out.removed,
        [format!(
            "job '{}' ended early: bdev 'NullGone0' was removed during the run",
            r.plan.label()
        )]
    );
}
