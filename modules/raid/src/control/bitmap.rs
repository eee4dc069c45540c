//! The persisted write-intent bitmap (raid1 with a superblock): its on-disk format, loading
//! at assembly, and the rounds that write it.
//!
//! **Where.** In the reserved area before the data, at byte [`OFFSET`] of every member (the
//! superblock is at byte 0, data at 1 MiB): a 64-byte header then the bits, one per region,
//! padded to whole blocks. Header (little-endian): magic `FERAIDBM` (8), version 1 (4),
//! CRC32C of the header (with this field zero) and the bits (4), raid UUID (16), log2 of the
//! region size in blocks (4), number of regions (8), reserved (20, zero). At most
//! [`MAX_REGIONS`] regions (regions grow on huge raids), so it fits one DMA buffer.
//!
//! **Ordering.** A write that marks a region ([`crate::io::Bitmap::mark`]) asks for a round
//! and waits, parked on its channel, until its regions are *durable*. A round snapshots the
//! marks, writes them to every member that is not being removed, flushes the members that
//! have a write cache, then records the snapshot as durable and lets every channel resubmit
//! its parked writes. So a bit is on disk before any write it covers reaches a member.
//! Rounds do not run as raid operations (a removal's quiesce waits for parked writes).
//! Bits are cleared only when no member is away (after a resync), in memory at once and on
//! disk lazily (by the next round): a stale bit only ever costs extra copying.
//!
//! A member whose bitmap write fails is dropped as failed (its copy may be stale and is never
//! read again: failed members are not assembled); a round that cannot get a buffer or channel
//! for every member is retried whole. (Narrow window left: a crash after such a failure and
//! before the superblocks record the member failed, then a restart with only that member and
//! the away one, would read its stale copy.)
//!
//! **Trust.** The superblock flags each missing member whose missed writes are all in the
//! bitmap (`tracked`). At assembly the bitmap is read from every present in-sync member and
//! their bits ORed; if any copy is unreadable or invalid (magic, version, CRC, UUID,
//! geometry), the tracked members are treated as entirely dirty (full rebuild): garbage is
//! never trusted.
//!
//! Thread contract: the control (app) thread.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ferrite_bdev::uuid::Uuid;
use ferrite_bdev::{Desc, DmaBuf, IoStatus};

use super::{Raid, RaidSt};
use crate::ctlio::{self, CtlOp, CtlResult};
use crate::superblock::crc32c;
use crate::types::RaidLevel;

/// Byte offset of the bitmap on every member.
pub(crate) const OFFSET: u64 = 64 * 1024;
/// Header bytes before the bits.
const HEADER: usize = 64;
/// Most regions of a persisted bitmap (64 KiB of bits).
pub(crate) const MAX_REGIONS: u64 = 1 << 19;
const MAGIC: [u8; 8] = *b"FERAIDBM";
const VERSION: u32 = 1;

/// Bytes the bitmap of `regions` regions occupies with `bs`-byte blocks.
pub(crate) fn len_for(regions: u64, bs: u32) -> usize {
    let raw = HEADER as u64 + regions.div_ceil(8);
    (raw.div_ceil(u64::from(bs)) * u64::from(bs)) as usize
}

/// True if every member's reserved area has room for the largest bitmap.
pub(crate) fn fits(st: &RaidSt) -> bool {
    let bs = u64::from(st.block_size);
    let need = OFFSET + len_for(MAX_REGIONS, st.block_size) as u64;
    let large = ferrite_bdev::buf::stats()
        .map(|s| s.large_size as u64)
        .unwrap_or(0);
    bs != 0
        && len_for(MAX_REGIONS, st.block_size) as u64 <= large
        && st.slots.iter().all(|s| s.data_offset * bs >= need)
}

