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
use uuid::Uuid;

use crate::auth::Tenant;
use crate::metering::idempotency::{self, IdempotencyKey};
use crate::metering::ledger::{self, Outcome};
use crate::metering::limits;
use crate::metering::writer::LedgerWriter;
use crate::models::chat::{
    ChatMessage, Completion, EmbeddingRequest, Embeddings, Reported, StreamEvent, Tool, Usage,
    estimate_input, estimate_tokens, input_tokens_at_most,
};
use crate::models::providers::ProviderError;
use crate::models::{ChatRequest, ModelRouter, Route, RouteError};
use crate::service::Budgets;
use crate::service::ServiceError;
use crate::tenancy::{Admission, DataPlane};

/// Who a model call is: its request id (the ledger row's `request_id`) and the client's idempotency
/// key, if it sent one.
#[derive(Debug, Clone)]
pub struct Call {
    pub request_id: Uuid,
    pub key: Option<IdempotencyKey>,
}

/// A completed, metered call.
#[derive(Debug)]
pub struct Metered {
    pub completion: Completion,
    pub model: String,
    pub ledger_id: Uuid,
    /// The tenant's budget (and the subject's) as the call's admission found it (its own hold
    /// included).
    pub budget: Budgets,
}

/// Output tokens a call may produce when neither the request nor the tenant's policy caps them: the
/// call is capped here, so the worst case held against the budget is a true worst case.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u32 = 4096;

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
pub struct MeteredStream {
    pub model: String,
    pub budget: Budgets,
    /// The id the stream's ledger row will have (responses are named after it).
    pub ledger_id: Uuid,
    pub items: std::pin::Pin<Box<dyn futures_util::Stream<Item = StreamItem> + Send>>,
}

fn route_error(e: RouteError) -> ServiceError {
    match e {
        RouteError::NotPermitted(m) => ServiceError::ModelNotPermitted(m),
        e @ RouteError::TooManyTokens { .. } => ServiceError::BadRequest(e.to_string()),
        e @ RouteError::Unpriced(..) => ServiceError::ModelUnpriced(format!(
            "{e} for this tenant: calls to it are refused until the platform operator prices it \
             (`tenantctl prices import`)"
        )),
    }
}

/// A call past its checks: admitted (fair share, rate limits, budget hold), routed, capped.
struct Prepared {
    admission: Admission,
    routes: Vec<Route>,
    max_tokens: Option<u32>,
    /// The id the call's ledger row will have.
    ledger_id: Uuid,
    /// The call's claim on the budget, settled by its ledger row or released if it failed.
    hold: limits::Hold,
    budget: Budgets,
    /// The call, with the idempotency key it claimed (given back if it fails).
    call: Call,
}

/// What a call sends and may produce, for its admission.
struct Ask<'a> {
    model: &'a str,
    /// The request's own cap (`None` for embeddings, which produce no tokens).
    max_tokens: Option<Option<u32>>,
    messages: &'a [ChatMessage],
    tools: &'a [Tool],
    /// Embedding inputs.
    inputs: &'a [String],
}

/// The checks every model call passes first: the tenant is writable, admitted (fair share), the
/// model is inside its policy and the token cap holds; then the tenant's rate limits and budget
/// admit the call's worst case (held until its ledger row settles it). Nothing upstream has happened
/// yet.
async fn prepare(
    data: &DataPlane,
    ledger: &LedgerWriter,
    tenant: &Tenant,
    call: &Call,
    ask: Ask<'_>,
) -> Result<Prepared, ServiceError> {
    if tenant.record().read_only {
        // The tenant's data is being moved between tiers: no model call, no ledger row, retry shortly.
        return Err(ServiceError::ReadOnly);
    }
    // Admitted before the model call: a busy tenant is refused (429) before anything is spent, and a
    // call that was made is never refused its ledger row.
    let admission = data.admit(tenant)?;
    // A client's retry (same key) is refused before it can be served and charged twice.
    if let Some(key) = &call.key
        && let Some(holder) =
            idempotency::claim(data, tenant, &admission, key, call.request_id).await?
    {
        return Err(ServiceError::IdempotencyConflict(holder));
    }
    let checked = admit(ledger, tenant, &admission, ask).await;
    let (routes, max_tokens, ledger_id, admitted) = match checked {
        Ok(checked) => checked,
        Err(e) => {
            if let Some(key) = &call.key {
                idempotency::release(data, tenant, key, call.request_id).await;
            }
            return Err(e);
        }
    };
    Ok(Prepared {
        admission,
        routes,
        max_tokens,
        ledger_id,
        hold: admitted.hold,
        budget: admitted.budgets,
        call: call.clone(),
    })
}

