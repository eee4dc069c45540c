//! Test support: a runtime with the vhost target on it, a malloc bdev, and a vhost-user
//! frontend (the rust-vmm `vhost` crate's) with guest memory in a memfd and a split ring
//! driven by hand, the way a guest driver would.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;
use std::sync::atomic::{fence, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use ferrite_reactor::{CpuMask, PollMode, Runtime, RuntimeConfig, ThreadHandle};
use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserInflight, VhostUserProtocolFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vmm_sys_util::eventfd::EventFd;

pub const WAIT: Duration = Duration::from_secs(30);

pub struct Env {
    pub rt: Arc<Runtime>,
    pub dir: PathBuf,
}

static ENV: OnceLock<Env> = OnceLock::new();

/// One runtime per test binary (one reactor, adaptive mode), the target's settings pointing
/// at a fresh directory.
pub fn env() -> &'static Env {
    ENV.get_or_init(|| {
        let rt = Runtime::start(RuntimeConfig {
            cpumask: CpuMask::from_cores(&[0]),
            mode: PollMode::Adaptive,
            pin: false,
            ..Default::default()
        })
        .expect("start a runtime");
        let dir = std::env::temp_dir().join(format!("ferrite-vhost-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        ferrite_vhost::init(ferrite_vhost::VhostSettings {
            socket_dir: dir.clone(),
            socket_mode: 0o600,
            reactor_cores: rt.reactors().iter().map(|r| r.lcore).collect(),
        });
        Env { rt, dir }
    })
}

/// Runs `f` on `t` and returns its result. (A bounded channel: its send does not allocate on
/// the reactor, which the zero-allocation test counts.)
pub fn on<R: Send + 'static>(t: &ThreadHandle, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::sync_channel(1);
    t.send(move || {
        let _ = tx.send(f());
    })
    .expect("send to a lightweight thread");
    rx.recv_timeout(WAIT).expect("the thread did not answer")
}

impl Env {
    pub fn app<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        on(&self.rt.app_thread(), f)
    }

    pub fn malloc(&self, name: &str, blocks: u64, bs: u32) {
        let n = name.to_string();
        self.app(move || {
            ferrite_malloc::create(&ferrite_malloc::MallocOpts {
                name: Some(n),
                num_blocks: blocks,
                block_size: bs,
                ..Default::default()
            })
            .unwrap()
        });
    }

    pub fn create(&self, ctrlr: &str, bdev: &str, readonly: bool) -> ferrite_vhost::Result<()> {
        let o = ferrite_vhost::CreateOpts {
            ctrlr: ctrlr.into(),
            dev_name: bdev.into(),
            cpumask: None,
            readonly,
            packed_ring: false,
        };
        self.app(move || ferrite_vhost::create(&o))
    }

    pub fn delete(&self, ctrlr: &str) -> ferrite_vhost::Result<()> {
        let (tx, rx) = mpsc::channel();
        let n = ctrlr.to_string();
        self.app(move || {
            ferrite_vhost::delete(&n, move |r| {
                let _ = tx.send(r);
            })
        });
        rx.recv_timeout(WAIT).expect("delete did not finish")
    }
}

/// Guest memory: one memfd region mapped here too.
pub struct GuestMem {
    pub file: File,
    pub ptr: *mut u8,
    pub size: u64,
}

impl GuestMem {
    pub fn new(size: u64) -> Self {
        // SAFETY: memfd_create with a valid name.
        let fd = unsafe { libc::memfd_create(c"guest".as_ptr(), 0) };
        assert!(fd >= 0);
        // SAFETY: fresh owned fd.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(size).unwrap();
        // SAFETY: shared mapping of the whole memfd.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        GuestMem {
            file,
            ptr: ptr as *mut u8,
            size,
        }
    }

    pub fn uaddr(&self, gpa: u64) -> u64 {
        self.ptr as u64 + gpa
    }

    pub fn write(&self, gpa: u64, data: &[u8]) {
        assert!(gpa + data.len() as u64 <= self.size);
        // SAFETY: inside the mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(gpa as usize), data.len())
        }
    }

    pub fn read(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        // SAFETY: inside the mapping.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(gpa as usize), v.as_mut_ptr(), len) };
        v
    }

    pub fn u16(&self, gpa: u64) -> u16 {
        // SAFETY: inside the mapping, aligned by construction.
        unsafe { (self.ptr.add(gpa as usize) as *const u16).read_volatile() }
    }

    pub fn set_u16(&self, gpa: u64, v: u16) {
        // SAFETY: inside the mapping, aligned by construction.
        unsafe { (self.ptr.add(gpa as usize) as *mut u16).write_volatile(v) }
    }
}

impl Drop for GuestMem {
    fn drop(&mut self) {
        // SAFETY: our mapping.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.size as usize) };
    }
}

