//! The planner: a pure function from manifests and observed state to a `Plan`. No IO here, so it is
//! tested with tables of (specs, observed) -> plan.

use std::fmt::Write as _;

use runtime::domain::{Namespace, TenantId, Tier};
use runtime::schema::{TENANT_MIGRATIONS, latest_version};
use serde::Serialize;

use super::observe::Observed;
use crate::manifest::TenantSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Create,
    Update,
}

/// One resource change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub op: Op,
    pub resource: &'static str,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "reason")]
pub enum Action {
    Create,
    Update,
    NoOp,
    /// Cannot be applied; the reason says why and what to do.
    Blocked(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantPlan {
    pub tenant: TenantId,
    pub tier: Tier,
    pub action: Action,
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub control_plane: Vec<Change>,
    pub tenants: Vec<TenantPlan>,
    /// Tenants in the registry that no manifest declares (left alone; offboarding is explicit).
    pub unmanaged: Vec<TenantId>,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        !self.control_plane.is_empty()
            || self
                .tenants
                .iter()
                .any(|t| matches!(t.action, Action::Create | Action::Update))
    }

    pub fn has_blocked(&self) -> bool {
        self.tenants
            .iter()
            .any(|t| matches!(t.action, Action::Blocked(_)))
    }

    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let count = |f: fn(&Action) -> bool| self.tenants.iter().filter(|t| f(&t.action)).count();
        (
            count(|a| matches!(a, Action::Create)),
            count(|a| matches!(a, Action::Update)),
            count(|a| matches!(a, Action::NoOp)),
            count(|a| matches!(a, Action::Blocked(_))),
        )
    }

    /// The plan as text, one line per change (`+` create, `~` update).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let sign = |op: Op| if op == Op::Create { '+' } else { '~' };
        if !self.control_plane.is_empty() {
            let _ = writeln!(out, "control plane");
            for c in &self.control_plane {
                let _ = writeln!(out, "  {} {:<10} {}", sign(c.op), c.resource, c.name);
            }
        }
        for t in &self.tenants {
            let what = match &t.action {
                Action::Create => "create".to_owned(),
                Action::Update => "update".to_owned(),
                Action::NoOp => "no changes".to_owned(),
                Action::Blocked(why) => format!("blocked: {why}"),
            };
            let _ = writeln!(out, "tenant `{}` ({} tier): {what}", t.tenant, t.tier);
            for c in &t.changes {
                let detail = c
                    .detail
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  {} {:<10} {}{detail}",
                    sign(c.op),
                    c.resource,
                    c.name
                );
            }
        }
        for id in &self.unmanaged {
            let _ = writeln!(
                out,
                "tenant `{id}`: in the registry but in no manifest; left alone (offboard it explicitly)"
            );
        }
        let (create, update, noop, blocked) = self.counts();
        let _ = write!(
            out,
            "Plan: {create} to create, {update} to update, {noop} unchanged"
        );
        if blocked > 0 {
            let _ = write!(out, ", {blocked} blocked");
        }
        out.push('\n');
        out
    }
}

fn change(
    op: Op,
    resource: &'static str,
    name: impl Into<String>,
    detail: Option<String>,
) -> Change {
    Change {
        op,
        resource,
        name: name.into(),
        detail,
    }
}

/// The top-level fields of two spec documents that differ, in order.
fn changed_fields(old: &serde_json::Value, new: &serde_json::Value) -> Vec<String> {
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else {
        return vec!["spec".into()];
    };
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect()
}

/// Observes what exists for `specs`' tenants on `target` (creating its database if missing) and plans
/// them. An offboarded tenant's manifest is blocked unless `reactivate`.
pub async fn plan_for(
    target: &super::Target,
    specs: &[TenantSpec],
    reactivate: bool,
) -> anyhow::Result<Plan> {
    Ok(observe_and_plan(target, specs, reactivate).await?.1)
}

