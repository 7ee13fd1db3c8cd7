//! The OpenFeature Remote Evaluation Protocol through real clients: the OpenFeature Rust SDK
//! with its OFREP provider, and the JavaScript server SDK with its OFREP provider
//! (tests/clients/ofrep.mjs, run with `node`); the protocol's bodies, statuses and the bulk
//! ETag checked with plain HTTP.

use std::process::Command;
use std::time::Duration;

use open_feature::{EvaluationContext, EvaluationErrorCode, OpenFeature, StructValue};
use open_feature_ofrep::{OfrepOptions, OfrepProvider};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde_json::json;

use crate::fixtures::expect;
use crate::flags::{define, put_override};
use crate::helpers::{assert_problem, spawn_app, TestApp, TestTenant};

/// The flags both clients evaluate, for a tenant on the pro plan (tests/clients/ofrep.mjs
/// expects exactly these).
async fn define_client_flags(app: &TestApp, tenant: &TestTenant) {
    define(
        app,
        "client-beta",
        json!({"default": false, "plans": {"pro": true}}),
    )
    .await;
    define(app, "client-banner", json!({"default": "hello"})).await;
    define(
        app,
        "client-max-rows",
        json!({"default": 10, "plans": {"pro": 100}}),
    )
    .await;
    define(app, "client-ratio", json!({"default": 0.25})).await;
    define(app, "client-theme", json!({"default": {"color": "blue"}})).await;
    let r = put_override(
        app,
        tenant.id,
        "client-theme",
        json!({"value": {"color": "gold", "dark": true}}),
    )
    .await;
    expect(r, 201).await;
    define(
        app,
        "Feature.flexibleRollout.10",
        json!({"default": false, "plans": {"pro": true}, "rollout_percent": 10}),
    )
    .await;
}

async fn sdk_client(app: &TestApp, token: &str) -> open_feature::Client {
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    let provider = OfrepProvider::new(OfrepOptions {
        base_url: app.address.clone(),
        headers,
        connect_timeout: Duration::from_secs(5),
    })
    .await
    .unwrap();
    // An API of its own rather than the process-wide singleton: tests run in parallel.
    let mut api = OpenFeature::default();
    api.set_provider(provider).await;
    api.create_client()
}

#[tokio::test]
async fn the_rust_sdk_evaluates_every_type() {
    let app = spawn_app().await;
    let t = app.create_tenant_on_plan("rust-sdk", "pro").await;
    define_client_flags(&app, &t).await;
    let client = sdk_client(&app, &t.token).await;

    let beta = client
        .get_bool_details("client-beta", None, None)
        .await
        .unwrap();
    assert!(beta.value);
    assert_eq!(beta.variant.as_deref(), Some("plan"));
    let banner = client
        .get_string_value("client-banner", None, None)
        .await
        .unwrap();
    assert_eq!(banner, "hello");
    let rows = client
        .get_int_value("client-max-rows", None, None)
        .await
        .unwrap();
    assert_eq!(rows, 100);
    let ratio = client
        .get_float_value("client-ratio", None, None)
        .await
        .unwrap();
    assert_eq!(ratio, 0.25);
    let theme = client
        .get_struct_details::<StructValue>("client-theme", None, None)
        .await
        .unwrap();
    assert_eq!(theme.variant.as_deref(), Some("override"));
    assert_eq!(
        theme.value.fields.get("color"),
        Some(&open_feature::Value::String("gold".into()))
    );
    assert_eq!(
        theme.value.fields.get("dark"),
        Some(&open_feature::Value::Bool(true))
    );

    // The evaluation context's targeting key picks the rollout bucket (Unleash's vectors).
    let user = |key: &str| EvaluationContext::default().with_targeting_key(key);
    let in_rollout = client
        .get_bool_value("Feature.flexibleRollout.10", Some(&user("174")), None)
        .await
        .unwrap();
    let outside = client
        .get_bool_value("Feature.flexibleRollout.10", Some(&user("499")), None)
        .await
        .unwrap();
    assert!(in_rollout && !outside);

    let missing = client
        .get_bool_details("client-missing", None, None)
        .await
        .unwrap_err();
    assert_eq!(missing.code, EvaluationErrorCode::FlagNotFound);
    // A string flag asked for as a boolean: the provider refuses the value (it reports the
    // mismatch as PARSE_ERROR; the SDK's own casts report TYPE_MISMATCH).
    let mismatch = client
        .get_bool_details("client-banner", None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            mismatch.code,
            EvaluationErrorCode::ParseError | EvaluationErrorCode::TypeMismatch
        ),
        "{mismatch:?}"
    );
    let mismatch = client
        .get_int_details("client-theme", None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            mismatch.code,
            EvaluationErrorCode::ParseError | EvaluationErrorCode::TypeMismatch
        ),
        "{mismatch:?}"
    );

    // Wrong credentials reach the SDK as an error, never as a value.
    let stranger = sdk_client(&app, "not-a-token").await;
    assert!(stranger
        .get_bool_value("client-beta", None, None)
        .await
        .is_err());
}

