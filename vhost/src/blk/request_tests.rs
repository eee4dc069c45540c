//! Unit tests of virtio-blk request parsing over segment lists, on a real memfd mapping.
#![allow(clippy::unwrap_used)] // tests

use std::fs::File;
use std::os::fd::FromRawFd;

use super::request::*;
use crate::error::{ErrorKind, VhostError};
use crate::memory::{MemTable, RegionDesc};

#[derive(Clone, Copy)]
struct S(u64, u32, bool);

impl SegView for S {
    fn addr(&self) -> u64 {
        self.0
    }
    fn len(&self) -> u32 {
        self.1
    }
    fn writable(&self) -> bool {
        self.2
    }
}

const MEM: u64 = 0x10000;

fn mem() -> MemTable {
    // SAFETY: memfd_create with a valid name; the fd is owned by the File.
    let fd = unsafe { libc::memfd_create(c"req-test".as_ptr(), 0) };
    assert!(fd >= 0);
    // SAFETY: fresh owned fd.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(MEM).unwrap();
    MemTable::map(
        &[RegionDesc {
            gpa: 0,
            size: MEM,
            uaddr: 0,
            mmap_offset: 0,
        }],
        vec![f],
    )
    .unwrap()
}

fn put_header(m: &MemTable, gpa: u64, rtype: u32, sector: u64) {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&rtype.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    let p = m.host_ptr(gpa, 16).unwrap();
    // SAFETY: 16 mapped bytes.
    unsafe { std::ptr::copy_nonoverlapping(h.as_ptr(), p, 16) };
}

fn run(m: &MemTable, segs: &[S], ro: bool) -> Result<Parsed, VhostError> {
    let mut p = Parsed::default();
    parse(segs, m, ro, &mut p).map(|()| p)
}

#[test]
fn every_request_type() {
    let m = mem();
    let status = S(0x3000, 1, true);
    for (t, kind, data_writable) in [
        (req_type::IN, Kind::Read, true),
        (req_type::OUT, Kind::Write, false),
        (req_type::GET_ID, Kind::GetId, true),
    ] {
        put_header(&m, 0x1000, t, 8);
        let p = run(
            &m,
            &[
                S(0x1000, 16, false),
                S(0x2000, 512, data_writable),
                S(0x2200, 512, data_writable),
                status,
            ],
            false,
        )
        .unwrap();
        assert_eq!(p.kind, kind);
        assert_eq!(p.sector, 8);
        assert_eq!(p.status_gpa, 0x3000);
        assert_eq!(p.nsegs, 2);
        assert_eq!(p.data_len, 1024);
    }
    put_header(&m, 0x1000, req_type::FLUSH, 0);
    let p = run(&m, &[S(0x1000, 16, false), status], false).unwrap();
    assert_eq!((p.kind, p.nsegs), (Kind::Flush, 0));
    for (t, kind) in [
        (req_type::DISCARD, Kind::Discard),
        (req_type::WRITE_ZEROES, Kind::WriteZeroes),
    ] {
        put_header(&m, 0x1000, t, 0);
        let range = m.host_ptr(0x2000, 16).unwrap();
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&64u64.to_le_bytes());
        b[8..12].copy_from_slice(&16u32.to_le_bytes());
        // SAFETY: 16 mapped bytes.
        unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), range, 16) };
        let p = run(
            &m,
            &[S(0x1000, 16, false), S(0x2000, 16, false), status],
            false,
        )
        .unwrap();
        assert_eq!(p.kind, kind);
        let r = read_range(&p, &m).unwrap();
        assert_eq!((r.sector, r.num_sectors, r.flags), (64, 16, 0));
    }
}

