//! fio's command-line options, for the subset shardbench supports.
//!
//! As in fio: options before the first `--name` are global defaults; each
//! `--name` starts a job that inherits them; later options apply to that
//! job. `--key=value` and `--key value` both work; a boolean option may be
//! given bare. An option fio has that shardbench lacks is an error naming
//! it, never silently ignored.

use std::path::PathBuf;

use crate::units::{parse_duration_us, parse_size};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rw {
    Read,
    Write,
    RandRead,
    RandWrite,
    /// Sequential mixed reads and writes.
    ReadWrite,
    RandReadWrite,
}

impl Rw {
    pub fn is_random(self) -> bool {
        matches!(self, Rw::RandRead | Rw::RandWrite | Rw::RandReadWrite)
    }

    /// Percentage of operations that are reads, given `rwmixread`.
    pub fn read_percent(self, rwmixread: u32) -> u32 {
        match self {
            Rw::Read | Rw::RandRead => 100,
            Rw::Write | Rw::RandWrite => 0,
            Rw::ReadWrite | Rw::RandReadWrite => rwmixread,
        }
    }

    pub fn fio_name(self) -> &'static str {
        match self {
            Rw::Read => "read",
            Rw::Write => "write",
            Rw::RandRead => "randread",
            Rw::RandWrite => "randwrite",
            Rw::ReadWrite => "rw",
            Rw::RandReadWrite => "randrw",
        }
    }
}

/// What a job exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The raw device engine: fio's semantics exactly.
    Device,
    /// The shard store on the device: `write` puts shards of `bs` bytes,
    /// reads get them; each completed put is durable.
    Store,
    /// A running agent over HTTP (`--url`): the same jobs as `Store`, each
    /// operation one HTTP request on a keep-alive connection.
    Agent,
}

/// The background scrubber during a store job (a shardnode option; fio
/// has no scrubber).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scrub {
    /// Paused: the job measures the store alone (the default).
    Off,
    /// At the store's own pace for its coverage deadline.
    Deadline,
    /// At exactly this many bytes per second.
    Rate(u64),
    /// As fast as the job's requests leave room for.
    Max,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    IoUring,
    Psync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Normal,
    Json,
}

/// One job as fio would understand it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub name: String,
    pub filename: Option<PathBuf>,
    pub rw: Rw,
    pub rwmixread: u32,
    pub bs: u64,
    pub iodepth: u32,
    /// fio's `iodepth_batch_submit` (alias `iodepth_batch`): how many
    /// queued I/Os are handed to the kernel together; 1 (the default)
    /// submits each at once, 0 means `iodepth`.
    pub iodepth_batch_submit: u32,
    pub numjobs: u32,
    pub size: Option<u64>,
    pub offset: u64,
    pub runtime_us: Option<u64>,
    pub time_based: bool,
    pub ramp_time_us: u64,
    pub ioengine: Engine,
    pub group_reporting: bool,
    pub randseed: u64,
    /// io_uring: use the registered buffer pool (fio's `fixedbufs`; on by
    /// default here because the shardnode engine always registers its pool).
    pub fixedbufs: bool,
    /// io_uring: register the file with the ring (fio's `registerfiles`).
    pub registerfiles: bool,
    /// Report percentiles of total latency too (fio's `lat_percentiles`).
    pub lat_percentiles: bool,
    /// Which percentiles to report (fio's `percentile_list`).
    pub percentile_list: Vec<f64>,
    /// fio's `verify=crc32c`: written blocks carry a header and a CRC32C
    /// of their contents; reads check them.
    pub verify: bool,
    /// fio's `do_verify` (default 1): a write job reads back and checks
    /// everything it wrote once its writes are done.
    pub do_verify: bool,
    pub target: Target,
    /// `--scrub=off|deadline|max|RATE` (store target).
    pub scrub: Scrub,
    /// `--scrub_only=1` (store target): no requests; the job fills the
    /// store as a read job would, then measures the scrubber's reads.
    pub scrub_only: bool,
    /// The agent's base URL (`http://HOST:PORT`) for `--target=agent`.
    pub url: Option<String>,
    /// Every option given for this job, as text, for the JSON's
    /// `job options` (fio echoes them).
    pub given: Vec<(String, String)>,
}

