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
//!
//! Files: this one holds the raid's state and the operation queue; `create` (validation,
//! claiming members), `configure` (layout, registering the raid bdev, channel state),
//! `backend` (the raid bdev's backend), `sb_write` (superblock writes), `examine` (raids
//! from superblocks), `assemble` (degraded start, returning members), `bitmap` (the
//! persisted write-intent bitmap), `remove` (member removal, going offline), `add` (adding
//! a member), `rebuild_ctl` (rebuilds from the control side, test hooks), `delete`
//! (deletion, teardown), `json` (`bdev_raid_get_bdevs`, `driver_specific`, config entries)
//! and `module` (the bdev module, `save_config`, `bdev_raid_set_options`).

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

mod add;
mod assemble;
mod away;
mod backend;
mod bitmap;
mod configure;
mod create;
mod delete;
mod examine;
mod json;
mod module;
mod rebuild_ctl;
mod remove;
mod sb_write;

pub use add::add_base_bdev;
use backend::RaidBackend;
use configure::maybe_configure;
use create::claim_slot;
pub use create::create;
pub use delete::delete;
use delete::on_destruct;
use examine::examine_disk;
pub use json::get_bdevs;
use json::{config_entry, create_entry, info_json};
pub use module::{set_options, RaidModule};
pub use rebuild_ctl::{
    last_rebuild, rebuild_state, resume_rebuild, set_rebuild_pause, RebuildReport,
};
pub(crate) use rebuild_ctl::{persist_bitmap, rebuild_checkpoint, rebuild_finished};
use rebuild_ctl::{resume_rebuilds, start_rebuild};
pub(crate) use remove::member_failed;
pub use remove::remove_base_bdev;
use remove::{on_base_event, remove_member};
use sb_write::{write_sb, write_sb_incl};

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
    /// raid1: what the bdev layer told of write access to the member in `away` when it left.
    away_mark: away::AwayMark,
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
            away_mark: Default::default(),
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

impl RaidSt {
    /// Names the members now claimed as the bases of the raid bdev (if registered), so that a
    /// reset of the raid reaches the I/O a module holds inside them (an error bdev's
    /// `pending`, a delay bdev's latency; see `ferrite_bdev::set_held_io_bases`). Called
    /// whenever the members or the raid bdev change (registration, claim, removal). Control
    /// path only.
    fn name_held_bases(&self) {
        let Some(b) = &self.bdev else {
            return;
        };
        let bases: Vec<&Arc<Bdev>> = self
            .slots
            .iter()
            .filter_map(|s| s.desc.as_ref().map(|d| d.bdev()))
            .collect();
        ferrite_bdev::set_held_io_bases(b, &bases);
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
