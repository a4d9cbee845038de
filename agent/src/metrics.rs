//! Prometheus metrics (`GET /metrics`). Names are in base units. Request
//! metrics are recorded once per HTTP request, never per device I/O;
//! device figures are read from the store threads' counters when scraped.

use std::sync::atomic::Ordering;
use std::sync::{LazyLock, OnceLock};
use std::time::Instant;

use axum::extract::Request;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use shardstore::health::HealthState;
use shardstore::store::scrub::{FindingKind, ScrubStatus};

use crate::node::Node;

/// Request latency buckets, in seconds: 100 µs to 10 s.
const LATENCY_BUCKETS_SECONDS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Installs the process-wide recorder; `None` if one is already installed
/// (tests that start several apps in one process).
pub fn install() -> Option<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &LATENCY_BUCKETS_SECONDS)
        .ok()?
        .install_recorder()
        .ok()?;
    crate::catalog::describe_all();
    PROCESS.describe();
    Some(handle)
}

/// The standard `process_*` metrics every exporter on a host has (CPU
/// seconds, resident memory, open and maximum file descriptors, threads,
/// start time), read from /proc at each scrape.
static PROCESS: std::sync::LazyLock<metrics_process::Collector> =
    std::sync::LazyLock::new(metrics_process::Collector::default);

/// Refreshes the process metrics; called by each scrape.
pub fn collect_process() {
    PROCESS.collect();
}

/// The `op` label of a request, by [`operation`]'s index.
const OPERATIONS: [&str; 10] =
    ["put", "get", "head", "delete", "list", "object_put", "object_get", "object_head", "object_delete", "other"];

/// What a request was, for its labels: an index into `OPERATIONS`.
pub fn operation(method: &Method, path: &str) -> usize {
    let shard = path.starts_with("/v1/shards/") && path.len() > "/v1/shards/".len();
    match (method.as_str(), shard) {
        ("PUT", true) => 0,
        ("GET", true) => 1,
        ("HEAD", true) => 2,
        ("DELETE", true) => 3,
        ("GET", false) if path.starts_with("/v1/shards") => 4,
        (m, false) if path.starts_with("/v1/objects/") => match m {
            "PUT" => 5,
            "GET" => 6,
            "HEAD" => 7,
            "DELETE" => 8,
            _ => 9,
        },
        _ => 9,
    }
}

/// Status codes whose request counters are kept registered (100-599).
const STATUS_FIRST: u16 = 100;
const STATUS_COUNT: usize = 500;

/// Each operation's request counters (by status) and duration histogram,
/// registered on first use and kept: looking a labelled metric up in the
/// recorder's registry on every request hashed and allocated its key.
struct RequestMetrics {
    counters: Vec<OnceLock<metrics::Counter>>,
    durations: [OnceLock<metrics::Histogram>; OPERATIONS.len()],
}

static REQUEST_METRICS: LazyLock<RequestMetrics> = LazyLock::new(|| RequestMetrics {
    counters: (0..OPERATIONS.len() * STATUS_COUNT).map(|_| OnceLock::new()).collect(),
    durations: std::array::from_fn(|_| OnceLock::new()),
});

fn count_request(op: usize, status: u16) {
    let counter =
        || metrics::counter!("shardnode_http_requests_total", "op" => OPERATIONS[op], "status" => status.to_string());
    match status.checked_sub(STATUS_FIRST).map(usize::from).filter(|&i| i < STATUS_COUNT) {
        Some(i) => REQUEST_METRICS.counters[op * STATUS_COUNT + i].get_or_init(counter).increment(1),
        None => counter().increment(1),
    }
}

/// Counts every request by operation and status, and times it.
pub async fn record(req: Request, next: Next) -> Response {
    let op = operation(req.method(), req.uri().path());
    let started = Instant::now();
    let response = next.run(req).await;
    observe(op, response.status().as_u16(), started);
    response
}

/// Counts a request of operation `op` (`operation`) answered with
/// `status`, and times it from `started`.
pub fn observe(op: usize, status: u16, started: Instant) {
    count_request(op, status);
    REQUEST_METRICS.durations[op]
        .get_or_init(|| metrics::histogram!("shardnode_http_request_duration_seconds", "op" => OPERATIONS[op]))
        .record(started.elapsed().as_secs_f64());
}

