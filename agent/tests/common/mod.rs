//! The agent as a real process, for the integration tests: started with
//! an ephemeral port, its log followed, signalled like systemd does.
#![allow(dead_code)]

pub mod cluster;
pub mod testnet;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub struct Agent {
    child: Child,
    lines: mpsc::Receiver<String>,
    pub log: Vec<String>,
}

impl Agent {
    pub fn start(args: &[&str]) -> Agent {
        Agent::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Agent {
        // An ephemeral port: tests run in parallel.
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Agent::start_exactly(&all, env)
    }

    /// Starts an agent with exactly these arguments (its config file says
    /// where it listens).
    pub fn start_exactly(args: &[&str], env: &[(&str, &str)]) -> Agent {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shard-agent"))
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start shard-agent");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Agent { child, lines, log: Vec::new() }
    }

    /// Waits (bounded) for a log line containing `text`.
    pub fn wait_for(&mut self, text: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                let hit = line.contains(text);
                self.log.push(line);
                if hit {
                    return;
                }
            } else if let Ok(Some(status)) = self.child.try_wait() {
                panic!("agent exited ({status}) before logging {text:?}; log:\n{}", self.log.join("\n"));
            }
        }
        panic!("agent did not log {text:?} in time; log:\n{}", self.log.join("\n"));
    }

    /// Sends a signal without waiting for the agent to exit (SIGSTOP,
    /// SIGCONT).
    pub fn send(&self, signal: Signal) {
        kill(Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits in pid_t")), signal).unwrap();
    }

    /// The log lines so far (those not yet read are collected now).
    pub fn drain_log(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.log.push(line);
        }
        &self.log
    }

    pub fn signal(&mut self, signal: Signal) -> std::process::ExitStatus {
        kill(Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits in pid_t")), signal).unwrap();
        let status = self.child.wait().unwrap();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.log.push(line);
        }
        status
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    /// Starts an agent and waits until it serves; returns it and its address.
    pub fn serving(args: &[&str]) -> (Agent, SocketAddr) {
        Agent::serving_with_env(args, &[])
    }

    /// As [`Agent::serving`], with extra environment (`RUST_LOG`, say).
    pub fn serving_with_env(args: &[&str], env: &[(&str, &str)]) -> (Agent, SocketAddr) {
        let mut agent = Agent::start_with_env(args, env);
        agent.wait_for("shard-agent ready");
        let line = agent.log.last().expect("the ready line").clone();
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("listen="))
            .unwrap_or_else(|| panic!("no listen= in {line:?}"))
            .parse()
            .unwrap();
        (agent, addr)
    }
}

/// A response as the tests see it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The `code` of a JSON error body.
    pub fn code(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)));
        v["code"].as_str().unwrap_or_else(|| panic!("no code in {v}")).to_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// The body as text, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends raw bytes as one request on a fresh connection and reads the
/// response (HTTP/1.1, `connection: close`).
pub fn raw(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request).unwrap();
    read_reply(&mut s, request.starts_with(b"HEAD "))
}

/// A read that retries when a signal interrupts it (a socket read with a
/// timeout is not restarted by the kernel; io_uring task work in this
/// process can interrupt it).
fn read_some(s: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match s.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Reads one response; `head` responses have no body whatever they say.
pub fn read_reply(s: &mut impl Read, head: bool) -> Reply {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 65536];
    let header_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = read_some(s, &mut chunk).expect("read response");
        assert!(n > 0, "connection closed before a response: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    };
    let text = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut lines = text.split("\r\n");
    let status: u16 = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let len = if head {
        0
    } else {
        headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("content-length")).map_or(0, |(_, v)| v.parse().unwrap())
    };
    let mut body = buf[header_end..].to_vec();
    while body.len() < len {
        let n = read_some(s, &mut chunk).expect("read body");
        assert!(n > 0, "connection closed in the body");
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Reply { status, headers, body }
}

/// A reader that returns at most one byte a read, so that `read_reply`
/// never reads past the response it parses (the next one on the
/// connection stays in the buffered reader).
struct OneByte<'a>(&'a mut std::io::BufReader<TcpStream>);

impl Read for OneByte<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(1);
        self.0.read(&mut buf[..n])
    }
}

/// Reads one reply from a keep-alive connection, leaving what follows it
/// on the connection.
pub fn next_reply(r: &mut std::io::BufReader<TcpStream>, head: bool) -> Reply {
    read_reply(&mut OneByte(r), head)
}

/// A reply's headers without `date`, names lowercased, sorted.
pub fn headers_but_date(r: &Reply) -> Vec<(String, String)> {
    let mut h: Vec<_> = r
        .headers
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("date"))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .collect();
    h.sort();
    h
}

/// A connection that notes when the kernel received the bytes each read
/// returns (`SO_TIMESTAMPNS`): when a response reached this host, apart
/// from when this process got around to reading it. Hold a
/// [`KernelTimestamps`] while using it: the kernel stamps packets only
/// while some socket asks for it, and switches that on and off later, from
/// a work queue.
pub struct Stamped {
    pub conn: TcpStream,
    /// Kernel receive time of the last bytes read that carried one.
    pub last_arrival: Option<std::time::SystemTime>,
}

impl Stamped {
    pub fn new(conn: TcpStream) -> Stamped {
        nix::sys::socket::setsockopt(&conn, nix::sys::socket::sockopt::ReceiveTimestampns, &true)
            .expect("SO_TIMESTAMPNS");
        Stamped { conn, last_arrival: None }
    }
}

