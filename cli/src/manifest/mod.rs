//! Tenant manifests: parse, don't validate.
//!
//! A manifest is read in two stages: `raw::RawManifest` (serde, unknown fields refused) and then
//! `TenantSpec`, built from the runtime's newtypes. After `TenantSpec::from_source` nothing re-checks
//! shape. Every error names the file, line, column and field path, says what was expected, and carries a
//! hint. This module does no IO beyond reading the manifest files it is given.

#![expect(
    clippy::result_large_err,
    reason = "manifest errors are cold, collected and printed; keeping them flat keeps the code plain"
)]

pub mod locate;
pub mod raw;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use runtime::domain::{MicroUsd, ModelId, ProviderId, TenantId, Tier};
use runtime::registry::IdentityBinding;
use runtime::registry::ModelPolicy;
use runtime::registry::policy::{Endpoint, ProviderPolicy};
use serde::Serialize;

use crate::platform::Platform;
use locate::{Seg, display_path, locate};
use raw::{RawManifest, RawMoney, RawTier};

/// A manifest error, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Dotted field path (`models.default`), empty for whole-file problems.
    pub path: String,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`", self.file.display())?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, ":{l}:{c}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": field `{}`", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ManifestError {}

impl ManifestError {
    /// The error followed by its `hint:` line, as the CLI prints it.
    pub fn render(&self) -> String {
        match &self.hint {
            Some(h) => format!("error: {self}\nhint: {h}"),
            None => format!("error: {self}"),
        }
    }
}

/// `value` with the keys of every object in sorted order. Serialized bytes then no longer depend on
/// whether serde_json was built with `preserve_order` (a feature any dependency can switch on for the
/// whole build), so hashes, published schemas and rendered templates are the same in every build.
pub fn canonical(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut out = serde_json::Map::new();
            for k in keys {
                out.insert(k.clone(), canonical(&map[k]));
            }
            serde_json::Value::Object(out)
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(canonical).collect())
        }
        other => other.clone(),
    }
}

/// Request and token rate limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RateLimits {
    pub requests_per_minute: u32,
    pub tokens_per_minute: u64,
}

/// A validated tenant manifest. Deserializable only from the registry's canonical copy (written by
/// `canonical_json`), never from user input, which goes through `from_source`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TenantSpec {
    pub id: TenantId,
    pub display_name: String,
    pub tier: Tier,
    pub identity: IdentityBinding,
    pub models: ModelPolicy,
    pub monthly_budget: MicroUsd,
    /// Each subject's monthly budget (`budget.per_subject_monthly_usd`); absent from the canonical
    /// JSON when not set, so specs written before it keep their hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_monthly_budget: Option<MicroUsd>,
    pub rate_limits: RateLimits,
    pub tags: BTreeMap<String, String>,
    pub retention_days: u32,
}

impl TenantSpec {
    /// The budget and rate limits the runtime enforces for this tenant.
    pub fn limits(&self) -> runtime::registry::TenantLimits {
        runtime::registry::TenantLimits {
            monthly_budget: self.monthly_budget,
            subject_monthly_budget: self.subject_monthly_budget,
            requests_per_minute: self.rate_limits.requests_per_minute,
            tokens_per_minute: self.rate_limits.tokens_per_minute,
        }
    }

    /// Canonical JSON of the spec (keys sorted at every level), as stored in the registry and hashed.
    pub fn canonical_json(&self) -> serde_json::Value {
        canonical(&serde_json::to_value(self).unwrap_or(serde_json::Value::Null))
    }

    /// SHA-256 of the canonical JSON, hex.
    pub fn hash(&self) -> String {
        let bytes = serde_json::to_vec(&self.canonical_json()).unwrap_or_default();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
        digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses one manifest's text. `file` is only used in error messages.
    pub fn from_source(
        file: &Path,
        source: &str,
        platform: &Platform,
    ) -> Result<Self, ManifestError> {
        Self::from_source_all(file, source, platform).map_err(|mut all| all.swap_remove(0))
    }

    /// Parses one manifest's text and names every problem found (never an empty list): a syntax
    /// error stops at itself; otherwise each field is checked on its own, then every value rule.
    pub fn from_source_all(
        file: &Path,
        source: &str,
        platform: &Platform,
    ) -> Result<Self, Vec<ManifestError>> {
        let raw = parse_raw(file, source)?;
        Checker {
            file,
            source,
            platform,
        }
        .build(raw)
    }

    /// Reads and parses one manifest file, naming every problem in it.
    pub fn from_file_all(file: &Path, platform: &Platform) -> Result<Self, Vec<ManifestError>> {
        let source = std::fs::read_to_string(file).map_err(|e| {
            vec![ManifestError {
                file: file.to_owned(),
                line: None,
                column: None,
                path: String::new(),
                message: format!("cannot read the file: {e}"),
                hint: Some(
                    "check the path; `tenantctl validate` takes manifest files or directories"
                        .into(),
                ),
            }]
        })?;
        Self::from_source_all(file, &source, platform)
    }

    /// Reads and parses one manifest file (its first problem).
    pub fn from_file(file: &Path, platform: &Platform) -> Result<Self, ManifestError> {
        Self::from_file_all(file, platform).map_err(|mut all| all.swap_remove(0))
    }
}

/// Makes a deserializer's message read as the manifest's: no path prefix, no Rust type names, and
/// a hint that fits.
fn humanize(path: &str, message: &str) -> (String, String) {
    let mut message = message.to_owned();
    // serde_norway appends " at line L column C"; the location is printed separately.
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    // serde_norway prefixes some messages with the path (or a parent of it).
    let mut prefix = path;
    loop {
        if let Some(rest) = message.strip_prefix(&format!("{prefix}: ")) {
            message = rest.to_owned();
            break;
        }
        match prefix.rfind('.') {
            Some(i) => prefix = &prefix[..i],
            None => break,
        }
    }
    for (rust, human) in [
        ("expected u32", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected a string", "expected text"),
    ] {
        message = message.replace(rust, human);
    }
    let hint = if message.contains("unknown field") {
        "remove the field or fix its spelling; `docs/manifest.schema.json` lists every field"
    } else if message.contains("missing field") {
        "add the field; see `tenants/acme.yaml` for a complete example"
    } else if message.contains("unknown variant") {
        "use one of the values listed above"
    } else if message.contains("invalid type") || message.contains("did not match any variant") {
        "check the value's type against `docs/manifest.schema.json`"
    } else {
        "fix the value; `docs/manifest.schema.json` describes every field"
    };
    (message, hint.to_owned())
}

/// `line L column C` at the end of `text`, if it is there.
fn trailing_mark(text: &str) -> Option<(usize, usize)> {
    let at = text.rfind(" at line ")?;
    let rest = &text[at + " at line ".len()..];
    let (line, column) = rest.split_once(" column ")?;
    Some((line.trim().parse().ok()?, column.trim().parse().ok()?))
}

/// A YAML syntax error, located where the problem starts: an unclosed quote or bracket at its
/// opening, not at the end of the file where the parser gave up. No field is named: the parser
/// had not reached one.
fn syntax_error(file: &Path, source: &str, err: &serde_norway::Error) -> ManifestError {
    let text = err.to_string();
    let (problem, context) = match text.split_once(", while ") {
        Some((p, c)) => (p.to_owned(), Some(c.to_owned())),
        None => (text.clone(), None),
    };
    let mut at = err.location().map(|l| (l.line(), l.column()));
    let mut message = match problem.find(" at line ") {
        Some(i) => problem[..i].to_owned(),
        None => problem.clone(),
    };
    let mut hint = "fix the YAML syntax at that position".to_owned();
    // A quote left open swallows the lines after it until the next quote; the parser then fails
    // there. The quote that was left open is the place to fix.
    if let Some(opened) = at.and_then(|(line, _)| unclosed_quote(source, line)) {
        let (line, column) = at.unwrap_or_default();
        return ManifestError {
            file: file.to_owned(),
            line: Some(opened.0),
            column: Some(opened.1),
            path: String::new(),
            message: format!(
                "a quoted value starts here and is not closed on its line (the YAML parser gave up at {line}:{column}: {message})"
            ),
            hint: Some("close the quote on the same line".into()),
        };
    }
    if message.contains("tab character") {
        hint = "indent with spaces: YAML does not allow tabs for indentation".into();
    }
    if let Some(context) = &context {
        let opened = trailing_mark(context);
        let what = match context.find(" at line ") {
            Some(i) => &context[..i],
            None => context.as_str(),
        };
        if message.contains("unexpected end of stream") && opened.is_some() {
            at = opened;
            let thing = what
                .trim_start_matches("scanning ")
                .trim_start_matches("parsing ");
            message = format!("{thing} starts here and is never closed (the file ends first)");
            hint = "close it (a quote with the same quote, `[` with `]`, `{` with `}`)".into();
        }
    }
    ManifestError {
        file: file.to_owned(),
        line: at.map(|a| a.0),
        column: at.map(|a| a.1),
        path: String::new(),
        message,
        hint: Some(hint),
    }
}

/// The manifest's top-level fields, in the order `docs/manifest.schema.json` lists them.
const TOP_LEVEL_FIELDS: [&str; 10] = [
    "version",
    "id",
    "display_name",
    "tier",
    "identity",
    "models",
    "budget",
    "rate_limits",
    "tags",
    "retention",
];

/// From a key's position to its value's, when the value is on the key's line (`key: value`).
fn value_start(source: &str, (line, column): (usize, usize)) -> (usize, usize) {
    let Some(text) = source.lines().nth(line.saturating_sub(1)) else {
        return (line, column);
    };
    let rest = text.get(column.saturating_sub(1)..).unwrap_or_default();
    match rest.find(':') {
        Some(colon) => {
            let after = &rest[colon + 1..];
            let value = after.trim_start();
            if value.is_empty() || value.starts_with('#') {
                (line, column)
            } else {
                (line, column + colon + 1 + (after.len() - value.len()))
            }
        }
        None => (line, column),
    }
}

/// The first quoted value that is not closed on its own line, at or before `line`: where an
/// unclosed quote starts (the parser reports it later, where the next quote confused it).
fn unclosed_quote(source: &str, line: usize) -> Option<(usize, usize)> {
    for (i, text) in source.lines().enumerate().take(line) {
        let t = text.trim_start();
        if t.starts_with('#') {
            continue;
        }
        let start = match (text.find(": "), t.strip_prefix("- ")) {
            (_, Some(_)) => text.find("- ").map(|p| p + 2),
            (Some(p), None) => Some(p + 2),
            (None, None) => None,
        };
        let Some(start) = start else { continue };
        let value = text[start..].trim_start();
        let offset = text.len() - value.len();
        let Some(quote) = value.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            continue;
        };
        let body = &value[1..];
        let closed = if quote == '"' {
            let mut escaped = false;
            body.chars().any(|c| {
                let end = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                end
            })
        } else {
            body.replace("''", "").contains('\'')
        };
        if !closed {
            return Some((i + 1, offset + 1));
        }
    }
    None
}

fn segments(path: &serde_path_to_error::Path) -> Vec<Seg> {
    path.iter()
        .filter_map(|s| match s {
            serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
            serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
            serde_path_to_error::Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
            serde_path_to_error::Segment::Unknown => None,
        })
        .collect()
}

/// Each top-level field of `value` deserialized on its own, so one run names every field that has
/// the wrong shape, plus unknown and missing fields.
fn field_errors(file: &Path, source: &str, value: &serde_norway::Value) -> Vec<ManifestError> {
    use raw::{RawBudget, RawIdentity, RawModels, RawRateLimits, RawRetention};
    fn check<T: serde::de::DeserializeOwned>(
        file: &Path,
        source: &str,
        field: &str,
        value: &serde_norway::Value,
    ) -> Option<ManifestError> {
        let err = serde_path_to_error::deserialize::<_, T>(value.clone()).err()?;
        let mut path = vec![key(field)];
        path.extend(segments(err.path()));
        let shown = display_path(&path);
        let (message, hint) = humanize(&shown, &err.into_inner().to_string());
        // A wrong value is pointed at; an unknown field at its key.
        let at = locate(source, &path).map(|at| {
            if message.contains("unknown field") {
                at
            } else {
                value_start(source, at)
            }
        });
        Some(ManifestError {
            file: file.to_owned(),
            line: at.map(|a| a.0),
            column: at.map(|a| a.1),
            path: shown,
            message,
            hint: Some(hint),
        })
    }
    let Some(map) = value.as_mapping() else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    let mut seen = Vec::new();
    for (k, v) in map {
        let Some(name) = k.as_str() else { continue };
        seen.push(name);
        let found = match name {
            "version" => check::<u32>(file, source, name, v),
            "id" | "display_name" => check::<String>(file, source, name, v),
            "tier" => check::<RawTier>(file, source, name, v),
            "identity" => check::<RawIdentity>(file, source, name, v),
            "models" => check::<RawModels>(file, source, name, v),
            "budget" => check::<RawBudget>(file, source, name, v),
            "rate_limits" => check::<RawRateLimits>(file, source, name, v),
            "tags" => check::<BTreeMap<String, String>>(file, source, name, v),
            "retention" => check::<RawRetention>(file, source, name, v),
            other => {
                let at = locate(source, &[key(other)]);
                Some(ManifestError {
                    file: file.to_owned(),
                    line: at.map(|a| a.0),
                    column: at.map(|a| a.1),
                    path: other.to_owned(),
                    message: format!(
                        "unknown field `{other}`, expected one of {}",
                        TOP_LEVEL_FIELDS
                            .iter()
                            .map(|f| format!("`{f}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    hint: Some(humanize(other, "unknown field").1),
                })
            }
        };
        errors.extend(found);
    }
    for required in TOP_LEVEL_FIELDS
        .into_iter()
        .filter(|f| !matches!(*f, "identity" | "rate_limits"))
    {
        if !seen.contains(&required) {
            errors.push(ManifestError {
                file: file.to_owned(),
                line: None,
                column: None,
                path: String::new(),
                message: format!("missing field `{required}`"),
                hint: Some(humanize("", "missing field").1),
            });
        }
    }
    errors
}

