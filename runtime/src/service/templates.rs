//! Prompt templates with immutable versions, shared by the tenant: create (its version 1), list,
//! get, add a version, list and get versions, render. A version never changes once written (the
//! tenant's role may only insert and read them); a new body is a new version.
//!
//! A body names variables as `{{name}}` (`name`: lowercase letters, digits, `_`; spaces inside the
//! braces allowed). Rendering needs exactly the variables its version names: a missing or an
//! unknown one is refused by name, so a typo never renders a prompt with a hole in it. Values are
//! inserted as given, never evaluated: a template cannot run anything.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::auth::Tenant;
use crate::service::ServiceError;
use crate::tenancy::{DataPlane, TenantTx};

/// The longest template body.
pub const MAX_BODY_CHARS: usize = 65_536;

#[derive(Debug, Clone, Serialize)]
pub struct Template {
    pub id: Uuid,
    pub object: &'static str,
    pub name: String,
    pub description: String,
    pub latest_version: i32,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Version {
    pub object: &'static str,
    pub template_id: Uuid,
    pub version: i32,
    pub body: String,
    pub variables: Vec<String>,
    pub sha256: String,
    pub created_by: String,
    pub created_at: String,
}

/// One piece of a parsed body.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

/// Parses a body into text and variables, or says where it is malformed.
fn parse(body: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = body;
    let mut offset = 0;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            pieces.push(Piece::Text(&rest[..open]));
        }
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err(format!(
                "`body`: the `{{{{` at character {} is never closed with `}}}}`",
                body[..offset + open].chars().count() + 1
            ));
        };
        let name = after[..close].trim();
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(format!(
                "`body`: `{{{{{}}}}}` is not a variable; names are lowercase letters, digits and `_`, starting with a letter",
                crate::domain::printable(&after[..close])
            ));
        }
        pieces.push(Piece::Var(name));
        offset += open + 2 + close + 2;
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

/// The sorted variables a body names, or why it is not a template.
pub fn variables(body: &str) -> Result<Vec<String>, String> {
    let n = body.chars().count();
    if n == 0 || n > MAX_BODY_CHARS {
        return Err(format!(
            "`body` must be 1 to {MAX_BODY_CHARS} characters (it is {n})"
        ));
    }
    let names: BTreeSet<&str> = parse(body)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Var(v) => Some(v),
            Piece::Text(_) => None,
        })
        .collect();
    Ok(names.into_iter().map(str::to_owned).collect())
}

/// `body` with every variable replaced by its value; exactly the body's variables must be given.
pub fn render(body: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    let pieces = parse(body)?;
    let wanted: BTreeSet<&str> = pieces
        .iter()
        .filter_map(|p| match p {
            Piece::Var(v) => Some(*v),
            Piece::Text(_) => None,
        })
        .collect();
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|v| !values.contains_key(**v))
        .copied()
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "`variables`: missing {}",
            missing
                .iter()
                .map(|v| format!("`{v}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let unknown: Vec<String> = values
        .keys()
        .filter(|k| !wanted.contains(k.as_str()))
        .map(|k| format!("`{}`", crate::domain::printable(k)))
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "`variables`: this version names no {} (it names {})",
            unknown.join(", "),
            if wanted.is_empty() {
                "none".to_owned()
            } else {
                wanted
                    .iter()
                    .map(|v| format!("`{v}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ));
    }
    let mut out = String::with_capacity(body.len());
    for p in pieces {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Var(v) => out.push_str(values.get(v).map(String::as_str).unwrap_or_default()),
        }
    }
    Ok(out)
}

/// A template name: 1 to 64 of lowercase letters, digits, `.`, `_`, `-`, starting with a letter or digit.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`name` `{}` must be 1 to 64 of lowercase letters, digits, `.`, `_` and `-`, starting with a letter or digit",
            crate::domain::printable(name)
        ))
    }
}

