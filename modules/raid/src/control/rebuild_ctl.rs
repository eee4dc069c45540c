//! Rebuilds from the control side: starting, resuming, checkpoints in the superblock, the
//! end of a rebuild, and the test and debugging hooks.

use super::*;

/// The raid came online (assembled from superblocks) with members recorded as being
/// rebuilt: their rebuilds resume from the recorded checkpoints (no write reached the raid
/// since the checkpoint was written, and writes since then reached them too, so everything
/// below it is still in sync). One rebuild runs at a time: the next starts when one is done.
pub(super) fn resume_rebuilds(raid: &Arc<Raid>) {
    let first = {
        let st = raid.st();
        if st.rebuild.is_some() || st.state != RaidState::Online || st.teardown != Teardown::None {
            return;
        }
        st.slots
            .iter()
            .enumerate()
            .find(|(_, s)| s.rebuilding && s.desc.is_some() && !s.removing)
            .map(|(i, s)| (i, s.rebuilt))
    };
    match first {
        Some((slot, from)) => {
            tracing::info!(
                "raid '{}': resuming the rebuild of slot {slot} at block {from}",
                raid.name
            );
            start_rebuild(raid, slot, false, from);
        }
        // Then members that came back, one at a time.
        None => assemble::kick_returns(raid),
    }
}

/// Runs one round persisting the write-intent bitmap (from the data path, by message).
pub(crate) fn persist_bitmap(raid: &Arc<Raid>) {
    bitmap::persist(raid);
}

/// Records the rebuild checkpoint `rebuilt` of `target` in the superblock (from the machine).
pub(crate) fn rebuild_checkpoint(raid: &Arc<Raid>, target: usize, rebuilt: u64) {
    if !raid.superblock {
        return;
    }
    let r = raid.clone();
    run_op(raid, move |op| {
        let write = {
            let mut st = r.st();
            let ok = st.state == RaidState::Online
                && st.teardown == Teardown::None
                && st.slots[target].rebuilding
                && st.slots[target].sb_state == MemberState::Rebuilding
                && st.slots[target].desc.is_some()
                && !st.slots[target].removing;
            if ok {
                st.slots[target].rebuilt = rebuilt;
            }
            ok
        };
        if !write {
            return drop(op);
        }
        let rn = r.name.clone();
        write_sb(&r, move |res| {
            if let Err(e) = res {
                tracing::warn!("raid '{rn}': rebuild checkpoint: {e}");
            }
            drop(op);
        });
    });
}

pub(super) fn start_rebuild(raid: &Arc<Raid>, target: usize, resync: bool, from: u64) {
    let args = {
        let st = raid.st();
        let descs: Vec<Option<Arc<Desc>>> = st
            .slots
            .iter()
            .map(|s| if s.removing { None } else { s.desc.clone() })
            .collect();
        let sources = st
            .slots
            .iter()
            .enumerate()
            .filter(|(i, s)| *i != target && s.desc.is_some() && !s.removing && !s.rebuilding)
            .fold(0u64, |m, (i, _)| m | (1u64 << i));
        let name = st.slots[target].name.clone().unwrap_or_default();
        match (st.shared.clone(), st.device.clone()) {
            (Some(sh), Some(dev)) => Some((descs, sources, sh, dev, name, st.pause_at)),
            _ => None,
        }
    };
    let Some((descs, sources, shared, device, name, pause)) = args else {
        return;
    };
    let window = u64::from(WINDOW_KB.load(Ordering::Relaxed)) * 1024;
    let rb = Rebuild::start(
        raid, target, name, sources, &descs, shared, device, window, pause, resync, from,
    );
    raid.st().rebuild = Some(rb);
}

