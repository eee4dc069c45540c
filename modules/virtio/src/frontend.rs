//! The vhost-user handshake (rust-vmm `vhost`'s `Frontend` builds and checks the messages):
//! owner, virtio and protocol features, the virtio-blk configuration, the memory table, and
//! every virtqueue. Runs on a non-reactor thread with socket timeouts, so a slow or silent
//! server never blocks a reactor.

use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use ferrite_bdev::{BdevError, ErrorKind, Result};
use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserHeaderFlag};
use vhost::vhost_user::{
    Frontend, VhostUserFrontend, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::mem::SharedMem;
use crate::queue::{Queue, QueueLayout};

/// virtio-blk feature bits we may use.
pub mod feat {
    /// Maximum segment size in config.
    pub const SIZE_MAX: u64 = 1 << 1;
    /// Maximum segment count in config.
    pub const SEG_MAX: u64 = 1 << 2;
    /// Read-only device.
    pub const RO: u64 = 1 << 5;
    /// Block size in config.
    pub const BLK_SIZE: u64 = 1 << 6;
    /// Flush command.
    pub const FLUSH: u64 = 1 << 9;
    /// Writeback mode in config (CONFIG_WCE).
    pub const CONFIG_WCE: u64 = 1 << 11;
    /// Multiqueue.
    pub const MQ: u64 = 1 << 12;
    /// Discard command.
    pub const DISCARD: u64 = 1 << 13;
    /// Write-zeroes command.
    pub const WRITE_ZEROES: u64 = 1 << 14;
    /// EVENT_IDX notification suppression.
    pub const EVENT_IDX: u64 = 1 << 29;
    /// vhost-user protocol features.
    pub const PROTOCOL_FEATURES: u64 = 1 << 30;
    /// Virtio 1.x.
    pub const VERSION_1: u64 = 1 << 32;
    /// Everything we ask for.
    pub const WANTED: u64 = SIZE_MAX
        | SEG_MAX
        | RO
        | BLK_SIZE
        | FLUSH
        | CONFIG_WCE
        | MQ
        | DISCARD
        | WRITE_ZEROES
        | EVENT_IDX
        | VERSION_1;
}

/// Bytes of `struct virtio_blk_config` we read: up to and including the write-zeroes fields
/// (60 bytes). Servers refuse GET_CONFIG longer than their own structure (qemu-storage-daemon
/// 7.2 does), so we never ask for more; an older server that lacks discard gets asked for the
/// first 36 bytes (through `num_queues`).
pub const CONFIG_LEN: u32 = 60;
const CONFIG_LEN_OLD: u32 = 36;

/// The virtio-blk configuration fields we use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlkConfig {
    /// Capacity in 512-byte sectors.
    pub capacity: u64,
    /// Logical block size (BLK_SIZE).
    pub blk_size: u32,
    /// Queues the device offers (MQ).
    pub num_queues: u16,
    /// Largest discard, in sectors.
    pub max_discard_sectors: u32,
    /// Most discard segments per request.
    pub max_discard_seg: u32,
    /// Largest write-zeroes, in sectors.
    pub max_write_zeroes_sectors: u32,
    /// Most write-zeroes segments per request.
    pub max_write_zeroes_seg: u32,
}

impl BlkConfig {
    /// Parses the little-endian configuration bytes (at least 36).
    pub fn parse(b: &[u8]) -> BlkConfig {
        let u32_at = |o: usize| {
            b.get(o..o + 4)
                .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
                .unwrap_or(0)
        };
        let capacity = b
            .get(0..8)
            .map(|s| {
                let mut a = [0u8; 8];
                a.copy_from_slice(s);
                u64::from_le_bytes(a)
            })
            .unwrap_or(0);
        BlkConfig {
            capacity,
            blk_size: u32_at(20),
            num_queues: b
                .get(34..36)
                .map(|s| u16::from_le_bytes([s[0], s[1]]))
                .unwrap_or(0),
            max_discard_sectors: u32_at(36),
            max_discard_seg: u32_at(40),
            max_write_zeroes_sectors: u32_at(48),
            max_write_zeroes_seg: u32_at(52),
        }
    }
}