impl Default for JobSpec {
    fn default() -> Self {
        JobSpec {
            name: String::new(),
            filename: None,
            rw: Rw::Read,
            rwmixread: 50,
            bs: 4096,
            iodepth: 1,
            iodepth_batch_submit: 1,
            numjobs: 1,
            size: None,
            offset: 0,
            runtime_us: None,
            time_based: false,
            ramp_time_us: 0,
            ioengine: Engine::IoUring,
            group_reporting: false,
            randseed: 0x5eed_5eed,
            fixedbufs: true,
            registerfiles: true,
            lat_percentiles: false,
            percentile_list: super::hist::DEFAULT_PERCENTILES.to_vec(),
            verify: false,
            do_verify: true,
            target: Target::Device,
            scrub: Scrub::Off,
            scrub_only: false,
            url: None,
            given: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    pub jobs: Vec<JobSpec>,
    pub output_format: OutputFormat,
}

/// Options that are flags when given without a value.
const BOOLEAN: &[&str] =
    &["time_based", "group_reporting", "fixedbufs", "registerfiles", "lat_percentiles", "scrub_only"];

const KNOWN: &[&str] = &[
    "name",
    "filename",
    "rw",
    "readwrite",
    "rwmixread",
    "rwmixwrite",
    "bs",
    "iodepth",
    "iodepth_batch_submit",
    "iodepth_batch",
    "numjobs",
    "size",
    "offset",
    "runtime",
    "time_based",
    "ramp_time",
    "direct",
    "ioengine",
    "group_reporting",
    "randseed",
    "fixedbufs",
    "registerfiles",
    "lat_percentiles",
    "percentile_list",
    "verify",
    "do_verify",
    "target",
    "scrub",
    "scrub_only",
    "url",
    "output-format",
];

pub const USAGE: &str = "usage: shardbench --name=JOB --filename=PATH [--rw=read|write|randread|randwrite|rw|randrw] \
[--bs=4k] [--iodepth=N] [--iodepth_batch_submit=N] [--numjobs=N] [--size=SIZE] [--offset=SIZE] [--runtime=30] [--time_based] \
[--ramp_time=T] [--rwmixread=PCT] [--direct=1] [--ioengine=io_uring|psync] [--fixedbufs=0|1] \
[--registerfiles=0|1] [--lat_percentiles=0|1] [--target=device|store|agent] [--url=http://HOST:PORT] [--group_reporting] \
[--percentile_list=P:P:...] [--verify=crc32c] [--do_verify=0|1] [--scrub=off|deadline|max|RATE] [--scrub_only] \
[--output-format=normal|json] [JOBFILE...]";

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("option {key}: expected 0 or 1, got {value:?}")),
    }
}

/// The jobs of an INI job file as fio reads it: `[global]` sets defaults
/// for the jobs after it, every other `[section]` is a job of that name,
/// lines are `key=value` or a bare boolean `key`, and `;` or `#` start a
/// comment line. Errors name the file and line.
pub fn parse_job_file(path: &str, text: &str, defaults: &JobSpec) -> Result<Vec<JobSpec>, String> {
    let mut global = defaults.clone();
    let mut jobs: Vec<JobSpec> = Vec::new();
    let mut in_global = false;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let at = |what: String| format!("{path}:{}: {what}", n + 1);
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[') {
            let name = section.strip_suffix(']').ok_or_else(|| at(format!("unterminated section {line:?}")))?.trim();
            if name.is_empty() {
                return Err(at("a section needs a name".to_owned()));
            }
            in_global = name == "global";
            if !in_global {
                let mut job = global.clone();
                apply(&mut job, "name", name).map_err(at)?;
                job.given.push(("name".to_owned(), name.to_owned()));
                jobs.push(job);
            }
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim().to_owned()),
            None if BOOLEAN.contains(&line) => (line, "1".to_owned()),
            None => return Err(at(format!("option {line:?} needs a value (key=value)"))),
        };
        if !KNOWN.contains(&key) || key == "output-format" || key == "name" {
            return Err(at(format!("unknown option {key:?} in a job file")));
        }
        let target = if in_global {
            &mut global
        } else {
            jobs.last_mut().ok_or_else(|| at(format!("option {key:?} before any [section]")))?
        };
        apply(target, key, &value).map_err(at)?;
        target.given.push((key.to_owned(), value));
    }
    if jobs.is_empty() {
        return Err(format!("job file {path}: no job sections (only [global])"));
    }
    Ok(jobs)
}

