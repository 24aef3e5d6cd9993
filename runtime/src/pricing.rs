//! The price book: effective-dated, versioned prices per provider and model, in integer micro-USD,
//! with per-tenant negotiated prices.
//!
//! The book is kept in the repository (`prices/book.yaml`), imported into the control plane with
//! `tenantctl prices import`, and carried to the runtime in each tenant's registry record as
//! `TenantPrices` (the book's versions with the tenant's negotiated prices in place). A call is
//! priced by the version effective on its UTC day; its ledger row names that version (with
//! `+negotiated` when a negotiated price applied), so finance can re-derive every cost. A model with
//! no price there cannot be routed to: the call is refused before the upstream call, never billed at
//! zero. This module must not use floats.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::{MicroUsd, ProviderId};

/// One model's price: per million tokens of each unit class, and per call, in micro-USD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub provider: ProviderId,
    pub model: String,
    pub input_per_mtok: MicroUsd,
    pub output_per_mtok: MicroUsd,
    /// A fee per call, where the provider charges one.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub per_request: MicroUsd,
    /// Input tokens read from the provider's prompt cache (default: the input price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_per_mtok: Option<MicroUsd>,
    /// Input tokens written to the prompt cache (default: the input price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_per_mtok: Option<MicroUsd>,
    /// Reasoning tokens, part of the output (default: the output price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_per_mtok: Option<MicroUsd>,
}

fn is_zero(m: &MicroUsd) -> bool {
    m.0 == 0
}

impl Price {
    pub fn rates(&self) -> Rates {
        Rates {
            input_per_mtok: self.input_per_mtok,
            output_per_mtok: self.output_per_mtok,
            per_request: self.per_request,
            cached_input_per_mtok: self.cached_input_per_mtok.unwrap_or(self.input_per_mtok),
            cache_write_per_mtok: self.cache_write_per_mtok.unwrap_or(self.input_per_mtok),
            reasoning_per_mtok: self.reasoning_per_mtok.unwrap_or(self.output_per_mtok),
        }
    }
}

/// What a route charges, each unit class resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rates {
    pub input_per_mtok: MicroUsd,
    pub output_per_mtok: MicroUsd,
    pub per_request: MicroUsd,
    pub cached_input_per_mtok: MicroUsd,
    pub cache_write_per_mtok: MicroUsd,
    pub reasoning_per_mtok: MicroUsd,
}

/// A call's tokens by price class, each token in exactly one: plain input, prompt-cache reads,
/// prompt-cache writes, plain output, reasoning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Units {
    pub input: u64,
    pub cached_input: u64,
    pub cache_write: u64,
    pub output: u64,
    pub reasoning: u64,
}

fn rate(m: MicroUsd) -> u128 {
    m.0.unsigned_abs() as u128
}

impl Rates {
    /// The cost of a call of plain input and output tokens (no cache, no reasoning).
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> MicroUsd {
        self.cost_of(&Units {
            input: input_tokens,
            output: output_tokens,
            ..Units::default()
        })
    }

    /// The cost of one call, each token at its class's price, rounded up to the next whole
    /// micro-USD once per call (never down: a provider's invoice is never above the ledger), plus
    /// the per-call fee. Saturates instead of overflowing.
    pub fn cost_of(&self, u: &Units) -> MicroUsd {
        let numerator = u128::from(u.input) * rate(self.input_per_mtok)
            + u128::from(u.cached_input) * rate(self.cached_input_per_mtok)
            + u128::from(u.cache_write) * rate(self.cache_write_per_mtok)
            + u128::from(u.output) * rate(self.output_per_mtok)
            + u128::from(u.reasoning) * rate(self.reasoning_per_mtok);
        let micro = numerator.div_ceil(1_000_000) + rate(self.per_request);
        MicroUsd(i64::try_from(micro).unwrap_or(i64::MAX))
    }

