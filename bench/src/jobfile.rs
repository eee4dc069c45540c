//! fio-style job files, as bdevperf's `-j`.
//!
//! ```text
//! [global]          ; defaults for the jobs that follow
//! bs=4k
//! iodepth=32
//! rw=randread
//!
//! [job0]
//! filename=Null0:Null1   # one job per bdev, all on this section's core
//! cpumask=0x1
//! offset=1m
//! length=64m
//! ```
//!
//! Keys: `filename`, `cpumask`, `bs`, `iodepth`, `rwmixread`, `offset`, `length`, `rw`.
//! Sizes accept k/m/g/t suffixes. `offset`/`length` are **bytes** (as in fio; bdevperf
//! itself reads them as blocks); `length=0` means "to the end of the bdev".
//!
//! Precedence, as in bdevperf: built-in defaults < `[global]` < command line (`-T`, `-o`,
//! `-q`, `-M`, `-w`) < keys of the job's own section. A new `[global]` section starts
//! again from the defaults. `;` and `#` start a comment anywhere on a line.

use std::path::Path;

use crate::cpumask::parse_cpumask;
use crate::error::BenchError;
use crate::options::{BenchOptions, DEFAULT_RWMIXREAD, MAX_QUEUE_DEPTH};
use crate::units::parse_size;
use crate::workload::Workload;

/// The keys a job file may use.
pub const KEYS: [&str; 8] = [
    "filename",
    "cpumask",
    "bs",
    "iodepth",
    "rwmixread",
    "offset",
    "length",
    "rw",
];

/// One `[job]` section, fully resolved against `[global]` and the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    /// The section name.
    pub name: String,
    /// Bdev names from `filename` (':'-separated); one job runs per bdev.
    pub bdevs: Vec<String>,
    /// `cpumask` as written (validated); `None` = any core (assigned round robin).
    pub cpumask: Option<String>,
    /// `rw`.
    pub workload: Workload,
    /// `bs` in bytes.
    pub io_size: u64,
    /// `iodepth`.
    pub queue_depth: u32,
    /// `rwmixread` (0..=100; default 50).
    pub rwmixread: u8,
    /// `offset` in bytes (default 0).
    pub offset: u64,
    /// `length` in bytes; `None` = from `offset` to the end of the bdev.
    pub length: Option<u64>,
    /// Line of the `[name]` header, for later error messages.
    pub line: usize,
}

/// Values the command line imposes on every `[global]` section (bdevperf's
/// `config_set_cli_args`): `-T`, `-o`, `-q`, `-M`, `-w`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobDefaults {
    /// `-T` bdev names.
    pub filename: Option<Vec<String>>,
    /// `-o`.
    pub bs: Option<u64>,
    /// `-q`.
    pub iodepth: Option<u32>,
    /// `-M`.
    pub rwmixread: Option<u8>,
    /// `-w`.
    pub rw: Option<Workload>,
}

impl JobDefaults {
    /// The command-line overrides carried by `opts`.
    pub fn from_options(opts: &BenchOptions) -> Self {
        JobDefaults {
            filename: if opts.targets.is_empty() {
                None
            } else {
                Some(opts.targets.clone())
            },
            bs: opts.io_size,
            iodepth: opts.queue_depth,
            rwmixread: opts.rwmixread.map(|m| m.min(100) as u8),
            rw: opts.workload,
        }
    }
}

/// Section values while parsing; `None` = not set yet.
#[derive(Debug, Clone, Default)]
struct Partial {
    filename: Option<Vec<String>>,
    cpumask: Option<String>,
    bs: Option<u64>,
    iodepth: Option<u32>,
    rwmixread: Option<u8>,
    offset: Option<u64>,
    length: Option<u64>,
    rw: Option<Workload>,
}

impl Partial {
    fn defaults(cli: &JobDefaults) -> Partial {
        let mut p = Partial {
            rwmixread: Some(DEFAULT_RWMIXREAD),
            offset: Some(0),
            ..Partial::default()
        };
        p.apply_cli(cli);
        p
    }

