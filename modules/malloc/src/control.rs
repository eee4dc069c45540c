//! Creating and deleting malloc bdevs; their save_config entries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ferrite_bdev::uuid::Uuid;
use ferrite_bdev::{
    BackendChannel, Bdev, BdevBackend, BdevError, BdevModule, BdevProps, ErrorKind, IoType, Result,
};
use serde_json::{json, Value};

use crate::mem::Mem;

/// Largest malloc bdev (a limit on everything): 1 TiB of address space.
pub const MAX_MALLOC_BYTES: u64 = 1 << 40;

/// Parameters of `bdev_malloc_create`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MallocOpts {
    /// Name; `Malloc<N>` when absent.
    pub name: Option<String>,
    /// Number of blocks.
    pub num_blocks: u64,
    /// Block size (multiple of 512).
    pub block_size: u32,
    /// UUID (random when absent).
    pub uuid: Option<String>,
    /// Optimal I/O boundary in blocks (I/O crossing it is split).
    pub optimal_io_boundary: u32,
    /// Metadata bytes per block.
    pub md_size: u32,
}

struct MallocBackend {
    mem: Arc<Mem>,
    uuid: Uuid,
    optimal_io_boundary: u32,
    md_size: u32,
}

impl BdevBackend for MallocBackend {
    fn module_name(&self) -> &'static str {
        "malloc"
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
        Box::new(crate::io::MallocChannel {
            mem: self.mem.clone(),
        })
    }

    fn config_entry(&self, bdev: &Bdev) -> Option<Value> {
        let mut params = json!({
            "name": bdev.name(),
            "num_blocks": bdev.num_blocks(),
            "block_size": bdev.block_size(),
            "uuid": self.uuid.to_string(),
            "optimal_io_boundary": self.optimal_io_boundary,
        });
        if self.md_size > 0 {
            params["md_size"] = json!(self.md_size);
        }
        Some(json!({"method": "bdev_malloc_create", "params": params}))
    }
}

/// The malloc module.
pub struct MallocModule;

impl BdevModule for MallocModule {
    fn name(&self) -> &'static str {
        "malloc"
    }
}

static NEXT_INDEX: AtomicU64 = AtomicU64::new(0);

fn default_name() -> String {
    loop {
        let n = format!("Malloc{}", NEXT_INDEX.fetch_add(1, Ordering::Relaxed));
        if ferrite_bdev::lookup(&n).is_none() {
            return n;
        }
    }
}

/// Creates a malloc bdev; returns its name.
pub fn create(opts: &MallocOpts) -> Result<String> {
    let name = opts.name.clone().unwrap_or_else(default_name);
    if opts.block_size == 0 || !opts.block_size.is_multiple_of(512) {
        return Err(BdevError::new(
            ErrorKind::InvalidArgument,
            format!(
                "bdev '{name}': block_size {} is not a non-zero multiple of 512",
                opts.block_size
            ),
        ));
    }
    if opts.md_size != 0 && ![8, 16, 32, 64, 128].contains(&opts.md_size) {
        return Err(BdevError::new(
            ErrorKind::InvalidArgument,
            format!(
                "bdev '{name}': md_size {} must be 0, 8, 16, 32, 64 or 128",
                opts.md_size
            ),
        ));
    }
    let bytes = opts
        .num_blocks
        .checked_mul(u64::from(opts.block_size))
        .filter(|b| *b > 0 && *b <= MAX_MALLOC_BYTES)
        .ok_or_else(|| {
            BdevError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "bdev '{name}': size {} x {} is zero or above {MAX_MALLOC_BYTES} bytes",
                    opts.num_blocks, opts.block_size
                ),
            )
        })?;
    let uuid = match &opts.uuid {
        Some(u) => Uuid::parse(u)?,
        None => Uuid::new_v4(),
    };
    if ferrite_bdev::lookup(&name).is_some() {
        return Err(BdevError::new(
            ErrorKind::Exists,
            format!("bdev name '{name}' already exists"),
        ));
    }
    let mem = Arc::new(Mem::new(bytes as usize, &name)?);
    let mut props = BdevProps::new(&name, "Malloc disk", opts.block_size, opts.num_blocks);
    props.uuid = Some(uuid);
    props.md_size = opts.md_size;
    props.optimal_io_boundary = opts.optimal_io_boundary;
    props.split_on_optimal_io_boundary = opts.optimal_io_boundary > 0;
    props.write_cache = false;
    let backend = Arc::new(MallocBackend {
        mem,
        uuid,
        optimal_io_boundary: opts.optimal_io_boundary,
        md_size: opts.md_size,
    });
    let b = ferrite_bdev::register(props, backend)?;
    Ok(b.name().to_string())
}

/// Deletes the malloc bdev `name`; `done` runs once it is gone (memory freed with the last
/// channel).
pub fn delete(name: &str, done: impl FnOnce(Result<()>) + Send + 'static) {
    ferrite_bdev::unregister(name, Some("malloc"), done);
}
