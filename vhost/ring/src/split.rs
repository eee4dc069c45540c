//! split ring (skeleton: implementation follows).

use crate::inflight::InflightQueue;
use crate::vring::{RingBase, RingConfig};
use crate::{Chain, GuestMemory, RingError};

pub(crate) struct SplitRing {
    base: RingBase,
}

const TODO: RingError = RingError::Usage("not implemented yet");

impl SplitRing {
    pub(crate) fn new(
        _mem: &GuestMemory,
        _cfg: &RingConfig,
        base: RingBase,
    ) -> Result<Self, RingError> {
        Ok(SplitRing { base })
    }
    pub(crate) fn base(&self) -> RingBase {
        self.base
    }
    pub(crate) fn pop(&mut self, _mem: &GuestMemory, _out: &mut Chain) -> Result<bool, RingError> {
        Err(TODO)
    }
    pub(crate) fn pop_resubmit(
        &mut self,
        _mem: &GuestMemory,
        _out: &mut Chain,
    ) -> Result<bool, RingError> {
        Err(TODO)
    }
    pub(crate) fn resubmit_pending(&self) -> usize {
        0
    }
    pub(crate) fn in_flight(&self) -> usize {
        0
    }
    pub(crate) fn push_used(
        &mut self,
        _mem: &GuestMemory,
        _id: u16,
        _written: u32,
    ) -> Result<(), RingError> {
        Err(TODO)
    }
    pub(crate) fn publish(&mut self, _mem: &GuestMemory) -> Result<bool, RingError> {
        Err(TODO)
    }
    pub(crate) fn disable_notify(&mut self, _mem: &GuestMemory) -> Result<(), RingError> {
        Err(TODO)
    }
    pub(crate) fn enable_notify(&mut self, _mem: &GuestMemory) -> Result<bool, RingError> {
        Err(TODO)
    }
    pub(crate) fn attach_inflight(
        &mut self,
        _mem: &GuestMemory,
        _q: InflightQueue,
    ) -> Result<(), RingError> {
        Err(TODO)
    }
}
