//! A core's CPU time as the kernel counts it (`/proc/stat`), for `framework_get_reactors`
//! (SPDK reports the same three figures per reactor, in the kernel's clock ticks).

/// `(usr, sys, irq)` of CPU `core`, in clock ticks (`USER_HZ`) since boot; `None` when
/// `/proc/stat` cannot be read or has no line for the core.
pub fn core_times(core: usize) -> Option<(u64, u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    parse(&text, core)
}

/// The `cpu<core>` line of `text` in `/proc/stat`'s format: user, nice, system, idle,
/// iowait, irq, …
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
    Some((*f.first()?, *f.get(2)?, *f.get(5)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    #[test]
    fn reads_the_core_line() {
        let t = "cpu  9 9 9 9 9 9 9\ncpu0 10 1 20 300 4 5 6 0 0 0\ncpu1 11 2 21 301 5 7 8 0 0 0\n";
        assert_eq!(parse(t, 0), Some((10, 20, 5)));
        assert_eq!(parse(t, 1), Some((11, 21, 7)));
        assert_eq!(parse(t, 2), None, "no such core");
        assert_eq!(parse("cpu0 1 2\n", 0), None, "short line");
        assert_eq!(parse("cpu0 a b c d e f\n", 0), None, "not numbers");
    }

    #[test]
    fn this_machine_has_core_0() {
        let (usr, sys, _irq) = core_times(0).unwrap();
        assert!(usr + sys > 0, "core 0 has run something since boot");
    }
}
