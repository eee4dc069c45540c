//! Command-line options, parsed with bdevperf's flags.
//!
//! [`BenchOptions::parse_from`] turns argv into typed options (syntax errors only);
//! [`BenchOptions::validate`] then checks ranges and combinations, returning warnings
//! for things bdevperf merely complains about (e.g. `-M` with a non-mixed workload).
//! Checks that need a bdev (block-size multiples) live in [`check_io_size`].

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use clap::Parser;

use crate::cpumask::parse_cpumask;
use crate::error::BenchError;
use crate::rng::mix64;
use crate::units::parse_size;
use crate::workload::Workload;

/// Largest accepted queue depth (`-q`).
pub const MAX_QUEUE_DEPTH: u32 = 65_536;
/// Read percentage used for rw/randrw when `-M` is not given (fio's default; bdevperf
/// requires `-M`).
pub const DEFAULT_RWMIXREAD: u8 = 50;
/// Seconds between progress lines / IOPS samples when `-S` is not given.
pub const DEFAULT_STATUS_INTERVAL_S: f64 = 1.0;

/// How results are printed at the end of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// bdevperf's text table plus our percentile and CPU sections.
    #[default]
    Table,
    /// The same content as JSON (perform_tests-compatible shape).
    Json,
}

impl FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "table" => Ok(OutputFormat::Table),
            "json" => Ok(OutputFormat::Json),
            other => Err(format!(
                "unknown format '{other}'; valid formats are: table, json"
            )),
        }
    }
}

/// How progress is shown while the run is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// A redrawn bar on a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// Always a single line redrawn with `\r`.
    Bar,
    /// Always one plain line per interval.
    Lines,
    /// No progress output.
    None,
}

impl FromStr for ProgressMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(ProgressMode::Auto),
            "bar" => Ok(ProgressMode::Bar),
            "lines" => Ok(ProgressMode::Lines),
            "none" => Ok(ProgressMode::None),
            other => Err(format!(
                "unknown progress mode '{other}'; valid modes are: auto, bar, lines, none"
            )),
        }
    }
}

impl fmt::Display for ProgressMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProgressMode::Auto => "auto",
            ProgressMode::Bar => "bar",
            ProgressMode::Lines => "lines",
            ProgressMode::None => "none",
        })
    }
}

