//! The tenant's members: the tenant roles its admins grant its subjects, on top of what their
//! tokens carry. Kept in the tenant's own tier; every change is audited in its own transaction.
//!
//! Only tenant roles can be granted (never a platform role, never a bare permission), so no admin
//! can hand out more than the tenant's own roles allow (security case 31); and an admin cannot
//! change its own roles, so nobody raises or drops their own standing by mistake or on purpose.

use serde::Serialize;
use uuid::Uuid;

use crate::auth::Tenant;
use crate::auth::roles::TENANT_ROLES;
use crate::service::ServiceError;
use crate::service::audit_trail::{self, Act};
use crate::tenancy::{DataPlane, TenantTx};

#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub object: &'static str,
    pub subject: String,
    pub roles: Vec<String>,
    pub granted_by: String,
    pub created_at: String,
    pub updated_at: String,
}

fn member(r: &tokio_postgres::Row) -> Member {
    Member {
        object: "member",
        subject: r.get(0),
        roles: r.get(1),
        granted_by: r.get(2),
        created_at: r.get(3),
        updated_at: r.get(4),
    }
}

const GET: &str = "SELECT subject, roles, granted_by, \
     to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
     to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
     FROM members WHERE tenant_id = $1 AND subject = $2";
const LIST: &str = "SELECT subject, roles, granted_by, \
     to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
     to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
     FROM members WHERE tenant_id = $1 AND subject > $2 \
       AND ($4::text IS NULL OR $4 = ANY (roles)) \
     ORDER BY subject LIMIT $3";
const UPSERT: &str = "INSERT INTO members (tenant_id, id, subject, roles, granted_by) \
     VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (tenant_id, subject) DO UPDATE \
        SET roles = EXCLUDED.roles, granted_by = EXCLUDED.granted_by, updated_at = now() \
     RETURNING subject, roles, granted_by, \
     to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
     to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";
const DELETE: &str = "DELETE FROM members WHERE tenant_id = $1 AND subject = $2";
const ROLES_OF: &str = "SELECT roles FROM members WHERE tenant_id = $1 AND subject = $2";

/// A subject as members name it: 1 to 255 bytes, no control characters.
pub fn check_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() || subject.len() > 255 || subject.chars().any(char::is_control) {
        return Err("a member's subject is 1 to 255 bytes with no control characters".into());
    }
    Ok(())
}

