//! fio's command-line options, for the subset shardbench supports.
//!
//! As in fio: options before the first `--name` are global defaults; each
//! `--name` starts a job that inherits them; later options apply to that
//! job. `--key=value` and `--key value` both work; a boolean option may be
//! given bare. An option fio has that shardbench lacks is an error naming
//! it, never silently ignored.

use std::path::PathBuf;

use crate::units::{parse_duration_us, parse_size};

mod values;
use values::{no_split_by_direction, parse_block_size, parse_bool, parse_bssplit, parse_per_direction, parse_u32};

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
    /// A cluster's object API through one agent (`--url`): the same jobs
    /// on objects of `bs` bytes, each stored erasure-coded (or as copies)
    /// across the cluster's hosts.
    Objects,
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
    /// fio's `json+`: JSON plus every latency histogram bucket (`bins`).
    JsonPlus,
}

/// fio's `--eta`: when to show the progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eta {
    /// When standard output is a terminal (fio's default).
    Auto,
    Always,
    Never,
}

/// How the block size of each I/O is chosen (fio's `bs`, `bsrange`,
/// `bssplit`). Offsets are multiples of the smallest size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockSizes {
    Fixed(u64),
    /// Uniform in `min..=max`, a multiple of `min` (fio's `bsrange`).
    Range {
        min: u64,
        max: u64,
    },
    /// Each size with its share of the I/Os in percent, adding up to 100.
    Split(Vec<(u64, u32)>),
}

impl BlockSizes {
    pub fn min(&self) -> u64 {
        match self {
            BlockSizes::Fixed(bs) => *bs,
            BlockSizes::Range { min, .. } => *min,
            BlockSizes::Split(list) => list.iter().map(|&(bs, _)| bs).min().unwrap_or(4096),
        }
    }

    pub fn max(&self) -> u64 {
        match self {
            BlockSizes::Fixed(bs) => *bs,
            BlockSizes::Range { max, .. } => *max,
            BlockSizes::Split(list) => list.iter().map(|&(bs, _)| bs).max().unwrap_or(4096),
        }
    }

    /// The size of the next I/O.
    pub fn pick(&self, rng: &mut shardstore::rng::Rng) -> u64 {
        match self {
            BlockSizes::Fixed(bs) => *bs,
            BlockSizes::Range { min, max } => min * (1 + rng.below(max / min)),
            BlockSizes::Split(list) => {
                let mut roll = rng.below(100) as u32;
                for &(bs, pct) in list {
                    if roll < pct {
                        return bs;
                    }
                    roll -= pct;
                }
                list.last().map_or(4096, |&(bs, _)| bs)
            }
        }
    }
}

/// `--crash-test` (store target): how the store is stopped mid-write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashTest {
    /// A child process runs the store on the real file and is killed
    /// with SIGKILL at a random moment.
    Kill,
    /// The store runs on a simulated device whose power is cut at a
    /// random moment (unflushed writes dropped or torn).
    Sim,
}

/// One job as fio would understand it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub name: String,
    pub filename: Option<PathBuf>,
    pub rw: Rw,
    pub rwmixread: u32,
    /// The largest I/O (the only one unless `bsrange`/`bssplit`); with
    /// `bs_write`, the size of reads.
    pub bs: u64,
    /// fio's second `bs` value (`bs=4k,1m`): the size of writes when it
    /// differs from reads (`--target=store` or `agent`: gets of `bs`-byte shards
    /// while puts write `bs_write`-byte shards under keys of their own).
    pub bs_write: Option<u64>,
    pub sizes: BlockSizes,
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
    /// fio's `rate`: bytes per second at most, [reads, writes]; 0 = no cap.
    pub rate: [u64; 2],
    /// fio's `rate_iops`: I/Os per second at most, [reads, writes].
    pub rate_iops: [u64; 2],
    /// fio's random map (on unless `norandommap`): a random job touches
    /// every block once before any block twice.
    pub randommap: bool,
    /// fio's `randrepeat` (default 1): the same random sequence every run.
    pub randrepeat: bool,
    /// fio's `fsync=N` / `fdatasync=N`: a sync after every N writes.
    pub fsync: u32,
    pub fdatasync: u32,
    /// fio's `end_fsync`: a sync when the job's writes are done.
    pub end_fsync: bool,
    /// fio's `stonewall`: wait for the jobs before this one to finish, and
    /// start a new reporting group.
    pub stonewall: bool,
    /// `--crash-test[=kill|sim]` (store target).
    pub crash_test: Option<CrashTest>,
    /// `--crash_rounds=N`: crashes per crash test (a shardnode option).
    pub crash_rounds: u32,
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
            bs_write: None,
            sizes: BlockSizes::Fixed(4096),
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
            rate: [0; 2],
            rate_iops: [0; 2],
            randommap: true,
            randrepeat: true,
            fsync: 0,
            fdatasync: 0,
            end_fsync: false,
            stonewall: false,
            crash_test: None,
            crash_rounds: 1,
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
    pub eta: Eta,
}

