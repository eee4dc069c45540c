//! The forwarding fast path (`BdevChannel::forward` / `forward_with`): a stacked bdev hands
//! the same I/O object to its base. Checked here with a test-only stacked backend over the
//! test backend: statistics on both bdevs, completion never inside submit, offsets restored,
//! reset of the stacked bdev draining I/O held on the base, NOMEM retried on the base, a hook
//! retrying on another base, stacks deeper than the frame stack, range checks, a refused
//! forward reaching its hook (also past the frame stack), and a base that splits what it is
//! forwarded.
// Helpers outside #[test] functions unwrap too: this is test code.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{iostat, open_channel, run_until, take_done, Arena, StackedKind, TestCfg, TestState};
use ferrite_bdev::{BackendChannel, BdevChannel, BdevIo, IoStatus, IoType, MAX_FORWARD_DEPTH};
use ferrite_reactor::harness::Harness;

const BS: u32 = 512;

/// How the stacked test bdev forwards.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `forward` to base 0 at `offset + shift`.
    Plain { shift: u64 },
    /// `forward_with` a hook to base 0; on failure the hook forwards again to the next base.
    Retry,
}

struct FwdChannel {
    bases: Vec<BdevChannel>,
    mode: Mode,
    hooks: Arc<Hooks>,
}

/// What the hooks of one stacked bdev saw.
#[derive(Default)]
struct Hooks {
    /// Hook calls.
    calls: AtomicUsize,
    /// Hook calls with `IoStatus::Invalid`.
    invalid: AtomicUsize,
}

impl BackendChannel for FwdChannel {
    fn submit(&mut self, io: Box<BdevIo>) {
        let off = io.offset_blocks();
        match self.mode {
            Mode::Plain { shift } => self.bases[0].forward(io, off + shift),
            Mode::Retry => {
                let me = self as *const FwdChannel as u64;
                self.bases[0].forward_with(io, off, Some(retry_hook), [me, 0, 0]);
            }
        }
    }
}

/// On failure, forward again to the next base (as raid1 reads do); else complete.
fn retry_hook(io: Box<BdevIo>, ctx: [u64; 3]) -> Option<Box<BdevIo>> {
    // SAFETY: the channel outlives the I/O it forwarded (channel state is freed only when
    // idle, and this I/O is still counted on it).
    let ch = unsafe { &*(ctx[0] as *const FwdChannel) };
    ch.hooks.calls.fetch_add(1, Ordering::SeqCst);
    if io.status() == IoStatus::Invalid {
        ch.hooks.invalid.fetch_add(1, Ordering::SeqCst);
    }
    let next = ctx[1] as usize + 1;
    if io.status() != IoStatus::Success && next < ch.bases.len() {
        let off = io.offset_blocks();
        ch.bases[next].forward_with(io, off, Some(retry_hook), [ctx[0], next as u64, 0]);
        return None;
    }
    Some(io)
}

const FWD: StackedKind = StackedKind {
    module: "fwd_test",
    types: &[IoType::Read, IoType::Write, IoType::Flush, IoType::Reset],
    product: "Forwarding test disk",
};

/// Registers a stacked bdev `name` of `num_blocks` over `bases` (call on a harness thread).
fn stack(name: &str, bases: &[&str], num_blocks: u64, mode: Mode) -> Arc<Hooks> {
    let hooks = Arc::new(Hooks::default());
    let h = hooks.clone();
    let make: common::MakeChannel = Box::new(move |bases| {
        Box::new(FwdChannel {
            bases,
            mode,
            hooks: h.clone(),
        })
    });
    common::register_stacked(&FWD, name, bases, BS, num_blocks, true, make);
    hooks
}

fn base(name: &str, num_blocks: u64, cfg: TestCfg) -> Arc<TestState> {
    common::register_test(name, BS, num_blocks, cfg).1
}

