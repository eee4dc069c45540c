//! write_zeroes emulated with writes on a backend that lacks it; unmap and write_zeroes on
//! malloc read back as zeroes and leave the neighbours alone.
// Helpers outside #[test] functions unwrap too: this is test code.
#![allow(clippy::unwrap_used)]

mod common;

use common::{register_test, run_until, take_done, Arena, TestCfg};
use ferrite_bdev::{Desc, IoStatus, IoType};
use ferrite_reactor::harness::Harness;

const BS: usize = 512;

#[test]
fn write_zeroes_is_emulated_with_writes() {
    let mut h = Harness::new(2, 91);
    let cfg = TestCfg {
        supported: vec![IoType::Read, IoType::Write],
        ..Default::default()
    };
    let (b, state) = h.on(0, || register_test("WzEmu", BS as u32, 1024, cfg));
    assert!(b.io_type_supported(IoType::WriteZeroes));
    let sup = b.supported_io_types_json();
    assert_eq!(sup["write_zeroes"], true);
    assert_eq!(sup["unmap"], false);
    state.fill_ram(0, 1024, 0xaa);
    let d = h.on(0, || Desc::open("WzEmu", true, |_| {}).unwrap());
    let ch = h.on(1, || d.channel().unwrap());
    // 600 blocks (300 KiB): more than one zero buffer's worth (128 KiB large pool buffers).
    h.on(1, || {
        common::submit_plain(&ch, 1, |io| {
            io.prep_write_zeroes(10, 600, common::record);
        })
    });
    run_until(&mut h, "write_zeroes", || common::done_count() == 1);
    let done = take_done();
    assert_eq!(done[0].status, IoStatus::Success);
    assert_eq!(
        (done[0].io_type, done[0].offset, done[0].num),
        (IoType::WriteZeroes, 10, 600)
    );
    let ops = state.ops();
    assert!(ops.len() >= 3, "expected several chunks: {ops:?}");
    let mut next = 10;
    for o in &ops {
        assert_eq!(o.t, IoType::Write, "{ops:?}");
        assert_eq!(o.off, next, "chunks in order and contiguous: {ops:?}");
        assert_eq!(o.word, Some(0));
        assert!(o.uniform);
        next += o.n;
    }
    assert_eq!(next, 610);
    assert!(state.ram_blocks(10, 600).iter().all(|b| *b == 0));
    assert!(state.ram_blocks(0, 10).iter().all(|b| *b == 0xaa));
    assert!(state.ram_blocks(610, 414).iter().all(|b| *b == 0xaa));
    // Read back through the bdev too.
    let arena = Arena::default();
    let i = h.on(1, || common::read_at(&ch, &arena, 8, 4, &[], 2));
    run_until(&mut h, "read", || common::done_count() == 1);
    take_done();
    let got = arena.get(i);
    assert!(got[..2 * BS].iter().all(|b| *b == 0xaa));
    assert!(got[2 * BS..].iter().all(|b| *b == 0));
    // Statistics see one write_zeroes, not the writes.
    let out = std::sync::Arc::new(std::sync::Mutex::new(None));
    let o = out.clone();
    let b2 = b.clone();
    h.on(0, move || {
        ferrite_bdev::collect_iostat(&b2, move |t, _| *o.lock().unwrap() = Some(t))
    });
    let o = out.clone();
    run_until(&mut h, "iostat", || o.lock().unwrap().is_some());
    let t = out.lock().unwrap().unwrap();
    assert_eq!(
        (t.write_zeroes.ops, t.write_zeroes.bytes),
        (1, 600 * BS as u64)
    );
    assert_eq!((t.write.ops, t.read.ops), (0, 1));
    h.on(1, || drop(ch));
    drop(d);
    h.on(0, || {
        ferrite_bdev::unregister("WzEmu", None, |r| r.unwrap())
    });
    h.run_until_idle();
}

#[test]
fn write_zeroes_needs_write_support_to_be_emulated() {
    let mut h = Harness::new(1, 92);
    let cfg = TestCfg {
        supported: vec![IoType::Read],
        ..Default::default()
    };
    let (b, state) = h.on(0, || register_test("WzNoWrite", BS as u32, 64, cfg));
    assert!(!b.io_type_supported(IoType::WriteZeroes));
    let d = h.on(0, || Desc::open("WzNoWrite", true, |_| {}).unwrap());
    let ch = h.on(0, || d.channel().unwrap());
    h.on(0, || {
        common::submit_plain(&ch, 1, |io| {
            io.prep_write_zeroes(0, 4, common::record);
        })
    });
    run_until(&mut h, "write_zeroes", || common::done_count() == 1);
    assert_eq!(take_done()[0].status, IoStatus::Invalid);
    assert!(state.ops().is_empty());
    h.on(0, || drop(ch));
    drop(d);
    h.on(0, || {
        ferrite_bdev::unregister("WzNoWrite", None, |r| r.unwrap())
    });
    h.run_until_idle();
}

#[test]
fn unmap_and_write_zeroes_on_malloc_read_back_zeroes() {
    let mut h = Harness::new(2, 93);
    h.on(0, || common::malloc("WzMal", 256, BS as u32, 0));
    let b = ferrite_bdev::lookup("WzMal").unwrap();
    assert!(b.io_type_supported(IoType::Unmap));
    assert!(b.io_type_supported(IoType::WriteZeroes));
    let d = h.on(0, || Desc::open("WzMal", true, |_| {}).unwrap());
    let ch0 = h.on(0, || d.channel().unwrap());
    let ch1 = h.on(1, || d.channel().unwrap());
    let arena = Arena::default();
    let data = common::noise(3, 256 * BS);
    h.on(0, || {
        common::write_at(&ch0, &arena, 0, data.clone(), &[4096, 100], 1)
    });
    run_until(&mut h, "fill", || common::done_count() == 1);
    assert_eq!(take_done()[0].status, IoStatus::Success);
    h.on(1, || {
        common::submit_plain(&ch1, 2, |io| {
            io.prep_unmap(10, 20, common::record);
        });
        common::submit_plain(&ch1, 3, |io| {
            io.prep_write_zeroes(100, 37, common::record);
        });
    });
    run_until(&mut h, "unmap + write_zeroes", || common::done_count() == 2);
    assert!(take_done().iter().all(|d| d.status == IoStatus::Success));
    let i = h.on(0, || common::read_at(&ch0, &arena, 0, 256, &[777], 4));
    run_until(&mut h, "read", || common::done_count() == 1);
    take_done();
    let got = arena.get(i);
    let mut want = data.clone();
    want[10 * BS..30 * BS].fill(0);
    want[100 * BS..137 * BS].fill(0);
    assert!(
        got == want,
        "contents differ from the expected zeroed ranges"
    );
    h.on(0, || drop(ch0));
    h.on(1, || drop(ch1));
    drop(d);
    h.on(0, || ferrite_malloc::delete("WzMal", |r| r.unwrap()));
    h.run_until_idle();
}
