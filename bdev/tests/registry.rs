//! The registry: unique names, aliases and UUIDs; lookup by any of them; geometry checks;
//! resize events; save_config entries of null, malloc and passthru; unregister errors.
// Helpers outside #[test] functions unwrap too: this is test code.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::{register_test, TestCfg};
use ferrite_bdev::uuid::Uuid;
use ferrite_bdev::{BdevEvent, BdevProps, Desc, ErrorKind, MAX_NAME_LEN};
use ferrite_reactor::harness::Harness;
use serde_json::{json, Value};

fn null_opts(name: &str, uuid: Option<&str>) -> ferrite_null::NullOpts {
    ferrite_null::NullOpts {
        name: name.to_string(),
        num_blocks: 2048,
        block_size: 512,
        uuid: uuid.map(str::to_string),
        md_size: 0,
    }
}

fn unregister(h: &mut Harness, name: &str) {
    let n = name.to_string();
    h.on(0, move || {
        ferrite_bdev::unregister(&n, None, |r| r.unwrap())
    });
    h.run_until_idle();
    assert!(ferrite_bdev::lookup(name).is_none());
}

fn null_backend_props(name: &str) -> BdevProps {
    BdevProps::new(name, "Test disk", 512, 8)
}

#[test]
fn names_aliases_and_uuids_are_unique() {
    let mut h = Harness::new(1, 101);
    let u = "0b5e3a7c-1d2f-4e6a-8b9c-0d1e2f3a4b5c";
    h.on(0, || {
        ferrite_null::create(&null_opts("RgA", Some(u))).unwrap()
    });
    let a = ferrite_bdev::lookup("RgA").unwrap();
    assert_eq!(a.uuid().to_string(), u);
    h.on(0, || ferrite_bdev::add_alias(&a, "RgA-alias").unwrap());
    assert_eq!(a.aliases(), vec!["RgA-alias".to_string()]);
    // Lookup by name, alias, UUID (either case).
    for key in ["RgA", "RgA-alias", u, &u.to_uppercase()] {
        let b = ferrite_bdev::lookup(key).unwrap_or_else(|| panic!("lookup {key}"));
        assert!(Arc::ptr_eq(&a, &b), "{key}");
    }
    // Opening by alias or UUID works.
    let d = h.on(0, || Desc::open(u, false, |_| {}).unwrap());
    assert_eq!(d.bdev().name(), "RgA");
    drop(d);
    // Same name.
    let e = h.on(0, || {
        ferrite_null::create(&null_opts("RgA", None)).unwrap_err()
    });
    assert_eq!(e.kind(), ErrorKind::Exists, "{e}");
    assert_eq!(e.errno(), libc::EEXIST);
    assert!(e.message().contains("'RgA'"), "{e}");
    // A new bdev's name equal to an alias, or to another bdev's UUID.
    for taken in ["RgA-alias", u] {
        let e = h.on(0, || {
            ferrite_null::create(&null_opts(taken, None)).unwrap_err()
        });
        assert_eq!(e.kind(), ErrorKind::Exists, "{e}");
        assert!(e.message().contains(taken), "{e}");
    }
    // Same UUID.
    let e = h.on(0, || {
        ferrite_null::create(&null_opts("RgB", Some(u))).unwrap_err()
    });
    assert_eq!(e.kind(), ErrorKind::Exists, "{e}");
    assert!(
        e.message().contains(u) && e.message().contains("RgB"),
        "{e}"
    );
    assert!(ferrite_bdev::lookup("RgB").is_none());
    // An alias taken by a name or alias, through register or add_alias.
    let mut p = null_backend_props("RgC");
    p.aliases = vec!["RgA".into()];
    let e = h.on(0, || register_test_props(p).unwrap_err());
    assert_eq!(e.kind(), ErrorKind::Exists, "{e}");
    assert!(e.message().contains("'RgA'"), "{e}");
    h.on(0, || ferrite_null::create(&null_opts("RgD", None)).unwrap());
    let dd = ferrite_bdev::lookup("RgD").unwrap();
    for taken in ["RgA", "RgA-alias", "RgD", u] {
        let e = h.on(0, || ferrite_bdev::add_alias(&dd, taken).unwrap_err());
        assert_eq!(e.kind(), ErrorKind::Exists, "{taken}: {e}");
        assert!(e.message().contains(taken), "{e}");
    }
    assert!(dd.aliases().is_empty());
    // Repeated within one registration.
    let mut p = null_backend_props("RgE");
    p.aliases = vec!["RgE-x".into(), "RgE-x".into()];
    let e = h.on(0, || register_test_props(p).unwrap_err());
    assert_eq!(e.kind(), ErrorKind::Exists, "{e}");
    assert!(e.message().contains("RgE-x"), "{e}");
    let mut p = null_backend_props("RgF");
    p.aliases = vec!["RgF".into()];
    let e = h.on(0, || register_test_props(p).unwrap_err());
    assert_eq!(e.kind(), ErrorKind::Exists, "{e}");
    assert!(ferrite_bdev::lookup("RgE").is_none() && ferrite_bdev::lookup("RgF").is_none());
    // A removed bdev frees its names.
    unregister(&mut h, "RgA");
    assert!(ferrite_bdev::lookup("RgA-alias").is_none());
    assert!(ferrite_bdev::lookup(u).is_none());
    h.on(0, || {
        ferrite_null::create(&null_opts("RgA", Some(u))).unwrap()
    });
    unregister(&mut h, "RgA");
    unregister(&mut h, "RgD");
}

