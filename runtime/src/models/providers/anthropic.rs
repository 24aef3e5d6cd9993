//! The Anthropic Messages API (`POST /v1/messages`, `x-api-key`, `anthropic-version`): system
//! messages lifted to `system`, tool calls as `tool_use` / `tool_result` blocks, streams read from
//! its named SSE events (`message_start` carries input usage, `message_delta` the output usage and
//! stop reason, `message_stop` ends it). Anthropic has no embeddings and no JSON mode: asking for
//! either is refused, never silently ignored. This module must not meter, log prompts or retry a
//! stream.

use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::{
    Adapter, Call, EventStream, ProviderError, SseEvent, read_json, reported_tokens, sse_events,
    text_at,
};
use crate::models::chat::{
    ChatRequest, Completion, EmbeddingRequest, Embeddings, FinishReason, Reported, Role,
    StreamEvent, ToolCall, ToolChoice, Usage, estimate_input, estimate_tokens,
};

const BASE: &str = "https://api.anthropic.com";
/// The API version this adapter speaks.
pub const VERSION: &str = "2023-06-01";
/// `max_tokens` is required by the Messages API; used when neither the request nor the policy sets it.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

#[derive(Debug, Clone, Copy)]
pub struct Anthropic;

fn body(call: &Call<'_>, request: &ChatRequest, stream: bool) -> Result<Value, ProviderError> {
    crate::models::chat::check_carried(request, "anthropic", false, false, true)
        .map_err(|e| ProviderError::Unsupported(e.into()))?;
    if request.response_format.is_some() {
        return Err(ProviderError::Unsupported(
            "`response_format` (JSON mode) is not supported by provider `anthropic`".into(),
        ));
    }
    let system: Vec<&str> = request
        .messages
        .iter()
        .filter(|m| matches!(m.role, Role::System | Role::Developer))
        .map(|m| m.content.as_str())
        .collect();
    let mut messages: Vec<Value> = Vec::new();
    for m in &request.messages {
        let (role, content) = match m.role {
            Role::System | Role::Developer => continue,
            Role::User => ("user", json!(m.content)),
            Role::Assistant if m.tool_calls.is_empty() => ("assistant", json!(m.content)),
            Role::Assistant => {
                let mut blocks = Vec::new();
                if !m.content.is_empty() {
                    blocks.push(json!({"type": "text", "text": m.content}));
                }
                for c in &m.tool_calls {
                    let input: Value =
                        serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!({}));
                    blocks.push(
                        json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}),
                    );
                }
                ("assistant", Value::Array(blocks))
            }
            Role::Tool => (
                "user",
                json!([{"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content, "is_error": m.is_error}]),
            ),
        };
        messages.push(json!({"role": role, "content": content}));
    }
    let mut body = json!({
        "model": call.upstream_model,
        "max_tokens": request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        "messages": messages,
    });
    let Some(obj) = body.as_object_mut() else {
        return Ok(body);
    };
    if !system.is_empty() {
        obj.insert("system".into(), json!(system.join("\n\n")));
    }
    if stream {
        obj.insert("stream".into(), Value::Bool(true));
    }
    if let Some(t) = &request.temperature {
        obj.insert("temperature".into(), Value::Number(t.clone()));
    }
    if let Some(t) = &request.top_p {
        obj.insert("top_p".into(), Value::Number(t.clone()));
    }
    if !request.stop.is_empty() {
        obj.insert("stop_sequences".into(), json!(request.stop));
    }
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|t| {
                let mut v = json!({"name": t.name, "input_schema": t.parameters});
                if let (Some(d), Some(o)) = (&t.description, v.as_object_mut()) {
                    o.insert("description".into(), json!(d));
                }
                v
            })
            .collect();
        obj.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = &request.tool_choice {
        let v = match choice {
            ToolChoice::Auto => json!({"type": "auto"}),
            ToolChoice::None => json!({"type": "none"}),
            ToolChoice::Required => json!({"type": "any"}),
            ToolChoice::Function(name) => json!({"type": "tool", "name": name}),
        };
        obj.insert("tool_choice".into(), v);
    }
    Ok(body)
}

