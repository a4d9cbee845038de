//! Requests to other agents over HTTP, each carrying this host's MAC
//! under the gossip key (`shardnode_cluster::auth`): a late joiner's
//! catch-up on every host's records, and the fetch of a newer roster.
//! Both answers are checked by what they are, not by who sent them:
//! every record by its origin's seal and meaning, the roster by the
//! operator's signature.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

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
/// Connections are kept alive and reused (`Connections`).
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
    let mut head = format!("{method} {target} HTTP/1.1\r\nhost: {addr}\r\n{}: {header}\r\n", auth::HEADER);
    if let (Some(b), Some(crc)) = (body, &crc) {
        let _ = write!(head, "x-shard-crc32c: {crc}\r\ncontent-length: {}\r\n", b.len());
    }
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");
    let head_only = method == "HEAD";
    tokio::time::timeout(timeout, async {
        // A kept-alive connection first; if the peer closed it meanwhile
        // (nothing came back), once more on a new one. Every peer request
        // is idempotent (a keyed shard put, a delete, a read).
        if let Some(stream) = cluster.connections.take(addr) {
            match exchange(stream, head.as_bytes(), body, head_only).await {
                Ok((answer, stream)) => {
                    cluster.connections.give_back(addr, stream);
                    return Ok(answer);
                }
                Err(Exchange::NothingBack(_)) => {}
                Err(Exchange::Failed(e)) => return Err(e),
            }
        }
        let stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        match exchange(stream, head.as_bytes(), body, head_only).await {
            Ok((answer, stream)) => {
                cluster.connections.give_back(addr, stream);
                Ok(answer)
            }
            Err(Exchange::NothingBack(e) | Exchange::Failed(e)) => Err(e),
        }
    })
    .await
    .with_context(|| format!("{method} {addr}{target}: no answer within {timeout:?}"))?
    .with_context(|| format!("{method} {addr}{target}"))
}

/// Why an exchange failed: before any byte of an answer (a kept-alive
/// connection the peer had closed), or after.
enum Exchange {
    NothingBack(anyhow::Error),
    Failed(anyhow::Error),
}

/// One request and its whole answer on `stream`; the stream is handed
/// back for reuse unless the answer closes it.
async fn exchange(
    mut stream: tokio::net::TcpStream,
    head: &[u8],
    body: Option<&[u8]>,
    head_only: bool,
) -> Result<(Answer, Option<tokio::net::TcpStream>), Exchange> {
    let sent = async {
        stream.write_all(head).await?;
        if let Some(b) = body {
            stream.write_all(b).await?;
        }
        Ok::<_, std::io::Error>(())
    }
    .await;
    sent.map_err(|e| Exchange::NothingBack(e.into()))?;
    let mut buf: Vec<u8> = Vec::with_capacity(16 << 10);
    let header_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() >= 64 << 10 {
            return Err(Exchange::Failed(anyhow::anyhow!("headers over 64 KiB")));
        }
        let n = match stream.read_buf(&mut buf).await {
            Ok(n) => n,
            Err(e) if buf.is_empty() => return Err(Exchange::NothingBack(e.into())),
            Err(e) => return Err(Exchange::Failed(e.into())),
        };
        if n == 0 {
            let e = anyhow::anyhow!("the connection closed before an answer");
            return Err(if buf.is_empty() { Exchange::NothingBack(e) } else { Exchange::Failed(e) });
        }
    };
    let (status, headers) = parse_head(&buf[..header_end - 4]).map_err(Exchange::Failed)?;
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let closes = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close"));
    let want = if head_only || status == 204 || status == 304 {
        0
    } else {
        let length =
            length.ok_or_else(|| Exchange::Failed(anyhow::anyhow!("an answer with a body but no content-length")))?;
        if length > ANSWER_BYTES_MAX {
            return Err(Exchange::Failed(anyhow::anyhow!("answer of {length} bytes is over {ANSWER_BYTES_MAX}")));
        }
        length
    };
    buf.reserve((header_end + want).saturating_sub(buf.len()));
    while buf.len() < header_end + want {
        let n = stream.read_buf(&mut buf).await.map_err(|e| Exchange::Failed(e.into()))?;
        if n == 0 {
            return Err(Exchange::Failed(anyhow::anyhow!(
                "answer cut short: {} of {want} bytes",
                buf.len() - header_end
            )));
        }
    }
    // Bytes past the answer would be a peer speaking out of turn: the
    // connection is not reused.
    let clean = buf.len() == header_end + want && !closes;
    let body = buf.split_off(header_end);
    Ok((Answer { status, headers, body }, clean.then_some(stream)))
}

