//! HTTP/1.1 over io_uring: accept, recv and send on one ring per thread
//! (SO_REUSEPORT listeners, no epoll, no tokio); with a data file, each
//! GET reads 4 KiB from it with O_DIRECT on the same ring, at an offset
//! hashed from its key.
//!
//! With `devices` (thread per core, as an agent would be): the file is
//! opened once per device, each device is owned by one thread (device d
//! by thread d mod threads), and a GET's key also names its device. A GET
//! that arrives on another thread's connection hops to the owner's ring
//! and back with `IORING_OP_MSG_RING`: the owner reads into the
//! connection's buffer and posts the read's result to the connection's
//! ring, whose thread answers.

use std::os::fd::RawFd;
use std::sync::Arc;

use io_uring::{cqueue, opcode, types, IoUring};

use crate::Shards;

const ACCEPT: u64 = 0;
const RECV: u64 = 1;
const SEND: u64 = 2;
const READ: u64 = 3;
/// A read asked of this thread's device by another thread (the CQE's
/// user_data is a `Remote` pointer with this tag in its low byte).
const REMOTE_REQ: u64 = 4;
/// That read completed on this thread's ring.
const REMOTE_READ: u64 = 5;
/// A failed `MSG_RING` (successful ones post no CQE to their sender:
/// `IOSQE_CQE_SKIP_SUCCESS`).
const MSG_SENT: u64 = 6;

/// A read one thread asks of a device another thread owns. Aligned so
/// that its address leaves the low byte of a user_data for the tag.
#[repr(align(256))]
struct Remote {
    origin: usize,
    slot: usize,
    buf: *mut u8,
    offset: u64,
    device: usize,
}

/// What every thread knows of the others: their rings, and the devices.
struct Shared {
    rings: Vec<std::sync::atomic::AtomicI32>,
    ready: std::sync::Barrier,
    /// One descriptor per device (all of the same file).
    devices: Vec<RawFd>,
    /// With `HTTP_STACKS_COUNT_HOPS` set: GETs read on their connection's
    /// thread and GETs that hopped, printed every 65536 GETs.
    count: Option<[std::sync::atomic::AtomicU64; 2]>,
}

const DATA_BLOCKS: u64 = 262144;
const RBUF: usize = 64 * 1024;

struct Conn {
    fd: RawFd,
    rbuf: Vec<u8>,
    rlen: usize,
    recv_in_flight: bool,
    wbuf: Vec<u8>,
    wsent: usize,
    send_in_flight: bool,
    wnext: Vec<u8>,
    body_left: usize,
    put_key: String,
    put_body: Vec<u8>,
    closing: bool,
    /// An aligned 4 KiB buffer for a GET's direct read.
    dbuf: *mut u8,
    read_in_flight: bool,
    /// A GET waiting for its read: the body length.
    read_len: usize,
    /// ... and the device its key names (with `devices`).
    read_device: usize,
}

fn listener(addr: std::net::SocketAddrV4) -> RawFd {
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let one: libc::c_int = 1;
        for opt in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
            libc::setsockopt(fd, libc::SOL_SOCKET, opt, &one as *const _ as *const libc::c_void, 4);
        }
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(*addr.ip()).to_be() },
            sin_zero: [0; 8],
        };
        let r =
            libc::bind(fd, &sa as *const _ as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_in>() as u32);
        assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
        assert_eq!(libc::listen(fd, 1024), 0);
        fd
    }
}

