//! Anthropic-compatible wire types for `POST /v1/messages` (plain and streamed): the request parsed
//! strictly into the canonical `models::chat::ChatRequest`, the reply and its named SSE events
//! rendered back, and the Anthropic error shape. Whatever provider serves the model, an Anthropic
//! client sees Anthropic's format. This module only describes shapes; it must not route, meter or
//! authorize.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::models::chat::{
    ChatMessage, ChatRequest, Completion, Role, Tool, ToolCall, ToolChoice, Usage,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    model: String,
    max_tokens: u32,
    messages: Vec<RawMessage>,
    #[serde(default)]
    system: Option<RawContent>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    temperature: Option<serde_json::Number>,
    #[serde(default)]
    top_p: Option<serde_json::Number>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    tools: Option<Vec<RawTool>>,
    #[serde(default)]
    tool_choice: Option<RawToolChoice>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMessage {
    role: String,
    content: RawContent,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawContent {
    Text(String),
    Blocks(Vec<RawBlock>),
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum RawBlock {
    Text {
        text: String,
        /// Prompt-caching hints: not every provider can honour them, so they are refused.
        #[serde(default)]
        cache_control: Option<Value>,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(default)]
        content: Option<RawContent>,
        #[serde(default)]
        is_error: Option<bool>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTool {
    name: String,
    #[serde(default)]
    description: Option<String>,
    input_schema: Value,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum RawToolChoice {
    Auto,
    Any,
    None,
    Tool { name: String },
}

const NO_CACHE_CONTROL: &str = "`cache_control` (prompt caching) is not supported: not every provider behind this gateway can honour it; remove it";

fn text_of(content: RawContent, at: &str) -> Result<String, String> {
    match content {
        RawContent::Text(t) => Ok(t),
        RawContent::Blocks(blocks) => {
            let mut out = Vec::new();
            for b in blocks {
                match b {
                    RawBlock::Text {
                        cache_control: Some(_),
                        ..
                    } => return Err(NO_CACHE_CONTROL.to_owned()),
                    RawBlock::Text { text, .. } => out.push(text),
                    _ => return Err(format!("`{at}` may hold only text blocks here")),
                }
            }
            Ok(out.join("\n"))
        }
    }
}

/// Parses a `/v1/messages` body. Error texts quote field names, never values.
pub fn parse_messages_request(body: &[u8]) -> Result<ChatRequest, String> {
    let raw: RawRequest = serde_json::from_slice(body).map_err(|e| {
        let text = e.to_string();
        match text.find(", expected") {
            Some(i) if text.starts_with("unknown field") => text[..i].to_owned(),
            _ if text.contains("untagged enum RawContent") => "`content` must be a string or a list of `text`, `tool_use` and `tool_result` blocks (images and documents are not supported)".to_owned(),
            _ => text,
        }
    })?;
    crate::models::chat::check_model_field(&raw.model)?;
    if raw.messages.is_empty() {
        return Err("`messages` must contain at least one message".into());
    }
    let mut messages = Vec::new();
    if let Some(system) = raw.system {
        messages.push(ChatMessage::text(Role::System, text_of(system, "system")?));
    }
    for (i, m) in raw.messages.into_iter().enumerate() {
        let role = match m.role.as_str() {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            _ => {
                return Err(format!(
                    "`messages[{i}].role` must be `user` or `assistant`"
                ));
            }
        };
        match m.content {
            RawContent::Text(t) => messages.push(ChatMessage::text(role, t)),
            RawContent::Blocks(blocks) => {
                let mut text = Vec::new();
                let mut calls = Vec::new();
                for b in blocks {
                    match b {
                        RawBlock::Text {
                            cache_control: Some(_),
                            ..
                        } => return Err(NO_CACHE_CONTROL.to_owned()),
                        RawBlock::Text { text: t, .. } => text.push(t),
                        RawBlock::ToolUse { id, name, input } if role == Role::Assistant => {
                            calls.push(ToolCall {
                                id,
                                name,
                                arguments: input.to_string(),
                            });
                        }
                        RawBlock::ToolUse { .. } => {
                            return Err(format!(
                                "`messages[{i}]`: `tool_use` blocks belong to assistant messages"
                            ));
                        }
                        RawBlock::ToolResult {
                            tool_use_id,
                            content,
                            is_error,
                        } => {
                            let content = match content {
                                Some(c) => text_of(c, &format!("messages[{i}].content"))?,
                                None => String::new(),
                            };
                            messages.push(ChatMessage {
                                role: Role::Tool,
                                content,
                                tool_calls: Vec::new(),
                                tool_call_id: Some(tool_use_id),
                                name: None,
                                is_error: is_error.unwrap_or(false),
                            });
                        }
                    }
                }
                if !text.is_empty() || !calls.is_empty() {
                    messages.push(ChatMessage {
                        role,
                        content: text.join("\n"),
                        tool_calls: calls,
                        tool_call_id: None,
                        name: None,
                        is_error: false,
                    });
                }
            }
        }
    }
    let tools = raw
        .tools
        .into_iter()
        .flatten()
        .map(|t| Tool {
            name: t.name,
            description: t.description,
            parameters: t.input_schema,
            strict: None,
        })
        .collect();
    let tool_choice = raw.tool_choice.map(|c| match c {
        RawToolChoice::Auto => ToolChoice::Auto,
        RawToolChoice::Any => ToolChoice::Required,
        RawToolChoice::None => ToolChoice::None,
        RawToolChoice::Tool { name } => ToolChoice::Function(name),
    });
    Ok(ChatRequest {
        model: raw.model,
        messages,
        tools,
        tool_choice,
        response_format: None,
        temperature: raw.temperature,
        top_p: raw.top_p,
        stop: raw.stop_sequences.unwrap_or_default(),
        seed: None,
        max_tokens: Some(raw.max_tokens),
        stream: raw.stream.unwrap_or(false),
        include_usage: false,
    })
}

fn usage_json(u: &Usage) -> Value {
    json!({"input_tokens": u.input_tokens, "output_tokens": u.output_tokens})
}

/// A `message` object for `completion`.
pub fn message_json(id: &str, model: &str, c: &Completion) -> Value {
    let mut content = Vec::new();
    if !c.content.is_empty() || c.tool_calls.is_empty() {
        content.push(json!({"type": "text", "text": c.content}));
    }
    for t in &c.tool_calls {
        let input: Value = serde_json::from_str(&t.arguments).unwrap_or_else(|_| json!({}));
        content.push(json!({"type": "tool_use", "id": t.id, "name": t.name, "input": input}));
    }
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": c.finish.anthropic(),
        "stop_sequence": null,
        "usage": usage_json(&c.usage),
    })
}

/// One named SSE event.
pub fn event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// The `message_start` event of a stream.
pub fn message_start(id: &str, model: &str) -> String {
    event(
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0}}}),
    )
}

