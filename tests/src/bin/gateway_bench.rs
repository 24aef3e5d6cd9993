//! `gateway-bench`: the load generator of `bench/gateway.sh`. It drives one target (the mock
//! provider directly, the pass-through floor, the tenantctl runtime, LiteLLM) with OpenAI-format
//! chat completions over a keep-alive pool with TCP_NODELAY, and prints one JSON line of figures.
//!
//! Modes: `plain` (latency percentiles at the given concurrency, or throughput when
//! `--duration-secs` is set), `stream` (time to first token and the gaps between chunks, at c=1);
//! with `--rate N --duration-secs S`, paced: N requests a second on a fixed schedule, latency counted
//! from each request's due time.
//! The token, when the target needs one, comes from `BENCH_TOKEN` (never an argument). With
//! `--method GET` it drives a read endpoint instead (the URL as given, no body).

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    reason = "a measuring tool: fail loudly"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

struct Args {
    name: String,
    url: String,
    model: String,
    mode: String,
    requests: usize,
    warmup: usize,
    concurrency: usize,
    duration: Option<Duration>,
    /// Paced mode: requests a second, each sent on its own schedule whatever the others do.
    rate: Option<u64>,
    /// `POST` (a chat completion, the default) or `GET` (the URL as it is, no body: the API's
    /// read endpoints).
    method: String,
    /// With `--method PUT` or `POST`: this JSON body instead of a chat completion's.
    body: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        name: "target".into(),
        url: String::new(),
        model: "gpt-4o-mini".into(),
        mode: "plain".into(),
        requests: 2000,
        warmup: 200,
        concurrency: 1,
        duration: None,
        rate: None,
        method: "POST".into(),
        body: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it
            .next()
            .unwrap_or_else(|| panic!("`{flag}` needs a value"));
        match flag.as_str() {
            "--name" => a.name = v,
            "--url" => a.url = v,
            "--model" => a.model = v,
            "--mode" => a.mode = v,
            "--requests" => a.requests = v.parse().unwrap(),
            "--warmup" => a.warmup = v.parse().unwrap(),
            "--concurrency" => a.concurrency = v.parse().unwrap(),
            "--duration-secs" => a.duration = Some(Duration::from_secs(v.parse().unwrap())),
            "--rate" => a.rate = Some(v.parse().unwrap()),
            "--method" => a.method = v.to_ascii_uppercase(),
            "--body" => a.body = Some(v),
            other => panic!("unknown flag `{other}`"),
        }
    }
    assert!(!a.url.is_empty(), "--url is required");
    a
}

type Http = Client<HttpConnector, Full<Bytes>>;

fn request(a: &Args, token: &str, stream: bool) -> hyper::Request<Full<Bytes>> {
    let mut body = json!({"model": a.model, "messages": [{"role": "user", "content": "hello from the benchmark"}]});
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    if a.method == "GET" {
        let mut b = hyper::Request::get(&a.url);
        if !token.is_empty() {
            b = b.header("authorization", format!("Bearer {token}"));
        }
        return b.body(Full::new(Bytes::new())).unwrap();
    }
    if let Some(raw) = &a.body {
        let mut b = hyper::Request::builder()
            .method(a.method.as_str())
            .uri(&a.url)
            .header("content-type", "application/json");
        if !token.is_empty() {
            b = b.header("authorization", format!("Bearer {token}"));
        }
        return b.body(Full::new(Bytes::from(raw.clone()))).unwrap();
    }
    let mut b = hyper::Request::post(&a.url).header("content-type", "application/json");
    if !token.is_empty() {
        b = b.header("authorization", format!("Bearer {token}"));
    }
    b.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

/// One plain request: its latency, or None on a non-2xx.
async fn plain(http: &Http, a: &Args, token: &str) -> Option<Duration> {
    let t = Instant::now();
    plain_status(http, a, token).await.ok()?;
    Some(t.elapsed())
}

/// One plain request: `Err` with its status when not 2xx (0: no response).
async fn plain_status(http: &Http, a: &Args, token: &str) -> Result<(), u16> {
    let response = http
        .request(request(a, token, false))
        .await
        .map_err(|_| 0u16)?;
    let status = response.status();
    response.into_body().collect().await.map_err(|_| 0u16)?;
    if status.is_success() {
        Ok(())
    } else {
        Err(status.as_u16())
    }
}

/// One streamed request: time to the first content chunk and the gaps between content chunks.
async fn streamed(http: &Http, a: &Args, token: &str) -> Option<(Duration, Vec<Duration>)> {
    let t = Instant::now();
    let response = http.request(request(a, token, true)).await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let mut body = response.into_body();
    let mut first = None;
    let mut last = None;
    let mut gaps = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.ok()?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        let text = String::from_utf8_lossy(data);
        // Content chunks only (not the role chunk, the finish chunk or usage).
        let contents =
            text.matches("\"content\":\"").count() - text.matches("\"content\":\"\"").count();
        if contents == 0 {
            continue;
        }
        let now = t.elapsed();
        if first.is_none() {
            first = Some(now);
        } else if let Some(prev) = last {
            gaps.push(now - prev);
        }
        last = Some(now);
    }
    Some((first?, gaps))
}

