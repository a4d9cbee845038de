//! Requests to other agents over HTTP, each carrying this host's MAC
//! under the gossip key (`shardnode_cluster::auth`): a late joiner's
//! catch-up on every host's records, and the fetch of a newer roster.
//! Both answers are checked by what they are, not by who sent them:
//! every record by its origin's seal and meaning, the roster by the
//! operator's signature.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;
use shardnode_cluster::auth;
use shardnode_cluster::records;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{unix_ms, Cluster};

/// Answers larger than this are refused: a whole shard (64 MiB) and its
/// framing; a roster or the records of a few hundred hosts fit easily.
const ANSWER_BYTES_MAX: usize = (64 << 20) + (1 << 20);
/// One request, connection to last byte.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Fetches every record a live peer holds and takes those that pass the
/// checks: a late joiner's catch-up, and the periodic pull that repairs
/// what epidemic dissemination missed (foca has no push-pull). Peers are
/// tried from the `turn`-th on. True once one peer answered.
pub async fn catch_up(cluster: &Cluster, turn: usize, first: bool) -> bool {
    let mut peers: Vec<(u32, std::net::SocketAddr)> = {
        let g = cluster.gossip();
        g.view().into_iter().filter(|m| m.host != g.me().host && m.state == "alive").map(|m| (m.host, m.http)).collect()
    };
    if !peers.is_empty() {
        let n = peers.len();
        peers.rotate_left(turn % n);
    }
    for (host, addr) in peers {
        match get(cluster, addr, "/v1/cluster/records").await {
            Ok(bytes) => {
                let Some(pieces) = records::split(&bytes) else {
                    tracing::warn!(host, "catch-up answer is not whole records; ignored");
                    continue;
                };
                let n = pieces.len();
                let taken = cluster.gossip().ingest_records(pieces, unix_ms());
                if first {
                    tracing::info!(host, offered = n, taken, "caught up on health records");
                } else {
                    tracing::debug!(host, offered = n, taken, "pulled health records");
                }
                return true;
            }
            Err(e) => tracing::debug!(host, error = %format!("{e:#}"), "catch-up request failed"),
        }
    }
    false
}

/// Fetches the signed roster a host runs with (verified by the caller).
pub async fn fetch_roster(cluster: &Cluster, host: u32) -> anyhow::Result<Vec<u8>> {
    let addr = cluster.gossip().roster().host(host).map(|h| h.http).context("host not on the roster")?;
    get(cluster, addr, "/v1/cluster/roster").await
}

/// `GET path` from `addr`, signed; the body of a 200 answer.
async fn get(cluster: &Cluster, addr: std::net::SocketAddr, path: &str) -> anyhow::Result<Vec<u8>> {
    let answer = call(cluster, addr, "GET", path, None, REQUEST_TIMEOUT).await?;
    anyhow::ensure!(
        answer.status == 200,
        "{addr}{path} answered {}: {}",
        answer.status,
        String::from_utf8_lossy(&answer.body[..answer.body.len().min(300)])
    );
    Ok(answer.body)
}

/// An answer from another agent.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The error code of a JSON error answer.
    pub fn code(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("HTTP {}", self.status))
    }
}

/// One signed request to another agent (`target`: path and query). A
/// body goes with its CRC32C in `x-shard-crc32c`, which the MAC covers.
/// One connection per request, closed after the answer.
pub async fn call(
    cluster: &Cluster,
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> anyhow::Result<Answer> {
    call_with(cluster, addr, method, target, body, &[], timeout).await
}

/// As `call`, with more headers (not covered by the MAC: only ones whose
/// effect the caller checks, such as `range`).
pub async fn call_with(
    cluster: &Cluster,
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> anyhow::Result<Answer> {
    let crc = body.map(|b| format!("{:08x}", crc32c::crc32c(b)));
    let request = auth::Request { method, target, content: crc.as_deref() };
    let header = auth::sign(&cluster.keyring(), cluster.settings.host_id, &request, unix_ms());
    tokio::time::timeout(timeout, async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        let mut head = format!("{method} {target} HTTP/1.1\r\nhost: {addr}\r\n{}: {header}\r\n", auth::HEADER);
        if let (Some(b), Some(crc)) = (body, &crc) {
            let _ = write!(head, "x-shard-crc32c: {crc}\r\ncontent-length: {}\r\n", b.len());
        }
        for (name, value) in headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        head.push_str("connection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await?;
        if let Some(b) = body {
            stream.write_all(b).await?;
        }
        let mut answer = Vec::new();
        (&mut stream).take(ANSWER_BYTES_MAX as u64 + 64 * 1024).read_to_end(&mut answer).await?;
        parse_answer(&answer, method == "HEAD")
    })
    .await
    .with_context(|| format!("{method} {addr}{target}: no answer within {timeout:?}"))?
    .with_context(|| format!("{method} {addr}{target}"))
}

/// A whole HTTP/1.1 answer (the connection closed after it): its status,
/// headers and body, which must be as long as its `content-length` says
/// (a HEAD answer has none).
fn parse_answer(answer: &[u8], head_only: bool) -> anyhow::Result<Answer> {
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n").context("no end of headers")?;
    let head = std::str::from_utf8(&answer[..end]).context("headers are not text")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_ascii_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect();
    let body = &answer[end + 4..];
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok());
    if head_only {
        return Ok(Answer { status, headers, body: Vec::new() });
    }
    if let Some(length) = length {
        anyhow::ensure!(length <= ANSWER_BYTES_MAX, "answer of {length} bytes is over {ANSWER_BYTES_MAX}");
        anyhow::ensure!(body.len() == length, "answer cut short: {} of {length} bytes", body.len());
    } else {
        anyhow::ensure!(
            status == 204 || status == 304 || body.is_empty(),
            "an answer with a body but no content-length"
        );
    }
    Ok(Answer { status, headers, body: body.to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_taken_only_whole() {
        let a = parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx-a: b\r\n\r\nabc", false).unwrap();
        assert_eq!((a.status, a.body.as_slice(), a.header("X-A")), (200, &b"abc"[..], Some("b")));
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nabc", false).is_err(), "short");
        let no = parse_answer(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\n\r\nno", false).unwrap();
        assert_eq!(no.status, 401);
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\n\r\nabc", false).is_err(), "a body without a length");
        assert_eq!(parse_answer(b"HTTP/1.1 204 No Content\r\n\r\n", false).unwrap().status, 204);
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n", false).is_err(), "no end of headers");
        assert_eq!(parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 30\r\n\r\n", true).unwrap().status, 200);
    }
}