async fn evaluate(app: &TestApp, token: &str, key: &str, body: &str) -> reqwest::Response {
    app.post(&format!("/ofrep/v1/evaluate/flags/{key}"), token)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn single_evaluations_follow_the_protocol() {
    let app = spawn_app().await;
    let t = app.create_tenant_on_plan("ofrep-single", "pro").await;
    define_client_flags(&app, &t).await;
    define(
        &app,
        "gone-for-pro",
        json!({"default": 1, "plans": {"free": 2}}),
    )
    .await;
    define(
        &app,
        "off",
        json!({"default": 1, "plans": {"pro": 2}, "rollout_percent": 0}),
    )
    .await;
    let ctx = r#"{"context": {"targetingKey": "174"}}"#;

    let body = expect(evaluate(&app, &t.token, "client-beta", ctx).await, 200).await;
    assert_eq!(
        body,
        json!({"key": "client-beta", "value": true, "reason": "TARGETING_MATCH", "variant": "plan", "metadata": {"version": 1}})
    );
    for (key, value, reason, variant) in [
        ("client-banner", json!("hello"), "STATIC", "default"),
        (
            "client-theme",
            json!({"color": "gold", "dark": true}),
            "TARGETING_MATCH",
            "override",
        ),
        ("Feature.flexibleRollout.10", json!(true), "SPLIT", "plan"),
        ("gone-for-pro", json!(1), "DEFAULT", "default"),
        ("off", json!(1), "DISABLED", "default"),
    ] {
        let body = expect(evaluate(&app, &t.token, key, ctx).await, 200).await;
        assert_eq!(
            (
                body["value"].clone(),
                body["reason"].clone(),
                body["variant"].clone()
            ),
            (value, json!(reason), json!(variant)),
            "{key}"
        );
    }
    // Without a targeting key the caller is the subject; the context may carry anything else.
    let body = expect(
        evaluate(
            &app,
            &t.token,
            "client-max-rows",
            r#"{"context": {"plan": "free", "email": "x@y.z"}}"#,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(body["value"], 100);

    // Protocol errors: the key, an OFREP error code and details.
    for (body, status, code) in [
        ("not json", 400, "PARSE_ERROR"),
        ("[1, 2]", 400, "PARSE_ERROR"),
        ("{}", 400, "INVALID_CONTEXT"),
        (r#"{"context": "x"}"#, 400, "INVALID_CONTEXT"),
        (
            r#"{"context": {"targetingKey": 42}}"#,
            400,
            "INVALID_CONTEXT",
        ),
    ] {
        let r = evaluate(&app, &t.token, "client-beta", body).await;
        let failure = expect(r, status).await;
        assert_eq!(failure["key"], "client-beta", "{body}");
        assert_eq!(failure["errorCode"], code, "{body}");
        assert!(failure["errorDetails"]
            .as_str()
            .is_some_and(|d| !d.is_empty()));
    }
    let failure = expect(evaluate(&app, &t.token, "client-missing", ctx).await, 404).await;
    assert_eq!(failure["key"], "client-missing");
    assert_eq!(failure["errorCode"], "FLAG_NOT_FOUND");

    // Credentials: 401 without or with a bad one, 403 for another tenant's name.
    let r = app
        .http
        .post(app.url("/ofrep/v1/evaluate/flags/client-beta"))
        .header("X-Tenant-ID", "ofrep-single")
        .json(&json!({"context": {}}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 401, "unauthorized").await;
    assert_problem(
        evaluate(&app, "garbage", "client-beta", ctx).await,
        401,
        "unauthorized",
    )
    .await;
    let other = app.create_tenant_on_plan("ofrep-other", "pro").await;
    let r = app
        .post("/ofrep/v1/evaluate/flags/client-beta", &other.token)
        .header("X-Tenant-ID", "ofrep-single")
        .json(&json!({"context": {}}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 403, "forbidden").await;
}

async fn bulk(app: &TestApp, token: &str, etag: Option<&str>) -> reqwest::Response {
    let mut request = app
        .post("/ofrep/v1/evaluate/flags", token)
        .json(&json!({"context": {"targetingKey": "174"}}));
    if let Some(etag) = etag {
        request = request.header("If-None-Match", etag);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn bulk_evaluation_answers_if_none_match_with_304() {
    let app = spawn_app().await;
    let t = app.create_tenant_on_plan("ofrep-bulk", "pro").await;
    define_client_flags(&app, &t).await;

    let r = bulk(&app, &t.token, None).await;
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let body = expect(r, 200).await;
    let keys: Vec<&str> = body["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        vec![
            "Feature.flexibleRollout.10",
            "client-banner",
            "client-beta",
            "client-max-rows",
            "client-ratio",
            "client-theme"
        ]
    );
    assert_eq!(
        body["flags"][2],
        json!({"key": "client-beta", "value": true, "reason": "TARGETING_MATCH", "variant": "plan", "metadata": {"version": 1}})
    );

    // Unchanged: 304 with the same ETag and no body, also among other tags or as a weak tag.
    for header in [etag.clone(), format!("\"x\", {etag}"), format!("W/{etag}")] {
        let r = bulk(&app, &t.token, Some(&header)).await;
        assert_eq!(r.status().as_u16(), 304, "{header}");
        assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
        assert!(r.bytes().await.unwrap().is_empty());
    }
    let r = bulk(&app, &t.token, Some("\"stale\"")).await;
    assert_eq!(r.status().as_u16(), 200);

    // A change of what the tenant sees is a new ETag; another subject may see other values.
    let r = put_override(&app, t.id, "client-banner", json!({"value": "changed"})).await;
    expect(r, 201).await;
    let r = bulk(&app, &t.token, Some(&etag)).await;
    assert_eq!(r.status().as_u16(), 200);
    let changed = r.headers()["etag"].to_str().unwrap().to_string();
    assert_ne!(changed, etag);
    assert_eq!(expect(r, 200).await["flags"][1]["value"], "changed");
    let r = app
        .post("/ofrep/v1/evaluate/flags", &t.token)
        .json(&json!({"context": {"targetingKey": "499"}}))
        .send()
        .await
        .unwrap();
    assert_ne!(r.headers()["etag"].to_str().unwrap(), changed);
    assert_eq!(expect(r, 200).await["flags"][0]["value"], false);

    // Bulk failures carry no key.
    let r = app
        .post("/ofrep/v1/evaluate/flags", &t.token)
        .json(&json!({"context": []}))
        .send()
        .await
        .unwrap();
    let failure = expect(r, 400).await;
    assert_eq!(failure["errorCode"], "INVALID_CONTEXT");
    assert!(failure.get("key").is_none());
}

/// tests/clients/ofrep.mjs with the JavaScript SDK. scripts/test.sh installs its packages
/// (`npm ci --prefix tests/clients`) and, under CI, fails when Node is missing; a local run
/// without Node skips this test with a message.
#[tokio::test]
async fn the_javascript_sdk_evaluates_every_type() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let node = Command::new("node").arg("--version").output();
    if !node.as_ref().is_ok_and(|o| o.status.success()) {
        assert!(
            !ci,
            "node is required under CI (scripts/test.sh installs it)"
        );
        eprintln!("SKIPPED the_javascript_sdk_evaluates_every_type: node is not installed");
        return;
    }
    if !dir
        .join("node_modules/@openfeature/ofrep-provider")
        .exists()
    {
        assert!(
            !ci,
            "tests/clients/node_modules is missing: run npm ci --prefix tests/clients"
        );
        eprintln!("SKIPPED the_javascript_sdk_evaluates_every_type: run `npm ci --prefix tests/clients` first");
        return;
    }
    let app = spawn_app().await;
    let t = app.create_tenant_on_plan("js-sdk", "pro").await;
    define_client_flags(&app, &t).await;
    let address = app.address.clone();
    let token = t.token.clone();
    let script = dir.join("ofrep.mjs");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .env("OFREP_BASE_URL", address)
            .env("OFREP_TOKEN", token)
            .output()
    })
    .await
    .unwrap()
    .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "ofrep.mjs failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
