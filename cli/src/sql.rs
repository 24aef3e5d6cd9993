//! Renders the SQL templates in `templates/postgres/` with minijinja (strict undefined).
//!
//! Templates carry identifiers only. The `ident` filter is the single quoting function for them and
//! accepts only names built from validated newtypes (`[a-z_][a-z0-9_]*`, at most 63 bytes); `literal`
//! quotes a string of the same alphabet as a SQL string (a role-name prefix in a policy); `privileges`
//! accepts only a fixed list of privilege words; `int` only integers. Values (tenant data, passwords)
//! always travel as bind parameters, never through a template. The one exception is a role's password
//! verifier, see `alter_role_password`.

use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, Value};

/// `("x.sql", <contents of templates/postgres/x.sql.j2>)`.
macro_rules! template {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!("../../templates/postgres/", $name, ".j2")),
        )
    };
}

/// Every template, compiled into the binary. A test checks that each file in `templates/postgres/` is
/// listed here.
pub const TEMPLATES: &[(&str, &str)] = &[
    template!("create-role.sql"),
    template!("control-plane.sql"),
    template!("grant-migrator.sql"),
    template!("schema-tier.sql"),
    template!("migration-begin.sql"),
    template!("migration-end.sql"),
    template!("tenant-grants.sql"),
    template!("pool-tier.sql"),
    template!("pool-rls.sql"),
    template!("dedicated-db.sql"),
    template!("create-database.sql"),
    template!("grant-connect.sql"),
    template!("grant-rds-iam.sql"),
    template!("tenant-rows.sql"),
    template!("tenant-rows-delete.sql"),
    template!("drop-tenant.sql"),
    template!("drop-role.sql"),
    template!("drop-database.sql"),
    template!("act-as-migrator.sql"),
    template!("tenant-rows-insert.sql"),
    template!("pool-tenant.sql"),
    template!("leave-pool.sql"),
    template!("revoke-connect.sql"),
    template!("close-database.sql"),
    template!("tenant-usage-month.sql"),
    template!("tenant-cost-differs.sql"),
    template!("tenant-ledger-purge.sql"),
];

/// Quotes a SQL identifier after checking it against the strict grammar.
pub fn quote_ident(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(format!("\"{name}\""))
    } else {
        Err(format!(
            "`{}` is not a valid identifier",
            runtime::domain::printable(name)
        ))
    }
}

fn ident_filter(value: String) -> Result<String, Error> {
    quote_ident(&value).map_err(|e| Error::new(ErrorKind::InvalidOperation, e))
}

/// A string literal made only of `[a-z0-9_]` (at most 63 bytes), so no quoting can be escaped.
fn literal_filter(value: String) -> Result<String, Error> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(format!("'{value}'"))
    } else {
        Err(Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "`{}` is not a plain literal",
                runtime::domain::printable(&value)
            ),
        ))
    }
}

fn privileges_filter(value: String) -> Result<String, Error> {
    const WORDS: &[&str] = &["SELECT", "INSERT", "UPDATE", "DELETE"];
    let ok = value.split(", ").all(|w| WORDS.contains(&w));
    if ok {
        Ok(value)
    } else {
        Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("`{value}` is not a privilege list"),
        ))
    }
}

fn int_filter(value: Value) -> Result<String, Error> {
    i64::try_from(value.clone())
        .map(|n| n.to_string())
        .map_err(|_| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("`{value}` is not an integer"),
            )
        })
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.add_filter("ident", ident_filter);
    env.add_filter("literal", literal_filter);
    env.add_filter("privileges", privileges_filter);
    env.add_filter("int", int_filter);
    for (name, source) in TEMPLATES {
        // Templates are compiled into the binary; a broken one fails the `templates_render` test.
        if let Err(e) = env.add_template(name, source) {
            tracing::error!(template = name, error = %e, "template does not compile");
        }
    }
    env
}

/// Renders template `name` with `context`.
pub fn render(name: &str, context: Value) -> anyhow::Result<String> {
    let env = environment();
    let template = env.get_template(name)?;
    Ok(template.render(context)?)
}

/// `ALTER ROLE ... PASSWORD '<SCRAM verifier>'`. The verifier is computed here from the secret (as
/// `psql \password` does), so the plaintext never reaches the server or its logs; it is quoted by the
/// driver's literal escaper.
pub fn alter_role_password(role: &str, password: &secrecy::SecretString) -> anyhow::Result<String> {
    use secrecy::ExposeSecret;
    let verifier = postgres_protocol::password::scram_sha_256(password.expose_secret().as_bytes());
    Ok(format!(
        "ALTER ROLE {} PASSWORD {}",
        quote_ident(role).map_err(anyhow::Error::msg)?,
        postgres_protocol::escape::escape_literal(&verifier)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ident_refuses_anything_but_plain_lowercase_names() {
        // docs/security.md case 63/45: nothing hostile reaches DDL.
        for bad in ["", "A", "x\";drop", "a-b", "1a", "a b", &"a".repeat(64)] {
            assert!(quote_ident(bad).is_err(), "{bad}");
        }
        assert_eq!(quote_ident("t_acme").unwrap(), "\"t_acme\"");
    }

    #[test]
    fn templates_render_in_strict_mode() {
        let ctx = minijinja::context! {
            role => "ns_t_acme", schema => "t_acme", migrator => "ns_migrator", runtime => "ns_runtime",
            database => "ns", connection_limit => 20, login => true, owner => "ns_migrator", table => "usage_ledger",
            group => "ns_pool", role_prefix => "ns_t_",
            grants => vec![minijinja::context! { table => "usage_ledger", privileges => "SELECT, INSERT" }],
        };
        for (name, _) in TEMPLATES {
            let sql = render(name, ctx.clone()).unwrap();
            assert!(!sql.trim().is_empty(), "{name}");
        }
        // A missing variable is an error, not an empty string.
        assert!(render("schema-tier.sql", minijinja::context! { role => "r" }).is_err());
        let bad = minijinja::context! { role => "r\"; DROP TABLE x; --", login => true };
        assert!(render("create-role.sql", bad).is_err());
        for bad in ["", "ns_t_'", "ns' OR true --", "NS", "a-b"] {
            let ctx = minijinja::context! { role_prefix => bad, group => "g", migrator => "m",
            grants => vec![minijinja::context! { table => "usage_ledger" }] };
            assert!(render("pool-rls.sql", ctx).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_template_file_is_registered() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/postgres");
        for entry in std::fs::read_dir(dir).unwrap() {
            let file = entry.unwrap().file_name().to_string_lossy().to_string();
            let name = file.trim_end_matches(".j2");
            assert!(
                TEMPLATES.iter().any(|(n, _)| *n == name),
                "`templates/postgres/{file}` is not in `TEMPLATES`"
            );
        }
    }

    #[test]
    fn password_statement_carries_a_verifier_not_the_password() {
        let pw = secrecy::SecretString::from("sk-canary-acme-0123456789");
        let sql = alter_role_password("ns_t_acme", &pw).unwrap();
        assert!(sql.contains("SCRAM-SHA-256$4096:"));
        assert!(!sql.contains("canary"));
    }
}
