//! Provider adapters, one file each, behind one trait (`Adapter`) and one enum for static dispatch
//! (`Provider`); and what they share: the upstream HTTP client (keep-alive pools per endpoint,
//! TCP_NODELAY, connect and read timeouts), retries with backoff on retryable errors only, error
//! classification with scrubbed messages, and a server-sent-events reader.
//!
//! An adapter turns a canonical request into its provider's wire format and the reply back into
//! canonical completions or stream events, with usage taken from the provider's own fields.
//! Adapters must not meter, log prompts, read secrets (the router hands them the key), or retry
//! once a stream was handed back (by then bytes may have reached the client).

pub mod anthropic;
pub mod bedrock;
pub mod mock;
pub mod openai_compat;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use secrecy::SecretString;

use crate::domain::{ModelId, ProviderId};
use crate::models::chat::{ChatRequest, Completion, EmbeddingRequest, Embeddings, StreamEvent};
use crate::models::scrub::scrub;
use crate::registry::policy::Endpoint;

/// A stream of canonical events from a provider. Dropping it closes the upstream connection (the
/// client went away: the provider stops generating).
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, ProviderError>> + Send>>;

/// Everything an adapter needs for one call; the router builds it from the tenant's policy.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The model as the policy names it (what the ledger records).
    pub model: &'a ModelId,
    /// The name sent upstream: the model, an Azure deployment, or a Bedrock inference profile.
    pub upstream_model: &'a str,
    pub endpoint: &'a Endpoint,
    /// The tenant's key for this provider (none for the mock, for Bedrock, which signs with the
    /// deployment's AWS role, and for a self-hosted server without one).
    pub key: Option<&'a SecretString>,
    pub http: &'a Upstream,
}

/// Why a provider call failed. Messages are scrubbed of credentials before they are built.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProviderError {
    /// 401/403: the key was refused (rotated or revoked). The router refreshes it once.
    #[error("provider refused the credentials (HTTP {status})")]
    Unauthorized { status: u16 },
    /// 429: retried with backoff (honouring Retry-After), then reported.
    #[error("provider rate limit (HTTP 429)")]
    RateLimited { retry_after: Option<Duration> },
    /// 5xx, a refused connection or a timeout: retried with backoff, then reported.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// Another 4xx: the provider rejected the request itself; not retried.
    #[error("provider rejected the request (HTTP {status}): {message}")]
    Rejected { status: u16, message: String },
    /// The provider answered something this adapter cannot read.
    #[error("provider protocol error: {0}")]
    Protocol(String),
    /// The stream ended or broke before the provider finished.
    #[error("provider stream cut: {0}")]
    Cut(String),
    /// This provider has no such operation (embeddings on Anthropic).
    #[error("{0}")]
    Unsupported(std::borrow::Cow<'static, str>),
    /// No key for this provider in the secret store, or the store is unreachable past its TTL.
    #[error("provider key unavailable: {0}")]
    KeyUnavailable(String),
}

impl ProviderError {
    /// Worth another attempt (before any byte reached the client).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::RateLimited { .. } | ProviderError::Unavailable(_)
        )
    }
}

/// What every adapter implements. Futures are `Send`: calls run on the multi-threaded runtime.
pub trait Adapter {
    /// One non-streamed completion.
    fn complete(
        &self,
        call: Call<'_>,
        request: &ChatRequest,
    ) -> impl Future<Output = Result<Completion, ProviderError>> + Send;

    /// A streamed completion: returns once the provider accepted the request (status checked), with
    /// the events still to come. The adapter asks the provider for usage in the stream.
    fn stream(
        &self,
        call: Call<'_>,
        request: &ChatRequest,
    ) -> impl Future<Output = Result<EventStream, ProviderError>> + Send;

    /// Embeddings for every input.
    fn embed(
        &self,
        call: Call<'_>,
        request: &EmbeddingRequest,
    ) -> impl Future<Output = Result<Embeddings, ProviderError>> + Send;
}

/// Static dispatch over the adapters this build has.
#[derive(Debug, Clone, Copy)]
pub enum Provider {
    Mock(mock::MockProvider),
    OpenaiCompat(openai_compat::OpenaiCompat),
    Anthropic(anthropic::Anthropic),
    Bedrock(bedrock::Bedrock),
}

