//! Request validation (SPDK's rules plus batches) and response encoding.

use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use serde_json::Value;

use crate::error::RpcError;
use crate::registry::{Params, Registry, Responder};

/// Longest accepted `id`, in characters of its JSON text (SPDK: 128).
pub(crate) const MAX_ID_LEN: usize = 128;
/// Most elements in one batch (SPDK's limit on values per request is 1024).
pub(crate) const MAX_BATCH: usize = 1024;

/// Where encoded responses (without the trailing newline) go; called from any thread.
pub(crate) type Sink = Arc<dyn Fn(Vec<u8>) + Send + Sync>;

/// A validated request.
#[derive(Debug, PartialEq)]
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) params: Params,
    /// `None` for a notification (`id` absent or null).
    pub(crate) id: Option<Value>,
}

#[derive(Serialize)]
struct Success<'a> {
    jsonrpc: &'static str,
    id: &'a Value,
    result: &'a Value,
}

#[derive(Serialize)]
struct Failure<'a> {
    jsonrpc: &'static str,
    id: &'a Value,
    error: &'a RpcError,
}

/// Encodes one response object (no trailing newline).
pub(crate) fn encode_response(id: &Value, r: &Result<Value, RpcError>) -> Vec<u8> {
    let encoded = match r {
        Ok(result) => serde_json::to_vec(&Success {
            jsonrpc: "2.0",
            id,
            result,
        }),
        Err(error) => serde_json::to_vec(&Failure {
            jsonrpc: "2.0",
            id,
            error,
        }),
    };
    encoded.unwrap_or_else(|e| {
        let error = RpcError::internal(format!("internal error: encoding response: {e}"));
        let fallback = serde_json::to_vec(&Failure {
            jsonrpc: "2.0",
            id,
            error: &error,
        });
        fallback.unwrap_or_else(|_| {
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"internal error"}}"#
                .to_vec()
        })
    })
}

/// Encodes an error response with a null id.
pub(crate) fn encode_error(e: &RpcError) -> Vec<u8> {
    encode_response(&Value::Null, &Err(e.clone()))
}

fn valid_id(id: &Value) -> Result<(), &'static str> {
    match id {
        Value::String(s) if s.chars().count() > MAX_ID_LEN => {
            Err("id is longer than 128 characters")
        }
        Value::Number(n) if n.to_string().len() > MAX_ID_LEN => {
            Err("id is longer than 128 characters")
        }
        Value::String(_) | Value::Number(_) | Value::Null => Ok(()),
        _ => Err("id must be a string, a number or null"),
    }
}

