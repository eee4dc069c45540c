//! A hostile vhost-user frontend against Ferrite's vhost-user-blk target (`ferrite tgt`, a
//! malloc bdev behind `vhost_create_blk_controller`): malformed messages (bad sizes, unknown
//! requests, invalid fds, broken memory tables, ring addresses outside memory, out-of-range
//! queue indices, SET_VRING_BASE beyond the size) and hostile descriptor chains (outside
//! memory, loops, chains longer than the queue, wrong direction, oversize requests, bad
//! indirect tables). Each hostile request must end with a non-OK status or no completion at
//! all (the device marked broken); the target process must survive all of it and then serve
//! a well-behaved raw client and the virtio-user bdev (`ferrite bench -w verify`) correctly.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;
mod hostile;

use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use hostile::*;
use serde_json::json;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const BLOCKS: u64 = 65536;

fn start_target(dir: &TempDir) -> Target {
    let conf = dir.join("tgt.json");
    let doc = json!({"subsystems": [
        {"subsystem": "bdev", "config": [{"method": "bdev_malloc_create",
            "params": {"name": "Malloc0", "num_blocks": BLOCKS, "block_size": 512}}]},
        {"subsystem": "vhost_blk", "config": [{"method": "vhost_create_blk_controller",
            "params": {"ctrlr": "vhost.0", "dev_name": "Malloc0"}}]}]});
    std::fs::write(&conf, doc.to_string()).unwrap();
    let d = dir.path.display().to_string();
    Target::start_in(
        dir,
        "t",
        &["-m", "0x1", "-S", &d, "-c", conf.to_str().unwrap()],
    )
}

/// What a hostile chain ended with.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Completed with this status byte (0xff: the status was never written).
    Status(u8),
    /// No completion: the device stopped the queue (broken).
    NoCompletion,
}

/// A good read/write pair on a fresh connection: the harness itself works.
fn good_io(sock: &std::path::Path) {
    let mut g = Guest::setup(sock);
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    g.mem.write(DATA, &pattern);
    let h = g.header(0, T_OUT, 8);
    g.desc(DESC, 0, h, 16, NEXT, 1);
    g.desc(DESC, 1, DATA, 4096, NEXT, 2);
    g.desc(DESC, 2, STATUS, 1, WRITE, 0);
    g.publish(0, 1);
    assert_eq!(g.wait_used(Duration::from_secs(10)).map(|u| u.0), Some(0));
    assert_eq!(g.status(0), 0, "a good write failed");
    g.mem.write(DATA + 8192, &[0u8; 4096]);
    let h = g.header(1, T_IN, 8);
    g.desc(DESC, 3, h, 16, NEXT, 4);
    g.desc(DESC, 4, DATA + 8192, 4096, NEXT | WRITE, 5);
    g.desc(DESC, 5, STATUS + 1, 1, WRITE, 0);
    g.publish(3, 1);
    assert_eq!(g.wait_used(Duration::from_secs(10)).map(|u| u.0), Some(3));
    assert_eq!(g.status(1), 0, "a good read failed");
    assert_eq!(g.mem.read(DATA + 8192, 4096), pattern, "read back differs");
}

/// The target's RPC socket (set once the target runs).
static RPC_SOCK: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// True when `vhost_get_controllers` lists a broken queue on the controller.
fn queue_broken() -> bool {
    let sock = RPC_SOCK.get().expect("the target's RPC socket");
    let l = rpc(sock, "vhost_get_controllers", json!({"name": "vhost.0"})).unwrap();
    l[0]["broken_queues"]
        .as_array()
        .is_some_and(|q| !q.is_empty())
}

