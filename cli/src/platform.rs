//! Platform configuration (`platform.yaml`): the trusted issuers tenants may bind to.
//!
//! The issuer named `platform` is, unless the file defines it, the local target's own development
//! identity provider (`tenantctl token`; its JWKS is served by `tenantctl serve`). Every issuer is
//! checked with `IssuerConfig::check` when the file is read, so a weak configuration never reaches the
//! runtime. This module reads one file; it does no other IO.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use runtime::auth::IssuerConfig;
use runtime::auth::jwks::JwksSource;
use serde::Deserialize;

use crate::devidp::DEV_ISSUER;

/// The name of the platform's own issuer.
pub const PLATFORM_ISSUER: &str = "platform";
/// The audience of the development identity provider's tokens.
pub const DEV_AUDIENCE: &str = "tenantctl-api";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlatform {
    version: u32,
    #[serde(default)]
    issuers: Vec<IssuerConfig>,
}

/// The trusted issuers of one platform.
#[derive(Debug, Clone)]
pub struct Platform {
    pub issuers: Vec<IssuerConfig>,
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
    /// Whether `platform` is tenantctl's development identity provider.
    pub dev_issuer: bool,
}

fn dev_issuer() -> IssuerConfig {
    let mut config = IssuerConfig::new(
        PLATFORM_ISSUER,
        DEV_ISSUER,
        // Replaced by the real loopback address when `tenantctl serve` starts the provider.
        JwksSource::Url("http://127.0.0.1/.well-known/jwks.json".into()),
        DEV_AUDIENCE,
    );
    config.allow_loopback_http = true;
    config.max_lifetime_secs = 24 * 3600;
    config
}

impl Platform {
    /// Only the development identity provider.
    pub fn builtin() -> Self {
        Self {
            issuers: vec![dev_issuer()],
            source: None,
            dev_issuer: true,
        }
    }

    /// `explicit` if given, else `./platform.yaml` if it exists, else `builtin()`.
    pub fn resolve(explicit: Option<&Path>) -> Result<Self> {
        match explicit {
            Some(path) => Self::load(path),
            None if Path::new("platform.yaml").is_file() => Self::load(Path::new("platform.yaml")),
            None => Ok(Self::builtin()),
        }
    }

    /// Reads and checks a platform file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read the platform configuration `{}`",
                path.display()
            )
        })?;
        let raw: RawPlatform = serde_path_to_error::deserialize(
            serde_norway::Deserializer::from_str(&text),
        )
        .map_err(|e| {
            let at = e.path().to_string();
            let inner = e.into_inner();
            let loc = inner
                .location()
                .map(|l| format!(":{}:{}", l.line(), l.column()))
                .unwrap_or_default();
            anyhow::anyhow!("`{}`{loc}: field `{at}`: {inner}", path.display())
        })?;
        if raw.version != 1 {
            bail!(
                "`{}`: unsupported platform configuration version {}; this tenantctl reads `version: 1`",
                path.display(),
                raw.version
            );
        }
        let mut issuers = raw.issuers;
        for issuer in &issuers {
            issuer
                .check()
                .map_err(|e| anyhow::anyhow!("`{}`: {e}", path.display()))?;
        }
        for (i, a) in issuers.iter().enumerate() {
            if issuers[..i]
                .iter()
                .any(|b| b.name == a.name || b.issuer == a.issuer)
            {
                bail!(
                    "`{}`: issuer `{}` is declared twice (by name or by `iss`)",
                    path.display(),
                    a.name
                );
            }
        }
        let dev_issuer = !issuers.iter().any(|i| i.name == PLATFORM_ISSUER);
        if dev_issuer {
            issuers.insert(0, self::dev_issuer());
        }
        Ok(Self {
            issuers,
            source: Some(path.to_owned()),
            dev_issuer,
        })
    }

    /// The issuer named `name`.
    pub fn issuer(&self, name: &str) -> Option<&IssuerConfig> {
        self.issuers.iter().find(|i| i.name == name)
    }

    /// The issuers as the runtime should trust them, with the development provider's JWKS at
    /// `dev_jwks_url`.
    pub fn runtime_issuers(&self, dev_jwks_url: &str) -> Vec<IssuerConfig> {
        self.issuers
            .iter()
            .map(|i| {
                let mut i = i.clone();
                if self.dev_issuer && i.name == PLATFORM_ISSUER {
                    i.jwks = JwksSource::Url(dev_jwks_url.to_owned());
                }
                i
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_issuer_in_platform_yaml_parses_as_written_and_jwks_takes_both_forms() {
        // Issue 13 item 1: every configuration example in the repository parses. The example is
        // the commented block of `platform.yaml`, uncommented.
        let text =
            std::fs::read_to_string(crate::testing::repo_root().join("platform.yaml")).unwrap();
        let mut yaml = String::new();
        let mut in_example = false;
        for line in text.lines() {
            in_example |= line.starts_with("# Example");
            if line.starts_with("issuers: []") {
                yaml.push_str("issuers:\n");
            } else if let Some(example) = line
                .strip_prefix("# ")
                .filter(|l| in_example && l.starts_with(' '))
            {
                yaml.push_str(example.strip_prefix(' ').unwrap_or(example));
                yaml.push('\n');
            } else if !line.starts_with('#') {
                yaml.push_str(line);
                yaml.push('\n');
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("platform.yaml");
        std::fs::write(&file, &yaml).unwrap();
        let p = Platform::load(&file).unwrap_or_else(|e| panic!("{e:#}\n{yaml}"));
        let okta = p.issuer("acme-okta").expect("the example issuer");
        assert_eq!(
            okta.jwks,
            runtime::auth::jwks::JwksSource::Url(
                "https://acme.okta.example/oauth2/default/v1/keys".into()
            )
        );
        // The tag form reads the same.
        std::fs::write(
            &file,
            yaml.replace(
                "  jwks:\n    url: https://acme.okta.example/oauth2/default/v1/keys",
                "  jwks: !url https://acme.okta.example/oauth2/default/v1/keys",
            ),
        )
        .unwrap();
        assert_eq!(
            Platform::load(&file)
                .unwrap()
                .issuer("acme-okta")
                .unwrap()
                .jwks,
            okta.jwks
        );
        // Two sources, or an unknown one, are refused by name.
        for bad in [
            "{url: https://a.example/k, file: /k.json}",
            "{ftp: x}",
            "{}",
        ] {
            std::fs::write(
                &file,
                yaml.replace(
                    "  jwks:\n    url: https://acme.okta.example/oauth2/default/v1/keys",
                    &format!("  jwks: {bad}"),
                ),
            )
            .unwrap();
            let e = format!("{:#}", Platform::load(&file).unwrap_err());
            assert!(e.contains("jwks"), "{bad}: {e}");
        }
    }
}
