//! Conversations and their messages, in the tenant's own tier: create, list (cursor pagination),
//! get, rename, delete; posting a message calls the model through the router, metered like any
//! chat call, and stores the question and the answer.
//!
//! A conversation belongs to the subject that created it: every statement filters by the token's
//! tenant *and* subject, so another subject's conversation, like another tenant's, is not found
//! (404, never 403). The database fences tenants whatever the filter says.

use std::sync::Arc;

use serde::Serialize;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::auth::Tenant;
use crate::metering::writer::LedgerWriter;
use crate::models::ModelRouter;
use crate::models::chat::{ChatMessage, ChatRequest, Role};
use crate::service::ServiceError;
use crate::service::chat::{Call, Metered};
use crate::tenancy::{DataPlane, TenantTx};

/// The most messages of a conversation's history sent with a new one (the oldest are left out).
pub const HISTORY_SENT: i64 = 100;
/// The longest message a caller may post.
pub const MAX_MESSAGE_CHARS: usize = 32_768;

#[derive(Debug, Clone, Serialize)]
pub struct Conversation {
    pub id: Uuid,
    pub object: &'static str,
    pub title: String,
    pub model: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    pub messages: i32,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub id: Uuid,
    pub object: &'static str,
    pub conversation_id: Uuid,
    pub seq: i32,
    pub role: String,
    pub content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger_id: Option<Uuid>,
    pub created_at: String,
}

/// A new conversation's fields, checked by `check`.
#[derive(Debug, Clone)]
pub struct NewConversation {
    pub title: String,
    pub model: String,
    pub system_prompt: Option<String>,
}

/// A title: 1 to 200 characters, no control characters.
pub fn check_title(title: &str) -> Result<(), String> {
    let n = title.chars().count();
    if n == 0 || n > 200 {
        return Err(format!("`title` must be 1 to 200 characters (it is {n})"));
    }
    if title.chars().any(char::is_control) {
        return Err("`title` must not contain control characters".into());
    }
    Ok(())
}

impl NewConversation {
    pub fn check(&self) -> Result<(), String> {
        check_title(&self.title)?;
        if self.model.is_empty() || self.model.len() > 200 {
            return Err("`model` must be a model name or alias of 1 to 200 bytes".into());
        }
        crate::models::chat::check_model_field(&self.model)?;
        if let Some(p) = &self.system_prompt
            && p.chars().count() > MAX_MESSAGE_CHARS
        {
            return Err(format!(
                "`system_prompt` is longer than {MAX_MESSAGE_CHARS} characters"
            ));
        }
        Ok(())
    }
}

fn conversation(r: &tokio_postgres::Row) -> Conversation {
    Conversation {
        id: r.get(0),
        object: "conversation",
        title: r.get(1),
        model: r.get(2),
        system_prompt: r.get(3),
        messages: r.get(4),
        created_at: r.get(5),
        updated_at: r.get(6),
    }
}

fn message(r: &tokio_postgres::Row) -> Message {
    Message {
        id: r.get(0),
        object: "conversation.message",
        conversation_id: r.get(1),
        seq: r.get(2),
        role: r.get(3),
        content: r.get(4),
        model: r.get(5),
        ledger_id: r.get(6),
        created_at: r.get(7),
    }
}

const INSERT: &str = "INSERT INTO conversations (tenant_id, id, subject, title, model, system_prompt) \
     VALUES ($1, $2, $3, $4, $5, $6) \
     RETURNING id, title, model, system_prompt, messages, \
     to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
     to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";
const GET: &str = "SELECT id, title, model, system_prompt, messages, \
     to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
     to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
     FROM conversations WHERE tenant_id = $1 AND subject = $2 AND id = $3";
/// Newest first; after the cursor `$3` (a conversation of this subject) when given; titles
/// containing `$5` (case-insensitive) when given.
const LIST: &str = "SELECT id, title, model, system_prompt, messages, \
     to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
     to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
     FROM conversations c WHERE tenant_id = $1 AND subject = $2 \
       AND ($3::uuid IS NULL OR (created_at, id) < \
            (SELECT created_at, id FROM conversations \
              WHERE tenant_id = $1 AND subject = $2 AND id = $3)) \
       AND ($5::text IS NULL OR strpos(lower(title), lower($5)) > 0) \
     ORDER BY created_at DESC, id DESC LIMIT $4";
