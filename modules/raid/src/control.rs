//! Raid control path: the list of raids, creation and deletion, claiming members (by RPC,
//! on examine by name, or from superblocks found on examine), configuration into a bdev,
//! member removal (RPC, hot-remove, I/O failure) and addition (rebuild), teardown, and the
//! JSON views (`bdev_raid_get_bdevs`, `driver_specific`, `save_config`).
//!
//! Every state change of one raid after creation runs as an *operation* on that raid, one at
//! a time in submission order (`run_op`): several need asynchronous steps (quiesce, superblock
//! writes, channel walks) and must not interleave. Operations run on the control (app)
//! thread; the data path reaches it by message only (member failures).
//!
//! Teardown order, as passthru's: the raid bdev leaves the registry (its users closed it)
//! before the members' descriptors are dropped, which releases the claims and lets a member
//! that is being hot-removed finish its own removal.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use ferrite_bdev::uuid::Uuid;
use ferrite_bdev::{
    BackendChannel, Bdev, BdevBackend, BdevError, BdevEvent, BdevIo, BdevModule, BdevProps,
    ClaimKind, Desc, DmaBuf, ErrorKind, ExamineDone, IoStatus, IoType, Result,
};
use ferrite_reactor::{IoDevice, ThreadHandle};
use serde_json::{json, Value};

use crate::ctlio::CtlOp;
use crate::io::{ChanCtx, RaidChannel, Shared};
use crate::rebuild::{Rebuild, RebuildState};
use crate::superblock::{self as sbk, SbMember, Superblock};
use crate::types::{MemberState, RaidLevel, RaidState, MAX_BASE_BDEVS, MAX_NAME_LEN};

mod assemble;
mod bitmap;

/// Parameters of `bdev_raid_create`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RaidOpts {
    /// Name of the raid bdev.
    pub name: String,
    /// Level: "raid0"/"0", "raid1"/"1", "raid5f"/"5f", "concat" (case-insensitive).
    pub raid_level: String,
    /// Base bdevs, in slot order (they need not exist yet).
    pub base_bdevs: Vec<String>,
    /// Strip size in KiB: a power of two for raid0, raid5f and concat; 0 for raid1.
    pub strip_size_kb: u32,
    /// UUID of the raid bdev (random when absent).
    pub uuid: Option<String>,
    /// Write a superblock to every member (the raid then reassembles on examine).
    pub superblock: bool,
}

type DoneFn = Box<dyn FnOnce(Result<()>) + Send>;
type Op = Box<dyn FnOnce(OpDone) + Send>;

/// Why the raid bdev is being unregistered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Teardown {
    /// Not by us (shutdown, or someone unregistered the raid bdev): forget the raid.
    None,
    /// `bdev_raid_delete`: forget the raid, release every member.
    Delete,
    /// Too many members lost: keep the raid (offline) and the other members' claims.
    Offline,
}

/// One member slot.
pub(crate) struct Slot {
    /// Name of the base bdev (configured or expected); `None` for an empty slot or one known
    /// only by UUID (from a superblock).
    name: Option<String>,
    /// UUID of the base bdev (claimed or expected).
    uuid: Option<Uuid>,
    /// The descriptor holding our exclusive-write claim.
    desc: Option<Arc<Desc>>,
    /// The raid waits for this slot before coming online.
    expected: bool,
    /// Target of a rebuild: written, not read.
    rebuilding: bool,
    /// Being removed: no new I/O, not counted as operational.
    removing: bool,
    data_offset: u64,
    data_size: u64,
    /// State recorded in the superblock.
    sb_state: MemberState,
    /// raid1: UUID of the member that left this slot in sync (removed, not failed) and may
    /// come back; while any slot has one, writes mark the write-intent bitmap.
    away: Option<Uuid>,
    /// Rebuild checkpoint recorded in the superblock (state Rebuilding): raid blocks
    /// `[0, rebuilt)` are on the member; a rebuild restarted at assembly resumes there.
    rebuilt: u64,
    /// UUID of the member that left this slot in sync (state Missing: removed, hot-removed,
    /// or absent when the raid was started degraded), recorded in the superblock. If that
    /// bdev appears again with an older superblock that still lists itself in sync, it is
    /// taken back automatically as a returning member (see `assemble`).
    left: Option<Uuid>,
    /// The superblock recorded this missing member as tracked by the persisted bitmap
    /// (`away` then comes from disk and holds only if the bitmap loads).
    tracked: bool,
}