fn parse_u32(key: &str, value: &str, min: u32, max: u32) -> Result<u32, String> {
    let n: u32 = value.parse().map_err(|_| format!("option {key}: expected a number, got {value:?}"))?;
    if n < min || n > max {
        return Err(format!("option {key}: {n} is outside {min}..={max}"));
    }
    Ok(n)
}

fn apply(job: &mut JobSpec, key: &str, value: &str) -> Result<(), String> {
    match key {
        "name" => value.clone_into(&mut job.name),
        "filename" => job.filename = Some(PathBuf::from(value)),
        "rw" | "readwrite" => {
            job.rw = match value {
                "read" => Rw::Read,
                "write" => Rw::Write,
                "randread" => Rw::RandRead,
                "randwrite" => Rw::RandWrite,
                "rw" | "readwrite" => Rw::ReadWrite,
                "randrw" => Rw::RandReadWrite,
                _ => {
                    return Err(format!(
                        "option {key}: unsupported pattern {value:?} (read, write, randread, randwrite, rw, randrw)"
                    ))
                }
            }
        }
        "rwmixread" => job.rwmixread = parse_u32(key, value, 0, 100)?,
        "rwmixwrite" => job.rwmixread = 100 - parse_u32(key, value, 0, 100)?,
        "bs" => {
            let bs = parse_size(value).map_err(|e| format!("option bs: {e}"))?;
            if bs == 0 || bs % 512 != 0 || bs > shardstore::constants::IO_SIZE_BYTES_MAX {
                return Err(format!("option bs: {bs} must be a non-zero multiple of 512 up to 64MiB"));
            }
            job.bs = bs;
        }
        "iodepth" => job.iodepth = parse_u32(key, value, 1, shardstore::constants::QUEUE_DEPTH_MAX)?,
        "iodepth_batch_submit" | "iodepth_batch" => {
            job.iodepth_batch_submit = parse_u32(key, value, 0, shardstore::constants::QUEUE_DEPTH_MAX)?;
        }
        "numjobs" => job.numjobs = parse_u32(key, value, 1, 256)?,
        "size" => job.size = Some(parse_size(value).map_err(|e| format!("option size: {e}"))?),
        "offset" => job.offset = parse_size(value).map_err(|e| format!("option offset: {e}"))?,
        "runtime" => job.runtime_us = Some(parse_duration_us(value).map_err(|e| format!("option runtime: {e}"))?),
        "time_based" => job.time_based = parse_bool(key, value)?,
        "ramp_time" => job.ramp_time_us = parse_duration_us(value).map_err(|e| format!("option ramp_time: {e}"))?,
        "direct" => {
            if !parse_bool(key, value)? {
                return Err("option direct: shardbench always uses O_DIRECT (direct=0 is not supported)".to_owned());
            }
        }
        "ioengine" => {
            job.ioengine = match value {
                "io_uring" => Engine::IoUring,
                "psync" => Engine::Psync,
                _ => return Err(format!("option ioengine: unsupported engine {value:?} (io_uring, psync)")),
            }
        }
        "group_reporting" => job.group_reporting = parse_bool(key, value)?,
        "fixedbufs" => job.fixedbufs = parse_bool(key, value)?,
        "registerfiles" => job.registerfiles = parse_bool(key, value)?,
        "lat_percentiles" => job.lat_percentiles = parse_bool(key, value)?,
        "verify" => {
            job.verify = match value {
                "crc32c" => true,
                "0" | "none" => false,
                other => return Err(format!("option verify: unsupported method {other:?} (crc32c, none)")),
            };
        }
        "do_verify" => job.do_verify = parse_bool(key, value)?,
        "percentile_list" => {
            let list = value
                .split(':')
                .map(|p| p.trim().parse::<f64>().ok().filter(|p| (0.0..=100.0).contains(p)))
                .collect::<Option<Vec<f64>>>()
                .filter(|l| !l.is_empty() && l.len() <= 64)
                .ok_or_else(|| {
                    format!("option percentile_list: {value:?} is not 1 to 64 percentages 0..100 separated by ':'")
                })?;
            job.percentile_list = list;
        }
        "scrub" => {
            job.scrub = match value {
                "off" => Scrub::Off,
                "deadline" => Scrub::Deadline,
                "max" => Scrub::Max,
                rate => Scrub::Rate(parse_size(rate).map_err(|e| {
                    format!("option scrub: {e} (off, deadline, max, or a rate in bytes per second like 16M)")
                })?),
            };
        }
        "scrub_only" => job.scrub_only = parse_bool(key, value)?,
        "url" => {
            let rest = value
                .strip_prefix("http://")
                .ok_or_else(|| format!("option url: {value:?} is not an http:// URL (the agent speaks plain HTTP)"))?;
            if rest.trim_end_matches('/').is_empty() || rest.trim_end_matches('/').contains('/') {
                return Err(format!("option url: expected http://HOST:PORT, got {value:?}"));
            }
            job.url = Some(rest.trim_end_matches('/').to_owned());
        }
        "target" => {
            job.target = match value {
                "device" => Target::Device,
                "store" => Target::Store,
                "agent" => Target::Agent,
                _ => return Err(format!("option target: unsupported target {value:?} (device, store, agent)")),
            }
        }
        "randseed" => {
            job.randseed = value.parse().map_err(|_| format!("option randseed: expected a number, got {value:?}"))?;
        }
        _ => return Err(format!("unknown option {key:?} (see --help)")),
    }
    Ok(())
}

