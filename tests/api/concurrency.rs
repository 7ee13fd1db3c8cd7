//! Many tenants at once through a pool smaller than the number of tenants: every response holds
//! only its own tenant's data. The pool's connections are reused across tenants all the time, so
//! a context leaking from one transaction to the next would show up here.

use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::fixtures::{create_project, expect, id_of, ids};
use crate::helpers::{spawn_app_with, test_config, TestApp, TestTenant};

const TENANTS: usize = 50;
const FLOWS_PER_TENANT: usize = 6;

struct Setup {
    tenant: TestTenant,
    project: Uuid,
}

async fn flow(app: &TestApp, s: &Setup, k: usize) {
    let t = &s.tenant;
    let title = format!("{}-task-{k}", t.slug);
    let r = app
        .post("/tasks", &t.token)
        .json(&json!({"project_id": s.project, "title": title, "assignee_id": t.admin_id}))
        .send()
        .await
        .unwrap();
    let task = expect(r, 201).await;
    let id = id_of(&task);
    assert_eq!(task["project_id"], json!(s.project));

    let r = app
        .get(&format!("/tasks/{id}"), &t.token)
        .send()
        .await
        .unwrap();
    assert_eq!(expect(r, 200).await["title"], title);

    let r = app
        .patch(&format!("/tasks/{id}"), &t.token)
        .json(&json!({"status": "in_progress"}))
        .send()
        .await
        .unwrap();
    let patched = expect(r, 200).await;
    assert_eq!(patched["project_id"], json!(s.project));
    assert_eq!(patched["assignee_id"], json!(t.admin_id));

    let r = app.get("/tasks?limit=500", &t.token).send().await.unwrap();
    let page = expect(r, 200).await;
    for item in page["items"].as_array().unwrap() {
        assert_eq!(item["project_id"], json!(s.project), "{item}");
        assert!(
            item["title"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{}-task-", t.slug)),
            "{item}"
        );
    }

    let r = app.get("/projects", &t.token).send().await.unwrap();
    assert_eq!(ids(&expect(r, 200).await), vec![s.project]);
    let r = app.get("/users", &t.token).send().await.unwrap();
    assert_eq!(ids(&expect(r, 200).await), vec![t.admin_id]);
    let r = app
        .get("/audit-logs?resource=task&limit=500", &t.token)
        .send()
        .await
        .unwrap();
    let logs: Value = expect(r, 200).await;
    for log in logs["items"].as_array().unwrap() {
        let after = &log["changes"]["after"];
        assert_eq!(after["project_id"], json!(s.project), "{log}");
    }
}

#[tokio::test]
async fn fifty_tenants_at_once_through_a_small_pool() {
    let (mut config, database) = test_config().await;
    config.app_pool_size = 8;
    let app = spawn_app_with(config, database).await;

    let tenants: Vec<TestTenant> = stream::iter(0..TENANTS)
        .map(|i| {
            let app = &app;
            async move { app.create_tenant(&format!("tenant-{i:02}")).await }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut setups = Vec::new();
    for tenant in tenants {
        let project = id_of(&create_project(&app, &tenant.token, "Same name everywhere").await);
        setups.push(Setup { tenant, project });
    }

    let flows = setups
        .iter()
        .flat_map(|s| (0..FLOWS_PER_TENANT).map(move |k| (s, k)))
        .map(|(s, k)| flow(&app, s, k));
    futures_util::future::join_all(flows).await;

    let db = app.superuser_db().await;
    for s in &setups {
        let rows = db
            .query(
                "select project_id, title from app.tasks where tenant_id = $1",
                &[&s.tenant.id],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), FLOWS_PER_TENANT);
        for row in rows {
            assert_eq!(row.get::<_, Uuid>(0), s.project);
            assert!(row.get::<_, String>(1).starts_with(&s.tenant.slug));
        }
    }
}

struct Owned {
    tenant: TestTenant,
    project: Uuid,
    task: Uuid,
    title: String,
}

/// Reads by id are one request under one Sync each, and the reads of all tenants of an actor
/// host share one connection (`SharedConn`): here many tenants' reads, and reads of other
/// tenants' ids, go down the same connections at the same moment. Each answer must be its own
/// tenant's row, and another tenant's id must stay 404.
#[tokio::test]
async fn reads_by_id_on_a_shared_connection_see_only_their_tenant() {
    let (mut config, database) = test_config().await;
    config.app_pool_size = 2;
    let app = spawn_app_with(config, database).await;

    let mut owned = Vec::new();
    for i in 0..12 {
        let tenant = app.create_tenant(&format!("shared-{i:02}")).await;
        let project = id_of(&create_project(&app, &tenant.token, "Same name everywhere").await);
        let title = format!("{}-only", tenant.slug);
        let r = app
            .post("/tasks", &tenant.token)
            .json(&json!({"project_id": project, "title": title}))
            .send()
            .await
            .unwrap();
        let task = id_of(&expect(r, 201).await);
        owned.push(Owned {
            tenant,
            project,
            task,
            title,
        });
    }

    let n = owned.len();
    let reads = (0..480).map(|i| {
        let (me, other) = (&owned[i % n], &owned[(i * 7 + 1) % n]);
        let app = &app;
        async move {
            let token = &me.tenant.token;
            let r = app
                .get(&format!("/tasks/{}", me.task), token)
                .send()
                .await
                .unwrap();
            assert_eq!(expect(r, 200).await["title"], me.title);
            let r = app
                .get(&format!("/projects/{}", me.project), token)
                .send()
                .await
                .unwrap();
            assert_eq!(id_of(&expect(r, 200).await), me.project);
            let r = app
                .get(&format!("/users/{}", me.tenant.admin_id), token)
                .send()
                .await
                .unwrap();
            assert_eq!(id_of(&expect(r, 200).await), me.tenant.admin_id);
            if other.tenant.id != me.tenant.id {
                for path in [
                    format!("/tasks/{}", other.task),
                    format!("/projects/{}", other.project),
                    format!("/users/{}", other.tenant.admin_id),
                ] {
                    let r = app.get(&path, token).send().await.unwrap();
                    assert_eq!(r.status(), 404, "{path} of another tenant");
                }
            }
        }
    });
    stream::iter(reads)
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
}

/// A shared connection that dies is taken again from the pool: a terminated backend may fail
/// the reads on it at that moment, and the reads after it succeed.
#[tokio::test]
async fn reads_by_id_recover_when_the_shared_connection_dies() {
    let (mut config, database) = test_config().await;
    config.app_pool_size = 2;
    let app = spawn_app_with(config, database).await;
    let tenant = app.create_tenant("shared-dies").await;
    let project = id_of(&create_project(&app, &tenant.token, "Survivor").await);
    let path = format!("/projects/{project}");
    let r = app.get(&path, &tenant.token).send().await.unwrap();
    expect(r, 200).await;

    let app_role = app.app_db().await;
    let role: String = app_role
        .query_one("select current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    drop(app_role);
    let killed: i64 = app
        .superuser_db()
        .await
        .query_one(
            "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity \
             where datname = current_database() and usename = $1) t",
            &[&role],
        )
        .await
        .unwrap()
        .get(0);
    assert!(killed > 0, "no backend of the app role to terminate");

    // The first reads may meet the dead connection before its end is noticed.
    let mut recovered = false;
    for _ in 0..50 {
        let r = app.get(&path, &tenant.token).send().await.unwrap();
        if r.status() == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "reads by id did not recover after the backend was terminated"
    );
    for _ in 0..5 {
        let r = app.get(&path, &tenant.token).send().await.unwrap();
        assert_eq!(expect(r, 200).await["id"], json!(project));
    }
}

/// The shared connection is one of the pool's: with a pool of one per host, reads by id lease
/// it like everything else, or the writes after them would wait for it forever.
#[tokio::test]
async fn a_pool_of_one_still_serves_writes_after_reads_by_id() {
    let (mut config, database) = test_config().await;
    config.app_pool_size = 1;
    let app = spawn_app_with(config, database).await;
    let tenant = app.create_tenant("pool-of-one").await;
    let project = id_of(&create_project(&app, &tenant.token, "Only one").await);
    for i in 0..3 {
        let r = app
            .get(&format!("/projects/{project}"), &tenant.token)
            .send()
            .await
            .unwrap();
        expect(r, 200).await;
        let r = app
            .post("/tasks", &tenant.token)
            .json(&json!({"project_id": project, "title": format!("after read {i}")}))
            .send()
            .await
            .unwrap();
        expect(r, 201).await;
    }
}
