//! The rebuild (raid1 and raid5f): an explicit state machine that rebuilds a new member
//! window by window while normal I/O continues — raid1 copies from an in-sync member, raid5f
//! reconstructs each stripe's strip for the new member from all the others (data and
//! parity XOR to it).
//!
//! ```text
//!            ┌────────────────────────────────────────────────────────┐
//!            v                                                        │
//!  Idle → Locking → Reading → Writing → Advancing ──(more data)───────┘
//!            │         │  ↺(source failed:   │
//!            │         │   another source)   ├──(all copied)──→ Done
//!            │         └──(stop)──→ Advancing┴──(stop)────────→ Failed
//!            └──(stop)──────────────────────────────────────────→ Failed
//! ```
//!
//! - **Locking**: every channel of the raid locks the window `[offset, offset + len)` (writes
//!   to it wait; see `raid1`), and the walk finishes once the writes in flight when the lock
//!   was taken have completed.
//! - **Reading**: raid1: the window is read from an in-sync member (the lowest-numbered one
//!   left) into the machine's buffer; a failed read reports the member failed and tries the
//!   next source. raid5f: the window's stripes are read from every other member (one buffer
//!   each) and XORed together into the new member's strips; a failed read (a second member
//!   lost) stops the rebuild.
//! - **Writing**: the buffer is written to the target at the same place of its data area.
//!
//! Windows are in raid blocks; raid5f windows are whole stripes (the member range is the
//! same strip rows on every member).
//! - **Advancing**: every channel releases the window (the writes that waited go out, to the
//!   target too), then the offset moves on.
//! - **Done**: the target is an in-sync member (reads may use it; superblock updated).
//! - **Failed**: the copy stopped (target lost or failed, no source left, raid deleted).
//!
//! **Member loss at any state.** The control path calls [`Rebuild::member_lost`] before it
//! drops a member; the machine answers at its next *safe point* (no I/O or channel walk of
//! its own in flight: immediately if it is between steps or paused). Losing the target, or
//! the last source (raid5f: any source), sets the stop reason; a state that holds the window lock always goes
//! through Advancing to release it before Failed. Losing another source only removes it from
//! the choice of sources.
//!
//! Progress (`blocks`) is the offset of the first block not yet copied.
//!
//! **Checkpoints.** Every sixteenth of the raid (at least a window) the offset reached is
//! recorded in the superblock (the member's `rebuilt` field, state Rebuilding), by an
//! operation of the control path that does not hold the machine up. Everything below it has
//! been written to the target (and later writes there reach the target directly), so after
//! a restart, assembly resumes the copy there ([`Rebuild::start`]'s `from`).
//!
//! **Resync.** When the member coming back is the one that left in sync (removed, not
//! failed), the write-intent bitmap (see `raid1`) says which regions were written while it was
//! away; the machine then copies one region per window and skips unmarked windows (no lock,
//! no I/O), counting the blocks it copied.
//!
//! For tests, [`Rebuild::set_pause`] holds the machine on entering a state (before its
//! action), so that a member can be removed "in" that state; stopping overrides a pause.
//!
//! Files: this one holds the machine's state, its start and the calls the control path
//! makes; `machine` its transitions (safe points, entering and acting on a state, the end);
//! `window` the steps on one window (lock, read, write, release and advance).
//!
//! Thread contract: the machine runs on the thread that started it (the app thread); its
//! I/O completions and channel walks come back there.

use std::sync::{Arc, Mutex, MutexGuard, Weak};

use ferrite_bdev::{BdevChannel, Desc, DmaBuf, IoStatus};
use ferrite_reactor::IoDevice;

use crate::control::Raid;
use crate::ctlio::{CtlOp, CtlResult};
use crate::io::{ChanCtx, Shared};

mod machine;
mod window;

/// States of the rebuild machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebuildState {
    /// Created, not started.
    Idle,
    /// Locking the window on every channel.
    Locking,
    /// Reading the window from a source.
    Reading,
    /// Writing the window to the target.
    Writing,
    /// Releasing the window, then moving on.
    Advancing,
    /// Every block copied: the target is in sync.
    Done,
    /// Stopped before the end.
    Failed,
}

