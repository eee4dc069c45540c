//! Fan-out children (`BdevChannel::forward_child`): a test-only mirroring bdev sends every
//! I/O to each of its bases as a child that comes back to a hook; the last child's hook
//! returns the parent, which completes on the mirror's layer in the same step. Checked: data
//! on every base, statistics on the mirror and on each base, completion never inside submit,
//! a child the base refuses reaching the hook as `Invalid` (never inside submit), a delayed
//! base (children completing later, in any order), nothing left in flight.
// Helpers outside #[test] functions unwrap too: this is test code.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{iostat, open_channel, run_until, take_done, Arena, StackedKind, TestCfg, TestState};
use ferrite_bdev::{BackendChannel, BdevChannel, BdevIo, IoStatus, IoType};
use ferrite_reactor::harness::Harness;

const BS: u32 = 512;

struct MirrorChannel {
    bases: Vec<BdevChannel>,
}

impl BackendChannel for MirrorChannel {
    fn submit(&mut self, mut parent: Box<BdevIo>) {
        let (t, off, n) = (
            parent.io_type(),
            parent.offset_blocks(),
            parent.num_blocks(),
        );
        let bytes = n * u64::from(BS);
        // Words 0 and 1 of the parent: children left, worst status seen (0: success).
        parent.driver_ctx[0] = self.bases.len() as u64;
        parent.driver_ctx[1] = 0;
        let p = Box::into_raw(parent);
        // SAFETY: leaked just above; read only until the last child's hook takes it back,
        // which cannot happen before this returns (nothing completes inside a submit).
        let pr: &BdevIo = unsafe { &*p };
        for ch in &self.bases {
            let mut c = ferrite_bdev::alloc_io().unwrap();
            match t {
                IoType::Write => c.prep_write(off, n, unused_cb),
                _ => c.prep_read(off, n, unused_cb),
            };
            // SAFETY: the parent's own segments; it completes only after its children.
            unsafe { c.append_iovs_from(pr.iovs(), 0, bytes) };
            ch.forward_child(c, pr, off, child_done, [p as u64, 0, 0]);
        }
    }
}

fn unused_cb(c: Box<BdevIo>) {
    panic!("a fan-out child's callback ran: {c:?}");
}

fn child_done(child: Box<BdevIo>, w: [u64; 3]) -> Option<Box<BdevIo>> {
    let p = w[0] as *mut BdevIo;
    let failed = child.status() != IoStatus::Success;
    ferrite_bdev::free_io(child);
    // SAFETY: the parent leaked by `submit`, in flight until its last child is back; the
    // children come back one at a time on this thread.
    let pr = unsafe { &mut *p };
    if failed {
        pr.driver_ctx[1] = 1;
    }
    pr.driver_ctx[0] -= 1;
    if pr.driver_ctx[0] > 0 {
        return None;
    }
    // SAFETY: the last child: nothing else refers to the parent.
    let parent = unsafe { Box::from_raw(p) };
    let status = match parent.driver_ctx[1] {
        0 => IoStatus::Success,
        _ => IoStatus::Invalid,
    };
    Some(parent.with_status(status))
}

const MIRROR: StackedKind = StackedKind {
    module: "mirror_test",
    types: &[IoType::Read, IoType::Write],
    product: "Mirror test disk",
};

fn mirror(name: &str, bases: &[&str], num_blocks: u64) {
    let make: common::MakeChannel = Box::new(|bases| Box::new(MirrorChannel { bases }));
    common::register_stacked(&MIRROR, name, bases, BS, num_blocks, true, make);
}

fn base(name: &str, num_blocks: u64, cfg: TestCfg) -> Arc<TestState> {
    common::register_test(name, BS, num_blocks, cfg).1
}

#[test]
fn children_fan_out_and_the_parent_completes_in_its_last_childs_step() {
    let mut h = Harness::new(1, 21);
    let delayed = TestCfg {
        delay_seed: Some(5),
        ..TestCfg::default()
    };
    let (a, b) = h.on(0, move || {
        let a = base("FcA", 256, TestCfg::default());
        let b = base("FcB", 256, delayed);
        mirror("FcTop", &["FcA", "FcB"], 256);
        (a, b)
    });
    let (_d, ch) = open_channel(&mut h, "FcTop");
    let arena = Arena::default();
    let data = common::noise(3, 8 * BS as usize);
    h.on(0, || {
        common::write_at(
            &ch,
            &arena,
            40,
            data.clone(),
            &[BS as usize * 3, BS as usize * 5],
            1,
        );
        common::write_at(&ch, &arena, 100, data.clone(), &[], 2);
        assert_eq!(common::done_count(), 0, "completed inside submit");
    });
    run_until(&mut h, "writes", || common::done_count() == 2);
    let i = h.on(0, || {
        let i = common::read_at(&ch, &arena, 40, 8, &[], 3);
        assert_eq!(common::done_count(), 2, "completed inside submit");
        i
    });
    run_until(&mut h, "read", || common::done_count() == 3);
    let done = take_done();
    assert!(
        done.iter().all(|d| d.status == IoStatus::Success),
        "{done:?}"
    );
    assert_eq!(arena.get(i), data);
    for st in [&a, &b] {
        assert_eq!(st.ram_blocks(40, 8), data);
        assert_eq!(st.ram_blocks(100, 8), data);
    }
    let top = iostat(&mut h, "FcTop");
    assert_eq!((top.write.ops, top.read.ops), (2, 1));
    assert_eq!(top.write.bytes, 16 * u64::from(BS));
    for name in ["FcA", "FcB"] {
        let s = iostat(&mut h, name);
        assert_eq!((s.write.ops, s.read.ops), (2, 1), "{name}");
        assert_eq!(s.write.bytes, 16 * u64::from(BS), "{name}");
    }
    assert!(top.write.min_latency_ticks > 0);
    h.on(0, || {
        assert_eq!(ch.inflight(), 0);
        drop(ch)
    });
}

#[test]
fn a_child_the_base_refuses_reaches_the_hook_as_invalid() {
    let mut h = Harness::new(1, 22);
    // The mirror claims more blocks than its second base has (a module bug, caught).
    let (a, b) = h.on(0, || {
        let a = base("FcC", 256, TestCfg::default());
        let b = base("FcD", 64, TestCfg::default());
        mirror("FcTop2", &["FcC", "FcD"], 256);
        (a, b)
    });
    let (_d, ch) = open_channel(&mut h, "FcTop2");
    let arena = Arena::default();
    let data = common::noise(9, 4 * BS as usize);
    h.on(0, || {
        common::write_at(&ch, &arena, 100, data.clone(), &[], 1);
        common::write_at(&ch, &arena, 10, data.clone(), &[], 2);
        assert_eq!(common::done_count(), 0, "completed inside submit");
    });
    run_until(&mut h, "writes", || common::done_count() == 2);
    let mut done = take_done();
    done.sort_by_key(|d| d.tag);
    assert_eq!(done[0].status, IoStatus::Invalid);
    assert_eq!(done[1].status, IoStatus::Success);
    // The first base took both writes, the short one only the one in its range.
    assert_eq!(a.submits.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(b.submits.load(std::sync::atomic::Ordering::SeqCst), 1);
    h.on(0, || {
        assert_eq!(ch.inflight(), 0);
        drop(ch)
    });
}
