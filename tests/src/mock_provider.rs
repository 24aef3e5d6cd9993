//! A mock LLM provider server on the wire: speaks OpenAI (and Azure OpenAI's deployment paths, and
//! so every OpenAI-compatible server), Anthropic Messages and Bedrock Converse/ConverseStream over
//! real HTTP; streams real SSE and AWS event-stream frames with configurable delays; injects errors
//! (401 echoing the key, 429 with Retry-After, 500, a mid-stream disconnect); and records what it
//! received, so tests can assert which key reached it. Tests and the benchmark use it (the
//! `mock-provider` binary serves it standalone); it is the only fake in the model path.
//!
//! Replies are deterministic: token counts are whitespace words, so tests can predict usage.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// Which wire format a request came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Openai,
    Azure,
    Anthropic,
    Bedrock,
}

/// A fault applied to the next request (in the order queued).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 401 whose body (and `www-authenticate` header) echo the key the request carried.
    Unauthorized,
    /// 429 with `Retry-After: secs`.
    RateLimited { retry_after_secs: u64 },
    /// 500 with a body.
    ServerError,
    /// 400 whose body echoes the key the request carried (as some providers' validation errors do).
    BadRequestEchoingKey,
    /// A stream that sends this many content chunks, then drops the connection.
    CutAfter(usize),
}

/// What one request carried.
#[derive(Debug, Clone)]
pub struct Received {
    pub wire: Wire,
    pub path: String,
    pub query: Option<String>,
    /// The credential as sent: the bearer token, `x-api-key`, `api-key`, or the SigV4 access key id.
    pub credential: Option<String>,
    pub body: Value,
}

/// How replies are produced.
#[derive(Debug, Clone)]
pub struct Config {
    /// Before the first chunk of a stream (time to first token).
    pub first_chunk_delay: Duration,
    /// Between chunks.
    pub chunk_delay: Duration,
    /// Reply length in words (one word per chunk).
    pub words: usize,
    /// Send no usage at all (the gateway must count and mark it estimated).
    pub omit_usage: bool,
    /// Keep a record of every request (tests); off for long benchmark runs.
    pub record: bool,
    /// OpenAI wire: send this as `usage` instead of the true counts (a provider's bad figures).
    pub usage_override: Option<Value>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            first_chunk_delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            words: 12,
            omit_usage: false,
            record: true,
            usage_override: None,
        }
    }
}

#[derive(Debug, Default)]
pub struct Shared {
    pub config: Mutex<Config>,
    faults: Mutex<VecDeque<Fault>>,
    received: Mutex<Vec<Received>>,
    /// When set, only these credentials are accepted (anything else: 401 echoing it).
    accepted: Mutex<Option<HashSet<String>>>,
    /// Streams whose client went away before the end.
    pub cancelled_streams: std::sync::atomic::AtomicU64,
    pub completed_streams: std::sync::atomic::AtomicU64,
    /// Numbers each reply's id (`chatcmpl-mock-<n>`, `msg_mock_<n>`, Bedrock's `x-amzn-RequestId`).
    pub replies: std::sync::atomic::AtomicU64,
}

/// A running mock provider.
impl Shared {
    fn next_reply(&self) -> u64 {
        self.replies
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

#[derive(Debug)]
pub struct MockProvider {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockProvider {
    /// Starts one on a free loopback port.
    pub async fn start(config: Config) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), config).await
    }

