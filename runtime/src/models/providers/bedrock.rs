//! AWS Bedrock through its Converse API (`POST /model/<id>/converse`) and ConverseStream
//! (`/converse-stream`, an `application/vnd.amazon.eventstream` body read with the AWS event-stream
//! decoder). Requests are SigV4-signed (service `bedrock`) with the SDK's signer and the standard
//! credential chain (on Lambda, the tenant function's own role), so no key is stored. When the
//! tenant's endpoint names an application inference profile, calls go through it, so the tenant's
//! Bedrock spend carries its cost-allocation tags. Bedrock embeddings are not offered (refused, not
//! ignored). This module must not meter, log prompts or retry a stream.

use std::time::SystemTime;

use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use bytes::{Buf, BytesMut};
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::{Adapter, Call, EventStream, ProviderError, read_json, reported_tokens, text_at};
use crate::models::chat::{
    ChatRequest, Completion, EmbeddingRequest, Embeddings, FinishReason, Reported, Role,
    StreamEvent, ToolCall, ToolChoice, Usage, estimate_input, estimate_tokens,
};
use crate::models::scrub::scrub;

#[derive(Debug, Clone, Copy)]
pub struct Bedrock;

fn region<'a>(call: &Call<'a>) -> Result<&'a str, ProviderError> {
    call.endpoint
        .region
        .as_deref()
        .ok_or(ProviderError::Unsupported(
            "a Bedrock endpoint needs its region".into(),
        ))
}

fn url(call: &Call<'_>, operation: &str) -> Result<String, ProviderError> {
    let region = region(call)?;
    let base = match call.endpoint.base_url.as_deref() {
        Some(b) => b.trim_end_matches('/').to_owned(),
        None => format!("https://bedrock-runtime.{region}.amazonaws.com"),
    };
    // The model id (or the tenant's inference profile ARN) is one path segment: `:` and `/` are
    // encoded.
    let target = call.upstream_model;
    let segment: String = url::form_urlencoded::byte_serialize(target.as_bytes()).collect();
    Ok(format!("{base}/model/{segment}/{operation}"))
}

fn body(request: &ChatRequest) -> Result<Value, ProviderError> {
    crate::models::chat::check_carried(request, "bedrock", false, false, true)
        .map_err(|e| ProviderError::Unsupported(e.into()))?;
    if request.response_format.is_some() {
        return Err(ProviderError::Unsupported(
            "`response_format` (JSON mode) is not supported by provider `bedrock`".into(),
        ));
    }
    let system: Vec<Value> = request
        .messages
        .iter()
        .filter(|m| matches!(m.role, Role::System | Role::Developer))
        .map(|m| json!({"text": m.content}))
        .collect();
    let mut messages = Vec::new();
    for m in &request.messages {
        let (role, content) = match m.role {
            Role::System | Role::Developer => continue,
            Role::User => ("user", vec![json!({"text": m.content})]),
            Role::Assistant => {
                let mut blocks = Vec::new();
                if !m.content.is_empty() {
                    blocks.push(json!({"text": m.content}));
                }
                for c in &m.tool_calls {
                    let input: Value =
                        serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!({}));
                    blocks.push(
                        json!({"toolUse": {"toolUseId": c.id, "name": c.name, "input": input}}),
                    );
                }
                ("assistant", blocks)
            }
            Role::Tool => (
                "user",
                vec![
                    json!({"toolResult": {"toolUseId": m.tool_call_id, "content": [{"text": m.content}], "status": if m.is_error { "error" } else { "success" }}}),
                ],
            ),
        };
        messages.push(json!({"role": role, "content": content}));
    }
    let mut inference = serde_json::Map::new();
    if let Some(n) = request.max_tokens {
        inference.insert("maxTokens".into(), json!(n));
    }
    if let Some(t) = &request.temperature {
        inference.insert("temperature".into(), Value::Number(t.clone()));
    }
    if let Some(t) = &request.top_p {
        inference.insert("topP".into(), Value::Number(t.clone()));
    }
    if !request.stop.is_empty() {
        inference.insert("stopSequences".into(), json!(request.stop));
    }
    let mut body = json!({"messages": messages});
    let Some(obj) = body.as_object_mut() else {
        return Ok(body);
    };
    if !system.is_empty() {
        obj.insert("system".into(), Value::Array(system));
    }
    if !inference.is_empty() {
        obj.insert("inferenceConfig".into(), Value::Object(inference));
    }
    if !request.tools.is_empty() && request.tool_choice != Some(ToolChoice::None) {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|t| {
                let mut spec = json!({"name": t.name, "inputSchema": {"json": t.parameters}});
                if let (Some(d), Some(o)) = (&t.description, spec.as_object_mut()) {
                    o.insert("description".into(), json!(d));
                }
                json!({"toolSpec": spec})
            })
            .collect();
        let mut config = json!({"tools": tools});
        let choice = match &request.tool_choice {
            Some(ToolChoice::Required) => Some(json!({"any": {}})),
            Some(ToolChoice::Function(name)) => Some(json!({"tool": {"name": name}})),
            Some(ToolChoice::Auto) => Some(json!({"auto": {}})),
            _ => None,
        };
        if let (Some(c), Some(o)) = (choice, config.as_object_mut()) {
            o.insert("toolChoice".into(), c);
        }
        obj.insert("toolConfig".into(), config);
    }
    Ok(body)
}