/// The status and headers of an answer's head (without the blank line).
fn parse_head(head: &[u8]) -> anyhow::Result<(u16, Vec<(String, String)>)> {
    let head = std::str::from_utf8(head).context("headers are not text")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_ascii_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect();
    Ok((status, headers))
}

/// Idle kept-alive connections to peers, a few per peer, each reused for
/// at most `IDLE_MAX` of idleness (well under the peers' header timeout,
/// after which they close it).
#[derive(Debug, Default)]
pub struct Connections {
    idle: std::sync::Mutex<std::collections::HashMap<std::net::SocketAddr, Vec<(tokio::net::TcpStream, Instant)>>>,
}

const IDLE_PER_PEER: usize = 16;
const IDLE_MAX: Duration = Duration::from_secs(4);

impl Connections {
    fn take(&self, addr: std::net::SocketAddr) -> Option<tokio::net::TcpStream> {
        let mut idle = self.idle.lock().expect("never poisoned");
        let list = idle.get_mut(&addr)?;
        while let Some((stream, since)) = list.pop() {
            if since.elapsed() < IDLE_MAX {
                return Some(stream);
            }
        }
        None
    }

    fn give_back(&self, addr: std::net::SocketAddr, stream: Option<tokio::net::TcpStream>) {
        let Some(stream) = stream else { return };
        let mut idle = self.idle.lock().expect("never poisoned");
        let list = idle.entry(addr).or_default();
        list.retain(|(_, since)| since.elapsed() < IDLE_MAX);
        if list.len() < IDLE_PER_PEER {
            list.push((stream, Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer_of(bytes: &'static [u8], head_only: bool) -> Result<(Answer, bool), String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = [0u8; 64];
            let _ = s.read(&mut req).await;
            s.write_all(bytes).await.unwrap();
            // Held open a moment: a reader that waits for the close would
            // hang; one that reads the answer's length does not.
            tokio::time::sleep(Duration::from_millis(200)).await;
        });
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let r = exchange(stream, b"GET / HTTP/1.1\r\n\r\n", None, head_only).await;
        server.abort();
        match r {
            Ok((a, kept)) => Ok((a, kept.is_some())),
            Err(Exchange::NothingBack(e) | Exchange::Failed(e)) => Err(e.to_string()),
        }
    }

    #[tokio::test]
    async fn answers_are_taken_only_whole_and_connections_kept_only_when_clean() {
        let (a, kept) = answer_of(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx-a: b\r\n\r\nabc", false).await.unwrap();
        assert_eq!((a.status, a.body.as_slice(), a.header("X-A"), kept), (200, &b"abc"[..], Some("b"), true));
        let e = answer_of(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nabc", false).await.unwrap_err();
        assert!(e.contains("cut short"), "{e}");
        let (no, _) = answer_of(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\n\r\nno", false).await.unwrap();
        assert_eq!(no.status, 401);
        let e = answer_of(b"HTTP/1.1 200 OK\r\n\r\nabc", false).await.unwrap_err();
        assert!(e.contains("no content-length"), "{e}");
        assert_eq!(answer_of(b"HTTP/1.1 204 No Content\r\n\r\n", false).await.unwrap().0.status, 204);
        let e = answer_of(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n", false).await.unwrap_err();
        assert!(e.contains("closed before an answer"), "no end of headers: {e}");
        let (h, kept) = answer_of(b"HTTP/1.1 200 OK\r\ncontent-length: 30\r\n\r\n", true).await.unwrap();
        assert_eq!((h.status, kept), (200, true), "a HEAD answer has no body");
        let (_, kept) =
            answer_of(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\nconnection: close\r\n\r\nx", false).await.unwrap();
        assert!(!kept, "the peer said it closes");
        let (_, kept) = answer_of(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nxHTTP", false).await.unwrap();
        assert!(!kept, "bytes past the answer");
    }
}