/// `plan_for`, with what was observed (a saved plan records its digest).
pub async fn observe_and_plan(
    target: &super::Target,
    specs: &[TenantSpec],
    reactivate: bool,
) -> anyhow::Result<(Observed, Plan)> {
    target.ensure_database().await?;
    let ids: Vec<TenantId> = specs.iter().map(|s| s.id.clone()).collect();
    let observed = super::observe::observe(target, super::observe::Scope::Only(&ids)).await?;
    let mut p = plan(specs, &observed, &target.namespace, &target.endpoint.dbname);
    if !reactivate {
        refuse_offboarded(&mut p, &observed);
    }
    Ok((observed, p))
}

/// Blocks the plan of every offboarded tenant: its manifest would onboard a new, empty tenant under
/// the id of one whose data was exported and deleted, which is asked for explicitly
/// (`--reactivate`), never by a manifest left behind.
pub fn refuse_offboarded(plan: &mut Plan, observed: &Observed) {
    for t in &mut plan.tenants {
        let Some(o) = observed
            .tenants
            .get(&t.tenant)
            .filter(|o| o.status == "offboarded")
        else {
            continue;
        };
        t.action = Action::Blocked(format!(
            "`{}` was offboarded on {}; its manifest would onboard a new, empty tenant under that id. \
             Remove the manifest, or pass `--reactivate` to onboard it again",
            t.tenant,
            o.offboarded_on.as_deref().unwrap_or("an unknown day")
        ));
        t.changes.clear();
    }
}

