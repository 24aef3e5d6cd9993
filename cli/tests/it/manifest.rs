//! Manifest errors: a table of malformed manifests, each error text snapshotted (issue 2).

use std::path::Path;

use cli::manifest::{TenantSpec, load_all};
use cli::platform::Platform;

const GOOD: &str = "version: 1
id: acme
display_name: Acme Health
tier: schema
models:
  providers:
    mock:
      - mock-small
  default: mock-small
budget:
  monthly_usd: \"2500.00\"
tags:
  cost-center: cc-1
retention:
  usage_days: 30
";

fn with(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from}");
    GOOD.replacen(from, to, 1)
}

#[test]
fn the_good_manifest_parses() {
    let spec = TenantSpec::from_source(Path::new("tenants/acme.yaml"), GOOD, &Platform::builtin())
        .unwrap();
    assert_eq!(spec.id.as_str(), "acme");
    assert_eq!(spec.monthly_budget.0, 2_500_000_000);
    assert_eq!(spec.subject_monthly_budget, None);
    assert_eq!(spec.identity.tenant_claim, "tenant_id");
    assert!(
        spec.canonical_json()
            .get("subject_monthly_budget")
            .is_none(),
        "absent from the canonical JSON when not set, so older specs keep their hash"
    );
    // A budget per subject, at most the tenant's.
    let source = with(
        "  monthly_usd: \"2500.00\"\n",
        "  monthly_usd: \"2500.00\"\n  per_subject_monthly_usd: \"25.50\"\n",
    );
    let spec = TenantSpec::from_source(
        Path::new("tenants/acme.yaml"),
        &source,
        &Platform::builtin(),
    )
    .unwrap();
    assert_eq!(
        spec.subject_monthly_budget,
        Some(runtime::domain::MicroUsd(25_500_000))
    );
    assert_eq!(
        spec.limits().subject_monthly_budget,
        spec.subject_monthly_budget
    );
}

#[test]
fn malformed_manifests_fail_with_located_errors_and_hints() {
    let cases: Vec<(&str, String)> = vec![
        (
            "unknown_field",
            with("tier: schema\n", "tier: schema\ntierr: pool\n"),
        ),
        (
            "unknown_nested_field",
            with(
                "  monthly_usd: \"2500.00\"\n",
                "  monthly_usd: \"2500.00\"\n  currency: EUR\n",
            ),
        ),
        ("bad_tenant_id", with("id: acme", "id: Acme_Corp")),
        ("tenant_id_path_traversal", with("id: acme", "id: ../x")),
        ("bad_tier", with("tier: schema", "tier: shared")),
        ("wrong_type", with("usage_days: 30", "usage_days: forever")),
        (
            "yaml_syntax_error",
            with("    mock:\n      - mock-small\n", "    mock: [mock-small\n"),
        ),
        (
            "float_money",
            with("monthly_usd: \"2500.00\"", "monthly_usd: 2500.50"),
        ),
        (
            "subject_budget_over_the_tenants",
            with(
                "  monthly_usd: \"2500.00\"\n",
                "  monthly_usd: \"2500.00\"\n  per_subject_monthly_usd: \"2500.01\"\n",
            ),
        ),
        (
            "subject_budget_of_zero",
            with(
                "  monthly_usd: \"2500.00\"\n",
                "  monthly_usd: \"2500.00\"\n  per_subject_monthly_usd: \"0\"\n",
            ),
        ),
        (
            "subject_budget_as_float",
            with(
                "  monthly_usd: \"2500.00\"\n",
                "  monthly_usd: \"2500.00\"\n  per_subject_monthly_usd: 25.5\n",
            ),
        ),
        (
            "money_with_too_many_decimals",
            with("\"2500.00\"", "\"0.0000001\""),
        ),
        (
            "default_model_not_allowed",
            with("default: mock-small", "default: gpt-4o"),
        ),
        (
            "unpriced_model",
            with(
                "      - mock-small\n",
                "      - mock-small\n      - mock-huge\n",
            ),
        ),
        ("unknown_provider", with("    mock:\n", "    watsonx:\n")),
        (
            "fallback_outside_the_policy",
            with(
                "  default: mock-small\n",
                "  default: mock-small\n  fallbacks:\n    mock-small: [gpt-4o]\n",
            ),
        ),
        (
            "endpoint_outside_the_residency_pin",
            with(
                "    mock:\n      - mock-small\n",
                "    mock:\n      models: [mock-small]\n      endpoint: { region: us-east-1 }\n  residency: [eu-west-1]\n",
            ),
        ),
        (
            "blocked_provider_listed",
            with(
                "  default: mock-small\n",
                "  default: mock-small\n  blocked_providers: [mock]\n",
            ),
        ),
        (
            "azure_without_deployments",
            with(
                "    mock:\n      - mock-small\n",
                "    mock:\n      - mock-small\n    azure-openai:\n      models: [gpt-4o]\n      endpoint: { base_url: \"https://acme.openai.azure.com\", api_version: 2024-10-21 }\n",
            ),
        ),
        (
            "endpoint_url_with_credentials",
            with(
                "    mock:\n      - mock-small\n",
                "    mock:\n      - mock-small\n    openai:\n      models: [gpt-4o]\n      endpoint: { base_url: \"https://user:pw@api.openai.com/v1\" }\n",
            ),
        ),
        (
            "missing_cost_center",
            with("  cost-center: cc-1\n", "  team: x\n"),
        ),
        (
            "reserved_tag",
            with(
                "  cost-center: cc-1\n",
                "  cost-center: cc-1\n  tenant: other\n",
            ),
        ),
        (
            "tags_too_large",
            with(
                "  cost-center: cc-1\n",
                &format!(
                    "  cost-center: cc-1\n{}",
                    (0..5)
                        .map(|i| format!("  note-{i}: {}\n", "x".repeat(250)))
                        .collect::<String>()
                ),
            ),
        ),
        (
            "missing_field",
            GOOD.replace("retention:\n  usage_days: 30\n", ""),
        ),
        ("unsupported_version", with("version: 1", "version: 2")),
        (
            "unknown_issuer",
            with(
                "tier: schema\n",
                "tier: schema\nidentity:\n  issuer: auth0-prod\n",
            ),
        ),
        (
            "retention_out_of_range",
            with("usage_days: 30", "usage_days: 0"),
        ),
    ];
    for (name, source) in cases {
        let err = TenantSpec::from_source(
            Path::new("tenants/acme.yaml"),
            &source,
            &Platform::builtin(),
        )
        .expect_err(name);
        assert!(err.hint.is_some(), "{name}: every error carries a hint");
        insta::assert_snapshot!(name, err.render());
    }
}

