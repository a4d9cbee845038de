//! The connection front: every connection starts here. A shard request
//! (`GET`, `HEAD`, `PUT` or `DELETE /v1/shards/{key}`, HTTP/1.1, a head
//! within the limit, a body only on a `PUT` and announced by
//! `content-length`) is parsed with `httparse`, handed to its handler and
//! answered on this task, with no HTTP machinery between; the first
//! request that is anything else hands the connection, with every byte
//! read and not yet served, to hyper and the full router, which serve it
//! from then on (`server::serve`).
//!
//! Why: hyper's connection machinery and axum's routing cost a 4 KiB GET
//! most of its CPU on the HTTP side (BENCHMARKS.md, "A connection front
//! for the shard API"). The handlers are the ones the router calls, so an
//! answer given here is the router's, header for header; only the bytes
//! around it are read and written here.

use std::future::Future;
use std::io::{self, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version};
use axum::response::Response;
use axum::Router;
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::Watcher;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Answers a shard request (`GET`, `HEAD`, `PUT` or `DELETE`), as the
/// router's handlers do.
pub type ShardApi = Arc<dyn Fn(Request) -> Pin<Box<dyn Future<Output = Response> + Send>> + Send + Sync>;

/// Headers a request served here may carry; one with more goes to hyper.
const HEADERS_MAX: usize = 32;

/// A response body up to this size is copied behind its head and sent in
/// one write; a larger one is sent from where it is, in a second.
const BODY_COPIED_BYTES_MAX: usize = 16 * 1024;

/// What every connection's front shares.
pub struct Front {
    pub router: Router,
    pub shards: ShardApi,
    pub builder: http1::Builder,
    pub header_bytes_max: usize,
    pub header_timeout: Duration,
}

/// Serves one connection: shard requests here, until a request that is
/// not one, then everything through hyper. `buf`: what was read of it elsewhere and not served (a store thread's
/// front handing it on, `store_front/`), else empty.
pub async fn connection(
    mut stream: TcpStream,
    mut buf: BytesMut,
    front: Arc<Front>,
    watcher: Watcher,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let mut out = Vec::with_capacity(BODY_COPIED_BYTES_MAX + 512);
    loop {
        // hyper's rule, kept: a connection has the header timeout to send
        // its next head, counted from when the last answer was sent.
        let deadline = tokio::time::Instant::now() + front.header_timeout;
        let req = loop {
            match parse(&buf, front.header_bytes_max) {
                Ok(Head { req, len, close, body }) => {
                    buf.advance(len);
                    break Some((req, close, body));
                }
                Err(NotServed::Other) => break None,
                Err(NotServed::Partial) => {}
            }
            if *stopping.borrow() && buf.is_empty() {
                return Ok(());
            }
            tokio::select! {
                biased;
                read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)) => match read {
                    Ok(Ok(0)) => return Ok(()),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e.to_string()),
                    Err(_) => return Err("no request head within the header timeout".to_owned()),
                },
                _ = stopping.changed(), if buf.is_empty() => return Ok(()),
            }
        };
        let Some((mut req, close, body)) = req else {
            return hand_off(stream, buf.freeze(), &front, watcher).await;
        };
        let head_only = req.method() == Method::HEAD;
        let op = crate::metrics::operation(req.method(), req.uri().path());
        let started = Instant::now();
        // A body is passed to the handler as it arrives, while it runs. A
        // handler that answers before taking all of it (a refusal, a
        // timeout) leaves the rest unread: the connection closes.
        let (response, whole) = if body > 0 {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            *req.body_mut() = axum::body::Body::new(Incoming { rx, left: body });
            let handled = (front.shards)(req);
            tokio::pin!(handled);
            tokio::select! {
                response = &mut handled => (response, false),
                pumped = pump(&mut stream, &mut buf, body, tx) => (handled.await, pumped),
            }
        } else {
            ((front.shards)(req).await, true)
        };
        crate::metrics::observe(op, response.status().as_u16(), started);
        let keep_alive = write_response(&mut stream, &mut out, response, head_only, close || !whole).await?;
        if !whole {
            linger(stream).await;
            return Ok(());
        }
        if !keep_alive || *stopping.borrow() {
            return Ok(());
        }
    }
}

/// A shard request at the start of the buffer.
pub(crate) struct Head {
    pub req: Request,
    /// The head's length: where the next request starts.
    pub len: usize,
    /// The client asked to close the connection after it
    /// (`connection: close`).
    pub close: bool,
    /// The length of its body (a `PUT`'s), which follows the head.
    pub body: u64,
}

/// Why the start of the buffer is not a shard read served here.
pub(crate) enum NotServed {
    /// A request this front does not serve, or bytes that are not one:
    /// hyper answers them.
    Other,
    /// Not yet a whole head.
    Partial,
}

