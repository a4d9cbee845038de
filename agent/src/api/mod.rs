//! The HTTP API (routes, headers and error codes: `docs/api.md`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::json;
use shardstore::store::cache::Cached;
use shardstore::store::{ByteRange, Read, ShardStat};
use shardstore::Error;

use crate::admission::{Permit, Refusal};
use crate::keys::{decode_key, encode_key, KeyError};
use crate::node::{self, Located, Node, Route};

mod admin;
mod body;
mod status;

pub use admin::{constant_time_eq, scrub_statuses};
use admin::{fence, repairs, scrub_all, scrub_control, scrub_one, set_repair_rate, unfence};
pub use body::crc32c_header;
use body::{client_crc, read_body};
use status::{metrics, readyz, status};

/// Shards a listing returns when the client names no limit, and at most.
pub const LIST_LIMIT_DEFAULT: usize = 1000;
pub const LIST_LIMIT_MAX: usize = 10_000;

pub struct App {
    pub node: Node,
    pub body_timeout: Duration,
    /// Request body memory, in KiB permits (`limits.body_memory_bytes_max`).
    pub body_memory: tokio::sync::Semaphore,
    /// `limits.body_memory_bytes_max`, in bytes.
    pub body_memory_bytes_max: u64,
    /// Record buffers put bodies land in (`limits.landing_records`).
    pub landing: Option<shardstore::store::Landing>,
    pub admin_token: Option<String>,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// This host's cluster membership, if it has a `[cluster]` table.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// `limits.test_shard_read_delay_ms` (testing only).
    pub shard_read_delay: Duration,
}

/// An error answer: a status, a stable code and a message for humans.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after_s: None }
    }

    /// `503 Overloaded`, retry after a second.
    pub fn overloaded(message: impl Into<String>) -> ApiError {
        ApiError { retry_after_s: Some(1), ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Overloaded", message) }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(json!({ "code": self.code, "message": self.message }))).into_response();
        if let Some(s) = self.retry_after_s {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "InvalidKey", e.to_string())
    }
}

/// No device takes a new shard: `507 NoSpace` when every device takes
/// writes and only room is missing; otherwise `503 NoWritableDevice`,
/// naming why each device does not take it (fenced, failed or full).
fn no_device_writes(node: &Node, len: u64) -> ApiError {
    let why = node.why_no_device_writes(len);
    if node.only_space_is_missing() {
        return ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "NoSpace", format!("no device has room: {why}"));
    }
    ApiError {
        retry_after_s: Some(30),
        ..ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "NoWritableDevice",
            format!("no device takes new shards: {why}"),
        )
    }
}

/// A store error as the client sees it. Device faults count against the
/// device.
fn store_error(node: &Node, slot: Option<usize>, e: Error) -> ApiError {
    if let Some(slot) = slot {
        let errors = &node.slots[slot].errors;
        match e {
            Error::Corruption { .. } => errors.corruption.fetch_add(1, Ordering::Relaxed),
            Error::Io { .. } | Error::Poisoned { .. } => errors.io.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        if matches!(e, Error::Poisoned { .. } | Error::Stopped { .. }) {
            node.slots[slot].stopped.store(true, Ordering::Relaxed);
        }
    }
    match e {
        Error::NotFound(key) => ApiError::new(StatusCode::NOT_FOUND, "NotFound", format!("no shard {key}")),
        Error::InvalidKey(m) => ApiError::new(StatusCode::BAD_REQUEST, "InvalidKey", m),
        e @ Error::BadDigest { .. } => ApiError::new(StatusCode::BAD_REQUEST, "BadDigest", e.to_string()),
        Error::TooLarge { size, max } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "TooLarge",
            format!("a shard of {size} bytes is over the maximum of {max}"),
        ),
        Error::NoSpace(m) => ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "NoSpace", m),
        Error::Corruption { device, what, offset } => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Corrupt",
            format!("{what} on {device} at offset {offset}: the bytes failed verification and are not returned"),
        ),
        Error::Busy { device, reason } => ApiError {
            retry_after_s: Some(1),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Overloaded", format!("{device}: {reason}"))
        },
        Error::InvalidArgument(m) => ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, "InvalidRange", m),
        e @ Error::Stalled { .. } => ApiError {
            retry_after_s: Some(30),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "DeviceStalled", e.to_string())
        },
        other => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "DeviceFailed", other.to_string()),
    }
}

