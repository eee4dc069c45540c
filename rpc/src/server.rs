//! The JSON-RPC server: a Unix socket served by one "rpc" OS thread running a mio event loop.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::UnixListener;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::conn::{Conn, ReadOutcome};
use crate::error::{ErrorKind, RpcServerError};
use crate::registry::Registry;
use crate::request::Sink;
use crate::socket_file::{self, FileId};

/// SPDK's default RPC socket (`SPDK_DEFAULT_RPC_ADDR`).
pub const DEFAULT_RPC_ADDR: &str = "/var/tmp/spdk.sock";

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;
const READ_CHUNK: usize = 64 * 1024;
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Server settings.
///
/// Plain data; any thread.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Socket path (SPDK `-r`).
    pub path: PathBuf,
    /// Permissions of the socket file (default `0o600`).
    pub mode: u32,
    /// Most simultaneous connections (default 64, SPDK's `SPDK_JSONRPC_MAX_CONNS`); further
    /// connections are accepted and closed at once.
    pub max_conns: usize,
    /// Largest accepted request (one top-level JSON value), default 4 MiB; a larger one is
    /// answered with `-32600` and its connection closed.
    pub max_request_bytes: usize,
    /// A connection that sent part of a request and then nothing for this long, or that has
    /// read none of its pending responses for this long, is closed (default 30 s). A connection
    /// that sends nothing at all is kept.
    pub idle_timeout: Duration,
}

impl ServerConfig {
    /// Defaults for a socket at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            mode: 0o600,
            max_conns: 64,
            max_request_bytes: 4 * 1024 * 1024,
            idle_timeout: Duration::from_secs(30),
        }
    }
}

impl Default for ServerConfig {
    /// Defaults at [`DEFAULT_RPC_ADDR`].
    fn default() -> Self {
        Self::new(DEFAULT_RPC_ADDR)
    }
}

/// State shared between the server thread and every pending [`crate::Responder`].
struct Shared {
    /// Encoded responses per connection id, in completion order.
    queue: Mutex<Vec<(usize, Vec<u8>)>>,
    waker: Waker,
    stopping: AtomicBool,
}

impl Shared {
    /// Queues a response for connection `conn` and wakes the server thread. Any thread.
    fn send(&self, conn: usize, bytes: Vec<u8>) {
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        let was_empty = {
            let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            q.push((conn, bytes));
            q.len() == 1
        };
        if was_empty {
            if let Err(e) = self.waker.wake() {
                tracing::error!("rpc: waking the server thread: {e}");
            }
        }
    }
}

