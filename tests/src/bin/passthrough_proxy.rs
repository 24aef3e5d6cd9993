//! `passthrough-proxy`: the benchmark's floor, the physical cost of one HTTP hop. It forwards every
//! request unchanged to one upstream and streams the response back, over a keep-alive pool with
//! TCP_NODELAY, doing nothing else (no auth, no parsing, no metering). Whatever a gateway adds
//! above this is the gateway's own work.
//!
//! Usage: `passthrough-proxy LISTEN_ADDR UPSTREAM_ADDR` (e.g. `127.0.0.1:9101 127.0.0.1:9100`).

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a small tool: fail loudly"
)]

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args
        .next()
        .expect("usage: passthrough-proxy LISTEN_ADDR UPSTREAM_ADDR");
    let upstream = args
        .next()
        .expect("usage: passthrough-proxy LISTEN_ADDR UPSTREAM_ADDR");
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector);
    let listener = tokio::net::TcpListener::bind(&listen).await.unwrap();
    println!("passthrough proxy on {listen} -> {upstream}");
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        let client = client.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let service = service_fn(move |mut req: hyper::Request<Incoming>| {
                let client = client.clone();
                let path = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default();
                *req.uri_mut() = format!("http://{upstream}{path}").parse().unwrap();
                async move { client.request(req).await }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