impl Slot {
    fn named(name: &str) -> Slot {
        Slot {
            name: Some(name.to_string()),
            uuid: None,
            desc: None,
            expected: true,
            rebuilding: false,
            removing: false,
            data_offset: 0,
            data_size: 0,
            sb_state: MemberState::Configured,
            away: None,
            rebuilt: 0,
            left: None,
            tracked: false,
        }
    }

    fn clear(&mut self) {
        self.name = None;
        self.uuid = None;
        self.expected = false;
        self.rebuilding = false;
        self.removing = false;
    }

    fn matches(&self, b: &Bdev) -> bool {
        let name_ok = self
            .name
            .as_deref()
            .is_some_and(|n| n == b.name() || b.aliases().iter().any(|a| a == n));
        name_ok || (self.name.is_none() && self.uuid == Some(b.uuid()))
    }
}

pub(crate) struct RaidSt {
    state: RaidState,
    slots: Vec<Slot>,
    bdev: Option<Arc<Bdev>>,
    shared: Option<Arc<Shared>>,
    device: Option<IoDevice<ChanCtx>>,
    /// Superblock sequence number (last written or read).
    seq: u64,
    /// Raid size recorded in the superblock this raid was assembled from.
    sb_blocks: Option<u64>,
    block_size: u32,
    num_blocks: u64,
    strip_blocks: u32,
    rebuild: Option<Arc<Rebuild>>,
    /// Outcome of the last rebuild.
    last_rebuild: Option<RebuildReport>,
    /// Test hook: pause rebuilds of this raid on entering this state.
    pause_at: Option<RebuildState>,
    busy: bool,
    ops: VecDeque<Op>,
    teardown: Teardown,
    /// Members that came back while the raid could not take them yet (a rebuild running, or
    /// not online yet): (bdev name, UUID), taken back in order (see `assemble`).
    returning: VecDeque<(String, Uuid)>,
    /// The write-intent bitmap is persisted (decided at configuration, `bitmap::load`).
    wib_persist: bool,
    /// Bitmap words loaded from disk, for `register_raid`.
    wib_loaded: Option<Vec<u64>>,
}

/// One raid (configuring, online or offline).
pub(crate) struct Raid {
    pub(crate) name: String,
    uuid: Uuid,
    level: RaidLevel,
    strip_size_kb: u32,
    superblock: bool,
    /// The control thread (messages from the data path go there).
    app: Option<ThreadHandle>,
    st: Mutex<RaidSt>,
}

impl Raid {
    fn st(&self) -> MutexGuard<'_, RaidSt> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }
}

static RAIDS: Mutex<Vec<Arc<Raid>>> = Mutex::new(Vec::new());
/// Default rebuild window, KiB (SPDK's).
const DEFAULT_WINDOW_KB: u32 = 1024;
/// Bytes copied per rebuild window (`bdev_raid_set_options process_window_size_kb`).
static WINDOW_KB: AtomicU32 = AtomicU32::new(DEFAULT_WINDOW_KB);
/// `bdev_raid_set_options process_max_bandwidth_mb_sec` (accepted and reported; 0 only).
static MAX_BW: AtomicU64 = AtomicU64::new(0);
/// Smallest region of the raid1 write-intent bitmap.
const WIB_REGION_BYTES: u64 = 64 * 1024;

fn raids() -> MutexGuard<'static, Vec<Arc<Raid>>> {
    RAIDS.lock().unwrap_or_else(|p| p.into_inner())
}

fn find(name: &str) -> Option<Arc<Raid>> {
    raids().iter().find(|r| r.name == name).cloned()
}

fn find_uuid(u: Uuid) -> Option<Arc<Raid>> {
    raids().iter().find(|r| r.uuid == u).cloned()
}

fn forget(raid: &Arc<Raid>) {
    raids().retain(|r| !Arc::ptr_eq(r, raid));
}

fn einval(msg: String) -> BdevError {
    BdevError::new(ErrorKind::InvalidArgument, msg)
}

// ---- operations --------------------------------------------------------------------------------

/// Completion of an operation: finishing (or dropping) it starts the next one.
pub(crate) struct OpDone(Option<Arc<Raid>>);

