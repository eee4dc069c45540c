//! Writing the superblock to the members.

use super::*;

/// Writes the current superblock (sequence number + 1) to every member that is not being
/// removed.
pub(super) fn write_sb(raid: &Arc<Raid>, then: impl FnOnce(Result<()>) + Send + 'static) {
    write_sb_incl(raid, None, then)
}

/// As [`write_sb`], and also to the member of slot `departing` although it is being removed
/// (its own copy then records it as having left, so that it never assembles the raid alone
/// with stale data).
pub(super) fn write_sb_incl(
    raid: &Arc<Raid>,
    departing: Option<usize>,
    then: impl FnOnce(Result<()>) + Send + 'static,
) {
    write_sb_try(raid, departing, Box::new(then), 0)
}

/// Turns a superblock write waits for a buffer (the pool is shared with the data path, which
/// gives buffers back as its I/O completes) before it fails.
const SB_BUFFER_TRIES: u32 = 10_000;

fn write_sb_try(
    raid: &Arc<Raid>,
    departing: Option<usize>,
    then: Box<dyn FnOnce(Result<()>) + Send>,
    tries: u32,
) {
    let (template, targets) = {
        let mut st = raid.st();
        st.seq += 1;
        // A member recorded as tracked needs a valid bitmap on disk: write one now (its
        // absence only costs a full rebuild later, never a wrong resync).
        if let Some(sh) = st.shared.as_ref().filter(|sh| sh.wib.persisted()) {
            if st.slots.iter().any(|s| s.away.is_some()) {
                sh.wib_persist_request();
            }
        }
        let members = st
            .slots
            .iter()
            .map(|s| {
                let rebuilding = s.sb_state == MemberState::Rebuilding;
                let member = s.desc.is_some() || s.expected || rebuilding;
                SbMember {
                    uuid: if member {
                        s.uuid
                    } else if s.sb_state == MemberState::Missing {
                        s.left
                    } else {
                        None
                    },
                    data_offset: s.data_offset,
                    data_size: s.data_size,
                    state: s.sb_state,
                    rebuilt: if rebuilding { s.rebuilt } else { 0 },
                    tracked: s.sb_state == MemberState::Missing
                        && s.away.is_some()
                        && st.wib_persist,
                }
            })
            .collect();
        let sb = Superblock {
            uuid: raid.uuid,
            name: raid.name.clone(),
            seq: st.seq,
            num_blocks: st.num_blocks,
            block_size: st.block_size,
            level: raid.level,
            strip_blocks: st.strip_blocks,
            slot: 0,
            members,
        };
        let targets: Vec<(usize, Arc<Desc>)> = st
            .slots
            .iter()
            .enumerate()
            .filter(|(i, s)| !s.removing || departing == Some(*i))
            .filter_map(|(i, s)| s.desc.clone().map(|d| (i, d)))
            .collect();
        (sb, targets)
    };
    let n = template.members.len();
    let bs = template.block_size;
    let len = (sbk::blocks_for(n, bs) * u64::from(bs)) as usize;
    let mut ops = Vec::with_capacity(targets.len());
    for (i, d) in targets {
        let ch = match d.channel() {
            Ok(c) => c,
            Err(e) => return then(Err(e)),
        };
        let mut buf = match DmaBuf::get(len) {
            Ok(Some(b)) => b,
            // None written yet: the whole write is tried again on a later turn of this
            // thread (nothing may be skipped: a member left with the older superblock
            // could vouch for a member that has gone).
            Ok(None) if tries < SB_BUFFER_TRIES && ferrite_reactor::current().is_some() => {
                let r = raid.clone();
                let again = move || write_sb_try(&r, departing, then, tries + 1);
                if let Some(Err(e)) = ferrite_reactor::current().map(|t| t.send(again)) {
                    tracing::error!("raid '{}': cannot retry the superblock: {e}", raid.name);
                }
                return;
            }
            Ok(None) => {
                return then(Err(BdevError::new(
                    ErrorKind::NoMemory,
                    format!(
                        "raid '{}': no buffer for the superblock after {SB_BUFFER_TRIES} tries",
                        raid.name
                    ),
                )))
            }
            Err(e) => return then(Err(e)),
        };
        let mut sb = template.clone();
        sb.slot = i as u32;
        sb.encode(buf.as_mut_slice());
        ops.push(CtlOp {
            ch,
            write: true,
            offset: 0,
            buf,
            flush: false,
        });
    }
    let name = raid.name.clone();
    let seq = template.seq;
    let raid = raid.clone();
    // Flushed before: what the members were written before (a rebuild's copies, the writes
    // a removal waited for) is durable before a superblock says it is there. Flushed after:
    // the superblock itself is.
    flush_cached(ops, move |ops, mut bad| {
        crate::ctlio::submit(ops, move |res| {
            let mut written = Vec::with_capacity(res.len());
            for r in res {
                match r.buf {
                    Some(buf) if r.status == IoStatus::Success => written.push(CtlOp {
                        ch: r.ch,
                        write: true,
                        offset: 0,
                        buf,
                        flush: false,
                    }),
                    _ => bad.push(r.ch.bdev().clone()),
                }
            }
            flush_cached(written, move |_, after| {
                bad.extend(after);
                if bad.is_empty() {
                    tracing::debug!("raid '{name}': superblock seq {seq} written");
                    then(Ok(()))
                } else {
                    let names: Vec<&str> = bad.iter().map(|b| b.name()).collect();
                    let e = BdevError::new(
                        ErrorKind::Io,
                        format!(
                            "raid '{name}': superblock write failed on {}",
                            names.join(", ")
                        ),
                    );
                    drop_stale_members(&raid, departing, &bad);
                    then(Err(e))
                }
            });
        });
    });
}

