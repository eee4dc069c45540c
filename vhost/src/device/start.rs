//! Starting and stopping one ring from the control thread.

use vhost::vhost_user::Result as VuResult;

use super::{err, Device};
use crate::blk::config::feature;
use crate::queue::QueueSpec;

impl Device {
    /// Starts ring `index` if it has everything it needs and is not running.
    pub(super) fn try_start(&mut self, index: usize) -> VuResult<()> {
        if self.closing {
            return Ok(());
        }
        let proto = self.protocol_negotiated();
        let features = self.acked_features;
        let Some(mem) = self.mem.clone() else {
            return Ok(());
        };
        let r = &self.rings[index];
        if r.running.is_some() || r.size == 0 || r.kick.is_none() || (proto && !r.enabled) {
            return Ok(());
        }
        let Some((desc_va, used_va, avail_va)) = r.addr else {
            return Ok(());
        };
        let name = &self.ctrl.name;
        let packed = features & feature::RING_PACKED != 0;
        let size = u64::from(r.size);
        let (dlen, alen, ulen) = if packed {
            (16 * size, 4, 4)
        } else {
            (16 * size, 6 + 2 * size, 6 + 8 * size)
        };
        let tr = |va: u64, len: u64, what: &str| {
            mem.va_to_gpa(va, len).map_err(|e| {
                err(format!(
                    "vhost controller '{name}': ring {index}: {what} ring: {}",
                    e.message()
                ))
            })
        };
        let desc = tr(desc_va, dlen, "descriptor")?;
        let driver = tr(avail_va, alen, "driver (available)")?;
        let device = tr(used_va, ulen, "device (used)")?;
        let kick = r
            .kick
            .as_ref()
            .and_then(|f| f.try_clone().ok())
            .ok_or_else(|| {
                err(format!(
                    "vhost controller '{name}': cannot duplicate kick fd"
                ))
            })?;
        let call = r.call.as_ref().and_then(|f| f.try_clone().ok());
        let inflight = match self.inflight.as_ref().map(|r| r.queue(index as u16)) {
            Some(Ok(q)) if q.is_packed() == packed => Some(q),
            Some(_) => {
                tracing::error!(
                    "vhost controller '{name}': ring {index}: the inflight region does not cover this ring or has the other ring layout; running without inflight tracking"
                );
                None
            }
            None => None,
        };
        let spec = QueueSpec {
            index: index as u16,
            size: r.size,
            desc,
            driver,
            device,
            base: r.base,
            packed,
            event_idx: features & feature::RING_EVENT_IDX != 0,
            indirect: features & feature::RING_INDIRECT_DESC != 0,
            kick,
            call,
            mem,
            inflight,
        };
        let running = crate::queue::start(&self.ctrl, spec)
            .map_err(|e| err(format!("vhost controller '{name}': ring {index}: {e}")))?;
        self.rings[index].running = Some(running);
        self.ctrl.set_queue_running(index, true);
        Ok(())
    }

    pub(super) fn stop_ring(&mut self, index: usize) {
        let r = &mut self.rings[index];
        if let Some(run) = r.running.take() {
            r.base = run.stop();
            self.ctrl.set_queue_running(index, false);
        }
    }
}
