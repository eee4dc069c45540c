//! Member removal: by RPC, hot-remove or I/O failure; a raid going offline.

use super::*;

pub(super) fn on_base_event(raid: &Weak<Raid>, uuid: Uuid, name: &str, ev: BdevEvent) {
    let Some(r) = raid.upgrade() else { return };
    match ev {
        BdevEvent::Remove => {
            tracing::info!("raid '{}': base bdev '{name}' is being removed", r.name);
            let (rn, bn) = (r.name.clone(), name.to_string());
            remove_member(
                &r,
                uuid,
                MemberState::Missing,
                false,
                Box::new(move |res| {
                    if let Err(e) = res {
                        tracing::warn!("raid '{rn}': removing '{bn}': {e}");
                    }
                }),
            );
        }
        BdevEvent::Resize => {
            tracing::info!(
                "raid '{}': base bdev '{name}' was resized; the raid keeps its size",
                r.name
            );
        }
    }
}

/// The data path saw member `slot` fail I/O: drop it (degraded).
pub(crate) fn member_failed(raid: &Arc<Raid>, slot: usize) {
    let uuid = raid
        .st()
        .slots
        .get(slot)
        .and_then(|s| s.desc.as_ref().map(|d| d.bdev().uuid()));
    let Some(uuid) = uuid else { return };
    let rn = raid.name.clone();
    remove_member(
        raid,
        uuid,
        MemberState::Failed,
        false,
        Box::new(move |res| {
            if let Err(e) = res {
                tracing::debug!("raid '{rn}': dropping failed member: {e}");
            }
        }),
    );
}

/// `bdev_raid_remove_base_bdev`: removes the member `base` (name, alias or UUID) from its
/// raid.
pub fn remove_base_bdev(base: &str, done: impl FnOnce(Result<()>) + Send + 'static) {
    let Some(b) = ferrite_bdev::lookup(base) else {
        return done(Err(BdevError::not_found(base)));
    };
    let owner = raids().iter().find_map(|r| {
        r.st()
            .slots
            .iter()
            .any(|s| s.desc.as_ref().is_some_and(|d| Arc::ptr_eq(d.bdev(), &b)))
            .then(|| r.clone())
    });
    match owner {
        Some(r) => remove_member(&r, b.uuid(), MemberState::Missing, true, Box::new(done)),
        None => done(Err(BdevError::new(
            ErrorKind::NotFound,
            format!("bdev '{base}' is not a base bdev of any raid"),
        ))),
    }
}

/// Drops the member whose bdev has `uuid`: recorded as `why` in the superblock. A raid that
/// can do without it continues degraded (quiesced while its channels let go of the member);
/// one that cannot goes offline.
///
/// `tell_it`: also write the departing member's own superblock (removal by RPC: the member
/// still works; recorded as having left, it will not be taken back automatically).
pub(super) fn remove_member(
    raid: &Arc<Raid>,
    uuid: Uuid,
    why: MemberState,
    tell_it: bool,
    done: DoneFn,
) {
    let r = raid.clone();
    run_op(raid, move |op| {
        let (slot, state, readable_after, rebuild) = {
            let mut st = r.st();
            let slot = st.slots.iter().position(|s| {
                !s.removing && s.desc.as_ref().is_some_and(|d| d.bdev().uuid() == uuid)
            });
            let Some(slot) = slot else {
                drop(st);
                return done(Err(BdevError::new(
                    ErrorKind::NotFound,
                    format!("raid '{}': no configured member with UUID {uuid}", r.name),
                )));
            };
            st.slots[slot].removing = true;
            let in_sync = !st.slots[slot].rebuilding;
            if let Some(sh) = st.shared.clone() {
                if r.level == RaidLevel::Raid1 && why == MemberState::Missing && in_sync {
                    // It may come back: from now on writes mark what it misses. Activated
                    // before the member is marked gone (see `raid1_write::write`).
                    st.slots[slot].away = Some(uuid);
                    sh.wib_active.store(true, Ordering::SeqCst);
                }
                sh.gone.fetch_or(1u64 << slot, Ordering::AcqRel);
            }
            let readable = st
                .slots
                .iter()
                .filter(|s| s.desc.is_some() && !s.removing && !s.rebuilding)
                .count();
            (slot, st.state, readable, st.rebuild.clone())
        };
        let n = r.st().slots.len();
        match state {
            RaidState::Configuring | RaidState::Offline => {
                let (desc, empty) = {
                    let mut st = r.st();
                    let s = &mut st.slots[slot];
                    s.removing = false;
                    let d = s.desc.take();
                    if state == RaidState::Offline {
                        s.clear();
                    }
                    st.name_held_bases();
                    (d, st.slots.iter().all(|s| s.desc.is_none()))
                };
                if state == RaidState::Offline && empty {
                    forget(&r);
                }
                drop(desc);
                done(Ok(()));
                drop(op);
            }
            RaidState::Online if readable_after < r.level.min_operational(n) => {
                tracing::warn!(
                    "raid '{}': {} cannot do without slot {slot}; going offline",
                    r.name,
                    r.level.name()
                );
                let r2 = r.clone();
                let offline = move || go_offline(&r2, done, op);
                match rebuild {
                    Some(rb) => rb.stop("raid going offline", offline),
                    None => offline(),
                }
            }
            RaidState::Online => {
                let r2 = r.clone();
                let cont = move || remove_online(r2, slot, why, tell_it, done, op);
                match rebuild {
                    Some(rb) => rb.member_lost(slot, cont),
                    None => cont(),
                }
            }
        }
    });
}

