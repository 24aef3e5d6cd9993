//! Cost-allocation tags: finance reads per-tenant cost in Cost Explorer and the cost and usage report
//! only for tag keys that are *activated*. After a stack carries its tags, tenantctl activates their
//! keys with `UpdateCostAllocationTagsStatus` (at most 20 keys per call; activating an active key is a
//! no-op). A key AWS has not seen on any billed resource yet (it takes up to 24 hours to appear) is
//! refused per entry; that is "pending", retried by the next apply, never an error.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, anyhow};
use aws_sdk_costexplorer::Client;
use aws_sdk_costexplorer::types::{CostAllocationTagStatus, CostAllocationTagStatusEntry};
use serde::Serialize;

use super::call::with_backoff;

/// Keys per `UpdateCostAllocationTagsStatus` call (the API's limit).
pub const BATCH: usize = 20;

/// What activation did, per key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TagActivation {
    pub activated: Vec<String>,
    /// Not visible to billing yet: key -> AWS's message. Retried by the next apply.
    pub pending: BTreeMap<String, String>,
    /// Refused for another reason: key -> code and message.
    pub failed: BTreeMap<String, String>,
}

/// Whether a per-key error only means billing has not seen the key yet.
pub fn not_yet_visible(code: &str, message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    code.contains("NotFound")
        || m.contains("not found")
        || m.contains("does not exist")
        || m.contains("doesn't exist")
}

/// Activates `keys` in batches of `BATCH`.
pub async fn activate(client: &Client, keys: &BTreeSet<String>) -> Result<TagActivation> {
    let keys: Vec<&String> = keys.iter().collect();
    let mut report = TagActivation::default();
    for batch in keys.chunks(BATCH) {
        let entries: Vec<CostAllocationTagStatusEntry> = batch
            .iter()
            .map(|k| {
                CostAllocationTagStatusEntry::builder()
                    .tag_key(k.as_str())
                    .status(CostAllocationTagStatus::Active)
                    .build()
                    .map_err(|e| anyhow!("tag key `{k}`: {e}"))
            })
            .collect::<Result<_>>()?;
        let out = with_backoff(|| {
            client
                .update_cost_allocation_tags_status()
                .set_cost_allocation_tags_status(Some(entries.clone()))
                .send()
        })
        .await
        .map_err(|e| {
            anyhow!(
                "UpdateCostAllocationTagsStatus: {}\nhint: the caller needs `ce:UpdateCostAllocationTagsStatus` in the payer (management) account",
                aws_sdk_costexplorer::error::DisplayErrorContext(e)
            )
        })?;
        let mut refused = BTreeSet::new();
        for e in out.errors() {
            let key = e.tag_key().unwrap_or_default().to_owned();
            let code = e.code().unwrap_or_default();
            let message = e.message().unwrap_or_default();
            refused.insert(key.clone());
            if not_yet_visible(code, message) {
                report.pending.insert(key, message.to_owned());
            } else {
                report.failed.insert(key, format!("{code}: {message}"));
            }
        }
        report.activated.extend(
            batch
                .iter()
                .filter(|k| !refused.contains(k.as_str()))
                .map(|k| (*k).clone()),
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unknown_keys_are_pending() {
        assert!(not_yet_visible(
            "TagKeysNotFoundException",
            "Tag keys not found"
        ));
        assert!(not_yet_visible(
            "",
            "The tag key cost-center does not exist"
        ));
        assert!(!not_yet_visible("AccessDenied", "not authorized"));
    }
}
