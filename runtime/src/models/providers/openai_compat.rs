//! The OpenAI wire format, for three kinds of endpoint: OpenAI itself (`Authorization: Bearer`,
//! `max_completion_tokens`), Azure OpenAI deployments (`/openai/deployments/<deployment>/...` with
//! `api-version`, the `api-key` header), and self-hosted servers speaking it (vLLM, Ollama, TGI; a
//! key only if the tenant stored one). Streams ask for usage in the final chunk
//! (`stream_options.include_usage`). This module must not meter, log prompts or retry a stream.

use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::{
    Adapter, Call, EventStream, ProviderError, SseEvent, read_json, reported_tokens, sse_events,
    text_at,
};
use crate::domain::MicroUsd;
use crate::models::chat::{
    ChatMessage, ChatRequest, Completion, EmbeddingRequest, Embeddings, FinishReason, Reported,
    ResponseFormat, Role, StreamEvent, ToolCall, ToolChoice, Usage, estimate_input,
    estimate_tokens,
};
use crate::pricing::{Rounding, usd_to_micro};

/// Which kind of OpenAI-compatible endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Openai,
    Azure,
    SelfHosted,
}

#[derive(Debug, Clone, Copy)]
pub struct OpenaiCompat {
    pub flavor: Flavor,
}

const OPENAI_BASE: &str = "https://api.openai.com/v1";

impl OpenaiCompat {
    pub fn new(flavor: Flavor) -> Self {
        Self { flavor }
    }

    fn url(&self, call: &Call<'_>, operation: &str) -> Result<String, ProviderError> {
        let base = call.endpoint.base_url.as_deref();
        Ok(match self.flavor {
            Flavor::Openai => format!(
                "{}/{operation}",
                base.unwrap_or(OPENAI_BASE).trim_end_matches('/')
            ),
            Flavor::SelfHosted => format!(
                "{}/{operation}",
                base.ok_or(ProviderError::Unsupported(
                    "a self-hosted endpoint needs its base URL".into()
                ))?
                .trim_end_matches('/')
            ),
            Flavor::Azure => {
                let base = base.ok_or(ProviderError::Unsupported(
                    "an Azure OpenAI endpoint needs its resource URL".into(),
                ))?;
                let version =
                    call.endpoint
                        .api_version
                        .as_deref()
                        .ok_or(ProviderError::Unsupported(
                            "an Azure OpenAI endpoint needs its api_version".into(),
                        ))?;
                format!(
                    "{}/openai/deployments/{}/{operation}?api-version={}",
                    base.trim_end_matches('/'),
                    url_segment(call.upstream_model),
                    url_segment(version)
                )
            }
        })
    }

    fn request(&self, call: &Call<'_>, url: &str, body: &Value) -> reqwest::RequestBuilder {
        let mut builder = call.http.client.post(url).json(body);
        if let Some(key) = call.key {
            builder = match self.flavor {
                Flavor::Azure => builder.header("api-key", key.expose_secret()),
                Flavor::Openai | Flavor::SelfHosted => builder.bearer_auth(key.expose_secret()),
            };
        }
        builder
    }

    fn chat_body(&self, call: &Call<'_>, request: &ChatRequest, stream: bool) -> Value {
        let mut body = json!({
            "model": call.upstream_model,
            "messages": request.messages.iter().map(message).collect::<Vec<_>>(),
        });
        let obj = body.as_object_mut();
        let Some(obj) = obj else { return body };
        if stream {
            obj.insert("stream".into(), Value::Bool(true));
            obj.insert("stream_options".into(), json!({"include_usage": true}));
        }
        if let Some(n) = request.max_tokens {
            let field = match self.flavor {
                Flavor::Openai => "max_completion_tokens",
                Flavor::Azure | Flavor::SelfHosted => "max_tokens",
            };
            obj.insert(field.into(), json!(n));
        }
        if let Some(t) = &request.temperature {
            obj.insert("temperature".into(), Value::Number(t.clone()));
        }
        if let Some(t) = &request.top_p {
            obj.insert("top_p".into(), Value::Number(t.clone()));
        }
        if !request.stop.is_empty() {
            obj.insert("stop".into(), json!(request.stop));
        }
        if let Some(seed) = request.seed {
            obj.insert("seed".into(), json!(seed));
        }
        if !request.tools.is_empty() {
            let tools: Vec<Value> = request
                .tools
                .iter()
                .map(|t| {
                    let mut f = json!({"name": t.name, "parameters": t.parameters});
                    if let Some(o) = f.as_object_mut() {
                        if let Some(d) = &t.description {
                            o.insert("description".into(), json!(d));
                        }
                        if let Some(strict) = t.strict {
                            o.insert("strict".into(), json!(strict));
                        }
                    }
                    json!({"type": "function", "function": f})
                })
                .collect();
            obj.insert("tools".into(), Value::Array(tools));
        }
        if let Some(choice) = &request.tool_choice {
            let v = match choice {
                ToolChoice::Auto => json!("auto"),
                ToolChoice::None => json!("none"),
                ToolChoice::Required => json!("required"),
                ToolChoice::Function(name) => {
                    json!({"type": "function", "function": {"name": name}})
                }
            };
            obj.insert("tool_choice".into(), v);
        }
        if let Some(format) = &request.response_format {
            let v = match format {
                ResponseFormat::JsonObject => json!({"type": "json_object"}),
                ResponseFormat::JsonSchema {
                    name,
                    description,
                    schema,
                    strict,
                } => {
                    let mut s = json!({"name": name, "schema": schema, "strict": strict});
                    if let (Some(d), Some(o)) = (description, s.as_object_mut()) {
                        o.insert("description".into(), json!(d));
                    }
                    json!({"type": "json_schema", "json_schema": s})
                }
            };
            obj.insert("response_format".into(), v);
        }
        body
    }
}

