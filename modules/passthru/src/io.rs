//! The passthru data path: forward each I/O to the base bdev's channel on the same thread, as
//! the same I/O object (the bdev layer's forwarding fast path).

use ferrite_bdev::{BackendChannel, BdevChannel, BdevIo, IoStatus};

/// Per-thread channel: holds this thread's channel to the base bdev (created with ours,
/// dropped with ours).
pub(crate) struct PassthruChannel {
    pub(crate) base: Option<BdevChannel>,
}

impl BackendChannel for PassthruChannel {
    /// Every I/O goes to the base unchanged: the bdev layer takes the base channel and
    /// forwards itself (no call into this module per I/O). `submit` below is then only
    /// reached when the base channel could not be created.
    fn forward_all(&mut self) -> Option<BdevChannel> {
        self.base.take()
    }

    #[inline]
    fn submit(&mut self, io: Box<BdevIo>) {
        let Some(base) = &self.base else {
            // The base channel could not be created (base going away): fail, never hang.
            return io.complete(IoStatus::Failed);
        };
        // Same range on the base. The base's bdev layer accounts it as its own I/O; its
        // completion comes straight back through ours (statistics on both bdevs, one
        // completion-queue hop). A module that must see the result first (to translate a
        // status, retry elsewhere, or release resources) uses `forward_with` and a hook.
        let off = io.offset_blocks();
        base.forward(io, off);
    }
}
