//! The machine's transitions: safe points (member loss), entering a state (pauses), acting
//! on it, and the end of the rebuild (Done or Failed).

use super::*;

impl Rebuild {
    pub(super) fn let_go(&self, m: &mut Machine, slot: usize) {
        m.chans[slot] = None;
        m.sources &= !(1u64 << slot);
        if slot == self.target {
            m.stop.get_or_insert_with(|| "target member lost".into());
        } else if m.sources == 0 || self.stripes.is_some() {
            // raid5f needs every other member to reconstruct.
            m.stop
                .get_or_insert_with(|| "no in-sync member left to copy from".into());
        }
    }

    /// Back from an I/O or walk: let go of members lost meanwhile.
    pub(super) fn safe_point(&self) {
        let conts: Vec<Cont> = {
            let mut m = self.lock();
            m.busy = false;
            let lost = std::mem::take(&mut m.lost);
            lost.into_iter()
                .map(|(slot, c)| {
                    self.let_go(&mut m, slot);
                    c
                })
                .collect()
        };
        for c in conts {
            c();
        }
    }

    pub(super) fn enter(self: &Arc<Self>, s: RebuildState) {
        {
            let mut m = self.lock();
            m.state = s;
            if !s.is_terminal() && m.pause_at == Some(s) && m.stop.is_none() {
                m.paused = true;
                tracing::debug!("raid '{}': rebuild paused in {s:?}", self.raid_name);
                return;
            }
        }
        self.act();
    }

    /// Performs the current state's action.
    pub(super) fn act(self: &Arc<Self>) {
        let (state, stopping) = {
            let m = self.lock();
            (m.state, m.stop.is_some())
        };
        match state {
            RebuildState::Idle => {}
            RebuildState::Locking if stopping => self.enter(RebuildState::Failed),
            RebuildState::Locking => self.do_lock(),
            RebuildState::Reading | RebuildState::Writing if stopping => {
                self.enter(RebuildState::Advancing)
            }
            RebuildState::Reading => self.do_read(),
            RebuildState::Writing => self.do_write(),
            RebuildState::Advancing => self.do_unlock(),
            RebuildState::Done | RebuildState::Failed => self.terminate(),
        }
    }

    fn terminate(self: &Arc<Self>) {
        let (result, ends, conts, copied, resync) = {
            let mut m = self.lock();
            m.chans.iter_mut().for_each(|c| *c = None);
            m.bufs.clear();
            let result = match (m.state, &m.stop) {
                (RebuildState::Done, _) => Ok(()),
                (_, Some(r)) => Err(r.clone()),
                (_, None) => Err("stopped".to_string()),
            };
            let lost: Vec<Cont> = std::mem::take(&mut m.lost)
                .into_iter()
                .map(|(_, c)| c)
                .collect();
            (
                result,
                std::mem::take(&mut m.on_end),
                lost,
                m.copied,
                m.resync,
            )
        };
        match &result {
            Ok(()) => tracing::info!(
                "raid '{}': {} of '{}' done: {copied} of {} blocks copied",
                self.raid_name,
                if resync { "resync" } else { "rebuild" },
                self.target_name,
                self.num_blocks
            ),
            Err(r) => tracing::warn!(
                "raid '{}': rebuild of '{}' failed: {r}",
                self.raid_name,
                self.target_name
            ),
        }
        for c in conts {
            c();
        }
        if let Some(raid) = self.raid.upgrade() {
            let report = crate::control::RebuildReport {
                target: self.target_name.clone(),
                resync,
                copied_blocks: copied,
                total_blocks: self.num_blocks,
                error: result.clone().err(),
            };
            crate::control::rebuild_finished(&raid, self.target, result, report);
        }
        for e in ends {
            e();
        }
    }
}
