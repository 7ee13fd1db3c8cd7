//! Login and API keys.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn login_issues_a_token_and_refuses_wrong_credentials() {
    let app = spawn_app().await;
    let a = app.create_tenant("acme").await;
    let r = app
        .http
        .post(app.url("/auth/login"))
        .header("X-Tenant-ID", "acme")
        .json(&json!({"email": a.admin_email.to_uppercase(), "password": a.admin_password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["user"]["role"], "admin");
    assert_eq!(body["user"]["id"], a.admin_id.to_string());
    assert!(
        body["expires_at"].as_str().unwrap().ends_with('Z')
            || body["expires_at"].as_str().unwrap().contains("+00:00")
    );
    let token = body["token"].as_str().unwrap();
    assert_eq!(
        app.get("/tenant", token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );

    for (email, password) in [
        (a.admin_email.as_str(), "wrong-password!"),
        ("nobody@acme.example.com", "whatever-123"),
    ] {
        let r = app
            .http
            .post(app.url("/auth/login"))
            .header("X-Tenant-ID", "acme")
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap();
        assert_problem(r, 401, "unauthorized").await;
    }
    let r = app
        .http
        .post(app.url("/auth/login"))
        .header("X-Tenant-ID", "acme")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_problem(r, 400, "bad_request").await;
}

#[tokio::test]
async fn api_keys_need_a_plan_with_api_access() {
    let app = spawn_app().await;
    let free = app.create_tenant("freeco").await;
    let r = app
        .post("/api-keys", &free.token)
        .json(&json!({"name": "ci"}))
        .send()
        .await
        .unwrap();
    let body = assert_problem(r, 403, "plan_required").await;
    assert_eq!(body["required_plan"], "pro");
}

#[tokio::test]
async fn api_keys_work_once_created_and_stop_when_revoked() {
    let app = spawn_app().await;
    let pro = app.create_tenant_on_plan("proco", "pro").await;
    let other = app.create_tenant_on_plan("otherco", "pro").await;
    let r = app
        .post("/api-keys", &pro.token)
        .json(&json!({"name": "ci"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let created: Value = r.json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("tk_"));

    let r = app.get("/tenant", &key).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let tenant: Value = r.json().await.unwrap();
    assert_eq!(tenant["slug"], "proco");

    // Listing never shows the key, only its prefix; only a hash is stored.
    let list: Value = app
        .get("/api-keys", &pro.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains(&key));
    let db = app.superuser_db().await;
    let stored: String = db
        .query_one(
            "select key_hash from app.api_keys where tenant_id = $1",
            &[&pro.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_ne!(stored, key);
    assert_eq!(stored, tenantry::auth::api_keys::hash(&key));

    // The key of one tenant used with another tenant's header: 403.
    let r = app
        .get("/tenant", &key)
        .header("X-Tenant-ID", "otherco")
        .send()
        .await
        .unwrap();
    assert_problem(r, 403, "forbidden").await;
    // A key edited to claim another tenant is not found there: 401.
    let forged = key.replacen(
        &pro.id.simple().to_string(),
        &other.id.simple().to_string(),
        1,
    );
    assert_problem(
        app.get("/tenant", &forged).send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;

    let id = created["id"].as_str().unwrap();
    let r = app
        .delete(&format!("/api-keys/{id}"), &pro.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_problem(
        app.get("/tenant", &key).send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    // Another tenant cannot revoke it (404, not 403).
    let r = app
        .delete(&format!("/api-keys/{id}"), &other.token)
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "not_found").await;
}
