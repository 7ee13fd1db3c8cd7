//! Tenant isolation of the sample domain: another tenant's ids are 404 (or 422 in a body) and
//! change nothing; lists never mix tenants; a smuggled tenant_id is refused; and RLS alone keeps
//! an unfiltered query inside the current tenant.

use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use tenantry::actors::TenantOp;
use tenantry::auth::{Caller, Role};
use tenantry::db::{DbError, Pools, TenantTx, TENANT_TABLES};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::fixtures::{create_project, create_task, create_user, expect, id_of, ids, token_for};
use crate::helpers::{assert_problem, spawn_app, TestApp, TestTenant};

/// Every row of a tenant in every tenant table, as JSON, in a stable order.
async fn snapshot(db: &Client, tenant: Uuid) -> Vec<Value> {
    let mut out = Vec::new();
    for table in TENANT_TABLES {
        // The outbox worker of the server moves its own bookkeeping columns meanwhile.
        let row = if *table == "outbox" {
            "(to_jsonb(t) - 'attempts' - 'processed_at' - 'next_attempt_at' - 'last_error')"
        } else {
            "to_jsonb(t)"
        };
        let v: Value = db
            .query_one(
                &format!(
                    "select coalesce(jsonb_agg({row} order by {row}::text), '[]') \
                     from app.{table} t where tenant_id = $1"
                ),
                &[&tenant],
            )
            .await
            .unwrap()
            .get(0);
        out.push(json!({"table": table, "rows": v}));
    }
    out
}

struct World {
    task: Uuid,
    project: Uuid,
    user: Uuid,
}

async fn populate(app: &TestApp, t: &TestTenant) -> World {
    let project = id_of(&create_project(app, &t.token, "Shared name").await);
    let user = id_of(
        &create_user(
            app,
            &t.token,
            &format!("u@{}.example.com", t.slug),
            "member",
        )
        .await,
    );
    let r = app
        .post(&format!("/projects/{project}/members"), &t.token)
        .json(&json!({"user_id": user}))
        .send()
        .await
        .unwrap();
    expect(r, 201).await;
    let r = app
        .post("/tasks", &t.token)
        .json(&json!({"project_id": project, "title": "Shared title", "assignee_id": user}))
        .send()
        .await
        .unwrap();
    let task = id_of(&expect(r, 201).await);
    World {
        task,
        project,
        user,
    }
}

