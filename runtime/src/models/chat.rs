//! The canonical shapes every surface parses into and every provider adapter speaks from: a chat
//! request (messages, tools, JSON mode, sampling), a completion, the events of a stream, usage, and
//! embeddings. Surfaces (`http::openai`, `http::anthropic`) and adapters translate to and from these;
//! this module only describes them and must do no IO.

use serde::Serialize;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One chat message after normalisation (text content parts joined).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
    /// Tool calls an assistant message made (replayed history).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a `tool` message: the call it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// OpenAI's participant name (passed on where the provider has one, else refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// For a `tool` message: the tool failed (Anthropic's `is_error`; passed on where the provider
    /// has it, else refused).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub is_error: bool,
}

impl ChatMessage {
    pub fn text(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
            is_error: false,
        }
    }
}

/// A function the model may call; `parameters` is a JSON Schema passed through untouched.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    pub parameters: serde_json::Value,
    /// OpenAI's strict schema adherence (passed on where the provider has it, else refused).
    pub strict: Option<bool>,
}

/// One tool call: its id, the function's name, and its arguments (a JSON text, as providers send it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// How the model may use the tools.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    Function(String),
}

/// JSON mode: any JSON object, or one matching a schema.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ResponseFormat {
    JsonObject,
    JsonSchema {
        name: String,
        description: Option<String>,
        schema: serde_json::Value,
        strict: bool,
    },
}

/// A validated chat request, whatever surface it came in on.
#[derive(Debug, Clone, Default)]
pub struct ChatRequest {
    /// The model name as the caller wrote it (a model, an alias, or `default`); resolved only inside
    /// the tenant's policy.
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    pub response_format: Option<ResponseFormat>,
    pub temperature: Option<serde_json::Number>,
    pub top_p: Option<serde_json::Number>,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    pub max_tokens: Option<u32>,
    pub stream: bool,
    /// OpenAI surface: send a final usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

impl FinishReason {
    /// OpenAI's spelling.
    pub fn openai(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
        }
    }

    /// Anthropic's spelling (`stop_reason`).
    pub fn anthropic(self) -> &'static str {
        match self {
            FinishReason::Stop | FinishReason::ContentFilter => "end_turn",
            FinishReason::Length => "max_tokens",
            FinishReason::ToolCalls => "tool_use",
        }
    }
}

/// Tokens one call used. `estimated` when the provider reported none and they were counted here.
///
/// `input_tokens` is every input token, whatever it cost; `cached_input_tokens` (read from the
/// provider's prompt cache) and `cache_write_tokens` (written to it) are parts of it, and
/// `reasoning_tokens` a part of `output_tokens`: each token is in exactly one price class, never
/// counted twice (`Usage::classes`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub estimated: bool,
    #[serde(default)]
    pub cached_input_tokens: u64,
    #[serde(default)]
    pub cache_write_tokens: u64,
    #[serde(default)]
    pub reasoning_tokens: u64,
}

impl Usage {
    /// Plain counts (no cache, no reasoning).
    pub fn plain(input_tokens: u64, output_tokens: u64, estimated: bool) -> Self {
        Self {
            input_tokens,
            output_tokens,
            estimated,
            ..Self::default()
        }
    }

    /// The tokens by price class, each in one (after `classes`).
    pub fn units(&self) -> crate::pricing::Units {
        let u = self.classes();
        crate::pricing::Units {
            input: u.input_tokens - u.cached_input_tokens - u.cache_write_tokens,
            cached_input: u.cached_input_tokens,
            cache_write: u.cache_write_tokens,
            output: u.output_tokens - u.reasoning_tokens,
            reasoning: u.reasoning_tokens,
        }
    }

    /// The parts, made consistent: cached and cache-write tokens within the input, reasoning within
    /// the output (a provider's figure beyond its whole is cut to it, never credited).
    pub fn classes(mut self) -> Self {
        self.cached_input_tokens = self.cached_input_tokens.min(self.input_tokens);
        self.cache_write_tokens = self
            .cache_write_tokens
            .min(self.input_tokens - self.cached_input_tokens);
        self.reasoning_tokens = self.reasoning_tokens.min(self.output_tokens);
        self
    }
}

