//! The crate's single error type.
//!
//! Every fallible function in `ferrite-bench` returns [`BenchError`]. Each variant
//! carries enough context to tell the user what was wrong and where (which option,
//! which job-file line, which bdev), and [`BenchError::kind`] gives a stable,
//! machine-readable classification for callers that branch on the error.

use std::fmt;

/// Stable classification of a [`BenchError`]; its [`ErrorKind::as_str`] never changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// `--help` or `--version` was requested; the error text is the help to print (exit 0).
    Help,
    /// The command line could not be parsed (unknown flag, missing value, ...).
    Usage,
    /// An option had a value that is out of range or contradicts another option.
    InvalidOption,
    /// A job file could not be parsed or describes an impossible job.
    JobFile,
    /// A bdev named on the command line or in a job file does not exist.
    UnknownBdev,
    /// The I/O size does not fit the bdev (not a block multiple, larger than the region).
    IoSize,
    /// An offset/length region does not fit the bdev.
    Region,
    /// A CPU mask could not be parsed or selects no usable core.
    CpuMask,
    /// There is nothing to run (no bdevs, no cores).
    NoJobs,
    /// Reading or writing a file failed.
    Io,
    /// Latency histogram creation or merge failed.
    Histogram,
    /// JSON serialization failed.
    Json,
}