fn register_test_props(p: BdevProps) -> ferrite_bdev::Result<Arc<ferrite_bdev::Bdev>> {
    let state = Arc::new(common::TestState {
        block_size: p.block_size,
        num_blocks: p.num_blocks,
        hold: Default::default(),
        nomem_left: Default::default(),
        held: Mutex::new(Vec::new()),
        log: Mutex::new(Vec::new()),
        submits: Default::default(),
        destructs: Default::default(),
        channels_created: Default::default(),
        ram: None,
    });
    ferrite_bdev::register(
        p,
        Arc::new(common::TestBackend {
            cfg: TestCfg::default(),
            state,
        }),
    )
}

#[test]
fn bad_geometry_and_names_are_rejected() {
    let mut h = Harness::new(1, 102);
    let long = "x".repeat(MAX_NAME_LEN + 1);
    let cases: Vec<(BdevProps, &str)> = vec![
        (BdevProps::new("RgBs0", "t", 0, 8), "block size"),
        (BdevProps::new("RgBs100", "t", 100, 8), "block size"),
        (BdevProps::new("RgBs4000", "t", 4000, 8), "block size"),
        (BdevProps::new("RgNb0", "t", 512, 0), "blocks"),
        (BdevProps::new("", "t", 512, 8), "name"),
        (BdevProps::new(&long, "t", 512, 8), "name"),
        (BdevProps::new("Rg\nctl", "t", 512, 8), "name"),
    ];
    for (p, what) in cases {
        let name = p.name.clone();
        let e = h.on(0, || register_test_props(p).unwrap_err());
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        assert!(e.message().contains(what), "{e}");
        assert!(ferrite_bdev::lookup(&name).is_none());
    }
    let mut p = BdevProps::new("RgBadAlias", "t", 512, 8);
    p.aliases = vec![String::new()];
    let e = h.on(0, || register_test_props(p).unwrap_err());
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    // Module-level checks: malloc and null refuse bad geometry the same way.
    let e = h.on(0, || {
        ferrite_malloc::create(&ferrite_malloc::MallocOpts {
            name: Some("RgMalBad".into()),
            num_blocks: 8,
            block_size: 1000,
            ..Default::default()
        })
        .unwrap_err()
    });
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    let mut o = null_opts("RgNullBad", None);
    o.num_blocks = 0;
    let e = h.on(0, || ferrite_null::create(&o).unwrap_err());
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    let e = h.on(0, || {
        ferrite_null::create(&null_opts("RgNullUuid", Some("not-a-uuid"))).unwrap_err()
    });
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    // The limits themselves are fine.
    let max = "y".repeat(MAX_NAME_LEN);
    let (b, _) = h.on(0, || register_test(&max, 4096, 1, TestCfg::default()));
    assert_eq!(b.num_blocks(), 1);
    unregister(&mut h, &max);
}