/// Members (other than `departing`) whose superblock could not be written hold an older
/// one, which may still list as in sync a member that has left: they are dropped (as a
/// member that fails a data write is), so that they never assemble the raid with it.
fn drop_stale_members(raid: &Arc<Raid>, departing: Option<usize>, bad: &[Arc<Bdev>]) {
    let (shared, slots) = {
        let st = raid.st();
        let slots: Vec<usize> = bad
            .iter()
            .filter_map(|b| {
                st.slots
                    .iter()
                    .position(|s| s.desc.as_ref().is_some_and(|d| Arc::ptr_eq(d.bdev(), b)))
            })
            .filter(|&i| Some(i) != departing)
            .collect();
        (st.shared.clone(), slots)
    };
    if let Some(sh) = shared {
        for i in slots {
            tracing::error!(
                "raid '{}': member in slot {i} kept an old superblock; dropping it",
                raid.name
            );
            sh.fail_slot(i);
        }
    }
}

/// Flushes the channel of every op whose bdev has a volatile write cache, then calls `then`
/// (on this thread, at once if none has one) with the ops whose flush succeeded or was not
/// needed, and the bdevs whose flush failed (their ops are dropped).
fn flush_cached(ops: Vec<CtlOp>, then: impl FnOnce(Vec<CtlOp>, Vec<Arc<Bdev>>) + Send + 'static) {
    let mut keep = Vec::with_capacity(ops.len());
    let mut flushes = Vec::new();
    let mut kinds = Vec::new();
    for op in ops {
        if op.ch.bdev().write_cache() {
            kinds.push((op.write, op.offset));
            flushes.push(CtlOp { flush: true, ..op });
        } else {
            keep.push(op);
        }
    }
    if flushes.is_empty() {
        return then(keep, Vec::new());
    }
    crate::ctlio::submit(flushes, move |res| {
        let mut bad = Vec::new();
        for (r, (write, offset)) in res.into_iter().zip(kinds) {
            match r.buf {
                Some(buf) if r.status == IoStatus::Success => keep.push(CtlOp {
                    ch: r.ch,
                    write,
                    offset,
                    buf,
                    flush: false,
                }),
                _ => bad.push(r.ch.bdev().clone()),
            }
        }
        then(keep, bad)
    });
}