/// Feature bits the test driver declines (besides the packed ring), for tests of
/// feature-dependent behaviour. Each test binary runs its tests in their own process
/// (nextest) or one after another (`--test-threads 1` for `cargo test`).
pub static CLEAR_FEATURES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub const QSIZE: u16 = 16;
pub const DESC: u64 = 0x1000;
pub const AVAIL: u64 = 0x2000;
pub const USED: u64 = 0x3000;
pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;

/// A split ring driven by hand (the driver side).
pub struct Driver {
    pub fe: Frontend,
    pub mem: GuestMem,
    pub kick: EventFd,
    pub call: EventFd,
    next_desc: u16,
    avail_idx: u16,
    pub used_seen: u16,
    pub features: u64,
    pub region: Option<(VhostUserInflight, File)>,
}

/// What a connecting frontend does about the inflight region.
pub enum Inflight {
    /// Nothing (INFLIGHT_SHMFD not negotiated).
    None,
    /// GET_INFLIGHT_FD then SET_INFLIGHT_FD (QEMU's first start).
    Get,
    /// SET_INFLIGHT_FD with the region kept from before (QEMU after a reconnect).
    Set(VhostUserInflight, File),
}

impl Driver {
    /// Connects, negotiates, sets the memory table and starts queue 0.
    pub fn connect(sock: &std::path::Path) -> Driver {
        Driver::connect_with(sock, GuestMem::new(1 << 20), Inflight::None, 0, 0)
    }

    /// As `connect`, with given guest memory (a reconnect keeps the guest's), inflight
    /// handling as QEMU does it, and the ring's base.
    pub fn connect_with(
        sock: &std::path::Path,
        mem: GuestMem,
        inflight: Inflight,
        base: u16,
        next_desc: u16,
    ) -> Driver {
        let mut fe = Frontend::connect(sock, 1).expect("connect to the controller");
        fe.set_owner().unwrap();
        let offered = fe.get_features().unwrap();
        let pf = fe.get_protocol_features().unwrap();
        assert!(pf.contains(VhostUserProtocolFeatures::INFLIGHT_SHMFD));
        let mut want = VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::REPLY_ACK;
        if !matches!(inflight, Inflight::None) {
            want |= VhostUserProtocolFeatures::INFLIGHT_SHMFD;
        }
        fe.set_protocol_features(want).unwrap();
        // QEMU's order: the inflight region before the features of a start.
        let region = match inflight {
            Inflight::None => None,
            Inflight::Get => {
                let req = VhostUserInflight {
                    num_queues: 1,
                    queue_size: QSIZE,
                    ..Default::default()
                };
                let (info, file) = fe.get_inflight_fd(&req).unwrap();
                assert!(info.mmap_size > 0);
                fe.set_inflight_fd(&info, file.as_raw_fd()).unwrap();
                Some((info, file))
            }
            Inflight::Set(info, file) => {
                fe.set_inflight_fd(&info, file.as_raw_fd()).unwrap();
                Some((info, file))
            }
        };
        let features = offered & !(1u64 << 34) & !CLEAR_FEATURES.load(Ordering::Relaxed);
        fe.set_features(features).unwrap();
        fe.set_mem_table(&[VhostUserMemoryRegionInfo {
            guest_phys_addr: 0,
            memory_size: mem.size,
            userspace_addr: mem.uaddr(0),
            mmap_offset: 0,
            mmap_handle: mem.file.as_raw_fd(),
        }])
        .unwrap();
        let kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let call = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        fe.set_vring_num(0, QSIZE).unwrap();
        fe.set_vring_addr(
            0,
            &VringConfigData {
                queue_max_size: QSIZE,
                queue_size: QSIZE,
                flags: 0,
                desc_table_addr: mem.uaddr(DESC),
                used_ring_addr: mem.uaddr(USED),
                avail_ring_addr: mem.uaddr(AVAIL),
                log_addr: None,
            },
        )
        .unwrap();
        fe.set_vring_base(0, base).unwrap();
        fe.set_vring_call(0, &call).unwrap();
        fe.set_vring_kick(0, &kick).unwrap();
        fe.set_vring_enable(0, true).unwrap();
        Driver {
            fe,
            mem,
            kick,
            call,
            next_desc,
            avail_idx: base,
            used_seen: base,
            features,
            region,
        }
    }

    /// A driver with no connection, to put chains on a ring while no backend serves it.
    pub fn detached(mem: GuestMem, avail_idx: u16, next_desc: u16) -> DetachedRing {
        DetachedRing {
            mem,
            avail_idx,
            next_desc,
        }
    }

    /// Disconnects, keeping the guest memory and the inflight region (as QEMU does when the
    /// backend goes away).
    pub fn disconnect(self) -> (GuestMem, Option<(VhostUserInflight, File)>, u16, u16) {
        let Driver {
            fe,
            mem,
            region,
            avail_idx,
            next_desc,
            ..
        } = self;
        drop(fe);
        (mem, region, avail_idx, next_desc)
    }