/// The request at the start of `buf`, if it is a shard request served
/// here.
pub(crate) fn parse(buf: &[u8], header_bytes_max: usize) -> Result<Head, NotServed> {
    if buf.is_empty() {
        return Err(NotServed::Partial);
    }
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= header_bytes_max => len,
        Ok(httparse::Status::Partial) if buf.len() <= header_bytes_max => return Err(NotServed::Partial),
        _ => return Err(NotServed::Other),
    };
    let method = match parsed.method {
        Some("GET") => Method::GET,
        Some("HEAD") => Method::HEAD,
        Some("PUT") => Method::PUT,
        Some("DELETE") => Method::DELETE,
        _ => return Err(NotServed::Other),
    };
    let Some(path) = parsed.path.filter(|p| p.len() > "/v1/shards/".len() && p.starts_with("/v1/shards/")) else {
        return Err(NotServed::Other);
    };
    if parsed.version != Some(1) {
        return Err(NotServed::Other);
    }
    let Ok(uri) = Uri::try_from(path) else { return Err(NotServed::Other) };
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    let (mut close, mut body) = (false, None);
    for h in parsed.headers.iter() {
        let name = h.name;
        // A chunked body, an upgrade or an expectation: hyper's to handle.
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if is("transfer-encoding") || is("upgrade") || is("expect") {
            return Err(NotServed::Other);
        }
        if is("content-length") {
            // One, in digits (a list, a sign or a second one: hyper's).
            let len =
                std::str::from_utf8(h.value).ok().filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()));
            match (len.and_then(|v| v.parse::<u64>().ok()), body) {
                (Some(len), None) => body = Some(len),
                _ => return Err(NotServed::Other),
            }
        }
        if is("connection") {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                    return Err(NotServed::Other);
                }
            }
        }
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(h.value)) else {
            return Err(NotServed::Other);
        };
        map.append(name, value);
    }
    // Only a put has a body, and says how long it is.
    let body = match (&method, body) {
        (&Method::PUT, Some(len)) => len,
        (&Method::PUT, None) => return Err(NotServed::Other),
        (_, Some(0) | None) => 0,
        (_, Some(_)) => return Err(NotServed::Other),
    };
    let mut req = Request::new(axum::body::Body::empty());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = map;
    Ok(Head { req, len, close, body })
}

/// The largest piece of a body read at once and passed on as one frame
/// (hyper's bound on a connection's read buffer, `server.rs`).
const BODY_FRAME_BYTES_MAX: usize = 256 * 1024;

/// Passes a body of `left` bytes to the handler's `Incoming`: what `buf`
/// holds after the head first, then reads. Whether all of it was passed.
async fn pump(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    mut left: u64,
    tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
) -> bool {
    loop {
        if !buf.is_empty() {
            let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            left -= n as u64;
            if tx.send(Ok(buf.split_to(n).freeze())).await.is_err() {
                // The handler dropped the body: it answers without it.
                return left == 0;
            }
        }
        if left == 0 {
            return true;
        }
        buf.reserve(usize::try_from(left).unwrap_or(usize::MAX).min(BODY_FRAME_BYTES_MAX));
        let err = match stream.read_buf(buf).await {
            Ok(0) => io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the connection closed {left} bytes short of the body"),
            ),
            Ok(_) => continue,
            Err(e) => e,
        };
        let _ = tx.send(Err(err)).await;
        return false;
    }
}

/// A request body as the front reads it off the connection.
struct Incoming {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    /// Bytes announced and not yet passed on.
    left: u64,
}

