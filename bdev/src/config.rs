//! The bdev subsystem's `save_config` output.

use serde_json::{json, Value};

/// Entries that recreate the current bdev state: `bdev_set_options` when the options are not
/// SPDK's defaults, module-level entries, then one per bdev in
/// registration order (bases before the virtual bdevs that claim them), then
/// `bdev_wait_for_examine`, as SPDK emits.
pub fn subsystem_config() -> Vec<Value> {
    let mut out: Vec<Value> = crate::options::config_entry().into_iter().collect();
    for m in crate::registry::modules() {
        out.extend(m.config_json());
    }
    for b in crate::registry::list() {
        if let Some(e) = b.backend.config_entry(&b) {
            out.push(e);
        }
    }
    out.push(json!({"method": "bdev_wait_for_examine"}));
    out
}
