//! The cluster as operators and peers see it over HTTP: `GET /v1/cluster`
//! (the view), and the peer routes `GET /v1/cluster/records` (every
//! record held, sealed, for a late joiner) and `GET /v1/cluster/roster`
//! (the signed roster in use), which answer only requests carrying a
//! valid MAC of a roster host. Also the cluster's metrics.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use shardnode_cluster::auth;
use shardnode_cluster::gossip::{reject_counts, veto_counts};

use super::unix_ms;
use crate::api::{ApiError, App};

pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/cluster", get(view))
        .route("/v1/cluster/records", get(records))
        .route("/v1/cluster/roster", get(roster))
}

fn alone() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NoCluster", "this agent runs alone: its config has no [cluster] table")
}

async fn view(State(app): State<Arc<App>>) -> Result<Json<serde_json::Value>, ApiError> {
    let cluster = app.cluster.as_ref().ok_or_else(alone)?;
    let g = cluster.gossip();
    let c = g.counters();
    let named = |pairs: Vec<(&'static str, u64)>| {
        pairs.into_iter().map(|(k, v)| (k.to_owned(), json!(v))).collect::<serde_json::Map<_, _>>()
    };
    let me = g.me();
    Ok(Json(json!({
        "cluster": g.roster().cluster,
        "roster_epoch": g.roster().epoch,
        "host": me.host,
        "generation": me.generation,
        "gossip_listen": cluster.listen,
        "now_ms": unix_ms(),
        "members": g.view(),
        "counters": {
            "datagrams_sent": c.datagrams_sent,
            "datagrams_received": c.datagrams_received,
            "bytes_sent": c.bytes_sent,
            "bytes_received": c.bytes_received,
            "rejected": named(reject_counts(&c)),
            "swim_refused": c.foca_errors,
            "suspicions_told": c.suspicions_told,
            "turn_undead_withheld": c.turn_undead_withheld,
            "records_accepted": c.records_accepted,
            "records_vetoed": named(veto_counts(&c)),
        },
    })))
}

/// Checks a peer request's MAC and that it was not seen before; the
/// asking host. The MAC covers the method, the path and query, and the
/// `x-shard-crc32c` the body is checked against.
pub fn check_peer(app: &App, parts: &axum::http::request::Parts) -> Result<u32, ApiError> {
    let cluster = app.cluster.as_ref().ok_or_else(alone)?;
    let refuse = |why: &'static str| {
        metrics::counter!("shardnode_cluster_peer_requests_refused_total", "reason" => why).increment(1);
        ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", format!("peer request refused: {why}"))
    };
    let value = parts.headers.get(auth::HEADER).and_then(|v| v.to_str().ok()).ok_or_else(|| {
        metrics::counter!("shardnode_cluster_peer_requests_refused_total", "reason" => "missing").increment(1);
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            format!("this agent is in a cluster: its shard and peer routes need the {} header", auth::HEADER),
        )
    })?;
    let target = parts.uri.path_and_query().map_or_else(|| parts.uri.path(), axum::http::uri::PathAndQuery::as_str);
    let content = parts.headers.get("x-shard-crc32c").and_then(|v| v.to_str().ok());
    let request = auth::Request { method: parts.method.as_str(), target, content };
    let now = unix_ms();
    let verified = {
        let g = cluster.gossip();
        // This host may ask itself: an object's coordinator is often one
        // of its holders.
        auth::verify(g.keyring(), value, &request, now, |h| g.roster().host(h).is_some())
    }
    .map_err(refuse)?;
    cluster.replay.lock().expect("never poisoned").admit(&verified, now).map_err(refuse)?;
    Ok(verified.host)
}

/// The shard routes of an agent in a cluster answer peers only (the layer
/// is on them only in a cluster).
pub async fn require_peer(
    State(app): State<Arc<App>>,
    req: Request,
    next: axum::middleware::Next,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    check_peer(&app, &parts)?;
    Ok(next.run(Request::from_parts(parts, body)).await)
}

fn peer(app: &App, req: Request) -> Result<u32, ApiError> {
    let (parts, _) = req.into_parts();
    check_peer(app, &parts)
}

async fn records(State(app): State<Arc<App>>, req: Request) -> Result<Response, ApiError> {
    peer(&app, req)?;
    let held = app.cluster.as_ref().ok_or_else(alone)?.gossip().held_records();
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], held.concat()).into_response())
}

async fn roster(State(app): State<Arc<App>>, req: Request) -> Result<Response, ApiError> {
    peer(&app, req)?;
    let bytes = app.cluster.as_ref().ok_or_else(alone)?.roster.lock().expect("never poisoned").bytes.clone();
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], bytes).into_response())
}

/// Sets the cluster's gauges and totals (at scrape time).
pub fn publish_metrics(app: &App) {
    let Some(cluster) = &app.cluster else { return };
    let g = cluster.gossip();
    let c = g.counters();
    let view = g.view();
    for state in ["alive", "suspect", "down", "unknown"] {
        let n = view.iter().filter(|m| m.state == state).count();
        metrics::gauge!("shardnode_cluster_members", "state" => state).set(n as f64);
    }
    metrics::gauge!("shardnode_cluster_roster_epoch").set(g.roster().epoch as f64);
    metrics::gauge!("shardnode_cluster_generation").set(g.me().generation as f64);
    for (direction, datagrams, bytes) in
        [("sent", c.datagrams_sent, c.bytes_sent), ("received", c.datagrams_received, c.bytes_received)]
    {
        metrics::counter!("shardnode_gossip_datagrams_total", "direction" => direction).absolute(datagrams);
        metrics::counter!("shardnode_gossip_bytes_total", "direction" => direction).absolute(bytes);
    }
    for (reason, n) in reject_counts(&c) {
        metrics::counter!("shardnode_gossip_rejected_total", "reason" => reason).absolute(n);
    }
    metrics::counter!("shardnode_gossip_records_accepted_total").absolute(c.records_accepted);
    for (reason, n) in veto_counts(&c).into_iter().filter(|(r, _)| *r != "known") {
        metrics::counter!("shardnode_gossip_records_vetoed_total", "reason" => reason).absolute(n);
    }
    let me = g.me().host;
    for m in view.iter().filter(|m| m.host != me) {
        // The age of the newest record from the host: how current this
        // host's picture of it is.
        if let Some(age) = m.records.iter().map(|r| r.age_ms).min() {
            metrics::gauge!("shardnode_cluster_record_age_seconds", "host" => m.host.to_string())
                .set(age as f64 / 1000.0);
        }
    }
}