fn stop_reason(raw: &str) -> FinishReason {
    match raw {
        "max_tokens" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "guardrail_intervened" | "content_filtered" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

fn usage_of(v: Option<&Value>) -> Option<Usage> {
    let u = v?;
    // Converse counts cache reads and writes apart from `inputTokens`.
    let part = |name: &str| reported_tokens(u.get(name)).unwrap_or(0);
    let (read, write) = (part("cacheReadInputTokens"), part("cacheWriteInputTokens"));
    Some(
        Usage {
            input_tokens: reported_tokens(u.get("inputTokens"))?
                .saturating_add(read)
                .saturating_add(write),
            output_tokens: reported_tokens(u.get("outputTokens"))?,
            estimated: false,
            cached_input_tokens: read,
            cache_write_tokens: write,
            reasoning_tokens: 0,
        }
        .classes(),
    )
}

/// A signed request: SigV4 over the exact body, with credentials from the standard chain.
async fn signed(
    call: &Call<'_>,
    url: &str,
    body: &[u8],
) -> Result<reqwest::RequestBuilder, ProviderError> {
    let region = region(call)?;
    let provider = call.http.aws_credentials().await?;
    let credentials = provider
        .provide_credentials()
        .await
        .map_err(|e| ProviderError::KeyUnavailable(format!("AWS credentials: {e}")))?;
    let identity = credentials.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("bedrock")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| ProviderError::Protocol(format!("signing parameters: {e}")))?
        .into();
    let headers = [("content-type", "application/json")];
    let signable =
        SignableRequest::new("POST", url, headers.into_iter(), SignableBody::Bytes(body))
            .map_err(|e| ProviderError::Protocol(format!("the request to sign: {e}")))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| ProviderError::Protocol(format!("signing: {e}")))?
        .into_parts();
    let mut builder = call
        .http
        .client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in instructions.headers() {
        builder = builder.header(name, value);
    }
    Ok(builder)
}

/// Sends with the shared retry policy; each attempt is signed afresh (a signature is time-bound).
async fn send(call: &Call<'_>, url: &str, body: &[u8]) -> Result<reqwest::Response, ProviderError> {
    // Sign once per attempt window: SigV4 signatures are valid for five minutes, longer than any
    // retry schedule here.
    let builder = signed(call, url, body).await?;
    call.http
        .send(
            || {
                builder
                    .try_clone()
                    .unwrap_or_else(|| call.http.client.post(url))
            },
            None,
        )
        .await
}

/// Reads a ConverseStream body: event-stream frames, each a JSON event named by `:event-type`.
#[derive(Debug, Default)]
struct StreamState {
    /// Content block index -> tool call index.
    tool_blocks: Vec<(u64, u32)>,
}