#[test]
fn forwarded_io_is_counted_on_both_bdevs_and_lands_at_the_remapped_offset() {
    let mut h = Harness::new(1, 11);
    let st = h.on(0, || base("FwBase1", 256, TestCfg::default()));
    h.on(0, || {
        stack("FwTop1", &["FwBase1"], 200, Mode::Plain { shift: 16 })
    });
    let (_d, ch) = open_channel(&mut h, "FwTop1");
    let arena = Arena::default();
    let data = common::noise(7, 4 * BS as usize);
    h.on(0, || {
        common::write_at(&ch, &arena, 10, data.clone(), &[BS as usize], 1);
        assert_eq!(common::done_count(), 0, "completed inside submit");
    });
    run_until(&mut h, "write", || common::done_count() == 1);
    let i = h.on(0, || {
        let i = common::read_at(&ch, &arena, 10, 4, &[], 2);
        assert_eq!(common::done_count(), 1, "completed inside submit");
        i
    });
    run_until(&mut h, "read", || common::done_count() == 2);
    let done = take_done();
    assert!(
        done.iter().all(|d| d.status == IoStatus::Success),
        "{done:?}"
    );
    // The submitter sees its own offset back, not the base's.
    assert!(
        done.iter().all(|d| d.offset == 10 && d.num == 4),
        "{done:?}"
    );
    assert_eq!(arena.get(i), data);
    assert_eq!(
        st.ram_blocks(26, 4),
        data,
        "written at offset + 16 on the base"
    );

    let top = iostat(&mut h, "FwTop1");
    let bot = iostat(&mut h, "FwBase1");
    for s in [&top, &bot] {
        assert_eq!((s.read.ops, s.read.bytes), (1, 4 * u64::from(BS)));
        assert_eq!((s.write.ops, s.write.bytes), (1, 4 * u64::from(BS)));
        assert!(s.read.min_latency_ticks > 0 && s.write.min_latency_ticks > 0);
    }
    // One clock read at each end, shared: the same latency on both layers.
    assert_eq!(top.read.latency_ticks, bot.read.latency_ticks);
    h.on(0, || {
        assert_eq!(ch.inflight(), 0);
        drop(ch)
    });
}

#[test]
fn reset_of_the_stacked_bdev_waits_for_io_held_on_the_base() {
    let mut h = Harness::new(1, 12);
    let st = h.on(0, || base("FwBase2", 256, TestCfg::default()));
    h.on(0, || {
        stack("FwTop2", &["FwBase2"], 256, Mode::Plain { shift: 0 })
    });
    let (_d, ch) = open_channel(&mut h, "FwTop2");
    common::reset_waits_for_io_held_on_the_base(&mut h, ch, &st);
}

#[test]
fn nomem_on_the_base_is_retried_there() {
    let mut h = Harness::new(1, 13);
    let st = h.on(0, || base("FwBase3", 256, TestCfg::default()));
    h.on(0, || {
        stack("FwTop3", &["FwBase3"], 256, Mode::Plain { shift: 0 })
    });
    let (_d, ch) = open_channel(&mut h, "FwTop3");
    let arena = Arena::default();
    st.nomem_left.store(3, Ordering::SeqCst);
    h.on(0, || {
        common::write_at(&ch, &arena, 3, common::pattern(0xfeed, BS as usize), &[], 1)
    });
    run_until(&mut h, "write", || common::done_count() == 1);
    assert_eq!(take_done()[0].status, IoStatus::Success);
    assert_eq!(st.submits.load(Ordering::SeqCst), 4);
    assert_eq!(st.ram_blocks(3, 1), common::pattern(0xfeed, BS as usize));
    let bot = iostat(&mut h, "FwBase3");
    let top = iostat(&mut h, "FwTop3");
    assert!(bot.nomem_retries >= 1, "{bot:?}");
    assert_eq!((top.write.ops, bot.write.ops, top.nomem_retries), (1, 1, 0));
    h.on(0, || drop(ch));
}

