//! The target driven through its Unix socket by the rust-vmm `vhost` crate's frontend:
//! negotiation, config space, memory table (memfd), a split ring driven by hand, reads and
//! writes checked against a malloc bdev, flush, GET_ID, failing requests, ring stop/restart,
//! controller errors, delete.
#![allow(clippy::unwrap_used)] // tests

mod common;

use common::*;
use ferrite_vhost::blk::request::{req_type, status};
use vhost::vhost_user::VhostUserFrontend;
use vhost::VhostBackend;

#[test]
fn negotiate_read_write_and_fail_cleanly() {
    let env = env();
    env.malloc("Malloc0", 2048, 512);
    env.create("vhost.0", "Malloc0", false).unwrap();
    let sock = env.dir.join("vhost.0");
    let mode = std::fs::metadata(&sock).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);

    let mut d = Driver::connect(&sock);
    assert_eq!(d.fe.get_queue_num().unwrap(), 16);
    // config space: capacity in sectors, blk_size; shorter and longer reads
    let c = d.config(60);
    assert_eq!(u64::from_le_bytes(c[0..8].try_into().unwrap()), 2048);
    assert_eq!(u32::from_le_bytes(c[20..24].try_into().unwrap()), 512);
    assert_eq!(d.config(8), c[..8]);

    // write 4 KiB at sector 8 in two segments, read it back in one
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    d.mem.write(0x20000, &pattern);
    let (st, _) = d.request(req_type::OUT, 8, &[(0x20000, 2048), (0x20800, 2048)], false);
    assert_eq!(st, status::OK);
    let (st, len) = d.request(req_type::IN, 8, &[(0x40000, 4096)], true);
    assert_eq!(st, status::OK);
    assert_eq!(len, 4097);
    assert_eq!(d.mem.read(0x40000, 4096), pattern);
    // the data is on the bdev: read it with the bdev layer itself
    let on_bdev = read_bdev(env, "Malloc0", 8, 8);
    assert_eq!(on_bdev, pattern);

    let (st, _) = d.request(req_type::FLUSH, 0, &[], false);
    assert_eq!(st, status::OK);
    let (st, len) = d.request(req_type::GET_ID, 0, &[(0x50000, 20)], true);
    assert_eq!(st, status::OK);
    assert_eq!(&d.mem.read(0x50000, 7), b"Malloc0");
    assert_eq!(len, 21, "20 id bytes (zero padded) and the status");
    // failures: unsupported type, out of range, read into a read-only buffer, data
    // outside guest memory
    assert_eq!(d.request(77, 0, &[], false).0, status::UNSUPP);
    assert_eq!(
        d.request(req_type::IN, 4096, &[(0x40000, 512)], true).0,
        status::IOERR
    );
    assert_eq!(
        d.request(req_type::IN, 0, &[(0x40000, 512)], false).0,
        status::IOERR
    );
    // a data buffer outside guest memory: the ring refuses the chain (ferrite-vring gives no
    // segments to find the status byte in), returns it with nothing written, keeps serving
    let head = d.submit(&[(0x8000, 16, 0), (0xff000, 0x2000, 0), (0x9000, 1, F_WRITE)]);
    assert_eq!(d.wait_used(), (u32::from(head), 0));
    // the queue still serves
    assert_eq!(
        d.request(req_type::IN, 8, &[(0x40000, 512)], true).0,
        status::OK
    );

    // stop the ring: its position comes back; restart from it
    let base = d.fe.get_vring_base(0).unwrap();
    assert_eq!(base, u32::from(d.used_seen));
    d.fe.set_vring_base(0, base as u16).unwrap();
    d.fe.set_vring_kick(0, &d.kick).unwrap();
    d.fe.set_vring_enable(0, true).unwrap();
    assert_eq!(
        d.request(req_type::IN, 8, &[(0x40000, 4096)], true).0,
        status::OK
    );
    assert_eq!(d.mem.read(0x40000, 4096), pattern);

    // bdev in use: deleting it is hot-remove, the controller stops serving
    drop(d);
    env.delete("vhost.0").unwrap();
    assert!(
        !sock.exists(),
        "the socket file is removed with the controller"
    );
}

