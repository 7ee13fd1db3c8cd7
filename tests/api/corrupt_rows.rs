//! A stored value this version does not know fails loudly: a task status is never read back as
//! `todo`, a role never as `member`, a tenant status never as `active`. The rows are written
//! behind the API's back, with the column's CHECK constraint dropped (as a newer version's
//! migration, or a hand edit, could leave them); reading them through the API is a 500 problem,
//! never a silently wrong value.

use serde_json::json;
use tenantry::auth::Role;
use uuid::Uuid;

use crate::fixtures::{create_project, create_task, expect, id_of, token_for};
use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn an_unknown_task_status_is_an_error_not_todo() {
    let app = spawn_app().await;
    let t = app.create_tenant("acme").await;
    let project = create_project(&app, &t.token, "Launch").await;
    let task = create_task(&app, &t.token, id_of(&project), "Write the post").await;
    let id = id_of(&task);
    let db = app.superuser_db().await;
    db.batch_execute("alter table app.tasks drop constraint tasks_status_check")
        .await
        .unwrap();
    db.execute(
        "update app.tasks set status = 'blocked' where tenant_id = $1 and id = $2",
        &[&t.id, &id],
    )
    .await
    .unwrap();

    let r = app
        .get(&format!("/tasks/{id}"), &t.token)
        .send()
        .await
        .unwrap();
    assert_problem(r, 500, "internal").await;
    let r = app.get("/tasks", &t.token).send().await.unwrap();
    assert_problem(r, 500, "internal").await;
    // A write that reads the row first fails the same way, and changes nothing.
    let r = app
        .patch(&format!("/tasks/{id}"), &t.token)
        .json(&json!({"title": "Renamed"}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 500, "internal").await;
    let title: String = db
        .query_one("select title from app.tasks where id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(title, "Write the post");
}

#[tokio::test]
async fn an_unknown_stored_role_is_an_error_not_member() {
    let app = spawn_app().await;
    let t = app.create_tenant("acme").await;
    let db = app.superuser_db().await;
    db.batch_execute("alter table app.users drop constraint users_role_check")
        .await
        .unwrap();
    let odd = Uuid::now_v7();
    db.execute(
        "insert into app.users (tenant_id, id, email, role) values ($1, $2, 'odd@acme.example.com', 'owner')",
        &[&t.id, &odd],
    )
    .await
    .unwrap();

    // Listing users reads the row.
    let r = app.get("/users", &t.token).send().await.unwrap();
    assert_problem(r, 500, "internal").await;
    // A token of that user: the live-user check reads the stored role.
    let token = token_for(&app, t.id, odd, Role::Member);
    let r = app.get("/tenant", &token).send().await.unwrap();
    assert_problem(r, 500, "internal").await;
    // Login reads the role it puts in the token.
    db.execute(
        "update app.users set role = 'owner' where tenant_id = $1 and id = $2",
        &[&t.id, &t.admin_id],
    )
    .await
    .unwrap();
    let r = app
        .http
        .post(app.url("/auth/login"))
        .header("X-Tenant-ID", "acme")
        .json(&json!({"email": t.admin_email, "password": t.admin_password}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 500, "internal").await;
}

#[tokio::test]
async fn an_unknown_api_key_role_is_an_error_not_member() {
    let app = spawn_app().await;
    let t = app.create_tenant_on_plan("proco", "pro").await;
    let r = app
        .post("/api-keys", &t.token)
        .json(&json!({"name": "ci", "role": "member"}))
        .send()
        .await
        .unwrap();
    let created = expect(r, 201).await;
    let key = created["key"].as_str().unwrap().to_string();
    let db = app.superuser_db().await;
    db.batch_execute("alter table app.api_keys drop constraint api_keys_role_check")
        .await
        .unwrap();
    db.execute(
        "update app.api_keys set role = 'owner' where tenant_id = $1",
        &[&t.id],
    )
    .await
    .unwrap();

    let r = app.get("/api-keys", &t.token).send().await.unwrap();
    assert_problem(r, 500, "internal").await;
    let r = app.get("/tenant", &key).send().await.unwrap();
    assert_problem(r, 500, "internal").await;
}

#[tokio::test]
async fn an_unknown_tenant_status_is_an_error_not_active() {
    let app = spawn_app().await;
    let t = app.create_tenant("acme").await;
    let db = app.superuser_db().await;
    db.batch_execute("alter table app.tenants drop constraint tenants_status_check")
        .await
        .unwrap();
    db.execute(
        "update app.tenants set status = 'frozen' where id = $1",
        &[&t.id],
    )
    .await
    .unwrap();

    let operator = |method: reqwest::Method, path: String| {
        app.operator(app.http.request(method, app.url(&path)))
            .send()
    };
    let r = operator(reqwest::Method::GET, format!("/admin/tenants/{}", t.id))
        .await
        .unwrap();
    assert_problem(r, 500, "internal").await;
    let r = operator(reqwest::Method::GET, "/admin/tenants".into())
        .await
        .unwrap();
    assert_problem(r, 500, "internal").await;
    let r = app.get("/tenant", &t.token).send().await.unwrap();
    assert_problem(r, 500, "internal").await;
    // An action that reads the row first fails the same way, and changes nothing.
    let r = operator(
        reqwest::Method::POST,
        format!("/admin/tenants/{}/resume", t.id),
    )
    .await
    .unwrap();
    assert_problem(r, 500, "internal").await;
    let status: String = db
        .query_one("select status from app.tenants where id = $1", &[&t.id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "frozen");
}
