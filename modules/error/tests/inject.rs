//! The error bdev on a malloc base, driven by the deterministic harness: every error type on
//! every I/O type with exact counts, `clear`, held I/O released by clear and by delete (each
//! callback exactly once, nothing left in flight), NOMEM retried to success, data corruption
//! at the exact byte on reads and in the base on writes, `queue_depth`, configuration before
//! the base exists, delete, the claim conflict, and the RPC methods' errors.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ferrite_bdev::{Desc, ErrorKind, IoStatus};
use ferrite_error::{ErrorType, InjectIoType, InjectOpts, SlotStatus};
use serde_json::json;

fn opts(io_type: InjectIoType, error_type: ErrorType, num: u32) -> InjectOpts {
    InjectOpts {
        io_type,
        error_type,
        num,
        queue_depth: 0,
        corrupt_offset: 0,
        corrupt_value: 0,
    }
}

fn inject(env: &mut Env, o: InjectOpts) {
    let name = env.bdev.clone();
    env.app(|| ferrite_error::inject_error(&name, &o)).unwrap();
    env.run();
}

fn slots(env: &mut Env) -> [SlotStatus; 4] {
    let name = env.bdev.clone();
    env.app(|| ferrite_error::injection_status(&name)).unwrap()
}

/// Submits one I/O of slot type `t` (0 read, 1 write, 2 unmap, 3 flush).
fn submit_type(env: &mut Env, t: usize, off: u64) -> u64 {
    match t {
        0 => env.read(off, 1),
        1 => env.write(off, 1, 0x42),
        2 => env.unmap(off, 1),
        _ => env.flush(off, 1),
    }
}

#[test]
fn failure_on_each_type_with_exact_count() {
    let mut env = Env::error_on_malloc(101, "ErrM1", 256);
    let types = [
        InjectIoType::Read,
        InjectIoType::Write,
        InjectIoType::Unmap,
        InjectIoType::Flush,
    ];
    for (t, io_type) in types.into_iter().enumerate() {
        inject(&mut env, opts(io_type, ErrorType::Failure, 2));
        let s = slots(&mut env);
        assert_eq!(s[t].remaining, 2);
        assert_eq!(s[t].error_type, Some(ErrorType::Failure));
        // Three of the targeted type, one of every other type: exactly two fail.
        let hit: Vec<u64> = (0..3).map(|i| submit_type(&mut env, t, i)).collect();
        let others: Vec<u64> = (0..4)
            .filter(|&o| o != t)
            .map(|o| submit_type(&mut env, o, 8))
            .collect();
        env.run();
        let st: Vec<IoStatus> = hit.iter().map(|&g| env.status(g).unwrap()).collect();
        assert_eq!(
            st,
            [IoStatus::Failed, IoStatus::Failed, IoStatus::Success],
            "{io_type:?}"
        );
        for o in others {
            assert_eq!(env.status(o), Some(IoStatus::Success), "{io_type:?}");
        }
        let s = slots(&mut env);
        assert_eq!(s[t].remaining, 0, "{io_type:?}");
        assert_eq!(s[t].injected, 2, "{io_type:?}");
    }
    // Types that cannot be targeted pass untouched even with `all` armed.
    inject(&mut env, opts(InjectIoType::All, ErrorType::Failure, 10));
    let wz = env.submit(|io| {
        io.prep_write_zeroes(0, 4, record);
    });
    env.run();
    assert_eq!(env.status(wz), Some(IoStatus::Success));
    inject(&mut env, opts(InjectIoType::Clear, ErrorType::Failure, 0));
    env.close();
}

#[test]
fn all_arms_each_type_and_clear_disarms() {
    let mut env = Env::error_on_malloc(102, "ErrM2", 256);
    inject(&mut env, opts(InjectIoType::All, ErrorType::Failure, 1));
    for s in slots(&mut env) {
        assert_eq!(s.remaining, 1);
    }
    // `num` counts per type: the first of each type fails, the second passes.
    let first: Vec<u64> = (0..4).map(|t| submit_type(&mut env, t, 0)).collect();
    env.run();
    let second: Vec<u64> = (0..4).map(|t| submit_type(&mut env, t, 1)).collect();
    env.run();
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(env.status(*a), Some(IoStatus::Failed));
        assert_eq!(env.status(*b), Some(IoStatus::Success));
    }
    // Re-armed, then cleared: nothing fails, every count is zero.
    inject(&mut env, opts(InjectIoType::All, ErrorType::Failure, 5));
    inject(&mut env, opts(InjectIoType::Clear, ErrorType::Failure, 0));
    for s in slots(&mut env) {
        assert_eq!(s.remaining, 0);
    }
    let after: Vec<u64> = (0..4).map(|t| submit_type(&mut env, t, 2)).collect();
    env.run();
    for g in after {
        assert_eq!(env.status(g), Some(IoStatus::Success));
    }
    env.close();
}

