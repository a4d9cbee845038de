//! A request at the start of a connection's buffer, as a store thread's
//! front sorts it (`classify`), and the head of the answers it writes
//! itself (`shard_head`).

use shardstore::store::ShardStat;

use crate::front;

/// What to do with the bytes at the start of a connection's buffer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Not yet a whole head.
    More,
    /// A plain `GET` or `HEAD` of a whole shard, served here.
    Fast(Plain),
    /// A request without a body the router's handler answers.
    Handler,
    /// Anything else: the tokio front serves the connection from here on.
    HandOff,
}

/// A plain shard read, as `classify` found it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Plain {
    pub head_len: usize,
    pub head_only: bool,
    /// The client asked to close the connection after the answer.
    pub close: bool,
    pub key: Vec<u8>,
    /// The request's `x-deadline-ms`, if it gave one.
    pub deadline_ms: Option<u64>,
}

/// Headers a request served here may carry.
const HEADERS_MAX: usize = 16;

pub(super) fn classify(buf: &[u8], header_bytes_max: usize) -> Step {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= header_bytes_max => len,
        Ok(httparse::Status::Partial) if buf.len() <= header_bytes_max => return Step::More,
        // Too many headers for this parser: the handler's parser decides.
        Err(httparse::Error::TooManyHeaders) => return Step::Handler,
        _ => return Step::HandOff,
    };
    let head_only = match parsed.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return Step::Handler,
    };
    let Some(raw) = parsed.path.and_then(|p| p.strip_prefix("/v1/shards/")) else { return Step::Handler };
    if raw.is_empty() || raw.contains('?') || parsed.version != Some(1) {
        return Step::Handler;
    }
    let (mut close, mut deadline_ms) = (false, None);
    for h in parsed.headers.iter() {
        let is = |n: &str| h.name.eq_ignore_ascii_case(n);
        if is("host") || is("user-agent") || is("accept") {
            continue;
        }
        if is("x-deadline-ms") && deadline_ms.is_none() {
            // One that is not a number is the handler's to refuse.
            let Some(ms) = std::str::from_utf8(h.value).ok().and_then(|t| t.trim().parse::<u64>().ok()) else {
                return Step::Handler;
            };
            deadline_ms = Some(ms);
            continue;
        }
        if is("content-length") && h.value == b"0" {
            continue;
        }
        if is("connection") {
            for t in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !t.eq_ignore_ascii_case(b"keep-alive") {
                    return Step::Handler;
                }
            }
            continue;
        }
        return Step::Handler;
    }
    match crate::keys::decode_key(raw) {
        Ok(key) => Step::Fast(Plain { head_len, head_only, close, key, deadline_ms }),
        Err(_) => Step::Handler,
    }
}

/// The head of a shard's answer, as the router's handler and the front
/// write it (`api::shard_answer`, `front::encode_head`), into `out`.
pub(super) fn shard_head(out: &mut Vec<u8>, stat: &ShardStat, close: bool) {
    use std::io::Write;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    let _ = write!(out, "content-length: {}\r\nx-shard-crc32c: {:08x}\r\n", stat.size, stat.crc32c);
    out.extend_from_slice(b"accept-ranges: bytes\r\ndate: ");
    front::date(out);
    out.extend_from_slice(b"\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(wire: &str) -> Step {
        classify(wire.as_bytes(), 8192)
    }

    /// Only plain whole-shard reads are served on the store thread; other
    /// requests without a body go to the handler, bodies and other routes
    /// to the tokio front.
    #[test]
    fn plain_shard_reads_are_served_here_and_the_rest_elsewhere() {
        let plain = |head_only, close, key: &[u8], len| Plain {
            head_len: len,
            head_only,
            close,
            key: key.to_vec(),
            deadline_ms: None,
        };
        let fast = |head_only, close, key: &[u8], len| Step::Fast(plain(head_only, close, key, len));
        let w = "GET /v1/shards/a%2Fb HTTP/1.1\r\nhost: t\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(step(w), fast(false, false, b"a/b", w.len()));
        let w = "HEAD /v1/shards/k HTTP/1.1\r\nHost: t\r\nConnection: Close\r\n\r\n";
        assert_eq!(step(w), fast(true, true, b"k", w.len()));
        let w = "GET /v1/shards/k HTTP/1.1\r\nconnection: keep-alive\r\nuser-agent: x\r\naccept: */*\r\n\r\nGET ";
        assert_eq!(step(w), fast(false, false, b"k", w.len() - 4));
        // A deadline is kept for the admission on the thread.
        let w = "GET /v1/shards/k HTTP/1.1\r\nx-deadline-ms: 50\r\n\r\n";
        assert_eq!(step(w), Step::Fast(Plain { deadline_ms: Some(50), ..plain(false, false, b"k", w.len()) }));
        for (wire, want) in [
            ("GET /v1/shards/k HTTP/1.1\r\nhost: t\r\n", Step::More),
            ("GET /v1/shards/k HTTP/1.1\r\nrange: bytes=0-1\r\n\r\n", Step::Handler),
            ("GET /v1/shards/k HTTP/1.1\r\nx-deadline-ms: soon\r\n\r\n", Step::Handler),
            ("GET /v1/shards/k HTTP/1.1\r\nx-deadline-ms: -5\r\n\r\n", Step::Handler),
            ("GET /v1/shards/k?priority=background HTTP/1.1\r\n\r\n", Step::Handler),
            ("GET /v1/shards/k HTTP/1.1\r\ncontent-length: 1\r\n\r\nx", Step::Handler),
            ("GET /v1/shards/k HTTP/1.1\r\nconnection: upgrade\r\n\r\n", Step::Handler),
            ("GET /v1/shards/k HTTP/1.0\r\n\r\n", Step::Handler),
            ("GET /v1/shards/ HTTP/1.1\r\n\r\n", Step::Handler),
            ("GET /v1/shards/%zz HTTP/1.1\r\n\r\n", Step::Handler),
            ("DELETE /v1/shards/k HTTP/1.1\r\n\r\n", Step::Handler),
            ("GET /healthz HTTP/1.1\r\n\r\n", Step::Handler),
            ("PUT /v1/shards/k HTTP/1.1\r\ncontent-length: 1\r\n\r\nx", Step::Handler),
            ("\x16\x03\x01 not http\r\n\r\n", Step::HandOff),
        ] {
            assert_eq!(step(wire), want, "{wire:?}");
        }
        let many = "x-h: v\r\n".repeat(HEADERS_MAX + 1);
        assert_eq!(step(&format!("GET /v1/shards/k HTTP/1.1\r\n{many}\r\n")), Step::Handler);
        let pad = "p".repeat(9000);
        assert_eq!(step(&format!("GET /v1/shards/k HTTP/1.1\r\nx-pad: {pad}")), Step::HandOff);
    }
}