    pub async fn start_on(addr: SocketAddr, config: Config) -> Self {
        let shared = Arc::new(Shared {
            config: Mutex::new(config),
            ..Shared::default()
        });
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = app(shared.clone());
        let task = tokio::spawn(async move {
            use axum::serve::ListenerExt as _;
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues faults for the next requests, in order.
    pub fn fail_next(&self, faults: impl IntoIterator<Item = Fault>) {
        self.shared.faults.lock().unwrap().extend(faults);
    }

    /// Accepts only `keys` from now on.
    pub fn accept_only(&self, keys: &[&str]) {
        *self.shared.accepted.lock().unwrap() =
            Some(keys.iter().map(|k| (*k).to_owned()).collect());
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.shared.received.lock().unwrap().clear();
    }

    pub fn set_config(&self, edit: impl FnOnce(&mut Config)) {
        edit(&mut self.shared.config.lock().unwrap());
    }
}

/// The mock's router (also served by the `mock-provider` binary).
pub fn app(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai_chat))
        .route("/v1/embeddings", post(openai_embeddings))
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(azure_chat),
        )
        .route(
            "/openai/deployments/{deployment}/embeddings",
            post(azure_embeddings),
        )
        .route("/v1/messages", post(anthropic_messages))
        .route("/model/{model}/converse", post(bedrock_converse))
        .route(
            "/model/{model}/converse-stream",
            post(bedrock_converse_stream),
        )
        .with_state(shared)
}

fn credential(wire: Wire, headers: &HeaderMap) -> Option<String> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    match wire {
        Wire::Openai => get("authorization").map(|v| v.trim_start_matches("Bearer ").to_owned()),
        Wire::Azure => get("api-key"),
        Wire::Anthropic => get("x-api-key"),
        Wire::Bedrock => {
            let auth = get("authorization")?;
            let credential = auth
                .split("Credential=")
                .nth(1)?
                .split('/')
                .next()?
                .to_owned();
            Some(credential)
        }
    }
}

/// Records the request and decides its fault, if any (a refused key is a 401 fault).
fn admit(
    shared: &Shared,
    wire: Wire,
    path: String,
    query: Option<String>,
    headers: &HeaderMap,
    body: &Value,
) -> Option<(Fault, Option<String>)> {
    let key = credential(wire, headers);
    let record = shared.config.lock().unwrap().record;
    if record {
        shared.received.lock().unwrap().push(Received {
            wire,
            path,
            query,
            credential: key.clone(),
            body: body.clone(),
        });
    }
    if wire == Wire::Bedrock {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !auth.starts_with("AWS4-HMAC-SHA256 Credential=")
            || !auth.contains("/bedrock/aws4_request")
            || !auth.contains("Signature=")
        {
            return Some((Fault::Unauthorized, key));
        }
    }
    if let Some(accepted) = shared.accepted.lock().unwrap().as_ref()
        && !key.as_ref().is_some_and(|k| accepted.contains(k))
    {
        return Some((Fault::Unauthorized, key));
    }
    shared.faults.lock().unwrap().pop_front().map(|f| (f, key))
}

fn error_response(wire: Wire, fault: &Fault, key: Option<&str>) -> Option<Response> {
    let key = key.unwrap_or("(none)");
    let (status, message) = match fault {
        Fault::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            format!(
                "Incorrect API key provided: {key}. You can find your API key in your account settings."
            ),
        ),
        Fault::RateLimited { .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "Rate limit reached for requests".to_owned(),
        ),
        Fault::ServerError => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "The server had an error while processing your request.".to_owned(),
        ),
        Fault::BadRequestEchoingKey => (
            StatusCode::BAD_REQUEST,
            format!("Invalid value for 'model' sent with key {key}: check the deployment name."),
        ),
        Fault::CutAfter(_) => return None,
    };
    let body = match wire {
        Wire::Openai | Wire::Azure => {
            json!({"error": {"message": message, "type": "invalid_request_error", "code": status.as_u16()}})
        }
        Wire::Anthropic => {
            json!({"type": "error", "error": {"type": "api_error", "message": message}})
        }
        Wire::Bedrock => json!({"message": message}),
    };
    let mut response = (status, axum::Json(body)).into_response();
    if let Fault::RateLimited { retry_after_secs } = fault {
        response
            .headers_mut()
            .insert("retry-after", retry_after_secs.to_string().parse().unwrap());
    }
    if matches!(fault, Fault::Unauthorized)
        && let Ok(v) = format!("Bearer realm=\"{key}\"").parse()
    {
        response.headers_mut().insert("www-authenticate", v);
    }
    Some(response)
}

