//! Logging through `tracing`, with SPDK's level names and a level that `log_set_level` can
//! change at run time.

use std::sync::{Mutex, OnceLock};

use tracing_subscriber::{
    filter::EnvFilter, layer::SubscriberExt, reload, util::SubscriberInitExt,
};

type Handle = reload::Handle<EnvFilter, tracing_subscriber::Registry>;

struct LogState {
    handle: Handle,
    level: String,
    flags: Vec<String>,
}

static STATE: OnceLock<Mutex<LogState>> = OnceLock::new();

/// SPDK's level names, most severe first.
pub const LEVELS: &[&str] = &["ERROR", "WARNING", "NOTICE", "INFO", "DEBUG"];

/// Components `-L` accepts (debug logging for that crate).
pub const FLAGS: &[&str] = &[
    "reactor", "bdev", "rpc", "null", "malloc", "passthru", "bench", "app", "all",
];

fn directive(level: &str, flags: &[String]) -> Result<String, String> {
    let base = match level.to_ascii_uppercase().as_str() {
        "ERROR" => "error",
        "WARNING" | "WARN" => "warn",
        "NOTICE" | "INFO" => "info",
        "DEBUG" => "debug",
        other => {
            return Err(format!(
                "unknown log level '{other}' (expected one of {})",
                LEVELS.join(", ")
            ))
        }
    };
    let mut d = base.to_string();
    for f in flags {
        match f.as_str() {
            "all" => d = "debug".into(),
            "app" => d.push_str(",ferrite=debug"),
            x if FLAGS.contains(&x) => d.push_str(&format!(",ferrite_{x}=debug")),
            other => {
                return Err(format!(
                    "unknown log flag '{other}' (expected one of {})",
                    FLAGS.join(", ")
                ))
            }
        }
    }
    Ok(d)
}

/// Installs the subscriber (stderr). `level` as SPDK names it; `flags` from `-L`.
pub fn init(level: &str, flags: &[String]) -> Result<(), String> {
    let d = directive(level, flags)?;
    let filter = EnvFilter::try_new(&d).map_err(|e| e.to_string())?;
    let (layer, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    tracing_subscriber::registry()
        .with(layer)
        .with(fmt)
        .try_init()
        .map_err(|e| e.to_string())?;
    let _ = STATE.set(Mutex::new(LogState {
        handle,
        level: level.to_ascii_uppercase(),
        flags: flags.to_vec(),
    }));
    Ok(())
}

/// Changes the level (`log_set_level`).
pub fn set_level(level: &str) -> Result<(), String> {
    let st = STATE.get().ok_or("logging not initialised")?;
    let mut st = st.lock().map_err(|_| "log state poisoned")?;
    let d = directive(level, &st.flags)?;
    let filter = EnvFilter::try_new(&d).map_err(|e| e.to_string())?;
    st.handle.reload(filter).map_err(|e| e.to_string())?;
    st.level = level.to_ascii_uppercase();
    if st.level == "WARN" {
        st.level = "WARNING".into();
    }
    Ok(())
}

/// The current level's SPDK name (`log_get_level`).
pub fn level() -> String {
    STATE
        .get()
        .and_then(|s| s.lock().ok().map(|s| s.level.clone()))
        .unwrap_or_else(|| "NOTICE".into())
}