#[test]
fn null_resize_notifies_descriptors_and_passthru() {
    let mut h = Harness::new(2, 103);
    h.on(0, || {
        ferrite_bdev::register_module(Arc::new(ferrite_passthru::PassthruModule));
        ferrite_null::create(&null_opts("RgRs", None)).unwrap();
        ferrite_passthru::create(&ferrite_passthru::PassthruOpts {
            base_bdev_name: "RgRs".into(),
            name: "RgRsPt".into(),
            uuid: None,
        })
        .unwrap();
    });
    let b = ferrite_bdev::lookup("RgRs").unwrap();
    let pt = ferrite_bdev::lookup("RgRsPt").unwrap();
    assert_eq!(b.num_blocks(), 2048);
    let events: Arc<Mutex<Vec<(String, BdevEvent, u64)>>> = Arc::default();
    let mk = |name: &'static str| {
        let ev = events.clone();
        move |e: BdevEvent| {
            let t = ferrite_reactor::current().map(|t| t.id()).unwrap_or(0);
            ev.lock().unwrap().push((name.to_string(), e, t));
        }
    };
    let cb_base = mk("RgRs");
    let cb_pt = mk("RgRsPt");
    let d_base = h.on(1, || Desc::open("RgRs", false, cb_base).unwrap());
    let d_pt = h.on(1, || Desc::open("RgRsPt", false, cb_pt).unwrap());
    // Grow to 4 MiB.
    h.on(0, || ferrite_null::resize("RgRs", 4).unwrap());
    assert_eq!(b.num_blocks(), 4 * 1024 * 1024 / 512);
    let ev = events.clone();
    common::run_until(&mut h, "resize events", || ev.lock().unwrap().len() == 2);
    let t1 = h.handle(1).id();
    let mut got = events.lock().unwrap().clone();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            ("RgRs".to_string(), BdevEvent::Resize, t1),
            ("RgRsPt".to_string(), BdevEvent::Resize, t1),
        ]
    );
    assert_eq!(pt.num_blocks(), 8192, "passthru follows its base");
    // I/O beyond the old end is now valid.
    let arena = common::Arena::default();
    let ch = h.on(1, || d_pt.channel().unwrap());
    h.on(1, || common::read_at(&ch, &arena, 8000, 8, &[], 1));
    common::run_until(&mut h, "read", || common::done_count() == 1);
    assert_eq!(
        common::take_done()[0].status,
        ferrite_bdev::IoStatus::Success
    );
    h.on(1, || drop(ch));
    // save_config reports the new size.
    let cfg = ferrite_bdev::config::subsystem_config();
    let e = cfg
        .iter()
        .find(|e| e["method"] == "bdev_null_create" && e["params"]["name"] == "RgRs")
        .unwrap();
    assert_eq!(e["params"]["num_blocks"], 8192);
    // Bad sizes and wrong modules.
    let e = h.on(0, || ferrite_null::resize("RgRs", 0).unwrap_err());
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    let e = h.on(0, || ferrite_null::resize("RgRsPt", 8).unwrap_err());
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = h.on(0, || ferrite_null::resize("RgNoSuch", 8).unwrap_err());
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    drop((d_base, d_pt));
    h.on(0, || ferrite_passthru::delete("RgRsPt", |r| r.unwrap()));
    h.run_until_idle();
    unregister(&mut h, "RgRs");
}

fn entry(method: &str, name: &str) -> Value {
    let cfg = ferrite_bdev::config::subsystem_config();
    let m: Vec<&Value> = cfg
        .iter()
        .filter(|e| e["method"] == method && e["params"]["name"] == name)
        .collect();
    assert_eq!(m.len(), 1, "{method} {name}: {cfg:?}");
    m[0].clone()
}