#[tokio::test]
async fn another_tenants_ids_are_not_found_and_change_nothing() {
    let app = spawn_app().await;
    let a = app.create_tenant("tenant-a").await;
    let b = app.create_tenant("tenant-b").await;
    let wa = populate(&app, &a).await;
    let wb = populate(&app, &b).await;
    let db = app.superuser_db().await;
    let before = snapshot(&db, b.id).await;

    let a_member = token_for(&app, a.id, wa.user, Role::Member);
    for token in [&a.token, &a_member] {
        let not_found: Vec<(reqwest::RequestBuilder, String)> = vec![
            (
                app.get(&format!("/users/{}", wb.user), token),
                "GET user".into(),
            ),
            (
                app.patch(&format!("/users/{}", wb.user), token)
                    .json(&json!({"name": "pwned"})),
                "PATCH user".into(),
            ),
            (
                app.delete(&format!("/users/{}", wb.user), token),
                "DELETE user".into(),
            ),
            (
                app.get(&format!("/projects/{}", wb.project), token),
                "GET project".into(),
            ),
            (
                app.patch(&format!("/projects/{}", wb.project), token)
                    .json(&json!({"name": "pwned"})),
                "PATCH project".into(),
            ),
            (
                app.delete(&format!("/projects/{}", wb.project), token),
                "DELETE project".into(),
            ),
            (
                app.get(&format!("/projects/{}/members", wb.project), token),
                "GET members".into(),
            ),
            (
                app.post(&format!("/projects/{}/members", wb.project), token)
                    .json(&json!({"user_id": wa.user})),
                "POST member".into(),
            ),
            (
                app.delete(
                    &format!("/projects/{}/members/{}", wb.project, wb.user),
                    token,
                ),
                "DELETE member".into(),
            ),
            (
                app.delete(
                    &format!("/projects/{}/members/{}", wa.project, wb.user),
                    token,
                ),
                "DELETE foreign user from own project".into(),
            ),
            (
                app.get(&format!("/tasks/{}", wb.task), token),
                "GET task".into(),
            ),
            (
                app.patch(&format!("/tasks/{}", wb.task), token)
                    .json(&json!({"title": "pwned", "status": "done"})),
                "PATCH task".into(),
            ),
            (
                app.delete(&format!("/tasks/{}", wb.task), token),
                "DELETE task".into(),
            ),
        ];
        for (request, what) in not_found {
            let r = request.send().await.unwrap();
            assert_eq!(r.status().as_u16(), 404, "{what}");
            assert_problem(r, 404, "not_found").await;
        }

        // References in a body: 422, the same answer as for an id that exists nowhere.
        let invalid: Vec<(reqwest::RequestBuilder, &str)> = vec![
            (
                app.post("/tasks", token)
                    .json(&json!({"project_id": wb.project, "title": "into B"})),
                "project_id",
            ),
            (
                app.post("/tasks", token).json(
                    &json!({"project_id": wa.project, "title": "assigned to B", "assignee_id": wb.user}),
                ),
                "assignee_id",
            ),
            (
                app.patch(&format!("/tasks/{}", wa.task), token)
                    .json(&json!({"project_id": wb.project})),
                "project_id",
            ),
            (
                app.patch(&format!("/tasks/{}", wa.task), token)
                    .json(&json!({"assignee_id": wb.user})),
                "assignee_id",
            ),
            (
                app.post(&format!("/projects/{}/members", wa.project), token)
                    .json(&json!({"user_id": wb.user})),
                "user_id",
            ),
        ];
        for (request, field) in invalid {
            let r = request.send().await.unwrap();
            let body = assert_problem(r, 422, "invalid_reference").await;
            assert_eq!(body["errors"][0]["field"], field);
        }
    }

    // A's token naming B explicitly is refused outright.
    let r = app
        .get(&format!("/tasks/{}", wb.task), &a.token)
        .header("X-Tenant-ID", &b.slug)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);

    assert_eq!(snapshot(&db, b.id).await, before, "tenant B's rows changed");
}

