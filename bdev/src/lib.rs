//! Ferrite's block device layer.
//!
//! - [`register`] a bdev (a [`BdevBackend`] plus [`BdevProps`]); modules ([`BdevModule`]) examine
//!   and may claim it.
//! - [`Desc::open`] it, [`Desc::claim`] it, get a per-thread [`BdevChannel`] with
//!   [`Desc::channel`], take a [`BdevIo`] from the thread's pool ([`alloc_io`]), prepare it and
//!   [`BdevChannel::submit`] it. The callback gets it back on the same thread, always after
//!   `submit` returned; give it back with [`free_io`].
//! - The generic layer validates, accounts statistics per channel, supplies read buffers from
//!   the DMA pool ([`buf`]), splits on the optimal I/O boundary, emulates what a backend lacks,
//!   parks I/O on resource exhaustion and retries it, and drains channels for reset.

pub mod bdev;
pub mod buf;
mod buf_map;
pub mod buf_rpc;
mod buf_stats;
mod channel;
pub mod config;
mod desc;
mod emulate;
mod error;
mod forward;
mod forward_refuse;
mod held;
mod held_threads;
mod io;
mod iolist;
mod iostat;
pub mod mmap;
mod module;
pub mod options;
pub mod quiesce;
mod registry;
pub mod rpc;
mod spare;
mod split;
pub mod stats;
mod stripe;
#[cfg(feature = "testing")]
pub mod testing;
mod thread;
pub mod types;
pub mod uuid;
mod write_mark;

pub use bdev::{BackendChannel, Bdev, BdevBackend, BdevProps};
pub use buf::DmaBuf;
pub use channel::{restamp, BdevChannel};
pub use desc::Desc;
pub use error::{BdevError, ErrorKind, Result};
pub use held::{set_held_io, set_held_io_bases, AbortTarget, HeldIo};
pub use held_threads::HolderThreads;
pub use io::{BdevIo, ForwardDone, IoCallback, IoVec, MAX_FORWARD_DEPTH};
pub use iostat::{collect_iostat, reset_iostat};
pub use module::{BdevModule, ExamineDone, ExamineHold};
pub use options::{set_options, BdevOptions};
pub use registry::{
    add_alias, list, lookup, modules, register, register_module, unregister, unregister_all,
    unregister_bdev, wait_for_examine, MAX_NAME_LEN,
};
pub use split::MAX_SPLIT_CHILDREN;
pub use stripe::StripeMap;
pub use thread::{alloc_io, free_io, ios_allocated, MAX_IOS_PER_THREAD};
pub use types::{BdevEvent, ClaimKind, DeviceStatus, IoStatus, IoType};
pub use write_mark::WriteMark;