/// The policy's routes and token cap for `ask`, then the tenant's limits and budget.
async fn admit(
    ledger: &LedgerWriter,
    tenant: &Tenant,
    admission: &Admission,
    ask: Ask<'_>,
) -> Result<(Vec<Route>, Option<u32>, Uuid, limits::Admitted), ServiceError> {
    let policy = &tenant.record().policy;
    let routes =
        ModelRouter::plan(policy, &tenant.record().prices, ask.model).map_err(route_error)?;
    let (max_tokens, output) = match ask.max_tokens {
        Some(requested) => {
            let capped = ModelRouter::max_tokens(policy, requested)
                .map_err(route_error)?
                .unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS);
            (Some(capped), u64::from(capped))
        }
        None => (None, 0),
    };
    let input = input_tokens_at_most(ask.messages, ask.tools)
        + ask.inputs.iter().map(|i| 16 + i.len() as u64).sum::<u64>();
    let worst_case = routes
        .iter()
        .map(|r| r.price.worst_case(input, output))
        .max()
        .unwrap_or_default();
    let ledger_id = Uuid::new_v4();
    let tokens =
        estimate_input(ask.messages) + ask.inputs.iter().map(|i| estimate_tokens(i)).sum::<u64>();
    let admitted = ledger
        .gate()
        .admit(tenant, admission, ledger_id, worst_case, tokens)
        .await?
        .map_err(|refused| {
            crate::telemetry::METRICS.hold(refused.reason());
            ServiceError::Refused(refused)
        })?;
    crate::telemetry::METRICS.hold("admitted");
    Ok((routes, max_tokens, ledger_id, admitted))
}

/// A chat call's checks; the request as it goes upstream (its output capped).
async fn prepare_chat(
    data: &DataPlane,
    ledger: &LedgerWriter,
    tenant: &Tenant,
    call: &Call,
    request: &ChatRequest,
) -> Result<(Prepared, ChatRequest), ServiceError> {
    let ask = Ask {
        model: &request.model,
        max_tokens: Some(request.max_tokens),
        messages: &request.messages,
        tools: &request.tools,
        inputs: &[],
    };
    let p = prepare(data, ledger, tenant, call, ask).await?;
    let mut request = request.clone();
    request.max_tokens = p.max_tokens;
    Ok((p, request))
}

