//! A hostile vhost-user frontend: raw vhost-user messages written byte by byte (so nothing
//! validates what we send), file descriptors passed with SCM_RIGHTS, guest memory in a memfd,
//! and a split ring written by hand so descriptor chains can be anything.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

pub const GET_FEATURES: u32 = 1;
pub const SET_FEATURES: u32 = 2;
pub const SET_OWNER: u32 = 3;
pub const SET_MEM_TABLE: u32 = 5;
pub const SET_VRING_NUM: u32 = 8;
pub const SET_VRING_ADDR: u32 = 9;
pub const SET_VRING_BASE: u32 = 10;
pub const GET_VRING_BASE: u32 = 11;
pub const SET_VRING_KICK: u32 = 12;
pub const SET_VRING_CALL: u32 = 13;
pub const GET_PROTOCOL_FEATURES: u32 = 15;
pub const SET_PROTOCOL_FEATURES: u32 = 16;
pub const GET_QUEUE_NUM: u32 = 17;
pub const SET_VRING_ENABLE: u32 = 18;
pub const GET_CONFIG: u32 = 24;
pub const SET_INFLIGHT_FD: u32 = 32;
pub const ADD_MEM_REG: u32 = 37;

const VERSION: u32 = 1;
const F_REPLY: u32 = 4;
const F_NEED_REPLY: u32 = 8;

/// Protocol features we ask for: MQ, REPLY_ACK, CONFIG.
pub const PROTO: u64 = 1 | (1 << 3) | (1 << 9);
/// virtio features we ask for: VERSION_1 | PROTOCOL_FEATURES (+ INDIRECT_DESC if offered).
pub const VERSION_1: u64 = 1 << 32;
pub const PROTOCOL_FEATURES: u64 = 1 << 30;
pub const INDIRECT: u64 = 1 << 28;

/// Guest memory: a memfd mapped here; guest physical addresses start at `GPA_BASE`.
pub struct Mem {
    pub fd: OwnedFd,
    pub addr: usize,
    pub len: usize,
}

pub const GPA_BASE: u64 = 0x10_0000;

impl Mem {
    pub fn new(len: usize) -> Mem {
        let (fd, p) = ferrite_bdev::mmap::shared_memfd(c"hostile", len, false, false).unwrap();
        Mem {
            fd,
            addr: p.as_ptr() as usize,
            len,
        }
    }

    /// Our address of guest address `gpa`.
    pub fn ptr(&self, gpa: u64) -> *mut u8 {
        let off = (gpa - GPA_BASE) as usize;
        assert!(off < self.len);
        (self.addr + off) as *mut u8
    }

    pub fn uaddr(&self, gpa: u64) -> u64 {
        self.ptr(gpa) as u64
    }

    pub fn write(&self, gpa: u64, b: &[u8]) {
        // SAFETY: inside the mapping (ptr checks the start; callers stay inside).
        unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), self.ptr(gpa), b.len()) };
    }

    pub fn read(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        // SAFETY: as above.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr(gpa), v.as_mut_ptr(), len) };
        v
    }

    pub fn u16(&self, gpa: u64) -> u16 {
        // SAFETY: inside the mapping, 2-aligned by the callers' layout.
        unsafe { std::ptr::read_volatile(self.ptr(gpa) as *const u16) }
    }

    pub fn set_u16(&self, gpa: u64, v: u16) {
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        // SAFETY: as above.
        unsafe { std::ptr::write_volatile(self.ptr(gpa) as *mut u16, v) };
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Mem {
    fn drop(&mut self) {
        // SAFETY: the mapping created in `new`.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
    }
}

/// A raw vhost-user connection.
pub struct Raw {
    pub s: UnixStream,
}

/// What came back for a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// A reply with this request code and payload.
    Msg(u32, Vec<u8>),
    /// Nothing within the wait.
    Nothing,
    /// The target closed the connection.
    Closed,
}

