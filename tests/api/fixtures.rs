//! Domain fixtures shared by the domain, isolation, audit, jobs and concurrency tests.

#![allow(dead_code)]

use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::{json, Value};
use tenantry::auth::{JwtKeys, Role};
use uuid::Uuid;

use crate::helpers::TestApp;

pub async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.expect("json body")
}

pub async fn expect(response: reqwest::Response, status: u16) -> Value {
    let got = response.status().as_u16();
    let text = response.text().await.expect("body");
    assert_eq!(got, status, "unexpected status, body: {text}");
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).expect("json body")
    }
}

pub fn id_of(value: &Value) -> Uuid {
    value["id"].as_str().expect("id").parse().expect("uuid")
}

pub async fn create_project(app: &TestApp, token: &str, name: &str) -> Value {
    let r = app
        .post("/projects", token)
        .json(&json!({"name": name, "description": format!("about {name}")}))
        .send()
        .await
        .unwrap();
    expect(r, 201).await
}

pub async fn create_task(app: &TestApp, token: &str, project: Uuid, title: &str) -> Value {
    let r = app
        .post("/tasks", token)
        .json(&json!({"project_id": project, "title": title}))
        .send()
        .await
        .unwrap();
    expect(r, 201).await
}

pub async fn create_user(app: &TestApp, token: &str, email: &str, role: &str) -> Value {
    let r = app
        .post("/users", token)
        .json(
            &json!({"email": email, "name": format!("User {email}"), "role": role,
                      "password": "a-long-enough-password"}),
        )
        .send()
        .await
        .unwrap();
    expect(r, 201).await
}

/// A token for a user created through POST /users (POST /auth/login may not exist yet).
pub fn token_for(app: &TestApp, tenant: Uuid, user: Uuid, role: Role) -> String {
    JwtKeys::hs256(
        app.config.jwt_secret.expose_secret(),
        Duration::from_secs(3600),
    )
    .issue(user, tenant, role)
    .expect("token")
    .0
}

pub fn ids(page: &Value) -> Vec<Uuid> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(id_of)
        .collect()
}
