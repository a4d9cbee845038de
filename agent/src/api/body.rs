//! A put's body and its CRC: read within the limits (size, memory budget,
//! time) into the pieces it arrived in, and the CRC32C headers checked.

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use http_body_util::{BodyExt, Limited};
use shardstore::store::{PutData, SHARD_SIZE_BYTES_MAX};

use super::{ApiError, App};

/// A body frame at least this long is kept as it arrived; shorter ones are
/// copied together into pieces of at least this size.
const FRAME_KEPT_BYTES_MIN: usize = 16 * 1024;

/// A body at least this long lands in record buffers (`App::landing`):
/// smaller ones commit with one flush, whose log carries a copy of the
/// payload taken from the pieces.
const LANDED_BODY_BYTES_MIN: u64 = 64 * 1024;

/// A put's body as it arrived, and the CRC32C it travels with.
pub(super) struct Arrived<'a> {
    pub(super) data: PutData,
    /// The client's, or the agent's of the body as it arrived.
    pub(super) crc: u32,
    /// The body memory budget's share, held until dropped.
    _memory: tokio::sync::SemaphorePermit<'a>,
}

/// The body of a put: announced by `content-length`, at most the shard
/// maximum, within the body memory budget, arriving within the body
/// timeout. Landed in record buffers when it is large and some are free,
/// else kept in the frames it came in (the store copies them once, into
/// its I/O buffer). Without the client's CRC, the agent's is of the body
/// as it arrived: a landed body's is the one landing took of the bytes in
/// the record buffers (one pass, the store's: it checks a client's CRC
/// against it); a kept body's is taken from each frame as it arrives,
/// while it is in cache, and the store checks its copy against it.
pub(super) async fn read_body<'a>(
    app: &'a App,
    headers: &HeaderMap,
    body: Body,
    client_crc: Option<u32>,
) -> Result<Arrived<'a>, ApiError> {
    let too_large = |size: String| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "TooLarge",
            format!("a body of {size} bytes is over the shard maximum of {SHARD_SIZE_BYTES_MAX}"),
        )
    };
    let Some(len) = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()) else {
        return Err(ApiError::new(
            StatusCode::LENGTH_REQUIRED,
            "LengthRequired",
            "a put must announce its size in content-length",
        ));
    };
    if len > SHARD_SIZE_BYTES_MAX {
        return Err(too_large(len.to_string()));
    }
    let kib = u32::try_from(len.div_ceil(1024)).expect("64 MiB in KiB fits u32");
    let permit = app.body_memory.try_acquire_many(kib).map_err(|_| {
        ApiError::overloaded(format!(
            "the agent holds as many request bodies in memory as it may; a {len}-byte body must wait"
        ))
    })?;
    // A body of at least LANDED_BODY_BYTES_MIN lands in record buffers
    // when enough are free; otherwise it is kept in the frames it came in.
    let landing = (len >= LANDED_BODY_BYTES_MIN).then(|| app.landing.as_ref()?.take(len as usize)).flatten();
    let gather = async {
        let mut body = std::pin::pin!(Limited::new(body, SHARD_SIZE_BYTES_MAX as usize));
        let (mut parts, mut sum) = (Vec::new(), 0u32);
        let mut landing = landing;
        // Small frames (a client trickling its body) are copied together,
        // so the pieces kept stay few whatever the client's writes were.
        let mut small = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                if let Some(landed) = &mut landing {
                    if !landed.extend(&data) {
                        return Err(axum::BoxError::from(format!("more than the {len} bytes announced")));
                    }
                    continue;
                }
                if client_crc.is_none() {
                    sum = crc32c::crc32c_append(sum, &data);
                }
                if data.len() >= FRAME_KEPT_BYTES_MIN && small.is_empty() {
                    parts.push(data);
                } else {
                    small.extend_from_slice(&data);
                    if small.len() >= FRAME_KEPT_BYTES_MIN {
                        parts.push(small.split().freeze());
                    }
                }
            }
        }
        let data = if let Some(landed) = landing {
            let got = landed.filled();
            sum = landed.crc32c();
            landed.finish().ok_or_else(|| format!("{got} of the {len} bytes announced arrived"))?
        } else {
            parts.push(small.freeze());
            PutData::from_parts(parts)
        };
        Ok::<_, axum::BoxError>((data, sum))
    };
    match tokio::time::timeout(app.body_timeout, gather).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "RequestTimeout",
            format!("the body did not arrive within {} ms; nothing was stored", app.body_timeout.as_millis()),
        )),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(too_large(format!("over {SHARD_SIZE_BYTES_MAX}")))
        }
        Ok(Err(e)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "IncompleteBody",
            format!("the body could not be read ({e}); nothing was stored"),
        )),
        Ok(Ok((data, sum))) => Ok(Arrived { data, crc: client_crc.unwrap_or(sum), _memory: permit }),
    }
}

/// The client's `x-shard-crc32c`, if it sent one.
pub(super) fn client_crc(headers: &HeaderMap) -> Result<Option<u32>, ApiError> {
    crc32c_header(headers, "x-shard-crc32c")
}

/// A CRC32C header (`x-shard-crc32c`, `x-object-crc32c`): 8 lowercase hex
/// digits, or a `BadDigest` naming it.
pub fn crc32c_header(headers: &HeaderMap, name: &str) -> Result<Option<u32>, ApiError> {
    let Some(v) = headers.get(name) else { return Ok(None) };
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "BadDigest",
            format!("{name} {v:?} is not 8 lowercase hex digits; nothing was stored"),
        )
    };
    let text = v.to_str().map_err(|_| bad())?;
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(bad());
    }
    u32::from_str_radix(text, 16).map(Some).map_err(|_| bad())
}
