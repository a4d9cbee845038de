//! The HTTP server: HTTP/1.1 connections with bounded headers, a header
//! timeout for slow clients, and a graceful stop.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::config::Limits;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::front::{Front, ShardApi};
use crate::store_front::{HandOff, StoreFronts};

/// Serves `router` on `listener` until `stop` resolves, then stops
/// accepting and gives connections in flight `grace` to finish; what is
/// still running after it is cut off. With `shards`, shard requests are
/// answered by the connection front (`front.rs`) until a connection
/// sends anything else; with `store_fronts` too, connections are served
/// on the store threads (`store_front/`), which hand the ones they do
/// not serve to the connection front through `handoffs`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shards: Option<ShardApi>,
    store_fronts: Option<(StoreFronts, UnboundedReceiver<HandOff>)>,
    limits: &Limits,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_timeout_ms))
        // hyper reads headers and bodies through one buffer, grown as reads
        // fill it, up to this bound: a bound as small as the header limit
        // made a 1 MiB body 64 reads and 64 frames (the HTTP ceiling's CPU
        // per 1 MiB PUT 0.63x, its rate 1.3x, with 256 KiB). The header
        // limit is enforced after parsing (`first_layer`).
        .max_buf_size(limits.header_bytes_max.max(READ_BUFFER_BYTES_MAX))
        .keep_alive(true);
    // One layer in front of every route: each `from_fn` layer costs a
    // request a boxed future and a service clone.
    let router = router.layer(axum::middleware::from_fn_with_state(limits.header_bytes_max, first_layer));
    let graceful = GracefulShutdown::new();
    let front = shards.map(|shards| {
        Arc::new(Front {
            router: router.clone(),
            shards,
            builder: builder.clone(),
            header_bytes_max: limits.header_bytes_max,
            header_timeout: Duration::from_millis(limits.header_timeout_ms),
        })
    });
    // Front connections are told to stop by this; each holds a watcher of
    // `graceful` (a receiver of its signal) until it ends, so the graceful
    // shutdown waits for them as for hyper's.
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let (store_fronts, mut handoffs) = match store_fronts {
        Some((fronts, handoffs)) if front.is_some() => (Some(fronts), Some(handoffs)),
        _ => (None, None),
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            Some(HandOff { fd, read }) = async { handoffs.as_mut()?.recv().await } => {
                let Some(front) = &front else { continue };
                match crate::store_front::into_tokio(fd) {
                    Ok(stream) => {
                        let peer = stream.peer_addr().ok();
                        spawn_front(front, stream, bytes::BytesMut::from(&read[..]), peer, &graceful, &stopping);
                    }
                    Err(e) => tracing::debug!(error = %e, "a connection from a store thread could not join tokio's reactor"),
                }
            }
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: keep serving
                        // the connections we have.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                metrics::counter!("shardnode_http_connections_total").increment(1);
                let stream = match &store_fronts {
                    Some(fronts) => match fronts.adopt(stream) {
                        Ok(()) => continue,
                        // No store thread has room: served here.
                        Err(stream) => stream,
                    },
                    None => stream,
                };
                if let Some(front) = &front {
                    spawn_front(front, stream, bytes::BytesMut::with_capacity(8192), Some(peer), &graceful, &stopping);
                    continue;
                }
                let service = TowerToHyperService::new(router.clone());
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut stop => break,
        }
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    let grace = Duration::from_millis(limits.shutdown_grace_ms);
    if let Some(fronts) = &store_fronts {
        fronts.stop();
    }
    // The store threads' connections end as the front's do: idle ones at
    // once, the others after their answer in progress.
    let store_threads_done = async {
        while store_fronts.as_ref().is_some_and(|f| f.live() > 0) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let all_done = async {
        tokio::join!(graceful.shutdown(), store_threads_done);
    };
    if tokio::time::timeout(grace, all_done).await.is_err() {
        tracing::warn!(
            grace_ms = limits.shutdown_grace_ms,
            "requests still running after the grace period were cut off"
        );
    }
    Ok(())
}

/// Serves a connection at the connection front (`front.rs`) from now on;
/// `read`: what was read of it and not served before.
fn spawn_front(
    front: &Arc<Front>,
    stream: tokio::net::TcpStream,
    read: bytes::BytesMut,
    peer: Option<std::net::SocketAddr>,
    graceful: &GracefulShutdown,
    stopping: &tokio::sync::watch::Receiver<bool>,
) {
    let (front, watcher, stopping) = (Arc::clone(front), graceful.watcher(), stopping.clone());
    tokio::spawn(async move {
        if let Err(e) = crate::front::connection(stream, read, front, watcher, stopping).await {
            tracing::debug!(?peer, error = %e, "connection ended with an error");
        }
    });
}

/// The most a connection's read buffer grows to (headers and body).
const READ_BUFFER_BYTES_MAX: usize = 256 * 1024;

/// The bytes of a request's head as it came on the wire: the request line
/// and every header line.
fn head_bytes(req: &Request) -> usize {
    let uri = req.uri();
    // Origin form (`/path?query`), or absolute form with scheme and host.
    let target = uri.scheme_str().map_or(0, |s| s.len() + "://".len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len());
    let line = req.method().as_str().len() + " ".len() + target + " HTTP/1.1\r\n".len();
    let fields: usize = req.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    line + fields + 2
}

/// In front of every route: `431` for a request whose head is over
/// `limits.header_bytes_max`, before any route sees it (hyper itself
/// refuses heads over its buffer); every other request is counted and
/// timed (`metrics::record`).
async fn first_layer(State(max): State<usize>, req: Request, next: Next) -> Response {
    if head_bytes(&req) > max {
        return (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, [(axum::http::header::CONNECTION, "close")])
            .into_response();
    }
    crate::metrics::record(req, next).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The count matches the bytes of the head on the wire, in origin and
    /// absolute form.
    #[test]
    fn head_bytes_counts_the_head_as_sent() {
        for (target, wire) in [
            ("/v1/shards/a%2Fb?x=1", "GET /v1/shards/a%2Fb?x=1 HTTP/1.1\r\nhost: t\r\nx-pad: pp\r\n\r\n"),
            ("http://example.com/x", "GET http://example.com/x HTTP/1.1\r\nhost: t\r\nx-pad: pp\r\n\r\n"),
        ] {
            let req = Request::builder()
                .method("GET")
                .uri(target)
                .header("host", "t")
                .header("x-pad", "pp")
                .body(axum::body::Body::empty())
                .unwrap();
            assert_eq!(head_bytes(&req), wire.len(), "{target}");
        }
    }
}