/// What the handshake produced.
pub struct Session {
    /// The connection (kept by the controller's monitor thread).
    pub frontend: Frontend,
    /// Negotiated virtio features.
    pub features: u64,
    /// Negotiated protocol features.
    pub protocol: u64,
    /// The configuration read.
    pub config: BlkConfig,
    /// Shared memory holding every queue.
    pub mem: SharedMem,
    /// The queues set up, in index order.
    pub queues: Vec<Queue>,
    /// Their call eventfds (to wake a channel's reactor on teardown).
    pub calls: Vec<Arc<EventFd>>,
    /// DMA buffer pool regions shared with the server (start, end): I/O on buffers inside
    /// them goes without a copy.
    pub zero_copy: Vec<(usize, usize)>,
}

fn verr(what: &str, name: &str, path: &str, e: impl std::fmt::Display) -> BdevError {
    BdevError::new(
        ErrorKind::Io,
        format!("virtio-user '{name}' ({path}): {what} failed: {e}"),
    )
}

/// Connects to `path` and sets up up to `vq_count` queues of `vq_size` descriptors.
pub fn connect(name: &str, path: &str, vq_count: u16, vq_size: u16) -> Result<Session> {
    let e = |what: &str, err: &dyn std::fmt::Display| verr(what, name, path, err);
    let sock = UnixStream::connect(path).map_err(|x| e("connect", &x))?;
    let t = Some(Duration::from_secs(5));
    sock.set_read_timeout(t).map_err(|x| e("set timeout", &x))?;
    sock.set_write_timeout(t)
        .map_err(|x| e("set timeout", &x))?;
    let mut fe = Frontend::from_stream(sock, u64::from(vq_count));
    fe.set_owner().map_err(|x| e("SET_OWNER", &x))?;
    let offered = fe.get_features().map_err(|x| e("GET_FEATURES", &x))?;
    if offered & feat::PROTOCOL_FEATURES == 0 {
        return Err(e(
            "feature negotiation",
            &"the server does not offer VHOST_USER_F_PROTOCOL_FEATURES",
        ));
    }
    if offered & feat::VERSION_1 == 0 {
        return Err(e(
            "feature negotiation",
            &"the server does not offer VIRTIO_F_VERSION_1",
        ));
    }
    let features = offered & feat::WANTED;
    let pwanted = VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::REPLY_ACK;
    let poffered = fe
        .get_protocol_features()
        .map_err(|x| e("GET_PROTOCOL_FEATURES", &x))?;
    let protocol = poffered & pwanted;
    if !protocol.contains(VhostUserProtocolFeatures::CONFIG) {
        return Err(e(
            "protocol negotiation",
            &"the server does not offer VHOST_USER_PROTOCOL_F_CONFIG",
        ));
    }
    fe.set_protocol_features(protocol)
        .map_err(|x| e("SET_PROTOCOL_FEATURES", &x))?;
    if protocol.contains(VhostUserProtocolFeatures::REPLY_ACK) {
        // Every SET waits for the server's verdict: a refused memory table or ring fails the
        // attach instead of leaving a device that never completes anything.
        fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    }
    let server_queues = if protocol.contains(VhostUserProtocolFeatures::MQ) {
        fe.get_queue_num().map_err(|x| e("GET_QUEUE_NUM", &x))?
    } else {
        1
    };
    fe.set_features(features | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits())
        .map_err(|x| e("SET_FEATURES", &x))?;
    let config = read_config(&mut fe).map_err(|x| e("GET_CONFIG", &x))?;
    let dev_queues = if features & feat::MQ != 0 {
        u64::from(config.num_queues.max(1))
    } else {
        1
    };
    let nq = u64::from(vq_count)
        .min(server_queues)
        .min(dev_queues)
        .max(1) as u16;
    if nq < vq_count {
        tracing::info!(
            "virtio-user '{name}': the server offers {} queue(s); using {nq} of the {vq_count} asked",
            server_queues.min(dev_queues)
        );
    }
    let ql = QueueLayout::new(vq_size);
    let mem = SharedMem::new(
        &format!("ferrite-virtio-{name}"),
        ql.total * usize::from(nq),
    )?;
    let region = |addr: usize, len: usize, fd| VhostUserMemoryRegionInfo {
        guest_phys_addr: addr as u64,
        memory_size: len as u64,
        userspace_addr: addr as u64,
        mmap_offset: 0,
        mmap_handle: fd,
    };
    let mut regions = vec![region(mem.addr(), mem.len(), mem.raw_fd())];
    // The bdev layer's DMA buffer pool, when it is memfd-backed: buffers from it need no copy.
    let pool = ferrite_bdev::buf::shared_regions().unwrap_or_default();
    let zero_copy = pool.iter().map(|r| (r.addr, r.addr + r.len)).collect();
    regions.extend(pool.iter().map(|r| region(r.addr, r.len, r.fd)));
    // Sorted by address: some servers (vm-memory based) refuse an unsorted table.
    regions.sort_by_key(|r| r.guest_phys_addr);
    fe.set_mem_table(&regions)
        .map_err(|x| e("SET_MEM_TABLE", &x))?;
    let event_idx = features & feat::EVENT_IDX != 0;
    let mut queues = Vec::with_capacity(usize::from(nq));
    let mut calls = Vec::with_capacity(usize::from(nq));
    for q in 0..nq {
        let qi = usize::from(q);
        let kick = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(|x| e("eventfd", &x))?);
        let call = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(|x| e("eventfd", &x))?);
        let base = mem.addr() + qi * ql.total;
        // SAFETY: queue q's range lies inside `mem` (sized nq × ql.total), which the session
        // (and then the controller) keeps as long as the queue.
        let queue = unsafe { Queue::new(q, base, vq_size, event_idx, kick.clone(), call.clone()) };
        let ring = &queue.ring;
        fe.set_vring_num(qi, vq_size)
            .map_err(|x| e("SET_VRING_NUM", &x))?;
        fe.set_vring_base(qi, 0)
            .map_err(|x| e("SET_VRING_BASE", &x))?;
        let addr = VringConfigData {
            queue_max_size: vq_size,
            queue_size: vq_size,
            flags: 0,
            desc_table_addr: ring.desc_addr(),
            used_ring_addr: ring.used_addr(),
            avail_ring_addr: ring.avail_addr(),
            log_addr: None,
        };
        fe.set_vring_addr(qi, &addr)
            .map_err(|x| e("SET_VRING_ADDR", &x))?;
        fe.set_vring_call(qi, &call)
            .map_err(|x| e("SET_VRING_CALL", &x))?;
        fe.set_vring_kick(qi, &kick)
            .map_err(|x| e("SET_VRING_KICK", &x))?;
        fe.set_vring_enable(qi, true)
            .map_err(|x| e("SET_VRING_ENABLE", &x))?;
        queues.push(queue);
        calls.push(call);
    }
    Ok(Session {
        frontend: fe,
        features,
        protocol: protocol.bits(),
        config,
        mem,
        queues,
        calls,
        zero_copy,
    })
}

