//! fio's two output formats for what shardbench measures: the human
//! `normal` layout and the JSON schema, with fio's field names, so the
//! same script reads either tool.

use std::fmt::Write as _;

use serde_json::{json, Map, Value};

use super::hist::LatencyStats;
use super::options::JobSpec;
use super::run::{DirStats, JobResult};

fn per_sec(amount: u64, runtime_us: u64) -> f64 {
    if runtime_us == 0 {
        0.0
    } else {
        amount as f64 * 1e6 / runtime_us as f64
    }
}

fn lat_json(s: &LatencyStats, percentiles: Option<&[f64]>, bins: bool) -> Value {
    let mut v = json!({
        "min": s.min(),
        "max": s.max_ns,
        "mean": s.mean(),
        "stddev": s.stddev(),
        "N": s.count,
    });
    if let Some(list) = percentiles.filter(|_| s.count > 0) {
        let p: Map<String, Value> = list.iter().map(|&p| (format!("{p:.6}"), json!(s.percentile(p)))).collect();
        v["percentile"] = Value::Object(p);
        if bins {
            v["bins"] = Value::Object(s.bins().map(|(ns, n)| (ns.to_string(), json!(n))).collect());
        }
    }
    v
}

/// One direction's figures; percentiles of `clat` (and of `lat` when
/// `lat_percentiles`) at the job's `percentile_list`.
fn dir_json(d: &DirStats, runtime_us: u64, spec: &JobSpec, bins: bool) -> Value {
    let list = Some(spec.percentile_list.as_slice());
    let runtime_us = if d.total_ios == 0 { 0 } else { runtime_us };
    let bw_bytes = per_sec(d.io_bytes, runtime_us);
    json!({
        "io_bytes": d.io_bytes,
        "io_kbytes": d.io_bytes / 1024,
        "bw_bytes": bw_bytes.round() as u64,
        "bw": (bw_bytes / 1024.0).round() as u64,
        "iops": per_sec(d.total_ios, runtime_us),
        "runtime": runtime_us / 1000,
        "total_ios": d.total_ios,
        "short_ios": 0,
        "drop_ios": 0,
        "slat_ns": lat_json(&d.slat, None, false),
        "clat_ns": lat_json(&d.clat, list, bins),
        "lat_ns": lat_json(&d.lat, list.filter(|_| spec.lat_percentiles), bins),
    })
}

/// Shares of a distribution in percent, as fio computes them: a non-empty
/// bucket shows at least `floor` (so it never reads as zero).
fn shares(counts: &[u64], floor: f64) -> Vec<f64> {
    let total = counts.iter().sum::<u64>().max(1) as f64;
    counts.iter().map(|&n| if n == 0 { 0.0 } else { (n as f64 * 100.0 / total).max(floor) }).collect()
}

const DEPTH_LABELS: [&str; 7] = ["1", "2", "4", "8", "16", "32", ">=64"];
const COUNT_LABELS: [&str; 7] = ["0", "4", "8", "16", "32", "64", ">=64"];
const LAT_LABELS: [&str; 12] = ["2", "4", "10", "20", "50", "100", "250", "500", "750", "1000", "2000", ">=2000"];

fn labelled(labels: &[&str], values: &[f64]) -> Value {
    Value::Object(labels.iter().zip(values).map(|(l, v)| ((*l).to_owned(), json!(v))).collect())
}

fn depth_json(r: &JobResult) -> Value {
    labelled(&DEPTH_LABELS, &shares(&r.depth_hist, 0.1))
}

/// fio's `latency_ns`, `latency_us`, `latency_ms` (percent of all I/Os).
fn latency_json(r: &JobResult) -> [Value; 3] {
    let pct = shares(&r.lat_levels, 0.01);
    [
        labelled(&LAT_LABELS[..10], &pct[..10]),
        labelled(&LAT_LABELS[..10], &pct[10..20]),
        labelled(&LAT_LABELS, &pct[20..]),
    ]
}