/// Serialises `words` (`regions` regions of 2^`shift` blocks) into `out` (zeroed first).
pub(crate) fn encode(uuid: Uuid, shift: u32, regions: u64, words: &[u64], out: &mut [u8]) {
    out.fill(0);
    out[0..8].copy_from_slice(&MAGIC);
    out[8..12].copy_from_slice(&VERSION.to_le_bytes());
    out[16..32].copy_from_slice(&uuid.0);
    out[32..36].copy_from_slice(&shift.to_le_bytes());
    out[36..44].copy_from_slice(&regions.to_le_bytes());
    let nbytes = regions.div_ceil(8) as usize;
    for (i, w) in words.iter().enumerate() {
        for (k, b) in w.to_le_bytes().iter().enumerate() {
            let at = i * 8 + k;
            if at < nbytes {
                out[HEADER + at] = *b;
            }
        }
    }
    let crc = crc32c(&out[..HEADER + nbytes]);
    out[12..16].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes a copy read from disk, expecting this raid's UUID and geometry; the error says
/// why it is refused.
pub(crate) fn decode(
    buf: &[u8],
    uuid: Uuid,
    shift: u32,
    regions: u64,
) -> std::result::Result<Vec<u64>, String> {
    let nbytes = regions.div_ceil(8) as usize;
    if buf.len() < HEADER + nbytes {
        return Err(format!("{} bytes is too short", buf.len()));
    }
    if buf[0..8] != MAGIC {
        return Err("no bitmap magic".into());
    }
    let u32_at = |o: usize| {
        let mut a = [0u8; 4];
        a.copy_from_slice(&buf[o..o + 4]);
        u32::from_le_bytes(a)
    };
    let version = u32_at(8);
    if version != VERSION {
        return Err(format!("unsupported version {version}"));
    }
    let mut hdr = [0u8; HEADER];
    hdr.copy_from_slice(&buf[..HEADER]);
    hdr[12..16].fill(0);
    let mut c = Vec::with_capacity(HEADER + nbytes);
    c.extend_from_slice(&hdr);
    c.extend_from_slice(&buf[HEADER..HEADER + nbytes]);
    let (want, got) = (u32_at(12), crc32c(&c));
    if want != got {
        return Err(format!(
            "bad CRC (stored {want:#010x}, computed {got:#010x})"
        ));
    }
    if buf[16..32] != uuid.0 {
        return Err("written for another raid".into());
    }
    let mut r = [0u8; 8];
    r.copy_from_slice(&buf[36..44]);
    let (s, n) = (u32_at(32), u64::from_le_bytes(r));
    if s != shift || n != regions {
        return Err(format!(
            "geometry {n} regions of 2^{s} blocks, expected {regions} of 2^{shift}"
        ));
    }
    let mut words = vec![0u64; regions.div_ceil(64) as usize];
    for (at, b) in buf[HEADER..HEADER + nbytes].iter().enumerate() {
        words[at / 8] |= u64::from(*b) << (8 * (at % 8));
    }
    Ok(words)
}

/// Region geometry of the persisted bitmap of a raid of `num_blocks` blocks of `bs` bytes:
/// (shift, regions). Same rule as the in-memory bitmap (`register_raid`).
pub(crate) fn geometry(num_blocks: u64, bs: u32) -> (u32, u64) {
    let b = crate::io::Bitmap::with_limit(
        num_blocks,
        (super::WIB_REGION_BYTES / u64::from(bs)).max(1),
        MAX_REGIONS,
        false,
    );
    (b.shift, num_blocks.div_ceil(1u64 << b.shift))
}

/// At configuration: decides whether the bitmap is persisted and, if members recorded as
/// tracked are away, loads it from every present in-sync member (their OR) into
/// `st.wib_loaded`; an invalid copy makes them entirely dirty (they lose `away`).
pub(super) fn load(raid: &Arc<Raid>, then: impl FnOnce() + Send + 'static) {
    let (targets, geo) = {
        let mut st = raid.st();
        st.wib_persist = raid.superblock && raid.level == RaidLevel::Raid1 && fits(&st);
        st.wib_loaded = None;
        let wanted = st.wib_persist && st.slots.iter().any(|s| s.tracked && s.away.is_some());
        if !wanted {
            // Nothing on disk to trust: tracked members (if any) come back in full.
            for s in st.slots.iter_mut().filter(|s| s.tracked) {
                s.away = None;
            }
            drop(st);
            return then();
        }
        let targets: Vec<(String, Arc<Desc>)> = st
            .slots
            .iter()
            .filter(|s| !s.rebuilding && !s.removing)
            .filter_map(|s| s.desc.clone())
            .map(|d| (d.bdev().name().to_string(), d))
            .collect();
        (targets, geometry(st.num_blocks, st.block_size))
    };
    let bs = raid.st().block_size;
    let len = len_for(geo.1, bs);
    let mut ops = Vec::with_capacity(targets.len());
    let mut names = Vec::with_capacity(targets.len());
    for (name, d) in &targets {
        let (Ok(ch), Ok(Some(buf))) = (d.channel(), DmaBuf::get(len)) else {
            continue;
        };
        names.push(name.clone());
        ops.push(CtlOp {
            ch,
            write: false,
            offset: OFFSET / u64::from(bs),
            buf,
            flush: false,
        });
    }
    let complete = ops.len() == targets.len();
    let r = raid.clone();
    ctlio::submit(ops, move |res| {
        let mut acc: Option<Vec<u64>> = Some(vec![0; geo.1.div_ceil(64) as usize]);
        if !complete {
            acc = None;
        }
        for (name, x) in names.iter().zip(res) {
            let got = match (&x.status, &x.buf) {
                (IoStatus::Success, Some(b)) => decode(b.as_slice(), r.uuid, geo.0, geo.1),
                (s, _) => Err(format!("read failed ({s:?})")),
            };
            match got {
                Ok(w) => {
                    if let Some(a) = acc.as_mut() {
                        a.iter_mut().zip(&w).for_each(|(a, w)| *a |= *w);
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        "raid '{}': write-intent bitmap on '{name}' not usable ({e}); members that were away will be rebuilt in full",
                        r.name
                    );
                    acc = None;
                }
            }
        }
        {
            let mut st = r.st();
            match acc {
                Some(w) => {
                    let n: u32 = w.iter().map(|x| x.count_ones()).sum();
                    tracing::info!(
                        "raid '{}': write-intent bitmap loaded: {n} regions written while members were away",
                        r.name
                    );
                    st.wib_loaded = Some(w);
                }
                None => {
                    for s in st.slots.iter_mut().filter(|s| s.tracked) {
                        s.away = None;
                    }
                }
            }
        }
        then()
    });
}

/// One persisting round (see the module docs); asked for by the data path through
/// [`crate::io::Shared::wib_persist_request`], which guarantees one round at a time.
pub(crate) fn persist(raid: &Arc<Raid>) {
    let (shared, device, descs, bs) = {
        let st = raid.st();
        let (Some(sh), Some(dev)) = (st.shared.clone(), st.device.clone()) else {
            return;
        };
        // Only into the reserved area of a raid with a superblock, never into data.
        if !st.wib_persist || !sh.wib.persisted() {
            sh.wib_flush.store(0, Ordering::Release);
            return;
        }
        let descs: Vec<(usize, Arc<Desc>)> = st
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.removing)
            .filter_map(|(i, s)| s.desc.clone().map(|d| (i, d)))
            .collect();
        (sh, dev, descs, st.block_size)
    };
    let words = shared.wib.snapshot();
    let shift = shared.wib.shift;
    let regions = shared.num_blocks.div_ceil(1u64 << shift);
    let len = len_for(regions, bs);
    let mut ops = Vec::with_capacity(descs.len());
    let mut slots = Vec::with_capacity(descs.len());
    for (slot, d) in &descs {
        let (Ok(ch), Ok(Some(mut buf))) = (d.channel(), DmaBuf::get(len)) else {
            // Every member gets every round (a member left with an older bitmap could later
            // be the only copy read): try the whole round again on a later turn.
            tracing::warn!(
                "raid '{}': no channel or buffer to write the bitmap to '{}'; retrying",
                raid.name,
                d.bdev().name()
            );
            let r = raid.clone();
            let retry = move || persist(&r);
            match &shared.app {
                Some(t) => {
                    if let Err(e) = t.send(retry) {
                        tracing::error!("raid '{}': cannot retry the bitmap: {e}", raid.name);
                    }
                }
                None => retry(),
            }
            return;
        };
        slots.push(*slot);
        encode(raid.uuid, shift, regions, &words, buf.as_mut_slice());
        ops.push(CtlOp {
            ch,
            write: true,
            offset: OFFSET / u64::from(bs),
            buf,
            flush: false,
        });
    }
    let r = raid.clone();
    let sh0 = shared.clone();
    ctlio::submit(ops, move |res| {
        // Then a flush where a write cache could hold it.
        let mut flushed_slots = Vec::new();
        let flushes: Vec<CtlOp> = res
            .into_iter()
            .zip(slots)
            .filter_map(|(x, slot): (CtlResult, usize)| {
                if x.status != IoStatus::Success {
                    // Its bitmap may be stale now: it must never be read as a copy again.
                    tracing::error!(
                        "raid '{}': bitmap write to '{}' failed ({:?}); dropping the member",
                        r.name,
                        x.ch.bdev().name(),
                        x.status
                    );
                    sh0.fail_slot(slot);
                    return None;
                }
                let buf = x.buf?;
                let op = x.ch.bdev().write_cache().then_some(CtlOp {
                    ch: x.ch,
                    write: false,
                    offset: 0,
                    buf,
                    flush: true,
                })?;
                flushed_slots.push(slot);
                Some(op)
            })
            .collect();
        let r2 = r.clone();
        ctlio::submit(flushes, move |res| {
            for (x, &slot) in res.iter().zip(&flushed_slots) {
                if x.status != IoStatus::Success {
                    // Its bitmap may sit in a cache it could not make durable: the writes
                    // the bitmap lets go now must not count on it.
                    tracing::error!(
                        "raid '{}': bitmap flush on '{}' failed ({:?}); dropping the member",
                        r.name,
                        x.ch.bdev().name(),
                        x.status
                    );
                    shared.fail_slot(slot);
                }
            }
            shared.wib.set_durable(&words);
            let sh = shared.clone();
            let walk = device
                .for_each_channel(crate::raid1::bitmap_persisted, move || round_done(&r2, &sh));
            if let Err(e) = walk {
                tracing::error!("raid '{}': cannot resume waiting writes: {e}", r.name);
            }
        });
    });
}

