//! Supervision, back-pressure and the actor registry.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{assert_problem, spawn_app_with, test_config, TestApp, OPERATOR_TOKEN};

async fn app_with(tune: impl FnOnce(&mut tenantry::config::Config)) -> TestApp {
    let (mut config, database) = test_config().await;
    config.fault_injection = true;
    tune(&mut config);
    spawn_app_with(config, database).await
}

async fn actors(app: &TestApp) -> Value {
    app.http
        .get(app.url("/admin/actors"))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_panic_in_one_tenant_restarts_only_that_tenants_actor() {
    let app = app_with(|_| {}).await;
    let a = app.create_tenant("alpha").await;
    let b = app.create_tenant("beta").await;
    assert_eq!(
        app.get("/tenant", &a.token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );

    // B is busy while A's work panics.
    let b_slow = app.post("/__faults/sleep?ms=300", &b.token).send();
    let a_panic = app.post("/__faults/panic", &a.token).send();
    let (b_slow, a_panic) = tokio::join!(b_slow, a_panic);
    assert_eq!(b_slow.unwrap().status().as_u16(), 204, "B is unaffected");
    let r = a_panic.unwrap();
    assert!(r.headers().contains_key("retry-after"));
    assert_problem(r, 503, "unavailable").await;

    // A is served again, by the same (restarted) actor.
    assert_eq!(
        app.get("/tenant", &a.token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        app.get("/tenant", &b.token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let report = actors(&app).await;
    assert_eq!(report["restarts"], 1);
    let item = |id: uuid::Uuid| {
        report["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["tenant_id"] == id.to_string())
            .cloned()
            .unwrap()
    };
    assert_eq!(item(a.id)["restarts"], 1);
    assert_eq!(item(b.id)["restarts"], 0);
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("tenantry_tenant_actor_restarts_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_tenant_over_its_in_flight_limit_gets_503_with_retry_after() {
    let app = app_with(|c| c.actor_max_in_flight = 2).await;
    let a = app.create_tenant("alpha").await;
    let b = app.create_tenant("beta").await;
    let slow: Vec<_> = (0..6)
        .map(|_| app.post("/__faults/sleep?ms=400", &a.token).send())
        .collect();
    let results = futures_util::future::join_all(slow).await;
    let statuses: Vec<u16> = results
        .iter()
        .map(|r| r.as_ref().unwrap().status().as_u16())
        .collect();
    assert!(statuses.contains(&503), "{statuses:?}");
    assert!(statuses.contains(&204), "{statuses:?}");
    for r in results.into_iter().map(Result::unwrap) {
        if r.status().as_u16() == 503 {
            assert_eq!(r.headers()["retry-after"], "1");
        }
    }
    // Another tenant is not limited by A's load.
    assert_eq!(
        app.get("/tenant", &b.token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

#[tokio::test]
async fn concurrent_first_requests_activate_a_tenant_once() {
    let app = app_with(|_| {}).await;
    let a = app.create_tenant("alpha").await;
    // More than actix's default mailbox bound (16), all on the one worker that also hosts the
    // actor: they arrive before the actor has started and bounded its mailbox.
    let requests: Vec<_> = (0..100)
        .map(|_| app.get("/tenant", &a.token).send())
        .collect();
    for r in futures_util::future::join_all(requests).await {
        let r = r.unwrap();
        let status = r.status().as_u16();
        assert_eq!(status, 200, "{}", r.text().await.unwrap_or_default());
    }
    let report = actors(&app).await;
    assert_eq!(report["activations"], 1);
    assert_eq!(report["active"], 1);
}

#[tokio::test]
async fn idle_actors_are_evicted_and_reactivated_on_demand() {
    let app = app_with(|c| c.actor_idle_timeout = Duration::from_millis(200)).await;
    let a = app.create_tenant("alpha").await;
    assert_eq!(
        app.get("/tenant", &a.token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let mut evicted = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let report = actors(&app).await;
        if report["active"] == 0 {
            assert!(report["evictions"].as_u64().unwrap() >= 1);
            evicted = true;
            break;
        }
    }
    assert!(evicted, "the idle actor was not evicted");
    assert_eq!(
        app.get("/tenant", &a.token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let report = actors(&app).await;
    assert_eq!(report["active"], 1);
    assert_eq!(report["activations"], 2);
}

#[tokio::test]
async fn operator_views_need_the_operator_token() {
    let app = app_with(|_| {}).await;
    let a = app.create_tenant("alpha").await;
    let r = app.http.get(app.url("/admin/actors")).send().await.unwrap();
    assert_problem(r, 401, "unauthorized").await;
    let r = app.get("/admin/actors", &a.token).send().await.unwrap();
    assert_problem(r, 401, "unauthorized").await;
    let metrics = app.metrics_text().await;
    assert!(metrics.contains("tenantry_http_request_duration_seconds_bucket"));
    assert!(metrics.contains("tenantry_db_pool_connections"));
    assert!(metrics.contains("tenantry_tenant_actors_active"));
}

async fn backend_pid(app: &TestApp, token: &str, tenant_schema: bool) -> i64 {
    let body: Value = app
        .post(
            &format!("/__faults/backend?tenant_schema={tenant_schema}"),
            token,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["pid"].as_i64().expect("a pid")
}

/// Only operations that open a tenant's own schema count against a connection's budget of
/// tenant schemas; the sample domain, in the shared schema, must not retire connections.
#[tokio::test]
async fn only_operations_in_tenant_schemas_spend_the_connection_budget() {
    let app = app_with(|config| {
        config.app_pool_size = 1;
        config.tenant_schemas_per_connection = 1;
    })
    .await;
    // Without an api_calls quota: its first admission in a period reads the tenant schema's
    // counters (docs/usage.md), which would spend the budget this test counts.
    app.set_plan_limit("free", "api_calls_per_month", serde_json::Value::Null)
        .await;
    let a = app.create_tenant("budget-a").await;
    let b = app.create_tenant("budget-b").await;
    let first = backend_pid(&app, &a.token, false).await;
    assert_eq!(backend_pid(&app, &b.token, false).await, first);
    assert_eq!(backend_pid(&app, &a.token, false).await, first);
    // Opening a's schema spends the budget of one: the connection is retired after this.
    assert_eq!(backend_pid(&app, &a.token, true).await, first);
    let next = backend_pid(&app, &b.token, false).await;
    assert_ne!(next, first);
    assert_eq!(backend_pid(&app, &a.token, false).await, next);
}
