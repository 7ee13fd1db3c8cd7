//! The operator's tenant lifecycle: listing, reading, suspend/resume, soft delete, restore and
//! purge, each audited, with a second tenant that must stay untouched throughout.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use tenantry::db::{tenant_schema_name, Pools, TENANT_TABLES};
use tenantry::tenancy::lifecycle;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::helpers::{assert_problem, spawn_app, TestApp};

/// An operator request with a known request id, so its audit row can be found.
async fn operator(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    request_id: &str,
) -> reqwest::Response {
    app.operator(app.http.request(method, app.url(path)))
        .header("x-request-id", request_id)
        .send()
        .await
        .unwrap()
}

async fn assert_audited(db: &Client, request_id: &str, action: &str, target: Option<Uuid>) {
    let rows = db
        .query(
            "select action, target_tenant_id, actor from app.platform_audit_logs where request_id = $1",
            &[&request_id],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "platform audit rows for {request_id}");
    assert_eq!(rows[0].get::<_, String>(0), action, "{request_id}");
    assert_eq!(rows[0].get::<_, Option<Uuid>>(1), target, "{request_id}");
    assert_eq!(rows[0].get::<_, String>(2), "operator");
}

/// Every table of any schema holding a tenant_id column, from the catalog, so a table added
/// later is covered by the delete/purge checks without editing this file.
async fn all_tenant_tables(db: &Client) -> Vec<String> {
    db.query(
        "select format('%I.%I', n.nspname, c.relname) from pg_class c \
         join pg_namespace n on n.oid = c.relnamespace \
         join pg_attribute a on a.attrelid = c.oid and a.attname = 'tenant_id' and not a.attisdropped \
         where c.relkind in ('r', 'p') and n.nspname <> 'information_schema' \
           and n.nspname not like 'pg\\_%' order by 1",
        &[],
    )
    .await
    .unwrap()
    .into_iter()
    .map(|r| r.get(0))
    .collect()
}

/// Every row of a tenant in every tenant table, as text, read by the superuser.
async fn rows_of(db: &Client, tenant: Uuid) -> BTreeSet<String> {
    let mut rows = BTreeSet::new();
    for table in all_tenant_tables(db).await {
        for r in db
            .query(
                &format!("select t::text from {table} t where tenant_id = $1"),
                &[&tenant],
            )
            .await
            .unwrap()
        {
            rows.insert(format!("{table} {}", r.get::<_, String>(0)));
        }
    }
    rows
}

/// The live (deleted_at is null) rows of a tenant in the shared tables, by primary key.
async fn live_keys(db: &Client, tenant: Uuid) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for table in TENANT_TABLES {
        for r in db
            .query(
                &format!(
                    "select t::text from app.{table} t where tenant_id = $1 and deleted_at is null"
                ),
                &[&tenant],
            )
            .await
            .unwrap()
        {
            // Only the identity matters here: a restore brings back the same rows.
            let text: String = r.get(0);
            keys.insert(format!(
                "{table} {}",
                text.split(',').take(3).collect::<String>()
            ));
        }
    }
    keys
}

