//! The price book as the operator handles it: `prices/book.yaml` in the repository (built into
//! tenantctl as the default), checked, imported into the control plane (`tenantctl prices import`),
//! compared with what is imported (`diff`) and listed as charged (`list`).
//!
//! An imported version never changes (the control plane refuses updates and deletes): a new price
//! is a new version, effective from a day no earlier than today and later than every imported
//! version's, so no day that was already charged is re-priced. An import is one transaction: either
//! every new version is added or none is.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use runtime::domain::{MicroUsd, TenantId};
use runtime::pricing::{Price, PriceBook, PriceVersion};

use crate::provision::Target;

/// The repository's price book, built in: what `apply` imports into a deployment that has none.
pub const BUILTIN: &str = include_str!("../../prices/book.yaml");
/// Where it lives in the repository.
pub const BUILTIN_PATH: &str = "prices/book.yaml";

/// The built-in book, parsed. A test checks it, so it parses in any build that passed; were it not
/// to, the book is empty and prices nothing (every model refused), never a guess.
pub fn builtin() -> PriceBook {
    parse(Path::new(BUILTIN_PATH), BUILTIN).unwrap_or_else(|e| {
        tracing::error!(error = %format!("{e:#}"), "the built-in price book does not parse");
        PriceBook::default()
    })
}

/// Reads and checks a price book file.
pub fn load(path: &Path) -> Result<PriceBook> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the price book `{}`: check the path (the repository's is `{BUILTIN_PATH}`)",
            path.display()
        )
    })?;
    parse(path, &text)
}

/// The largest price accepted, per million tokens or per call: 1,000 USD. Anything above is a typo
/// (a price in nano-USD, or a missing decimal point), refused instead of billed.
const MAX_PRICE: i64 = 1_000_000_000;

/// Parses and checks a price book; every problem names its place in the file and how to fix it.
pub fn parse(path: &Path, text: &str) -> Result<PriceBook> {
    let file = path.display();
    let de = serde_norway::Deserializer::from_str(text);
    let book: PriceBook = serde_path_to_error::deserialize(de).map_err(|e| {
        let at = e.path().to_string();
        let inner = e.into_inner();
        let line = inner
            .location()
            .map(|l| format!(":{}:{}", l.line(), l.column()))
            .unwrap_or_default();
        let mut message = inner.to_string();
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        anyhow::anyhow!(
            "`{file}`{line}: field `{at}`: {message}\n  fix: each version has `version`, \
             `effective_from` (YYYY-MM-DD) and `prices` (provider, model, input_per_mtok, \
             output_per_mtok; optional per_request, cached_input_per_mtok, cache_write_per_mtok, \
             reasoning_per_mtok), see `{BUILTIN_PATH}`"
        )
    })?;
    let problems = problems(&book);
    if !problems.is_empty() {
        let mut out = format!("`{file}` is not a usable price book:");
        for (at, what) in problems {
            let _ = write!(out, "\n  {at}: {what}");
        }
        bail!(out);
    }
    Ok(book)
}

fn is_day(text: &str) -> bool {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| text[r].parse::<u32>().ok();
    match (num(0..4), num(5..7), num(8..10)) {
        (Some(y), Some(m), Some(d)) if (1..=12).contains(&m) && d >= 1 => {
            let max = match m {
                2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d <= max
        }
        _ => false,
    }
}

/// Every problem of `book`, as (where, what is wrong and how to fix it).
pub fn problems(book: &PriceBook) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if book.versions.is_empty() {
        out.push(("versions".into(), "no version: add one".into()));
    }
    let mut seen = BTreeMap::new();
    let mut previous: Option<&str> = None;
    for (i, v) in book.versions.iter().enumerate() {
        let at = format!("versions[{i}]");
        let good_name = !v.version.is_empty()
            && v.version.len() <= 64
            && v.version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !good_name {
            out.push((
                format!("{at}.version"),
                format!(
                    "`{}` is not a version name: use 1-64 letters, digits, `.`, `-` or `_`",
                    v.version
                ),
            ));
        }
        if seen.insert(v.version.as_str(), i).is_some() {
            out.push((
                format!("{at}.version"),
                format!(
                    "version `{}` is listed twice: name each version once",
                    v.version
                ),
            ));
        }
        if !is_day(&v.effective_from) {
            out.push((
                format!("{at}.effective_from"),
                format!("`{}` is not a date: use YYYY-MM-DD (UTC)", v.effective_from),
            ));
        } else if let Some(p) = previous.filter(|p| *p >= v.effective_from.as_str()) {
            out.push((
                format!("{at}.effective_from"),
                format!(
                    "{} is not after the previous version's {p}: list versions oldest first, each \
                     effective from a later day",
                    v.effective_from
                ),
            ));
        }
        previous = Some(v.effective_from.as_str());
        if v.prices.is_empty() {
            out.push((format!("{at}.prices"), "no price: list at least one".into()));
        }
        check_prices(&format!("{at}.prices"), &v.prices, &mut out);
        for (tenant, prices) in &v.tenants {
            let at = format!("{at}.tenants.{tenant}");
            if TenantId::parse(tenant).is_err() {
                out.push((at.clone(), format!("`{tenant}` is not a tenant id")));
            }
            check_prices(&at, prices, &mut out);
            for (j, p) in prices.iter().enumerate() {
                if !v
                    .prices
                    .iter()
                    .any(|b| b.provider == p.provider && b.model == p.model)
                {
                    out.push((
                        format!("{at}[{j}]"),
                        format!(
                            "`{}` of `{}` has no book price in this version: a negotiated price \
                             replaces one, so add the model to `prices` first",
                            p.model, p.provider
                        ),
                    ));
                }
            }
        }
    }
    out
}

