//! Live progress while a run is going.
//!
//! The engine calls [`ProgressPrinter::update`] once per status interval with the
//! cumulative counters of all jobs merged; the printer derives the interval's rates.
//! On a terminal it redraws one line with `\r` (a bar); otherwise it prints one plain
//! line per interval, e.g. `[ 3.0s] 1234567 IOPS, 4822.5 MiB/s`. `--progress`
//! overrides the choice.

use std::io::{IsTerminal, Write};

use crate::error::BenchError;
use crate::options::{BenchOptions, OutputFormat, ProgressMode};
use crate::stats::Counters;
use crate::units::mib_per_s;

const BAR_WIDTH: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Bar,
    Lines,
    Off,
}

/// Prints progress lines or a progress bar.
#[derive(Debug)]
pub struct ProgressPrinter<W: Write> {
    out: W,
    style: Style,
    total_s: f64,
    prev: Counters,
    prev_s: f64,
    last_len: usize,
}

impl ProgressPrinter<Box<dyn Write + Send>> {
    /// The printer a run with `opts` should use: progress goes to stderr when results
    /// are printed to stdout as JSON (keeping stdout parseable), otherwise to stdout;
    /// `auto` picks the bar when that stream is a terminal.
    pub fn for_options(opts: &BenchOptions) -> Self {
        let total_s = opts.time_s.unwrap_or(0.0);
        if opts.format == OutputFormat::Json {
            let err = std::io::stderr();
            let tty = err.is_terminal();
            ProgressPrinter::new(Box::new(err), opts.progress, tty, total_s)
        } else {
            let out = std::io::stdout();
            let tty = out.is_terminal();
            ProgressPrinter::new(Box::new(out), opts.progress, tty, total_s)
        }
    }
}

impl<W: Write> ProgressPrinter<W> {
    /// A printer writing to `out`. `is_terminal` decides `auto`; `total_s` is the
    /// planned run time (for the bar's fill).
    pub fn new(out: W, mode: ProgressMode, is_terminal: bool, total_s: f64) -> Self {
        let style = match mode {
            ProgressMode::Auto if is_terminal => Style::Bar,
            ProgressMode::Auto | ProgressMode::Lines => Style::Lines,
            ProgressMode::Bar => Style::Bar,
            ProgressMode::None => Style::Off,
        };
        ProgressPrinter {
            out,
            style,
            total_s,
            prev: Counters::default(),
            prev_s: 0.0,
            last_len: 0,
        }
    }

    /// The mode actually in use (`Bar`, `Lines` or `None`).
    pub fn mode(&self) -> ProgressMode {
        match self.style {
            Style::Bar => ProgressMode::Bar,
            Style::Lines => ProgressMode::Lines,
            Style::Off => ProgressMode::None,
        }
    }

