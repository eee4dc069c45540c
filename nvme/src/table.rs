//! A fixed table of DMA-reachable ranges (virtual address, length, bus address) with lock-free
//! lookups: the I/O path translates with it without locking or allocating.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Ranges the table holds at most.
pub const TABLE_SIZE: usize = 256;

struct Entry {
    vaddr: AtomicUsize,
    len: AtomicUsize,
    iova: AtomicU64,
}

/// See the module documentation. Writers serialise on a lock; readers never lock.
pub struct IovaTable {
    entries: [Entry; TABLE_SIZE],
    used: AtomicUsize,
    writer: Mutex<()>,
}

impl Default for IovaTable {
    fn default() -> Self {
        Self::new()
    }
}

impl IovaTable {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            entries: std::array::from_fn(|_| Entry {
                vaddr: AtomicUsize::new(0),
                len: AtomicUsize::new(0),
                iova: AtomicU64::new(0),
            }),
            used: AtomicUsize::new(0),
            writer: Mutex::new(()),
        }
    }

    /// Adds a range; false if the table is full.
    pub fn insert(&self, vaddr: usize, len: usize, iova: u64) -> bool {
        let _g = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let used = self.used.load(Ordering::Acquire);
        // Reuse a freed entry first.
        let idx = (0..used)
            .find(|&i| self.entries[i].len.load(Ordering::Acquire) == 0)
            .unwrap_or(used);
        if idx >= TABLE_SIZE {
            return false;
        }
        let e = &self.entries[idx];
        e.len.store(0, Ordering::Release);
        e.vaddr.store(vaddr, Ordering::Release);
        e.iova.store(iova, Ordering::Release);
        e.len.store(len, Ordering::Release);
        if idx == used {
            self.used.store(used + 1, Ordering::Release);
        }
        true
    }

    /// Removes the range starting at `vaddr`; returns its (length, bus address).
    pub fn remove(&self, vaddr: usize) -> Option<(usize, u64)> {
        let _g = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let used = self.used.load(Ordering::Acquire);
        for e in &self.entries[..used] {
            let len = e.len.load(Ordering::Acquire);
            if len != 0 && e.vaddr.load(Ordering::Acquire) == vaddr {
                e.len.store(0, Ordering::Release);
                return Some((len, e.iova.load(Ordering::Acquire)));
            }
        }
        None
    }

    /// Bus address of `[vaddr, vaddr+len)` if one range holds it all.
    pub fn translate(&self, vaddr: usize, len: usize) -> Option<u64> {
        let used = self.used.load(Ordering::Acquire);
        for e in &self.entries[..used] {
            let l = e.len.load(Ordering::Acquire);
            let v = e.vaddr.load(Ordering::Acquire);
            if l != 0 && vaddr >= v && vaddr.checked_add(len)? <= v + l {
                return Some(e.iova.load(Ordering::Acquire) + (vaddr - v) as u64);
            }
        }
        None
    }

    /// Every range: (vaddr, len, iova).
    pub fn ranges(&self) -> Vec<(usize, usize, u64)> {
        let used = self.used.load(Ordering::Acquire);
        self.entries[..used]
            .iter()
            .filter(|e| e.len.load(Ordering::Acquire) != 0)
            .map(|e| {
                (
                    e.vaddr.load(Ordering::Acquire),
                    e.len.load(Ordering::Acquire),
                    e.iova.load(Ordering::Acquire),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_translate_remove() {
        let t = IovaTable::new();
        assert!(t.insert(0x1000, 0x2000, 0x10_0000));
        assert_eq!(t.translate(0x1800, 0x100), Some(0x10_0800));
        assert_eq!(t.translate(0x2800, 0x1000), None);
        assert_eq!(t.remove(0x1000), Some((0x2000, 0x10_0000)));
        assert_eq!(t.translate(0x1800, 1), None);
        assert!(t.insert(0x5000, 0x1000, 0x20_0000));
        assert_eq!(t.ranges(), vec![(0x5000, 0x1000, 0x20_0000)]);
    }
}
