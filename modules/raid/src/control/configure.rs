//! Configuring a raid whose members are all claimed: layout, registration of the raid bdev,
//! per-thread channel state.

use super::*;

/// If every expected member is claimed, configures the raid (as an operation); `done` gets
/// the outcome, or `Ok` at once if the raid keeps waiting.
pub(super) fn maybe_configure(raid: &Arc<Raid>, done: DoneFn) {
    let ready = {
        let st = raid.st();
        st.state == RaidState::Configuring
            && st.slots.iter().all(|s| !s.expected || s.desc.is_some())
            && st.slots.iter().any(|s| s.desc.is_some() && !s.rebuilding)
    };
    if !ready {
        return done(Ok(()));
    }
    let r = raid.clone();
    run_op(raid, move |op| {
        // Re-check: an earlier operation may have changed things.
        let still = {
            let st = r.st();
            st.state == RaidState::Configuring
                && st.slots.iter().all(|s| !s.expected || s.desc.is_some())
        };
        if !still {
            drop(op);
            return done(Ok(()));
        }
        configure(&r, move |res| {
            done(res);
            drop(op);
        });
    });
}

fn configure(raid: &Arc<Raid>, done: impl FnOnce(Result<()>) + Send + 'static) {
    if let Err(e) = plan_layout(raid) {
        return done(Err(e));
    }
    let r = raid.clone();
    let after_sb = move |res: Result<()>| match res {
        Ok(()) => {
            let res = register_raid(&r);
            if res.is_ok() {
                resume_rebuilds(&r);
            }
            done(res)
        }
        Err(e) => done(Err(e)),
    };
    let r = raid.clone();
    bitmap::load(raid, move || {
        if r.superblock {
            write_sb(&r, after_sb);
        } else {
            after_sb(Ok(()));
        }
    });
}

