//! The decisions of the CloudFormation executor, as pure functions: what to do for each stack state,
//! how to recognise "no changes", how long to wait between polls and retries. No AWS call here; the
//! executor calls these and the SDK.
//!
//! State -> action (issue 5): absent -> create a CREATE change set; REVIEW_IN_PROGRESS -> delete the
//! stale change set, create again; *_COMPLETE -> UPDATE change set; ROLLBACK_COMPLETE -> delete the
//! stack, then create; UPDATE_ROLLBACK_FAILED -> continue the rollback; *_IN_PROGRESS -> wait, never
//! start a second operation; *_FAILED otherwise -> stop and say what a human must do.

use std::time::Duration;

/// What to do with a tenant's stack, given its current status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// No stack: create a change set of type CREATE.
    CreateChangeSet,
    /// A stack left in REVIEW_IN_PROGRESS by a change set never executed: delete that change set, then
    /// create a new CREATE change set.
    ReplaceStaleChangeSet,
    /// A settled stack: create a change set of type UPDATE.
    UpdateChangeSet,
    /// A stack whose creation rolled back cannot be updated: delete it, wait, then create.
    DeleteThenCreate,
    /// An update whose rollback failed: continue the rollback, wait, then decide again.
    ContinueRollback,
    /// Another operation is running: wait for it, then decide again.
    Wait,
    /// Needs a human; the text says what to do.
    Stop(String),
}

/// Whether a stack status means an operation is running (wait for it). REVIEW_IN_PROGRESS is not one:
/// it is a stack waiting on a change set nobody executed.
pub fn operation_in_progress(status: &str) -> bool {
    status.ends_with("_IN_PROGRESS") && status != "REVIEW_IN_PROGRESS"
}

/// Decides from the stack status (`None`: the stack does not exist).
pub fn action_for(status: Option<&str>) -> Action {
    match status {
        None | Some("DELETE_COMPLETE") => Action::CreateChangeSet,
        Some("REVIEW_IN_PROGRESS") => Action::ReplaceStaleChangeSet,
        Some("ROLLBACK_COMPLETE") => Action::DeleteThenCreate,
        Some("UPDATE_ROLLBACK_FAILED") => Action::ContinueRollback,
        Some(s) if operation_in_progress(s) => Action::Wait,
        Some(s) if s.ends_with("_COMPLETE") => Action::UpdateChangeSet,
        Some(s) => Action::Stop(match s {
            "CREATE_FAILED" | "ROLLBACK_FAILED" => format!(
                "the stack is `{s}`; delete it (`aws cloudformation delete-stack`, retaining what it cannot delete) and apply again"
            ),
            "DELETE_FAILED" => format!(
                "the stack is `{s}`; find the resource that could not be deleted in its events, remove it or retain it, and delete the stack again"
            ),
            other => format!(
                "the stack is in an unexpected state `{other}`; inspect it before applying again"
            ),
        }),
    }
}

/// Whether a change set that FAILED, or an update refused with a validation error, only means there
/// was nothing to change. CloudFormation reports it in two shapes; both are success.
pub fn is_no_changes(reason: &str) -> bool {
    reason.contains("didn't contain changes")
        || reason.contains("No updates are to be performed")
        || reason.contains("The submitted information didn't contain changes")
}

/// Whether an API error is throttling (retried with backoff, never a tenant failure by itself).
pub fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "LimitExceededException"
    )
}