fn serve(addr: std::net::SocketAddrV4, shards: Shards, data_fd: RawFd, me: usize, shared: Arc<Shared>) {
    let lfd = listener(addr);
    let mut ring = IoUring::builder().setup_single_issuer().setup_coop_taskrun().build(1024).unwrap();
    {
        use std::os::fd::AsRawFd;
        shared.rings[me].store(ring.as_raw_fd(), std::sync::atomic::Ordering::Release);
    }
    shared.ready.wait();
    let threads = shared.rings.len();
    // A GET's read: on this ring, or (its device another thread's) asked
    // of the owner's.
    let start_read = |c: &mut Conn, slot: usize, off: u64, pending: &mut Vec<io_uring::squeue::Entry>| {
        if shared.devices.is_empty() {
            pending.push(read(c, slot, off, data_fd));
            return;
        }
        let owner = c.read_device % threads;
        if let Some(count) = &shared.count {
            use std::sync::atomic::Ordering::Relaxed;
            count[usize::from(owner != me)].fetch_add(1, Relaxed);
            let (local, hopped) = (count[0].load(Relaxed), count[1].load(Relaxed));
            if (local + hopped) % 65536 == 0 {
                eprintln!("GETs read on their connection's thread {local}, hopped {hopped}");
            }
        }
        if owner == me {
            pending.push(read(c, slot, off, shared.devices[c.read_device]));
            return;
        }
        c.read_in_flight = true;
        let req = Box::new(Remote { origin: me, slot, buf: c.dbuf, offset: off, device: c.read_device });
        let ud = Box::into_raw(req) as u64 | REMOTE_REQ;
        let to = shared.rings[owner].load(std::sync::atomic::Ordering::Acquire);
        pending.push(message(to, 0, ud));
    };
    // Every complete request in the connection's buffer answered, and the
    // read of a GET waiting for one started.
    let serve_buffered = |c: &mut Conn, slot: usize, pending: &mut Vec<io_uring::squeue::Entry>| {
        let wait = handle(c, &shards, data_fd, shared.devices.len());
        match wait {
            Some(off) if off >= 0 => start_read(c, slot, off as u64, pending),
            Some(_) => {}
            None => c.closing = true,
        }
    };
    let mut conns: Vec<Option<Box<Conn>>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let accept = opcode::AcceptMulti::new(types::Fd(lfd)).build().user_data(ACCEPT);
    unsafe { ring.submission().push(&accept).unwrap() };
    let mut pending: Vec<io_uring::squeue::Entry> = Vec::new();
    let mut cqes: Vec<(u64, i32, u32)> = Vec::new();
    loop {
        {
            let mut sq = ring.submission();
            for e in pending.drain(..) {
                unsafe { sq.push(&e).expect("sq room") };
            }
        }
        ring.submit_and_wait(1).unwrap();
        cqes.clear();
        cqes.extend(ring.completion().map(|c: cqueue::Entry| (c.user_data(), c.result(), c.flags())));
        for &(ud, res, flags) in &cqes {
            let (slot, op) = ((ud >> 8) as usize, ud & 0xff);
            match op {
                REMOTE_REQ => {
                    let req = (ud & !0xff) as *mut Remote;
                    let r = unsafe { &*req };
                    let e = opcode::Read::new(types::Fd(shared.devices[r.device]), r.buf, 4096)
                        .offset(r.offset)
                        .build()
                        .user_data(req as u64 | REMOTE_READ);
                    pending.push(e);
                    continue;
                }
                REMOTE_READ => {
                    let req = unsafe { Box::from_raw((ud & !0xff) as *mut Remote) };
                    let to = shared.rings[req.origin].load(std::sync::atomic::Ordering::Acquire);
                    pending.push(message(to, res, ((req.slot as u64) << 8) | READ));
                    continue;
                }
                MSG_SENT => panic!("MSG_RING failed: {}", std::io::Error::from_raw_os_error(-res)),
                ACCEPT => {
                    if !cqueue::more(flags) {
                        pending.push(opcode::AcceptMulti::new(types::Fd(lfd)).build().user_data(ACCEPT));
                    }
                    if res < 0 {
                        continue;
                    }
                    let fd = res;
                    let one: libc::c_int = 1;
                    unsafe {
                        libc::setsockopt(
                            fd,
                            libc::IPPROTO_TCP,
                            libc::TCP_NODELAY,
                            &one as *const _ as *const libc::c_void,
                            4,
                        )
                    };
                    let c = Box::new(Conn {
                        fd,
                        rbuf: vec![0; RBUF],
                        rlen: 0,
                        recv_in_flight: false,
                        wbuf: Vec::with_capacity(16384),
                        wsent: 0,
                        send_in_flight: false,
                        wnext: Vec::with_capacity(16384),
                        body_left: 0,
                        put_key: String::new(),
                        put_body: Vec::new(),
                        closing: false,
                        dbuf: unsafe { std::alloc::alloc(std::alloc::Layout::from_size_align(4096, 4096).unwrap()) },
                        read_in_flight: false,
                        read_len: 0,
                        read_device: 0,
                    });
                    let slot = match free.pop() {
                        Some(s) => {
                            conns[s] = Some(c);
                            s
                        }
                        None => {
                            conns.push(Some(c));
                            conns.len() - 1
                        }
                    };
                    let c = conns[slot].as_mut().unwrap();
                    pending.push(recv(c, slot));
                }
                RECV => {
                    let c = conns[slot].as_mut().unwrap();
                    c.recv_in_flight = false;
                    if res <= 0 || c.closing {
                        c.closing = true;
                    } else {
                        c.rlen += res as usize;
                        if !c.read_in_flight {
                            serve_buffered(c, slot, &mut pending);
                        }
                        if !c.closing {
                            pending.push(recv(c, slot));
                        }
                        if !c.send_in_flight && !c.wnext.is_empty() {
                            std::mem::swap(&mut c.wbuf, &mut c.wnext);
                            c.wsent = 0;
                            pending.push(send(c, slot));
                        }
                    }
                }
                SEND => {
                    let c = conns[slot].as_mut().unwrap();
                    c.send_in_flight = false;
                    if res <= 0 {
                        c.closing = true;
                    } else {
                        c.wsent += res as usize;
                        if c.wsent < c.wbuf.len() {
                            pending.push(send(c, slot));
                        } else {
                            c.wbuf.clear();
                            c.wsent = 0;
                            if !c.wnext.is_empty() {
                                std::mem::swap(&mut c.wbuf, &mut c.wnext);
                                pending.push(send(c, slot));
                            }
                        }
                    }
                }
                READ => {
                    let c = conns[slot].as_mut().unwrap();
                    c.read_in_flight = false;
                    if res != 4096 {
                        c.closing = true;
                    } else {
                        use std::io::Write;
                        let b = unsafe { std::slice::from_raw_parts(c.dbuf, 4096) };
                        let b = &b[..c.read_len.min(4096)];
                        let crc = crc32c::crc32c(b);
                        let _ = write!(
                            c.wnext,
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-shard-crc32c: {crc:08x}\r\naccept-ranges: bytes\r\n\r\n",
                            b.len()
                        );
                        c.wnext.extend_from_slice(b);
                        // Requests that came behind this one.
                        if c.rlen > 0 {
                            serve_buffered(c, slot, &mut pending);
                        }
                        if !c.send_in_flight && !c.wnext.is_empty() {
                            std::mem::swap(&mut c.wbuf, &mut c.wnext);
                            c.wsent = 0;
                            pending.push(send(c, slot));
                        }
                    }
                }
                _ => unreachable!(),
            }
            if op != ACCEPT {
                let c = conns[slot].as_ref().unwrap();
                if c.closing && !c.recv_in_flight && !c.send_in_flight && !c.read_in_flight {
                    unsafe { libc::close(c.fd) };
                    conns[slot] = None;
                    free.push(slot);
                }
            }
        }
    }
}

