//! Creating, rescanning and deleting aio bdevs; their `bdev_get_bdevs` and save_config entries.

use std::sync::Arc;

use ferrite_bdev::uuid::Uuid;
use ferrite_bdev::{BackendChannel, Bdev, BdevBackend, BdevModule, BdevProps, IoType, Result};
use serde_json::{json, Value};

use crate::file::{DiskRegistry, FileDisk, FileError, OpenOpts};

/// Parameters of `bdev_aio_create`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AioOpts {
    /// Bdev name.
    pub name: String,
    /// File or block device.
    pub filename: String,
    /// Block size; 0 = detect (logical block size of a device; the filesystem's direct-I/O
    /// granularity for a file opened with O_DIRECT; else 512).
    pub block_size: u32,
    /// Open read-only: writes, unmaps and write-zeroes are not supported.
    pub readonly: bool,
    /// Support unmap (punch hole / discard) and write-zeroes (zero range) through fallocate.
    pub fallocate: bool,
    /// UUID (random when absent).
    pub uuid: Option<String>,
}

static DISKS: DiskRegistry = DiskRegistry::new();

struct AioBackend {
    disk: Arc<FileDisk>,
    uuid: Uuid,
    fallocate: bool,
}

impl BdevBackend for AioBackend {
    fn module_name(&self) -> &'static str {
        "aio"
    }

    fn io_type_supported(&self, t: IoType) -> bool {
        let d = &self.disk;
        match t {
            IoType::Read | IoType::Flush => true,
            IoType::Write => !d.readonly,
            IoType::Unmap => !d.readonly && self.fallocate && d.can_punch,
            IoType::WriteZeroes => !d.readonly && self.fallocate && d.can_zero_range,
            _ => false,
        }
    }

    fn create_channel(&self) -> Box<dyn BackendChannel> {
        Box::new(crate::io::AioChannel::new(self.disk.clone()))
    }

    fn destruct(&self) {
        DISKS.remove(&self.disk);
    }

    fn driver_specific(&self) -> Option<(&'static str, Value)> {
        let d = &self.disk;
        let mut m = d.common_json();
        m.insert("block_size_override".into(), d.block_size_override.into());
        m.insert("readonly".into(), d.readonly.into());
        m.insert("fallocate".into(), self.fallocate.into());
        Some(("aio", Value::Object(m)))
    }

    fn config_entry(&self, bdev: &Bdev) -> Option<Value> {
        let d = &self.disk;
        let mut params = json!({
            "name": bdev.name(),
            "filename": d.filename,
            "readonly": d.readonly,
            "fallocate": self.fallocate,
            "uuid": self.uuid.to_string(),
        });
        if d.block_size_override {
            params["block_size"] = json!(bdev.block_size());
        }
        Some(json!({"method": "bdev_aio_create", "params": params}))
    }
}

/// The aio module (nothing to examine).
pub struct AioModule;

impl BdevModule for AioModule {
    fn name(&self) -> &'static str {
        "aio"
    }
}

/// Checks a new bdev's name and UUID before anything is opened.
pub fn check_new(name: &str, uuid: &Option<String>) -> std::result::Result<Uuid, FileError> {
    if name.is_empty() {
        return Err(FileError::new(libc::EINVAL, "bdev name must not be empty"));
    }
    if ferrite_bdev::lookup(name).is_some() {
        return Err(FileError::new(
            libc::EEXIST,
            format!("bdev name '{name}' already exists"),
        ));
    }
    Ok(match uuid {
        Some(u) => Uuid::parse(u)?,
        None => Uuid::new_v4(),
    })
}

/// Creates an aio bdev on a file or block device; returns its name. Errors carry the errno
/// SPDK reports and name the file and the reason.
pub fn create(opts: &AioOpts) -> std::result::Result<String, FileError> {
    let uuid = check_new(&opts.name, &opts.uuid)?;
    let (disk, blocks) = FileDisk::open(&OpenOpts {
        name: opts.name.clone(),
        filename: opts.filename.clone(),
        block_size: opts.block_size,
        readonly: opts.readonly,
    })?;
    let disk = Arc::new(disk);
    let mut props = BdevProps::new(&opts.name, "AIO disk", disk.block_size, blocks);
    props.uuid = Some(uuid);
    props.write_cache = true;
    let backend = Arc::new(AioBackend {
        disk: disk.clone(),
        uuid,
        fallocate: opts.fallocate,
    });
    DISKS.register("aio", props, backend, &disk, blocks)
}

/// Deletes the aio bdev `name`; `done` runs once it is gone.
pub fn delete(name: &str, done: impl FnOnce(Result<()>) + Send + 'static) {
    ferrite_bdev::unregister(name, Some("aio"), done);
}

/// Picks up a changed size of the file or device behind `name` (`bdev_aio_rescan`); returns
/// the block count.
pub fn rescan(name: &str) -> std::result::Result<u64, FileError> {
    crate::file::rescan("aio", &DISKS, name)
}

/// I/O bounced through aligned buffers so far by bdev `name`.
pub fn bounces(name: &str) -> Result<u64> {
    DISKS.find(name).map(|d| d.bounces())
}

/// True once bdev `name` runs its flushes as fdatasync on a helper thread (the file refused
/// AIO FDSYNC).
pub fn flush_on_helper(name: &str) -> Result<bool> {
    DISKS.find(name).map(|d| d.fdsync_unsupported())
}
