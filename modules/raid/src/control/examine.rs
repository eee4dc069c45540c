//! Examine: raids assembled from the superblocks found on bdevs.

use super::*;

/// Reads block 0.. of `bdev` and, if it holds a valid superblock, hands it to
/// [`examine_sb`]. Anything invalid is logged (naming the bdev) and ignored.
pub(super) fn examine_disk(bdev: &Arc<Bdev>, done: ExamineDone) {
    let bs = bdev.block_size();
    let blocks = sbk::blocks_for(MAX_BASE_BDEVS, bs).min(bdev.num_blocks());
    let desc = match Desc::open_bdev(bdev, false, |_| {}) {
        Ok(d) => d,
        Err(_) => return done.finish(),
    };
    let ch = match desc.channel() {
        Ok(c) => c,
        Err(_) => return done.finish(),
    };
    let buf = match DmaBuf::get((blocks * u64::from(bs)) as usize) {
        Ok(Some(b)) => b,
        _ => {
            tracing::warn!(
                "raid: no buffer to look for a superblock on bdev '{}'",
                bdev.name()
            );
            return done.finish();
        }
    };
    let b = bdev.clone();
    let op = CtlOp {
        ch,
        write: false,
        offset: 0,
        buf,
        flush: false,
    };
    crate::ctlio::submit(vec![op], move |res| {
        drop(desc);
        let read = res
            .into_iter()
            .next()
            .filter(|r| r.status == IoStatus::Success)
            .and_then(|r| r.buf);
        if let Some(buf) = read {
            let data = buf.as_slice();
            match Superblock::decode(data, bs, b.num_blocks(), b.uuid()) {
                // The examine ends once the raid this bdev completes is registered (so that
                // `wait_for_examine` covers the raid bdev too).
                Ok(sb) => return examine_sb(sb, &b, done),
                Err(reason) if Superblock::has_magic(data) => tracing::warn!(
                    "raid: ignoring the superblock on bdev '{}': {reason}",
                    b.name()
                ),
                Err(_) => tracing::debug!("raid: no superblock on bdev '{}'", b.name()),
            }
        }
        done.finish();
    });
}

