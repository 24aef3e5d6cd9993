//! Handlers of the API's objects: conversations and their messages, prompt templates and their
//! versions, members, the tenant's audit chain, and the usage views. Thin, like `handlers`:
//! extract, call one `service` function, map the result.
//!
//! Every body and query is `deny_unknown_fields` (a smuggled `tenant_id` is a 400, security case
//! 29); every id in a path that does not parse is answered like an id of another tenant's object
//! (404), so a caller learns nothing from the difference.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::auth::Tenant;
use crate::http::error::ApiError;
use crate::http::middleware::RequestId;
use crate::service;
use crate::state::AppState;

/// A JSON body: `Content-Type: application/json`, no unknown field (each type says so), and no
/// NUL character in any string (PostgreSQL stores none, and no text here needs one).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
        if !json {
            return Err(ApiError::BadRequest(
                "send the body as JSON with `Content-Type: application/json`".into(),
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::BadRequest(e.body_text())
                }
            })?;
        if bytes.windows(6).any(|w| w == b"\\u0000") {
            return Err(ApiError::BadRequest(
                "the body contains a NUL character (`\\u0000`); no field accepts one".into(),
            ));
        }
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            ApiError::BadRequest(format!("the body is not what this route takes: {e}"))
        })
    }
}

impl<T> std::fmt::Debug for JsonBody<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A body may hold a credential: never printed.
        f.write_str("JsonBody(..)")
    }
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

/// An id from a path: one that is no UUID is no object of this tenant's.
fn object_id(raw: &str, what: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::try_parse(raw).map_err(|_| {
        ApiError::ObjectNotFound(format!(
            "no {what} `{}` in this tenant",
            crate::domain::printable(raw)
        ))
    })
}

/// A cursor from a query: the id of the previous page's last object.
fn cursor(raw: Option<&str>, what: &str) -> Result<Option<uuid::Uuid>, ApiError> {
    raw.map(|a| {
        uuid::Uuid::try_parse(a).map_err(|_| {
            ApiError::BadRequest(format!(
                "`after` must be a {what}'s id (a UUID: the `last_id` of the previous page)"
            ))
        })
    })
    .transpose()
}

fn svc(request_id: uuid::Uuid) -> impl Fn(service::ServiceError) -> ApiError {
    move |e| ApiError::service(e, request_id)
}

/// An OpenAI-style list: `data`, `has_more`, and the first and last ids for the next page.
fn list<T: serde::Serialize>(
    data: &[T],
    has_more: bool,
    id: impl Fn(&T) -> String,
) -> Json<serde_json::Value> {
    Json(json!({
        "object": "list",
        "data": data,
        "has_more": has_more,
        "first_id": data.first().map(&id),
        "last_id": data.last().map(&id),
    }))
}

// ---- conversations ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewConversation {
    title: String,
    model: String,
    system_prompt: Option<String>,
}