/// The provider's answer and the call, still admitted; if the provider failed, the call's hold is
/// given back first.
async fn or_release<T>(
    data: &DataPlane,
    tenant: &Tenant,
    p: Prepared,
    called: Result<T, ProviderError>,
) -> Result<(T, Prepared), ServiceError> {
    match called {
        Ok(answer) => Ok((answer, p)),
        Err(e) => {
            p.hold.release(data, tenant).await;
            if let Some(key) = &p.call.key {
                idempotency::release(data, tenant, key, p.call.request_id).await;
            }
            Err(ServiceError::Provider(e))
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn record(
    ledger: &Arc<LedgerWriter>,
    tenant: &Tenant,
    admission: Admission,
    hold: limits::Hold,
    ledger_id: Uuid,
    call: &Call,
    route: &Route,
    (usage, reported): (Usage, Reported),
    outcome: Outcome,
) -> Result<Uuid, ServiceError> {
    let request_id = call.request_id;
    let cost = route.price.cost_of(&usage.units());
    let id = ledger
        .record(
            tenant,
            admission,
            ledger::NewEntry {
                id: ledger_id,
                request_id,
                subject: tenant.principal().subject.clone(),
                provider: route.provider,
                model: route.model.clone(),
                input_tokens: usage.input_tokens,
                output_tokens: usage.output_tokens,
                cost,
                price_book_version: route.price_book_version.clone(),
                outcome,
                usage_estimated: usage.estimated,
                cached_input_tokens: usage.cached_input_tokens,
                cache_write_tokens: usage.cache_write_tokens,
                reasoning_tokens: usage.reasoning_tokens,
                provider_request_id: reported.request_id,
                provider_usage: reported.usage,
                provider_cost: reported.cost,
                cost_tags: tenant.record().cost_tags(),
                created_at: std::time::SystemTime::now(),
            },
        )
        .await;
    match id {
        Ok(id) => {
            hold.settled(cost);
            Ok(id)
        }
        Err(e) => {
            // No row settles the hold: give it back (under a fresh admission; if the row did
            // commit after all, its trigger already removed an own hold and this removes nothing),
            // and the key, so the client's retry is served.
            hold.release(ledger.data_plane(), tenant).await;
            if let Some(key) = &call.key {
                idempotency::release(ledger.data_plane(), tenant, key, request_id).await;
            }
            Err(e.into())
        }
    }
}

/// A plain (non-streamed) chat completion.
pub async fn complete(
    router: &ModelRouter,
    data: &DataPlane,
    ledger: &Arc<LedgerWriter>,
    tenant: &Tenant,
    call: &Call,
    request: &ChatRequest,
) -> Result<Metered, ServiceError> {
    let (p, request) = prepare_chat(data, ledger, tenant, call, request).await?;
    let called = router.complete(tenant.id(), &p.routes, &request).await;
    let ((route, completion), p) = or_release(data, tenant, p, called).await?;
    let budget = p.budget;
    let ledger_id = record(
        ledger,
        tenant,
        p.admission,
        p.hold,
        p.ledger_id,
        &p.call,
        &route,
        (completion.usage, completion.reported.clone()),
        Outcome::Complete,
    )
    .await?;
    Ok(Metered {
        completion,
        model: route.model.to_string(),
        ledger_id,
        budget,
    })
}

/// Embeddings, metered like a chat call (input tokens only).
pub async fn embed(
    router: &ModelRouter,
    data: &DataPlane,
    ledger: &Arc<LedgerWriter>,
    tenant: &Tenant,
    call: &Call,
    request: &EmbeddingRequest,
) -> Result<(Embeddings, String), ServiceError> {
    let p = prepare(
        data,
        ledger,
        tenant,
        call,
        Ask {
            model: &request.model,
            max_tokens: None,
            messages: &[],
            tools: &[],
            inputs: &request.input,
        },
    )
    .await?;
    let called = router.embed(tenant.id(), &p.routes, request).await;
    let ((route, embeddings), p) = or_release(data, tenant, p, called).await?;
    record(
        ledger,
        tenant,
        p.admission,
        p.hold,
        p.ledger_id,
        &p.call,
        &route,
        (embeddings.usage, Reported::default()),
        Outcome::Complete,
    )
    .await?;
    Ok((embeddings, route.model.to_string()))
}

impl std::fmt::Debug for MeteredStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredStream")
            .field("model", &self.model)
            .field("ledger_id", &self.ledger_id)
            .finish_non_exhaustive()
    }
}

/// A streamed chat completion. Returns once a provider accepted the request; the items then arrive
/// as the provider sends them (never buffered), read by whoever polls the stream (no task or channel
/// in between). Dropping the stream cancels the upstream call and records what was produced.
pub async fn stream(
    router: &ModelRouter,
    data: &DataPlane,
    ledger: Arc<LedgerWriter>,
    tenant: &Tenant,
    call: &Call,
    request: &ChatRequest,
) -> Result<MeteredStream, ServiceError> {
    let (p, request) = prepare_chat(data, &ledger, tenant, call, request).await?;
    let asked = std::time::Instant::now();
    let called = router.stream(tenant.id(), &p.routes, &request).await;
    let ((route, upstream), p) = or_release(data, tenant, p, called).await?;
    let ledger_id = p.ledger_id;
    let budget = p.budget;
    let admission = p.admission;
    let hold = p.hold;
    let call = p.call;
    let model = route.model.to_string();
    let meter = Meter {
        ledger,
        tenant: tenant.clone(),
        route,
        call,
        ledger_id,
        input_estimate: estimate_input(&request.messages),
        produced: String::new(),
        usage: None,
        reported: Reported::default(),
        admission: Some((admission, hold)),
        asked: Some(asked),
    };
    let state = StreamState {
        upstream: Some(upstream),
        meter,
        held: Vec::new(),
        queue: std::collections::VecDeque::new(),
        done: false,
    };
    let items = futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(item) = s.queue.pop_front() {
                return Some((item, s));
            }
            if s.done {
                return None;
            }
            let next = match s.upstream.as_mut() {
                Some(upstream) => upstream.next().await,
                None => None,
            };
            match next {
                Some(Ok(StreamEvent::Usage(u))) => s.meter.usage = Some(u),
                Some(Ok(StreamEvent::Reported(r))) => s.meter.reported.merge(r),
                Some(Ok(event @ StreamEvent::Finish(_))) => s.held.push(event),
                Some(Ok(event)) => {
                    s.meter.note(&event);
                    return Some((StreamItem::Event(event), s));
                }
                Some(Err(e)) => {
                    // Close the upstream connection before the (slow) ledger write.
                    s.upstream = None;
                    s.done = true;
                    let message = match e {
                        ProviderError::Cut(_) => "the provider ended the stream early".to_owned(),
                        other => format!("the provider failed mid-stream: {other}"),
                    };
                    let settled = s.meter.settle(Outcome::UpstreamCut).await;
                    s.queue.push_back(StreamItem::Failed(match settled {
                        Ok(_) => message,
                        Err(failed) => failed,
                    }));
                }
                None => {
                    s.upstream = None;
                    s.done = true;
                    match s.meter.settle(Outcome::Complete).await {
                        Ok(usage) => {
                            s.queue.extend(s.held.drain(..).map(StreamItem::Event));
                            s.queue.push_back(StreamItem::Settled {
                                ledger_id: s.meter.ledger_id,
                                usage,
                            });
                        }
                        Err(failed) => s.queue.push_back(StreamItem::Failed(failed)),
                    }
                }
            }
        }
    });
    Ok(MeteredStream {
        model,
        budget,
        ledger_id,
        items: Box::pin(items),
    })
}