/// Sets the per-device gauges and totals from the store threads' figures
/// and their scrubbers' status.
pub fn publish_device_gauges(node: &Node, scrubs: &[(usize, Result<ScrubStatus, shardstore::Error>)]) {
    for (id, st) in scrubs {
        if let Ok(st) = st {
            publish_scrub(&id.to_string(), st);
        }
    }
    for s in &node.slots {
        let device = s.id.to_string();
        let state = match (&s.store, s.fenced.load(Ordering::Relaxed)) {
            (None, _) => "failed",
            (Some(_), true) => "fenced",
            (Some(_), false) => "open",
        };
        for st in ["open", "fenced", "failed"] {
            metrics::gauge!("shardnode_device_state", "device" => device.clone(), "state" => st).set(if st == state {
                1.0
            } else {
                0.0
            });
        }
        let (health, _) = s.health_state();
        for st in [HealthState::Healthy, HealthState::Suspect, HealthState::Fenced, HealthState::Failed] {
            metrics::gauge!("shardnode_device_health", "device" => device.clone(), "state" => st.name())
                .set(if st == health { 1.0 } else { 0.0 });
        }
        for (to, n) in ["healthy", "suspect", "fenced", "failed"].iter().zip(&s.transitions) {
            metrics::counter!("shardnode_device_health_transitions_total", "device" => device.clone(), "to" => *to)
                .absolute(n.load(Ordering::Relaxed));
        }
        for (kind, n) in [("corruption", &s.errors.corruption), ("io", &s.errors.io)] {
            metrics::counter!("shardnode_device_errors_total", "device" => device.clone(), "kind" => kind)
                .absolute(n.load(Ordering::Relaxed));
        }
        let t = &s.traffic;
        for (op, n, bytes) in [
            ("get", &t.reads, Some(&t.read_bytes)),
            ("put", &t.writes, Some(&t.written_bytes)),
            ("delete", &t.deletes, None),
        ] {
            metrics::counter!("shardnode_device_operations_total", "device" => device.clone(), "op" => op)
                .absolute(n.load(Ordering::Relaxed));
            if let Some(bytes) = bytes {
                let name = if op == "get" {
                    "shardnode_device_read_bytes_total"
                } else {
                    "shardnode_device_written_bytes_total"
                };
                metrics::counter!(name, "device" => device.clone()).absolute(bytes.load(Ordering::Relaxed));
            }
        }
        metrics::gauge!("shardnode_admission_waiting", "device" => device.clone()).set(s.admission.waiting() as f64);
        for (reason, n) in [("overloaded", &s.admission.overloaded), ("deadline", &s.admission.deadline_exceeded)] {
            metrics::counter!("shardnode_admission_drops_total", "device" => device.clone(), "reason" => reason)
                .absolute(n.load(Ordering::Relaxed));
        }
        let Some(store) = &s.store else { continue };
        let stats = store.stats();
        let u = stats.usage();
        let g = |name: &'static str, v: u64| metrics::gauge!(name, "device" => device.clone()).set(v as f64);
        g("shardnode_device_capacity_bytes", u.capacity_bytes);
        g("shardnode_device_free_bytes", u.free_bytes);
        g("shardnode_device_used_bytes", u.live_bytes);
        g("shardnode_device_shards", u.shards);
        g("shardnode_device_queue_depth", stats.queued.load(Ordering::Relaxed));
        let c = |name: &'static str, v: u64| metrics::counter!(name, "device" => device.clone()).absolute(v);
        c("shardnode_device_group_commits_total", stats.commits.load(Ordering::Relaxed));
        c("shardnode_device_group_commit_operations_total", stats.committed_ops.load(Ordering::Relaxed));
        c("shardnode_device_vouched_commits_total", stats.vouched_commits.load(Ordering::Relaxed));
        c("shardnode_device_commit_confirmations_total", stats.confirmations.load(Ordering::Relaxed));
        c("shardnode_device_store_requests_total", stats.requests.load(Ordering::Relaxed));
        c("shardnode_device_store_local_reads_total", stats.local_reads.load(Ordering::Relaxed));
        c("shardnode_device_writes_split_total", stats.writes_split.load(Ordering::Relaxed));
        for (how, n) in [("along", &stats.chunks_moved_along), ("whole", &stats.chunks_moved_whole)] {
            metrics::counter!("shardnode_reclaim_chunks_moved_total", "device" => device.clone(), "how" => how)
                .absolute(n.load(Ordering::Relaxed));
        }
        for (how, n) in [("along", &stats.extents_reset_along), ("whole", &stats.whole_extents_reclaimed)] {
            metrics::counter!("shardnode_reclaim_extents_total", "device" => device.clone(), "how" => how)
                .absolute(n.load(Ordering::Relaxed));
        }
        c("shardnode_reclaim_passes_given_way_total", stats.reclaim_passes_given_way.load(Ordering::Relaxed));
        c("shardnode_checkpoints_total", stats.checkpoints.load(Ordering::Relaxed));
        metrics::gauge!("shardnode_checkpoint_last_seconds", "device" => device.clone())
            .set(stats.checkpoint_last_micros.load(Ordering::Relaxed) as f64 / 1e6);
        g("shardnode_checkpoint_bytes", stats.checkpoint_next_bytes.load(Ordering::Relaxed));
        g("shardnode_metadata_half_bytes", stats.metadata_half_bytes.load(Ordering::Relaxed));
        let stall = &store.counters().io_stall;
        metrics::gauge!("shardnode_device_io_stalled_seconds", "device" => device.clone())
            .set(stall.stalled_for().map_or(0.0, |d| d.as_secs_f64()));
        c("shardnode_device_io_stalls_total", stall.stalls());
        let cache = store.read_cache().stats();
        for (result, n) in [("hit", &cache.hits), ("miss", &cache.misses)] {
            metrics::counter!("shardnode_read_cache_lookups_total", "device" => device.clone(), "result" => result)
                .absolute(n.load(Ordering::Relaxed));
        }
        c("shardnode_read_cache_evictions_total", cache.evictions.load(Ordering::Relaxed));
        c("shardnode_read_cache_invalidations_total", cache.invalidations.load(Ordering::Relaxed));
        c("shardnode_read_cache_corrupt_total", cache.corrupt.load(Ordering::Relaxed));
        g("shardnode_read_cache_bytes", cache.bytes.load(Ordering::Relaxed));
        g("shardnode_read_cache_shards", cache.entries.load(Ordering::Relaxed));
        let placed = store.placements().stats();
        for (outcome, n) in [("read", &placed.reads), ("stale", &placed.stale), ("failed", &placed.failed)] {
            metrics::counter!("shardnode_placed_reads_total", "device" => device.clone(), "outcome" => outcome)
                .absolute(n.load(Ordering::Relaxed));
        }
        g("shardnode_placed_shards", placed.entries.load(Ordering::Relaxed));
    }
}

