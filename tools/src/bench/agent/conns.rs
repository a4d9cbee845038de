//! One client thread's `iodepth` keep-alive connections to the agent,
//! driven by epoll: the thread sends a request on each, and whenever an
//! answer is whole, records it and sends the connection's next request.
//! As the store target's client issues its next request from each
//! completion, and fio a job's next I/O from its reap loop, one thread
//! keeps a job's requests in flight: the client spends its CPU on
//! requests, not on waking a thread per connection.

use std::io::{ErrorKind, IoSlice, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

/// A request to send: its method and path, and whether its body is the
/// job's payload.
pub(super) struct Request {
    pub method: &'static str,
    pub path: String,
    pub put: bool,
}

/// An answer that is whole.
pub(super) struct Answer {
    pub status: u16,
    /// The body's length (a `HEAD` answer has none).
    pub len: usize,
    /// From the first byte sent to the last byte of the answer read.
    pub elapsed: Duration,
}

/// What a connection is doing.
enum State {
    Idle,
    /// Sending: `written` bytes of the head and body so far.
    Sending {
        written: usize,
    },
    /// The answer's head is not whole yet (what came of it is in the
    /// connection's `answer`).
    Head,
    /// The head was read; `left` bytes of the body are to come.
    Body {
        status: u16,
        len: usize,
        left: usize,
    },
}

struct Conn {
    stream: TcpStream,
    state: State,
    head: Vec<u8>,
    /// The answer's head as far as it came: its own, since the read
    /// buffer is shared by every connection and a head may come in pieces
    /// between other connections' reads.
    answer: Vec<u8>,
    put: bool,
    head_only: bool,
    request: String,
    sent_at: Instant,
    /// Asked for write readiness (a send did not fit the socket).
    want_out: bool,
}

/// A job thread's connections and their poller.
pub(super) struct Conns {
    epoll: Epoll,
    all: Vec<Conn>,
    host: String,
    auth: String,
    buf: Vec<u8>,
    events: Vec<EpollEvent>,
    /// Answers read since the last wait, for `wait` to hand out.
    done: Vec<(usize, Answer)>,
    last_progress: Instant,
}

const READ_BYTES: usize = 1 << 16;

impl Conns {
    /// Opens `count` connections to `host`, `auth` (a header line or
    /// nothing) sent with every request.
    pub fn open(host: &str, auth: &str, count: usize) -> anyhow::Result<Conns> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("epoll_create")?;
        let mut conns = Vec::with_capacity(count);
        for i in 0..count {
            let stream = TcpStream::connect(host).with_context(|| format!("cannot connect to the agent at {host}"))?;
            stream.set_nodelay(true)?;
            stream.set_nonblocking(true)?;
            epoll.add(&stream, EpollEvent::new(EpollFlags::EPOLLIN, i as u64)).context("epoll_ctl add")?;
            conns.push(Conn {
                stream,
                state: State::Idle,
                head: Vec::with_capacity(256),
                answer: Vec::with_capacity(256),
                put: false,
                head_only: false,
                request: String::new(),
                sent_at: Instant::now(),
                want_out: false,
            });
        }
        Ok(Conns {
            epoll,
            all: conns,
            host: host.to_owned(),
            auth: auth.to_owned(),
            buf: vec![0; READ_BYTES],
            events: vec![EpollEvent::empty(); count.max(1)],
            done: Vec::new(),
            last_progress: Instant::now(),
        })
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// Connection `i` takes no more requests: it is no longer watched (a
    /// peer closing it would otherwise wake every wait until the job ends).
    pub fn retire(&mut self, i: usize) -> anyhow::Result<()> {
        self.epoll.delete(&self.all[i].stream).context("epoll_ctl del")
    }

    /// Connection `i`'s last request, `METHOD path`.
    pub fn request(&self, i: usize) -> &str {
        &self.all[i].request
    }

    /// Starts `req` on idle connection `i`, its body (for a put) `payload`.
    pub fn send(&mut self, i: usize, req: &Request, payload: &[u8]) -> anyhow::Result<()> {
        let c = &mut self.all[i];
        debug_assert!(matches!(c.state, State::Idle), "one request at a time per connection");
        let body_len = if req.put { payload.len() } else { 0 };
        c.head.clear();
        write!(
            c.head,
            "{} {} HTTP/1.1\r\nhost: {}\r\n{}content-length: {body_len}\r\n\r\n",
            req.method, req.path, self.host, self.auth
        )?;
        c.put = req.put;
        c.head_only = req.method == "HEAD";
        c.request.clear();
        c.request.push_str(req.method);
        c.request.push(' ');
        c.request.push_str(&req.path);
        c.sent_at = Instant::now();
        c.state = State::Sending { written: 0 };
        self.push(i, payload)
    }

    /// Writes what the socket takes of connection `i`'s request; asks for
    /// write readiness if some is left.
    fn push(&mut self, i: usize, payload: &[u8]) -> anyhow::Result<()> {
        let c = &mut self.all[i];
        let State::Sending { mut written } = c.state else { return Ok(()) };
        let body: &[u8] = if c.put { payload } else { &[] };
        let total = c.head.len() + body.len();
        while written < total {
            let (head, rest) = if written < c.head.len() {
                (&c.head[written..], body)
            } else {
                (&[][..], &body[written - c.head.len()..])
            };
            match c.stream.write_vectored(&[IoSlice::new(head), IoSlice::new(rest)]) {
                Ok(0) => bail!("{}: the agent closed the connection", c.request),
                Ok(sent) => written += sent,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // An agent that answered before it read the whole body
                // (a refusal) and closed: its answer says why.
                Err(e) => {
                    let e = anyhow::Error::from(e);
                    self.answered_early(i)?;
                    bail!("{}: {e}", self.all[i].request);
                }
            }
        }
        let want_out = written < total;
        c.state = if want_out { State::Sending { written } } else { State::Head };
        if want_out != c.want_out {
            let flags = if want_out { EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT } else { EpollFlags::EPOLLIN };
            self.epoll.modify(&c.stream, &mut EpollEvent::new(flags, i as u64)).context("epoll_ctl mod")?;
            c.want_out = want_out;
        }
        Ok(())
    }

    /// Waits for answers (at most `timeout` when none comes) and appends
    /// those now whole, by connection, to `out`. An agent that answers nothing for
    /// the client's timeout fails the job, naming a request it holds.
    pub fn wait(&mut self, timeout: Duration, payload: &[u8], out: &mut Vec<(usize, Answer)>) -> anyhow::Result<()> {
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let n = match self.epoll.wait(&mut self.events, ms) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => 0,
            Err(e) => return Err(e).context("epoll_wait"),
        };
        for e in 0..n {
            let (i, flags) = (self.events[e].data() as usize, self.events[e].events());
            if flags.contains(EpollFlags::EPOLLOUT) {
                self.push(i, payload)?;
            }
            if flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR) {
                self.pull(i)?;
            }
        }
        if !self.done.is_empty() {
            self.last_progress = Instant::now();
        } else if self.last_progress.elapsed() >= crate::http::TIMEOUT {
            let held = self.all.iter().find(|c| !matches!(c.state, State::Idle));
            let what = held.map_or("a request", |c| c.request.as_str());
            bail!("{what}: the agent did not answer within {:?}", crate::http::TIMEOUT);
        }
        out.append(&mut self.done);
        Ok(())
    }

    /// Sends `req` on idle connection `i` and waits for its answer (the
    /// only request in flight).
    pub fn call(&mut self, i: usize, req: &Request, payload: &[u8]) -> anyhow::Result<Answer> {
        self.send(i, req, payload)?;
        let mut got = Vec::with_capacity(1);
        while got.is_empty() {
            self.wait(Duration::from_millis(100), payload, &mut got)?;
        }
        Ok(got.pop().expect("one answer").1)
    }

    /// Fails naming the status of an answer connection `i` has before its
    /// request is all sent (an agent refusing a body it will not read);
    /// `Ok` when none is there (yet).
    fn answered_early(&mut self, i: usize) -> anyhow::Result<()> {
        let c = &mut self.all[i];
        // Looked at, not taken: a head not whole yet is read again whole.
        let filled = loop {
            match c.stream.peek(&mut self.buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break 0,
            }
        };
        let Some(end) = head_end(&self.buf[..filled]) else { return Ok(()) };
        let (status, _) = parse_head(&self.buf[..end], true)
            .with_context(|| format!("{}: the agent's answer before the request was sent", c.request))?;
        bail!("{} answered {status} before the request was all sent", c.request)
    }

    /// Reads what connection `i` has of its answer.
    fn pull(&mut self, i: usize) -> anyhow::Result<()> {
        let c = &mut self.all[i];
        loop {
            let (from, room) = match c.state {
                State::Head if c.answer.len() < READ_BYTES => (0, READ_BYTES - c.answer.len()),
                State::Head => bail!("{}: the answer's head is longer than {READ_BYTES} bytes", c.request),
                State::Body { left, .. } => (0, left.min(self.buf.len())),
                // A peer that closes an idle connection: noticed at the
                // next request.
                State::Idle => return Ok(()),
                // An answer before the request is out: a refusal.
                State::Sending { .. } => return self.answered_early(i),
            };
            let n = match c.stream.read(&mut self.buf[from..room]) {
                Ok(0) => bail!("{}: the agent closed the connection", c.request),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => bail!("{}: {e}", c.request),
            };
            c.state = match c.state {
                State::Head => {
                    c.answer.extend_from_slice(&self.buf[..n]);
                    let Some(end) = head_end(&c.answer) else {
                        c.state = State::Head;
                        continue;
                    };
                    let (status, len) = parse_head(&c.answer[..end], c.head_only)
                        .with_context(|| format!("{}: the agent's answer", c.request))?;
                    let have = c.answer.len() - (end + 4);
                    c.answer.clear();
                    if have > len {
                        bail!("{}: the agent sent more than its answer ({have} body bytes of {len})", c.request);
                    }
                    State::Body { status, len, left: len - have }
                }
                State::Body { status, len, left } => State::Body { status, len, left: left - n },
                State::Idle | State::Sending { .. } => unreachable!("matched above"),
            };
            if let State::Body { status, len, left: 0 } = c.state {
                c.state = State::Idle;
                self.done.push((i, Answer { status, len, elapsed: c.sent_at.elapsed() }));
                return Ok(());
            }
        }
    }
}

