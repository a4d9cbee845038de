//! `http-stacks --stack hyper|tokio|uring --listen ADDR [--threads N]
//! [--direct FILE]`: a minimal server of the shard API in one HTTP stack,
//! answering from memory (a `PUT` keeps its body, a `GET` answers it with
//! its CRC), for `benches/ab-agent` (it takes and ignores the agent's other
//! arguments, and says "shard-agent ready"). `--direct FILE` (io_uring
//! only): each GET also reads 4 KiB of FILE with O_DIRECT on the same ring;
//! `--devices N` with it: FILE is N devices, each owned by one thread, and
//! a GET whose device another thread owns hops there and back
//! (`MSG_RING`).
//! Benchmark code, not the agent's.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

mod hyper_raw;
mod lean;
mod uring;

type Shards = Arc<RwLock<HashMap<String, bytes::Bytes>>>;

/// A request head at the start of a buffer: its method, its key (the
/// target after `/v1/shards/`, if it is one), its body's length and its
/// own.
struct Head<'a> {
    method: &'a str,
    key: Option<&'a str>,
    body: usize,
    len: usize,
}

/// The head at the start of `buf`: `Ok(None)` while it is not whole,
/// `Err` for bytes that are not HTTP.
fn parse_head(buf: &[u8]) -> Result<Option<Head<'_>>, httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; 24];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = req.parse(buf)? else { return Ok(None) };
    let body = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let key = req.path.and_then(|p| p.strip_prefix("/v1/shards/"));
    Ok(Some(Head { method: req.method.unwrap_or(""), key, body, len }))
}

/// Accepts on `listen` on a tokio runtime of `threads` workers and serves
/// each connection with `serve`, in a task of its own.
fn accept_loop<F, Fut>(listen: &str, threads: usize, stack: &str, serve: F)
where
    F: Fn(tokio::net::TcpStream, Shards) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build().unwrap();
    rt.block_on(async {
        let l = tokio::net::TcpListener::bind(listen).await.unwrap();
        let shards: Shards = Arc::default();
        eprintln!("shard-agent ready ({stack}) on {listen}");
        loop {
            let (s, _) = l.accept().await.unwrap();
            let _ = s.set_nodelay(true);
            tokio::spawn(serve(s, Arc::clone(&shards)));
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let listen = arg("--listen").unwrap_or_else(|| "127.0.0.1:7700".to_owned());
    let threads = arg("--threads").map_or(2, |t| t.parse().expect("--threads N"));
    match arg("--stack").as_deref() {
        Some("hyper") => hyper_raw::run(&listen, threads),
        Some("tokio") => lean::run(&listen, threads),
        Some("uring") => uring::run(
            listen.parse().expect("--listen IPV4:PORT"),
            threads,
            arg("--direct").as_deref(),
            arg("--devices").map_or(0, |n| n.parse().expect("--devices N")),
        ),
        other => panic!("--stack is hyper, tokio or uring, not {other:?}"),
    }
}
