//! Helpers for the raid1 tests: a raid1 over fresh disks with an open channel and a model
//! of its content, members by slot, disks added later, control calls started without waiting.

use std::sync::Mutex;

use ferrite_bdev::Desc;
use ferrite_raid::RaidOpts;

use super::*;

pub const BS: usize = 512;
pub const BLOCKS: u64 = 512;

pub struct Setup {
    pub disks: Vec<Arc<Disk>>,
    pub desc: Option<Desc>,
    pub ch: Option<BdevChannel>,
    pub model: Vec<u8>,
    pub arena: Arena,
    pub tag: u64,
}

impl Setup {
    /// Submits a write of fresh data (recorded in the model) without waiting.
    pub fn write(&mut self, h: &mut Harness, off: u64, n: u64) {
        self.tag += 1;
        let data = noise(self.tag * 7919 + off, n as usize * BS);
        self.model[off as usize * BS..(off + n) as usize * BS].copy_from_slice(&data);
        let (ch, arena, tag) = (self.ch.as_ref().unwrap(), &self.arena, self.tag);
        h.on(1, || write_at(ch, arena, off, data, tag));
    }

    /// Reads everything back through the raid and compares with the model.
    pub fn verify(&mut self, h: &mut Harness) {
        let (ch, arena) = (self.ch.as_ref().unwrap(), &self.arena);
        let blocks = (self.model.len() / BS) as u64;
        let idx = h.on(1, || read_at(ch, arena, 0, blocks, 77_777));
        h.run_until_idle();
        let d = take_done();
        assert!(d.iter().all(|d| d.status == IoStatus::Success), "{d:?}");
        assert!(
            self.arena.get(idx) == self.model,
            "raid content differs from the model"
        );
    }

    pub fn close(mut self, h: &mut Harness) {
        let ch = self.ch.take();
        let desc = self.desc.take();
        h.on(1, move || drop(ch));
        h.on(1, move || drop(desc));
        h.run_until_idle();
    }
}

pub fn all_ok(what: &str) {
    let d = take_done();
    assert!(
        d.iter().all(|d| d.status == IoStatus::Success),
        "{what}: {:?}",
        d.iter()
            .filter(|d| d.status != IoStatus::Success)
            .collect::<Vec<_>>()
    );
}

/// A raid1 `name` over `n` fresh disks `{name}d{i}`, filled with data.
pub fn raid1(h: &mut Harness, name: &str, n: usize) -> Setup {
    setup(h);
    let disks: Vec<Arc<Disk>> = (0..n).map(|_| Disk::new(512, BLOCKS)).collect();
    let names: Vec<String> = (0..n).map(|i| format!("{name}d{i}")).collect();
    let (d2, n2) = (disks.clone(), names.clone());
    h.on(0, move || {
        for (d, n) in d2.iter().zip(&n2) {
            register_disk(n, d, None);
        }
    });
    let o = RaidOpts {
        name: name.into(),
        raid_level: "raid1".into(),
        base_bdevs: names,
        ..Default::default()
    };
    let (desc, ch) = create_and_open(h, o);
    let mut s = Setup {
        disks,
        desc: Some(desc),
        ch: Some(ch),
        model: vec![0; BLOCKS as usize * BS],
        arena: Arena::default(),
        tag: 0,
    };
    for i in 0..8 {
        s.write(h, i * 64, 64);
    }
    h.run_until_idle();
    all_ok("initial fill");
    s
}

pub fn member_names(name: &str) -> Vec<Option<String>> {
    info(name).unwrap()["base_bdevs_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().map(str::to_string))
        .collect()
}

pub fn add_disk(h: &mut Harness, name: &str) -> Arc<Disk> {
    let d = Disk::new(512, BLOCKS);
    let (d2, n2) = (d.clone(), name.to_string());
    h.on(0, move || {
        register_disk(&n2, &d2, None);
    });
    d
}

/// Starts a control call on thread 0 without waiting; the result lands in the slot.
pub fn start_call(
    h: &mut Harness,
    f: impl FnOnce(Box<dyn FnOnce(ferrite_bdev::Result<()>) + Send>) + Send + 'static,
) -> Arc<Mutex<Option<ferrite_bdev::Result<()>>>> {
    let slot: Arc<Mutex<Option<ferrite_bdev::Result<()>>>> = Arc::new(Mutex::new(None));
    let s2 = slot.clone();
    h.on(0, move || {
        f(Box::new(move |r| {
            *s2.lock().unwrap() = Some(r);
        }))
    });
    slot
}
