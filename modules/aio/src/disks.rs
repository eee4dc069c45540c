//! The file bdevs of one module by bdev name (shared with the uring module): registration,
//! lookup, rescan.

use std::sync::{Arc, Mutex};

use ferrite_bdev::{BdevBackend, BdevError, BdevProps, ErrorKind};

use crate::file::{FileDisk, FileError};

/// The file bdevs of one module, by bdev name (for rescan and teardown).
#[derive(Debug, Default)]
pub struct DiskRegistry {
    disks: Mutex<Vec<(String, Arc<FileDisk>)>>,
}

impl DiskRegistry {
    /// An empty registry.
    pub const fn new() -> Self {
        Self {
            disks: Mutex::new(Vec::new()),
        }
    }

    /// Remembers `disk` under `name`.
    pub fn insert(&self, name: &str, disk: Arc<FileDisk>) {
        if let Ok(mut d) = self.disks.lock() {
            d.push((name.to_string(), disk));
        }
    }

    /// Forgets `disk`.
    pub fn remove(&self, disk: &Arc<FileDisk>) {
        if let Ok(mut d) = self.disks.lock() {
            d.retain(|(_, x)| !Arc::ptr_eq(x, disk));
        }
    }

    /// The disk of bdev `name`.
    pub fn get(&self, name: &str) -> Option<Arc<FileDisk>> {
        self.disks
            .lock()
            .ok()?
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d.clone())
    }

    /// Registers the bdev `props` backed by `disk` (opened with `blocks` blocks) for
    /// `module`, remembering the disk under the bdev's name; returns the name. On failure the
    /// disk is forgotten again.
    pub fn register(
        &self,
        module: &str,
        props: BdevProps,
        backend: Arc<dyn BdevBackend>,
        disk: &Arc<FileDisk>,
        blocks: u64,
    ) -> Result<String, FileError> {
        self.insert(&props.name, disk.clone());
        match ferrite_bdev::register(props, backend) {
            Ok(b) => {
                tracing::info!(
                    "bdev '{}': {module} on '{}' ({} blocks of {}, {})",
                    b.name(),
                    disk.filename,
                    blocks,
                    disk.block_size,
                    if disk.direct { "O_DIRECT" } else { "buffered" }
                );
                Ok(b.name().to_string())
            }
            Err(e) => {
                self.remove(disk);
                Err(e.into())
            }
        }
    }

    /// The disk of bdev `name`, or a NotFound error naming it.
    pub fn find(&self, name: &str) -> ferrite_bdev::Result<Arc<FileDisk>> {
        self.get(name)
            .ok_or_else(|| BdevError::new(ErrorKind::NotFound, format!("bdev '{name}' not found")))
    }
}

/// Re-reads the size of the file or device behind bdev `name` of `module` and announces a
/// change to the bdev's descriptors (`BdevEvent::Resize`). A size that is not a multiple of
/// the block size is refused (EINVAL), as `bdev_*_create` refuses it: the saved config
/// could not be loaded again. Shrinking a bdev that is open fails with EBUSY (as SPDK).
/// Returns the new block count.
pub fn rescan(module: &str, reg: &DiskRegistry, name: &str) -> Result<u64, FileError> {
    let b = ferrite_bdev::lookup(name)
        .filter(|b| b.module_name() == module)
        .ok_or_else(|| FileError::from(BdevError::not_found(name)))?;
    let disk = reg
        .get(b.name())
        .ok_or_else(|| FileError::from(BdevError::not_found(name)))?;
    let bytes = disk.size_bytes().map_err(|e| {
        FileError::os(
            format!("bdev '{name}': cannot get the size of '{}'", disk.filename),
            &e,
        )
    })?;
    let blocks = bytes / u64::from(disk.block_size);
    let old = b.num_blocks();
    if !bytes.is_multiple_of(u64::from(disk.block_size)) {
        return Err(FileError::new(
            libc::EINVAL,
            format!(
                "bdev '{name}': '{}' is now {bytes} bytes, not a multiple of the block size {}; not resized (try again once it is)",
                disk.filename, disk.block_size
            ),
        ));
    }
    if blocks == old {
        return Ok(blocks);
    }
    if blocks == 0 {
        return Err(FileError::new(
            libc::EINVAL,
            format!(
                "bdev '{name}': '{}' is now smaller than one block",
                disk.filename
            ),
        ));
    }
    if blocks < old && b.open_count() > 0 {
        return Err(FileError::new(
            libc::EBUSY,
            format!(
                "bdev '{name}': '{}' shrank from {old} to {blocks} blocks while the bdev is open",
                disk.filename
            ),
        ));
    }
    tracing::info!(
        "bdev '{name}': '{}' resized from {old} to {blocks} blocks",
        disk.filename
    );
    b.notify_resize(blocks);
    Ok(blocks)
}
