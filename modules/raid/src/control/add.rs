//! `bdev_raid_add_base_bdev`: adding a member to a configuring or online raid.

use super::*;

/// `bdev_raid_add_base_bdev`: adds `base` to raid `raid_name`. A configuring raid takes it in
/// a free (or matching) slot; an online raid1 takes it in an empty slot and rebuilds it.
/// `done` runs once it is claimed (and the rebuild started).
pub fn add_base_bdev(raid_name: &str, base: &str, done: impl FnOnce(Result<()>) + Send + 'static) {
    let Some(raid) = find(raid_name) else {
        return done(Err(BdevError::new(
            ErrorKind::NotFound,
            format!("raid bdev '{raid_name}' is not found in config"),
        )));
    };
    let Some(bdev) = ferrite_bdev::lookup(base) else {
        return done(Err(BdevError::not_found(base)));
    };
    let r = raid.clone();
    run_op(&raid, move |op| {
        let state = r.st().state;
        match state {
            RaidState::Configuring => {
                let (slot, assembled) = {
                    let st = r.st();
                    // A raid assembled from its superblocks holds data: a slot it does not
                    // expect this bdev in (a member recorded missing or failed) would take
                    // it as an in-sync copy. Only its recorded members are taken now;
                    // others are added (and rebuilt) once it is online.
                    let assembled = st.sb_blocks.is_some();
                    let slot = st
                        .slots
                        .iter()
                        .position(|s| s.desc.is_none() && s.matches(&bdev))
                        .or_else(|| {
                            st.slots.iter().position(|s| {
                                !assembled
                                    && s.desc.is_none()
                                    && s.name.is_none()
                                    && s.uuid.is_none()
                            })
                        });
                    (slot, assembled)
                };
                let Some(i) = slot else {
                    drop(op);
                    let why = if assembled {
                        "it is being assembled from its superblocks and takes only its recorded members until it is online (then an added member is rebuilt)"
                    } else {
                        "no empty slot"
                    };
                    return done(Err(einval(format!(
                        "cannot add base bdev '{}' to raid bdev '{}': {why}",
                        bdev.name(),
                        r.name
                    ))));
                };
                if let Err(e) = claim_slot(&r, i, &bdev) {
                    drop(op);
                    return done(Err(e));
                }
                r.st().slots[i].expected = true;
                drop(op);
                maybe_configure(&r, Box::new(done));
            }
            RaidState::Offline => {
                drop(op);
                done(Err(einval(format!("raid bdev '{}' is offline", r.name))))
            }
            RaidState::Online => add_online(r, bdev, Box::new(done), op),
        }
    });
}