/// The shard requests the connection front answers (`front.rs`), by the
/// router's own handlers. None in a cluster: its shard routes answer
/// peers only, checked by a layer of the router.
pub fn shard_api(app: &Arc<App>) -> Option<crate::front::ShardApi> {
    if app.cluster.is_some() {
        return None;
    }
    let app = Arc::clone(app);
    Some(Arc::new(move |req: Request| {
        let app = Arc::clone(&app);
        Box::pin(async move {
            match *req.method() {
                Method::GET => get_shard(State(app), req).await.into_response(),
                Method::HEAD => head_shard(State(app), req).await.into_response(),
                Method::PUT => put_shard(State(app), req).await.into_response(),
                Method::DELETE => delete_shard(State(app), req).await.into_response(),
                // The front passes no other method; the router's answer.
                ref method => method_not_allowed(method, req.uri().path()).into_response(),
            }
        })
    }))
}

fn method_not_allowed(method: &Method, path: &str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("{method} is not served on {path} (the Allow header lists what is)"),
    )
}

pub fn router(app: Arc<App>) -> Router {
    let shards = Router::new()
        .route("/v1/shards", get(list))
        .route("/v1/shards/", get(list))
        .route("/v1/shards/{*key}", get(get_shard).head(head_shard).put(put_shard).delete(delete_shard));
    // In a cluster the shard API answers peers only (cluster/routes.rs);
    // alone, no layer costs its requests anything.
    let shards = match app.cluster {
        Some(_) => shards
            .route_layer(axum::middleware::from_fn_with_state(Arc::clone(&app), crate::cluster::routes::require_peer)),
        None => shards,
    };
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics))
        .merge(shards)
        .route("/v1/devices/{id}/fence", post(fence))
        .route("/v1/devices/{id}/unfence", post(unfence))
        .route("/v1/scrub", get(scrub_all))
        .route("/v1/devices/{id}/scrub", get(scrub_one))
        .route("/v1/devices/{id}/scrub/{action}", post(scrub_control))
        .route("/v1/repairs", get(repairs))
        .route("/v1/repairs/rate", axum::routing::put(set_repair_rate))
        .merge(crate::cluster::routes::router())
        .merge(crate::objects::routes::router())
        .fallback(|method: Method, uri: axum::http::Uri| async move {
            ApiError::new(StatusCode::NOT_FOUND, "NoSuchRoute", format!("no route for {method} {}", uri.path()))
        })
        .method_not_allowed_fallback(|method: Method, uri: axum::http::Uri| async move {
            method_not_allowed(&method, uri.path())
        })
        .with_state(app)
}

/// The moment a client stops waiting, from `x-deadline-ms` (milliseconds
/// from the request's arrival).
fn deadline(headers: &HeaderMap, arrived: Instant) -> Result<Option<Instant>, ApiError> {
    let Some(v) = headers.get("x-deadline-ms") else { return Ok(None) };
    let ms = v.to_str().ok().and_then(|t| t.trim().parse::<u64>().ok()).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            format!("x-deadline-ms {v:?} is not a number of milliseconds"),
        )
    })?;
    Ok(Some(arrived + Duration::from_millis(ms)))
}

fn overloaded(slot: usize) -> ApiError {
    ApiError {
        retry_after_s: Some(1),
        ..ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Overloaded",
            format!("device {slot} has too many requests waiting; retry later"),
        )
    }
}

/// Refuses a read or delete at once when every device that may hold the
/// key is overloaded (`Node::route`); else where the read goes.
fn refuse_early(node: &Node, key: &[u8]) -> Result<Route, ApiError> {
    refuse_overloaded(node, node.route(key))
}

fn refuse_overloaded(node: &Node, route: Route) -> Result<Route, ApiError> {
    match route {
        Route::Refuse { slot, .. } => {
            node.slots[slot].admission.overloaded.fetch_add(1, Ordering::Relaxed);
            Err(overloaded(slot))
        }
        route => Ok(route),
    }
}

