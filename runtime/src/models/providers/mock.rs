//! The built-in mock provider: deterministic replies and token counts, for the local target's
//! zero-setup default and for unit tests. (Tests of the real adapters use the mock provider *server*
//! in the tests crate, on the wire.)
//!
//! Tokens are counted as whitespace-separated words (plus 3 per message for framing), so a test can
//! predict usage and cost exactly. It must stay deterministic: no clocks, no randomness.

use super::{Adapter, Call, EventStream, ProviderError};
use crate::domain::ModelId;
use crate::models::chat::{
    ChatMessage, ChatRequest, Completion, EmbeddingRequest, Embeddings, FinishReason, Role,
    StreamEvent, Usage,
};

#[derive(Debug, Default, Clone, Copy)]
pub struct MockProvider;

impl MockProvider {
    /// The deterministic reply to `messages`.
    pub fn reply(
        &self,
        model: &ModelId,
        messages: &[ChatMessage],
        max_tokens: Option<u32>,
    ) -> Completion {
        let input_tokens: u64 = messages
            .iter()
            .map(|m| 3 + m.content.split_whitespace().count() as u64)
            .sum();
        let last_user = messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
            .unwrap_or("");
        let echo: Vec<&str> = last_user.split_whitespace().take(12).collect();
        let full = format!(
            "This is {model} answering. You sent {} message(s) and {input_tokens} token(s). Echo: {}",
            messages.len(),
            echo.join(" ")
        );
        let words: Vec<&str> = full.split_whitespace().collect();
        let limit = max_tokens.map_or(usize::MAX, |m| m as usize);
        let (content, finish) = if words.len() > limit {
            (words[..limit].join(" "), FinishReason::Length)
        } else {
            (words.join(" "), FinishReason::Stop)
        };
        let output_tokens = content.split_whitespace().count() as u64;
        Completion {
            content,
            tool_calls: Vec::new(),
            finish,
            usage: Usage::plain(input_tokens, output_tokens, false),
            reported: crate::models::chat::Reported::default(),
        }
    }
}

impl Adapter for MockProvider {
    async fn complete(
        &self,
        call: Call<'_>,
        request: &ChatRequest,
    ) -> Result<Completion, ProviderError> {
        Ok(self.reply(call.model, &request.messages, request.max_tokens))
    }

    async fn stream(
        &self,
        call: Call<'_>,
        request: &ChatRequest,
    ) -> Result<EventStream, ProviderError> {
        let c = self.reply(call.model, &request.messages, request.max_tokens);
        let mut events: Vec<Result<StreamEvent, ProviderError>> = c
            .content
            .split(' ')
            .enumerate()
            .map(|(i, w)| {
                Ok(StreamEvent::Text(if i == 0 {
                    w.to_owned()
                } else {
                    format!(" {w}")
                }))
            })
            .collect();
        events.push(Ok(StreamEvent::Finish(c.finish)));
        events.push(Ok(StreamEvent::Usage(c.usage)));
        Ok(Box::pin(futures_util::stream::iter(events)))
    }

    async fn embed(
        &self,
        _call: Call<'_>,
        request: &EmbeddingRequest,
    ) -> Result<Embeddings, ProviderError> {
        let dims = request.dimensions.unwrap_or(8).clamp(1, 4096) as usize;
        let vectors = request
            .input
            .iter()
            .map(|text| {
                // A deterministic vector from the text's bytes (FNV-1a per dimension).
                (0..dims)
                    .map(|d| {
                        let mut h: u32 = 0x811c_9dc5 ^ d as u32;
                        for b in text.bytes() {
                            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
                        }
                        (h % 2001) as f32 / 1000.0 - 1.0
                    })
                    .collect()
            })
            .collect();
        let input_tokens = request
            .input
            .iter()
            .map(|t| t.split_whitespace().count() as u64)
            .sum();
        Ok(Embeddings {
            vectors,
            usage: Usage::plain(input_tokens, 0, false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_deterministic_and_usage_matches_words() {
        let model = ModelId::parse("mock-small").unwrap();
        let msgs = vec![ChatMessage::text(Role::User, "hello there")];
        let a = MockProvider.reply(&model, &msgs, None);
        let b = MockProvider.reply(&model, &msgs, None);
        assert_eq!(a, b);
        assert_eq!(a.usage.input_tokens, 5);
        assert_eq!(
            a.usage.output_tokens,
            a.content.split_whitespace().count() as u64
        );
        let short = MockProvider.reply(&model, &msgs, Some(3));
        assert_eq!(
            (short.usage.output_tokens, short.finish),
            (3, FinishReason::Length)
        );
    }
}