#[cfg(test)]
mod usage_tests {
    use super::Usage;

    #[test]
    fn parts_beyond_their_whole_are_cut_to_it_never_credited() {
        let silly = Usage {
            cached_input_tokens: 5_000_000,
            cache_write_tokens: 5_000_000,
            reasoning_tokens: 99,
            ..Usage::plain(10, 4, false)
        };
        let u = silly.units();
        assert_eq!((u.input, u.cached_input, u.cache_write), (0, 10, 0));
        assert_eq!((u.output, u.reasoning), (0, 4));
        let plain = Usage::plain(7, 3, false).units();
        assert_eq!((plain.input, plain.output, plain.cached_input), (7, 3, 0));
    }
}

/// A finished, non-streamed completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish: FinishReason,
    pub usage: Usage,
    pub reported: Reported,
}

/// What the provider said about a call, kept on its ledger row next to our own figures so finance
/// can trace a row to the provider's records: its id for the call, its usage object as sent, and its
/// own price of the call where it reports one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reported {
    /// OpenAI's and Anthropic's response `id`, Bedrock's `x-amzn-RequestId` (at most 256 bytes).
    pub request_id: Option<String>,
    /// The usage object as the provider sent it (compact JSON, at most `RAW_USAGE_MAX` bytes; a
    /// larger one is replaced by `{"omitted_bytes": n}`).
    pub usage: Option<String>,
    /// The provider's own cost of the call (OpenAI-compatible `usage.cost` in USD, as OpenRouter
    /// and LiteLLM report it), rounded up to the micro-USD as ours is.
    pub cost: Option<crate::domain::MicroUsd>,
}

/// The largest raw usage object a ledger row keeps.
pub const RAW_USAGE_MAX: usize = 2048;

impl Reported {
    /// `request_id` if it is a plausible id (1-256 printable bytes), else none.
    pub fn id(raw: Option<&str>) -> Option<String> {
        raw.filter(|id| {
            !id.is_empty() && id.len() <= 256 && id.bytes().all(|b| b.is_ascii_graphic())
        })
        .map(str::to_owned)
    }

    /// A usage object as the ledger keeps it.
    pub fn raw_usage(usage: &serde_json::Value) -> String {
        let text = usage.to_string();
        if text.len() <= RAW_USAGE_MAX {
            text
        } else {
            serde_json::json!({"omitted_bytes": text.len()}).to_string()
        }
    }

    /// Fills what `other` knows and `self` does not (a stream reports its parts in several events).
    pub fn merge(&mut self, other: Reported) {
        if self.request_id.is_none() {
            self.request_id = other.request_id;
        }
        if other.usage.is_some() {
            self.usage = other.usage;
        }
        if other.cost.is_some() {
            self.cost = other.cost;
        }
    }
}

/// One event of a streamed completion, in the order providers send them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// A piece of the reply text.
    Text(String),
    /// A piece of a tool call: the first piece of call `index` carries its id and name.
    ToolCall {
        index: u32,
        id: Option<String>,
        name: Option<String>,
        arguments: String,
    },
    Finish(FinishReason),
    /// The provider's own usage figures (usually last).
    Usage(Usage),
    /// The provider's id for the call, its raw usage and its own cost, as far as this event tells.
    Reported(Reported),
}

/// An embeddings request: the inputs and, optionally, the dimensions wanted.
#[derive(Debug, Clone, Default)]
pub struct EmbeddingRequest {
    pub model: String,
    pub input: Vec<String>,
    pub dimensions: Option<u32>,
}

/// Embedding vectors, one per input, and the tokens the provider counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub usage: Usage,
}

