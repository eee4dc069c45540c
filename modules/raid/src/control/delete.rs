//! `bdev_raid_delete` and teardown once the raid bdev is destructed.

use super::*;

/// `bdev_raid_delete`: stops a rebuild, unregisters the raid bdev (if online) and releases
/// every member. Superblocks are left as they are (the raid reassembles on a later examine).
pub fn delete(name: &str, done: impl FnOnce(Result<()>) + Send + 'static) {
    let Some(raid) = find(name) else {
        return done(Err(BdevError::new(
            ErrorKind::NotFound,
            format!("raid bdev '{name}' not found"),
        )));
    };
    let r = raid.clone();
    run_op(&raid, move |op| {
        let rb = r.st().rebuild.clone();
        let r2 = r.clone();
        let cont = move || {
            let (bdev, release) = {
                let mut st = r2.st();
                st.teardown = Teardown::Delete;
                match st.bdev.clone() {
                    Some(b) => (Some(b), Vec::new()),
                    None => (
                        None,
                        st.slots.iter_mut().filter_map(|s| s.desc.take()).collect(),
                    ),
                }
            };
            match bdev {
                Some(b) => ferrite_bdev::unregister_bdev(&b, move |res| {
                    done(res);
                    drop(op);
                }),
                None => {
                    forget(&r2);
                    drop(release);
                    tracing::info!("raid '{}' deleted", r2.name);
                    done(Ok(()));
                    drop(op);
                }
            }
        };
        match rb {
            Some(rb) => rb.stop("raid deleted", cont),
            None => cont(),
        }
    });
}

/// The raid bdev left the registry and has no descriptor open.
pub(super) fn on_destruct(raid: &Arc<Raid>) {
    let (release, forget_it, rebuild) = {
        let mut st = raid.st();
        st.bdev = None;
        if let Some(d) = st.device.take() {
            d.unregister();
        }
        st.shared = None;
        st.state = RaidState::Offline;
        let rebuild = st.rebuild.take();
        match st.teardown {
            Teardown::Offline => {
                let rel: Vec<Arc<Desc>> = st
                    .slots
                    .iter_mut()
                    .filter(|s| s.removing)
                    .filter_map(|s| {
                        let d = s.desc.take();
                        s.clear();
                        d
                    })
                    .collect();
                let empty = st.slots.iter().all(|s| s.desc.is_none());
                (rel, empty, rebuild)
            }
            Teardown::Delete | Teardown::None => {
                let rel = st.slots.iter_mut().filter_map(|s| s.desc.take()).collect();
                (rel, true, rebuild)
            }
        }
    };
    let r = raid.clone();
    let finish = move || {
        if forget_it {
            forget(&r);
        }
        // Released only once no rebuild I/O can be in flight on the members.
        drop(release);
        tracing::info!("raid '{}' unregistered", r.name);
    };
    match rebuild {
        // Unregistered by someone else (shutdown) in the middle of a rebuild.
        Some(rb) => rb.stop("raid bdev removed", finish),
        None => finish(),
    }
}