/// The raw argv grammar. Values are taken as strings so that every conversion error is
/// reported by us, in our words, naming the flag.
#[derive(Debug, Parser)]
#[command(
    name = "ferrite-bench",
    about = "bdevperf-compatible block device benchmark",
    disable_version_flag = true
)]
struct RawArgs {
    /// I/O queue depth per job (1..=65536)
    #[arg(
        short = 'q',
        long = "queue-depth",
        value_name = "DEPTH",
        allow_negative_numbers = true
    )]
    queue_depth: Option<String>,
    /// I/O size in bytes; accepts k/m/g suffixes (4k, 128K, 1m)
    #[arg(
        short = 'o',
        long = "io-size",
        value_name = "SIZE",
        allow_negative_numbers = true
    )]
    io_size: Option<String>,
    /// Workload: read, write, randread, randwrite, rw, randrw, verify, reset, unmap, flush, write_zeroes
    #[arg(short = 'w', long = "workload", value_name = "TYPE")]
    workload: Option<String>,
    /// Percentage of reads for rw/randrw (0..=100, default 50)
    #[arg(
        short = 'M',
        long = "rwmixread",
        value_name = "PERCENT",
        allow_negative_numbers = true
    )]
    rwmixread: Option<String>,
    /// Run time in seconds (fractions allowed, e.g. 0.5)
    #[arg(
        short = 't',
        long = "time",
        value_name = "SECONDS",
        allow_negative_numbers = true
    )]
    time: Option<String>,
    /// Only run against this bdev (repeatable; default: all bdevs)
    #[arg(short = 'T', long = "target", value_name = "BDEV")]
    targets: Vec<String>,
    /// Every core submits I/O to every bdev (each core gets a slice of the bdev)
    #[arg(short = 'C', long = "every-core")]
    every_core: bool,
    /// Seconds between progress lines and IOPS samples (default 1)
    #[arg(
        short = 'S',
        long = "status-interval",
        value_name = "SECONDS",
        allow_negative_numbers = true
    )]
    status_interval: Option<String>,
    /// Zipf theta for random workloads (> 0, typically 0.5..1.2)
    #[arg(
        short = 'F',
        long = "zipf",
        value_name = "THETA",
        allow_negative_numbers = true
    )]
    zipf: Option<String>,
    /// Random map: visit every offset once before repeating (random workloads)
    #[arg(short = 'D', long = "random-map")]
    random_map: bool,
    /// Keep a job running after a failed I/O (bdevperf's -f); by default it stops and fails
    #[arg(short = 'f', long = "continue-on-failure")]
    continue_on_failure: bool,
    /// fio-style job file ([global] and [job] sections)
    #[arg(short = 'j', long = "job-file", value_name = "FILE")]
    job_file: Option<PathBuf>,
    /// Reactor CPU mask (hex like 0x3, or a list like [0,2-3])
    #[arg(short = 'm', long = "cpumask", value_name = "MASK")]
    cpumask: Option<String>,
    /// Reactor poll mode: poll (never sleep), adaptive (default: poll while there is work,
    /// sleep while every I/O waits in the kernel or after 1 ms idle) or interrupt (sleep
    /// whenever an iteration finds no work), as `ferrite tgt --poll-mode`
    #[arg(long = "poll-mode", value_name = "MODE")]
    poll_mode: Option<String>,
    /// JSON configuration file for the app (bdev creation etc.)
    #[arg(short = 'c', long = "json", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print results as JSON (same as --format json)
    #[arg(long = "output-json")]
    output_json: bool,
    /// Result format: table or json
    #[arg(long = "format", value_name = "FORMAT")]
    format: Option<String>,
    /// Write an SVG plot (latency percentiles and IOPS over time) to FILE
    #[arg(long = "plot", value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Seconds after which an outstanding I/O counts as timed out (0 = off)
    #[arg(
        short = 'k',
        long = "timeout",
        value_name = "SECONDS",
        allow_negative_numbers = true
    )]
    timeout: Option<String>,
    /// Seed for random offsets and verify patterns (decimal or 0x hex; default: random)
    #[arg(long = "seed", value_name = "SEED", allow_negative_numbers = true)]
    seed: Option<String>,
    /// Progress display: auto, bar, lines or none
    #[arg(long = "progress", value_name = "MODE")]
    progress: Option<String>,
}

/// Typed benchmark options. Construct with [`BenchOptions::parse_from`] (or build one
/// directly, e.g. in tests) and check with [`BenchOptions::validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct BenchOptions {
    /// `-q`: queue depth per job. Required unless a job file supplies it.
    pub queue_depth: Option<u32>,
    /// `-o`: I/O size in bytes. Required unless a job file supplies it.
    pub io_size: Option<u64>,
    /// `-w`: workload. Required unless a job file supplies it.
    pub workload: Option<Workload>,
    /// `-M`: read percentage for rw/randrw as given (validated to 0..=100).
    pub rwmixread: Option<u32>,
    /// `-t`: run time in seconds. Required.
    pub time_s: Option<f64>,
    /// `-T`: only these bdevs (empty = all).
    pub targets: Vec<String>,
    /// `-C`: every core drives every bdev.
    pub every_core: bool,
    /// `-S`: seconds between progress lines and IOPS-over-time samples.
    pub status_interval_s: f64,
    /// `-F`: zipf theta for random workloads.
    pub zipf_theta: Option<f64>,
    /// `-D`: random map (no repeated offsets within a pass).
    pub random_map: bool,
    /// `-f`: keep a job running after a failed I/O (default: the job stops, as bdevperf's).
    pub continue_on_failure: bool,
    /// `-j`: job file path.
    pub job_file: Option<PathBuf>,
    /// `-m`: reactor CPU mask, passed through to the app.
    pub cpumask: Option<String>,
    /// `--poll-mode`: the reactors' poll mode (`None`: adaptive, which polls exactly as
    /// bdevperf's reactors while there is work; see docs/PERFORMANCE.md).
    pub poll_mode: Option<ferrite_reactor::PollMode>,
    /// `-c/--json`: app JSON configuration file.
    pub config: Option<PathBuf>,
    /// `--format` / `--output-json`.
    pub format: OutputFormat,
    /// `--plot`: SVG output path.
    pub plot: Option<PathBuf>,
    /// `-k`: I/O timeout in seconds (`None` = disabled, as `-k 0`).
    pub timeout_s: Option<f64>,
    /// `--seed`: run seed (random per run unless given).
    pub seed: u64,
    /// `--progress`.
    pub progress: ProgressMode,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            queue_depth: None,
            io_size: None,
            workload: None,
            rwmixread: None,
            time_s: None,
            targets: Vec::new(),
            every_core: false,
            status_interval_s: DEFAULT_STATUS_INTERVAL_S,
            zipf_theta: None,
            random_map: false,
            continue_on_failure: false,
            job_file: None,
            cpumask: None,
            poll_mode: None,
            config: None,
            format: OutputFormat::Table,
            plot: None,
            timeout_s: None,
            seed: 0,
            progress: ProgressMode::Auto,
        }
    }
}