/// The deterministic reply: text words (or a tool call, or JSON), and the prompt's token count.
struct Reply {
    words: Vec<String>,
    /// Cut short by the request's token limit.
    truncated: bool,
    tool: Option<(String, [&'static str; 2])>,
    prompt_tokens: u64,
}

fn words_of(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.split_whitespace().count() as u64,
        Value::Array(a) => a.iter().map(words_of).sum(),
        Value::Object(o) => o
            .get("text")
            .or_else(|| o.get("content"))
            .map_or(0, words_of),
        _ => 0,
    }
}

fn reply(shared: &Shared, model: &str, body: &Value) -> Reply {
    let config = shared.config.lock().unwrap().clone();
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut prompt_tokens: u64 = messages
        .iter()
        .map(|m| words_of(m.get("content").unwrap_or(&Value::Null)))
        .sum();
    prompt_tokens += body.get("system").map_or(0, words_of);
    let tools = body
        .get("tools")
        .or_else(|| body.pointer("/toolConfig/tools"))
        .and_then(Value::as_array);
    let choice_none = matches!(body.get("tool_choice"), Some(Value::String(s)) if s == "none")
        || body.pointer("/tool_choice/type").and_then(Value::as_str) == Some("none");
    let tool_name = tools
        .and_then(|t| t.first())
        .filter(|_| !choice_none)
        .and_then(|t| {
            t.pointer("/function/name")
                .or_else(|| t.get("name"))
                .or_else(|| t.pointer("/toolSpec/name"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
    if let Some(name) = tool_name {
        return Reply {
            words: Vec::new(),
            truncated: false,
            tool: Some((name, ["{\"city\":", "\"Paris\"}"])),
            prompt_tokens,
        };
    }
    let json_mode = body
        .pointer("/response_format/type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.starts_with("json"));
    let mut words: Vec<String> = if json_mode {
        vec!["{\"answer\":".into(), "\"mock\"}".into()]
    } else {
        let last_user = messages
            .iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"));
        let echo: Vec<String> = match last_user.and_then(|m| m.get("content")) {
            Some(Value::String(s)) => s.split_whitespace().take(6).map(str::to_owned).collect(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .flat_map(|s| {
                    s.split_whitespace()
                        .take(6)
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .collect(),
            _ => Vec::new(),
        };
        let mut w = vec![
            "mock".to_owned(),
            "reply".to_owned(),
            "from".to_owned(),
            model.to_owned(),
        ];
        w.extend(echo);
        w
    };
    let max = body
        .get("max_tokens")
        .or_else(|| body.get("max_completion_tokens"))
        .or_else(|| body.pointer("/inferenceConfig/maxTokens"))
        .and_then(Value::as_u64)
        .map_or(usize::MAX, |m| m as usize);
    let mut i = 0;
    while words.len() < config.words && !json_mode {
        words.push(format!("word{i}"));
        i += 1;
    }
    let truncated = words.len() > max.max(1);
    words.truncate(max.max(1));
    Reply {
        words,
        truncated,
        tool: None,
        prompt_tokens,
    }
}

fn spaced(words: &[String]) -> Vec<String> {
    words
        .iter()
        .enumerate()
        .map(|(i, w)| if i == 0 { w.clone() } else { format!(" {w}") })
        .collect()
}

/// A streamed body of `frames`, paced by the config, cut after `cut` frames if set; counts whether
/// the client stayed to the end.
fn paced(
    shared: Arc<Shared>,
    frames: Vec<Bytes>,
    content_frames: usize,
    cut: Option<usize>,
    content_type: &'static str,
) -> Response {
    let config = shared.config.lock().unwrap().clone();
    struct Guard {
        shared: Arc<Shared>,
        done: bool,
    }
    impl Drop for Guard {
        fn drop(&mut self) {
            let counter = if self.done {
                &self.shared.completed_streams
            } else {
                &self.shared.cancelled_streams
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let guard = Guard {
        shared,
        done: false,
    };
    let total = frames.len();
    let stream = futures_util::stream::unfold(
        (frames.into_iter().enumerate(), guard),
        move |(mut it, mut guard)| {
            let config = config.clone();
            async move {
                let (i, frame) = it.next()?;
                let delay = if i == 0 {
                    config.first_chunk_delay
                } else {
                    config.chunk_delay
                };
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if let Some(n) = cut {
                    // A content frame index past the cut: drop the connection mid-stream (after the
                    // pause, so what was sent before has left).
                    if i > n.min(content_frames) {
                        guard.done = true;
                        return Some((
                            Err(std::io::Error::other("mock provider: injected disconnect")),
                            (it, guard),
                        ));
                    }
                }
                if i + 1 == total {
                    guard.done = true;
                }
                Some((Ok::<_, std::io::Error>(frame), (it, guard)))
            }
        },
    );
    let mut response = Response::new(Body::from_stream(stream));
    response
        .headers_mut()
        .insert("content-type", content_type.parse().unwrap());
    response
}

fn sse(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

fn named(event: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

async fn openai_chat(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    chat_openai_like(
        s,
        Wire::Openai,
        "/v1/chat/completions".into(),
        None,
        &headers,
        body,
    )
    .await
}

async fn azure_chat(
    State(s): State<Arc<Shared>>,
    Path(deployment): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/openai/deployments/{deployment}/chat/completions");
    chat_openai_like(
        s,
        Wire::Azure,
        path,
        uri.query().map(str::to_owned),
        &headers,
        body,
    )
    .await
}

async fn chat_openai_like(
    s: Arc<Shared>,
    wire: Wire,
    path: String,
    query: Option<String>,
    headers: &HeaderMap,
    raw: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&raw) else {
        return (StatusCode::BAD_REQUEST, "not json").into_response();
    };
    let fault = admit(&s, wire, path, query, headers, &body);
    if let Some((f, key)) = &fault
        && let Some(r) = error_response(wire, f, key.as_deref())
    {
        return r;
    }
    let cut = match fault {
        Some((Fault::CutAfter(n), _)) => Some(n),
        _ => None,
    };
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_owned();
    let r = reply(&s, &model, &body);
    let omit_usage = s.config.lock().unwrap().omit_usage;
    let completion_tokens = if r.tool.is_some() {
        6
    } else {
        r.words.len() as u64
    };
    let usage = s.config.lock().unwrap().usage_override.clone().unwrap_or_else(|| {
        json!({"prompt_tokens": r.prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": r.prompt_tokens + completion_tokens})
    });
    let id = format!("chatcmpl-mock-{}", s.next_reply());
    if body.get("stream").and_then(Value::as_bool) != Some(true) {
        let (message, finish) = match &r.tool {
            Some((name, parts)) => (
                json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": name, "arguments": parts.concat()}}]}),
                "tool_calls",
            ),
            None => (
                json!({"role": "assistant", "content": r.words.join(" ")}),
                if r.truncated { "length" } else { "stop" },
            ),
        };
        let mut out = json!({"id": id, "object": "chat.completion", "created": 0, "model": model, "choices": [{"index": 0, "message": message, "finish_reason": finish}]});
        if !omit_usage {
            out["usage"] = usage;
        }
        return axum::Json(out).into_response();
    }
    let chunk = |delta: Value, finish: Value| json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    let mut frames = vec![sse(&chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    ))];
    let finish = match &r.tool {
        Some((name, parts)) => {
            frames.push(sse(&chunk(json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": name, "arguments": parts[0]}}]}), Value::Null)));
            frames.push(sse(&chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": parts[1]}}]}),
                Value::Null,
            )));
            "tool_calls"
        }
        None => {
            for w in spaced(&r.words) {
                frames.push(sse(&chunk(json!({"content": w}), Value::Null)));
            }
            if r.truncated { "length" } else { "stop" }
        }
    };
    let content_frames = frames.len();
    frames.push(sse(&chunk(json!({}), json!(finish))));
    let wants_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true);
    if wants_usage && !omit_usage {
        frames.push(sse(&json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [], "usage": usage})));
    }
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    paced(s, frames, content_frames, cut, "text/event-stream")
}

async fn embeddings_like(
    s: Arc<Shared>,
    wire: Wire,
    path: String,
    query: Option<String>,
    headers: &HeaderMap,
    raw: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&raw) else {
        return (StatusCode::BAD_REQUEST, "not json").into_response();
    };
    if let Some((f, key)) = admit(&s, wire, path, query, headers, &body)
        && let Some(r) = error_response(wire, &f, key.as_deref())
    {
        return r;
    }
    let inputs: Vec<String> = match body.get("input") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    let dims = body.get("dimensions").and_then(Value::as_u64).unwrap_or(4) as usize;
    let data: Vec<Value> = inputs.iter().enumerate().map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": (0..dims).map(|d| (t.len() + d) as f64 / 100.0).collect::<Vec<_>>()})).collect();
    let tokens: u64 = inputs
        .iter()
        .map(|t| t.split_whitespace().count() as u64)
        .sum();
    axum::Json(json!({"object": "list", "data": data, "model": body.get("model"), "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})).into_response()
}

async fn openai_embeddings(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    embeddings_like(
        s,
        Wire::Openai,
        "/v1/embeddings".into(),
        None,
        &headers,
        body,
    )
    .await
}

async fn azure_embeddings(
    State(s): State<Arc<Shared>>,
    Path(deployment): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/openai/deployments/{deployment}/embeddings");
    embeddings_like(
        s,
        Wire::Azure,
        path,
        uri.query().map(str::to_owned),
        &headers,
        body,
    )
    .await
}

async fn anthropic_messages(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&raw) else {
        return (StatusCode::BAD_REQUEST, "not json").into_response();
    };
    if headers.get("anthropic-version").is_none() {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"type": "error", "error": {"type": "invalid_request_error", "message": "anthropic-version header is required"}}))).into_response();
    }
    let fault = admit(
        &s,
        Wire::Anthropic,
        "/v1/messages".into(),
        None,
        &headers,
        &body,
    );
    if let Some((f, key)) = &fault
        && let Some(r) = error_response(Wire::Anthropic, f, key.as_deref())
    {
        return r;
    }
    let cut = match fault {
        Some((Fault::CutAfter(n), _)) => Some(n),
        _ => None,
    };
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_owned();
    let r = reply(&s, &model, &body);
    let msg_id = format!("msg_mock_{}", s.next_reply());
    let output_tokens = if r.tool.is_some() {
        6
    } else {
        r.words.len() as u64
    };
    let stop = if r.tool.is_some() {
        "tool_use"
    } else {
        "end_turn"
    };
    if body.get("stream").and_then(Value::as_bool) != Some(true) {
        let content = match &r.tool {
            Some((name, _)) => {
                json!([{"type": "tool_use", "id": "toolu_1", "name": name, "input": {"city": "Paris"}}])
            }
            None => json!([{"type": "text", "text": r.words.join(" ")}]),
        };
        return axum::Json(json!({"id": msg_id, "type": "message", "role": "assistant", "model": model, "content": content, "stop_reason": stop, "stop_sequence": null, "usage": {"input_tokens": r.prompt_tokens, "output_tokens": output_tokens}})).into_response();
    }
    let mut frames = vec![named(
        "message_start",
        &json!({"type": "message_start", "message": {"id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "usage": {"input_tokens": r.prompt_tokens, "output_tokens": 1}}}),
    )];
    match &r.tool {
        Some((name, parts)) => {
            frames.push(named("content_block_start", &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_1", "name": name, "input": {}}})));
            for p in parts {
                frames.push(named("content_block_delta", &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": p}})));
            }
        }
        None => {
            frames.push(named("content_block_start", &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
            frames.push(named("ping", &json!({"type": "ping"})));
            for w in spaced(&r.words) {
                frames.push(named("content_block_delta", &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}})));
            }
        }
    }
    let content_frames = frames.len();
    frames.push(named(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    frames.push(named("message_delta", &json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": output_tokens}})));
    frames.push(named("message_stop", &json!({"type": "message_stop"})));
    paced(s, frames, content_frames, cut, "text/event-stream")
}

fn bedrock_body(
    s: &Shared,
    model: &str,
    headers: &HeaderMap,
    raw: &Bytes,
    path: String,
) -> Result<(Value, Reply, Option<usize>), Box<Response>> {
    let Ok(body) = serde_json::from_slice::<Value>(raw) else {
        return Err(Box::new(
            (StatusCode::BAD_REQUEST, "not json").into_response(),
        ));
    };
    let fault = admit(s, Wire::Bedrock, path, None, headers, &body);
    if let Some((f, key)) = &fault
        && let Some(r) = error_response(Wire::Bedrock, f, key.as_deref())
    {
        return Err(Box::new(r));
    }
    let cut = match fault {
        Some((Fault::CutAfter(n), _)) => Some(n),
        _ => None,
    };
    let r = reply(s, model, &body);
    Ok((body, r, cut))
}

async fn bedrock_converse(
    State(s): State<Arc<Shared>>,
    Path(model): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let (_, r, _) = match bedrock_body(
        &s,
        &model,
        &headers,
        &raw,
        format!("/model/{model}/converse"),
    ) {
        Ok(v) => v,
        Err(response) => return *response,
    };
    let (content, stop, output) = match &r.tool {
        Some((name, _)) => (
            json!([{"toolUse": {"toolUseId": "tooluse_1", "name": name, "input": {"city": "Paris"}}}]),
            "tool_use",
            6,
        ),
        None => (
            json!([{"text": r.words.join(" ")}]),
            "end_turn",
            r.words.len() as u64,
        ),
    };
    let mut response = axum::Json(json!({"output": {"message": {"role": "assistant", "content": content}}, "stopReason": stop, "usage": {"inputTokens": r.prompt_tokens, "outputTokens": output, "totalTokens": r.prompt_tokens + output}, "metrics": {"latencyMs": 1}})).into_response();
    aws_request_id(&s, &mut response);
    response
}

/// Bedrock names each call in `x-amzn-RequestId`.
fn aws_request_id(s: &Shared, response: &mut Response) {
    let id = format!("00000000-0000-4000-8000-{:012}", s.next_reply());
    if let Ok(v) = axum::http::HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-amzn-requestid", v);
    }
}

fn frame(event: &str, payload: &Value) -> Bytes {
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
    let message = Message::new(Bytes::from(payload.to_string()))
        .add_header(Header::new(
            ":event-type",
            HeaderValue::String(event.to_owned().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("event".into()),
        ));
    let mut out = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&message, &mut out).unwrap();
    Bytes::from(out)
}

async fn bedrock_converse_stream(
    State(s): State<Arc<Shared>>,
    Path(model): Path<String>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let (_, r, cut) = match bedrock_body(
        &s,
        &model,
        &headers,
        &raw,
        format!("/model/{model}/converse-stream"),
    ) {
        Ok(v) => v,
        Err(response) => return *response,
    };
    let mut frames = vec![frame("messageStart", &json!({"role": "assistant"}))];
    let (stop, output) = match &r.tool {
        Some((name, parts)) => {
            frames.push(frame("contentBlockStart", &json!({"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "tooluse_1", "name": name}}})));
            for p in parts {
                frames.push(frame(
                    "contentBlockDelta",
                    &json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": p}}}),
                ));
            }
            ("tool_use", 6)
        }
        None => {
            for w in spaced(&r.words) {
                frames.push(frame(
                    "contentBlockDelta",
                    &json!({"contentBlockIndex": 0, "delta": {"text": w}}),
                ));
            }
            ("end_turn", r.words.len() as u64)
        }
    };
    let content_frames = frames.len();
    frames.push(frame("contentBlockStop", &json!({"contentBlockIndex": 0})));
    frames.push(frame("messageStop", &json!({"stopReason": stop})));
    frames.push(frame("metadata", &json!({"usage": {"inputTokens": r.prompt_tokens, "outputTokens": output, "totalTokens": r.prompt_tokens + output}, "metrics": {"latencyMs": 1}})));
    let mut response = paced(
        s.clone(),
        frames,
        content_frames,
        cut,
        "application/vnd.amazon.eventstream",
    );
    aws_request_id(&s, &mut response);
    response
}
