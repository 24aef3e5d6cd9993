//! Scrubbing of anything credential-like from text a provider sent (error bodies, header values)
//! before it reaches a client or a log (security case 48).
//!
//! Removed: the key the call used (exactly), `Bearer`/`Basic` credentials, `sk-`/`sk-ant-`-style
//! keys, AWS access key ids, JWTs, and any long run of key-alphabet characters (24 or more) that is
//! not a plain word. What is left is cut to a bounded length. This module must not log.

use secrecy::{ExposeSecret, SecretString};

/// The most characters of provider text kept after scrubbing.
pub const MAX_KEPT: usize = 300;

const REDACTED: &str = "[redacted]";

fn key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '+' | '=')
}

/// Whether a run of key-alphabet characters looks like a credential rather than prose.
fn credential_like(run: &str) -> bool {
    let lower = run.to_ascii_lowercase();
    if lower.starts_with("sk-") || lower.starts_with("akia") || lower.starts_with("asia") {
        return run.len() >= 12;
    }
    if run.len() >= 24 {
        // A long run with digits or mixed case is a token; a long all-letter word is not.
        let digits = run.chars().any(|c| c.is_ascii_digit());
        let upper = run.chars().any(|c| c.is_ascii_uppercase());
        let lower_ = run.chars().any(|c| c.is_ascii_lowercase());
        return digits || (upper && lower_) || run.contains('.');
    }
    false
}

/// `text` with every credential-like part replaced by `[redacted]`, and `key` (the key the call
/// used) removed wherever it appears, then cut to `MAX_KEPT` characters.
pub fn scrub(text: &str, key: Option<&SecretString>) -> String {
    let mut owned = text.to_owned();
    if let Some(key) = key {
        let k = key.expose_secret();
        if !k.is_empty() {
            owned = owned.replace(k, REDACTED);
        }
    }
    let mut out = String::with_capacity(owned.len().min(MAX_KEPT + 16));
    let mut after_scheme = false;
    let mut rest = owned.as_str();
    while let Some(c) = rest.chars().next() {
        if key_char(c) {
            let end = rest.find(|c: char| !key_char(c)).unwrap_or(rest.len());
            let run = &rest[..end];
            if after_scheme || credential_like(run) {
                out.push_str(REDACTED);
            } else {
                out.push_str(run);
            }
            after_scheme = matches!(run.to_ascii_lowercase().as_str(), "bearer" | "basic");
            rest = &rest[end..];
        } else {
            if c != ' ' {
                after_scheme = false;
            }
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if out.chars().count() > MAX_KEPT {
        out = out.chars().take(MAX_KEPT).collect();
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(input: &str, key: Option<&str>, must_not_contain: &[&str], must_contain: &[&str]) {
        let key = key.map(|k| SecretString::from(k.to_owned()));
        let out = scrub(input, key.as_ref());
        for bad in must_not_contain {
            assert!(!out.contains(bad), "{out:?} still contains {bad:?}");
        }
        for good in must_contain {
            assert!(out.contains(good), "{out:?} lost {good:?}");
        }
    }

    #[test]
    fn credential_like_text_is_removed_and_prose_is_kept() {
        let key = format!("sk-test-{}", "Ab3".repeat(12));
        check(
            &format!("Incorrect API key provided: {key}. You can find your key at the dashboard."),
            Some(&key),
            &[&key, "Ab3Ab3"],
            &["Incorrect API key provided", "dashboard"],
        );
        // A key the scrubber was not told about is still caught by its shape.
        check(
            &format!("bad key sk-ant-{}", "x9Y".repeat(10)),
            None,
            &["x9Yx9Y"],
            &["bad key"],
        );
        check(
            "Authorization: Bearer abc.def.ghi was refused",
            None,
            &["abc.def.ghi"],
            &["was refused"],
        );
        // Built at run time: the repository carries no credential-shaped string.
        let akid = format!("AKIA{}", "Q7ZX3".repeat(4)).to_uppercase();
        check(
            &format!("The security token included in the request is invalid: {akid}"),
            None,
            &[&akid],
            &["security token"],
        );
        check(
            "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXZhbHVl",
            None,
            &["eyJhbGci"],
            &[],
        );
        check(
            "Rate limit reached for gpt-4o-mini in organization on tokens per min",
            None,
            &[],
            &["Rate limit reached for gpt-4o-mini in organization on tokens per min"],
        );
        let long = "a".repeat(1000);
        assert!(scrub(&long, None).len() <= MAX_KEPT + 3);
    }
}
