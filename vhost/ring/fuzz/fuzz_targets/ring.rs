//! libFuzzer target: the input is a ring configuration, the bytes of a descriptor table /
//! ring, indirect tables and driver/device areas, then a sequence of device operations. The
//! ring must never panic and every segment it returns must lie in guest memory.

#![no_main]

use ferrite_vring::vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use ferrite_vring::{
    Chain, ErrorKind, GuestMemory, InflightRegion, RingAddrs, RingBase, RingConfig, Vring,
};
use libfuzzer_sys::fuzz_target;

const DESC: u64 = 0x1000;
const DRIVER: u64 = 0x20000;
const DEVICE: u64 = 0x30000;
const TABLES: u64 = 0x38000;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn byte(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }
}

fn put(mem: &GuestMemory, at: u64, bytes: &[u8]) {
    let _ = mem.write_slice(bytes, GuestAddress(at));
}

fuzz_target!(|data: &[u8]| {
    let Ok(mem) = GuestMemory::from_ranges(&[
        (GuestAddress(0), 0x40000),
        (GuestAddress(0x100000), 0x100000),
    ]) else {
        return;
    };
    let mut inp = Input(data);
    let b0 = inp.byte();
    let flags = inp.byte();
    let packed = flags & 1 != 0;
    let size: u16 = if packed {
        u16::from(b0 % 64) + 1
    } else {
        1 << (b0 % 9)
    };
    let cfg = RingConfig {
        size,
        addrs: RingAddrs {
            desc: DESC,
            driver: DRIVER,
            device: DEVICE,
        },
        packed,
        event_idx: flags & 2 != 0,
        indirect: flags & 4 != 0,
    };
    // The rest of the input, repeated, fills the ring areas (so that short inputs still make
    // whole tables); the same bytes read backwards drive the operations below.
    let body = inp.0;
    if body.is_empty() {
        return;
    }
    let cyc = |n: usize, skip: usize| -> Vec<u8> {
        body.iter().cycle().skip(skip).take(n).copied().collect()
    };
    put(&mem, DESC, &cyc(16 * usize::from(size), 0));
    put(&mem, TABLES, &cyc(512, 7));
    put(&mem, DRIVER, &cyc(6 + 2 * usize::from(size), 3));
    let base = RingBase::from_vhost(
        u32::from(body[0]) | u32::from(body[body.len() / 2]) << 8,
        packed,
    );
    let Ok(mut dev) = Vring::new(&mem, cfg, base) else {
        return;
    };
    let _region = if flags & 8 != 0 {
        let Ok((reg, _fd, _)) = InflightRegion::create(1, size, packed) else {
            return;
        };
        let Ok(q) = reg.queue(0) else { return };
        if dev.attach_inflight(&mem, q).is_err() {
            return;
        }
        Some(reg)
    } else {
        None
    };
    let ops: Vec<u8> = body.iter().rev().copied().collect();
    let mut inp = Input(&ops);
    let mut chain = Chain::new();
    let mut held: Vec<u16> = Vec::new();
    while !inp.0.is_empty() {
        match inp.byte() % 6 {
            0 | 1 => match dev.pop(&mem, &mut chain) {
                Ok(true) => {
                    for s in chain.segments() {
                        assert!(mem.check_range(GuestAddress(s.addr), s.len as usize));
                    }
                    held.push(chain.id());
                }
                Ok(false) => {}
                Err(e) if e.kind() == ErrorKind::Chain => held.push(chain.id()),
                Err(_) => return,
            },
            2 => {
                if let Some(id) = held.pop() {
                    assert!(dev.push_used(&mem, id, 1).is_ok());
                }
            }
            3 => {
                let _ = dev.publish(&mem);
            }
            4 => {
                let _ = dev.disable_notify(&mem);
                let _ = dev.enable_notify(&mem);
            }
            _ => {
                // the guest writes somewhere in the rings meanwhile
                let at = u64::from(inp.byte()) * 16 % (16 * u64::from(size));
                let b = inp.take(16).to_vec();
                put(&mem, DESC + at, &b);
                let b = inp.take(2).to_vec();
                put(&mem, DRIVER + 2, &b);
            }
        }
    }
});
