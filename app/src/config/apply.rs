//! Applying config entries through the RPC method table, from a non-reactor OS thread.
//!
//! Order as SPDK's loader: every entry allowed in the startup state runs first (in file order),
//! then `framework_start_init`, then every remaining entry (in file order).

use std::sync::mpsc;
use std::time::Duration;

use ferrite_rpc::{Registry, Responder, RpcError, RUNTIME, STARTUP};

use super::parse::ConfigEntry;

/// How to apply.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Name used in errors ("config file 'x.json'").
    pub source: String,
    /// Keep going after a failed entry (`--json-ignore-init-errors`), logging it.
    pub ignore_errors: bool,
    /// Call `framework_start_init` between the passes (false when the caller stays in the
    /// startup state, as `--wait-for-rpc` does).
    pub start_init: bool,
    /// Longest wait for one entry.
    pub timeout: Duration,
}

/// Calls one method and waits for its answer. Must not run on a reactor thread.
pub fn call_blocking(
    reg: &Registry,
    method: &str,
    params: Option<serde_json::Value>,
    timeout: Duration,
) -> Result<serde_json::Value, RpcError> {
    let (tx, rx) = mpsc::channel();
    reg.call(
        method,
        params,
        Responder::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    rx.recv_timeout(timeout).map_err(|_| {
        RpcError::internal(format!(
            "method '{method}' did not answer within {} s",
            timeout.as_secs()
        ))
    })?
}

/// Applies `entries`. Returns the number applied, or the first error (naming source, entry
/// and the method's own message, which names the field).
pub fn apply(
    reg: &Registry,
    entries: &[ConfigEntry],
    opts: &ApplyOptions,
) -> Result<usize, String> {
    let mut done = vec![false; entries.len()];
    let mut applied = 0;
    let mut errors = Vec::new();
    let mut run = |state_mask: u32, done: &mut Vec<bool>| -> Result<(), String> {
        for (i, e) in entries.iter().enumerate() {
            if done[i] {
                continue;
            }
            let Some(states) = reg.method_states(&e.method) else {
                let msg = format!(
                    "{}: {}: unknown method '{}'",
                    opts.source,
                    e.describe(),
                    e.method
                );
                if opts.ignore_errors {
                    tracing::error!("{msg} (ignored)");
                    done[i] = true;
                    errors.push(msg);
                    continue;
                }
                return Err(msg);
            };
            if states & state_mask == 0 {
                continue;
            }
            done[i] = true;
            match call_blocking(reg, &e.method, e.params.clone(), opts.timeout) {
                Ok(_) => applied += 1,
                Err(err) => {
                    let msg = format!(
                        "{}: {}: {} (code {})",
                        opts.source,
                        e.describe(),
                        err.message,
                        err.code
                    );
                    if opts.ignore_errors {
                        tracing::error!("{msg} (ignored)");
                        errors.push(msg);
                    } else {
                        return Err(msg);
                    }
                }
            }
        }
        Ok(())
    };
    if reg.state().get() == STARTUP {
        run(STARTUP, &mut done)?;
        if opts.start_init {
            call_blocking(reg, "framework_start_init", None, opts.timeout).map_err(|e| {
                format!(
                    "{}: framework_start_init failed: {}",
                    opts.source, e.message
                )
            })?;
        }
    }
    if reg.state().get() == RUNTIME {
        run(RUNTIME, &mut done)?;
    }
    if let Some(i) = done.iter().position(|d| !d) {
        let e = &entries[i];
        let msg = format!(
            "{}: {}: method '{}' may only be called in the startup state (run without --wait-for-rpc or put it first)",
            opts.source,
            e.describe(),
            e.method
        );
        if !opts.ignore_errors {
            return Err(msg);
        }
        tracing::error!("{msg} (ignored)");
    }
    Ok(applied)
}