impl Provider {
    pub fn for_id(id: ProviderId) -> Self {
        match id {
            ProviderId::Mock => Provider::Mock(mock::MockProvider),
            ProviderId::Openai => Provider::OpenaiCompat(openai_compat::OpenaiCompat::new(
                openai_compat::Flavor::Openai,
            )),
            ProviderId::AzureOpenai => Provider::OpenaiCompat(openai_compat::OpenaiCompat::new(
                openai_compat::Flavor::Azure,
            )),
            ProviderId::OpenaiCompatible => Provider::OpenaiCompat(
                openai_compat::OpenaiCompat::new(openai_compat::Flavor::SelfHosted),
            ),
            ProviderId::Anthropic => Provider::Anthropic(anthropic::Anthropic),
            ProviderId::Bedrock => Provider::Bedrock(bedrock::Bedrock),
        }
    }

    /// Whether calls need a key from the secret store.
    pub fn needs_key(&self) -> bool {
        match self {
            Provider::Mock(_) | Provider::Bedrock(_) => false,
            Provider::OpenaiCompat(o) => o.flavor != openai_compat::Flavor::SelfHosted,
            Provider::Anthropic(_) => true,
        }
    }

    pub async fn complete(
        &self,
        call: Call<'_>,
        request: &ChatRequest,
    ) -> Result<Completion, ProviderError> {
        match self {
            Provider::Mock(p) => p.complete(call, request).await,
            Provider::OpenaiCompat(p) => p.complete(call, request).await,
            Provider::Anthropic(p) => p.complete(call, request).await,
            Provider::Bedrock(p) => p.complete(call, request).await,
        }
    }

    pub async fn stream(
        &self,
        call: Call<'_>,
        request: &ChatRequest,
    ) -> Result<EventStream, ProviderError> {
        match self {
            Provider::Mock(p) => p.stream(call, request).await,
            Provider::OpenaiCompat(p) => p.stream(call, request).await,
            Provider::Anthropic(p) => p.stream(call, request).await,
            Provider::Bedrock(p) => p.stream(call, request).await,
        }
    }

    pub async fn embed(
        &self,
        call: Call<'_>,
        request: &EmbeddingRequest,
    ) -> Result<Embeddings, ProviderError> {
        match self {
            Provider::Mock(p) => p.embed(call, request).await,
            Provider::OpenaiCompat(p) => p.embed(call, request).await,
            Provider::Anthropic(p) => p.embed(call, request).await,
            Provider::Bedrock(p) => p.embed(call, request).await,
        }
    }
}

/// The most tokens one call may report (in or out). A provider figure above it, or one that is not a
/// non-negative integer (negative, fractional, a string, NaN), is not believed: the call is counted
/// here and its row marked estimated (docs/security.md case 57), so a provider's bad number can
/// neither credit a tenant nor charge it absurdly.
pub const MAX_TOKENS_PER_CALL: u64 = 10_000_000;

/// A token count as a provider reported it, if it is a believable one (see `MAX_TOKENS_PER_CALL`).
pub fn reported_tokens(v: Option<&serde_json::Value>) -> Option<u64> {
    v?.as_u64().filter(|n| *n <= MAX_TOKENS_PER_CALL)
}

/// The string at `pointer` in a provider's JSON, or empty when it is missing or not a string.
pub fn text_at(v: &serde_json::Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Timeouts and retries of upstream calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// TCP + TLS connect timeout.
    #[serde(default = "default_connect_ms")]
    pub connect_timeout_ms: u64,
    /// The longest wait for the next bytes of a response (headers, body, or the next stream chunk).
    #[serde(default = "default_read_ms")]
    pub read_timeout_ms: u64,
    /// Attempts per model before a fallback is tried (first try included).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// First backoff; doubled each retry (a provider's Retry-After wins, up to `max_backoff_ms`).
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
}