    fn apply_cli(&mut self, cli: &JobDefaults) {
        if cli.filename.is_some() {
            self.filename.clone_from(&cli.filename);
        }
        if cli.bs.is_some() {
            self.bs = cli.bs;
        }
        if cli.iodepth.is_some() {
            self.iodepth = cli.iodepth;
        }
        if cli.rwmixread.is_some() {
            self.rwmixread = cli.rwmixread;
        }
        if cli.rw.is_some() {
            self.rw = cli.rw;
        }
    }
}

enum Section {
    Global(Partial),
    Job {
        name: String,
        line: usize,
        values: Partial,
    },
}

/// Reads and parses a job file.
pub fn parse_job_file(path: &Path, cli: &JobDefaults) -> Result<Vec<JobSpec>, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|source| BenchError::Io {
        context: format!("cannot read job file '{}'", path.display()),
        source,
    })?;
    parse_job_str(&text, &path.display().to_string(), cli)
}

/// Parses job-file text; `source_name` (the path, or empty) is used in error messages.
pub fn parse_job_str(
    text: &str,
    source_name: &str,
    cli: &JobDefaults,
) -> Result<Vec<JobSpec>, BenchError> {
    let err = |line: usize, reason: String| BenchError::job_file(source_name, line, reason);
    let defaults = Partial::defaults(cli);
    let mut global = defaults.clone();
    let mut current: Option<Section> = None;
    let mut jobs = Vec::new();

    for (idx, raw_line) in text.lines().enumerate() {
        let line_no = idx + 1;
        let line = raw_line
            .find([';', '#'])
            .map_or(raw_line, |pos| &raw_line[..pos])
            .trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .ok_or_else(|| err(line_no, format!("section header '{line}' is missing ']'")))?
                .trim();
            if name.is_empty() {
                return Err(err(line_no, "section name is empty".to_string()));
            }
            if let Some(done) = current.take() {
                finish(done, &mut global, &mut jobs, cli, source_name)?;
            }
            current = Some(if name == "global" {
                Section::Global(defaults.clone())
            } else {
                Section::Job {
                    name: name.to_string(),
                    line: line_no,
                    values: global.clone(),
                }
            });
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => match line.split_once(char::is_whitespace) {
                Some((k, v)) => (k.trim(), v.trim()),
                None => (line, ""),
            },
        };
        if !KEYS.contains(&key) {
            return Err(err(
                line_no,
                format!("unknown key '{key}' (valid keys: {})", KEYS.join(", ")),
            ));
        }
        if value.is_empty() {
            return Err(err(line_no, format!("key '{key}' has no value")));
        }
        let values = match current.as_mut() {
            Some(Section::Global(p)) => p,
            Some(Section::Job { values, .. }) => values,
            None => {
                return Err(err(
                    line_no,
                    format!("key '{key}' appears before any [section]"),
                ))
            }
        };
        set_key(values, key, value).map_err(|reason| err(line_no, reason))?;
    }
    if let Some(done) = current.take() {
        finish(done, &mut global, &mut jobs, cli, source_name)?;
    }
    if jobs.is_empty() {
        return Err(err(
            0,
            "defines no jobs (only [global] or nothing)".to_string(),
        ));
    }
    Ok(jobs)
}

fn set_key(p: &mut Partial, key: &str, value: &str) -> Result<(), String> {
    match key {
        "filename" => {
            let names: Vec<String> = value
                .split(':')
                .map(|n| n.split_whitespace().collect::<String>())
                .filter(|n| !n.is_empty())
                .collect();
            if names.is_empty() {
                return Err(format!("key 'filename' names no bdev in '{value}'"));
            }
            p.filename = Some(names);
        }
        "cpumask" => {
            parse_cpumask(value).map_err(|e| format!("key 'cpumask': {e}"))?;
            p.cpumask = Some(value.to_string());
        }
        "bs" => {
            let bs = parse_size(value).map_err(|r| format!("key 'bs': {r}"))?;
            if bs == 0 {
                return Err("key 'bs' must be greater than 0".to_string());
            }
            if bs > u64::from(u32::MAX) {
                return Err(format!(
                    "key 'bs': {bs} is larger than the 4 GiB maximum for one I/O"
                ));
            }
            p.bs = Some(bs);
        }
        "iodepth" => {
            let d: u32 = value
                .parse()
                .map_err(|_| format!("key 'iodepth': '{value}' is not a whole number"))?;
            if d == 0 || d > MAX_QUEUE_DEPTH {
                return Err(format!(
                    "key 'iodepth' must be between 1 and {MAX_QUEUE_DEPTH}, got {d}"
                ));
            }
            p.iodepth = Some(d);
        }
        "rwmixread" => {
            let m: u32 = value
                .parse()
                .map_err(|_| format!("key 'rwmixread': '{value}' is not a whole number"))?;
            if m > 100 {
                return Err(format!(
                    "key 'rwmixread' must be between 0 and 100, got {m}"
                ));
            }
            p.rwmixread = Some(m as u8);
        }
        "offset" => {
            p.offset = Some(parse_size(value).map_err(|r| format!("key 'offset': {r}"))?);
        }
        "length" => {
            p.length = Some(parse_size(value).map_err(|r| format!("key 'length': {r}"))?);
        }
        "rw" => {
            p.rw = Some(Workload::from_fio_name(value).map_err(|r| format!("key 'rw': {r}"))?);
        }
        _ => return Err(format!("unknown key '{key}'")),
    }
    Ok(())
}