#[test]
fn header_sharing_a_descriptor_and_status_sharing_data() {
    let m = mem();
    put_header(&m, 0x1000, req_type::OUT, 3);
    // header + 512 bytes of data in one readable descriptor; status alone
    let p = run(&m, &[S(0x1000, 16 + 512, false), S(0x3000, 1, true)], false).unwrap();
    assert_eq!(
        p.data(),
        &[DataSeg {
            gpa: 0x1010,
            len: 512
        }]
    );
    // read: data and status in one writable descriptor
    put_header(&m, 0x1000, req_type::IN, 0);
    let p = run(&m, &[S(0x1000, 16, false), S(0x2000, 513, true)], false).unwrap();
    assert_eq!(
        p.data(),
        &[DataSeg {
            gpa: 0x2000,
            len: 512
        }]
    );
    assert_eq!(p.status_gpa, 0x2200);
    // header split over two descriptors
    let p = run(
        &m,
        &[
            S(0x1000, 8, false),
            S(0x1008, 8, false),
            S(0x2000, 513, true),
        ],
        false,
    )
    .unwrap();
    assert_eq!(p.kind, Kind::Read);
}

fn fail_status(r: Result<Parsed, VhostError>) -> (u8, String) {
    match r {
        Err(e) => match answer_status(&e) {
            Some(st) => (st, e.message().to_string()),
            None => panic!("expected an answerable failed request, got {e:?}"),
        },
        Ok(p) => panic!("expected a failed request, got {p:?}"),
    }
}

fn unanswerable(r: Result<Parsed, VhostError>) -> bool {
    matches!(r, Err(e) if e.kind() == ErrorKind::Unanswerable && answer_status(&e).is_none())
}

#[test]
fn malformed_requests_fail_with_ioerr_or_unsupp() {
    let m = mem();
    let st = S(0x3000, 1, true);
    put_header(&m, 0x1000, 99, 0);
    assert_eq!(
        fail_status(run(&m, &[S(0x1000, 16, false), st], false)).0,
        status::UNSUPP
    );
    // short header
    let (s, why) = fail_status(run(&m, &[S(0x1000, 8, false), st], false));
    assert_eq!(s, status::IOERR);
    assert!(why.contains("header"), "{why}");
    // writable header
    put_header(&m, 0x1000, req_type::IN, 0);
    assert_eq!(
        fail_status(run(
            &m,
            &[S(0x1000, 16, true), S(0x2000, 512, true), st],
            false
        ))
        .0,
        status::IOERR
    );
    // header outside guest memory
    assert_eq!(
        fail_status(run(&m, &[S(MEM - 8, 16, false), st], false)).0,
        status::IOERR
    );
    // read into a device-readable buffer
    let (_, why) = fail_status(run(
        &m,
        &[S(0x1000, 16, false), S(0x2000, 512, false), st],
        false,
    ));
    assert!(why.contains("direction"), "{why}");
    // write from a device-writable buffer
    put_header(&m, 0x1000, req_type::OUT, 0);
    assert_eq!(
        fail_status(run(
            &m,
            &[S(0x1000, 16, false), S(0x2000, 512, true), st],
            false
        ))
        .0,
        status::IOERR
    );
    // length not a multiple of 512, and no data
    assert_eq!(
        fail_status(run(
            &m,
            &[S(0x1000, 16, false), S(0x2000, 100, false), st],
            false
        ))
        .0,
        status::IOERR
    );
    assert_eq!(
        fail_status(run(&m, &[S(0x1000, 16, false), st], false)).0,
        status::IOERR
    );
    // discard with two ranges
    put_header(&m, 0x1000, req_type::DISCARD, 0);
    assert_eq!(
        fail_status(run(
            &m,
            &[S(0x1000, 16, false), S(0x2000, 32, false), st],
            false
        ))
        .0,
        status::IOERR
    );
    // too many segments
    put_header(&m, 0x1000, req_type::OUT, 0);
    let mut many = vec![S(0x1000, 16, false)];
    many.extend((0..MAX_DATA_SEGS + 1).map(|i| S(0x4000 + 512 * i as u64, 512, false)));
    many.push(st);
    assert_eq!(fail_status(run(&m, &many, false)).0, status::IOERR);
}