fn default_connect_ms() -> u64 {
    5_000
}
fn default_read_ms() -> u64 {
    60_000
}
fn default_attempts() -> u32 {
    3
}
fn default_backoff_ms() -> u64 {
    100
}
fn default_max_backoff_ms() -> u64 {
    5_000
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            connect_timeout_ms: default_connect_ms(),
            read_timeout_ms: default_read_ms(),
            max_attempts: default_attempts(),
            backoff_ms: default_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
        }
    }
}

/// The upstream HTTP client: one keep-alive pool per endpoint (host), TCP_NODELAY, timeouts; and
/// the AWS credential chain for signed providers (Bedrock), loaded on first use.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub client: reqwest::Client,
    pub config: UpstreamConfig,
    aws: std::sync::Arc<
        tokio::sync::OnceCell<aws_credential_types::provider::SharedCredentialsProvider>,
    >,
}

impl Upstream {
    pub fn new(config: UpstreamConfig) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .read_timeout(Duration::from_millis(config.read_timeout_ms))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            // A provider's redirect must not carry the key elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("upstream HTTP client: {e}"))?;
        Ok(Self {
            client,
            config,
            aws: Default::default(),
        })
    }

    /// Signs with `credentials` instead of the standard chain (tests; a deployment with its own).
    pub fn with_aws_credentials(
        self,
        credentials: aws_credential_types::provider::SharedCredentialsProvider,
    ) -> Self {
        let cell = tokio::sync::OnceCell::new();
        let _ = cell.set(credentials);
        Self {
            aws: std::sync::Arc::new(cell),
            ..self
        }
    }

    /// The AWS credential chain (a Lambda's role, the environment, profiles), loaded once.
    pub async fn aws_credentials(
        &self,
    ) -> Result<aws_credential_types::provider::SharedCredentialsProvider, ProviderError> {
        self.aws
            .get_or_try_init(|| async {
                let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                sdk.credentials_provider().ok_or_else(|| {
                    ProviderError::KeyUnavailable("no AWS credentials are configured".into())
                })
            })
            .await
            .cloned()
    }

    /// Sends the request `build` makes, retrying retryable failures with backoff, and returns the
    /// response once its status is a success. Errors are classified and scrubbed of `key`.
    pub async fn send(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
        key: Option<&SecretString>,
    ) -> Result<reqwest::Response, ProviderError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            // The call continues the request's trace (W3C `traceparent`).
            let mut trace = http::HeaderMap::new();
            crate::telemetry::inject_current(&mut trace);
            let error = match build().headers(trace).send().await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => classify(response, key).await,
                Err(e) => transport_error(&e, key),
            };
            if !error.is_retryable() || attempt >= self.config.max_attempts.max(1) {
                return Err(error);
            }
            tokio::time::sleep(self.backoff(attempt, &error)).await;
        }
    }

    fn backoff(&self, attempt: u32, error: &ProviderError) -> Duration {
        let max = Duration::from_millis(self.config.max_backoff_ms);
        if let ProviderError::RateLimited {
            retry_after: Some(after),
        } = error
        {
            return (*after).min(max);
        }
        let base = self
            .config
            .backoff_ms
            .saturating_mul(1 << (attempt - 1).min(10));
        // Jitter of up to a quarter, so retries of many requests spread out.
        let jitter = base / 4 * u64::from(uuid::Uuid::new_v4().as_bytes()[0]) / 255;
        Duration::from_millis(base + jitter).min(max)
    }
}

/// A transport failure (connect refused, timeout, reset), scrubbed.
pub fn transport_error(error: &reqwest::Error, key: Option<&SecretString>) -> ProviderError {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "connection failed"
    };
    ProviderError::Unavailable(scrub(&format!("{what}: {error}"), key))
}

/// A non-success response as a `ProviderError`, its body read (bounded) and scrubbed.
pub async fn classify(response: reqwest::Response, key: Option<&SecretString>) -> ProviderError {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = read_bounded(response, 16 * 1024).await.unwrap_or_default();
    // The provider's own message when its body is a JSON error (OpenAI's and Anthropic's
    // `error.message`, Bedrock's `message`), else the text; scrubbed either way.
    let text = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.get("message"))
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    let message = scrub(&text, key);
    match status {
        401 | 403 => ProviderError::Unauthorized { status },
        429 => ProviderError::RateLimited { retry_after },
        408 | 500..=599 => ProviderError::Unavailable(format!("HTTP {status}: {message}")),
        _ => ProviderError::Rejected { status, message },
    }
}

