//! The public ring type, [`Vring`], dispatching to the split or packed implementation.

use crate::inflight::InflightQueue;
use crate::packed::PackedRing;
use crate::split::SplitRing;
use crate::{Chain, GuestMemory, PopBatch, RingError, MAX_QUEUE_SIZE};

/// Guest-physical addresses of a ring's three areas (after translation from the front-end's
/// user addresses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingAddrs {
    /// Descriptor table (split) or descriptor ring (packed); 16-byte aligned.
    pub desc: u64,
    /// Split: the available ring (2-byte aligned). Packed: the driver event suppression
    /// structure (4-byte aligned).
    pub driver: u64,
    /// Split: the used ring (4-byte aligned). Packed: the device event suppression structure
    /// (4-byte aligned).
    pub device: u64,
}

/// How a ring is set up: from VHOST_USER_SET_VRING_NUM / _ADDR and the negotiated features.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// Queue size: split rings a power of two, both at most [`MAX_QUEUE_SIZE`].
    pub size: u16,
    /// Where the ring lives.
    pub addrs: RingAddrs,
    /// VIRTIO_F_RING_PACKED was negotiated.
    pub packed: bool,
    /// VIRTIO_F_RING_EVENT_IDX was negotiated.
    pub event_idx: bool,
    /// VIRTIO_F_INDIRECT_DESC was negotiated.
    pub indirect: bool,
}

/// A ring's position, as VHOST_USER_SET_VRING_BASE / GET_VRING_BASE carry it.
///
/// Split ring: `avail` is the next available-ring index the device will read (last_avail_idx);
/// `used` is not used on input (the used index is read from the used ring) and reported on
/// output. Packed ring: `avail` is the next descriptor-ring index the device will read with
/// its wrap counter in bit 15, `used` the next descriptor-ring index the device will write a
/// used descriptor at, with its wrap counter in bit 15.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingBase {
    /// Split: last_avail_idx. Packed: last_avail_idx | avail_wrap_counter << 15.
    pub avail: u16,
    /// Packed: used_idx | used_wrap_counter << 15. Split: used index (output only).
    pub used: u16,
}

impl RingBase {
    /// The position of a new ring: index 0, wrap counters 1 (packed).
    pub fn initial(packed: bool) -> Self {
        let v = if packed { 1 << 15 } else { 0 };
        RingBase { avail: v, used: v }
    }

    /// Decodes the 32-bit `num` of a vring state message: bits 0–15 the avail side, bits
    /// 16–31 the used side. A front-end that sends only the avail side (upper half zero)
    /// means "nothing in flight": used = avail.
    pub fn from_vhost(num: u32, packed: bool) -> Self {
        let avail = num as u16;
        let used = (num >> 16) as u16;
        if packed && used == 0 {
            RingBase { avail, used: avail }
        } else {
            RingBase { avail, used }
        }
    }

    /// Encodes for GET_VRING_BASE: split rings report last_avail_idx alone; packed rings the
    /// avail side in bits 0–15 and the used side in bits 16–31.
    pub fn to_vhost(self, packed: bool) -> u32 {
        if packed {
            u32::from(self.avail) | (u32::from(self.used) << 16)
        } else {
            u32::from(self.avail)
        }
    }
}

/// A step at which a test can make a ring stop, as if the process crashed there (with the
/// `fault-injection` feature, `Vring::inject_crash`). The method returns an error at that
/// step; the test then drops the ring and recovers from the inflight region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// `pop`: the chain is consumed from the ring but only partly recorded in the region.
    PopPartial,
    /// `publish`: the region has the batch's bookkeeping, the driver does not see the batch.
    PublishBeforeVisible,
    /// `publish`: the driver sees the batch, the region does not record it yet.
    PublishAfterVisible,
}

pub(crate) fn crash(at: Option<CrashPoint>, here: CrashPoint) -> Result<(), RingError> {
    if at == Some(here) {
        return Err(RingError::Usage("injected crash"));
    }
    Ok(())
}

