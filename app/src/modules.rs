//! The one place that knows every module: registers their bdev modules and RPC methods.

use std::sync::Arc;

use ferrite_reactor::ThreadHandle;
use ferrite_rpc::Registry;

/// Registers every bdev module (for examine) with the bdev layer.
pub fn register_bdev_modules() {
    ferrite_bdev::register_module(Arc::new(ferrite_null::NullModule));
    ferrite_bdev::register_module(Arc::new(ferrite_malloc::MallocModule));
    ferrite_bdev::register_module(Arc::new(ferrite_passthru::PassthruModule));
    ferrite_bdev::register_module(Arc::new(ferrite_raid::RaidModule));
    ferrite_bdev::register_module(Arc::new(ferrite_aio::AioModule));
    ferrite_bdev::register_module(Arc::new(ferrite_uring::UringModule));
    ferrite_bdev::register_module(Arc::new(ferrite_error::ErrorModule));
    ferrite_bdev::register_module(Arc::new(ferrite_delay::DelayModule));
    ferrite_bdev::register_module(Arc::new(ferrite_bdev_nvme::NvmeModule));
    ferrite_bdev::register_module(Arc::new(ferrite_virtio::VirtioModule));
}

/// Registers the RPC methods of the bdev layer and of every module; handlers run on `app`.
pub fn register_rpcs(reg: &Registry, app: &ThreadHandle) {
    ferrite_bdev::rpc::register_rpcs(reg, app);
    ferrite_null::register_rpcs(reg, app);
    ferrite_malloc::register_rpcs(reg, app);
    ferrite_passthru::register_rpcs(reg, app);
    ferrite_raid::register_rpcs(reg, app);
    ferrite_aio::register_rpcs(reg, app);
    ferrite_uring::register_rpcs(reg, app);
    ferrite_error::register_rpcs(reg, app);
    ferrite_delay::register_rpcs(reg, app);
    ferrite_bdev_nvme::register_rpcs(reg, app);
    ferrite_virtio::register_rpcs(reg, app);
    ferrite_vhost::register_rpcs(reg, app);
}

/// Subsystems reported by `framework_get_subsystems`, with their dependencies, in dependency
/// order (`iobuf`: the data buffer pool's options).
pub const SUBSYSTEMS: &[(&str, &[&str])] = &[
    ("iobuf", &[]),
    ("bdev", &["iobuf"]),
    ("vhost_blk", &["bdev"]),
];