async fn deleted_marks(db: &Client, user: Uuid, project: Uuid) -> (String, String) {
    let row = db
        .query_one(
            "select (select deleted_at::text from app.users where id = $1), \
                    (select deleted_at::text from app.projects where id = $2)",
            &[&user, &project],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

async fn seed(db: &Client, tenant: Uuid) {
    let project = Uuid::now_v7();
    let user = Uuid::now_v7();
    db.batch_execute("BEGIN").await.unwrap();
    db.execute(
        "insert into app.users (tenant_id, id, email) values ($1, $2, $3)",
        &[&tenant, &user, &format!("member@{tenant}.example.com")],
    )
    .await
    .unwrap();
    db.execute(
        "insert into app.projects (tenant_id, id, name) values ($1, $2, 'Roadmap')",
        &[&tenant, &project],
    )
    .await
    .unwrap();
    db.execute(
        "insert into app.project_members (tenant_id, project_id, user_id) values ($1, $2, $3)",
        &[&tenant, &project, &user],
    )
    .await
    .unwrap();
    for i in 0..3 {
        db.execute(
            "insert into app.tasks (tenant_id, id, project_id, title, assignee_id) values ($1, $2, $3, $4, $5)",
            &[&tenant, &Uuid::now_v7(), &project, &format!("Task {i}"), &user],
        )
        .await
        .unwrap();
    }
    db.execute(
        &format!(
            "insert into {}.events (tenant_id, id, event_type, occurred_at) values ($1, $2, 'login', now())",
            tenant_schema_name(tenant)
        ),
        &[&tenant, &Uuid::now_v7()],
    )
    .await
    .unwrap();
    db.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test]
async fn listing_pages_with_a_cursor_and_reading_one_tenant() {
    let app = spawn_app().await;
    let db = app.superuser_db().await;
    let mut ids = Vec::new();
    for slug in ["t-one", "t-two", "t-three", "t-four", "t-five"] {
        ids.push(app.create_tenant(slug).await.id);
    }
    ids.sort();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut page_no = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/admin/tenants?limit=2&cursor={c}"),
            None => "/admin/tenants?limit=2".to_string(),
        };
        let rid = format!("list-{page_no}");
        let r = operator(&app, reqwest::Method::GET, &path, &rid).await;
        assert_eq!(r.status().as_u16(), 200);
        let page: Value = r.json().await.unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        for t in items {
            assert!(t["slug"].is_string() && t["status"] == "active", "{t}");
            seen.push(t["id"].as_str().unwrap().parse::<Uuid>().unwrap());
        }
        assert_audited(&db, &rid, "tenant.list", None).await;
        page_no += 1;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(page_no < 10, "the cursor does not advance");
    }
    assert_eq!(seen, ids, "every tenant exactly once, in id order");
    assert_eq!(page_no, 3);

    // GET one; unknown id; deleted tenants only with include_deleted.
    let r = operator(
        &app,
        reqwest::Method::GET,
        &format!("/admin/tenants/{}", ids[0]),
        "read-0",
    )
    .await;
    assert_eq!(r.status().as_u16(), 200);
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["id"], ids[0].to_string());
    assert_audited(&db, "read-0", "tenant.read", Some(ids[0])).await;
    let r = operator(
        &app,
        reqwest::Method::GET,
        &format!("/admin/tenants/{}", Uuid::now_v7()),
        "read-unknown",
    )
    .await;
    assert_problem(r, 404, "not_found").await;

    let r = operator(
        &app,
        reqwest::Method::DELETE,
        &format!("/admin/tenants/{}", ids[2]),
        "delete-2",
    )
    .await;
    assert_eq!(r.status().as_u16(), 204);
    assert_audited(&db, "delete-2", "tenant.delete", Some(ids[2])).await;
    let r = operator(&app, reqwest::Method::GET, "/admin/tenants", "list-live").await;
    let page: Value = r.json().await.unwrap();
    let live: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(live.len(), 4);
    assert!(!live.contains(&ids[2].to_string().as_str()));
    assert!(page["next_cursor"].is_null());
    let r = operator(
        &app,
        reqwest::Method::GET,
        "/admin/tenants?include_deleted=true",
        "list-all",
    )
    .await;
    let page: Value = r.json().await.unwrap();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    let deleted = items
        .iter()
        .find(|t| t["id"] == ids[2].to_string())
        .unwrap();
    assert_eq!(deleted["status"], "deleted");
    assert!(deleted["deleted_at"].is_string());

    // Operators only.
    let r = app
        .http
        .get(app.url("/admin/tenants"))
        .send()
        .await
        .unwrap();
    assert_problem(r, 401, "unauthorized").await;
}