#[test]
fn pending_is_held_until_clear_then_aborted_once() {
    let mut env = Env::error_on_malloc(103, "ErrM3", 256);
    inject(&mut env, opts(InjectIoType::Read, ErrorType::Pending, 2));
    let r: Vec<u64> = (0..3).map(|i| env.read(i, 1)).collect();
    let w = env.write(9, 1, 7);
    env.run();
    // Two reads held, the third and the write went through.
    assert_eq!(env.status(r[0]), None);
    assert_eq!(env.status(r[1]), None);
    assert_eq!(env.status(r[2]), Some(IoStatus::Success));
    assert_eq!(env.status(w), Some(IoStatus::Success));
    assert_eq!(env.inflight(), 2);
    // Time passing and polling do not release them.
    for _ in 0..50 {
        env.h.advance_us(1000);
        env.h.poll_all();
    }
    assert_eq!(env.status(r[0]), None);
    // A new pending injection armed after them does not release them either.
    inject(&mut env, opts(InjectIoType::Write, ErrorType::Pending, 1));
    let w2 = env.write(10, 1, 8);
    env.run();
    assert_eq!(env.status(w2), None);
    assert_eq!(env.inflight(), 3);
    // Clear: each held I/O completes Aborted, its callback exactly once.
    inject(&mut env, opts(InjectIoType::Clear, ErrorType::Pending, 0));
    env.run();
    for g in [r[0], r[1], w2] {
        assert_eq!(env.status(g), Some(IoStatus::Aborted));
        assert_eq!(env.calls(g), 1);
    }
    assert_eq!(env.inflight(), 0);
    // Disarmed: the next read goes through.
    let r4 = env.read(0, 1);
    env.run();
    assert_eq!(env.status(r4), Some(IoStatus::Success));
    env.close();
}

#[test]
fn pending_on_two_threads_released_by_one_clear() {
    let mut env = Env::error_on_malloc(104, "ErrM4", 256);
    let u2 = env.second_user();
    inject(&mut env, opts(InjectIoType::Flush, ErrorType::Pending, 2));
    let f1 = env.flush(0, 8);
    let tag2 = (104u64 << 32) | 0xffff;
    u2.flush(&mut env, tag2);
    env.run();
    assert_eq!(env.status(f1), None);
    assert_eq!(env.status(tag2), None);
    inject(&mut env, opts(InjectIoType::Clear, ErrorType::Pending, 0));
    env.run();
    assert_eq!(env.status(f1), Some(IoStatus::Aborted));
    assert_eq!(env.status(tag2), Some(IoStatus::Aborted));
    assert_eq!(u2.inflight(&mut env), 0);
    u2.close(&mut env);
    env.close();
}

#[test]
fn pending_released_by_delete_and_bdev_goes() {
    let mut env = Env::error_on_malloc(105, "ErrM5", 256);
    inject(&mut env, opts(InjectIoType::Write, ErrorType::Pending, 3));
    let w: Vec<u64> = (0..2).map(|i| env.write(i, 1, 1)).collect();
    env.run();
    assert_eq!(env.inflight(), 2);
    let done = done_slot();
    let d = done.clone();
    env.app(move || {
        ferrite_error::delete("EE_ErrM5", move |r| {
            *d.lock().unwrap() = Some(r.map_err(|e| e.to_string()))
        })
    });
    env.run();
    // Released at once (Aborted, once each) although the user still has the bdev open.
    for g in &w {
        assert_eq!(env.status(*g), Some(IoStatus::Aborted));
        assert_eq!(env.calls(*g), 1);
    }
    assert_eq!(env.inflight(), 0);
    assert!(
        done.lock().unwrap().is_none(),
        "removal waits for the close"
    );
    env.close();
    assert_eq!(*done.lock().unwrap(), Some(Ok(())));
    assert!(ferrite_bdev::lookup("EE_ErrM5").is_none());
    // The claim is gone with it: the base opens for writing again.
    let base = env.h.on(USER, || Desc::open("ErrM5", true, |_| {}));
    assert!(base.is_ok(), "{base:?}");
    env.h.on(USER, move || drop(base));
    // Deleted means forgotten: nothing left to save.
    let saved: Vec<_> = ferrite_bdev::modules()
        .iter()
        .flat_map(|m| m.config_json())
        .filter(|e| e["params"]["base_name"] == "ErrM5")
        .collect();
    assert!(saved.is_empty(), "{saved:?}");
    env.run();
}

