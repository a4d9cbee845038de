//! hyper's HTTP/1.1 connections with a plain `service_fn`: no axum, no
//! middleware.
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use std::sync::Arc;

use crate::Shards;

async fn handle(req: Request<hyper::body::Incoming>, shards: Shards) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let key = req.uri().path().strip_prefix("/v1/shards/").unwrap_or("").to_owned();
    match *req.method() {
        hyper::Method::GET | hyper::Method::HEAD => {
            let got = shards.read().unwrap().get(&key).cloned();
            Ok(match got {
                Some(b) => {
                    let crc = crc32c::crc32c(&b);
                    let len = b.len();
                    let mut r =
                        Response::new(Full::new(if req.method() == hyper::Method::GET { b } else { Bytes::new() }));
                    r.headers_mut().insert("content-length", len.into());
                    r.headers_mut()
                        .insert("x-shard-crc32c", http::HeaderValue::from_str(&format!("{crc:08x}")).unwrap());
                    r.headers_mut().insert("accept-ranges", http::HeaderValue::from_static("bytes"));
                    r
                }
                None => {
                    let mut r = Response::new(Full::new(Bytes::new()));
                    *r.status_mut() = StatusCode::NOT_FOUND;
                    r
                }
            })
        }
        _ => {
            let body = req.into_body().collect().await?.to_bytes();
            shards.write().unwrap().insert(key, body);
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::CREATED;
            Ok(r)
        }
    }
}

/// Serves on a runtime of `threads` workers.
pub fn run(listen: &str, threads: usize) {
    crate::accept_loop(listen, threads, "hyper, service_fn", |s, shards| async move {
        let svc = hyper::service::service_fn(move |req| handle(req, Arc::clone(&shards)));
        let _ = hyper::server::conn::http1::Builder::new()
            .max_buf_size(256 * 1024)
            .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
            .await;
    });
}
