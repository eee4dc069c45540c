//! The raid1 rebuild: an explicit state machine that copies the raid's data, window by window,
//! from an in-sync member to a new member while normal I/O continues.
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
//! - **Reading**: the window is read from an in-sync member (the lowest-numbered one left) into
//!   the machine's buffer. A failed read reports the member failed and tries the next source.
//! - **Writing**: the buffer is written to the target at the same place of its data area.
//! - **Advancing**: every channel releases the window (the writes that waited go out, to the
//!   target too), then the offset moves on.
//! - **Done**: the target is an in-sync member (reads may use it; superblock updated).
//! - **Failed**: the copy stopped (target lost or failed, no source left, raid deleted).
//!
//! **Member loss at any state.** The control path calls [`Rebuild::member_lost`] before it
//! drops a member; the machine answers at its next *safe point* (no I/O or channel walk of
//! its own in flight: immediately if it is between steps or paused). Losing the target, or
//! the last source, sets the stop reason; a state that holds the window lock always goes
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
//! Thread contract: the machine runs on the thread that started it (the app thread); its
//! I/O completions and channel walks come back there.

use std::sync::{Arc, Mutex, MutexGuard, Weak};

use ferrite_bdev::{BdevChannel, Desc, DmaBuf, IoStatus};
use ferrite_reactor::IoDevice;

use crate::control::Raid;
use crate::ctlio::{CtlOp, CtlResult};
use crate::io::{ChanCtx, Shared};

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
    buf: Option<DmaBuf>,
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