impl http_body::Body for Incoming {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, io::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(data))) => {
                self.left -= data.len() as u64;
                Poll::Ready(Some(Ok(http_body::Frame::data(data))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(Some(Err(io::Error::other("the body was cut off")))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}

/// Writes `response` (its head only for a `HEAD`), saying the connection
/// closes after it when the client asked (`close`); whether the
/// connection stays open.
async fn write_response(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    response: Response,
    head_only: bool,
    close: bool,
) -> Result<bool, String> {
    let (keep_alive, body) = encode_head(out, response, head_only, close).await?;
    let io = |e: io::Error| e.to_string();
    if body.is_empty() {
        stream.write_all(out).await.map_err(io)?;
    } else if body.len() <= BODY_COPIED_BYTES_MAX {
        out.extend_from_slice(&body);
        stream.write_all(out).await.map_err(io)?;
    } else {
        stream.write_all(out).await.map_err(io)?;
        stream.write_all(&body).await.map_err(io)?;
    }
    Ok(keep_alive)
}

/// Writes `response`'s head to `out` (replacing what it held), saying the
/// connection closes after it when the client asked (`close`); whether
/// the connection stays open, and the body to send after the head (empty
/// for a `HEAD` and a bodiless status).
pub(crate) async fn encode_head(
    out: &mut Vec<u8>,
    response: Response,
    head_only: bool,
    close: bool,
) -> Result<(bool, Bytes), String> {
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| format!("answer body: {e}"))?.to_bytes();
    Ok(encode_parts(out, &parts, body, head_only, close))
}

/// `encode_head` for an answer whose body is in memory (an error's JSON),
/// on a thread that cannot wait for one that is not.
pub(crate) fn encode_ready(
    out: &mut Vec<u8>,
    response: Response,
    head_only: bool,
    close: bool,
) -> Option<(bool, Bytes)> {
    let (parts, body) = response.into_parts();
    let mut collect = std::pin::pin!(body.collect());
    let Poll::Ready(Ok(body)) = collect.as_mut().poll(&mut Context::from_waker(std::task::Waker::noop())) else {
        return None;
    };
    Some(encode_parts(out, &parts, body.to_bytes(), head_only, close))
}

fn encode_parts(
    out: &mut Vec<u8>,
    parts: &axum::http::response::Parts,
    body: Bytes,
    head_only: bool,
    close: bool,
) -> (bool, Bytes) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut keep_alive = !close;
    if close && !parts.headers.contains_key(header::CONNECTION) {
        out.extend_from_slice(b"connection: close\r\n");
    }
    for (name, value) in &parts.headers {
        if name == header::CONNECTION && value.as_bytes().eq_ignore_ascii_case(b"close") {
            keep_alive = false;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // No length on a 1xx or 204 answer (RFC 9110, 8.6), as hyper.
    let bodiless = parts.status.is_informational() || parts.status == StatusCode::NO_CONTENT;
    if !bodiless && !parts.headers.contains_key(header::CONTENT_LENGTH) {
        let _ = write!(out, "content-length: {}\r\n", body.len());
    }
    out.extend_from_slice(b"date: ");
    date(out);
    out.extend_from_slice(b"\r\n\r\n");
    (keep_alive, if head_only || bodiless { Bytes::new() } else { body })
}

/// How long a closing connection is drained of a body it was answered
/// before (`linger`): at most this long in all, and this long between
/// reads, and at most this many bytes.
const LINGER_TOTAL: Duration = Duration::from_secs(5);
const LINGER_IDLE: Duration = Duration::from_secs(1);
const LINGER_BYTES_MAX: usize = 80 << 20;

/// Closes a connection answered before its request's body was read (a
/// refusal, a timeout), as servers do: the answer is sent and the write
/// side shut, then what the client still sends is read and dropped until
/// it closes, within bounds. Closing at once with unread bytes makes the
/// kernel reset the connection, and a client still sending its body would
/// see the reset instead of the answer.
async fn linger(mut stream: TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let until = tokio::time::Instant::now() + LINGER_TOTAL;
    let (mut sink, mut drained) = (vec![0u8; 64 * 1024], 0);
    while drained < LINGER_BYTES_MAX {
        let deadline = until.min(tokio::time::Instant::now() + LINGER_IDLE);
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => return,
        }
    }
}

/// Appends the `date` header's value, the current second's (formatted
/// once a second per thread).
pub(crate) fn date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != second {
            *at = second;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(text.as_bytes());
    });
}

/// Hands the connection to hyper and the full router, which first read
/// `read` (the bytes this front read and did not serve).
async fn hand_off(stream: TcpStream, read: Bytes, front: &Front, watcher: Watcher) -> Result<(), String> {
    metrics::counter!("shardnode_http_connections_handed_off_total").increment(1);
    let io = TokioIo::new(Rewind { read, stream });
    let service = TowerToHyperService::new(front.router.clone());
    watcher.watch(front.builder.serve_connection(io, service)).await.map_err(|e| e.to_string())
}

