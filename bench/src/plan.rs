//! Turning options (and job files) into concrete jobs, as bdevperf assigns them.
//!
//! * Default: one job per bdev (all bdevs, or only the `-T` ones), pinned to the
//!   reactor cores round robin (bdevperf's `_get_next_core`).
//! * `-C`: one job per (bdev, core); each core's job covers its own `1/cores` slice of
//!   the bdev, as bdevperf's multithread mode does.
//! * `-j`: one job per (section, bdev in its `filename`); a section's bdevs share the
//!   first core of its `cpumask` that the app runs on, or the next round-robin core.
//!
//! A [`JobPlan`] is everything the engine needs to run a job: the bdev, the core, the
//! command mix, the queue depth, the byte region and the offset pattern.

use std::collections::HashSet;
use std::time::Duration;

use crate::cpumask::{format_core_mask, parse_cpumask};
use crate::error::BenchError;
use crate::jobfile::{parse_job_file, JobDefaults, JobSpec};
use crate::offsets::{OffsetGen, RandomMap, Sequential, Uniform, Zipf};
use crate::opmix::OpMix;
use crate::options::{check_io_size, BenchOptions};
use crate::rng::mix64;
use crate::workload::Workload;

/// Seconds between bdev resets in the `reset` workload (bdevperf's fixed 10 s).
pub const RESET_INTERVAL: Duration = Duration::from_secs(10);

/// What the engine knows about a bdev before planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BdevInfo {
    /// The bdev's name.
    pub name: String,
    /// Logical block size in bytes.
    pub block_size: u32,
    /// Number of blocks.
    pub num_blocks: u64,
}

impl BdevInfo {
    /// Size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.num_blocks.saturating_mul(u64::from(self.block_size))
    }
}

/// How a job chooses its offsets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OffsetPattern {
    /// In order, wrapping.
    Sequential,
    /// Uniformly random.
    Uniform,
    /// Each slot once per pass (`-D`).
    RandomMap,
    /// Zipf-distributed (`-F theta`).
    Zipf {
        /// The skew.
        theta: f64,
    },
}

/// One job, ready to execute.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPlan {
    /// The job name bdevperf prints: the bdev name.
    pub name: String,
    /// The job-file section this job came from, if any.
    pub section: Option<String>,
    /// The bdev to open.
    pub bdev: String,
    /// The bdev's block size in bytes.
    pub block_size: u32,
    /// The reactor core to run on.
    pub core: usize,
    /// The workload.
    pub workload: Workload,
    /// Bytes per I/O (a multiple of `block_size`).
    pub io_size: u64,
    /// Outstanding I/O to keep.
    pub queue_depth: u32,
    /// Read percentage for rw/randrw (0..=100).
    pub rwmixread: u8,
    /// Start of the job's region, in bytes (a multiple of `block_size`).
    pub offset: u64,
    /// Length of the region in bytes (a non-zero multiple of `io_size`).
    pub length: u64,
    /// How offsets are chosen.
    pub pattern: OffsetPattern,
    /// Seed of this job's offset and command streams.
    pub seed: u64,
    /// The run seed written into verify blocks.
    pub verify_seed: u64,
}

impl JobPlan {
    /// I/O-sized slots in the region.
    pub fn num_slots(&self) -> u64 {
        self.length / self.io_size.max(1)
    }

    /// Blocks per I/O.
    pub fn io_blocks(&self) -> u64 {
        self.io_size / u64::from(self.block_size.max(1))
    }

    /// Byte offset on the bdev of `slot`.
    #[inline]
    pub fn slot_offset(&self, slot: u64) -> u64 {
        self.offset + slot * self.io_size
    }

    /// Block offset on the bdev of `slot`.
    #[inline]
    pub fn slot_offset_blocks(&self, slot: u64) -> u64 {
        self.slot_offset(slot) / u64::from(self.block_size.max(1))
    }

    /// A fresh offset generator for this job.
    pub fn offset_gen(&self) -> OffsetGen {
        let n = self.num_slots();
        match self.pattern {
            OffsetPattern::Sequential => OffsetGen::Sequential(Sequential::new(n)),
            OffsetPattern::Uniform => OffsetGen::Uniform(Uniform::new(n, self.seed)),
            OffsetPattern::RandomMap => OffsetGen::RandomMap(RandomMap::new(n, self.seed)),
            OffsetPattern::Zipf { theta } => OffsetGen::Zipf(Zipf::new(n, theta, self.seed)),
        }
    }