fn pct(sorted: &[Duration], p: f64) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_micros()
}

#[tokio::main]
async fn main() {
    let a = Arc::new(args());
    let token = Arc::new(std::env::var("BENCH_TOKEN").unwrap_or_default());
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let http: Http = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector);
    for _ in 0..a.warmup {
        if a.mode == "stream" {
            streamed(&http, &a, &token).await;
        } else {
            plain(&http, &a, &token).await;
        }
    }
    if a.mode == "stream" {
        let mut ttft = Vec::new();
        let mut gaps = Vec::new();
        let mut errors = 0;
        for _ in 0..a.requests {
            match streamed(&http, &a, &token).await {
                Some((t, g)) => {
                    ttft.push(t);
                    gaps.extend(g);
                }
                None => errors += 1,
            }
        }
        ttft.sort();
        gaps.sort();
        let mean_gap =
            gaps.iter().map(Duration::as_micros).sum::<u128>() / gaps.len().max(1) as u128;
        println!(
            "{}",
            json!({"name": a.name, "mode": "stream", "requests": a.requests, "errors": errors,
                   "ttft_p50_us": pct(&ttft, 0.5), "ttft_p99_us": pct(&ttft, 0.99),
                   "gap_mean_us": mean_gap, "gap_p50_us": pct(&gaps, 0.5), "gap_p99_us": pct(&gaps, 0.99)})
        );
        return;
    }
    if let Some(rate) = a.rate {
        paced(&http, &a, &token, rate).await;
        return;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let per_worker = a.requests.div_ceil(a.concurrency);
    let workers: Vec<_> = (0..a.concurrency)
        .map(|_| {
            let (http, a, token, stop, done, errors) = (
                http.clone(),
                a.clone(),
                token.clone(),
                stop.clone(),
                done.clone(),
                errors.clone(),
            );
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) && (a.duration.is_some() || n < per_worker) {
                    n += 1;
                    match plain(&http, &a, &token).await {
                        Some(d) => {
                            lat.push(d);
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        None => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                lat
            })
        })
        .collect();
    if let Some(d) = a.duration {
        tokio::time::sleep(d).await;
        stop.store(true, Ordering::Relaxed);
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let elapsed = started.elapsed();
    all.sort();
    let over_40ms = all
        .iter()
        .filter(|d| **d >= Duration::from_millis(40))
        .count();
    println!(
        "{}",
        json!({"name": a.name, "mode": "plain", "concurrency": a.concurrency, "requests": all.len(),
               "errors": errors.load(Ordering::Relaxed),
               "rps": (done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64()).round(),
               "p50_us": pct(&all, 0.5), "p99_us": pct(&all, 0.99), "over_40ms": over_40ms})
    );
}

/// A fixed rate for `--duration-secs`: request `i` is due at `i / rate` seconds and its latency is
/// counted from then (a slow reply delays no later request's clock: no coordinated omission).
async fn paced(http: &Http, a: &Arc<Args>, token: &Arc<String>, rate: u64) {
    let total = rate * a.duration.expect("--rate needs --duration-secs").as_secs();
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
        tokio::time::sleep_until(due).await;
        let (http, a, token) = (http.clone(), a.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            plain_status(&http, &a, &token).await?;
            Ok::<_, u16>(due.elapsed())
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut statuses = std::collections::BTreeMap::<String, u64>::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(d) => all.push(d),
            Err(status) => {
                errors += 1;
                *statuses.entry(status.to_string()).or_default() += 1;
            }
        }
    }
    let elapsed = start.elapsed();
    all.sort();
    println!(
        "{}",
        json!({"name": a.name, "mode": "paced", "rate": rate, "requests": all.len(), "errors": errors,
               "error_statuses": statuses,
               "rps": (all.len() as f64 / elapsed.as_secs_f64()).round(),
               "p50_us": pct(&all, 0.5), "p99_us": pct(&all, 0.99), "p999_us": pct(&all, 0.999)})
    );
}
