//! Chat completions as a plain async function: route inside the tenant's policy, call the provider,
//! write the ledger row, and only then hand the result back.
//!
//! **Invariant:** every model call goes through `ModelRouter` and leaves a ledger row committed before
//! the response starts; a refused model leaves none. This module must not see axum types.

use uuid::Uuid;

use crate::auth::Tenant;
use crate::metering::ledger;
use crate::models::providers::Completion;
use crate::models::{ChatRequest, ModelRouter, RouteError};
use crate::service::ServiceError;
use crate::tenancy::{DataPlane, TenantTx};

/// A completed, metered call.
#[derive(Debug)]
pub struct Metered {
    pub completion: Completion,
    pub model: String,
    pub ledger_id: Uuid,
}

pub async fn complete(
    router: &ModelRouter,
    data: &DataPlane,
    tenant: &Tenant,
    request_id: Uuid,
    request: &ChatRequest,
) -> Result<Metered, ServiceError> {
    if tenant.record().read_only {
        // The tenant's data is being moved between tiers: no model call, no ledger row, retry shortly.
        return Err(ServiceError::ReadOnly);
    }
    // Admitted before the model call: a busy tenant is refused (429) before anything is spent, and a
    // call that was made is never refused its ledger row.
    let admission = data.admit(tenant)?;
    let route = router
        .resolve(&tenant.record().policy, &request.model)
        .map_err(|e| match e {
            RouteError::NotPermitted(m) => ServiceError::ModelNotPermitted(m),
            other @ RouteError::Unpriced(..) => ServiceError::internal(other),
        })?;
    let completion = router
        .complete(&route, &request.messages, request.max_tokens)
        .await
        .map_err(ServiceError::internal)?;
    let cost = route
        .price
        .cost(completion.input_tokens, completion.output_tokens);
    let tx = TenantTx::begin_admitted(data, tenant, admission).await?;
    let ledger_id = ledger::record(
        &tx,
        &ledger::NewEntry {
            request_id,
            subject: &tenant.principal().subject,
            provider: route.provider,
            model: &route.model,
            input_tokens: completion.input_tokens,
            output_tokens: completion.output_tokens,
            cost,
            price_book_version: route.price_book_version,
        },
    )
    .await
    .map_err(ServiceError::internal)?;
    tx.commit().await.map_err(ServiceError::internal)?;
    Ok(Metered {
        completion,
        model: route.model.to_string(),
        ledger_id,
    })
}
