//! The control-plane state of one vhost-user connection: features, memory table, rings,
//! inflight region. Implements the `vhost` crate's backend request handler; the crate parses
//! and answers the messages (`BackendReqHandler`), this type decides.
//!
//! Thread contract: every method runs on the controller's control thread (`listener.rs`),
//! never on a reactor. Starting and stopping a ring sends a message to the ring's reactor
//! thread and waits for its answer here (this thread may block; reactors never do).
//!
//! Ring life: a ring starts once it has a size, addresses, a kick fd, a memory table and (when
//! protocol features are negotiated) has been enabled. It stops on GET_VRING_BASE, on disable,
//! on RESET_OWNER, on disconnect, and around a new memory table; stopping drains the ring's
//! in-flight requests first, so no completion can write into an unmapped table.

use std::fs::File;
use std::sync::Arc;

use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserConfigFlags, VhostUserInflight,
    VhostUserLog, VhostUserMemoryRegion, VhostUserProtocolFeatures, VhostUserShMemConfig,
    VhostUserSharedMsg, VhostUserSingleMemoryRegion, VhostUserVringAddrFlags, VhostUserVringState,
};
use vhost::vhost_user::VhostUserBackendReqHandlerMut;
use vhost::vhost_user::{Backend, Error as VuError, GpuBackend, Result as VuResult};
use vhost::VhostUserMemoryRegionBase;

use crate::blk::config::{feature, MAX_QUEUES};
use crate::controller::CtrlShared;
use crate::memory::{MemTable, RegionDesc};
use crate::queue::Running;

mod start;

/// Largest ring a frontend may ask for.
pub const MAX_QUEUE_SIZE: u32 = 1024;

#[derive(Default)]
struct Ring {
    size: u16,
    /// (descriptor, used, available) in the frontend's address space.
    addr: Option<(u64, u64, u64)>,
    base: u32,
    kick: Option<File>,
    call: Option<File>,
    enabled: bool,
    running: Option<Running>,
}

/// One frontend's device state.
pub struct Device {
    ctrl: Arc<CtrlShared>,
    acked_features: u64,
    acked_protocol: u64,
    mem: Option<Arc<MemTable>>,
    rings: Vec<Ring>,
    inflight: Option<ferrite_vring::InflightRegion>,
    /// The target is shutting down: the rings were drained while the frontend was still
    /// connected and none starts again.
    closing: bool,
}

fn err(msg: String) -> VuError {
    tracing::warn!("{msg}");
    VuError::ReqHandlerError(std::io::Error::other(msg))
}

impl Device {
    /// A fresh device for a new connection.
    pub fn new(ctrl: Arc<CtrlShared>) -> Self {
        let rings = (0..MAX_QUEUES).map(|_| Ring::default()).collect();
        Self {
            ctrl,
            acked_features: 0,
            acked_protocol: 0,
            mem: None,
            rings,
            inflight: None,
            closing: false,
        }
    }

    /// Graceful shutdown, called while the frontend is still connected: every running ring
    /// stops taking requests, completes what it has in flight, publishes and signals the
    /// call eventfd (the frontend still listens), and no ring starts again on this
    /// connection. The requests the guest adds meanwhile stay in the available ring, not
    /// popped and not in the inflight region, for the next incarnation to take.
    /// Thread contract: not a reactor thread (blocks until the rings drained).
    pub fn close(&mut self) {
        self.closing = true;
        self.stop_all();
    }

    fn ring(&mut self, index: u32) -> VuResult<&mut Ring> {
        let name = self.ctrl.name.clone();
        self.rings.get_mut(index as usize).ok_or_else(|| {
            err(format!(
                "vhost controller '{name}': ring index {index} out of range (at most {MAX_QUEUES} rings)"
            ))
        })
    }

    /// Stops every running ring (drains them); used on disconnect and teardown.
    pub fn stop_all(&mut self) {
        for i in 0..self.rings.len() {
            self.stop_ring(i);
        }
    }

    /// The bdev is going away: every running ring releases its channel (after its I/O
    /// outstanding completes) and fails later requests with IOERR.
    pub fn detach_bdev(&mut self) {
        for r in &self.rings {
            if let Some(run) = &r.running {
                run.detach_bdev();
            }
        }
    }

    /// The inflight region's layout. QEMU asks for the region (GET_INFLIGHT_FD) before it
    /// sets the features of a first start, so without acked features the layout follows the
    /// controller's offer (`packed_ring`).
    fn inflight_packed(&self) -> bool {
        if self.acked_features != 0 {
            self.acked_features & feature::RING_PACKED != 0
        } else {
            self.ctrl.packed
        }
    }

    fn protocol_negotiated(&self) -> bool {
        self.acked_features & feature::PROTOCOL_FEATURES != 0
    }
}