    /// A fresh command picker for this job.
    pub fn op_mix(&self) -> OpMix {
        OpMix::new(self.workload, self.rwmixread, mix64(self.seed ^ 0x0D0D))
    }

    /// The percentage of reads among data I/O.
    pub fn read_percentage(&self) -> u8 {
        self.workload.read_percentage(self.rwmixread)
    }

    /// bdevperf's core mask string for this job (`0x1` for core 0).
    pub fn core_mask(&self) -> String {
        format_core_mask(&[self.core])
    }

    /// A label that tells jobs apart even when several share a bdev (`-C`).
    pub fn label(&self) -> String {
        format!("{} (core {})", self.name, self.core)
    }

    /// How often the engine resets the bdev (`reset` workload only).
    pub fn reset_interval(&self) -> Option<Duration> {
        (self.workload == Workload::Reset).then_some(RESET_INTERVAL)
    }
}

struct JobParams<'a> {
    workload: Workload,
    io_size: u64,
    queue_depth: u32,
    rwmixread: u8,
    section: Option<&'a str>,
}

struct Planner<'a> {
    opts: &'a BenchOptions,
    cores: &'a [usize],
    next_core: usize,
    jobs: Vec<JobPlan>,
}

impl Planner<'_> {
    fn round_robin_core(&mut self) -> usize {
        let c = self.cores[self.next_core % self.cores.len()];
        self.next_core += 1;
        c
    }

    fn pattern_for(&self, workload: Workload) -> OffsetPattern {
        if !workload.is_random() {
            OffsetPattern::Sequential
        } else if let Some(theta) = self.opts.zipf_theta {
            OffsetPattern::Zipf { theta }
        } else if self.opts.random_map {
            OffsetPattern::RandomMap
        } else {
            OffsetPattern::Uniform
        }
    }

    fn push(
        &mut self,
        p: &JobParams<'_>,
        bdev: &BdevInfo,
        core: usize,
        offset: u64,
        length: Option<u64>,
    ) -> Result<(), BenchError> {
        check_io_size(p.io_size, bdev.block_size, &bdev.name)?;
        let job_name = p.section.unwrap_or(&bdev.name).to_string();
        let region_err = |reason: String| BenchError::Region {
            job: job_name.clone(),
            bdev: bdev.name.clone(),
            reason,
        };
        let size = bdev.size_bytes();
        let bs = u64::from(bdev.block_size);
        if !offset.is_multiple_of(bs) {
            return Err(region_err(format!(
                "offset {offset} is not a multiple of the block size {bs}"
            )));
        }
        if offset >= size {
            return Err(region_err(format!(
                "offset {offset} is at or beyond the end of the bdev ({size} bytes)"
            )));
        }
        let length = length.unwrap_or(size - offset);
        if length > size - offset {
            return Err(region_err(format!(
                "region offset {offset} + length {length} exceeds the bdev size {size}"
            )));
        }
        let slots = length / p.io_size;
        if slots == 0 {
            return Err(region_err(format!(
                "region of {length} bytes is smaller than one I/O of {} bytes",
                p.io_size
            )));
        }
        let mut queue_depth = p.queue_depth;
        if p.workload.verifies() && u64::from(queue_depth) > slots {
            tracing::warn!(
                bdev = %bdev.name,
                "verify queue depth {queue_depth} exceeds the {slots} I/O the region holds; using {slots}"
            );
            queue_depth = slots as u32;
        }
        let index = self.jobs.len() as u64;
        self.jobs.push(JobPlan {
            name: bdev.name.clone(),
            section: p.section.map(str::to_string),
            bdev: bdev.name.clone(),
            block_size: bdev.block_size,
            core,
            workload: p.workload,
            io_size: p.io_size,
            queue_depth,
            rwmixread: p.rwmixread,
            offset,
            length: slots * p.io_size,
            pattern: self.pattern_for(p.workload),
            seed: mix64(self.opts.seed ^ mix64(index + 1)),
            verify_seed: self.opts.seed,
        });
        Ok(())
    }
}