/// The rebuild of `target` ended (from the machine).
pub(crate) fn rebuild_finished(
    raid: &Arc<Raid>,
    target: usize,
    result: std::result::Result<(), String>,
    report: RebuildReport,
) {
    let r = raid.clone();
    run_op(raid, move |op| {
        let (write, fail_uuid) = {
            let mut st = r.st();
            st.rebuild = None;
            st.last_rebuild = Some(report);
            // Nobody left to come back: the bitmap has served (stray marks only ever cost
            // extra copying, never correctness).
            if !st.slots.iter().any(|s| s.away.is_some()) {
                if let Some(sh) = &st.shared {
                    sh.wib_active.store(false, Ordering::SeqCst);
                    if sh.wib.count() > 0 {
                        sh.wib.clear();
                        // The cleared bitmap reaches the disk lazily.
                        if sh.wib.persisted() {
                            sh.wib_persist_request();
                        }
                    }
                }
            }
            if st.teardown != Teardown::None || st.state != RaidState::Online {
                drop(st);
                return drop(op);
            }
            let shared = st.shared.clone();
            let s = &mut st.slots[target];
            let live = s.desc.is_some() && !s.removing && s.rebuilding;
            match (&result, live) {
                (Ok(()), true) => {
                    s.rebuilding = false;
                    s.sb_state = MemberState::Configured;
                    s.rebuilt = 0;
                    if let Some(sh) = shared {
                        sh.rebuilding.fetch_and(!(1u64 << target), Ordering::AcqRel);
                    }
                    (r.superblock, None)
                }
                (Err(_), true) => (false, s.desc.as_ref().map(|d| d.bdev().uuid())),
                _ => (false, None),
            }
        };
        if let Some(u) = fail_uuid {
            let rn = r.name.clone();
            remove_member(
                &r,
                u,
                MemberState::Failed,
                false,
                Box::new(move |res| {
                    if let Err(e) = res {
                        tracing::debug!("raid '{rn}': dropping the rebuild target: {e}");
                    }
                }),
            );
        }
        // Another member taken back with an interrupted rebuild waits for its turn.
        let next = result.is_ok();
        if write {
            let r2 = r.clone();
            write_sb(&r, move |res| {
                if let Err(e) = res {
                    tracing::error!("raid '{}': {e}", r2.name);
                }
                if next {
                    resume_rebuilds(&r2);
                } else {
                    assemble::kick_returns(&r2);
                }
                drop(op);
            });
        } else {
            if next {
                resume_rebuilds(&r);
            } else {
                assemble::kick_returns(&r);
            }
            drop(op);
        }
    });
}

/// Outcome of a finished rebuild.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildReport {
    /// Name of the member rebuilt.
    pub target: String,
    /// True for a resync guided by the write-intent bitmap (the same member came back).
    pub resync: bool,
    /// Blocks copied to the target.
    pub copied_blocks: u64,
    /// Blocks of the raid.
    pub total_blocks: u64,
    /// Why it failed (`None`: done).
    pub error: Option<String>,
}

/// The last finished rebuild of raid `name`.
pub fn last_rebuild(name: &str) -> Option<RebuildReport> {
    find(name)?.st().last_rebuild.clone()
}

/// State of the rebuild running on raid `name`, and whether it is paused.
pub fn rebuild_state(name: &str) -> Option<(RebuildState, bool)> {
    let rb = find(name)?.st().rebuild.clone()?;
    Some((rb.state(), rb.is_paused()))
}

/// Makes rebuilds of raid `name` (the running one and later ones) pause on entering `at`
/// (`None`: never). A testing aid: a paused rebuild holds its window locked.
pub fn set_rebuild_pause(name: &str, at: Option<RebuildState>) {
    if let Some(r) = find(name) {
        let rb = {
            let mut st = r.st();
            st.pause_at = at;
            st.rebuild.clone()
        };
        if let Some(rb) = rb {
            rb.set_pause(at);
        }
    }
}

/// Continues a paused rebuild of raid `name` (on the raid's control thread: by message if
/// called from elsewhere).
pub fn resume_rebuild(name: &str) {
    let Some(raid) = find(name) else { return };
    let Some(rb) = raid.st().rebuild.clone() else {
        return;
    };
    match &raid.app {
        Some(t) if ferrite_reactor::current().as_ref() != Some(t) => {
            if let Err(e) = t.send(move || rb.resume()) {
                tracing::error!("raid '{name}': cannot resume the rebuild: {e}");
            }
        }
        _ => rb.resume(),
    }
}