/// Exponential backoff with full jitter: a delay in [0, min(cap, base * 2^attempt)], scaled by
/// `unit` in [0, 1) (a random draw; passed in so this stays pure).
pub fn backoff(attempt: u32, base: Duration, cap: Duration, unit: f64) -> Duration {
    let ceiling = base
        .saturating_mul(2u32.saturating_pow(attempt.min(20)))
        .min(cap);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

/// The delay before the `n`th poll of a stack operation: fast at first (stack events stream to the
/// progress bars), then settling at `max`, with +-20% jitter from `unit` so a wave of tenants does not
/// poll in lockstep. The SDK waiters' 30 s minimum is far too coarse for progress bars.
pub fn poll_delay(n: u32, max: Duration, unit: f64) -> Duration {
    let base = Duration::from_millis(500)
        .saturating_mul(n.saturating_add(1))
        .min(max);
    let jitter = 0.8 + 0.4 * unit.clamp(0.0, 1.0);
    base.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stack_state_maps_to_one_action() {
        for (status, want) in [
            (None, Action::CreateChangeSet),
            (Some("DELETE_COMPLETE"), Action::CreateChangeSet),
            (Some("REVIEW_IN_PROGRESS"), Action::ReplaceStaleChangeSet),
            (Some("CREATE_COMPLETE"), Action::UpdateChangeSet),
            (Some("UPDATE_COMPLETE"), Action::UpdateChangeSet),
            (Some("UPDATE_ROLLBACK_COMPLETE"), Action::UpdateChangeSet),
            (Some("IMPORT_COMPLETE"), Action::UpdateChangeSet),
            (Some("IMPORT_ROLLBACK_COMPLETE"), Action::UpdateChangeSet),
            (Some("ROLLBACK_COMPLETE"), Action::DeleteThenCreate),
            (Some("UPDATE_ROLLBACK_FAILED"), Action::ContinueRollback),
            (Some("CREATE_IN_PROGRESS"), Action::Wait),
            (Some("UPDATE_IN_PROGRESS"), Action::Wait),
            (Some("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS"), Action::Wait),
            (Some("UPDATE_ROLLBACK_IN_PROGRESS"), Action::Wait),
            (
                Some("UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS"),
                Action::Wait,
            ),
            (Some("ROLLBACK_IN_PROGRESS"), Action::Wait),
            (Some("DELETE_IN_PROGRESS"), Action::Wait),
            (Some("IMPORT_IN_PROGRESS"), Action::Wait),
        ] {
            assert_eq!(action_for(status), want, "{status:?}");
        }
        for failed in [
            "CREATE_FAILED",
            "ROLLBACK_FAILED",
            "DELETE_FAILED",
            "SOMETHING_NEW",
        ] {
            assert!(
                matches!(action_for(Some(failed)), Action::Stop(hint) if hint.contains(failed)),
                "{failed}"
            );
        }
    }

    #[test]
    fn both_no_changes_shapes_are_recognised() {
        assert!(is_no_changes(
            "The submitted information didn't contain changes. Submit different information to create a change set."
        ));
        assert!(is_no_changes("No updates are to be performed."));
        assert!(!is_no_changes(
            "Template format error: Unresolved resource dependencies [X]"
        ));
        assert!(is_throttling("Throttling") && is_throttling("TooManyRequestsException"));
        assert!(!is_throttling("ValidationError"));
    }

    #[test]
    fn backoff_is_exponential_capped_and_jittered() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(10);
        assert_eq!(backoff(0, base, cap, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(3, base, cap, 1.0), Duration::from_millis(800));
        assert_eq!(backoff(30, base, cap, 1.0), cap);
        assert_eq!(backoff(5, base, cap, 0.0), Duration::ZERO);
        assert_eq!(backoff(5, base, cap, 0.5), Duration::from_millis(1600));
    }

    #[test]
    fn polls_start_fast_settle_at_the_cap_and_never_align() {
        let max = Duration::from_secs(5);
        assert_eq!(poll_delay(0, max, 0.5), Duration::from_millis(500));
        assert!(poll_delay(100, max, 1.0) <= max.mul_f64(1.2));
        assert_ne!(poll_delay(3, max, 0.0), poll_delay(3, max, 1.0));
        assert!(
            poll_delay(0, max, 0.5) < Duration::from_secs(30),
            "finer than the SDK waiters"
        );
    }
}
