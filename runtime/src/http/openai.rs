//! OpenAI-compatible wire types for `/v1/chat/completions` and `/v1/models`.
//!
//! Requests are parsed strictly: an unknown field (`api_base`, `base_url`, `extra_headers`, ...) is a
//! 400 naming the field, so no caller-controlled routing or egress can slip through. This module only
//! describes shapes; it must not route, meter or authorize.

use serde::{Deserialize, Serialize};

use crate::models::{ChatMessage, ChatRequest};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMessage {
    role: String,
    content: RawContent,
    #[serde(default)]
    #[expect(
        dead_code,
        reason = "accepted for wire compatibility; not used by the mock provider"
    )]
    name: Option<String>,
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
    text: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
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
    // Sampling parameters are accepted for compatibility; the mock provider is deterministic.
    #[serde(default)]
    temperature: Option<serde_json::Number>,
    #[serde(default)]
    top_p: Option<serde_json::Number>,
    #[serde(default)]
    presence_penalty: Option<serde_json::Number>,
    #[serde(default)]
    frequency_penalty: Option<serde_json::Number>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    stop: Option<serde_json::Value>,
    #[serde(default)]
    user: Option<String>,
}

const ROLES: &[&str] = &["system", "developer", "user", "assistant"];

/// Parses a `/v1/chat/completions` body. The error text is safe to return to the caller (it quotes
/// field names, never values).
pub fn parse_chat_request(body: &[u8]) -> Result<ChatRequest, String> {
    let raw: RawChatRequest = serde_json::from_slice(body).map_err(|e| {
        let text = e.to_string();
        // serde's message may quote a value; keep only the part before it for unknown fields.
        match text.find(", expected") {
            Some(i) if text.starts_with("unknown field") => text[..i].to_owned(),
            _ => text,
        }
    })?;
    let _ = (
        &raw.temperature,
        &raw.top_p,
        &raw.presence_penalty,
        &raw.frequency_penalty,
        &raw.seed,
        &raw.stop,
        &raw.user,
    );
    if raw.messages.is_empty() {
        return Err("`messages` must contain at least one message".into());
    }
    if raw.n.is_some_and(|n| n != 1) {
        return Err("`n` other than 1 is not supported".into());
    }
    let mut messages = Vec::with_capacity(raw.messages.len());
    for (i, m) in raw.messages.into_iter().enumerate() {
        if !ROLES.contains(&m.role.as_str()) {
            return Err(format!(
                "`messages[{i}].role` must be one of {}",
                ROLES.join(", ")
            ));
        }
        let content = match m.content {
            RawContent::Text(t) => t,
            RawContent::Parts(parts) => {
                if let Some(p) = parts.iter().find(|p| p.kind != "text") {
                    return Err(format!(
                        "`messages[{i}].content` part type `{}` is not supported",
                        crate::domain::printable(&p.kind)
                    ));
                }
                parts
                    .into_iter()
                    .map(|p| p.text)
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        };
        messages.push(ChatMessage {
            role: m.role,
            content,
        });
    }
    Ok(ChatRequest {
        model: raw.model,
        messages,
        stream: raw.stream.unwrap_or(false),
        include_usage: raw.stream_options.is_some_and(|o| o.include_usage),
        max_tokens: raw.max_completion_tokens.or(raw.max_tokens),
    })
}

#[derive(Debug, Serialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

#[derive(Debug, Serialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    pub usage: Usage,
}

#[derive(Debug, Serialize)]
pub struct Choice {
    pub index: u32,
    pub message: AssistantMessage,
    pub finish_reason: &'static str,
}

#[derive(Debug, Serialize)]
pub struct AssistantMessage {
    pub role: &'static str,
    pub content: String,
}

#[derive(Debug, Serialize)]
pub struct ChatChunk {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Serialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Default, Serialize)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
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
    }
}