fn sha256_hex(text: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn template(r: &tokio_postgres::Row) -> Template {
    Template {
        id: r.get(0),
        object: "prompt_template",
        name: r.get(1),
        description: r.get(2),
        latest_version: r.get(3),
        created_by: r.get(4),
        created_at: r.get(5),
        updated_at: r.get(6),
    }
}

fn version(r: &tokio_postgres::Row) -> Version {
    Version {
        object: "prompt_template.version",
        template_id: r.get(0),
        version: r.get(1),
        body: r.get(2),
        variables: r.get(3),
        sha256: r.get(4),
        created_by: r.get(5),
        created_at: r.get(6),
    }
}

const INSERT: &str = "INSERT INTO prompt_templates \
     (tenant_id, id, name, description, latest_version, created_by) VALUES ($1, $2, $3, $4, 1, $5) \
     ON CONFLICT (tenant_id, name) DO NOTHING \
     RETURNING id, name, description, latest_version, created_by, \
     to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
     to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";
const INSERT_VERSION: &str = "INSERT INTO prompt_template_versions \
     (tenant_id, id, template_id, version, body, variables, sha256, created_by) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     RETURNING template_id, version, body, variables, sha256, created_by, \
     to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";
const GET: &str = "SELECT id, name, description, latest_version, created_by, \
     to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
     to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
     FROM prompt_templates WHERE tenant_id = $1 AND id = $2";
/// By name, after the cursor `$2` (a name), names starting with `$4` when given.
const LIST: &str = "SELECT id, name, description, latest_version, created_by, \
     to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
     to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
     FROM prompt_templates WHERE tenant_id = $1 \
       AND ($2::uuid IS NULL OR name > (SELECT name FROM prompt_templates WHERE tenant_id = $1 AND id = $2)) \
       AND ($4::text IS NULL OR starts_with(name, $4)) \
     ORDER BY name LIMIT $3";
/// Takes the next version number (the row lock orders concurrent new versions).
const BUMP: &str = "UPDATE prompt_templates SET latest_version = latest_version + 1, updated_at = now() \
     WHERE tenant_id = $1 AND id = $2 RETURNING latest_version";
const VERSIONS: &str = "SELECT template_id, version, body, variables, sha256, created_by, \
     to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
     FROM prompt_template_versions WHERE tenant_id = $1 AND template_id = $2 AND version > $3 \
     ORDER BY version LIMIT $4";
const VERSION: &str = "SELECT template_id, version, body, variables, sha256, created_by, \
     to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
     FROM prompt_template_versions WHERE tenant_id = $1 AND template_id = $2 AND version = $3";
const EXISTS: &str = "SELECT latest_version FROM prompt_templates WHERE tenant_id = $1 AND id = $2";

fn not_found(id: Uuid) -> ServiceError {
    ServiceError::NotFound(format!("no prompt template `{id}` in this tenant"))
}

fn actor(tenant: &Tenant) -> &str {
    &tenant.principal().subject
}

/// A new template and its version 1.
pub async fn create(
    data: &DataPlane,
    tenant: &Tenant,
    name: &str,
    description: &str,
    body: &str,
) -> Result<(Template, Version), ServiceError> {
    check_name(name).map_err(ServiceError::BadRequest)?;
    if description.chars().count() > 1000 {
        return Err(ServiceError::BadRequest(
            "`description` is longer than 1000 characters".into(),
        ));
    }
    let vars = variables(body).map_err(ServiceError::BadRequest)?;
    let tx = TenantTx::begin(data, tenant).await?;
    let tenant_id = tx.tenant().as_str();
    let id = Uuid::new_v4();
    let rows = tx
        .query(
            INSERT,
            &[&tenant_id, &id, &name, &description, &actor(tenant)],
        )
        .await?;
    let Some(t) = rows.first().map(template) else {
        return Err(ServiceError::Conflict(format!(
            "a prompt template named `{name}` exists; add a version to it instead"
        )));
    };
    let v = tx
        .query(
            INSERT_VERSION,
            &[
                &tenant_id,
                &Uuid::new_v4(),
                &id,
                &1_i32,
                &body,
                &vars,
                &sha256_hex(body),
                &actor(tenant),
            ],
        )
        .await?;
    tx.commit().await?;
    let v = v
        .first()
        .map(version)
        .ok_or_else(|| ServiceError::internal("version insert returned no row"))?;
    Ok((t, v))
}

pub async fn get(data: &DataPlane, tenant: &Tenant, id: Uuid) -> Result<Template, ServiceError> {
    let tx = TenantTx::begin(data, tenant).await?;
    let rows = tx.query(GET, &[&tx.tenant().as_str(), &id]).await?;
    tx.commit().await?;
    rows.first().map(template).ok_or_else(|| not_found(id))
}

pub async fn list(
    data: &DataPlane,
    tenant: &Tenant,
    limit: i64,
    after: Option<Uuid>,
    name_prefix: Option<String>,
) -> Result<(Vec<Template>, bool), ServiceError> {
    let limit = limit.clamp(1, 100);
    let tx = TenantTx::begin(data, tenant).await?;
    let tenant_id = tx.tenant().as_str();
    if let Some(after) = after
        && tx.query(EXISTS, &[&tenant_id, &after]).await?.is_empty()
    {
        return Err(ServiceError::NotFound(format!(
            "`after`: no prompt template `{after}` in this tenant"
        )));
    }
    let rows = tx
        .query(LIST, &[&tenant_id, &after, &(limit + 1), &name_prefix])
        .await?;
    tx.commit().await?;
    let mut data: Vec<Template> = rows.iter().map(template).collect();
    let n = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = data.len() > n;
    data.truncate(n);
    Ok((data, more))
}

const DESCRIBE: &str = "UPDATE prompt_templates SET description = $3, updated_at = now() \
     WHERE tenant_id = $1 AND id = $2 \
     RETURNING id, name, description, latest_version, created_by, \
     to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
     to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";

/// Changes template `id`'s description (its name and versions never change).
pub async fn describe(
    data: &DataPlane,
    tenant: &Tenant,
    id: Uuid,
    description: &str,
) -> Result<Template, ServiceError> {
    if description.chars().count() > 1000 {
        return Err(ServiceError::BadRequest(
            "`description` is longer than 1000 characters".into(),
        ));
    }
    let tx = TenantTx::begin(data, tenant).await?;
    let rows = tx
        .query(DESCRIBE, &[&tx.tenant().as_str(), &id, &description])
        .await?;
    tx.commit().await?;
    rows.first().map(template).ok_or_else(|| not_found(id))
}

/// Adds the next version of template `id`.
pub async fn add_version(
    data: &DataPlane,
    tenant: &Tenant,
    id: Uuid,
    body: &str,
) -> Result<Version, ServiceError> {
    let vars = variables(body).map_err(ServiceError::BadRequest)?;
    let tx = TenantTx::begin(data, tenant).await?;
    let tenant_id = tx.tenant().as_str();
    let bumped = tx.query(BUMP, &[&tenant_id, &id]).await?;
    let Some(next) = bumped.first().map(|r| r.get::<_, i32>(0)) else {
        return Err(not_found(id));
    };
    let v = tx
        .query(
            INSERT_VERSION,
            &[
                &tenant_id,
                &Uuid::new_v4(),
                &id,
                &next,
                &body,
                &vars,
                &sha256_hex(body),
                &actor(tenant),
            ],
        )
        .await?;
    tx.commit().await?;
    v.first()
        .map(version)
        .ok_or_else(|| ServiceError::internal("version insert returned no row"))
}

pub async fn versions(
    data: &DataPlane,
    tenant: &Tenant,
    id: Uuid,
    limit: i64,
    after: i32,
) -> Result<(Vec<Version>, bool), ServiceError> {
    let limit = limit.clamp(1, 100);
    let tx = TenantTx::begin(data, tenant).await?;
    let tenant_id = tx.tenant().as_str();
    let fetch = limit + 1;
    let exists: [&(dyn ToSql + Sync); 2] = [&tenant_id, &id];
    let page_of: [&(dyn ToSql + Sync); 4] = [&tenant_id, &id, &after, &fetch];
    let (found, rows) = tokio::try_join!(tx.query(EXISTS, &exists), tx.query(VERSIONS, &page_of))?;
    tx.commit().await?;
    if found.is_empty() {
        return Err(not_found(id));
    }
    let mut data: Vec<Version> = rows.iter().map(version).collect();
    let n = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = data.len() > n;
    data.truncate(n);
    Ok((data, more))
}

/// Version `number` of template `id`, or its latest when `None`.
pub async fn version_of(
    data: &DataPlane,
    tenant: &Tenant,
    id: Uuid,
    number: Option<i32>,
) -> Result<Version, ServiceError> {
    let tx = TenantTx::begin(data, tenant).await?;
    let tenant_id = tx.tenant().as_str();
    let number = match number {
        Some(n) => n,
        None => match tx.query(EXISTS, &[&tenant_id, &id]).await?.first() {
            Some(r) => r.get(0),
            None => return Err(not_found(id)),
        },
    };
    let rows = tx.query(VERSION, &[&tenant_id, &id, &number]).await?;
    tx.commit().await?;
    rows.first().map(version).ok_or_else(|| {
        ServiceError::NotFound(format!(
            "no version {number} of prompt template `{id}` in this tenant"
        ))
    })
}

/// Renders version `number` (or the latest) of template `id` with `values`.
pub async fn render_version(
    data: &DataPlane,
    tenant: &Tenant,
    id: Uuid,
    number: Option<i32>,
    values: &BTreeMap<String, String>,
) -> Result<(Version, String), ServiceError> {
    let v = version_of(data, tenant, id, number).await?;
    let text = render(&v.body, values).map_err(ServiceError::BadRequest)?;
    Ok((v, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(body: &str, values: &[(&str, &str)], expected: Result<&str, &str>) {
        let values: BTreeMap<String, String> = values
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        match (render(body, &values), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want),
            (Err(got), Err(want)) => assert!(got.contains(want), "{got}"),
            (got, want) => panic!("{body}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn bodies_render_with_exactly_their_variables() {
        check("Hello {{name}}!", &[("name", "Ada")], Ok("Hello Ada!"));
        check("{{ a }}{{b}}{{a}}", &[("a", "1"), ("b", "2")], Ok("121"));
        check("no variables", &[], Ok("no variables"));
        // Values are inserted, never evaluated: braces in a value stay text.
        check("{{x}}", &[("x", "{{y}}")], Ok("{{y}}"));
        check("Hi {{name}}", &[], Err("missing `name`"));
        check("Hi", &[("name", "x")], Err("names no `name`"));
        check("Hi {{name", &[("name", "x")], Err("never closed"));
        check("Hi {{Name}}", &[("Name", "x")], Err("is not a variable"));
        check("Hi {{}}", &[], Err("is not a variable"));
        assert_eq!(variables("{{b}} {{a}} {{b}}").unwrap(), vec!["a", "b"]);
        assert!(variables("").is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("discharge-summary.v2").is_ok());
        for bad in ["", "Upper", "-lead", "has space", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