fn add_online(raid: Arc<Raid>, bdev: Arc<Bdev>, done: DoneFn, op: OpDone) {
    let fail = |e: BdevError, op: OpDone, done: DoneFn| {
        drop(op);
        done(Err(e))
    };
    let (slot, data_offset, data_size) = {
        let st = raid.st();
        if st.rebuild.is_some() {
            drop(st);
            return fail(
                BdevError::new(
                    ErrorKind::Claimed,
                    format!(
                        "raid bdev '{}' is in process (a rebuild is running)",
                        raid.name
                    ),
                ),
                op,
                done,
            );
        }
        let empty = |s: &Slot| s.desc.is_none() && s.name.is_none() && s.uuid.is_none();
        // The member that left in sync goes back to its own slot (and is resynced).
        // A member whose rebuild was interrupted (restart) goes back to its reserved slot.
        let interrupted = |s: &Slot| s.desc.is_none() && s.sb_state == MemberState::Rebuilding;
        let slot = st
            .slots
            .iter()
            .position(|s| empty(s) && s.away == Some(bdev.uuid()))
            .or_else(|| {
                st.slots
                    .iter()
                    .position(|s| empty(s) && s.left == Some(bdev.uuid()))
            })
            .or_else(|| {
                st.slots
                    .iter()
                    .position(|s| interrupted(s) && s.uuid == Some(bdev.uuid()))
            })
            .or_else(|| st.slots.iter().position(empty))
            .or_else(|| st.slots.iter().position(interrupted));
        let Some(slot) = slot else {
            drop(st);
            return fail(
                einval(format!(
                    "no empty slot in raid bdev '{}' for base bdev '{}'",
                    raid.name,
                    bdev.name()
                )),
                op,
                done,
            );
        };
        let s = &st.slots[slot];
        (slot, s.data_offset, s.data_size)
    };
    if !matches!(raid.level, RaidLevel::Raid1 | RaidLevel::Raid5f) {
        return fail(
            BdevError::new(
                ErrorKind::NotSupported,
                format!(
                    "raid bdev '{}': {} has no redundancy to rebuild a member from",
                    raid.name,
                    raid.level.name()
                ),
            ),
            op,
            done,
        );
    }
    if bdev.num_blocks() < data_offset + data_size {
        return fail(
            einval(format!(
                "base bdev '{}' ({} blocks) is smaller than the raid's member data area ({} + {} blocks)",
                bdev.name(),
                bdev.num_blocks(),
                data_offset,
                data_size
            )),
            op,
            done,
        );
    }
    if raid.st().slots[slot].uuid.is_some_and(|u| u != bdev.uuid()) {
        // Another bdev replaces the one whose rebuild was interrupted.
        raid.st().slots[slot].uuid = None;
    }
    if let Err(e) = claim_slot(&raid, slot, &bdev) {
        return fail(e, op, done);
    }
    let (shared, device, desc, resync) = {
        let mut st = raid.st();
        let s = &mut st.slots[slot];
        // Anyone else in a slot someone left: that one is not coming back here.
        let back = s.away.take() == Some(bdev.uuid());
        let mark = std::mem::take(&mut s.away_mark);
        let resync = back
            && s.desc
                .as_ref()
                .is_some_and(|d| super::away::resync_ok(&raid, d, &mark));
        s.left = None;
        s.tracked = false;
        s.rebuilding = true;
        s.expected = true;
        s.sb_state = MemberState::Rebuilding;
        // Added to an online raid: copied from the start.
        s.rebuilt = 0;
        let desc = s.desc.clone();
        (st.shared.clone(), st.device.clone(), desc, resync)
    };
    let (Some(shared), Some(device), Some(desc)) = (shared, device, desc) else {
        return fail(
            BdevError::new(
                ErrorKind::Removing,
                format!("raid '{}' is going away", raid.name),
            ),
            op,
            done,
        );
    };
    shared.data_offset[slot].store(data_offset, Ordering::Release);
    shared.rebuilding.fetch_or(1u64 << slot, Ordering::AcqRel);
    shared.gone.fetch_and(!(1u64 << slot), Ordering::AcqRel);
    let r = raid.clone();
    let walk = device.for_each_channel(
        move |ctx| {
            if let Some(c) = ctx.bases.borrow_mut().get_mut(slot) {
                *c = desc.channel().ok();
            }
        },
        move || {
            // Every thread now writes to the member coming back: unless someone else is
            // away, writes need not mark the bitmap any more (the resync reads the marks
            // made while it was away).
            if !r.st().slots.iter().any(|s| s.away.is_some()) {
                shared.wib_active.store(false, Ordering::SeqCst);
            }
            let r2 = r.clone();
            let start = move |res: Result<()>| {
                if let Err(e) = res {
                    tracing::error!("raid '{}': {e}", r2.name);
                }
                start_rebuild(&r2, slot, resync, 0);
                done(Ok(()));
                drop(op);
            };
            if r.superblock {
                write_sb(&r, start);
            } else {
                start(Ok(()));
            }
        },
    );
    if let Err(e) = walk {
        tracing::error!("raid '{}': cannot reach the channels: {e}", raid.name);
    }
}