/// A running JSON-RPC server.
///
/// Thread contract: `start`, `path` and `stop` may be called from any one thread (not from a
/// handler running on the "rpc" thread itself: `stop` joins it). Handlers run on the "rpc"
/// thread; their [`crate::Responder`]s may be answered from any thread. Dropping a `Server`
/// stops it like [`Server::stop`].
pub struct Server {
    path: PathBuf,
    file_id: FileId,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds the socket (removing a stale socket file first only if nothing listens on it;
    /// failing with [`ErrorKind::AddressInUse`] if another process listens), sets its mode,
    /// and spawns one OS thread named "rpc" running the event loop. Returns once the socket is
    /// listening.
    pub fn start(cfg: ServerConfig, registry: Registry) -> Result<Server, RpcServerError> {
        let what = || format!("rpc server '{}'", cfg.path.display());
        if cfg.max_conns == 0 || cfg.max_request_bytes == 0 || cfg.idle_timeout.is_zero() {
            return Err(RpcServerError::new(
                ErrorKind::InvalidConfig,
                format!(
                    "{}: max_conns, max_request_bytes and idle_timeout must be > 0",
                    what()
                ),
            ));
        }
        let (std_listener, file_id) = socket_file::bind(&cfg.path, cfg.mode)?;
        let cleanup = |e: RpcServerError| {
            socket_file::remove_if_ours(&cfg.path, file_id);
            e
        };
        let os =
            |ctx: &str, e: io::Error| cleanup(RpcServerError::os(format!("{}: {ctx}", what()), e));
        std_listener
            .set_nonblocking(true)
            .map_err(|e| os("set_nonblocking", e))?;
        let mut listener = UnixListener::from_std(std_listener);
        let poll = Poll::new().map_err(|e| os("creating poll", e))?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|e| os("registering listener", e))?;
        let waker = Waker::new(poll.registry(), WAKER).map_err(|e| os("creating waker", e))?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Vec::new()),
            waker,
            stopping: AtomicBool::new(false),
        });
        let event_loop = EventLoop {
            poll,
            listener,
            shared: Arc::clone(&shared),
            registry,
            max_conns: cfg.max_conns,
            max_request_bytes: cfg.max_request_bytes,
            idle_timeout: cfg.idle_timeout,
            conns: HashMap::new(),
            next_id: FIRST_CONN,
            backlog: Vec::new(),
            accept_retry: None,
        };
        let thread = std::thread::Builder::new()
            .name("rpc".to_owned())
            .spawn(move || event_loop.run())
            .map_err(|e| os("spawning the rpc thread", e))?;
        tracing::info!("rpc server listening on '{}'", cfg.path.display());
        Ok(Server {
            path: cfg.path,
            file_id,
            shared,
            thread: Some(thread),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the listener and every connection, joins the "rpc" thread and removes the
    /// socket file (if it is still ours). Answers arriving later are discarded.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.shared.stopping.store(true, Ordering::Release);
        if let Err(e) = self.shared.waker.wake() {
            tracing::error!("rpc: waking the server thread to stop: {e}");
        }
        if thread.join().is_err() {
            tracing::error!("rpc server thread panicked");
        }
        self.shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        socket_file::remove_if_ours(&self.path, self.file_id);
        tracing::info!("rpc server on '{}' stopped", self.path.display());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Longest time `stop` spends writing answers already given.
const STOP_FLUSH: Duration = Duration::from_secs(1);

/// The "rpc" thread's state.
struct EventLoop {
    poll: Poll,
    listener: UnixListener,
    shared: Arc<Shared>,
    registry: Registry,
    max_conns: usize,
    max_request_bytes: usize,
    idle_timeout: Duration,
    conns: HashMap<usize, Conn>,
    /// Never reused, so a late answer cannot reach a newer connection.
    next_id: usize,
    /// Connections whose read budget ran out with data possibly left.
    backlog: Vec<usize>,
    accept_retry: Option<Instant>,
}

impl EventLoop {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut scratch = vec![0u8; READ_CHUNK];
        loop {
            let timeout = self.timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!("rpc: poll failed, server stops: {e}");
                    break;
                }
            }
            if self.shared.stopping.load(Ordering::Acquire) {
                self.flush_on_stop();
                break;
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(id) => {
                        if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                            self.flush(id, &mut scratch);
                        }
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.read(id, &mut scratch);
                        }
                    }
                }
            }
            if self.accept_retry.is_some_and(|t| Instant::now() >= t) {
                self.accept_retry = None;
                self.accept();
            }
            for id in std::mem::take(&mut self.backlog) {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.in_backlog = false;
                }
                self.read(id, &mut scratch);
            }
            self.deliver(&mut scratch);
            self.sweep();
        }
        for (_, mut c) in self.conns.drain() {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }

    /// On stop: answers already given by handlers (queued, or in a connection's output) are
    /// still written, for at most [`STOP_FLUSH`], so a client whose request completed just
    /// before the stop gets its answer. Nothing new is read.
    fn flush_on_stop(&mut self) {
        let deadline = Instant::now() + STOP_FLUSH;
        loop {
            let ready = std::mem::take(
                &mut *self
                    .shared
                    .queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            );
            for (id, bytes) in ready {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.deliver(&bytes);
                }
            }
            let mut left = false;
            for c in self.conns.values_mut() {
                c.flush();
                left |= c.pending_out() > 0;
            }
            if !left || Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn timeout(&self) -> Option<Duration> {
        if !self.backlog.is_empty() {
            return Some(Duration::ZERO);
        }
        let deadline = self
            .conns
            .values()
            .filter_map(|c| c.deadline(self.idle_timeout))
            .chain(self.accept_retry)
            .min()?;
        // Round up so the sweep after the wake-up sees the deadline as passed.
        Some(deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(1))
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    if self.conns.len() >= self.max_conns {
                        tracing::warn!(
                            "rpc: refusing a connection: {} connections already open",
                            self.max_conns
                        );
                        continue;
                    }
                    let id = self.next_id;
                    self.next_id += 1;
                    if let Err(e) = self.poll.registry().register(
                        &mut stream,
                        Token(id),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        tracing::warn!("rpc: registering connection {id}: {e}");
                        continue;
                    }
                    let shared = Arc::clone(&self.shared);
                    let sink: Sink = Arc::new(move |bytes| shared.send(id, bytes));
                    self.conns
                        .insert(id, Conn::new(stream, sink, self.max_request_bytes));
                    tracing::debug!("rpc: connection {id} accepted");
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // E.g. out of file descriptors: pending connections stay queued; retry.
                    tracing::warn!("rpc: accept failed, retrying: {e}");
                    self.accept_retry = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    fn read(&mut self, id: usize, scratch: &mut [u8]) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.read(&self.registry, scratch) == ReadOutcome::MoreLater && !c.in_backlog {
            c.in_backlog = true;
            self.backlog.push(id);
        }
    }

    fn flush(&mut self, id: usize, scratch: &mut [u8]) {
        let resume = self.conns.get_mut(&id).is_some_and(Conn::flush);
        if resume {
            self.read(id, scratch);
        }
    }

    fn deliver(&mut self, scratch: &mut [u8]) {
        let ready = std::mem::take(
            &mut *self
                .shared
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for (id, bytes) in ready {
            let resume = self.conns.get_mut(&id).is_some_and(|c| c.deliver(&bytes));
            if resume {
                self.read(id, scratch);
            }
        }
    }

    fn sweep(&mut self) {
        let now = Instant::now();
        let closing: Vec<(usize, String)> = self
            .conns
            .iter()
            .filter_map(|(id, c)| c.close_reason(now, self.idle_timeout).map(|why| (*id, why)))
            .collect();
        for (id, why) in closing {
            if let Some(mut c) = self.conns.remove(&id) {
                tracing::debug!("rpc: connection {id} closed: {why}");
                let _ = self.poll.registry().deregister(&mut c.stream);
            }
        }
    }
}