impl VhostUserBackendReqHandlerMut for Device {
    fn set_owner(&mut self) -> VuResult<()> {
        Ok(())
    }

    fn reset_owner(&mut self) -> VuResult<()> {
        self.stop_all();
        let (ctrl, closing) = (self.ctrl.clone(), self.closing);
        *self = Device::new(ctrl);
        self.closing = closing;
        Ok(())
    }

    fn reset_device(&mut self) -> VuResult<()> {
        self.reset_owner()
    }

    fn get_features(&mut self) -> VuResult<u64> {
        Ok(self.ctrl.geometry().features())
    }

    fn set_features(&mut self, features: u64) -> VuResult<()> {
        let offered = self.ctrl.geometry().features();
        if features & !offered != 0 {
            return Err(err(format!(
                "vhost controller '{}': frontend acked features {:#x} that were not offered",
                self.ctrl.name,
                features & !offered
            )));
        }
        self.acked_features = features;
        Ok(())
    }

    fn set_mem_table(
        &mut self,
        ctx: &[VhostUserMemoryRegion],
        files: Vec<File>,
        _postcopy_listening: Option<bool>,
    ) -> VuResult<Option<Vec<VhostUserMemoryRegionBase>>> {
        let descs: Vec<RegionDesc> = ctx
            .iter()
            .map(|r| RegionDesc {
                gpa: r.guest_phys_addr,
                size: r.memory_size,
                uaddr: r.user_addr,
                mmap_offset: r.mmap_offset,
            })
            .collect();
        let table = MemTable::map(&descs, files).map_err(|e| {
            err(format!(
                "vhost controller '{}': SET_MEM_TABLE: {}",
                self.ctrl.name,
                e.message()
            ))
        })?;
        // Quiesce: every running ring drains and stops before the old table can go.
        let was_running: Vec<usize> = (0..self.rings.len())
            .filter(|i| self.rings[*i].running.is_some())
            .collect();
        for i in &was_running {
            self.stop_ring(*i);
        }
        self.mem = Some(Arc::new(table));
        for i in was_running {
            self.try_start(i)?;
        }
        Ok(None)
    }

    fn set_vring_num(&mut self, index: u32, num: u32) -> VuResult<()> {
        let name = self.ctrl.name.clone();
        if num == 0 || num > MAX_QUEUE_SIZE || !num.is_power_of_two() {
            return Err(err(format!(
                "vhost controller '{name}': ring {index}: size {num} (a power of two up to {MAX_QUEUE_SIZE})"
            )));
        }
        let r = self.ring(index)?;
        if r.running.is_some() {
            return Err(err(format!(
                "vhost controller '{name}': ring {index} is running; cannot resize"
            )));
        }
        r.size = num as u16;
        Ok(())
    }

    fn set_vring_addr(
        &mut self,
        index: u32,
        _flags: VhostUserVringAddrFlags,
        descriptor: u64,
        used: u64,
        available: u64,
        _log: u64,
    ) -> VuResult<()> {
        let name = self.ctrl.name.clone();
        let r = self.ring(index)?;
        if r.running.is_some() {
            return Err(err(format!(
                "vhost controller '{name}': ring {index} is running; cannot move it"
            )));
        }
        r.addr = Some((descriptor, used, available));
        Ok(())
    }

    fn set_vring_base(&mut self, index: u32, base: u32) -> VuResult<()> {
        let name = self.ctrl.name.clone();
        let r = self.ring(index)?;
        if r.running.is_some() {
            return Err(err(format!(
                "vhost controller '{name}': ring {index} is running; cannot set its base"
            )));
        }
        r.base = base;
        Ok(())
    }

    fn get_vring_base(&mut self, index: u32) -> VuResult<VhostUserVringState> {
        self.ring(index)?;
        self.stop_ring(index as usize);
        let r = &mut self.rings[index as usize];
        // The ring is stopped: the frontend restarts it with new kick/base.
        r.kick = None;
        r.enabled = false;
        Ok(VhostUserVringState::new(index, r.base))
    }

    fn set_vring_kick(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        let i = u32::from(index);
        self.ring(i)?;
        self.stop_ring(index as usize);
        self.rings[index as usize].kick = fd;
        // Without protocol features a ring starts on its kick.
        if !self.protocol_negotiated() {
            self.rings[index as usize].enabled = true;
        }
        self.try_start(index as usize)
    }

    fn set_vring_call(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        let r = self.ring(u32::from(index))?;
        if let Some(run) = &r.running {
            run.set_call(fd.as_ref().and_then(|f| f.try_clone().ok()));
        }
        r.call = fd;
        Ok(())
    }

    fn set_vring_err(&mut self, index: u8, _fd: Option<File>) -> VuResult<()> {
        self.ring(u32::from(index))?;
        Ok(())
    }

    fn get_protocol_features(&mut self) -> VuResult<VhostUserProtocolFeatures> {
        Ok(VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::INFLIGHT_SHMFD)
    }

