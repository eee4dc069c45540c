//! `bdev_raid_create`: validation, creating the raid, claiming its members.

use super::*;

/// The largest strip: 1 GiB (a strip larger than any member leaves the raid no blocks; this
/// bound keeps every strip's block count in 32 bits).
const MAX_STRIP_KB: u32 = 1 << 20;

/// `bdev_raid_create`: validates, remembers the raid, claims the base bdevs that exist and,
/// when all are there, configures and registers it (writing superblocks first if asked).
/// `done` runs once the raid is online, or at once if it waits for bases (state
/// "configuring"). On error nothing is left behind.
pub fn create(opts: &RaidOpts, done: impl FnOnce(Result<()>) + Send + 'static) {
    match validate(opts) {
        Ok(raid) => create_validated(raid, Box::new(done)),
        Err(e) => done(Err(e)),
    }
}

fn validate(opts: &RaidOpts) -> Result<Arc<Raid>> {
    let name = &opts.name;
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(|c| c.is_control()) {
        return Err(einval(format!(
            "raid bdev name '{name}' must be 1 to {MAX_NAME_LEN} printable characters"
        )));
    }
    let level = RaidLevel::parse(&opts.raid_level)?;
    if find(name).is_some() || ferrite_bdev::lookup(name).is_some() {
        return Err(BdevError::new(
            ErrorKind::Exists,
            format!("raid bdev '{name}' already exists"),
        ));
    }
    let kb = opts.strip_size_kb;
    if level.has_strip() {
        if kb == 0 || !kb.is_power_of_two() {
            return Err(einval(format!(
                "strip size {kb} KiB is not a power of two (required for {})",
                level.name()
            )));
        }
        if kb > MAX_STRIP_KB {
            return Err(einval(format!(
                "strip size {kb} KiB is too large (at most {MAX_STRIP_KB} KiB)"
            )));
        }
    } else if kb != 0 {
        return Err(einval(format!(
            "strip size is not supported by raid1 (got {kb} KiB; give 0 or omit it)"
        )));
    }
    let n = opts.base_bdevs.len();
    if n < level.min_base_bdevs() || n > MAX_BASE_BDEVS {
        return Err(einval(format!(
            "{} needs {} to {MAX_BASE_BDEVS} base bdevs, got {n}",
            level.name(),
            level.min_base_bdevs()
        )));
    }
    for (i, b) in opts.base_bdevs.iter().enumerate() {
        if b.is_empty() {
            return Err(einval("the base bdev name cannot be empty".into()));
        }
        if opts.base_bdevs[..i].contains(b) {
            return Err(einval(format!("base bdev '{b}' is listed twice")));
        }
    }
    let uuid = match &opts.uuid {
        Some(u) => Uuid::parse(u)?,
        None => Uuid::new_v4(),
    };
    if uuid == Uuid::default() {
        // The superblock's reader refuses it: the raid could never be reassembled.
        return Err(einval(format!(
            "the raid UUID cannot be the nil UUID ({uuid})"
        )));
    }
    if find_uuid(uuid).is_some() {
        return Err(BdevError::new(
            ErrorKind::Exists,
            format!("a raid with UUID {uuid} already exists"),
        ));
    }
    Ok(Arc::new(Raid {
        name: name.clone(),
        uuid,
        level,
        strip_size_kb: kb,
        superblock: opts.superblock,
        app: ferrite_reactor::current(),
        st: Mutex::new(RaidSt {
            state: RaidState::Configuring,
            slots: opts.base_bdevs.iter().map(|b| Slot::named(b)).collect(),
            bdev: None,
            shared: None,
            device: None,
            seq: 0,
            sb_blocks: None,
            block_size: 0,
            num_blocks: 0,
            strip_blocks: 0,
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
    }))
}

fn create_validated(raid: Arc<Raid>, done: DoneFn) {
    raids().push(raid.clone());
    let n = raid.st().slots.len();
    for i in 0..n {
        let name = raid.st().slots[i].name.clone();
        let Some(b) = name.as_deref().and_then(ferrite_bdev::lookup) else {
            continue;
        };
        if let Err(e) = claim_slot(&raid, i, &b) {
            let descs: Vec<_> = raid
                .st()
                .slots
                .iter_mut()
                .filter_map(|s| s.desc.take())
                .collect();
            forget(&raid);
            drop(descs);
            return done(Err(e));
        }
    }
    let r2 = raid.clone();
    maybe_configure(
        &raid,
        Box::new(move |res| {
            if let Err(e) = &res {
                // A failed creation leaves nothing behind (as SPDK).
                tracing::error!("raid '{}': configuration failed: {e}", r2.name);
                let descs: Vec<_> = {
                    let mut st = r2.st();
                    if st.state == RaidState::Online {
                        Vec::new()
                    } else {
                        st.slots.iter_mut().filter_map(|s| s.desc.take()).collect()
                    }
                };
                forget(&r2);
                drop(descs);
            }
            done(res)
        }),
    );
}

/// Opens and claims `bdev` for slot `i` and checks that it fits with the other members.
pub(super) fn claim_slot(raid: &Arc<Raid>, i: usize, bdev: &Arc<Bdev>) -> Result<()> {
    let weak = Arc::downgrade(raid);
    let buuid = bdev.uuid();
    let bname = bdev.name().to_string();
    let ev_name = bname.clone();
    let desc = Desc::open_bdev(bdev, true, move |ev| {
        on_base_event(&weak, buuid, &ev_name, ev)
    })
    .map_err(|e| {
        BdevError::new(
            e.kind(),
            format!("cannot claim base bdev '{bname}': {}", e.message()),
        )
    })?;
    desc.claim(ClaimKind::ExclusiveWrite, "raid").map_err(|e| {
        BdevError::new(
            e.kind(),
            format!("cannot claim base bdev '{bname}': {}", e.message()),
        )
    })?;
    let mut st = raid.st();
    for (j, s) in st.slots.iter().enumerate() {
        let Some(d) = &s.desc else { continue };
        let other = d.bdev();
        if j != i && Arc::ptr_eq(other, bdev) {
            return Err(einval(format!("base bdev '{bname}' is already a member")));
        }
        if other.block_size() != bdev.block_size() || other.md_size() != bdev.md_size() {
            return Err(einval(format!(
                "base bdev '{bname}' has blocks of {}+{} bytes, other members {}+{}",
                bdev.block_size(),
                bdev.md_size(),
                other.block_size(),
                other.md_size()
            )));
        }
    }
    if st.block_size != 0 && st.block_size != bdev.block_size() {
        return Err(einval(format!(
            "base bdev '{bname}' has blocks of {} bytes, the raid {}",
            bdev.block_size(),
            st.block_size
        )));
    }
    let slot = &mut st.slots[i];
    if let Some(u) = slot.uuid {
        if u != buuid {
            return Err(einval(format!(
                "base bdev '{bname}' has UUID {buuid}, slot {i} expects {u}"
            )));
        }
    }
    slot.desc = Some(Arc::new(desc));
    slot.uuid = Some(buuid);
    slot.name = Some(bname.clone());
    st.name_held_bases();
    tracing::info!(
        "raid '{}': base bdev '{bname}' claimed (slot {i})",
        raid.name
    );
    Ok(())
}