/// A path segment, percent-encoded (deployment names and versions come from the manifest, but a
/// `/` or `?` in one must not change the URL's shape).
fn url_segment(raw: &str) -> String {
    url::form_urlencoded::byte_serialize(raw.as_bytes()).collect()
}

fn message(m: &ChatMessage) -> Value {
    let mut v = json!({"role": m.role.as_str()});
    let Some(obj) = v.as_object_mut() else {
        return v;
    };
    if m.role == Role::Assistant && !m.tool_calls.is_empty() {
        if m.content.is_empty() {
            obj.insert("content".into(), Value::Null);
        } else {
            obj.insert("content".into(), json!(m.content));
        }
        let calls: Vec<Value> = m
            .tool_calls
            .iter()
            .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
            .collect();
        obj.insert("tool_calls".into(), Value::Array(calls));
    } else {
        obj.insert("content".into(), json!(m.content));
    }
    if let Some(id) = &m.tool_call_id {
        obj.insert("tool_call_id".into(), json!(id));
    }
    if let Some(name) = &m.name {
        obj.insert("name".into(), json!(name));
    }
    v
}

pub(crate) fn finish_reason(raw: &str) -> FinishReason {
    match raw {
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

fn usage_of(v: &Value) -> Option<Usage> {
    let u = v.get("usage").filter(|u| !u.is_null())?;
    // `prompt_tokens` includes the cached ones, `completion_tokens` the reasoning ones.
    let part = |path: &str| reported_tokens(u.pointer(path)).unwrap_or(0);
    Some(
        Usage {
            input_tokens: reported_tokens(u.get("prompt_tokens"))?,
            output_tokens: reported_tokens(u.get("completion_tokens"))?,
            estimated: false,
            cached_input_tokens: part("/prompt_tokens_details/cached_tokens"),
            cache_write_tokens: 0,
            reasoning_tokens: part("/completion_tokens_details/reasoning_tokens"),
        }
        .classes(),
    )
}

/// The provider's id for the call, its usage object and its own cost (`usage.cost` in USD, where an
/// OpenAI-compatible provider reports it), from a response or a stream chunk.
fn reported_of(v: &Value) -> Reported {
    let usage = v.get("usage").filter(|u| u.is_object());
    Reported {
        request_id: Reported::id(v.get("id").and_then(Value::as_str)),
        usage: usage.map(Reported::raw_usage),
        cost: usage
            .and_then(|u| u.get("cost"))
            .filter(|c| c.is_number())
            .and_then(|c| usd_to_micro(&c.to_string(), Rounding::Up))
            .filter(|micro| *micro >= 0)
            .map(MicroUsd),
    }
}

fn protocol(what: &str) -> ProviderError {
    ProviderError::Protocol(format!("OpenAI-format response without {what}"))
}

/// A non-streamed chat completion response in canonical form.
pub(crate) fn parse_completion(
    v: &Value,
    request: &ChatRequest,
) -> Result<Completion, ProviderError> {
    let choice = v
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or_else(|| protocol("`choices[0]`"))?;
    let message = choice.get("message").ok_or_else(|| protocol("`message`"))?;
    let content = text_at(message, "/content");
    let tool_calls = message
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(|calls| {
            calls
                .iter()
                .map(|c| ToolCall {
                    id: text_at(c, "/id"),
                    name: text_at(c, "/function/name"),
                    arguments: text_at(c, "/function/arguments"),
                })
                .collect()
        })
        .unwrap_or_default();
    let finish = finish_reason(
        choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .unwrap_or("stop"),
    );
    let usage = usage_of(v).unwrap_or_else(|| {
        Usage::plain(
            estimate_input(&request.messages),
            estimate_tokens(&content),
            true,
        )
    });
    Ok(Completion {
        content,
        tool_calls,
        finish,
        usage,
        reported: reported_of(v),
    })
}

/// The canonical events of one OpenAI-format stream chunk (`None` at `[DONE]`).
pub(crate) fn parse_chunk(sse: &SseEvent) -> Result<Option<Vec<StreamEvent>>, ProviderError> {
    if sse.data.trim() == "[DONE]" {
        return Ok(None);
    }
    let v: Value = serde_json::from_str(&sse.data)
        .map_err(|e| ProviderError::Protocol(format!("unreadable stream chunk: {e}")))?;
    if let Some(error) = v.get("error") {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("error event");
        return Err(ProviderError::Cut(crate::models::scrub::scrub(
            message, None,
        )));
    }
    let mut out = Vec::new();
    if let Some(choice) = v.get("choices").and_then(|c| c.get(0)) {
        if let Some(delta) = choice.get("delta") {
            if let Some(text) = delta.get("content").and_then(Value::as_str)
                && !text.is_empty()
            {
                out.push(StreamEvent::Text(text.to_owned()));
            }
            for call in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                out.push(StreamEvent::ToolCall {
                    index: call
                        .get("index")
                        .and_then(Value::as_u64)
                        .and_then(|i| u32::try_from(i).ok())
                        .unwrap_or(0),
                    id: call.get("id").and_then(Value::as_str).map(str::to_owned),
                    name: call
                        .pointer("/function/name")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    arguments: text_at(call, "/function/arguments"),
                });
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            out.push(StreamEvent::Finish(finish_reason(reason)));
            out.push(StreamEvent::Reported(reported_of(&v)));
        }
    }
    if let Some(usage) = usage_of(&v) {
        out.push(StreamEvent::Usage(usage));
        out.push(StreamEvent::Reported(reported_of(&v)));
    }
    Ok(Some(out))
}

impl Adapter for OpenaiCompat {
    async fn complete(
        &self,
        call: Call<'_>,
        request: &ChatRequest,
    ) -> Result<Completion, ProviderError> {
        // Names and strict tools travel; OpenAI's format has no failed-tool-result flag.
        crate::models::chat::check_carried(request, "openai-compatible", true, true, false)
            .map_err(|e| ProviderError::Unsupported(e.into()))?;
        let url = self.url(&call, "chat/completions")?;
        let body = self.chat_body(&call, request, false);
        let response = call
            .http
            .send(|| self.request(&call, &url, &body), call.key)
            .await?;
        let v: Value = read_json(response).await?;
        parse_completion(&v, request)
    }

    async fn stream(
        &self,
        call: Call<'_>,
        request: &ChatRequest,
    ) -> Result<EventStream, ProviderError> {
        // Names and strict tools travel; OpenAI's format has no failed-tool-result flag.
        crate::models::chat::check_carried(request, "openai-compatible", true, true, false)
            .map_err(|e| ProviderError::Unsupported(e.into()))?;
        let url = self.url(&call, "chat/completions")?;
        let body = self.chat_body(&call, request, true);
        let response = call
            .http
            .send(|| self.request(&call, &url, &body), call.key)
            .await?;
        Ok(sse_events(response, parse_chunk))
    }

    async fn embed(
        &self,
        call: Call<'_>,
        request: &EmbeddingRequest,
    ) -> Result<Embeddings, ProviderError> {
        let url = self.url(&call, "embeddings")?;
        let mut body = json!({"model": call.upstream_model, "input": request.input, "encoding_format": "float"});
        if let (Some(d), Some(o)) = (request.dimensions, body.as_object_mut()) {
            o.insert("dimensions".into(), json!(d));
        }
        let response = call
            .http
            .send(|| self.request(&call, &url, &body), call.key)
            .await?;
        let v: Value = read_json(response).await?;
        let mut data: Vec<(u64, Vec<f32>)> = v
            .get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| protocol("`data`"))?
            .iter()
            .map(|d| {
                let index = d.get("index").and_then(Value::as_u64).unwrap_or(0);
                let vector = d
                    .get("embedding")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_f64)
                            .map(|x| x as f32)
                            .collect()
                    })
                    .unwrap_or_default();
                (index, vector)
            })
            .collect();
        data.sort_by_key(|(i, _)| *i);
        if data.len() != request.input.len() {
            return Err(protocol("one embedding per input"));
        }
        let usage = v
            .pointer("/usage/prompt_tokens")
            .and_then(Value::as_u64)
            .map(|n| Usage::plain(n, 0, false))
            .unwrap_or_else(|| {
                Usage::plain(
                    request.input.iter().map(|t| estimate_tokens(t)).sum(),
                    0,
                    true,
                )
            });
        Ok(Embeddings {
            vectors: data.into_iter().map(|(_, v)| v).collect(),
            usage,
        })
    }
}