    fn set_protocol_features(&mut self, features: u64) -> VuResult<()> {
        self.acked_protocol = features;
        Ok(())
    }

    fn get_queue_num(&mut self) -> VuResult<u64> {
        Ok(u64::from(self.ctrl.geometry().num_queues))
    }

    fn set_vring_enable(&mut self, index: u32, enable: bool) -> VuResult<()> {
        self.ring(index)?;
        let i = index as usize;
        if enable {
            self.rings[i].enabled = true;
            self.try_start(i)
        } else {
            self.stop_ring(i);
            self.rings[i].enabled = false;
            Ok(())
        }
    }

    fn get_config(
        &mut self,
        offset: u32,
        size: u32,
        _flags: VhostUserConfigFlags,
    ) -> VuResult<Vec<u8>> {
        self.ctrl.geometry().read_config(offset, size).ok_or_else(|| {
            err(format!(
                "vhost controller '{}': GET_CONFIG offset {offset} size {size} is outside the config space",
                self.ctrl.name
            ))
        })
    }

    fn set_config(
        &mut self,
        _offset: u32,
        _buf: &[u8],
        _flags: VhostUserConfigFlags,
    ) -> VuResult<()> {
        // Nothing in our config space is writable (no writeback toggle).
        Ok(())
    }

    fn set_backend_req_fd(&mut self, _backend: Backend) {}

    fn set_gpu_socket(&mut self, _gpu_backend: GpuBackend) -> VuResult<()> {
        Err(VuError::InvalidOperation("not a GPU device"))
    }

    fn get_shared_object(&mut self, _uuid: VhostUserSharedMsg) -> VuResult<File> {
        Err(VuError::InvalidOperation("no shared objects"))
    }

    fn get_inflight_fd(
        &mut self,
        inflight: &VhostUserInflight,
    ) -> VuResult<(VhostUserInflight, File)> {
        let name = self.ctrl.name.clone();
        let (nq, qs) = (inflight.num_queues, inflight.queue_size);
        if nq == 0 || nq > MAX_QUEUES || qs == 0 || u32::from(qs) > MAX_QUEUE_SIZE {
            return Err(err(format!(
                "vhost controller '{name}': GET_INFLIGHT_FD for {nq} queues of {qs} entries is out of range"
            )));
        }
        let packed = self.inflight_packed();
        let (region, file, size) = ferrite_vring::InflightRegion::create(nq, qs, packed)
            .map_err(|e| err(format!("vhost controller '{name}': GET_INFLIGHT_FD: {e}")))?;
        self.inflight = Some(region);
        Ok((VhostUserInflight::new(size, 0, nq, qs), File::from(file)))
    }

    fn set_inflight_fd(&mut self, inflight: &VhostUserInflight, file: File) -> VuResult<()> {
        let name = self.ctrl.name.clone();
        let packed = self.inflight_packed();
        let region = ferrite_vring::InflightRegion::map(
            std::os::fd::OwnedFd::from(file),
            inflight.mmap_size,
            inflight.mmap_offset,
            inflight.num_queues,
            inflight.queue_size,
            packed,
        )
        .map_err(|e| err(format!("vhost controller '{name}': SET_INFLIGHT_FD: {e}")))?;
        self.inflight = Some(region);
        Ok(())
    }

    fn get_max_mem_slots(&mut self) -> VuResult<u64> {
        Ok(crate::memory::MAX_REGIONS as u64)
    }

    fn add_mem_region(
        &mut self,
        _region: &VhostUserSingleMemoryRegion,
        _fd: File,
        _postcopy_listening: Option<bool>,
    ) -> VuResult<Option<VhostUserMemoryRegionBase>> {
        Err(VuError::InvalidOperation("ADD_MEM_REGION is not offered"))
    }

    fn remove_mem_region(&mut self, _region: &VhostUserSingleMemoryRegion) -> VuResult<()> {
        Err(VuError::InvalidOperation("REM_MEM_REGION is not offered"))
    }

    fn set_device_state_fd(
        &mut self,
        _direction: VhostTransferStateDirection,
        _phase: VhostTransferStatePhase,
        _fd: File,
    ) -> VuResult<Option<File>> {
        Err(VuError::InvalidOperation(
            "device state transfer is not offered",
        ))
    }

    fn check_device_state(&mut self) -> VuResult<()> {
        Err(VuError::InvalidOperation(
            "device state transfer is not offered",
        ))
    }

    fn get_shmem_config(&mut self) -> VuResult<VhostUserShMemConfig> {
        Err(VuError::InvalidOperation("no shared memory regions"))
    }

    fn set_log_base(&mut self, _log: &VhostUserLog, _file: File) -> VuResult<()> {
        Err(VuError::InvalidOperation("dirty logging is not offered"))
    }
}