#[test]
fn pending_released_when_the_base_is_removed() {
    let mut env = Env::error_on_malloc(106, "ErrM6", 256);
    inject(&mut env, opts(InjectIoType::Read, ErrorType::Pending, 1));
    let r = env.read(0, 1);
    env.run();
    assert_eq!(env.status(r), None);
    let done = done_slot();
    let d = done.clone();
    env.app(move || {
        ferrite_malloc::delete("ErrM6", move |r| {
            *d.lock().unwrap() = Some(r.map_err(|e| e.to_string()))
        })
    });
    env.run();
    assert_eq!(env.status(r), Some(IoStatus::Aborted));
    env.close();
    assert_eq!(*done.lock().unwrap(), Some(Ok(())));
    assert!(ferrite_bdev::lookup("EE_ErrM6").is_none());
    assert!(ferrite_bdev::lookup("ErrM6").is_none());
}

#[test]
fn nomem_is_retried_until_num_is_used_up() {
    let mut env = Env::error_on_malloc(107, "ErrM7", 256);
    inject(&mut env, opts(InjectIoType::Write, ErrorType::Nomem, 3));
    let w = env.write(5, 2, 0x77);
    env.run();
    // The submitter never sees NOMEM: the bdev layer retried it three times.
    assert_eq!(env.status(w), Some(IoStatus::Success));
    let s = slots(&mut env);
    assert_eq!((s[1].remaining, s[1].injected), (0, 3));
    assert!(env.read_bdev("ErrM7", 5, 2).iter().all(|b| *b == 0x77));
    // Reads were never touched.
    assert_eq!(s[0].injected, 0);
    env.close();
}

#[test]
fn corrupt_data_on_read_flips_the_exact_byte() {
    let mut env = Env::error_on_malloc(108, "ErrM8", 256);
    let w = env.write(20, 4, 0x5a);
    env.run();
    assert_eq!(env.status(w), Some(IoStatus::Success));
    let mut o = opts(InjectIoType::Read, ErrorType::CorruptData, 1);
    o.corrupt_offset = 1000; // in the second block
    o.corrupt_value = 0x0f;
    inject(&mut env, o);
    let r1 = env.read(20, 4);
    env.run();
    let r2 = env.read(20, 4);
    env.run();
    assert_eq!(env.status(r1), Some(IoStatus::Success));
    let d = env.data(r1);
    assert_eq!(d.len(), 2048);
    for (i, b) in d.iter().enumerate() {
        let want = if i == 1000 { 0x5a ^ 0x0f } else { 0x5a };
        assert_eq!(*b, want, "byte {i}");
    }
    // Only one read was affected, and the base is intact.
    assert!(env.data(r2).iter().all(|b| *b == 0x5a));
    assert!(env.read_bdev("ErrM8", 20, 4).iter().all(|b| *b == 0x5a));
    // An offset beyond the data corrupts nothing (as SPDK).
    o.corrupt_offset = 4096;
    inject(&mut env, o);
    let r3 = env.read(20, 4);
    env.run();
    assert!(env.data(r3).iter().all(|b| *b == 0x5a));
    assert_eq!(slots(&mut env)[0].injected, 2);
    env.close();
}