fn parse_uint<T: FromStr>(option: &'static str, text: &str) -> Result<T, BenchError> {
    let t = text.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BenchError::invalid(
            option,
            format!("'{text}' is not a whole number"),
        ));
    }
    t.parse()
        .map_err(|_| BenchError::invalid(option, format!("'{text}' is too large")))
}

fn parse_seconds(option: &'static str, text: &str) -> Result<f64, BenchError> {
    let v: f64 = text
        .trim()
        .parse()
        .map_err(|_| BenchError::invalid(option, format!("'{text}' is not a number of seconds")))?;
    Ok(v)
}

fn parse_seed(text: &str) -> Result<u64, BenchError> {
    let t = text.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => t.parse().ok(),
    };
    parsed.ok_or_else(|| {
        BenchError::invalid(
            "--seed",
            format!("'{text}' is not an unsigned 64-bit number (decimal or 0x hex)"),
        )
    })
}

/// A seed that differs from run to run (time, process id and an address mixed).
pub fn seed_from_entropy() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let local = 0u8;
    let addr = std::ptr::addr_of!(local) as usize as u64;
    mix64(nanos ^ (u64::from(std::process::id()) << 32) ^ mix64(addr))
}

impl BenchOptions {
    /// Parses argv (the first item is the program name, as in `std::env::args_os`).
    ///
    /// Only syntax and value conversion are checked here; call [`validate`](Self::validate)
    /// for ranges and combinations. `--help` yields [`BenchError::Help`] carrying the help.
    pub fn parse_from<I, T>(args: I) -> Result<BenchOptions, BenchError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let raw = RawArgs::try_parse_from(args).map_err(|e| {
            use clap::error::ErrorKind as K;
            let text = e.render().to_string();
            match e.kind() {
                K::DisplayHelp
                | K::DisplayVersion
                | K::DisplayHelpOnMissingArgumentOrSubcommand => BenchError::Help(text),
                _ => BenchError::Usage(text.trim_end().to_string()),
            }
        })?;
        let mut opts = BenchOptions {
            targets: raw.targets,
            every_core: raw.every_core,
            random_map: raw.random_map,
            continue_on_failure: raw.continue_on_failure,
            job_file: raw.job_file,
            cpumask: raw.cpumask,
            config: raw.config,
            plot: raw.plot,
            ..BenchOptions::default()
        };
        if let Some(m) = raw.poll_mode {
            opts.poll_mode = Some(m.parse().map_err(|_| {
                BenchError::invalid(
                    "--poll-mode",
                    format!("unknown poll mode '{m}' (expected poll, adaptive or interrupt)"),
                )
            })?);
        }
        if let Some(q) = raw.queue_depth {
            opts.queue_depth = Some(parse_uint("-q/--queue-depth", &q)?);
        }
        if let Some(o) = raw.io_size {
            opts.io_size =
                Some(parse_size(&o).map_err(|r| BenchError::invalid("-o/--io-size", r))?);
        }
        if let Some(w) = raw.workload {
            opts.workload = Some(
                w.parse()
                    .map_err(|r: String| BenchError::invalid("-w/--workload", r))?,
            );
        }
        if let Some(m) = raw.rwmixread {
            opts.rwmixread = Some(parse_uint("-M/--rwmixread", &m)?);
        }
        if let Some(t) = raw.time {
            opts.time_s = Some(parse_seconds("-t/--time", &t)?);
        }
        if let Some(s) = raw.status_interval {
            opts.status_interval_s = parse_seconds("-S/--status-interval", &s)?;
        }
        if let Some(f) = raw.zipf {
            let theta: f64 = f
                .trim()
                .parse()
                .map_err(|_| BenchError::invalid("-F/--zipf", format!("'{f}' is not a number")))?;
            opts.zipf_theta = Some(theta);
        }
        if let Some(k) = raw.timeout {
            let v = parse_seconds("-k/--timeout", &k)?;
            opts.timeout_s = if v == 0.0 { None } else { Some(v) };
        }
        opts.seed = match raw.seed {
            Some(s) => parse_seed(&s)?,
            None => seed_from_entropy(),
        };
        if let Some(p) = raw.progress {
            opts.progress = p
                .parse()
                .map_err(|r: String| BenchError::invalid("--progress", r))?;
        }
        let format = match raw.format {
            Some(f) => Some(
                f.parse::<OutputFormat>()
                    .map_err(|r| BenchError::invalid("--format", r))?,
            ),
            None => None,
        };
        opts.format = match (raw.output_json, format) {
            (true, Some(OutputFormat::Table)) => {
                return Err(BenchError::invalid(
                    "--output-json",
                    "conflicts with --format table",
                ))
            }
            (true, _) => OutputFormat::Json,
            (false, f) => f.unwrap_or_default(),
        };
        Ok(opts)
    }

    /// [`parse_from`](Self::parse_from) followed by [`validate`](Self::validate).
    pub fn parse_and_validate<I, T>(args: I) -> Result<(BenchOptions, Vec<String>), BenchError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let opts = Self::parse_from(args)?;
        let warnings = opts.validate()?;
        Ok((opts, warnings))
    }

    /// Checks ranges and combinations. Returns warnings (things that are ignored or
    /// defaulted) on success, or the first error found.
    pub fn validate(&self) -> Result<Vec<String>, BenchError> {
        let mut warnings = Vec::new();
        let job_file = self.job_file.is_some();

        if let Some(q) = self.queue_depth {
            if q == 0 || q > MAX_QUEUE_DEPTH {
                return Err(BenchError::invalid(
                    "-q/--queue-depth",
                    format!("must be between 1 and {MAX_QUEUE_DEPTH}, got {q}"),
                ));
            }
        } else if !job_file {
            return Err(BenchError::invalid(
                "-q/--queue-depth",
                "is required unless -j/--job-file is given",
            ));
        }
        if let Some(o) = self.io_size {
            if o == 0 {
                return Err(BenchError::invalid(
                    "-o/--io-size",
                    "must be greater than 0",
                ));
            }
            if o > u64::from(u32::MAX) {
                return Err(BenchError::invalid(
                    "-o/--io-size",
                    format!("{o} is larger than the 4 GiB maximum for one I/O"),
                ));
            }
        } else if !job_file {
            return Err(BenchError::invalid(
                "-o/--io-size",
                "is required unless -j/--job-file is given",
            ));
        }
        if self.workload.is_none() && !job_file {
            return Err(BenchError::invalid(
                "-w/--workload",
                format!(
                    "is required unless -j/--job-file is given; valid workloads are: {}",
                    Workload::valid_names()
                ),
            ));
        }
        if let Some(m) = self.rwmixread {
            if m > 100 {
                return Err(BenchError::invalid(
                    "-M/--rwmixread",
                    format!("must be between 0 and 100, got {m}"),
                ));
            }
        }
        match self.time_s {
            None => {
                return Err(BenchError::invalid(
                    "-t/--time",
                    "is required (run time in seconds)",
                ))
            }
            Some(t) if !(t.is_finite() && t > 0.0) => {
                return Err(BenchError::invalid(
                    "-t/--time",
                    format!("must be a positive number of seconds, got {t}"),
                ))
            }
            Some(_) => {}
        }
        if !(self.status_interval_s.is_finite() && self.status_interval_s > 0.0) {
            return Err(BenchError::invalid(
                "-S/--status-interval",
                format!(
                    "must be a positive number of seconds, got {}",
                    self.status_interval_s
                ),
            ));
        }
        if let Some(k) = self.timeout_s {
            if !(k.is_finite() && k >= 0.0) {
                return Err(BenchError::invalid(
                    "-k/--timeout",
                    format!("must be 0 (off) or a positive number of seconds, got {k}"),
                ));
            }
        }
        if let Some(theta) = self.zipf_theta {
            if !(theta.is_finite() && theta > 0.0) {
                return Err(BenchError::invalid(
                    "-F/--zipf",
                    format!("theta must be greater than 0 (typically 0.5 to 1.2), got {theta}"),
                ));
            }
            if self.random_map {
                return Err(BenchError::invalid(
                    "-F/--zipf",
                    "cannot be combined with -D/--random-map (zipf repeats hot offsets by design)",
                ));
            }
        }
        if let Some(w) = self.workload {
            if !w.is_random() {
                if self.zipf_theta.is_some() {
                    return Err(BenchError::invalid(
                        "-F/--zipf",
                        format!(
                            "needs a random workload (randread, randwrite or randrw), not '{w}'"
                        ),
                    ));
                }
                if self.random_map {
                    return Err(BenchError::invalid(
                        "-D/--random-map",
                        format!(
                            "needs a random workload (randread, randwrite or randrw), not '{w}'"
                        ),
                    ));
                }
            }
            if w.is_mixed() {
                if self.rwmixread.is_none() && !job_file {
                    warnings.push(format!(
                        "-M/--rwmixread not given for '{w}'; using {DEFAULT_RWMIXREAD}% reads \
                         (bdevperf would require -M)"
                    ));
                }
            } else if self.rwmixread.is_some() {
                warnings.push(format!(
                    "-M/--rwmixread is ignored for workload '{w}'; it applies only to rw and randrw"
                ));
            }
        }
        if job_file && self.every_core {
            warnings.push("-C is ignored when -j/--job-file is given".to_string());
        }
        if let Some(mask) = &self.cpumask {
            parse_cpumask(mask)?;
        }
        let mut seen = std::collections::HashSet::new();
        for t in &self.targets {
            if t.trim().is_empty() {
                return Err(BenchError::invalid("-T/--target", "bdev name is empty"));
            }
            if !seen.insert(t.as_str()) {
                warnings.push(format!(
                    "-T/--target '{t}' given more than once; using it once"
                ));
            }
        }
        Ok(warnings)
    }

    /// The effective read percentage for mixed workloads (`-M`, default 50).
    pub fn rwmixread_or_default(&self) -> u8 {
        self.rwmixread
            .map_or(DEFAULT_RWMIXREAD, |m| m.min(100) as u8)
    }

    /// The run time as a `Duration` (zero if `-t` was not given).
    pub fn run_time(&self) -> std::time::Duration {
        self.time_s.filter(|t| t.is_finite() && *t > 0.0).map_or(
            std::time::Duration::ZERO,
            std::time::Duration::from_secs_f64,
        )
    }

    /// The I/O timeout as a `Duration`, if enabled.
    pub fn io_timeout(&self) -> Option<std::time::Duration> {
        self.timeout_s
            .filter(|t| t.is_finite() && *t > 0.0)
            .map(std::time::Duration::from_secs_f64)
    }
}

