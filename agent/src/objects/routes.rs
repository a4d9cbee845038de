//! `PUT/GET/HEAD/DELETE /v1/objects/{key}` (docs/api.md, "Objects").

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::BodyExt;
use serde_json::json;

use super::{ObjectError, Version};
use crate::api::{ApiError, App};
use crate::cluster::Cluster;
use crate::keys::decode_key;

pub fn router() -> axum::Router<Arc<App>> {
    axum::Router::new().route("/v1/objects/{*key}", axum::routing::any(object))
}

impl From<ObjectError> for ApiError {
    fn from(e: ObjectError) -> ApiError {
        let (status, code) = match &e {
            ObjectError::NoCode(_) => (StatusCode::SERVICE_UNAVAILABLE, "NoCode"),
            ObjectError::BadDigest { .. } => (StatusCode::BAD_REQUEST, "BadDigest"),
            ObjectError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "TooLarge"),
            ObjectError::NotFound => (StatusCode::NOT_FOUND, "NotFound"),
            ObjectError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable"),
            ObjectError::InsufficientHolders(_) => (StatusCode::SERVICE_UNAVAILABLE, "InsufficientHolders"),
            ObjectError::InvalidRange(_) => (StatusCode::RANGE_NOT_SATISFIABLE, "InvalidRange"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// The body, exactly `size` bytes, read as it arrives into one buffer of
/// that size (no growing, no second copy).
async fn receive(mut body: Body, size: u64) -> Result<Vec<u8>, ApiError> {
    let incomplete =
        |why: String| ApiError::new(StatusCode::BAD_REQUEST, "IncompleteBody", format!("{why}; nothing was stored"));
    let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(usize::MAX));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| incomplete(format!("the body could not be read ({e})")))?;
        if let Ok(data) = frame.into_data() {
            if (out.len() + data.len()) as u64 > size {
                return Err(incomplete(format!("more than the content-length of {size} bytes arrived")));
            }
            out.extend_from_slice(&data);
        }
    }
    if out.len() as u64 != size {
        return Err(incomplete(format!("content-length {size} but {} bytes arrived", out.len())));
    }
    Ok(out)
}

fn version_text(v: Version) -> String {
    format!("{:016x}-{:08x}", v.clock, v.writer)
}

async fn object(State(app): State<Arc<App>>, req: Request) -> Result<Response, ApiError> {
    let cluster = app.cluster.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NoCluster",
            "objects need a cluster: this agent's config has no [cluster] table",
        )
    })?;
    let given =
        req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if !cluster.client_allowed(given) {
        metrics::counter!("shardnode_object_requests_refused_total", "reason" => "token").increment(1);
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            if given.is_some() {
                "the client token is not one this cluster accepts; nothing was done"
            } else {
                "the object API needs Authorization: Bearer <client token>; nothing was done"
            },
        ));
    }
    let raw = req.uri().path().strip_prefix("/v1/objects/").unwrap_or_default().to_owned();
    let key = decode_key(&raw)?;
    match req.method().clone() {
        Method::PUT => put(&app, &cluster, &key, req).await,
        Method::GET => get(&cluster, &key, req.headers(), false).await,
        Method::HEAD => get(&cluster, &key, req.headers(), true).await,
        Method::DELETE => {
            let v = super::delete(&cluster, app.node.next_version(), &key).await?;
            metrics::counter!("shardnode_object_operations_total", "op" => "delete").increment(1);
            let mut r = StatusCode::NO_CONTENT.into_response();
            r.headers_mut().insert("x-object-version", HeaderValue::from_str(&version_text(v)).expect("hex"));
            Ok(r)
        }
        other => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{other} is not an object operation (PUT, GET, HEAD, DELETE)"),
        )),
    }
}