/// Parses a fio-style command line (without the program name).
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Invocation, String> {
    let mut args = args.into_iter().peekable();
    let mut global = JobSpec::default();
    let mut jobs: Vec<JobSpec> = Vec::new();
    let mut output_format = OutputFormat::Normal;
    while let Some(arg) = args.next() {
        let Some(opt) = arg.strip_prefix("--") else {
            // A job file: its [global] section starts from the options
            // given so far, and each other section is a job.
            let text = std::fs::read_to_string(&arg).map_err(|e| format!("job file {arg}: {e}"))?;
            jobs.extend(parse_job_file(&arg, &text, &global)?);
            continue;
        };
        let (key, inline) = match opt.split_once('=') {
            Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
            None => (opt.to_owned(), None),
        };
        if !KNOWN.contains(&key.as_str()) {
            return Err(format!("unknown option --{key} (see --help)"));
        }
        let value = match inline {
            Some(v) => v,
            None if BOOLEAN.contains(&key.as_str()) => "1".to_owned(),
            None => args.next().ok_or_else(|| format!("option --{key} needs a value"))?,
        };
        if key == "output-format" {
            output_format = match value.as_str() {
                "normal" => OutputFormat::Normal,
                "json" => OutputFormat::Json,
                _ => return Err(format!("option output-format: unsupported format {value:?} (normal, json)")),
            };
            continue;
        }
        if key == "name" {
            jobs.push(global.clone());
        }
        let target = jobs.last_mut().unwrap_or(&mut global);
        apply(target, &key, &value)?;
        target.given.push((key, value));
    }
    if jobs.is_empty() {
        return Err("no job defined: give at least --name=JOB".to_owned());
    }
    for job in &jobs {
        if job.target == Target::Agent {
            if job.url.is_none() {
                return Err(format!("job {:?}: --target=agent needs --url=http://HOST:PORT", job.name));
            }
        } else if job.filename.is_none() {
            return Err(format!("job {:?}: no --filename given", job.name));
        }
        if job.time_based && job.runtime_us.is_none() {
            return Err(format!("job {:?}: --time_based needs --runtime", job.name));
        }
        if job.target == Target::Store && job.ioengine == Engine::Psync {
            return Err(format!(
                "job {:?}: the store target always uses io_uring (ioengine=psync is for --target=device)",
                job.name
            ));
        }
        if (job.scrub != Scrub::Off || job.scrub_only) && job.target != Target::Store {
            return Err(format!("job {:?}: --scrub and --scrub_only are for --target=store", job.name));
        }
        if job.scrub_only && job.scrub == Scrub::Off {
            return Err(format!("job {:?}: --scrub_only needs --scrub=deadline, max or a rate", job.name));
        }
        if job.target != Target::Device && job.bs > shardstore::store::SHARD_SIZE_BYTES_MAX {
            return Err(format!("job {:?}: bs {} exceeds the largest shard", job.name, job.bs));
        }
        if job.verify && job.target != Target::Device {
            return Err(format!(
                "job {:?}: verify=crc32c is for --target=device (the store verifies every read itself)",
                job.name
            ));
        }
        if job.verify && job.bs < 4096 {
            return Err(format!("job {:?}: verify=crc32c needs bs of at least 4k", job.name));
        }
        if job.offset % job.bs != 0 {
            return Err(format!("job {:?}: offset {} is not a multiple of bs {}", job.name, job.offset, job.bs));
        }
    }
    Ok(Invocation { jobs, output_format })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Invocation, String> {
        parse_args(line.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn fio_command_lines_parse() {
        let inv = parse("--ioengine=io_uring --direct=1 --name=rr --filename=/tmp/x --rw=randread --bs=4k --iodepth 32 --runtime=10 --time_based --output-format=json").unwrap();
        assert_eq!(inv.output_format, OutputFormat::Json);
        let j = &inv.jobs[0];
        assert_eq!(
            (j.rw, j.bs, j.iodepth, j.runtime_us, j.time_based),
            (Rw::RandRead, 4096, 32, Some(10_000_000), true)
        );
        assert_eq!(j.filename.as_deref(), Some(std::path::Path::new("/tmp/x")));
    }

    #[test]
    fn globals_apply_to_every_job_and_job_options_to_one() {
        let inv = parse("--filename=/d --bs=8k --name=a --rw=write --name=b --bs=1m").unwrap();
        assert_eq!(inv.jobs.len(), 2);
        assert_eq!((inv.jobs[0].bs, inv.jobs[0].rw), (8192, Rw::Write));
        assert_eq!((inv.jobs[1].bs, inv.jobs[1].rw), (1 << 20, Rw::Read));
    }

    #[test]
    fn an_agent_job_needs_a_url_not_a_file() {
        let inv = parse("--name=a --target=agent --url=http://127.0.0.1:7480/ --rw=write --bs=1m").unwrap();
        assert_eq!((inv.jobs[0].target, inv.jobs[0].url.as_deref()), (Target::Agent, Some("127.0.0.1:7480")));
    }

    #[test]
    fn mixes_follow_fio() {
        let inv = parse("--name=m --filename=/d --rw=randrw --rwmixwrite=30").unwrap();
        assert_eq!(inv.jobs[0].rw.read_percent(inv.jobs[0].rwmixread), 70);
    }

    #[test]
    fn job_files_follow_fio() {
        let text =
            "; a comment\n[global]\nfilename=/d\nbs=8k\ntime_based\nruntime=5\n\n[reads]\nrw=randread\niodepth=16\n\
                    # another\n[writes]\nrw=write\nbs=1m\n";
        let defaults = JobSpec { ioengine: Engine::Psync, ..JobSpec::default() };
        let jobs = parse_job_file("job.fio", text, &defaults).unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!((jobs[0].name.as_str(), jobs[0].rw, jobs[0].bs, jobs[0].iodepth), ("reads", Rw::RandRead, 8192, 16));
        assert_eq!((jobs[1].name.as_str(), jobs[1].rw, jobs[1].bs), ("writes", Rw::Write, 1 << 20));
        for j in &jobs {
            assert!(
                j.time_based
                    && j.runtime_us == Some(5_000_000)
                    && j.filename.as_deref() == Some(std::path::Path::new("/d"))
            );
            assert_eq!(j.ioengine, Engine::Psync, "options given before the file are its defaults");
        }
        let errors = [
            ("[a]\nverify_pattern=1\n", "job.fio:2: unknown option \"verify_pattern\""),
            ("bs=4k\n[a]\n", "job.fio:1: option \"bs\" before any [section]"),
            ("[a]\nbs=4q\n", "job.fio:2: option bs"),
            ("[a\n", "job.fio:1: unterminated section"),
            ("[global]\nbs=4k\n", "no job sections"),
            ("[a]\nrw\n", "job.fio:2: option \"rw\" needs a value"),
        ];
        for (text, want) in errors {
            let err = parse_job_file("job.fio", text, &JobSpec::default()).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err:?} should mention {want:?}");
        }
    }

    #[test]
    fn percentile_lists_follow_fio() {
        let inv = parse("--name=a --filename=/d --percentile_list=50:99:99.99").unwrap();
        assert_eq!(inv.jobs[0].percentile_list, vec![50.0, 99.0, 99.99]);
        let inv = parse("--name=a --filename=/d").unwrap();
        assert_eq!(inv.jobs[0].percentile_list.len(), 17, "fio's default list");
    }

    #[test]
    fn submission_batches_follow_fio() {
        let inv = parse("--name=a --filename=/d --iodepth=32").unwrap();
        assert_eq!(inv.jobs[0].iodepth_batch_submit, 1, "fio submits each I/O at once by default");
        let inv = parse("--name=a --filename=/d --iodepth=32 --iodepth_batch=8").unwrap();
        assert_eq!(inv.jobs[0].iodepth_batch_submit, 8);
        let inv = parse("--name=a --filename=/d --iodepth_batch_submit=0").unwrap();
        assert_eq!(inv.jobs[0].iodepth_batch_submit, 0);
        let err = parse("--name=a --filename=/d --iodepth_batch_submit=-1").unwrap_err();
        assert!(err.contains("option iodepth_batch_submit"), "{err}");
    }

    #[test]
    fn every_error_names_what_is_wrong() {
        let cases = [
            ("--name=a --filename=/d --verify_fatal=1", "unknown option --verify_fatal"),
            ("--name=a --filename=/d --verify=md5", "option verify: unsupported method"),
            ("--name=a --filename=/d --rw=trim", "unsupported pattern"),
            ("--name=a --filename=/d --bs=1000", "option bs"),
            ("--name=a --filename=/d --bs=4q", "unknown suffix"),
            ("--name=a --filename=/d --iodepth=0", "option iodepth"),
            ("--name=a --filename=/d --rwmixread=101", "option rwmixread"),
            ("--name=a --filename=/d --direct=0", "direct=0"),
            ("--name=a --filename=/d --ioengine=libaio", "unsupported engine"),
            ("--name=a --filename=/d --output-format=terse", "unsupported format"),
            ("--name=a --filename=/d --time_based", "needs --runtime"),
            ("--name=a --filename=/d --runtime=5x", "option runtime"),
            ("--name=a", "no --filename"),
            ("--filename=/d", "no job defined"),
            ("--name=a --filename=/d --iodepth", "needs a value"),
            ("--name=a --filename=/d /nonexistent/job.fio", "job file /nonexistent/job.fio"),
            ("--name=a --filename=/d --bs=8k --offset=4k", "not a multiple of bs"),
            ("--name=a --target=agent", "needs --url"),
            ("--name=a --target=agent --url=https://h:1", "not an http:// URL"),
            ("--name=a --target=agent --url=http://h:1/v1", "expected http://HOST:PORT"),
            ("--name=a --filename=/d --target=cloud", "unsupported target"),
            ("--name=a --filename=/d --scrub=max", "for --target=store"),
            ("--name=a --filename=/d --percentile_list=50:x", "option percentile_list"),
            ("--name=a --filename=/d --percentile_list=101", "option percentile_list"),
            ("--name=a --filename=/d --target=store --scrub=fast", "option scrub"),
            ("--name=a --filename=/d --target=store --scrub_only", "needs --scrub"),
        ];
        for (line, want) in cases {
            let err = parse(line).unwrap_err();
            assert!(err.contains(want), "{line}: {err:?} should mention {want:?}");
        }
    }
}
