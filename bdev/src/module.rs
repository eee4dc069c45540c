//! Bdev modules: examine hooks and module-level configuration.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use serde_json::Value;

use crate::bdev::Bdev;

/// A module that creates bdevs and may examine (and claim) others as they appear.
///
/// Thread contract: the hooks run on the thread that registered the bdev (a lightweight
/// thread, normally the app thread), before `register` returns for `examine_config`.
pub trait BdevModule: Send + Sync + 'static {
    /// Module name.
    fn name(&self) -> &'static str;
    /// Synchronous look at a new bdev (decide from configuration whether to claim it).
    fn examine_config(&self, _bdev: &Arc<Bdev>) {}
    /// Asynchronous look (may read the bdev). Finish `done` when finished (dropping it also
    /// finishes). Only called when no module claimed the bdev in `examine_config`.
    fn examine_disk(&self, _bdev: &Arc<Bdev>, done: ExamineDone) {
        done.finish();
    }
    /// Module-level `save_config` entries (options, configured-but-not-yet-attached bdevs).
    fn config_json(&self) -> Vec<Value> {
        Vec::new()
    }
    /// Examine has *settled*: someone waits for it ([`crate::wait_for_examine`]: the end of a
    /// configuration load, the `bdev_wait_for_examine` RPC) and no examine is in progress. A
    /// module may now act on what did not appear (the raid module starts a raid degraded
    /// when a member it expected is still missing). Work it starts asynchronously holds the
    /// waiters back with an [`ExamineHold`]; bdevs it registers hold them through their own
    /// examine. May be called several times (each settle with waiters): it must be idempotent.
    ///
    /// Thread contract: runs on the thread whose call settled examine (the app thread when
    /// examine hooks and `wait_for_examine` are used from it, as everywhere in Ferrite).
    fn examine_settled(&self) {}
}

/// Counts as an examine in progress until dropped (see [`BdevModule::examine_settled`]).
///
/// Thread contract: taken and dropped on any thread; the drop of the last hold runs the
/// settle (modules' hooks, then the `wait_for_examine` waiters) on the dropping thread, so
/// drop it on the app thread.
pub struct ExamineHold(());

static HOLDS: AtomicU32 = AtomicU32::new(0);

impl ExamineHold {
    /// Takes a hold: `wait_for_examine` waiters wait until it is dropped.
    pub fn new() -> ExamineHold {
        HOLDS.fetch_add(1, Ordering::AcqRel);
        ExamineHold(())
    }

    /// Number of holds taken and not yet dropped.
    pub(crate) fn count() -> u32 {
        HOLDS.load(Ordering::Acquire)
    }
}

impl Default for ExamineHold {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ExamineHold {
    fn drop(&mut self) {
        if HOLDS.fetch_sub(1, Ordering::AcqRel) == 1 {
            crate::registry::examine_finished();
        }
    }
}

/// Marks one module's examine of one bdev finished, on `finish` or drop.
pub struct ExamineDone {
    pub(crate) bdev: Option<Arc<Bdev>>,
}

impl ExamineDone {
    /// Finishes the examine.
    pub fn finish(mut self) {
        self.done();
    }

    fn done(&mut self) {
        if let Some(b) = self.bdev.take() {
            if b.examine_pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                crate::registry::examine_finished();
            }
        }
    }
}

impl Drop for ExamineDone {
    fn drop(&mut self) {
        self.done();
    }
}
