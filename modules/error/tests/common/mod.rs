//! Shared by the error module's tests: a deterministic harness with an app thread (0) and a
//! user thread (1), malloc bases, I/O submission with per-I/O tags and a log of completions
//! (status, callback count, data), and direct calls of the RPC methods.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use ferrite_bdev::{BdevChannel, BdevIo, Desc, DmaBuf, IoStatus};
use ferrite_reactor::harness::Harness;
use ferrite_rpc::{Registry, Responder, RpcError, ServerState, RUNTIME};
use serde_json::Value;

pub const APP: usize = 0;
pub const USER: usize = 1;
pub const BS: u64 = 512;

/// One completion: tag (`user[0]`), status, and the data of the I/O's buffer (if any).
struct Done {
    tag: u64,
    status: IoStatus,
    data: Option<Vec<u8>>,
}

static LOG: Mutex<Vec<Done>> = Mutex::new(Vec::new());

fn log() -> std::sync::MutexGuard<'static, Vec<Done>> {
    LOG.lock().unwrap_or_else(|p| p.into_inner())
}

/// The completion callback of every I/O the tests submit.
pub fn record(io: Box<BdevIo>) {
    let data = io.buf().map(|b| b.as_slice().to_vec());
    log().push(Done {
        tag: io.user[0],
        status: io.status(),
        data,
    });
    ferrite_bdev::free_io(io);
}

/// Registers the modules the tests stack (idempotent).
pub fn register_modules() {
    ferrite_bdev::register_module(Arc::new(ferrite_error::ErrorModule));
    ferrite_bdev::register_module(Arc::new(ferrite_passthru::PassthruModule));
}

pub fn malloc(name: &str, blocks: u64) {
    ferrite_malloc::create(&ferrite_malloc::MallocOpts {
        name: Some(name.into()),
        num_blocks: blocks,
        block_size: BS as u32,
        ..Default::default()
    })
    .unwrap();
}

/// A harness with a bdev open on the user thread. Tags are `test << 32 | n`, so tests running
/// in parallel in this binary never see each other's completions.
pub struct Env {
    pub h: Harness,
    pub bdev: String,
    pub desc: Option<Desc>,
    pub ch: Option<BdevChannel>,
    test: u64,
    n: u64,
}

impl Env {
    /// Malloc `base` (`blocks` blocks) with `EE_<base>` on it, opened on the user thread.
    pub fn error_on_malloc(test: u64, base: &str, blocks: u64) -> Env {
        let mut h = Harness::new(2, test);
        let name = h.on(APP, || {
            register_modules();
            malloc(base, blocks);
            ferrite_error::create(&ferrite_error::ErrorOpts {
                base_name: base.into(),
                uuid: None,
            })
            .unwrap()
        });
        assert_eq!(name, format!("EE_{base}"));
        Env::open(h, test, &name)
    }

    /// Malloc `base` (64 blocks), `EE_<base>` on it and passthru `pt` on that, `pt` opened on
    /// the user thread.
    pub fn passthru_on_error(test: u64, base: &str, pt: &str) -> Env {
        let mut h = Harness::new(2, test);
        h.on(APP, || {
            register_modules();
            malloc(base, 64);
            ferrite_error::create(&ferrite_error::ErrorOpts {
                base_name: base.into(),
                uuid: None,
            })
            .unwrap();
            ferrite_passthru::create(&ferrite_passthru::PassthruOpts {
                base_bdev_name: format!("EE_{base}"),
                name: pt.into(),
                uuid: None,
            })
            .unwrap();
        });
        Env::open(h, test, pt)
    }

    /// A second user thread with its own descriptor and channel on the bdev under test.
    pub fn second_user(&mut self) -> SecondUser {
        let t = self.h.add_thread("user2");
        let bdev = self.bdev.clone();
        let desc = self
            .h
            .on(t, move || Desc::open(&bdev, true, |_| {}).unwrap());
        let ch = self.h.on(t, || desc.channel().unwrap());
        SecondUser { t, desc, ch }
    }

    /// Opens `bdev` for writing on the user thread of `h`.
    pub fn open(mut h: Harness, test: u64, bdev: &str) -> Env {
        let desc = h.on(USER, || Desc::open(bdev, true, |_| {}).unwrap());
        let ch = h.on(USER, || desc.channel().unwrap());
        Env {
            h,
            bdev: bdev.into(),
            desc: Some(desc),
            ch: Some(ch),
            test,
            n: 0,
        }
    }

    /// Submits an I/O prepared by `prep` on the user thread; returns its tag.
    pub fn submit(&mut self, prep: impl FnOnce(&mut BdevIo)) -> u64 {
        self.n += 1;
        let tag = (self.test << 32) | self.n;
        let ch = self.ch.as_ref().expect("channel open");
        self.h.on(USER, || {
            let mut io = ch.alloc_io().unwrap();
            prep(&mut io);
            io.user[0] = tag;
            ch.submit(io);
        });
        tag
    }

    pub fn read(&mut self, off: u64, n: u64) -> u64 {
        self.submit(|io| {
            io.prep_read(off, n, record);
        })
    }

    pub fn write(&mut self, off: u64, n: u64, fill: u8) -> u64 {
        let mut b = DmaBuf::get((n * BS) as usize).unwrap().unwrap();
        b.as_mut_slice().fill(fill);
        self.submit(move |io| {
            io.prep_write(off, n, record).attach_buf(b);
        })
    }