fn read_config(fe: &mut Frontend) -> vhost::Result<BlkConfig> {
    let buf = [0u8; CONFIG_LEN as usize];
    match fe.get_config(0, CONFIG_LEN, VhostUserConfigFlags::empty(), &buf) {
        Ok((_, payload)) => Ok(BlkConfig::parse(&payload)),
        Err(_) => {
            let buf = [0u8; CONFIG_LEN_OLD as usize];
            let (_, payload) =
                fe.get_config(0, CONFIG_LEN_OLD, VhostUserConfigFlags::empty(), &buf)?;
            Ok(BlkConfig::parse(&payload))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    #[test]
    fn config_fields_at_their_offsets() {
        let mut b = [0u8; CONFIG_LEN as usize];
        b[0..8].copy_from_slice(&(1u64 << 21).to_le_bytes());
        b[20..24].copy_from_slice(&4096u32.to_le_bytes());
        b[34..36].copy_from_slice(&4u16.to_le_bytes());
        b[36..40].copy_from_slice(&65536u32.to_le_bytes());
        b[40..44].copy_from_slice(&1u32.to_le_bytes());
        b[48..52].copy_from_slice(&8192u32.to_le_bytes());
        b[52..56].copy_from_slice(&2u32.to_le_bytes());
        let c = BlkConfig::parse(&b);
        assert_eq!(c.capacity, 1 << 21);
        assert_eq!(c.blk_size, 4096);
        assert_eq!(c.num_queues, 4);
        assert_eq!(c.max_discard_sectors, 65536);
        assert_eq!(c.max_discard_seg, 1);
        assert_eq!(c.max_write_zeroes_sectors, 8192);
        assert_eq!(c.max_write_zeroes_seg, 2);
        // The short (36-byte) form: no discard fields.
        let c = BlkConfig::parse(&b[..36]);
        assert_eq!((c.num_queues, c.max_discard_sectors), (4, 0));
    }
}