impl Raw {
    pub fn connect(sock: &Path) -> Raw {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match UnixStream::connect(sock) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_millis(1500)))
                        .unwrap();
                    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
                    return Raw { s };
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "connect {sock:?}: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// Sends a message with an explicit header size (may lie) and fds. Returns false if the
    /// target had already closed the connection.
    pub fn send_raw(
        &mut self,
        req: u32,
        flags: u32,
        size: u32,
        payload: &[u8],
        fds: &[RawFd],
    ) -> bool {
        let mut buf = Vec::with_capacity(12 + payload.len());
        buf.extend_from_slice(&req.to_le_bytes());
        buf.extend_from_slice(&(flags | VERSION).to_le_bytes());
        buf.extend_from_slice(&size.to_le_bytes());
        buf.extend_from_slice(payload);
        if fds.is_empty() {
            return self.s.write_all(&buf).is_ok();
        }
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        let space = unsafe_cmsg_space(fds.len());
        let mut cbuf = vec![0u8; space];
        // SAFETY: msghdr is plain data; every pointer set below outlives the sendmsg call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points at a buffer of CMSG_SPACE(len) bytes.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN((fds.len() * 4) as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(c) as *mut RawFd,
                fds.len(),
            );
        }
        // SAFETY: a valid socket and message.
        let n = unsafe { libc::sendmsg(self.s.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        n == buf.len() as isize
    }

    /// Sends a well-formed message (size = payload length).
    pub fn send(&mut self, req: u32, payload: &[u8], fds: &[RawFd]) -> bool {
        self.send_raw(req, 0, payload.len() as u32, payload, fds)
    }

    /// Sends with NEED_REPLY set.
    pub fn send_ack(&mut self, req: u32, payload: &[u8], fds: &[RawFd]) -> bool {
        self.send_raw(req, F_NEED_REPLY, payload.len() as u32, payload, fds)
    }

    /// How long [`Raw::recv`] waits before calling the target silent (1.5 s from `connect`:
    /// short, for the malformed messages a target may rightly leave unanswered).
    pub fn set_wait(&self, limit: Duration) {
        self.s.set_read_timeout(Some(limit)).unwrap();
    }

    /// Reads one reply (header + payload) or notes silence/closure.
    pub fn recv(&mut self) -> Reply {
        let mut h = [0u8; 12];
        match self.s.read(&mut h[..1]) {
            Ok(0) => return Reply::Closed,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return Reply::Nothing
            }
            Err(_) => return Reply::Closed,
        }
        if self.s.read_exact(&mut h[1..]).is_err() {
            return Reply::Closed;
        }
        let req = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let flags = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let size = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
        assert!(
            flags & F_REPLY != 0,
            "a message from the target without the reply flag"
        );
        assert!(size <= 4096, "a reply of {size} bytes");
        let mut p = vec![0u8; size];
        if self.s.read_exact(&mut p).is_err() {
            return Reply::Closed;
        }
        Reply::Msg(req, p)
    }

    /// GET_* returning a u64.
    pub fn get_u64(&mut self, req: u32) -> Option<u64> {
        if !self.send(req, &[], &[]) {
            return None;
        }
        match self.recv() {
            Reply::Msg(r, p) if r == req && p.len() == 8 => {
                Some(u64::from_le_bytes(p.try_into().ok()?))
            }
            _ => None,
        }
    }

    /// A SET with NEED_REPLY: Some(0) on success, Some(err) on a refusal, None if no answer.
    pub fn set_ack(&mut self, req: u32, payload: &[u8], fds: &[RawFd]) -> Option<u64> {
        if !self.send_ack(req, payload, fds) {
            return None;
        }
        match self.recv() {
            Reply::Msg(r, p) if r == req && p.len() == 8 => {
                Some(u64::from_le_bytes(p.try_into().ok()?))
            }
            _ => None,
        }
    }

    /// True if the connection still answers GET_FEATURES.
    pub fn alive(&mut self) -> bool {
        self.get_u64(GET_FEATURES).is_some()
    }
}

