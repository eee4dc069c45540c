//! Bdev modules: examine hooks and module-level configuration.

use std::sync::atomic::Ordering;
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