fn check_prices(at: &str, prices: &[Price], out: &mut Vec<(String, String)>) {
    let mut seen = std::collections::BTreeSet::new();
    for (j, p) in prices.iter().enumerate() {
        let at = format!("{at}[{j}]");
        if runtime::domain::ModelId::parse(&p.model).is_err() {
            out.push((
                format!("{at}.model"),
                format!("`{}` is not a model name", p.model),
            ));
        }
        if !seen.insert((p.provider, p.model.as_str())) {
            out.push((
                at.clone(),
                format!(
                    "`{}` of `{}` is priced twice: keep one",
                    p.model, p.provider
                ),
            ));
        }
        for (field, MicroUsd(v)) in [
            ("input_per_mtok", p.input_per_mtok),
            ("output_per_mtok", p.output_per_mtok),
            ("per_request", p.per_request),
            (
                "cached_input_per_mtok",
                p.cached_input_per_mtok.unwrap_or_default(),
            ),
            (
                "cache_write_per_mtok",
                p.cache_write_per_mtok.unwrap_or_default(),
            ),
            (
                "reasoning_per_mtok",
                p.reasoning_per_mtok.unwrap_or_default(),
            ),
        ] {
            if !(0..=MAX_PRICE).contains(&v) {
                out.push((
                    format!("{at}.{field}"),
                    format!(
                        "{v} is outside 0..={MAX_PRICE} micro-USD: prices are whole micro-USD \
                         (1 USD = 1000000) per million tokens, or per call"
                    ),
                ));
            }
        }
    }
}

/// A version's digest: SHA-256 of its canonical JSON (what the control plane keeps it under).
pub fn digest(version: &PriceVersion) -> String {
    let bytes = serde_json::to_vec(version).unwrap_or_default();
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
    d.as_ref().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// What the control plane holds: the imported versions, oldest first (none before the first
/// import or before the control plane exists).
pub async fn imported(target: &Target) -> Result<PriceBook> {
    let admin = target.admin().await?;
    let exists: bool = admin
        .query_one(
            "SELECT to_regclass('control.price_versions') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(PriceBook::default());
    }
    let rows = admin
        .query(
            "SELECT body FROM control.price_versions ORDER BY effective_from",
            &[],
        )
        .await?;
    let mut versions = Vec::new();
    for row in rows {
        versions.push(
            serde_json::from_value(row.get::<_, serde_json::Value>(0))
                .context("an imported price book version cannot be read")?,
        );
    }
    Ok(PriceBook { versions })
}

/// How one version of a file compares with the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Not imported yet: an import adds it.
    New,
    /// Imported, identical.
    Unchanged,
    /// Imported with other contents: refused (versions never change), with what differs.
    Changed(Vec<String>),
    /// New, but effective before today or not after the newest imported version: refused.
    Backdated(String),
    /// Imported, not in the file (kept: the control plane never forgets a version).
    OnlyImported,
}

impl Change {
    /// Whether an import would add or refuse this version (what `prices diff` exits 2 for).
    pub fn pending(&self) -> bool {
        matches!(
            self,
            Change::New | Change::Changed(_) | Change::Backdated(_)
        )
    }

    /// The change as a stable word, and what explains it (what differs, or why it is refused).
    pub fn code_and_detail(&self) -> (&'static str, Vec<String>) {
        match self {
            Change::New => ("new", Vec::new()),
            Change::Unchanged => ("unchanged", Vec::new()),
            Change::Changed(diff) => ("changed", diff.clone()),
            Change::Backdated(why) => ("backdated", vec![why.clone()]),
            Change::OnlyImported => ("only_imported", Vec::new()),
        }
    }
}