/// At most `limit` bytes of a response body.
pub async fn read_bounded(
    response: reqwest::Response,
    limit: usize,
) -> Result<Bytes, ProviderError> {
    let mut out = BytesMut::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ProviderError::Cut(scrub(&e.to_string(), None)))?;
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    Ok(out.freeze())
}

/// A JSON response body (at most 32 MiB), parsed.
pub async fn read_json<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> Result<T, ProviderError> {
    let body = read_bounded(response, 32 << 20).await?;
    serde_json::from_slice(&body)
        .map_err(|e| ProviderError::Protocol(format!("unreadable response body: {e}")))
}

/// One server-sent event: its `event:` name (if any) and its joined `data:` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Splits a byte stream into server-sent events as they arrive (no buffering beyond one event).
#[derive(Debug, Default)]
pub struct SseReader {
    buffer: BytesMut,
}

impl SseReader {
    /// Feeds bytes; returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buffer.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some((end, skip)) = find_event_end(&self.buffer) {
            let raw = self.buffer.split_to(end + skip);
            let text = String::from_utf8_lossy(&raw[..end]);
            let mut event = None;
            let mut data: Vec<&str> = Vec::new();
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v));
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_owned());
                }
            }
            if !data.is_empty() || event.is_some() {
                out.push(SseEvent {
                    event,
                    data: data.join("\n"),
                });
            }
        }
        out
    }
}

/// The end of the first complete event (a blank line), and the length of the separator.
fn find_event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// Turns an HTTP response body into canonical events with `parse`, which reads one SSE event and
/// returns the events it means (or `Ok(None)` at the provider's end-of-stream marker). A body that
/// ends before the provider finished yields `ProviderError::Cut` last.
pub fn sse_events<F>(response: reqwest::Response, parse: F) -> EventStream
where
    F: FnMut(&SseEvent) -> Result<Option<Vec<StreamEvent>>, ProviderError> + Send + 'static,
{
    struct State<B, F> {
        body: B,
        reader: SseReader,
        pending: std::collections::VecDeque<StreamEvent>,
        done: bool,
        parse: F,
    }
    let state = State {
        body: response.bytes_stream(),
        reader: SseReader::default(),
        pending: std::collections::VecDeque::new(),
        done: false,
        parse,
    };
    Box::pin(futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(event) = s.pending.pop_front() {
                return Some((Ok(event), s));
            }
            if s.done {
                return None;
            }
            match s.body.next().await {
                Some(Ok(chunk)) => {
                    for sse in s.reader.feed(&chunk) {
                        match (s.parse)(&sse) {
                            Ok(Some(events)) => s.pending.extend(events),
                            Ok(None) => {
                                s.done = true;
                                break;
                            }
                            Err(e) => {
                                s.done = true;
                                s.pending.clear();
                                return Some((Err(e), s));
                            }
                        }
                    }
                }
                Some(Err(e)) => {
                    s.done = true;
                    let error = ProviderError::Cut(scrub(&e.to_string(), None));
                    return Some((Err(error), s));
                }
                None => {
                    s.done = true;
                    let error = ProviderError::Cut(
                        "the provider closed the stream before it finished".into(),
                    );
                    return Some((Err(error), s));
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_are_split_as_they_complete_whatever_the_chunking() {
        let text = b"event: a\ndata: {\"x\":1}\n\ndata: line1\ndata: line2\r\n\r\n: comment\n\ndata: [DONE]\n\n";
        for cut in 1..text.len() {
            let mut reader = SseReader::default();
            let mut events = reader.feed(&text[..cut]);
            events.extend(reader.feed(&text[cut..]));
            assert_eq!(
                events,
                vec![
                    SseEvent {
                        event: Some("a".into()),
                        data: "{\"x\":1}".into()
                    },
                    SseEvent {
                        event: None,
                        data: "line1\nline2".into()
                    },
                    SseEvent {
                        event: None,
                        data: "[DONE]".into()
                    },
                ],
                "cut at {cut}"
            );
        }
    }
}
