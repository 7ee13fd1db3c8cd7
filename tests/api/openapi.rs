//! The OpenAPI document agrees with API.md's paths.

use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn openapi_document_lists_the_api() {
    let app = spawn_app().await;
    let doc = app.openapi().await;
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
    let doc = app.openapi().await;
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

/// The answers given before a handler runs are declared on every operation they apply to, as
/// problem details (src/http/openapi_common.rs).
#[tokio::test]
async fn error_answers_are_declared_as_problem_details() {
    let app = spawn_app().await;
    let doc = app.openapi().await;
    let statuses = |path: &str, method: &str| -> Vec<String> {
        let responses = doc["paths"][path][method]["responses"].as_object().unwrap();
        responses.keys().cloned().collect()
    };
    for status in [
        "400", "401", "402", "403", "404", "413", "415", "422", "429", "503",
    ] {
        assert!(
            statuses("/tasks", "post").iter().any(|s| s == status),
            "{status}"
        );
    }
    assert!(!statuses("/tasks", "get").iter().any(|s| s == "402"));
    assert!(statuses("/admin/tenants/{id}", "get")
        .iter()
        .any(|s| s == "401"));
    assert!(statuses("/branding", "get").iter().any(|s| s == "400"));
    let mut errors = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let Some(responses) = operation["responses"].as_object() else {
                continue;
            };
            for (status, response) in responses {
                if status.parse::<u16>().is_ok_and(|s| s >= 400) {
                    errors += 1;
                    assert!(
                        !response["content"]["application/problem+json"].is_null(),
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    assert!(errors > 200, "{errors}");
    assert_eq!(
        doc["components"]["schemas"]["Problem"]["required"],
        serde_json::json!(["type", "title", "status", "code"])
    );
}
