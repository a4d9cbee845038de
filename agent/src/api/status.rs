//! What the agent tells about itself: readiness, status (every device's
//! state, usage, health, read cache and scrub) and the Prometheus metrics.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use shardstore::store::scrub::ScrubStatus;
use shardstore::Error;

use super::admin::{scrub_json, scrub_statuses};
use super::{ApiError, App};

pub(super) async fn readyz(State(app): State<Arc<App>>) -> Response {
    let open = app.node.open_count();
    if open > 0 {
        (StatusCode::OK, format!("ready: {open} of {} devices open\n", app.node.slots.len())).into_response()
    } else {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "DeviceFailed", "no device is open").into_response()
    }
}

pub(super) async fn status(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    let mut scrubs: std::collections::HashMap<usize, Result<ScrubStatus, Error>> =
        scrub_statuses(&app.node).await.into_iter().collect();
    let devices: Vec<_> = app
        .node
        .slots
        .iter()
        .map(|s| {
            let state = match (&s.store, s.fenced.load(Ordering::Relaxed)) {
                (None, _) => "failed",
                (Some(_), true) => "fenced",
                (Some(_), false) => "open",
            };
            let (health, reason) = s.health_state();
            let mut d = json!({
                "id": s.id,
                "path": s.path.display().to_string(),
                "state": state,
                "health": { "state": health.name(), "reason": reason },
                "errors": { "corruption": s.errors.corruption.load(Ordering::Relaxed), "io": s.errors.io.load(Ordering::Relaxed) },
            });
            if let Some(e) = &s.error {
                d["error"] = json!(e);
            }
            if let Some(store) = &s.store {
                let stats = store.stats();
                let u = stats.usage();
                d["opened_clean"] = json!(s.opened_clean);
                d["format_version"] = json!(store.format_version());
                d["capacity_bytes"] = json!(u.capacity_bytes);
                d["free_bytes"] = json!(u.free_bytes);
                d["live_bytes"] = json!(u.live_bytes);
                d["shards"] = json!(u.shards);
                d["queued"] = json!(stats.queued.load(Ordering::Relaxed));
                d["admission_waiting"] = json!(s.admission.waiting());
                d["refused_overloaded"] = json!(s.admission.overloaded.load(Ordering::Relaxed));
                d["refused_deadline"] = json!(s.admission.deadline_exceeded.load(Ordering::Relaxed));
                let stall = &store.counters().io_stall;
                d["io_stalled_seconds"] = json!(stall.stalled_for().map(|t| t.as_secs_f64()));
                d["io_stalls"] = json!(stall.stalls());
                let cache = store.read_cache();
                let st = cache.stats();
                d["read_cache"] = json!({
                    "capacity_bytes": cache.settings().capacity_bytes,
                    "bytes": st.bytes.load(Ordering::Relaxed),
                    "shards": st.entries.load(Ordering::Relaxed),
                    "hits": st.hits.load(Ordering::Relaxed),
                    "misses": st.misses.load(Ordering::Relaxed),
                    "evictions": st.evictions.load(Ordering::Relaxed),
                    "invalidations": st.invalidations.load(Ordering::Relaxed),
                    "corrupt": st.corrupt.load(Ordering::Relaxed),
                });
                match scrubs.remove(&s.id) {
                    Some(Ok(st)) => d["scrub"] = scrub_json(&st),
                    Some(Err(e)) => d["scrub"] = json!({ "error": e.to_string() }),
                    None => {}
                }
            }
            d
        })
        .collect();
    Json(json!({
        "node": app.node.name,
        "version": env!("CARGO_PKG_VERSION"),
        "body_memory_bytes": body_memory_held(&app),
        "devices": devices,
    }))
}

/// Bytes of the request body budget reserved by bodies being read or held.
fn body_memory_held(app: &App) -> u64 {
    let free = (app.body_memory.available_permits() as u64) << 10;
    app.body_memory_bytes_max.saturating_sub(free)
}

pub(super) async fn metrics(State(app): State<Arc<App>>) -> Response {
    let scrubs = scrub_statuses(&app.node).await;
    crate::metrics::publish_device_gauges(&app.node, &scrubs);
    metrics::gauge!("shardnode_body_memory_bytes").set(body_memory_held(&app) as f64);
    if let Some(landing) = &app.landing {
        metrics::gauge!("shardnode_landing_records").set(landing.records() as f64);
        metrics::gauge!("shardnode_landing_records_free").set(landing.free() as f64);
    }
    crate::cluster::routes::publish_metrics(&app);
    crate::metrics::collect_process();
    match &app.metrics {
        Some(h) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], h.render()).into_response(),
        None => ApiError::new(StatusCode::NOT_FOUND, "NoSuchRoute", "metrics are not enabled").into_response(),
    }
}
