//! The passthru data path: forward each I/O to the base bdev's channel on the same thread.

use ferrite_bdev::{BackendChannel, BdevChannel, BdevIo, IoStatus};

/// Per-thread channel: holds this thread's channel to the base bdev (created with ours,
/// dropped with ours).
pub(crate) struct PassthruChannel {
    pub(crate) base: Option<BdevChannel>,
}

impl BackendChannel for PassthruChannel {
    #[inline]
    fn submit(&mut self, parent: Box<BdevIo>) {
        let Some(base) = &self.base else {
            // The base channel could not be created (base going away): fail, never hang.
            return parent.complete(IoStatus::Failed);
        };
        let Some(mut child) = base.alloc_io() else {
            // Out of I/O objects: the bdev layer parks the parent and resubmits it later.
            return parent.complete(IoStatus::NoMem);
        };
        child.forward(parent, child_done);
        base.submit(child);
    }
}

/// Completion of the child on the base: give its status to the parent, recycle the child.
fn child_done(mut child: Box<BdevIo>) {
    let status = child.status();
    let parent = child.take_parent();
    if let Some(mut parent) = parent {
        // Our completion time is the base's: no second clock read per layer.
        parent.inherit_completion_time(&child);
        ferrite_bdev::free_io(child);
        parent.complete(status);
    } else {
        ferrite_bdev::free_io(child);
    }
}