/// Roles a member may be granted: tenant roles, named once each.
pub fn check_roles(roles: &[String]) -> Result<Vec<String>, String> {
    let known: Vec<&str> = TENANT_ROLES.iter().map(|(n, _)| *n).collect();
    let mut out: Vec<String> = Vec::new();
    for r in roles {
        if !known.contains(&r.as_str()) {
            return Err(format!(
                "`roles`: `{}` is not a tenant role; grant one of {}",
                crate::domain::printable(r),
                known
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !out.contains(r) {
            out.push(r.clone());
        }
    }
    if out.is_empty() {
        return Err("`roles` must name at least one role; remove the member instead".into());
    }
    out.sort();
    Ok(out)
}

/// The permissions `tenant`'s caller holds as a member (the roles its admins granted it), read in
/// a transaction of its own. Empty for a subject that is no member.
pub async fn granted_permissions(
    data: &DataPlane,
    tenant: &Tenant,
) -> Result<Vec<&'static str>, ServiceError> {
    let tx = TenantTx::begin(data, tenant).await?;
    let rows = tx
        .query(
            ROLES_OF,
            &[&tx.tenant().as_str(), &tenant.principal().subject],
        )
        .await?;
    tx.commit().await?;
    let roles: Vec<String> = rows.first().map(|r| r.get(0)).unwrap_or_default();
    let mut out = Vec::new();
    for role in &roles {
        if let Some((_, perms)) = TENANT_ROLES.iter().find(|(n, _)| n == role) {
            out.extend_from_slice(perms);
        }
    }
    Ok(out)
}

pub async fn list(
    data: &DataPlane,
    tenant: &Tenant,
    limit: i64,
    after: Option<String>,
    role: Option<String>,
) -> Result<(Vec<Member>, bool), ServiceError> {
    let limit = limit.clamp(1, 100);
    let tx = TenantTx::begin(data, tenant).await?;
    let rows = tx
        .query(
            LIST,
            &[
                &tx.tenant().as_str(),
                &after.unwrap_or_default(),
                &(limit + 1),
                &role,
            ],
        )
        .await?;
    tx.commit().await?;
    let mut data: Vec<Member> = rows.iter().map(member).collect();
    let n = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = data.len() > n;
    data.truncate(n);
    Ok((data, more))
}

fn not_found(subject: &str) -> ServiceError {
    ServiceError::NotFound(format!(
        "no member `{}` in this tenant",
        crate::domain::printable(subject)
    ))
}

pub async fn get(data: &DataPlane, tenant: &Tenant, subject: &str) -> Result<Member, ServiceError> {
    let tx = TenantTx::begin(data, tenant).await?;
    let rows = tx.query(GET, &[&tx.tenant().as_str(), &subject]).await?;
    tx.commit().await?;
    rows.first().map(member).ok_or_else(|| not_found(subject))
}

fn target(subject: &str) -> String {
    format!("member/{subject}")
}

/// Refuses (403) and audits an admin's `action` on its own membership; nothing when `subject` is
/// someone else.
async fn refuse_self(
    data: &DataPlane,
    tenant: &Tenant,
    request_id: Uuid,
    subject: &str,
    action: &str,
    reason: &str,
) -> Result<(), ServiceError> {
    if subject != tenant.principal().subject {
        return Ok(());
    }
    audit_trail::denied(data, tenant, action, &target(subject), request_id, reason).await?;
    Err(ServiceError::Forbidden(reason.into()))
}

/// Grants `subject` exactly `roles`, audited in the same transaction.
pub async fn set_roles(
    data: &DataPlane,
    tenant: &Tenant,
    request_id: Uuid,
    subject: &str,
    roles: &[String],
) -> Result<Member, ServiceError> {
    check_subject(subject).map_err(ServiceError::BadRequest)?;
    let roles = match check_roles(roles) {
        Ok(r) => r,
        Err(e) => {
            audit_trail::denied(
                data,
                tenant,
                "members.set_roles",
                &target(subject),
                request_id,
                &e,
            )
            .await?;
            return Err(ServiceError::BadRequest(e));
        }
    };
    refuse_self(
        data,
        tenant,
        request_id,
        subject,
        "members.set_roles",
        "an admin cannot change its own roles; ask another admin",
    )
    .await?;
    let tx = TenantTx::begin(data, tenant).await?;
    let rows = tx
        .query(
            UPSERT,
            &[
                &tx.tenant().as_str(),
                &Uuid::new_v4(),
                &subject,
                &roles,
                &audit_trail::actor(tenant),
            ],
        )
        .await?;
    let m = rows
        .first()
        .map(member)
        .ok_or_else(|| ServiceError::internal("member upsert returned no row"))?;
    audit_trail::append(
        &tx,
        tenant,
        &Act {
            action: "members.set_roles",
            target: &target(subject),
            outcome: "succeeded",
            request_id,
            detail: &format!("roles {}", roles.join(",")),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(m)
}

pub async fn remove(
    data: &DataPlane,
    tenant: &Tenant,
    request_id: Uuid,
    subject: &str,
) -> Result<(), ServiceError> {
    refuse_self(
        data,
        tenant,
        request_id,
        subject,
        "members.remove",
        "an admin cannot remove itself; ask another admin",
    )
    .await?;
    let tx = TenantTx::begin(data, tenant).await?;
    let n = tx
        .execute(DELETE, &[&tx.tenant().as_str(), &subject])
        .await?;
    if n == 0 {
        return Err(not_found(subject));
    }
    audit_trail::append(
        &tx,
        tenant,
        &Act {
            action: "members.remove",
            target: &target(subject),
            outcome: "succeeded",
            request_id,
            detail: "",
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_tenant_roles_can_be_granted() {
        let ok = super::check_roles(&[
            "tenant_member".into(),
            "tenant_finance".into(),
            "tenant_member".into(),
        ]);
        assert_eq!(ok.unwrap(), vec!["tenant_finance", "tenant_member"]);
        for bad in ["platform_operator", "usage:read", "role:tenant_admin", ""] {
            assert!(super::check_roles(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(super::check_roles(&[]).is_err());
    }
}
