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