pub fn json_report(results: &[(JobSpec, JobResult)], bins: bool) -> Value {
    let jobs: Vec<Value> = results
        .iter()
        .map(|(spec, r)| {
            let options: Map<String, Value> = spec.given.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            let cpu = |us: u64| {
                if r.runtime_us == 0 {
                    0.0
                } else {
                    us as f64 * 100.0 / r.runtime_us as f64 / f64::from(r.jobs)
                }
            };
            let [lat_n, lat_u, lat_m] = latency_json(r);
            json!({
                "jobname": r.name,
                "groupid": r.groupid,
                "error": 0,
                "elapsed": r.runtime_us.div_ceil(1_000_000),
                "job options": options,
                "read": dir_json(&r.read, r.runtime_us, spec, bins),
                "write": dir_json(&r.write, r.runtime_us, spec, bins),
                "trim": dir_json(&DirStats::default(), 0, spec, false),
                "sync": {
                    "total_ios": r.sync.count,
                    "lat_ns": lat_json(&r.sync, Some(spec.percentile_list.as_slice()), bins),
                },
                "job_runtime": r.runtime_us / 1000,
                "usr_cpu": cpu(r.usr_cpu_us),
                "sys_cpu": cpu(r.sys_cpu_us),
                "ctx": r.ctx_switches,
                "majf": 0,
                "minf": 0,
                "iodepth_level": depth_json(r),
                "iodepth_submit": labelled(&COUNT_LABELS, &shares(&r.submit_hist, 0.1)),
                "iodepth_complete": labelled(&COUNT_LABELS, &shares(&r.complete_hist, 0.1)),
                "latency_ns": lat_n,
                "latency_us": lat_u,
                "latency_ms": lat_m,
                "latency_depth": spec.iodepth,
                "latency_target": 0,
                "latency_percentile": 100.0,
                "latency_window": 0,
            })
        })
        .collect();
    // Not in fio's schema: which io_uring features the engine got (from
    // the first job), so a run on a restricted host says it fell back.
    let engine = results.first().map_or(Value::Null, |(_, r)| json!(r.features));
    json!({
        "fio version": concat!("shardbench-", env!("CARGO_PKG_VERSION")),
        "timestamp": shardstore::superblock::now_unix_ms() / 1000,
        "engine": engine,
        "jobs": jobs,
    })
}

