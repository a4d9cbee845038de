//! `shard-agent --http-ceiling`: the benchmark's HTTP ceiling. The same
//! runtime, HTTP server and router layers as the agent (`server::serve`,
//! which times and counts every request), answering the shard API's
//! requests from memory: a `PUT` reads its body and answers `201`, a
//! `GET` answers the bytes last put under the key with their CRC header.
//! What the agent does beyond this is the store; what this costs is the
//! HTTP stack, the client and the loopback (BENCHMARKS.md). Not for
//! production: nothing is stored.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

type Shards = Arc<RwLock<HashMap<String, Bytes>>>;

async fn get(State(shards): State<Shards>, Path(key): Path<String>) -> Response {
    let Some(bytes) = shards.read().expect("never poisoned").get(&key).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let crc = HeaderValue::from_str(&format!("{:08x}", crc32c::crc32c(&bytes))).expect("hex");
    let mut r = Response::new(Body::from(bytes));
    r.headers_mut().insert("x-shard-crc32c", crc);
    r.headers_mut().insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    r
}

async fn head(State(shards): State<Shards>, Path(key): Path<String>) -> StatusCode {
    if shards.read().expect("never poisoned").contains_key(&key) {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn put(State(shards): State<Shards>, Path(key): Path<String>, body: Bytes) -> StatusCode {
    shards.write().expect("never poisoned").insert(key, body);
    StatusCode::CREATED
}

/// Serves until SIGTERM or SIGINT.
pub async fn run(listen: std::net::SocketAddr, limits: &crate::config::Limits) -> anyhow::Result<()> {
    let shards: Shards = Arc::default();
    let router = axum::Router::new()
        .route("/v1/shards/{*key}", axum::routing::get(get).head(head).put(put))
        .layer(axum::extract::DefaultBodyLimit::max(shardstore::store::SHARD_SIZE_BYTES_MAX as usize))
        .with_state(Arc::clone(&shards));
    // Through the connection front, as the agent's.
    let front: crate::front::ShardApi = Arc::new(move |req: axum::extract::Request| {
        let shards = Arc::clone(&shards);
        Box::pin(async move {
            // As axum's `Path` decodes it.
            let raw = req.uri().path().strip_prefix("/v1/shards/").unwrap_or_default();
            let Some(key) = crate::keys::decode_key(raw).ok().and_then(|k| String::from_utf8(k).ok()) else {
                return StatusCode::BAD_REQUEST.into_response();
            };
            match *req.method() {
                axum::http::Method::HEAD => head(State(shards), Path(key)).await.into_response(),
                axum::http::Method::PUT => {
                    let limited =
                        http_body_util::Limited::new(req.into_body(), shardstore::store::SHARD_SIZE_BYTES_MAX as usize);
                    match http_body_util::BodyExt::collect(limited).await {
                        Ok(body) => put(State(shards), Path(key), body.to_bytes()).await.into_response(),
                        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                            StatusCode::PAYLOAD_TOO_LARGE.into_response()
                        }
                        Err(_) => StatusCode::BAD_REQUEST.into_response(),
                    }
                }
                axum::http::Method::GET => get(State(shards), Path(key)).await,
                _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
            }
        })
    });
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::warn!(listen = %listener.local_addr()?, "HTTP ceiling ready: answers from memory, stores nothing");
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    crate::server::serve(listener, router, Some(front), None, limits, stop).await?;
    Ok(())
}
