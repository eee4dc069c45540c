//! The bdev layer's options, set by `bdev_set_options` (SPDK's `spdk_bdev_set_opts`):
//!
//! - `bdev_io_pool_size`: the most I/O objects all threads together may create (SPDK's global
//!   `bdev_io` pool). When it is used up, taking an object fails ([`crate::alloc_io`] answers
//!   `None`) and the submitter backs off as on NOMEM (stacked modules complete their parent
//!   with `IoStatus::NoMem`, which the bdev layer parks and retries).
//! - `bdev_io_cache_size`: the I/O objects each thread creates up front when its bdev state is
//!   set up (its first channel), SPDK's per-thread cache: a workload up to that depth never
//!   allocates one, even in its first burst. Beyond it a thread's pool grows on demand and keeps
//!   what it grew (the objects are not handed back to other threads).
//! - `iobuf_small_cache_size` / `iobuf_large_cache_size`: data buffers of each class
//!   ([`crate::buf`]) a thread keeps in its cache when it returns them, SPDK's per-thread
//!   iobuf cache of the bdev layer. As in SPDK a cache is filled by returns; unlike SPDK it is
//!   not filled up front, so a size larger than the pool cannot fail a thread's start (a
//!   thread caches only while the global queue holds at least half of the class, see
//!   [`crate::buf::DmaBuf`]'s drop).
//!
//! As in SPDK they apply before the bdev layer is used: the RPC is allowed in the startup state
//! only, and [`set_options`] refuses a change once any thread has set up its bdev state (its
//! first I/O channel), naming the option. Setting the current values again is accepted.
//!
//! Thread contract: [`set_options`] and [`options`] may be called from any thread; the rest is
//! called by the bdev layer on lightweight threads when their state is set up or torn down and
//! when a pool grows (never per I/O in steady state).

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::{BdevError, ErrorKind, Result};

/// SPDK's default `bdev_io_pool_size`.
pub const DEFAULT_IO_POOL_SIZE: u32 = 65_535;
/// SPDK's default `bdev_io_cache_size`.
pub const DEFAULT_IO_CACHE_SIZE: u32 = 256;
/// Largest `bdev_io_pool_size` accepted (a limit on everything: 16 Mi objects).
pub const MAX_IO_POOL_SIZE: u32 = 1 << 24;
/// Largest `bdev_io_cache_size` accepted: what one thread may have out at once.
pub const MAX_IO_CACHE_SIZE: u32 = crate::thread::MAX_IOS_PER_THREAD as u32;
/// SPDK's default `iobuf_small_cache_size`.
pub const DEFAULT_IOBUF_SMALL_CACHE_SIZE: u32 = 128;
/// SPDK's default `iobuf_large_cache_size`.
pub const DEFAULT_IOBUF_LARGE_CACHE_SIZE: u32 = 16;
/// Largest iobuf cache size accepted (the most buffers a class may have).
pub const MAX_IOBUF_CACHE_SIZE: u32 = crate::buf::MAX_BUF_COUNT as u32;

/// The options of the bdev layer (SPDK's `spdk_bdev_opts`, the fields Ferrite implements).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BdevOptions {
    /// Most I/O objects all threads together may create.
    pub bdev_io_pool_size: u32,
    /// I/O objects each thread creates when its bdev state is set up.
    pub bdev_io_cache_size: u32,
    /// Small data buffers each thread keeps when it returns them.
    pub iobuf_small_cache_size: u32,
    /// Large data buffers each thread keeps when it returns them.
    pub iobuf_large_cache_size: u32,
}

impl Default for BdevOptions {
    fn default() -> Self {
        Self {
            bdev_io_pool_size: DEFAULT_IO_POOL_SIZE,
            bdev_io_cache_size: DEFAULT_IO_CACHE_SIZE,
            iobuf_small_cache_size: DEFAULT_IOBUF_SMALL_CACHE_SIZE,
            iobuf_large_cache_size: DEFAULT_IOBUF_LARGE_CACHE_SIZE,
        }
    }
}