#[test]
fn corrupt_data_on_write_is_stored_corrupted_in_the_base() {
    let mut env = Env::error_on_malloc(109, "ErrM9", 256);
    let mut o = opts(InjectIoType::Write, ErrorType::CorruptData, 1);
    o.corrupt_offset = 513;
    o.corrupt_value = 0xff;
    inject(&mut env, o);
    let w = env.write(40, 2, 0x11);
    let w2 = env.write(42, 2, 0x11);
    env.run();
    assert_eq!(env.status(w), Some(IoStatus::Success));
    let base = env.read_bdev("ErrM9", 40, 4);
    for (i, b) in base.iter().enumerate() {
        let want = if i == 513 { 0x11 ^ 0xff } else { 0x11 };
        assert_eq!(*b, want, "base byte {i}");
    }
    // As SPDK, the corruption was made in the submitter's own buffer.
    assert_eq!(env.data(w)[513], 0xee);
    assert!(env.data(w2).iter().all(|b| *b == 0x11));
    // Unmap and flush carry no data: corrupt_data lets them through (using the count).
    let mut o = opts(InjectIoType::Unmap, ErrorType::CorruptData, 1);
    o.corrupt_value = 1;
    inject(&mut env, o);
    let u = env.unmap(100, 1);
    env.run();
    assert_eq!(env.status(u), Some(IoStatus::Success));
    assert_eq!(slots(&mut env)[2].injected, 1);
    env.close();
}

#[test]
fn queue_depth_injects_only_at_depth() {
    let mut env = Env::error_on_malloc(110, "ErrM10", 256);
    let mut o = opts(InjectIoType::Read, ErrorType::Failure, 1);
    o.queue_depth = 2;
    inject(&mut env, o);
    // Alone: depth 0 on the base, not injected, the count stays.
    let r = env.read(0, 1);
    env.run();
    assert_eq!(env.status(r), Some(IoStatus::Success));
    assert_eq!(slots(&mut env)[0].remaining, 1);
    // Three at once: the third sees two in flight on the base.
    let rs: Vec<u64> = (0..3).map(|i| env.read(i, 1)).collect();
    env.run();
    let st: Vec<_> = rs.iter().map(|&g| env.status(g).unwrap()).collect();
    assert_eq!(st, [IoStatus::Success, IoStatus::Success, IoStatus::Failed]);
    env.close();
}

#[test]
fn create_before_the_base_exists_attaches_on_examine() {
    let mut h = ferrite_reactor::harness::Harness::new(2, 111);
    let name = h.on(APP, || {
        register_modules();
        ferrite_error::create(&ferrite_error::ErrorOpts {
            base_name: "ErrLate".into(),
            uuid: Some("e0e0e0e0-0000-4000-8000-00000000e111".into()),
        })
        .unwrap()
    });
    assert_eq!(name, "EE_ErrLate");
    assert!(ferrite_bdev::lookup("EE_ErrLate").is_none());
    // Saved while waiting (by the module).
    let waiting: Vec<_> = ferrite_bdev::modules()
        .iter()
        .flat_map(|m| m.config_json())
        .filter(|e| e["params"]["base_name"] == "ErrLate")
        .collect();
    assert_eq!(
        waiting,
        [json!({"method": "bdev_error_create", "params": {
            "base_name": "ErrLate", "uuid": "e0e0e0e0-0000-4000-8000-00000000e111"}})]
    );
    h.on(APP, || malloc("ErrLate", 64));
    let ee = ferrite_bdev::lookup("EE_ErrLate").expect("attached on examine");
    assert_eq!(
        ee.uuid().to_string(),
        "e0e0e0e0-0000-4000-8000-00000000e111"
    );
    assert_eq!(ee.product_name(), "Error Injection Disk");
    assert_eq!(ee.num_blocks(), 64);
    let base = ferrite_bdev::lookup("ErrLate").unwrap();
    assert_eq!(
        base.claim().map(|(k, m)| (k.spdk_name(), m)),
        Some(("exclusive_write", "error".to_string()))
    );
    // Now saved by its bdev, not the module.
    assert_eq!(
        ee.backend().config_entry(&ee),
        Some(json!({"method": "bdev_error_create", "params": {
            "base_name": "ErrLate", "uuid": "e0e0e0e0-0000-4000-8000-00000000e111"}}))
    );
    assert!(!ferrite_bdev::modules()
        .iter()
        .flat_map(|m| m.config_json())
        .any(|e| e["params"]["base_name"] == "ErrLate"));
    assert_eq!(
        ee.backend().driver_specific(),
        Some(("error_disk", json!({"base_bdev": "ErrLate"})))
    );
    // It works.
    let mut env = Env::open(h, 111, "EE_ErrLate");
    let w = env.write(0, 1, 3);
    env.run();
    assert_eq!(env.status(w), Some(IoStatus::Success));
    env.close();
}