async fn put(app: &App, cluster: &Arc<Cluster>, key: &[u8], req: Request) -> Result<Response, ApiError> {
    let code = cluster.placement().map_err(ObjectError::NoCode)?.code;
    let max = super::object_bytes_max(code.data);
    let client_crc = crate::api::crc32c_header(req.headers(), "x-object-crc32c")?;
    let size =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()).ok_or_else(
            || {
                ApiError::new(
                    StatusCode::LENGTH_REQUIRED,
                    "LengthRequired",
                    "an object PUT needs content-length (its shards are sized from it); nothing was stored",
                )
            },
        )?;
    if size > max {
        return Err(ObjectError::TooLarge { size, max }.into());
    }
    // The memory the PUT will hold is reserved before a byte is read.
    let memory = super::put_memory_bytes(size, key.len(), code.data, code.parity);
    if memory > app.body_memory_bytes_max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "TooLarge",
            format!(
                "a {size}-byte object needs about {memory} bytes of memory with its shards, over this agent's \
                 limits.body_memory_bytes_max of {}; nothing was stored",
                app.body_memory_bytes_max
            ),
        ));
    }
    let kib = u32::try_from(memory.div_ceil(1024)).unwrap_or(u32::MAX);
    let _memory = app.body_memory.try_acquire_many(kib).map_err(|_| {
        ApiError::overloaded(format!(
            "the agent holds as many request bodies in memory as it may; a {size}-byte object (about {memory} bytes \
             with its shards) must wait"
        ))
    })?;
    let body = tokio::time::timeout(app.body_timeout.max(Duration::from_secs(1)), receive(req.into_body(), size))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "RequestTimeout",
                "the body did not arrive in time; nothing was stored",
            )
        })??;
    let put = super::put(cluster, app.node.next_version(), key, &body, client_crc).await?;
    metrics::counter!("shardnode_object_operations_total", "op" => "put").increment(1);
    if !put.missing.is_empty() {
        metrics::counter!("shardnode_object_degraded_writes_total").increment(1);
        tracing::warn!(missing = ?put.missing, "object acknowledged on k + 1 holders, not all");
    }
    let mut r = (
        StatusCode::CREATED,
        Json(json!({
            "version": version_text(put.version),
            "group": put.group,
            "layout": match put.layout { shardnode_cluster::manifest::Layout::Coded => "coded", shardnode_cluster::manifest::Layout::Copies => "copies" },
            "size": body.len(),
            "missing_holders": put.missing,
        })),
    )
        .into_response();
    r.headers_mut().insert("x-object-crc32c", HeaderValue::from_str(&format!("{:08x}", put.crc)).expect("hex"));
    Ok(r)
}

async fn get(cluster: &Arc<Cluster>, key: &[u8], headers: &HeaderMap, head: bool) -> Result<Response, ApiError> {
    let range_header = headers.get(header::RANGE).cloned();
    let asked = range_header.is_some() && !head;
    let got = super::get(cluster, key, asked, |size| match &range_header {
        Some(v) if !head => {
            crate::api::parse_range(v, size).map(|(start, len)| Some(start..start + len)).map_err(|e| e.to_string())
        }
        _ => Ok(None),
    })
    .await?;
    metrics::counter!("shardnode_object_operations_total", "op" => if head { "head" } else { "get" }).increment(1);
    metrics::counter!("shardnode_object_decoded_shards_total").increment(got.decoded as u64);
    let m = &got.manifest;
    let mut h = HeaderMap::new();
    h.insert("x-object-crc32c", HeaderValue::from_str(&format!("{:08x}", m.crc)).expect("hex"));
    h.insert(
        "x-object-version",
        HeaderValue::from_str(&version_text(Version { clock: m.version, writer: m.writer })).expect("hex"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    if head {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(m.size));
        return Ok((StatusCode::OK, h).into_response());
    }
    let status = if asked {
        let v = range_header.as_ref().expect("asked");
        let (start, len) = crate::api::parse_range(v, m.size)?;
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {start}-{}/{}", start + len - 1, m.size)).expect("ascii"),
        );
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    Ok((status, h, Body::from(got.bytes)).into_response())
}
