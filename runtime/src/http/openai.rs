//! OpenAI-compatible wire types: `/v1/chat/completions` (plain and streamed, tools, JSON mode),
//! `/v1/embeddings` and `/v1/models`, parsed into the canonical `models::chat` shapes and rendered
//! back.
//!
//! Requests are parsed strictly: an unknown field (`api_base`, `base_url`, `extra_headers`, ...) is a
//! 400 naming the field, so no caller-controlled routing or egress can slip through; a field this
//! gateway accepts is one it passes on or enforces. This module only describes shapes; it must not
//! route, meter or authorize.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::models::chat::{
    ChatMessage, ChatRequest, Completion, EmbeddingRequest, ResponseFormat, Role, Tool, ToolCall,
    ToolChoice, check_model_field,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMessage {
    role: String,
    #[serde(default)]
    content: Option<RawContent>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<RawToolCall>>,
    #[serde(default)]
    tool_call_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawContent {
    Text(String),
    Parts(Vec<RawPart>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToolCall {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    function: RawFunctionCall,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFunctionCall {
    name: String,
    arguments: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTool {
    #[serde(rename = "type")]
    kind: String,
    function: RawFunction,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFunction {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default)]
    strict: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResponseFormat {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    json_schema: Option<RawJsonSchema>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJsonSchema {
    name: String,
    #[serde(default)]
    schema: Option<Value>,
    #[serde(default)]
    strict: Option<bool>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChatRequest {
    model: String,
    messages: Vec<RawMessage>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    temperature: Option<serde_json::Number>,
    #[serde(default)]
    top_p: Option<serde_json::Number>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    stop: Option<RawStop>,
    #[serde(default)]
    tools: Option<Vec<RawTool>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    response_format: Option<RawResponseFormat>,
    /// Accepted for compatibility: calls are attributed to the token's subject, never to this.
    #[serde(default)]
    #[expect(dead_code, reason = "the ledger records the verified subject instead")]
    user: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawStop {
    One(String),
    Many(Vec<String>),
}

const ROLES: &[(&str, Role)] = &[
    ("system", Role::System),
    ("developer", Role::Developer),
    ("user", Role::User),
    ("assistant", Role::Assistant),
    ("tool", Role::Tool),
];

/// serde's message for a body, without any quoted value (for unknown fields it quotes only names).
fn serde_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.find(", expected") {
        Some(i) if text.starts_with("unknown field") => text[..i].to_owned(),
        _ => text,
    }
}

fn content_text(content: Option<RawContent>, at: &str) -> Result<String, String> {
    Ok(match content {
        None => String::new(),
        Some(RawContent::Text(t)) => t,
        Some(RawContent::Parts(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for p in parts {
                match (p.kind.as_str(), p.text) {
                    ("text", Some(t)) => texts.push(t),
                    ("text", None) => return Err(format!("`{at}` text part without `text`")),
                    (kind, _) => {
                        return Err(format!(
                            "`{at}` part type `{}` is not supported",
                            crate::domain::printable(kind)
                        ));
                    }
                }
            }
            texts.join("\n")
        }
    })
}

fn tool_choice(v: Value) -> Result<ToolChoice, String> {
    match v {
        Value::String(s) if s == "auto" => Ok(ToolChoice::Auto),
        Value::String(s) if s == "none" => Ok(ToolChoice::None),
        Value::String(s) if s == "required" => Ok(ToolChoice::Required),
        Value::Object(o) => o
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .map(|n| ToolChoice::Function(n.to_owned()))
            .ok_or_else(|| "`tool_choice` object must be {\"type\": \"function\", \"function\": {\"name\": ...}}".to_owned()),
        _ => Err("`tool_choice` must be `auto`, `none`, `required` or a function".into()),
    }
}

/// Parses a `/v1/chat/completions` body. The error text is safe to return to the caller (it quotes
/// field names, never values).
pub fn parse_chat_request(body: &[u8]) -> Result<ChatRequest, String> {
    let raw: RawChatRequest = serde_json::from_slice(body).map_err(|e| serde_message(&e))?;
    check_model_field(&raw.model)?;
    if raw.messages.is_empty() {
        return Err("`messages` must contain at least one message".into());
    }
    if raw.n.is_some_and(|n| n != 1) {
        return Err("`n` other than 1 is not supported".into());
    }
    let mut messages = Vec::with_capacity(raw.messages.len());
    for (i, m) in raw.messages.into_iter().enumerate() {
        let Some(role) = ROLES.iter().find(|(n, _)| *n == m.role).map(|(_, r)| *r) else {
            let names: Vec<&str> = ROLES.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "`messages[{i}].role` must be one of {}",
                names.join(", ")
            ));
        };
        let content = content_text(m.content, &format!("messages[{i}].content"))?;
        let mut tool_calls = Vec::new();
        for (j, c) in m.tool_calls.into_iter().flatten().enumerate() {
            if c.kind != "function" {
                return Err(format!(
                    "`messages[{i}].tool_calls[{j}].type` must be `function`"
                ));
            }
            tool_calls.push(ToolCall {
                id: c.id,
                name: c.function.name,
                arguments: c.function.arguments,
            });
        }
        if role == Role::Tool && m.tool_call_id.is_none() {
            return Err(format!(
                "`messages[{i}]` is a tool message without `tool_call_id`"
            ));
        }
        messages.push(ChatMessage {
            role,
            content,
            tool_calls,
            tool_call_id: m.tool_call_id,
            name: m.name,
            is_error: false,
        });
    }
    let mut tools = Vec::new();
    for (i, t) in raw.tools.into_iter().flatten().enumerate() {
        if t.kind != "function" {
            return Err(format!("`tools[{i}].type` must be `function`"));
        }
        tools.push(Tool {
            name: t.function.name,
            description: t.function.description,
            parameters: t
                .function
                .parameters
                .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
            strict: t.function.strict,
        });
    }
    let response_format = match raw.response_format {
        None => None,
        Some(f) => match f.kind.as_str() {
            "text" => None,
            "json_object" => Some(ResponseFormat::JsonObject),
            "json_schema" => {
                let s = f
                    .json_schema
                    .ok_or("`response_format.json_schema` is required for type `json_schema`")?;
                Some(ResponseFormat::JsonSchema {
                    name: s.name,
                    description: s.description,
                    schema: s.schema.unwrap_or_else(|| serde_json::json!({})),
                    strict: s.strict.unwrap_or(false),
                })
            }
            other => {
                return Err(format!(
                    "`response_format.type` `{}` is not supported",
                    crate::domain::printable(other)
                ));
            }
        },
    };
    Ok(ChatRequest {
        model: raw.model,
        messages,
        tools,
        tool_choice: raw.tool_choice.map(tool_choice).transpose()?,
        response_format,
        temperature: raw.temperature,
        top_p: raw.top_p,
        stop: match raw.stop {
            None => Vec::new(),
            Some(RawStop::One(s)) => vec![s],
            Some(RawStop::Many(v)) => v,
        },
        seed: raw.seed,
        max_tokens: raw.max_completion_tokens.or(raw.max_tokens),
        stream: raw.stream.unwrap_or(false),
        include_usage: raw.stream_options.is_some_and(|o| o.include_usage),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmbeddingRequest {
    model: String,
    input: RawEmbeddingInput,
    #[serde(default)]
    dimensions: Option<u32>,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    #[expect(dead_code, reason = "the ledger records the verified subject instead")]
    user: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawEmbeddingInput {
    One(String),
    Many(Vec<String>),
}

/// Parses a `/v1/embeddings` body (text inputs; token-array inputs are refused), and whether the
/// vectors are wanted base64-encoded (little-endian `f32`s, as OpenAI's SDKs ask by default).
pub fn parse_embedding_request(body: &[u8]) -> Result<(EmbeddingRequest, bool), String> {
    let raw: RawEmbeddingRequest = serde_json::from_slice(body).map_err(|e| serde_message(&e))?;
    check_model_field(&raw.model)?;
    let base64 = match raw.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => return Err("`encoding_format` must be `float` or `base64`".into()),
    };
    let input = match raw.input {
        RawEmbeddingInput::One(s) => vec![s],
        RawEmbeddingInput::Many(v) => v,
    };
    if input.is_empty() || input.len() > 2048 {
        return Err("`input` must hold 1 to 2048 texts".into());
    }
    Ok((
        EmbeddingRequest {
            model: raw.model,
            input,
            dimensions: raw.dimensions,
        },
        base64,
    ))
}

/// One embedding vector as OpenAI sends it: a list of floats, or their little-endian bytes in
/// base64.
pub fn embedding_json(vector: &[f32], base64: bool) -> Value {
    if !base64 {
        return serde_json::json!(vector);
    }
    use base64::Engine as _;
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
}

#[derive(Debug, Serialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl Usage {
    pub fn of(u: &crate::models::chat::Usage) -> Self {
        Self {
            prompt_tokens: u.input_tokens,
            completion_tokens: u.output_tokens,
            total_tokens: u.input_tokens + u.output_tokens,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct WireToolCall<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: WireFunction<'a>,
}

#[derive(Debug, Serialize)]
pub struct WireFunction<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    pub arguments: &'a str,
}

/// A `chat.completion` object for `completion`.
pub fn completion_json(id: &str, created: u64, model: &str, c: &Completion) -> Value {
    let tool_calls: Vec<WireToolCall<'_>> = c
        .tool_calls
        .iter()
        .map(|t| WireToolCall {
            index: None,
            id: Some(&t.id),
            kind: Some("function"),
            function: WireFunction {
                name: Some(&t.name),
                arguments: &t.arguments,
            },
        })
        .collect();
    let mut message = serde_json::json!({"role": "assistant", "content": c.content});
    if !tool_calls.is_empty()
        && let Some(m) = message.as_object_mut()
    {
        if c.content.is_empty() {
            m.insert("content".into(), Value::Null);
        }
        m.insert(
            "tool_calls".into(),
            serde_json::to_value(&tool_calls).unwrap_or_default(),
        );
    }
    serde_json::json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": c.finish.openai()}],
        "usage": Usage::of(&c.usage),
    })
}

#[derive(Debug, Serialize)]
pub struct ChatChunk<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: Vec<ChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Serialize)]
pub struct ChunkChoice<'a> {
    pub index: u32,
    pub delta: Delta<'a>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Default, Serialize)]
pub struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<WireToolCall<'a>>>,
}

#[derive(Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelEntry>,
}

#[derive(Debug, Serialize)]
pub struct ModelEntry {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(body: &str, want_err: Option<&str>) {
        match (parse_chat_request(body.as_bytes()), want_err) {
            (Ok(_), None) => {}
            (Err(e), Some(w)) => assert!(e.contains(w), "{e:?} should contain {w:?}"),
            (got, want) => panic!("{body}: got {got:?}, want error {want:?}"),
        }
    }

    #[test]
    fn parses_openai_requests_and_refuses_routing_overrides() {
        // docs/security.md case 53: caller-supplied egress settings are refused, not ignored.
        let msgs = r#""messages":[{"role":"user","content":"hi"}]"#;
        check(&format!(r#"{{"model":"m",{msgs}}}"#), None);
        check(
            &format!(
                r#"{{"model":"m",{msgs},"stream":true,"stream_options":{{"include_usage":true}}}}"#
            ),
            None,
        );
        check(
            &format!(r#"{{"model":"m",{msgs},"temperature":0.2,"user":"u"}}"#),
            None,
        );
        check(
            &format!(
                r#"{{"model":"m",{msgs},"tools":[{{"type":"function","function":{{"name":"f","parameters":{{"type":"object"}}}}}}],"tool_choice":"auto","response_format":{{"type":"json_object"}}}}"#
            ),
            None,
        );
        check(
            r#"{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c1","content":"42"}]}"#,
            None,
        );
        check(
            r#"{"model":"m","messages":[{"role":"tool","content":"42"}]}"#,
            Some("tool_call_id"),
        );
        check(
            &format!(r#"{{"model":"m",{msgs},"response_format":{{"type":"grammar"}}}}"#),
            Some("not supported"),
        );
        check(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"}]}]}"#,
            None,
        );
        check(
            &format!(r#"{{"model":"m",{msgs},"api_base":"http://x"}}"#),
            Some("unknown field `api_base`"),
        );
        check(
            &format!(r#"{{"model":"m",{msgs},"base_url":"http://x"}}"#),
            Some("unknown field `base_url`"),
        );
        check(
            &format!(r#"{{"model":"m",{msgs},"extra_headers":{{}}}}"#),
            Some("unknown field `extra_headers`"),
        );
        check(&format!(r#"{{"model":"m",{msgs},"n":2}}"#), Some("`n`"));
        check(r#"{"model":"m","messages":[]}"#, Some("at least one"));
        check(
            r#"{"model":"m","messages":[{"role":"root","content":"x"}]}"#,
            Some("role"),
        );
        check(r#"{"messages":[]}"#, Some("missing field `model`"));
        check(
            r#"{"model":"https://evil.example/v1","messages":[{"role":"user","content":"x"}]}"#,
            Some("not a URL"),
        );
    }
}
