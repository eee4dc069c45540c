//! The NVMe bdev module: PCIe controllers driven by Ferrite's userspace driver
//! (`ferrite-nvme`) through VFIO, one bdev per active namespace named `<name>n<nsid>`.
//!
//! - **Attach** ([`control::attach`]): checks the name and PCI address, then on a helper
//!   thread opens the function through VFIO, resets and enables the controller, maps the bdev
//!   buffer pool into the IOMMU (so pool buffers need no bounce), identifies the namespaces;
//!   back on the app thread registers the bdevs and starts the admin poller (abort
//!   completions, fatal status → reset). Bdevs split I/O at the controller's maximum transfer.
//! - **Data path** ([`io`]): one I/O queue pair per (controller, thread), created with the
//!   thread's first channel, up to what the controller granted; a poller per queue pair.
//! - **Reset** ([`control::reset`]): disable on a helper thread, fail commands in flight back
//!   to the bdev layer (which resubmits them), enable, re-create every queue pair.
//! - **Detach**: unregisters the bdevs; when the last is gone, shuts the controller down.
//! - **Options** ([`opts`]): `bdev_nvme_set_options` (timeouts and action, retry count, ...).
//!
//! Thread contract: control functions run on the app thread; the data path on the thread that
//! owns each channel.

pub mod control;
mod io;
pub mod opts;
mod rpc;

pub use control::{
    attach, attach_with, detach, lookup, probe, reset, AttachParams, CtrlrState, NvmeCtrlr,
};
pub use rpc::register_rpcs;

/// The NVMe bdev module (nothing to examine; saves options and controllers).
pub struct NvmeModule;

impl ferrite_bdev::BdevModule for NvmeModule {
    fn name(&self) -> &'static str {
        "nvme"
    }
    fn config_json(&self) -> Vec<serde_json::Value> {
        control::config_json()
    }
}
