//! `shardctl object put|get|stat|rm --agent URL KEY`: objects of a
//! cluster through any agent (docs/api.md, "Objects"). `put` sends the
//! file with its CRC32C (the agent refuses it if the bytes arrive
//! different) and `get` checks the object's CRC before writing the file;
//! both show progress on a terminal for large objects.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

use super::exit;
use crate::units::human_bytes;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: ObjectCommand,
    /// File holding a client token of the cluster (`client_token_file` in
    /// the agents' `[cluster]`), sent as `Authorization: Bearer`.
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub enum ObjectCommand {
    /// Store FILE (or standard input) as object KEY.
    Put {
        /// Any agent of the cluster, `http://HOST:PORT`.
        #[arg(long, value_name = "URL")]
        agent: String,
        /// The object's key (bytes; sent percent-encoded).
        key: String,
        /// The file to store; `-` or nothing: standard input.
        file: Option<PathBuf>,
        /// Machine-readable output: the agent's answer, with the size and CRC sent.
        #[arg(long)]
        json: bool,
    },
    /// Write object KEY to FILE (or standard output).
    Get {
        #[arg(long, value_name = "URL")]
        agent: String,
        key: String,
        /// Where to write it; nothing: standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Print an object's size, CRC32C and version.
    Stat {
        #[arg(long, value_name = "URL")]
        agent: String,
        key: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Delete an object.
    Rm {
        #[arg(long, value_name = "URL")]
        agent: String,
        key: String,
    },
}

/// Progress is shown for objects at least this large.
const PROGRESS_FROM_BYTES: usize = 8 << 20;
const TIMEOUT: Duration = Duration::from_secs(300);

/// A key as one percent-encoded path segment.
fn encode(key: &str) -> String {
    key.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn error(&self, what: &str) -> anyhow::Error {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
        anyhow::anyhow!(
            "{what}: {} {}: {}",
            self.status,
            v["code"].as_str().unwrap_or("?"),
            v["message"].as_str().unwrap_or("")
        )
    }
}

fn progress(done: usize, total: usize, verb: &str) {
    if total >= PROGRESS_FROM_BYTES && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let pct = done as f64 * 100.0 / total.max(1) as f64;
        eprint!("\r{verb} {} of {} ({pct:.0}%)   ", human_bytes(done as u64), human_bytes(total as u64));
        if done == total {
            eprintln!();
        }
    }
}

/// One request; the body sent in pieces with progress.
fn call(url: &str, method: &str, key: &str, headers: &[(&str, String)], body: &[u8]) -> anyhow::Result<Answer> {
    let host = crate::http::host_of(url)?;
    let mut s = TcpStream::connect(&host).with_context(|| format!("cannot connect to the agent at {host}"))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    let mut head = format!("{method} /v1/objects/{} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n", encode(key));
    for (k, v) in headers {
        let _ = write!(head, "{k}: {v}\r\n");
    }
    let _ = write!(head, "content-length: {}\r\n\r\n", body.len());
    // The agent may answer before it has read the body (a refusal: a bad
    // token, a body too large) and close: the answer, not the broken pipe,
    // is what the user needs to see.
    let sent = (|| -> std::io::Result<()> {
        s.write_all(head.as_bytes())?;
        for (i, piece) in body.chunks(1 << 20).enumerate() {
            s.write_all(piece)?;
            progress((i << 20) + piece.len(), body.len(), "sent");
        }
        Ok(())
    })();
    let mut reply = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut expected = None;
    loop {
        let n = match s.read(&mut buf) {
            Ok(n) => n,
            // Reset after an early answer: what arrived is the answer.
            Err(_) if sent.is_err() && !reply.is_empty() => 0,
            Err(e) => {
                sent.context("sending the request")?;
                return Err(e).context("reading the agent's answer");
            }
        };
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        if expected.is_none() {
            if let Some(end) = reply.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&reply[..end]).to_ascii_lowercase();
                expected = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .map(|len| (end + 4, len));
            }
        }
        if let Some((start, len)) = expected.filter(|_| method == "GET") {
            progress((reply.len() - start).min(len), len, "received");
        }
    }
    let Some(end) = reply.windows(4).position(|w| w == b"\r\n\r\n") else {
        sent.context("sending the request")?;
        anyhow::bail!("the agent's answer has no header end");
    };
    let head = String::from_utf8_lossy(&reply[..end]).into_owned();
    let mut lines = head.lines();
    let status =
        lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).context("no status")?;
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect();
    let body = if method == "HEAD" { Vec::new() } else { reply[end + 4..].to_vec() };
    Ok(Answer { status, headers, body })
}

