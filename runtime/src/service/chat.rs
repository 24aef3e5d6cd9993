//! Chat completions as plain async functions: admit the request, route it inside the tenant's
//! policy, call the provider with the tenant's own key, write the ledger row, and only then hand the
//! result (or a stream's final frames) back.
//!
//! **Invariant:** every model call goes through `ModelRouter` and leaves a ledger row; a refused
//! request leaves none and makes no upstream call. A plain call's row is committed before the response
//! starts. A stream's row is committed before its final frames (finish reason, usage) are sent; a
//! stream the client cancels or the provider cuts is recorded with the tokens produced until then
//! (counted here, and marked estimated, when the provider gave no usage). This module must not see
//! axum types.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::auth::Tenant;
use crate::metering::ledger::{self, Outcome};
use crate::models::chat::{
    Completion, EmbeddingRequest, Embeddings, StreamEvent, Usage, estimate_input, estimate_tokens,
};
use crate::models::providers::ProviderError;
use crate::models::{ChatRequest, ModelRouter, Route, RouteError};
use crate::service::ServiceError;
use crate::tenancy::{Admission, DataPlane};

/// A completed, metered call.
#[derive(Debug)]
pub struct Metered {
    pub completion: Completion,
    pub model: String,
    pub ledger_id: Uuid,
}

/// One item of a metered stream, in order: events as the provider sends them, then (after the ledger
/// row is committed) the held-back final events and `Settled`; or `Failed` if the provider broke off.
#[derive(Debug)]
pub enum StreamItem {
    Event(StreamEvent),
    /// The ledger row is committed; no more items follow.
    Settled {
        ledger_id: Uuid,
        usage: Usage,
    },
    /// The stream ended early (the provider cut it, or the ledger write failed); the text is safe to
    /// show the client.
    Failed(String),
}

/// A stream accepted by a provider: the model serving it and its items.
#[derive(Debug)]
pub struct MeteredStream {
    pub model: String,
    /// The id the stream's ledger row will have (responses are named after it).
    pub ledger_id: Uuid,
    pub items: mpsc::Receiver<StreamItem>,
}

fn route_error(e: RouteError) -> ServiceError {
    match e {
        RouteError::NotPermitted(m) => ServiceError::ModelNotPermitted(m),
        e @ RouteError::TooManyTokens { .. } => ServiceError::BadRequest(e.to_string()),
        other @ RouteError::Unpriced(..) => ServiceError::internal(other),
    }
}

/// The checks every model call passes first: the tenant is writable, admitted (fair share), the
/// model is inside its policy and the token cap holds. Nothing upstream has happened yet.
fn prepare(
    data: &DataPlane,
    tenant: &Tenant,
    requested: &str,
    max_tokens: Option<u32>,
) -> Result<(Admission, Vec<Route>, Option<u32>), ServiceError> {
    if tenant.record().read_only {
        // The tenant's data is being moved between tiers: no model call, no ledger row, retry shortly.
        return Err(ServiceError::ReadOnly);
    }
    // Admitted before the model call: a busy tenant is refused (429) before anything is spent, and a
    // call that was made is never refused its ledger row.
    let admission = data.admit(tenant)?;
    let policy = &tenant.record().policy;
    let routes = ModelRouter::plan(policy, requested).map_err(route_error)?;
    let max_tokens = ModelRouter::max_tokens(policy, max_tokens).map_err(route_error)?;
    Ok((admission, routes, max_tokens))
}

#[allow(clippy::too_many_arguments)]
async fn record(
    data: &DataPlane,
    tenant: &Tenant,
    admission: Admission,
    ledger_id: Uuid,
    request_id: Uuid,
    route: &Route,
    usage: Usage,
    outcome: Outcome,
) -> Result<Uuid, ServiceError> {
    let cost = route.price.cost(usage.input_tokens, usage.output_tokens);
    let id = ledger::record_once(
        data,
        tenant,
        admission,
        &ledger::NewEntry {
            id: ledger_id,
            request_id,
            subject: &tenant.principal().subject,
            provider: route.provider,
            model: &route.model,
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cost,
            price_book_version: route.price_book_version,
            outcome,
            usage_estimated: usage.estimated,
        },
    )
    .await?;
    Ok(id)
}

