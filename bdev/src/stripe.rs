//! The striped route (`BackendChannel::forward_striped`): a striped stacked bdev (raid0 over
//! a power-of-two number of members) hands the bdev layer its members and geometry once per
//! channel, and the layer forwards each read or write within one strip to its member itself
//! (see ARCHITECTURE.md, "Forwarding"). Kept by the layer in `forward::Fwd`, in the place of
//! a `forward_all` base.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::channel::{BdevChannel, ChannelState};
use crate::io::{BdevIo, FLAG_COUNTED};
use crate::types::IoType;
use crate::Bdev;

/// What a striped stacked bdev's backend channel hands the bdev layer
/// ([`crate::BackendChannel::forward_striped`]): raid block `b` in strip `s = b >> strip_shift`
/// lives on member `s % n` at block `(s / n << strip_shift) + b % strip + data_offset` of it.
pub struct StripeMap {
    /// This thread's channel to each member, in stripe order (a power of two of them, at
    /// most 64), with the first data block on that member. The layer keeps these handles
    /// (see [`BdevChannel::try_clone`]) as long as the striped bdev's channel.
    pub members: Vec<(BdevChannel, u64)>,
    /// log2 of the strip size in blocks.
    pub strip_shift: u32,
    /// Read before each forward: while it is non-zero (e.g. a member failed or is being
    /// removed), every I/O goes to the backend's `submit`. Any thread may set it.
    pub gate: Arc<AtomicU64>,
}

/// A [`StripeMap`] whose per-member checks were settled at channel creation.
pub(crate) struct Striped {
    /// Keeps the members' channel states in `targets` alive.
    _members: Vec<BdevChannel>,
    /// Each member's channel state and first data block.
    targets: Box<[(NonNull<ChannelState>, u64)]>,
    strip_shift: u32,
    /// Blocks per strip - 1.
    strip_mask: u64,
    /// log2 of the member count.
    n_shift: u32,
    /// Members - 1 (`targets.len() - 1`, a power of two minus one).
    n_mask: u64,
    gate: Arc<AtomicU64>,
}

// SAFETY: as `Fwd`: the pointers in `targets` are the states of channels `_members` keeps
// alive, checked at creation to belong to the striped layer's thread, and only dereferenced
// there; they move between OS threads only with the channel state that holds this.
unsafe impl Send for Striped {}

/// The types a striped route forwards itself (every other type goes to the backend).
const STRIPED_TYPES: u32 = (1 << IoType::Read as u8) | (1 << IoType::Write as u8);

impl Striped {
    pub(crate) fn new(map: StripeMap, upper: &Bdev, thread_id: u64) -> Option<Striped> {
        let n = map.members.len();
        if n == 0 || n > 64 || !n.is_power_of_two() || map.strip_shift >= 48 {
            return None;
        }
        let mut targets = Vec::with_capacity(n);
        for (ch, data_offset) in &map.members {
            let st = ch.st?;
            // SAFETY: the state belongs to the channel context `ch` keeps alive; this runs on
            // the thread creating the striped layer's channel, and only reads fields set at
            // the member channel's creation.
            let s = unsafe { st.as_ref() };
            let ok = s.thread_id == thread_id
                && s.bdev.block_size == upper.block_size
                && ch.allowed & STRIPED_TYPES == STRIPED_TYPES;
            if !ok {
                return None;
            }
            targets.push((st, *data_offset));
        }
        Some(Striped {
            _members: map.members.into_iter().map(|(c, _)| c).collect(),
            targets: targets.into_boxed_slice(),
            strip_shift: map.strip_shift,
            strip_mask: (1u64 << map.strip_shift) - 1,
            n_shift: n.trailing_zeros(),
            n_mask: n as u64 - 1,
            gate: map.gate,
        })
    }
}

/// What a striped layer's `dispatch_fast` does with an I/O (through `forward_fast`): a read
/// or write within one strip, with the gate open, goes to its member as `forward` would send
/// it, without the checks `Striped::new` settled (thread, block size, type accepted on the
/// member); only the member's range is checked, as it may have been resized. Anything else
/// goes to the backend's `submit`. Inlined into `forward_fast`.
#[inline(always)]
pub(crate) fn forward_striped(up: &ChannelState, s: &Striped, mut io: Box<BdevIo>) {
    let (o, l) = (io.offset_blocks, io.num_blocks);
    let shift = s.strip_shift;
    let strip = o >> shift;
    // No overflow: this layer checked the range against its own size.
    if io.io_type.bit() & STRIPED_TYPES == 0
        || l == 0
        || strip != (o + l - 1) >> shift
        || s.gate.load(Ordering::Acquire) != 0
    {
        return up.backend_submit(io);
    }
    let slot = (strip & s.n_mask) as usize;
    debug_assert!(slot < s.targets.len());
    // SAFETY: `n_mask` is `targets.len() - 1` with the length a power of two (`Striped::new`),
    // so the masked slot is in bounds.
    let &(st, data_offset) = unsafe { s.targets.get_unchecked(slot) };
    // SAFETY: the state belongs to a channel `s._members` keeps alive, and `Striped::new`
    // found it on this channel's thread, where this runs.
    let st = unsafe { st.as_ref() };
    let off = ((strip >> s.n_shift) << shift) + (o & s.strip_mask) + data_offset;
    if off + l > st.bdev.num_blocks() || !io.push_frame(off, None, [0; 3]) {
        // Outside a resized member, or past the frame stack: the backend decides.
        return up.backend_submit(io);
    }
    io.chan = Some(st.ptr());
    io.flags = FLAG_COUNTED;
    st.inflight.set(st.inflight.get() + 1);
    st.dispatch_forwarded(io);
}