/// The shard of `key` from the read cache of the one device that may hold
/// it, when every device is open: what that device holds now, answered
/// from memory (no device read, no trip to its thread, no device time, so
/// even while the device is overloaded; `cache.rs`).
fn cached(node: &Node, route: Route, key: &[u8]) -> Option<(usize, Cached)> {
    let (Route::Sole(slot) | Route::Refuse { slot, sole: true }) = route else { return None };
    node.slots[slot].store.as_ref()?.cached(key).map(|hit| (slot, hit))
}

/// Waits for a turn on a device (see `admission.rs`).
async fn admit(node: &Node, slot: usize, deadline: Option<Instant>) -> Result<Permit<'_>, ApiError> {
    node.slots[slot].admission.admit(deadline).await.map_err(|r| refusal(slot, r))
}

/// The answer to a request `slot`'s admission refused (here or on a store
/// thread's front).
pub(crate) fn refusal(slot: usize, why: Refusal) -> ApiError {
    match why {
        Refusal::Overloaded => overloaded(slot),
        Refusal::DeadlineExceeded => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "DeadlineExceeded",
            "the request could not start before its x-deadline-ms; nothing was done",
        ),
    }
}

/// Whether a shard read asks to be served only in spare room
/// (`?priority=background`: repair reads).
fn is_background(uri: &axum::http::Uri) -> bool {
    uri.query().is_some_and(|q| q.split('&').any(|kv| kv == "priority=background"))
}

/// The key of a `/v1/shards/{key}` request, from the raw path: keys are
/// bytes, percent-encoded in one path segment.
fn key_of(req_path: &str) -> Result<Vec<u8>, ApiError> {
    let raw = req_path.strip_prefix("/v1/shards/").unwrap_or_default();
    Ok(decode_key(raw)?)
}

/// What a listing asks for.
struct ListParams {
    prefix: Vec<u8>,
    after: Option<Vec<u8>>,
    limit: usize,
    /// `partial=1`: list what the devices that can be asked hold, and
    /// name the others, rather than refuse.
    partial: bool,
}

/// `prefix`, `start_after` and `limit` from a listing's query string.
/// Values are percent-decoded to bytes (`+` is a plus sign).
fn list_params(query: Option<&str>) -> Result<ListParams, ApiError> {
    let invalid = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "InvalidArgument", m);
    let (mut prefix, mut after, mut limit, mut partial) = (Vec::new(), None, LIST_LIMIT_DEFAULT, false);
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = crate::keys::decode_component(value).map_err(|e| invalid(format!("{name}: {e}")))?;
        match name {
            "prefix" => prefix = value,
            "start_after" => after = Some(value).filter(|v| !v.is_empty()),
            "limit" => {
                limit = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|v| v.parse::<usize>().ok())
                    .filter(|l| (1..=LIST_LIMIT_MAX).contains(l))
                    .ok_or_else(|| invalid(format!("limit must be a number from 1 to {LIST_LIMIT_MAX}")))?;
            }
            "partial" => {
                partial = match value.as_slice() {
                    b"1" | b"true" => true,
                    b"0" | b"false" => false,
                    _ => return Err(invalid("partial must be 1 or 0".to_owned())),
                };
            }
            other => {
                return Err(invalid(format!("unknown query parameter {other:?} (prefix, start_after, limit, partial)")))
            }
        }
    }
    Ok(ListParams { prefix, after, limit, partial })
}

