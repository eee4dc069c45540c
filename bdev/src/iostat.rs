//! Summing per-channel statistics across threads (`bdev_get_iostat`).

use std::sync::{Arc, Mutex};

use crate::bdev::Bdev;
use crate::stats::IoStats;

/// Sums the statistics of every channel of `bdev` (visiting each holding thread), plus those
/// of channels already closed, and calls `done` with the total and the per-thread figures of
/// the open channels `(thread id, stats)`, on the calling thread. Must be called on a
/// lightweight thread.
pub fn collect_iostat(
    bdev: &Arc<Bdev>,
    done: impl FnOnce(IoStats, Vec<(u64, IoStats)>) + Send + 'static,
) {
    let acc: Arc<Mutex<Vec<(u64, IoStats)>>> = Arc::new(Mutex::new(Vec::new()));
    let a = acc.clone();
    let b = bdev.clone();
    let r = bdev.device.for_each_channel(
        move |ctx| {
            if let Some(s) = ctx.state() {
                let tid = ferrite_reactor::current().map(|t| t.id()).unwrap_or(0);
                if let Ok(mut v) = a.lock() {
                    v.push((tid, s.with_stats(|st| *st)));
                }
            }
        },
        move || {
            let per = acc.lock().map(|v| v.clone()).unwrap_or_default();
            let mut total = b.retired_stats.lock().map(|r| *r).unwrap_or_default();
            for (_, s) in &per {
                total.add(s);
            }
            done(total, per)
        },
    );
    if let Err(e) = r {
        tracing::error!("iostat of bdev '{}' could not start: {e}", bdev.name());
    }
}

/// Resets statistics on every channel (and those kept from closed channels): everything
/// (`maxmin_only == false`) or only the max/min latencies. `done` runs on the calling thread.
pub fn reset_iostat(bdev: &Arc<Bdev>, maxmin_only: bool, done: impl FnOnce() + Send + 'static) {
    if let Ok(mut r) = bdev.retired_stats.lock() {
        if maxmin_only {
            r.reset_maxmin();
        } else {
            *r = IoStats::default();
        }
    }
    let r = bdev.device.for_each_channel(
        move |ctx| {
            if let Some(s) = ctx.state() {
                s.with_stats(|st| {
                    if maxmin_only {
                        st.reset_maxmin();
                    } else {
                        *st = IoStats::default();
                    }
                });
            }
        },
        done,
    );
    if let Err(e) = r {
        tracing::error!(
            "iostat reset of bdev '{}' could not start: {e}",
            bdev.name()
        );
    }
}
