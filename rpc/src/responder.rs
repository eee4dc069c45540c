//! [`Responder`]: the one-shot completion a method handler answers through.

use serde::Serialize;
use serde_json::Value;

use crate::error::RpcError;

type Completion = Box<dyn FnOnce(Result<Value, RpcError>) + Send>;

/// Message of the `-32603` error sent when a [`Responder`] is dropped unanswered.
pub const DROPPED_MESSAGE: &str = "internal error: handler dropped the request";

/// One-shot answer to one request.
///
/// Thread contract: `Send`; it may be moved to any thread (e.g. a reactor thread) and answered
/// there, at any later time. Answering runs the completion on the answering thread before
/// [`Responder::respond`] returns (for a socket request that means queueing the bytes and waking
/// the server thread, never blocking on the client). Dropping a Responder without answering
/// completes it with `-32603` [`DROPPED_MESSAGE`], so a client is never left hanging.
pub struct Responder {
    completion: Option<Completion>,
}

impl Responder {
    /// A responder that hands the answer to `f`, on whichever thread answers (or drops) it.
    pub fn new(f: impl FnOnce(Result<Value, RpcError>) + Send + 'static) -> Self {
        Self {
            completion: Some(Box::new(f)),
        }
    }

    /// A responder whose answer is discarded: used for notifications (no response is sent).
    pub fn ignore() -> Self {
        Self { completion: None }
    }

    /// Answers the request with a result or an error.
    pub fn respond(mut self, r: Result<Value, RpcError>) {
        if let Some(f) = self.completion.take() {
            f(r);
        }
    }

    /// Answers with `value` serialized to JSON (a serialization failure answers `-32603`).
    pub fn ok<T: Serialize>(self, value: T) {
        let r = serde_json::to_value(value)
            .map_err(|e| RpcError::internal(format!("internal error: serializing result: {e}")));
        self.respond(r);
    }

    /// Answers with an error.
    pub fn err(self, e: RpcError) {
        self.respond(Err(e));
    }

    /// Wraps this responder: `f` sees the answer first and decides what is passed on.
    pub(crate) fn wrap(
        self,
        f: impl FnOnce(Result<Value, RpcError>, Responder) + Send + 'static,
    ) -> Responder {
        Responder::new(move |r| f(r, self))
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(f) = self.completion.take() {
            f(Err(RpcError::internal(DROPPED_MESSAGE)));
        }
    }
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("answered", &self.completion.is_none())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn drop_answers_internal_error() {
        let (tx, rx) = mpsc::channel();
        drop(Responder::new(move |r| tx.send(r).unwrap()));
        let e = rx.recv().unwrap().unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (-32603, DROPPED_MESSAGE));
    }

    #[test]
    fn respond_once_from_other_thread() {
        let (tx, rx) = mpsc::channel();
        let r = Responder::new(move |r| tx.send(r).unwrap());
        std::thread::spawn(move || r.ok(vec![1, 2])).join().unwrap();
        assert_eq!(rx.recv().unwrap().unwrap(), serde_json::json!([1, 2]));
        assert!(rx.recv().is_err(), "answered exactly once");
        Responder::ignore().ok(1);
    }
}
