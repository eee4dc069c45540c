//! JSON-RPC semantics over a real socket: notifications, batches and every error code.

mod common;

use std::time::Duration;

use common::{error_of, start, start_with, Client};
use ferrite_rpc::{RUNTIME, STARTUP};
use serde_json::json;

#[test]
fn notification_gets_no_response() {
    let (server, _) = start();
    let mut c = Client::connect(&server);
    c.send(r#"{"jsonrpc":"2.0","method":"echo","params":[1]}"#);
    c.send(r#"{"jsonrpc":"2.0","method":"echo","params":[2],"id":null}"#);
    c.send(r#"{"jsonrpc":"2.0","method":"no_such_method"}"#);
    c.send(r#"{"jsonrpc":"2.0","method":"echo","params":[3],"id":3}"#);
    assert_eq!(c.recv(), json!({"jsonrpc":"2.0","id":3,"result":[3]}));
    assert!(
        c.try_recv_raw(Duration::from_millis(200)).is_none(),
        "only one response"
    );
    server.stop();
}

#[test]
fn mutating_notification_still_runs_hooks() {
    let (server, reg) = start();
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    reg.on_success(move |m| tx.lock().unwrap().send(m.to_owned()).unwrap());
    let mut c = Client::connect(&server);
    c.send(r#"{"method":"create","params":{"name":"a","num_blocks":1}}"#);
    assert_eq!(rx.recv_timeout(common::WAIT).unwrap(), "create");
    c.call("create", json!({"name":"b","num_blocks":1}), json!(1));
    assert_eq!(rx.recv_timeout(common::WAIT).unwrap(), "create");
    error_of(&c.call("create", json!({"name":"b"}), json!(2)), -32602);
    c.call("echo", json!({}), json!(3));
    assert!(
        rx.try_recv().is_err(),
        "hooks only after successful mutating calls"
    );
    server.stop();
}

#[test]
fn batch_mixed_with_notification_and_invalid_element() {
    let (server, _) = start();
    let mut c = Client::connect(&server);
    c.send(
        r#"[{"jsonrpc":"2.0","method":"slow","params":{"ms":50,"tag":"a"},"id":"a"},
            {"jsonrpc":"2.0","method":"echo","params":[0]},
            {"jsonrpc":"2.0","method":"echo","params":[1],"id":1},
            {"foo":"bar"},
            5,
            {"jsonrpc":"2.0","method":"nope","id":2}]"#,
    );
    let resp = c.recv();
    let arr = resp.as_array().expect("a batch answer is an array");
    assert_eq!(arr.len(), 5, "{resp}");
    assert_eq!(
        arr[0],
        json!({"jsonrpc":"2.0","id":"a","result":{"slept":50,"tag":"a"}})
    );
    assert_eq!(arr[1], json!({"jsonrpc":"2.0","id":1,"result":[1]}));
    assert!(error_of(&arr[2], -32600).starts_with("Invalid request"));
    assert_eq!(arr[2]["id"], json!(null));
    error_of(&arr[3], -32600);
    assert!(error_of(&arr[4], -32601).starts_with("Method not found"));
    assert_eq!(arr[4]["id"], json!(2));

    c.send("[]");
    let resp = c.recv();
    assert!(error_of(&resp, -32600).starts_with("Invalid request"));
    assert_eq!(resp["id"], json!(null));

    c.send(r#"[{"method":"echo"},{"method":"echo","id":null}]"#);
    assert_eq!(
        c.call("echo", json!([7]), json!(7))["result"],
        json!([7]),
        "all-notification batch: no reply"
    );
    server.stop();
}

#[test]
fn parse_error_closes_only_that_connection() {
    let (server, _) = start();
    let mut other = Client::connect(&server);
    let mut c = Client::connect(&server);
    c.send(r#"{"method":"echo","id":1}{"method":"echo",,}"#);
    assert_eq!(
        c.recv()["id"],
        json!(1),
        "requests before the bad one are answered"
    );
    assert_eq!(
        c.recv(),
        json!({"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}})
    );
    c.expect_closed();
    assert_eq!(
        other.call("echo", json!([1]), json!(1))["result"],
        json!([1])
    );
    common::assert_serves(&server);
    server.stop();
}

#[test]
fn invalid_requests() {
    let (server, _) = start();
    let mut c = Client::connect(&server);
    let cases: &[(&str, serde_json::Value)] = &[
        (r#"{"jsonrpc":"2.0","id":1}"#, json!(1)),
        (r#"{"jsonrpc":"2.0","method":5,"id":2}"#, json!(2)),
        (r#"{"jsonrpc":"1.0","method":"echo","id":3}"#, json!(3)),
        (r#"{"jsonrpc":2.0,"method":"echo","id":4}"#, json!(4)),
        (
            r#"{"jsonrpc":"2.0","method":"echo","params":"x","id":5}"#,
            json!(5),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"echo","params":7,"id":6}"#,
            json!(6),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"echo","id":{"a":1}}"#,
            json!(null),
        ),
        (r#"{"jsonrpc":"2.0","method":"echo","id":[1]}"#, json!(null)),
        (
            r#"{"jsonrpc":"2.0","method":"echo","id":true}"#,
            json!(null),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"echo","id":8,"extra":0}"#,
            json!(8),
        ),
        (r#""just a string""#, json!(null)),
        ("12345 ", json!(null)),
        ("null ", json!(null)),
    ];
    for (req, id) in cases {
        c.send(req);
        let resp = c.recv();
        let msg = error_of(&resp, -32600);
        assert!(msg.starts_with("Invalid request"), "{req}: {msg}");
        assert_eq!(&resp["id"], id, "{req}");
    }
    let long_id = "i".repeat(129);
    c.send(format!(r#"{{"method":"echo","id":"{long_id}"}}"#));
    error_of(&c.recv(), -32600);
    let ok_id = "i".repeat(128);
    assert_eq!(
        c.call("echo", json!(null), json!(ok_id))["result"],
        json!(null)
    );
    server.stop();
}

#[test]
fn method_not_found() {
    let (server, _) = start();
    let mut c = Client::connect(&server);
    let msg = error_of(&c.call("bdev_nope", json!(null), json!(1)), -32601);
    assert!(msg.starts_with("Method not found"), "{msg}");
    assert!(msg.contains("bdev_nope"), "{msg}");
    server.stop();
}

#[test]
fn invalid_params_name_the_parameter() {
    let (server, _) = start();
    let mut c = Client::connect(&server);
    let r = c.call(
        "create",
        json!({"name":"M0","num_blocks":8,"foo":1}),
        json!(1),
    );
    assert_eq!(error_of(&r, -32602), "unknown parameter 'foo'");
    let r = c.call("create", json!({"num_blocks":8}), json!(2));
    assert_eq!(error_of(&r, -32602), "missing required parameter 'name'");
    let r = c.call("create", json!({"name":"M0","num_blocks":"x"}), json!(3));
    assert_eq!(
        error_of(&r, -32602),
        "parameter 'num_blocks': invalid type: string \"x\", expected u64"
    );
    let r = c.call("create", json!([1, 2]), json!(4));
    assert_eq!(error_of(&r, -32602), "params must be an object");
    let r = c.call(
        "create",
        json!({"name":"M0","num_blocks":8,"block_size":512}),
        json!(5),
    );
    assert_eq!(
        r["result"],
        json!({"name":"M0","num_blocks":8,"block_size":512})
    );
    let r = c.call("rpc_get_methods", json!({"current":"yes"}), json!(6));
    assert!(error_of(&r, -32602).starts_with("parameter 'current'"));
    server.stop();
}

#[test]
fn invalid_state_both_directions() {
    let (server, reg) = start_with(STARTUP, |_| {});
    let mut c = Client::connect(&server);
    let r = c.call("runtime_only", json!(null), json!(1));
    assert_eq!(
        error_of(&r, -1),
        "Method may only be called after framework is initialized using framework_start_init RPC."
    );
    assert_eq!(
        c.call("startup_only", json!(null), json!(2))["result"],
        json!(true)
    );
    let r = c.call("rpc_get_methods", json!({"current": true}), json!(3));
    let names = r["result"].as_array().unwrap();
    assert!(names.contains(&json!("startup_only")) && !names.contains(&json!("runtime_only")));
    reg.state().set_state(RUNTIME);
    let r = c.call("startup_only", json!(null), json!(4));
    assert_eq!(
        error_of(&r, -1),
        "Method may only be called before framework is initialized. Use --wait-for-rpc command \
         line parameter and then issue this RPC before the framework initialization is complete."
    );
    assert_eq!(
        c.call("runtime_only", json!(null), json!(5))["result"],
        json!(true)
    );
    let all = c.call("rpc_get_methods", json!(null), json!(6));
    let all: Vec<&str> = all["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut sorted = all.clone();
    sorted.sort_unstable();
    assert_eq!(all, sorted);
    assert!(all.contains(&"rpc_get_methods") && all.contains(&"startup_only"));
    server.stop();
}

#[test]
fn errno_and_dropped_responder() {
    let (server, _) = start();
    let mut c = Client::connect(&server);
    let r = c.call("fail", json!(null), json!(1));
    assert_eq!(
        r,
        json!({"jsonrpc":"2.0","id":1,"error":{"code":-19,"message":"bdev 'x' not found"}})
    );
    let r = c.call("drop", json!(null), json!(2));
    assert_eq!(
        error_of(&r, -32603),
        "internal error: handler dropped the request"
    );
    server.stop();
}
