//! The malloc data path: copy between the I/O's segments and the bdev's memory.

use std::sync::Arc;

use ferrite_bdev::{BackendChannel, BdevIo, IoStatus, IoType};

use crate::mem::Mem;

pub(crate) struct MallocChannel {
    pub(crate) mem: Arc<Mem>,
}

impl BackendChannel for MallocChannel {
    #[inline]
    fn submit(&mut self, io: Box<BdevIo>) {
        let bs = io.block_size() as usize;
        let off = io.offset_blocks() as usize * bs;
        let len = io.num_blocks() as usize * bs;
        match io.io_type() {
            IoType::Read => self.mem.read_into(off, io.iovs()),
            IoType::Write => self.mem.write_from(off, io.iovs()),
            IoType::Unmap | IoType::WriteZeroes => self.mem.zero(off, len),
            IoType::Flush | IoType::Reset => {}
            _ => return io.complete(IoStatus::Failed),
        }
        io.complete(IoStatus::Success);
    }
}