fn unsafe_cmsg_space(n: usize) -> usize {
    // SAFETY: CMSG_SPACE is a pure computation.
    unsafe { libc::CMSG_SPACE((n * 4) as u32) as usize }
}

pub fn u64b(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

pub fn state(index: u32, num: u32) -> Vec<u8> {
    let mut v = index.to_le_bytes().to_vec();
    v.extend_from_slice(&num.to_le_bytes());
    v
}

pub fn vring_addr(index: u32, desc: u64, used: u64, avail: u64) -> Vec<u8> {
    let mut v = index.to_le_bytes().to_vec();
    v.extend_from_slice(&0u32.to_le_bytes());
    for x in [desc, used, avail, 0u64] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

/// A memory table payload: (gpa, size, uaddr, mmap_offset) per region.
pub fn mem_table(regions: &[(u64, u64, u64, u64)]) -> Vec<u8> {
    let mut v = (regions.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(&0u32.to_le_bytes());
    for r in regions {
        for x in [r.0, r.1, r.2, r.3] {
            v.extend_from_slice(&x.to_le_bytes());
        }
    }
    v
}

pub fn eventfd() -> OwnedFd {
    // SAFETY: plain eventfd creation, checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: just created, owned here.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Queue size of the hand-driven ring.
pub const QSIZE: u16 = 16;
pub const DESC: u64 = GPA_BASE;
pub const AVAIL: u64 = GPA_BASE + 0x1000;
pub const USED: u64 = GPA_BASE + 0x2000;
pub const HDR: u64 = GPA_BASE + 0x3000;
pub const STATUS: u64 = GPA_BASE + 0x3800;
pub const DATA: u64 = GPA_BASE + 0x10000;
pub const INDIRECT_TABLE: u64 = GPA_BASE + 0x8000;
pub const MEM_LEN: usize = 4 << 20;

pub const NEXT: u16 = 1;
pub const WRITE: u16 = 2;
pub const F_INDIRECT: u16 = 4;

/// A frontend that set up queue 0 properly over raw messages; what it puts in the ring is
/// up to the test.
pub struct Guest {
    pub raw: Raw,
    pub mem: Mem,
    pub kick: OwnedFd,
    pub call: OwnedFd,
    pub features: u64,
    avail_idx: u16,
    used_seen: u16,
}

impl Guest {
    /// Connects and sets up one queue; panics if a well-formed setup is refused.
    pub fn setup(sock: &Path) -> Guest {
        Guest::setup_with(sock, MEM_LEN as u64)
    }

    /// Like `setup`, announcing a region of `region_len` bytes over the `MEM_LEN`-byte memfd
    /// (a region longer than its file: touching the part beyond the file raises SIGBUS in
    /// whoever maps it).
    pub fn setup_with(sock: &Path, region_len: u64) -> Guest {
        match Guest::try_setup_with(sock, region_len) {
            Ok(g) => g,
            Err(ack) => panic!("SET_MEM_TABLE refused: {ack:?}"),
        }
    }

    /// Like `setup_with`; `Err` if the target does not accept the memory table, with its
    /// answer: `Some(code)` for a reply (non-zero: refused), `None` for no reply in time or a
    /// closed connection.
    pub fn try_setup_with(sock: &Path, region_len: u64) -> Result<Guest, Option<u64>> {
        let mut raw = Raw::connect(sock);
        // Every message here is well formed and answered: wait as long as a loaded machine
        // may need, rather than take a slow answer for none.
        raw.set_wait(Duration::from_secs(30));
        let mem = Mem::new(MEM_LEN);
        raw.send(SET_OWNER, &[], &[]);
        let offered = raw.get_u64(GET_FEATURES).expect("GET_FEATURES");
        let features = offered & (VERSION_1 | PROTOCOL_FEATURES | INDIRECT);
        raw.send(SET_FEATURES, &u64b(features), &[]);
        let pf = raw
            .get_u64(GET_PROTOCOL_FEATURES)
            .expect("GET_PROTOCOL_FEATURES");
        raw.send(SET_PROTOCOL_FEATURES, &u64b(pf & PROTO), &[]);
        let fd = mem.fd.as_raw_fd();
        let t = mem_table(&[(GPA_BASE, region_len, mem.addr as u64, 0)]);
        let ack = raw.set_ack(SET_MEM_TABLE, &t, &[fd]);
        if ack != Some(0) {
            return Err(ack);
        }
        assert_eq!(
            raw.set_ack(SET_VRING_NUM, &state(0, u32::from(QSIZE)), &[]),
            Some(0)
        );
        assert_eq!(raw.set_ack(SET_VRING_BASE, &state(0, 0), &[]), Some(0));
        let a = vring_addr(0, mem.uaddr(DESC), mem.uaddr(USED), mem.uaddr(AVAIL));
        assert_eq!(
            raw.set_ack(SET_VRING_ADDR, &a, &[]),
            Some(0),
            "SET_VRING_ADDR"
        );
        let kick = eventfd();
        let call = eventfd();
        assert_eq!(
            raw.set_ack(SET_VRING_CALL, &u64b(0), &[call.as_raw_fd()]),
            Some(0)
        );
        assert_eq!(
            raw.set_ack(SET_VRING_KICK, &u64b(0), &[kick.as_raw_fd()]),
            Some(0)
        );
        assert_eq!(raw.set_ack(SET_VRING_ENABLE, &state(0, 1), &[]), Some(0));
        Ok(Guest {
            raw,
            mem,
            kick,
            call,
            features,
            avail_idx: 0,
            used_seen: 0,
        })
    }

    pub fn desc(&self, table: u64, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut b = addr.to_le_bytes().to_vec();
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(&flags.to_le_bytes());
        b.extend_from_slice(&next.to_le_bytes());
        self.mem.write(table + 16 * u64::from(i), &b);
    }

    /// A request header at HDR + 16 * slot.
    pub fn header(&self, slot: u64, rtype: u32, sector: u64) -> u64 {
        let mut b = rtype.to_le_bytes().to_vec();
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&sector.to_le_bytes());
        self.mem.write(HDR + 16 * slot, &b);
        self.mem.write(STATUS + slot, &[0xff]);
        HDR + 16 * slot
    }

    /// Publishes head `head` (and bumps avail.idx by `advance`, normally 1) and kicks.
    pub fn publish(&mut self, head: u16, advance: u16) {
        let slot = u64::from(self.avail_idx % QSIZE);
        self.mem.set_u16(AVAIL + 4 + 2 * slot, head);
        self.avail_idx = self.avail_idx.wrapping_add(advance);
        self.mem.set_u16(AVAIL + 2, self.avail_idx);
        let one = 1u64.to_ne_bytes();
        // SAFETY: 8 bytes to our eventfd.
        unsafe {
            libc::write(
                self.kick.as_raw_fd(),
                one.as_ptr() as *const libc::c_void,
                8,
            )
        };
    }

    /// Waits for the next used entry.
    pub fn wait_used(&mut self, limit: Duration) -> Option<(u32, u32)> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.mem.u16(USED + 2) != self.used_seen {
                let slot = u64::from(self.used_seen % QSIZE);
                let e = self.mem.read(USED + 4 + 8 * slot, 8);
                self.used_seen = self.used_seen.wrapping_add(1);
                return Some((
                    u32::from_le_bytes([e[0], e[1], e[2], e[3]]),
                    u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        None
    }

    pub fn status(&self, slot: u64) -> u8 {
        self.mem.read(STATUS + slot, 1)[0]
    }
}