/// Runs one hostile chain on a fresh connection: `build` writes descriptors and returns the
/// head to publish and how far to advance avail.idx.
fn chain(sock: &std::path::Path, name: &str, build: impl FnOnce(&Guest) -> (u16, u16)) -> Outcome {
    let mut g = Guest::setup(sock);
    let (head, advance) = build(&g);
    g.publish(head, advance);
    // Either answered or the queue marked broken (`vhost_get_controllers`), whichever the
    // target does: waited for, not guessed from a quiet interval.
    let deadline = Instant::now() + Duration::from_secs(30);
    let out = loop {
        if g.wait_used(Duration::from_millis(20)).is_some() {
            break Outcome::Status(g.status(0));
        }
        if queue_broken() {
            // A completion published just before the queue broke still counts.
            break match g.wait_used(Duration::from_millis(20)) {
                Some(_) => Outcome::Status(g.status(0)),
                None => Outcome::NoCompletion,
            };
        }
        assert!(
            Instant::now() < deadline,
            "hostile chain '{name}': neither answered nor its queue marked broken"
        );
    };
    eprintln!("hostile chain {name:45} -> {out:?}");
    assert_ne!(
        out,
        Outcome::Status(0),
        "hostile chain '{name}' completed with OK"
    );
    out
}

/// A standard 3-descriptor request at 0..2 with the given tweaks.
fn req(g: &Guest, rtype: u32, sector: u64, data: (u64, u32, u16)) -> (u16, u16) {
    let h = g.header(0, rtype, sector);
    g.desc(DESC, 0, h, 16, NEXT, 1);
    g.desc(DESC, 1, data.0, data.1, data.2 | NEXT, 2);
    g.desc(DESC, 2, STATUS, 1, WRITE, 0);
    (0, 1)
}

const OUTSIDE: u64 = GPA_BASE + MEM_LEN as u64 + 0x10_0000;

#[test]
fn hostile_frontend_cannot_break_the_target() {
    let dir = TempDir::new("vhost-hostile");
    let t = start_target(&dir);
    let _ = RPC_SOCK.set(t.sock.clone());
    let sock = dir.join("vhost.0");
    good_io(&sock);

    malformed_messages(&sock);
    hostile_chains(&sock);

    // The target survived and serves a well-behaved raw client ...
    assert!(
        t.rpc("spdk_get_version", json!(null)).is_ok(),
        "{}",
        t.log_text()
    );
    good_io(&sock);
    // ... and the virtio-user bdev: bench verify in another process.
    let conf = dir.join("bench.json");
    let doc = json!({"subsystems": [{"subsystem": "bdev", "config": [
        {"method": "bdev_virtio_attach_controller", "params": {"name": "VirtioBlk0",
         "trtype": "user", "traddr": sock, "dev_type": "blk"}}]}]});
    std::fs::write(&conf, doc.to_string()).unwrap();
    let r = run(
        Command::new(BIN)
            .arg("bench")
            .arg("-m")
            .arg("0x2")
            .arg("-c")
            .arg(&conf)
            .args([
                "-q",
                "32",
                "-o",
                "4096",
                "-w",
                "verify",
                "-t",
                "2",
                "--output-json",
            ]),
        None,
    );
    assert!(r.ok(), "{}", r.all());
    let out = r.json();
    assert_eq!(out["results"][0]["io_failed"], 0, "{out}");
    assert!(out["results"][0]["iops"].as_f64().unwrap() > 0.0, "{out}");
    let log = t.log_text();
    assert!(!log.contains("panicked"), "{log}");
}

