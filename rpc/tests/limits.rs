//! Resource limits and the socket file: oversize requests, the connection cap, idle and
//! stalled clients, clients that never read, socket mode, stale and live socket files.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{assert_serves, error_of, registry, sock_path, start, start_with, Client};
use ferrite_rpc::{ErrorKind, Server, ServerConfig, RUNTIME};
use serde_json::json;

#[test]
fn oversize_request_is_refused_and_closed() {
    let (server, _) = start_with(RUNTIME, |c| c.max_request_bytes = 1024);
    let mut other = Client::connect(&server);

    let mut c = Client::connect(&server);
    let big = serde_json::to_vec(&json!({"method":"echo","params":{"p":"z".repeat(2000)},"id":1}))
        .unwrap();
    c.send(&big);
    let msg = error_of(&c.recv(), -32600);
    assert!(msg.contains("exceeds the limit of 1024 bytes"), "{msg}");
    c.expect_closed();

    // An oversize value that never completes is refused as soon as it passes the limit.
    let mut c = Client::connect(&server);
    c.send(format!(
        "{{\"method\":\"echo\",\"params\":\"{}",
        "q".repeat(3000)
    ));
    error_of(&c.recv(), -32600);
    c.expect_closed();

    assert_eq!(
        other.call("echo", json!([1]), json!(1))["result"],
        json!([1])
    );
    let ok = json!({"p": "z".repeat(900)});
    assert_eq!(other.call("echo", ok.clone(), json!(2))["result"], ok);
    server.stop();
}

#[test]
fn connection_cap_refuses_the_65th_only() {
    let (server, _) = start();
    let mut clients: Vec<Client> = (0..64).map(|_| Client::connect(&server)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.call("echo", json!([i]), json!(i))["result"], json!([i]));
    }
    let mut extra = Client::connect(&server);
    extra.expect_closed();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(
            c.call("echo", json!({"again": i}), json!(i))["result"],
            json!({"again": i})
        );
    }
    // Closing one frees a slot.
    drop(clients.pop());
    let deadline = Instant::now() + common::WAIT;
    loop {
        let mut c = Client::connect(&server);
        c.send(r#"{"method":"echo","id":"new"}"#);
        if let Some(line) = c.try_recv_raw(Duration::from_millis(500)) {
            assert!(String::from_utf8_lossy(&line).contains("\"new\""));
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
    }
    server.stop();
}

#[test]
fn silent_client_is_kept_and_stalled_partial_request_is_closed() {
    let idle = Duration::from_millis(300);
    let (server, _) = start_with(RUNTIME, |c| c.idle_timeout = idle);
    let mut silent = Client::connect(&server);
    let mut stalled = Client::connect(&server);
    let started = Instant::now();
    stalled.send(r#"{"jsonrpc":"2.0","method":"ec"#);
    let mut other = Client::connect(&server);
    for i in 0..5 {
        assert_eq!(
            other.call("echo", json!([i]), json!(i))["result"],
            json!([i])
        );
    }
    stalled.expect_closed();
    assert!(started.elapsed() >= idle, "closed before the idle timeout");
    std::thread::sleep(idle * 2);
    assert_eq!(
        silent.call("echo", json!(["still here"]), json!(1))["result"],
        json!(["still here"])
    );
    assert_eq!(
        other.call("echo", json!([9]), json!(9))["result"],
        json!([9])
    );
    server.stop();
}

#[test]
fn client_that_never_reads_is_closed_without_blocking_others() {
    let (server, _) = start_with(RUNTIME, |c| c.idle_timeout = Duration::from_millis(400));
    let mut hog = Client::connect(&server);
    let req = r#"{"method":"big","params":{"n":1048576},"id":1}"#.repeat(80);
    hog.send(req);
    let mut other = Client::connect(&server);
    for i in 0..20 {
        assert_eq!(
            other.call("echo", json!([i]), json!(i))["result"],
            json!([i])
        );
    }
    // Closed once its writes have stalled for the idle timeout (never read from here: a
    // read would let the server write again).
    hog.expect_closed_unread();
    assert_serves(&server);
    server.stop();
}

#[test]
fn socket_mode_default_and_configured() {
    let (server, _) = start();
    let mode = std::fs::metadata(server.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    server.stop();
    let (server, _) = start_with(RUNTIME, |c| c.mode = 0o660);
    let mode = std::fs::metadata(server.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);
    assert_serves(&server);
    server.stop();
}

#[test]
fn stale_live_and_foreign_socket_files() {
    // A stale socket file (nobody listening) is replaced.
    let path = sock_path("stale");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let server = Server::start(ServerConfig::new(&path), registry(RUNTIME)).unwrap();
    assert_serves(&server);

    // A live one is refused, and left alone.
    let err = Server::start(ServerConfig::new(&path), registry(RUNTIME)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AddressInUse);
    assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    assert_serves(&server);

    // stop() removes the socket file and closes the connections.
    let mut c = Client::connect(&server);
    server.stop();
    assert!(!path.exists());
    c.expect_closed();

    // A regular file is never deleted.
    std::fs::write(&path, b"data").unwrap();
    let err = Server::start(ServerConfig::new(&path), registry(RUNTIME)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidPath);
    assert_eq!(std::fs::read(&path).unwrap(), b"data");
    std::fs::remove_file(&path).unwrap();

    // Bad configuration and paths.
    let mut cfg = ServerConfig::new(sock_path("cfg"));
    cfg.max_conns = 0;
    assert_eq!(
        Server::start(cfg, registry(RUNTIME)).unwrap_err().kind(),
        ErrorKind::InvalidConfig
    );
    let long = std::env::temp_dir().join("l".repeat(120));
    let err = Server::start(ServerConfig::new(long), registry(RUNTIME)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidPath);
    let missing = std::env::temp_dir().join("ferrite-no-such-dir/x.sock");
    let err = Server::start(ServerConfig::new(missing), registry(RUNTIME)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidPath);
}

#[test]
fn drop_stops_the_server() {
    let (server, _) = start();
    let path = server.path().to_owned();
    drop(server);
    assert!(!path.exists());
    assert!(std::os::unix::net::UnixStream::connect(&path).is_err());
}