/// Options that are flags when given without a value.
const BOOLEAN: &[&str] = &[
    "time_based",
    "group_reporting",
    "fixedbufs",
    "registerfiles",
    "lat_percentiles",
    "scrub_only",
    "norandommap",
    "randrepeat",
    "end_fsync",
    "stonewall",
    "wait_for_previous",
    "crash-test",
];

const KNOWN: &[&str] = &[
    "name",
    "filename",
    "rw",
    "readwrite",
    "rwmixread",
    "rwmixwrite",
    "bs",
    "blocksize",
    "bsrange",
    "blocksize_range",
    "bssplit",
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
    "rate",
    "rate_iops",
    "norandommap",
    "randrepeat",
    "fsync",
    "fdatasync",
    "end_fsync",
    "stonewall",
    "wait_for_previous",
    "crash-test",
    "crash_rounds",
    "output-format",
    "eta",
];

/// Every option the parser takes (for `--help`'s test).
pub fn known_options() -> &'static [&'static str] {
    KNOWN
}

/// Options of the command line only (fio's too), not of a job.
const COMMAND_LINE_ONLY: &[&str] = &["output-format", "eta", "name"];

pub const USAGE: &str = "usage: shardbench --name=JOB --filename=PATH [--rw=read|write|randread|randwrite|rw|randrw] \
[--bs=4k] [--bsrange=MIN-MAX] [--bssplit=BS/PCT:BS/PCT...] [--iodepth=N] [--iodepth_batch_submit=N] [--numjobs=N] [--size=SIZE] [--offset=SIZE] [--runtime=30] [--time_based] \
[--ramp_time=T] [--rwmixread=PCT] [--direct=1] [--ioengine=io_uring|psync] [--fixedbufs=0|1] \
[--registerfiles=0|1] [--lat_percentiles=0|1] [--target=device|store|agent|objects] [--url=http://HOST:PORT] [--group_reporting] \
[--percentile_list=P:P:...] [--verify=crc32c] [--do_verify=0|1] [--rate=[R][,W]] [--rate_iops=[R][,W]] \
[--norandommap] [--randrepeat=0|1] [--fsync=N] [--fdatasync=N] [--end_fsync] [--stonewall] \
[--scrub=off|deadline|max|RATE] [--scrub_only] [--crash-test[=kill|sim]] [--crash_rounds=N] \
[--output-format=normal|json|json+] [--eta=auto|always|never] [JOBFILE...]";

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
        if !KNOWN.contains(&key) || COMMAND_LINE_ONLY.contains(&key) {
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
        "bs" | "blocksize" => {
            let (read, write) = match value.split_once(',') {
                Some((read, write)) => (read, Some(write)),
                None => (value, None),
            };
            let bs = parse_block_size("bs", read)?;
            job.bs = bs;
            job.sizes = BlockSizes::Fixed(bs);
            job.bs_write = write.map(|w| parse_block_size("bs (writes)", w)).transpose()?.filter(|&w| w != bs);
        }
        "bsrange" | "blocksize_range" => {
            no_split_by_direction(key, value)?;
            let (min, max) = value
                .split_once('-')
                .ok_or_else(|| format!("option {key}: expected MIN-MAX (like 4k-64k), got {value:?}"))?;
            let (min, max) = (parse_block_size(key, min)?, parse_block_size(key, max)?);
            if min > max {
                return Err(format!("option {key}: MIN {min} is above MAX {max}"));
            }
            job.bs = max;
            job.sizes = BlockSizes::Range { min, max };
        }
        "bssplit" => {
            no_split_by_direction(key, value)?;
            let list = parse_bssplit(value)?;
            job.bs = list.iter().map(|&(bs, _)| bs).max().unwrap_or(4096);
            job.sizes = BlockSizes::Split(list);
        }
        "rate" => job.rate = parse_per_direction(key, value, parse_size)?,
        "rate_iops" => {
            job.rate_iops =
                parse_per_direction(key, value, |v| v.parse().map_err(|_| format!("{v:?} is not a number")))?;
        }
        "norandommap" => job.randommap = !parse_bool(key, value)?,
        "randrepeat" => job.randrepeat = parse_bool(key, value)?,
        "fsync" => job.fsync = parse_u32(key, value, 0, u32::MAX)?,
        "fdatasync" => job.fdatasync = parse_u32(key, value, 0, u32::MAX)?,
        "end_fsync" => job.end_fsync = parse_bool(key, value)?,
        "stonewall" | "wait_for_previous" => job.stonewall = parse_bool(key, value)?,
        "crash_rounds" => job.crash_rounds = parse_u32(key, value, 1, 10_000)?,
        "crash-test" => {
            job.crash_test = match value {
                "1" | "kill" => Some(CrashTest::Kill),
                "sim" => Some(CrashTest::Sim),
                "0" => None,
                _ => return Err(format!("option crash-test: unsupported mode {value:?} (kill, sim)")),
            };
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
                "objects" => Target::Objects,
                _ => {
                    return Err(format!("option target: unsupported target {value:?} (device, store, agent, objects)"))
                }
            }
        }
        "randseed" => {
            job.randseed = value.parse().map_err(|_| format!("option randseed: expected a number, got {value:?}"))?;
        }
        _ => return Err(format!("unknown option {key:?} (see --help)")),
    }
    Ok(())
}