/// A plain (non-streamed) chat completion.
pub async fn complete(
    router: &ModelRouter,
    data: &DataPlane,
    tenant: &Tenant,
    request_id: Uuid,
    request: &ChatRequest,
) -> Result<Metered, ServiceError> {
    let (admission, routes, max_tokens) =
        prepare(data, tenant, &request.model, request.max_tokens)?;
    let mut request = request.clone();
    request.max_tokens = max_tokens;
    let (route, completion) = router
        .complete(tenant.id(), &routes, &request)
        .await
        .map_err(ServiceError::Provider)?;
    let ledger_id = record(
        data,
        tenant,
        admission,
        Uuid::new_v4(),
        request_id,
        &route,
        completion.usage,
        Outcome::Complete,
    )
    .await?;
    Ok(Metered {
        completion,
        model: route.model.to_string(),
        ledger_id,
    })
}

/// Embeddings, metered like a chat call (input tokens only).
pub async fn embed(
    router: &ModelRouter,
    data: &DataPlane,
    tenant: &Tenant,
    request_id: Uuid,
    request: &EmbeddingRequest,
) -> Result<(Embeddings, String), ServiceError> {
    let (admission, routes, _) = prepare(data, tenant, &request.model, None)?;
    let (route, embeddings) = router
        .embed(tenant.id(), &routes, request)
        .await
        .map_err(ServiceError::Provider)?;
    record(
        data,
        tenant,
        admission,
        Uuid::new_v4(),
        request_id,
        &route,
        embeddings.usage,
        Outcome::Complete,
    )
    .await?;
    Ok((embeddings, route.model.to_string()))
}

/// A streamed chat completion. Returns once a provider accepted the request; the items then arrive
/// as the provider sends them (never buffered). Dropping the receiver cancels the upstream call and
/// records what was produced.
pub async fn stream(
    router: &ModelRouter,
    data: Arc<DataPlane>,
    tenant: &Tenant,
    request_id: Uuid,
    request: &ChatRequest,
) -> Result<MeteredStream, ServiceError> {
    let (admission, routes, max_tokens) =
        prepare(&data, tenant, &request.model, request.max_tokens)?;
    let mut request = request.clone();
    request.max_tokens = max_tokens;
    let (route, upstream) = router
        .stream(tenant.id(), &routes, &request)
        .await
        .map_err(ServiceError::Provider)?;
    let (tx, rx) = mpsc::channel(32);
    let ledger_id = Uuid::new_v4();
    let model = route.model.to_string();
    let input_estimate = estimate_input(&request.messages);
    let tenant = tenant.clone();
    tokio::spawn(async move {
        let mut upstream = upstream;
        let mut produced = String::new();
        let mut held: Vec<StreamEvent> = Vec::new();
        let mut usage: Option<Usage> = None;
        let mut outcome = Outcome::Complete;
        let mut failure: Option<String> = None;
        while let Some(item) = upstream.next().await {
            match item {
                Ok(StreamEvent::Usage(u)) => usage = Some(u),
                Ok(event @ StreamEvent::Finish(_)) => held.push(event),
                Ok(event) => {
                    match &event {
                        StreamEvent::Text(t) => produced.push_str(t),
                        StreamEvent::ToolCall { arguments, .. } => produced.push_str(arguments),
                        _ => {}
                    }
                    if tx.send(StreamItem::Event(event)).await.is_err() {
                        // The client went away: stop the provider (dropping the stream closes the
                        // upstream connection) and charge what was produced.
                        outcome = Outcome::Cancelled;
                        break;
                    }
                }
                Err(e) => {
                    outcome = Outcome::UpstreamCut;
                    failure = Some(match e {
                        ProviderError::Cut(_) => "the provider ended the stream early".to_owned(),
                        other => format!("the provider failed mid-stream: {other}"),
                    });
                    break;
                }
            }
        }
        drop(upstream);
        // The provider's own figures when it sent them (even on a partial stream), else counted here.
        let usage = match usage {
            Some(u) => u,
            None => Usage {
                input_tokens: input_estimate,
                output_tokens: estimate_tokens(&produced),
                estimated: true,
            },
        };
        let settled = record(
            &data, &tenant, admission, ledger_id, request_id, &route, usage, outcome,
        )
        .await;
        match settled {
            Ok(ledger_id) if failure.is_none() => {
                for event in held {
                    if tx.send(StreamItem::Event(event)).await.is_err() {
                        return;
                    }
                }
                let _ = tx.send(StreamItem::Settled { ledger_id, usage }).await;
            }
            Ok(_) => {
                let _ = tx
                    .send(StreamItem::Failed(failure.unwrap_or_default()))
                    .await;
            }
            Err(e) => {
                tracing::error!(request_id = %request_id, error = %e, "a streamed call could not be recorded in the ledger");
                let _ = tx
                    .send(StreamItem::Failed(format!(
                        "internal error (request id {request_id})"
                    )))
                    .await;
            }
        }
    });
    Ok(MeteredStream {
        model,
        ledger_id,
        items: rx,
    })
}