enum Kind {
    Split(SplitRing),
    Packed(PackedRing),
}

/// One virtqueue, device side. Owned by one reactor thread (see the crate's thread contract).
///
/// Typical loop: `pop` chains until it returns `Ok(false)`, handle each (completing later with
/// `push_used`), `publish` after a batch of completions and signal the call eventfd if it
/// returns true; before sleeping on the kick eventfd, `enable_notify` and sleep only if it
/// returns false; `disable_notify` while polling.
pub struct Vring {
    cfg: RingConfig,
    kind: Kind,
}

impl Vring {
    /// Sets up a ring on guest memory. Checks the size (power of two for split, 1..=32768),
    /// the areas' alignment and that they lie wholly in `mem`; a split ring reads its used
    /// index from the used ring. Nothing is written to guest memory.
    pub fn new(mem: &GuestMemory, cfg: RingConfig, base: RingBase) -> Result<Self, RingError> {
        if cfg.size == 0 || cfg.size > MAX_QUEUE_SIZE {
            return Err(RingError::Config(format!(
                "queue size {} not in 1..={MAX_QUEUE_SIZE}",
                cfg.size
            )));
        }
        let kind = if cfg.packed {
            Kind::Packed(PackedRing::new(mem, &cfg, base)?)
        } else {
            if !cfg.size.is_power_of_two() {
                return Err(RingError::Config(format!(
                    "split queue size {} is not a power of two",
                    cfg.size
                )));
            }
            Kind::Split(SplitRing::new(mem, &cfg, base)?)
        };
        Ok(Vring { cfg, kind })
    }

    /// The configuration the ring was built with.
    pub fn config(&self) -> &RingConfig {
        &self.cfg
    }

    /// The ring's position, for VHOST_USER_GET_VRING_BASE (see [`RingBase::to_vhost`]).
    pub fn base(&self) -> RingBase {
        match &self.kind {
            Kind::Split(r) => r.base(),
            Kind::Packed(r) => r.base(),
        }
    }

    /// Pops the next chain into `out`. `Ok(true)`: `out` holds a valid chain. `Ok(false)`:
    /// nothing available. `Err` with [`crate::ErrorKind::Chain`]: the chain was bad; it is
    /// consumed and in flight (`out.id()` is its id, `out.segments()` is empty): write the
    /// error status into [`RingError::status_hint`] and complete it with `push_used`, or,
    /// with no hint, complete it with `push_used(id, 0)` or treat the device as broken.
    /// Other errors: the ring is broken, stop using it.
    ///
    /// After [`Vring::attach_inflight`] found chains in flight, those come first (as
    /// [`Vring::pop_resubmit`] returns them), then new ones. With a region attached every
    /// popped chain is recorded in it before this returns.
    pub fn pop(&mut self, mem: &GuestMemory, out: &mut Chain) -> Result<bool, RingError> {
        match &mut self.kind {
            Kind::Split(r) => r.pop(mem, out),
            Kind::Packed(r) => r.pop(mem, out),
        }
    }

    /// [`Vring::pop`] from `batch`'s memory, reusing the region lookups of the batch's earlier
    /// pops (the ring's region and the last request's buffer region): a queue's poll pops
    /// its chains through one [`PopBatch`]. Same results and errors as `pop`.
    #[inline]
    pub fn pop_in(&mut self, batch: &mut PopBatch<'_>, out: &mut Chain) -> Result<bool, RingError> {
        match &mut self.kind {
            Kind::Split(r) => r.pop_in(batch, out),
            Kind::Packed(r) => r.pop(batch.mem, out),
        }
    }

    /// Pops only the chains found in flight by [`Vring::attach_inflight`], in the order they
    /// were first submitted; `Ok(false)` once none is left.
    pub fn pop_resubmit(&mut self, mem: &GuestMemory, out: &mut Chain) -> Result<bool, RingError> {
        match &mut self.kind {
            Kind::Split(r) => r.pop_resubmit(mem, out),
            Kind::Packed(r) => r.pop_resubmit(mem, out),
        }
    }

