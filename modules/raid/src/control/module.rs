//! The raid bdev module (examine hooks, `save_config`) and `bdev_raid_set_options`.

use super::*;

/// The raid module: claims configured members as they appear and assembles raids from the
/// superblocks it finds.
pub struct RaidModule;

impl BdevModule for RaidModule {
    fn name(&self) -> &'static str {
        "raid"
    }

    /// A bdev named as a member of a configuring raid is claimed for it.
    fn examine_config(&self, bdev: &Arc<Bdev>) {
        let list: Vec<Arc<Raid>> = raids().clone();
        for r in list {
            let slot = {
                let st = r.st();
                if st.state != RaidState::Configuring {
                    continue;
                }
                st.slots
                    .iter()
                    .position(|s| s.desc.is_none() && s.name.is_some() && s.matches(bdev))
            };
            let Some(i) = slot else { continue };
            if let Err(e) = claim_slot(&r, i, bdev) {
                tracing::error!("raid '{}': {e}", r.name);
                continue;
            }
            let name = r.name.clone();
            maybe_configure(
                &r,
                Box::new(move |res| {
                    if let Err(e) = res {
                        tracing::error!("raid '{name}': cannot come online: {e}");
                    }
                }),
            );
            return;
        }
    }

    /// Looks for a superblock on bdevs nobody claimed.
    fn examine_disk(&self, bdev: &Arc<Bdev>, done: ExamineDone) {
        examine_disk(bdev, done);
    }

    /// Starts degraded the raids assembled from superblocks that still miss members but have
    /// a quorum (see `assemble`).
    fn examine_settled(&self) {
        assemble::start_degraded();
    }

    /// Options (when changed from the defaults; SPDK always writes them), then raids still
    /// waiting for members (online raids are saved by their bdev).
    fn config_json(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let window = WINDOW_KB.load(Ordering::Relaxed);
        if window != DEFAULT_WINDOW_KB {
            out.push(json!({"method": "bdev_raid_set_options", "params": {
                "process_window_size_kb": window,
                "process_max_bandwidth_mb_sec": MAX_BW.load(Ordering::Relaxed),
            }}));
        }
        let list: Vec<Arc<Raid>> = raids().clone();
        for r in list {
            let (configuring, seq) = {
                let st = r.st();
                (st.state == RaidState::Configuring, st.seq)
            };
            // A raid assembled from (or already written to) superblocks reassembles itself.
            if configuring && !(r.superblock && seq > 0) {
                out.push(create_entry(&r));
            }
        }
        out
    }
}

/// `bdev_raid_set_options`: the rebuild window (KiB, > 0) and the bandwidth limit (only 0,
/// unlimited, is supported).
pub fn set_options(window_kb: Option<u32>, max_bw_mb_sec: Option<u32>) -> Result<()> {
    if window_kb == Some(0) {
        return Err(einval(
            "process_window_size_kb must be greater than 0".into(),
        ));
    }
    if let Some(bw) = max_bw_mb_sec.filter(|b| *b != 0) {
        return Err(BdevError::new(
            ErrorKind::NotSupported,
            format!("process_max_bandwidth_mb_sec {bw}: only 0 (unlimited) is supported"),
        ));
    }
    if let Some(w) = window_kb {
        WINDOW_KB.store(w, Ordering::Relaxed);
    }
    Ok(())
}