impl OpDone {
    fn next(&mut self) {
        let Some(r) = self.0.take() else { return };
        let next = {
            let mut st = r.st();
            let n = st.ops.pop_front();
            if n.is_none() {
                st.busy = false;
            }
            n
        };
        if let Some(op) = next {
            op(OpDone(Some(r)));
        }
    }
}

impl Drop for OpDone {
    fn drop(&mut self) {
        self.next();
    }
}

fn run_op(raid: &Arc<Raid>, op: impl FnOnce(OpDone) + Send + 'static) {
    let op: Op = Box::new(op);
    let now = {
        let mut st = raid.st();
        if st.busy {
            st.ops.push_back(op);
            None
        } else {
            st.busy = true;
            Some(op)
        }
    };
    if let Some(op) = now {
        op(OpDone(Some(raid.clone())));
    }
}

// ---- create ------------------------------------------------------------------------------------

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
fn claim_slot(raid: &Arc<Raid>, i: usize, bdev: &Arc<Bdev>) -> Result<()> {
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
    tracing::info!(
        "raid '{}': base bdev '{bname}' claimed (slot {i})",
        raid.name
    );
    Ok(())
}

/// If every expected member is claimed, configures the raid (as an operation); `done` gets
/// the outcome, or `Ok` at once if the raid keeps waiting.
fn maybe_configure(raid: &Arc<Raid>, done: DoneFn) {
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
        (bytes / u64::from(bs)) as u32
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
            gone: AtomicU64::new(gone),
            rebuilding: AtomicU64::new(rebuilding),
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

// ---- superblock --------------------------------------------------------------------------------

/// Writes the current superblock (sequence number + 1) to every member that is not being
/// removed.
fn write_sb(raid: &Arc<Raid>, then: impl FnOnce(Result<()>) + Send + 'static) {
    write_sb_incl(raid, None, then)
}

/// As [`write_sb`], and also to the member of slot `departing` although it is being removed
/// (its own copy then records it as having left, so that it never assembles the raid alone
/// with stale data).
fn write_sb_incl(
    raid: &Arc<Raid>,
    departing: Option<usize>,
    then: impl FnOnce(Result<()>) + Send + 'static,
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
            Ok(None) => {
                return then(Err(BdevError::new(
                    ErrorKind::NoMemory,
                    "no buffer for the superblock",
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
    crate::ctlio::submit(ops, move |res| {
        let bad: Vec<String> = res
            .iter()
            .filter(|r| r.status != IoStatus::Success)
            .map(|r| r.ch.bdev().name().to_string())
            .collect();
        if bad.is_empty() {
            tracing::debug!("raid '{name}': superblock seq {seq} written");
            then(Ok(()))
        } else {
            then(Err(BdevError::new(
                ErrorKind::Io,
                format!(
                    "raid '{name}': superblock write failed on {}",
                    bad.join(", ")
                ),
            )))
        }
    });
}

/// Reads block 0.. of `bdev` and, if it holds a valid superblock, hands it to
/// [`examine_sb`]. Anything invalid is logged (naming the bdev) and ignored.
fn examine_disk(bdev: &Arc<Bdev>, done: ExamineDone) {
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

// ---- member events -----------------------------------------------------------------------------

fn on_base_event(raid: &Weak<Raid>, uuid: Uuid, name: &str, ev: BdevEvent) {
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
fn remove_member(raid: &Arc<Raid>, uuid: Uuid, why: MemberState, tell_it: bool, done: DoneFn) {
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
                    // before the member is marked gone (see `raid1::write`).
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
                        s.clear();
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
        {
            // Left in sync: it may come back (see `assemble`).
            let mut st = raid.st();
            let s = &mut st.slots[slot];
            if why == MemberState::Missing && !s.rebuilding {
                s.left = s.uuid;
            }
        }
        if raid.superblock {
            raid.st().slots[slot].sb_state = why;
            write_sb_incl(&raid, tell_it.then_some(slot), after_sb);
        } else {
            after_sb(Ok(()));
        }
    });
}

// ---- add a member (rebuild) --------------------------------------------------------------------

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
                let slot = {
                    let st = r.st();
                    st.slots
                        .iter()
                        .position(|s| s.desc.is_none() && s.matches(&bdev))
                        .or_else(|| {
                            st.slots.iter().position(|s| {
                                s.desc.is_none() && s.name.is_none() && s.uuid.is_none()
                            })
                        })
                };
                let Some(i) = slot else {
                    drop(op);
                    return done(Err(einval(format!(
                        "no empty slot in raid bdev '{}' for base bdev '{}'",
                        r.name,
                        bdev.name()
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
        let resync = s.away.take() == Some(bdev.uuid());
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

/// The raid came online (assembled from superblocks) with members recorded as being
/// rebuilt: their rebuilds resume from the recorded checkpoints (no write reached the raid
/// since the checkpoint was written, and writes since then reached them too, so everything
/// below it is still in sync). One rebuild runs at a time: the next starts when one is done.
fn resume_rebuilds(raid: &Arc<Raid>) {
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

fn start_rebuild(raid: &Arc<Raid>, target: usize, resync: bool, from: u64) {
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

// ---- delete / teardown -------------------------------------------------------------------------

/// `bdev_raid_delete`: stops a rebuild, unregisters the raid bdev (if online) and releases
/// every member. Superblocks are left as they are (the raid reassembles on a later examine).
pub fn delete(name: &str, done: impl FnOnce(Result<()>) + Send + 'static) {
    let Some(raid) = find(name) else {
        return done(Err(BdevError::new(
            ErrorKind::NotFound,
            format!("raid bdev '{name}' not found"),
        )));
    };
    let r = raid.clone();
    run_op(&raid, move |op| {
        let rb = r.st().rebuild.clone();
        let r2 = r.clone();
        let cont = move || {
            let (bdev, release) = {
                let mut st = r2.st();
                st.teardown = Teardown::Delete;
                match st.bdev.clone() {
                    Some(b) => (Some(b), Vec::new()),
                    None => (
                        None,
                        st.slots.iter_mut().filter_map(|s| s.desc.take()).collect(),
                    ),
                }
            };
            match bdev {
                Some(b) => ferrite_bdev::unregister_bdev(&b, move |res| {
                    done(res);
                    drop(op);
                }),
                None => {
                    forget(&r2);
                    drop(release);
                    tracing::info!("raid '{}' deleted", r2.name);
                    done(Ok(()));
                    drop(op);
                }
            }
        };
        match rb {
            Some(rb) => rb.stop("raid deleted", cont),
            None => cont(),
        }
    });
}

/// The raid bdev left the registry and has no descriptor open.
fn on_destruct(raid: &Arc<Raid>) {
    let (release, forget_it, rebuild) = {
        let mut st = raid.st();
        st.bdev = None;
        if let Some(d) = st.device.take() {
            d.unregister();
        }
        st.shared = None;
        st.state = RaidState::Offline;
        let rebuild = st.rebuild.take();
        match st.teardown {
            Teardown::Offline => {
                let rel: Vec<Arc<Desc>> = st
                    .slots
                    .iter_mut()
                    .filter(|s| s.removing)
                    .filter_map(|s| {
                        let d = s.desc.take();
                        s.clear();
                        d
                    })
                    .collect();
                let empty = st.slots.iter().all(|s| s.desc.is_none());
                (rel, empty, rebuild)
            }
            Teardown::Delete | Teardown::None => {
                let rel = st.slots.iter_mut().filter_map(|s| s.desc.take()).collect();
                (rel, true, rebuild)
            }
        }
    };
    let r = raid.clone();
    let finish = move || {
        if forget_it {
            forget(&r);
        }
        // Released only once no rebuild I/O can be in flight on the members.
        drop(release);
        tracing::info!("raid '{}' unregistered", r.name);
    };
    match rebuild {
        // Unregistered by someone else (shutdown) in the middle of a rebuild.
        Some(rb) => rb.stop("raid bdev removed", finish),
        None => finish(),
    }
}

// ---- backend -----------------------------------------------------------------------------------

/// The backend of one online raid bdev.
struct RaidBackend {
    raid: Arc<Raid>,
    device: IoDevice<ChanCtx>,
    unmap: bool,
    flush: bool,
    write_zeroes: bool,
}

/// The channel of a thread that could not get the raid's state (device going away).
struct DeadChannel;

impl BackendChannel for DeadChannel {
    fn submit(&mut self, io: Box<BdevIo>) {
        io.complete(IoStatus::Failed);
    }
}

impl BdevBackend for RaidBackend {
    fn module_name(&self) -> &'static str {
        "raid"
    }

    /// Reads and writes always; unmap, flush and write-zeroes when every member takes them
    /// (never for raid5f). Reset and abort are the bdev layer's (drain), compare and
    /// compare-and-write are emulated by it with reads.
    fn io_type_supported(&self, t: IoType) -> bool {
        match t {
            IoType::Read | IoType::Write => true,
            IoType::Unmap => self.unmap,
            IoType::Flush => self.flush,
            IoType::WriteZeroes => self.write_zeroes,
            _ => false,
        }
    }

    fn create_channel(&self) -> Box<dyn BackendChannel> {
        match self.device.get_channel() {
            Ok(ctx) => Box::new(RaidChannel { ctx }),
            Err(e) => {
                tracing::warn!(
                    "raid '{}': no channel state on this thread: {e}",
                    self.raid.name
                );
                Box::new(DeadChannel)
            }
        }
    }

    fn destruct(&self) {
        on_destruct(&self.raid);
    }

    fn driver_specific(&self) -> Option<(&'static str, Value)> {
        Some(("raid", info_json(&self.raid, false)))
    }

    fn config_entry(&self, _bdev: &Bdev) -> Option<Value> {
        config_entry(&self.raid)
    }
}

// ---- JSON views --------------------------------------------------------------------------------

fn info_json(raid: &Raid, with_name: bool) -> Value {
    let st = raid.st();
    let online = st.state == RaidState::Online;
    let discovered = st.slots.iter().filter(|s| s.desc.is_some()).count();
    let operational = if online {
        st.slots
            .iter()
            .filter(|s| s.desc.is_some() && !s.removing)
            .count()
    } else {
        st.slots.iter().filter(|s| s.expected).count()
    };
    let mut v = serde_json::Map::new();
    if with_name {
        v.insert("name".into(), json!(raid.name));
    }
    v.insert("uuid".into(), json!(raid.uuid.to_string()));
    v.insert("strip_size_kb".into(), json!(raid.strip_size_kb));
    v.insert("state".into(), json!(st.state.name()));
    v.insert("raid_level".into(), json!(raid.level.name()));
    v.insert("superblock".into(), json!(raid.superblock));
    v.insert("num_base_bdevs".into(), json!(st.slots.len()));
    v.insert("num_base_bdevs_discovered".into(), json!(discovered));
    v.insert("num_base_bdevs_operational".into(), json!(operational));
    // Ferrite's own (SPDK has no write-intent bitmap): what a returning member would copy.
    if let (Some(sh), RaidLevel::Raid1) = (&st.shared, raid.level) {
        v.insert(
            "write_intent_bitmap".into(),
            json!({"persistent": sh.wib.persisted(),
                   "region_size_kb": (sh.wib.region_blocks() * u64::from(sh.block_size)) / 1024,
                   "dirty_regions": sh.wib.count()}),
        );
    }
    if let Some(rb) = &st.rebuild {
        let blocks = rb.progress();
        let pct = blocks.saturating_mul(100) / rb.num_blocks.max(1);
        v.insert(
            "process".into(),
            json!({"type": "rebuild", "target": rb.target_name,
                   "progress": {"blocks": blocks, "percent": pct}}),
        );
    }
    let list: Vec<Value> = st
        .slots
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "uuid": s.uuid.unwrap_or_default().to_string(),
                "is_configured": s.desc.is_some(),
                "data_offset": s.data_offset,
                "data_size": s.data_size,
            })
        })
        .collect();
    v.insert("base_bdevs_list".into(), Value::Array(list));
    Value::Object(v)
}

/// `bdev_raid_get_bdevs`: raids in `category` ("all", "online", "configuring", "offline").
pub fn get_bdevs(category: &str) -> Result<Vec<Value>> {
    let want = match category {
        "all" => None,
        "online" => Some(RaidState::Online),
        "configuring" => Some(RaidState::Configuring),
        "offline" => Some(RaidState::Offline),
        _ => {
            return Err(einval(format!(
                "category '{category}' is not one of all, online, configuring, offline"
            )))
        }
    };
    let list: Vec<Arc<Raid>> = raids().clone();
    Ok(list
        .iter()
        .filter(|r| want.is_none_or(|w| r.st().state == w))
        .map(|r| info_json(r, true))
        .collect())
}

fn create_entry(raid: &Raid) -> Value {
    let st = raid.st();
    let bases: Vec<String> = st
        .slots
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.name
                .clone()
                .unwrap_or_else(|| format!("removed_base_bdev_{i}"))
        })
        .collect();
    let mut p = json!({
        "name": raid.name,
        "uuid": raid.uuid.to_string(),
        "raid_level": raid.level.name(),
        "base_bdevs": bases,
    });
    if raid.strip_size_kb != 0 {
        p["strip_size_kb"] = json!(raid.strip_size_kb);
    }
    if raid.superblock {
        p["superblock"] = json!(true);
    }
    json!({"method": "bdev_raid_create", "params": p})
}

/// The entry recreating an online raid: none for a raid with a superblock (its members
/// carry its configuration, as SPDK).
fn config_entry(raid: &Raid) -> Option<Value> {
    if raid.superblock {
        return None;
    }
    Some(create_entry(raid))
}

// ---- module ------------------------------------------------------------------------------------

/// The raid module: claims configured members as they appear and assembles raids from the
/// superblocks it finds.
pub struct RaidModule;

impl BdevModule for RaidModule {
    fn name(&self) -> &'static str {
        "raid"
    }

    /// A bdev named as a member of a configuring raid is claimed for it.
    fn examine_config(&self, bdev: &Arc<Bdev>) {
        let list: Vec<Arc<Raid>> = raids().clone();
        for r in list {
            let slot = {
                let st = r.st();
                if st.state != RaidState::Configuring {
                    continue;
                }
                st.slots
                    .iter()
                    .position(|s| s.desc.is_none() && s.name.is_some() && s.matches(bdev))
            };
            let Some(i) = slot else { continue };
            if let Err(e) = claim_slot(&r, i, bdev) {
                tracing::error!("raid '{}': {e}", r.name);
                continue;
            }
            let name = r.name.clone();
            maybe_configure(
                &r,
                Box::new(move |res| {
                    if let Err(e) = res {
                        tracing::error!("raid '{name}': cannot come online: {e}");
                    }
                }),
            );
            return;
        }
    }

    /// Looks for a superblock on bdevs nobody claimed.
    fn examine_disk(&self, bdev: &Arc<Bdev>, done: ExamineDone) {
        examine_disk(bdev, done);
    }

    /// Starts degraded the raids assembled from superblocks that still miss members but have
    /// a quorum (see `assemble`).
    fn examine_settled(&self) {
        assemble::start_degraded();
    }

    /// Options (when changed from the defaults; SPDK always writes them), then raids still
    /// waiting for members (online raids are saved by their bdev).
    fn config_json(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let window = WINDOW_KB.load(Ordering::Relaxed);
        if window != DEFAULT_WINDOW_KB {
            out.push(json!({"method": "bdev_raid_set_options", "params": {
                "process_window_size_kb": window,
                "process_max_bandwidth_mb_sec": MAX_BW.load(Ordering::Relaxed),
            }}));
        }
        let list: Vec<Arc<Raid>> = raids().clone();
        for r in list {
            let (configuring, seq) = {
                let st = r.st();
                (st.state == RaidState::Configuring, st.seq)
            };
            // A raid assembled from (or already written to) superblocks reassembles itself.
            if configuring && !(r.superblock && seq > 0) {
                out.push(create_entry(&r));
            }
        }
        out
    }
}

/// `bdev_raid_set_options`: the rebuild window (KiB, > 0) and the bandwidth limit (only 0,
/// unlimited, is supported).
pub fn set_options(window_kb: Option<u32>, max_bw_mb_sec: Option<u32>) -> Result<()> {
    if window_kb == Some(0) {
        return Err(einval(
            "process_window_size_kb must be greater than 0".into(),
        ));
    }
    if let Some(bw) = max_bw_mb_sec.filter(|b| *b != 0) {
        return Err(BdevError::new(
            ErrorKind::NotSupported,
            format!("process_max_bandwidth_mb_sec {bw}: only 0 (unlimited) is supported"),
        ));
    }
    if let Some(w) = window_kb {
        WINDOW_KB.store(w, Ordering::Relaxed);
    }
    Ok(())
}

// ---- test and debugging hooks ------------------------------------------------------------------

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
