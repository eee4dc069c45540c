//! `bdev_nvme_set_options`: module-wide options with SPDK v25.09's names. The ones that apply
//! to PCIe controllers here are used (timeouts and the action on timeout, retry counts, admin
//! poll period, doorbell batching, queue entries); the rest are accepted, kept and saved so
//! that SPDK configs load and round-trip.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Module options (SPDK's `bdev_nvme_set_options` fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NvmeOpts {
    /// "none", "reset" or "abort": what to do with a command older than `timeout_us`.
    pub action_on_timeout: String,
    /// I/O command timeout (0 = none).
    pub timeout_us: u64,
    /// Admin command timeout (0 = the driver's 10 s).
    pub timeout_admin_us: u64,
    /// Keep-alive (fabrics only; kept).
    pub keep_alive_timeout_ms: u32,
    /// Transport retries (fabrics only; kept).
    pub transport_retry_count: u32,
    /// Arbitration burst (kept).
    pub arbitration_burst: u32,
    /// Weighted round robin weights (kept).
    pub low_priority_weight: u32,
    /// See `low_priority_weight`.
    pub medium_priority_weight: u32,
    /// See `low_priority_weight`.
    pub high_priority_weight: u32,
    /// Admin queue poll period (health checks, abort completions).
    pub nvme_adminq_poll_period_us: u64,
    /// I/O queue poll period (0 = every reactor iteration).
    pub nvme_ioq_poll_period_us: u64,
    /// Entries per I/O queue (0 = 256).
    pub io_queue_requests: u32,
    /// Ring the submission doorbell once per poll instead of once per command.
    pub delay_cmd_submit: bool,
    /// Times a failed I/O without Do Not Retry is retried (-1 = forever).
    pub bdev_retry_count: i32,
    /// Kept (fabrics).
    pub transport_ack_timeout: u8,
    /// Kept (reconnects are not implemented for PCIe: a failed reset fails the controller).
    pub ctrlr_loss_timeout_sec: i32,
    /// Kept.
    pub reconnect_delay_sec: u32,
    /// Kept.
    pub fast_io_fail_timeout_sec: u32,
    /// Kept.
    pub disable_auto_failback: bool,
    /// Kept.
    pub generate_uuids: bool,
    /// Kept.
    pub transport_tos: u8,
    /// Kept.
    pub nvme_error_stat: bool,
    /// Kept.
    pub io_path_stat: bool,
    /// Kept.
    pub allow_accel_sequence: bool,
}

impl Default for NvmeOpts {
    fn default() -> Self {
        Self {
            action_on_timeout: "none".into(),
            timeout_us: 0,
            timeout_admin_us: 0,
            keep_alive_timeout_ms: 10_000,
            transport_retry_count: 4,
            arbitration_burst: 0,
            low_priority_weight: 0,
            medium_priority_weight: 0,
            high_priority_weight: 0,
            nvme_adminq_poll_period_us: 10_000,
            nvme_ioq_poll_period_us: 0,
            io_queue_requests: 0,
            delay_cmd_submit: true,
            bdev_retry_count: 3,
            transport_ack_timeout: 0,
            ctrlr_loss_timeout_sec: 0,
            reconnect_delay_sec: 0,
            fast_io_fail_timeout_sec: 0,
            disable_auto_failback: false,
            generate_uuids: false,
            transport_tos: 0,
            nvme_error_stat: false,
            io_path_stat: false,
            allow_accel_sequence: false,
        }
    }
}

/// What to do with a timed-out command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutAction {
    /// Log it.
    None,
    /// Send Abort for it.
    Abort,
    /// Reset the controller.
    Reset,
}

impl NvmeOpts {
    /// The timeout action.
    pub fn timeout_action(&self) -> TimeoutAction {
        match self.action_on_timeout.as_str() {
            "abort" => TimeoutAction::Abort,
            "reset" => TimeoutAction::Reset,
            _ => TimeoutAction::None,
        }
    }
}

static OPTS: Mutex<Option<NvmeOpts>> = Mutex::new(None);

/// The current options.
pub fn current() -> NvmeOpts {
    OPTS.lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_default()
}

/// Applies `changes` (a subset of the fields) over the current options. Unknown fields,
/// wrong types and invalid values are errors naming the field; nothing changes then.
pub fn update(changes: Map<String, Value>) -> Result<NvmeOpts, String> {
    let mut cur = match serde_json::to_value(current()) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    for (k, v) in changes {
        if !cur.contains_key(&k) {
            return Err(format!("unknown option '{k}'"));
        }
        cur.insert(k, v);
    }
    let new: NvmeOpts = serde_json::from_value(Value::Object(cur)).map_err(|e| e.to_string())?;
    if !["none", "abort", "reset"].contains(&new.action_on_timeout.as_str()) {
        return Err(format!(
            "action_on_timeout '{}' is not one of none, abort, reset",
            new.action_on_timeout
        ));
    }
    if new.bdev_retry_count < -1 {
        return Err("bdev_retry_count must be -1 or more".into());
    }
    *OPTS.lock().unwrap_or_else(|p| p.into_inner()) = Some(new.clone());
    Ok(new)
}

/// The `save_config` entry.
pub fn config_entry() -> Value {
    serde_json::json!({"method": "bdev_nvme_set_options", "params": current()})
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests
    use super::*;

    #[test]
    fn partial_updates_and_validation() {
        let mut m = Map::new();
        m.insert("timeout_us".into(), 5000.into());
        m.insert("action_on_timeout".into(), "abort".into());
        let o = update(m).unwrap();
        assert_eq!(o.timeout_action(), TimeoutAction::Abort);
        assert_eq!(o.bdev_retry_count, 3);
        let mut bad = Map::new();
        bad.insert("nope".into(), 1.into());
        assert!(update(bad).unwrap_err().contains("nope"));
        let mut bad = Map::new();
        bad.insert("action_on_timeout".into(), "explode".into());
        assert!(update(bad).is_err());
        assert_eq!(current().timeout_us, 5000);
        // Round trip through the saved entry.
        let saved = config_entry();
        let back: NvmeOpts = serde_json::from_value(saved["params"].clone()).unwrap();
        assert_eq!(back, current());
    }
}