/// End of a round: another if asked meanwhile, else idle.
fn round_done(raid: &Arc<Raid>, sh: &Arc<crate::io::Shared>) {
    let again = sh
        .wib_flush
        .compare_exchange(2, 1, Ordering::AcqRel, Ordering::Acquire)
        .is_ok();
    if again {
        persist(raid);
    } else {
        sh.wib_flush.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let u = Uuid::new_v4();
        let words = vec![0x8000_0000_0000_0001u64, 0x5];
        let mut buf = vec![0u8; len_for(70, 512)];
        encode(u, 7, 70, &words, &mut buf);
        assert_eq!(decode(&buf, u, 7, 70), Ok(words.clone()));
        // Another raid, another geometry.
        assert!(decode(&buf, Uuid::new_v4(), 7, 70).is_err());
        assert!(decode(&buf, u, 8, 70).is_err());
        assert!(decode(&buf, u, 7, 71).is_err());
        // Any flipped byte of the header or bits is caught.
        for i in 0..HEADER + 9 {
            let mut bad = buf.clone();
            bad[i] ^= 0x10;
            assert!(decode(&bad, u, 7, 70).is_err(), "flip at {i} accepted");
        }
        assert!(decode(&buf[..40], u, 7, 70).is_err());
        assert!(decode(&vec![0u8; 512], u, 7, 70).is_err());
    }

    #[test]
    fn geometry_fits_one_buffer() {
        for (blocks, bs) in [(1u64 << 20, 512u32), (1 << 40, 512), (1 << 30, 4096)] {
            let (shift, regions) = geometry(blocks, bs);
            assert!(regions <= MAX_REGIONS);
            assert!(regions << shift >= blocks);
            assert!(len_for(regions, bs) <= HEADER.max(512) + (MAX_REGIONS / 8) as usize + 4096);
        }
    }
}
