//! The raid bdev module (SPDK's `module/bdev/raid`, v25.09-compatible RPCs): raid0, raid1,
//! concat and raid5f over base bdevs, with optional on-disk superblocks, raid1 and raid5f
//! rebuild and a raid1 write-intent bitmap.
//!
//! # Layout of the crate
//!
//! - `control` (a folder, one file per topic, listed in `control/mod.rs`): the raid list,
//!   create/delete, claims (exclusive-write, module "raid"), configuration into a bdev,
//!   member removal (RPC, hot-remove, I/O failure → degraded) and addition (rebuild), examine
//!   (by name from configuration, by superblock from disk), teardown, JSON views,
//!   `save_config`; `control/assemble.rs`: degraded start once examine
//!   settles, returning members and their queue. State changes of one raid run as serialized
//!   *operations* (several have asynchronous steps: quiesce, superblock writes, channel walks).
//! - `superblock`: the on-disk format and its validation (nothing read from disk is trusted).
//! - `ctlio`: control-path I/O batches (superblocks, examine, rebuild copies).
//! - `io`: per-thread channel state, member masks, the write-intent bitmap, and the fan-out of
//!   a parent I/O into children on the members.
//! - `raid0`, `concat`, `raid1`, `raid5f`: the data path of each level.
//! - `rebuild`: the rebuild state machine (raid1 copies, raid5f reconstructs);
//!   `rebuild/machine.rs` holds its transitions, `rebuild/window.rs` the steps on one window.
//! - `rpc`: `bdev_raid_create`, `bdev_raid_delete`, `bdev_raid_get_bdevs`,
//!   `bdev_raid_add_base_bdev`, `bdev_raid_remove_base_bdev`, `bdev_raid_set_options`.
//!
//! # Life of a raid
//!
//! 1. **Create** (`bdev_raid_create`): validated (level, strip size a power of two for the
//!    striped levels and 0 for raid1, member count, names), remembered, and every named base
//!    that exists is claimed. A raid missing bases is *configuring*; `examine_config` claims
//!    each base as it registers, and the last one brings the raid online.
//! 2. **Configure**: block size and data areas from the members (data offset 0, or 1 MiB with
//!    a superblock), the size per level (SPDK's rules: raid0/raid5f round the smallest member
//!    down to whole strips; concat rounds each member), superblocks written if enabled, then
//!    the raid bdev ("Raid Volume") is registered.
//! 3. **I/O**: see `io`. No lock and no heap allocation per I/O (children from the thread's
//!    pool or the channel's stock of kept raid1 children, staging pre-sized per channel,
//!    atomics for member masks), proven by `tests/zero_alloc.rs` for every level.
//!    Completions only through `io.complete` (raid1 writes: the parent itself is one of the
//!    pieces, and the last piece's hook hands it back to the bdev layer, which completes it
//!    in the same step; see `raid1_write`).
//! 4. **Member loss**: a raid1 (or raid5f) member that fails I/O is reported by the data path
//!    and dropped by the control path (I/O continues, degraded); removal by RPC or hot-remove
//!    does the same. The raid is quiesced while every thread lets go of the member, the other
//!    members' superblocks record it missing/failed, then its claim is released. A raid that
//!    cannot do without it (raid0, concat, the last raid1 member) goes *offline*: the raid bdev
//!    is unregistered, the other members stay claimed until `bdev_raid_delete`.
//! 5. **Re-add** (`bdev_raid_add_base_bdev`, raid1 and raid5f): the bdev takes an empty slot
//!    and is rebuilt by the state machine in `rebuild` while I/O continues; writes to the window
//!    being copied wait for it (a range lock in the raid's own channels, chosen over the bdev
//!    layer's whole-bdev quiesce so that I/O elsewhere never stops).
//! 6. **Delete**: stops a rebuild, unregisters the raid bdev, releases the members.
//!
//! # Superblock and reassembly
//!
//! With `superblock: true` every member carries a header at block 0 (format in
//! `superblock`). When a bdev carrying a valid one registers, `examine_disk` recreates the raid
//! it describes (same name, UUID, level, strip, data areas) or joins it, claims the bdev and
//! brings the raid online once every member recorded *in sync* is there — degraded if the
//! superblock records members missing or failed. A member whose superblock is older and no
//! longer lists it is not taken back silently (re-add it by RPC). As SPDK, a raid with a
//! superblock is not written to `save_config` (its members carry its configuration), and a
//! deleted raid's superblocks are left in place. Invalid superblocks are ignored with a log
//! line naming the bdev.
//!
//! **Degraded start and returning members** (`control/assemble.rs`; SPDK instead keeps such a
//! raid configuring): a raid still missing members recorded in sync when examine settles
//! (end of the configuration load, `bdev_wait_for_examine`) starts degraded if the members
//! present form a quorum (raid1: one, raid5f: all but one), recording the others missing;
//! such a member that appears later with an older superblock still listing itself in sync
//! is taken back automatically (resync or rebuild). A member removed by RPC has its own
//! superblock updated to say so: it never assembles the raid alone with stale data, and
//! comes back only by RPC. Sequence numbers decide staleness: a superblock as new as the
//! raid's on a member that left means two histories, and it is refused.
//!
//! **Interrupted rebuilds (restart, crash).** A member being rebuilt is recorded *rebuilding*
//! with its UUID and a *checkpoint*: the raid blocks below it are known to be on the member
//! (written every sixteenth of the raid by the rebuild, see `rebuild`). It is never a source
//! and never counts toward bringing the raid online. On assembly it is taken back in its
//! slot: if it is claimed before the raid comes online, the rebuild resumes at the
//! checkpoint as soon as the raid is registered (no write can have reached the raid since the
//! checkpoint was recorded); if it appears after the raid came online degraded (writes since
//! then reached only the in-sync members), it is rebuilt from the start. `bdev_raid_add_base_bdev`
//! of another bdev may take its slot. A raid assembled from superblocks finishes the examine of
//! the member that completed it only once it is registered, so `wait_for_examine` (e.g.
//! `ferrite bench -c`) sees the raid bdev.
//!
//! # Write-intent bitmap (raid1)
//!
//! While a member that left in sync (removed or hot-removed, not failed) is away, writes mark
//! 64 KiB regions (larger on huge raids, at most 2^20 regions) in a lock-free bitmap. When
//! that same bdev (same UUID) is added back, the rebuild copies only the marked regions
//! ("resync"), and [`last_rebuild`] reports the blocks copied. A failed member, or any other
//! bdev, gets a full rebuild. The returning member must not have been written while it was
//! away (it is unclaimed then). `bdev_raid_get_bdevs` reports it as `write_intent_bitmap`
//! (`persistent`, `region_size_kb`, `dirty_regions`; Ferrite's own field).
//!
//! With a superblock the bitmap is **persisted** (`control/bitmap.rs`: format, ordering,
//! trust): at byte 64 KiB of every member, CRC-checked; a write waits until the bits of its
//! regions are on disk (written and flushed) before it reaches a member; bits are cleared
//! lazily once nobody is away. The superblock flags each missing member the bitmap covers;
//! after a restart the bitmap is read from the members (ORed) and a member that comes back
//! is resynced from it — an unreadable or invalid bitmap means a full rebuild, never trust.
//! Without a superblock the bitmap lives in memory only.
//!
//! # Deviations and limits
//!
//! - At most [`MAX_BASE_BDEVS`] members (member sets are 64-bit masks); names up to 63 bytes.
//! - raid5f: full-stripe writes only (as SPDK); reads that hit a missing member are rebuilt
//!   from parity; a read failing on a member fails (the member is dropped and later reads
//!   reconstruct); strips must fit the largest DMA buffer; during a rebuild every read of a
//!   strip on the new member is reconstructed until the rebuild is done.
//! - raid1 after a crash: a write in flight when the process died may have reached some
//!   in-sync members and not others (no journal, as SPDK; the persisted bitmap covers only
//!   members that are away); the rebuild checkpoint only covers the copy itself.
//! - `bdev_raid_set_options`: `process_max_bandwidth_mb_sec` must be 0 (unlimited); the
//!   options are saved only when they differ from the defaults.
//! - Reset is drained by the bdev layer (not forwarded); the members are named as the raid
//!   bdev's bases for held I/O (`ferrite_bdev::set_held_io_bases`, kept current as members
//!   come and go), so the drain does not wait for I/O a member module holds on purpose.
//!   Compare and compare-and-write are emulated by the bdev layer with reads.
//!
//! # Bdev-layer addition
//!
//! [`ferrite_bdev::BdevIo::append_iovs_from`] (unsafe, documented): appends a byte range of a
//! parent's segments to a child, so one child per member can gather its pieces of the
//! parent's buffer without allocating. Parents shared by several children are carried by the
//! children's `user` words (we are their submitter) — no other bdev change was needed.
//!
//! Thread contract: control functions on the app thread (a lightweight thread); the data
//! path on whichever thread submits; member failures reach the control path by message.

mod concat;
mod control;
mod ctlio;
mod io;
mod raid0;
mod raid1;
mod raid1_write;
mod raid5f;
mod rebuild;
mod rpc;
pub mod superblock;
mod types;

pub use control::{
    add_base_bdev, create, delete, get_bdevs, last_rebuild, rebuild_state, remove_base_bdev,
    resume_rebuild, set_options, set_rebuild_pause, RaidModule, RaidOpts, RebuildReport,
};
pub use rebuild::RebuildState;
pub use rpc::register_rpcs;
pub use types::{MemberState, RaidLevel, RaidState, MAX_BASE_BDEVS};
