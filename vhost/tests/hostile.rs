//! A hostile guest's chains, driven through the target's socket by the rust-vmm `vhost`
//! crate's frontend: requests the ring refuses fail with VIRTIO_BLK_S_IOERR when their status
//! byte can be found safely, otherwise the queue is broken until the frontend restarts it.
#![allow(clippy::unwrap_used)] // tests

mod common;

use common::*;
use ferrite_vhost::blk::request::{req_type, status};
use vhost::vhost_user::VhostUserFrontend;
use vhost::VhostBackend;

/// `broken_queues` of controller `hostile.0` in `vhost_get_controllers`.
fn broken_queues(env: &Env) -> serde_json::Value {
    let l = env.app(|| ferrite_vhost::list(Some("hostile.0"))).unwrap();
    l[0]["broken_queues"].clone()
}

/// Chains a hostile guest builds: the request fails with IOERR in its status byte when the
/// ring can find that byte safely; otherwise the queue is broken (nothing is answered, not
/// even later good requests) until the frontend restarts the ring, which then serves again.
#[test]
fn hostile_chains_fail_with_ioerr_or_break_the_queue() {
    let env = env();
    env.malloc("MallocHostile", 256, 512);
    env.create("hostile.0", "MallocHostile", false).unwrap();
    let mut d = Driver::connect(&env.dir.join("hostile.0"));
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&req_type::IN.to_le_bytes());
    d.mem.write(0x8000, &h); // read of sector 0
    let mut wh = [0u8; 16];
    wh[0..4].copy_from_slice(&req_type::OUT.to_le_bytes());
    d.mem.write(0x8100, &wh); // write of sector 0

    // guest memory is 1 MiB: a data buffer running past its end
    d.mem.write(0x9000, &[0xff]);
    let head = d.submit(&[
        (0x8000, 16, 0),
        (0xff000, 0x2000, F_WRITE),
        (0x9000, 1, F_WRITE),
    ]);
    assert_eq!(d.wait_used(), (u32::from(head), 1));
    assert_eq!(d.mem.read(0x9000, 1)[0], status::IOERR);
    // oversize: header and data together longer than 4 GiB
    d.mem.write(0x9000, &[0xff]);
    let head = d.submit(&[
        (0x8000, 16, 0),
        (0x20000, u32::MAX, F_WRITE),
        (0x9000, 1, F_WRITE),
    ]);
    assert_eq!(d.wait_used(), (u32::from(head), 1));
    assert_eq!(d.mem.read(0x9000, 1)[0], status::IOERR);
    // the queue goes on, and is not reported broken
    assert_eq!(
        d.request(req_type::IN, 0, &[(0x40000, 512)], true).0,
        status::OK
    );
    assert_eq!(broken_queues(env), serde_json::json!([]));

    // no status byte the device may write: a refused chain (data outside memory) whose
    // status is read-only, then a well-formed write request whose status is read-only
    let refused: [(u64, u32, u16); 3] =
        [(0x8000, 16, 0), (0xff000, 0x2000, F_WRITE), (0x9000, 1, 0)];
    let readonly_status: [(u64, u32, u16); 3] =
        [(0x8100, 16, 0), (0x20000, 512, 0), (0x9000, 1, 0)];
    for bad in [&refused[..], &readonly_status[..]] {
        d.mem.write(0x9000, &[0xff]);
        d.submit(bad);
        // a good request behind it is not served while the queue is broken
        d.mem.write(0x9100, &[0xff]);
        let good = d.submit(&[
            (0x8000, 16, 0),
            (0x40000, 512, F_WRITE),
            (0x9100, 1, F_WRITE),
        ]);
        // vhost_get_controllers names the broken queue (once the poller has met the chain)
        let start = std::time::Instant::now();
        while broken_queues(env) != serde_json::json!([0]) {
            assert!(start.elapsed() < WAIT, "queue 0 never broke on {bad:x?}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // Broken at the bad chain, in ring order: nothing was answered, the good request
        // behind it included.
        if d.mem.u16(USED + 2) != d.used_seen {
            let u = d.wait_used();
            panic!("a broken queue answered {u:?} (the bad chain was {bad:x?})");
        }
        assert_eq!(d.mem.read(0x9000, 1)[0], 0xff);
        assert_eq!(d.mem.read(0x9100, 1)[0], 0xff);
        // the frontend restarts the ring: the bad chain was consumed, the good one was not
        let avail = d.mem.u16(AVAIL + 2);
        let base = d.fe.get_vring_base(0).unwrap();
        assert_eq!(base, u32::from(avail.wrapping_sub(1)));
        d.fe.set_vring_base(0, base as u16).unwrap();
        d.fe.set_vring_kick(0, &d.kick).unwrap();
        d.fe.set_vring_enable(0, true).unwrap();
        assert_eq!(d.wait_used(), (u32::from(good), 513));
        assert_eq!(d.mem.read(0x9100, 1)[0], status::OK);
        assert_eq!(broken_queues(env), serde_json::json!([]), "{bad:x?}");
    }
    assert_eq!(d.request(req_type::FLUSH, 0, &[], false).0, status::OK);
    drop(d);
    env.delete("hostile.0").unwrap();
}