/// Validates one request object. On failure returns the id to answer with (the request's own
/// id when that was valid, else null) and a `-32600` error.
pub(crate) fn parse_request(v: Value) -> Result<Request, (Value, RpcError)> {
    let Value::Object(mut obj) = v else {
        return Err((
            Value::Null,
            RpcError::invalid_request("request must be an object"),
        ));
    };
    let id = obj.remove("id");
    let reply_id = match &id {
        Some(id) if valid_id(id).is_ok() => id.clone(),
        _ => Value::Null,
    };
    let fail = |msg: String| Err((reply_id.clone(), RpcError::invalid_request(msg)));
    if let Some(id) = &id {
        if let Err(msg) = valid_id(id) {
            return fail(msg.to_owned());
        }
    }
    match obj.remove("jsonrpc") {
        None => {}
        Some(Value::String(s)) if s == "2.0" => {}
        Some(_) => return fail("jsonrpc must be \"2.0\"".to_owned()),
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) => m,
        Some(_) => return fail("method must be a string".to_owned()),
        None => return fail("method is missing".to_owned()),
    };
    let params = match obj.remove("params") {
        None | Some(Value::Null) => None,
        Some(p @ (Value::Object(_) | Value::Array(_))) => Some(p),
        Some(_) => return fail("params must be an object, an array or null".to_owned()),
    };
    if let Some(key) = obj.keys().next() {
        return fail(format!("unknown member '{}'", truncate(key)));
    }
    Ok(Request {
        method,
        params,
        id: id.filter(|i| !i.is_null()),
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Dispatches one top-level JSON value (a request or a batch). Every response goes to `sink`
/// (now or later, from whichever thread answers). Returns whether one message will be sent
/// to `sink`: false for a notification and for a batch of notifications only.
pub(crate) fn dispatch(registry: &Registry, v: Value, sink: &Sink) -> bool {
    match v {
        Value::Array(items) => dispatch_batch(registry, items, sink),
        v => match parse_request(v) {
            Ok(req) => {
                let expects = req.id.is_some();
                let reply = match req.id {
                    Some(id) => {
                        let sink = Arc::clone(sink);
                        Responder::new(move |r| sink(encode_response(&id, &r)))
                    }
                    None => Responder::ignore(),
                };
                registry.call(&req.method, req.params, reply);
                expects
            }
            Err((id, e)) => {
                sink(encode_response(&id, &Err(e)));
                true
            }
        },
    }
}

struct Batch {
    slots: Vec<Option<Vec<u8>>>,
    /// Outstanding answers, plus one held until every element has been dispatched.
    remaining: usize,
}

fn dispatch_batch(registry: &Registry, items: Vec<Value>, sink: &Sink) -> bool {
    if items.is_empty() {
        sink(encode_error(&RpcError::invalid_request("empty batch")));
        return true;
    }
    if items.len() > MAX_BATCH {
        sink(encode_error(&RpcError::invalid_request(format!(
            "batch of {} requests exceeds the limit of {MAX_BATCH}",
            items.len()
        ))));
        return true;
    }
    let parsed: Vec<_> = items.into_iter().map(parse_request).collect();
    let answers = parsed
        .iter()
        .filter(|p| !matches!(p, Ok(Request { id: None, .. })))
        .count();
    if answers == 0 {
        for req in parsed.into_iter().flatten() {
            registry.call(&req.method, req.params, Responder::ignore());
        }
        return false;
    }
    let batch = Arc::new(Mutex::new(Batch {
        slots: vec![None; parsed.len()],
        remaining: answers + 1,
    }));
    let finish = {
        let sink = Arc::clone(sink);
        move |batch: &Mutex<Batch>, slot: Option<(usize, Vec<u8>)>| {
            let mut b = batch.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((i, bytes)) = slot {
                b.slots[i] = Some(bytes);
            }
            b.remaining -= 1;
            if b.remaining == 0 {
                let mut out = b"[".to_vec();
                for (n, s) in b.slots.iter_mut().filter_map(Option::take).enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    out.extend(s);
                }
                out.push(b']');
                drop(b);
                sink(out);
            }
        }
    };
    let finish = Arc::new(finish);
    for (i, p) in parsed.into_iter().enumerate() {
        match p {
            Ok(Request {
                method,
                params,
                id: Some(id),
            }) => {
                let (batch, finish) = (Arc::clone(&batch), Arc::clone(&finish));
                let reply =
                    Responder::new(move |r| finish(&batch, Some((i, encode_response(&id, &r)))));
                registry.call(&method, params, reply);
            }
            Ok(Request {
                method,
                params,
                id: None,
            }) => registry.call(&method, params, Responder::ignore()),
            Err((id, e)) => finish(&batch, Some((i, encode_response(&id, &Err(e))))),
        }
    }
    finish(&batch, None);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ServerState, RUNTIME};
    use serde_json::json;
    use std::sync::mpsc;
    use std::time::Duration;

    fn run(v: Value) -> (bool, Vec<Value>) {
        let reg = Registry::new(Arc::new(ServerState::new(RUNTIME)));
        reg.register_fn("echo", RUNTIME, false, |p, r| r.ok(p));
        reg.register_fn("later", RUNTIME, false, |p, r| {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                r.ok(p)
            });
        });
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let tx = Mutex::new(tx);
        let sink: Sink = Arc::new(move |b| tx.lock().unwrap().send(b).unwrap());
        let expects = dispatch(&reg, v, &sink);
        let mut out = Vec::new();
        while let Ok(b) = rx.recv_timeout(Duration::from_millis(300)) {
            out.push(serde_json::from_slice(&b).unwrap());
        }
        (expects, out)
    }

    fn invalid(v: Value) -> Value {
        let (expects, out) = run(v);
        assert!(expects);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["error"]["code"], json!(-32600), "{}", out[0]);
        assert!(out[0]["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Invalid request"));
        out[0]["id"].clone()
    }

    #[test]
    fn single_and_notification() {
        let (e, out) = run(json!({"jsonrpc":"2.0","method":"echo","params":{"a":1},"id":"x"}));
        assert!(e);
        assert_eq!(
            out,
            vec![json!({"jsonrpc":"2.0","id":"x","result":{"a":1}})]
        );
        let (e, out) = run(json!({"method":"echo","id":-1.5}));
        assert!(e);
        assert_eq!(out, vec![json!({"jsonrpc":"2.0","id":-1.5,"result":null})]);
        assert_eq!(run(json!({"method":"echo"})), (false, vec![]));
        assert_eq!(run(json!({"method":"echo","id":null})), (false, vec![]));
        assert_eq!(run(json!({"method":"nope"})), (false, vec![]));
    }

    #[test]
    fn encodes_in_spdk_member_order() {
        let b = encode_response(&json!(1), &Ok(json!(true)));
        assert_eq!(b, br#"{"jsonrpc":"2.0","id":1,"result":true}"#);
        let b = encode_response(&json!(1), &Err(RpcError::from_errno(19, "x")));
        assert_eq!(
            b,
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":-19,"message":"x"}}"#
        );
    }

    #[test]
    fn invalid_shapes() {
        assert_eq!(invalid(json!(1)), Value::Null);
        assert_eq!(invalid(json!("s")), Value::Null);
        assert_eq!(invalid(json!({"id":1})), json!(1));
        assert_eq!(invalid(json!({"method":1,"id":2})), json!(2));
        assert_eq!(
            invalid(json!({"method":"echo","jsonrpc":"1.0","id":3})),
            json!(3)
        );
        assert_eq!(
            invalid(json!({"method":"echo","jsonrpc":2,"id":3})),
            json!(3)
        );
        assert_eq!(
            invalid(json!({"method":"echo","params":5,"id":4})),
            json!(4)
        );
        assert_eq!(invalid(json!({"method":"echo","params":"p"})), Value::Null);
        assert_eq!(invalid(json!({"method":"echo","id":{}})), Value::Null);
        assert_eq!(invalid(json!({"method":"echo","id":[1]})), Value::Null);
        assert_eq!(invalid(json!({"method":"echo","id":true})), Value::Null);
        assert_eq!(
            invalid(json!({"method":"echo","id":"x".repeat(129)})),
            Value::Null
        );
        assert_eq!(invalid(json!({"method":"echo","id":5,"extra":1})), json!(5));
        let (_, out) = run(json!({"method":"echo","id":"x".repeat(128)}));
        assert_eq!(out[0]["id"], json!("x".repeat(128)));
    }

    #[test]
    fn batches() {
        let (e, out) = run(json!([
            {"method":"later","params":[1],"id":1},
            {"method":"echo","params":[2]},
            {"method":"echo","params":[3],"id":3},
            7,
            {"method":"nope","id":5}
        ]));
        assert!(e);
        assert_eq!(out.len(), 1);
        let arr = out[0].as_array().unwrap();
        assert_eq!(arr.len(), 4);
        assert_eq!(arr[0], json!({"jsonrpc":"2.0","id":1,"result":[1]}));
        assert_eq!(arr[1], json!({"jsonrpc":"2.0","id":3,"result":[3]}));
        assert_eq!(arr[2]["error"]["code"], json!(-32600));
        assert_eq!(arr[3]["error"]["code"], json!(-32601));
        assert_eq!(invalid(json!([])), Value::Null);
        let big: Vec<Value> = (0..1025).map(|i| json!({"method":"echo","id":i})).collect();
        assert_eq!(invalid(Value::Array(big)), Value::Null);
        assert_eq!(
            run(json!([{"method":"echo"},{"method":"later","id":null}])),
            (false, vec![])
        );
    }

    /// Property: any JSON value obtained by mutating valid requests, dispatched directly,
    /// never panics and produces exactly the promised number of messages.
    #[test]
    fn fuzz_dispatch_mutated_requests() {
        let mut rng = crate::framing::tests::Rng::new(7);
        let reg = Registry::new(Arc::new(ServerState::new(RUNTIME)));
        reg.register_fn("echo", RUNTIME, false, |p, r| r.ok(p));
        let seeds = [
            r#"{"jsonrpc":"2.0","method":"echo","params":{"a":[1,2]},"id":12}"#,
            r#"[{"method":"echo","id":"x"},{"method":"echo"},{"method":"nope","id":1}]"#,
            r#"{"method":"echo","params":[null],"id":null}"#,
        ];
        let alphabet = b"{}[]\",:0123456789-.etrufalsn ";
        let mut dispatched = 0;
        for _ in 0..20_000 {
            let mut d = seeds[rng.below(seeds.len())].as_bytes().to_vec();
            for _ in 0..rng.below(3) + 1 {
                let p = rng.below(d.len());
                match rng.below(3) {
                    0 => {
                        d.remove(p);
                    }
                    1 => d.insert(p, alphabet[rng.below(alphabet.len())]),
                    _ => d[p] = alphabet[rng.below(alphabet.len())],
                }
            }
            let Ok(v) = serde_json::from_slice::<Value>(&d) else {
                continue;
            };
            dispatched += 1;
            let sent = Arc::new(Mutex::new(Vec::new()));
            let s2 = Arc::clone(&sent);
            let sink: Sink = Arc::new(move |b| s2.lock().unwrap().push(b));
            let expects = dispatch(&reg, v, &sink);
            let sent = sent.lock().unwrap();
            assert_eq!(
                sent.len(),
                usize::from(expects),
                "{}",
                String::from_utf8_lossy(&d)
            );
            for b in sent.iter() {
                let _: Value = serde_json::from_slice(b).unwrap();
            }
        }
        assert!(dispatched > 1000);
    }
}