/// Options whose meaning is the device's: refused with their reason for
/// the other targets rather than ignored.
fn check_target_options(job: &JobSpec) -> Result<(), String> {
    let device_only = [
        ("bsrange/bssplit", !matches!(job.sizes, BlockSizes::Fixed(_)), "shards are all of size bs"),
        ("rate/rate_iops", job.rate != [0; 2] || job.rate_iops != [0; 2], "requests are not paced"),
        ("fsync/fdatasync/end_fsync", job.fsync > 0 || job.fdatasync > 0 || job.end_fsync, "every put is durable"),
    ];
    if job.target != Target::Device {
        if let Some((what, _, why)) = device_only.iter().find(|(_, given, _)| *given) {
            return Err(format!("job {:?}: {what} is for --target=device ({why} in the store)", job.name));
        }
    }
    if job.crash_test.is_some() && job.target != Target::Store {
        return Err(format!("job {:?}: --crash-test is for --target=store", job.name));
    }
    if job.crash_test.is_some() && job.rw.read_percent(job.rwmixread) != 0 {
        return Err(format!("job {:?}: --crash-test writes (give --rw=write or randwrite)", job.name));
    }
    Ok(())
}

/// Parses a fio-style command line (without the program name).
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Invocation, String> {
    let mut args = args.into_iter().peekable();
    let mut global = JobSpec::default();
    let mut jobs: Vec<JobSpec> = Vec::new();
    let mut output_format = OutputFormat::Normal;
    let mut eta = Eta::Auto;
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
                "json+" => OutputFormat::JsonPlus,
                _ => return Err(format!("option output-format: unsupported format {value:?} (normal, json, json+)")),
            };
            continue;
        }
        if key == "eta" {
            eta = match value.as_str() {
                "auto" => Eta::Auto,
                "always" => Eta::Always,
                "never" => Eta::Never,
                _ => return Err(format!("option eta: unsupported value {value:?} (auto, always, never)")),
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
        if matches!(job.target, Target::Agent | Target::Objects) {
            if job.url.is_none() {
                let target = if job.target == Target::Agent { "agent" } else { "objects" };
                return Err(format!("job {:?}: --target={target} needs --url=http://HOST:PORT", job.name));
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
        if job.bs_write.is_some() && !matches!(job.target, Target::Store | Target::Agent) {
            return Err(format!(
                "job {:?}: separate read and write block sizes (bs=R,W) are for --target=store or agent",
                job.name
            ));
        }
        if job.bs_write.is_some_and(|w| w > shardstore::store::SHARD_SIZE_BYTES_MAX) {
            return Err(format!("job {:?}: bs for writes exceeds the largest shard", job.name));
        }
        if matches!(job.target, Target::Store | Target::Agent) && job.bs > shardstore::store::SHARD_SIZE_BYTES_MAX {
            return Err(format!("job {:?}: bs {} exceeds the largest shard", job.name, job.bs));
        }
        if job.verify && job.target != Target::Device {
            return Err(format!(
                "job {:?}: verify=crc32c is for --target=device (the store verifies every read itself)",
                job.name
            ));
        }
        if job.verify && job.sizes.min() < 4096 {
            return Err(format!("job {:?}: verify=crc32c needs bs of at least 4k", job.name));
        }
        if job.offset % job.sizes.min() != 0 {
            return Err(format!(
                "job {:?}: offset {} is not a multiple of bs {}",
                job.name,
                job.offset,
                job.sizes.min()
            ));
        }
        check_target_options(job)?;
    }
    Ok(Invocation { jobs, output_format, eta })
}

#[cfg(test)]
mod tests;