pub fn plan(specs: &[TenantSpec], observed: &Observed, ns: &Namespace, database: &str) -> Plan {
    let mut control_plane = Vec::new();
    if !observed.control_plane {
        control_plane.push(change(Op::Create, "database", database, None));
        for role in [ns.migrator_role(), ns.runtime_role()] {
            if !observed.roles.contains(&role) {
                control_plane.push(change(Op::Create, "role", role, None));
            }
        }
        control_plane.push(change(Op::Create, "schema", "control", None));
    }
    let latest = latest_version();
    let mut tenants = Vec::new();
    for spec in specs {
        let role = ns.tenant_role(&spec.id);
        let schema = Namespace::tenant_schema(&spec.id);
        let existing = observed.tenants.get(&spec.id);
        if let Some(existing) = existing.filter(|e| e.tier != spec.tier) {
            tenants.push(TenantPlan {
                tenant: spec.id.clone(),
                tier: spec.tier,
                action: Action::Blocked(format!(
                    "the manifest says tier `{}` but the tenant lives in tier `{}`; moving tiers is a separate \
                     command: `tenantctl move {} --to {}`",
                    spec.tier, existing.tier, spec.id, spec.tier
                )),
                changes: Vec::new(),
            });
            continue;
        }
        let mut changes = Vec::new();
        let applied = existing.map_or(0, |e| e.migration_version);
        let pending = |from: i32| TENANT_MIGRATIONS.iter().filter(move |m| m.version > from);
        // Every tier: the tenant's own password and login role.
        if !observed.secrets.contains(&spec.id) {
            let op = if existing.is_some() {
                Op::Update
            } else {
                Op::Create
            };
            let detail =
                existing.map(|_| "missing from the secret store; a new password is set".to_owned());
            changes.push(change(
                op,
                "secret",
                format!("tenants/{}/db-password", spec.id),
                detail,
            ));
        }
        // A tenant on a server of its own has its role and database there (checked by `status`).
        let own_server = existing.is_some_and(|e| e.own_server);
        if !observed.roles.contains(&role) && !own_server {
            let detail =
                (spec.tier == Tier::Pool).then(|| format!("member of `{}`", ns.pool_role()));
            changes.push(change(Op::Create, "role", role, detail));
        }
        match spec.tier {
            Tier::Schema | Tier::Dedicated => {
                if spec.tier == Tier::Dedicated {
                    let database = ns.tenant_database(&spec.id);
                    if !observed.databases.contains(&database) && !own_server {
                        changes.push(change(Op::Create, "database", database, None));
                    }
                } else if !observed.schemas.contains(&schema) {
                    changes.push(change(Op::Create, "schema", schema, None));
                }
                for m in pending(applied) {
                    changes.push(change(
                        Op::Create,
                        "migration",
                        format!("{:04}_{}", m.version, m.name),
                        None,
                    ));
                }
            }
            Tier::Pool => {
                if !observed.roles.contains(&ns.pool_role()) {
                    changes.push(change(
                        Op::Create,
                        "role",
                        ns.pool_role(),
                        Some("group holding the pool grants (NOLOGIN)".into()),
                    ));
                }
                if !observed.schemas.contains("pool") {
                    changes.push(change(
                        Op::Create,
                        "schema",
                        "pool",
                        Some("row-level security".into()),
                    ));
                }
                for m in pending(observed.pool_migration_version.max(applied)) {
                    changes.push(change(
                        Op::Create,
                        "migration",
                        format!("pool {:04}_{}", m.version, m.name),
                        None,
                    ));
                }
            }
        }
        let new_spec = spec.canonical_json();
        match existing {
            None => changes.push(change(
                Op::Create,
                "registry",
                spec.id.as_str(),
                Some("active".into()),
            )),
            // A suspended tenant stays suspended through an apply (`tenantctl resume` ends it).
            Some(e)
                if e.spec_hash != spec.hash()
                    || !matches!(e.status.as_str(), "active" | "suspended") =>
            {
                let mut fields = changed_fields(&e.spec, &new_spec);
                if !matches!(e.status.as_str(), "active" | "suspended") {
                    fields.push(format!("status {} -> active", e.status));
                }
                changes.push(change(
                    Op::Update,
                    "registry",
                    spec.id.as_str(),
                    Some(fields.join(", ")),
                ));
            }
            Some(_) => {}
        }
        let action = match (existing, changes.is_empty()) {
            (_, true) if applied >= latest => Action::NoOp,
            (None, _) => Action::Create,
            (Some(_), _) => Action::Update,
        };
        tenants.push(TenantPlan {
            tenant: spec.id.clone(),
            tier: spec.tier,
            action,
            changes,
        });
    }
    let unmanaged = observed
        .tenants
        .iter()
        .filter(|(id, t)| t.status != "offboarded" && !specs.iter().any(|s| &s.id == *id))
        .map(|(id, _)| id.clone())
        .collect();
    Plan {
        control_plane,
        tenants,
        unmanaged,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::provision::observe::ObservedTenant;

    fn spec(id: &str, tier: &str, budget: &str) -> TenantSpec {
        let src = format!(
            "version: 1\nid: {id}\ndisplay_name: X\ntier: {tier}\nmodels:\n  providers:\n    mock: [mock-small]\n  default: mock-small\nbudget:\n  monthly_usd: \"{budget}\"\ntags:\n  cost-center: cc-1\nretention:\n  usage_days: 30\n"
        );
        TenantSpec::from_source(
            Path::new("t.yaml"),
            &src,
            &crate::platform::Platform::builtin(),
        )
        .unwrap()
    }

    fn converged(specs: &[TenantSpec], ns: &Namespace) -> Observed {
        let mut o = Observed {
            control_plane: true,
            ..Observed::default()
        };
        o.roles.insert(ns.migrator_role());
        o.roles.insert(ns.runtime_role());
        for s in specs {
            o.roles.insert(ns.tenant_role(&s.id));
            o.schemas.insert(Namespace::tenant_schema(&s.id));
            o.secrets.insert(s.id.clone());
            o.tenants.insert(
                s.id.clone(),
                ObservedTenant {
                    tier: s.tier,
                    status: "active".into(),
                    spec: s.canonical_json(),
                    spec_hash: s.hash(),
                    migration_version: latest_version(),
                    own_server: false,
                    offboarded_on: None,
                },
            );
        }
        o
    }

    fn actions(p: &Plan) -> Vec<(String, Action)> {
        p.tenants
            .iter()
            .map(|t| (t.tenant.to_string(), t.action.clone()))
            .collect()
    }

    #[test]
    fn fresh_target_plans_everything_and_converged_target_plans_nothing() {
        let ns = Namespace::parse("ns").unwrap();
        let specs = vec![spec("acme", "schema", "10"), spec("globex", "schema", "20")];
        let fresh = plan(&specs, &Observed::default(), &ns, "ns");
        assert!(fresh.has_changes());
        assert_eq!(fresh.control_plane.len(), 4);
        assert_eq!(
            actions(&fresh),
            vec![
                ("acme".into(), Action::Create),
                ("globex".into(), Action::Create)
            ]
        );
        // secret, role, schema, one per migration, registry.
        assert_eq!(
            fresh.tenants[0].changes.len(),
            4 + TENANT_MIGRATIONS.len(),
            "{}",
            fresh.render()
        );

        let same = plan(&specs, &converged(&specs, &ns), &ns, "ns");
        assert!(!same.has_changes(), "{}", same.render());
        assert!(
            same.render()
                .ends_with("Plan: 0 to create, 0 to update, 2 unchanged\n")
        );
    }

    #[test]
    fn changed_budget_is_an_update_naming_the_field() {
        let ns = Namespace::parse("ns").unwrap();
        let old = vec![spec("acme", "schema", "10")];
        let new = vec![spec("acme", "schema", "11")];
        let p = plan(&new, &converged(&old, &ns), &ns, "ns");
        assert_eq!(actions(&p), vec![("acme".into(), Action::Update)]);
        assert_eq!(
            p.tenants[0].changes[0].detail.as_deref(),
            Some("monthly_budget")
        );
    }

    #[test]
    fn drift_tier_changes_and_every_tier_are_planned() {
        let ns = Namespace::parse("ns").unwrap();
        let specs = vec![spec("acme", "schema", "10")];
        let mut observed = converged(&specs, &ns);
        observed.roles.remove(&ns.tenant_role(&specs[0].id));
        observed.secrets.clear();
        let p = plan(&specs, &observed, &ns, "ns");
        assert_eq!(actions(&p), vec![("acme".into(), Action::Update)]);
        let resources: Vec<_> = p.tenants[0].changes.iter().map(|c| c.resource).collect();
        assert_eq!(resources, vec!["secret", "role"]);

        let moved = vec![spec("acme", "pool", "10")];
        let p = plan(&moved, &converged(&specs, &ns), &ns, "ns");
        assert!(matches!(&p.tenants[0].action, Action::Blocked(r) if r.contains("tenantctl move")));
        let p = plan(
            &[spec("newco", "dedicated", "1")],
            &Observed::default(),
            &ns,
            "ns",
        );
        let resources: Vec<_> = p.tenants[0]
            .changes
            .iter()
            .map(|c| (c.resource, c.name.as_str()))
            .collect();
        assert!(
            resources.contains(&("database", "ns_t_newco")),
            "{}",
            p.render()
        );
        let p = plan(
            &[spec("newco", "pool", "1"), spec("oldco", "pool", "1")],
            &Observed::default(),
            &ns,
            "ns",
        );
        let resources: Vec<_> = p.tenants[0].changes.iter().map(|c| c.resource).collect();
        assert_eq!(
            resources,
            [
                // the tenant's own role, then the pool group
                &["secret", "role", "role", "schema"][..],
                &vec!["migration"; TENANT_MIGRATIONS.len()],
                &["registry"]
            ]
            .concat(),
            "{}",
            p.render()
        );

        let p = plan(&[], &converged(&specs, &ns), &ns, "ns");
        assert_eq!(p.unmanaged, vec![specs[0].id.clone()]);
    }

    #[test]
    fn an_offboarded_tenants_manifest_is_blocked_and_names_the_day_and_the_flag() {
        let ns = Namespace::parse("ns").unwrap();
        let specs = vec![spec("acme", "schema", "10")];
        let mut observed = converged(&specs, &ns);
        let t = observed.tenants.get_mut(&specs[0].id).unwrap();
        t.status = "offboarded".into();
        t.offboarded_on = Some("2026-11-30".into());
        let mut p = plan(&specs, &observed, &ns, "ns");
        assert!(p.has_changes(), "re-onboarding is planned when asked for");
        refuse_offboarded(&mut p, &observed);
        assert!(!p.has_changes() && p.has_blocked(), "{}", p.render());
        let Action::Blocked(why) = &p.tenants[0].action else {
            unreachable!()
        };
        assert!(
            why.contains("offboarded on 2026-11-30") && why.contains("--reactivate"),
            "{why}"
        );
    }
}