/// Compares `file` with `imported`, version by version (`today` is UTC `YYYY-MM-DD`).
pub fn compare(file: &PriceBook, imported: &PriceBook, today: &str) -> Vec<(String, Change)> {
    let newest = imported
        .versions
        .iter()
        .map(|v| v.effective_from.as_str())
        .max();
    let mut out = Vec::new();
    for v in &file.versions {
        let change = match imported.versions.iter().find(|i| i.version == v.version) {
            Some(i) if i == v => Change::Unchanged,
            Some(i) => Change::Changed(differences(i, v)),
            None => match newest {
                // The first import may bring history; later versions take effect from now on.
                None => Change::New,
                Some(n) if v.effective_from.as_str() <= n => Change::Backdated(format!(
                    "it is effective from {}, not after the newest imported version's {n}",
                    v.effective_from
                )),
                Some(_) if v.effective_from.as_str() < today => Change::Backdated(format!(
                    "it is effective from {}, before today ({today}): days already charged are \
                     never re-priced",
                    v.effective_from
                )),
                Some(_) => Change::New,
            },
        };
        out.push((v.version.clone(), change));
    }
    for i in &imported.versions {
        if !file.versions.iter().any(|v| v.version == i.version) {
            out.push((i.version.clone(), Change::OnlyImported));
        }
    }
    out
}

/// A version's prices by `provider/model` (negotiated ones with their tenant).
fn price_list(v: &PriceVersion) -> BTreeMap<String, &Price> {
    let key = |p: &Price| format!("{}/{}", p.provider, p.model);
    let mut all: BTreeMap<String, &Price> = v.prices.iter().map(|p| (key(p), p)).collect();
    for (tenant, prices) in &v.tenants {
        for p in prices {
            all.insert(format!("{} (tenant {tenant})", key(p)), p);
        }
    }
    all
}

fn differences(old: &PriceVersion, new: &PriceVersion) -> Vec<String> {
    let mut out = Vec::new();
    if old.effective_from != new.effective_from {
        out.push(format!(
            "effective_from {} -> {}",
            old.effective_from, new.effective_from
        ));
    }
    let (a, b) = (price_list(old), price_list(new));
    for (k, p) in &a {
        match b.get(k) {
            None => out.push(format!("{k}: removed")),
            Some(q) if q != p => out.push(format!(
                "{k}: input {} -> {}, output {} -> {}, per request {} -> {}",
                p.input_per_mtok.0,
                q.input_per_mtok.0,
                p.output_per_mtok.0,
                q.output_per_mtok.0,
                p.per_request.0,
                q.per_request.0
            )),
            Some(_) => {}
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        out.push(format!("{k}: added"));
    }
    out
}

/// The refusals among `changes`, as one error (nothing is imported when there is any).
fn refusals(file: &Path, changes: &[(String, Change)]) -> Result<()> {
    let mut out = String::new();
    for (version, change) in changes {
        match change {
            Change::Changed(diff) => {
                let _ = write!(
                    out,
                    "\n  version `{version}` is already imported with other prices: {}",
                    diff.join("; ")
                );
            }
            Change::Backdated(why) => {
                let _ = write!(out, "\n  version `{version}` cannot be added: {why}");
            }
            _ => {}
        }
    }
    if out.is_empty() {
        return Ok(());
    }
    bail!(
        "nothing was imported from `{}`:{out}\n  fix: an imported version never changes; put new \
         prices in a new version effective today or later (`tenantctl prices diff` shows the \
         differences)",
        file.display()
    )
}

/// Imports the versions of `book` the control plane does not have, in one transaction; returns
/// how each version compared.
pub async fn import(
    target: &Target,
    file: &Path,
    book: &PriceBook,
) -> Result<Vec<(String, Change)>> {
    crate::provision::apply::ensure_control_plane(target).await?;
    let mut admin = target.admin().await?;
    #[expect(
        clippy::disallowed_methods,
        reason = "the price book is control-plane data, written as the admin role"
    )]
    let tx = admin.transaction().await?;
    tx.batch_execute("LOCK TABLE control.price_versions IN EXCLUSIVE MODE")
        .await?;
    let rows = tx
        .query(
            "SELECT body FROM control.price_versions ORDER BY effective_from",
            &[],
        )
        .await?;
    let mut versions = Vec::new();
    for row in rows {
        versions.push(serde_json::from_value(row.get::<_, serde_json::Value>(0))?);
    }
    let imported = PriceBook { versions };
    let changes = compare(book, &imported, &runtime::pricing::today());
    refusals(file, &changes)?;
    let actor = crate::provision::apply::actor();
    for v in &book.versions {
        if changes
            .iter()
            .any(|(name, c)| name == &v.version && *c == Change::New)
        {
            tx.execute(
                "INSERT INTO control.price_versions (version, effective_from, digest, body, imported_by) \
                 VALUES ($1, CAST($2::text AS date), $3, $4, $5)",
                &[
                    &v.version,
                    &v.effective_from,
                    &digest(v),
                    &serde_json::to_value(v)?,
                    &actor,
                ],
            )
            .await
            .with_context(|| format!("importing price book version `{}`", v.version))?;
        }
    }
    tx.commit().await?;
    Ok(changes)
}