const EXISTS: &str =
    "SELECT 1 FROM conversations WHERE tenant_id = $1 AND subject = $2 AND id = $3";
const RENAME: &str = "UPDATE conversations SET title = $4, updated_at = now() \
     WHERE tenant_id = $1 AND subject = $2 AND id = $3 \
     RETURNING id, title, model, system_prompt, messages, \
     to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
     to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";
const DELETE: &str = "DELETE FROM conversations WHERE tenant_id = $1 AND subject = $2 AND id = $3";
/// The last `$4` messages, oldest first.
const HISTORY: &str = "SELECT role, content FROM (\
     SELECT m.seq, m.role, m.content FROM conversation_messages m \
       JOIN conversations c ON c.tenant_id = m.tenant_id AND c.id = m.conversation_id \
      WHERE m.tenant_id = $1 AND c.subject = $2 AND m.conversation_id = $3 \
      ORDER BY m.seq DESC LIMIT $4) h ORDER BY seq";
/// Takes the next two sequence numbers (the row lock orders concurrent posts).
const BUMP: &str = "UPDATE conversations SET messages = messages + 2, updated_at = now() \
     WHERE tenant_id = $1 AND subject = $2 AND id = $3 RETURNING messages";
const INSERT_MESSAGE: &str = "INSERT INTO conversation_messages \
     (tenant_id, id, conversation_id, seq, role, content, model, ledger_id) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     RETURNING id, conversation_id, seq, role, content, model, ledger_id, \
     to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";
const MESSAGES: &str = "SELECT m.id, m.conversation_id, m.seq, m.role, m.content, m.model, m.ledger_id, \
     to_char(m.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
     FROM conversation_messages m \
     JOIN conversations c ON c.tenant_id = m.tenant_id AND c.id = m.conversation_id \
     WHERE m.tenant_id = $1 AND c.subject = $2 AND m.conversation_id = $3 AND m.seq > $4 \
     ORDER BY m.seq LIMIT $5";
const MESSAGE: &str = "SELECT m.id, m.conversation_id, m.seq, m.role, m.content, m.model, m.ledger_id, \
     to_char(m.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
     FROM conversation_messages m \
     JOIN conversations c ON c.tenant_id = m.tenant_id AND c.id = m.conversation_id \
     WHERE m.tenant_id = $1 AND c.subject = $2 AND m.conversation_id = $3 AND m.id = $4";

fn not_found(id: Uuid) -> ServiceError {
    ServiceError::NotFound(format!("no conversation `{id}` in this tenant"))
}

fn subject(tenant: &Tenant) -> &str {
    &tenant.principal().subject
}

pub async fn create(
    data: &DataPlane,
    tenant: &Tenant,
    new: &NewConversation,
) -> Result<Conversation, ServiceError> {
    new.check().map_err(ServiceError::BadRequest)?;
    // Refused now, not at its first message, when the tenant's policy does not reach the model.
    let record = tenant.record();
    ModelRouter::resolve(
        &record.policy,
        &record.prices,
        &crate::domain::utc_today(),
        &new.model,
    )
    .map_err(|_| ServiceError::ModelNotPermitted(new.model.clone()))?;
    let tx = TenantTx::begin(data, tenant).await?;
    let rows = tx
        .query(
            INSERT,
            &[
                &tx.tenant().as_str(),
                &Uuid::new_v4(),
                &subject(tenant),
                &new.title,
                &new.model,
                &new.system_prompt,
            ],
        )
        .await?;
    tx.commit().await?;
    rows.first()
        .map(conversation)
        .ok_or_else(|| ServiceError::internal("insert returned no row"))
}

/// A page of conversations, newest first, and whether more follow.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub has_more: bool,
}

fn page<T>(mut data: Vec<T>, limit: i64) -> Page<T> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let has_more = data.len() > limit;
    data.truncate(limit);
    Page { data, has_more }
}