#[tokio::test]
async fn suspend_and_resume() {
    let app = spawn_app().await;
    let db = app.superuser_db().await;
    let tenant = app.create_tenant("sleepy").await;
    let other = app.create_tenant("awake").await;

    let r = operator(
        &app,
        reqwest::Method::POST,
        &format!("/admin/tenants/{}/suspend", tenant.id),
        "suspend-1",
    )
    .await;
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "suspended");
    assert_audited(&db, "suspend-1", "tenant.suspend", Some(tenant.id)).await;

    // Reads keep working while suspended. (Writes answer 402 tenant_suspended; no tenant write
    // route exists yet to show it over HTTP.)
    let r = app.get("/tenant", &tenant.token).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "suspended");
    let r = app.get("/tenant", &other.token).send().await.unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "active", "the other tenant is untouched");

    let r = operator(
        &app,
        reqwest::Method::POST,
        &format!("/admin/tenants/{}/resume", tenant.id),
        "resume-1",
    )
    .await;
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "active");
    assert_audited(&db, "resume-1", "tenant.resume", Some(tenant.id)).await;

    // The tenant's own audit trail records both, with before and after.
    let rows = db
        .query(
            "select action, changes from app.audit_logs where tenant_id = $1 and resource = 'tenant' \
             and action in ('suspend', 'resume') order by id",
            &[&tenant.id],
        )
        .await
        .unwrap();
    let actions: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(actions, ["suspend", "resume"]);
    let changes: Value = rows[0].get(1);
    assert_eq!(changes["before"]["status"], "active");
    assert_eq!(changes["after"]["status"], "suspended");

    let r = operator(
        &app,
        reqwest::Method::POST,
        &format!("/admin/tenants/{}/suspend", Uuid::now_v7()),
        "suspend-unknown",
    )
    .await;
    assert_problem(r, 404, "not_found").await;
}

