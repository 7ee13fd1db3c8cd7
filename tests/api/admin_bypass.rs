//! The platform bypass: GET /admin/tasks reads across tenants, explicitly and audited.

use serde_json::Value;
use uuid::Uuid;

use crate::fixtures::{create_project, create_task};
use crate::helpers::{assert_problem, spawn_app, OPERATOR_TOKEN};

#[tokio::test]
async fn operators_read_tasks_across_tenants_and_each_read_is_audited() {
    let app = spawn_app().await;
    let a = app.create_tenant("alpha").await;
    let b = app.create_tenant("beta").await;
    for (tenant, n) in [(&a, 2), (&b, 3)] {
        let project: Uuid = create_project(&app, &tenant.token, "P").await["id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        for i in 0..n {
            create_task(&app, &tenant.token, project, &format!("task {i}")).await;
        }
    }

    // Tenant users cannot use it, whatever their role.
    assert_problem(
        app.get("/admin/tasks", &a.token).send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;

    let all: Value = app
        .http
        .get(app.url("/admin/tasks"))
        .bearer_auth(OPERATOR_TOKEN)
        .header("X-Request-Id", "bypass-all")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = all["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    let of = |t: Uuid| {
        items
            .iter()
            .filter(|i| i["tenant_id"] == t.to_string())
            .count()
    };
    assert_eq!(
        (of(a.id), of(b.id)),
        (2, 3),
        "every item carries its tenant_id"
    );

    // Filtered to one tenant, and paged.
    let page: Value = app
        .http
        .get(app.url(&format!("/admin/tasks?tenant_id={}&limit=2", b.id)))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert!(page["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["tenant_id"] == b.id.to_string()));
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest: Value = app
        .http
        .get(app.url(&format!(
            "/admin/tasks?tenant_id={}&limit=2&cursor={cursor}",
            b.id
        )))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert!(rest["next_cursor"].is_null());

    let db = app.superuser_db().await;
    let audited: i64 = db
        .query_one(
            "select count(*) from app.platform_audit_logs where action = 'tasks.read_across_tenants' and request_id = 'bypass-all'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(audited, 1);
}
