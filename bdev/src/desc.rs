//! Descriptors (open bdevs) and claims.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::bdev::{Bdev, ClaimEntry, DescEntry, Status};
use crate::channel::BdevChannel;
use crate::error::{BdevError, ErrorKind, Result};
use crate::types::{BdevEvent, ClaimKind};

static NEXT_DESC: AtomicU64 = AtomicU64::new(1);

/// An open bdev. Events (remove, resize) reach the callback on the thread that opened it, by
/// message, after `open` has returned. Dropping the descriptor closes it and releases its
/// claims; the last close of a bdev being removed finishes the removal.
///
/// Thread contract: open on a lightweight thread for events to be delivered there; may be
/// dropped on any thread.
pub struct Desc {
    pub(crate) id: u64,
    bdev: Arc<Bdev>,
    write: AtomicBool,
    /// The bdev's grant count right after this descriptor got write access (0: never).
    pub(crate) granted: AtomicU64,
}

impl std::fmt::Debug for Desc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Desc({}, {})", self.bdev.name, self.id)
    }
}

fn holder_text(c: &ClaimEntry, bdev: &str) -> String {
    format!(
        "bdev '{bdev}' is claimed ({}) by module '{}'",
        c.kind.spdk_name(),
        c.module
    )
}

/// A claim refused because another descriptor has the bdev open for writing: names the
/// lightweight threads those descriptors were opened on (which say who holds them: a vhost
/// controller's, a bench job's, the app thread for an RPC's), so an operator can find them.
fn other_writer_error(bdev: &str, descs: &[DescEntry], me: u64) -> BdevError {
    let mut on: Vec<&str> = descs
        .iter()
        .filter(|d| d.id != me && d.write)
        .map(|d| d.thread.as_ref().map_or("no reactor thread", |t| t.name()))
        .collect();
    on.sort_unstable();
    on.dedup();
    BdevError::new(
        ErrorKind::Claimed,
        format!(
            "bdev '{bdev}' is open for writing by another descriptor (opened on thread {})",
            on.join(", ")
        ),
    )
}

impl Desc {
    /// Opens the bdev named `name` (name, alias or UUID). A write open fails if the bdev has a
    /// claim (the error names the holder); any open fails while the bdev is being removed.
    pub fn open(
        name: &str,
        write: bool,
        event_cb: impl Fn(BdevEvent) + Send + Sync + 'static,
    ) -> Result<Desc> {
        let bdev = crate::registry::lookup(name).ok_or_else(|| BdevError::not_found(name))?;
        Self::open_bdev(&bdev, write, event_cb)
    }

    /// As [`Desc::open`], for a bdev already looked up.
    pub fn open_bdev(
        bdev: &Arc<Bdev>,
        write: bool,
        event_cb: impl Fn(BdevEvent) + Send + Sync + 'static,
    ) -> Result<Desc> {
        let mut st = bdev.state.lock().map_err(|_| poisoned(bdev))?;
        if st.status != Status::Registered {
            return Err(BdevError::new(
                ErrorKind::Removing,
                format!("bdev '{}' is being removed", bdev.name),
            ));
        }
        if write {
            if let Some(c) = st.claims.first() {
                return Err(BdevError::new(
                    ErrorKind::Claimed,
                    format!("cannot open for writing: {}", holder_text(c, &bdev.name)),
                ));
            }
        }
        let id = NEXT_DESC.fetch_add(1, Ordering::Relaxed);
        let granted = if write {
            crate::write_mark::grant(&mut st)
        } else {
            0
        };
        st.descs.push(DescEntry {
            id,
            thread: ferrite_reactor::current(),
            write,
            event_cb: Arc::new(event_cb),
        });
        Ok(Desc {
            id,
            bdev: bdev.clone(),
            write: AtomicBool::new(write),
            granted: AtomicU64::new(granted),
        })
    }

    /// The bdev.
    pub fn bdev(&self) -> &Arc<Bdev> {
        &self.bdev
    }

    /// True if open for writing (possibly promoted by a claim).
    pub fn is_writable(&self) -> bool {
        self.write.load(Ordering::Acquire)
    }

    /// The calling thread's channel for I/O through this descriptor. Must be called on a
    /// lightweight thread; the channel is used only there.
    pub fn channel(&self) -> Result<BdevChannel> {
        let ch = self.bdev.device.get_channel()?;
        Ok(BdevChannel::new(ch, self.is_writable(), self.bdev.clone()))
    }