fn finish(
    section: Section,
    global: &mut Partial,
    jobs: &mut Vec<JobSpec>,
    cli: &JobDefaults,
    source_name: &str,
) -> Result<(), BenchError> {
    match section {
        Section::Global(mut p) => {
            p.apply_cli(cli);
            *global = p;
            Ok(())
        }
        Section::Job { name, line, values } => {
            let missing = |key: &str, flag: &str| {
                BenchError::job_file(
                    source_name,
                    line,
                    format!(
                        "job '{name}' has no '{key}' (set it in the job, in [global], or with {flag})"
                    ),
                )
            };
            let spec = JobSpec {
                bdevs: values.filename.ok_or_else(|| missing("filename", "-T"))?,
                workload: values.rw.ok_or_else(|| missing("rw", "-w"))?,
                io_size: values.bs.ok_or_else(|| missing("bs", "-o"))?,
                queue_depth: values.iodepth.ok_or_else(|| missing("iodepth", "-q"))?,
                cpumask: values.cpumask,
                rwmixread: values.rwmixread.unwrap_or(DEFAULT_RWMIXREAD),
                offset: values.offset.unwrap_or(0),
                length: values.length.filter(|&l| l != 0),
                line,
                name,
            };
            jobs.push(spec);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn parse(text: &str) -> Result<Vec<JobSpec>, BenchError> {
        parse_job_str(text, "", &JobDefaults::default())
    }

    fn err(text: &str) -> String {
        let e = parse(text).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::JobFile, "{e}");
        e.to_string()
    }

    const SAMPLE: &str = "\
; a comment
# another comment
[global]
bs = 4k
iodepth=32
rw=randread

[job0]
filename=Null0
cpumask=0x1

[job1]
filename = Null1:Malloc0   # two bdevs
bs=128K
iodepth = 8
rw=rw
rwmixread=70
offset=1m
length=64m
";

    #[test]
    fn parses_global_and_jobs() {
        let jobs = parse(SAMPLE).unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(
            jobs[0],
            JobSpec {
                name: "job0".into(),
                bdevs: vec!["Null0".into()],
                cpumask: Some("0x1".into()),
                workload: Workload::RandRead,
                io_size: 4096,
                queue_depth: 32,
                rwmixread: 50,
                offset: 0,
                length: None,
                line: 8,
            }
        );
        assert_eq!(
            jobs[1],
            JobSpec {
                name: "job1".into(),
                bdevs: vec!["Null1".into(), "Malloc0".into()],
                cpumask: None,
                workload: Workload::Rw,
                io_size: 128 * 1024,
                queue_depth: 8,
                rwmixread: 70,
                offset: 1 << 20,
                length: Some(64 << 20),
                line: 12,
            }
        );
    }

    #[test]
    fn fio_names_and_space_separated_values() {
        let jobs = parse("[j]\nfilename Null0\nbs 512\niodepth 1\nrw readwrite\n").unwrap();
        assert_eq!(jobs[0].workload, Workload::Rw);
        assert_eq!(jobs[0].io_size, 512);
        for w in Workload::ALL {
            let text = format!("[j]\nfilename=A\nbs=4k\niodepth=1\nrw={w}\n");
            assert_eq!(parse(&text).unwrap()[0].workload, w);
        }
    }

    #[test]
    fn filename_separators_and_whitespace() {
        let jobs = parse("[j]\nfilename=:A: B :: C\t\nbs=4k\niodepth=1\nrw=read\n").unwrap();
        assert_eq!(jobs[0].bdevs, vec!["A", "B", "C"]);
    }

    #[test]
    fn length_zero_means_whole_bdev() {
        let jobs = parse("[j]\nfilename=A\nbs=4k\niodepth=1\nrw=read\nlength=0\n").unwrap();
        assert_eq!(jobs[0].length, None);
    }

    #[test]
    fn job_keys_override_global_and_new_global_resets() {
        let text = "\
[global]
bs=8k
iodepth=4
rw=write
filename=G
[a]
bs=16k
[global]
iodepth=2
[b]
filename=B
bs=4k
rw=read
";
        let jobs = parse(text).unwrap();
        assert_eq!(jobs[0].io_size, 16384);
        assert_eq!(jobs[0].queue_depth, 4);
        assert_eq!(jobs[0].bdevs, vec!["G"]);
        assert_eq!(jobs[0].workload, Workload::Write);
        // The second [global] starts again from defaults: bs/rw/filename are gone.
        assert_eq!(jobs[1].queue_depth, 2);
        assert_eq!(jobs[1].io_size, 4096);
        let e =
            parse("[global]\nbs=8k\niodepth=1\nrw=read\nfilename=A\n[global]\n[c]\n").unwrap_err();
        assert!(e.to_string().contains("job 'c' has no 'filename'"), "{e}");
    }

    #[test]
    fn command_line_overrides_global_but_not_job_keys() {
        let cli = JobDefaults {
            filename: Some(vec!["CliBdev".into()]),
            bs: Some(65536),
            iodepth: Some(7),
            rwmixread: Some(10),
            rw: Some(Workload::RandRw),
        };
        let text = "[global]\nbs=4k\niodepth=1\nrw=read\nfilename=X\n[a]\n[b]\nbs=512\nrw=write\n";
        let jobs = parse_job_str(text, "", &cli).unwrap();
        assert_eq!(jobs[0].bdevs, vec!["CliBdev"]);
        assert_eq!(jobs[0].io_size, 65536);
        assert_eq!(jobs[0].queue_depth, 7);
        assert_eq!(jobs[0].rwmixread, 10);
        assert_eq!(jobs[0].workload, Workload::RandRw);
        assert_eq!(jobs[1].io_size, 512);
        assert_eq!(jobs[1].workload, Workload::Write);
        // Without any [global], CLI values still act as defaults.
        let jobs = parse_job_str("[only]\n", "", &cli).unwrap();
        assert_eq!(jobs[0].io_size, 65536);
    }

    #[test]
    fn from_options_maps_flags() {
        let opts = BenchOptions {
            targets: vec!["A".into()],
            io_size: Some(4096),
            queue_depth: Some(3),
            rwmixread: Some(40),
            workload: Some(Workload::Verify),
            ..BenchOptions::default()
        };
        let d = JobDefaults::from_options(&opts);
        assert_eq!(d.filename, Some(vec!["A".to_string()]));
        assert_eq!(
            (d.bs, d.iodepth, d.rwmixread),
            (Some(4096), Some(3), Some(40))
        );
        assert_eq!(d.rw, Some(Workload::Verify));
        assert_eq!(
            JobDefaults::from_options(&BenchOptions::default()),
            JobDefaults::default()
        );
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let text = "[global]\nbs=4k\n\n; c\n[j]\nfilename=A\nbsize=4k\n";
        let e = err(text);
        assert!(e.starts_with("job file line 7: unknown key 'bsize'"), "{e}");
        assert!(e.contains("valid keys: filename, cpumask"), "{e}");
    }

    #[test]
    fn source_name_appears_in_errors() {
        let e = parse_job_str("[j]\nfoo=1\n", "jobs.fio", &JobDefaults::default()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("job file 'jobs.fio' line 2: unknown key 'foo'"),
            "{e}"
        );
    }

    #[test]
    fn value_errors_name_line_and_key() {
        let cases = [
            ("[j]\nbs=0\n", "job file line 2: key 'bs' must be greater than 0"),
            ("[j]\nbs=4q\n", "job file line 2: key 'bs': '4q' has an unknown suffix 'q' (use k, m, g or t)"),
            ("[j]\nbs=8g\n", "job file line 2: key 'bs': 8589934592 is larger than the 4 GiB maximum for one I/O"),
            ("[j]\niodepth=0\n", "job file line 2: key 'iodepth' must be between 1 and 65536, got 0"),
            ("[j]\niodepth=x\n", "job file line 2: key 'iodepth': 'x' is not a whole number"),
            ("[j]\n\nrwmixread=101\n", "job file line 3: key 'rwmixread' must be between 0 and 100, got 101"),
            ("[j]\nrwmixread=-1\n", "job file line 2: key 'rwmixread': '-1' is not a whole number"),
            ("[j]\noffset=abc\n", "job file line 2: key 'offset': 'abc' is not a size (expected a number with optional k/m/g suffix, e.g. 4k)"),
            ("[j]\nlength=1z\n", "job file line 2: key 'length': '1z' has an unknown suffix 'z' (use k, m, g or t)"),
            ("[j]\nfilename=:::\n", "job file line 2: key 'filename' names no bdev in ':::'"),
            ("[j]\nbs=\n", "job file line 2: key 'bs' has no value"),
            ("[j]\nbs\n", "job file line 2: key 'bs' has no value"),
            ("bs=4k\n[j]\n", "job file line 1: key 'bs' appears before any [section]"),
            ("[j\n", "job file line 1: section header '[j' is missing ']'"),
            ("[ ]\n", "job file line 1: section name is empty"),
        ];
        for (text, msg) in cases {
            assert_eq!(err(text), msg, "{text:?}");
        }
    }

    #[test]
    fn bad_rw_lists_valid_workloads() {
        let e = err("[j]\nrw=trim\n");
        assert!(
            e.starts_with("job file line 2: key 'rw': unknown workload 'trim'"),
            "{e}"
        );
        assert!(e.contains("write_zeroes"), "{e}");
    }

    #[test]
    fn bad_cpumask() {
        let e = err("[j]\ncpumask=0xQ\n");
        assert!(
            e.starts_with("job file line 2: key 'cpumask': cpumask '0xQ'"),
            "{e}"
        );
    }

    #[test]
    fn missing_required_keys_point_at_section_header() {
        let base = "[global]\nfilename=A\nbs=4k\niodepth=1\nrw=read\n";
        for (key, flag) in [
            ("filename", "-T"),
            ("bs", "-o"),
            ("iodepth", "-q"),
            ("rw", "-w"),
        ] {
            let text: String = base
                .lines()
                .filter(|l| !l.starts_with(key))
                .map(|l| format!("{l}\n"))
                .collect::<String>()
                + "\n[myjob]\n";
            let e = err(&text);
            assert_eq!(
                e,
                format!(
                    "job file line 6: job 'myjob' has no '{key}' (set it in the job, in [global], or with {flag})"
                )
            );
        }
    }

    #[test]
    fn no_jobs_is_an_error() {
        assert_eq!(
            err(""),
            "job file: defines no jobs (only [global] or nothing)"
        );
        assert!(err("[global]\nbs=4k\n").contains("defines no jobs"));
    }

    #[test]
    fn duplicate_keys_last_wins_and_duplicate_sections_are_separate_jobs() {
        let text = "[global]\nfilename=A\niodepth=1\nrw=read\nbs=512\n[j]\nbs=4k\nbs=8k\n[j]\n";
        let jobs = parse(text).unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].io_size, 8192);
        assert_eq!(
            jobs[1].io_size, 512,
            "job keys do not leak into the next job"
        );
        assert_eq!(jobs[1].line, 9);
    }

    #[test]
    fn reads_files_and_reports_missing_ones() {
        let dir =
            std::env::temp_dir().join(format!("ferrite-bench-jobfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ok.fio");
        std::fs::write(&path, SAMPLE).unwrap();
        assert_eq!(
            parse_job_file(&path, &JobDefaults::default())
                .unwrap()
                .len(),
            2
        );
        let missing = dir.join("missing.fio");
        let e = parse_job_file(&missing, &JobDefaults::default()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Io);
        assert!(e.to_string().starts_with("cannot read job file '"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