fn find_bdev<'b>(
    bdevs: &'b [BdevInfo],
    name: &str,
    context: &str,
) -> Result<&'b BdevInfo, BenchError> {
    bdevs
        .iter()
        .find(|b| b.name == name)
        .ok_or_else(|| BenchError::UnknownBdev {
            name: name.to_string(),
            context: context.to_string(),
        })
}

fn check_cores(cores: &[usize]) -> Result<(), BenchError> {
    if cores.is_empty() {
        return Err(BenchError::NoJobs("the app runs on no cores".to_string()));
    }
    Ok(())
}

/// Plans the jobs for `opts`: from the job file if `-j` was given, otherwise from the
/// command line. `bdevs` are the available bdevs in the order jobs should be created;
/// `cores` the reactor cores (from `-m`) in order.
pub fn jobs_from_options(
    opts: &BenchOptions,
    bdevs: &[BdevInfo],
    cores: &[usize],
) -> Result<Vec<JobPlan>, BenchError> {
    if let Some(path) = &opts.job_file {
        let specs = parse_job_file(path, &JobDefaults::from_options(opts))?;
        return jobs_from_specs(&specs, opts, bdevs, cores, &path.display().to_string());
    }
    check_cores(cores)?;
    let workload = opts.workload.ok_or_else(|| {
        BenchError::invalid("-w/--workload", "is required unless -j/--job-file is given")
    })?;
    let io_size = opts.io_size.ok_or_else(|| {
        BenchError::invalid("-o/--io-size", "is required unless -j/--job-file is given")
    })?;
    let queue_depth = opts.queue_depth.ok_or_else(|| {
        BenchError::invalid(
            "-q/--queue-depth",
            "is required unless -j/--job-file is given",
        )
    })?;
    let params = JobParams {
        workload,
        io_size,
        queue_depth,
        rwmixread: opts.rwmixread_or_default(),
        section: None,
    };

    let selected: Vec<&BdevInfo> = if opts.targets.is_empty() {
        bdevs.iter().collect()
    } else {
        let mut seen = HashSet::new();
        let mut v = Vec::new();
        for t in &opts.targets {
            if seen.insert(t.as_str()) {
                v.push(find_bdev(bdevs, t, "")?);
            }
        }
        v
    };
    if selected.is_empty() {
        return Err(BenchError::NoJobs("there are no bdevs".to_string()));
    }

    let mut planner = Planner {
        opts,
        cores,
        next_core: 0,
        jobs: Vec::new(),
    };
    for bdev in selected {
        if opts.every_core {
            let slice_blocks = bdev.num_blocks / cores.len() as u64;
            let bs = u64::from(bdev.block_size);
            for (i, &core) in cores.iter().enumerate() {
                let offset = i as u64 * slice_blocks * bs;
                if slice_blocks == 0 {
                    return Err(BenchError::Region {
                        job: bdev.name.clone(),
                        bdev: bdev.name.clone(),
                        reason: format!(
                            "{} blocks cannot be split among {} cores (-C)",
                            bdev.num_blocks,
                            cores.len()
                        ),
                    });
                }
                planner.push(&params, bdev, core, offset, Some(slice_blocks * bs))?;
            }
        } else {
            let core = planner.round_robin_core();
            planner.push(&params, bdev, core, 0, None)?;
        }
    }
    Ok(planner.jobs)
}