/// Refuses a `model` that is a URL (security case 53): a request names a model of its policy, never
/// where to send it. The error text is safe to return (it quotes no value).
pub fn check_model_field(model: &str) -> Result<(), String> {
    if model.contains("://") {
        return Err(
            "`model` must be a model name, not a URL; endpoints come from the tenant's policy"
                .into(),
        );
    }
    Ok(())
}

/// Refuses what a provider's wire format cannot carry (participant names, strict tools, failed tool
/// results), so no accepted field is silently dropped.
pub fn check_carried(
    request: &ChatRequest,
    provider: &'static str,
    names: bool,
    strict_tools: bool,
    tool_errors: bool,
) -> Result<(), String> {
    if !names && request.messages.iter().any(|m| m.name.is_some()) {
        return Err(format!(
            "`messages[].name` is not supported by provider `{provider}`"
        ));
    }
    if !strict_tools && request.tools.iter().any(|t| t.strict == Some(true)) {
        return Err(format!(
            "`strict` tools are not supported by provider `{provider}`"
        ));
    }
    if !tool_errors && request.messages.iter().any(|m| m.is_error) {
        return Err(format!(
            "a tool result marked `is_error` is not supported by provider `{provider}`"
        ));
    }
    Ok(())
}

/// A local token estimate for text a provider did not count (about four characters a token, as
/// the providers' own rules of thumb say); always at least one token for non-empty text.
pub fn estimate_tokens(text: &str) -> u64 {
    let chars = text.chars().count() as u64;
    chars.div_ceil(4)
}

/// The local estimate of a request's input tokens (content plus 3 per message for framing).
/// An upper bound of the input tokens a request sends, for holding its worst-case cost: every byte
/// of text a token (tokenizers put at least one byte in a token), plus each message's framing and
/// the tools' definitions as JSON.
pub fn input_tokens_at_most(messages: &[ChatMessage], tools: &[Tool]) -> u64 {
    let text: usize = messages
        .iter()
        .map(|m| {
            16 + m.content.len()
                + m.name.as_ref().map_or(0, String::len)
                + m.tool_calls
                    .iter()
                    .map(|c| 16 + c.name.len() + c.arguments.len())
                    .sum::<usize>()
        })
        .sum();
    let tools = serde_json::to_vec(tools).map_or(0, |v| v.len());
    u64::try_from(text + tools).unwrap_or(u64::MAX)
}

pub fn estimate_input(messages: &[ChatMessage]) -> u64 {
    messages
        .iter()
        .map(|m| 3 + estimate_tokens(&m.content))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_provider_cannot_carry_is_refused_not_dropped() {
        let mut named = ChatMessage::text(Role::User, "hi");
        named.name = Some("alice".into());
        let mut failed = ChatMessage::text(Role::Tool, "boom");
        failed.is_error = true;
        let strict = Tool {
            name: "f".into(),
            description: None,
            parameters: serde_json::json!({}),
            strict: Some(true),
        };
        let with = |m: Vec<ChatMessage>, t: Vec<Tool>| ChatRequest {
            messages: m,
            tools: t,
            ..ChatRequest::default()
        };
        let plain = with(vec![ChatMessage::text(Role::User, "hi")], Vec::new());
        assert!(check_carried(&plain, "p", false, false, false).is_ok());
        let r = with(vec![named], Vec::new());
        assert!(check_carried(&r, "p", true, false, false).is_ok());
        assert!(
            check_carried(&r, "p", false, true, true)
                .unwrap_err()
                .contains("name")
        );
        let r = with(vec![failed], Vec::new());
        assert!(check_carried(&r, "p", true, true, true).is_ok());
        assert!(
            check_carried(&r, "p", true, true, false)
                .unwrap_err()
                .contains("is_error")
        );
        let r = with(Vec::new(), vec![strict]);
        assert!(check_carried(&r, "p", true, true, true).is_ok());
        assert!(
            check_carried(&r, "p", true, false, true)
                .unwrap_err()
                .contains("strict")
        );
    }
}
