//! `--persist FILE`: after every successful state-changing RPC the whole config is rewritten
//! atomically (temporary file in the same directory, fsync, rename, fsync of the directory), so
//! a restarted target comes back as it was. Writes happen on a dedicated OS thread, coalesced,
//! never on a reactor.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;

/// The persistence worker.
pub struct Persister {
    tx: Option<Sender<()>>,
    join: Option<JoinHandle<()>>,
}

impl Persister {
    /// Starts the worker for `path`.
    pub fn start(path: PathBuf) -> std::io::Result<Persister> {
        let (tx, rx) = mpsc::channel::<()>();
        let join = std::thread::Builder::new()
            .name("persist".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    while rx.try_recv().is_ok() {} // coalesce bursts
                    let doc = super::save_config();
                    match write_atomic(&path, &doc) {
                        Ok(()) => tracing::debug!("config persisted to {}", path.display()),
                        Err(e) => {
                            tracing::error!("cannot persist config to {}: {e}", path.display())
                        }
                    }
                }
            })?;
        Ok(Persister {
            tx: Some(tx),
            join: Some(join),
        })
    }

    /// A handle that requests a write (any thread, never blocks).
    pub fn trigger(&self) -> impl Fn() + Send + Sync + 'static {
        let tx = std::sync::Mutex::new(self.tx.clone());
        move || {
            if let Ok(g) = tx.lock() {
                if let Some(t) = g.as_ref() {
                    let _ = t.send(());
                }
            }
        }
    }

    /// Finishes pending writes and stops the worker.
    pub fn stop(mut self) {
        self.tx.take();
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// Writes `doc` to `path` atomically.
pub fn write_atomic(path: &Path, doc: &serde_json::Value) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "config".into());
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let text = serde_json::to_string_pretty(doc).map_err(std::io::Error::other)?;
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}