/// A CQE posted on the ring `to` (`MSG_RING`) with `user_data` and
/// `result`; the sender sees a CQE only if it fails.
fn message(to: RawFd, result: i32, user_data: u64) -> io_uring::squeue::Entry {
    opcode::MsgRingData::new(types::Fd(to), result, user_data, None)
        .build()
        .flags(io_uring::squeue::Flags::SKIP_SUCCESS)
        .user_data(MSG_SENT)
}

fn recv(c: &mut Conn, slot: usize) -> io_uring::squeue::Entry {
    c.recv_in_flight = true;
    let buf = &mut c.rbuf[c.rlen..];
    opcode::Recv::new(types::Fd(c.fd), buf.as_mut_ptr(), buf.len() as u32)
        .build()
        .user_data(((slot as u64) << 8) | RECV)
}

fn read(c: &mut Conn, slot: usize, off: u64, data_fd: RawFd) -> io_uring::squeue::Entry {
    c.read_in_flight = true;
    opcode::Read::new(types::Fd(data_fd), c.dbuf, 4096).offset(off).build().user_data(((slot as u64) << 8) | READ)
}

fn send(c: &mut Conn, slot: usize) -> io_uring::squeue::Entry {
    c.send_in_flight = true;
    let buf = &c.wbuf[c.wsent..];
    opcode::Send::new(types::Fd(c.fd), buf.as_ptr(), buf.len() as u32).build().user_data(((slot as u64) << 8) | SEND)
}

