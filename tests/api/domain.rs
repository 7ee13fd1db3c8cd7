//! The sample domain through HTTP: users, projects, members, tasks, pagination, soft delete.

use std::collections::HashSet;

use serde_json::{json, Value};
use tenantry::auth::Role;
use uuid::Uuid;

use crate::fixtures::{create_project, create_task, create_user, expect, id_of, ids, token_for};
use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn users_roles_and_self_service() {
    let app = spawn_app().await;
    let t = app.create_tenant("acme").await;

    // No password given: one is generated and shown once.
    let r = app
        .post("/users", &t.token)
        .json(&json!({"email": "bob@acme.example.com", "name": "Bob"}))
        .send()
        .await
        .unwrap();
    let bob = expect(r, 201).await;
    assert_eq!(bob["role"], "member");
    assert!(bob["password"].as_str().unwrap().len() >= 16);
    assert!(bob["created_at"].as_str().is_some());
    let bob_id = id_of(&bob);
    let stored: String = app
        .superuser_db()
        .await
        .query_one(
            "select password_hash from app.users where id = $1",
            &[&bob_id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(tenantry::auth::password::verify(
        bob["password"].as_str().unwrap(),
        &stored
    ));

    // A given password is not echoed.
    let carol = create_user(&app, &t.token, "carol@acme.example.com", "member").await;
    assert!(carol.get("password").is_none());
    let carol_id = id_of(&carol);

    // Duplicate email (case-insensitive) and validation.
    let r = app
        .post("/users", &t.token)
        .json(&json!({"email": "BOB@acme.example.com", "name": "Bob again"}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 409, "conflict").await;
    let r = app
        .post("/users", &t.token)
        .json(&json!({"email": "nope", "name": "", "password": "short"}))
        .send()
        .await
        .unwrap();
    let body = assert_problem(r, 422, "validation_failed").await;
    let fields: HashSet<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, HashSet::from(["email", "name", "password"]));
    let r = app
        .post("/users", &t.token)
        .json(&json!({"email": "x@acme.example.com", "name": "X", "role": "owner"}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 422, "validation_failed").await;

    // Members read, but do not manage users.
    let bob_token = token_for(&app, t.id, bob_id, Role::Member);
    let r = app.get("/users", &bob_token).send().await.unwrap();
    assert_eq!(ids(&expect(r, 200).await).len(), 3);
    let r = app
        .post("/users", &bob_token)
        .json(&json!({"email": "eve@acme.example.com", "name": "Eve"}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 403, "forbidden").await;
    let r = app
        .delete(&format!("/users/{carol_id}"), &bob_token)
        .send()
        .await
        .unwrap();
    assert_problem(r, 403, "forbidden").await;
    let r = app
        .patch(&format!("/users/{carol_id}"), &bob_token)
        .json(&json!({"name": "Not yours"}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 403, "forbidden").await;
    let r = app
        .patch(&format!("/users/{bob_id}"), &bob_token)
        .json(&json!({"role": "admin"}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 403, "forbidden").await;

    // A member changes their own name and password.
    let r = app
        .patch(&format!("/users/{bob_id}"), &bob_token)
        .json(&json!({"name": "Robert", "password": "a-new-long-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(expect(r, 200).await["name"], "Robert");
    let stored: String = app
        .superuser_db()
        .await
        .query_one(
            "select password_hash from app.users where id = $1",
            &[&bob_id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(tenantry::auth::password::verify(
        "a-new-long-password",
        &stored
    ));

    // Admins change roles; the old token of a promoted user stops working.
    let r = app
        .patch(&format!("/users/{bob_id}"), &t.token)
        .json(&json!({"role": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(expect(r, 200).await["role"], "admin");
    let r = app.get("/users", &bob_token).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // Unknown members are refused, never silently dropped.
    let r = app
        .patch(&format!("/users/{carol_id}"), &t.token)
        .json(&json!({"name": "C", "is_superuser": true}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 422, "validation_failed").await;
}

#[tokio::test]
async fn the_last_admin_stays() {
    let app = spawn_app().await;
    let t = app.create_tenant("acme").await;
    let me = t.admin_id;

    let r = app
        .delete(&format!("/users/{me}"), &t.token)
        .send()
        .await
        .unwrap();
    assert_problem(r, 409, "last_admin").await;
    let r = app
        .patch(&format!("/users/{me}"), &t.token)
        .json(&json!({"role": "member"}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 409, "last_admin").await;

    // With a second admin, the first may leave; their token dies with them.
    let other = create_user(&app, &t.token, "second@acme.example.com", "admin").await;
    let r = app
        .delete(&format!("/users/{me}"), &t.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let r = app.get("/users", &t.token).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);

    let other_token = token_for(&app, t.id, id_of(&other), Role::Admin);
    let r = app
        .get(&format!("/users/{me}"), &other_token)
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "not_found").await;
    let r = app.get("/users", &other_token).send().await.unwrap();
    assert_eq!(ids(&expect(r, 200).await), vec![id_of(&other)]);
}

#[tokio::test]
async fn seat_limit_of_the_plan() {
    let app = spawn_app().await;
    let t = app.create_tenant("acme").await;
    let db = app.superuser_db().await;
    app.set_plan_limit("free", "max_users", json!(2)).await;

    let second = create_user(&app, &t.token, "two@acme.example.com", "member").await;
    let r = app
        .post("/users", &t.token)
        .json(&json!({"email": "three@acme.example.com", "name": "Three"}))
        .send()
        .await
        .unwrap();
    let body = assert_problem(r, 402, "plan_limit").await;
    assert_eq!(body["limit"], 2);
    assert_eq!(body["current"], 2);

    // Deleted users do not hold a seat.
    let r = app
        .delete(&format!("/users/{}", id_of(&second)), &t.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    create_user(&app, &t.token, "three@acme.example.com", "member").await;

    // null means unlimited.
    app.set_plan_limit("free", "max_users", json!(null)).await;
    create_user(&app, &t.token, "four@acme.example.com", "member").await;

    // Concurrent creations cannot overshoot the limit.
    app.set_plan_limit("free", "max_users", json!(5)).await;
    let attempts = (0..6).map(|i| {
        let app = &app;
        let token = t.token.clone();
        async move {
            app.post("/users", &token)
                .json(
                    &json!({"email": format!("c{i}@acme.example.com"), "name": "C",
                              "password": "a-long-enough-password"}),
                )
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let statuses = futures_util::future::join_all(attempts).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 402).count(),
        4,
        "{statuses:?}"
    );
    let live: i64 = db
        .query_one(
            "select count(*) from app.users where tenant_id = $1 and deleted_at is null",
            &[&t.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(live, 5);
}

#[tokio::test]
async fn projects_and_soft_delete() {
    let app = spawn_app().await;
    let t = app.create_tenant("acme").await;
    let p = create_project(&app, &t.token, "Apollo").await;
    let pid = id_of(&p);
    assert_eq!(p["name"], "Apollo");
    assert_eq!(p["description"], "about Apollo");

    let r = app
        .post("/projects", &t.token)
        .json(&json!({"name": "apollo"}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 409, "conflict").await;
    let r = app
        .post("/projects", &t.token)
        .json(&json!({"name": "  "}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 422, "validation_failed").await;

    let r = app
        .patch(&format!("/projects/{pid}"), &t.token)
        .json(&json!({"description": "to the moon"}))
        .send()
        .await
        .unwrap();
    let patched = expect(r, 200).await;
    assert_eq!(patched["description"], "to the moon");
    assert_eq!(patched["name"], "Apollo");
    let gemini = create_project(&app, &t.token, "Gemini").await;
    let r = app
        .patch(&format!("/projects/{}", id_of(&gemini)), &t.token)
        .json(&json!({"name": "APOLLO"}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 409, "conflict").await;

    let task = create_task(&app, &t.token, pid, "Launch").await;
    let r = app
        .delete(&format!("/projects/{pid}"), &t.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);

    // Gone from every read, its tasks with it, and nothing new can point at it.
    for path in [
        format!("/projects/{pid}"),
        format!("/projects/{pid}/members"),
        format!("/tasks/{}", id_of(&task)),
    ] {
        let r = app.get(&path, &t.token).send().await.unwrap();
        assert_problem(r, 404, "not_found").await;
    }
    let r = app.get("/projects", &t.token).send().await.unwrap();
    assert_eq!(ids(&expect(r, 200).await), vec![id_of(&gemini)]);
    let r = app
        .get(&format!("/tasks?project_id={pid}"), &t.token)
        .send()
        .await
        .unwrap();
    assert!(ids(&expect(r, 200).await).is_empty());
    let r = app
        .post("/tasks", &t.token)
        .json(&json!({"project_id": pid, "title": "Late"}))
        .send()
        .await
        .unwrap();
    let body = assert_problem(r, 422, "invalid_reference").await;
    assert_eq!(body["errors"][0]["field"], "project_id");
    let r = app
        .delete(&format!("/projects/{pid}"), &t.token)
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "not_found").await;

    // The row is kept (soft delete) and its name is free again.
    let deleted: i64 = app
        .superuser_db()
        .await
        .query_one(
            "select count(*) from app.projects where id = $1 and deleted_at is not null",
            &[&pid],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(deleted, 1);
    create_project(&app, &t.token, "Apollo").await;
}

#[tokio::test]
async fn project_members() {
    let app = spawn_app().await;
    let t = app.create_tenant("acme").await;
    let p = id_of(&create_project(&app, &t.token, "Apollo").await);
    let bob = id_of(&create_user(&app, &t.token, "bob@acme.example.com", "member").await);
    let bob_token = token_for(&app, t.id, bob, Role::Member);
    let path = format!("/projects/{p}/members");

    // Any user of the tenant may manage members.
    let r = app
        .post(&path, &bob_token)
        .json(&json!({"user_id": t.admin_id}))
        .send()
        .await
        .unwrap();
    let m = expect(r, 201).await;
    assert_eq!(m["user_id"], json!(t.admin_id));
    assert_eq!(m["project_id"], json!(p));
    let r = app
        .post(&path, &t.token)
        .json(&json!({"user_id": bob}))
        .send()
        .await
        .unwrap();
    expect(r, 201).await;
    let r = app
        .post(&path, &t.token)
        .json(&json!({"user_id": bob}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 409, "conflict").await;
    let r = app
        .post(&path, &t.token)
        .json(&json!({"user_id": Uuid::now_v7()}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 422, "invalid_reference").await;

    let r = app.get(&path, &bob_token).send().await.unwrap();
    let page = expect(r, 200).await;
    let users: Vec<Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user_id"].clone())
        .collect();
    assert_eq!(users, vec![json!(t.admin_id), json!(bob)]);

    let r = app
        .delete(&format!("{path}/{bob}"), &t.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let r = app
        .delete(&format!("{path}/{bob}"), &t.token)
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "not_found").await;
    // Added back: the membership revives.
    let r = app
        .post(&path, &t.token)
        .json(&json!({"user_id": bob}))
        .send()
        .await
        .unwrap();
    expect(r, 201).await;

    // Deleting a user removes their memberships.
    let r = app
        .delete(&format!("/users/{bob}"), &t.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let r = app.get(&path, &t.token).send().await.unwrap();
    assert_eq!(expect(r, 200).await["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn tasks_filters_and_validation() {
    let app = spawn_app().await;
    let t = app.create_tenant("acme").await;
    let p1 = id_of(&create_project(&app, &t.token, "One").await);
    let p2 = id_of(&create_project(&app, &t.token, "Two").await);
    let bob = id_of(&create_user(&app, &t.token, "bob@acme.example.com", "member").await);
    let bob_token = token_for(&app, t.id, bob, Role::Member);

    let r = app
        .post("/tasks", &bob_token)
        .json(
            &json!({"project_id": p1, "title": "Write", "description": "words",
                      "status": "in_progress", "assignee_id": bob, "due_date": "2030-01-31"}),
        )
        .send()
        .await
        .unwrap();
    let write = expect(r, 201).await;
    for key in [
        "id",
        "project_id",
        "title",
        "description",
        "status",
        "assignee_id",
        "due_date",
        "created_at",
        "updated_at",
    ] {
        assert!(write.get(key).is_some(), "{key} in {write}");
    }
    assert_eq!(write["status"], "in_progress");
    assert_eq!(write["due_date"], "2030-01-31");
    assert_eq!(write["assignee_id"], json!(bob));
    let read = create_task(&app, &t.token, p1, "Read").await;
    assert_eq!(read["status"], "todo");
    assert_eq!(read["assignee_id"], Value::Null);
    let other = create_task(&app, &t.token, p2, "Write").await; // same title, other project

    let r = app
        .post("/tasks", &t.token)
        .json(&json!({"project_id": p1, "title": "write"}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 409, "conflict").await;
    for bad in [
        json!({"project_id": p1, "title": ""}),
        json!({"project_id": p1, "title": "x", "status": "blocked"}),
        json!({"project_id": p1, "title": "x", "due_date": "31/01/2030"}),
        json!({"project_id": "not-a-uuid", "title": "x"}),
        json!({"title": "x"}),
        json!({"project_id": p1, "title": "x", "priority": 1}),
    ] {
        let r = app
            .post("/tasks", &t.token)
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_problem(r, 422, "validation_failed").await;
    }
    let r = app
        .post("/tasks", &t.token)
        .json(&json!({"project_id": p1, "title": "x", "assignee_id": Uuid::now_v7()}))
        .send()
        .await
        .unwrap();
    let body = assert_problem(r, 422, "invalid_reference").await;
    assert_eq!(body["errors"][0]["field"], "assignee_id");

    let list = |q: String| {
        let app = &app;
        let token = t.token.clone();
        async move {
            let r = app.get(&format!("/tasks{q}"), &token).send().await.unwrap();
            ids(&expect(r, 200).await)
        }
    };
    let (w, rd, o) = (id_of(&write), id_of(&read), id_of(&other));
    assert_eq!(list(String::new()).await, vec![w, rd, o]);
    assert_eq!(list(format!("?project_id={p1}")).await, vec![w, rd]);
    assert_eq!(list("?status=in_progress".into()).await, vec![w]);
    assert_eq!(list(format!("?assignee_id={bob}")).await, vec![w]);
    assert_eq!(list(format!("?project_id={p2}&status=todo")).await, vec![o]);
    let r = app
        .get("/tasks?status=blocked", &t.token)
        .send()
        .await
        .unwrap();
    assert_problem(r, 422, "validation_failed").await;

    // PATCH: partial, null clears, references checked, moves between projects.
    let r = app
        .patch(&format!("/tasks/{w}"), &t.token)
        .json(&json!({"status": "done", "assignee_id": null}))
        .send()
        .await
        .unwrap();
    let patched = expect(r, 200).await;
    assert_eq!(patched["status"], "done");
    assert_eq!(patched["assignee_id"], Value::Null);
    assert_eq!(patched["due_date"], "2030-01-31");
    assert_eq!(patched["title"], "Write");
    let r = app
        .patch(&format!("/tasks/{w}"), &t.token)
        .json(&json!({"project_id": p2}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 409, "conflict").await; // "Write" exists in p2
    let r = app
        .patch(&format!("/tasks/{rd}"), &t.token)
        .json(&json!({"project_id": p2, "due_date": null, "assignee_id": bob}))
        .send()
        .await
        .unwrap();
    let moved = expect(r, 200).await;
    assert_eq!(moved["project_id"], json!(p2));
    assert_eq!(moved["assignee_id"], json!(bob));
    let r = app
        .patch(&format!("/tasks/{rd}"), &t.token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 422, "validation_failed").await;

    // Deleting the assignee unassigns their tasks.
    let r = app
        .delete(&format!("/users/{bob}"), &t.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let r = app
        .get(&format!("/tasks/{rd}"), &t.token)
        .send()
        .await
        .unwrap();
    assert_eq!(expect(r, 200).await["assignee_id"], Value::Null);

    let r = app
        .delete(&format!("/tasks/{rd}"), &t.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let r = app
        .get(&format!("/tasks/{rd}"), &t.token)
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "not_found").await;
    let r = app
        .patch(&format!("/tasks/{rd}"), &t.token)
        .json(&json!({"title": "again"}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "not_found").await;
    assert_eq!(list(String::new()).await, vec![w, o]);
}

#[tokio::test]
async fn pagination_is_keyset_and_stable() {
    let app = spawn_app().await;
    let t = app.create_tenant("acme").await;
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(id_of(
            &create_project(&app, &t.token, &format!("P{i}")).await,
        ));
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/projects?limit=3".to_string(),
            Some(c) => format!("/projects?limit=3&cursor={c}"),
        };
        let page = expect(app.get(&path, &t.token).send().await.unwrap(), 200).await;
        pages += 1;
        seen.extend(ids(&page));
        // A row inserted meanwhile lands after the rows already paged, never shifting them.
        if pages == 1 {
            created.push(id_of(&create_project(&app, &t.token, "Late").await));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, created);
    assert_eq!(pages, 3);

    let page = expect(app.get("/projects", &t.token).send().await.unwrap(), 200).await;
    assert_eq!(ids(&page).len(), 8);
    assert_eq!(page["next_cursor"], Value::Null);
    for bad in ["limit=0", "limit=501", "limit=x", "cursor=not-a-cursor"] {
        let r = app
            .get(&format!("/projects?{bad}"), &t.token)
            .send()
            .await
            .unwrap();
        assert_problem(r, 422, "validation_failed").await;
    }
    let r = app
        .get("/projects?limit=500", &t.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn reads_need_a_user() {
    let app = spawn_app().await;
    let t = app.create_tenant("acme").await;
    for path in ["/users", "/projects", "/tasks", "/audit-logs"] {
        let r = app
            .http
            .get(app.url(path))
            .header("X-Tenant-ID", &t.slug)
            .send()
            .await
            .unwrap();
        assert_problem(r, 401, "unauthorized").await;
    }
}

/// Every role check answers a member with the same 403 body, whether the route refuses before
/// any work (API keys, the export) or the operation refuses inside its transaction (users, the
/// audit trail).
#[tokio::test]
async fn every_role_guard_answers_with_one_body() {
    let app = spawn_app().await;
    let t = app.create_tenant("guarded").await;
    let bob_id = id_of(&create_user(&app, &t.token, "bob@guarded.example.com", "member").await);
    let bob = token_for(&app, t.id, bob_id, Role::Member);

    let mut bodies = Vec::new();
    for r in [
        app.get("/api-keys", &bob).send().await.unwrap(),
        app.get("/tenant/export", &bob).send().await.unwrap(),
        app.get("/audit-logs", &bob).send().await.unwrap(),
        app.post("/users", &bob)
            .json(&json!({"email": "eve@guarded.example.com", "name": "Eve"}))
            .send()
            .await
            .unwrap(),
        app.patch(&format!("/users/{}", t.admin_id), &bob)
            .json(&json!({"name": "Not yours"}))
            .send()
            .await
            .unwrap(),
    ] {
        let body = assert_problem(r, 403, "forbidden").await;
        assert_eq!(body["required_role"], "admin", "{body}");
        bodies.push(body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:#?}");
}
