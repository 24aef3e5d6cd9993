//! A JWKS endpoint for tests, on a loopback port: serves a document, or fails in a chosen way, and
//! counts every request it receives.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::Mutex;

/// How the endpoint answers.
#[derive(Debug, Clone)]
pub enum Mode {
    Serve(Value),
    Status(u16),
    Body(&'static str),
    Slow(Duration, Value),
    Oversized,
    RedirectTo(String),
}

#[derive(Debug, Clone)]
pub struct JwksServer {
    pub url: String,
    pub addr: std::net::SocketAddr,
    hits: Arc<AtomicU64>,
    mode: Arc<Mutex<Mode>>,
}

async fn answer(State((hits, mode)): State<(Arc<AtomicU64>, Arc<Mutex<Mode>>)>) -> Response {
    hits.fetch_add(1, Ordering::SeqCst);
    let mode = mode.lock().await.clone();
    let json =
        |v: Value| ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response();
    match mode {
        Mode::Serve(v) => json(v),
        Mode::Status(code) => StatusCode::from_u16(code)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response(),
        Mode::Body(text) => ([(header::CONTENT_TYPE, "text/html")], text).into_response(),
        Mode::Slow(delay, v) => {
            tokio::time::sleep(delay).await;
            json(v)
        }
        Mode::Oversized => {
            json(serde_json::json!({"keys": [], "padding": "x".repeat(1024 * 1024)}))
        }
        Mode::RedirectTo(to) => (StatusCode::FOUND, [(header::LOCATION, to)]).into_response(),
    }
}

impl JwksServer {
    pub async fn start(initial: Value) -> Self {
        let hits = Arc::new(AtomicU64::new(0));
        let mode = Arc::new(Mutex::new(Mode::Serve(initial)));
        let app = axum::Router::new()
            .route("/jwks.json", axum::routing::get(answer))
            .with_state((hits.clone(), mode.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{addr}/jwks.json"),
            addr,
            hits,
            mode,
        }
    }

    pub async fn set(&self, mode: Mode) {
        *self.mode.lock().await = mode;
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A JWKS document holding the public keys of `signers`.
pub fn jwks_of(signers: &[&runtime::auth::signer::DevSigner]) -> Value {
    let keys: Vec<Value> = signers
        .iter()
        .map(|s| s.jwks()["keys"][0].clone())
        .collect();
    serde_json::json!({ "keys": keys })
}