struct State {
    opts: BdevOptions,
    /// Threads that have set up their bdev state and not torn it down yet.
    threads: usize,
    /// A thread has set up its bdev state: the options are fixed from then on.
    started: bool,
}

static STATE: Mutex<State> = Mutex::new(State {
    opts: BdevOptions {
        bdev_io_pool_size: DEFAULT_IO_POOL_SIZE,
        bdev_io_cache_size: DEFAULT_IO_CACHE_SIZE,
        iobuf_small_cache_size: DEFAULT_IOBUF_SMALL_CACHE_SIZE,
        iobuf_large_cache_size: DEFAULT_IOBUF_LARGE_CACHE_SIZE,
    },
    threads: 0,
    started: false,
});

/// `bdev_io_pool_size`, read where a pool grows (without the lock).
static POOL_LIMIT: AtomicU32 = AtomicU32::new(DEFAULT_IO_POOL_SIZE);
/// I/O objects created by all threads whose state still exists.
static CREATED: AtomicUsize = AtomicUsize::new(0);
/// The iobuf cache sizes (small, large), read where a buffer is returned (without the lock).
static IOBUF_CACHE: [AtomicU32; 2] = [
    AtomicU32::new(DEFAULT_IOBUF_SMALL_CACHE_SIZE),
    AtomicU32::new(DEFAULT_IOBUF_LARGE_CACHE_SIZE),
];

fn state() -> std::sync::MutexGuard<'static, State> {
    // A panic while holding it cannot leave the plain values inconsistent.
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// The current options.
pub fn options() -> BdevOptions {
    state().opts
}

/// Checks `o` against the bounds: each within its limit, and the pool large enough for the
/// cache of the app thread and one more thread (SPDK requires the cache of every thread plus
/// one; at start-up it has its app thread only).
pub fn validate(o: &BdevOptions) -> Result<()> {
    let inval = |m: String| Err(BdevError::new(ErrorKind::InvalidArgument, m));
    if o.bdev_io_pool_size == 0 || o.bdev_io_pool_size > MAX_IO_POOL_SIZE {
        return inval(format!(
            "bdev_io_pool_size {} is out of range (1..={MAX_IO_POOL_SIZE})",
            o.bdev_io_pool_size
        ));
    }
    if o.bdev_io_cache_size > MAX_IO_CACHE_SIZE {
        return inval(format!(
            "bdev_io_cache_size {} is out of range (0..={MAX_IO_CACHE_SIZE})",
            o.bdev_io_cache_size
        ));
    }
    for (name, v) in [
        ("iobuf_small_cache_size", o.iobuf_small_cache_size),
        ("iobuf_large_cache_size", o.iobuf_large_cache_size),
    ] {
        if v > MAX_IOBUF_CACHE_SIZE {
            return inval(format!(
                "{name} {v} is out of range (0..={MAX_IOBUF_CACHE_SIZE})"
            ));
        }
    }
    let min_pool = u64::from(o.bdev_io_cache_size) * 2;
    if u64::from(o.bdev_io_pool_size) < min_pool {
        return inval(format!(
            "bdev_io_pool_size {} is too small for bdev_io_cache_size {}: it must be at least \
             {min_pool} (the cache of two threads)",
            o.bdev_io_pool_size, o.bdev_io_cache_size
        ));
    }
    Ok(())
}

/// Sets the options. Fails with `InvalidArgument` naming the option when out of bounds, and
/// with `Busy` naming the option when it would change after a thread has set up its bdev state
/// (SPDK applies them at subsystem init; they cannot change under running I/O channels).
pub fn set_options(o: &BdevOptions) -> Result<()> {
    validate(o)?;
    let mut s = state();
    if s.started && s.opts != *o {
        let name = changed_option(&s.opts, o);
        return Err(BdevError::new(
            ErrorKind::Busy,
            format!(
                "cannot change {name}: I/O channels already exist (set it before \
                 framework_start_init)"
            ),
        ));
    }
    s.opts = *o;
    POOL_LIMIT.store(o.bdev_io_pool_size, Ordering::Relaxed);
    IOBUF_CACHE[0].store(o.iobuf_small_cache_size, Ordering::Relaxed);
    IOBUF_CACHE[1].store(o.iobuf_large_cache_size, Ordering::Relaxed);
    Ok(())
}

