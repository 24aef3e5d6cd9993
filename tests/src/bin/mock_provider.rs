//! `mock-provider`: the mock LLM provider server (`tests::mock_provider`) standalone, for the
//! benchmark and for trying a gateway by hand.
//!
//! Usage: `mock-provider [--listen ADDR] [--words N] [--first-delay-ms MS] [--chunk-delay-ms MS]`.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    reason = "a small tool: fail loudly"
)]

use std::time::Duration;

#[tokio::main]
async fn main() {
    let mut listen = "127.0.0.1:9100".to_owned();
    let mut config = tests::mock_provider::Config {
        record: false,
        ..tests::mock_provider::Config::default()
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("`{flag}` needs a value"));
        match flag.as_str() {
            "--listen" => listen = value,
            "--words" => config.words = value.parse().unwrap(),
            "--first-delay-ms" => {
                config.first_chunk_delay = Duration::from_millis(value.parse().unwrap())
            }
            "--chunk-delay-ms" => {
                config.chunk_delay = Duration::from_millis(value.parse().unwrap())
            }
            other => panic!("unknown flag `{other}`; see the module doc for usage"),
        }
    }
    let server =
        tests::mock_provider::MockProvider::start_on(listen.parse().unwrap(), config).await;
    println!("mock provider on {}", server.url());
    tokio::signal::ctrl_c().await.unwrap();
}