fn malformed_messages(sock: &std::path::Path) {
    let mem = Mem::new(MEM_LEN);
    let fd = mem.fd.as_raw_fd();
    let full = |m: &Mem| (GPA_BASE, MEM_LEN as u64, m.addr as u64, 0u64);
    let (pr, pw) = {
        let mut p = [0i32; 2];
        // SAFETY: pipe(2) into a 2-int array.
        assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
        (p[0], p[1])
    };
    type Case<'a> = (&'a str, Box<dyn Fn(&mut Raw) + 'a>);
    let cases: Vec<Case> = vec![
        (
            "unknown request 9999",
            Box::new(|r: &mut Raw| {
                r.send(9999, &u64b(1), &[]);
            }),
        ),
        (
            "request 0",
            Box::new(|r: &mut Raw| {
                r.send(0, &[], &[]);
            }),
        ),
        (
            "header size 4 GiB",
            Box::new(|r: &mut Raw| {
                r.send_raw(SET_FEATURES, 0, u32::MAX, &u64b(0), &[]);
            }),
        ),
        (
            "header size larger than sent",
            Box::new(|r: &mut Raw| {
                r.send_raw(SET_MEM_TABLE, 0, 4096, &u64b(0), &[]);
            }),
        ),
        (
            "SET_FEATURES short payload",
            Box::new(|r: &mut Raw| {
                r.send(SET_FEATURES, &[1, 2, 3, 4], &[]);
            }),
        ),
        (
            "GET_FEATURES with payload",
            Box::new(|r: &mut Raw| {
                r.send(GET_FEATURES, &[0u8; 64], &[]);
            }),
        ),
        (
            "fds on GET_FEATURES",
            Box::new(|r: &mut Raw| {
                r.send(GET_FEATURES, &[], &[fd, fd, fd, fd, fd, fd, fd, fd]);
            }),
        ),
        (
            "mem table: 0 regions",
            Box::new(|r: &mut Raw| {
                r.send_ack(SET_MEM_TABLE, &mem_table(&[]), &[]);
            }),
        ),
        (
            "mem table: 9 regions",
            Box::new(|r: &mut Raw| {
                let regs: Vec<_> = (0..9u64)
                    .map(|i| (i << 30, 4096, mem.addr as u64, 0))
                    .collect();
                r.send_ack(SET_MEM_TABLE, &mem_table(&regs), &[fd; 8]);
            }),
        ),
        (
            "mem table: no fd",
            Box::new(|r: &mut Raw| {
                r.send_ack(SET_MEM_TABLE, &mem_table(&[full(&mem)]), &[]);
            }),
        ),
        (
            "mem table: fewer fds than regions",
            Box::new(|r: &mut Raw| {
                let m = mem_table(&[full(&mem), (1 << 40, 4096, 1 << 40, 0)]);
                r.send_ack(SET_MEM_TABLE, &m, &[fd]);
            }),
        ),
        (
            "mem table: a pipe as memory",
            Box::new(|r: &mut Raw| {
                r.send_ack(SET_MEM_TABLE, &mem_table(&[full(&mem)]), &[pr]);
            }),
        ),
        (
            "mem table: zero-sized region",
            Box::new(|r: &mut Raw| {
                r.send_ack(
                    SET_MEM_TABLE,
                    &mem_table(&[(GPA_BASE, 0, mem.addr as u64, 0)]),
                    &[fd],
                );
            }),
        ),
        (
            "mem table: overlapping regions",
            Box::new(|r: &mut Raw| {
                let m = mem_table(&[
                    full(&mem),
                    (GPA_BASE + 4096, 8192, mem.addr as u64 + 4096, 4096),
                ]);
                r.send_ack(SET_MEM_TABLE, &m, &[fd, fd]);
            }),
        ),
        (
            "mem table: region beyond the file",
            Box::new(|r: &mut Raw| {
                r.send_ack(
                    SET_MEM_TABLE,
                    &mem_table(&[(GPA_BASE, 64 << 20, mem.addr as u64, 0)]),
                    &[fd],
                );
            }),
        ),
        (
            "mem table: offset beyond the file",
            Box::new(|r: &mut Raw| {
                r.send_ack(
                    SET_MEM_TABLE,
                    &mem_table(&[(GPA_BASE, 4096, mem.addr as u64, 1 << 40)]),
                    &[fd],
                );
            }),
        ),
        (
            "mem table: address overflow",
            Box::new(|r: &mut Raw| {
                r.send_ack(
                    SET_MEM_TABLE,
                    &mem_table(&[(u64::MAX - 4095, MEM_LEN as u64, u64::MAX - 10, 0)]),
                    &[fd],
                );
            }),
        ),
        (
            "SET_VRING_NUM index 1000",
            Box::new(|r: &mut Raw| {
                r.send_ack(SET_VRING_NUM, &state(1000, 16), &[]);
            }),
        ),
        (
            "SET_VRING_NUM size 0",
            Box::new(|r: &mut Raw| {
                r.send_ack(SET_VRING_NUM, &state(0, 0), &[]);
            }),
        ),
        (
            "SET_VRING_NUM size 3",
            Box::new(|r: &mut Raw| {
                r.send_ack(SET_VRING_NUM, &state(0, 3), &[]);
            }),
        ),
        (
            "SET_VRING_NUM size 65535",
            Box::new(|r: &mut Raw| {
                r.send_ack(SET_VRING_NUM, &state(0, 65535), &[]);
            }),
        ),
        (
            "SET_VRING_NUM size 1<<20",
            Box::new(|r: &mut Raw| {
                r.send_ack(SET_VRING_NUM, &state(0, 1 << 20), &[]);
            }),
        ),
        (
            "SET_VRING_ADDR without memory",
            Box::new(|r: &mut Raw| {
                r.send_ack(SET_VRING_ADDR, &vring_addr(0, 0x1000, 0x2000, 0x3000), &[]);
            }),
        ),
        (
            "SET_VRING_ADDR index 300",
            Box::new(|r: &mut Raw| {
                r.send_ack(
                    SET_VRING_ADDR,
                    &vring_addr(300, 0x1000, 0x2000, 0x3000),
                    &[],
                );
            }),
        ),
        (
            "SET_VRING_ADDR short payload",
            Box::new(|r: &mut Raw| {
                r.send_ack(SET_VRING_ADDR, &[0u8; 12], &[]);
            }),
        ),
        (
            "SET_VRING_BASE index 77",
            Box::new(|r: &mut Raw| {
                r.send_ack(SET_VRING_BASE, &state(77, 0), &[]);
            }),
        ),
        (
            "SET_VRING_KICK index 200",
            Box::new(|r: &mut Raw| {
                r.send_ack(SET_VRING_KICK, &u64b(200), &[fd]);
            }),
        ),
        (
            "SET_VRING_KICK no fd, no invalid flag",
            Box::new(|r: &mut Raw| {
                r.send_ack(SET_VRING_KICK, &u64b(0), &[]);
            }),
        ),
        (
            "SET_VRING_KICK two fds",
            Box::new(|r: &mut Raw| {
                r.send_ack(SET_VRING_KICK, &u64b(0), &[fd, fd]);
            }),
        ),
        (
            "SET_VRING_CALL a pipe",
            Box::new(|r: &mut Raw| {
                r.send_ack(SET_VRING_CALL, &u64b(0), &[pw]);
            }),
        ),
        (
            "SET_VRING_ENABLE index 500",
            Box::new(|r: &mut Raw| {
                r.send_ack(SET_VRING_ENABLE, &state(500, 1), &[]);
            }),
        ),
        (
            "GET_VRING_BASE index 300",
            Box::new(|r: &mut Raw| {
                r.send(GET_VRING_BASE, &state(300, 0), &[]);
            }),
        ),
        (
            "GET_CONFIG 4096 bytes",
            Box::new(|r: &mut Raw| {
                let mut p = 0u32.to_le_bytes().to_vec();
                p.extend_from_slice(&4096u32.to_le_bytes());
                p.extend_from_slice(&0u32.to_le_bytes());
                p.extend_from_slice(&vec![0u8; 4096]);
                r.send(GET_CONFIG, &p, &[]);
            }),
        ),
        (
            "GET_CONFIG offset beyond the struct",
            Box::new(|r: &mut Raw| {
                let mut p = 1000u32.to_le_bytes().to_vec();
                p.extend_from_slice(&8u32.to_le_bytes());
                p.extend_from_slice(&0u32.to_le_bytes());
                p.extend_from_slice(&[0u8; 8]);
                r.send(GET_CONFIG, &p, &[]);
            }),
        ),
        (
            "GET_CONFIG size field lies",
            Box::new(|r: &mut Raw| {
                let mut p = 0u32.to_le_bytes().to_vec();
                p.extend_from_slice(&60000u32.to_le_bytes());
                p.extend_from_slice(&0u32.to_le_bytes());
                r.send(GET_CONFIG, &p, &[]);
            }),
        ),
        (
            "SET_INFLIGHT_FD garbage",
            Box::new(|r: &mut Raw| {
                r.send_ack(SET_INFLIGHT_FD, &[0xffu8; 24], &[pr]);
            }),
        ),
        (
            "ADD_MEM_REG garbage",
            Box::new(|r: &mut Raw| {
                r.send_ack(ADD_MEM_REG, &[0xffu8; 40], &[fd]);
            }),
        ),
    ];
    for (name, f) in &cases {
        // Each case on a fresh connection, after the handshake a frontend would do.
        let mut r = Raw::connect(sock);
        r.send(SET_OWNER, &[], &[]);
        let feats = r.get_u64(GET_FEATURES).unwrap_or(0);
        r.send(
            SET_FEATURES,
            &u64b(feats & (VERSION_1 | PROTOCOL_FEATURES)),
            &[],
        );
        let pf = r.get_u64(GET_PROTOCOL_FEATURES).unwrap_or(0);
        r.send(SET_PROTOCOL_FEATURES, &u64b(pf & PROTO), &[]);
        f(&mut r);
        let answer = r.recv();
        let alive = r.alive();
        let verdict = match &answer {
            Reply::Msg(_, p) if p.len() == 8 && p.iter().any(|b| *b != 0) => "refused",
            Reply::Msg(_, _) => "answered",
            Reply::Nothing => "silent",
            Reply::Closed => "closed",
        };
        eprintln!(
            "malformed {name:40} -> {verdict}, connection {}",
            if alive { "usable" } else { "dropped" }
        );
    }
    // The same ring set up with addresses outside memory, then kicked.
    let mut r = Raw::connect(sock);
    r.send(SET_OWNER, &[], &[]);
    let feats = r.get_u64(GET_FEATURES).unwrap_or(0);
    r.send(
        SET_FEATURES,
        &u64b(feats & (VERSION_1 | PROTOCOL_FEATURES)),
        &[],
    );
    let pf = r.get_u64(GET_PROTOCOL_FEATURES).unwrap_or(0);
    r.send(SET_PROTOCOL_FEATURES, &u64b(pf & PROTO), &[]);
    r.set_ack(SET_MEM_TABLE, &mem_table(&[full(&mem)]), &[fd]);
    r.set_ack(SET_VRING_NUM, &state(0, 16), &[]);
    r.set_ack(SET_VRING_BASE, &state(0, 60000), &[]);
    let bad = r.set_ack(
        SET_VRING_ADDR,
        &vring_addr(0, 0x10, mem.addr as u64 + MEM_LEN as u64 - 8, 1 << 47),
        &[],
    );
    eprintln!("ring outside memory: SET_VRING_ADDR -> {bad:?}");
    let kick = eventfd();
    r.set_ack(SET_VRING_KICK, &u64b(0), &[kick.as_raw_fd()]);
    r.set_ack(SET_VRING_ENABLE, &state(0, 1), &[]);
    let one = 1u64.to_ne_bytes();
    // SAFETY: 8 bytes to our eventfd.
    unsafe { libc::write(kick.as_raw_fd(), one.as_ptr() as *const libc::c_void, 8) };
    std::thread::sleep(Duration::from_millis(300));
    drop(r);
    // SAFETY: closing the pipe we opened.
    unsafe {
        libc::close(pr);
        libc::close(pw);
    }
}

