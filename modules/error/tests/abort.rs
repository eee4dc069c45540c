//! An ABORT naming an I/O the error bdev holds (`pending`): the bdev layer asks the module
//! (`HeldIo::abort`), which completes that I/O Aborted, and the abort succeeds; the others
//! stay held until a reset or a clear. An abort naming an I/O that is not held, or held for
//! another channel, fails. Through a passthru stacked on the error bdev too.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ferrite_bdev::IoStatus;
use ferrite_error::{ErrorType, InjectIoType, InjectOpts};

fn pending(env: &mut Env, bdev: &str, io_type: InjectIoType, num: u32) {
    let o = InjectOpts {
        io_type,
        error_type: ErrorType::Pending,
        num,
        queue_depth: 0,
        corrupt_offset: 0,
        corrupt_value: 0,
    };
    let name = bdev.to_string();
    env.app(|| ferrite_error::inject_error(&name, &o)).unwrap();
    env.run();
}

fn abort(env: &mut Env, tag: u64) -> u64 {
    env.submit(|io| {
        io.prep_abort(tag, record);
    })
}

#[test]
fn abort_of_a_pending_io_aborts_only_it() {
    let mut env = Env::error_on_malloc(131, "ErrA1", 64);
    pending(&mut env, "EE_ErrA1", InjectIoType::Read, 3);
    let r: Vec<u64> = (0..3).map(|i| env.read(i, 1)).collect();
    env.run();
    assert_eq!(env.inflight(), 3);
    let a = abort(&mut env, r[1]);
    env.run();
    assert_eq!(env.status(r[1]), Some(IoStatus::Aborted));
    assert_eq!(env.status(a), Some(IoStatus::Success));
    assert_eq!((env.status(r[0]), env.status(r[2])), (None, None));
    assert_eq!(env.inflight(), 2);
    // Naming it again, or an I/O that completed, or nothing at all: the abort fails.
    let w = env.write(9, 1, 3);
    env.run();
    assert_eq!(env.status(w), Some(IoStatus::Success));
    let fails: Vec<u64> = [r[1], w, 0xdead]
        .iter()
        .map(|&t| abort(&mut env, t))
        .collect();
    env.run();
    for &f in &fails {
        assert_eq!(env.status(f), Some(IoStatus::Failed));
    }
    assert_eq!(env.inflight(), 2);
    // A reset releases the others (failed, as SPDK's error bdev on reset).
    let reset = env.submit(|io| {
        io.prep_reset(record);
    });
    env.run();
    assert_eq!(env.status(r[0]), Some(IoStatus::Failed));
    assert_eq!(env.status(r[2]), Some(IoStatus::Failed));
    assert_eq!(env.status(reset), Some(IoStatus::Success));
    for &t in r.iter().chain([a, reset].iter()) {
        assert_eq!(env.calls(t), 1);
    }
    assert_eq!(env.inflight(), 0);
    env.close();
}

/// An abort only reaches I/O submitted on its own channel (as SPDK): the same tag held for
/// another thread's channel stays held.
#[test]
fn abort_does_not_reach_io_of_another_channel() {
    let mut env = Env::error_on_malloc(132, "ErrA2", 64);
    let u2 = env.second_user();
    pending(&mut env, "EE_ErrA2", InjectIoType::Flush, 1);
    let tag2 = (132u64 << 32) | 0xffff;
    u2.flush(&mut env, tag2);
    env.run();
    let a = abort(&mut env, tag2);
    env.run();
    assert_eq!(env.status(a), Some(IoStatus::Failed));
    assert_eq!(env.status(tag2), None);
    // A clear releases it.
    pending(&mut env, "EE_ErrA2", InjectIoType::Clear, 0);
    assert_eq!(env.status(tag2), Some(IoStatus::Aborted));
    assert_eq!(u2.inflight(&mut env), 0);
    u2.close(&mut env);
    env.close();
}

/// An abort submitted to a passthru stacked on the error bdev reaches the I/O held below it.
#[test]
fn abort_through_a_stacked_bdev_reaches_io_held_below() {
    let mut env = Env::passthru_on_error(133, "ErrA3", "PtErrA3");
    pending(&mut env, "EE_ErrA3", InjectIoType::Write, 2);
    let w: Vec<u64> = (0..2).map(|i| env.write(i, 1, 9)).collect();
    env.run();
    assert_eq!((env.status(w[0]), env.status(w[1])), (None, None));
    let a = abort(&mut env, w[0]);
    env.run();
    assert_eq!(env.status(w[0]), Some(IoStatus::Aborted));
    assert_eq!(env.status(a), Some(IoStatus::Success));
    assert_eq!(env.status(w[1]), None);
    let reset = env.submit(|io| {
        io.prep_reset(record);
    });
    env.run();
    assert_eq!(env.status(w[1]), Some(IoStatus::Failed));
    assert_eq!(env.status(reset), Some(IoStatus::Success));
    assert_eq!(env.inflight(), 0);
    env.close();
}
