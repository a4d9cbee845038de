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

fn lat_json(s: &LatencyStats, percentiles: Option<&[f64]>) -> Value {
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
    }
    v
}

/// One direction's figures; percentiles of `clat` (and of `lat` when
/// `lat_percentiles`) at the job's `percentile_list`.
fn dir_json(d: &DirStats, runtime_us: u64, spec: &JobSpec) -> Value {
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
        "slat_ns": lat_json(&d.slat, None),
        "clat_ns": lat_json(&d.clat, list),
        "lat_ns": lat_json(&d.lat, list.filter(|_| spec.lat_percentiles)),
    })
}

fn depth_json(r: &JobResult) -> Value {
    let total: u64 = r.depth_hist.iter().sum::<u64>().max(1);
    let pct = |i: usize| r.depth_hist[i] as f64 * 100.0 / total as f64;
    json!({"1": pct(0), "2": pct(1), "4": pct(2), "8": pct(3), "16": pct(4), "32": pct(5), ">=64": pct(6)})
}

pub fn json_report(results: &[(JobSpec, JobResult)]) -> Value {
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
            json!({
                "jobname": r.name,
                "groupid": 0,
                "error": 0,
                "elapsed": r.runtime_us.div_ceil(1_000_000),
                "job options": options,
                "read": dir_json(&r.read, r.runtime_us, spec),
                "write": dir_json(&r.write, r.runtime_us, spec),
                "trim": dir_json(&DirStats::default(), 0, spec),
                "job_runtime": r.runtime_us / 1000,
                "usr_cpu": cpu(r.usr_cpu_us),
                "sys_cpu": cpu(r.sys_cpu_us),
                "ctx": r.ctx_switches,
                "majf": 0,
                "minf": 0,
                "iodepth_level": depth_json(r),
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
fn short_count(v: f64) -> String {
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
    let (u, div) = unit(&d.clat);
    let _ = writeln!(out, "    clat percentiles ({u}):");
    for row in percentiles.chunks(4) {
        let cells: Vec<String> =
            row.iter().map(|&p| format!("{:>5.2}th=[{:>6.0}]", p, d.clat.percentile(p) as f64 / div)).collect();
        let _ = writeln!(out, "     | {}", cells.join(", "));
    }
}

pub fn normal_report(results: &[(JobSpec, JobResult)]) -> String {
    let mut out = String::new();
    let pid = std::process::id();
    for (spec, r) in results {
        let _ = writeln!(out, "{}: (groupid=0, jobs={}): err= 0: pid={pid}", r.name, r.jobs);
        dir_text(&mut out, "read", &r.read, r.runtime_us, &spec.percentile_list);
        dir_text(&mut out, "write", &r.write, r.runtime_us, &spec.percentile_list);
        let cpu =
            |us: u64| if r.runtime_us == 0 { 0.0 } else { us as f64 * 100.0 / r.runtime_us as f64 / f64::from(r.jobs) };
        let _ = writeln!(
            out,
            "  cpu          : usr={:.2}%, sys={:.2}%, ctx={}, majf=0, minf=0",
            cpu(r.usr_cpu_us),
            cpu(r.sys_cpu_us),
            r.ctx_switches
        );
        let d = depth_json(r);
        let _ = writeln!(
            out,
            "  IO depths    : 1={:.1}%, 2={:.1}%, 4={:.1}%, 8={:.1}%, 16={:.1}%, 32={:.1}%, >=64={:.1}%",
            d["1"].as_f64().unwrap_or(0.0),
            d["2"].as_f64().unwrap_or(0.0),
            d["4"].as_f64().unwrap_or(0.0),
            d["8"].as_f64().unwrap_or(0.0),
            d["16"].as_f64().unwrap_or(0.0),
            d["32"].as_f64().unwrap_or(0.0),
            d[">=64"].as_f64().unwrap_or(0.0)
        );
        out.push('\n');
    }
    let _ = writeln!(out, "Run status group 0 (all jobs):");
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
    out
}