pub async fn list(
    data: &DataPlane,
    tenant: &Tenant,
    limit: i64,
    after: Option<Uuid>,
    title_contains: Option<String>,
) -> Result<Page<Conversation>, ServiceError> {
    let limit = limit.clamp(1, 100);
    let tx = TenantTx::begin(data, tenant).await?;
    let tenant_id = tx.tenant().as_str();
    if let Some(after) = after
        && tx
            .query(EXISTS, &[&tenant_id, &subject(tenant), &after])
            .await?
            .is_empty()
    {
        return Err(ServiceError::NotFound(format!(
            "`after`: no conversation `{after}` in this tenant"
        )));
    }
    let rows = tx
        .query(
            LIST,
            &[
                &tenant_id,
                &subject(tenant),
                &after,
                &(limit + 1),
                &title_contains,
            ],
        )
        .await?;
    tx.commit().await?;
    Ok(page(rows.iter().map(conversation).collect(), limit))
}

pub async fn get(
    data: &DataPlane,
    tenant: &Tenant,
    id: Uuid,
) -> Result<Conversation, ServiceError> {
    let tx = TenantTx::begin(data, tenant).await?;
    let rows = tx
        .query(GET, &[&tx.tenant().as_str(), &subject(tenant), &id])
        .await?;
    tx.commit().await?;
    rows.first().map(conversation).ok_or_else(|| not_found(id))
}

pub async fn rename(
    data: &DataPlane,
    tenant: &Tenant,
    id: Uuid,
    title: &str,
) -> Result<Conversation, ServiceError> {
    check_title(title).map_err(ServiceError::BadRequest)?;
    let tx = TenantTx::begin(data, tenant).await?;
    let rows = tx
        .query(
            RENAME,
            &[&tx.tenant().as_str(), &subject(tenant), &id, &title],
        )
        .await?;
    tx.commit().await?;
    rows.first().map(conversation).ok_or_else(|| not_found(id))
}

/// Deletes the conversation and its messages (their ledger rows stay: usage is data of record).
pub async fn delete(data: &DataPlane, tenant: &Tenant, id: Uuid) -> Result<(), ServiceError> {
    let tx = TenantTx::begin(data, tenant).await?;
    let n = tx
        .execute(DELETE, &[&tx.tenant().as_str(), &subject(tenant), &id])
        .await?;
    tx.commit().await?;
    if n == 0 {
        return Err(not_found(id));
    }
    Ok(())
}

/// What posting a message gave: the stored question and answer, and the metered call.
#[derive(Debug)]
pub struct Posted {
    pub user: Message,
    pub assistant: Message,
    pub metered: Metered,
}

