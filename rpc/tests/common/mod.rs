//! Shared helpers for the socket tests: unique socket paths, a test method set, a blocking
//! line-reading client with timeouts, and a deterministic PRNG.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_rpc::{
    decode, Registry, RpcError, Server, ServerConfig, ServerState, RUNTIME, STARTUP,
};
use serde::Deserialize;
use serde_json::{json, Value};

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A unique, short socket path under the temp dir.
pub fn sock_path(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("frpc-{}-{n}-{tag}.sock", std::process::id()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateParams {
    name: String,
    num_blocks: u64,
    #[serde(default)]
    block_size: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlowParams {
    ms: u64,
    #[serde(default)]
    tag: Value,
}

/// A registry in `state` with the test methods:
/// echo (any state, returns params), create (RUNTIME, mutates, strict params, returns name),
/// startup_only, runtime_only, fail (-19), drop (drops the responder), slow {ms, tag}
/// (answers from another OS thread after `ms`), held {tag} (answered when the test calls
/// [`release_held`]), big {n} (returns a string of n bytes).
pub fn registry(state: u32) -> Registry {
    let reg = Registry::new(Arc::new(ServerState::new(state)));
    reg.register_fn("echo", STARTUP | RUNTIME, false, |p, r| r.ok(p));
    reg.register_fn("create", RUNTIME, true, |p, r| {
        match decode::<CreateParams>(p) {
            Ok(c) => r.ok(
                json!({"name": c.name, "num_blocks": c.num_blocks, "block_size": c.block_size}),
            ),
            Err(e) => r.err(e),
        }
    });
    reg.register_fn("startup_only", STARTUP, false, |_, r| r.ok(true));
    reg.register_fn("runtime_only", RUNTIME, false, |_, r| r.ok(true));
    reg.register_fn("fail", STARTUP | RUNTIME, false, |_, r| {
        r.err(RpcError::from_errno(19, "bdev 'x' not found"))
    });
    reg.register_fn("drop", STARTUP | RUNTIME, false, |_, r| drop(r));
    reg.register_fn("slow", STARTUP | RUNTIME, false, |p, r| {
        match decode::<SlowParams>(p) {
            Ok(s) => {
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(s.ms));
                    r.ok(json!({"slept": s.ms, "tag": s.tag}));
                });
            }
            Err(e) => r.err(e),
        }
    });
    reg.register_fn("held", STARTUP | RUNTIME, false, |p, r| {
        let tag = p
            .and_then(|p| p.get("tag").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_default();
        HELD.lock().expect("the held calls").push((tag, r));
    });
    reg.register_fn("big", STARTUP | RUNTIME, false, |p, r| {
        let n = p
            .and_then(|p| p.get("n").and_then(Value::as_u64))
            .unwrap_or(0);
        r.ok("x".repeat(n as usize))
    });
    reg
}

/// The responders of `held` calls not answered yet, with their tags.
static HELD: std::sync::Mutex<Vec<(String, ferrite_rpc::Responder)>> =
    std::sync::Mutex::new(Vec::new());

/// Answers the `held` calls tagged `tag` (with `{"tag": tag}`); returns how many.
pub fn release_held(tag: &str) -> usize {
    let mine: Vec<_> = {
        let mut h = HELD.lock().expect("the held calls");
        let (mine, rest) = std::mem::take(&mut *h)
            .into_iter()
            .partition(|(t, _)| t == tag);
        *h = rest;
        mine
    };
    let n = mine.len();
    for (t, r) in mine {
        r.ok(json!({ "tag": t }));
    }
    n
}

/// Starts a server with the test registry; `tweak` adjusts the config.
pub fn start_with(state: u32, tweak: impl FnOnce(&mut ServerConfig)) -> (Server, Registry) {
    let reg = registry(state);
    let mut cfg = ServerConfig::new(sock_path("t"));
    tweak(&mut cfg);
    let server = Server::start(cfg, reg.clone()).expect("server starts");
    (server, reg)
}

pub fn start() -> (Server, Registry) {
    start_with(RUNTIME, |_| {})
}

/// A blocking client that reads newline-terminated responses, with read timeouts.
pub struct Client {
    pub stream: UnixStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(server: &Server) -> Client {
        let stream = UnixStream::connect(server.path()).expect("connect");
        stream.set_read_timeout(Some(WAIT)).expect("set timeout");
        stream.set_write_timeout(Some(WAIT)).expect("set timeout");
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream.write_all(bytes.as_ref()).expect("write");
    }

    /// The next raw response line, including its "\n".
    pub fn recv_raw(&mut self) -> Vec<u8> {
        self.try_recv_raw(WAIT)
            .expect("a response before the timeout")
    }

    /// The next raw response line within `timeout`, or None (timeout or EOF).
    pub fn try_recv_raw(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                return Some(self.buf.drain(..=i).collect());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("set timeout");
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }

    pub fn recv(&mut self) -> Value {
        let raw = self.recv_raw();
        serde_json::from_slice(&raw).unwrap_or_else(|e| panic!("bad response {raw:?}: {e}"))
    }

    pub fn call(&mut self, method: &str, params: Value, id: Value) -> Value {
        let mut req = json!({"jsonrpc": "2.0", "method": method, "id": id});
        if !params.is_null() {
            req["params"] = params;
        }
        self.send(serde_json::to_vec(&req).expect("encode"));
        let resp = self.recv();
        assert_eq!(resp["id"], req["id"], "response to {req}: {resp}");
        resp
    }

    /// Asserts the server closes this connection within `WAIT` (after any pending lines).
    /// Waits (up to [`WAIT`]) until the server has closed its end, without reading: a
    /// client that never reads stays one, and unread data does not hide the close (poll's
    /// `POLLRDHUP`/`POLLHUP` report it with data still buffered).
    pub fn expect_closed_unread(&self) {
        use std::os::fd::AsRawFd;
        let deadline = Instant::now() + WAIT;
        loop {
            let mut p = libc::pollfd {
                fd: self.stream.as_raw_fd(),
                events: libc::POLLRDHUP,
                revents: 0,
            };
            // SAFETY: one valid pollfd for a socket we own, for the call's duration.
            let n = unsafe { libc::poll(&mut p, 1, 100) };
            if n > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 {
                return;
            }
            assert!(Instant::now() < deadline, "connection not closed in time");
        }
    }

    pub fn expect_closed(&mut self) {
        let deadline = Instant::now() + WAIT;
        self.stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("set timeout");
        let mut chunk = [0u8; 65536];
        loop {
            assert!(Instant::now() < deadline, "connection not closed in time");
            match self.stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return, // ECONNRESET etc.: closed
            }
        }
    }
}

