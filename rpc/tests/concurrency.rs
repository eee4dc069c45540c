//! Asynchronous answers from other threads, and robustness under random and malformed input
//! from several clients at once.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use common::{assert_serves, junk, release_held, start, Client, Rng, WAIT};
use serde_json::{json, Value};

#[test]
fn async_answer_does_not_block_other_requests() {
    let (server, _) = start();
    let mut a = Client::connect(&server);
    let mut b = Client::connect(&server);
    // Answered only when the test says so (by another thread than the server's).
    a.send(r#"{"method":"held","params":{"tag":"late"},"id":"slow"}"#);
    a.send(r#"{"method":"echo","params":["quick"],"id":"quick"}"#);
    // Same connection: the quick answer is written first (completion order).
    assert_eq!(
        a.recv(),
        json!({"jsonrpc":"2.0","id":"quick","result":["quick"]})
    );
    // Other connection: served while the held call is pending.
    for i in 0..10 {
        assert_eq!(b.call("echo", json!([i]), json!(i))["result"], json!([i]));
    }
    assert_eq!(
        b.call("slow", json!({"ms": 10, "tag": "b"}), json!("b"))["result"]["tag"],
        json!("b")
    );
    assert!(
        a.try_recv_raw(Duration::from_millis(1)).is_none(),
        "the held call was not answered yet"
    );
    // Answered from this thread now: it reaches its connection.
    assert_eq!(
        std::thread::spawn(|| release_held("late")).join().unwrap(),
        1
    );
    assert_eq!(
        a.recv(),
        json!({"jsonrpc":"2.0","id":"slow","result":{"tag":"late"}})
    );
    server.stop();
}

/// Sends `payload` on a fresh connection in random chunks, half-closes, and reads every
/// response until the server closes. Each response must be a JSON-RPC 2.0 object or array.
fn fire(server: &ferrite_rpc::Server, payload: &[u8], rng: &mut Rng) -> Vec<Value> {
    let mut out = Vec::new();
    let mut c = Client::connect(server);
    let mut rest = payload;
    while !rest.is_empty() {
        let n = rng.below(rest.len().min(40)) + 1;
        if c.stream.write_all(&rest[..n]).is_err() {
            break; // the server already closed after a parse error
        }
        rest = &rest[n..];
    }
    let _ = c.stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + WAIT;
    while let Some(line) = c.try_recv_raw(WAIT) {
        let v: Value = serde_json::from_slice(&line).expect("responses are JSON");
        let obj = if let Value::Array(a) = &v {
            a.first().cloned().unwrap_or(Value::Null)
        } else {
            v
        };
        assert_eq!(obj["jsonrpc"], json!("2.0"), "{line:?}");
        assert!(Instant::now() < deadline, "connection not closed");
        out.push(obj);
    }
    out
}

#[test]
fn fuzz_live_socket() {
    let (server, _) = start();
    let mut rng = Rng::new(0xf00d);
    let mut codes: HashMap<i64, usize> = HashMap::new();
    for i in 0..2000 {
        let mut payload = junk(&mut rng);
        if i % 4 == 0 {
            // A valid request after the junk: answered unless the junk broke the stream.
            payload.extend_from_slice(br#" {"method":"echo","id":"tail"}"#);
        }
        for r in fire(&server, &payload, &mut rng) {
            let key = r["error"]["code"].as_i64().unwrap_or(0);
            *codes.entry(key).or_insert(0) += 1;
        }
        if i % 250 == 0 {
            assert_serves(&server);
        }
    }
    // The generator must exercise parse errors, invalid requests, bad params and successes.
    for code in [-32700, -32600, -32602, 0] {
        assert!(
            codes.get(&code).copied().unwrap_or(0) > 0,
            "no {code} in {codes:?}"
        );
    }
    assert_serves(&server);
    server.stop();
}

#[test]
fn malformed_flood_while_valid_async_calls_succeed() {
    let (server, _) = start();
    let server = std::sync::Arc::new(server);
    let flooders: Vec<_> = (0..4u64)
        .map(|t| {
            let server = server.clone();
            std::thread::spawn(move || {
                let mut rng = Rng::new(1000 + t);
                for _ in 0..1250 {
                    let payload = junk(&mut rng);
                    let _ = fire(&server, &payload, &mut rng);
                }
            })
        })
        .collect();

    let mut c = Client::connect(&server);
    let mut answered = 0;
    for round in 0..20u64 {
        // Pipeline a burst of async calls, then collect them by id (completion order).
        let mut want = HashMap::new();
        for k in 0..10u64 {
            let id = round * 100 + k;
            let tag = format!("t{id}");
            let req = json!({"jsonrpc":"2.0","method":"slow","params":{"ms": k % 4, "tag": tag},"id": id});
            c.send(serde_json::to_vec(&req).unwrap());
            want.insert(id, tag);
        }
        while !want.is_empty() {
            let resp = c.recv();
            let id = resp["id"].as_u64().expect("numeric id");
            let tag = want.remove(&id).expect("an expected id, once");
            assert_eq!(
                resp["result"],
                json!({"slept": id % 100 % 4, "tag": tag}),
                "{resp}"
            );
            answered += 1;
        }
        assert_eq!(
            c.call("echo", json!([round]), json!("e"))["result"],
            json!([round])
        );
    }
    assert_eq!(answered, 200);
    for f in flooders {
        f.join().unwrap();
    }
    assert_serves(&server);
}
