//! The built-in mock provider: deterministic replies and token counts, for the local target and tests.
//!
//! Tokens are counted as whitespace-separated words (plus 3 per message for framing), so a test can
//! predict usage and cost exactly. It must stay deterministic: no clocks, no randomness.

use crate::domain::ModelId;
use crate::models::ChatMessage;

use super::Completion;

#[derive(Debug, Default, Clone)]
pub struct MockProvider;

impl MockProvider {
    pub fn complete(
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
            .find(|m| m.role == "user")
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
        let (content, finish_reason) = if words.len() > limit {
            (words[..limit].join(" "), "length")
        } else {
            (words.join(" "), "stop")
        };
        let output_tokens = content.split_whitespace().count() as u64;
        Completion {
            content,
            input_tokens,
            output_tokens,
            finish_reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_deterministic_and_usage_matches_words() {
        let model = ModelId::parse("mock-small").unwrap();
        let msgs = vec![ChatMessage {
            role: "user".into(),
            content: "hello there".into(),
        }];
        let a = MockProvider.complete(&model, &msgs, None);
        let b = MockProvider.complete(&model, &msgs, None);
        assert_eq!(a, b);
        assert_eq!(a.input_tokens, 5);
        assert_eq!(a.output_tokens, a.content.split_whitespace().count() as u64);
        let short = MockProvider.complete(&model, &msgs, Some(3));
        assert_eq!((short.output_tokens, short.finish_reason), (3, "length"));
    }
}