/// Checks that an I/O size is a whole number of the bdev's blocks.
pub fn check_io_size(io_size: u64, block_size: u32, bdev_name: &str) -> Result<(), BenchError> {
    if block_size == 0 || io_size == 0 || !io_size.is_multiple_of(u64::from(block_size)) {
        return Err(BenchError::IoSizeNotMultiple {
            io_size,
            block_size,
            bdev: bdev_name.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn parse(args: &str) -> Result<BenchOptions, BenchError> {
        BenchOptions::parse_from(std::iter::once("ferrite-bench").chain(args.split_whitespace()))
    }

    fn parse_ok(args: &str) -> BenchOptions {
        parse(args).unwrap_or_else(|e| panic!("{args}: {e}"))
    }

    fn validate_err(args: &str) -> String {
        let e = parse_ok(args).validate().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidOption, "{e}");
        e.to_string()
    }

    fn base() -> &'static str {
        "-q 32 -o 4k -w randread -t 10"
    }

    #[test]
    fn short_flags() {
        let o = parse_ok(
            "-q 128 -o 128K -w randrw -M 70 -t 0.5 -T Null0 -T Malloc1 -C -S 2 -F 0.9 \
             -j jobs.fio -m 0x3 -c conf.json -k 5 --seed 42",
        );
        assert_eq!(o.queue_depth, Some(128));
        assert_eq!(o.io_size, Some(128 * 1024));
        assert_eq!(o.workload, Some(Workload::RandRw));
        assert_eq!(o.rwmixread, Some(70));
        assert_eq!(o.time_s, Some(0.5));
        assert_eq!(o.targets, vec!["Null0".to_string(), "Malloc1".to_string()]);
        assert!(o.every_core);
        assert_eq!(o.status_interval_s, 2.0);
        assert_eq!(o.zipf_theta, Some(0.9));
        assert_eq!(o.job_file, Some(PathBuf::from("jobs.fio")));
        assert_eq!(o.cpumask.as_deref(), Some("0x3"));
        assert_eq!(o.config, Some(PathBuf::from("conf.json")));
        assert_eq!(o.timeout_s, Some(5.0));
        assert_eq!(o.seed, 42);
        assert_eq!(o.rwmixread_or_default(), 70);
        assert_eq!(o.run_time(), std::time::Duration::from_millis(500));
        assert_eq!(o.io_timeout(), Some(std::time::Duration::from_secs(5)));
    }

    #[test]
    fn long_flags() {
        let o = parse_ok(
            "--queue-depth 1 --io-size 1m --workload write --time 3 --target A \
             --every-core --status-interval 0.25 --random-map --job-file j --cpumask [0-1] \
             --json c.json --output-json --plot out.svg --timeout 0 --seed 0xff --progress lines \
             --poll-mode interrupt",
        );
        assert_eq!(o.poll_mode, Some(ferrite_reactor::PollMode::Interrupt));
        assert_eq!(o.queue_depth, Some(1));
        assert_eq!(o.io_size, Some(1 << 20));
        assert_eq!(o.workload, Some(Workload::Write));
        assert_eq!(o.time_s, Some(3.0));
        assert_eq!(o.targets, vec!["A".to_string()]);
        assert!(o.every_core && o.random_map);
        assert_eq!(o.status_interval_s, 0.25);
        assert_eq!(o.format, OutputFormat::Json);
        assert_eq!(o.plot, Some(PathBuf::from("out.svg")));
        assert_eq!(o.timeout_s, None, "-k 0 means disabled");
        assert_eq!(o.seed, 255);
        assert_eq!(o.progress, ProgressMode::Lines);
        assert_eq!(o.io_timeout(), None);
    }

    #[test]
    fn defaults() {
        let o = parse_ok(base());
        assert_eq!(o.status_interval_s, DEFAULT_STATUS_INTERVAL_S);
        assert_eq!(o.format, OutputFormat::Table);
        assert_eq!(o.progress, ProgressMode::Auto);
        assert_eq!(o.rwmixread_or_default(), DEFAULT_RWMIXREAD);
        assert!(o.targets.is_empty() && !o.every_core && !o.random_map);
        assert_eq!(o.validate().unwrap(), Vec::<String>::new());
    }

    #[test]
    fn seeds_differ_between_runs_unless_given() {
        let a = parse_ok(base()).seed;
        let b = parse_ok(base()).seed;
        assert_ne!(a, b);
        assert_eq!(parse_ok("--seed 7").seed, 7);
        let e = parse("--seed -1").unwrap_err();
        assert!(
            e.to_string().contains("--seed: '-1' is not an unsigned"),
            "{e}"
        );
    }

    #[test]
    fn poll_mode_flag() {
        assert_eq!(parse_ok("-q 1").poll_mode, None);
        assert_eq!(
            parse_ok("--poll-mode adaptive").poll_mode,
            Some(ferrite_reactor::PollMode::Adaptive)
        );
        let e = parse("--poll-mode busy").unwrap_err();
        assert_eq!(
            e.to_string(),
            "--poll-mode: unknown poll mode 'busy' (expected poll, adaptive or interrupt)"
        );
    }

    #[test]
    fn format_flag() {
        assert_eq!(parse_ok("--format json").format, OutputFormat::Json);
        assert_eq!(parse_ok("--format table").format, OutputFormat::Table);
        assert_eq!(
            parse_ok("--format json --output-json").format,
            OutputFormat::Json
        );
        let e = parse("--format xml").unwrap_err();
        assert_eq!(
            e.to_string(),
            "--format: unknown format 'xml'; valid formats are: table, json"
        );
        let e = parse("--format table --output-json").unwrap_err();
        assert_eq!(
            e.to_string(),
            "--output-json: conflicts with --format table"
        );
    }

    #[test]
    fn progress_modes() {
        for (s, m) in [
            ("auto", ProgressMode::Auto),
            ("bar", ProgressMode::Bar),
            ("lines", ProgressMode::Lines),
            ("none", ProgressMode::None),
        ] {
            assert_eq!(parse_ok(&format!("--progress {s}")).progress, m);
            assert_eq!(m.to_string(), s);
        }
        let e = parse("--progress fancy").unwrap_err();
        assert!(
            e.to_string().contains("unknown progress mode 'fancy'"),
            "{e}"
        );
    }

    #[test]
    fn conversion_errors_name_the_flag() {
        let cases = [
            ("-q abc", "-q/--queue-depth: 'abc' is not a whole number"),
            ("-q -1", "-q/--queue-depth: '-1' is not a whole number"),
            (
                "-q 99999999999",
                "-q/--queue-depth: '99999999999' is too large",
            ),
            (
                "-o 4x",
                "-o/--io-size: '4x' has an unknown suffix 'x' (use k, m, g or t)",
            ),
            ("-M 5.5", "-M/--rwmixread: '5.5' is not a whole number"),
            ("-t soon", "-t/--time: 'soon' is not a number of seconds"),
            (
                "-S x",
                "-S/--status-interval: 'x' is not a number of seconds",
            ),
            ("-k x", "-k/--timeout: 'x' is not a number of seconds"),
            ("-F hot", "-F/--zipf: 'hot' is not a number"),
        ];
        for (args, msg) in cases {
            let e = parse(args).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidOption, "{args}");
            assert_eq!(e.to_string(), msg, "{args}");
        }
    }

    #[test]
    fn unknown_workload_lists_valid_ones() {
        let e = parse("-w randomread").unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("-w/--workload: unknown workload 'randomread'"),
            "{s}"
        );
        for w in Workload::ALL {
            assert!(s.contains(w.as_str()), "{s}");
        }
    }

    #[test]
    fn usage_and_help() {
        let e = parse("--bogus").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Usage);
        assert!(e.to_string().contains("--bogus"), "{e}");
        let e = parse("-q").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Usage);
        let e = parse("--help").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Help);
        let help = e.to_string();
        for flag in [
            "--queue-depth",
            "--io-size",
            "--rwmixread",
            "--output-json",
            "--plot",
        ] {
            assert!(help.contains(flag), "{flag} missing from help");
        }
    }

    #[test]
    fn validate_queue_depth() {
        assert_eq!(
            validate_err("-q 0 -o 4k -w read -t 1"),
            "-q/--queue-depth: must be between 1 and 65536, got 0"
        );
        assert_eq!(
            validate_err("-q 65537 -o 4k -w read -t 1"),
            "-q/--queue-depth: must be between 1 and 65536, got 65537"
        );
        parse_ok("-q 65536 -o 4k -w read -t 1").validate().unwrap();
        assert_eq!(
            validate_err("-o 4k -w read -t 1"),
            "-q/--queue-depth: is required unless -j/--job-file is given"
        );
    }

    #[test]
    fn validate_io_size() {
        assert_eq!(
            validate_err("-q 1 -o 0 -w read -t 1"),
            "-o/--io-size: must be greater than 0"
        );
        assert!(validate_err("-q 1 -o 8g -w read -t 1").contains("larger than the 4 GiB"));
        assert!(validate_err("-q 1 -w read -t 1").contains("-o/--io-size: is required"));
    }

    #[test]
    fn validate_workload_required() {
        let s = validate_err("-q 1 -o 4k -t 1");
        assert!(s.starts_with("-w/--workload: is required"), "{s}");
        assert!(s.contains("randrw"), "{s}");
    }

    #[test]
    fn validate_rwmixread() {
        assert_eq!(
            validate_err("-q 1 -o 4k -w rw -M 101 -t 1"),
            "-M/--rwmixread: must be between 0 and 100, got 101"
        );
        let w = parse_ok("-q 1 -o 4k -w rw -M 100 -t 1").validate().unwrap();
        assert!(w.is_empty(), "{w:?}");
        let w = parse_ok("-q 1 -o 4k -w read -M 30 -t 1")
            .validate()
            .unwrap();
        assert_eq!(
            w,
            vec!["-M/--rwmixread is ignored for workload 'read'; it applies only to rw and randrw"]
        );
        let w = parse_ok("-q 1 -o 4k -w randrw -t 1").validate().unwrap();
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("using 50% reads"), "{w:?}");
    }

    #[test]
    fn validate_time() {
        assert_eq!(
            validate_err("-q 1 -o 4k -w read"),
            "-t/--time: is required (run time in seconds)"
        );
        assert_eq!(
            validate_err("-q 1 -o 4k -w read -t 0"),
            "-t/--time: must be a positive number of seconds, got 0"
        );
        assert!(validate_err("-q 1 -o 4k -w read -t -2").contains("got -2"));
        assert!(validate_err("-q 1 -o 4k -w read -t inf").contains("got inf"));
    }

    #[test]
    fn validate_intervals() {
        assert!(validate_err(&format!("{} -S 0", base())).starts_with("-S/--status-interval"));
        assert!(validate_err(&format!("{} -k -1", base())).starts_with("-k/--timeout"));
    }

    #[test]
    fn validate_zipf() {
        parse_ok("-q 1 -o 4k -w randread -t 1 -F 1.2")
            .validate()
            .unwrap();
        assert_eq!(
            validate_err("-q 1 -o 4k -w randread -t 1 -F 0"),
            "-F/--zipf: theta must be greater than 0 (typically 0.5 to 1.2), got 0"
        );
        assert!(validate_err("-q 1 -o 4k -w randread -t 1 -F -1").contains("got -1"));
        assert_eq!(
            validate_err("-q 1 -o 4k -w read -t 1 -F 0.9"),
            "-F/--zipf: needs a random workload (randread, randwrite or randrw), not 'read'"
        );
        assert!(validate_err("-q 1 -o 4k -w randread -t 1 -F 0.9 -D")
            .contains("cannot be combined with -D/--random-map"));
    }

    #[test]
    fn validate_random_map() {
        parse_ok("-q 1 -o 4k -w randwrite -t 1 -D")
            .validate()
            .unwrap();
        assert_eq!(
            validate_err("-q 1 -o 4k -w write -t 1 -D"),
            "-D/--random-map: needs a random workload (randread, randwrite or randrw), not 'write'"
        );
    }

    #[test]
    fn validate_job_file_relaxes_requirements() {
        let o = parse_ok("-j jobs.fio -t 5 -C");
        let w = o.validate().unwrap();
        assert_eq!(w, vec!["-C is ignored when -j/--job-file is given"]);
    }

    #[test]
    fn validate_cpumask_and_targets() {
        let e = parse_ok(&format!("{} -m 0xZZ", base()))
            .validate()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::CpuMask);
        let w = parse_ok(&format!("{} -T A -T A", base()))
            .validate()
            .unwrap();
        assert_eq!(
            w,
            vec!["-T/--target 'A' given more than once; using it once"]
        );
        let o = BenchOptions {
            targets: vec![" ".into()],
            ..parse_ok(base())
        };
        assert_eq!(
            o.validate().unwrap_err().to_string(),
            "-T/--target: bdev name is empty"
        );
    }

    #[test]
    fn io_size_block_multiple() {
        check_io_size(4096, 512, "Null0").unwrap();
        check_io_size(512, 512, "Null0").unwrap();
        let e = check_io_size(1000, 512, "Null0").unwrap_err();
        assert_eq!(
            e.to_string(),
            "I/O size 1000 is not a multiple of bdev 'Null0' block size 512"
        );
        assert_eq!(e.kind(), ErrorKind::IoSize);
        assert!(check_io_size(4096, 0, "Bad").is_err());
        assert!(check_io_size(0, 512, "Null0").is_err());
    }
}
