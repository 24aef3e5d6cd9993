//! The platform's built-in roles: named bundles of route permissions. An issuer's roles claim maps
//! the identity provider's role (or group) names to permissions, and an entry `role:<name>` there
//! stands for a whole bundle, so an operator grants "tenant finance" without listing its scopes.
//!
//! The roles of a tenant's users are tenant roles: whatever a token's role, it acts for the token's
//! tenant only. The platform roles (operator, finance) grant `platform:` permissions, which only a
//! staff token (the platform audience) ever holds.

/// Each built-in tenant role and the permissions it grants.
pub const TENANT_ROLES: &[(&str, &[&str])] = &[
    (
        "tenant_member",
        &[
            "me:read",
            "models:read",
            "chat:write",
            "embeddings:write",
            "conversations:read",
            "conversations:write",
            "templates:read",
        ],
    ),
    (
        "tenant_finance",
        &["me:read", "usage:read", "audit:read", "policy:read"],
    ),
    (
        "tenant_admin",
        &[
            "me:read",
            "models:read",
            "chat:write",
            "embeddings:write",
            "usage:read",
            "conversations:read",
            "conversations:write",
            "templates:read",
            "templates:write",
            "members:read",
            "members:write",
            "audit:read",
            "credentials:read",
            "credentials:write",
            "policy:read",
            "policy:write",
        ],
    ),
];

/// Roles of the platform's own staff and what they grant. They count only in a staff token (one
/// for the platform audience, `auth::PlatformAccess`): a tenant's caller never holds a
/// `platform:` permission, whatever its roles map to.
pub const PLATFORM_ROLES: &[(&str, &[&str])] = &[
    (
        "platform_operator",
        &[
            "platform:tenants:read",
            "platform:tenants:write",
            "platform:usage:read",
            "platform:prices:read",
            "platform:audit:read",
            "platform:reconciliations:run",
        ],
    ),
    (
        "platform_finance",
        &[
            "platform:tenants:read",
            "platform:usage:read",
            "platform:prices:read",
            "platform:reconciliations:run",
        ],
    ),
];

/// The prefix that makes a permission entry a role.
pub const ROLE_PREFIX: &str = "role:";

/// The permissions an entry of a roles mapping grants: the bundle for `role:<name>`, else the entry
/// itself (a permission). `None` for a `role:` entry naming no tenant role.
pub fn expand(entry: &str) -> Option<Vec<&str>> {
    match entry.strip_prefix(ROLE_PREFIX) {
        None => Some(vec![entry]),
        Some(name) => TENANT_ROLES
            .iter()
            .chain(PLATFORM_ROLES)
            .find(|(n, _)| *n == name)
            .map(|(_, perms)| perms.to_vec()),
    }
}

/// Why a mapping entry cannot be used, if it cannot.
pub fn check_entry(entry: &str) -> Result<(), String> {
    if !entry.starts_with(ROLE_PREFIX) {
        return Ok(());
    }
    if expand(entry).is_none() {
        let known: Vec<String> = TENANT_ROLES
            .iter()
            .chain(PLATFORM_ROLES)
            .map(|(n, _)| format!("{ROLE_PREFIX}{n}"))
            .collect();
        return Err(format!(
            "`{entry}` names no built-in role; the roles are {}",
            known.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_holds_what_members_and_finance_hold_and_entries_are_checked() {
        let perms = |r: &str| -> Vec<String> {
            expand(&format!("role:{r}"))
                .unwrap()
                .into_iter()
                .map(str::to_owned)
                .collect()
        };
        for p in perms("tenant_member")
            .into_iter()
            .chain(perms("tenant_finance"))
        {
            assert!(perms("tenant_admin").contains(&p), "{p}");
        }
        assert_eq!(expand("usage:read"), Some(vec!["usage:read"]));
        assert!(check_entry("role:tenant_finance").is_ok());
        assert!(check_entry("chat:write").is_ok());
        assert!(check_entry("role:platform_operator").is_ok());
        assert!(
            expand("role:platform_finance")
                .unwrap()
                .iter()
                .all(|p| p.starts_with(crate::auth::PLATFORM_PREFIX))
        );
        assert!(
            check_entry("role:root")
                .unwrap_err()
                .contains("role:tenant_admin")
        );
    }
}