fn parse_raw(file: &Path, source: &str) -> Result<RawManifest, Vec<ManifestError>> {
    let value: serde_norway::Value =
        serde_norway::from_str(source).map_err(|e| vec![syntax_error(file, source, &e)])?;
    let de = serde_norway::Deserializer::from_str(source);
    serde_path_to_error::deserialize::<_, RawManifest>(de).map_err(|err| {
        let all = field_errors(file, source, &value);
        if !all.is_empty() {
            return all;
        }
        let path = err.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let inner = err.into_inner();
        let location = inner.location();
        let (message, hint) = humanize(&path, &inner.to_string());
        vec![ManifestError {
            file: file.to_owned(),
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
            path,
            message,
            hint: Some(hint),
        }]
    })
}

/// The value of a check that passed; a failed check's error is kept for the report.
fn keep<T>(errs: &mut Vec<ManifestError>, r: Result<T, ManifestError>) -> Option<T> {
    r.map_err(|e| errs.push(e)).ok()
}

struct Checker<'a> {
    file: &'a Path,
    source: &'a str,
    platform: &'a Platform,
}

fn key(s: &str) -> Seg {
    Seg::Key(s.to_owned())
}

impl Checker<'_> {
    fn err(
        &self,
        path: Vec<Seg>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> ManifestError {
        let at = locate(self.source, &path);
        ManifestError {
            file: self.file.to_owned(),
            line: at.map(|a| a.0),
            column: at.map(|a| a.1),
            path: display_path(&path),
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    fn build(&self, raw: RawManifest) -> Result<TenantSpec, Vec<ManifestError>> {
        // Every check runs, so one run names every problem of the file.
        let mut errs: Vec<ManifestError> = Vec::new();
        if raw.version != 1 {
            keep(
                &mut errs,
                Err::<(), _>(self.err(
                    vec![key("version")],
                    format!("unsupported manifest version {}", raw.version),
                    "this tenantctl reads `version: 1`",
                )),
            );
        }
        let id = keep(
            &mut errs,
            TenantId::parse(&raw.id)
                .map_err(|e| self.err(vec![key("id")], e.0, "example: `id: acme-health`")),
        );
        let display_name = raw.display_name.trim().to_owned();
        if display_name.is_empty()
            || display_name.chars().count() > 100
            || display_name.chars().any(char::is_control)
        {
            keep(
                &mut errs,
                Err::<(), _>(self.err(
                    vec![key("display_name")],
                    "display name must be 1-100 printable characters",
                    "example: `display_name: Acme Health`",
                )),
            );
        }
        let tier = match raw.tier {
            RawTier::Pool => Tier::Pool,
            RawTier::Schema => Tier::Schema,
            RawTier::Dedicated => Tier::Dedicated,
        };
        let identity = keep(&mut errs, self.identity(raw.identity));
        let models = keep(&mut errs, self.models(raw.models));
        let monthly_budget = keep(&mut errs, self.money("monthly_usd", raw.budget.monthly_usd));
        let subject_monthly_budget = match raw.budget.per_subject_monthly_usd {
            None => None,
            Some(m) => keep(&mut errs, self.money("per_subject_monthly_usd", m).and_then(|per_subject| {
                if per_subject.0 <= 0 {
                    return Err(self.err(
                        vec![key("budget"), key("per_subject_monthly_usd")],
                        "a subject's monthly budget of zero would refuse every call",
                        "give each subject more than $0, or leave `per_subject_monthly_usd` out",
                    ));
                }
                match monthly_budget {
                    Some(monthly) if per_subject > monthly => Err(self.err(
                        vec![key("budget"), key("per_subject_monthly_usd")],
                        format!(
                            "{per_subject} for each subject is more than the tenant's whole monthly budget ({monthly})"
                        ),
                        "make it at most `budget.monthly_usd`, or leave it out (the tenant's budget applies alone)",
                    )),
                    _ => Ok(per_subject),
                }
            })),
        };
        let rl = raw.rate_limits;
        if !(1..=1_000_000).contains(&rl.requests_per_minute) {
            keep(
                &mut errs,
                Err::<(), _>(self.err(
                    vec![key("rate_limits"), key("requests_per_minute")],
                    format!("{} is out of range", rl.requests_per_minute),
                    "use a number from 1 to 1000000",
                )),
            );
        }
        if !(1..=1_000_000_000).contains(&rl.tokens_per_minute) {
            keep(
                &mut errs,
                Err::<(), _>(self.err(
                    vec![key("rate_limits"), key("tokens_per_minute")],
                    format!("{} is out of range", rl.tokens_per_minute),
                    "use a number from 1 to 1000000000",
                )),
            );
        }
        let tags = keep(&mut errs, self.tags(raw.tags));
        if !(1..=3650).contains(&raw.retention.usage_days) {
            keep(
                &mut errs,
                Err::<(), _>(self.err(
                    vec![key("retention"), key("usage_days")],
                    format!("{} days is out of range", raw.retention.usage_days),
                    "use a number of days from 1 to 3650",
                )),
            );
        }
        let (Some(id), Some(identity), Some(models), Some(monthly_budget), Some(tags)) =
            (id, identity, models, monthly_budget, tags)
        else {
            return Err(errs);
        };
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(TenantSpec {
            id,
            display_name,
            tier,
            identity,
            models,
            monthly_budget,
            subject_monthly_budget,
            rate_limits: RateLimits {
                requests_per_minute: rl.requests_per_minute,
                tokens_per_minute: rl.tokens_per_minute,
            },
            tags,
            retention_days: raw.retention.usage_days,
        })
    }

    /// An amount of money under `budget.<field>`: quoted decimal dollars or a whole number, never
    /// a float.
    fn money(&self, field: &str, raw: RawMoney) -> Result<MicroUsd, ManifestError> {
        let example = format!("example: `{field}: \"2500.00\"`");
        match raw {
            RawMoney::Text(t) => MicroUsd::parse_dollars(&t)
                .map_err(|e| self.err(vec![key("budget"), key(field)], e.0, example)),
            RawMoney::Whole(n) => i64::try_from(n)
                .ok()
                .and_then(|n| n.checked_mul(1_000_000))
                .map(MicroUsd)
                .ok_or_else(|| {
                    self.err(
                        vec![key("budget"), key(field)],
                        "amount is too large",
                        "use at most 9,000,000,000,000 dollars",
                    )
                }),
            RawMoney::Float(_) => Err(self.err(
                vec![key("budget"), key(field)],
                "money must not be written as a floating-point number",
                format!("quote it as a decimal string, e.g. `{field}: \"2500.50\"`"),
            )),
        }
    }

    fn identity(&self, raw: raw::RawIdentity) -> Result<IdentityBinding, ManifestError> {
        let Some(issuer) = self.platform.issuer(&raw.issuer) else {
            let names = self.platform.issuers.iter().map(|i| i.name.as_str());
            return Err(self.err(
                vec![key("identity"), key("issuer")],
                format!(
                    "unknown trusted issuer `{}`",
                    runtime::domain::printable(&raw.issuer)
                ),
                format!(
                    "use one of the issuers in the platform configuration: {}",
                    quoted(names)
                ),
            ));
        };
        let audience = match raw.audience {
            None => issuer.audiences.first().cloned().unwrap_or_default(),
            Some(a) if issuer.audiences.contains(&a) => a,
            Some(a) => {
                return Err(self.err(
                    vec![key("identity"), key("audience")],
                    format!("issuer `{}` does not issue tokens for audience `{}`", issuer.name, runtime::domain::printable(&a)),
                    format!("use one of {} (or add it to the issuer's `audiences` in the platform configuration)", quoted(issuer.audiences.iter().map(String::as_str))),
                ));
            }
        };
        if let Some(claim) = raw.tenant_claim.filter(|c| *c != issuer.tenant_claim) {
            return Err(self.err(
                vec![key("identity"), key("tenant_claim")],
                format!(
                    "issuer `{}` carries the tenant id in `{}`, not `{}`",
                    issuer.name,
                    issuer.tenant_claim,
                    runtime::domain::printable(&claim)
                ),
                "remove `tenant_claim` (it is set per issuer in the platform configuration)",
            ));
        }
        Ok(IdentityBinding {
            issuer: issuer.name.clone(),
            audience,
            tenant_claim: issuer.tenant_claim.clone(),
        })
    }

    fn models(&self, raw: raw::RawModels) -> Result<ModelPolicy, ManifestError> {
        let base = || vec![key("models"), key("providers")];
        if raw.providers.is_empty() {
            return Err(self.err(
                base(),
                "no provider is listed",
                "example: `providers: { mock: [mock-small] }`",
            ));
        }
        let mut providers: BTreeMap<ProviderId, ProviderPolicy> = BTreeMap::new();
        let mut all: Vec<ModelId> = Vec::new();
        for (name, entry) in &raw.providers {
            let (models, raw_endpoint) = match entry {
                raw::RawProvider::Models(models) => (models, None),
                raw::RawProvider::Full { models, endpoint } => (models, Some(endpoint)),
            };
            let mut path = base();
            path.push(key(name));
            let provider = ProviderId::parse(name).map_err(|e| {
                self.err(
                    path.clone(),
                    e.0,
                    "model providers are named in the price book; see `docs/ARCHITECTURE.md`",
                )
            })?;
            if models.is_empty() {
                return Err(self.err(
                    path,
                    "the model list is empty",
                    "list at least one model, or remove the provider",
                ));
            }
            // Offline, against the book built into tenantctl (`prices/book.yaml`); `apply` checks
            // the deployment's imported book again.
            let book = crate::prices::builtin();
            let today = runtime::pricing::today();
            let version = book.effective(&today);
            let priced: Vec<&str> = version
                .map(|v| {
                    v.prices
                        .iter()
                        .filter(|p| p.provider == provider)
                        .map(|p| p.model.as_str())
                        .collect()
                })
                .unwrap_or_default();
            let version = version.map_or("(none)", |v| v.version.as_str());
            for (i, model) in models.iter().enumerate() {
                let mut at = path.clone();
                at.push(Seg::Index(i));
                let id = ModelId::parse(model)
                    .map_err(|e| self.err(at.clone(), e.0, "use the provider's model name"))?;
                if !priced.contains(&id.as_str()) {
                    return Err(self.err(
                        at,
                        format!("model `{id}` has no price for provider `{provider}` in price book `{version}`"),
                        format!("use one of {}", quoted(priced.iter().copied())),
                    ));
                }
                if all.contains(&id) {
                    return Err(self.err(
                        at,
                        format!("model `{id}` is listed twice"),
                        "list each model once",
                    ));
                }
                all.push(id.clone());
                providers
                    .entry(provider)
                    .or_insert_with(|| ProviderPolicy {
                        models: Vec::new(),
                        endpoint: Endpoint::default(),
                    })
                    .models
                    .push(id);
            }
            if let (Some(e), Some(p)) = (raw_endpoint, providers.get_mut(&provider)) {
                let mut deployments = BTreeMap::new();
                for (model, deployment) in &e.deployments {
                    let mut at = path.clone();
                    at.extend([key("endpoint"), key("deployments"), key(model)]);
                    let id = ModelId::parse(model)
                        .ok()
                        .filter(|m| p.models.contains(m))
                        .ok_or_else(|| {
                            self.err(
                                at.clone(),
                                format!(
                                    "`{}` is not one of this provider's models",
                                    runtime::domain::printable(model)
                                ),
                                "name a model listed under `models`",
                            )
                        })?;
                    deployments.insert(id, deployment.clone());
                }
                p.endpoint = Endpoint {
                    base_url: e.base_url.clone(),
                    region: e.region.clone(),
                    deployments,
                    api_version: e.api_version.clone(),
                    // Set by tenantctl on the AWS target, from the tenant's stack.
                    inference_profiles: BTreeMap::new(),
                };
            }
        }
        let mut blocked_providers = Vec::new();
        for (i, name) in raw.blocked_providers.iter().enumerate() {
            let at = vec![key("models"), key("blocked_providers"), Seg::Index(i)];
            blocked_providers.push(
                ProviderId::parse(name)
                    .map_err(|e| self.err(at, e.0, "name a provider this build knows"))?,
            );
        }
        let mut fallbacks = BTreeMap::new();
        for (model, chain) in &raw.fallbacks {
            let at = vec![key("models"), key("fallbacks"), key(model)];
            let parse = |m: &str| {
                ModelId::parse(m)
                    .ok()
                    .filter(|id| all.contains(id))
                    .ok_or_else(|| {
                        self.err(
                            at.clone(),
                            format!(
                                "`{}` is not an allowed model; a fallback never leaves the policy",
                                runtime::domain::printable(m)
                            ),
                            format!("use one of {}", quoted(all.iter().map(ModelId::as_str))),
                        )
                    })
            };
            let from = parse(model)?;
            let to = chain
                .iter()
                .map(|m| parse(m))
                .collect::<Result<Vec<_>, _>>()?;
            fallbacks.insert(from, to);
        }
        let mut aliases = BTreeMap::new();
        for (alias, target) in &raw.aliases {
            let at = vec![key("models"), key("aliases"), key(alias)];
            let alias_id = ModelId::parse(alias)
                .map_err(|e| self.err(at.clone(), e.0, "alias names follow model-name rules"))?;
            if alias_id.as_str() == "default" || all.contains(&alias_id) {
                return Err(self.err(
                    at,
                    format!("alias `{alias_id}` shadows a model name"),
                    "pick an alias that is not `default` and not an allowed model",
                ));
            }
            let target_id = ModelId::parse(target)
                .ok()
                .filter(|t| all.contains(t))
                .ok_or_else(|| {
                    self.err(
                        at.clone(),
                        format!(
                            "alias target `{}` is not an allowed model",
                            runtime::domain::printable(target)
                        ),
                        format!(
                            "point it at one of {}",
                            quoted(all.iter().map(ModelId::as_str))
                        ),
                    )
                })?;
            aliases.insert(alias_id, target_id);
        }
        let default_at = vec![key("models"), key("default")];
        let default = ModelId::parse(&raw.default)
            .ok()
            .map(|d| aliases.get(&d).cloned().unwrap_or(d))
            .filter(|d| all.contains(d))
            .ok_or_else(|| {
                self.err(
                    default_at,
                    format!(
                        "default model `{}` is not an allowed model or alias",
                        runtime::domain::printable(&raw.default)
                    ),
                    format!("use one of {}", quoted(all.iter().map(ModelId::as_str))),
                )
            })?;
        let policy = ModelPolicy {
            providers,
            default,
            aliases,
            fallbacks,
            blocked_providers,
            max_tokens_per_request: raw.max_tokens_per_request,
            residency: raw.residency,
        };
        if let Some((at, problem)) = policy.problems().into_iter().next() {
            let path = at.iter().map(|s| key(s)).collect();
            return Err(self.err(
                path,
                problem,
                "see `docs/providers.md` for each provider's endpoint fields",
            ));
        }
        Ok(policy)
    }

    fn tags(
        &self,
        raw: BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, ManifestError> {
        if !raw.contains_key("cost-center") {
            return Err(self.err(
                vec![key("tags")],
                "the `cost-center` tag is required",
                "add `cost-center: <your cost center>` under `tags` (finance allocates cost by it)",
            ));
        }
        if raw.len() > 40 {
            return Err(self.err(
                vec![key("tags")],
                format!("{} tags is too many", raw.len()),
                "use at most 40 tags",
            ));
        }
        for (k, v) in &raw {
            let at = vec![key("tags"), key(k)];
            let key_ok = !k.is_empty()
                && k.chars().count() <= 128
                && k.chars()
                    .all(|c| c.is_alphanumeric() || " _.:/=+-@".contains(c));
            if !key_ok || k.to_ascii_lowercase().starts_with("aws:") {
                return Err(self.err(
                    at,
                    format!("tag key `{}` is not a valid AWS tag key", runtime::domain::printable(k)),
                    "use 1-128 letters, digits, spaces and `_ . : / = + - @`, not starting with `aws:`",
                ));
            }
            if k == "tenant" || k == "tier" {
                return Err(self.err(
                    at,
                    format!("tag `{k}` is reserved"),
                    "tenantctl sets `tenant` and `tier` itself; remove it",
                ));
            }
            if v.chars().count() > 256
                || !v
                    .chars()
                    .all(|c| c.is_alphanumeric() || " _.:/=+-@".contains(c))
            {
                return Err(self.err(
                    at,
                    "tag value is not a valid AWS tag value",
                    "use at most 256 letters, digits, spaces and `_ . : / = + - @`",
                ));
            }
        }
        let bytes: usize = raw.iter().map(|(k, v)| k.len() + v.len()).sum();
        if bytes > TAG_BYTES_MAX {
            return Err(self.err(
                vec![key("tags")],
                format!("the tags are {bytes} bytes of keys and values together, more than {TAG_BYTES_MAX}"),
                "shorten or drop tags: every ledger row and the tenant's Lambda configuration (4 KB \
                 in all) carry them",
            ));
        }
        Ok(raw)
    }
}

/// The most bytes of tag keys and values a tenant may declare.
pub const TAG_BYTES_MAX: usize = 1024;

fn quoted<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An error about `file`'s `id`, located at it.
fn id_error(file: &Path, message: String, hint: String) -> ManifestError {
    let source = std::fs::read_to_string(file).unwrap_or_default();
    let at = locate(&source, &[key("id")]);
    ManifestError {
        file: file.to_owned(),
        line: at.map(|a| a.0),
        column: at.map(|a| a.1),
        path: "id".into(),
        message,
        hint: Some(hint),
    }
}

/// Expands files and directories into manifest files (`*.yaml`, `*.yml`, sorted), parses all of them,
/// and refuses a tenant id that appears in two files. Returns every error, not just the first.
pub fn load_all(
    paths: &[PathBuf],
    platform: &Platform,
) -> Result<Vec<(PathBuf, TenantSpec)>, Vec<ManifestError>> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        if path.is_dir() {
            match std::fs::read_dir(path) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|p| {
                            matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                        })
                        .collect();
                    found.sort();
                    files.extend(found);
                }
                Err(e) => errors.push(ManifestError {
                    file: path.clone(),
                    line: None,
                    column: None,
                    path: String::new(),
                    message: format!("cannot read the directory: {e}"),
                    hint: None,
                }),
            }
        } else {
            files.push(path.clone());
        }
    }
    let mut specs: Vec<(PathBuf, TenantSpec)> = Vec::new();
    for file in files {
        match TenantSpec::from_file_all(&file, platform) {
            Ok(spec) if file.file_stem().and_then(|s| s.to_str()) != Some(spec.id.as_str()) => {
                errors.push(id_error(
                    &file,
                    format!(
                        "the file is named `{}` but declares tenant `{}`",
                        file.file_name().and_then(|n| n.to_str()).unwrap_or_default(),
                        spec.id
                    ),
                    format!(
                        "rename the file to `{}.yaml` (one manifest per tenant, named after its id, so a reviewer finds a tenant by name and a copied file cannot silently redefine another tenant)",
                        spec.id
                    ),
                ));
            }
            Ok(spec) => {
                if let Some((other, _)) = specs.iter().find(|(_, s)| s.id == spec.id) {
                    errors.push(id_error(
                        &file,
                        format!(
                            "tenant id `{}` is already declared in `{}`",
                            spec.id,
                            other.display()
                        ),
                        "every tenant id must be unique; remove or rename one of the manifests"
                            .into(),
                    ));
                } else {
                    specs.push((file, spec));
                }
            }
            Err(e) => errors.extend(e),
        }
    }
    if paths.iter().all(|p| p.is_dir()) && specs.is_empty() && errors.is_empty() {
        errors.push(ManifestError {
            file: paths.first().cloned().unwrap_or_default(),
            line: None,
            column: None,
            path: String::new(),
            message: "no manifests (`*.yaml`) found".into(),
            hint: Some("create one from `tenants/acme.yaml`, or pass the right directory".into()),
        });
    }
    if errors.is_empty() {
        Ok(specs)
    } else {
        Err(errors)
    }
}
