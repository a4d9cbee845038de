//! Prometheus metrics (`GET /metrics`). Names are in base units. Request
//! metrics are recorded once per HTTP request, never per device I/O;
//! device figures are read from the store threads' counters when scraped.

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::Request;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::node::Node;

/// Request latency buckets, in seconds: 100 µs to 10 s.
const LATENCY_BUCKETS_SECONDS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Installs the process-wide recorder; `None` if one is already installed
/// (tests that start several apps in one process).
pub fn install() -> Option<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &LATENCY_BUCKETS_SECONDS)
        .ok()?
        .install_recorder()
        .ok()
}

/// What a request was, for its labels.
fn operation(method: &Method, path: &str) -> &'static str {
    let shard = path.starts_with("/v1/shards/") && path.len() > "/v1/shards/".len();
    match (method.as_str(), shard) {
        ("PUT", true) => "put",
        ("GET", true) => "get",
        ("HEAD", true) => "head",
        ("DELETE", true) => "delete",
        ("GET", false) if path.starts_with("/v1/shards") => "list",
        _ => "other",
    }
}

/// Counts every request by operation and status, and times it.
pub async fn record(req: Request, next: Next) -> Response {
    let op = operation(req.method(), req.uri().path());
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("shardnode_http_requests_total", "op" => op, "status" => status).increment(1);
    metrics::histogram!("shardnode_http_request_duration_seconds", "op" => op).record(started.elapsed().as_secs_f64());
    response
}

/// Sets the per-device gauges and totals from the store threads' figures.
pub fn publish_device_gauges(node: &Node) {
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
    }
}
