//! JSON-RPC methods of the raid module (SPDK v25.09 names and parameters).

use ferrite_bdev::rpc::{on_thread, rpc_err};
use ferrite_bdev::BdevError;
use ferrite_reactor::ThreadHandle;
use ferrite_rpc::{decode, Registry, RUNTIME, STARTUP};
use serde::Deserialize;

use crate::control::{self, RaidOpts};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateReq {
    name: String,
    raid_level: String,
    base_bdevs: Vec<String>,
    strip_size_kb: Option<u32>,
    uuid: Option<String>,
    superblock: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteReq {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetReq {
    category: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddReq {
    raid_bdev: String,
    base_bdev: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveReq {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OptionsReq {
    process_window_size_kb: Option<u32>,
    process_max_bandwidth_mb_sec: Option<u32>,
}

/// Prefixes the message the way SPDK's handler does ("Failed to create RAID bdev NAME: ...").
fn prefixed(prefix: String, e: BdevError) -> ferrite_rpc::RpcError {
    rpc_err(BdevError::new(e.kind(), format!("{prefix}: {e}")))
}

/// Registers the raid module's methods; handlers run on `app`.
pub fn register_rpcs(reg: &Registry, app: &ThreadHandle) {
    let a = app.clone();
    reg.register_fn("bdev_raid_create", RUNTIME, true, move |p, r| {
        let q: CreateReq = match decode(p) {
            Ok(q) => q,
            Err(e) => return r.err(e),
        };
        let opts = RaidOpts {
            name: q.name,
            raid_level: q.raid_level,
            base_bdevs: q.base_bdevs,
            strip_size_kb: q.strip_size_kb.unwrap_or(0),
            uuid: q.uuid,
            superblock: q.superblock.unwrap_or(false),
        };
        on_thread(&a, r, move |r| {
            let name = opts.name.clone();
            control::create(&opts, move |res| match res {
                Ok(()) => r.ok(true),
                Err(e) => r.err(prefixed(format!("Failed to create RAID bdev {name}"), e)),
            })
        });
    });
    let a = app.clone();
    reg.register_fn("bdev_raid_delete", RUNTIME, true, move |p, r| {
        let q: DeleteReq = match decode(p) {
            Ok(q) => q,
            Err(e) => return r.err(e),
        };
        on_thread(&a, r, move |r| {
            control::delete(&q.name, move |res| match res {
                Ok(()) => r.ok(true),
                Err(e) => r.err(rpc_err(e)),
            })
        });
    });
    let a = app.clone();
    reg.register_fn("bdev_raid_get_bdevs", RUNTIME, false, move |p, r| {
        let q: GetReq = match decode(p) {
            Ok(q) => q,
            Err(e) => return r.err(e),
        };
        on_thread(&a, r, move |r| match control::get_bdevs(&q.category) {
            Ok(v) => r.ok(v),
            Err(e) => r.err(rpc_err(e)),
        });
    });
    let a = app.clone();
    reg.register_fn("bdev_raid_add_base_bdev", RUNTIME, true, move |p, r| {
        let q: AddReq = match decode(p) {
            Ok(q) => q,
            Err(e) => return r.err(e),
        };
        on_thread(&a, r, move |r| {
            let (rb, bb) = (q.raid_bdev.clone(), q.base_bdev.clone());
            control::add_base_bdev(&q.raid_bdev, &q.base_bdev, move |res| match res {
                Ok(()) => r.ok(true),
                Err(e) => r.err(prefixed(
                    format!("Failed to add base bdev {bb} to RAID bdev {rb}"),
                    e,
                )),
            })
        });
    });
    let a = app.clone();
    reg.register_fn("bdev_raid_remove_base_bdev", RUNTIME, true, move |p, r| {
        let q: RemoveReq = match decode(p) {
            Ok(q) => q,
            Err(e) => return r.err(e),
        };
        on_thread(&a, r, move |r| {
            let name = q.name.clone();
            control::remove_base_bdev(&q.name, move |res| match res {
                Ok(()) => r.ok(true),
                Err(e) => r.err(prefixed(
                    format!("Failed to remove base bdev {name} from raid bdev"),
                    e,
                )),
            })
        });
    });
    let a = app.clone();
    reg.register_fn(
        "bdev_raid_set_options",
        STARTUP | RUNTIME,
        true,
        move |p, r| {
            let q: OptionsReq = match decode(p) {
                Ok(q) => q,
                Err(e) => return r.err(e),
            };
            on_thread(&a, r, move |r| {
                match control::set_options(q.process_window_size_kb, q.process_max_bandwidth_mb_sec)
                {
                    Ok(()) => r.ok(true),
                    Err(e) => r.err(rpc_err(e)),
                }
            });
        },
    );
}