/// Keys with a prefix, in order, merged across devices, paginated. A key
/// with copies on several devices (one came back after the key was
/// written or deleted elsewhere) is listed as its newest copy, and not at
/// all when that is a tombstone; its older copies are removed in the
/// background. A device that cannot be asked makes the listing `503
/// Unavailable` (its keys would be missing, and a missing key would read
/// as absent), unless the client asks for `partial=1`: then the listing of
/// the others names it in `unavailable`.
async fn list(State(app): State<Arc<App>>, RawQuery(query): RawQuery) -> Result<Json<serde_json::Value>, ApiError> {
    let ListParams { prefix, after, limit, partial } = list_params(query.as_deref())?;
    let mut all = Vec::new();
    let mut unavailable = Vec::new();
    // No tombstone of a key whose old copy this listing saw is purged
    // before the listing reads the tombstone's device.
    let listing = app.node.listing().await;
    for s in &app.node.slots {
        let Some(store) = &s.store else {
            unavailable.push(s.why_not_open());
            continue;
        };
        // One more than asked, to know whether there is more.
        match node::list(store, &prefix, after.as_deref(), limit + 1).await {
            Ok(page) => all.extend(page),
            Err(e) => match s.not_asked(&e) {
                Some(why) => unavailable.push(why),
                None => return Err(store_error(&app.node, Some(s.id), e)),
            },
        }
    }
    drop(listing);
    if !unavailable.is_empty() && !partial {
        return Err(ApiError {
            retry_after_s: Some(30),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                format!(
                    "the listing would leave out what these devices hold: {}; ask with partial=1 to list the others",
                    unavailable.join("; ")
                ),
            )
        });
    }
    // Each key's newest copy first, then the one kept.
    all.sort_by(|a, b| a.key.cmp(&b.key).then(b.sequence.cmp(&a.sequence)));
    let mut superseded = Vec::new();
    all.dedup_by(|older, newest| {
        let same = older.key == newest.key;
        if same && superseded.last() != Some(&older.key) {
            superseded.push(older.key.clone());
        }
        same
    });
    if !superseded.is_empty() {
        let app = Arc::clone(&app);
        tokio::spawn(async move { app.node.tidy_each(superseded).await });
    }
    let truncated = all.len() > limit;
    all.truncate(limit);
    // A page may end on a tombstone: the next starts after it.
    let next = if truncated { all.last().map(|l| encode_key(&l.key)) } else { None };
    let shards: Vec<_> =
        all.iter().filter_map(|l| Some(json!({ "key": encode_key(&l.key), "size": l.size? }))).collect();
    Ok(Json(json!({
        "shards": shards, "truncated": truncated, "next_start_after": next, "unavailable": unavailable,
    })))
}

/// The device holding the newest copy of `key`: `404 NotFound` only when
/// every device that may hold it was asked (or its newest copy is a
/// tombstone); `503 Unavailable`, naming the devices that could not be
/// asked, when the key may be on one of them. Older copies found on the
/// way are removed in the background (`tidy`).
async fn find(app: &Arc<App>, key: &[u8]) -> Result<node::Found, ApiError> {
    let node = &app.node;
    match node.locate(key).await.map_err(|e| store_error(node, None, e))? {
        Located::Found(found, older) => {
            tidy(app, key, !older.is_empty());
            Ok(found)
        }
        located @ (Located::Absent | Located::Deleted(..)) => {
            tidy(app, key, matches!(located, Located::Deleted(..)));
            Err(not_found(key))
        }
        Located::Unavailable(devices, _) => Err(unavailable(key, &devices)),
    }
}

/// Removes copies of `key` older than its newest, later, under the key's
/// stripe for writing (a read holds it for reading and cannot).
fn tidy(app: &Arc<App>, key: &[u8], needed: bool) {
    if !needed {
        return;
    }
    let (app, key) = (Arc::clone(app), key.to_vec());
    tokio::spawn(async move { app.node.tidy(&key).await });
}

fn unavailable(key: &[u8], devices: &[String]) -> ApiError {
    ApiError {
        retry_after_s: Some(30),
        ..ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            format!(
                "shard {} is on no open device, and {} that may hold it cannot be asked: {}; its absence is not proven",
                encode_key(key),
                if devices.len() == 1 { "one device" } else { "devices" },
                devices.join("; ")
            ),
        )
    }
}

fn crc_header(crc: u32) -> HeaderValue {
    HeaderValue::from_str(&format!("{crc:08x}")).expect("hex is a valid header value")
}

async fn head_shard(State(app): State<Arc<App>>, req: Request) -> Result<Response, ApiError> {
    let key = key_of(req.uri().path())?;
    let _read = app.node.stripe(&key).read().await;
    // A cached shard's stat is what its device holds now (as for GET).
    let stat = match cached(&app.node, app.node.route(&key), &key) {
        Some((_, hit)) => hit.stat,
        None => find(&app, &key).await?.stat,
    };
    let mut r = Response::new(Body::empty());
    let h = r.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(stat.size));
    h.insert("x-shard-crc32c", crc_header(stat.crc32c));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    Ok(r)
}