#[test]
fn create_twice_delete_and_unknown_names() {
    let mut env = Env::error_on_malloc(112, "ErrM12", 64);
    env.close();
    let e = env
        .app(|| {
            ferrite_error::create(&ferrite_error::ErrorOpts {
                base_name: "ErrM12".into(),
                uuid: None,
            })
        })
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Exists);
    assert!(e.message().contains("ErrM12"), "{e}");
    let del = |env: &mut Env, name: &'static str| {
        let done = done_slot();
        let d = done.clone();
        env.app(move || {
            ferrite_error::delete(name, move |r| {
                *d.lock().unwrap() = Some(r.map_err(|e| format!("{}|{e}", e.errno())))
            })
        });
        env.run();
        let r = done.lock().unwrap().take();
        r.unwrap()
    };
    assert_eq!(del(&mut env, "EE_ErrM12"), Ok(()));
    assert!(ferrite_bdev::lookup("EE_ErrM12").is_none());
    assert_eq!(
        del(&mut env, "EE_ErrM12"),
        Err("19|bdev 'EE_ErrM12' not found".into())
    );
    // Not an error bdev.
    let e = del(&mut env, "ErrM12").unwrap_err();
    assert!(
        e.starts_with("19|") && e.contains("not an error bdev"),
        "{e}"
    );
    // A configured error bdev still waiting for its base is deleted by name too.
    env.app(|| {
        ferrite_error::create(&ferrite_error::ErrorOpts {
            base_name: "ErrNever".into(),
            uuid: None,
        })
        .unwrap()
    });
    assert_eq!(del(&mut env, "EE_ErrNever"), Ok(()));
    // And the base can carry a new one.
    let again = env.app(|| {
        ferrite_error::create(&ferrite_error::ErrorOpts {
            base_name: "ErrM12".into(),
            uuid: None,
        })
    });
    assert_eq!(again.unwrap(), "EE_ErrM12");
    assert_eq!(del(&mut env, "EE_ErrM12"), Ok(()));
}

#[test]
fn claim_conflict_names_both_sides() {
    let mut h = ferrite_reactor::harness::Harness::new(2, 113);
    h.on(APP, || {
        register_modules();
        malloc("ErrM13", 64);
        ferrite_passthru::create(&ferrite_passthru::PassthruOpts {
            base_bdev_name: "ErrM13".into(),
            name: "PT13".into(),
            uuid: None,
        })
        .unwrap();
    });
    let e = h
        .on(APP, || {
            ferrite_error::create(&ferrite_error::ErrorOpts {
                base_name: "ErrM13".into(),
                uuid: None,
            })
        })
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Claimed);
    assert_eq!(e.errno(), 1);
    let msg = e.to_string();
    assert!(
        msg.contains("EE_ErrM13") && msg.contains("'ErrM13'") && msg.contains("passthru"),
        "{msg}"
    );
    // Not remembered: once the passthru is gone, the same create works.
    let done = done_slot();
    let d = done.clone();
    h.on(APP, move || {
        ferrite_passthru::delete("PT13", move |r| {
            *d.lock().unwrap() = Some(r.map_err(|e| e.to_string()))
        })
    });
    h.run_until_idle();
    assert_eq!(*done.lock().unwrap(), Some(Ok(())));
    let ok = h.on(APP, || {
        ferrite_error::create(&ferrite_error::ErrorOpts {
            base_name: "ErrM13".into(),
            uuid: None,
        })
    });
    assert_eq!(ok.unwrap(), "EE_ErrM13");
}