#[test]
fn a_hook_sees_the_result_and_can_retry_on_another_base() {
    let mut h = Harness::new(1, 14);
    let a = h.on(0, || base("FwBase4a", 64, TestCfg::default()));
    let b = h.on(0, || base("FwBase4b", 64, TestCfg::default()));
    b.fill_ram(5, 2, 0x5b);
    let hooks = h.on(0, || {
        stack("FwTop4", &["FwBase4a", "FwBase4b"], 64, Mode::Retry)
    });
    let (_d, ch) = open_channel(&mut h, "FwTop4");
    let arena = Arena::default();
    a.hold.store(true, Ordering::SeqCst);
    let i = h.on(0, || common::read_at(&ch, &arena, 5, 2, &[], 3));
    run_until(&mut h, "held on a", || a.held_count() == 1);
    h.on(0, || a.release_here(|_| IoStatus::Failed));
    run_until(&mut h, "read", || common::done_count() == 1);
    let d = take_done();
    assert_eq!(
        (d[0].status, d[0].offset, d[0].num),
        (IoStatus::Success, 5, 2)
    );
    assert_eq!(
        arena.get(i),
        vec![0x5b; 2 * BS as usize],
        "read from the second base"
    );
    assert_eq!(
        hooks.calls.load(Ordering::SeqCst),
        2,
        "one hook call per base tried"
    );
    let (sa, sb, top) = (
        iostat(&mut h, "FwBase4a"),
        iostat(&mut h, "FwBase4b"),
        iostat(&mut h, "FwTop4"),
    );
    assert_eq!((sa.failed, sa.read.ops), (1, 1));
    assert_eq!((sb.read.ops, top.read.ops, top.failed), (1, 1, 0));
    // Latency of the retried read runs to the second base's completion.
    assert!(top.read.latency_ticks >= sb.read.latency_ticks);
    h.on(0, || drop(ch));
}

#[test]
fn a_stack_deeper_than_the_frame_stack_still_works() {
    let mut h = Harness::new(1, 15);
    let st = h.on(0, || base("FwDeep0", 512, TestCfg::default()));
    let layers = MAX_FORWARD_DEPTH + 3;
    for k in 1..=layers {
        let below = format!("FwDeep{}", k - 1);
        let name = format!("FwDeep{k}");
        h.on(0, || {
            stack(&name, &[&below], 512 - k as u64, Mode::Plain { shift: 1 })
        });
    }
    let top = format!("FwDeep{layers}");
    let (_d, ch) = open_channel(&mut h, &top);
    let arena = Arena::default();
    let data = common::noise(3, 2 * BS as usize);
    h.on(0, || {
        common::write_at(&ch, &arena, 0, data.clone(), &[100], 1)
    });
    run_until(&mut h, "write", || common::done_count() == 1);
    let i = h.on(0, || common::read_at(&ch, &arena, 0, 2, &[], 2));
    run_until(&mut h, "read", || common::done_count() == 2);
    let done = take_done();
    assert!(
        done.iter().all(|d| d.status == IoStatus::Success),
        "{done:?}"
    );
    assert_eq!(arena.get(i), data);
    assert_eq!(
        st.ram_blocks(layers as u64, 2),
        data,
        "one block of shift per layer"
    );
    for k in 0..=layers {
        let s = iostat(&mut h, &format!("FwDeep{k}"));
        assert_eq!((s.read.ops, s.write.ops), (1, 1), "layer {k}");
    }
    h.on(0, || {
        assert_eq!(ch.inflight(), 0);
        drop(ch)
    });
}