fn go_offline(raid: &Arc<Raid>, done: DoneFn, op: OpDone) {
    let bdev = {
        let mut st = raid.st();
        st.teardown = Teardown::Offline;
        st.bdev.clone()
    };
    match bdev {
        Some(b) => ferrite_bdev::unregister_bdev(&b, move |r| {
            done(r);
            drop(op);
        }),
        None => {
            done(Ok(()));
            drop(op);
        }
    }
}

/// Removal from an online raid that stays online: quiesce, record the member's state in the
/// superblock of the others, take its channel away from every thread, release it, thaw.
fn remove_online(
    raid: Arc<Raid>,
    slot: usize,
    why: MemberState,
    tell_it: bool,
    done: DoneFn,
    op: OpDone,
) {
    let (bdev, device) = {
        let st = raid.st();
        (st.bdev.clone(), st.device.clone())
    };
    let (Some(bdev), Some(device)) = (bdev, device) else {
        done(Err(BdevError::new(
            ErrorKind::Removing,
            format!("raid '{}' is going away", raid.name),
        )));
        return drop(op);
    };
    let b2 = bdev.clone();
    ferrite_bdev::quiesce::quiesce(&bdev, move || {
        let r = raid.clone();
        let after_sb = move |res: Result<()>| {
            if let Err(e) = res {
                tracing::error!("raid '{}': {e}", r.name);
            }
            let r2 = r.clone();
            let walk = device.for_each_channel(
                move |ctx| {
                    if let Some(c) = ctx.bases.borrow_mut().get_mut(slot) {
                        *c = None;
                    }
                },
                move || {
                    let desc = {
                        let mut st = r2.st();
                        if let Some(sh) = &st.shared {
                            sh.rebuilding.fetch_and(!(1u64 << slot), Ordering::AcqRel);
                        }
                        let s = &mut st.slots[slot];
                        let d = s.desc.take();
                        if s.away.is_some() {
                            // As we let go: a mark of its write access, compared when it
                            // comes back (`away`).
                            if let Some(d) = &d {
                                s.away_mark = super::away::mark(d);
                            }
                        }
                        s.clear();
                        st.name_held_bases();
                        d
                    };
                    let name = desc.as_ref().map(|d| d.bdev().name().to_string());
                    ferrite_bdev::quiesce::unquiesce(&b2);
                    drop(desc);
                    tracing::info!(
                        "raid '{}': member '{}' (slot {slot}) removed; degraded",
                        r2.name,
                        name.unwrap_or_default()
                    );
                    done(Ok(()));
                    drop(op);
                },
            );
            if let Err(e) = walk {
                tracing::error!("raid '{}': cannot reach the channels: {e}", r.name);
            }
        };
        let why = {
            let mut st = raid.st();
            // Every write that was out has come back (quiesced): one that failed on this
            // member while it left may be in no bitmap (it began before the bitmap was
            // activated), so the member did not leave in sync after all.
            let missed = st.shared.as_ref().is_some_and(|sh| {
                sh.missed_writes
                    .fetch_and(!(1u64 << slot), Ordering::AcqRel)
                    & (1u64 << slot)
                    != 0
            });
            let s = &mut st.slots[slot];
            let why = if missed && why == MemberState::Missing {
                tracing::warn!(
                    "raid '{}': member in slot {slot} failed a write as it left; recorded as failed (a full rebuild if it comes back)",
                    raid.name
                );
                s.away = None;
                MemberState::Failed
            } else {
                why
            };
            // Left in sync: it may come back (see `assemble`).
            if why == MemberState::Missing && !s.rebuilding {
                s.left = s.uuid;
            }
            why
        };
        if raid.superblock {
            raid.st().slots[slot].sb_state = why;
            write_sb_incl(&raid, tell_it.then_some(slot), after_sb);
        } else {
            after_sb(Ok(()));
        }
    });
}