/// A stream that yields `read` before reading on.
struct Rewind {
    read: Bytes,
    stream: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(wire: &str) -> &'static str {
        match parse(wire.as_bytes(), 8192) {
            Ok(Head { close: false, .. }) => "read",
            Ok(Head { close: true, .. }) => "read, then close",
            Err(NotServed::Other) => "other",
            Err(NotServed::Partial) => "partial",
        }
    }

    /// Shard requests are served here, a body only on a put and only as
    /// one plain `content-length`; everything else, and anything this
    /// front does not fully understand, goes to hyper.
    #[test]
    fn only_plain_shard_requests_are_served_by_the_front() {
        for (wire, want) in [
            ("GET /v1/shards/a%2Fb HTTP/1.1\r\nhost: t\r\n\r\n", "read"),
            ("HEAD /v1/shards/a HTTP/1.1\r\nhost: t\r\ncontent-length: 0\r\n\r\n", "read"),
            ("GET /v1/shards/a?priority=background HTTP/1.1\r\nrange: bytes=0-1\r\n\r\n", "read"),
            ("GET /v1/shards/a HTTP/1.1\r\nConnection: Close\r\n\r\n", "read, then close"),
            ("GET /v1/shards/a HTTP/1.1\r\nconnection: keep-alive\r\n\r\n", "read"),
            ("GET /v1/shards/a HTTP/1.1\r\nhost: t\r\n", "partial"),
            ("GET /v1/shards/a HT", "partial"),
            ("PUT /v1/shards/a HTTP/1.1\r\ncontent-length: 1\r\n\r\nx", "read"),
            ("PUT /v1/shards/a HTTP/1.1\r\ncontent-length: 0\r\n\r\n", "read"),
            ("DELETE /v1/shards/a HTTP/1.1\r\n\r\n", "read"),
            ("PUT /v1/shards/a HTTP/1.1\r\n\r\n", "other"),
            ("PUT /v1/shards/a HTTP/1.1\r\ncontent-length: +1\r\n\r\nx", "other"),
            ("PUT /v1/shards/a HTTP/1.1\r\ncontent-length: 1, 1\r\n\r\nx", "other"),
            ("PUT /v1/shards/a HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\nx", "other"),
            ("PUT /v1/shards/a HTTP/1.1\r\ncontent-length: 99999999999999999999999\r\n\r\n", "other"),
            ("DELETE /v1/shards/a HTTP/1.1\r\ncontent-length: 1\r\n\r\nx", "other"),
            ("POST /v1/shards/a HTTP/1.1\r\n\r\n", "other"),
            ("GET /v1/shards/ HTTP/1.1\r\n\r\n", "other"),
            ("GET /v1/shards HTTP/1.1\r\n\r\n", "other"),
            ("GET /v1/shardsx/a HTTP/1.1\r\n\r\n", "other"),
            ("GET /healthz HTTP/1.1\r\n\r\n", "other"),
            ("GET /v1/shards/a HTTP/1.0\r\n\r\n", "other"),
            ("GET http://h/v1/shards/a HTTP/1.1\r\n\r\n", "other"),
            ("GET /v1/shards/a HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc", "other"),
            ("GET /v1/shards/a HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n", "other"),
            ("GET /v1/shards/a HTTP/1.1\r\nexpect: 100-continue\r\n\r\n", "other"),
            ("GET /v1/shards/a HTTP/1.1\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n", "other"),
            ("\x16\x03\x01 not http\r\n\r\n", "other"),
        ] {
            assert_eq!(kind(wire), want, "{wire:?}");
        }
        // A head over the limit, whole or not yet whole: hyper answers 431.
        let pad = "p".repeat(9000);
        assert_eq!(kind(&format!("GET /v1/shards/a HTTP/1.1\r\nx-pad: {pad}\r\n\r\n")), "other");
        assert_eq!(kind(&format!("GET /v1/shards/a HTTP/1.1\r\nx-pad: {pad}")), "other");
        // More headers than the front takes.
        let many = "x-h: v\r\n".repeat(HEADERS_MAX + 1);
        assert_eq!(kind(&format!("GET /v1/shards/a HTTP/1.1\r\n{many}\r\n")), "other");
    }

    /// The request handed to the handler is the one on the wire, and the
    /// head's length is where the next request starts.
    #[test]
    fn a_parsed_read_carries_its_method_target_and_headers() {
        let first = "GET /v1/shards/a%2Fb?x=1 HTTP/1.1\r\nhost: t\r\nrange: bytes=2-3\r\nx-deadline-ms: 50\r\n\r\n";
        let wire = format!("{first}HEAD /v1/shards/c HTTP/1.1\r\n\r\n");
        let Ok(Head { req, len, close, body }) = parse(wire.as_bytes(), 8192) else { panic!("not a read") };
        assert_eq!(
            (req.method(), req.uri().path(), req.uri().query()),
            (&Method::GET, "/v1/shards/a%2Fb", Some("x=1"))
        );
        assert_eq!(req.headers()["range"], "bytes=2-3");
        assert_eq!(req.headers()["x-deadline-ms"], "50");
        assert_eq!(req.headers().len(), 3);
        assert_eq!((len, close, body), (first.len(), false, 0));
        let Ok(Head { req: next, .. }) = parse(&wire.as_bytes()[len..], 8192) else { panic!("not a read") };
        assert_eq!((next.method(), next.uri().path()), (&Method::HEAD, "/v1/shards/c"));
        let put = "PUT /v1/shards/d HTTP/1.1\r\nContent-Length: 12\r\n\r\nhello, world";
        let Ok(Head { req, len, body, .. }) = parse(put.as_bytes(), 8192) else { panic!("not a put") };
        assert_eq!((req.method(), len, body), (&Method::PUT, put.len() - 12, 12));
    }
}