impl RebuildState {
    /// True for Done and Failed.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Done | Self::Failed)
    }
}

type Cont = Box<dyn FnOnce() + Send>;

struct Machine {
    state: RebuildState,
    /// First block not copied yet.
    offset: u64,
    /// Blocks in the current window.
    cur: u64,
    /// Blocks per window.
    window: u64,
    /// In-sync members to copy from.
    sources: u64,
    /// This thread's channels to the target and the sources.
    chans: Vec<Option<BdevChannel>>,
    /// Window buffers (raid1: one; raid5f: one per source); after a read the first holds
    /// what the target gets.
    bufs: Vec<DmaBuf>,
    /// An I/O or a channel walk of the machine is in flight.
    busy: bool,
    /// Members lost while busy, with what to run once they are let go.
    lost: Vec<(usize, Cont)>,
    stop: Option<String>,
    /// Run when the machine reaches Done or Failed.
    on_end: Vec<Cont>,
    pause_at: Option<RebuildState>,
    paused: bool,
    /// Copy only the windows the write-intent bitmap marks (a member coming back).
    resync: bool,
    /// Blocks actually copied.
    copied: u64,
    /// Offset last recorded in the superblock as the checkpoint.
    ckpt: u64,
}

/// One rebuild of one raid1 or raid5f member.
pub(crate) struct Rebuild {
    raid: Weak<Raid>,
    raid_name: String,
    /// Slot being rebuilt.
    pub target: usize,
    /// Name of the target base bdev.
    pub target_name: String,
    /// Blocks to copy (the raid's size).
    pub num_blocks: u64,
    block_size: u64,
    /// raid5f: (strip, stripe) in blocks; `None` for raid1.
    stripes: Option<(u64, u64)>,
    shared: Arc<Shared>,
    device: IoDevice<ChanCtx>,
    m: Mutex<Machine>,
}

/// Checkpoints recorded per rebuild (see [`Rebuild::checkpoint_stride`]).
const CHECKPOINTS: u64 = 16;

fn lowest(mask: u64) -> Option<usize> {
    (mask != 0).then(|| mask.trailing_zeros() as usize)
}

