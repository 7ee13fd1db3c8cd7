use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let r = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn provisioning_returns_a_working_admin_token() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("acme").await;
    let r = app.get("/tenant", &tenant.token).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["slug"], "acme");
    assert_eq!(body["status"], "active");

    let r = app
        .create_tenant_raw(&json!({"name": "x", "slug": "acme", "admin_email": "a@b.co"}))
        .await;
    assert_problem(r, 409, "conflict").await;
}