#[test]
fn rpc_methods_and_their_errors() {
    let mut h = ferrite_reactor::harness::Harness::new(2, 114);
    h.on(APP, || {
        register_modules();
        malloc("ErrM14", 64);
    });
    let reg = registry(&h, ferrite_error::register_rpcs);
    // SPDK answers `true` to create.
    let r = call(
        &mut h,
        &reg,
        "bdev_error_create",
        json!({"base_name": "ErrM14"}),
    );
    assert_eq!(r, Ok(json!(true)));
    assert!(ferrite_bdev::lookup("EE_ErrM14").is_some());
    let r = call(
        &mut h,
        &reg,
        "bdev_error_create",
        json!({"base_name": "ErrM14"}),
    );
    assert_eq!(r.unwrap_err().code, -17);
    let e = call(&mut h, &reg, "bdev_error_create", json!({"name": "x"})).unwrap_err();
    assert_eq!(e.code, -32602);
    assert!(e.message.contains("'name'"), "{}", e.message);
    let e = call(
        &mut h,
        &reg,
        "bdev_error_create",
        json!({"base_name": "ErrM14b", "uuid": "not-a-uuid"}),
    )
    .unwrap_err();
    assert_eq!(e.code, -22, "{}", e.message);

    let inject = |mut p: serde_json::Value| {
        p["name"] = json!("EE_ErrM14");
        p
    };
    let ok = call(
        &mut h,
        &reg,
        "bdev_error_inject_error",
        inject(json!({"io_type": "read", "error_type": "failure"})),
    );
    assert_eq!(ok, Ok(json!(true)));
    // `num` defaults to 1.
    let s = h
        .on(APP, || ferrite_error::injection_status("EE_ErrM14"))
        .unwrap();
    assert_eq!(
        (s[0].remaining, s[0].error_type),
        (1, Some(ErrorType::Failure))
    );
    for t in ["all", "write", "unmap", "flush", "clear"] {
        let r = call(
            &mut h,
            &reg,
            "bdev_error_inject_error",
            inject(json!({"io_type": t, "error_type": "nomem", "num": 4})),
        );
        assert_eq!(r, Ok(json!(true)), "{t}");
    }
    let s = h
        .on(APP, || ferrite_error::injection_status("EE_ErrM14"))
        .unwrap();
    assert!(s.iter().all(|s| s.remaining == 0));
    // Unknown io_type / error_type: -32602 naming the parameter and the value.
    let e = call(
        &mut h,
        &reg,
        "bdev_error_inject_error",
        inject(json!({"io_type": "bogus", "error_type": "failure"})),
    )
    .unwrap_err();
    assert_eq!(e.code, -32602);
    assert!(
        e.message.contains("io_type") && e.message.contains("bogus"),
        "{}",
        e.message
    );
    let e = call(
        &mut h,
        &reg,
        "bdev_error_inject_error",
        inject(json!({"io_type": "read", "error_type": "explode"})),
    )
    .unwrap_err();
    assert_eq!(e.code, -32602);
    assert!(
        e.message.contains("error_type") && e.message.contains("explode"),
        "{}",
        e.message
    );
    // corrupt_data with a zero value: -EINVAL naming the bdev.
    let e = call(
        &mut h,
        &reg,
        "bdev_error_inject_error",
        inject(json!({"io_type": "read", "error_type": "corrupt_data", "corrupt_offset": 3})),
    )
    .unwrap_err();
    assert_eq!(e.code, -22);
    assert!(e.message.contains("EE_ErrM14"), "{}", e.message);
    let e = call(
        &mut h,
        &reg,
        "bdev_error_inject_error",
        json!({"name": "EE_ErrM14", "io_type": "read", "error_type": "corrupt_data",
               "corrupt_value": 256}),
    )
    .unwrap_err();
    assert_eq!(e.code, -32602);
    // Unknown bdev, and a bdev of another module: -ENODEV naming it.
    let e = call(
        &mut h,
        &reg,
        "bdev_error_inject_error",
        json!({"name": "EE_nothing", "io_type": "read", "error_type": "failure"}),
    )
    .unwrap_err();
    assert_eq!(e.code, -19);
    assert!(e.message.contains("EE_nothing"), "{}", e.message);
    let e = call(
        &mut h,
        &reg,
        "bdev_error_inject_error",
        json!({"name": "ErrM14", "io_type": "read", "error_type": "failure"}),
    )
    .unwrap_err();
    assert_eq!(e.code, -19);
    assert!(e.message.contains("not an error bdev"), "{}", e.message);
    // Delete.
    let e = call(
        &mut h,
        &reg,
        "bdev_error_delete",
        json!({"name": "EE_nothing"}),
    )
    .unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (-19, "bdev 'EE_nothing' not found")
    );
    let r = call(
        &mut h,
        &reg,
        "bdev_error_delete",
        json!({"name": "EE_ErrM14"}),
    );
    assert_eq!(r, Ok(json!(true)));
    assert!(ferrite_bdev::lookup("EE_ErrM14").is_none());
}