/// A valid superblock was found on `bdev`: create the raid it describes (or join it) and
/// claim the bdev; the raid comes online when every member recorded as in sync is there.
fn examine_sb(sb: Superblock, bdev: &Arc<Bdev>, done: ExamineDone) {
    let me = sb.members[sb.slot as usize];
    let resumable = matches!(sb.level, RaidLevel::Raid1 | RaidLevel::Raid5f)
        && me.state == MemberState::Rebuilding;
    if me.state != MemberState::Configured && !resumable {
        tracing::info!(
            "raid: bdev '{}' is recorded as {:?} in raid '{}' (not in sync); not assembled",
            bdev.name(),
            me.state,
            sb.name
        );
        return;
    }
    let raid = match find_uuid(sb.uuid) {
        Some(r) => r,
        None => {
            if find(&sb.name).is_some() || ferrite_bdev::lookup(&sb.name).is_some() {
                tracing::error!(
                    "raid: superblock on bdev '{}' names raid '{}', but that name is taken",
                    bdev.name(),
                    sb.name
                );
                return;
            }
            let r = raid_from_sb(&sb);
            raids().push(r.clone());
            tracing::info!(
                "raid: assembling '{}' ({}, {} members) from the superblock on bdev '{}'",
                sb.name,
                sb.level.name(),
                sb.members.len(),
                bdev.name()
            );
            r
        }
    };
    let mut returns = Vec::new();
    let release = {
        let mut st = raid.st();
        if !raid.superblock || raid.level != sb.level || st.slots.len() != sb.members.len() {
            tracing::error!(
                "raid: superblock on bdev '{}' does not match raid '{}' of the same UUID",
                bdev.name(),
                raid.name
            );
            return;
        }
        let waiting_rebuild = st.slots.iter().any(|s| {
            s.desc.is_none() && s.sb_state == MemberState::Rebuilding && s.uuid == Some(bdev.uuid())
        });
        if st.state == RaidState::Online && waiting_rebuild {
            // Its rebuild was interrupted (restart) and the raid came online without it:
            // writes since then reached only the others, so it is rebuilt from the start
            // (after the rebuild running now, if any).
            drop(st);
            tracing::info!(
                "raid '{}': bdev '{}' was being rebuilt; rebuilding it again",
                raid.name,
                bdev.name()
            );
            return assemble::queue_return(&raid, bdev);
        }
        let returning = st.slots.iter().any(|s| {
            s.desc.is_none() && s.sb_state == MemberState::Missing && s.left == Some(bdev.uuid())
        });
        // While configuring, a newer superblock is followed below instead.
        let stale = sb.seq < st.seq;
        let live = matches!(st.state, RaidState::Online | RaidState::Configuring);
        if live && returning && (stale || st.state == RaidState::Online) {
            if !stale {
                // It went on without us: two histories; never mix them.
                tracing::error!(
                    "raid '{}': bdev '{}' left in sync but carries a superblock as new as ours (seq {} >= {}); not taken back",
                    raid.name,
                    bdev.name(),
                    sb.seq,
                    st.seq
                );
                return;
            }
            drop(st);
            tracing::info!(
                "raid '{}': member '{}' is back (superblock seq {} < {})",
                raid.name,
                bdev.name(),
                sb.seq,
                raid.st().seq
            );
            return assemble::queue_return(&raid, bdev);
        }
        if st.state != RaidState::Configuring {
            tracing::info!(
                "raid '{}' is {}; bdev '{}' (superblock seq {}) is not added back automatically",
                raid.name,
                st.state.name(),
                bdev.name(),
                sb.seq
            );
            return;
        }
        let mut release = Vec::new();
        if sb.seq > st.seq {
            // A newer view of the array: follow it.
            for (i, m) in sb.members.iter().enumerate() {
                let s = &mut st.slots[i];
                let member = matches!(m.state, MemberState::Configured | MemberState::Rebuilding);
                let keep = member && s.uuid == m.uuid;
                let left = m.uuid.filter(|_| m.state == MemberState::Missing);
                if !keep {
                    if let Some(d) = s.desc.take() {
                        // Claimed on an older view that listed it in sync: if the newer one
                        // says it left in sync, it comes back once the raid is online.
                        if left.is_some() && left == s.uuid {
                            returns.push(d.bdev().clone());
                        }
                        release.push(d);
                    }
                    s.name = None;
                }
                s.left = left;
                s.tracked = m.tracked && raid.level == RaidLevel::Raid1;
                s.away = left.filter(|_| s.tracked);
                s.away_mark = Default::default();
                s.uuid = m.uuid.filter(|_| member);
                s.expected = m.state == MemberState::Configured;
                s.sb_state = m.state;
                s.rebuilding = m.state == MemberState::Rebuilding && s.desc.is_some();
                s.rebuilt = m.rebuilt;
                s.data_offset = m.data_offset;
                s.data_size = m.data_size;
            }
            st.seq = sb.seq;
            st.sb_blocks = Some(sb.num_blocks);
        }
        let slot = st.slots.iter().position(|s| {
            (s.expected || s.sb_state == MemberState::Rebuilding)
                && s.desc.is_none()
                && s.uuid == Some(bdev.uuid())
        });
        match slot {
            Some(i) => (release, Some(i)),
            None => {
                tracing::info!(
                    "raid '{}': bdev '{}' carries an older superblock (seq {} < {}) and is no longer a member; ignored",
                    raid.name,
                    bdev.name(),
                    sb.seq,
                    st.seq
                );
                (release, None)
            }
        }
    };
    let (release, slot) = release;
    drop(release);
    for b in returns {
        assemble::queue_return(&raid, &b);
    }
    let Some(i) = slot else { return };
    if let Err(e) = claim_slot(&raid, i, bdev) {
        tracing::error!("raid '{}': {e}", raid.name);
        return;
    }
    {
        let mut st = raid.st();
        let s = &mut st.slots[i];
        if s.sb_state == MemberState::Rebuilding {
            // Written, not read, until its rebuild (started once the raid is online) ends.
            s.rebuilding = true;
        }
    }
    let name = raid.name.clone();
    maybe_configure(
        &raid,
        Box::new(move |r| {
            if let Err(e) = r {
                tracing::error!("raid '{name}': cannot come online: {e}");
            }
            done.finish();
        }),
    );
}

fn raid_from_sb(sb: &Superblock) -> Arc<Raid> {
    let slots = sb
        .members
        .iter()
        .map(|m| {
            let conf = m.state == MemberState::Configured;
            let member = conf || m.state == MemberState::Rebuilding;
            Slot {
                name: None,
                uuid: m.uuid.filter(|_| member),
                desc: None,
                expected: conf,
                rebuilding: false,
                removing: false,
                data_offset: m.data_offset,
                data_size: m.data_size,
                sb_state: m.state,
                rebuilt: m.rebuilt,
                left: m.uuid.filter(|_| m.state == MemberState::Missing),
                tracked: m.tracked && sb.level == RaidLevel::Raid1,
                away: m.uuid.filter(|_| m.tracked && sb.level == RaidLevel::Raid1),
                away_mark: Default::default(),
            }
        })
        .collect();
    let strip_kb = (u64::from(sb.strip_blocks) * u64::from(sb.block_size) / 1024) as u32;
    Arc::new(Raid {
        name: sb.name.clone(),
        uuid: sb.uuid,
        level: sb.level,
        strip_size_kb: strip_kb,
        superblock: true,
        app: ferrite_reactor::current(),
        st: Mutex::new(RaidSt {
            state: RaidState::Configuring,
            slots,
            bdev: None,
            shared: None,
            device: None,
            seq: sb.seq,
            sb_blocks: Some(sb.num_blocks),
            block_size: sb.block_size,
            num_blocks: 0,
            strip_blocks: sb.strip_blocks,
            rebuild: None,
            last_rebuild: None,
            pause_at: None,
            busy: false,
            ops: VecDeque::new(),
            teardown: Teardown::None,
            returning: VecDeque::new(),
            wib_persist: false,
            wib_loaded: None,
        }),
    })
}