/// Where an answer's head ends in `buf` (the blank line's start), if it
/// is whole.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// The status and body length of an answer's head (`content-length`; none
/// for a `HEAD`).
fn parse_head(head: &[u8], head_only: bool) -> anyhow::Result<(u16, usize)> {
    let head = std::str::from_utf8(head).context("not UTF-8")?;
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no status line")?;
    let len = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("content-length")))
        .map(|(_, v)| v.trim().parse::<usize>().context("a content-length that is not a number"))
        .transpose()?
        .unwrap_or(0);
    Ok((status, if head_only { 0 } else { len }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::net::TcpListener;

    /// A server that reads each request on each connection it accepts
    /// (head, then `content-length` bytes of body) and answers what
    /// `answer` says, a byte at a time if `trickle`: the client must put
    /// answers together from many reads.
    fn server(conns: usize, trickle: bool, answer: fn(&str, usize) -> Vec<u8>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(conns) {
                let stream = stream.unwrap();
                std::thread::spawn(move || {
                    let mut w = stream.try_clone().unwrap();
                    let mut r = std::io::BufReader::new(stream);
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut len = 0;
                        loop {
                            let mut h = String::new();
                            r.read_line(&mut h).unwrap();
                            if h == "\r\n" {
                                break;
                            }
                            if let Some(v) = h.strip_prefix("content-length: ") {
                                len = v.trim().parse().unwrap();
                            }
                        }
                        let mut body = vec![0; len];
                        r.read_exact(&mut body).unwrap();
                        let out = answer(line.trim_end(), len);
                        if trickle {
                            for b in &out {
                                w.write_all(std::slice::from_ref(b)).unwrap();
                            }
                        } else {
                            w.write_all(&out).unwrap();
                        }
                    }
                });
            }
        });
        addr
    }

    /// Waits for `n` answers.
    fn answers(conns: &mut Conns, n: usize, payload: &[u8]) -> anyhow::Result<Vec<(usize, Answer)>> {
        let mut got = Vec::new();
        while got.len() < n {
            conns.wait(Duration::from_millis(100), payload, &mut got)?;
        }
        Ok(got)
    }

    /// A GET's answer has a body of 5000 bytes, a HEAD's says 5000 and
    /// sends none, a PUT's is `201` once its whole body arrived.
    fn shard_answers(line: &str, _body: usize) -> Vec<u8> {
        let mut out = match line.split(' ').next() {
            Some("PUT") => b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n".to_vec(),
            _ => b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n".to_vec(),
        };
        if line.starts_with("GET") {
            out.extend_from_slice(&[7u8; 5000]);
        }
        out
    }

    #[test]
    fn answers_are_put_together_from_pieces_and_large_bodies_are_sent_whole() {
        let addr = server(3, true, shard_answers);
        let mut conns = Conns::open(&addr, "", 3).unwrap();
        // 8 MiB: more than a socket's buffers take at once, so the client
        // waits for write readiness.
        let payload = vec![1u8; 8 << 20];
        conns.send(0, &Request { method: "GET", path: "/a".into(), put: false }, &payload).unwrap();
        conns.send(1, &Request { method: "HEAD", path: "/b".into(), put: false }, &payload).unwrap();
        conns.send(2, &Request { method: "PUT", path: "/c".into(), put: true }, &payload).unwrap();
        let mut got = answers(&mut conns, 3, &payload).unwrap();
        got.sort_by_key(|(i, _)| *i);
        let seen: Vec<(usize, u16, usize)> = got.iter().map(|(i, a)| (*i, a.status, a.len)).collect();
        // A HEAD answer's length is that of a body it does not send.
        assert_eq!(seen, [(0, 200, 5000), (1, 200, 0), (2, 201, 0)]);
        assert_eq!(conns.request(2), "PUT /c");
        // The connections take their next requests.
        for i in 0..3 {
            conns.send(i, &Request { method: "GET", path: format!("/again{i}"), put: false }, &payload).unwrap();
        }
        let got = answers(&mut conns, 3, &payload).unwrap();
        assert!(got.iter().all(|(_, a)| a.status == 200 && a.len == 5000));
    }

    #[test]
    fn a_broken_answer_fails_naming_the_request() {
        let addr = server(1, false, |_, _| b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabc".to_vec());
        let mut conns = Conns::open(&addr, "", 1).unwrap();
        conns.send(0, &Request { method: "GET", path: "/long".into(), put: false }, b"").unwrap();
        let e = answers(&mut conns, 1, b"").err().expect("more bytes than the answer said");
        assert!(e.to_string().contains("GET /long: the agent sent more than its answer"), "{e:#}");

        let addr = server(1, false, |_, _| b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec());
        let mut conns = Conns::open(&addr, "", 1).unwrap();
        conns.send(0, &Request { method: "GET", path: "/short".into(), put: false }, b"").unwrap();
        // The server answers 3 bytes of 10 and then waits for the next
        // request: the client does not count the answer.
        let mut got = Vec::new();
        conns.wait(Duration::from_millis(300), b"", &mut got).unwrap();
        assert!(got.is_empty());

        let addr = server(1, false, |_, _| b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n".to_vec());
        let mut conns = Conns::open(&addr, "", 1).unwrap();
        conns.send(0, &Request { method: "GET", path: "/bad".into(), put: false }, b"").unwrap();
        let e = answers(&mut conns, 1, b"").err().expect("a length that is not a number");
        assert!(
            format!("{e:#}").contains("GET /bad: the agent's answer: a content-length that is not a number"),
            "{e:#}"
        );
    }

    /// A listener taking one connection: it reads the first bytes the
    /// client sends, then hands the connection to `then`. Its address.
    fn one_connection(then: impl FnOnce(std::net::TcpStream) + Send + 'static) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            then(s);
        });
        addr
    }

    /// An agent that refuses a PUT from its head (as it does one too
    /// large), answering before it reads the body, and closes: the job
    /// fails naming the status, not the failed write.
    #[test]
    fn an_answer_before_the_body_is_sent_fails_naming_its_status() {
        let addr = one_connection(|mut s| {
            s.write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").unwrap();
            // Kept open a while unread, then closed.
            std::thread::sleep(Duration::from_millis(500));
        });
        let mut conns = Conns::open(&addr, "", 1).unwrap();
        let payload = vec![1u8; 32 << 20];
        let put = Request { method: "PUT", path: "/huge".into(), put: true };
        let e = conns.send(0, &put, &payload).and_then(|()| answers(&mut conns, 1, &payload).map(drop));
        let e = e.expect_err("a refused PUT");
        assert!(e.to_string().contains("PUT /huge answered 413 before the request was all sent"), "{e:#}");
    }

    #[test]
    fn a_closed_connection_fails_naming_the_request() {
        // Closed without an answer.
        let addr = one_connection(drop);
        let mut conns = Conns::open(&addr, "", 1).unwrap();
        conns.send(0, &Request { method: "GET", path: "/gone".into(), put: false }, b"").unwrap();
        let e = answers(&mut conns, 1, b"").err().expect("closed");
        assert!(e.to_string().contains("GET /gone: the agent closed the connection"), "{e:#}");
    }
}