impl Rebuild {
    /// Creates the machine for `target` (copying from the members in `sources`), with channels
    /// on the calling thread through `descs` (indexed by slot), and starts it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        raid: &Arc<Raid>,
        target: usize,
        target_name: String,
        sources: u64,
        descs: &[Option<Arc<Desc>>],
        shared: Arc<Shared>,
        device: IoDevice<ChanCtx>,
        window_bytes: u64,
        pause_at: Option<RebuildState>,
        resync: bool,
        from: u64,
    ) -> Arc<Rebuild> {
        let bs = u64::from(shared.block_size);
        let num_blocks = shared.num_blocks;
        let mut chans: Vec<Option<BdevChannel>> = Vec::with_capacity(descs.len());
        for (slot, d) in descs.iter().enumerate() {
            let wanted = slot == target || sources & (1u64 << slot) != 0;
            chans.push(match d {
                Some(d) if wanted => d.channel().ok(),
                _ => None,
            });
        }
        let large = ferrite_bdev::buf::stats()
            .map(|s| s.large_size as u64)
            .unwrap_or(128 * 1024);
        let mut window = (window_bytes.min(large) / bs).max(1);
        if resync {
            // One bitmap region per window: exactly the marked regions are copied.
            window = window.min(shared.wib.region_blocks());
        }
        let stripes = (shared.level == crate::types::RaidLevel::Raid5f).then(|| {
            let strip = 1u64 << shared.strip_shift;
            (strip, strip * (shared.n as u64 - 1))
        });
        // Blocks per member per window, and the number of buffers.
        let (member_window, nbufs) = match stripes {
            Some((strip, stripe)) => {
                let rows = (window / strip).max(1);
                window = rows * stripe;
                (rows * strip, sources.count_ones() as usize)
            }
            None => (window, 1),
        };
        let bufs: Vec<DmaBuf> = (0..nbufs)
            .map_while(|_| DmaBuf::get((member_window * bs) as usize).ok().flatten())
            .collect();
        let short = bufs.len() < nbufs;
        let me = Arc::new(Rebuild {
            raid: Arc::downgrade(raid),
            raid_name: raid.name.clone(),
            target,
            target_name,
            num_blocks,
            block_size: bs,
            stripes,
            shared,
            device,
            m: Mutex::new(Machine {
                state: RebuildState::Idle,
                offset: from.min(num_blocks),
                cur: 0,
                window,
                sources,
                chans,
                bufs,
                busy: false,
                lost: Vec::new(),
                stop: None,
                on_end: Vec::new(),
                pause_at,
                paused: false,
                resync,
                copied: 0,
                ckpt: from.min(num_blocks),
            }),
        });
        {
            let mut m = me.lock();
            if short {
                m.stop = Some("no buffer for the rebuild window".into());
            }
            if m.chans.get(target).is_none_or(Option::is_none) {
                m.stop = Some("no channel to the target".into());
            }
        }
        if resync {
            tracing::info!(
                "raid '{}': resync of slot {target} ('{}') started: {} regions of {window} blocks written while it was away",
                me.raid_name,
                me.target_name,
                me.shared.wib.count()
            );
        } else {
            tracing::info!(
                "raid '{}': rebuild of slot {target} ('{}') started at block {from}, {num_blocks} blocks in windows of {window}",
                me.raid_name,
                me.target_name
            );
        }
        me.enter(RebuildState::Locking);
        me
    }

    /// Blocks between two checkpoints recorded in the superblock: a sixteenth of the raid
    /// (at most 16 superblock writes per rebuild), at least one window.
    fn checkpoint_stride(&self, window: u64) -> u64 {
        (self.num_blocks / CHECKPOINTS).max(window).max(1)
    }

    fn lock(&self) -> MutexGuard<'_, Machine> {
        self.m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Current state.
    pub(crate) fn state(&self) -> RebuildState {
        self.lock().state
    }

    /// True while held by a pause.
    pub(crate) fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// Blocks copied so far.
    pub(crate) fn progress(&self) -> u64 {
        self.lock().offset
    }

    /// Sets (or clears) the state to pause in (test hook).
    pub(crate) fn set_pause(&self, at: Option<RebuildState>) {
        self.lock().pause_at = at;
    }

    /// Continues a paused machine.
    pub(crate) fn resume(self: &Arc<Self>) {
        let go = {
            let mut m = self.lock();
            std::mem::replace(&mut m.paused, false)
        };
        if go {
            self.act();
        }
    }

    /// Asks the machine to stop; `then` runs once it has reached Done or Failed (now if it
    /// already has).
    pub(crate) fn stop(self: &Arc<Self>, reason: &str, then: impl FnOnce() + Send + 'static) {
        let unpaused = {
            let mut m = self.lock();
            if m.state.is_terminal() {
                drop(m);
                return then();
            }
            if m.stop.is_none() {
                m.stop = Some(reason.to_string());
            }
            m.on_end.push(Box::new(then));
            std::mem::replace(&mut m.paused, false)
        };
        if unpaused {
            self.act();
        }
    }

    /// The control path is about to drop member `slot`. `then` runs once the machine no longer
    /// uses it (at its next safe point; now if it is between steps).
    pub(crate) fn member_lost(self: &Arc<Self>, slot: usize, then: impl FnOnce() + Send + 'static) {
        let run_now = {
            let mut m = self.lock();
            if m.state.is_terminal() {
                true
            } else if m.busy {
                m.lost.push((slot, Box::new(then)));
                return;
            } else {
                self.let_go(&mut m, slot);
                true
            }
        };
        if run_now {
            then();
        }
    }
}