async fn get_shard(State(app): State<Arc<App>>, req: Request) -> Result<Response, ApiError> {
    if !app.shard_read_delay.is_zero() {
        tokio::time::sleep(app.shard_read_delay).await;
    }
    let deadline = deadline(req.headers(), Instant::now())?;
    let key = key_of(req.uri().path())?;
    let range_header = req.headers().get(header::RANGE);
    let spec = range_header.map(parse_range_spec).transpose()?;
    let background = is_background(req.uri());
    // The route is taken under the key's stripe: a put finishing on
    // another device in between would make a sole candidate stale.
    let _read = app.node.stripe(&key).read().await;
    let route = app.node.route(&key);
    // A hot shard, from memory.
    if let Some((slot, hit)) = cached(&app.node, route, &key) {
        let (offset, bytes) = match (spec, range_header) {
            (Some(spec), Some(v)) => {
                let (offset, len) = spec.resolve(hit.stat.size).ok_or_else(|| unsatisfiable(v, hit.stat.size))?;
                (Some(offset), hit.bytes.slice(offset as usize..(offset + len) as usize))
            }
            _ => (None, hit.bytes),
        };
        return Ok(shard_answer(&app, slot, &hit.stat, offset, bytes));
    }
    let route = refuse_overloaded(&app.node, route)?;
    // When only one device may hold the key (the usual case), one trip to
    // its thread finds the shard and reads it.
    if let Route::Sole(slot) = route {
        let store = app.node.slots[slot].store.as_ref().expect("a sole candidate is open");
        refuse_background(&app, slot, background)?;
        let permit = admit(&app.node, slot, deadline).await?;
        match node::read(store, &key, spec).await {
            Ok(Read::Shard { stat, offset, bytes }) => {
                drop(permit);
                return Ok(shard_answer(&app, slot, &stat, spec.map(|_| offset), bytes.into()));
            }
            Ok(Read::OutOfRange(stat)) => {
                return Err(unsatisfiable(range_header.expect("a range was asked"), stat.size));
            }
            Ok(Read::Tombstone(_)) => {
                tidy(&app, &key, true);
                return Err(not_found(&key));
            }
            Ok(Read::Absent) => return Err(not_found(&key)),
            // The device stopped meanwhile: the full search says what can
            // be said.
            Err(Error::Stopped { .. }) => {}
            Err(e) => return Err(store_error(&app.node, Some(slot), e)),
        }
    }
    let found = find(&app, &key).await?;
    let size = found.stat.size;
    let range = match (spec, range_header) {
        (Some(spec), Some(v)) => Some(spec.resolve(size).ok_or_else(|| unsatisfiable(v, size))?),
        _ => None,
    };
    let store = app.node.slots[found.slot].store.as_ref().expect("located on an open device");
    let (offset, len) = range.unwrap_or((0, size));
    refuse_background(&app, found.slot, background)?;
    let permit = admit(&app.node, found.slot, deadline).await?;
    let bytes = node::get(store, &key, offset, len).await.map_err(|e| store_error(&app.node, Some(found.slot), e))?;
    drop(permit);
    Ok(shard_answer(&app, found.slot, &found.stat, range.map(|(o, _)| o), bytes.into()))
}

/// A background (repair) read runs only in the room foreground requests
/// leave; otherwise the repairer is told to back off.
fn refuse_background(app: &App, slot: usize, background: bool) -> Result<(), ApiError> {
    if background && !app.node.slots[slot].admission.has_room() {
        metrics::counter!("shardnode_background_reads_refused_total").increment(1);
        return Err(ApiError {
            retry_after_s: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Busy",
                format!("device {slot} is busy with foreground requests; background reads wait"),
            )
        });
    }
    Ok(())
}

/// The answer to a shard read: the bytes (a range of them from `offset`
/// when one was asked), the shard's CRC, and the range's own CRC.
fn shard_answer(app: &App, slot: usize, stat: &ShardStat, offset: Option<u64>, bytes: Bytes) -> Response {
    let len = bytes.len() as u64;
    let traffic = &app.node.slots[slot].traffic;
    traffic.reads.fetch_add(1, Ordering::Relaxed);
    traffic.read_bytes.fetch_add(len, Ordering::Relaxed);
    // The shard's CRC covers all of it; a range's bytes get their own, so
    // the reader checks what crossed the wire.
    let range_crc = offset.map(|_| crc32c::crc32c(&bytes));
    let mut r = Response::new(Body::from(bytes));
    let h = r.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert("x-shard-crc32c", crc_header(stat.crc32c));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let (Some(crc), Some(offset)) = (range_crc, offset) {
        h.insert("x-range-crc32c", crc_header(crc));
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {offset}-{}/{}", offset + len - 1, stat.size)).expect("ascii"),
        );
        *r.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    r
}