/// One rebuild of one raid1 member.
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
        let buf = DmaBuf::get((window * bs) as usize).ok().flatten();
        let me = Arc::new(Rebuild {
            raid: Arc::downgrade(raid),
            raid_name: raid.name.clone(),
            target,
            target_name,
            num_blocks,
            block_size: bs,
            shared,
            device,
            m: Mutex::new(Machine {
                state: RebuildState::Idle,
                offset: from.min(num_blocks),
                cur: 0,
                window,
                sources,
                chans,
                buf,
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
            if m.buf.is_none() {
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

    fn let_go(&self, m: &mut Machine, slot: usize) {
        m.chans[slot] = None;
        m.sources &= !(1u64 << slot);
        if slot == self.target {
            m.stop.get_or_insert_with(|| "target member lost".into());
        } else if m.sources == 0 {
            m.stop
                .get_or_insert_with(|| "no in-sync member left to copy from".into());
        }
    }

    /// Back from an I/O or walk: let go of members lost meanwhile.
    fn safe_point(&self) {
        let conts: Vec<Cont> = {
            let mut m = self.lock();
            m.busy = false;
            let lost = std::mem::take(&mut m.lost);
            lost.into_iter()
                .map(|(slot, c)| {
                    self.let_go(&mut m, slot);
                    c
                })
                .collect()
        };
        for c in conts {
            c();
        }
    }

    fn enter(self: &Arc<Self>, s: RebuildState) {
        {
            let mut m = self.lock();
            m.state = s;
            if !s.is_terminal() && m.pause_at == Some(s) && m.stop.is_none() {
                m.paused = true;
                tracing::debug!("raid '{}': rebuild paused in {s:?}", self.raid_name);
                return;
            }
        }
        self.act();
    }

    /// Performs the current state's action.
    fn act(self: &Arc<Self>) {
        let (state, stopping) = {
            let m = self.lock();
            (m.state, m.stop.is_some())
        };
        match state {
            RebuildState::Idle => {}
            RebuildState::Locking if stopping => self.enter(RebuildState::Failed),
            RebuildState::Locking => self.do_lock(),
            RebuildState::Reading | RebuildState::Writing if stopping => {
                self.enter(RebuildState::Advancing)
            }
            RebuildState::Reading => self.do_read(),
            RebuildState::Writing => self.do_write(),
            RebuildState::Advancing => self.do_unlock(),
            RebuildState::Done | RebuildState::Failed => self.terminate(),
        }
    }

    fn do_lock(self: &Arc<Self>) {
        let range = {
            let mut m = self.lock();
            loop {
                if m.offset >= self.num_blocks {
                    break None;
                }
                m.cur = m.window.min(self.num_blocks - m.offset);
                // Resync: windows no write touched while the member was away are already
                // in sync on it (writes since it came back reach it directly).
                if !m.resync || self.shared.wib.any(m.offset, m.cur) {
                    m.busy = true;
                    break Some((m.offset, m.offset + m.cur));
                }
                m.offset += m.cur;
            }
        };
        let Some((a, b)) = range else {
            return self.enter(RebuildState::Done);
        };
        let me = self.clone();
        let r = self.device.for_each_channel_async(
            move |ctx, cont| crate::raid1::lock_window(ctx, a, b, cont),
            move |_| {
                me.safe_point();
                me.enter(RebuildState::Reading);
            },
        );
        if let Err(e) = r {
            {
                let mut m = self.lock();
                m.busy = false;
                m.stop
                    .get_or_insert_with(|| format!("cannot lock the window: {e}"));
            }
            self.enter(RebuildState::Failed);
        }
    }

    fn do_read(self: &Arc<Self>) {
        let op = {
            let mut m = self.lock();
            let src = lowest(m.sources);
            let ch = src.and_then(|s| m.chans[s].take());
            match (src, ch, m.buf.take()) {
                (Some(src), Some(ch), Some(mut buf)) => {
                    let _ = buf.set_len((m.cur * self.block_size) as usize);
                    m.busy = true;
                    Some((src, m.offset, ch, buf))
                }
                (_, ch, buf) => {
                    // Put back whatever was taken; no source is usable.
                    if let (Some(s), Some(c)) = (src, ch) {
                        m.chans[s] = Some(c);
                    }
                    m.buf = m.buf.take().or(buf);
                    m.stop
                        .get_or_insert_with(|| "no in-sync member left to copy from".into());
                    None
                }
            }
        };
        let Some((src, off, ch, buf)) = op else {
            return self.enter(RebuildState::Advancing);
        };
        let me = self.clone();
        let op = CtlOp {
            ch,
            write: false,
            offset: off + self.shared.offset_of(src),
            buf,
        };
        crate::ctlio::submit(vec![op], move |res| me.on_read(src, res));
    }

    fn put_back(&self, slot: usize, res: Vec<CtlResult>) -> bool {
        let mut ok = false;
        let mut m = self.lock();
        for r in res {
            ok = r.status == IoStatus::Success;
            if !ok {
                tracing::debug!(
                    "raid '{}': rebuild I/O on slot {slot} completed {:?}",
                    self.raid_name,
                    r.status
                );
            }
            if m.lost.iter().all(|(s, _)| *s != slot) {
                m.chans[slot] = Some(r.ch);
            }
            m.buf = r.buf;
        }
        ok
    }

    fn on_read(self: &Arc<Self>, src: usize, res: Vec<CtlResult>) {
        let ok = self.put_back(src, res);
        if !ok {
            // Report the member (the control path drops it) and copy from another one.
            tracing::warn!(
                "raid '{}': rebuild read from slot {src} failed",
                self.raid_name
            );
            self.shared.fail_slot(src);
            let mut m = self.lock();
            m.sources &= !(1u64 << src);
            if m.sources == 0 {
                m.stop
                    .get_or_insert_with(|| "no in-sync member left to copy from".into());
            }
        }
        self.safe_point();
        if ok {
            self.enter(RebuildState::Writing);
        } else {
            self.enter(RebuildState::Reading);
        }
    }

    fn do_write(self: &Arc<Self>) {
        let op = {
            let mut m = self.lock();
            let t = self.target;
            match (m.chans[t].take(), m.buf.take()) {
                (Some(ch), Some(buf)) => {
                    m.busy = true;
                    Some((m.offset, ch, buf))
                }
                (ch, buf) => {
                    m.chans[t] = ch;
                    m.buf = buf;
                    m.stop.get_or_insert_with(|| "target member lost".into());
                    None
                }
            }
        };
        let Some((off, ch, buf)) = op else {
            return self.enter(RebuildState::Advancing);
        };
        let me = self.clone();
        let op = CtlOp {
            ch,
            write: true,
            offset: off + self.shared.offset_of(self.target),
            buf,
        };
        crate::ctlio::submit(vec![op], move |res| me.on_write(res));
    }

    fn on_write(self: &Arc<Self>, res: Vec<CtlResult>) {
        let ok = self.put_back(self.target, res);
        if !ok {
            tracing::warn!(
                "raid '{}': rebuild write to '{}' failed",
                self.raid_name,
                self.target_name
            );
            self.shared.fail_slot(self.target);
            self.lock()
                .stop
                .get_or_insert_with(|| "write to the target failed".into());
        }
        self.safe_point();
        self.enter(RebuildState::Advancing);
    }

    fn do_unlock(self: &Arc<Self>) {
        self.lock().busy = true;
        let me = self.clone();
        let r = self
            .device
            .for_each_channel(crate::raid1::unlock_window, move || {
                me.safe_point();
                let mut checkpoint = None;
                let next = {
                    let mut m = me.lock();
                    if m.stop.is_some() {
                        RebuildState::Failed
                    } else {
                        m.offset += m.cur;
                        m.copied += m.cur;
                        if m.offset >= me.num_blocks {
                            RebuildState::Done
                        } else {
                            if m.offset - m.ckpt >= me.checkpoint_stride(m.window) {
                                m.ckpt = m.offset;
                                checkpoint = Some(m.offset);
                            }
                            RebuildState::Locking
                        }
                    }
                };
                if let (Some(at), Some(raid)) = (checkpoint, me.raid.upgrade()) {
                    crate::control::rebuild_checkpoint(&raid, me.target, at);
                }
                me.enter(next);
            });
        if let Err(e) = r {
            tracing::error!("raid '{}': cannot release the window: {e}", self.raid_name);
            {
                let mut m = self.lock();
                m.busy = false;
                m.stop
                    .get_or_insert_with(|| format!("cannot release the window: {e}"));
            }
            self.enter(RebuildState::Failed);
        }
    }

    fn terminate(self: &Arc<Self>) {
        let (result, ends, conts, copied, resync) = {
            let mut m = self.lock();
            m.chans.iter_mut().for_each(|c| *c = None);
            m.buf = None;
            let result = match (m.state, &m.stop) {
                (RebuildState::Done, _) => Ok(()),
                (_, Some(r)) => Err(r.clone()),
                (_, None) => Err("stopped".to_string()),
            };
            let lost: Vec<Cont> = std::mem::take(&mut m.lost)
                .into_iter()
                .map(|(_, c)| c)
                .collect();
            (
                result,
                std::mem::take(&mut m.on_end),
                lost,
                m.copied,
                m.resync,
            )
        };
        match &result {
            Ok(()) => tracing::info!(
                "raid '{}': {} of '{}' done: {copied} of {} blocks copied",
                self.raid_name,
                if resync { "resync" } else { "rebuild" },
                self.target_name,
                self.num_blocks
            ),
            Err(r) => tracing::warn!(
                "raid '{}': rebuild of '{}' failed: {r}",
                self.raid_name,
                self.target_name
            ),
        }
        for c in conts {
            c();
        }
        if let Some(raid) = self.raid.upgrade() {
            let report = crate::control::RebuildReport {
                target: self.target_name.clone(),
                resync,
                copied_blocks: copied,
                total_blocks: self.num_blocks,
                error: result.clone().err(),
            };
            crate::control::rebuild_finished(&raid, self.target, result, report);
        }
        for e in ends {
            e();
        }
    }
}