    /// Reports the state at `elapsed_s` seconds into the run; `totals` are the
    /// cumulative counters of all jobs. Rates are over the time since the last update.
    pub fn update(&mut self, elapsed_s: f64, totals: &Counters) -> Result<(), BenchError> {
        let dt = elapsed_s - self.prev_s;
        let delta = totals.since(&self.prev);
        self.prev = *totals;
        self.prev_s = elapsed_s;
        if self.style == Style::Off {
            return Ok(());
        }
        let (iops, mibps) = if dt > 0.0 {
            (delta.ios as f64 / dt, mib_per_s(delta.bytes as f64 / dt))
        } else {
            (0.0, 0.0)
        };
        let mut extra = String::new();
        if delta.failed > 0 {
            extra.push_str(&format!(", {} failed", delta.failed));
        }
        if delta.timed_out > 0 {
            extra.push_str(&format!(", {} timed out", delta.timed_out));
        }
        let result = match self.style {
            Style::Lines => writeln!(
                self.out,
                "[{elapsed_s:>4.1}s] {iops:.0} IOPS, {mibps:.1} MiB/s{extra}"
            )
            .and_then(|()| self.out.flush()),
            Style::Bar => {
                let frac = if self.total_s > 0.0 {
                    (elapsed_s / self.total_s).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let filled = (frac * BAR_WIDTH as f64).round() as usize;
                let line = format!(
                    "[{}{}] {:>3.0}% {:.1}/{:.1}s  {:.0} IOPS  {:.1} MiB/s{}",
                    "#".repeat(filled),
                    ".".repeat(BAR_WIDTH - filled),
                    frac * 100.0,
                    elapsed_s,
                    self.total_s,
                    iops,
                    mibps,
                    extra
                );
                let pad = self.last_len.saturating_sub(line.len());
                self.last_len = line.len();
                write!(self.out, "\r{line}{}", " ".repeat(pad)).and_then(|()| self.out.flush())
            }
            Style::Off => Ok(()),
        };
        result.map_err(|source| BenchError::Io {
            context: "cannot write progress".to_string(),
            source,
        })
    }

    /// Ends the progress display (moves past the bar so the report starts on a fresh line).
    pub fn finish(&mut self) -> Result<(), BenchError> {
        if self.style == Style::Bar && self.last_len > 0 {
            self.last_len = 0;
            writeln!(self.out)
                .and_then(|()| self.out.flush())
                .map_err(|source| BenchError::Io {
                    context: "cannot write progress".to_string(),
                    source,
                })?;
        }
        Ok(())
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(ios: u64, bytes: u64) -> Counters {
        Counters {
            ios,
            bytes,
            ..Counters::default()
        }
    }

    #[test]
    fn plain_lines_when_not_a_terminal() {
        let mut p = ProgressPrinter::new(Vec::new(), ProgressMode::Auto, false, 10.0);
        assert_eq!(p.mode(), ProgressMode::Lines);
        p.update(1.0, &counters(1_000_000, 1_000_000 * 4096))
            .unwrap();
        p.update(3.0, &counters(3_469_134, 3_469_134 * 4096))
            .unwrap();
        let mut failing = counters(3_469_200, 3_469_200 * 4096);
        failing.failed = 2;
        failing.timed_out = 1;
        p.update(4.0, &failing).unwrap();
        p.finish().unwrap();
        let text = String::from_utf8(p.into_inner()).unwrap();
        assert_eq!(
            text,
            "[ 1.0s] 1000000 IOPS, 3906.2 MiB/s\n\
             [ 3.0s] 1234567 IOPS, 4822.5 MiB/s\n\
             [ 4.0s] 66 IOPS, 0.3 MiB/s, 2 failed, 1 timed out\n"
        );
    }

    #[test]
    fn bar_on_a_terminal_redraws_one_line() {
        let mut p = ProgressPrinter::new(Vec::new(), ProgressMode::Auto, true, 10.0);
        assert_eq!(p.mode(), ProgressMode::Bar);
        p.update(5.0, &counters(5_000_000, 5_000_000 * 512))
            .unwrap();
        p.update(10.0, &counters(6_000_000, 6_000_000 * 512))
            .unwrap();
        p.finish().unwrap();
        let text = String::from_utf8(p.into_inner()).unwrap();
        assert!(
            text.starts_with(
                "\r[############............]  50% 5.0/10.0s  1000000 IOPS  488.3 MiB/s"
            ),
            "{text:?}"
        );
        assert!(
            text.contains("\r[########################] 100% 10.0/10.0s  200000 IOPS  97.7 MiB/s"),
            "{text:?}"
        );
        // The shorter second line is padded to erase the first.
        let parts: Vec<&str> = text.trim_end_matches('\n').split('\r').collect();
        assert_eq!(parts[1].len(), parts[2].len());
        assert!(text.ends_with('\n'));
        assert_eq!(text.matches('\n').count(), 1);
    }

    #[test]
    fn overrides_and_none() {
        let p = ProgressPrinter::new(Vec::new(), ProgressMode::Lines, true, 1.0);
        assert_eq!(p.mode(), ProgressMode::Lines);
        let p = ProgressPrinter::new(Vec::new(), ProgressMode::Bar, false, 1.0);
        assert_eq!(p.mode(), ProgressMode::Bar);
        let mut p = ProgressPrinter::new(Vec::new(), ProgressMode::None, true, 1.0);
        p.update(1.0, &counters(10, 10)).unwrap();
        p.finish().unwrap();
        assert!(p.into_inner().is_empty());
    }

    #[test]
    fn zero_interval_and_unknown_total() {
        let mut p = ProgressPrinter::new(Vec::new(), ProgressMode::Bar, false, 0.0);
        p.update(0.0, &counters(10, 10)).unwrap();
        let text = String::from_utf8(p.into_inner()).unwrap();
        assert!(
            text.contains("  0% 0.0/0.0s  0 IOPS  0.0 MiB/s"),
            "{text:?}"
        );
        // finish without any bar drawn prints nothing.
        let mut p = ProgressPrinter::new(Vec::new(), ProgressMode::Bar, false, 1.0);
        p.finish().unwrap();
        assert!(p.into_inner().is_empty());
    }

    #[test]
    fn for_options_builds() {
        let opts = BenchOptions {
            progress: ProgressMode::None,
            format: OutputFormat::Json,
            ..BenchOptions::default()
        };
        let mut p = ProgressPrinter::for_options(&opts);
        assert_eq!(p.mode(), ProgressMode::None);
        p.update(1.0, &Counters::default()).unwrap();
        let opts = BenchOptions {
            progress: ProgressMode::Lines,
            ..BenchOptions::default()
        };
        assert_eq!(
            ProgressPrinter::for_options(&opts).mode(),
            ProgressMode::Lines
        );
    }
}
