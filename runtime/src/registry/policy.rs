//! A tenant's model policy as the registry stores it (JSON written by `tenantctl`, read by the
//! runtime). The model router enforces it; this module only describes it and must do no IO.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::{ModelId, ProviderId};

/// What a tenant may call: allowed models per provider, a default, and aliases. Stored in the registry
/// as JSON by `tenantctl`; read by the runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPolicy {
    pub providers: BTreeMap<ProviderId, Vec<ModelId>>,
    pub default: ModelId,
    #[serde(default)]
    pub aliases: BTreeMap<ModelId, ModelId>,
}
