//! The API fuzzed from its own description: schemathesis (PyPI, pinned in
//! tests/clients/requirements-schemathesis.txt) over /openapi.json against a real server, with a
//! tenant admin's JWT and the platform token (tests/clients/schemathesis.toml maps them to the
//! document's security schemes). No 5xx; statuses, content types and bodies as declared.
//! scripts/test.sh installs schemathesis in target/schemathesis-venv; under CI a missing install
//! fails, a local run without it skips with a message. docs/testing.md says how to run it.

use std::path::Path;
use std::process::Command;

use crate::helpers::{spawn_app_with, test_config, OPERATOR_TOKEN};

/// Examples per operation and phase: bounded so the run stays near a minute on a busy machine.
const MAX_EXAMPLES: &str = "8";

#[tokio::test]
async fn schemathesis_finds_no_server_error_or_schema_mismatch() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let schemathesis = root.join("target/schemathesis-venv/bin/schemathesis");
    if !schemathesis.exists() {
        assert!(
            !ci,
            "schemathesis is required under CI (scripts/test.sh installs it)"
        );
        eprintln!(
            "SKIPPED schemathesis: python3 -m venv target/schemathesis-venv && \
             target/schemathesis-venv/bin/pip install -r tests/clients/requirements-schemathesis.txt"
        );
        return;
    }
    let (mut config, database) = test_config().await;
    // Generated requests come from one address at a high rate: limits would answer 429 and
    // hide what the handlers do (the limits have their own tests).
    config.rate_limits.tenants = false;
    config.rate_limits.login_attempts_per_minute = 10_000;
    config.rate_limits.public_requests_per_minute = 1_000_000;
    // As a deployment that takes Stripe's events has: without a secret the endpoint answers 503
    // (not configured), which is right, but not what this run is about.
    config.billing.stripe_webhook_secrets = vec!["whsec_schemathesis".to_string().into()];
    let app = spawn_app_with(config, database).await;
    let tenant = app.create_tenant_on_plan("fuzzed", "pro").await;
    let schema = app.url("/openapi.json");
    // The tenant's operations first, the operator's after: these suspend and delete tenants,
    // the fuzzed one included once they learn its id.
    let operator_paths = "^/(admin/|tenants$)";
    for (run, filter) in [
        ("tenant", "--exclude-path-regex"),
        ("operator", "--include-path-regex"),
    ] {
        let (schemathesis, root, schema) = (schemathesis.clone(), root.to_owned(), schema.clone());
        let token = tenant.token.clone();
        let output = tokio::task::spawn_blocking(move || {
            // schemathesis keeps a cache in its working directory: under target/, not the tree.
            let workdir = root.join("target/schemathesis-report");
            std::fs::create_dir_all(&workdir)?;
            Command::new(schemathesis)
                .current_dir(workdir)
                .arg("--config-file")
                .arg(root.join("tests/clients/schemathesis.toml"))
                .args(["run", &schema, "--max-examples", MAX_EXAMPLES])
                .args([filter, operator_paths])
                .args(["--phases", "examples,coverage,fuzzing"])
                .args([
                    "--checks",
                    "not_a_server_error,status_code_conformance,content_type_conformance,\
                     response_schema_conformance",
                ])
                // One worker: hypothesis' lambda descriptions are not thread-safe on CPython 3.11.
                .args(["--seed", "17", "--workers", "1", "--request-timeout", "20"])
                .args(["--generation-database", "none", "--no-color"])
                // The WebSocket upgrade is not an HTTP exchange schemathesis can judge.
                .args(["--exclude-path", "/ws/analytics"])
                // The operations without credentials (login, branding) name the tenant by header.
                .args(["--header", "X-Tenant-ID: fuzzed"])
                .arg("--report-dir")
                .arg(root.join("target/schemathesis-report").join(run))
                .env("TENANTRY_TENANT_TOKEN", token)
                .env("TENANTRY_OPERATOR_TOKEN", OPERATOR_TOKEN)
                .output()
        })
        .await
        .unwrap()
        .expect("run schemathesis");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "schemathesis ({run} operations) failed:\n{stdout}\n{stderr}"
        );
        eprintln!("{stdout}");
    }
}