impl ErrorKind {
    /// The stable snake_case name of this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Help => "help",
            ErrorKind::Usage => "usage",
            ErrorKind::InvalidOption => "invalid_option",
            ErrorKind::JobFile => "job_file",
            ErrorKind::UnknownBdev => "unknown_bdev",
            ErrorKind::IoSize => "io_size",
            ErrorKind::Region => "region",
            ErrorKind::CpuMask => "cpumask",
            ErrorKind::NoJobs => "no_jobs",
            ErrorKind::Io => "io",
            ErrorKind::Histogram => "histogram",
            ErrorKind::Json => "json",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The one error type of `ferrite-bench`.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Help or version text requested on the command line (print it and exit 0).
    #[error("{0}")]
    Help(String),
    /// Command-line syntax error, already rendered by the argument parser.
    #[error("{0}")]
    Usage(String),
    /// An option value is invalid; `option` names the flag (e.g. `-q/--queue-depth`).
    #[error("{option}: {reason}")]
    InvalidOption {
        /// The flag, spelled as the user knows it.
        option: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// A job-file problem at a given line (line 0 = the file as a whole).
    #[error("{}", job_file_message(source_name, *line, reason))]
    JobFile {
        /// The job file's path as given (empty when parsed from a string).
        source_name: String,
        /// 1-based line number; 0 when the problem concerns the whole file.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A bdev that was asked for does not exist.
    #[error("{}bdev '{name}' does not exist", context_prefix(context))]
    UnknownBdev {
        /// The missing bdev's name.
        name: String,
        /// Where it was asked for (e.g. "job file 'a.job' line 3"); empty for the command line.
        context: String,
    },
    /// I/O size is not a multiple of the bdev's block size.
    #[error("I/O size {io_size} is not a multiple of bdev '{bdev}' block size {block_size}")]
    IoSizeNotMultiple {
        /// The I/O size in bytes.
        io_size: u64,
        /// The bdev's block size in bytes.
        block_size: u32,
        /// The bdev's name.
        bdev: String,
    },
    /// A region (offset/length) or I/O size does not fit the bdev.
    #[error("job '{job}' on bdev '{bdev}': {reason}")]
    Region {
        /// The job's name.
        job: String,
        /// The bdev's name.
        bdev: String,
        /// What does not fit.
        reason: String,
    },
    /// A CPU mask is malformed or selects no usable core.
    #[error("cpumask '{mask}': {reason}")]
    CpuMask {
        /// The mask as written.
        mask: String,
        /// What is wrong.
        reason: String,
    },
    /// Nothing to run: no bdevs or no cores were available.
    #[error("no jobs to run: {0}")]
    NoJobs(String),
    /// File I/O failed; `context` says which file and what was being done.
    #[error("{context}: {source}")]
    Io {
        /// E.g. "cannot read job file 'x.job'".
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Histogram creation or merge failed.
    #[error("latency histogram: {0}")]
    Histogram(String),
    /// JSON serialization failed.
    #[error("JSON output: {0}")]
    Json(#[from] serde_json::Error),
}

fn job_file_message(source_name: &str, line: usize, reason: &str) -> String {
    let file = if source_name.is_empty() {
        "job file".to_string()
    } else {
        format!("job file '{source_name}'")
    };
    if line == 0 {
        format!("{file}: {reason}")
    } else {
        format!("{file} line {line}: {reason}")
    }
}

fn context_prefix(context: &str) -> String {
    if context.is_empty() {
        String::new()
    } else {
        format!("{context}: ")
    }
}

impl BenchError {
    /// The stable classification of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            BenchError::Help(_) => ErrorKind::Help,
            BenchError::Usage(_) => ErrorKind::Usage,
            BenchError::InvalidOption { .. } => ErrorKind::InvalidOption,
            BenchError::JobFile { .. } => ErrorKind::JobFile,
            BenchError::UnknownBdev { .. } => ErrorKind::UnknownBdev,
            BenchError::IoSizeNotMultiple { .. } => ErrorKind::IoSize,
            BenchError::Region { .. } => ErrorKind::Region,
            BenchError::CpuMask { .. } => ErrorKind::CpuMask,
            BenchError::NoJobs(_) => ErrorKind::NoJobs,
            BenchError::Io { .. } => ErrorKind::Io,
            BenchError::Histogram(_) => ErrorKind::Histogram,
            BenchError::Json(_) => ErrorKind::Json,
        }
    }

    pub(crate) fn invalid(option: &'static str, reason: impl Into<String>) -> Self {
        BenchError::InvalidOption {
            option,
            reason: reason.into(),
        }
    }

    pub(crate) fn job_file(source_name: &str, line: usize, reason: impl Into<String>) -> Self {
        BenchError::JobFile {
            source_name: source_name.to_string(),
            line,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_file_messages_name_file_and_line() {
        let e = BenchError::job_file("", 7, "unknown key 'bsize'");
        assert_eq!(e.to_string(), "job file line 7: unknown key 'bsize'");
        let e = BenchError::job_file("a.job", 3, "bad");
        assert_eq!(e.to_string(), "job file 'a.job' line 3: bad");
        let e = BenchError::job_file("a.job", 0, "defines no jobs");
        assert_eq!(e.to_string(), "job file 'a.job': defines no jobs");
        assert_eq!(e.kind(), ErrorKind::JobFile);
    }

    #[test]
    fn io_size_message_matches_spec() {
        let e = BenchError::IoSizeNotMultiple {
            io_size: 1000,
            block_size: 512,
            bdev: "Null0".into(),
        };
        assert_eq!(
            e.to_string(),
            "I/O size 1000 is not a multiple of bdev 'Null0' block size 512"
        );
        assert_eq!(e.kind().as_str(), "io_size");
    }

    #[test]
    fn unknown_bdev_message() {
        let e = BenchError::UnknownBdev {
            name: "X".into(),
            context: String::new(),
        };
        assert_eq!(e.to_string(), "bdev 'X' does not exist");
        let e = BenchError::UnknownBdev {
            name: "X".into(),
            context: "job file line 2: job 'j'".into(),
        };
        assert_eq!(
            e.to_string(),
            "job file line 2: job 'j': bdev 'X' does not exist"
        );
    }

    #[test]
    fn kinds_are_distinct_and_stable() {
        let kinds = [
            ErrorKind::Help,
            ErrorKind::Usage,
            ErrorKind::InvalidOption,
            ErrorKind::JobFile,
            ErrorKind::UnknownBdev,
            ErrorKind::IoSize,
            ErrorKind::Region,
            ErrorKind::CpuMask,
            ErrorKind::NoJobs,
            ErrorKind::Io,
            ErrorKind::Histogram,
            ErrorKind::Json,
        ];
        let mut names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), kinds.len());
        assert_eq!(ErrorKind::InvalidOption.to_string(), "invalid_option");
    }
}
