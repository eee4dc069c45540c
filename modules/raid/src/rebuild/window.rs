//! The steps on one window: lock it on every channel, read (raid1: copy from a source;
//! raid5f: reconstruct from all the others), write to the target, release it and advance
//! (recording checkpoints).

use super::*;

impl Rebuild {
    pub(super) fn do_lock(self: &Arc<Self>) {
        let range = {
            let mut m = self.lock();
            loop {
                if m.offset >= self.num_blocks {
                    break None;
                }
                m.cur = m.window.min(self.num_blocks - m.offset);
                // Resync: windows no write touched while the member was away are already
                // in sync on it (writes since it came back reach it directly).
                if !m.resync || self.shared.wib.any(m.offset, m.cur) {
                    m.busy = true;
                    break Some((m.offset, m.offset + m.cur));
                }
                m.offset += m.cur;
            }
        };
        let Some((a, b)) = range else {
            return self.enter(RebuildState::Done);
        };
        let me = self.clone();
        let r = self.device.for_each_channel_async(
            move |ctx, cont| crate::raid1::lock_window(ctx, a, b, cont),
            move |_| {
                me.safe_point();
                me.enter(RebuildState::Reading);
            },
        );
        if let Err(e) = r {
            {
                let mut m = self.lock();
                m.busy = false;
                m.stop
                    .get_or_insert_with(|| format!("cannot lock the window: {e}"));
            }
            self.enter(RebuildState::Failed);
        }
    }

    /// Member blocks `(offset, len)` holding raid blocks `[off, off + cur)`.
    fn member_range(&self, off: u64, cur: u64) -> (u64, u64) {
        match self.stripes {
            Some((strip, stripe)) => (off / stripe * strip, cur / stripe * strip),
            None => (off, cur),
        }
    }

    pub(super) fn do_read(self: &Arc<Self>) {
        let op = {
            let mut m = self.lock();
            // raid1: the lowest source; raid5f: all of them.
            let srcs: Vec<usize> = match self.stripes {
                None => lowest(m.sources).into_iter().collect(),
                Some(_) => (0..self.shared.n)
                    .filter(|s| m.sources & (1u64 << s) != 0)
                    .collect(),
            };
            let ready = !srcs.is_empty()
                && srcs.iter().all(|&s| m.chans[s].is_some())
                && m.bufs.len() >= srcs.len();
            if ready {
                let (moff, mlen) = self.member_range(m.offset, m.cur);
                let mut ops = Vec::with_capacity(srcs.len());
                for &src in &srcs {
                    let (Some(ch), Some(mut buf)) = (m.chans[src].take(), m.bufs.pop()) else {
                        continue;
                    };
                    let _ = buf.set_len((mlen * self.block_size) as usize);
                    ops.push(CtlOp {
                        ch,
                        write: false,
                        offset: moff + self.shared.offset_of(src),
                        buf,
                        flush: false,
                    });
                }
                m.busy = true;
                Some((srcs, ops))
            } else {
                m.stop
                    .get_or_insert_with(|| "no in-sync member left to copy from".into());
                None
            }
        };
        let Some((srcs, ops)) = op else {
            return self.enter(RebuildState::Advancing);
        };
        let me = self.clone();
        crate::ctlio::submit(ops, move |res| me.on_read(&srcs, res));
    }

    fn put_back(&self, slot: usize, res: Vec<CtlResult>) -> bool {
        let mut ok = false;
        let mut m = self.lock();
        for r in res {
            ok = r.status == IoStatus::Success;
            if !ok {
                tracing::debug!(
                    "raid '{}': rebuild I/O on slot {slot} completed {:?}",
                    self.raid_name,
                    r.status
                );
            }
            if m.lost.iter().all(|(s, _)| *s != slot) {
                m.chans[slot] = Some(r.ch);
            }
            m.bufs.extend(r.buf);
        }
        ok
    }