    pub fn config(&mut self, size: u32) -> Vec<u8> {
        let (_, payload) = self
            .fe
            .get_config(
                0,
                size,
                VhostUserConfigFlags::WRITABLE,
                &vec![0u8; size as usize],
            )
            .unwrap();
        payload
    }

    /// Puts a chain of (gpa, len, flags) on the ring and kicks. Returns the head.
    pub fn submit(&mut self, bufs: &[(u64, u32, u16)]) -> u16 {
        let head = self.next_desc;
        self.write_chain(bufs);
        let slot = self.avail_idx % QSIZE;
        self.mem.set_u16(AVAIL + 4 + 2 * u64::from(slot), head);
        fence(Ordering::SeqCst);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem.set_u16(AVAIL + 2, self.avail_idx);
        fence(Ordering::SeqCst);
        self.kick.write(1).unwrap();
        head
    }

    fn write_chain(&mut self, bufs: &[(u64, u32, u16)]) {
        for (i, (gpa, len, flags)) in bufs.iter().enumerate() {
            let d = (self.next_desc + i as u16) % QSIZE;
            let last = i + 1 == bufs.len();
            let mut e = [0u8; 16];
            e[0..8].copy_from_slice(&gpa.to_le_bytes());
            e[8..12].copy_from_slice(&len.to_le_bytes());
            let fl = flags | if last { 0 } else { F_NEXT };
            e[12..14].copy_from_slice(&fl.to_le_bytes());
            e[14..16].copy_from_slice(&((d + 1) % QSIZE).to_le_bytes());
            self.mem.write(DESC + 16 * u64::from(d), &e);
        }
        self.next_desc = (self.next_desc + bufs.len() as u16) % QSIZE;
    }

    /// Waits for the next used entry; returns (id, len).
    pub fn wait_used(&mut self) -> (u32, u32) {
        let start = Instant::now();
        loop {
            fence(Ordering::SeqCst);
            if self.mem.u16(USED + 2) != self.used_seen {
                let slot = u64::from(self.used_seen % QSIZE);
                let e = self.mem.read(USED + 4 + 8 * slot, 8);
                self.used_seen = self.used_seen.wrapping_add(1);
                return (
                    u32::from_le_bytes(e[0..4].try_into().unwrap()),
                    u32::from_le_bytes(e[4..8].try_into().unwrap()),
                );
            }
            assert!(start.elapsed() < WAIT, "no used entry within {WAIT:?}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A whole request: header, data buffers, status. Returns (status, used len).
    pub fn request(
        &mut self,
        rtype: u32,
        sector: u64,
        data: &[(u64, u32)],
        device_writes: bool,
    ) -> (u8, u32) {
        let hdr = 0x8000u64;
        let st = 0x9000u64;
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&rtype.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        self.mem.write(hdr, &h);
        self.mem.write(st, &[0xff]);
        let mut bufs = vec![(hdr, 16u32, 0u16)];
        for (g, l) in data {
            bufs.push((*g, *l, if device_writes { F_WRITE } else { 0 }));
        }
        bufs.push((st, 1, F_WRITE));
        let head = self.submit(&bufs);
        let (id, len) = self.wait_used();
        assert_eq!(id, u32::from(head));
        (self.mem.read(st, 1)[0], len)
    }
}

/// The driver side of a ring while no backend is connected.
pub struct DetachedRing {
    mem: GuestMem,
    avail_idx: u16,
    next_desc: u16,
}

impl DetachedRing {
    /// Writes a chain and makes it available (no kick: nobody listens).
    pub fn publish_only(&mut self, bufs: &[(u64, u32, u16)]) -> u16 {
        let head = self.next_desc;
        for (i, (gpa, len, flags)) in bufs.iter().enumerate() {
            let d = (self.next_desc + i as u16) % QSIZE;
            let last = i + 1 == bufs.len();
            let mut e = [0u8; 16];
            e[0..8].copy_from_slice(&gpa.to_le_bytes());
            e[8..12].copy_from_slice(&len.to_le_bytes());
            let fl = flags | if last { 0 } else { F_NEXT };
            e[12..14].copy_from_slice(&fl.to_le_bytes());
            e[14..16].copy_from_slice(&((d + 1) % QSIZE).to_le_bytes());
            self.mem.write(DESC + 16 * u64::from(d), &e);
        }
        self.next_desc = (self.next_desc + bufs.len() as u16) % QSIZE;
        let slot = self.avail_idx % QSIZE;
        self.mem.set_u16(AVAIL + 4 + 2 * u64::from(slot), head);
        fence(Ordering::SeqCst);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem.set_u16(AVAIL + 2, self.avail_idx);
        head
    }

    pub fn into_mem(self) -> GuestMem {
        self.mem
    }
}