/// The deployment's price book: what is imported, or the built-in book before the first import.
pub async fn for_deployment(target: &Target) -> Result<PriceBook> {
    let book = imported(target).await?;
    Ok(if book.versions.is_empty() {
        builtin()
    } else {
        book
    })
}

/// Imports the built-in book into a deployment that has no price book yet; `Some(version)` when it
/// did.
pub async fn import_builtin_if_none(target: &Target) -> Result<Option<String>> {
    if !imported(target).await?.versions.is_empty() {
        return Ok(None);
    }
    let book = builtin();
    import(target, Path::new(BUILTIN_PATH), &book).await?;
    Ok(book.versions.last().map(|v| v.version.clone()))
}

/// Why `spec`'s models cannot all be charged today under `book` (empty when they can): each model
/// its policy permits needs a price in the version effective today.
pub fn unpriced(book: &PriceBook, spec: &crate::manifest::TenantSpec) -> Option<String> {
    let prices = book.for_tenant(spec.id.as_str());
    let today = runtime::pricing::today();
    let Some(version) = prices.at(&today) else {
        return Some(format!(
            "no price book version is effective today ({today}): import one with `tenantctl prices import`"
        ));
    };
    let missing: Vec<String> = spec
        .models
        .providers
        .iter()
        .flat_map(|(provider, p)| {
            p.models
                .iter()
                .filter(|m| version.price(*provider, m.as_str()).is_none())
                .map(move |m| format!("`{m}` of `{provider}`"))
        })
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "price book version `{}` has no price for {}: add them to the book in a new version and              `tenantctl prices import` it, or remove the models from the manifest",
            version.version,
            missing.join(", ")
        )
    })
}

/// The rows `prices list` prints for `tenant` (or the book's own prices) on `day`.
/// The version effective on `day`, and its prices as `tenant` is charged them (each with whether it
/// is the tenant's negotiated price).
fn charged<'a>(
    book: &'a PriceBook,
    day: &str,
    tenant: Option<&str>,
) -> Result<(&'a PriceVersion, Vec<(&'a Price, bool)>)> {
    let Some(v) = book.effective(day) else {
        bail!(
            "no price book version is effective on {day}: import one (`tenantctl prices import`)"
        );
    };
    let negotiated = tenant.and_then(|t| v.tenants.get(t));
    let prices = v
        .prices
        .iter()
        .map(|p| {
            match negotiated
                .into_iter()
                .flatten()
                .find(|n| n.provider == p.provider && n.model == p.model)
            {
                Some(n) => (n, true),
                None => (p, false),
            }
        })
        .collect();
    Ok((v, prices))
}

