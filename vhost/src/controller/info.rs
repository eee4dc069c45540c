//! What controllers report and keep: `vhost_get_controllers`, the save_config entries,
//! coalescing settings. Thread contract: any thread (the app thread for RPC).

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use super::{bad, controllers};
use crate::error::{ErrorKind, Result, VhostError};

/// Sets interrupt coalescing: signal the guest at most every `delay_base_us` once a queue
/// does more than `iops_threshold` requests a second (0 = off).
pub fn set_coalescing(name: &str, delay_base_us: u32, iops_threshold: u32) -> Result<()> {
    let list = controllers();
    let c = list.iter().find(|c| c.shared.name == name).ok_or_else(|| {
        VhostError::new(
            ErrorKind::NotFound,
            format!("vhost controller '{name}' does not exist"),
        )
    })?;
    if delay_base_us > 1_000_000 {
        return Err(bad(format!(
            "vhost controller '{name}': delay_base_us {delay_base_us} is too large (at most 1000000)"
        )));
    }
    if delay_base_us > 0 && iops_threshold == 0 {
        return Err(bad(format!(
            "vhost controller '{name}': iops_threshold must be non-zero when delay_base_us is set"
        )));
    }
    c.shared
        .delay_base_us
        .store(delay_base_us, Ordering::Relaxed);
    c.shared
        .iops_threshold
        .store(iops_threshold, Ordering::Relaxed);
    Ok(())
}

/// `vhost_get_controllers` in SPDK's shape, optionally for one controller.
pub fn list(name: Option<&str>) -> Result<Value> {
    let list = controllers();
    if let Some(n) = name {
        if !list.iter().any(|c| c.shared.name == n) {
            return Err(VhostError::new(
                ErrorKind::NotFound,
                format!("vhost controller '{n}' does not exist"),
            ));
        }
    }
    let out: Vec<Value> = list
        .iter()
        .filter(|c| name.is_none_or(|n| c.shared.name == n))
        .map(|c| {
            let s = &c.shared;
            // Never the device lock here (a reactor): see `CtrlShared::started`.
            let sessions: Vec<Value> = if s.session().is_some() {
                vec![json!({"vid": 0, "id": 0, "name": format!("{}s0", s.name),
                    "started": s.started(), "max_queues": s.geometry.num_queues,
                    "inflight_task_cnt": s.inflight()})]
            } else {
                Vec::new()
            };
            json!({
                "ctrlr": s.name,
                "cpumask": s.cpumask,
                "delay_base_us": s.delay_base_us.load(Ordering::Relaxed),
                "iops_threshold": s.iops_threshold.load(Ordering::Relaxed),
                "socket": c.socket.display().to_string(),
                "sessions": sessions,
                // Not SPDK's: the queues this target stopped for a hostile descriptor chain
                // (or a ring it could not access), until the frontend restarts them.
                "broken_queues": s.broken_queues(),
                "backend_specific": {"block": {
                    "readonly": s.readonly,
                    "bdev": if s.is_removed() { Value::Null } else { json!(s.bdev_name) },
                    "transport": "vhost_user_blk",
                }},
            })
        })
        .collect();
    Ok(Value::Array(out))
}

/// The `vhost_blk` subsystem's save_config entries: each controller, then its coalescing.
pub fn config_json() -> Vec<Value> {
    let mut out = Vec::new();
    for c in controllers().iter() {
        let s = &c.shared;
        out.push(json!({"method": "vhost_create_blk_controller", "params": {
            "ctrlr": s.name,
            "dev_name": s.bdev_name,
            "cpumask": s.cpumask,
            "readonly": s.readonly,
            "packed_ring": s.packed,
            "transport": "vhost_user_blk",
        }}));
        let d = s.delay_base_us.load(Ordering::Relaxed);
        if d > 0 {
            out.push(
                json!({"method": "vhost_controller_set_coalescing", "params": {
                    "ctrlr": s.name,
                    "delay_base_us": d,
                    "iops_threshold": s.iops_threshold.load(Ordering::Relaxed),
                }}),
            );
        }
    }
    out
}

/// Names of the controllers (tests, shutdown).
pub fn names() -> Vec<String> {
    controllers()
        .iter()
        .map(|c| c.shared.name.clone())
        .collect()
}