/// Posts `content` to conversation `id`: its system prompt, its last `HISTORY_SENT` messages and
/// `content` go to its model through the router (policy, budget, limits, ledger: the chat
/// service's whole rule), then the question and the answer are stored. The model call holds no
/// connection: the conversation is read before it and written after it.
pub async fn post_message(
    router: &ModelRouter,
    data: &DataPlane,
    ledger: &Arc<LedgerWriter>,
    tenant: &Tenant,
    call: &Call,
    id: Uuid,
    content: &str,
) -> Result<Posted, ServiceError> {
    if content.trim().is_empty() {
        return Err(ServiceError::BadRequest(
            "`content` must not be empty".into(),
        ));
    }
    if content.chars().count() > MAX_MESSAGE_CHARS {
        return Err(ServiceError::BadRequest(format!(
            "`content` is longer than {MAX_MESSAGE_CHARS} characters"
        )));
    }
    let (found, history) = {
        let tx = TenantTx::begin(data, tenant).await?;
        let tenant_id = tx.tenant().as_str();
        let who = subject(tenant);
        let get: [&(dyn ToSql + Sync); 3] = [&tenant_id, &who, &id];
        let history: [&(dyn ToSql + Sync); 4] = [&tenant_id, &who, &id, &HISTORY_SENT];
        let (found, history) = tokio::try_join!(tx.query(GET, &get), tx.query(HISTORY, &history))?;
        tx.commit().await?;
        (found, history)
    };
    let found = found
        .first()
        .map(conversation)
        .ok_or_else(|| not_found(id))?;
    let mut messages = Vec::with_capacity(history.len() + 2);
    if let Some(system) = &found.system_prompt {
        messages.push(ChatMessage::text(Role::System, system.clone()));
    }
    for r in &history {
        let role = match r.get::<_, &str>(0) {
            "assistant" => Role::Assistant,
            _ => Role::User,
        };
        messages.push(ChatMessage::text(role, r.get::<_, String>(1)));
    }
    messages.push(ChatMessage::text(Role::User, content));
    let request = ChatRequest {
        model: found.model.clone(),
        messages,
        ..ChatRequest::default()
    };
    let metered =
        crate::service::chat::complete(router, data, ledger, tenant, call, &request).await?;
    let tx = TenantTx::begin(data, tenant).await?;
    let tenant_id = tx.tenant().as_str();
    let bumped = tx.query(BUMP, &[&tenant_id, &subject(tenant), &id]).await?;
    let Some(last) = bumped.first().map(|r| r.get::<_, i32>(0)) else {
        // Deleted while its model answered: the call is metered (its ledger row stays), and
        // there is nowhere to keep the messages.
        return Err(ServiceError::NotFound(format!(
            "conversation `{id}` was deleted while its message was answered; the call was metered as ledger row `{}`",
            metered.ledger_id
        )));
    };
    let no_model: Option<String> = None;
    let no_ledger: Option<Uuid> = None;
    let user = tx
        .query(
            INSERT_MESSAGE,
            &[
                &tenant_id,
                &Uuid::new_v4(),
                &id,
                &(last - 1),
                &"user",
                &content,
                &no_model,
                &no_ledger,
            ],
        )
        .await?;
    let assistant = tx
        .query(
            INSERT_MESSAGE,
            &[
                &tenant_id,
                &Uuid::new_v4(),
                &id,
                &last,
                &"assistant",
                &metered.completion.content,
                &Some(metered.model.clone()),
                &Some(metered.ledger_id),
            ],
        )
        .await?;
    tx.commit().await?;
    let (Some(user), Some(assistant)) = (user.first().map(message), assistant.first().map(message))
    else {
        return Err(ServiceError::internal("message insert returned no row"));
    };
    Ok(Posted {
        user,
        assistant,
        metered,
    })
}

/// Messages of conversation `id` after `after_seq`, oldest first.
pub async fn messages(
    data: &DataPlane,
    tenant: &Tenant,
    id: Uuid,
    limit: i64,
    after_seq: i32,
) -> Result<Page<Message>, ServiceError> {
    let limit = limit.clamp(1, 100);
    let tx = TenantTx::begin(data, tenant).await?;
    let tenant_id = tx.tenant().as_str();
    let who = subject(tenant);
    let fetch = limit + 1;
    let exists: [&(dyn ToSql + Sync); 3] = [&tenant_id, &who, &id];
    let page_of: [&(dyn ToSql + Sync); 5] = [&tenant_id, &who, &id, &after_seq, &fetch];
    let (found, rows) = tokio::try_join!(tx.query(EXISTS, &exists), tx.query(MESSAGES, &page_of))?;
    tx.commit().await?;
    if found.is_empty() {
        return Err(not_found(id));
    }
    Ok(page(rows.iter().map(message).collect(), limit))
}

pub async fn message_of(
    data: &DataPlane,
    tenant: &Tenant,
    id: Uuid,
    message_id: Uuid,
) -> Result<Message, ServiceError> {
    let tx = TenantTx::begin(data, tenant).await?;
    let rows = tx
        .query(
            MESSAGE,
            &[&tx.tenant().as_str(), &subject(tenant), &id, &message_id],
        )
        .await?;
    tx.commit().await?;
    rows.first().map(message).ok_or_else(|| {
        ServiceError::NotFound(format!(
            "no message `{message_id}` in conversation `{id}` of this tenant"
        ))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn titles_are_checked() {
        assert!(super::check_title("Discharge notes").is_ok());
        assert!(super::check_title("").is_err());
        assert!(super::check_title(&"x".repeat(201)).is_err());
        assert!(super::check_title("a\nb").is_err());
    }
}