    /// Chains found in flight by `attach_inflight` that `pop`/`pop_resubmit` have not
    /// returned yet.
    pub fn resubmit_pending(&self) -> usize {
        match &self.kind {
            Kind::Split(r) => r.resubmit_pending(),
            Kind::Packed(r) => r.resubmit_pending(),
        }
    }

    /// Number of chains popped and not yet pushed.
    pub fn in_flight(&self) -> usize {
        match &self.kind {
            Kind::Split(r) => r.in_flight(),
            Kind::Packed(r) => r.in_flight(),
        }
    }

    /// Returns chain `id` to the driver with `written` bytes written into its device-writable
    /// buffers. The entry becomes visible to the driver at the next [`Vring::publish`] (a
    /// packed ring's later entries may be visible earlier, never before the batch's first).
    /// An id that is not in flight is [`crate::ErrorKind::Usage`].
    #[inline]
    pub fn push_used(&mut self, mem: &GuestMemory, id: u16, written: u32) -> Result<(), RingError> {
        match &mut self.kind {
            Kind::Split(r) => r.push_used(mem, id, written),
            Kind::Packed(r) => r.push_used(mem, id, written),
        }
    }

    /// Makes the entries pushed since the last publish visible (release ordering), updates the
    /// inflight region, and tells whether the driver must be notified (signal the call
    /// eventfd): by used_event (split, EVENT_IDX), the driver event suppression structure
    /// (packed) or VIRTQ_AVAIL_F_NO_INTERRUPT. `Ok(false)` when nothing was pushed.
    pub fn publish(&mut self, mem: &GuestMemory) -> Result<bool, RingError> {
        match &mut self.kind {
            Kind::Split(r) => r.publish(mem),
            Kind::Packed(r) => r.publish(mem),
        }
    }

    /// Asks the driver not to kick (the reactor polls the ring). Advisory: kicks may still come.
    pub fn disable_notify(&mut self, mem: &GuestMemory) -> Result<(), RingError> {
        match &mut self.kind {
            Kind::Split(r) => r.disable_notify(mem),
            Kind::Packed(r) => r.disable_notify(mem),
        }
    }

    /// Asks the driver to kick for the next available buffer, then (after a full fence)
    /// checks the ring again: `Ok(true)` means work arrived meanwhile and the caller must not
    /// sleep; `Ok(false)` means any later buffer will be kicked.
    pub fn enable_notify(&mut self, mem: &GuestMemory) -> Result<bool, RingError> {
        match &mut self.kind {
            Kind::Split(r) => r.enable_notify(mem),
            Kind::Packed(r) => r.enable_notify(mem),
        }
    }

    /// Makes the ring stop at `at` the next time it gets there (tests of crash recovery).
    #[cfg(feature = "fault-injection")]
    pub fn inject_crash(&mut self, at: CrashPoint) {
        match &mut self.kind {
            Kind::Split(r) => r.crash = Some(at),
            Kind::Packed(r) => r.crash = Some(at),
        }
    }

    /// Attaches this queue's part of the inflight region (VHOST_USER_SET_INFLIGHT_FD), before
    /// the first pop. A fresh region (version 0) is initialised. A used region is validated
    /// (version, desc_num against the queue size, indices, chain links), the last batch is
    /// committed or rolled back as the vhost-user specification says, the ring's position is
    /// recovered from it (split: used index in guest memory plus the number in flight; packed:
    /// the region's used position plus the descriptors in flight), and the chains in flight
    /// are queued for resubmission in submission order. A region that does not validate is
    /// [`crate::ErrorKind::Inflight`] and the ring is left unchanged.
    pub fn attach_inflight(
        &mut self,
        mem: &GuestMemory,
        q: InflightQueue,
    ) -> Result<(), RingError> {
        match &mut self.kind {
            Kind::Split(r) => r.attach_inflight(mem, q),
            Kind::Packed(r) => r.attach_inflight(mem, q),
        }
    }
}
