//! JSON views: `bdev_raid_get_bdevs`, `driver_specific` and the config entries.

use super::*;

pub(super) fn info_json(raid: &Raid, with_name: bool) -> Value {
    let st = raid.st();
    let online = st.state == RaidState::Online;
    let discovered = st.slots.iter().filter(|s| s.desc.is_some()).count();
    let operational = if online {
        st.slots
            .iter()
            .filter(|s| s.desc.is_some() && !s.removing)
            .count()
    } else {
        st.slots.iter().filter(|s| s.expected).count()
    };
    let mut v = serde_json::Map::new();
    if with_name {
        v.insert("name".into(), json!(raid.name));
    }
    v.insert("uuid".into(), json!(raid.uuid.to_string()));
    v.insert("strip_size_kb".into(), json!(raid.strip_size_kb));
    v.insert("state".into(), json!(st.state.name()));
    v.insert("raid_level".into(), json!(raid.level.name()));
    v.insert("superblock".into(), json!(raid.superblock));
    v.insert("num_base_bdevs".into(), json!(st.slots.len()));
    v.insert("num_base_bdevs_discovered".into(), json!(discovered));
    v.insert("num_base_bdevs_operational".into(), json!(operational));
    // Ferrite's own (SPDK has no write-intent bitmap): what a returning member would copy.
    if let (Some(sh), RaidLevel::Raid1) = (&st.shared, raid.level) {
        v.insert(
            "write_intent_bitmap".into(),
            json!({"persistent": sh.wib.persisted(),
                   "region_size_kb": (sh.wib.region_blocks() * u64::from(sh.block_size)) / 1024,
                   "dirty_regions": sh.wib.count()}),
        );
    }
    if let Some(rb) = &st.rebuild {
        let blocks = rb.progress();
        let pct = blocks.saturating_mul(100) / rb.num_blocks.max(1);
        v.insert(
            "process".into(),
            json!({"type": "rebuild", "target": rb.target_name,
                   "progress": {"blocks": blocks, "percent": pct}}),
        );
    }
    let list: Vec<Value> = st
        .slots
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "uuid": s.uuid.unwrap_or_default().to_string(),
                "is_configured": s.desc.is_some(),
                "data_offset": s.data_offset,
                "data_size": s.data_size,
            })
        })
        .collect();
    v.insert("base_bdevs_list".into(), Value::Array(list));
    Value::Object(v)
}

/// `bdev_raid_get_bdevs`: raids in `category` ("all", "online", "configuring", "offline").
pub fn get_bdevs(category: &str) -> Result<Vec<Value>> {
    let want = match category {
        "all" => None,
        "online" => Some(RaidState::Online),
        "configuring" => Some(RaidState::Configuring),
        "offline" => Some(RaidState::Offline),
        _ => {
            return Err(einval(format!(
                "category '{category}' is not one of all, online, configuring, offline"
            )))
        }
    };
    let list: Vec<Arc<Raid>> = raids().clone();
    Ok(list
        .iter()
        .filter(|r| want.is_none_or(|w| r.st().state == w))
        .map(|r| info_json(r, true))
        .collect())
}

pub(super) fn create_entry(raid: &Raid) -> Value {
    let st = raid.st();
    let bases: Vec<String> = st
        .slots
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.name
                .clone()
                .unwrap_or_else(|| format!("removed_base_bdev_{i}"))
        })
        .collect();
    let mut p = json!({
        "name": raid.name,
        "uuid": raid.uuid.to_string(),
        "raid_level": raid.level.name(),
        "base_bdevs": bases,
    });
    if raid.strip_size_kb != 0 {
        p["strip_size_kb"] = json!(raid.strip_size_kb);
    }
    if raid.superblock {
        p["superblock"] = json!(true);
    }
    json!({"method": "bdev_raid_create", "params": p})
}

/// The entry recreating an online raid: none for a raid with a superblock (its members
/// carry its configuration, as SPDK).
pub(super) fn config_entry(raid: &Raid) -> Option<Value> {
    if raid.superblock {
        return None;
    }
    Some(create_entry(raid))
}
