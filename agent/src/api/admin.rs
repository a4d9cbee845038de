//! The operator's routes: fencing devices, the scrubbers, the repair
//! list (admin routes need the bearer token; `docs/api.md`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde_json::json;
use shardstore::store::scrub::{FindingKind, ScrubStatus};
use shardstore::Error;

use super::{store_error, ApiError, App};
use crate::node::{self, Node};

/// Checks `Authorization: Bearer <token>` in constant time.
fn authorize(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", m.to_owned());
    let Some(token) = &app.admin_token else {
        return Err(unauthorized("admin routes are disabled: no admin_token_file is configured"));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("this route needs Authorization: Bearer <token>"))?;
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(unauthorized("wrong token"))
    }
}

/// Equality whose time depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn slot_by_id<'a>(app: &'a App, id: &str) -> Result<&'a node::Slot, ApiError> {
    id.parse::<usize>()
        .ok()
        .and_then(|i| app.node.slots.get(i))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "NotFound", format!("no device {id}")))
}

fn set_fence(app: &App, headers: &HeaderMap, id: &str, fenced: bool) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(app, headers)?;
    let slot = slot_by_id(app, id)?;
    slot.fenced.store(fenced, Ordering::Relaxed);
    tracing::warn!(device = slot.id, path = %slot.path.display(), fenced, "device fence changed by operator");
    let t = slot.health.lock().expect("health lock").operator_fence(fenced);
    if let Some(t) = t {
        slot.apply_transition(&t);
    }
    Ok(Json(json!({ "id": slot.id, "fenced": fenced })))
}

pub(super) async fn fence(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    set_fence(&app, &headers, &id, true)
}

pub(super) async fn unfence(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    set_fence(&app, &headers, &id, false)
}

/// A scrub status as the API shows it: times in seconds, findings by kind.
pub fn scrub_json(st: &ScrubStatus) -> serde_json::Value {
    let secs = |ms: u64| if ms == 0 { serde_json::Value::Null } else { json!(ms as f64 / 1000.0) };
    let findings: serde_json::Map<String, serde_json::Value> =
        FindingKind::ALL.iter().zip(st.counters.findings).map(|(k, n)| (k.name().to_owned(), json!(n))).collect();
    let progress = if st.pass_total_bytes == 0 { 1.0 } else { st.pass_done_bytes as f64 / st.pass_total_bytes as f64 };
    json!({
        "state": if st.paused { "paused" } else if st.unthrottled { "running unthrottled" } else { "running" },
        "oldest_unverified_age_seconds": st.oldest_unverified_age_ms.map(|ms| ms as f64 / 1000.0),
        "deadline_seconds": st.deadline_ms / 1000,
        "rate_bytes_per_second": if st.rate_bytes_per_s == u64::MAX { serde_json::Value::Null } else { json!(st.rate_bytes_per_s) },
        "rate_bytes_max": st.rate_bytes_max,
        "pass": {
            "started_unix_seconds": secs(st.pass_started_ms),
            "progress": progress,
            "done_bytes": st.pass_done_bytes,
            "total_bytes": st.pass_total_bytes,
            "eta_unix_seconds": st.pass_eta_ms.map_or(serde_json::Value::Null, secs),
            "next_extent": st.next_extent,
        },
        "last_pass_unix_seconds": secs(st.last_pass_ms),
        "passes": st.passes,
        "verified_bytes": st.counters.chunk_bytes_verified + st.counters.metadata_bytes_verified,
        "verified_chunks": st.counters.chunks_verified,
        "read_errors": st.counters.read_errors,
        "findings": findings,
        "damaged_shards": st.damaged_shards,
        "recent_findings": st.recent_findings,
    })
}

/// How long the views of every device (`/v1/status`, `/metrics`, the
/// gossip publication) wait for one store thread's scrub status: far
/// longer than any commit it finishes before answering, so only a thread
/// that is stuck (a hung device) is reported busy instead of holding up
/// the other devices' figures.
pub const STORE_ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// Each open device's scrub status, in device order; `Busy` for a store
/// thread that did not answer within `STORE_ANSWER_WITHIN`; `Stalled`, at
/// once, for a device whose I/O is stalled (`node::ask`: a scrape of
/// `/metrics` must not wait for every hung device in turn).
pub async fn scrub_statuses(node: &Node) -> Vec<(usize, Result<ScrubStatus, Error>)> {
    let mut out = Vec::new();
    for s in &node.slots {
        if let Some(store) = &s.store {
            let status =
                tokio::time::timeout(STORE_ANSWER_WITHIN, node::scrub_status(store)).await.unwrap_or_else(|_| {
                    Err(Error::Busy {
                        device: store.name().to_owned(),
                        reason: format!(
                            "its store thread did not tell its scrub status within {STORE_ANSWER_WITHIN:?}"
                        ),
                    })
                });
            out.push((s.id, status));
        }
    }
    out
}

