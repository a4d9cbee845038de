//! A lean HTTP/1.1 server on tokio: httparse, one task per connection,
//! answers written by hand. What tokio costs without hyper and axum.
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Shards;

async fn conn(mut s: tokio::net::TcpStream, shards: Shards) {
    let mut rbuf = vec![0u8; 65536];
    let mut rlen = 0;
    let mut w: Vec<u8> = Vec::with_capacity(16384);
    let (mut body_left, mut put_key, mut put_body) = (0usize, String::new(), Vec::new());
    loop {
        let n = match s.read(&mut rbuf[rlen..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        rlen += n;
        let mut at = 0;
        loop {
            if body_left > 0 {
                let n = body_left.min(rlen - at);
                put_body.extend_from_slice(&rbuf[at..at + n]);
                at += n;
                body_left -= n;
                if body_left > 0 {
                    break;
                }
                shards.write().unwrap().insert(std::mem::take(&mut put_key), std::mem::take(&mut put_body).into());
                w.extend_from_slice(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n");
                continue;
            }
            match crate::parse_head(&rbuf[at..rlen]) {
                Ok(Some(crate::Head { method, key, body: len, len: n })) => {
                    let key = key.unwrap_or("").to_owned();
                    at += n;
                    match method {
                        "GET" | "HEAD" => {
                            let got = shards.read().unwrap().get(&key).cloned();
                            match got {
                                Some(b) => {
                                    use std::io::Write;
                                    let crc = crc32c::crc32c(&b);
                                    let _ = write!(w, "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-shard-crc32c: {crc:08x}\r\naccept-ranges: bytes\r\n\r\n", b.len());
                                    if method == "GET" {
                                        w.extend_from_slice(&b);
                                    }
                                }
                                None => w.extend_from_slice(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"),
                            }
                        }
                        "PUT" => {
                            put_key = key;
                            put_body = Vec::with_capacity(len);
                            body_left = len;
                            if len == 0 {
                                shards.write().unwrap().insert(std::mem::take(&mut put_key), bytes::Bytes::new());
                                w.extend_from_slice(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n");
                            }
                        }
                        _ => return,
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        rbuf.copy_within(at..rlen, 0);
        rlen -= at;
        if !w.is_empty() {
            if s.write_all(&w).await.is_err() {
                return;
            }
            w.clear();
        }
    }
}

/// Serves on a runtime of `threads` workers.
pub fn run(listen: &str, threads: usize) {
    crate::accept_loop(listen, threads, "tokio, httparse", conn);
}