pub async fn create_conversation(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    b: JsonBody<NewConversation>,
) -> Result<Response, ApiError> {
    let JsonBody(b) = b;
    let c = service::conversations::create(
        &state.data,
        &tenant,
        &service::conversations::NewConversation {
            title: b.title,
            model: b.model,
            system_prompt: b.system_prompt,
        },
    )
    .await
    .map_err(svc(request_id))?;
    Ok((http::StatusCode::CREATED, Json(c)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationQuery {
    limit: Option<i64>,
    after: Option<String>,
    /// Titles containing this, case-insensitive.
    title: Option<String>,
}

pub async fn list_conversations(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    q: Result<Query<ConversationQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = query(q)?;
    let after = cursor(q.after.as_deref(), "conversation")?;
    let page = service::conversations::list(
        &state.data,
        &tenant,
        q.limit.unwrap_or(20),
        after,
        q.title.filter(|t| !t.is_empty()),
    )
    .await
    .map_err(svc(request_id))?;
    Ok(list(&page.data, page.has_more, |c| c.id.to_string()))
}

pub async fn get_conversation(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = object_id(&id, "conversation")?;
    let c = service::conversations::get(&state.data, &tenant, id)
        .await
        .map_err(svc(request_id))?;
    Ok(Json(c).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rename {
    title: String,
}

pub async fn rename_conversation(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(id): Path<String>,
    b: JsonBody<Rename>,
) -> Result<Response, ApiError> {
    let id = object_id(&id, "conversation")?;
    let JsonBody(b) = b;
    let c = service::conversations::rename(&state.data, &tenant, id, &b.title)
        .await
        .map_err(svc(request_id))?;
    Ok(Json(c).into_response())
}

pub async fn delete_conversation(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = object_id(&id, "conversation")?;
    service::conversations::delete(&state.data, &tenant, id)
        .await
        .map_err(svc(request_id))?;
    Ok(Json(json!({"id": id, "object": "conversation.deleted", "deleted": true})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    content: String,
}

pub async fn create_conversation_message(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    headers: http::HeaderMap,
    Path(id): Path<String>,
    b: JsonBody<NewMessage>,
) -> Result<Response, ApiError> {
    let id = object_id(&id, "conversation")?;
    let JsonBody(b) = b;
    let call = crate::http::handlers::call_of(request_id, &headers)?;
    let posted = service::conversations::post_message(
        &state.models,
        &state.data,
        &state.ledger,
        &tenant,
        &call,
        id,
        &b.content,
    )
    .await
    .map_err(svc(request_id))?;
    let u = posted.metered.completion.usage;
    let response = (
        http::StatusCode::CREATED,
        Json(json!({
            "object": "conversation.exchange",
            "conversation_id": id,
            "user": posted.user,
            "assistant": posted.assistant,
            "usage": {
                "input_tokens": u.input_tokens,
                "output_tokens": u.output_tokens,
            },
            "ledger_id": posted.metered.ledger_id,
        })),
    )
        .into_response();
    Ok(crate::http::handlers::with_budget(
        response,
        &posted.metered.budget,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageQuery {
    limit: Option<i64>,
    /// The `seq` of the previous page's last message.
    after: Option<i32>,
}

pub async fn list_conversation_messages(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(id): Path<String>,
    q: Result<Query<MessageQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = object_id(&id, "conversation")?;
    let q = query(q)?;
    let page = service::conversations::messages(
        &state.data,
        &tenant,
        id,
        q.limit.unwrap_or(50),
        q.after.unwrap_or(0),
    )
    .await
    .map_err(svc(request_id))?;
    Ok(list(&page.data, page.has_more, |m| m.seq.to_string()))
}

pub async fn get_conversation_message(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path((id, message_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = object_id(&id, "conversation")?;
    let message_id = object_id(&message_id, "message")?;
    let m = service::conversations::message_of(&state.data, &tenant, id, message_id)
        .await
        .map_err(svc(request_id))?;
    Ok(Json(m).into_response())
}

// ---- prompt templates ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTemplate {
    name: String,
    #[serde(default)]
    description: String,
    body: String,
}

pub async fn create_prompt_template(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    b: JsonBody<NewTemplate>,
) -> Result<Response, ApiError> {
    let JsonBody(b) = b;
    let (t, v) = service::templates::create(&state.data, &tenant, &b.name, &b.description, &b.body)
        .await
        .map_err(svc(request_id))?;
    let mut out = serde_json::to_value(&t).unwrap_or_default();
    out["version"] = serde_json::to_value(&v).unwrap_or_default();
    Ok((http::StatusCode::CREATED, Json(out)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateQuery {
    limit: Option<i64>,
    after: Option<String>,
    /// Names starting with this.
    name: Option<String>,
}

pub async fn list_prompt_templates(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    q: Result<Query<TemplateQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = query(q)?;
    let after = cursor(q.after.as_deref(), "prompt template")?;
    let (data, more) = service::templates::list(
        &state.data,
        &tenant,
        q.limit.unwrap_or(20),
        after,
        q.name.filter(|n| !n.is_empty()),
    )
    .await
    .map_err(svc(request_id))?;
    Ok(list(&data, more, |t| t.id.to_string()))
}

pub async fn get_prompt_template(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = object_id(&id, "prompt template")?;
    let t = service::templates::get(&state.data, &tenant, id)
        .await
        .map_err(svc(request_id))?;
    Ok(Json(t).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Describe {
    description: String,
}

pub async fn update_prompt_template(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(id): Path<String>,
    b: JsonBody<Describe>,
) -> Result<Response, ApiError> {
    let id = object_id(&id, "prompt template")?;
    let JsonBody(b) = b;
    let t = service::templates::describe(&state.data, &tenant, id, &b.description)
        .await
        .map_err(svc(request_id))?;
    Ok(Json(t).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewVersion {
    body: String,
}

pub async fn create_prompt_template_version(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(id): Path<String>,
    b: JsonBody<NewVersion>,
) -> Result<Response, ApiError> {
    let id = object_id(&id, "prompt template")?;
    let JsonBody(b) = b;
    let v = service::templates::add_version(&state.data, &tenant, id, &b.body)
        .await
        .map_err(svc(request_id))?;
    Ok((http::StatusCode::CREATED, Json(v)).into_response())
}

pub async fn list_prompt_template_versions(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(id): Path<String>,
    q: Result<Query<MessageQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = object_id(&id, "prompt template")?;
    let q = query(q)?;
    let (data, more) = service::templates::versions(
        &state.data,
        &tenant,
        id,
        q.limit.unwrap_or(20),
        q.after.unwrap_or(0),
    )
    .await
    .map_err(svc(request_id))?;
    Ok(list(&data, more, |v| v.version.to_string()))
}

pub async fn get_prompt_template_version(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path((id, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = object_id(&id, "prompt template")?;
    let number = version.parse::<i32>().map_err(|_| {
        ApiError::ObjectNotFound(format!(
            "no version `{}` of prompt template `{id}` in this tenant",
            crate::domain::printable(&version)
        ))
    })?;
    let v = service::templates::version_of(&state.data, &tenant, id, Some(number))
        .await
        .map_err(svc(request_id))?;
    Ok(Json(v).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Render {
    /// The version to render; the latest when left out.
    version: Option<i32>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
}

pub async fn render_prompt_template(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(id): Path<String>,
    b: JsonBody<Render>,
) -> Result<Response, ApiError> {
    let id = object_id(&id, "prompt template")?;
    let JsonBody(b) = b;
    let (v, text) =
        service::templates::render_version(&state.data, &tenant, id, b.version, &b.variables)
            .await
            .map_err(svc(request_id))?;
    Ok(Json(json!({
        "object": "prompt_template.rendering",
        "template_id": id,
        "version": v.version,
        "sha256": v.sha256,
        "text": text,
    }))
    .into_response())
}

// ---- members ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberQuery {
    limit: Option<i64>,
    /// The previous page's last subject.
    after: Option<String>,
    /// Members holding this role.
    role: Option<String>,
}

pub async fn list_members(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    q: Result<Query<MemberQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = query(q)?;
    let (data, more) =
        service::members::list(&state.data, &tenant, q.limit.unwrap_or(50), q.after, q.role)
            .await
            .map_err(svc(request_id))?;
    Ok(list(&data, more, |m| m.subject.clone()))
}

pub async fn get_member(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(subject): Path<String>,
) -> Result<Response, ApiError> {
    let m = service::members::get(&state.data, &tenant, &subject)
        .await
        .map_err(svc(request_id))?;
    Ok(Json(m).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRoles {
    roles: Vec<String>,
}

pub async fn set_member_roles(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(subject): Path<String>,
    b: JsonBody<SetRoles>,
) -> Result<Response, ApiError> {
    let JsonBody(b) = b;
    let m = service::members::set_roles(&state.data, &tenant, request_id, &subject, &b.roles)
        .await
        .map_err(svc(request_id))?;
    Ok(Json(m).into_response())
}

pub async fn remove_member(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(subject): Path<String>,
) -> Result<Response, ApiError> {
    service::members::remove(&state.data, &tenant, request_id, &subject)
        .await
        .map_err(svc(request_id))?;
    Ok(
        Json(json!({"subject": subject, "object": "member.deleted", "deleted": true}))
            .into_response(),
    )
}

// ---- the tenant's audit chain ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    limit: Option<i64>,
    /// The `seq` of the previous page's last event.
    after: Option<i64>,
    /// Actions starting with this (`members.`).
    action: Option<String>,
    outcome: Option<String>,
    actor: Option<String>,
}

pub async fn list_audit_events(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = query(q)?;
    let page = service::audit_trail::list(
        &state.data,
        &tenant,
        &service::audit_trail::Filter {
            after: q.after.unwrap_or(0).max(0),
            limit: q.limit.unwrap_or(100),
            action: q.action.filter(|s| !s.is_empty()),
            outcome: q.outcome.filter(|s| !s.is_empty()),
            actor: q.actor.filter(|s| !s.is_empty()),
        },
    )
    .await
    .map_err(svc(request_id))?;
    Ok(list(&page.events, page.has_more, |e| e.seq.to_string()))
}

pub async fn get_audit_event(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(seq): Path<String>,
) -> Result<Response, ApiError> {
    let seq = seq.parse::<i64>().map_err(|_| {
        ApiError::ObjectNotFound(format!(
            "no audit event `{}` in this tenant",
            crate::domain::printable(&seq)
        ))
    })?;
    let e = service::audit_trail::get(&state.data, &tenant, seq)
        .await
        .map_err(svc(request_id))?;
    Ok(Json(e).into_response())
}

/// The whole chain as JSON lines, one event per line in `seq` order, keys sorted: what
/// `scripts/verify-audit-export.sh` checks offline.
pub async fn export_audit_events(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
) -> Result<Response, ApiError> {
    let records = service::audit_trail::chain(&state.data, &tenant)
        .await
        .map_err(svc(request_id))?;
    let mut out = String::new();
    for r in &records {
        out.push_str(&r.export_line());
        out.push('\n');
    }
    Ok((
        [
            (http::header::CONTENT_TYPE, "application/jsonl".to_owned()),
            (
                http::header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"audit-{}.jsonl\"",
                    tenant.id().as_str()
                ),
            ),
        ],
        out,
    )
        .into_response())
}

pub async fn verify_audit_chain(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let v = service::audit_trail::verify(&state.data, &tenant)
        .await
        .map_err(svc(request_id))?;
    Ok(Json(match v.outcome {
        Ok(head) => {
            json!({"object": "audit.verification", "ok": true, "events": v.events, "head": head})
        }
        Err(broken) => json!({
            "object": "audit.verification",
            "ok": false,
            "events": v.events,
            "broken_at": broken.seq,
            "reason": broken.reason,
        }),
    }))
}

// ---- provider credentials (write-only) ----

/// A credential's new value: read into a redacting `SecretString`, never echoed or logged.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialValue {
    value: secrecy::SecretString,
}

impl std::fmt::Debug for CredentialValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialValue([REDACTED])")
    }
}

fn credential_json(provider: &str, info: &service::credentials::SecretInfo) -> serde_json::Value {
    json!({
        "object": "credential",
        "provider": provider,
        "name": info.name,
        "version": info.version,
        "changed_at": info.changed_at,
    })
}

pub async fn list_credentials(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let infos = service::credentials::list(&state.secrets, &tenant)
        .await
        .map_err(svc(request_id))?;
    let data: Vec<serde_json::Value> = infos
        .iter()
        .map(|i| credential_json(i.name.rsplit('/').next().unwrap_or_default(), i))
        .collect();
    Ok(list(&data, false, |c| {
        c["provider"].as_str().unwrap_or_default().to_owned()
    }))
}

async fn change_credential(
    state: &AppState,
    tenant: &Tenant,
    request_id: uuid::Uuid,
    provider: &str,
    change: service::credentials::Change,
    value: Option<&secrecy::SecretString>,
) -> Result<Response, ApiError> {
    // A tenant's own deployment (no registry: its Lambda) may only read its secrets.
    let info = service::credentials::change(
        &state.data,
        &state.secrets,
        state.control.is_some(),
        tenant,
        request_id,
        provider,
        change,
        value,
    )
    .await
    .map_err(svc(request_id))?;
    let mut out = credential_json(provider, &info);
    if change == service::credentials::Change::Delete {
        out["deleted"] = json!(true);
    }
    Ok(Json(out).into_response())
}

pub async fn set_credential(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(provider): Path<String>,
    b: JsonBody<CredentialValue>,
) -> Result<Response, ApiError> {
    let JsonBody(b) = b;
    change_credential(
        &state,
        &tenant,
        request_id,
        &provider,
        service::credentials::Change::Set,
        Some(&b.value),
    )
    .await
}

pub async fn rotate_credential(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(provider): Path<String>,
    b: JsonBody<CredentialValue>,
) -> Result<Response, ApiError> {
    let JsonBody(b) = b;
    change_credential(
        &state,
        &tenant,
        request_id,
        &provider,
        service::credentials::Change::Rotate,
        Some(&b.value),
    )
    .await
}

pub async fn delete_credential(
    State(state): State<AppState>,
    tenant: Tenant,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Path(provider): Path<String>,
) -> Result<Response, ApiError> {
    change_credential(
        &state,
        &tenant,
        request_id,
        &provider,
        service::credentials::Change::Delete,
        None,
    )
    .await
}
