//! Assembly policy for raids with superblocks: starting degraded once examine has settled,
//! and taking back members that return.
//!
//! **Degraded start.** A raid assembled from superblocks waits for every member its newest
//! superblock records in sync. When examine *settles* — someone waits for it (the end of a
//! configuration load, `ferrite bench -c`, the `bdev_wait_for_examine` RPC) and no examine
//! is in progress, see [`ferrite_bdev::BdevModule::examine_settled`] — a raid still missing
//! such members is started degraded if the members present and in sync form a quorum
//! (raid1: one; raid5f: all but one; raid0 and concat never: they stay *configuring*). The
//! absent members are recorded *missing* (with their UUID) in the superblocks of the
//! present ones, whose sequence number moves past theirs. Staleness is decided by sequence
//! numbers: a bdev whose superblock is older than the newest one seen, and no longer listed
//! in sync there, is never used as a source.
//!
//! **Returning members.** A bdev that appears while its raid is online and whose UUID the
//! raid recorded as having left in sync (missing, not failed) is taken back automatically
//! when its own superblock still lists it in sync *and* is older than the raid's (it was
//! away while the raid went on). A superblock as new as the raid's means the two went on
//! separately: it is refused with an error, never mixed in. A member removed by
//! `bdev_raid_remove_base_bdev` had its own superblock updated to say it left, so it only
//! comes back by RPC. A returning member is resynced from the write-intent bitmap when the
//! raid tracked what it missed, otherwise rebuilt in full.
//!
//! **One at a time.** Members that come back while a rebuild runs (or before the raid is
//! online) wait in a queue; the next is taken when the current rebuild ends (members whose
//! interrupted rebuild resumes at its checkpoint go first).
//!
//! Thread contract: everything here runs on the control (app) thread.

use std::sync::Arc;

use ferrite_bdev::{Bdev, ErrorKind, ExamineHold};

use super::{add_base_bdev, maybe_configure, raids, run_op, Raid};
use crate::types::{MemberState, RaidLevel, RaidState};

/// True if `raid` is assembled from superblocks, configuring, misses members recorded in
/// sync, and has a quorum of in-sync members present.
fn quorate_but_incomplete(raid: &Raid) -> bool {
    let st = raid.st();
    let n = st.slots.len();
    let present = st
        .slots
        .iter()
        .filter(|s| s.desc.is_some() && !s.rebuilding)
        .count();
    let missing = st
        .slots
        .iter()
        .filter(|s| s.expected && s.desc.is_none())
        .count();
    raid.superblock
        && st.sb_blocks.is_some()
        && st.state == RaidState::Configuring
        && missing > 0
        && present > 0
        && present >= raid.level.min_operational(n)
}

/// Examine has settled: start degraded every raid that can (see the module docs). The
/// waiters of `wait_for_examine` wait until those raids are registered.
pub(super) fn start_degraded() {
    let list: Vec<Arc<Raid>> = raids().clone();
    for raid in list {
        if !quorate_but_incomplete(&raid) {
            continue;
        }
        let hold = ExamineHold::new();
        let r = raid.clone();
        run_op(&raid, move |op| {
            // Re-check: a member may have arrived, or an earlier operation changed things.
            if !quorate_but_incomplete(&r) {
                drop(op);
                return drop(hold);
            }
            {
                let mut st = r.st();
                for (i, s) in st.slots.iter_mut().enumerate() {
                    if !s.expected || s.desc.is_some() {
                        continue;
                    }
                    tracing::warn!(
                        "raid '{}': member {} (slot {i}) did not appear; starting degraded",
                        r.name,
                        s.uuid.map(|u| u.to_string()).unwrap_or_default()
                    );
                    s.expected = false;
                    s.sb_state = MemberState::Missing;
                    s.left = s.uuid.take();
                    // raid1: it was in sync as of the newest superblock, so it misses only
                    // the writes from now on, which the write-intent bitmap tracks.
                    s.away = s.left.filter(|_| r.level == RaidLevel::Raid1);
                    s.name = None;
                }
            }
            drop(op);
            let name = r.name.clone();
            maybe_configure(
                &r,
                Box::new(move |res| {
                    if let Err(e) = res {
                        tracing::error!("raid '{name}': cannot start degraded: {e}");
                    }
                    drop(hold);
                }),
            );
        });
    }
}

/// `bdev` came back to `raid` (or its interrupted rebuild must start again): queued, and
/// taken back now if nothing else runs.
pub(super) fn queue_return(raid: &Arc<Raid>, bdev: &Arc<Bdev>) {
    {
        let mut st = raid.st();
        let u = bdev.uuid();
        if !st.returning.iter().any(|(_, x)| *x == u) {
            st.returning.push_back((bdev.name().to_string(), u));
        }
        if st.rebuild.is_some() {
            tracing::info!(
                "raid '{}': '{}' waits for the running rebuild to finish",
                raid.name,
                bdev.name()
            );
        }
    }
    kick_returns(raid);
}

/// Takes back the next queued member if the raid is online and no rebuild runs or is due.
pub(super) fn kick_returns(raid: &Arc<Raid>) {
    let next = {
        let mut st = raid.st();
        let due = st
            .slots
            .iter()
            .any(|s| s.rebuilding && s.desc.is_some() && !s.removing);
        if st.state != RaidState::Online
            || st.teardown != super::Teardown::None
            || st.rebuild.is_some()
            || due
        {
            return;
        }
        st.returning.pop_front()
    };
    let Some((name, uuid)) = next else { return };
    let usable = ferrite_bdev::lookup(&name).filter(|b| b.uuid() == uuid && b.claim().is_none());
    if usable.is_none() {
        tracing::info!(
            "raid '{}': returning member '{name}' is gone or claimed; skipped",
            raid.name
        );
        return kick_returns(raid);
    }
    let r = raid.clone();
    let n2 = name.clone();
    add_base_bdev(&raid.name, &n2, move |res| match res {
        Ok(()) => {}
        Err(e) => {
            let busy = e.kind() == ErrorKind::Claimed && r.st().rebuild.is_some();
            if busy {
                // Another rebuild got in first: wait for it.
                r.st().returning.push_front((name, uuid));
            } else {
                tracing::error!("raid '{}': cannot take back '{name}': {e}", r.name);
                kick_returns(&r);
            }
        }
    });
}