/// Reads blocks straight from the bdev (not through the target), on the app thread.
fn read_bdev(env: &Env, name: &str, block: u64, blocks: u64) -> Vec<u8> {
    use std::sync::mpsc;
    struct Ctx {
        tx: mpsc::Sender<Vec<u8>>,
        _ch: ferrite_bdev::BdevChannel,
        _desc: ferrite_bdev::Desc,
    }
    fn done(mut io: Box<ferrite_bdev::BdevIo>) {
        // SAFETY: user[0] is the Box<Ctx> leaked below, taken back exactly once.
        let ctx = unsafe { Box::from_raw(io.user[0] as *mut Ctx) };
        let v = io
            .take_buf()
            .map(|b| b.as_slice().to_vec())
            .unwrap_or_default();
        ferrite_bdev::free_io(io);
        let _ = ctx.tx.send(v);
    }
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let n = name.to_string();
    env.app(move || {
        let desc = ferrite_bdev::Desc::open(&n, false, |_| {}).unwrap();
        let ch = desc.channel().unwrap();
        let mut io = ch.alloc_io().unwrap();
        let buf = ferrite_bdev::DmaBuf::get(blocks as usize * 512)
            .unwrap()
            .unwrap();
        io.prep_read(block, blocks, done).attach_buf(buf);
        let ch2 = desc.channel().unwrap();
        let ctx = Box::new(Ctx {
            tx,
            _ch: ch2,
            _desc: desc,
        });
        io.user[0] = Box::into_raw(ctx) as u64;
        ch.submit(io);
    });
    let mut v = rx.recv_timeout(WAIT).unwrap();
    v.truncate(blocks as usize * 512);
    v
}

#[test]
fn controller_errors_are_clear() {
    let env = env();
    env.malloc("Malloc9", 64, 512);
    env.create("err.0", "Malloc9", false).unwrap();
    let e = env.create("err.0", "Malloc9", false).unwrap_err();
    assert_eq!(e.kind(), ferrite_vhost::ErrorKind::Exists);
    assert!(e.message().contains("'err.0' already exists"), "{e}");
    let e = env.create("err.1", "NoSuchBdev", false).unwrap_err();
    assert_eq!(e.kind(), ferrite_vhost::ErrorKind::NotFound);
    assert!(e.message().contains("NoSuchBdev"), "{e}");
    // Malloc9 is claimed by err.0
    let e = env.create("err.2", "Malloc9", false).unwrap_err();
    assert!(e.message().contains("claimed"), "{e}");
    let o = ferrite_vhost::CreateOpts {
        ctrlr: "err.3".into(),
        dev_name: "Malloc9".into(),
        cpumask: Some("0x4".into()),
        readonly: false,
        packed_ring: false,
    };
    let e = env.app(move || ferrite_vhost::create(&o)).unwrap_err();
    assert_eq!(e.kind(), ferrite_vhost::ErrorKind::InvalidArgument);
    assert!(e.message().contains("cpumask '0x4'"), "{e}");
    let e = env.create("a/b", "Malloc9", false).unwrap_err();
    assert!(e.message().contains("invalid"), "{e}");
    let e = env.delete("nope").unwrap_err();
    assert!(e.message().contains("'nope' does not exist"), "{e}");
    let e = env
        .app(|| ferrite_vhost::set_coalescing("err.0", 10, 0))
        .unwrap_err();
    assert!(e.message().contains("iops_threshold"), "{e}");
    env.app(|| ferrite_vhost::set_coalescing("err.0", 10, 1000))
        .unwrap();
    let cfg = env.app(ferrite_vhost::config_json);
    let mine: Vec<_> = cfg
        .iter()
        .filter(|v| v["params"]["ctrlr"] == "err.0")
        .collect();
    assert_eq!(mine.len(), 2, "{cfg:?}");
    assert_eq!(mine[0]["method"], "vhost_create_blk_controller");
    assert_eq!(mine[0]["params"]["dev_name"], "Malloc9");
    assert_eq!(mine[1]["method"], "vhost_controller_set_coalescing");
    assert_eq!(mine[1]["params"]["delay_base_us"], 10);
    let l = env.app(|| ferrite_vhost::list(Some("err.0"))).unwrap();
    assert_eq!(l[0]["backend_specific"]["block"]["bdev"], "Malloc9");
    assert_eq!(l[0]["iops_threshold"], 1000);
    env.delete("err.0").unwrap();
}