#[test]
fn a_range_outside_the_base_is_invalid() {
    let mut h = Harness::new(1, 16);
    let st = h.on(0, || base("FwBase6", 100, TestCfg::default()));
    // The stacked bdev claims more blocks than its base has (a module bug, caught).
    h.on(0, || {
        stack("FwTop6", &["FwBase6"], 200, Mode::Plain { shift: 0 })
    });
    let (_d, ch) = open_channel(&mut h, "FwTop6");
    let arena = Arena::default();
    h.on(0, || {
        common::read_at(&ch, &arena, 98, 4, &[], 1);
        common::read_at(&ch, &arena, 90, 4, &[], 2);
        assert_eq!(common::done_count(), 0, "completed inside submit");
    });
    run_until(&mut h, "reads", || common::done_count() == 2);
    let mut done = take_done();
    done.sort_by_key(|d| d.tag);
    assert_eq!(done[0].status, IoStatus::Invalid);
    assert_eq!(done[1].status, IoStatus::Success);
    assert_eq!(st.submits.load(Ordering::SeqCst), 1);
    h.on(0, || {
        assert_eq!(ch.inflight(), 0);
        drop(ch)
    });
}

/// A forward with a hook that the base refuses (here: a range outside it) reaches the hook
/// once, with `Invalid`, after the submit returned; the hook decides (here: no other base,
/// so the I/O completes with the base's status). `layers_above` plain forwarders stacked on
/// top fill the frame stack (then the refusal takes the deferred path).
fn refused_forward_runs_the_hook(seed: u64, tag: &str, layers_above: usize) {
    let mut h = Harness::new(1, seed);
    h.on(0, || {
        base(&format!("FwRef{tag}Base"), 100, TestCfg::default())
    });
    let hooks = h.on(0, || {
        // The stacked bdev claims more blocks than its base has (a module bug, caught).
        stack(
            &format!("FwRef{tag}0"),
            &[&format!("FwRef{tag}Base")],
            200,
            Mode::Retry,
        )
    });
    for k in 1..=layers_above {
        let below = format!("FwRef{tag}{}", k - 1);
        let name = format!("FwRef{tag}{k}");
        h.on(0, || stack(&name, &[&below], 200, Mode::Plain { shift: 0 }));
    }
    let (_d, ch) = open_channel(&mut h, &format!("FwRef{tag}{layers_above}"));
    let arena = Arena::default();
    h.on(0, || {
        common::read_at(&ch, &arena, 98, 4, &[], 1);
        assert_eq!(
            hooks.calls.load(Ordering::SeqCst),
            0,
            "hook ran inside submit"
        );
        assert_eq!(common::done_count(), 0, "completed inside submit");
    });
    run_until(&mut h, "refused read", || common::done_count() == 1);
    let done = take_done();
    assert_eq!(done[0].status, IoStatus::Invalid, "{done:?}");
    assert_eq!((done[0].offset, done[0].num), (98, 4));
    assert_eq!(hooks.calls.load(Ordering::SeqCst), 1, "one hook call");
    assert_eq!(hooks.invalid.load(Ordering::SeqCst), 1, "with Invalid");
    // Accounted once on the forwarding layer, as a failed read, and not on the base.
    let top = iostat(&mut h, &format!("FwRef{tag}0"));
    let bot = iostat(&mut h, &format!("FwRef{tag}Base"));
    assert_eq!((top.read.ops, top.failed), (1, 1));
    assert_eq!((bot.read.ops, bot.failed), (0, 0));
    h.on(0, || {
        assert_eq!(ch.inflight(), 0);
        drop(ch)
    });
}

#[test]
fn a_refused_forward_reaches_its_hook_with_invalid() {
    refused_forward_runs_the_hook(18, "A", 0);
}

#[test]
fn a_refused_forward_past_the_frame_stack_reaches_its_hook() {
    refused_forward_runs_the_hook(19, "B", MAX_FORWARD_DEPTH);
}

#[test]
fn the_base_splits_what_it_is_forwarded_on_its_own_boundary() {
    let mut h = Harness::new(1, 17);
    let cfg = TestCfg {
        boundary: 8,
        ..TestCfg::default()
    };
    let st = h.on(0, || base("FwBase7", 256, cfg));
    h.on(0, || {
        stack("FwTop7", &["FwBase7"], 256, Mode::Plain { shift: 0 })
    });
    let (_d, ch) = open_channel(&mut h, "FwTop7");
    common::base_splits_what_it_is_forwarded(&mut h, ch, &st, ("FwTop7", "FwBase7"), BS);
}
