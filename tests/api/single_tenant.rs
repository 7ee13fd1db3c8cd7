//! DEFAULT_TENANT (issue 15 item 7, docs/single-tenant.md): a client that names no tenant is
//! served by the default tenant, and every other rule of the resolution holds.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app_with, test_config, TestApp, TestTenant};

async fn app_with_default(slug: &str) -> TestApp {
    let (mut config, database) = test_config().await;
    config.default_tenant = Some(slug.to_string());
    spawn_app_with(config, database).await
}

async fn login(app: &TestApp, who: &TestTenant, header: Option<&str>) -> reqwest::Response {
    let mut request = app.http.post(app.url("/auth/login"));
    if let Some(tenant) = header {
        request = request.header("X-Tenant-ID", tenant);
    }
    request
        .json(&json!({"email": who.admin_email, "password": who.admin_password}))
        .send()
        .await
        .expect("POST /auth/login")
}

async fn slug_of(response: reqwest::Response) -> String {
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.expect("json");
    body["slug"].as_str().expect("slug").to_string()
}

#[tokio::test]
async fn requests_naming_no_tenant_go_to_the_default_one_and_no_other_rule_changes() {
    let app = app_with_default("legacy").await;
    let legacy = app.create_tenant("legacy").await;
    let other = app.create_tenant("other").await;

    // A pre-tenancy client: login with email and password only, then its token alone.
    let r = login(&app, &legacy, None).await;
    assert_eq!(r.status().as_u16(), 200, "login without a tenant named");
    let body: Value = r.json().await.expect("json");
    let token = body["token"].as_str().expect("token").to_string();
    let r = app.get("/tenant", &token).send().await.unwrap();
    assert_eq!(slug_of(r).await, "legacy");

    // Public endpoints too: the default tenant's branding, not a 400.
    let r = app.http.get(app.url("/branding")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "GET /branding without a tenant");

    // No credentials on an authenticated route: the tenant resolves, then 401 (not 400).
    let r = app.http.get(app.url("/tasks")).send().await.unwrap();
    assert_problem(r, 401, "unauthorized").await;

    // Another tenant's user cannot log in through the default tenant.
    let r = login(&app, &other, None).await;
    assert_problem(r, 401, "unauthorized").await;

    // A token names its own tenant: the default does not override it.
    let r = app.get("/tenant", &other.token).send().await.unwrap();
    assert_eq!(slug_of(r).await, "other");

    // A token of one tenant with another tenant's header: 403, as without DEFAULT_TENANT.
    let r = app
        .get("/tenant", &other.token)
        .header("X-Tenant-ID", "legacy")
        .send()
        .await
        .unwrap();
    assert_problem(r, 403, "forbidden").await;
    let r = app
        .get("/tenant", &legacy.token)
        .header("X-Tenant-ID", "other")
        .send()
        .await
        .unwrap();
    assert_problem(r, 403, "forbidden").await;

    // A header naming an unknown tenant is still 404: the default is not a fallback.
    let r = login(&app, &legacy, Some("nobody")).await;
    assert_problem(r, 404, "not_found").await;
    let r = app
        .http
        .get(app.url("/tasks"))
        .header("X-Tenant-ID", "nobody")
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "not_found").await;

    // An unreadable token is the client's error (401), not a request for the default tenant.
    let r = app.get("/tenant", "not-a-token").send().await.unwrap();
    assert_problem(r, 401, "unauthorized").await;
}

#[tokio::test]
async fn a_default_tenant_that_does_not_exist_is_404_not_another_tenant() {
    let app = app_with_default("ghost").await;
    let real = app.create_tenant("real").await;
    let r = app.http.get(app.url("/branding")).send().await.unwrap();
    assert_problem(r, 404, "not_found").await;
    let r = login(&app, &real, None).await;
    assert_problem(r, 404, "not_found").await;
}
