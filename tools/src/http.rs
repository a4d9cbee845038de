//! A minimal blocking HTTP/1.1 client for `shardctl`'s conversations with
//! a running agent (`--agent http://HOST:PORT`): one request per
//! connection, JSON answers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context};

/// How long a conversation with the agent may take.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(30);

/// `http://HOST:PORT` (a trailing `/` allowed) to `HOST:PORT`.
pub fn host_of(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url:?} is not an http:// URL (the agent speaks plain HTTP)"))?;
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') {
        bail!("expected http://HOST:PORT, got {url:?}");
    }
    Ok(host.to_owned())
}

/// Sends one request and returns the status and the body parsed as JSON.
pub fn call(url: &str, method: &str, path: &str, token: Option<&str>) -> anyhow::Result<(u16, serde_json::Value)> {
    call_with(url, method, path, token, b"")
}

/// As `call`, with a request body.
pub fn call_with(
    url: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> anyhow::Result<(u16, serde_json::Value)> {
    let host = host_of(url)?;
    let mut stream = TcpStream::connect(&host).with_context(|| format!("cannot connect to the agent at {host}"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\n{auth}content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).with_context(|| format!("reading the agent's answer to {method} {path}"))?;
    let end = reply.windows(4).position(|w| w == b"\r\n\r\n").context("the agent's answer has no header end")?;
    let head = String::from_utf8_lossy(&reply[..end]);
    let status: u16 = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no status line")?;
    let body = &reply[end + 4..];
    let json = if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(body).with_context(|| format!("the agent's answer to {method} {path} is not JSON"))?
    };
    Ok((status, json))
}

/// As `call`, but a status other than 200 is an error carrying the
/// agent's error code and message.
pub fn call_ok(url: &str, method: &str, path: &str, token: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let (status, json) = call(url, method, path, token)?;
    if status != 200 {
        let code = json["code"].as_str().unwrap_or("?");
        let message = json["message"].as_str().unwrap_or("");
        bail!("{method} {path}: {status} {code}: {message}");
    }
    Ok(json)
}
