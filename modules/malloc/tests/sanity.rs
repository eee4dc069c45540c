// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};

use ferrite_bdev::{BdevIo, Desc, DmaBuf, IoStatus};
use ferrite_reactor::harness::Harness;

static DONE: AtomicUsize = AtomicUsize::new(0);
static OK: AtomicUsize = AtomicUsize::new(0);

fn cb(io: Box<BdevIo>) {
    if io.status() == IoStatus::Success {
        OK.fetch_add(1, Ordering::SeqCst);
    }
    DONE.fetch_add(1, Ordering::SeqCst);
    ferrite_bdev::free_io(io);
}

#[test]
fn write_then_read_through_passthru() {
    let mut h = Harness::new(2, 7);
    h.on(0, || {
        ferrite_bdev::register_module(std::sync::Arc::new(ferrite_passthru::PassthruModule));
        ferrite_malloc::create(&ferrite_malloc::MallocOpts {
            name: Some("M0".into()),
            num_blocks: 256,
            block_size: 512,
            ..Default::default()
        })
        .unwrap();
        ferrite_passthru::create(&ferrite_passthru::PassthruOpts {
            base_bdev_name: "M0".into(),
            name: "P0".into(),
            uuid: None,
        })
        .unwrap();
    });
    let desc = h.on(1, || Desc::open("P0", true, |_| {}).unwrap());
    let ch = h.on(1, || desc.channel().unwrap());
    h.on(1, || {
        let mut io = ch.alloc_io().unwrap();
        let mut b = DmaBuf::get(1024).unwrap().unwrap();
        b.as_mut_slice().fill(0xab);
        io.prep_write(10, 2, cb).attach_buf(b);
        ch.submit(io);
        assert_eq!(
            DONE.load(Ordering::SeqCst),
            0,
            "completion ran inside submit"
        );
    });
    h.run_until_idle();
    assert_eq!(OK.load(Ordering::SeqCst), 1);
    h.on(1, || {
        let mut io = ch.alloc_io().unwrap();
        io.prep_read(10, 2, |io| {
            assert_eq!(io.status(), IoStatus::Success);
            assert!(io.buf().unwrap().as_slice().iter().all(|b| *b == 0xab));
            DONE.fetch_add(1, Ordering::SeqCst);
            ferrite_bdev::free_io(io);
        });
        ch.submit(io);
    });
    h.run_until_idle();
    assert_eq!(DONE.load(Ordering::SeqCst), 2);
    // Claimed base refuses a write open, naming the holder.
    let e = h.on(1, || Desc::open("M0", true, |_| {}).unwrap_err());
    assert!(e.to_string().contains("passthru"), "{e}");
    h.on(1, || drop(ch));
    h.on(1, || drop(desc));
    h.run_until_idle();
}