impl StreamState {
    fn event(&mut self, kind: &str, v: &Value) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        let index = v
            .get("contentBlockIndex")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        match kind {
            "contentBlockStart" => {
                if let Some(tool) = v.pointer("/start/toolUse") {
                    let tool_index = u32::try_from(self.tool_blocks.len()).unwrap_or(u32::MAX);
                    self.tool_blocks.push((index, tool_index));
                    out.push(StreamEvent::ToolCall {
                        index: tool_index,
                        id: tool
                            .get("toolUseId")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                        name: tool.get("name").and_then(Value::as_str).map(str::to_owned),
                        arguments: String::new(),
                    });
                }
            }
            "contentBlockDelta" => {
                if let Some(t) = v.pointer("/delta/text").and_then(Value::as_str) {
                    out.push(StreamEvent::Text(t.to_owned()));
                } else if let Some(input) =
                    v.pointer("/delta/toolUse/input").and_then(Value::as_str)
                {
                    let tool_index = self
                        .tool_blocks
                        .iter()
                        .find(|(b, _)| *b == index)
                        .map_or(0, |(_, t)| *t);
                    out.push(StreamEvent::ToolCall {
                        index: tool_index,
                        id: None,
                        name: None,
                        arguments: input.to_owned(),
                    });
                }
            }
            "messageStop" => {
                let reason = v
                    .get("stopReason")
                    .and_then(Value::as_str)
                    .unwrap_or("end_turn");
                out.push(StreamEvent::Finish(stop_reason(reason)));
            }
            "metadata" => {
                if let Some(u) = usage_of(v.get("usage")) {
                    out.push(StreamEvent::Usage(u));
                }
                if let Some(raw) = v.get("usage") {
                    out.push(StreamEvent::Reported(Reported {
                        usage: Some(Reported::raw_usage(raw)),
                        ..Reported::default()
                    }));
                }
            }
            _ => {}
        }
        out
    }
}

/// AWS's id for the call (`x-amzn-RequestId`), what AWS support asks for.
fn request_id_of(response: &reqwest::Response) -> Option<String> {
    Reported::id(
        response
            .headers()
            .get("x-amzn-requestid")
            .and_then(|v| v.to_str().ok()),
    )
}

fn header<'a>(message: &'a aws_smithy_types::event_stream::Message, name: &str) -> Option<&'a str> {
    message
        .headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| h.value().as_string().ok())
        .map(|s| s.as_str())
}

fn event_stream(response: reqwest::Response) -> EventStream {
    struct S<B> {
        body: B,
        buffer: BytesMut,
        decoder: MessageFrameDecoder,
        state: StreamState,
        pending: std::collections::VecDeque<StreamEvent>,
        done: bool,
    }
    let s = S {
        body: response.bytes_stream(),
        buffer: BytesMut::new(),
        decoder: MessageFrameDecoder::new(),
        state: StreamState::default(),
        pending: std::collections::VecDeque::new(),
        done: false,
    };
    Box::pin(futures_util::stream::unfold(s, |mut s| async move {
        loop {
            if let Some(e) = s.pending.pop_front() {
                return Some((Ok(e), s));
            }
            if s.done {
                return None;
            }
            // Decode every complete frame already buffered before reading more.
            match s.decoder.decode_frame(&mut s.buffer) {
                Ok(DecodedFrame::Complete(message)) => {
                    let kind = header(&message, ":event-type")
                        .unwrap_or_default()
                        .to_owned();
                    if header(&message, ":message-type") == Some("exception") {
                        s.done = true;
                        let what = header(&message, ":exception-type").unwrap_or("exception");
                        let text = String::from_utf8_lossy(message.payload());
                        let error = ProviderError::Cut(scrub(&format!("{what}: {text}"), None));
                        return Some((Err(error), s));
                    }
                    let v: Value = match serde_json::from_slice(message.payload()) {
                        Ok(v) => v,
                        Err(e) => {
                            s.done = true;
                            return Some((
                                Err(ProviderError::Protocol(format!(
                                    "unreadable stream event: {e}"
                                ))),
                                s,
                            ));
                        }
                    };
                    let events = s.state.event(&kind, &v);
                    s.pending.extend(events);
                    if kind == "metadata" {
                        // The last event ConverseStream sends.
                        s.done = true;
                    }
                    continue;
                }
                Ok(DecodedFrame::Incomplete) => {}
                Err(e) => {
                    s.done = true;
                    return Some((
                        Err(ProviderError::Protocol(format!("event-stream frame: {e}"))),
                        s,
                    ));
                }
            }
            match s.body.next().await {
                Some(Ok(chunk)) => s.buffer.extend_from_slice(chunk.chunk()),
                Some(Err(e)) => {
                    s.done = true;
                    return Some((Err(ProviderError::Cut(scrub(&e.to_string(), None))), s));
                }
                None => {
                    s.done = true;
                    return Some((
                        Err(ProviderError::Cut(
                            "the provider closed the stream before it finished".into(),
                        )),
                        s,
                    ));
                }
            }
        }
    }))
}