/// Asserts `resp` is an error response with `code`, returning its message.
pub fn error_of(resp: &Value, code: i64) -> String {
    assert_eq!(resp["jsonrpc"], json!("2.0"), "{resp}");
    assert!(resp.get("result").is_none(), "{resp}");
    assert_eq!(resp["error"]["code"], json!(code), "{resp}");
    resp["error"]["message"]
        .as_str()
        .expect("a message")
        .to_owned()
}

/// Asserts a full successful round trip on a fresh connection.
pub fn assert_serves(server: &Server) {
    let mut c = Client::connect(server);
    let r = c.call("echo", json!({"alive": true}), json!("probe"));
    assert_eq!(
        r,
        json!({"jsonrpc":"2.0","id":"probe","result":{"alive":true}})
    );
}

/// Small deterministic PRNG (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A random malformed or mutated request: garbage bytes or a valid request with a few byte
/// edits.
pub fn junk(rng: &mut Rng) -> Vec<u8> {
    const VALID: &[u8] =
        br#"{"jsonrpc":"2.0","method":"create","params":{"name":"M\"0","num_blocks":8},"id":7}"#;
    const ALPHABET: &[u8] = b"{}[]\",:\\ \n0123456789.eE+-truefalsnl\x00\xff\xc3\xa9a";
    if rng.below(3) == 0 {
        return (0..rng.below(120) + 1)
            .map(|_| {
                if rng.below(3) == 0 {
                    rng.next() as u8
                } else {
                    ALPHABET[rng.below(ALPHABET.len())]
                }
            })
            .collect();
    }
    let mut d = VALID.to_vec();
    for _ in 0..rng.below(4) + 1 {
        let p = rng.below(d.len());
        match rng.below(3) {
            0 => {
                d.remove(p);
            }
            1 => d.insert(p, ALPHABET[rng.below(ALPHABET.len())]),
            _ => d[p] = rng.next() as u8,
        }
    }
    d
}
