//! A tenant's own admins narrowing what the platform registered: models of its policy it does not
//! use, and lower limits (budget, requests and tokens a minute). Never wider: a model outside the
//! registered policy, the default model, or a limit above the registered one is refused by name.
//! The narrowing is kept in the registry (`ControlPlane::narrow`, audited in the platform's chain)
//! and applied where the record is loaded, so every path that enforces the policy and the limits
//! enforces the narrowing too; this process serves it at once, others at their next refresh.

use uuid::Uuid;

use crate::auth::Tenant;
use crate::domain::ModelId;
use crate::registry::policy::Narrowing;
use crate::registry::{ControlPlane, ModelPolicy, TenantDirectory, TenantLimits};
use crate::service::ServiceError;
use crate::service::audit_trail;

/// What the platform registered for `tenant` (before its own narrowing), and its narrowing.
pub fn registered(tenant: &Tenant) -> (ModelPolicy, TenantLimits, Narrowing) {
    let r = tenant.record();
    match &r.registered {
        Some(reg) => (reg.policy.clone(), reg.limits, reg.narrowing.clone()),
        None => (r.policy.clone(), r.limits, Narrowing::default()),
    }
}

/// A new limit: above zero and at most the registered one.
fn check_limit(field: &str, value: Option<u64>, registered: u64) -> Result<(), String> {
    match value {
        Some(0) => Err(format!("`{field}` must be above zero")),
        Some(v) if v > registered => Err(format!(
            "`{field}` is {v}, above the {registered} the platform registered; a tenant can only lower its limits"
        )),
        _ => Ok(()),
    }
}

/// Which models the tenant turns off, checked against the registered policy.
pub fn check_models(policy: &ModelPolicy, disabled: &[String]) -> Result<Vec<ModelId>, String> {
    let mut out: Vec<ModelId> = Vec::new();
    for raw in disabled {
        let known = policy
            .models()
            .into_iter()
            .find(|m| m.as_str() == raw.as_str());
        let Some(model) = known else {
            return Err(format!(
                "`disabled_models`: `{}` is not a model of the registered policy",
                crate::domain::printable(raw)
            ));
        };
        if *model == policy.default {
            return Err(format!(
                "`disabled_models`: `{model}` is the policy's default model and stays enabled"
            ));
        }
        if !out.contains(model) {
            out.push(model.clone());
        }
    }
    out.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Ok(out)
}

/// What a narrowing change asks for.
#[derive(Debug, Clone)]
pub enum Change {
    Models(Vec<String>),
    Limits {
        monthly_budget_micro_usd: Option<i64>,
        requests_per_minute: Option<u32>,
        tokens_per_minute: Option<u64>,
    },
}

/// Applies `change` to the tenant's narrowing; refusals are audited in the tenant's chain.
pub async fn apply(
    control: Option<&ControlPlane>,
    directory: &TenantDirectory,
    data: &crate::tenancy::DataPlane,
    tenant: &Tenant,
    request_id: Uuid,
    change: Change,
) -> Result<Narrowing, ServiceError> {
    let Some(control) = control else {
        return Err(ServiceError::Conflict(
            "this deployment reads its tenant from configuration; narrow the policy and limits in the manifest and `tenantctl apply`".into(),
        ));
    };
    let (policy, limits, mut narrowing) = registered(tenant);
    let action = match &change {
        Change::Models(_) => "policy.narrow",
        Change::Limits { .. } => "limits.narrow",
    };
    let checked = match change {
        Change::Models(models) => {
            check_models(&policy, &models).map(|m| narrowing.disabled_models = m)
        }
        Change::Limits {
            monthly_budget_micro_usd,
            requests_per_minute,
            tokens_per_minute,
        } => check_limit(
            "monthly_budget_micro_usd",
            monthly_budget_micro_usd.map(|b| u64::try_from(b).unwrap_or(0)),
            u64::try_from(limits.monthly_budget.0).unwrap_or(0),
        )
        .and_then(|()| {
            check_limit(
                "requests_per_minute",
                requests_per_minute.map(u64::from),
                u64::from(limits.requests_per_minute),
            )
        })
        .and_then(|()| {
            check_limit(
                "tokens_per_minute",
                tokens_per_minute,
                limits.tokens_per_minute,
            )
        })
        .map(|()| {
            narrowing.monthly_budget_micro_usd = monthly_budget_micro_usd;
            narrowing.requests_per_minute = requests_per_minute;
            narrowing.tokens_per_minute = tokens_per_minute;
        }),
    };
    if let Err(reason) = checked {
        audit_trail::denied(
            data,
            tenant,
            action,
            &format!("tenant/{}", tenant.id()),
            request_id,
            &reason,
        )
        .await?;
        return Err(ServiceError::BadRequest(reason));
    }
    let stored = control
        .narrow(
            tenant.id(),
            &narrowing,
            &audit_trail::actor(tenant),
            action,
            request_id,
        )
        .await
        .map_err(ServiceError::internal)?;
    if !stored {
        return Err(ServiceError::Conflict(format!(
            "tenant `{}` is not active in the registry (a tier move in progress?); retry once it is",
            tenant.id()
        )));
    }
    directory.replace(
        control
            .load_tenants()
            .await
            .map_err(ServiceError::internal)?,
    );
    Ok(narrowing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ModelPolicy {
        let mut p = ModelPolicy::only(
            crate::domain::ProviderId::Mock,
            vec![
                ModelId::parse("mock-small").unwrap(),
                ModelId::parse("mock-large").unwrap(),
            ],
        )
        .unwrap();
        p.aliases.insert(
            ModelId::parse("smart").unwrap(),
            ModelId::parse("mock-large").unwrap(),
        );
        p
    }

    #[test]
    fn only_registered_models_but_the_default_can_be_disabled_and_the_policy_loses_them_whole() {
        let p = policy();
        assert_eq!(check_models(&p, &["mock-large".into()]).unwrap().len(), 1);
        assert!(
            check_models(&p, &["mock-small".into()])
                .unwrap_err()
                .contains("default")
        );
        assert!(
            check_models(&p, &["gpt-4o".into()])
                .unwrap_err()
                .contains("not a model")
        );
        let narrowed = p.without(&[ModelId::parse("mock-large").unwrap()]);
        assert_eq!(narrowed.models().len(), 1);
        assert!(
            narrowed.aliases.is_empty(),
            "an alias of a disabled model goes with it"
        );
        assert_eq!(
            p.without(std::slice::from_ref(&p.default)).models().len(),
            2,
            "never the default"
        );
    }

    #[test]
    fn limits_can_only_go_down() {
        assert!(check_limit("x", Some(5), 10).is_ok());
        assert!(check_limit("x", None, 10).is_ok());
        assert!(
            check_limit("x", Some(11), 10)
                .unwrap_err()
                .contains("only lower")
        );
        assert!(check_limit("x", Some(0), 10).is_err());
    }
}
