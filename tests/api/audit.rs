//! The audit trail: every create, update and delete leaves a row with before/after, actor and
//! request id, written in the same transaction; readable by the tenant's admins only.

use serde_json::{json, Value};
use tenantry::auth::Role;

use crate::fixtures::{create_project, create_user, expect, id_of, token_for};
use crate::helpers::{assert_problem, spawn_app};

async fn logs(app: &crate::helpers::TestApp, token: &str, query: &str) -> Vec<Value> {
    let r = app
        .get(&format!("/audit-logs{query}"), token)
        .send()
        .await
        .unwrap();
    expect(r, 200).await["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn task_changes_are_audited_with_before_and_after() {
    let app = spawn_app().await;
    let a = app.create_tenant("tenant-a").await;
    let b = app.create_tenant("tenant-b").await;
    let project = id_of(&create_project(&app, &a.token, "Apollo").await);

    let r = app
        .post("/tasks", &a.token)
        .header("X-Request-Id", "req-create-1")
        .json(&json!({"project_id": project, "title": "Launch"}))
        .send()
        .await
        .unwrap();
    let task = id_of(&expect(r, 201).await);
    let r = app
        .patch(&format!("/tasks/{task}"), &a.token)
        .header("X-Request-Id", "req-update-1")
        .json(&json!({"status": "done"}))
        .send()
        .await
        .unwrap();
    expect(r, 200).await;
    let r = app
        .delete(&format!("/tasks/{task}"), &a.token)
        .header("X-Request-Id", "req-delete-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);

    let entries = logs(&app, &a.token, "?resource=task").await;
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["delete", "update", "create"], "newest first");
    for (entry, request) in entries
        .iter()
        .zip(["req-delete-1", "req-update-1", "req-create-1"])
    {
        assert_eq!(entry["resource"], "task");
        assert_eq!(entry["resource_id"], task.to_string());
        assert_eq!(entry["user_id"], json!(a.admin_id));
        assert_eq!(entry["request_id"], request);
        assert!(entry["id"].as_str().is_some() && entry["created_at"].as_str().is_some());
    }
    let (delete, update, create) = (&entries[0], &entries[1], &entries[2]);
    assert_eq!(create["changes"]["before"], Value::Null);
    assert_eq!(create["changes"]["after"]["title"], "Launch");
    assert_eq!(create["changes"]["after"]["status"], "todo");
    assert_eq!(update["changes"]["before"]["status"], "todo");
    assert_eq!(update["changes"]["after"]["status"], "done");
    assert_eq!(delete["changes"]["before"]["status"], "done");
    assert_eq!(delete["changes"]["after"], Value::Null);

    let updates = logs(&app, &a.token, "?resource=task&action=update").await;
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0]["id"], update["id"]);

    // Nothing of A's is visible to B, through the API or the app role under B's context.
    let b_entries = logs(&app, &b.token, "?limit=500").await;
    assert!(b_entries
        .iter()
        .all(|e| !e.to_string().contains(&task.to_string())));
    assert!(logs(&app, &b.token, "?resource=task").await.is_empty());
    let db = app.app_db().await;
    db.batch_execute("begin").await.unwrap();
    db.execute(
        "select set_config('app.current_tenant', $1, true)",
        &[&b.id.to_string()],
    )
    .await
    .unwrap();
    let seen: i64 = db
        .query_one(
            "select count(*) from app.audit_logs where resource_id = $1",
            &[&task.to_string()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 0);
    // Append-only: the app role may not rewrite history, even its own tenant's.
    let err = db
        .execute("update app.audit_logs set action = 'forged'", &[])
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );
    db.batch_execute("rollback").await.unwrap();
}

#[tokio::test]
async fn only_admins_read_the_trail() {
    let app = spawn_app().await;
    let t = app.create_tenant("acme").await;
    let bob = id_of(&create_user(&app, &t.token, "bob@acme.example.com", "member").await);
    let member = token_for(&app, t.id, bob, Role::Member);
    let r = app.get("/audit-logs", &member).send().await.unwrap();
    assert_problem(r, 403, "forbidden").await;
    let r = app
        .get("/audit-logs?limit=0", &t.token)
        .send()
        .await
        .unwrap();
    assert_problem(r, 422, "validation_failed").await;
}

