//! Ferrite's reactor: pinned reactor threads polling lightweight threads, lock-free messages,
//! pollers with adaptive sleep, and per-thread I/O channels.
//!
//! # Threading model
//! - A [`Runtime`] starts one reactor (OS thread, pinned) per core of a [`CpuMask`].
//! - Each reactor polls a list of lightweight threads ([`ThreadHandle`]); a lightweight thread
//!   is only ever polled by one reactor at a time and may move between polls.
//! - Code runs on a lightweight thread through messages ([`ThreadHandle::send`]) and pollers
//!   ([`register_poller`]). Per-thread state lives in I/O channels ([`IoDevice`]) and typed
//!   locals ([`with_local`]); everything a thread owns is `Send` so it can move.
//! - The [`harness::Harness`] drives threads deterministically from one OS thread for tests.

pub mod alloc_count;
mod channel;
pub mod clock;
pub mod cpumask;
mod error;
pub mod harness;
mod local;
mod poller;
mod reactor;
mod sys;
mod thread;

pub use channel::{ForEachCont, IoChannel, IoDevice};
pub use cpumask::CpuMask;
pub use error::{ErrorKind, ReactorError, Result};
pub use local::{with_local, LocalKey, MAX_LOCAL_KEYS};
pub use poller::{Poll, PollerHandle, PollerStats};
pub use reactor::{PollMode, ReactorInfo, Runtime, RuntimeConfig, MAX_SLEEP_MS_LIMIT};
pub use thread::{
    current, current_id, exit_current, now, pin_to_reactor, poller_stats, register_fd,
    register_poller, register_poller_obj, spawn_thread, FdRegistration, Msg, ReactorPin,
    ThreadHandle, DEFAULT_QUEUE_DEPTH, MSG_BATCH,
};