#[test]
fn unanswerable_requests_break_the_queue() {
    let m = mem();
    put_header(&m, 0x1000, req_type::IN, 0);
    assert!(unanswerable(run(&m, &[], false)));
    // last descriptor read-only: no status byte
    assert!(unanswerable(run(
        &m,
        &[S(0x1000, 16, false), S(0x2000, 512, false)],
        false
    )));
    // status byte outside guest memory
    assert!(unanswerable(run(
        &m,
        &[S(0x1000, 16, false), S(MEM, 1, true)],
        false
    )));
}

#[test]
fn readonly_fails_writes_not_reads() {
    let m = mem();
    let st = S(0x3000, 1, true);
    put_header(&m, 0x1000, req_type::OUT, 0);
    let (s, why) = fail_status(run(
        &m,
        &[S(0x1000, 16, false), S(0x2000, 512, false), st],
        true,
    ));
    assert_eq!(s, status::IOERR);
    assert!(why.contains("read-only"), "{why}");
    put_header(&m, 0x1000, req_type::WRITE_ZEROES, 0);
    assert_eq!(
        fail_status(run(
            &m,
            &[S(0x1000, 16, false), S(0x2000, 16, false), st],
            true
        ))
        .0,
        status::IOERR
    );
    put_header(&m, 0x1000, req_type::IN, 0);
    assert!(run(&m, &[S(0x1000, 16, false), S(0x2000, 512, true), st], true).is_ok());
    put_header(&m, 0x1000, req_type::FLUSH, 0);
    assert!(run(&m, &[S(0x1000, 16, false), st], true).is_ok());
}

/// The one-step parse of the common three-segment read/write accepts only what the general
/// parse accepts, and fills the result identically, over many shapes near the common one
/// (lengths, directions, types, read-only, addresses at the edge of memory).
#[test]
fn common_path_agrees_with_general_path() {
    let m = mem();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut common = 0;
    for _ in 0..20_000 {
        let t = [
            req_type::IN,
            req_type::OUT,
            req_type::FLUSH,
            req_type::GET_ID,
            99,
        ][rnd(5) as usize];
        put_header(&m, 0x1000, t, rnd(1 << 20));
        let hlen = [16, 16, 16, 8, 17][rnd(5) as usize];
        let haddr = [0x1000, 0x1000, MEM - 8][rnd(3) as usize];
        let dlen = [512, 4096, 4096, 0x800, 100, 0][rnd(6) as usize];
        let daddr = [0x2000, 0x2000, MEM - 512][rnd(3) as usize];
        let slen = [1, 1, 1, 2][rnd(4) as usize];
        let saddr = [0x3000, 0x3000, MEM][rnd(3) as usize];
        let segs = [
            S(haddr, hlen, rnd(8) == 0),
            S(daddr, dlen, rnd(2) == 0),
            S(saddr, slen, rnd(8) != 0),
        ];
        let ro = rnd(4) == 0;
        let mut fast = Parsed::default();
        let mut slow = Parsed::default();
        let general = parse_general(&segs, &m, ro, &mut slow);
        if parse_common(&segs, &m, ro, &mut fast) {
            common += 1;
            assert_eq!(general, Ok(()), "{t} {hlen} {dlen} {slen}");
            assert_eq!(fast.kind, slow.kind);
            assert_eq!(fast.sector, slow.sector);
            assert_eq!(fast.status_gpa, slow.status_gpa);
            assert_eq!(fast.status_host, slow.status_host);
            assert_eq!(fast.data(), slow.data());
            assert_eq!(fast.data_len, slow.data_len);
            let d = fast.data()[0];
            let want = m
                .host_ptr(d.gpa, u64::from(d.len))
                .unwrap_or(std::ptr::null_mut());
            assert_eq!(fast.data_host, want, "the one-step parse's data address");
        }
    }
    assert!(common > 100, "the common path was taken {common} times");
}
