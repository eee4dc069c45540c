//! One client connection of the server: input splitting, output buffering, and the rules
//! that close a connection (errors, stalls, a client that does not read).

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::net::UnixStream;

use crate::error::RpcError;
use crate::framing::{FrameError, Splitter};
use crate::registry::Registry;
use crate::request::{dispatch, encode_error, Sink};

/// Most bytes read from one connection per event-loop turn, so one busy client cannot starve
/// the others.
const READ_BUDGET: usize = 256 * 1024;
/// Reading from a connection pauses while this much output is waiting for it.
const READ_PAUSE_OUTPUT: usize = 1024 * 1024;
/// A connection with more pending output than this is closed.
pub(crate) const MAX_PENDING_OUTPUT: usize = 64 * 1024 * 1024;

/// What a read turn left to do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadOutcome {
    /// Nothing more to read now (or reading is paused or finished).
    Idle,
    /// The read budget ran out with data possibly left: read again next turn.
    MoreLater,
}

/// Connection state, owned by the server thread.
pub(crate) struct Conn {
    pub(crate) stream: UnixStream,
    sink: Sink,
    splitter: Splitter,
    max_request_bytes: usize,
    out: Vec<u8>,
    out_pos: usize,
    /// Responses still owed to this connection.
    in_flight: usize,
    last_read: Instant,
    /// Since when pending output has made no progress.
    write_stall_since: Instant,
    read_eof: bool,
    /// After a protocol error: read nothing more, close once owed responses are written.
    closing_since: Option<Instant>,
    read_paused: bool,
    /// Fatal I/O error or limit: close at the next sweep.
    dead: Option<String>,
    pub(crate) in_backlog: bool,
}

impl Conn {
    pub(crate) fn new(stream: UnixStream, sink: Sink, max_request_bytes: usize) -> Self {
        let now = Instant::now();
        Self {
            stream,
            sink,
            splitter: Splitter::new(max_request_bytes),
            max_request_bytes,
            out: Vec::new(),
            out_pos: 0,
            in_flight: 0,
            last_read: now,
            write_stall_since: now,
            read_eof: false,
            closing_since: None,
            read_paused: false,
            dead: None,
            in_backlog: false,
        }
    }

    pub(crate) fn pending_out(&self) -> usize {
        self.out.len() - self.out_pos
    }

    fn can_read(&self) -> bool {
        !self.read_eof && self.closing_since.is_none() && self.dead.is_none()
    }

    /// Reads and dispatches requests until the socket is drained, the budget is spent, or
    /// reading must pause. `scratch` is the server's read buffer.
    pub(crate) fn read(&mut self, registry: &Registry, scratch: &mut [u8]) -> ReadOutcome {
        let mut budget = READ_BUDGET;
        while self.can_read() {
            if self.pending_out() > READ_PAUSE_OUTPUT {
                self.read_paused = true;
                return ReadOutcome::Idle;
            }
            if budget == 0 {
                return ReadOutcome::MoreLater;
            }
            match self.stream.read(scratch) {
                Ok(0) => self.read_eof = true,
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    self.last_read = Instant::now();
                    self.splitter.push(&scratch[..n]);
                    self.process(registry);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Idle,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.dead = Some(format!("read failed: {e}")),
            }
        }
        ReadOutcome::Idle
    }

    fn process(&mut self, registry: &Registry) {
        while let Some(frame) = self.splitter.next_value() {
            let error = match frame {
                Ok(value) => {
                    if dispatch(registry, value, &self.sink) {
                        self.in_flight += 1;
                    }
                    continue;
                }
                Err(FrameError::Parse) => RpcError::parse_error(),
                Err(FrameError::TooLarge) => RpcError::invalid_request(format!(
                    "request exceeds the limit of {} bytes",
                    self.max_request_bytes
                )),
            };
            // Goes through the response queue like every other answer, so it follows the
            // answers to earlier requests of this connection; then the connection closes.
            self.in_flight += 1;
            (self.sink)(encode_error(&error));
            self.closing_since = Some(Instant::now());
            return;
        }
    }

    /// Queues one response (a newline is appended) and tries to write it.
    /// Returns true if reading was paused and may resume now.
    pub(crate) fn deliver(&mut self, bytes: &[u8]) -> bool {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.dead.is_some() {
            return false;
        }
        if self.pending_out() + bytes.len() + 1 > MAX_PENDING_OUTPUT {
            self.dead = Some(format!(
                "client does not read its responses (over {MAX_PENDING_OUTPUT} bytes pending)"
            ));
            return false;
        }
        if self.pending_out() == 0 {
            self.write_stall_since = Instant::now();
        }
        self.out.extend_from_slice(bytes);
        self.out.push(b'\n');
        self.flush()
    }

    /// Writes pending output until done or the socket is full.
    /// Returns true if reading was paused and may resume now.
    pub(crate) fn flush(&mut self) -> bool {
        while self.pending_out() > 0 && self.dead.is_none() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => self.dead = Some("write returned 0".to_owned()),
                Ok(n) => {
                    self.out_pos += n;
                    self.write_stall_since = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.dead = Some(format!("write failed: {e}")),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos > self.out.len() / 2 {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        if self.read_paused && self.pending_out() <= READ_PAUSE_OUTPUT {
            self.read_paused = false;
            return true;
        }
        false
    }

    /// Why this connection must be closed now, if it must.
    pub(crate) fn close_reason(&self, now: Instant, idle: Duration) -> Option<String> {
        if let Some(why) = &self.dead {
            return Some(why.clone());
        }
        let done = self.in_flight == 0 && self.pending_out() == 0;
        if let Some(since) = self.closing_since {
            if done {
                return Some("closed after a protocol error".to_owned());
            }
            if now >= since + idle {
                return Some("closed after a protocol error (responses timed out)".to_owned());
            }
        }
        if self.read_eof && done {
            return Some("peer closed".to_owned());
        }
        if self.stalled_partial() && now >= self.last_read + idle {
            return Some(format!("partial request stalled for {idle:?}"));
        }
        if self.pending_out() > 0 && now >= self.write_stall_since + idle {
            return Some(format!("client read no response for {idle:?}"));
        }
        None
    }

    fn stalled_partial(&self) -> bool {
        self.splitter.has_partial() && self.can_read() && !self.read_paused
    }

    /// The next instant at which [`Conn::close_reason`] may change on its own.
    pub(crate) fn deadline(&self, idle: Duration) -> Option<Instant> {
        let mut d: Option<Instant> = None;
        let mut add = |t: Instant| d = Some(d.map_or(t, |d| d.min(t)));
        if let Some(since) = self.closing_since {
            add(since + idle);
        }
        if self.stalled_partial() {
            add(self.last_read + idle);
        }
        if self.pending_out() > 0 {
            add(self.write_stall_since + idle);
        }
        d
    }
}