fn not_found(key: &[u8]) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NotFound", format!("no shard {}", encode_key(key)))
}

/// One `bytes=` range of a shard of `size` bytes, as (offset, length).
pub fn parse_range(v: &HeaderValue, size: u64) -> Result<(u64, u64), ApiError> {
    parse_range_spec(v)?.resolve(size).ok_or_else(|| unsatisfiable(v, size))
}

fn range_error(v: &HeaderValue, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "InvalidRange",
        format!("Range {:?}: {why}", v.to_str().unwrap_or("(not text)")),
    )
}

fn unsatisfiable(v: &HeaderValue, size: u64) -> ApiError {
    range_error(v, &format!("not satisfiable for a shard of {size} bytes"))
}

/// One `bytes=` range as asked (`FIRST-LAST`, `FIRST-`, `-SUFFIX`), before
/// the shard's size is known.
pub fn parse_range_spec(v: &HeaderValue) -> Result<ByteRange, ApiError> {
    let bad = |why: &str| range_error(v, why);
    let text = v.to_str().map_err(|_| bad("not text"))?;
    let spec = text.strip_prefix("bytes=").ok_or_else(|| bad("only `bytes=` ranges are served"))?;
    if spec.contains(',') {
        return Err(bad("only a single range is served"));
    }
    let (first, last) = spec.split_once('-').ok_or_else(|| bad("expected FIRST-LAST, FIRST- or -SUFFIX"))?;
    let num = |s: &str| s.trim().parse::<u64>().map_err(|_| bad("not a number"));
    match (first.trim().is_empty(), last.trim().is_empty()) {
        (true, true) => Err(bad("expected FIRST-LAST, FIRST- or -SUFFIX")),
        (true, false) => match num(last)? {
            0 => Err(bad("an empty suffix selects nothing")),
            n => Ok(ByteRange::Suffix(n)),
        },
        (false, true) => Ok(ByteRange::From(num(first)?)),
        (false, false) => Ok(ByteRange::FromTo(num(first)?, num(last)?)),
    }
}

async fn put_shard(State(app): State<Arc<App>>, req: Request) -> Result<Response, ApiError> {
    let started = Instant::now();
    let deadline = deadline(req.headers(), started)?;
    let key = key_of(req.uri().path())?;
    let (parts, body) = req.into_parts();
    let want_crc = client_crc(&parts.headers)?;
    // The client's CRC travels with the put to the store, which checks it
    // against the bytes it writes to the medium; without one, the CRC of
    // the body as it arrived here does.
    let arrived = read_body(&app, &parts.headers, body, want_crc).await?;
    let body_us = started.elapsed().as_micros() as u64;
    let (data, crc) = (arrived.data, arrived.crc);
    let node = &app.node;
    let _write = node.stripe(&key).write().await;
    // A key found nowhere while some device cannot be asked is written to
    // a device that takes writes: its version is newer than any copy the
    // device may bring back.
    let (holder, mut older) = match node.locate(&key).await.map_err(|e| store_error(node, None, e))? {
        Located::Found(found, older) => (Some(found), older),
        Located::Deleted(newest, mut older) => {
            older.push(newest);
            (None, older)
        }
        Located::Absent => (None, Vec::new()),
        Located::Unavailable(_, older) => (None, older),
    };
    // An overwrite stays on the device that holds the shard, so the swap is
    // atomic there; only a fenced holder sends it elsewhere.
    let target = match holder {
        Some(f) if !node.slots[f.slot].fenced.load(Ordering::Relaxed) => f.slot,
        _ => node.place(data.len() as u64).ok_or_else(|| no_device_writes(node, data.len() as u64))?,
    };
    let store = node.slots[target].store.as_ref().expect("placed on an open device");
    let permit = admit(node, target, deadline).await?;
    let len = data.len() as u64;
    let version = node.next_version();
    // The device may hold the key from the moment the write is sent: one
    // given up on (its I/O stalled) may still take effect, and a read that
    // skipped the device on its key filter would then claim absence.
    node.remember(target, &key);
    let stored_at = Instant::now();
    node::put(store, &key, data, crc, version).await.map_err(|e| store_error(node, Some(target), e))?;
    let store_us = stored_at.elapsed().as_micros() as u64;
    drop(permit);
    node.slots[target].traffic.writes.fetch_add(1, Ordering::Relaxed);
    node.slots[target].traffic.written_bytes.fetch_add(len, Ordering::Relaxed);
    // Every other copy is now older: the holder's when the shard moved off
    // a fenced device, older ones and tombstones elsewhere (the target's
    // own tombstone went with the put).
    if let Some(old) = holder.filter(|f| f.slot != target) {
        older.push(node::Copy { slot: old.slot, sequence: old.stat.sequence, stat: Some(old.stat) });
    }
    older.retain(|c| c.slot != target);
    node.reconcile(&key, &older, None).await;
    tracing::debug!(
        key = %encode_key(&key),
        device = target,
        elapsed_us = started.elapsed().as_micros() as u64,
        body_us,
        store_us,
        "put"
    );
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::CREATED;
    r.headers_mut().insert("x-shard-crc32c", crc_header(crc));
    Ok(r)
}

