//! Device-side virtqueues for Ferrite's vhost-user targets: split and packed rings, validated
//! descriptor chains, used-ring publication with EVENT_IDX / event suppression, notification
//! enable/disable without lost wake-ups, and inflight tracking in the shared-memory region of
//! VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD so that a restarted backend resubmits what was in
//! flight when it crashed.
//!
//! # Thread contract
//! A [`Vring`] is owned by one reactor thread: every method takes `&mut self` and is called on
//! that thread; nothing here blocks, locks, allocates per request or makes a system call.
//! The [`GuestMemory`] passed to each call is the current memory table (from
//! VHOST_USER_SET_MEM_TABLE); a Vring keeps no pointer into it between calls, so the caller
//! may swap tables between calls. A [`PopBatch`] keeps what the pops of one batch found in a
//! table and borrows that table for its life. An [`InflightRegion`] may be created on one thread and its
//! [`InflightQueue`]s handed to the reactor threads owning the rings (they are `Send`); each
//! queue's part of the region must be attached to one Vring at a time.
//!
//! # Hostile guests
//! Everything read from guest memory (descriptors, indices, indirect tables) and from the
//! inflight region is validated; every access goes through vm-memory's checked accessors, so
//! a guest can make a request fail ([`ChainDefect`]) or the ring broken
//! ([`ErrorKind::Broken`]), never make this crate panic, loop or touch memory outside the
//! guest's regions.
//!
//! # Testing
//! `tests/` drives real rings in a `GuestMemoryMmap` with driver-side doubles; the feature
//! `fault-injection` (enabled for the crate's own tests) lets them stop a ring at a chosen
//! step as a crash would. A libFuzzer target lives in `vhost/ring/fuzz` (its own workspace,
//! not built by CI): `cargo install cargo-fuzz && cd vhost/ring && cargo +nightly fuzz run
//! ring -- -max_total_time=60`.
//!
//! # Addresses
//! All ring addresses are guest physical addresses. vhost-user's SET_VRING_ADDR carries
//! front-end user addresses: the caller translates them through the memory table first.

mod batch;
mod chain;
mod error;
mod inflight;
mod mem;
mod packed;
mod split;
mod vring;
mod walk;

pub use vm_memory;

pub use batch::PopBatch;
pub use chain::{Chain, Segment, MAX_SEGS};
pub use error::{ChainDefect, ErrorKind, RingError};
pub use inflight::{inflight_queue_size, InflightQueue, InflightRegion};
pub use vring::{CrashPoint, RingAddrs, RingBase, RingConfig, Vring};

/// Guest memory as this crate reads it: built by the vhost-user target from the regions of
/// VHOST_USER_SET_MEM_TABLE (each region an mmap of the fd the front-end sent).
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;

/// Largest queue size accepted (the virtio limit for packed rings; split rings must also be a
/// power of two).
pub const MAX_QUEUE_SIZE: u16 = 32768;

#[cfg(test)]
mod tests {
    // Test code: a failed unwrap is a failed test.
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn send<T: Send>() {}

    /// A ring and its region part move to the reactor thread that owns them.
    #[test]
    fn handles_are_send() {
        send::<Vring>();
        send::<InflightQueue>();
        send::<InflightRegion>();
        send::<Chain>();
    }

    #[test]
    fn ring_base_encoding() {
        assert_eq!(
            RingBase::initial(true),
            RingBase {
                avail: 0x8000,
                used: 0x8000
            }
        );
        assert_eq!(RingBase::initial(false), RingBase { avail: 0, used: 0 });
        let b = RingBase {
            avail: 0x8003,
            used: 0x0002,
        };
        assert_eq!(b.to_vhost(true), 0x0002_8003);
        assert_eq!(RingBase::from_vhost(0x0002_8003, true), b);
        assert_eq!(RingBase { avail: 7, used: 9 }.to_vhost(false), 7);
    }

    #[test]
    fn error_kinds() {
        let e = RingError::Chain {
            id: 3,
            defect: ChainDefect::Loop,
            status: None,
        };
        assert_eq!(e.kind(), ErrorKind::Chain);
        assert_eq!(e.chain_defect(), Some(ChainDefect::Loop));
        assert_eq!(e.status_hint(), None);
        assert_eq!(e.to_string(), "queue chain 3: descriptor chain loops");
        assert_eq!(RingError::Broken("x").kind(), ErrorKind::Broken);
        assert_eq!(RingError::Broken("x").chain_defect(), None);
    }

    #[test]
    fn queue_region_sizes() {
        assert_eq!(inflight_queue_size(128, false), 16 + 16 * 128 + 48);
        assert_eq!(inflight_queue_size(256, true), 32 + 32 * 256 + 32);
        assert_eq!(inflight_queue_size(1, false) % 64, 0);
    }
}