/// A stream being read: the upstream events, the meter, the final events held until the row is
/// committed, and the items ready to hand out.
struct StreamState {
    upstream: Option<crate::models::providers::EventStream>,
    meter: Meter,
    held: Vec<StreamEvent>,
    queue: std::collections::VecDeque<StreamItem>,
    done: bool,
}

/// What a stream has produced and the admission its row is written under. Settled once; if the
/// stream is dropped unsettled (the client went away), the row is written from a task with outcome
/// `cancelled`.
struct Meter {
    ledger: Arc<LedgerWriter>,
    tenant: Tenant,
    route: Route,
    call: Call,
    ledger_id: Uuid,
    input_estimate: u64,
    produced: String,
    usage: Option<Usage>,
    /// What the provider said of the call so far.
    reported: Reported,
    /// The call's admission and hold, present until the row is written.
    admission: Option<(Admission, limits::Hold)>,
    /// When the call was made, until its first token arrived (time to first token).
    asked: Option<std::time::Instant>,
}

impl Meter {
    fn note(&mut self, event: &StreamEvent) {
        match event {
            StreamEvent::Text(t) => self.produced.push_str(t),
            StreamEvent::ToolCall { arguments, .. } => self.produced.push_str(arguments),
            _ => return,
        }
        if let Some(asked) = self.asked.take() {
            crate::telemetry::METRICS.first_token(self.route.provider.as_str(), asked.elapsed());
        }
    }

    /// The provider's own figures when it sent them (even on a partial stream), else counted here.
    fn usage(&self) -> Usage {
        self.usage.unwrap_or(Usage::plain(
            self.input_estimate,
            estimate_tokens(&self.produced),
            true,
        ))
    }

    /// Writes the row; on failure the text is safe for the client (the cause is logged).
    async fn settle(&mut self, outcome: Outcome) -> Result<Usage, String> {
        let usage = self.usage();
        let Some((admission, hold)) = self.admission.take() else {
            return Ok(usage);
        };
        let written = record(
            &self.ledger,
            &self.tenant,
            admission,
            hold,
            self.ledger_id,
            &self.call,
            &self.route,
            (usage, self.reported.clone()),
            outcome,
        )
        .await;
        let request_id = self.call.request_id;
        written.map(|_| usage).map_err(|e| {
            tracing::error!(request_id = %request_id, error = %e, "a streamed call could not be recorded in the ledger");
            format!("internal error (request id {request_id})")
        })
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        let Some((admission, hold)) = self.admission.take() else {
            return;
        };
        // The client went away mid-stream: charge what was produced. The upstream stream is
        // dropped with the state (its connection closes), and the row is written off the request.
        let (ledger, tenant, route) =
            (self.ledger.clone(), self.tenant.clone(), self.route.clone());
        let (ledger_id, call, usage) = (self.ledger_id, self.call.clone(), self.usage());
        let reported = std::mem::take(&mut self.reported);
        tokio::spawn(async move {
            let request_id = call.request_id;
            let written = record(
                &ledger,
                &tenant,
                admission,
                hold,
                ledger_id,
                &call,
                &route,
                (usage, reported),
                Outcome::Cancelled,
            )
            .await;
            if let Err(e) = written {
                tracing::error!(request_id = %request_id, error = %e, "a cancelled stream could not be recorded in the ledger");
            }
        });
    }
}