/// A reset fails the I/O its `pending` injections hold (as SPDK's error bdev) and completes
/// without waiting for a clear; the injection stays armed, so I/O is held again afterwards
/// until a clear releases it (Aborted).
#[test]
fn reset_fails_held_io_and_completes() {
    let mut env = Env::error_on_malloc(115, "ErrM15", 64);
    inject(&mut env, opts(InjectIoType::Read, ErrorType::Pending, 3));
    let r: Vec<u64> = (0..2).map(|i| env.read(i, 1)).collect();
    env.run();
    assert_eq!((env.status(r[0]), env.status(r[1])), (None, None));
    let reset = env.submit(|io| {
        io.prep_reset(record);
    });
    env.run();
    for &t in &r {
        assert_eq!(env.status(t), Some(IoStatus::Failed));
        assert_eq!(env.calls(t), 1);
    }
    assert_eq!(env.status(reset), Some(IoStatus::Success));
    assert_eq!(env.inflight(), 0);
    // Still armed (one unit left): the next read is held, a clear releases it.
    assert_eq!(slots(&mut env)[0].remaining, 1);
    let r3 = env.read(3, 1);
    env.run();
    assert_eq!(env.status(r3), None);
    inject(&mut env, opts(InjectIoType::Clear, ErrorType::Pending, 0));
    env.run();
    assert_eq!(env.status(r3), Some(IoStatus::Aborted));
    let r4 = env.read(0, 1);
    env.run();
    assert_eq!(env.status(r4), Some(IoStatus::Success));
    env.close();
}

/// A reset reaches the I/O held on every thread with a channel.
#[test]
fn reset_fails_held_io_on_two_threads() {
    let mut env = Env::error_on_malloc(116, "ErrM16", 64);
    let u2 = env.second_user();
    inject(&mut env, opts(InjectIoType::Flush, ErrorType::Pending, 2));
    let f1 = env.flush(0, 8);
    let tag2 = (116u64 << 32) | 0xffff;
    u2.flush(&mut env, tag2);
    env.run();
    assert_eq!((env.status(f1), env.status(tag2)), (None, None));
    let reset = env.submit(|io| {
        io.prep_reset(record);
    });
    env.run();
    assert_eq!(env.status(f1), Some(IoStatus::Failed));
    assert_eq!(env.status(tag2), Some(IoStatus::Failed));
    assert_eq!(env.status(reset), Some(IoStatus::Success));
    assert_eq!(u2.inflight(&mut env), 0);
    u2.close(&mut env);
    env.close();
}

/// A reset of a passthru bdev stacked on the error bdev reaches the I/O held below it (as in
/// SPDK, where the passthru passes its reset down): the held I/O fails, the reset completes.
#[test]
fn reset_of_a_stacked_bdev_fails_io_held_below() {
    let mut env = Env::passthru_on_error(117, "ErrM17", "PtErr17");
    let name = "EE_ErrM17".to_string();
    let o = opts(InjectIoType::Write, ErrorType::Pending, 2);
    env.app(|| ferrite_error::inject_error(&name, &o)).unwrap();
    env.run();
    let w: Vec<u64> = (0..2).map(|i| env.write(i, 1, 9)).collect();
    env.run();
    assert_eq!((env.status(w[0]), env.status(w[1])), (None, None));
    let reset = env.submit(|io| {
        io.prep_reset(record);
    });
    env.run();
    for &t in &w {
        assert_eq!(env.status(t), Some(IoStatus::Failed));
        assert_eq!(env.calls(t), 1);
    }
    assert_eq!(env.status(reset), Some(IoStatus::Success));
    assert_eq!(env.inflight(), 0);
    let r = env.read(0, 1);
    env.run();
    assert_eq!(env.status(r), Some(IoStatus::Success));
    env.close();
}
