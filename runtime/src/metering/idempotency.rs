//! Idempotency keys: a client's retry of a model call (same `Idempotency-Key`) is refused instead of
//! served and charged a second time.
//!
//! A keyed call claims its key before its admission and upstream call, in one statement as the
//! tenant's own role (`tenant_claim_key`, tenant migrations 0006 and 0012); a key another call claimed in the
//! last 24 hours is refused with that call's request id. A call that failed before anything was
//! produced or recorded gives its key back, so the retry is served. Keys are the tenant's: the same
//! key from two tenants is two keys.

use uuid::Uuid;

use crate::auth::Tenant;
use crate::db::DataError;
use crate::tenancy::{Admission, DataPlane, Lane, TenantTx};

const CLAIM: &str = "SELECT holder, claimed FROM tenant_claim_key($1, $2, $3, $4)";
const RELEASE: &str = "SELECT tenant_release_key($1, $2, $3, $4)";

/// A client's idempotency key: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.len() > 255 || !text.bytes().all(|b| (0x21..=0x7e).contains(&b))
        {
            return Err(
                "`Idempotency-Key` must be 1 to 255 visible ASCII characters (a UUID is a good key)"
                    .into(),
            );
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Claims `key` for `request`; `Ok(None)` when claimed now, `Ok(Some(holder))` when the call
/// `holder` holds it.
pub async fn claim(
    data: &DataPlane,
    tenant: &Tenant,
    admission: &Admission,
    key: &IdempotencyKey,
    request: Uuid,
) -> Result<Option<Uuid>, DataError> {
    let rows = TenantTx::call_once(
        data,
        tenant,
        admission,
        Lane::Calls,
        CLAIM,
        &[&key.as_str(), &request],
    )
    .await?;
    let (holder, claimed): (Uuid, bool) = rows
        .first()
        .map(|r| (r.get(0), r.get(1)))
        .ok_or_else(|| DataError::Pool("tenant_claim_key returned no row".into()))?;
    // Whether this statement claimed it, not whether the holder's id is this call's: a client may
    // send the same request id twice (tenant migration 0012).
    Ok((!claimed).then_some(holder))
}

/// Gives `key` back (the call failed before anything was produced or recorded). Best effort: a key
/// not given back only refuses a retry for 24 hours, with the request id that holds it.
pub async fn release(data: &DataPlane, tenant: &Tenant, key: &IdempotencyKey, request: Uuid) {
    let released = match data.admit(tenant) {
        Ok(admission) => TenantTx::call_once(
            data,
            tenant,
            &admission,
            Lane::Calls,
            RELEASE,
            &[&key.as_str(), &request],
        )
        .await
        .map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = released {
        tracing::warn!(error = %e, "an idempotency key could not be given back; it expires in 24 hours");
    }
}

#[cfg(test)]
mod tests {
    use super::IdempotencyKey;

    #[test]
    fn keys_are_visible_ascii_up_to_255() {
        assert!(IdempotencyKey::parse("8e7c1f5a-retry-1").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        for bad in ["", " key", "k\u{e9}", &"k".repeat(256), "a\nb"] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
    }
}