fn device_scrub_json(slot: &node::Slot, status: Result<ScrubStatus, Error>) -> serde_json::Value {
    match status {
        Ok(st) => json!({ "id": slot.id, "path": slot.path.display().to_string(), "scrub": scrub_json(&st) }),
        Err(e) => json!({ "id": slot.id, "path": slot.path.display().to_string(), "error": e.to_string() }),
    }
}

/// Every device's scrub status; a device that did not open is listed with
/// why, not left out (a list without it would read as all scrubbing).
pub(super) async fn scrub_all(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    let mut statuses: std::collections::HashMap<_, _> = scrub_statuses(&app.node).await.into_iter().collect();
    let devices: Vec<_> = app
        .node
        .slots
        .iter()
        .map(|slot| match statuses.remove(&slot.id) {
            Some(st) => device_scrub_json(slot, st),
            None => json!({
                "id": slot.id, "path": slot.path.display().to_string(), "error": not_open(slot),
            }),
        })
        .collect();
    Json(json!({ "devices": devices }))
}

pub(super) async fn scrub_one(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let slot = slot_by_id(&app, &id)?;
    let store = open_store_of(slot)?;
    Ok(Json(device_scrub_json(slot, node::scrub_status(store).await)))
}

/// Why a device is not asked at all: "not open: " and why it did not open.
fn not_open(slot: &node::Slot) -> String {
    format!("not open: {}", slot.open_error())
}

fn open_store_of(slot: &node::Slot) -> Result<&shardstore::store::thread::StoreHandle, ApiError> {
    slot.store.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "DeviceFailed", format!("device {} is not open", slot.id))
    })
}

/// `start` (scrub unthrottled until the pass in progress ends), `pause`,
/// `resume`. Lasts until the agent restarts (the config's `scrub.paused`
/// is what a start-up uses).
pub(super) async fn scrub_control(
    State(app): State<Arc<App>>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&app, &headers)?;
    let slot = slot_by_id(&app, &id)?;
    let store = open_store_of(slot)?;
    let change: fn(&mut shardstore::store::scrub::ScrubSettings) = match action.as_str() {
        "start" => |s| {
            s.paused = false;
            s.unthrottled = true;
            s.until_pass_end = true;
        },
        "pause" => |s| s.paused = true,
        "resume" => |s| s.paused = false,
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "NoSuchRoute",
                format!("no scrub action {other:?} (start, pause, resume)"),
            ))
        }
    };
    node::update_scrub(store, change).await.map_err(|e| store_error(&app.node, Some(slot.id), e))?;
    tracing::warn!(device = slot.id, path = %slot.path.display(), action = %action, "scrubber changed by operator");
    Ok(Json(device_scrub_json(slot, node::scrub_status(store).await)))
}

pub(super) async fn repairs(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    let (mut shards, mut unavailable) = (Vec::new(), Vec::new());
    for s in &app.node.slots {
        let Some(store) = &s.store else {
            // Its damaged shards cannot be listed: not "none".
            unavailable.push(json!({ "device": s.id, "reason": not_open(s) }));
            continue;
        };
        match node::damaged_shards(store).await {
            Ok(list) => shards.extend(list.into_iter().map(|d| {
                json!({
                    "device": s.id, "key": d.key, "sequence": d.sequence, "chunk": d.chunk,
                    "kind": d.kind.name(), "offset": d.offset, "len": d.len,
                    "found_unix_seconds": d.found_unix_ms as f64 / 1000.0,
                })
            })),
            Err(e) => {
                tracing::error!(device = s.id, error = %e, "cannot read the repair list");
                unavailable
                    .push(json!({ "device": s.id, "reason": format!("the repair list could not be read: {e}") }));
            }
        }
    }
    let mut out = json!({ "shards": shards, "unavailable": unavailable });
    if let Some(c) = &app.cluster {
        out["objects"] = c.repairs.view();
    }
    Json(out)
}

/// `PUT /v1/repairs/rate` `{"bytes_per_second": N}`: the object repair
/// throttle, at once (0 pauses repairs). Admin token.
pub(super) async fn set_repair_rate(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&app, &headers)?;
    let cluster = app.cluster.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "NoCluster", "object repairs need a cluster: no [cluster] table")
    })?;
    let rate = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["bytes_per_second"].as_u64())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                "the body must be JSON {\"bytes_per_second\": N} with N a whole number (0 pauses repairs)",
            )
        })?;
    let before = cluster.repairs.rate();
    cluster.repairs.set_rate(rate);
    tracing::warn!(before, after = rate, "object repair throttle changed by the operator");
    Ok(Json(json!({ "bytes_per_second": rate, "before": before })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_content() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secrets"));
    }
}
