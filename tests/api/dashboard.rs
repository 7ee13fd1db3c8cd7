//! The dashboard: how `/app/`, its assets and `/docs` are served (plain HTTP), and the
//! dashboard itself in Chromium with Playwright (tests/browser/, run with `npx playwright
//! test` against a server started here, with tenants provisioned through the API).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::fixtures::expect;
use crate::helpers::{spawn_app, spawn_app_with, test_config, OPERATOR_TOKEN};

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_dashboard_is_served_from_the_binary_with_its_cache_and_csp_headers() {
    let app = spawn_app().await;
    let index = app.http.get(app.url("/app/")).send().await.unwrap();
    assert_eq!(index.status().as_u16(), 200);
    assert_eq!(header(&index, "cache-control"), "no-cache");
    assert!(header(&index, "content-type").starts_with("text/html"));
    let csp = header(&index, "content-security-policy").to_string();
    for directive in [
        "default-src 'self'",
        "script-src 'self';",
        "style-src 'self';",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert!(
        csp.contains(&format!("ws://127.0.0.1:{}", app.port)),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    let html = index.text().await.unwrap();
    assert!(!html.contains("<script>"), "no inline script");
    let script = html
        .split("src=\"")
        .map(|s| s.split('"').next().unwrap_or_default())
        .find(|s| s.ends_with("/js/app.js"))
        .expect("index.html loads js/app.js")
        .to_string();
    assert!(script.starts_with("/app/assets/"), "{script}");

    let asset = app.http.get(app.url(&script)).send().await.unwrap();
    assert_eq!(asset.status().as_u16(), 200);
    assert_eq!(
        header(&asset, "cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert!(header(&asset, "content-type").starts_with("text/javascript"));

    // Another build's hash is not today's file: it would be cached for a year.
    let stale = script.replacen("/app/assets/", "/app/assets/0000", 1);
    let r = app.http.get(app.url(&stale)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let hash = script.split('/').nth(3).unwrap();
    // (A literal `../`, or `%2e%2e/`, is resolved by the client before it is sent.)
    for path in ["..%2fCargo.toml", "..%2f..%2fCargo.toml", "nothing.js"] {
        let r = app
            .http
            .get(app.url(&format!("/app/assets/{hash}/{path}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path}");
    }

    // Deep links, the operators' console and /app itself serve the page.
    for path in [
        "/app/tasks",
        "/app/settings",
        "/app/operator/",
        "/app/operator/actors",
    ] {
        let r = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        assert_eq!(r.text().await.unwrap(), html, "{path}");
    }
    let r = app.http.get(app.url("/app")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 308);
    assert_eq!(header(&r, "location"), "/app/");

    // /docs: Redoc from this server, not a CDN.
    let docs = app.http.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(docs.status().as_u16(), 200);
    assert!(header(&docs, "content-security-policy").contains("script-src 'self';"));
    let page = docs.text().await.unwrap();
    assert!(
        !page.contains("https://"),
        "no foreign URL in /docs: {page}"
    );
    let redoc = page
        .split("src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a script");
    let r = app.http.get(app.url(redoc)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.unwrap().contains("Redoc"));
}

/// Chromium's path when everything the browser tests need is here, else why not.
fn browser_prerequisites(dir: &Path) -> Result<PathBuf, String> {
    let node = Command::new("node").arg("--version").output();
    if !node.as_ref().is_ok_and(|o| o.status.success()) {
        return Err("node is not installed".into());
    }
    let chromium =
        PathBuf::from(std::env::var("CHROMIUM_PATH").unwrap_or("/usr/bin/chromium".into()));
    if !chromium.exists() {
        return Err(format!(
            "{} is missing (apt-get install chromium)",
            chromium.display()
        ));
    }
    if !dir.join("node_modules/@playwright/test").exists() {
        return Err(
            "tests/browser/node_modules is missing: run npm ci --prefix tests/browser".into(),
        );
    }
    Ok(chromium)
}

/// tests/browser/dashboard.spec.js in Debian's Chromium. scripts/test.sh installs its packages
/// and scripts/services.sh Chromium; a local run without them skips this test with a message,
/// CI must run it. Screenshots of every page land in target/screenshots/.
#[tokio::test]
async fn the_dashboard_works_in_a_real_browser() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests/browser");
    let chromium = match browser_prerequisites(&dir) {
        Ok(path) => path,
        Err(reason) => {
            assert!(!ci, "the browser tests are required under CI: {reason}");
            eprintln!("SKIPPED the_dashboard_works_in_a_real_browser: {reason}");
            return;
        }
    };
    let (mut config, database) = test_config().await;
    // One browser signs in a dozen times from one address within a minute, as nobody would.
    config.rate_limits.login_attempts_per_minute = 10_000;
    config.rate_limits.public_requests_per_minute = 10_000;
    config.rate_limits.tenants = false;
    // The webhooks page's endpoint is a receiver the test runs on this machine (http, loopback).
    config.webhook_allow_private_targets = true;
    let app = spawn_app_with(config, database).await;
    let a = app.create_tenant_on_plan("dash-a", "pro").await;
    let b = app.create_tenant_on_plan("dash-b", "free").await;
    let member_password = "member-password-123";
    expect(
        app.post("/users", &a.token)
            .json(
                &json!({"email": "member@dash-a.example.com", "name": "Mia Member",
                "role": "member", "password": member_password}),
            )
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;

    let envs = [
        ("DASH_BASE_URL", app.address.clone()),
        ("DASH_OPERATOR_TOKEN", OPERATOR_TOKEN.to_string()),
        ("DASH_A_SLUG", a.slug.clone()),
        ("DASH_A_EMAIL", a.admin_email.clone()),
        ("DASH_A_PASSWORD", a.admin_password.clone()),
        ("DASH_A_TOKEN", a.token.clone()),
        ("DASH_B_SLUG", b.slug.clone()),
        ("DASH_B_EMAIL", b.admin_email.clone()),
        ("DASH_B_PASSWORD", b.admin_password.clone()),
        ("DASH_B_TOKEN", b.token.clone()),
        ("DASH_MEMBER_EMAIL", "member@dash-a.example.com".to_string()),
        ("DASH_MEMBER_PASSWORD", member_password.to_string()),
        (
            "DASH_SCREENSHOTS",
            root.join("target/screenshots").display().to_string(),
        ),
        (
            "DASH_OUTPUT_DIR",
            root.join("target/playwright").display().to_string(),
        ),
        ("CHROMIUM_PATH", chromium.display().to_string()),
    ];
    let output = tokio::task::spawn_blocking(move || {
        Command::new("npx")
            .args(["--no-install", "playwright", "test"])
            .current_dir(&dir)
            .envs(envs)
            .output()
    })
    .await
    .unwrap()
    .expect("run npx playwright test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "playwright failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(" passed"), "{stdout}");
    assert!(!stdout.contains(" skipped"), "{stdout}");
}
