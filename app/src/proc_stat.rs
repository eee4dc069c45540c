//! A core's CPU time as the kernel counts it (`/proc/stat`), for `framework_get_reactors`:
//! as SPDK reports it per reactor, user, system and interrupt time (hard and soft) in the
//! kernel's clock ticks, counted from the target's start ([`init`]).

use std::sync::OnceLock;

/// `/proc/stat` as it was at start-up.
static START: OnceLock<String> = OnceLock::new();

/// Takes the start-up reading. Thread contract: any thread; the first call wins.
pub fn init() {
    if let Ok(t) = std::fs::read_to_string("/proc/stat") {
        let _ = START.set(t);
    }
}

/// Reads `/proc/stat` now (once for a listing of every core). `None` if it cannot be read.
pub fn snapshot() -> Option<String> {
    std::fs::read_to_string("/proc/stat").ok()
}

/// `(usr, sys, irq)` of CPU `core` in `now` (a [`snapshot`]) since start-up (since boot if
/// [`init`] was not called); `None` when there is no line for the core.
pub fn core_times(now: &str, core: usize) -> Option<(u64, u64, u64)> {
    let (u, s, i) = parse(now, core)?;
    let (u0, s0, i0) = START.get().and_then(|t| parse(t, core)).unwrap_or_default();
    Some((
        u.saturating_sub(u0),
        s.saturating_sub(s0),
        i.saturating_sub(i0),
    ))
}

/// The `cpu<core>` line of `text` in `/proc/stat`'s format (user, nice, system, idle,
/// iowait, irq, softirq, …): user, system, irq + softirq.
fn parse(text: &str, core: usize) -> Option<(u64, u64, u64)> {
    let label = format!("cpu{core}");
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(label.as_str()))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    Some((*f.first()?, *f.get(2)?, f.get(5)? + f.get(6)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    #[test]
    fn reads_the_core_line() {
        let t = "cpu  9 9 9 9 9 9 9\ncpu0 10 1 20 300 4 5 6 0 0 0\ncpu1 11 2 21 301 5 7 8 0 0 0\n";
        assert_eq!(parse(t, 0), Some((10, 20, 11)));
        assert_eq!(parse(t, 1), Some((11, 21, 15)));
        assert_eq!(parse(t, 2), None, "no such core");
        assert_eq!(parse("cpu0 1 2\n", 0), None, "short line");
        assert_eq!(parse("cpu0 a b c d e f\n", 0), None, "not numbers");
    }

    #[test]
    fn counts_from_start_up() {
        let now = snapshot().unwrap();
        let (u, s, i) = parse(&now, 0).unwrap();
        assert!(u + s > 0, "core 0 has run something since boot");
        init();
        let (du, ds, di) = core_times(&snapshot().unwrap(), 0).unwrap();
        assert!(
            du <= u && ds <= s && di <= i,
            "counted from start-up, not boot"
        );
    }
}