/// `tenantctl prices list`: the prices charged on `day`, as `tenant` is charged them.
pub fn listing(book: &PriceBook, day: &str, tenant: Option<&str>) -> Result<String> {
    let (v, prices) = charged(book, day, tenant)?;
    let mut out = format!(
        "price book version {} (effective from {}){}\n",
        v.version,
        v.effective_from,
        tenant
            .map(|t| format!(", as charged to tenant `{t}`"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "{:<18} {:<42} {:>14} {:>14} {:>12}  ",
        "provider", "model", "input $/Mtok", "output $/Mtok", "per call $"
    );
    let usd = |m: MicroUsd| crate::usage::usd_text(m.0);
    for (p, negotiated) in prices {
        let _ = writeln!(
            out,
            "{:<18} {:<42} {:>14} {:>14} {:>12}  {}",
            p.provider.as_str(),
            p.model,
            usd(p.input_per_mtok),
            usd(p.output_per_mtok),
            usd(p.per_request),
            if negotiated { "negotiated" } else { "" }
        );
    }
    Ok(out)
}

/// `tenantctl --output json prices list`: the same, with integer micro-USD.
pub fn listing_json(
    book: &PriceBook,
    day: &str,
    tenant: Option<&str>,
) -> Result<serde_json::Value> {
    let (v, prices) = charged(book, day, tenant)?;
    let prices = prices
        .into_iter()
        .map(|(p, negotiated)| {
            let mut row = serde_json::to_value(p)?;
            row["negotiated"] = serde_json::Value::Bool(negotiated);
            Ok(row)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(serde_json::json!({
        "version": v.version, "effective_from": v.effective_from, "day": day,
        "tenant": tenant, "unit": "micro_usd_per_mtok", "prices": prices,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_book_is_valid_and_prices_every_example_model() {
        let book = builtin();
        assert!(problems(&book).is_empty());
        let v = book.effective(&runtime::pricing::today()).unwrap();
        assert!(v.prices.len() >= 18);
    }

    #[test]
    fn bad_books_name_the_place_and_the_fix() {
        let base =
            "versions:\n  - version: \"v1\"\n    effective_from: \"2026-01-01\"\n    prices:\n";
        for (body, says) in [
            (
                "      - { provider: mock, model: mock-small, input_per_mtok: -1, output_per_mtok: 0 }\n",
                "versions[0].prices[0].input_per_mtok: -1 is outside",
            ),
            (
                "      - { provider: mock, model: mock-small, input_per_mtok: 1, output_per_mtok: 2 }\n      - { provider: mock, model: mock-small, input_per_mtok: 1, output_per_mtok: 2 }\n",
                "priced twice",
            ),
            (
                "      - { provider: nobody, model: x, input_per_mtok: 1, output_per_mtok: 2 }\n",
                "field `versions[0].prices[0].provider`",
            ),
            (
                "      - { provider: mock, model: mock-small, input_per_mtok: 1.5, output_per_mtok: 2 }\n",
                "input_per_mtok",
            ),
            (
                "      - { provider: mock, model: mock-small, input_per_mtok: 1, output_per_mtok: 2, cached_input_per_mtok: -5 }\n",
                "versions[0].prices[0].cached_input_per_mtok: -5 is outside",
            ),
            (
                "      - { provider: mock, model: mock-small, input_per_mtok: 1, output_per_mtok: 2, cache_read_per_mtok: 1 }\n",
                "unknown field `cache_read_per_mtok`",
            ),
            (
                "      - { provider: mock, model: mock-small, input_per_mtok: 1, output_per_mtok: 2 }\n    tenants:\n      acme:\n        - { provider: mock, model: mock-large, input_per_mtok: 1, output_per_mtok: 2 }\n",
                "no book price in this version",
            ),
        ] {
            let e = format!(
                "{:#}",
                parse(Path::new("book.yaml"), &format!("{base}{body}")).unwrap_err()
            );
            assert!(e.contains(says), "{body}: {e}");
        }
        let twice = format!(
            "{base}      - {{ provider: mock, model: mock-small, input_per_mtok: 1, output_per_mtok: 2 }}\n  - version: \"v2\"\n    effective_from: \"2026-01-01\"\n    prices:\n      - {{ provider: mock, model: mock-small, input_per_mtok: 1, output_per_mtok: 2 }}\n"
        );
        let e = format!("{:#}", parse(Path::new("book.yaml"), &twice).unwrap_err());
        assert!(
            e.contains("versions[1].effective_from: 2026-01-01 is not after"),
            "{e}"
        );
    }

    #[test]
    fn imports_add_versions_never_change_or_backdate_them() {
        let book = builtin();
        let v1 = book.versions[0].clone();
        let today = "2026-12-15";
        assert_eq!(
            compare(&book, &PriceBook::default(), today)[0].1,
            Change::New
        );
        assert_eq!(compare(&book, &book, today)[0].1, Change::Unchanged);
        let mut changed = book.clone();
        changed.versions[0].prices[0].output_per_mtok = MicroUsd(1);
        let Change::Changed(diff) = &compare(&changed, &book, today)[0].1 else {
            panic!("not refused");
        };
        assert!(diff[0].contains("output 600000 -> 1"), "{diff:?}");
        let next = |from: &str| {
            let mut b = book.clone();
            b.versions.push(PriceVersion {
                version: format!("next-{from}"),
                effective_from: from.into(),
                ..v1.clone()
            });
            compare(&b, &book, today)[1].1.clone()
        };
        assert_eq!(next("2026-12-15"), Change::New);
        assert!(matches!(next("2026-12-14"), Change::Backdated(w) if w.contains("before today")));
        let mut old = book.clone();
        old.versions.clear();
        assert_eq!(compare(&old, &book, today)[0].1, Change::OnlyImported);
    }
}
