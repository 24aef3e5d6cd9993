//! Exit codes and the machine-readable error shape, the way Terraform users expect them
//! (`terraform plan -detailed-exitcode`): 0 success, 1 error, 2 "success, and there is something to
//! act on" (changes pending, drift, variances beyond tolerance, a broken audit link).

/// Success, nothing to act on.
pub const OK: u8 = 0;
/// An error: bad input, a failed step, a tenant that could not be converged, a blocked plan.
pub const ERROR: u8 = 1;
/// Success, and something to act on: `plan --detailed-exitcode` with changes pending, `prices diff`
/// with versions to import, drift found by `status` or `drift`, `usage reconcile` variances beyond
/// tolerance, a broken link found by `audit verify`, `local status` of a stopped cluster.
pub const FINDINGS: u8 = 2;

/// `FINDINGS` when `found`, else `OK`.
pub fn findings(found: bool) -> u8 {
    if found { FINDINGS } else { OK }
}

/// Version of the JSON error shape; bumped only when a field is removed or changes meaning.
pub const ERROR_SCHEMA: &str = "tenantctl.error/v1";

/// One error as JSON (`--output json`): `{"schema", "kind", "message", "causes", "hints",
/// "exit_code"}`. `message` is the outermost context, `causes` the chain under it (outermost first),
/// `hints` every `hint:` line of any of them, without the prefix.
pub fn error_json(kind: &str, err: &anyhow::Error) -> serde_json::Value {
    let mut hints = Vec::new();
    let mut texts = Vec::new();
    for cause in err.chain() {
        let mut own = Vec::new();
        for line in cause.to_string().lines() {
            match line.trim_start().strip_prefix("hint:") {
                Some(h) => hints.push(h.trim().to_owned()),
                None => own.push(line.to_owned()),
            }
        }
        texts.push(own.join("\n"));
    }
    let message = texts.first().cloned().unwrap_or_default();
    serde_json::json!({
        "schema": ERROR_SCHEMA,
        "kind": kind,
        "message": message,
        "causes": texts.get(1..).unwrap_or_default(),
        "hints": hints,
        "exit_code": ERROR,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_error_splits_message_causes_and_hints() {
        let err = anyhow::anyhow!("connection refused\nhint: run `tenantctl local start`")
            .context("cannot reach the control plane");
        let v = error_json("error", &err);
        assert_eq!(v["schema"], ERROR_SCHEMA);
        assert_eq!(v["message"], "cannot reach the control plane");
        assert_eq!(v["causes"], serde_json::json!(["connection refused"]));
        assert_eq!(
            v["hints"],
            serde_json::json!(["run `tenantctl local start`"])
        );
        assert_eq!(v["exit_code"], 1);
    }
}