/// One device's scrub figures. The one to alarm on is
/// `shardnode_scrub_oldest_unverified_seconds`: how long ago the live byte
/// verified longest ago was last known good.
fn publish_scrub(device: &str, st: &ScrubStatus) {
    let g = |name: &'static str, v: f64| metrics::gauge!(name, "device" => device.to_owned()).set(v);
    let c = |name: &'static str, v: u64| metrics::counter!(name, "device" => device.to_owned()).absolute(v);
    g("shardnode_scrub_oldest_unverified_seconds", st.oldest_unverified_age_ms.unwrap_or(0) as f64 / 1000.0);
    g("shardnode_scrub_deadline_seconds", st.deadline_ms as f64 / 1000.0);
    g(
        "shardnode_scrub_rate_bytes_per_second",
        if st.rate_bytes_per_s == u64::MAX { -1.0 } else { st.rate_bytes_per_s as f64 },
    );
    let progress = if st.pass_total_bytes == 0 { 1.0 } else { st.pass_done_bytes as f64 / st.pass_total_bytes as f64 };
    g("shardnode_scrub_pass_progress_ratio", progress);
    g("shardnode_scrub_pass_eta_timestamp_seconds", st.pass_eta_ms.unwrap_or(0) as f64 / 1000.0);
    g("shardnode_scrub_last_pass_timestamp_seconds", st.last_pass_ms as f64 / 1000.0);
    g("shardnode_scrub_paused", if st.paused { 1.0 } else { 0.0 });
    g("shardnode_damaged_shards", st.damaged_shards as f64);
    c("shardnode_scrub_passes_total", st.passes);
    c("shardnode_scrub_verified_bytes_total", st.counters.chunk_bytes_verified + st.counters.metadata_bytes_verified);
    c("shardnode_scrub_read_errors_total", st.counters.read_errors);
    for (kind, n) in FindingKind::ALL.iter().zip(st.counters.findings) {
        metrics::counter!("shardnode_scrub_findings_total", "device" => device.to_owned(), "kind" => kind.name())
            .absolute(n);
    }
}