pub fn run(args: &Args) -> anyhow::Result<u8> {
    let token = match &args.token_file {
        Some(f) => {
            let t =
                std::fs::read_to_string(f).with_context(|| format!("{}: cannot read the token file", f.display()))?;
            let t = t.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned);
            Some(t.with_context(|| format!("{}: holds no token", f.display()))?)
        }
        None => None,
    };
    let auth: Vec<(&str, String)> = token.iter().map(|t| ("authorization", format!("Bearer {t}"))).collect();
    let call = |url: &str, method: &str, key: &str, extra: &[(&str, String)], body: &[u8]| {
        let headers: Vec<(&str, String)> = auth.iter().chain(extra).cloned().collect();
        call(url, method, key, &headers, body)
    };
    match &args.command {
        ObjectCommand::Put { agent, key, file, json } => {
            let body = if let Some(f) = file.as_ref().filter(|f| f.as_os_str() != "-") {
                std::fs::read(f).with_context(|| format!("reading {}", f.display()))?
            } else {
                let mut b = Vec::new();
                std::io::stdin().read_to_end(&mut b)?;
                b
            };
            let crc = format!("{:08x}", crc32c::crc32c(&body));
            let a = call(agent, "PUT", key, &[("x-object-crc32c", crc.clone())], &body)?;
            if a.status != 201 {
                return Err(a.error(&format!("put {key}")));
            }
            let mut v: serde_json::Value = serde_json::from_slice(&a.body).unwrap_or_default();
            if *json {
                v["key"] = key.clone().into();
                v["size"] = body.len().into();
                v["crc32c"] = crc.into();
                println!("{v}");
                return Ok(exit::OK);
            }
            println!(
                "stored {key}: {} bytes, crc32c {crc}, version {}, {} in group {}{}",
                body.len(),
                v["version"].as_str().unwrap_or("?"),
                v["layout"].as_str().unwrap_or("?"),
                v["group"],
                match v["missing_holders"].as_array() {
                    Some(m) if !m.is_empty() => format!(" (holders {m:?} missed their shard)"),
                    _ => String::new(),
                }
            );
            Ok(exit::OK)
        }
        ObjectCommand::Get { agent, key, output } => {
            let a = call(agent, "GET", key, &[], b"")?;
            if a.status != 200 {
                return Err(a.error(&format!("get {key}")));
            }
            let want = a.header("x-object-crc32c").context("no x-object-crc32c in the answer")?;
            let got = format!("{:08x}", crc32c::crc32c(&a.body));
            if got != want {
                bail!("get {key}: the bytes received have CRC32C {got}, the object's is {want}; nothing written");
            }
            match output {
                Some(path) => std::fs::write(path, &a.body).with_context(|| format!("writing {}", path.display()))?,
                None => std::io::stdout().write_all(&a.body)?,
            }
            Ok(exit::OK)
        }
        ObjectCommand::Stat { agent, key, json } => {
            let a = call(agent, "HEAD", key, &[], b"")?;
            if a.status != 200 {
                bail!(
                    "stat {key}: {}",
                    if a.status == 404 { "no such object".to_owned() } else { format!("status {}", a.status) }
                );
            }
            let (size, crc, version) = (
                a.header("content-length").unwrap_or("?").to_owned(),
                a.header("x-object-crc32c").unwrap_or("?").to_owned(),
                a.header("x-object-version").unwrap_or("?").to_owned(),
            );
            if *json {
                println!(
                    "{}",
                    serde_json::json!({ "key": key, "size": size.parse::<u64>().ok(), "crc32c": crc, "version": version })
                );
            } else {
                println!("{key}: {size} bytes, crc32c {crc}, version {version}");
            }
            Ok(exit::OK)
        }
        ObjectCommand::Rm { agent, key } => {
            let a = call(agent, "DELETE", key, &[], b"")?;
            if a.status != 204 {
                return Err(a.error(&format!("rm {key}")));
            }
            println!("deleted {key}");
            Ok(exit::OK)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_one_percent_encoded_segment() {
        assert_eq!(super::encode("photos/cat 1.jpg"), "photos%2Fcat%201.jpg");
        assert_eq!(super::encode("a-b_c.d~e"), "a-b_c.d~e");
    }
}