impl Adapter for Bedrock {
    async fn complete(
        &self,
        call: Call<'_>,
        request: &ChatRequest,
    ) -> Result<Completion, ProviderError> {
        let url = url(&call, "converse")?;
        let body = serde_json::to_vec(&body(request)?)
            .map_err(|e| ProviderError::Protocol(e.to_string()))?;
        let response = send(&call, &url, &body).await?;
        let request_id = request_id_of(&response);
        let v: Value = read_json(response).await?;
        let blocks = v
            .pointer("/output/message/content")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                ProviderError::Protocol("Converse response without `output.message.content`".into())
            })?;
        let mut content = String::new();
        let mut tool_calls = Vec::new();
        for b in blocks {
            if let Some(t) = b.get("text").and_then(Value::as_str) {
                content.push_str(t);
            } else if let Some(t) = b.get("toolUse") {
                tool_calls.push(ToolCall {
                    id: text_at(t, "/toolUseId"),
                    name: text_at(t, "/name"),
                    arguments: t
                        .get("input")
                        .map(Value::to_string)
                        .unwrap_or_else(|| "{}".into()),
                });
            }
        }
        let usage = usage_of(v.get("usage")).unwrap_or_else(|| {
            Usage::plain(
                estimate_input(&request.messages),
                estimate_tokens(&content),
                true,
            )
        });
        Ok(Completion {
            content,
            tool_calls,
            finish: stop_reason(
                v.get("stopReason")
                    .and_then(Value::as_str)
                    .unwrap_or("end_turn"),
            ),
            usage,
            reported: Reported {
                request_id,
                usage: v.get("usage").map(Reported::raw_usage),
                cost: None,
            },
        })
    }

    async fn stream(
        &self,
        call: Call<'_>,
        request: &ChatRequest,
    ) -> Result<EventStream, ProviderError> {
        let url = url(&call, "converse-stream")?;
        let body = serde_json::to_vec(&body(request)?)
            .map_err(|e| ProviderError::Protocol(e.to_string()))?;
        let response = send(&call, &url, &body).await?;
        let reported = Reported {
            request_id: request_id_of(&response),
            ..Reported::default()
        };
        let first = futures_util::stream::once(async move { Ok(StreamEvent::Reported(reported)) });
        Ok(Box::pin(first.chain(event_stream(response))))
    }

    async fn embed(
        &self,
        _call: Call<'_>,
        _request: &EmbeddingRequest,
    ) -> Result<Embeddings, ProviderError> {
        Err(ProviderError::Unsupported("provider `bedrock` embeddings are not offered by this gateway; use an OpenAI-compatible provider".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::chat::ResponseFormat;

    #[test]
    fn converse_cache_reads_and_writes_join_the_input_as_their_own_classes() {
        let u = usage_of(Some(
            &serde_json::json!({"inputTokens": 10, "outputTokens": 4,
            "cacheReadInputTokens": 90, "cacheWriteInputTokens": 5}),
        ))
        .unwrap();
        assert_eq!(
            (
                u.input_tokens,
                u.cached_input_tokens,
                u.cache_write_tokens,
                u.output_tokens
            ),
            (105, 90, 5, 4)
        );
    }

    #[test]
    fn json_mode_is_refused_rather_than_ignored() {
        let request = ChatRequest {
            response_format: Some(ResponseFormat::JsonObject),
            ..ChatRequest::default()
        };
        assert!(matches!(body(&request), Err(ProviderError::Unsupported(_))));
    }
}