/// Deletes the newest copy of a key and every older one. While a device
/// that may hold a copy cannot be asked, the delete leaves a tombstone
/// (on the holder, or on a device that takes writes when the key is found
/// nowhere), so that the copy on that device never comes back.
async fn delete_shard(State(app): State<Arc<App>>, req: Request) -> Result<Response, ApiError> {
    let deadline = deadline(req.headers(), Instant::now())?;
    let key = key_of(req.uri().path())?;
    let node = &app.node;
    refuse_early(node, &key)?;
    let _write = node.stripe(&key).write().await;
    let not_found = || not_found(&key);
    let (slot, older) = match node.locate(&key).await.map_err(|e| store_error(node, None, e))? {
        Located::Found(found, older) => (found.slot, older),
        Located::Deleted(newest, older) => {
            node.reconcile(&key, &older, Some(&newest)).await;
            return Err(not_found());
        }
        Located::Absent => return Err(not_found()),
        Located::Unavailable(_, older) => {
            // Found nowhere that could be asked: the tombstone goes to a
            // device that takes writes.
            let slot = node.place(0).ok_or_else(|| no_device_writes(node, 0))?;
            (slot, older)
        }
    };
    let store = node.slots[slot].store.as_ref().expect("located on an open device");
    let permit = admit(node, slot, deadline).await?;
    let deleted =
        if node.all_devices_available() { node::delete(store, &key).await } else { node.tombstone(slot, &key).await };
    deleted.map_err(|e| store_error(node, Some(slot), e))?;
    drop(permit);
    node.slots[slot].traffic.deletes.fetch_add(1, Ordering::Relaxed);
    let older: Vec<node::Copy> = older.into_iter().filter(|c| c.slot != slot).collect();
    node.reconcile(&key, &older, None).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        let r = |s: &str, size| parse_range(&HeaderValue::from_str(s).unwrap(), size).map_err(|e| e.code);
        assert_eq!(r("bytes=0-9", 100).unwrap(), (0, 10));
        assert_eq!(r("bytes=90-", 100).unwrap(), (90, 10));
        assert_eq!(r("bytes=-5", 100).unwrap(), (95, 5));
        assert_eq!(r("bytes=-500", 100).unwrap(), (0, 100));
        assert_eq!(r("bytes=50-500", 100).unwrap(), (50, 50));
        for bad in ["bytes=100-", "bytes=5-4", "bytes=0-1,3-4", "items=0-1", "bytes=x-1", "bytes=-", "bytes=-0"] {
            assert_eq!(r(bad, 100).unwrap_err(), "InvalidRange", "{bad}");
        }
    }

    #[test]
    fn only_lowercase_hex_digests_are_accepted() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert("x-shard-crc32c", HeaderValue::from_str(v).unwrap());
            client_crc(&m).map_err(|e| e.code)
        };
        assert_eq!(h("0a0b0c0d").unwrap(), Some(0x0a0b_0c0d));
        for bad in ["0A0B0C0D", "0a0b0c0", "0a0b0c0d0", "zzzzzzzz", ""] {
            assert_eq!(h(bad).unwrap_err(), "BadDigest", "{bad:?}");
        }
    }
}
