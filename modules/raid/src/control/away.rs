//! raid1: could anyone else have written a member while it was away?
//!
//! A member removed in sync is resynced from the write-intent bitmap when it comes back: only
//! the regions the raid wrote meanwhile are copied. While it was out it was unclaimed, so
//! anything could open it for writing (another module, a bench job, an export); the bitmap
//! knows nothing of those writes and the mirror would keep different data on its members.
//! The bdev layer counts grants of write access ([`ferrite_bdev::WriteMark`]): the raid marks
//! the count as it lets go of the member and, when it takes it back, resyncs only if no one
//! else got write access in between; otherwise the member is rebuilt in full.

use ferrite_bdev::{Desc, WriteMark};

use super::Raid;

/// What the raid knows of write access to a member that left in sync.
#[derive(Debug, Default)]
pub(crate) enum AwayMark {
    /// Nothing (recorded away in a superblock, e.g. before a restart): counted from the
    /// bdev's registration.
    #[default]
    Unknown,
    /// The raid was the only writer when it let go.
    Sole(WriteMark),
    /// Another descriptor was open for writing when the raid let go.
    Shared,
}

/// The mark to keep for a departing member, taken just before `desc` is dropped.
pub(super) fn mark(desc: &Desc) -> AwayMark {
    desc.write_mark().map_or(AwayMark::Shared, AwayMark::Sole)
}

/// At the return of a member that left in sync, its new descriptor `desc` already claimed:
/// true if a resync from the bitmap is enough; otherwise says why it is rebuilt in full.
pub(super) fn resync_ok(raid: &Raid, desc: &Desc, mark: &AwayMark) -> bool {
    let why = match mark {
        AwayMark::Shared => "another descriptor was open for writing on it when it left",
        AwayMark::Sole(m) if desc.sole_writer_since(Some(m)) => return true,
        AwayMark::Unknown if desc.sole_writer_since(None) => return true,
        AwayMark::Sole(_) => "it was opened for writing outside the raid while it was away",
        AwayMark::Unknown => "it was opened for writing outside the raid since it was registered",
    };
    tracing::warn!(
        "raid '{}': member '{}' is back but {why}; its data may differ from the bitmap's record, rebuilding it in full",
        raid.name,
        desc.bdev().name()
    );
    false
}
