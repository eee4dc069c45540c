//! Creating, rescanning and deleting uring bdevs; their `bdev_get_bdevs` and save_config
//! entries.

use std::sync::Arc;

use ferrite_aio::file::{DiskRegistry, FileDisk, FileError, OpenOpts};
use ferrite_bdev::uuid::Uuid;
use ferrite_bdev::{BackendChannel, Bdev, BdevBackend, BdevModule, BdevProps, IoType, Result};
use io_uring::{opcode, IoUring, Probe};
use serde_json::{json, Value};

use crate::sync::IoPath;

/// Parameters of `bdev_uring_create`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UringOpts {
    /// Bdev name.
    pub name: String,
    /// File or block device.
    pub filename: String,
    /// Block size; 0 = detect (as the aio module).
    pub block_size: u32,
    /// UUID (random when absent).
    pub uuid: Option<String>,
}

static DISKS: DiskRegistry = DiskRegistry::new();

struct UringBackend {
    disk: Arc<FileDisk>,
    uuid: Uuid,
    fallocate_op: bool,
    path: IoPath,
}

impl BdevBackend for UringBackend {
    fn module_name(&self) -> &'static str {
        "uring"
    }

    fn io_type_supported(&self, t: IoType) -> bool {
        match t {
            IoType::Read | IoType::Write | IoType::Flush => true,
            IoType::Unmap => self.disk.can_punch,
            IoType::WriteZeroes => self.disk.can_zero_range,
            _ => false,
        }
    }

    fn create_channel(&self) -> Box<dyn BackendChannel> {
        Box::new(crate::io::UringChannel::new(
            self.disk.clone(),
            self.fallocate_op,
            self.path,
        ))
    }

    fn destruct(&self) {
        DISKS.remove(&self.disk);
    }

    fn driver_specific(&self) -> Option<(&'static str, Value)> {
        // SPDK's shape ({"filename"}) plus Ferrite's fields; SPDK clients ignore the extra ones.
        let mut m = self.disk.common_json();
        m.insert("io_path".into(), self.path.name().into());
        Some(("uring", Value::Object(m)))
    }

    fn config_entry(&self, bdev: &Bdev) -> Option<Value> {
        Some(json!({"method": "bdev_uring_create", "params": {
            "name": bdev.name(),
            "filename": self.disk.filename,
            "block_size": bdev.block_size(),
            "uuid": self.uuid.to_string(),
        }}))
    }
}

/// The uring module (nothing to examine).
pub struct UringModule;

impl BdevModule for UringModule {
    fn name(&self) -> &'static str {
        "uring"
    }
}

/// What the kernel offers: an error if io_uring cannot be used at all (old kernel: ENOSYS;
/// seccomp or `kernel.io_uring_disabled`: EPERM), else whether `IORING_OP_FALLOCATE` exists.
pub fn probe(name: &str) -> std::result::Result<bool, FileError> {
    let ring = IoUring::new(4).map_err(|e| {
        let errno = e.raw_os_error().unwrap_or(libc::EIO);
        FileError::new(
            errno,
            format!(
                "bdev '{name}': io_uring is not available on this system: io_uring_setup failed: {}",
                ferrite_aio::file::strerror(errno)
            ),
        )
    })?;
    let mut p = Probe::new();
    Ok(ring.submitter().register_probe(&mut p).is_ok() && p.is_supported(opcode::Fallocate::CODE))
}

/// Creates a uring bdev on a file or block device (opened read-write); returns its name.
/// Errors carry the errno SPDK reports and name the file and the reason; a kernel without
/// usable io_uring is an error.
pub fn create(opts: &UringOpts) -> std::result::Result<String, FileError> {
    let uuid = ferrite_aio::check_new(&opts.name, &opts.uuid)?;
    let fallocate_op = probe(&opts.name)?;
    let (disk, blocks) = FileDisk::open(&OpenOpts {
        name: opts.name.clone(),
        filename: opts.filename.clone(),
        block_size: opts.block_size,
        readonly: false,
    })?;
    let disk = Arc::new(disk);
    let path = IoPath::for_disk(&disk);
    match disk.memory_fs {
        Some(fs) => tracing::info!(
            "bdev '{}': '{}' is on {fs}, which has no non-blocking reads: reads and writes are copied at submission (io_path {}), not handed to an io_uring kernel worker",
            opts.name,
            disk.filename,
            path.name()
        ),
        None => tracing::info!(
            "bdev '{}': reads and writes go through the ring (io_path {})",
            opts.name,
            path.name()
        ),
    }
    let mut props = BdevProps::new(&opts.name, "URING bdev", disk.block_size, blocks);
    props.uuid = Some(uuid);
    props.write_cache = true;
    let backend = Arc::new(UringBackend {
        disk: disk.clone(),
        uuid,
        fallocate_op,
        path,
    });
    DISKS.register("uring", props, backend, &disk, blocks)
}

/// Deletes the uring bdev `name`; `done` runs once it is gone.
pub fn delete(name: &str, done: impl FnOnce(Result<()>) + Send + 'static) {
    ferrite_bdev::unregister(name, Some("uring"), done);
}

/// Picks up a changed size of the file or device behind `name` (`bdev_uring_rescan`); returns
/// the block count.
pub fn rescan(name: &str) -> std::result::Result<u64, FileError> {
    ferrite_aio::file::rescan("uring", &DISKS, name)
}

/// I/O bounced through aligned buffers so far by bdev `name`.
pub fn bounces(name: &str) -> Result<u64> {
    DISKS.find(name).map(|d| d.bounces())
}