/// Computes block size, strip, data areas and the raid's size from the claimed members.
fn plan_layout(raid: &Arc<Raid>) -> Result<()> {
    let mut st = raid.st();
    let n = st.slots.len();
    let level = raid.level;
    let present: Vec<usize> = (0..n).filter(|&i| st.slots[i].desc.is_some()).collect();
    let Some(first) = present.first().and_then(|&i| st.slots[i].desc.clone()) else {
        return Err(einval("no base bdev is present".into()));
    };
    let bs = first.bdev().block_size();
    let known = st.sb_blocks;
    if present.len() < level.min_operational(n) {
        return Err(einval(format!(
            "only {} of {n} members present; {} needs {}",
            present.len(),
            level.name(),
            level.min_operational(n)
        )));
    }
    for &i in &present {
        let Some(d) = st.slots[i].desc.clone() else {
            continue;
        };
        let b = d.bdev();
        let blocks = b.num_blocks();
        let s = &mut st.slots[i];
        if known.is_none() {
            s.data_offset = if raid.superblock {
                sbk::data_offset_blocks(bs).max(sbk::blocks_for(n, bs))
            } else {
                0
            };
            if s.data_offset >= blocks {
                return Err(einval(format!(
                    "base bdev '{}' ({blocks} blocks) is too small for the superblock area ({} blocks)",
                    b.name(),
                    s.data_offset
                )));
            }
            s.data_size = blocks - s.data_offset;
        } else if s.data_offset + s.data_size > blocks {
            return Err(einval(format!(
                "base bdev '{}' ({blocks} blocks) is smaller than its recorded data area",
                b.name()
            )));
        }
    }
    let strip_blocks = if !level.has_strip() {
        0
    } else if known.is_some() {
        st.strip_blocks
    } else {
        let bytes = u64::from(raid.strip_size_kb) * 1024;
        if bytes < u64::from(bs) || bytes % u64::from(bs) != 0 {
            return Err(einval(format!(
                "strip size {} KiB is smaller than the block size ({bs} bytes)",
                raid.strip_size_kb
            )));
        }
        u32::try_from(bytes / u64::from(bs)).map_err(|_| {
            einval(format!(
                "strip size {} KiB is too large for {bs}-byte blocks",
                raid.strip_size_kb
            ))
        })?
    };
    if level == RaidLevel::Raid5f {
        let largest = ferrite_bdev::buf::stats()
            .map(|s| s.large_size as u64)
            .unwrap_or(0);
        let bytes = u64::from(strip_blocks) * u64::from(bs);
        if bytes > largest {
            return Err(einval(format!(
                "raid5f strip of {bytes} bytes exceeds the largest data buffer ({largest} bytes) its parity needs"
            )));
        }
    }
    let shift = strip_blocks.max(1).trailing_zeros();
    let round = |x: u64| (x >> shift) << shift;
    let min_present = present
        .iter()
        .map(|&i| st.slots[i].data_size)
        .min()
        .unwrap_or(0);
    let num = match level {
        RaidLevel::Raid0 | RaidLevel::Raid5f => {
            let m = round(min_present);
            for s in st.slots.iter_mut() {
                s.data_size = m;
            }
            let data = if level == RaidLevel::Raid0 { n } else { n - 1 };
            m * data as u64
        }
        RaidLevel::Raid1 => {
            for s in st.slots.iter_mut() {
                s.data_size = min_present;
            }
            min_present
        }
        RaidLevel::Concat => {
            for s in st.slots.iter_mut() {
                s.data_size = round(s.data_size);
            }
            st.slots.iter().map(|s| s.data_size).sum()
        }
    };
    if num == 0 {
        return Err(einval(format!(
            "base bdevs are too small: the raid would have no blocks (strip {strip_blocks} blocks)"
        )));
    }
    if let Some(k) = known {
        if k != num {
            return Err(einval(format!(
                "members give {num} blocks but the superblock records {k}"
            )));
        }
    }
    // Slots without a member (degraded assembly) keep the recorded or computed offsets.
    let off0 = st.slots[present[0]].data_offset;
    for s in st.slots.iter_mut() {
        if s.desc.is_none() && known.is_none() {
            s.data_offset = off0;
        }
    }
    st.block_size = bs;
    st.num_blocks = num;
    st.strip_blocks = strip_blocks;
    Ok(())
}