    fn on_read(self: &Arc<Self>, srcs: &[usize], res: Vec<CtlResult>) {
        let mut ok = true;
        let mut failed = Vec::new();
        {
            let mut m = self.lock();
            let mut got = Vec::with_capacity(res.len());
            for (&src, r) in srcs.iter().zip(res) {
                if r.status != IoStatus::Success {
                    tracing::debug!(
                        "raid '{}': rebuild read on slot {src} completed {:?}",
                        self.raid_name,
                        r.status
                    );
                    ok = false;
                    failed.push(src);
                }
                if m.lost.iter().all(|(s, _)| *s != src) {
                    m.chans[src] = Some(r.ch);
                }
                got.extend(r.buf);
            }
            if ok && self.stripes.is_some() {
                // The new member's strip is the XOR of every other member's.
                if let Some((first, rest)) = got.split_first_mut() {
                    let acc = first.as_mut_slice();
                    for b in rest.iter() {
                        for (d, s) in acc.iter_mut().zip(b.as_slice()) {
                            *d ^= *s;
                        }
                    }
                }
            }
            // The first buffer (the result) is the one Writing takes (`pop` takes the last).
            got.reverse();
            m.bufs.extend(got);
        }
        for src in failed {
            // Report the member (the control path drops it); raid1 copies from another one.
            tracing::warn!(
                "raid '{}': rebuild read from slot {src} failed",
                self.raid_name
            );
            self.shared.fail_slot(src);
            let mut m = self.lock();
            m.sources &= !(1u64 << src);
            if m.sources == 0 || self.stripes.is_some() {
                m.stop
                    .get_or_insert_with(|| "no in-sync member left to copy from".into());
            }
        }
        self.safe_point();
        if ok {
            self.enter(RebuildState::Writing);
        } else {
            self.enter(RebuildState::Reading);
        }
    }

    pub(super) fn do_write(self: &Arc<Self>) {
        let op = {
            let mut m = self.lock();
            let t = self.target;
            match (m.chans[t].take(), m.bufs.pop()) {
                (Some(ch), Some(buf)) => {
                    m.busy = true;
                    Some((self.member_range(m.offset, m.cur).0, ch, buf))
                }
                (ch, buf) => {
                    m.chans[t] = ch;
                    m.bufs.extend(buf);
                    m.stop.get_or_insert_with(|| "target member lost".into());
                    None
                }
            }
        };
        let Some((moff, ch, buf)) = op else {
            return self.enter(RebuildState::Advancing);
        };
        let me = self.clone();
        let op = CtlOp {
            ch,
            write: true,
            offset: moff + self.shared.offset_of(self.target),
            buf,
            flush: false,
        };
        crate::ctlio::submit(vec![op], move |res| me.on_write(res));
    }

    fn on_write(self: &Arc<Self>, res: Vec<CtlResult>) {
        let ok = self.put_back(self.target, res);
        if !ok {
            tracing::warn!(
                "raid '{}': rebuild write to '{}' failed",
                self.raid_name,
                self.target_name
            );
            self.shared.fail_slot(self.target);
            self.lock()
                .stop
                .get_or_insert_with(|| "write to the target failed".into());
        }
        self.safe_point();
        self.enter(RebuildState::Advancing);
    }

    pub(super) fn do_unlock(self: &Arc<Self>) {
        self.lock().busy = true;
        let me = self.clone();
        let r = self
            .device
            .for_each_channel(crate::raid1::unlock_window, move || {
                me.safe_point();
                let mut checkpoint = None;
                let next = {
                    let mut m = me.lock();
                    if m.stop.is_some() {
                        RebuildState::Failed
                    } else {
                        m.offset += m.cur;
                        m.copied += m.cur;
                        if m.offset >= me.num_blocks {
                            RebuildState::Done
                        } else {
                            if m.offset - m.ckpt >= me.checkpoint_stride(m.window) {
                                m.ckpt = m.offset;
                                checkpoint = Some(m.offset);
                            }
                            RebuildState::Locking
                        }
                    }
                };
                if let (Some(at), Some(raid)) = (checkpoint, me.raid.upgrade()) {
                    crate::control::rebuild_checkpoint(&raid, me.target, at);
                }
                me.enter(next);
            });
        if let Err(e) = r {
            tracing::error!("raid '{}': cannot release the window: {e}", self.raid_name);
            {
                let mut m = self.lock();
                m.busy = false;
                m.stop
                    .get_or_insert_with(|| format!("cannot release the window: {e}"));
            }
            self.enter(RebuildState::Failed);
        }
    }
}
