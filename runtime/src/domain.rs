//! Domain newtypes shared by the runtime and `tenantctl`: tenant ids, model ids, money, tiers.
//!
//! Every value here is validated once, at construction; code that holds one never re-checks its shape.
//! This module must not do IO.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a value was refused by one of the `parse` constructors. The message names the rule broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

/// A tenant identifier: 3-40 characters of lowercase ASCII letters, digits and hyphens, starting with a
/// letter, not ending with a hyphen and with no two hyphens in a row.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    pub const MIN_LEN: usize = 3;
    pub const MAX_LEN: usize = 40;

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let len = raw.chars().count();
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&len) {
            return Err(InvalidValue(format!(
                "tenant id `{}` is {len} characters long; it must be {}-{} characters",
                printable(raw),
                Self::MIN_LEN,
                Self::MAX_LEN
            )));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(InvalidValue(format!(
                "tenant id `{}` contains {bad:?}; only lowercase letters a-z, digits and `-` are allowed",
                printable(raw)
            )));
        }
        if !raw.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(InvalidValue(format!(
                "tenant id `{raw}` must start with a lowercase letter"
            )));
        }
        if raw.ends_with('-') || raw.contains("--") {
            return Err(InvalidValue(format!(
                "tenant id `{raw}` must not end with `-` or contain `--`"
            )));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tenant id with `-` mapped to `_`, for use inside SQL identifiers. The mapping is injective
    /// because `_` is not allowed in a tenant id.
    pub fn as_identifier_part(&self) -> String {
        self.0.replace('-', "_")
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Renders untrusted input for an error message: control characters escaped, length capped.
pub fn printable(raw: &str) -> String {
    let mut out: String = raw.chars().take(48).flat_map(char::escape_debug).collect();
    if raw.chars().count() > 48 {
        out.push_str("...");
    }
    out
}

/// The isolation tier a tenant's data lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Rows in shared tables, isolated by row-level security.
    Pool,
    /// A schema and a login role per tenant.
    Schema,
    /// A database (an RDS instance on AWS) per tenant.
    Dedicated,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Pool => "pool",
            Tier::Schema => "schema",
            Tier::Dedicated => "dedicated",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        match raw {
            "pool" => Ok(Tier::Pool),
            "schema" => Ok(Tier::Schema),
            "dedicated" => Ok(Tier::Dedicated),
            other => Err(InvalidValue(format!(
                "unknown tier `{}`; expected one of `pool`, `schema`, `dedicated`",
                printable(other)
            ))),
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A model name as a provider knows it (`mock-small`), or an alias a tenant declared.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ModelId(String);

impl ModelId {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let ok = !raw.is_empty()
            && raw.len() <= 100
            && raw.starts_with(|c: char| c.is_ascii_alphanumeric())
            && raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'));
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidValue(format!(
                "model name `{}` is not valid; use 1-100 characters of letters, digits, `-`, `.`, `_`, `:`",
                printable(raw)
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The model providers this build has adapters for (one file each under `models::providers`).
/// `openai-compatible` is a self-hosted server speaking OpenAI's wire format (vLLM, Ollama, TGI);
/// `mock` is the deterministic provider built into the runtime (the zero-setup local default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderId {
    Mock,
    Openai,
    AzureOpenai,
    OpenaiCompatible,
    Anthropic,
    Bedrock,
}

impl ProviderId {
    pub const ALL: &'static [ProviderId] = &[
        ProviderId::Mock,
        ProviderId::Openai,
        ProviderId::AzureOpenai,
        ProviderId::OpenaiCompatible,
        ProviderId::Anthropic,
        ProviderId::Bedrock,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderId::Mock => "mock",
            ProviderId::Openai => "openai",
            ProviderId::AzureOpenai => "azure-openai",
            ProviderId::OpenaiCompatible => "openai-compatible",
            ProviderId::Anthropic => "anthropic",
            ProviderId::Bedrock => "bedrock",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        Self::ALL
            .iter()
            .copied()
            .find(|p| p.as_str() == raw)
            .ok_or_else(|| {
                let known: Vec<_> = Self::ALL
                    .iter()
                    .map(|p| format!("`{}`", p.as_str()))
                    .collect();
                InvalidValue(format!(
                    "unknown provider `{}`; this build knows {}",
                    printable(raw),
                    known.join(", ")
                ))
            })
    }
}

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Money in integer micro-US-dollars (1 USD = 1,000,000). Never a float.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct MicroUsd(pub i64);

impl MicroUsd {
    /// Parses a decimal dollar amount written as text: `"2500"`, `"2500.5"`, `"0.000001"`. At most six
    /// decimal places; no sign, exponent or separators.
    pub fn parse_dollars(raw: &str) -> Result<Self, InvalidValue> {
        let invalid = || {
            InvalidValue(format!(
                "`{}` is not a dollar amount; write digits with at most 6 decimals, e.g. \"2500.00\"",
                printable(raw)
            ))
        };
        let (whole, frac) = match raw.split_once('.') {
            Some((w, f)) => (w, f),
            None => (raw, ""),
        };
        if whole.is_empty()
            || frac.len() > 6
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || (raw.contains('.') && frac.is_empty())
        {
            return Err(invalid());
        }
        let whole: i64 = whole.parse().map_err(|_| invalid())?;
        let frac_padded = format!("{frac:0<6}");
        let frac: i64 = frac_padded.parse().map_err(|_| invalid())?;
        whole
            .checked_mul(1_000_000)
            .and_then(|w| w.checked_add(frac))
            .map(MicroUsd)
            .ok_or_else(invalid)
    }
}

impl fmt::Display for MicroUsd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}${}.{:06}", abs / 1_000_000, abs % 1_000_000)
    }
}

/// A deployment namespace: prefixes the cluster-wide role names of one control plane so that several
/// deployments (or test runs) can share one Postgres cluster. `[a-z][a-z0-9_]{0,19}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Namespace(String);

impl Namespace {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let ok = (1..=20).contains(&raw.len())
            && raw.starts_with(|c: char| c.is_ascii_lowercase())
            && raw
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidValue(format!(
                "namespace `{}` must be 1-20 characters of a-z, 0-9 and `_`, starting with a letter",
                printable(raw)
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The role that owns every tenant schema and table (never logs in).
    pub fn migrator_role(&self) -> String {
        format!("{}_migrator", self.0)
    }

    /// The role the runtime uses to read the tenant registry.
    pub fn runtime_role(&self) -> String {
        format!("{}_runtime", self.0)
    }

    /// The login role of one tenant, on every tier: its data is reached only as this role. In the
    /// pool tier it is a member of `pool_role` and the row-level security policy maps it back to the
    /// tenant (`tenant_role_prefix` + the tenant id with `-` as `_`).
    pub fn tenant_role(&self, tenant: &TenantId) -> String {
        format!(
            "{}{}",
            self.tenant_role_prefix(),
            tenant.as_identifier_part()
        )
    }

    /// What every tenant role's name starts with; the pool policy derives the role from a row's
    /// `tenant_id` with it (never the other way round, so no role name can be parsed into a tenant).
    pub fn tenant_role_prefix(&self) -> String {
        format!("{}_t_", self.0)
    }

    /// The pool tier's NOLOGIN group: it holds the pool table grants; each pool tenant's own login role
    /// is a member. Nobody logs in as it, and a member that `SET ROLE`s to it sees no rows.
    pub fn pool_role(&self) -> String {
        format!("{}_pool", self.0)
    }

    /// The database of one dedicated-tier tenant.
    pub fn tenant_database(&self, tenant: &TenantId) -> String {
        format!("{}_t_{}", self.0, tenant.as_identifier_part())
    }

    /// The schema of one tenant (schema tier, and inside a dedicated tenant's database).
    pub fn tenant_schema(tenant: &TenantId) -> String {
        format!("t_{}", tenant.as_identifier_part())
    }

    /// The schema a tenant's tables are in on `tier`: the shared `pool`, or its own.
    pub fn data_schema(tier: Tier, tenant: &TenantId) -> String {
        match tier {
            Tier::Pool => "pool".to_owned(),
            Tier::Schema | Tier::Dedicated => Self::tenant_schema(tenant),
        }
    }
}

impl TryFrom<String> for Namespace {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Namespace> for String {
    fn from(value: Namespace) -> Self {
        value.0
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `time` as UTC RFC 3339 (`2026-12-01T11:43:30Z`), to the second.
pub fn rfc3339(time: std::time::SystemTime) -> String {
    let secs = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// Today, UTC, as `YYYY-MM-DD`.
pub fn utc_today() -> String {
    let mut now = rfc3339(std::time::SystemTime::now());
    now.truncate(10);
    now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_tenant(raw: &str, ok: bool) {
        assert_eq!(TenantId::parse(raw).is_ok(), ok, "{raw:?}");
    }

    #[test]
    fn tenant_id_grammar_table() {
        // docs/security.md case 63: hostile ids are rejected before any IO.
        for (raw, ok) in [
            ("acme", true),
            ("acme-health-2", true),
            ("a2c", true),
            ("ab", false),
            ("2acme", false),
            ("-acme", false),
            ("acme-", false),
            ("ac--me", false),
            ("Acme", false),
            ("acme*", false),
            ("a/b", false),
            ("../x", false),
            ("x\";drop", false),
            ("acmе", false), // Cyrillic е
            ("acme_x", false),
            ("acme x", false),
            (&"a".repeat(40), true),
            (&"a".repeat(41), false),
            (&"a".repeat(200), false),
        ] {
            check_tenant(raw, ok);
        }
    }

    #[test]
    fn money_parses_exact_decimals_and_refuses_everything_else() {
        for (raw, want) in [
            ("0", Some(0)),
            ("2500", Some(2_500_000_000)),
            ("2500.5", Some(2_500_500_000)),
            ("0.000001", Some(1)),
            ("1.", None),
            (".5", None),
            ("-1", None),
            ("1e3", None),
            ("1,000", None),
            ("0.0000001", None),
            ("99999999999999999999", None),
        ] {
            assert_eq!(
                MicroUsd::parse_dollars(raw).ok().map(|m| m.0),
                want,
                "{raw}"
            );
        }
        assert_eq!(MicroUsd(2_500_500_000).to_string(), "$2500.500000");
    }

    #[test]
    fn role_and_schema_names_fit_postgres_identifier_limit() {
        let ns = Namespace::parse(&"n".repeat(20)).unwrap();
        let tenant = TenantId::parse(&"a".repeat(40)).unwrap();
        assert!(ns.tenant_role(&tenant).len() <= 63);
        assert!(Namespace::tenant_schema(&tenant).len() <= 63);
    }
}