#[tokio::test]
async fn delete_restore_and_purge() {
    let app = spawn_app().await;
    let db = app.superuser_db().await;
    let a = app.create_tenant("doomed").await;
    let b = app.create_tenant("bystander").await;
    seed(&db, a.id).await;
    seed(&db, b.id).await;
    // Rows of A deleted on their own earlier: a delete/restore cycle must leave them deleted.
    let old_user = Uuid::now_v7();
    let old_project = Uuid::now_v7();
    db.execute(
        "insert into app.users (tenant_id, id, email, deleted_at) values ($1, $2, 'gone@x.example.com', now() - interval '1 day')",
        &[&a.id, &old_user],
    )
    .await
    .unwrap();
    db.execute(
        "insert into app.projects (tenant_id, id, name, deleted_at) values ($1, $2, 'Old', now() - interval '2 days')",
        &[&a.id, &old_project],
    )
    .await
    .unwrap();
    let old_marks = deleted_marks(&db, old_user, old_project).await;
    let b_rows = rows_of(&db, b.id).await;
    let a_live_before = live_keys(&db, a.id).await;
    assert!(a_live_before.len() > 5);

    // Delete.
    let r = operator(
        &app,
        reqwest::Method::DELETE,
        &format!("/admin/tenants/{}", a.id),
        "delete-a",
    )
    .await;
    assert_eq!(r.status().as_u16(), 204);
    assert_audited(&db, "delete-a", "tenant.delete", Some(a.id)).await;
    let r = app.get("/tenant", &a.token).send().await.unwrap();
    assert_problem(r, 404, "not_found").await;
    let r = app
        .http
        .get(app.url("/tenant"))
        .header("x-tenant-id", "doomed")
        .bearer_auth(&b.token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        403,
        "B's token naming A is still refused"
    );
    let deleted_at: Option<chrono::DateTime<chrono::Utc>> = db
        .query_one("select deleted_at from app.tenants where id = $1", &[&a.id])
        .await
        .unwrap()
        .get(0);
    assert!(deleted_at.is_some());
    for table in TENANT_TABLES {
        let live: i64 = db
            .query_one(
                &format!(
                    "select count(*) from app.{table} where tenant_id = $1 and deleted_at is null"
                ),
                &[&a.id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            live, 0,
            "app.{table} still has live rows of the deleted tenant"
        );
    }
    assert_eq!(
        deleted_marks(&db, old_user, old_project).await,
        old_marks,
        "rows deleted before kept their own deleted_at"
    );
    let r = operator(
        &app,
        reqwest::Method::DELETE,
        &format!("/admin/tenants/{}", a.id),
        "delete-a-again",
    )
    .await;
    assert_problem(r, 404, "not_found").await;
    assert_eq!(rows_of(&db, b.id).await, b_rows, "B changed by A's delete");

    // Restore brings back exactly what the delete marked.
    let r = operator(
        &app,
        reqwest::Method::POST,
        &format!("/admin/tenants/{}/restore", a.id),
        "restore-a",
    )
    .await;
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "active");
    assert!(body["deleted_at"].is_null());
    assert_audited(&db, "restore-a", "tenant.restore", Some(a.id)).await;
    let a_live_after = live_keys(&db, a.id).await;
    let extra: Vec<&String> = a_live_after.difference(&a_live_before).collect();
    let missing: Vec<&String> = a_live_before.difference(&a_live_after).collect();
    assert!(missing.is_empty(), "not restored: {missing:#?}");
    // Only the audit rows of the delete and the restore themselves are new.
    assert_eq!(extra.len(), 2, "{extra:#?}");
    assert!(
        extra.iter().all(|k| k.starts_with("audit_logs ")),
        "{extra:#?}"
    );
    assert_eq!(
        deleted_marks(&db, old_user, old_project).await,
        old_marks,
        "rows deleted before stay deleted"
    );
    let r = app.get("/tenant", &a.token).send().await.unwrap();
    let status = r.status().as_u16();
    assert_eq!(status, 200, "{}", r.text().await.unwrap());
    let r = operator(
        &app,
        reqwest::Method::POST,
        &format!("/admin/tenants/{}/restore", a.id),
        "restore-a-again",
    )
    .await;
    assert_problem(r, 409, "not_deleted").await;
    assert_eq!(rows_of(&db, b.id).await, b_rows, "B changed by A's restore");

    // Purge: everything of A goes, schema included; nothing of B.
    let r = operator(
        &app,
        reqwest::Method::DELETE,
        &format!("/admin/tenants/{}", a.id),
        "delete-a-2",
    )
    .await;
    assert_eq!(r.status().as_u16(), 204);
    let pools = Pools::new(&app.config).unwrap();
    let purged = lifecycle::purge_expired(&pools.owner, Duration::ZERO)
        .await
        .expect("purge");
    assert_eq!(purged, vec![a.id]);
    assert!(rows_of(&db, a.id).await.is_empty(), "rows of A left");
    let tenant_rows: i64 = db
        .query_one("select count(*) from app.tenants where id = $1", &[&a.id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tenant_rows, 0);
    let schemas: Vec<String> = db
        .query(
            "select nspname::text from pg_namespace where nspname like 't\\_%' order by 1",
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(schemas, vec![tenant_schema_name(b.id)]);
    let purge_audit: i64 = db
        .query_one(
            "select count(*) from app.platform_audit_logs where action = 'tenant.purge' and target_tenant_id = $1",
            &[&a.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(purge_audit, 1);
    assert_eq!(rows_of(&db, b.id).await, b_rows, "B changed by A's purge");
    let r = app.get("/tenant", &b.token).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // A live tenant is never purged, whatever the retention.
    assert!(lifecycle::purge_expired(&pools.owner, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
    let r = operator(
        &app,
        reqwest::Method::POST,
        &format!("/admin/tenants/{}/restore", a.id),
        "restore-purged",
    )
    .await;
    assert_problem(r, 404, "not_found").await;
}

#[tokio::test]
async fn restore_after_the_retention_period_is_refused() {
    let app = spawn_app().await;
    let db = app.superuser_db().await;
    let t = app.create_tenant("expired").await;
    let r = operator(
        &app,
        reqwest::Method::DELETE,
        &format!("/admin/tenants/{}", t.id),
        "delete-expired",
    )
    .await;
    assert_eq!(r.status().as_u16(), 204);
    // The earlier time is computed here: Citus refuses a stable expression over a column
    // (timestamptz - interval) in an UPDATE of a reference table.
    let deleted_at: chrono::DateTime<chrono::Utc> = db
        .query_one("select deleted_at from app.tenants where id = $1", &[&t.id])
        .await
        .unwrap()
        .get(0);
    let expired = deleted_at
        - chrono::Duration::from_std(app.config.retention + Duration::from_secs(60)).unwrap();
    db.execute(
        "update app.tenants set deleted_at = $2 where id = $1",
        &[&t.id, &expired],
    )
    .await
    .unwrap();
    let r = operator(
        &app,
        reqwest::Method::POST,
        &format!("/admin/tenants/{}/restore", t.id),
        "restore-expired",
    )
    .await;
    assert_problem(r, 410, "retention_expired").await;
}