/// Anthropic's error `type` for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 405 | 409 | 415 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// An error body in Anthropic's shape.
pub fn error_json(status: u16, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type(status), "message": message}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(body: &str, want_err: Option<&str>) {
        match (parse_messages_request(body.as_bytes()), want_err) {
            (Ok(_), None) => {}
            (Err(e), Some(w)) => assert!(e.contains(w), "{e:?} should contain {w:?}"),
            (got, want) => panic!("{body}: got {got:?}, want error {want:?}"),
        }
    }

    #[test]
    fn parses_messages_requests_and_refuses_what_it_cannot_honour() {
        let msgs = r#""messages":[{"role":"user","content":"hi"}]"#;
        check(&format!(r#"{{"model":"m","max_tokens":5,{msgs}}}"#), None);
        check(
            &format!(r#"{{"model":"m","max_tokens":5,"system":"be brief",{msgs},"stream":true}}"#),
            None,
        );
        check(
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"f","input":{}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"4"}]}]}"#,
            None,
        );
        check(&format!(r#"{{"model":"m",{msgs}}}"#), Some("max_tokens"));
        check(
            &format!(r#"{{"model":"m","max_tokens":5,{msgs},"metadata":{{}}}}"#),
            Some("unknown field `metadata`"),
        );
        // Prompt-caching hints cannot be honoured on every provider: refused, not dropped.
        check(
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"x","cache_control":{"type":"ephemeral"}}]}]}"#,
            Some("cache_control"),
        );
        check(
            &format!(r#"{{"model":"m","max_tokens":5,{msgs},"base_url":"http://x"}}"#),
            Some("unknown field `base_url`"),
        );
        check(
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{}}]}]}"#,
            Some("images and documents are not supported"),
        );
        check(
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"system","content":"x"}]}"#,
            Some("role"),
        );
    }
}
