//! The versioned price book: what one million tokens of each model cost, in integer micro-USD.
//!
//! A ledger row records the price book version it was priced with, so finance can re-derive every cost.
//! This module must not use floats.

use crate::domain::{MicroUsd, ProviderId};

/// One model's prices, per million tokens, in micro-USD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    pub provider: ProviderId,
    pub model: &'static str,
    pub input_per_mtok: MicroUsd,
    pub output_per_mtok: MicroUsd,
}

/// A price book: a version string plus a price per model.
#[derive(Debug, Clone, Copy)]
pub struct PriceBook {
    pub version: &'static str,
    pub prices: &'static [Price],
}

/// The price book this build charges with: list prices per million tokens (Azure's regional
/// deployment rates; for self-hosted servers, the platform's internal rate per token, so their
/// capacity is charged back like any other provider). A model without an entry cannot be routed to.
pub const CURRENT: PriceBook = PriceBook {
    version: "2026-12-01",
    prices: &[
        Price {
            provider: ProviderId::Mock,
            model: "mock-small",
            input_per_mtok: MicroUsd(150_000),
            output_per_mtok: MicroUsd(600_000),
        },
        Price {
            provider: ProviderId::Mock,
            model: "mock-large",
            input_per_mtok: MicroUsd(2_500_000),
            output_per_mtok: MicroUsd(10_000_000),
        },
        Price {
            provider: ProviderId::Mock,
            model: "mock-embed",
            input_per_mtok: MicroUsd(20_000),
            output_per_mtok: MicroUsd(0),
        },
        Price {
            provider: ProviderId::Openai,
            model: "gpt-4o-mini",
            input_per_mtok: MicroUsd(150_000),
            output_per_mtok: MicroUsd(600_000),
        },
        Price {
            provider: ProviderId::Openai,
            model: "gpt-4o",
            input_per_mtok: MicroUsd(2_500_000),
            output_per_mtok: MicroUsd(10_000_000),
        },
        Price {
            provider: ProviderId::Openai,
            model: "gpt-4.1-mini",
            input_per_mtok: MicroUsd(400_000),
            output_per_mtok: MicroUsd(1_600_000),
        },
        Price {
            provider: ProviderId::Openai,
            model: "text-embedding-3-small",
            input_per_mtok: MicroUsd(20_000),
            output_per_mtok: MicroUsd(0),
        },
        Price {
            provider: ProviderId::AzureOpenai,
            model: "gpt-4o-mini",
            input_per_mtok: MicroUsd(165_000),
            output_per_mtok: MicroUsd(660_000),
        },
        Price {
            provider: ProviderId::AzureOpenai,
            model: "gpt-4o",
            input_per_mtok: MicroUsd(2_750_000),
            output_per_mtok: MicroUsd(11_000_000),
        },
        Price {
            provider: ProviderId::AzureOpenai,
            model: "text-embedding-3-small",
            input_per_mtok: MicroUsd(22_000),
            output_per_mtok: MicroUsd(0),
        },
        Price {
            provider: ProviderId::Anthropic,
            model: "claude-haiku-4-5",
            input_per_mtok: MicroUsd(1_000_000),
            output_per_mtok: MicroUsd(5_000_000),
        },
        Price {
            provider: ProviderId::Anthropic,
            model: "claude-sonnet-4-5",
            input_per_mtok: MicroUsd(3_000_000),
            output_per_mtok: MicroUsd(15_000_000),
        },
        Price {
            provider: ProviderId::OpenaiCompatible,
            model: "llama-3.1-8b-instruct",
            input_per_mtok: MicroUsd(50_000),
            output_per_mtok: MicroUsd(80_000),
        },
        Price {
            provider: ProviderId::OpenaiCompatible,
            model: "qwen2.5-7b-instruct",
            input_per_mtok: MicroUsd(50_000),
            output_per_mtok: MicroUsd(80_000),
        },
        Price {
            provider: ProviderId::OpenaiCompatible,
            model: "nomic-embed-text",
            input_per_mtok: MicroUsd(10_000),
            output_per_mtok: MicroUsd(0),
        },
        Price {
            provider: ProviderId::Bedrock,
            model: "anthropic.claude-3-5-haiku-20241022-v1:0",
            input_per_mtok: MicroUsd(800_000),
            output_per_mtok: MicroUsd(4_000_000),
        },
        Price {
            provider: ProviderId::Bedrock,
            model: "amazon.nova-lite-v1:0",
            input_per_mtok: MicroUsd(60_000),
            output_per_mtok: MicroUsd(240_000),
        },
        Price {
            provider: ProviderId::Bedrock,
            model: "meta.llama3-1-8b-instruct-v1:0",
            input_per_mtok: MicroUsd(220_000),
            output_per_mtok: MicroUsd(220_000),
        },
    ],
};

impl PriceBook {
    pub fn price(&self, provider: ProviderId, model: &str) -> Option<&'static Price> {
        self.prices
            .iter()
            .find(|p| p.provider == provider && p.model == model)
    }

    /// The models this price book prices for `provider`; a model without a price cannot be routed to.
    pub fn models(&self, provider: ProviderId) -> impl Iterator<Item = &'static str> {
        self.prices
            .iter()
            .filter(move |p| p.provider == provider)
            .map(|p| p.model)
    }
}

impl Price {
    /// The cost of one call, rounded up to the next whole micro-USD once per call (never down: a
    /// provider's invoice is never above the ledger). Saturates instead of overflowing.
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> MicroUsd {
        let numerator = u128::from(input_tokens) * self.input_per_mtok.0.unsigned_abs() as u128
            + u128::from(output_tokens) * self.output_per_mtok.0.unsigned_abs() as u128;
        let micro = numerator.div_ceil(1_000_000);
        MicroUsd(i64::try_from(micro).unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_integer_and_rounds_up_once_per_call() {
        let small = CURRENT.price(ProviderId::Mock, "mock-small").unwrap();
        for (n_in, n_out, want) in [
            (0, 0, 0),
            (1, 0, 1), // 0.15 micro-USD rounds up to 1
            (1_000_000, 0, 150_000),
            (1_000_000, 1_000_000, 750_000),
            (10, 10, 8), // 1.5 + 6 = 7.5 -> 8
            (u64::MAX, u64::MAX, i64::MAX),
        ] {
            assert_eq!(small.cost(n_in, n_out), MicroUsd(want), "{n_in} {n_out}");
        }
    }

    #[test]
    fn unknown_models_have_no_price() {
        assert!(CURRENT.price(ProviderId::Mock, "gpt-4o").is_none());
        assert_eq!(CURRENT.models(ProviderId::Mock).count(), 3);
    }
}
