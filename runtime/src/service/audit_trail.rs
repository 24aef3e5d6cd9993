//! The tenant's own audit chain, as the API reaches it: appending an event in the action's
//! transaction, denied attempts in a transaction of their own, and reading, exporting and
//! verifying the chain. All through the tenant's `TenantTx`, with `audit::tenant_chain`'s SQL.
//!
//! Who acted is always the verified token (`issuer/subject`); the tenant is the token's. Callers
//! pass names, ids and counts as details, never a secret or a prompt (security case 62).

use uuid::Uuid;

use crate::audit::{self, Event, Record, tenant_chain};
use crate::auth::Tenant;
use crate::service::ServiceError;
use crate::tenancy::{DataPlane, TenantTx};

/// Who acted, as events name them: the token's issuer and subject.
pub fn actor(tenant: &Tenant) -> String {
    let p = tenant.principal();
    format!("{}/{}", p.issuer, p.subject)
}

/// What an event says, besides who, which tenant and when.
#[derive(Debug, Clone, Copy)]
pub struct Act<'a> {
    pub action: &'a str,
    pub target: &'a str,
    pub outcome: &'a str,
    pub request_id: Uuid,
    pub detail: &'a str,
}

/// Appends `act` to `tenant`'s chain in `tx`, the action's own transaction: the event commits or
/// rolls back with the action (security case 60).
pub async fn append(tx: &TenantTx, tenant: &Tenant, act: &Act<'_>) -> Result<Record, ServiceError> {
    let actor = actor(tenant);
    let event = Event {
        tenant: tx.tenant().as_str(),
        actor: &actor,
        action: act.action,
        target: act.target,
        outcome: act.outcome,
        request_id: Some(act.request_id),
        detail: act.detail,
    };
    tx.query(tenant_chain::LOCK, &[&event.tenant]).await?;
    let head = tx.query(tenant_chain::HEAD, &[&event.tenant]).await?;
    let head = head
        .first()
        .ok_or_else(|| ServiceError::internal("the audit head query returned no row"))?;
    let record = Record::link(&event, head.get(0), head.get(1), head.get(2));
    tx.execute(tenant_chain::INSERT, &record.insert_params())
        .await?;
    Ok(record)
}

/// Records a refused attempt at a privileged action (`outcome` `denied`) in a transaction of its
/// own: nothing else happened to commit with it.
pub async fn denied(
    data: &DataPlane,
    tenant: &Tenant,
    action: &str,
    target: &str,
    request_id: Uuid,
    reason: &str,
) -> Result<(), ServiceError> {
    let tx = TenantTx::begin(data, tenant).await?;
    append(
        &tx,
        tenant,
        &Act {
            action,
            target,
            outcome: "denied",
            request_id,
            detail: reason,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Which events a listing wants.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Events after this `seq` (the cursor).
    pub after: i64,
    pub limit: i64,
    /// Actions starting with this (`members.` for every member change).
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub actor: Option<String>,
}

/// A page of events, oldest first, and whether more follow.
#[derive(Debug, Clone)]
pub struct Page {
    pub events: Vec<Record>,
    pub has_more: bool,
}

pub async fn list(
    data: &DataPlane,
    tenant: &Tenant,
    filter: &Filter,
) -> Result<Page, ServiceError> {
    let tx = TenantTx::begin(data, tenant).await?;
    let limit = filter.limit.clamp(1, 1000);
    let rows = tx
        .query(
            tenant_chain::PAGE,
            &[
                &tx.tenant().as_str(),
                &filter.after,
                &(limit + 1),
                &filter.action,
                &filter.outcome,
                &filter.actor,
            ],
        )
        .await?;
    tx.commit().await?;
    let mut events: Vec<Record> = rows.iter().map(Record::from_row).collect();
    let has_more = events.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    events.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(Page { events, has_more })
}

pub async fn get(data: &DataPlane, tenant: &Tenant, seq: i64) -> Result<Record, ServiceError> {
    let tx = TenantTx::begin(data, tenant).await?;
    let rows = tx
        .query(tenant_chain::ONE, &[&tx.tenant().as_str(), &seq])
        .await?;
    tx.commit().await?;
    rows.first()
        .map(Record::from_row)
        .ok_or_else(|| ServiceError::NotFound(format!("no audit event {seq} in this tenant")))
}

/// The whole chain, oldest first.
pub async fn chain(data: &DataPlane, tenant: &Tenant) -> Result<Vec<Record>, ServiceError> {
    let tx = TenantTx::begin(data, tenant).await?;
    let rows = tx
        .query(tenant_chain::CHAIN, &[&tx.tenant().as_str()])
        .await?;
    tx.commit().await?;
    Ok(rows.iter().map(Record::from_row).collect())
}

/// What verifying the chain found: how many events, and the head hash or the first broken link.
#[derive(Debug, Clone)]
pub struct Verified {
    pub events: usize,
    pub outcome: Result<Option<String>, audit::Broken>,
}

pub async fn verify(data: &DataPlane, tenant: &Tenant) -> Result<Verified, ServiceError> {
    let records = chain(data, tenant).await?;
    Ok(Verified {
        events: records.len(),
        outcome: audit::verify(tenant.id().as_str(), &records),
    })
}