    /// The most a call of at most `input_tokens` in and `output_tokens` out can cost, whichever
    /// classes its tokens fall in (what a budget holds before the call).
    pub fn worst_case(&self, input_tokens: u64, output_tokens: u64) -> MicroUsd {
        let input = rate(self.input_per_mtok)
            .max(rate(self.cached_input_per_mtok))
            .max(rate(self.cache_write_per_mtok));
        let output = rate(self.output_per_mtok).max(rate(self.reasoning_per_mtok));
        let numerator = u128::from(input_tokens) * input + u128::from(output_tokens) * output;
        let micro = numerator.div_ceil(1_000_000) + rate(self.per_request);
        MicroUsd(i64::try_from(micro).unwrap_or(i64::MAX))
    }
}

/// One version of the book, effective from a UTC day (`YYYY-MM-DD`) until the next version's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceVersion {
    pub version: String,
    pub effective_from: String,
    pub prices: Vec<Price>,
    /// Negotiated prices by tenant id: each replaces the book's price of its model for that tenant.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tenants: BTreeMap<String, Vec<Price>>,
}

/// The whole book: its versions, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceBook {
    pub versions: Vec<PriceVersion>,
}

impl PriceBook {
    /// The version effective on `day` (`YYYY-MM-DD`): the latest that starts on or before it.
    pub fn effective(&self, day: &str) -> Option<&PriceVersion> {
        self.versions
            .iter()
            .filter(|v| v.effective_from.as_str() <= day)
            .max_by(|a, b| a.effective_from.cmp(&b.effective_from))
    }

    /// What `tenant` is charged, version by version.
    pub fn for_tenant(&self, tenant: &str) -> TenantPrices {
        let mut versions: Vec<TenantVersion> = self
            .versions
            .iter()
            .map(|v| TenantVersion {
                version: v.version.clone(),
                effective_from: v.effective_from.clone(),
                prices: v.prices.clone(),
                negotiated: v.tenants.get(tenant).cloned().unwrap_or_default(),
            })
            .collect();
        versions.sort_by(|a, b| a.effective_from.cmp(&b.effective_from));
        TenantPrices { versions }
    }
}

/// The prices one tenant is charged: each version of the book, with its negotiated prices.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPrices {
    pub versions: Vec<TenantVersion>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantVersion {
    pub version: String,
    pub effective_from: String,
    pub prices: Vec<Price>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub negotiated: Vec<Price>,
}

impl TenantPrices {
    /// Only the prices `keep` accepts (provider, model): a tenant's Lambda carries the prices of its
    /// own models only (its whole configuration must fit Lambda's 4 KB of environment).
    pub fn retain(mut self, keep: impl Fn(ProviderId, &str) -> bool) -> Self {
        for v in &mut self.versions {
            v.prices.retain(|p| keep(p.provider, &p.model));
            v.negotiated.retain(|p| keep(p.provider, &p.model));
        }
        self
    }

    /// The version effective on `day` (`YYYY-MM-DD`).
    pub fn at(&self, day: &str) -> Option<&TenantVersion> {
        self.versions
            .iter()
            .filter(|v| v.effective_from.as_str() <= day)
            .max_by(|a, b| a.effective_from.cmp(&b.effective_from))
    }
}

impl TenantVersion {
    /// The price of `model` of `provider` for this tenant and the version label its ledger rows
    /// carry (`<version>+negotiated` when the tenant's own price applies).
    pub fn price(&self, provider: ProviderId, model: &str) -> Option<(Rates, String)> {
        let find = |list: &[Price]| {
            list.iter()
                .find(|p| p.provider == provider && p.model == model)
                .map(Price::rates)
        };
        find(&self.negotiated)
            .map(|r| (r, format!("{}+negotiated", self.version)))
            .or_else(|| find(&self.prices).map(|r| (r, self.version.clone())))
    }

