//! The virtio-user bdev: a vhost-user-blk frontend (the driver side), as SPDK's bdev_virtio
//! with trtype `user`. A bdev backed by any vhost-user-blk server (Ferrite's own target,
//! SPDK's, qemu-storage-daemon's export), which lets `ferrite bench` measure a vhost-user
//! target without a guest.
//!
//! - `frontend.rs`: the handshake (rust-vmm `vhost` `Frontend`): features, GET_CONFIG sized to
//!   `struct virtio_blk_config`, SET_MEM_TABLE with one memfd, the virtqueues.
//! - `mem.rs`: the shared memfd (hugetlb when available).
//! - `ring.rs`: our driver-side split ring (descriptors, available/used rings, EVENT_IDX).
//! - `queue.rs`: a virtqueue with its request slots and bounce buffers.
//! - `io.rs`: the per-thread channel (one virtqueue each) and its poller.
//! - `timeout.rs`: the optional request timeout (`timeout_us`), a timed poller per channel.
//! - `control.rs`: attach/detach, the bdev, the monitor thread; `rpc.rs`: the RPC methods.
//!
//! Thread contract: control functions run on the app thread; the data path on the thread
//! owning the channel.

mod control;
mod frontend;
mod io;
mod mem;
mod queue;
mod ring;
mod rpc;
mod timeout;

pub use control::{
    attach, detach, list, AttachOpts, VirtioModule, DEFAULT_VQ_COUNT, DEFAULT_VQ_SIZE,
};
pub use frontend::{BlkConfig, CONFIG_LEN};
pub use rpc::register_rpcs;
pub use timeout::MAX_TIMEOUT_US;