fn stop_reason(raw: &str) -> FinishReason {
    match raw {
        "max_tokens" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

fn request(call: &Call<'_>, url: &str, body: &Value) -> reqwest::RequestBuilder {
    let mut builder = call
        .http
        .client
        .post(url)
        .header("anthropic-version", VERSION)
        .json(body);
    if let Some(key) = call.key {
        builder = builder.header("x-api-key", key.expose_secret());
    }
    builder
}

fn url(call: &Call<'_>) -> String {
    format!(
        "{}/v1/messages",
        call.endpoint
            .base_url
            .as_deref()
            .unwrap_or(BASE)
            .trim_end_matches('/')
    )
}

/// Cache reads and writes of an Anthropic `usage` object (0 when absent or not believable).
fn cache_of(usage: Option<&Value>) -> (u64, u64) {
    let part = |name: &str| reported_tokens(usage.and_then(|u| u.get(name))).unwrap_or(0);
    (
        part("cache_read_input_tokens"),
        part("cache_creation_input_tokens"),
    )
}

/// Anthropic's `input_tokens` leave out the cache's: the call's input is all three.
fn with_cache(input_tokens: u64, output_tokens: u64, (read, write): (u64, u64)) -> Usage {
    Usage {
        input_tokens: input_tokens.saturating_add(read).saturating_add(write),
        output_tokens,
        estimated: false,
        cached_input_tokens: read,
        cache_write_tokens: write,
        reasoning_tokens: 0,
    }
    .classes()
}

/// Reads an Anthropic stream: tool-use blocks are numbered among tool calls only, so a text block
/// before them does not shift OpenAI-style tool call indexes.
#[derive(Debug, Default)]
struct StreamState {
    /// From `message_start`, when the provider gave a believable figure.
    input_tokens: Option<u64>,
    /// Cache reads and writes from `message_start` (billed apart from `input_tokens`).
    cache: (u64, u64),
    /// Anthropic content block index -> tool call index.
    tool_blocks: Vec<(u64, u32)>,
    /// `message_start`'s usage object, kept with `message_delta`'s as the call's raw usage.
    start_usage: Option<Value>,
}

impl StreamState {
    fn parse(&mut self, sse: &SseEvent) -> Result<Option<Vec<StreamEvent>>, ProviderError> {
        let kind = sse.event.as_deref().unwrap_or_default();
        if kind == "message_stop" {
            return Ok(None);
        }
        if kind == "ping" || sse.data.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let v: Value = serde_json::from_str(&sse.data)
            .map_err(|e| ProviderError::Protocol(format!("unreadable stream event: {e}")))?;
        let kind = v.get("type").and_then(Value::as_str).unwrap_or(kind);
        let mut out = Vec::new();
        match kind {
            "message_start" => {
                self.input_tokens = reported_tokens(v.pointer("/message/usage/input_tokens"));
                self.cache = cache_of(v.pointer("/message/usage"));
                self.start_usage = v.pointer("/message/usage").cloned();
                out.push(StreamEvent::Reported(Reported {
                    request_id: Reported::id(v.pointer("/message/id").and_then(Value::as_str)),
                    ..Reported::default()
                }));
            }
            "content_block_start" => {
                let block = v.get("content_block");
                if block.and_then(|b| b.get("type")).and_then(Value::as_str) == Some("tool_use") {
                    let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                    let tool_index = u32::try_from(self.tool_blocks.len()).unwrap_or(u32::MAX);
                    self.tool_blocks.push((index, tool_index));
                    out.push(StreamEvent::ToolCall {
                        index: tool_index,
                        id: block
                            .and_then(|b| b.get("id"))
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                        name: block
                            .and_then(|b| b.get("name"))
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                        arguments: String::new(),
                    });
                }
            }
            "content_block_delta" => {
                let delta = v.get("delta");
                match delta.and_then(|d| d.get("type")).and_then(Value::as_str) {
                    Some("text_delta") => {
                        if let Some(t) = delta.and_then(|d| d.get("text")).and_then(Value::as_str) {
                            out.push(StreamEvent::Text(t.to_owned()));
                        }
                    }
                    Some("input_json_delta") => {
                        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let tool_index = self
                            .tool_blocks
                            .iter()
                            .find(|(b, _)| *b == index)
                            .map_or(0, |(_, t)| *t);
                        out.push(StreamEvent::ToolCall {
                            index: tool_index,
                            id: None,
                            name: None,
                            arguments: delta
                                .and_then(|d| d.get("partial_json"))
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                        });
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    out.push(StreamEvent::Finish(stop_reason(reason)));
                }
                if let Some(usage) = v.get("usage") {
                    let both = serde_json::json!({
                        "message_start": self.start_usage.take().unwrap_or(Value::Null),
                        "message_delta": usage,
                    });
                    out.push(StreamEvent::Reported(Reported {
                        usage: Some(Reported::raw_usage(&both)),
                        ..Reported::default()
                    }));
                }
                // Only believable figures become usage; otherwise the service counts (case 57).
                let output = reported_tokens(v.pointer("/usage/output_tokens"));
                let input = match v.pointer("/usage/input_tokens") {
                    Some(given) => reported_tokens(Some(given)),
                    None => self.input_tokens,
                };
                if let (Some(input_tokens), Some(output_tokens)) = (input, output) {
                    let cache = match v.pointer("/usage/cache_read_input_tokens") {
                        Some(_) => cache_of(v.get("usage")),
                        None => self.cache,
                    };
                    out.push(StreamEvent::Usage(with_cache(
                        input_tokens,
                        output_tokens,
                        cache,
                    )));
                }
            }
            "error" => {
                let message = v
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("error event");
                return Err(ProviderError::Cut(crate::models::scrub::scrub(
                    message, None,
                )));
            }
            _ => {}
        }
        Ok(Some(out))
    }
}

impl Adapter for Anthropic {
    async fn complete(
        &self,
        call: Call<'_>,
        req: &ChatRequest,
    ) -> Result<Completion, ProviderError> {
        let body = body(&call, req, false)?;
        let url = url(&call);
        let response = call
            .http
            .send(|| request(&call, &url, &body), call.key)
            .await?;
        let v: Value = read_json(response).await?;
        let blocks = v
            .get("content")
            .and_then(Value::as_array)
            .ok_or_else(|| ProviderError::Protocol("Messages response without `content`".into()))?;
        let mut content = String::new();
        let mut tool_calls = Vec::new();
        for b in blocks {
            match b.get("type").and_then(Value::as_str) {
                Some("text") => {
                    content.push_str(b.get("text").and_then(Value::as_str).unwrap_or_default())
                }
                Some("tool_use") => tool_calls.push(ToolCall {
                    id: text_at(b, "/id"),
                    name: text_at(b, "/name"),
                    arguments: b
                        .get("input")
                        .map(Value::to_string)
                        .unwrap_or_else(|| "{}".into()),
                }),
                _ => {}
            }
        }
        let reported = reported_tokens(v.pointer("/usage/input_tokens"))
            .zip(reported_tokens(v.pointer("/usage/output_tokens")));
        let usage = match reported {
            Some((input_tokens, output_tokens)) => {
                with_cache(input_tokens, output_tokens, cache_of(v.get("usage")))
            }
            None => Usage::plain(
                estimate_input(&req.messages),
                estimate_tokens(&content),
                true,
            ),
        };
        Ok(Completion {
            content,
            tool_calls,
            finish: stop_reason(
                v.get("stop_reason")
                    .and_then(Value::as_str)
                    .unwrap_or("end_turn"),
            ),
            usage,
            reported: Reported {
                request_id: Reported::id(v.get("id").and_then(Value::as_str)),
                usage: v.get("usage").map(Reported::raw_usage),
                cost: None,
            },
        })
    }

    async fn stream(
        &self,
        call: Call<'_>,
        req: &ChatRequest,
    ) -> Result<EventStream, ProviderError> {
        let body = body(&call, req, true)?;
        let url = url(&call);
        let response = call
            .http
            .send(|| request(&call, &url, &body), call.key)
            .await?;
        let mut state = StreamState::default();
        Ok(sse_events(response, move |sse| state.parse(sse)))
    }

    async fn embed(
        &self,
        _call: Call<'_>,
        _req: &EmbeddingRequest,
    ) -> Result<Embeddings, ProviderError> {
        Err(ProviderError::Unsupported(
            "provider `anthropic` has no embeddings API".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::{cache_of, with_cache};
    use serde_json::json;

    #[test]
    fn cache_reads_and_writes_join_the_input_as_their_own_classes() {
        // Anthropic's `input_tokens` leave out the cache's; the call's input is all three.
        let usage = json!({"input_tokens": 50, "output_tokens": 7,
                           "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 200});
        let u = with_cache(50, 7, cache_of(Some(&usage)));
        assert_eq!(
            (
                u.input_tokens,
                u.cached_input_tokens,
                u.cache_write_tokens,
                u.output_tokens
            ),
            (1250, 1000, 200, 7)
        );
        // Unbelievable cache figures count as none (case 57), never as a credit.
        let bad = json!({"cache_read_input_tokens": -3, "cache_creation_input_tokens": "x"});
        assert_eq!(cache_of(Some(&bad)), (0, 0));
        assert_eq!(cache_of(None), (0, 0));
    }
}
