//! The bdev backend of an online raid bdev.

use super::*;

/// The backend of one online raid bdev.
pub(super) struct RaidBackend {
    pub(super) raid: Arc<Raid>,
    pub(super) device: IoDevice<ChanCtx>,
    pub(super) unmap: bool,
    pub(super) flush: bool,
    pub(super) write_zeroes: bool,
}

/// The channel of a thread that could not get the raid's state (device going away).
struct DeadChannel;

impl BackendChannel for DeadChannel {
    fn submit(&mut self, io: Box<BdevIo>) {
        io.complete(IoStatus::Failed);
    }
}

impl BdevBackend for RaidBackend {
    fn module_name(&self) -> &'static str {
        "raid"
    }

    /// Reads and writes always; unmap, flush and write-zeroes when every member takes them
    /// (never for raid5f). Reset and abort are the bdev layer's (drain), compare and
    /// compare-and-write are emulated by it with reads.
    fn io_type_supported(&self, t: IoType) -> bool {
        match t {
            IoType::Read | IoType::Write => true,
            IoType::Unmap => self.unmap,
            IoType::Flush => self.flush,
            IoType::WriteZeroes => self.write_zeroes,
            _ => false,
        }
    }

    fn create_channel(&self) -> Box<dyn BackendChannel> {
        match self.device.get_channel() {
            Ok(ctx) => Box::new(RaidChannel::new(ctx)),
            Err(e) => {
                tracing::warn!(
                    "raid '{}': no channel state on this thread: {e}",
                    self.raid.name
                );
                Box::new(DeadChannel)
            }
        }
    }

    fn destruct(&self) {
        on_destruct(&self.raid);
    }

    fn driver_specific(&self) -> Option<(&'static str, Value)> {
        Some(("raid", info_json(&self.raid, false)))
    }

    fn config_entry(&self, _bdev: &Bdev) -> Option<Value> {
        config_entry(&self.raid)
    }
}