/// `52123.4` -> `52.1k`, as fio abbreviates IOPS.
pub(super) fn short_count(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn bw_text(bytes_per_sec: f64) -> String {
    let mib = bytes_per_sec / (1024.0 * 1024.0);
    let mb = bytes_per_sec / 1e6;
    if mib >= 1.0 {
        format!("{mib:.0}MiB/s ({mb:.0}MB/s)")
    } else {
        format!("{:.0}KiB/s ({:.0}kB/s)", bytes_per_sec / 1024.0, bytes_per_sec / 1e3)
    }
}

/// Picks a unit for a latency line from its mean, keeping 2-4 digits.
fn unit(s: &LatencyStats) -> (&'static str, f64) {
    if s.mean() >= 10_000_000.0 {
        ("msec", 1e6)
    } else if s.mean() >= 10_000.0 {
        ("usec", 1e3)
    } else {
        ("nsec", 1.0)
    }
}

fn lat_line(out: &mut String, label: &str, s: &LatencyStats) {
    let (u, div) = unit(s);
    let _ = writeln!(
        out,
        "    {label} ({u}): min={:.0}, max={:.0}, avg={:.2}, stdev={:.2}",
        s.min() as f64 / div,
        s.max_ns as f64 / div,
        s.mean() / div,
        s.stddev() / div
    );
}

fn dir_text(out: &mut String, label: &str, d: &DirStats, runtime_us: u64, percentiles: &[f64]) {
    if d.total_ios == 0 {
        return;
    }
    let _ = writeln!(
        out,
        "  {label}: IOPS={}, BW={}({}/{}msec)",
        short_count(per_sec(d.total_ios, runtime_us)),
        bw_text(per_sec(d.io_bytes, runtime_us)),
        crate::units::human_bytes(d.io_bytes),
        runtime_us / 1000
    );
    lat_line(out, "slat", &d.slat);
    lat_line(out, "clat", &d.clat);
    lat_line(out, " lat", &d.lat);
    percentile_rows(out, "clat", &d.clat, percentiles);
}

fn percentile_rows(out: &mut String, label: &str, s: &LatencyStats, percentiles: &[f64]) {
    let (u, div) = unit(s);
    let _ = writeln!(out, "    {label} percentiles ({u}):");
    for row in percentiles.chunks(4) {
        let cells: Vec<String> =
            row.iter().map(|&p| format!("{:>5.2}th=[{:>6.0}]", p, s.percentile(p) as f64 / div)).collect();
        let _ = writeln!(out, "     | {}", cells.join(", "));
    }
}

/// `label=share%` cells of the non-empty buckets, `per_line` to a line.
fn dist_cells(labels: &[&str], shares: &[f64], decimals: usize) -> Vec<String> {
    labels.iter().zip(shares).filter(|(_, &v)| v > 0.0).map(|(l, v)| format!("{l}={v:.decimals$}%")).collect()
}

/// fio's latency distribution lines: `lat (usec)   : 250=0.53%, 500=80.63%`.
fn lat_dist_text(out: &mut String, r: &JobResult) {
    let pct = shares(&r.lat_levels, 0.01);
    for (unit, range) in [("nsec", 0..10), ("usec", 10..20), ("msec", 20..32)] {
        let labels = &LAT_LABELS[..range.len()];
        let cells = dist_cells(labels, &pct[range], 2);
        for line in cells.chunks(5) {
            let _ = writeln!(out, "  lat ({unit})   : {}", line.join(", "));
        }
    }
}

fn count_line(out: &mut String, label: &str, labels: &[&str], counts: &[u64]) {
    let cells: Vec<String> = labels.iter().zip(shares(counts, 0.1)).map(|(l, v)| format!("{l}={v:.1}%")).collect();
    let _ = writeln!(out, "{label}: {}", cells.join(", "));
}

fn sync_text(out: &mut String, s: &LatencyStats, percentiles: &[f64]) {
    if s.count == 0 {
        return;
    }
    let _ = writeln!(out, "  fsync/fdatasync/sync_file_range:");
    lat_line(out, "sync", s);
    percentile_rows(out, "sync", s, percentiles);
}

pub fn normal_report(results: &[(JobSpec, JobResult)]) -> String {
    let mut out = String::new();
    let pid = std::process::id();
    for (spec, r) in results {
        let _ = writeln!(out, "{}: (groupid={}, jobs={}): err= 0: pid={pid}", r.name, r.groupid, r.jobs);
        dir_text(&mut out, "read", &r.read, r.runtime_us, &spec.percentile_list);
        dir_text(&mut out, "write", &r.write, r.runtime_us, &spec.percentile_list);
        sync_text(&mut out, &r.sync, &spec.percentile_list);
        lat_dist_text(&mut out, r);
        let cpu =
            |us: u64| if r.runtime_us == 0 { 0.0 } else { us as f64 * 100.0 / r.runtime_us as f64 / f64::from(r.jobs) };
        let _ = writeln!(
            out,
            "  cpu          : usr={:.2}%, sys={:.2}%, ctx={}, majf=0, minf=0",
            cpu(r.usr_cpu_us),
            cpu(r.sys_cpu_us),
            r.ctx_switches
        );
        count_line(&mut out, "  IO depths    ", &DEPTH_LABELS, &r.depth_hist);
        count_line(&mut out, "     submit    ", &COUNT_LABELS, &r.submit_hist);
        count_line(&mut out, "     complete  ", &COUNT_LABELS, &r.complete_hist);
        let _ = writeln!(
            out,
            "     issued rwts: total={},{},0,0 short=0,0,0,0 dropped=0,0,0,0",
            r.read.total_ios, r.write.total_ios
        );
        let _ = writeln!(out, "     latency   : target=0, window=0, percentile=100.00%, depth={}", spec.iodepth);
        out.push('\n');
    }
    let last_group = results.iter().map(|(_, r)| r.groupid).max().unwrap_or(0);
    for g in 0..=last_group {
        let group: Vec<&(JobSpec, JobResult)> = results.iter().filter(|(_, r)| r.groupid == g).collect();
        if !group.is_empty() {
            status_lines(&mut out, g, &group);
        }
    }
    out
}

/// fio's `Run status group N (all jobs):` lines.
fn status_lines(out: &mut String, g: u32, results: &[&(JobSpec, JobResult)]) {
    if g > 0 {
        out.push('\n');
    }
    let _ = writeln!(out, "Run status group {g} (all jobs):");
    for (label, pick) in [("READ", true), ("WRITE", false)] {
        let dirs: Vec<(&DirStats, u64)> = results
            .iter()
            .map(|(_, r)| (if pick { &r.read } else { &r.write }, r.runtime_us))
            .filter(|(d, _)| d.total_ios > 0)
            .collect();
        if dirs.is_empty() {
            continue;
        }
        let io: u64 = dirs.iter().map(|(d, _)| d.io_bytes).sum();
        let run_max = dirs.iter().map(|(_, r)| *r).max().unwrap_or(0);
        let run_min = dirs.iter().map(|(_, r)| *r).min().unwrap_or(0);
        let bws: Vec<f64> = dirs.iter().map(|(d, r)| per_sec(d.io_bytes, *r)).collect();
        let bw_min = bws.iter().copied().fold(f64::MAX, f64::min);
        let bw_max = bws.iter().copied().fold(0.0, f64::max);
        let _ = writeln!(
            out,
            "  {label:>5}: bw={}, {}-{}, io={} ({:.0}MB), run={}-{}msec",
            bw_text(per_sec(io, run_max)),
            bw_text(bw_min),
            bw_text(bw_max),
            crate::units::human_bytes(io),
            io as f64 / 1e6,
            run_min / 1000,
            run_max / 1000
        );
    }
}