#[tokio::test]
async fn failed_writes_leave_no_trail_and_secrets_never_enter_it() {
    let app = spawn_app().await;
    let t = app.create_tenant("acme").await;
    create_project(&app, &t.token, "Apollo").await;
    let db = app.superuser_db().await;
    let count = |sql: &'static str| {
        let db = &db;
        let tenant = t.id;
        async move {
            db.query_one(sql, &[&tenant])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    let audit_before = count("select count(*) from app.audit_logs where tenant_id = $1").await;
    let outbox_before = count("select count(*) from app.outbox where tenant_id = $1").await;
    let r = app
        .post("/projects", &t.token)
        .json(&json!({"name": "APOLLO"}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 409, "conflict").await;
    assert_eq!(
        count("select count(*) from app.audit_logs where tenant_id = $1").await,
        audit_before
    );
    assert_eq!(
        count("select count(*) from app.outbox where tenant_id = $1").await,
        outbox_before
    );

    let r = app
        .post("/users", &t.token)
        .json(&json!({"email": "bob@acme.example.com", "name": "Bob",
                      "password": "bobs-first-password"}))
        .send()
        .await
        .unwrap();
    let bob = id_of(&expect(r, 201).await);
    let r = app
        .patch(&format!("/users/{bob}"), &t.token)
        .json(&json!({"password": "bobs-second-password"}))
        .send()
        .await
        .unwrap();
    expect(r, 200).await;
    let r = app
        .delete(&format!("/users/{bob}"), &t.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);

    let entries = logs(&app, &t.token, "?resource=user").await;
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[1]["action"], "update");
    assert_eq!(entries[1]["changes"]["password_changed"], true);
    let trail: String = db
        .query_one(
            "select string_agg(changes::text, ' ') from app.audit_logs where tenant_id = $1",
            &[&t.id],
        )
        .await
        .unwrap()
        .get(0);
    for secret in [
        "argon2",
        "password_hash",
        "bobs-first-password",
        "bobs-second-password",
    ] {
        assert!(!trail.contains(secret), "{secret} in the audit trail");
    }
    let events: String = db
        .query_one(
            "select string_agg(payload::text, ' ') from app.outbox where tenant_id = $1",
            &[&t.id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!events.contains("argon2"));
}

#[tokio::test]
async fn the_trail_pages_newest_first() {
    let app = spawn_app().await;
    let t = app.create_tenant("acme").await;
    for i in 0..5 {
        create_project(&app, &t.token, &format!("P{i}")).await;
    }
    let all = logs(&app, &t.token, "?resource=project").await;
    assert_eq!(all.len(), 5);
    let mut paged: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            None => "?resource=project&limit=2".to_string(),
            Some(c) => format!("?resource=project&limit=2&cursor={c}"),
        };
        let page = expect(
            app.get(&format!("/audit-logs{q}"), &t.token)
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        paged.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.into()),
            None => break,
        }
    }
    assert_eq!(paged, all);
    let names: Vec<&str> = all
        .iter()
        .map(|e| e["changes"]["after"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["P4", "P3", "P2", "P1", "P0"]);
}

#[tokio::test]
async fn operators_cannot_rewrite_or_remove_the_trail() {
    let app = spawn_app().await;
    let a = app.create_tenant("tenant-a").await;
    create_project(&app, &a.token, "Apollo").await;
    let admin = app.admin_db().await;
    let tenant = a.id;
    let audit_rows = || async {
        admin
            .query_one(
                "select count(*) from app.audit_logs where tenant_id = $1",
                &[&tenant],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let before = audit_rows().await;
    assert!(before > 0);

    // The admin role bypasses RLS, yet neither audit trail is its to edit or empty.
    for sql in [
        "update app.audit_logs set changes = '{}' where tenant_id = $1",
        "update app.audit_logs set actor = 'nobody' where tenant_id = $1",
        "delete from app.audit_logs where tenant_id = $1",
        "update app.platform_audit_logs set details = '{}' where target_tenant_id = $1",
        "delete from app.platform_audit_logs where target_tenant_id = $1",
    ] {
        let err = admin.execute(sql, &[&tenant]).await.unwrap_err();
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {err}"
        );
    }
    assert!(admin
        .batch_execute("truncate app.audit_logs")
        .await
        .is_err());
    assert_eq!(audit_rows().await, before);

    // Deleting and restoring the tenant still marks and unmarks its trail with the rest.
    let r = app
        .operator(reqwest::Client::new().delete(app.url(&format!("/admin/tenants/{tenant}"))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let live: i64 = admin
        .query_one(
            "select count(*) from app.audit_logs where tenant_id = $1 and deleted_at is null",
            &[&tenant],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(live, 0);
}
