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

    fn let_go(&self, m: &mut Machine, slot: usize) {
        m.chans[slot] = None;
        m.sources &= !(1u64 << slot);
        if slot == self.target {
            m.stop.get_or_insert_with(|| "target member lost".into());
        } else if m.sources == 0 || self.stripes.is_some() {
            // raid5f needs every other member to reconstruct.
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

    /// Member blocks `(offset, len)` holding raid blocks `[off, off + cur)`.
    fn member_range(&self, off: u64, cur: u64) -> (u64, u64) {
        match self.stripes {
            Some((strip, stripe)) => (off / stripe * strip, cur / stripe * strip),
            None => (off, cur),
        }
    }

    fn do_read(self: &Arc<Self>) {
        let op = {
            let mut m = self.lock();
            // raid1: the lowest source; raid5f: all of them.
            let srcs: Vec<usize> = match self.stripes {
                None => lowest(m.sources).into_iter().collect(),
                Some(_) => (0..self.shared.n)
                    .filter(|s| m.sources & (1u64 << s) != 0)
                    .collect(),
            };
            let ready = !srcs.is_empty()
                && srcs.iter().all(|&s| m.chans[s].is_some())
                && m.bufs.len() >= srcs.len();
            if ready {
                let (moff, mlen) = self.member_range(m.offset, m.cur);
                let mut ops = Vec::with_capacity(srcs.len());
                for &src in &srcs {
                    let (Some(ch), Some(mut buf)) = (m.chans[src].take(), m.bufs.pop()) else {
                        continue;
                    };
                    let _ = buf.set_len((mlen * self.block_size) as usize);
                    ops.push(CtlOp {
                        ch,
                        write: false,
                        offset: moff + self.shared.offset_of(src),
                        buf,
                        flush: false,
                    });
                }
                m.busy = true;
                Some((srcs, ops))
            } else {
                m.stop
                    .get_or_insert_with(|| "no in-sync member left to copy from".into());
                None
            }
        };
        let Some((srcs, ops)) = op else {
            return self.enter(RebuildState::Advancing);
        };
        let me = self.clone();
        crate::ctlio::submit(ops, move |res| me.on_read(&srcs, res));
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
            m.bufs.extend(r.buf);
        }
        ok
    }

    fn on_read(self: &Arc<Self>, srcs: &[usize], res: Vec<CtlResult>) {
        let mut ok = true;
        let mut failed = Vec::new();
        {
            let mut m = self.lock();
            let mut got = Vec::with_capacity(res.len());
            for (&src, r) in srcs.iter().zip(res) {
                if r.status != IoStatus::Success {
                    tracing::debug!(
                        "raid '{}': rebuild read on slot {src} completed {:?}",
                        self.raid_name,
                        r.status
                    );
                    ok = false;
                    failed.push(src);
                }
                if m.lost.iter().all(|(s, _)| *s != src) {
                    m.chans[src] = Some(r.ch);
                }
                got.extend(r.buf);
            }
            if ok && self.stripes.is_some() {
                // The new member's strip is the XOR of every other member's.
                if let Some((first, rest)) = got.split_first_mut() {
                    let acc = first.as_mut_slice();
                    for b in rest.iter() {
                        for (d, s) in acc.iter_mut().zip(b.as_slice()) {
                            *d ^= *s;
                        }
                    }
                }
            }
            // The first buffer (the result) is the one Writing takes (`pop` takes the last).
            got.reverse();
            m.bufs.extend(got);
        }
        for src in failed {
            // Report the member (the control path drops it); raid1 copies from another one.
            tracing::warn!(
                "raid '{}': rebuild read from slot {src} failed",
                self.raid_name
            );
            self.shared.fail_slot(src);
            let mut m = self.lock();
            m.sources &= !(1u64 << src);
            if m.sources == 0 || self.stripes.is_some() {
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
            match (m.chans[t].take(), m.bufs.pop()) {
                (Some(ch), Some(buf)) => {
                    m.busy = true;
                    Some((self.member_range(m.offset, m.cur).0, ch, buf))
                }
                (ch, buf) => {
                    m.chans[t] = ch;
                    m.bufs.extend(buf);
                    m.stop.get_or_insert_with(|| "target member lost".into());
                    None
                }
            }
        };
        let Some((moff, ch, buf)) = op else {
            return self.enter(RebuildState::Advancing);
        };
        let me = self.clone();
        let op = CtlOp {
            ch,
            write: true,
            offset: moff + self.shared.offset_of(self.target),
            buf,
            flush: false,
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
            m.bufs.clear();
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
