//! The tenant's provider credentials, write-only: set, rotate, delete, and a list of names and
//! versions. No route ever returns a value; values pass only as `SecretString` into the secret
//! store (under `tenants/<token's tenant>/providers/<provider>`, the name the model router reads).
//!
//! A secret store has no transaction of ours, so each change is audited the way `tenantctl
//! secret` audits it: the event is written first in an open transaction, committed only once the
//! store made the change; a change the store refuses is recorded as `failed` instead. Events name
//! the secret, never its value (security case 62).

use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::auth::Tenant;
use crate::domain::ProviderId;
pub use crate::secrets::SecretInfo;
use crate::secrets::SecretName;
use crate::secrets::cache::SecretCache;
use crate::service::ServiceError;
use crate::service::audit_trail::{self, Act};
use crate::tenancy::{DataPlane, TenantTx};

/// The longest credential accepted.
pub const MAX_VALUE_BYTES: usize = 8192;

/// What a change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Stores the value, replacing any.
    Set,
    /// Replaces a stored value (404 when there is none).
    Rotate,
    Delete,
}

impl Change {
    fn action(self) -> &'static str {
        match self {
            Change::Set => "credentials.set",
            Change::Rotate => "credentials.rotate",
            Change::Delete => "credentials.delete",
        }
    }
}

/// The provider of a credential: one of the tenant's policy's providers (a key for a provider the
/// tenant cannot call would be a key nobody uses).
fn provider_of(tenant: &Tenant, raw: &str) -> Result<(ProviderId, SecretName), ServiceError> {
    let not_found = || {
        ServiceError::NotFound(format!(
            "no provider `{}` in this tenant's model policy",
            crate::domain::printable(raw)
        ))
    };
    let provider = ProviderId::parse(raw).map_err(|_| not_found())?;
    if !tenant.record().policy.providers.contains_key(&provider) {
        return Err(not_found());
    }
    let name = SecretName::for_tenant(tenant.id(), &format!("providers/{}", provider.as_str()))
        .map_err(ServiceError::internal)?;
    Ok((provider, name))
}

/// Checks a credential's shape without ever printing it.
pub fn check_value(value: &SecretString) -> Result<(), String> {
    let v = value.expose_secret();
    if v.is_empty() || v.len() > MAX_VALUE_BYTES {
        return Err(format!("`value` must be 1 to {MAX_VALUE_BYTES} bytes"));
    }
    if v.chars().any(|c| c.is_control() || c == ' ') {
        return Err("`value` must not contain spaces or control characters".into());
    }
    Ok(())
}

/// Applies `change` to the tenant's credential for `provider`, audited.
///
/// `store_writable` is false where the runtime may only read its secrets (a tenant's Lambda, whose
/// role has `GetSecretValue` on its own secrets and nothing more): the change is refused with the
/// command that makes it instead.
#[expect(
    clippy::too_many_arguments,
    reason = "one business action, each argument a distinct input"
)]
pub async fn change(
    data: &DataPlane,
    keys: &SecretCache,
    store_writable: bool,
    tenant: &Tenant,
    request_id: Uuid,
    provider: &str,
    change: Change,
    value: Option<&SecretString>,
) -> Result<SecretInfo, ServiceError> {
    let (_, name) = provider_of(tenant, provider)?;
    if !store_writable {
        return Err(ServiceError::Conflict(format!(
            "this deployment may only read its secrets; set the key with `tenantctl secret put {} {}`",
            tenant.id(),
            name.as_str()
                .strip_prefix(&format!("tenants/{}/", tenant.id()))
                .unwrap_or("providers/<provider>")
        )));
    }
    let target = format!("secret/{}", name.as_str());
    if let Some(v) = value
        && let Err(e) = check_value(v)
    {
        return Err(ServiceError::BadRequest(e));
    }
    let store = keys.store();
    if matches!(change, Change::Rotate | Change::Delete)
        && !store.exists(&name).await.map_err(ServiceError::internal)?
    {
        return Err(ServiceError::NotFound(format!(
            "no credential is stored for provider `{provider}`; set one with `PUT /v1/credentials/{provider}`"
        )));
    }
    // The event first, in an open transaction: committed only once the store made the change.
    let tx = TenantTx::begin(data, tenant).await?;
    audit_trail::append(
        &tx,
        tenant,
        &Act {
            action: change.action(),
            target: &target,
            outcome: "succeeded",
            request_id,
            detail: "",
        },
    )
    .await?;
    let made = match (change, value) {
        (Change::Delete, _) => store.delete(&name).await,
        (_, Some(v)) => store.put(&name, v).await,
        (_, None) => {
            return Err(ServiceError::BadRequest("`value` is required".into()));
        }
    };
    match made {
        Ok(()) => {
            tx.commit().await?;
            // The router reads keys through this cache: the next call uses the new value.
            keys.clear();
        }
        Err(e) => {
            drop(tx);
            let reason = format!("the secret store refused the change: {e}");
            audit_fail(data, tenant, change, &target, request_id, &reason).await;
            return Err(ServiceError::internal(reason));
        }
    }
    let listed = list(keys, tenant).await?;
    Ok(listed
        .into_iter()
        .find(|i| i.name == name.as_str())
        .unwrap_or(SecretInfo {
            name: name.as_str().to_owned(),
            version: String::new(),
            changed_at: None,
        }))
}

async fn audit_fail(
    data: &DataPlane,
    tenant: &Tenant,
    change: Change,
    target: &str,
    request_id: Uuid,
    reason: &str,
) {
    let result = async {
        let tx = TenantTx::begin(data, tenant).await?;
        audit_trail::append(
            &tx,
            tenant,
            &Act {
                action: change.action(),
                target,
                outcome: "failed",
                request_id,
                detail: reason,
            },
        )
        .await?;
        tx.commit().await?;
        Ok::<(), ServiceError>(())
    }
    .await;
    if let Err(e) = result {
        tracing::error!(request_id = %request_id, error = %e, "a failed credential change could not be audited");
    }
}

/// The tenant's stored provider credentials: names, versions and when they changed; never values.
pub async fn list(keys: &SecretCache, tenant: &Tenant) -> Result<Vec<SecretInfo>, ServiceError> {
    let prefix = format!("tenants/{}/providers/", tenant.id().as_str());
    let mut out = keys
        .store()
        .list(&prefix)
        .await
        .map_err(ServiceError::internal)?;
    out.retain(|i| i.name.starts_with(&prefix));
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