/// The name of the first option that differs between `a` and `b` (they differ).
fn changed_option(a: &BdevOptions, b: &BdevOptions) -> &'static str {
    if a.bdev_io_pool_size != b.bdev_io_pool_size {
        "bdev_io_pool_size"
    } else if a.bdev_io_cache_size != b.bdev_io_cache_size {
        "bdev_io_cache_size"
    } else if a.iobuf_small_cache_size != b.iobuf_small_cache_size {
        "iobuf_small_cache_size"
    } else {
        "iobuf_large_cache_size"
    }
}

/// Data buffers of `class` (0 small, 1 large) a thread may keep in its cache: one atomic load,
/// where a buffer is returned.
#[inline]
pub(crate) fn iobuf_cache_size(class: u8) -> usize {
    IOBUF_CACHE[usize::from(class & 1)].load(Ordering::Relaxed) as usize
}

/// A thread sets up its bdev state: fixes the options and returns how many I/O objects it
/// should create up front (its cache, as far as the pool allows; counted as created).
pub(crate) fn thread_started() -> usize {
    let mut s = state();
    s.started = true;
    s.threads += 1;
    let want = s.opts.bdev_io_cache_size as usize;
    let limit = s.opts.bdev_io_pool_size as usize;
    let mut got = 0;
    let _ = CREATED.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
        got = want.min(limit.saturating_sub(c));
        Some(c + got)
    });
    got
}

/// A thread's bdev state is torn down with `created` objects it had created.
pub(crate) fn thread_stopped(created: usize) {
    let mut s = state();
    s.threads = s.threads.saturating_sub(1);
    let _ = CREATED.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
        Some(c.saturating_sub(created))
    });
}

/// Counts one more I/O object against the pool; false when the pool is used up.
pub(crate) fn try_create() -> bool {
    let limit = POOL_LIMIT.load(Ordering::Relaxed) as usize;
    CREATED
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
            (c < limit).then_some(c + 1)
        })
        .is_ok()
}

/// The `bdev_set_options` entry of the bdev subsystem's `save_config` output, when the options
/// differ from SPDK's defaults (a configuration saved with the defaults stays as it was).
pub(crate) fn config_entry() -> Option<serde_json::Value> {
    let o = options();
    (o != BdevOptions::default()).then(|| {
        serde_json::json!({
            "method": "bdev_set_options",
            "params": {
                "bdev_io_pool_size": o.bdev_io_pool_size,
                "bdev_io_cache_size": o.bdev_io_cache_size,
                "bdev_auto_examine": true,
                "iobuf_small_cache_size": o.iobuf_small_cache_size,
                "iobuf_large_cache_size": o.iobuf_large_cache_size,
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pool: u32, cache: u32) -> BdevOptions {
        BdevOptions {
            bdev_io_pool_size: pool,
            bdev_io_cache_size: cache,
            ..BdevOptions::default()
        }
    }

    #[test]
    fn bounds_name_the_option() {
        assert!(validate(&BdevOptions::default()).is_ok());
        assert!(validate(&opts(1, 0)).is_ok());
        let msg = |o| validate(&o).unwrap_err().to_string();
        assert!(msg(opts(0, 0)).starts_with("bdev_io_pool_size 0 is out of range"));
        assert!(msg(opts(MAX_IO_POOL_SIZE + 1, 1)).starts_with("bdev_io_pool_size"));
        assert!(msg(opts(MAX_IO_POOL_SIZE, MAX_IO_CACHE_SIZE + 1))
            .starts_with("bdev_io_cache_size 65537 is out of range"));
        let m = msg(opts(511, 256));
        assert!(
            m.contains("bdev_io_pool_size 511 is too small for bdev_io_cache_size 256")
                && m.contains("at least 512"),
            "{m}"
        );
        assert_eq!(
            validate(&opts(511, 256)).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }
}
