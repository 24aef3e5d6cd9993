//! AWS Secrets Manager as the secret store (the AWS target's backend). The secret's name is its
//! `SecretName`, so the tenant role's IAM policy on `secret:tenants/<id>/*` fences it. This module
//! must not log or format a secret value.

use secrecy::{ExposeSecret, SecretString};

use super::{SecretError, SecretName};
use crate::domain::{TenantId, printable};

/// AWS Secrets Manager. Tenant secrets are tagged `tenant=<id>`. Deleting schedules deletion with a
/// recovery window; writing a secret that is scheduled for deletion restores it first, so re-onboarding
/// within the window works instead of failing.
#[derive(Debug, Clone)]
pub struct AwsSecretStore {
    client: aws_sdk_secretsmanager::Client,
    recovery_window_days: i64,
}

fn aws_err<E>(
    call: &'static str,
    name: &SecretName,
    error: aws_sdk_secretsmanager::error::SdkError<E>,
) -> SecretError
where
    E: std::error::Error + 'static,
{
    SecretError::Aws {
        call,
        name: name.as_str().to_owned(),
        message: aws_sdk_secretsmanager::error::DisplayErrorContext(error).to_string(),
    }
}

impl AwsSecretStore {
    /// A store using `config` (region, credentials, and `AWS_ENDPOINT_URL` if set, e.g. a local moto).
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Self {
            client: aws_sdk_secretsmanager::Client::new(config),
            recovery_window_days: 7,
        }
    }

    /// A store using a client built by the caller (with its own interceptors or endpoint).
    pub fn from_client(client: aws_sdk_secretsmanager::Client) -> Self {
        Self {
            client,
            recovery_window_days: 7,
        }
    }

    /// Days a deleted secret can still be restored.
    pub fn recovery_window_days(&self) -> i64 {
        self.recovery_window_days
    }

    /// Names of the secrets under `prefix` that are not scheduled for deletion.
    pub async fn list_names(
        &self,
        prefix: &str,
    ) -> Result<std::collections::BTreeSet<String>, SecretError> {
        Ok(self
            .list(prefix)
            .await?
            .into_iter()
            .map(|info| info.name)
            .collect())
    }

    /// Every live secret under `prefix`, with its current version id and last change.
    pub(super) async fn list(&self, prefix: &str) -> Result<Vec<super::SecretInfo>, SecretError> {
        use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};
        let probe = SecretName::parse("platform/list")?;
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let page = self
                .client
                .list_secrets()
                .filters(
                    Filter::builder()
                        .key(FilterNameStringType::Name)
                        .values(prefix)
                        .build(),
                )
                .max_results(100)
                .set_next_token(next.clone())
                .send()
                .await
                .map_err(|e| aws_err("ListSecrets", &probe, e))?;
            for s in page.secret_list() {
                let Some(name) = s.name().filter(|n| n.starts_with(prefix)) else {
                    continue;
                };
                if s.deleted_date().is_some() {
                    continue;
                }
                let version = s
                    .secret_versions_to_stages()
                    .and_then(|m| {
                        m.iter()
                            .find(|(_, stages)| stages.iter().any(|st| st == "AWSCURRENT"))
                            .map(|(id, _)| id.clone())
                    })
                    .unwrap_or_default();
                let changed_at = s
                    .last_changed_date()
                    .or(s.created_date())
                    .and_then(|d| std::time::SystemTime::try_from(*d).ok())
                    .map(super::rfc3339);
                out.push(super::SecretInfo {
                    name: name.to_owned(),
                    version,
                    changed_at,
                });
            }
            next = page.next_token().map(str::to_owned);
            if next.is_none() {
                out.sort_by(|a, b| a.name.cmp(&b.name));
                return Ok(out);
            }
        }
    }

    /// Schedules deletion of every secret under `tenants/<tenant>/` (the trailing slash keeps `acme`
    /// from matching `acme2`); returns their names. Secrets already scheduled are left as they are.
    pub async fn schedule_tenant_deletion(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<String>, SecretError> {
        let prefix = format!("tenants/{tenant}/");
        // The Name filter matches prefixes; `list_names` keeps only this tenant's namespace.
        let names: Vec<String> = self.list_names(&prefix).await?.into_iter().collect();
        for name in &names {
            self.delete(&SecretName::parse(name)?).await?;
        }
        Ok(names)
    }

    /// A store from the standard AWS configuration chain (profiles, SSO, environment, role assumption).
    pub async fn from_environment() -> Self {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::new(&config)
    }

    pub(super) async fn get(&self, name: &SecretName) -> Result<SecretString, SecretError> {
        use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
        match self
            .client
            .get_secret_value()
            .secret_id(name.as_str())
            .send()
            .await
        {
            Ok(out) => out
                .secret_string()
                .map(|v| SecretString::from(v.to_owned()))
                .ok_or_else(|| SecretError::NotFound(name.as_str().to_owned())),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(GetSecretValueError::ResourceNotFoundException(_))
                ) =>
            {
                Err(SecretError::NotFound(name.as_str().to_owned()))
            }
            Err(e) => Err(aws_err("GetSecretValue", name, e)),
        }
    }

    /// The master user of an RDS instance whose password RDS manages (`ManageMasterUserPassword`): the
    /// secret RDS named (`rds!db-...`, given by its ARN) holds `{"username": .., "password": ..}`.
    /// tenantctl reads it to create a dedicated tenant's objects on the tenant's own instance; the
    /// password never leaves the returned `SecretString`.
    pub async fn rds_master_credentials(
        &self,
        arn: &str,
    ) -> Result<(String, SecretString), SecretError> {
        let name = || printable(arn);
        let out = self
            .client
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| SecretError::Aws {
                call: "GetSecretValue",
                name: name(),
                message: aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string(),
            })?;
        #[derive(serde::Deserialize)]
        struct Master {
            username: String,
            password: SecretString,
        }
        let text = zeroize::Zeroizing::new(
            out.secret_string()
                .ok_or_else(|| SecretError::NotFound(name()))?
                .to_owned(),
        );
        let master: Master = serde_json::from_str(&text).map_err(|_| SecretError::Aws {
            call: "GetSecretValue",
            name: name(),
            message: "not an RDS master-user secret (`username` and `password`)".into(),
        })?;
        Ok((master.username, master.password))
    }

    /// Whether the secret exists and is not scheduled for deletion.
    pub(super) async fn exists(&self, name: &SecretName) -> Result<bool, SecretError> {
        use aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretError;
        match self
            .client
            .describe_secret()
            .secret_id(name.as_str())
            .send()
            .await
        {
            Ok(out) => Ok(out.deleted_date().is_none()),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(DescribeSecretError::ResourceNotFoundException(_))
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(aws_err("DescribeSecret", name, e)),
        }
    }

    pub(super) async fn put(
        &self,
        name: &SecretName,
        value: &SecretString,
    ) -> Result<(), SecretError> {
        use aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretError;
        use aws_sdk_secretsmanager::types::Tag;
        let existing = match self
            .client
            .describe_secret()
            .secret_id(name.as_str())
            .send()
            .await
        {
            Ok(out) => Some(out.deleted_date().is_some()),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(DescribeSecretError::ResourceNotFoundException(_))
                ) =>
            {
                None
            }
            Err(e) => return Err(aws_err("DescribeSecret", name, e)),
        };
        match existing {
            None => {
                let mut create = self
                    .client
                    .create_secret()
                    .name(name.as_str())
                    .secret_string(value.expose_secret())
                    .tags(Tag::builder().key("managed-by").value("tenantctl").build());
                if let Some(tenant) = name.tenant() {
                    create = create.tags(Tag::builder().key("tenant").value(tenant).build());
                }
                create
                    .send()
                    .await
                    .map_err(|e| aws_err("CreateSecret", name, e))?;
            }
            Some(scheduled_for_deletion) => {
                if scheduled_for_deletion {
                    self.client
                        .restore_secret()
                        .secret_id(name.as_str())
                        .send()
                        .await
                        .map_err(|e| aws_err("RestoreSecret", name, e))?;
                }
                self.client
                    .put_secret_value()
                    .secret_id(name.as_str())
                    .secret_string(value.expose_secret())
                    .send()
                    .await
                    .map_err(|e| aws_err("PutSecretValue", name, e))?;
            }
        }
        Ok(())
    }

    /// Schedules deletion (with the recovery window); a missing secret is not an error.
    pub(super) async fn delete(&self, name: &SecretName) -> Result<(), SecretError> {
        use aws_sdk_secretsmanager::operation::delete_secret::DeleteSecretError;
        match self
            .client
            .delete_secret()
            .secret_id(name.as_str())
            .recovery_window_in_days(self.recovery_window_days)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(DeleteSecretError::ResourceNotFoundException(_))
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(aws_err("DeleteSecret", name, e)),
        }
    }

    /// The tags of a secret (tests and audits).
    pub async fn tags(&self, name: &SecretName) -> Result<Vec<(String, String)>, SecretError> {
        let out = self
            .client
            .describe_secret()
            .secret_id(name.as_str())
            .send()
            .await
            .map_err(|e| aws_err("DescribeSecret", name, e))?;
        Ok(out
            .tags()
            .iter()
            .map(|t| {
                (
                    t.key().unwrap_or_default().to_owned(),
                    t.value().unwrap_or_default().to_owned(),
                )
            })
            .collect())
    }
}
