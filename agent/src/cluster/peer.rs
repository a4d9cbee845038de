//! Requests to other agents over HTTP, each carrying this host's MAC
//! under the gossip key (`shardnode_cluster::auth`): a late joiner's
//! catch-up on every host's records, and the fetch of a newer roster.
//! Both answers are checked by what they are, not by who sent them:
//! every record by its origin's seal and meaning, the roster by the
//! operator's signature.

use std::time::Duration;

use anyhow::Context;
use shardnode_cluster::auth;
use shardnode_cluster::records;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{unix_ms, Cluster};

/// Answers larger than this are refused (a roster of 4096 hosts, or the
/// records of a few hundred hosts, fit easily).
const ANSWER_BYTES_MAX: usize = 8 << 20;
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
    let header = auth::sign(&cluster.keyring(), cluster.settings.host_id, &auth::Request::get(path), unix_ms());
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connect {addr}"))?;
        let request =
            format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n{}: {header}\r\nconnection: close\r\n\r\n", auth::HEADER);
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        (&mut stream).take(ANSWER_BYTES_MAX as u64 + 64 * 1024).read_to_end(&mut answer).await?;
        parse_answer(&answer)
    })
    .await
    .with_context(|| format!("{addr}{path}: no answer within {REQUEST_TIMEOUT:?}"))?
    .with_context(|| format!("{addr}{path}"))
}

/// The body of a whole HTTP/1.1 `200` answer with a `content-length`.
fn parse_answer(answer: &[u8]) -> anyhow::Result<Vec<u8>> {
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n").context("no end of headers")?;
    let head = std::str::from_utf8(&answer[..end]).context("headers are not text")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let body = &answer[end + 4..];
    anyhow::ensure!(
        status.split_ascii_whitespace().nth(1) == Some("200"),
        "answered {status:?}: {}",
        String::from_utf8_lossy(&body[..body.len().min(300)])
    );
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .context("no content-length")?;
    anyhow::ensure!(length <= ANSWER_BYTES_MAX, "answer of {length} bytes is over {ANSWER_BYTES_MAX}");
    anyhow::ensure!(body.len() == length, "answer cut short: {} of {length} bytes", body.len());
    Ok(body.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_taken_only_whole_and_successful() {
        assert_eq!(parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc").unwrap(), b"abc");
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nabc").is_err(), "short");
        assert!(parse_answer(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\n\r\nno").is_err());
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\n\r\nabc").is_err(), "no length");
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n").is_err(), "no end of headers");
    }
}