/// Keeps the kernel stamping received packets for as long as it lives.
///
/// Linux stamps a packet on receipt only while at least one socket has
/// asked for timestamps, and it turns the stamping on (for the first such
/// socket) and off (after the last one closes) from a work queue, not at
/// once: on a busy machine the packets of sockets opened just after all
/// others closed arrive unstamped for a while. This holds one stamped
/// connection open and returns only once a byte sent over it arrived
/// stamped, so sockets opened meanwhile are stamped from their first byte.
pub struct KernelTimestamps {
    _pair: (TcpStream, Stamped),
}

impl KernelTimestamps {
    pub fn on() -> KernelTimestamps {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let sender = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut receiver = Stamped::new(listener.accept().unwrap().0);
        receiver.conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            (&sender).write_all(b"x").unwrap();
            let mut byte = [0u8; 1];
            assert_eq!(read_some(&mut receiver, &mut byte).expect("read the probe byte"), 1);
            if receiver.last_arrival.is_some() {
                return KernelTimestamps { _pair: (sender, receiver) };
            }
            assert!(std::time::Instant::now() < deadline, "the kernel did not start stamping received packets in 60 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Read for Stamped {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        use std::os::fd::AsRawFd;
        let mut space = nix::cmsg_space!(nix::sys::time::TimeSpec);
        let mut iov = [std::io::IoSliceMut::new(buf)];
        let msg = recvmsg::<()>(self.conn.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty())
            .map_err(std::io::Error::from)?;
        for c in msg.cmsgs().map_err(std::io::Error::from)? {
            if let ControlMessageOwned::ScmTimestampns(t) = c {
                let at = Duration::new(u64::try_from(t.tv_sec()).expect("after 1970"), t.tv_nsec() as u32);
                self.last_arrival = Some(std::time::UNIX_EPOCH + at);
            }
        }
        Ok(msg.bytes)
    }
}

/// One request with a body and extra headers.
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
    for (n, v) in headers {
        let _ = write!(req, "{n}: {v}\r\n");
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    raw(addr, &bytes)
}

/// The value of the sample `series` (name and labels, exactly as
/// rendered) in the agent's /metrics, 0 while it is absent.
pub fn sample(addr: SocketAddr, series: &str) -> f64 {
    sample_of(&scrape(addr), series)
}

/// The agent's /metrics text.
pub fn scrape(addr: SocketAddr) -> String {
    String::from_utf8(request(addr, "GET", "/metrics", &[], b"").body).unwrap()
}

/// The value of `series` in a scrape's `text`, 0 while it is absent.
pub fn sample_of(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
}

pub fn put(addr: SocketAddr, key: &str, body: &[u8]) -> Reply {
    request(addr, "PUT", &format!("/v1/shards/{key}"), &[], body)
}

pub fn get(addr: SocketAddr, key: &str) -> Reply {
    request(addr, "GET", &format!("/v1/shards/{key}"), &[], b"")
}

/// As `request`, but a connection that fails or closes early is an error,
/// not a panic (the agent may be killed mid-request).
pub fn try_put(addr: SocketAddr, key: &str, body: &[u8]) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = format!(
        "PUT /v1/shards/{key} HTTP/1.1\r\nhost: t\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut response = Vec::new();
    s.read_to_end(&mut response)?;
    let line = response.split(|&b| b == b'\n').next().unwrap_or_default();
    let status = std::str::from_utf8(line)
        .ok()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no status line"))?;
    Ok(status)
}

/// An agent on three default file-backed devices of `device_bytes` in
/// `dir/data`, with `token` as its admin token and `extra` appended to its
/// config file (TOML).
pub fn start_configured(dir: &std::path::Path, device_bytes: u64, token: &str, extra: &str) -> (Agent, SocketAddr) {
    let token_file = dir.join("admin.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\ndefault_device_size_bytes = {device_bytes}\nadmin_token_file = \"{}\"\n{extra}",
            dir.join("data").display(),
            token_file.display()
        ),
    )
    .unwrap();
    Agent::serving(&["--config", config.to_str().unwrap()])
}

/// The device file holding `key` (of an agent on the three default devices
/// in `dir/data`) and the device offset of its payload, found by opening
/// each device read-only beside the agent.
pub fn locate(dir: &std::path::Path, key: &[u8]) -> (usize, std::path::PathBuf, u64) {
    use shardstore::device::{self, OpenOptions};
    for i in 0..3 {
        let path = dir.join("data").join(format!("dev{i}.img"));
        let options = OpenOptions { read_only: true, exclusive: false, queue_depth: 4, ..OpenOptions::default() };
        let store = shardstore::store::Store::open_read_only(Box::new(device::open(&path, &options).unwrap())).unwrap();
        if let Some(locs) = store.chunk_locations(key) {
            return (i, path, locs[0].0);
        }
    }
    panic!("no device holds {key:?}");
}

/// Flips the bits of `mask` in the byte at `offset` of the file at `path`
/// (rot on a device file the agent serves), durably.
pub fn flip_bit(path: &std::path::Path, offset: u64, mask: u8) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, offset).unwrap();
    file.write_all_at(&[byte[0] ^ mask], offset).unwrap();
    file.sync_all().unwrap();
}