    /// The models priced for `provider`.
    pub fn models(&self, provider: ProviderId) -> impl Iterator<Item = &str> {
        self.prices
            .iter()
            .filter(move |p| p.provider == provider)
            .map(|p| p.model.as_str())
    }
}

/// Today, UTC, as `YYYY-MM-DD` (the day a call is priced on).
pub fn today() -> String {
    crate::domain::utc_today()
}

/// How `usd_to_micro` treats digits past the micro-USD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// Half a micro-USD or more rounds away from zero (an invoice's cents and fractions).
    HalfUp,
    /// Any part of a micro-USD rounds away from zero (as `Rates::cost_of` prices a call).
    Up,
}

/// A decimal amount of USD as text (`12.5`, `-0.0000135`, `1.35e-5`) in micro-USD, exactly: no
/// float on the way. `None` for anything else or an amount beyond `i64`.
pub fn usd_to_micro(text: &str, rounding: Rounding) -> Option<i64> {
    let t = text.trim();
    let (negative, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (mantissa, exponent) = match t.find(['e', 'E']) {
        Some(at) => (&t[..at], t[at + 1..].parse::<i32>().ok()?),
        None => (t, 0),
    };
    let (whole, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || !(-64..=64).contains(&exponent)
    {
        return None;
    }
    // All digits, and where the decimal point falls among them once the exponent moved it; micro-USD
    // are the digits up to six places after it.
    let digits: Vec<u8> = whole
        .bytes()
        .chain(frac.bytes())
        .map(|b| b - b'0')
        .collect();
    let point = i64::try_from(whole.len()).ok()? + i64::from(exponent);
    let cut = point + 6;
    let mut micro: i64 = 0;
    let mut rest = Vec::new();
    for (i, d) in digits.iter().enumerate() {
        if i64::try_from(i).ok()? < cut {
            micro = micro.checked_mul(10)?.checked_add(i64::from(*d))?;
        } else {
            rest.push(*d);
        }
    }
    for _ in 0..(cut - i64::try_from(digits.len()).ok()?).max(0) {
        micro = micro.checked_mul(10)?;
    }
    let up = match rounding {
        Rounding::HalfUp => rest.first().is_some_and(|d| *d >= 5) && cut >= 0,
        Rounding::Up => rest.iter().any(|d| *d > 0),
    };
    if up {
        micro = micro.checked_add(1)?;
    }
    Some(if negative { -micro } else { micro })
}

#[cfg(test)]
mod tests {
    #[test]
    fn usd_text_becomes_micro_usd_exactly_whatever_its_notation() {
        use super::{Rounding::*, usd_to_micro};
        let cases = [
            ("12.5", HalfUp, Some(12_500_000)),
            ("0.0000135", Up, Some(14)),
            ("0.0000135", HalfUp, Some(14)),
            ("0.0000134", HalfUp, Some(13)),
            ("1.35e-5", Up, Some(14)),
            ("1.3E-5", Up, Some(13)),
            ("2e3", HalfUp, Some(2_000_000_000)),
            ("-0.5", HalfUp, Some(-500_000)),
            ("5e-7", HalfUp, Some(1)),
            ("5e-8", HalfUp, Some(0)),
            ("5e-8", Up, Some(1)),
            ("0", Up, Some(0)),
            (".25", HalfUp, Some(250_000)),
            ("", HalfUp, None),
            ("1.2.3", HalfUp, None),
            ("NaN", Up, None),
            ("1e999", Up, None),
            ("99999999999999999999", Up, None),
        ];
        for (text, rounding, want) in cases {
            assert_eq!(usd_to_micro(text, rounding), want, "{text} {rounding:?}");
        }
    }

    use super::*;

    fn price(model: &str, input: i64, output: i64) -> Price {
        Price {
            provider: ProviderId::Mock,
            model: model.into(),
            input_per_mtok: MicroUsd(input),
            output_per_mtok: MicroUsd(output),
            per_request: MicroUsd(0),
            cached_input_per_mtok: None,
            cache_write_per_mtok: None,
            reasoning_per_mtok: None,
        }
    }

    #[test]
    fn each_token_is_charged_once_in_its_class() {
        // Anthropic-like: cache reads at a tenth of the input price, writes at 1.25 times.
        let p = Price {
            cached_input_per_mtok: Some(MicroUsd(100_000)),
            cache_write_per_mtok: Some(MicroUsd(1_250_000)),
            reasoning_per_mtok: Some(MicroUsd(8_000_000)),
            ..price("m", 1_000_000, 5_000_000)
        }
        .rates();
        let u = Units {
            input: 300_000,
            cached_input: 600_000,
            cache_write: 100_000,
            output: 750_000,
            reasoning: 250_000,
        };
        // 300k plain input $0.30 + 600k cached $0.06 + 100k written $0.125 + 750k output $3.75 +
        // 250k reasoning $2.00.
        assert_eq!(p.cost_of(&u), MicroUsd(6_235_000));
        // Without class prices every class costs the plain price.
        let plain = price("m", 1_000_000, 5_000_000).rates();
        assert_eq!(plain.cost_of(&u), plain.cost(1_000_000, 1_000_000));
        // The worst case holds the dearest class.
        assert_eq!(
            p.worst_case(1_000_000, 1_000_000),
            MicroUsd(1_250_000 + 8_000_000)
        );
        assert!(p.worst_case(1_000_000, 1_000_000) >= p.cost_of(&u));
    }

    #[test]
    fn cost_is_integer_and_rounds_up_once_per_call() {
        let small = price("mock-small", 150_000, 600_000).rates();
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
        let fee = Rates {
            per_request: MicroUsd(250),
            ..small
        };
        assert_eq!(
            fee.cost(10, 10),
            MicroUsd(258),
            "the fee is added once, whole"
        );
        assert_eq!(fee.cost(0, 0), MicroUsd(250));
    }

    #[test]
    fn a_call_is_priced_by_the_version_of_its_day_and_the_tenants_negotiated_price() {
        let book = PriceBook {
            versions: vec![
                PriceVersion {
                    version: "v1".into(),
                    effective_from: "2026-01-01".into(),
                    prices: vec![price("mock-small", 100, 200)],
                    tenants: BTreeMap::new(),
                },
                PriceVersion {
                    version: "v2".into(),
                    effective_from: "2026-06-01".into(),
                    prices: vec![price("mock-small", 150, 300), price("mock-large", 1, 2)],
                    tenants: BTreeMap::from([(
                        "acme".to_owned(),
                        vec![price("mock-small", 120, 240)],
                    )]),
                },
            ],
        };
        assert_eq!(book.effective("2025-12-31"), None);
        assert_eq!(book.effective("2026-05-31").unwrap().version, "v1");
        assert_eq!(book.effective("2026-06-01").unwrap().version, "v2");
        let acme = book.for_tenant("acme");
        let globex = book.for_tenant("globex");
        let at = |p: &TenantPrices, day: &str, model: &str| {
            p.at(day)
                .and_then(|v| v.price(ProviderId::Mock, model))
                .map(|(r, label)| (r.input_per_mtok.0, label))
        };
        assert_eq!(
            at(&acme, "2026-03-01", "mock-small"),
            Some((100, "v1".into()))
        );
        assert_eq!(
            at(&acme, "2026-07-01", "mock-small"),
            Some((120, "v2+negotiated".into()))
        );
        assert_eq!(
            at(&globex, "2026-07-01", "mock-small"),
            Some((150, "v2".into()))
        );
        assert_eq!(
            at(&acme, "2026-07-01", "mock-large"),
            Some((1, "v2".into()))
        );
        assert_eq!(
            at(&acme, "2026-03-01", "mock-large"),
            None,
            "not priced in v1"
        );
        assert_eq!(
            at(&acme, "2025-03-01", "mock-small"),
            None,
            "before any version"
        );
    }
}