/// Answers every complete request in the read buffer; None to close;
/// Some(offset) when a GET waits for a direct read at that offset.
fn handle(c: &mut Conn, shards: &Shards, data_fd: RawFd, devices: usize) -> Option<i64> {
    let mut wait = -1i64;
    let mut at = 0;
    loop {
        if c.body_left > 0 {
            let n = c.body_left.min(c.rlen - at);
            c.put_body.extend_from_slice(&c.rbuf[at..at + n]);
            at += n;
            c.body_left -= n;
            if c.body_left > 0 {
                break;
            }
            let body = std::mem::take(&mut c.put_body);
            shards.write().unwrap().insert(std::mem::take(&mut c.put_key), body.into());
            c.wnext.extend_from_slice(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n");
            continue;
        }
        match crate::parse_head(&c.rbuf[at..c.rlen]) {
            Ok(Some(crate::Head { method, key, body: len, len: n })) => {
                let Some(key) = key else {
                    c.wnext.extend_from_slice(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
                    at += n;
                    continue;
                };
                match method {
                    "GET" if data_fd >= 0 && shards.read().unwrap().get(key).is_some() => {
                        let len = shards.read().unwrap().get(key).map(|b| b.len()).unwrap();
                        let mut h = 0xcbf29ce484222325u64;
                        for &x in key.as_bytes() {
                            h = (h ^ u64::from(x)).wrapping_mul(0x100000001b3);
                        }
                        c.read_len = len;
                        c.read_device = ((h >> 40) as usize) % devices.max(1);
                        wait = ((h % DATA_BLOCKS) * 4096) as i64;
                        at += n;
                        break;
                    }
                    "GET" | "HEAD" => {
                        let got = shards.read().unwrap().get(key).cloned();
                        match got {
                            Some(b) => {
                                use std::io::Write;
                                let crc = crc32c::crc32c(&b);
                                let _ = write!(
                                    c.wnext,
                                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-shard-crc32c: {crc:08x}\r\naccept-ranges: bytes\r\n\r\n",
                                    b.len()
                                );
                                if method == "GET" {
                                    c.wnext.extend_from_slice(&b);
                                }
                            }
                            None => c.wnext.extend_from_slice(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"),
                        }
                    }
                    "PUT" => {
                        c.put_key = key.to_owned();
                        c.put_body = Vec::with_capacity(len);
                        c.body_left = len;
                        if len == 0 {
                            shards.write().unwrap().insert(std::mem::take(&mut c.put_key), bytes::Bytes::new());
                            c.wnext.extend_from_slice(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n");
                        }
                    }
                    _ => return None,
                }
                at += n;
            }
            Ok(None) => break,
            Err(_) => return None,
        }
    }
    c.rbuf.copy_within(at..c.rlen, 0);
    c.rlen -= at;
    if c.rlen < RBUF {
        Some(wait)
    } else {
        None
    }
}

/// Serves on `threads` threads, each with its own ring and listener;
/// with `devices` (and `data`), each thread owns some of them.
pub fn run(addr: std::net::SocketAddrV4, threads: usize, data: Option<&str>, devices: usize) {
    let open = |path: &str| {
        use std::os::fd::IntoRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path).unwrap();
        f.into_raw_fd()
    };
    let data_fd = data.map_or(-1, open);
    let shared = Arc::new(Shared {
        rings: (0..threads).map(|_| std::sync::atomic::AtomicI32::new(-1)).collect(),
        ready: std::sync::Barrier::new(threads),
        devices: data.map_or(Vec::new(), |path| (0..devices).map(|_| open(path)).collect()),
        count: std::env::var_os("HTTP_STACKS_COUNT_HOPS").map(|_| Default::default()),
    });
    let shards: Shards = Arc::default();
    let hs: Vec<_> = (0..threads)
        .map(|me| {
            let s = Arc::clone(&shards);
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || serve(addr, s, data_fd, me, shared))
        })
        .collect();
    eprintln!("shard-agent ready (io_uring, {threads} threads, {devices} devices) on {addr}");
    for h in hs {
        h.join().unwrap();
    }
}
