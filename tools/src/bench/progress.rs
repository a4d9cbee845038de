//! fio's progress line, rewritten in place once a second while a group of
//! jobs runs: `Jobs: 1 (f=1): [r(1)][45.0%][r=203MiB/s][r=52.0k IOPS][eta 00m:06s]`.
//! Shown when standard output is a terminal (or with `--eta=always`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::options::{JobSpec, Rw};
use super::report::short_count;
use super::run::Progress;

#[derive(Debug)]
pub struct Ticker {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

/// fio's one-letter state of a running job.
fn state(rw: Rw) -> char {
    match rw {
        Rw::Read => 'R',
        Rw::RandRead => 'r',
        Rw::Write => 'W',
        Rw::RandWrite => 'w',
        Rw::ReadWrite => 'M',
        Rw::RandReadWrite => 'm',
    }
}

/// What a group will do: its length when every job is time based, else
/// the bytes it will move.
enum Plan {
    Time(Duration),
    Bytes(u64),
}

fn plan(group: &[JobSpec]) -> Plan {
    if group.iter().all(|j| j.time_based) {
        let longest = group.iter().map(|j| j.ramp_time_us + j.runtime_us.unwrap_or(0)).max().unwrap_or(0);
        Plan::Time(Duration::from_micros(longest))
    } else {
        // A sized job moves `size` bytes per clone (a missing size means
        // the whole device: unknown here, so the line shows no ETA).
        Plan::Bytes(group.iter().map(|j| j.size.unwrap_or(0) * u64::from(j.numjobs)).sum())
    }
}

/// `200MiB/s` or `512KiB/s`, as fio's progress line shows a rate.
fn rate(bytes_per_sec: f64) -> String {
    if bytes_per_sec >= 1024.0 * 1024.0 {
        format!("{:.0}MiB/s", bytes_per_sec / (1024.0 * 1024.0))
    } else {
        format!("{:.0}KiB/s", bytes_per_sec / 1024.0)
    }
}

/// One progress line from what was done in the last `dt`.
pub fn line(group: &[JobSpec], elapsed: Duration, total: [u64; 2], delta: ([u64; 2], [u64; 2]), dt: f64) -> String {
    let threads: u32 = group.iter().map(|j| j.numjobs).sum();
    let states = group.iter().fold(String::new(), |mut s, j| {
        let _ = write!(s, "{}({})", state(j.rw), j.numjobs);
        s
    });
    let (done, eta) = match plan(group) {
        Plan::Time(t) => {
            let frac = (elapsed.as_secs_f64() / t.as_secs_f64().max(1e-9)).min(1.0);
            (frac, Some(t.saturating_sub(elapsed)))
        }
        Plan::Bytes(0) => (0.0, None),
        Plan::Bytes(b) => {
            let frac = ((total[0] + total[1]) as f64 / b as f64).min(1.0);
            let left = (frac > 0.0).then(|| elapsed.mul_f64((1.0 - frac) / frac));
            (frac, left)
        }
    };
    let eta =
        eta.map_or_else(|| "--m:--s".to_owned(), |e| format!("{:02}m:{:02}s", e.as_secs() / 60, e.as_secs() % 60));
    let (bytes, ios) = delta;
    let per = |v: u64| v as f64 / dt.max(1e-9);
    let (bw, iops) = match (bytes[0] > 0, bytes[1] > 0) {
        (true, true) => (
            format!("r={},w={}", rate(per(bytes[0])), rate(per(bytes[1]))),
            format!("r={},w={} IOPS", short_count(per(ios[0])), short_count(per(ios[1]))),
        ),
        (false, true) => (format!("w={}", rate(per(bytes[1]))), format!("w={} IOPS", short_count(per(ios[1])))),
        _ => (format!("r={}", rate(per(bytes[0]))), format!("r={} IOPS", short_count(per(ios[0])))),
    };
    format!("Jobs: {threads} (f={threads}): [{states}][{:.1}%][{bw}][{iops}][eta {eta}]", done * 100.0)
}

impl Ticker {
    pub fn start(group: &[JobSpec], progress: Arc<Progress>) -> Ticker {
        let group = group.to_vec();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let read = |p: &Progress| {
                ([p.bytes[0].load(Relaxed), p.bytes[1].load(Relaxed)], [p.ios[0].load(Relaxed), p.ios[1].load(Relaxed)])
            };
            let (mut last_bytes, mut last_ios) = read(&progress);
            let mut last = Instant::now();
            let mut width = 0;
            while !flag.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if last.elapsed() < Duration::from_secs(1) && !flag.load(Relaxed) {
                    continue;
                }
                let (bytes, ios) = read(&progress);
                let delta = (
                    [bytes[0] - last_bytes[0], bytes[1] - last_bytes[1]],
                    [ios[0] - last_ios[0], ios[1] - last_ios[1]],
                );
                let text = line(&group, started.elapsed(), bytes, delta, last.elapsed().as_secs_f64());
                width = width.max(text.len());
                let mut out = std::io::stdout().lock();
                let _ = write!(out, "\r{text:<width$}");
                let _ = out.flush();
                (last_bytes, last_ios, last) = (bytes, ios, Instant::now());
            }
            let _ = writeln!(std::io::stdout().lock());
        });
        Ticker { stop, thread }
    }

    pub fn stop(self) {
        self.stop.store(true, Relaxed);
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_reads_like_fios() {
        let job = JobSpec { rw: Rw::RandRead, time_based: true, runtime_us: Some(10_000_000), ..JobSpec::default() };
        let l = line(&[job], Duration::from_secs(4), [0; 2], ([200 << 20, 0], [51_200, 0]), 1.0);
        assert_eq!(l, "Jobs: 1 (f=1): [r(1)][40.0%][r=200MiB/s][r=51.2k IOPS][eta 00m:06s]");
        let job = JobSpec { rw: Rw::ReadWrite, size: Some(100 << 20), numjobs: 2, ..JobSpec::default() };
        let l = line(&[job], Duration::from_secs(3), [50 << 20, 25 << 20], ([1 << 20, 1 << 20], [256, 256]), 1.0);
        assert_eq!(l, "Jobs: 2 (f=2): [M(2)][37.5%][r=1MiB/s,w=1MiB/s][r=256,w=256 IOPS][eta 00m:05s]");
    }
}