#[tokio::test]
async fn lists_hold_only_the_callers_rows() {
    let app = spawn_app().await;
    let a = app.create_tenant("tenant-a").await;
    let b = app.create_tenant("tenant-b").await;
    let wa = populate(&app, &a).await;
    let wb = populate(&app, &b).await;

    for (t, mine, theirs) in [(&a, &wa, &wb), (&b, &wb, &wa)] {
        let users = ids(&expect(app.get("/users", &t.token).send().await.unwrap(), 200).await);
        assert!(users.contains(&mine.user) && users.contains(&t.admin_id));
        assert_eq!(users.len(), 2);
        let projects =
            ids(&expect(app.get("/projects", &t.token).send().await.unwrap(), 200).await);
        assert_eq!(projects, vec![mine.project]);
        let tasks = ids(&expect(app.get("/tasks", &t.token).send().await.unwrap(), 200).await);
        assert_eq!(tasks, vec![mine.task]);
        // Filtering on the other tenant's ids finds nothing (and says nothing about them).
        for q in [
            format!("/tasks?project_id={}", theirs.project),
            format!("/tasks?assignee_id={}", theirs.user),
        ] {
            let page = expect(app.get(&q, &t.token).send().await.unwrap(), 200).await;
            assert!(ids(&page).is_empty(), "{q}");
        }
        let logs = expect(
            app.get("/audit-logs?limit=500", &t.token)
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        for log in logs["items"].as_array().unwrap() {
            let text = log.to_string();
            for foreign in [theirs.user, theirs.project, theirs.task] {
                assert!(!text.contains(&foreign.to_string()), "{log}");
            }
        }
    }
}

#[tokio::test]
async fn a_smuggled_tenant_id_is_refused() {
    let app = spawn_app().await;
    let a = app.create_tenant("tenant-a").await;
    let b = app.create_tenant("tenant-b").await;
    let wa = populate(&app, &a).await;
    let db = app.superuser_db().await;
    let before = snapshot(&db, b.id).await;

    let bodies = vec![
        app.post("/projects", &a.token)
            .json(&json!({"name": "Smuggled", "tenant_id": b.id})),
        app.post("/tasks", &a.token)
            .json(&json!({"project_id": wa.project, "title": "Smuggled", "tenant_id": b.id})),
        app.patch(&format!("/tasks/{}", wa.task), &a.token)
            .json(&json!({"title": "Smuggled", "tenant_id": b.id})),
        app.post("/users", &a.token)
            .json(&json!({"email": "s@x.example.com", "name": "S", "tenant_id": b.id})),
        app.post(&format!("/projects/{}/members", wa.project), &a.token)
            .json(&json!({"user_id": a.admin_id, "tenant_id": b.id})),
    ];
    for request in bodies {
        let r = request.send().await.unwrap();
        assert_problem(r, 422, "validation_failed").await;
    }
    for path in [
        format!("/tasks?tenant_id={}", b.id),
        format!("/projects?tenant_id={}", b.id),
        format!("/users?tenant_id={}", b.id),
        format!("/audit-logs?tenant_id={}", b.id),
        format!("/projects/{}/members?tenant_id={}", wa.project, b.id),
    ] {
        let r = app.get(&path, &a.token).send().await.unwrap();
        let body = assert_problem(r, 422, "validation_failed").await;
        assert!(
            body["detail"].as_str().unwrap().contains("tenant_id"),
            "{body}"
        );
    }
    assert_eq!(snapshot(&db, b.id).await, before);
    let smuggled: i64 = db
        .query_one(
            "select count(*) from app.projects where name = 'Smuggled' or id in \
             (select project_id from app.tasks where title = 'Smuggled')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(smuggled, 0);
}

/// A test-only operation that forgets the tenant filter on purpose.
struct UnfilteredTasks;

impl TenantOp for UnfilteredTasks {
    type Output = Vec<Uuid>;
    type Error = DbError;

    fn run<'a>(
        self,
        tx: &'a TenantTx<'a>,
        _caller: &'a Caller,
    ) -> BoxFuture<'a, Result<Vec<Uuid>, DbError>> {
        Box::pin(async move {
            let rows = tx.query("select tenant_id from app.tasks", &[]).await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }
}

#[tokio::test]
async fn rls_backstops_an_unfiltered_query() {
    let app = spawn_app().await;
    let a = app.create_tenant("tenant-a").await;
    let b = app.create_tenant("tenant-b").await;
    let wa = populate(&app, &a).await;
    populate(&app, &b).await;
    create_task(
        &app,
        &b.token,
        populate_extra_project(&app, &b).await,
        "More B",
    )
    .await;
    create_task(&app, &a.token, wa.project, "More A").await;

    let pools = Pools::new(&app.config).unwrap();
    let conn = pools.app.get().await.unwrap();
    for t in [&a, &b] {
        let tx = TenantTx::begin(&conn, t.id).await.unwrap();
        let caller = Caller {
            tenant_id: t.id,
            tenant_slug: t.slug.clone(),
            config: std::sync::Arc::new(tenantry::tenant_config::TenantSnapshot::bare(
                t.id, &t.slug, "free",
            )),
            user_id: Some(t.admin_id),
            role: Some(Role::Admin),
            request_id: "test".into(),
        };
        let seen = UnfilteredTasks.run(&tx, &caller).await.unwrap();
        assert_eq!(seen.len(), 2);
        assert!(seen.iter().all(|tenant| *tenant == t.id));
        // Every tenant table, unfiltered, shows exactly the tenant's rows.
        for table in TENANT_TABLES {
            let visible: i64 = tx
                .query_one(&format!("select count(*) from app.{table}"), &[])
                .await
                .unwrap()
                .get(0);
            let own: i64 = tx
                .query_one(
                    &format!("select count(*) from app.{table} where tenant_id = $1"),
                    &[&t.id],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(visible, own, "{table}");
        }
        tx.commit().await.unwrap();
    }
    // Outside a tenant transaction the same connection sees nothing at all.
    for table in TENANT_TABLES {
        let visible: i64 = conn
            .query_one(&format!("select count(*) from app.{table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(visible, 0, "{table}");
    }
}

async fn populate_extra_project(app: &TestApp, t: &TestTenant) -> Uuid {
    id_of(&create_project(app, &t.token, "Extra").await)
}