#[test]
fn save_config_of_null_malloc_and_passthru() {
    let mut h = Harness::new(1, 104);
    let un = "11111111-2222-4333-8444-555555555555";
    let um = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";
    let up = "12345678-9abc-4def-8123-456789abcdef";
    h.on(0, || {
        ferrite_bdev::register_module(Arc::new(ferrite_passthru::PassthruModule));
        ferrite_null::create(&ferrite_null::NullOpts {
            name: "RgCfgNull".into(),
            num_blocks: 1000,
            block_size: 4096,
            uuid: Some(un.into()),
            md_size: 16,
        })
        .unwrap();
        ferrite_malloc::create(&ferrite_malloc::MallocOpts {
            name: Some("RgCfgMal".into()),
            num_blocks: 64,
            block_size: 512,
            uuid: Some(um.into()),
            optimal_io_boundary: 16,
            md_size: 0,
        })
        .unwrap();
        ferrite_passthru::create(&ferrite_passthru::PassthruOpts {
            base_bdev_name: "RgCfgMal".into(),
            name: "RgCfgPt".into(),
            uuid: Some(up.into()),
        })
        .unwrap();
    });
    assert_eq!(
        entry("bdev_null_create", "RgCfgNull"),
        json!({"method": "bdev_null_create", "params": {
            "name": "RgCfgNull", "num_blocks": 1000, "block_size": 4096, "uuid": un,
            "md_size": 16
        }})
    );
    assert_eq!(
        entry("bdev_malloc_create", "RgCfgMal"),
        json!({"method": "bdev_malloc_create", "params": {
            "name": "RgCfgMal", "num_blocks": 64, "block_size": 512, "uuid": um,
            "optimal_io_boundary": 16
        }})
    );
    assert_eq!(
        entry("bdev_passthru_create", "RgCfgPt"),
        json!({"method": "bdev_passthru_create", "params": {
            "base_bdev_name": "RgCfgMal", "name": "RgCfgPt", "uuid": up
        }})
    );
    let cfg = ferrite_bdev::config::subsystem_config();
    let pos = |n: &str| cfg.iter().position(|e| e["params"]["name"] == n).unwrap();
    assert!(pos("RgCfgMal") < pos("RgCfgPt"));
    assert_eq!(
        cfg.last().unwrap(),
        &json!({"method": "bdev_wait_for_examine"})
    );
    // Each entry recreates an equal bdev: the properties agree.
    let n = ferrite_bdev::lookup("RgCfgNull").unwrap();
    assert_eq!(
        (n.num_blocks(), n.block_size(), n.md_size()),
        (1000, 4096, 16)
    );
    assert_eq!(n.uuid(), Uuid::parse(un).unwrap());
    assert_eq!(n.product_name(), "Null disk");
    let m = ferrite_bdev::lookup("RgCfgMal").unwrap();
    assert_eq!(m.optimal_io_boundary(), 16);
    assert!(m.split_on_optimal_io_boundary());
    let p = ferrite_bdev::lookup("RgCfgPt").unwrap();
    let (k, v) = p.backend().driver_specific().unwrap();
    assert_eq!(k, "passthru");
    assert_eq!(v, json!({"name": "RgCfgPt", "base_bdev_name": "RgCfgMal"}));
    h.on(0, || ferrite_passthru::delete("RgCfgPt", |r| r.unwrap()));
    h.run_until_idle();
    unregister(&mut h, "RgCfgMal");
    unregister(&mut h, "RgCfgNull");
}

#[test]
fn unregister_errors() {
    let mut h = Harness::new(1, 105);
    h.on(0, || {
        ferrite_null::create(&null_opts("RgUnreg", None)).unwrap()
    });
    let err: Arc<Mutex<Option<ferrite_bdev::BdevError>>> = Arc::default();
    let e2 = err.clone();
    h.on(0, move || {
        ferrite_malloc::delete("RgUnreg", move |r| *e2.lock().unwrap() = r.err())
    });
    let e = err.lock().unwrap().take().expect("wrong module refused");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(
        e.message().contains("null") && e.message().contains("malloc"),
        "{e}"
    );
    assert!(ferrite_bdev::lookup("RgUnreg").unwrap().is_registered());
    let e2 = err.clone();
    h.on(0, move || {
        ferrite_bdev::unregister("RgNoSuchBdev", None, move |r| *e2.lock().unwrap() = r.err())
    });
    let e = err.lock().unwrap().take().expect("unknown refused");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.message().contains("RgNoSuchBdev"), "{e}");
    // With no descriptor open, the removal finishes before unregister returns.
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    h.on(0, move || {
        ferrite_null::delete("RgUnreg", move |r| {
            r.unwrap();
            d2.store(true, Ordering::SeqCst)
        })
    });
    assert!(done.load(Ordering::SeqCst));
    assert!(ferrite_bdev::lookup("RgUnreg").is_none());
}
