//! Fair share under a flood (issue 9 item 4): one tenant's request latency alone (the baseline) and
//! while another tenant floods the same runtime with 64 concurrent clients, same run, real Postgres,
//! real HTTP on loopback. Reports p50/p99 of the quiet tenant and how many of the flood's requests
//! were refused with 429. Bounded: 400 quiet requests per phase; the flood stops with the second phase.
//!
//! Run: `cargo bench -p tests --bench fairshare` (prints a Markdown table).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "benchmark: fail loudly, print the table"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use runtime::domain::Tier;
use serde_json::json;

const QUIET_REQUESTS: usize = 400;
const FLOOD_CLIENTS: usize = 64;

async fn chat(http: &reqwest::Client, base: &str, token: &str) -> u16 {
    http.post(format!("{base}/v1/chat/completions"))
        .bearer_auth(token)
        .json(&json!({"model": "mock-small", "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn quiet_phase(http: &reqwest::Client, base: &str, token: &str) -> Vec<Duration> {
    let mut took = Vec::with_capacity(QUIET_REQUESTS);
    for _ in 0..QUIET_REQUESTS {
        let t = Instant::now();
        assert_eq!(
            chat(http, base, token).await,
            200,
            "the quiet tenant is always served"
        );
        took.push(t.elapsed());
    }
    took.sort();
    took
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = tests::serve_with(cli::platform::Platform::builtin(), |spec| {
            spec.tier = Tier::Pool
        })
        .await;
        let http = reqwest::Client::new();
        let (quiet, loud) = (s.token("globex"), s.token("acme"));
        for _ in 0..50 {
            chat(&http, &s.base, &quiet).await;
            chat(&http, &s.base, &loud).await;
        }
        let alone = quiet_phase(&http, &s.base, &quiet).await;

        let stop = Arc::new(AtomicBool::new(false));
        let (served, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let flood: Vec<_> = (0..FLOOD_CLIENTS)
            .map(|_| {
                let (http, base, token) = (http.clone(), s.base.clone(), loud.clone());
                let (stop, served, refused) = (stop.clone(), served.clone(), refused.clone());
                tokio::spawn(async move {
                    for _ in 0..5_000 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        match chat(&http, &base, &token).await {
                            200 => served.fetch_add(1, Ordering::Relaxed),
                            429 => refused.fetch_add(1, Ordering::Relaxed),
                            other => panic!("a flooding request got {other}"),
                        };
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let flooded = quiet_phase(&http, &s.base, &quiet).await;
        stop.store(true, Ordering::Relaxed);
        for f in flood {
            f.await.unwrap();
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let (served, refused) = (served.load(Ordering::Relaxed), refused.load(Ordering::Relaxed));
        println!("| quiet tenant (globex) | p50 | p99 | p50 ratio | p99 ratio |");
        println!("| --- | --- | --- | --- | --- |");
        println!(
            "| alone (baseline) | {:.2} ms | {:.2} ms | 1.00 | 1.00 |",
            ms(pct(&alone, 0.5)),
            ms(pct(&alone, 0.99))
        );
        println!(
            "| while acme floods with {FLOOD_CLIENTS} clients | {:.2} ms | {:.2} ms | {:.2}x | {:.2}x |",
            ms(pct(&flooded, 0.5)),
            ms(pct(&flooded, 0.99)),
            ms(pct(&flooded, 0.5)) / ms(pct(&alone, 0.5)),
            ms(pct(&flooded, 0.99)) / ms(pct(&alone, 0.99)),
        );
        println!(
            "\nflood: {served} served, {refused} refused with 429 ({:.1}%), cap {} in flight per tenant",
            100.0 * refused as f64 / (served + refused).max(1) as f64,
            s.running.state.data.max_in_flight_per_tenant()
        );
        s.running.stop().await.unwrap();
    });
}
