//! `--persist FILE`: after every successful state-changing RPC the whole config is rewritten
//! atomically (temporary file in the same directory, fsync, rename, fsync of the directory), so
//! a restarted target comes back as it was. Writes happen on a dedicated OS thread, coalesced,
//! never on a reactor; the RPC's answer is held back until its change is on disk
//! ([`Persister::after_write`]), so a client never sees success for a change a crash can lose.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;

/// Runs once the write that covers a change is done (releases the held-back RPC answer).
pub type Done = Box<dyn FnOnce() + Send>;

enum Msg {
    /// Write the current config, then run the completion (if any).
    Write(Option<Done>),
    /// Finish: write once more if writes are pending, then exit.
    Stop,
}

/// The persistence worker (the only writer of the file).
pub struct Persister {
    tx: Sender<Msg>,
    join: Option<JoinHandle<()>>,
}

impl Persister {
    /// Starts the worker for `path`.
    pub fn start(path: PathBuf) -> std::io::Result<Persister> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let join = std::thread::Builder::new()
            .name("persist".into())
            .spawn(move || {
                let mut stop = false;
                while !stop {
                    let mut done = Vec::new();
                    match rx.recv() {
                        Ok(Msg::Write(d)) => done.extend(d),
                        Ok(Msg::Stop) | Err(_) => break,
                    }
                    // Coalesce a burst into one write.
                    loop {
                        match rx.try_recv() {
                            Ok(Msg::Write(d)) => done.extend(d),
                            Ok(Msg::Stop) => stop = true,
                            Err(_) => break,
                        }
                    }
                    let doc = super::save_config();
                    match write_atomic(&path, &doc) {
                        Ok(()) => tracing::debug!("config persisted to {}", path.display()),
                        Err(e) => {
                            tracing::error!("cannot persist config to {}: {e}", path.display())
                        }
                    }
                    for d in done {
                        d();
                    }
                }
                // Requests that raced with stop: answer them (nothing more is written).
                while let Ok(m) = rx.try_recv() {
                    if let Msg::Write(Some(d)) = m {
                        d();
                    }
                }
            })?;
        Ok(Persister {
            tx,
            join: Some(join),
        })
    }

    /// A handle that requests a write and runs `done` once it is finished, on the worker
    /// (any thread, never blocks). If the worker has stopped, `done` runs at once.
    pub fn after_write(&self) -> impl Fn(Done) + Send + Sync + 'static {
        let tx = std::sync::Mutex::new(self.tx.clone());
        move |done: Done| {
            let unsent = match tx.lock() {
                Ok(t) => t.send(Msg::Write(Some(done))).err().map(|e| e.0),
                Err(_) => Some(Msg::Write(Some(done))),
            };
            if let Some(Msg::Write(Some(d))) = unsent {
                d();
            }
        }
    }

    /// Writes the current config now and waits (at most `limit`) until it is on disk.
    pub fn write_and_wait(&self, limit: std::time::Duration) -> bool {
        let (tx, rx) = mpsc::channel();
        let done: Done = Box::new(move || {
            let _ = tx.send(());
        });
        self.tx.send(Msg::Write(Some(done))).is_ok() && rx.recv_timeout(limit).is_ok()
    }

    /// Finishes pending writes and stops the worker. (Handles given out by `after_write` may
    /// outlive it; later requests are not written, their completions run at once.)
    pub fn stop(mut self) {
        let _ = self.tx.send(Msg::Stop);
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