    /// Claims the bdev through this descriptor for `module`. The claim lasts until
    /// [`Desc::release_claim`] or until the descriptor is dropped. Rules as SPDK's:
    /// - `ExclusiveWrite`: no other claim may exist; promotes this descriptor to write.
    /// - `ReadManyWriteOne`: no other claim, no other descriptor open for write; promotes.
    /// - `ReadManyWriteNone`: this descriptor read-only; no writer open; shares with other
    ///   `ReadManyWriteNone` claims.
    /// - `ReadManyWriteShared(key)`: key non-zero; shares with claims of the same key; the
    ///   first one needs no other descriptor open for write; promotes.
    pub fn claim(&self, kind: ClaimKind, module: &str) -> Result<()> {
        let b = &self.bdev;
        let mut st = b.state.lock().map_err(|_| poisoned(b))?;
        let conflict = |c: &ClaimEntry| BdevError::new(ErrorKind::Claimed, holder_text(c, &b.name));
        if st.claims.iter().any(|c| c.desc_id == self.id) {
            return Err(BdevError::new(
                ErrorKind::InvalidArgument,
                format!("descriptor already holds a claim on bdev '{}'", b.name),
            ));
        }
        let other_writer = st.descs.iter().any(|d| d.id != self.id && d.write);
        match kind {
            ClaimKind::ExclusiveWrite => {
                if let Some(c) = st.claims.first() {
                    return Err(conflict(c));
                }
            }
            ClaimKind::ReadManyWriteOne => {
                if let Some(c) = st.claims.first() {
                    return Err(conflict(c));
                }
                if other_writer {
                    return Err(other_writer_error(&b.name, &st.descs, self.id));
                }
            }
            ClaimKind::ReadManyWriteNone => {
                if self.is_writable() {
                    return Err(BdevError::new(
                        ErrorKind::InvalidArgument,
                        format!(
                            "read_many_write_none claim on bdev '{}' needs a read-only descriptor",
                            b.name
                        ),
                    ));
                }
                if let Some(c) = st
                    .claims
                    .iter()
                    .find(|c| c.kind != ClaimKind::ReadManyWriteNone)
                {
                    return Err(conflict(c));
                }
                if other_writer {
                    return Err(other_writer_error(&b.name, &st.descs, self.id));
                }
            }
            ClaimKind::ReadManyWriteShared(key) => {
                if key == 0 {
                    return Err(BdevError::new(
                        ErrorKind::InvalidArgument,
                        format!(
                            "read_many_write_shared claim on bdev '{}' needs a non-zero key",
                            b.name
                        ),
                    ));
                }
                if let Some(c) = st.claims.iter().find(|c| c.kind != kind) {
                    return Err(conflict(c));
                }
                // As SPDK: the first shared claim needs no other writer (later ones share
                // with the writers that the earlier claims promoted).
                if st.claims.is_empty() && other_writer {
                    return Err(other_writer_error(&b.name, &st.descs, self.id));
                }
            }
        }
        st.claims.push(ClaimEntry {
            desc_id: self.id,
            kind,
            module: module.to_string(),
        });
        if kind != ClaimKind::ReadManyWriteNone {
            if !self.is_writable() {
                let g = crate::write_mark::grant(&mut st);
                self.granted.store(g, Ordering::Release);
            }
            self.write.store(true, Ordering::Release);
            if let Some(d) = st.descs.iter_mut().find(|d| d.id == self.id) {
                d.write = true;
            }
        }
        Ok(())
    }

    /// Releases this descriptor's claim, if any.
    pub fn release_claim(&self) {
        if let Ok(mut st) = self.bdev.state.lock() {
            st.claims.retain(|c| c.desc_id != self.id);
        }
    }
}

impl Drop for Desc {
    fn drop(&mut self) {
        let finish = match self.bdev.state.lock() {
            Ok(mut st) => {
                st.descs.retain(|d| d.id != self.id);
                st.claims.retain(|c| c.desc_id != self.id);
                st.status == Status::Unregistering && st.descs.is_empty()
            }
            Err(_) => false,
        };
        if finish {
            crate::registry::finish_unregister(&self.bdev);
        }
    }
}

fn poisoned(b: &Bdev) -> BdevError {
    BdevError::new(
        ErrorKind::Busy,
        format!("bdev '{}' state is poisoned by an earlier panic", b.name),
    )
}
