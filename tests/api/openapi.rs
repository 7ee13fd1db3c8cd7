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

/// The routes API.md names, as (method, path template).
fn api_md_routes() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/API.md"))
        .expect("docs/API.md");
    let methods = ["GET", "POST", "PUT", "PATCH", "DELETE"];
    let mut routes = Vec::new();
    for code in text.split('`').skip(1).step_by(2) {
        let Some((verbs, path)) = code.split_once(' ') else {
            continue;
        };
        if !path.starts_with('/') || !verbs.split('|').all(|v| methods.contains(&v)) {
            continue;
        }
        let path = path.split(['?', ' ']).next().unwrap_or(path);
        for verb in verbs.split('|') {
            routes.push((verb.to_owned(), path.to_owned()));
        }
    }
    routes.sort();
    routes.dedup();
    routes
}

/// Every route of API.md that the server serves (anything but its "route not found") is in
/// /openapi.json with its method; the routes not built yet are listed, not failed.
#[tokio::test]
async fn every_route_the_server_serves_is_documented() {
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
    let routes = api_md_routes();
    assert!(routes.len() > 50, "{routes:?}");
    let (mut served, mut missing, mut not_built) = (0, Vec::new(), Vec::new());
    for (method, template) in routes {
        // The document itself and the pages it serves are not API operations.
        if ["/openapi.json", "/docs"].contains(&template.as_str()) || template.starts_with("/app/")
        {
            continue;
        }
        let concrete = template
            .split('/')
            .map(|s| {
                if s.starts_with('{') {
                    "0190a1b2-0000-7000-8000-000000000000"
                } else {
                    s
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let response = app
            .http
            .request(method.parse().unwrap(), app.url(&concrete))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status == 404 && body["detail"] == "route not found" {
            not_built.push(format!("{method} {template}"));
            continue;
        }
        served += 1;
        if doc["paths"][&template][method.to_lowercase()].is_null() {
            missing.push(format!("{method} {template}"));
        }
    }
    eprintln!("API.md routes not served yet: {not_built:?}");
    assert!(served > 50, "{served} served; not built: {not_built:?}");
    assert!(
        missing.is_empty(),
        "served but not in /openapi.json: {missing:?}"
    );
}