#[test]
fn duplicate_tenant_ids_across_files_are_refused_naming_both_files() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["a", "b"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
        std::fs::write(dir.path().join(sub).join("acme.yaml"), GOOD).unwrap();
    }
    let errors = load_all(
        &[dir.path().join("a"), dir.path().join("b")],
        &Platform::builtin(),
    )
    .unwrap_err();
    assert_eq!(errors.len(), 1);
    let text = errors[0]
        .render()
        .replace(&dir.path().display().to_string(), "DIR");
    insta::assert_snapshot!("duplicate_ids", text);
}

/// Issue 13: a syntax error is located where its construct starts and names no field; every error
/// of a file is reported in one run; a file not named after its tenant's id is refused.
#[test]
fn errors_point_at_the_right_place_all_of_a_file_come_at_once_and_the_file_is_named_after_its_id() {
    let parse = |source: &str| {
        TenantSpec::from_source_all(Path::new("tenants/acme.yaml"), source, &Platform::builtin())
            .expect_err("must fail")
    };
    // An unclosed quote on line 3 is reported at its opening quote, not at the end of the file.
    let errs = parse(&with(
        "display_name: Acme Health",
        "display_name: \"Acme Health",
    ));
    assert_eq!(errs.len(), 1);
    assert_eq!(
        (errs[0].line, errs[0].column, errs[0].path.as_str()),
        (Some(3), Some(15), ""),
        "{}",
        errs[0]
    );
    assert!(
        errs[0].message.contains("not closed on its line"),
        "{}",
        errs[0]
    );
    // A tab on line 3 is a tab on line 3, not a problem of field `id`.
    let errs = parse(&with(
        "display_name: Acme Health",
        "\tdisplay_name: Acme Health",
    ));
    assert_eq!(
        (errs[0].line, errs[0].path.as_str()),
        (Some(3), ""),
        "{}",
        errs[0]
    );
    assert!(
        errs[0].hint.as_deref().unwrap().contains("spaces"),
        "{}",
        errs[0]
    );
    // Three fields of the wrong shape: three errors, in file order, each at its own line.
    let source = with("tier: schema", "tier: bogus")
        .replace("display_name: Acme Health", "display_name: [5]")
        .replace("usage_days: 30", "usage_days: -1");
    let errs = parse(&source);
    let got: Vec<_> = errs.iter().map(|e| (e.path.as_str(), e.line)).collect();
    assert_eq!(
        got,
        [
            ("display_name", Some(3)),
            ("tier", Some(4)),
            ("retention.usage_days", Some(15))
        ],
        "{errs:?}"
    );
    // Three values the rules refuse: three errors too.
    let source = with("usage_days: 30", "usage_days: 9999")
        .replace("display_name: Acme Health", "display_name: \"  \"")
        .replace("cost-center: cc-1", "team: x");
    let errs = parse(&source);
    let got: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        got,
        ["display_name", "tags", "retention.usage_days"],
        "{errs:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("acme-copy.yaml"), GOOD).unwrap();
    let errors = load_all(&[dir.path().to_owned()], &Platform::builtin()).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .message
            .contains("named `acme-copy.yaml` but declares tenant `acme`")
            && errors[0].hint.as_deref().unwrap().contains("`acme.yaml`")
            && errors[0].line == Some(2),
        "{}",
        errors[0]
    );
}

#[test]
fn example_manifests_are_valid() {
    let specs = load_all(
        &[cli::testing::repo_root().join("tenants")],
        &Platform::builtin(),
    )
    .unwrap();
    let ids: Vec<_> = specs.iter().map(|(_, s)| s.id.to_string()).collect();
    assert_eq!(ids, vec!["acme", "globex"]);
}

#[test]
fn the_checked_in_json_schema_is_current() {
    let path = cli::testing::repo_root().join("docs/manifest.schema.json");
    let current = cli::manifest::raw::json_schema();
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &current).unwrap();
        return;
    }
    assert!(
        checked_in == current,
        "`docs/manifest.schema.json` is stale; regenerate it with `UPDATE_SCHEMA=1 cargo test -p cli --test it schema`"
    );
}
