//! Creating, resizing and deleting null bdevs; their save_config entries.

use std::sync::Arc;

use ferrite_bdev::uuid::Uuid;
use ferrite_bdev::{
    BackendChannel, Bdev, BdevBackend, BdevError, BdevModule, BdevProps, ErrorKind, IoType, Result,
};
use serde_json::{json, Value};

/// Parameters of `bdev_null_create`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NullOpts {
    /// Bdev name.
    pub name: String,
    /// Number of blocks.
    pub num_blocks: u64,
    /// Block size in bytes (multiple of 512).
    pub block_size: u32,
    /// UUID (random when absent).
    pub uuid: Option<String>,
    /// Metadata bytes per block.
    pub md_size: u32,
}

struct NullBackend {
    uuid: Uuid,
    block_size: u32,
    md_size: u32,
}

impl BdevBackend for NullBackend {
    fn module_name(&self) -> &'static str {
        "null"
    }

    fn io_type_supported(&self, t: IoType) -> bool {
        matches!(
            t,
            IoType::Read
                | IoType::Write
                | IoType::Unmap
                | IoType::Flush
                | IoType::WriteZeroes
                | IoType::Reset
        )
    }

    fn create_channel(&self) -> Box<dyn BackendChannel> {
        Box::new(crate::io::NullChannel)
    }

    fn config_entry(&self, bdev: &Bdev) -> Option<Value> {
        let mut params = json!({
            "name": bdev.name(),
            "num_blocks": bdev.num_blocks(),
            "block_size": self.block_size,
            "uuid": self.uuid.to_string(),
        });
        if self.md_size > 0 {
            params["md_size"] = json!(self.md_size);
        }
        Some(json!({"method": "bdev_null_create", "params": params}))
    }
}

/// The null module (nothing to examine).
pub struct NullModule;

impl BdevModule for NullModule {
    fn name(&self) -> &'static str {
        "null"
    }
}

/// Creates a null bdev; returns its name. Errors: name taken, bad geometry, bad UUID.
pub fn create(opts: &NullOpts) -> Result<String> {
    if opts.md_size != 0 && ![8, 16, 32, 64, 128].contains(&opts.md_size) {
        return Err(BdevError::new(
            ErrorKind::InvalidArgument,
            format!(
                "bdev '{}': md_size {} must be 0, 8, 16, 32, 64 or 128",
                opts.name, opts.md_size
            ),
        ));
    }
    let uuid = match &opts.uuid {
        Some(u) => Uuid::parse(u)?,
        None => Uuid::new_v4(),
    };
    let mut props = BdevProps::new(&opts.name, "Null disk", opts.block_size, opts.num_blocks);
    props.uuid = Some(uuid);
    props.md_size = opts.md_size;
    let backend = Arc::new(NullBackend {
        uuid,
        block_size: opts.block_size,
        md_size: opts.md_size,
    });
    let b = ferrite_bdev::register(props, backend)?;
    Ok(b.name().to_string())
}

/// Deletes the null bdev `name`; `done` runs once it is gone.
pub fn delete(name: &str, done: impl FnOnce(Result<()>) + Send + 'static) {
    ferrite_bdev::unregister(name, Some("null"), done);
}

/// Resizes a null bdev to `new_size_mib` MiB (SPDK's `bdev_null_resize`; growing or
/// shrinking) and announces the resize to open descriptors.
pub fn resize(name: &str, new_size_mib: u64) -> Result<()> {
    let b = ferrite_bdev::lookup(name)
        .filter(|b| b.module_name() == "null")
        .ok_or_else(|| BdevError::not_found(name))?;
    let bytes = new_size_mib.checked_mul(1024 * 1024).ok_or_else(|| {
        BdevError::new(
            ErrorKind::InvalidArgument,
            format!("bdev '{name}': new size {new_size_mib} MiB is too large"),
        )
    })?;
    let blocks = bytes / u64::from(b.block_size());
    if blocks == 0 {
        return Err(BdevError::new(
            ErrorKind::InvalidArgument,
            format!("bdev '{name}': new size must be at least one block"),
        ));
    }
    b.notify_resize(blocks);
    Ok(())
}
