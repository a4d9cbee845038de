//! `http-stacks --stack hyper|tokio|uring --listen ADDR [--threads N]
//! [--direct FILE]`: a minimal server of the shard API in one HTTP stack,
//! answering from memory (a `PUT` keeps its body, a `GET` answers it with
//! its CRC), for `benches/ab-agent` (it takes and ignores the agent's other
//! arguments, and says "shard-agent ready"). `--direct FILE` (io_uring
//! only): each GET also reads 4 KiB of FILE with O_DIRECT on the same ring.
//! Benchmark code, not the agent's.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

mod hyper_raw;
mod lean;
mod uring;

type Shards = Arc<RwLock<HashMap<String, bytes::Bytes>>>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let listen = arg("--listen").unwrap_or_else(|| "127.0.0.1:7700".to_owned());
    let threads = arg("--threads").map_or(2, |t| t.parse().expect("--threads N"));
    match arg("--stack").as_deref() {
        Some("hyper") => hyper_raw::run(&listen, threads),
        Some("tokio") => lean::run(&listen, threads),
        Some("uring") => uring::run(listen.parse().expect("--listen IPV4:PORT"), threads, arg("--direct").as_deref()),
        other => panic!("--stack is hyper, tokio or uring, not {other:?}"),
    }
}
