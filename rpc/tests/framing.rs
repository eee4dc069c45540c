//! Stream framing over a real socket: back-to-back requests, byte-by-byte splits, whitespace,
//! and the "\n" after every response.

mod common;

use std::time::Duration;

use common::{start, Client};
use serde_json::json;

#[test]
fn several_requests_in_one_write() {
    let (server, _) = start();
    let mut c = Client::connect(&server);
    c.send(br#"{"jsonrpc":"2.0","method":"echo","params":{"n":1},"id":1}{"jsonrpc":"2.0","method":"echo","params":[2],"id":"two"}{"method":"echo","id":3}"#);
    assert_eq!(c.recv(), json!({"jsonrpc":"2.0","id":1,"result":{"n":1}}));
    assert_eq!(c.recv(), json!({"jsonrpc":"2.0","id":"two","result":[2]}));
    assert_eq!(c.recv(), json!({"jsonrpc":"2.0","id":3,"result":null}));
    server.stop();
}

#[test]
fn one_request_split_byte_by_byte() {
    let (server, _) = start();
    let mut c = Client::connect(&server);
    let req =
        br#"{"jsonrpc":"2.0","method":"echo","params":{"s":"a}\"{[","n":[1,{"x":null}]},"id":42}"#;
    for b in req.iter() {
        c.send([*b]);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        c.recv(),
        json!({"jsonrpc":"2.0","id":42,"result":{"s":"a}\"{[","n":[1,{"x":null}]}})
    );
    server.stop();
}

#[test]
fn whitespace_between_and_around_values() {
    let (server, _) = start();
    let mut c = Client::connect(&server);
    c.send(" \n\t\r ");
    c.send("{\"method\" : \"echo\",\n \"params\": [1], \"id\": 1}\n\n  \t{\"method\":\"echo\",\"id\":2}   ");
    assert_eq!(c.recv()["id"], json!(1));
    assert_eq!(c.recv()["id"], json!(2));
    c.send("\r\n");
    assert_eq!(c.call("echo", json!([3]), json!(3))["result"], json!([3]));
    server.stop();
}

#[test]
fn every_response_ends_with_newline() {
    let (server, _) = start();
    let mut c = Client::connect(&server);
    c.send(r#"{"method":"echo","id":1}{"method":"nope","id":2}[{"method":"echo","id":3}]"#);
    assert_eq!(
        c.recv_raw(),
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":null}\n"
    );
    let raw = c.recv_raw();
    assert!(raw.ends_with(b"}\n"), "{raw:?}");
    let raw = c.recv_raw();
    assert!(raw.ends_with(b"]\n"), "{raw:?}");
    assert_eq!(raw.iter().filter(|&&b| b == b'\n').count(), 1);
    server.stop();
}

#[test]
fn large_request_in_many_writes() {
    let (server, _) = start();
    let mut c = Client::connect(&server);
    let payload = "y".repeat(1_000_000);
    let req = serde_json::to_vec(&json!({"method":"echo","params":{"p":payload},"id":9})).unwrap();
    for chunk in req.chunks(4093) {
        c.send(chunk);
    }
    let resp = c.recv();
    assert_eq!(resp["result"]["p"].as_str().map(str::len), Some(1_000_000));
    server.stop();
}
