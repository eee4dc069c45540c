//! Building the whole `save_config` document.

use serde_json::{json, Value};

/// The config of one subsystem, or `None` if the subsystem is unknown.
pub fn subsystem_config(name: &str) -> Option<Vec<Value>> {
    match name {
        "iobuf" => Some(ferrite_bdev::buf_rpc::config_entries()),
        "bdev" => Some(ferrite_bdev::config::subsystem_config()),
        ferrite_vhost::SUBSYSTEM => Some(ferrite_vhost::config_json()),
        _ => None,
    }
}

/// `{"subsystems":[{"subsystem":..,"config":[..]}]}` for every subsystem, in dependency order.
pub fn save_config() -> Value {
    let subs: Vec<Value> = crate::modules::SUBSYSTEMS
        .iter()
        .map(|(name, _)| json!({"subsystem": name, "config": subsystem_config(name).unwrap_or_default()}))
        .collect();
    json!({ "subsystems": subs })
}
