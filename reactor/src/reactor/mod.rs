//! Reactors: one pinned OS thread per core of the mask, each polling its lightweight threads
//! and sleeping on epoll when they are all idle (adaptive and interrupt modes).
//!
//! - `config`: poll modes and the runtime configuration;
//! - `shared`: the state of reactors and of the runtime that other threads read or signal,
//!   and thread placement;
//! - `runtime`: [`Runtime`], starting and stopping the reactors;
//! - `event_loop`: one reactor's loop (polling, adopting and handing over threads, fds);
//! - `sleep`: the sleep protocol.

mod config;
mod event_loop;
mod runtime;
mod shared;
mod sleep;

pub use config::{PollMode, RuntimeConfig, MAX_SLEEP_MS_LIMIT};
pub use runtime::{ReactorInfo, Runtime};