fn hostile_chains(sock: &std::path::Path) {
    chain(sock, "header outside memory", |g| {
        g.header(0, T_IN, 0);
        g.desc(DESC, 0, OUTSIDE, 16, NEXT, 1);
        g.desc(DESC, 1, DATA, 4096, NEXT | WRITE, 2);
        g.desc(DESC, 2, STATUS, 1, WRITE, 0);
        (0, 1)
    });
    chain(sock, "data outside memory", |g| {
        req(g, T_IN, 0, (OUTSIDE, 4096, WRITE))
    });
    chain(sock, "data crossing the end of memory", |g| {
        req(g, T_IN, 0, (GPA_BASE + MEM_LEN as u64 - 100, 4096, WRITE))
    });
    chain(sock, "data at guest address 0", |g| {
        req(g, T_OUT, 0, (0, 4096, 0))
    });
    chain(sock, "data length near 4 GiB", |g| {
        req(g, T_IN, 0, (DATA, u32::MAX - 511, WRITE))
    });
    chain(sock, "loop 0->1->2->1", |g| {
        let h = g.header(0, T_IN, 0);
        g.desc(DESC, 0, h, 16, NEXT, 1);
        g.desc(DESC, 1, DATA, 512, NEXT | WRITE, 2);
        g.desc(DESC, 2, STATUS, 1, WRITE | NEXT, 1);
        (0, 1)
    });
    chain(sock, "header pointing at itself", |g| {
        let h = g.header(0, T_IN, 0);
        g.desc(DESC, 0, h, 16, NEXT, 0);
        (0, 1)
    });
    chain(sock, "chain longer than the queue", |g| {
        let h = g.header(0, T_IN, 0);
        g.desc(DESC, 0, h, 16, NEXT, 1);
        for i in 1..QSIZE {
            g.desc(
                DESC,
                i,
                DATA + 512 * u64::from(i),
                512,
                NEXT | WRITE,
                (i + 1) % QSIZE,
            );
        }
        (0, 1)
    });
    chain(sock, "next index beyond the queue", |g| {
        let h = g.header(0, T_IN, 0);
        g.desc(DESC, 0, h, 16, NEXT, 1);
        g.desc(DESC, 1, DATA, 512, NEXT | WRITE, 200);
        (0, 1)
    });
    chain(sock, "head index beyond the queue", |g| {
        req(g, T_IN, 0, (DATA, 512, WRITE));
        (100, 1)
    });
    chain(sock, "avail.idx 1000 entries ahead", |g| {
        req(g, T_IN, 0, (DATA, 512, WRITE));
        (0, 1000)
    });
    chain(sock, "read into a device-readable buffer", |g| {
        req(g, T_IN, 0, (DATA, 4096, 0))
    });
    chain(sock, "write from a device-writable buffer", |g| {
        req(g, T_OUT, 0, (DATA, 4096, WRITE))
    });
    chain(sock, "header device-writable", |g| {
        let h = g.header(0, T_IN, 0);
        g.desc(DESC, 0, h, 16, NEXT | WRITE, 1);
        g.desc(DESC, 1, DATA, 4096, NEXT | WRITE, 2);
        g.desc(DESC, 2, STATUS, 1, WRITE, 0);
        (0, 1)
    });
    chain(sock, "header 8 bytes", |g| {
        let h = g.header(0, T_IN, 0);
        g.desc(DESC, 0, h, 8, NEXT, 1);
        g.desc(DESC, 1, DATA, 4096, NEXT | WRITE, 2);
        g.desc(DESC, 2, STATUS, 1, WRITE, 0);
        (0, 1)
    });
    chain(sock, "status device-readable", |g| {
        let h = g.header(0, T_IN, 0);
        g.desc(DESC, 0, h, 16, NEXT, 1);
        g.desc(DESC, 1, DATA, 4096, NEXT | WRITE, 2);
        g.desc(DESC, 2, STATUS, 1, 0, 0);
        (0, 1)
    });
    chain(sock, "status 0 bytes", |g| {
        let h = g.header(0, T_IN, 0);
        g.desc(DESC, 0, h, 16, NEXT, 1);
        g.desc(DESC, 1, DATA, 4096, NEXT | WRITE, 2);
        g.desc(DESC, 2, STATUS, 0, WRITE, 0);
        (0, 1)
    });
    chain(sock, "header only", |g| {
        let h = g.header(0, T_IN, 0);
        g.desc(DESC, 0, h, 16, 0, 0);
        (0, 1)
    });
    chain(sock, "read past the capacity", |g| {
        req(g, T_IN, BLOCKS - 1, (DATA, 4096, WRITE))
    });
    chain(sock, "sector u64::MAX", |g| {
        req(g, T_IN, u64::MAX, (DATA, 512, WRITE))
    });
    chain(sock, "length not a multiple of 512", |g| {
        req(g, T_IN, 0, (DATA, 1000, WRITE))
    });
    chain(sock, "oversize read (3 MiB) running past the end", |g| {
        req(g, T_IN, BLOCKS - 2048, (DATA, 3 << 20, WRITE))
    });
    chain(sock, "unknown request type 77", |g| {
        req(g, 77, 0, (DATA, 512, WRITE))
    });
    // A region announced longer than its memfd: data beyond the end of the file. A target
    // that maps the region as announced and touches it dies of SIGBUS.
    // Either answer keeps the target safe: a refused table (what Ferrite does), or an
    // accepted one whose I/O fails. No answer at all (a hang, a dropped connection) is not.
    match Guest::try_setup_with(sock, 64 << 20) {
        Err(Some(code)) => {
            eprintln!("hostile chain data beyond the memfd's end -> memory table refused ({code})");
            assert_ne!(code, 0, "a refusal carries a non-zero code");
        }
        Err(None) => panic!("a memory table longer than its memfd got no answer"),
        Ok(mut g) => {
            let beyond = GPA_BASE + (16 << 20);
            let h = g.header(0, T_OUT, 0);
            g.desc(DESC, 0, h, 16, NEXT, 1);
            g.desc(DESC, 1, beyond, 4096, NEXT, 2);
            g.desc(DESC, 2, STATUS, 1, WRITE, 0);
            g.publish(0, 1);
            let used = g.wait_used(Duration::from_millis(1500));
            let st = g.status(0);
            eprintln!("hostile chain data beyond the memfd's end -> {used:?}, status {st}");
            assert_ne!(
                (used.is_some(), st),
                (true, 0),
                "a write from beyond the memfd succeeded"
            );
        }
    }
    let g = Guest::setup(sock);
    let indirect = g.features & INDIRECT != 0;
    drop(g);
    if !indirect {
        eprintln!("the target does not offer INDIRECT_DESC: indirect cases skipped");
        return;
    }
    let ind = |g: &Guest, table_addr: u64, table_len: u32, flags: u16| {
        g.header(0, T_IN, 0);
        g.desc(DESC, 0, table_addr, table_len, F_INDIRECT | flags, 0);
        (0, 1)
    };
    let fill_table = |g: &Guest| {
        let h = HDR;
        g.desc(INDIRECT_TABLE, 0, h, 16, NEXT, 1);
        g.desc(INDIRECT_TABLE, 1, DATA, 512, NEXT | WRITE, 2);
        g.desc(INDIRECT_TABLE, 2, STATUS, 1, WRITE, 0);
    };
    chain(sock, "indirect table outside memory", |g| {
        ind(g, OUTSIDE, 48, 0)
    });
    chain(sock, "indirect table of 20 bytes", |g| {
        fill_table(g);
        ind(g, INDIRECT_TABLE, 20, 0)
    });
    chain(sock, "indirect table of 0 bytes", |g| {
        ind(g, INDIRECT_TABLE, 0, 0)
    });
    chain(sock, "indirect with NEXT", |g| {
        fill_table(g);
        g.desc(DESC, 1, STATUS, 1, WRITE, 0);
        ind(g, INDIRECT_TABLE, 48, NEXT)
    });
    chain(sock, "nested indirect", |g| {
        fill_table(g);
        g.desc(INDIRECT_TABLE, 1, INDIRECT_TABLE, 48, NEXT | F_INDIRECT, 2);
        ind(g, INDIRECT_TABLE, 48, 0)
    });
    chain(sock, "indirect loop", |g| {
        fill_table(g);
        g.desc(INDIRECT_TABLE, 2, STATUS, 1, WRITE | NEXT, 1);
        ind(g, INDIRECT_TABLE, 48, 0)
    });
    chain(sock, "indirect next beyond the table", |g| {
        fill_table(g);
        g.desc(INDIRECT_TABLE, 1, DATA, 512, NEXT | WRITE, 9);
        ind(g, INDIRECT_TABLE, 48, 0)
    });
    chain(sock, "indirect table of 1 MiB (beyond the queue)", |g| {
        fill_table(g);
        ind(g, INDIRECT_TABLE, 1 << 20, 0)
    });
}
