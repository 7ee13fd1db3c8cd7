//! The OpenAPI document agrees with API.md's paths.

use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn openapi_document_lists_the_api() {
    let app = spawn_app().await;
    let doc: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/tenants",
        "/admin/tenants",
        "/admin/tenants/{id}",
        "/admin/tenants/{id}/suspend",
        "/admin/tenants/{id}/resume",
        "/admin/tenants/{id}/restore",
        "/admin/tasks",
        "/admin/actors",
        "/tenant",
        "/tenant/export",
        "/auth/login",
        "/api-keys",
        "/api-keys/{id}",
        "/users",
        "/users/{id}",
        "/projects",
        "/projects/{id}",
        "/projects/{id}/members",
        "/projects/{id}/members/{user_id}",
        "/tasks",
        "/tasks/{id}",
        "/audit-logs",
        "/analytics/events",
        "/analytics/summary",
        "/analytics/timeseries",
        "/ws/analytics",
        "/plans",
        "/admin/plans/{plan}",
        "/admin/tenants/{id}/plan",
        "/settings",
        "/settings/branding",
        "/branding",
        "/webhooks",
        "/webhooks/{id}",
        "/webhooks/{id}/test",
        "/webhooks/{id}/deliveries",
        "/webhooks/{id}/deliveries/{delivery_id}/retry",
        "/webhooks/{id}/replay-dead",
        "/webhooks/{id}/rotate-secret",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from /openapi.json"
        );
    }
    let docs = app.http.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(docs.status().as_u16(), 200);
    assert!(docs.text().await.unwrap().to_lowercase().contains("redoc"));
}