fn register_raid(raid: &Arc<Raid>) -> Result<()> {
    let (props, backend) = {
        let mut st = raid.st();
        let n = st.slots.len();
        let mut gone = 0u64;
        let mut rebuilding = 0u64;
        let mut supported = [true; 3];
        let mut write_cache = false;
        for (i, s) in st.slots.iter().enumerate() {
            match &s.desc {
                Some(d) if !s.removing => {
                    let b = d.bdev();
                    for (k, t) in [IoType::Unmap, IoType::Flush, IoType::WriteZeroes]
                        .iter()
                        .enumerate()
                    {
                        supported[k] &= b.io_type_supported(*t);
                    }
                    write_cache |= b.write_cache();
                }
                _ => gone |= 1u64 << i,
            }
            if s.rebuilding {
                rebuilding |= 1u64 << i;
            }
        }
        if raid.level == RaidLevel::Raid5f {
            supported = [false, false, false];
        }
        let mut concat_start = Vec::with_capacity(n + 1);
        let mut acc = 0;
        for s in &st.slots {
            concat_start.push(acc);
            acc += s.data_size;
        }
        concat_start.push(acc);
        let shared = Arc::new(Shared {
            name: raid.name.clone(),
            level: raid.level,
            n,
            n_shift: if n.is_power_of_two() {
                n.trailing_zeros()
            } else {
                crate::io::N_NOT_POW2
            },
            block_size: st.block_size,
            num_blocks: st.num_blocks,
            strip_shift: if raid.level.has_strip() {
                st.strip_blocks.trailing_zeros()
            } else {
                0
            },
            data_offset: st
                .slots
                .iter()
                .map(|s| AtomicU64::new(s.data_offset))
                .collect(),
            concat_start,
            gone: Arc::new(AtomicU64::new(gone)),
            rebuilding: AtomicU64::new(rebuilding),
            missed_writes: AtomicU64::new(0),
            raid: Arc::downgrade(raid),
            app: raid.app.clone(),
            wib: {
                let b = crate::io::Bitmap::with_limit(
                    if raid.level == RaidLevel::Raid1 {
                        st.num_blocks
                    } else {
                        0
                    },
                    (WIB_REGION_BYTES / u64::from(st.block_size)).max(1),
                    if st.wib_persist {
                        bitmap::MAX_REGIONS
                    } else {
                        crate::io::MAX_REGIONS
                    },
                    st.wib_persist,
                );
                if let Some(w) = st.wib_loaded.take() {
                    b.load(&w);
                }
                b
            },
            // A member recorded away (started degraded without it) may come back.
            wib_active: AtomicBool::new(
                raid.level == RaidLevel::Raid1 && st.slots.iter().any(|s| s.away.is_some()),
            ),
            wib_flush: AtomicU8::new(0),
        });
        let weak = Arc::downgrade(raid);
        let sh = shared.clone();
        let device = IoDevice::new(&format!("raid:{}", raid.name), move || {
            build_ctx(&weak, &sh)
        });
        st.shared = Some(shared);
        st.device = Some(device.clone());
        let mut props = BdevProps::new(&raid.name, "Raid Volume", st.block_size, st.num_blocks);
        props.uuid = Some(raid.uuid);
        props.write_cache = write_cache;
        props.optimal_io_boundary = match raid.level {
            RaidLevel::Raid0 | RaidLevel::Concat => st.strip_blocks,
            RaidLevel::Raid5f => st.strip_blocks * (n as u32 - 1),
            RaidLevel::Raid1 => 0,
        };
        // raid5f accepts only full-stripe writes: the bdev layer cuts larger I/O on stripes.
        props.split_on_optimal_io_boundary = raid.level == RaidLevel::Raid5f;
        let backend = Arc::new(RaidBackend {
            raid: raid.clone(),
            device,
            unmap: supported[0],
            flush: supported[1],
            write_zeroes: supported[2],
        });
        (props, backend)
    };
    match ferrite_bdev::register(props, backend) {
        Ok(b) => {
            let mut st = raid.st();
            st.bdev = Some(b);
            st.state = RaidState::Online;
            st.name_held_bases();
            if let Some(sh) = st.shared.as_ref().filter(|sh| sh.wib.persisted()) {
                if st.slots.iter().any(|s| s.away.is_some()) {
                    sh.wib_persist_request();
                }
            }
            let ok = st.slots.iter().filter(|s| s.desc.is_some()).count();
            tracing::info!(
                "raid '{}' online: {} of {} members, {} blocks of {} bytes",
                raid.name,
                ok,
                st.slots.len(),
                st.num_blocks,
                st.block_size
            );
            Ok(())
        }
        Err(e) => {
            let mut st = raid.st();
            if let Some(d) = st.device.take() {
                d.unregister();
            }
            st.shared = None;
            Err(e)
        }
    }
}

/// A thread's channel state: a channel to every member usable now.
fn build_ctx(raid: &Weak<Raid>, shared: &Arc<Shared>) -> ChanCtx {
    let descs: Vec<Option<Arc<Desc>>> = raid
        .upgrade()
        .map(|r| {
            r.st()
                .slots
                .iter()
                .map(|s| if s.removing { None } else { s.desc.clone() })
                .collect()
        })
        .unwrap_or_default();
    let bases = (0..shared.n)
        .map(|i| {
            descs
                .get(i)
                .cloned()
                .flatten()
                .and_then(|d| d.channel().ok())
        })
        .collect();
    ChanCtx::new(shared.clone(), bases)
}
