//! `shard-agent --http-ceiling`: the benchmark's HTTP ceiling. The same
//! HTTP stack as the agent, answering the shard API's requests from
//! memory: connections served on store threads (of empty scratch devices)
//! whose fronts answer plain reads from memory as the agent's answer them
//! from the stores (`store_front/`, `Source::Memory`), the rest through
//! the same connection front and server (`front.rs`, `server::serve`,
//! which times and counts every request). A `PUT` reads its body and
//! answers `201`, a `GET` answers the bytes last put under the key with
//! their CRC header. What the agent does beyond this is the store; what
//! this costs is the HTTP stack, the client and the loopback
//! (BENCHMARKS.md). Not for production: nothing is stored.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::config::Config;
use crate::devices::{self, DeviceState};
use crate::store_front::{Source, StoreFronts};

type Shards = Arc<RwLock<HashMap<Vec<u8>, Bytes>>>;

/// The key of a `/v1/shards/{key}` request, as the agent decodes it.
fn key_of(req: &Request) -> Option<Vec<u8>> {
    let raw = req.uri().path().strip_prefix("/v1/shards/")?;
    crate::keys::decode_key(raw).ok()
}

fn get(shards: &Shards, key: &[u8]) -> Response {
    let Some(bytes) = shards.read().expect("never poisoned").get(key).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let crc = HeaderValue::from_str(&format!("{:08x}", crc32c::crc32c(&bytes))).expect("hex");
    let mut r = Response::new(Body::from(bytes));
    r.headers_mut().insert("x-shard-crc32c", crc);
    r.headers_mut().insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    r
}

fn head(shards: &Shards, key: &[u8]) -> StatusCode {
    if shards.read().expect("never poisoned").contains_key(key) {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
}

/// Answers a shard request from memory, as the router of the ceiling.
async fn answer(State(shards): State<Shards>, req: Request) -> Response {
    let Some(key) = key_of(&req) else { return StatusCode::BAD_REQUEST.into_response() };
    match *req.method() {
        axum::http::Method::HEAD => head(&shards, &key).into_response(),
        axum::http::Method::PUT => {
            let limited =
                http_body_util::Limited::new(req.into_body(), shardstore::store::SHARD_SIZE_BYTES_MAX as usize);
            match http_body_util::BodyExt::collect(limited).await {
                Ok(body) => {
                    shards.write().expect("never poisoned").insert(key, body.to_bytes());
                    StatusCode::CREATED.into_response()
                }
                Err(e) if e.is::<http_body_util::LengthLimitError>() => StatusCode::PAYLOAD_TOO_LARGE.into_response(),
                Err(_) => StatusCode::BAD_REQUEST.into_response(),
            }
        }
        axum::http::Method::GET => get(&shards, &key),
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

/// Serves until SIGTERM or SIGINT. With `limits.connections_on_store_threads`
/// (as the agent), connections are served on store threads of empty scratch
/// devices (`config.default_device_count` of them, as many as the agent's
/// default devices, created under the system's temporary directory and
/// removed at the end), whose fronts answer plain reads from memory.
pub async fn run(config: &Config) -> anyhow::Result<()> {
    let limits = &config.limits;
    let shards: Shards = Arc::default();
    let router = axum::Router::new()
        .route("/v1/shards/{*key}", axum::routing::get(answer).head(answer).put(answer))
        .with_state(Arc::clone(&shards));
    // Through the connection front, as the agent's.
    let front: crate::front::ShardApi = {
        let shards = Arc::clone(&shards);
        Arc::new(move |req: Request| Box::pin(answer(State(Arc::clone(&shards)), req)))
    };
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let scratch = std::env::temp_dir().join(format!("shardnode-ceiling-{}", std::process::id()));
    let mut devices = Vec::new();
    let mut store_fronts = None;
    if limits.connections_on_store_threads {
        let mut scratch_config = config.clone();
        scratch_config.devices.clear();
        scratch_config.data_dir.clone_from(&scratch);
        scratch_config.default_device_size_bytes = SCRATCH_DEVICE_BYTES;
        let paths = tokio::task::spawn_blocking(move || devices::device_paths(&scratch_config)).await??;
        let io = devices::IoSettings::of(config);
        let settings = shardstore::store::thread::ThreadSettings::default();
        devices = paths.iter().map(|p| devices::open_device(p, settings, io)).collect();
        let stores: Vec<(usize, &shardstore::store::thread::StoreHandle)> = devices
            .iter()
            .enumerate()
            .filter_map(|(i, d)| match &d.state {
                DeviceState::Open { store, .. } => Some((i, store)),
                DeviceState::Failed { .. } => None,
            })
            .collect();
        let (handoffs, received) = tokio::sync::mpsc::unbounded_channel();
        store_fronts =
            StoreFronts::start(Source::Memory(Arc::clone(&shards)), &stores, Arc::clone(&front), limits, handoffs)
                .map(|fronts| (fronts, received));
    }
    tracing::warn!(
        listen = %listener.local_addr()?,
        store_threads = devices.len(),
        "HTTP ceiling ready: answers from memory, stores nothing"
    );
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    let served = crate::server::serve(listener, router, Some(front), store_fronts, limits, stop).await;
    for d in &mut devices {
        let _ = devices::close_device(d);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    served?;
    Ok(())
}

/// Each scratch device of the ceiling's store threads (a sparse file; never
/// written but for its format).
const SCRATCH_DEVICE_BYTES: u64 = 1 << 30;