/// Plans the jobs of parsed job-file sections. `source_name` (the file's path) is used
/// in error messages.
pub fn jobs_from_specs(
    specs: &[JobSpec],
    opts: &BenchOptions,
    bdevs: &[BdevInfo],
    cores: &[usize],
    source_name: &str,
) -> Result<Vec<JobPlan>, BenchError> {
    check_cores(cores)?;
    let mut planner = Planner {
        opts,
        cores,
        next_core: 0,
        jobs: Vec::new(),
    };
    let where_ = |spec: &JobSpec| {
        let file = if source_name.is_empty() {
            "job file".to_string()
        } else {
            format!("job file '{source_name}'")
        };
        format!("{file} line {}: job '{}'", spec.line, spec.name)
    };
    for spec in specs {
        let core = match &spec.cpumask {
            Some(mask) => {
                let wanted = parse_cpumask(mask)?;
                *wanted
                    .iter()
                    .find(|c| cores.contains(c))
                    .ok_or_else(|| BenchError::CpuMask {
                        mask: mask.clone(),
                        reason: format!(
                            "{}: selects none of the app's cores {}",
                            where_(spec),
                            format_core_mask(cores)
                        ),
                    })?
            }
            None => planner.round_robin_core(),
        };
        let params = JobParams {
            workload: spec.workload,
            io_size: spec.io_size,
            queue_depth: spec.queue_depth,
            rwmixread: spec.rwmixread,
            section: Some(&spec.name),
        };
        for name in &spec.bdevs {
            let bdev = find_bdev(bdevs, name, &where_(spec))?;
            planner.push(&params, bdev, core, spec.offset, spec.length)?;
        }
    }
    if planner.jobs.is_empty() {
        return Err(BenchError::NoJobs(
            "the job file defines no jobs".to_string(),
        ));
    }
    Ok(planner.jobs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::jobfile::parse_job_str;

    fn bdev(name: &str, block_size: u32, num_blocks: u64) -> BdevInfo {
        BdevInfo {
            name: name.into(),
            block_size,
            num_blocks,
        }
    }

    fn bdevs() -> Vec<BdevInfo> {
        vec![
            bdev("Null0", 512, 1 << 21),  // 1 GiB
            bdev("Null1", 4096, 1 << 18), // 1 GiB
            bdev("Malloc0", 512, 2048),   // 1 MiB
        ]
    }

    fn opts(args: &str) -> BenchOptions {
        BenchOptions::parse_from(std::iter::once("b").chain(args.split_whitespace())).unwrap()
    }

    #[test]
    fn default_mode_one_job_per_bdev_round_robin() {
        let o = opts("-q 16 -o 4k -w randread -t 1 --seed 1");
        let jobs = jobs_from_options(&o, &bdevs(), &[2, 5]).unwrap();
        assert_eq!(jobs.len(), 3);
        let cores: Vec<usize> = jobs.iter().map(|j| j.core).collect();
        assert_eq!(cores, vec![2, 5, 2]);
        let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, vec!["Null0", "Null1", "Malloc0"]);
        let j = &jobs[0];
        assert_eq!((j.offset, j.length), (0, 1 << 30));
        assert_eq!(j.num_slots(), (1 << 30) / 4096);
        assert_eq!(j.io_blocks(), 8);
        assert_eq!(j.queue_depth, 16);
        assert_eq!(j.pattern, OffsetPattern::Uniform);
        assert_eq!(j.core_mask(), "0x4");
        assert_eq!(j.label(), "Null0 (core 2)");
        assert_eq!(j.section, None);
        assert_eq!(jobs[2].length, 1 << 20);
        assert_eq!(j.verify_seed, 1);
        assert_ne!(jobs[0].seed, jobs[1].seed);
    }

    #[test]
    fn targets_select_bdevs_in_given_order() {
        let o = opts("-q 1 -o 4k -w read -t 1 -T Malloc0 -T Null0 -T Malloc0");
        let jobs = jobs_from_options(&o, &bdevs(), &[0]).unwrap();
        let names: Vec<&str> = jobs.iter().map(|j| j.bdev.as_str()).collect();
        assert_eq!(names, vec!["Malloc0", "Null0"]);
        assert!(jobs.iter().all(|j| j.pattern == OffsetPattern::Sequential));
    }

    #[test]
    fn unknown_target_is_an_error() {
        let o = opts("-q 1 -o 4k -w read -t 1 -T X");
        let e = jobs_from_options(&o, &bdevs(), &[0]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnknownBdev);
        assert_eq!(e.to_string(), "bdev 'X' does not exist");
    }

    #[test]
    fn every_core_mode_slices_each_bdev() {
        let o = opts("-q 4 -o 4k -w randwrite -t 1 -C -D");
        let jobs = jobs_from_options(&o, &bdevs()[..2], &[0, 1, 2]).unwrap();
        assert_eq!(jobs.len(), 6);
        let pairs: Vec<(&str, usize)> = jobs.iter().map(|j| (j.bdev.as_str(), j.core)).collect();
        assert_eq!(
            pairs,
            vec![
                ("Null0", 0),
                ("Null0", 1),
                ("Null0", 2),
                ("Null1", 0),
                ("Null1", 1),
                ("Null1", 2)
            ]
        );
        let slice_blocks = (1u64 << 21) / 3;
        for (i, j) in jobs[..3].iter().enumerate() {
            assert_eq!(j.offset, i as u64 * slice_blocks * 512);
            assert_eq!(j.length, (slice_blocks * 512 / 4096) * 4096);
            assert_eq!(j.pattern, OffsetPattern::RandomMap);
        }
        // Slices do not overlap and stay inside the bdev.
        for w in jobs[..3].windows(2) {
            assert!(w[0].offset + w[0].length <= w[1].offset);
        }
        assert!(jobs[2].offset + jobs[2].length <= 1 << 30);
    }

    #[test]
    fn every_core_with_too_small_bdev() {
        let o = opts("-q 4 -o 512 -w read -t 1 -C");
        let tiny = [bdev("Tiny", 512, 2)];
        let e = jobs_from_options(&o, &tiny, &[0, 1, 2]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Region);
        assert!(
            e.to_string().contains("cannot be split among 3 cores"),
            "{e}"
        );
    }

    #[test]
    fn io_size_must_be_block_multiple() {
        let o = opts("-q 1 -o 1000 -w read -t 1");
        let e = jobs_from_options(&o, &bdevs(), &[0]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "I/O size 1000 is not a multiple of bdev 'Null0' block size 512"
        );
        let o = opts("-q 1 -o 2k -w read -t 1 -T Null1");
        let e = jobs_from_options(&o, &bdevs(), &[0]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::IoSize);
    }

    #[test]
    fn io_larger_than_bdev() {
        let o = opts("-q 1 -o 2m -w read -t 1 -T Malloc0");
        let e = jobs_from_options(&o, &bdevs(), &[0]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "job 'Malloc0' on bdev 'Malloc0': region of 1048576 bytes is smaller than one I/O of 2097152 bytes"
        );
    }

    #[test]
    fn patterns_follow_options() {
        let o = opts("-q 1 -o 4k -w randrw -t 1 -F 1.1 -M 30");
        let jobs = jobs_from_options(&o, &bdevs(), &[0]).unwrap();
        assert_eq!(jobs[0].pattern, OffsetPattern::Zipf { theta: 1.1 });
        assert_eq!(jobs[0].rwmixread, 30);
        assert_eq!(jobs[0].read_percentage(), 30);
        assert!(matches!(jobs[0].offset_gen(), OffsetGen::Zipf(_)));
        assert_eq!(jobs[0].offset_gen().slots(), jobs[0].num_slots());
    }

    #[test]
    fn verify_queue_depth_is_limited_to_slots() {
        let o = opts("-q 4096 -o 4k -w verify -t 1 -T Malloc0");
        let jobs = jobs_from_options(&o, &bdevs(), &[0]).unwrap();
        assert_eq!(jobs[0].queue_depth, 256);
        assert_eq!(jobs[0].reset_interval(), None);
        let o = opts("-q 8 -o 4k -w reset -t 1 -T Malloc0");
        let jobs = jobs_from_options(&o, &bdevs(), &[0]).unwrap();
        assert_eq!(jobs[0].reset_interval(), Some(RESET_INTERVAL));
    }

    #[test]
    fn slot_offsets() {
        let o = opts("-q 1 -o 4k -w read -t 1 -C");
        let jobs = jobs_from_options(&o, &[bdev("B", 512, 64)], &[0, 1]).unwrap();
        let j = &jobs[1];
        assert_eq!(j.offset, 16384);
        assert_eq!(j.slot_offset(0), 16384);
        assert_eq!(j.slot_offset(3), 16384 + 3 * 4096);
        assert_eq!(j.slot_offset_blocks(3), (16384 + 3 * 4096) / 512);
        let mut g = j.offset_gen();
        assert_eq!(
            (g.next(), g.next(), g.next(), g.next(), g.next()),
            (0, 1, 2, 3, 0)
        );
    }

    #[test]
    fn no_bdevs_or_cores() {
        let o = opts("-q 1 -o 4k -w read -t 1");
        assert_eq!(
            jobs_from_options(&o, &[], &[0]).unwrap_err().kind(),
            ErrorKind::NoJobs
        );
        let e = jobs_from_options(&o, &bdevs(), &[]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoJobs);
        assert_eq!(e.to_string(), "no jobs to run: the app runs on no cores");
    }

    #[test]
    fn missing_cli_parameters_are_errors_without_job_file() {
        let o = BenchOptions::default();
        let e = jobs_from_options(&o, &bdevs(), &[0]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidOption);
    }

    fn specs(text: &str) -> Vec<JobSpec> {
        parse_job_str(text, "", &JobDefaults::default()).unwrap()
    }

    #[test]
    fn job_file_jobs() {
        let text = "\
[global]
bs=4k
iodepth=8
rw=randread
[a]
filename=Null0:Null1
cpumask=0x6
offset=1m
length=16m
[b]
filename=Malloc0
rw=rw
rwmixread=25
[c]
filename=Null0
";
        let o = BenchOptions {
            seed: 9,
            ..BenchOptions::default()
        };
        let jobs = jobs_from_specs(&specs(text), &o, &bdevs(), &[0, 2, 3], "x.fio").unwrap();
        assert_eq!(jobs.len(), 4);
        assert_eq!((jobs[0].bdev.as_str(), jobs[0].core), ("Null0", 2));
        assert_eq!((jobs[1].bdev.as_str(), jobs[1].core), ("Null1", 2));
        assert_eq!(jobs[0].section.as_deref(), Some("a"));
        assert_eq!((jobs[0].offset, jobs[0].length), (1 << 20, 16 << 20));
        assert_eq!(
            jobs[2].core, 0,
            "no cpumask: round robin from the first core"
        );
        assert_eq!(jobs[3].core, 2);
        assert_eq!((jobs[2].workload, jobs[2].rwmixread), (Workload::Rw, 25));
        assert_eq!(jobs[2].length, 1 << 20);
    }

    #[test]
    fn job_file_errors_name_the_job() {
        let base = "[global]\nbs=4k\niodepth=1\nrw=read\n";
        let run = |extra: &str| {
            jobs_from_specs(
                &specs(&format!("{base}{extra}")),
                &BenchOptions::default(),
                &bdevs(),
                &[0, 1],
                "x.fio",
            )
            .unwrap_err()
        };
        let e = run("[j]\nfilename=Nope\n");
        assert_eq!(e.kind(), ErrorKind::UnknownBdev);
        assert_eq!(
            e.to_string(),
            "job file 'x.fio' line 5: job 'j': bdev 'Nope' does not exist"
        );
        let e = run("[j]\nfilename=Null0\ncpumask=0x8\n");
        assert_eq!(e.kind(), ErrorKind::CpuMask);
        assert!(
            e.to_string()
                .contains("job file 'x.fio' line 5: job 'j': selects none of the app's cores 0x3"),
            "{e}"
        );
        let e = run("[j]\nfilename=Malloc0\noffset=100\n");
        assert_eq!(
            e.to_string(),
            "job 'j' on bdev 'Malloc0': offset 100 is not a multiple of the block size 512"
        );
        let e = run("[j]\nfilename=Malloc0\noffset=1m\n");
        assert!(
            e.to_string()
                .contains("at or beyond the end of the bdev (1048576 bytes)"),
            "{e}"
        );
        let e = run("[j]\nfilename=Malloc0\noffset=512k\nlength=1m\n");
        assert!(
            e.to_string().contains("exceeds the bdev size 1048576"),
            "{e}"
        );
        let e = run("[j]\nfilename=Malloc0\nlength=2k\n");
        assert!(e.to_string().contains("smaller than one I/O"), "{e}");
    }

    #[test]
    fn job_file_through_options() {
        let dir = std::env::temp_dir().join(format!("ferrite-bench-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("j.fio");
        std::fs::write(
            &path,
            "[global]\nbs=4k\niodepth=2\nrw=write\n[w]\nfilename=Null1\n",
        )
        .unwrap();
        let o = opts(&format!("-j {} -t 1 -q 64", path.display()));
        let jobs = jobs_from_options(&o, &bdevs(), &[0]).unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].queue_depth, 64, "-q overrides [global]");
        assert_eq!(jobs[0].workload, Workload::Write);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bdev_size() {
        assert_eq!(bdev("x", 4096, 3).size_bytes(), 12288);
        assert_eq!(bdev("x", 4096, u64::MAX).size_bytes(), u64::MAX);
    }
}