    pub fn unmap(&mut self, off: u64, n: u64) -> u64 {
        self.submit(|io| {
            io.prep_unmap(off, n, record);
        })
    }

    pub fn flush(&mut self, off: u64, n: u64) -> u64 {
        self.submit(|io| {
            io.prep_flush(off, n, record);
        })
    }

    pub fn run(&mut self) {
        self.h.run_until_idle();
    }

    /// How many times the callback of `tag` ran.
    pub fn calls(&self, tag: u64) -> usize {
        log().iter().filter(|d| d.tag == tag).count()
    }

    /// The status of `tag`; `None` while not completed. Panics if its callback ran twice.
    pub fn status(&self, tag: u64) -> Option<IoStatus> {
        let l = log();
        let v: Vec<&Done> = l.iter().filter(|d| d.tag == tag).collect();
        assert!(
            v.len() <= 1,
            "callback of I/O {tag:#x} ran {} times",
            v.len()
        );
        v.first().map(|d| d.status)
    }

    /// The data the I/O `tag` carried when it completed.
    pub fn data(&self, tag: u64) -> Vec<u8> {
        log()
            .iter()
            .find(|d| d.tag == tag)
            .and_then(|d| d.data.clone())
            .unwrap_or_else(|| panic!("I/O {tag:#x} completed without data"))
    }

    /// I/O submitted on the user channel and not yet completed (bdev layer's count).
    pub fn inflight(&mut self) -> u32 {
        let ch = self.ch.as_ref().expect("channel open");
        self.h.on(USER, || ch.inflight())
    }

    /// Reads `n` blocks at `off` of `bdev` (any bdev, e.g. the base under a claim) through a
    /// read-only descriptor of its own.
    pub fn read_bdev(&mut self, bdev: &str, off: u64, n: u64) -> Vec<u8> {
        let desc = self.h.on(USER, || Desc::open(bdev, false, |_| {}).unwrap());
        let ch = self.h.on(USER, || desc.channel().unwrap());
        self.n += 1;
        let tag = (self.test << 32) | self.n;
        self.h.on(USER, || {
            let mut io = ch.alloc_io().unwrap();
            io.prep_read(off, n, record);
            io.user[0] = tag;
            ch.submit(io);
        });
        self.run();
        assert_eq!(self.status(tag), Some(IoStatus::Success));
        self.h.on(USER, move || {
            drop(ch);
            drop(desc);
        });
        self.run();
        self.data(tag)
    }

    /// Closes the user channel and descriptor.
    pub fn close(&mut self) {
        let ch = self.ch.take();
        let desc = self.desc.take();
        self.h.on(USER, move || {
            drop(ch);
            drop(desc);
        });
        self.run();
    }

    /// Calls `f` on the app thread.
    pub fn app<R>(&mut self, f: impl FnOnce() -> R) -> R {
        self.h.on(APP, f)
    }
}

/// A registry with `register` run on it, its handlers running on the harness's app thread.
pub fn registry(h: &Harness, register: fn(&Registry, &ferrite_reactor::ThreadHandle)) -> Registry {
    let reg = Registry::new(Arc::new(ServerState::new(RUNTIME)));
    register(&reg, &h.handle(APP));
    reg
}

/// Calls `method` with `params` and drives the harness until it is answered.
pub fn call(
    h: &mut Harness,
    reg: &Registry,
    method: &str,
    params: Value,
) -> Result<Value, RpcError> {
    let slot: Arc<Mutex<Option<Result<Value, RpcError>>>> = Arc::new(Mutex::new(None));
    let s = slot.clone();
    reg.call(
        method,
        Some(params),
        Responder::new(move |r| *s.lock().unwrap() = Some(r)),
    );
    h.run_until(1000, || slot.lock().unwrap().is_some());
    let r = slot.lock().unwrap().take();
    r.unwrap_or_else(|| panic!("{method}: no answer"))
}

/// Runs `delete` for `name` on the app thread; returns a slot filled with its result.
pub type DoneSlot = Arc<Mutex<Option<Result<(), String>>>>;

pub fn done_slot() -> DoneSlot {
    Arc::new(Mutex::new(None))
}

/// A second user thread's descriptor and channel (see [`Env::second_user`]).
pub struct SecondUser {
    pub t: usize,
    pub desc: Desc,
    pub ch: BdevChannel,
}

impl SecondUser {
    /// Submits a flush of blocks 0..8 tagged `tag` on this thread's channel.
    pub fn flush(&self, env: &mut Env, tag: u64) {
        env.h.on(self.t, || {
            let mut io = self.ch.alloc_io().unwrap();
            io.prep_flush(0, 8, record);
            io.user[0] = tag;
            self.ch.submit(io);
        });
    }

    /// I/O in flight on this thread's channel.
    pub fn inflight(&self, env: &mut Env) -> u32 {
        env.h.on(self.t, || self.ch.inflight())
    }

    /// Closes the channel and descriptor on their thread.
    pub fn close(self, env: &mut Env) {
        let SecondUser { t, desc, ch } = self;
        env.h.on(t, move || {
            drop(ch);
            drop(desc);
        });
    }
}
