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

/// A month's AWS spend (unblended cost) by the value of the cost-allocation tag `tag`, in
/// micro-USD, from `GetCostAndUsage` (every page); spend on resources without the tag is under `""`.
/// `start` and `end` are the month's first day and the next month's (`YYYY-MM-DD`, end exclusive).
pub async fn month_by_tag(
    client: &Client,
    tag: &str,
    start: &str,
    end: &str,
) -> Result<BTreeMap<String, i64>> {
    use aws_sdk_costexplorer::types::{
        DateInterval, Granularity, GroupDefinition, GroupDefinitionType,
    };
    let period = DateInterval::builder()
        .start(start)
        .end(end)
        .build()
        .map_err(|e| anyhow!("the month {start}..{end}: {e}"))?;
    let group = GroupDefinition::builder()
        .r#type(GroupDefinitionType::Tag)
        .key(tag)
        .build();
    let mut out: BTreeMap<String, i64> = BTreeMap::new();
    let mut token: Option<String> = None;
    loop {
        let page = with_backoff(|| {
            client
                .get_cost_and_usage()
                .time_period(period.clone())
                .granularity(Granularity::Monthly)
                .metrics("UnblendedCost")
                .group_by(group.clone())
                .set_next_page_token(token.clone())
                .send()
        })
        .await
        .map_err(|e| {
            anyhow!(
                "GetCostAndUsage: {}\nhint: the caller needs `ce:GetCostAndUsage`, and the tag `{tag}` must be an active cost-allocation tag (`tenantctl apply --target aws` activates it)",
                aws_sdk_costexplorer::error::DisplayErrorContext(e)
            )
        })?;
        for result in page.results_by_time() {
            for g in result.groups() {
                // Keys come as `<tag>$<value>`; an empty value is spend without the tag.
                let key = g.keys().first().map(String::as_str).unwrap_or_default();
                let value = key.split_once('$').map_or(key, |(_, v)| v).to_owned();
                let metric = g
                    .metrics()
                    .and_then(|m| m.get("UnblendedCost"))
                    .ok_or_else(|| {
                        anyhow!("GetCostAndUsage: group `{key}` has no UnblendedCost")
                    })?;
                let unit = metric.unit().unwrap_or("USD");
                if unit != "USD" {
                    return Err(anyhow!(
                        "GetCostAndUsage: group `{key}` is in {unit}, not USD"
                    ));
                }
                let amount = metric.amount().unwrap_or("0");
                let micro = crate::usage::usd_to_micro(amount).ok_or_else(|| {
                    anyhow!("GetCostAndUsage: group `{key}` has amount `{amount}`, not a number")
                })?;
                let entry = out.entry(value).or_default();
                *entry = entry
                    .checked_add(micro)
                    .ok_or_else(|| anyhow!("AWS spend overflowed 64 bits"))?;
            }
        }
        token = page.next_page_token().map(str::to_owned);
        if token.is_none() {
            return Ok(out);
        }
    }
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
