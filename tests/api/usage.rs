//! Usage metering against the real PostgreSQL and Redis (docs/usage.md): idempotent and durable
//! usage events, metered quotas admitting exactly their limit under 1,000 concurrent requests
//! on one and two servers, rollups with a late event, `GET /usage` validation, the hourly
//! samples, and isolation between tenants.
//!
//! Rollup passes and samples are run through the library with the instant they use passed in,
//! never by waiting for the server's loops.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use futures_util::future::join_all;
use serde_json::{json, Value};
use tenantry::config::Config;
use tenantry::db::Pools;
use tenantry::usage::period_containing;
use tenantry::usage::rollup::roll_tenant;
use uuid::Uuid;

use crate::helpers::{
    assert_problem, provision_tenant, spawn_app, spawn_app_with, test_config, test_db, Server,
    TestApp, TestTenant,
};

fn ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Moves `tenant` to a plan of this test's own, before its first request: no API-call quota
/// unless `api_calls` is given, no rate limit, and `usage_quotas`.
async fn quota_plan(app: &TestApp, tenant: Uuid, api_calls: Option<i64>, usage_quotas: Value) {
    let db = app.superuser_db().await;
    let plan = format!("usage_{}", &Uuid::new_v4().simple().to_string()[..8]);
    let limits = json!({
        "max_users": 100,
        "api_calls_per_month": api_calls,
        "rate_limit_per_minute": null,
        "usage_quotas": usage_quotas,
    });
    db.execute(
        "insert into app.plans (name, display_name, rank, limits, features) \
         values ($1, 'Usage test', 60, $2, '{\"api_access\": true}')",
        &[&plan, &limits],
    )
    .await
    .expect("insert the test plan");
    let moved = db
        .execute(
            "update app.tenants set plan = $1 where id = $2",
            &[&plan, &tenant],
        )
        .await
        .expect("move the tenant");
    assert_eq!(moved, 1);
}

async fn post_usage(app: &TestApp, tenant: &TestTenant, body: &Value) -> reqwest::Response {
    app.post("/usage/events", &tenant.token)
        .json(body)
        .send()
        .await
        .expect("POST /usage/events")
}

async fn stored_events(app: &TestApp, tenant: Uuid) -> Vec<(String, String, i64)> {
    app.superuser_db()
        .await
        .query(
            "select idempotency_key, metric, quantity from app.usage_events \
             where tenant_id = $1 and metric not in ('active_users', 'storage_bytes') \
             order by idempotency_key",
            &[&tenant],
        )
        .await
        .expect("usage events")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

async fn get_usage(app: &TestApp, token: &str, query: &[(&str, String)]) -> reqwest::Response {
    app.get("/usage", token)
        .query(query)
        .send()
        .await
        .expect("GET /usage")
}

fn quantity(items: &Value, metric: &str, start: DateTime<Utc>) -> Option<i64> {
    items["items"].as_array()?.iter().find_map(|item| {
        let at = DateTime::parse_from_rfc3339(item["period_start"].as_str()?).ok()?;
        (item["metric"] == metric && at == start).then(|| item["quantity"].as_i64())?
    })
}

#[tokio::test]
async fn a_repeated_key_is_stored_once_also_concurrently_and_across_servers() {
    let (config, database) = test_config().await;
    let a = spawn_app_with(config.clone(), database.clone()).await;
    let b = spawn_app_with(config, database).await;
    let tenant = a.create_tenant("idem").await;

    let event = json!({"idempotency_key": "k-1", "metric": "emails_sent", "quantity": 3});
    let first = post_usage(&a, &tenant, &event).await;
    assert_eq!(first.status().as_u16(), 202);
    assert_eq!(first.json::<Value>().await.unwrap()["accepted"], 1);
    let again = post_usage(&b, &tenant, &event).await;
    assert_eq!(again.status().as_u16(), 202);
    let again: Value = again.json().await.unwrap();
    assert_eq!(
        (again["accepted"].as_i64(), again["duplicates"].as_i64()),
        (Some(0), Some(1))
    );

    // 40 posts of one new key at once, split over both servers, and a batch repeating it.
    let event = json!({"idempotency_key": "k-2", "metric": "emails_sent", "quantity": 5});
    let posts = (0..40).map(|i| {
        let (server, event) = (if i % 2 == 0 { &a } else { &b }, event.clone());
        let tenant = &tenant;
        async move { post_usage(server, tenant, &event).await.status().as_u16() }
    });
    assert!(join_all(posts).await.iter().all(|s| *s == 202));
    let batch = json!({"events": [event, event, {"idempotency_key": "k-3", "metric": "emails_sent", "quantity": 1}]});
    let r: Value = post_usage(&a, &tenant, &batch).await.json().await.unwrap();
    assert_eq!(
        (r["accepted"].as_i64(), r["duplicates"].as_i64()),
        (Some(1), Some(2))
    );

    assert_eq!(
        stored_events(&a, tenant.id).await,
        [
            ("k-1".to_string(), "emails_sent".to_string(), 3),
            ("k-2".to_string(), "emails_sent".to_string(), 5),
            ("k-3".to_string(), "emails_sent".to_string(), 1),
        ]
    );
}

#[tokio::test]
async fn invalid_events_are_422_naming_the_field() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("invalid").await;
    let now = Utc::now();
    let body = json!({"events": [
        {"idempotency_key": "a", "metric": "emails_sent", "quantity": 1},
        {"idempotency_key": "b", "metric": "emails_sent", "quantity": -1},
        {"idempotency_key": "c", "metric": "emails_sent", "quantity": 1, "occurred_at": ts(now - Duration::hours(49))},
        {"idempotency_key": "d", "metric": "emails_sent", "quantity": 1, "occurred_at": ts(now + Duration::minutes(10))},
        {"idempotency_key": "e", "metric": "api_calls", "quantity": 1},
        {"idempotency_key": "f", "metric": "Emails", "quantity": 2.5, "tenant_id": Uuid::now_v7()},
    ]});
    let problem = assert_problem(
        post_usage(&app, &tenant, &body).await,
        422,
        "validation_failed",
    )
    .await;
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "events[1].quantity",
            "events[2].occurred_at",
            "events[3].occurred_at",
            "events[4].metric",
            "events[5].tenant_id",
            "events[5].metric",
            "events[5].quantity",
        ]
    );
    // Nothing of a refused batch is stored, not even its valid event.
    assert!(stored_events(&app, tenant.id).await.is_empty());
    // One event: the field is the body's own.
    let problem = assert_problem(
        post_usage(&app, &tenant, &json!({"idempotency_key": "x", "metric": "m", "quantity": 1, "occurred_at": "yesterday"})).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "occurred_at");
    // Over the batch size.
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"idempotency_key": format!("k{i}"), "metric": "m", "quantity": 1}))
        .collect();
    assert_problem(
        post_usage(&app, &tenant, &json!({"events": many})).await,
        413,
        "too_many_events",
    )
    .await;
    // Without credentials.
    let r = app
        .http
        .post(app.url("/usage/events"))
        .header("x-tenant-id", tenant.id.to_string())
        .json(&json!({"idempotency_key": "x", "metric": "m", "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test]
async fn events_acknowledged_right_before_sigkill_are_there_after_restart() {
    let db = test_db().await;
    let tenant = provision_tenant(&db.config, &db.pools(), "durable-usage").await;
    let http = reqwest::Client::new();
    let mut acknowledged = 0;
    for round in 0..3 {
        let mut server = Server::start(&db).await;
        let events: Vec<Value> = (0..100)
            .map(|i| json!({"idempotency_key": format!("r{round}-{i}"), "metric": "jobs_run", "quantity": 2}))
            .collect();
        let r = http
            .post(server.url("/usage/events"))
            .bearer_auth(&tenant.token)
            .json(&json!({ "events": events }))
            .send()
            .await
            .expect("POST /usage/events");
        assert_eq!(r.status().as_u16(), 202);
        server.kill();
        assert_eq!(r.json::<Value>().await.unwrap()["accepted"], 100);
        acknowledged += 100;
        let total: i64 = db
            .superuser_db()
            .await
            .query_one(
                "select count(*) from app.usage_events where tenant_id = $1 and metric = 'jobs_run'",
                &[&tenant.tenant.id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(total, acknowledged, "after the kill of round {round}");
    }
}

/// Fires `n` GET /tenant at once, alternating over `servers`; the statuses.
async fn burst(servers: &[&TestApp], tenant: &TestTenant, n: usize) -> Vec<reqwest::Response> {
    let requests = (0..n).map(|i| {
        let server = servers[i % servers.len()];
        server.get("/tenant", &tenant.token).send()
    });
    join_all(requests)
        .await
        .into_iter()
        .map(|r| r.expect("GET /tenant"))
        .collect()
}

async fn created_at(app: &TestApp, tenant: Uuid) -> DateTime<Utc> {
    app.superuser_db()
        .await
        .query_one(
            "select created_at from app.tenants where id = $1",
            &[&tenant],
        )
        .await
        .unwrap()
        .get(0)
}

/// 1,000 concurrent requests against an `api_calls_per_month` of `limit`: exactly `limit` pass
/// admission (a 200, or a 503 when the tenant's mailbox is full after admission), every other
/// one is 429 with the quota body and Retry-After to the period's end.
async fn exactly_the_limit(servers: &[&TestApp], tenant: &TestTenant, limit: i64) {
    let before = Utc::now();
    let responses = burst(servers, tenant, 1000).await;
    let mut admitted = 0;
    let mut refused = None;
    let mut before_admission = Vec::new();
    for r in responses {
        match r.status().as_u16() {
            429 => refused = Some(r),
            200 => admitted += 1,
            // A full mailbox refuses the operation after admission; any other 503 (the
            // configuration still loading, the actor restarting, on a loaded machine) comes
            // before it and spends no quota.
            503 => {
                let body: Value = r.json().await.expect("problem body");
                if body["reason"] == "mailbox_full" {
                    admitted += 1;
                } else {
                    before_admission.push(body);
                }
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(
        admitted, limit,
        "admitted exactly the limit (503s before admission: {before_admission:?})"
    );
    let refused = refused.expect("some requests were refused");
    let retry_after: i64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // The refusal was answered somewhere within the burst, which may take seconds on a loaded
    // machine: its Retry-After lies between the period's end seen from after and from before.
    let after = Utc::now();
    let period = period_containing(created_at(servers[0], tenant.id).await, after);
    let (least, most) = (
        (period.end - after).num_seconds() - 1,
        (period.end - before).num_seconds() + 1,
    );
    assert!(
        (least..=most).contains(&retry_after),
        "Retry-After {retry_after}, period end in {least} to {most} s"
    );
    let body = assert_problem(refused, 429, "quota_exceeded").await;
    assert_eq!(body["metric"], "api_calls");
    assert_eq!(body["limit"], limit);
    assert_eq!(body["used"], limit);
}

#[tokio::test]
async fn one_server_admits_exactly_the_api_call_quota() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("quota-one").await;
    quota_plan(&app, tenant.id, Some(100), json!({})).await;
    exactly_the_limit(&[&app], &tenant, 100).await;
}

#[tokio::test]
async fn two_servers_admit_exactly_the_api_call_quota_together() {
    let (mut config, database) = test_config().await;
    config.rate_limits.instances = 2;
    let a = spawn_app_with(config.clone(), database.clone()).await;
    let b = spawn_app_with(config, database).await;
    let tenant = a.create_tenant("quota-two").await;
    quota_plan(&a, tenant.id, Some(150), json!({})).await;
    exactly_the_limit(&[&a, &b], &tenant, 150).await;
}

#[tokio::test]
async fn usage_events_are_admitted_against_their_metric_quota() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("quota-events").await;
    quota_plan(&app, tenant.id, None, json!({"emails_sent": 10})).await;
    let event =
        |key: &str, n: i64| json!({"idempotency_key": key, "metric": "emails_sent", "quantity": n});
    assert_eq!(
        post_usage(&app, &tenant, &event("a", 6))
            .await
            .status()
            .as_u16(),
        202
    );
    let refused = post_usage(&app, &tenant, &event("b", 5)).await;
    assert!(refused.headers().contains_key("retry-after"));
    let body = assert_problem(refused, 429, "quota_exceeded").await;
    assert_eq!(
        (body["metric"].as_str(), body["limit"].as_i64()),
        (Some("emails_sent"), Some(10))
    );
    assert!(body["used"].as_i64().unwrap() >= 6);
    // A repeat takes nothing from the quota; other metrics have none.
    assert_eq!(
        post_usage(&app, &tenant, &event("a", 6))
            .await
            .status()
            .as_u16(),
        202
    );
    assert_eq!(
        post_usage(&app, &tenant, &event("c", 4))
            .await
            .status()
            .as_u16(),
        202
    );
    assert_eq!(
        post_usage(&app, &tenant, &event("d", 1))
            .await
            .status()
            .as_u16(),
        429
    );
    let other = json!({"idempotency_key": "e", "metric": "sms_sent", "quantity": 1000});
    assert_eq!(
        post_usage(&app, &tenant, &other).await.status().as_u16(),
        202
    );
    let stored: i64 = stored_events(&app, tenant.id)
        .await
        .iter()
        .filter(|(_, m, _)| m == "emails_sent")
        .map(|(_, _, q)| q)
        .sum();
    assert_eq!(stored, 10);
}

#[tokio::test]
async fn rollups_are_recomputed_for_late_events() {
    let app = spawn_app().await;
    let pools = Pools::new(&app.config).expect("pools");
    let tenant = app.create_tenant("rollups").await;
    let now = Utc::now();
    let late_hour = tenantry::usage::floor_hour(now - Duration::hours(47));
    let this_hour = tenantry::usage::floor_hour(now);
    let body = json!({"events": [
        {"idempotency_key": "1", "metric": "jobs_run", "quantity": 2, "occurred_at": ts(late_hour + Duration::minutes(1))},
        {"idempotency_key": "2", "metric": "jobs_run", "quantity": 3, "occurred_at": ts(late_hour + Duration::minutes(59))},
        {"idempotency_key": "3", "metric": "jobs_run", "quantity": 7, "occurred_at": ts(now)},
    ]});
    assert_eq!(
        post_usage(&app, &tenant, &body).await.status().as_u16(),
        202
    );
    let since = now - Duration::minutes(5);
    roll_tenant(&pools.app, tenant.id, since).await.unwrap();
    let hourly = [
        ("granularity", "hour".to_string()),
        ("from", ts(late_hour)),
        ("to", ts(this_hour + Duration::hours(1))),
    ];
    let items: Value = get_usage(&app, &tenant.token, &hourly)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(quantity(&items, "jobs_run", late_hour), Some(5));
    assert_eq!(quantity(&items, "jobs_run", this_hour), Some(7));

    // A late event, then a second pass: its bucket is recomputed, not added to twice.
    let late = json!({"idempotency_key": "4", "metric": "jobs_run", "quantity": 10, "occurred_at": ts(late_hour + Duration::minutes(30))});
    assert_eq!(
        post_usage(&app, &tenant, &late).await.status().as_u16(),
        202
    );
    roll_tenant(&pools.app, tenant.id, since).await.unwrap();
    roll_tenant(&pools.app, tenant.id, since).await.unwrap();
    let items: Value = get_usage(&app, &tenant.token, &hourly)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(quantity(&items, "jobs_run", late_hour), Some(15));
    assert_eq!(quantity(&items, "jobs_run", this_hour), Some(7));
    let daily = [
        ("granularity", "day".to_string()),
        ("from", ts(now - Duration::days(3))),
        ("to", ts(now + Duration::days(1))),
    ];
    let items: Value = get_usage(&app, &tenant.token, &daily)
        .await
        .json()
        .await
        .unwrap();
    let total: i64 = items["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["metric"] == "jobs_run")
        .map(|i| i["quantity"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 22);

    // The billing read: events of the period, whichever part is rolled up.
    let mut conn = pools.app.get().await.unwrap();
    let tx = tenantry::db::begin_tenant_tx(&mut conn, tenant.id)
        .await
        .unwrap();
    let period = tenantry::usage::Period {
        start: now - Duration::days(3),
        end: now + Duration::days(1),
    };
    let totals = tenantry::usage::period_totals(&*tx, tenant.id, &period, now)
        .await
        .unwrap();
    assert_eq!(totals.get("jobs_run"), Some(&22));
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn get_usage_validates_its_parameters() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("usage-params").await;
    let now = Utc::now();
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (vec![("granularity", "week".into())], "granularity"),
        (vec![("from", "yesterday".into())], "from"),
        (
            vec![("from", ts(now)), ("to", ts(now - Duration::hours(1)))],
            "from",
        ),
        (
            vec![
                ("granularity", "hour".into()),
                ("from", ts(now - Duration::days(40))),
                ("to", ts(now)),
            ],
            "to",
        ),
    ];
    for (query, field) in cases {
        let problem = assert_problem(
            get_usage(&app, &tenant.token, &query).await,
            422,
            "validation_failed",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field, "{query:?}");
    }
    // A smuggled parameter is refused too.
    let r = get_usage(
        &app,
        &tenant.token,
        &[("tenant_id", Uuid::now_v7().to_string())],
    )
    .await;
    assert_eq!(r.status().as_u16(), 422);
    let r = get_usage(&app, &tenant.token, &[]).await;
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn a_tenant_never_sees_another_tenants_usage() {
    let app = spawn_app().await;
    let pools = Pools::new(&app.config).expect("pools");
    let a = app.create_tenant("usage-a").await;
    let b = app.create_tenant("usage-b").await;
    let event = json!({"idempotency_key": "same-key", "metric": "secret_metric", "quantity": 42});
    assert_eq!(post_usage(&app, &a, &event).await.status().as_u16(), 202);
    // The same key in another tenant is another event.
    let r: Value = post_usage(&app, &b, &event).await.json().await.unwrap();
    assert_eq!(r["accepted"], 1);
    let mine = json!({"idempotency_key": "b-only", "metric": "b_metric", "quantity": 1});
    assert_eq!(post_usage(&app, &b, &mine).await.status().as_u16(), 202);
    let now = Utc::now();
    for tenant in [&a, &b] {
        roll_tenant(&pools.app, tenant.id, now - Duration::minutes(5))
            .await
            .unwrap();
    }
    let query = [("granularity", "hour".to_string())];
    let seen: Value = get_usage(&app, &b.token, &query)
        .await
        .json()
        .await
        .unwrap();
    let total: i64 = seen["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["metric"] == "secret_metric")
        .map(|i| i["quantity"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 42, "only b's own event");
    let seen: Value = get_usage(&app, &a.token, &query)
        .await
        .json()
        .await
        .unwrap();
    assert!(seen["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["metric"] != "b_metric"));
    // b's token naming a by header or subdomain: refused.
    let r = app
        .get("/usage", &b.token)
        .header("x-tenant-id", a.id.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = app
        .get("/usage", &b.token)
        .header("host", format!("{}.{}", a.slug, app.config.base_domain))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = app
        .post("/usage/events", &b.token)
        .header("x-tenant-id", a.id.to_string())
        .json(&json!({"idempotency_key": "x", "metric": "m", "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // The app role without a tenant context sees no usage row at all.
    let app_db = app.app_db().await;
    let rows: i64 = app_db
        .query_one("select count(*) from app.usage_events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn seats_and_storage_are_sampled_once_an_hour() {
    let app = spawn_app().await;
    let pools = Pools::new(&app.config).expect("pools");
    let tenant = app.create_tenant("samples").await;
    crate::fixtures::create_user(&app, &tenant.token, "second@samples.example.com", "member").await;
    let at = Utc::now() + Duration::hours(1);
    let hour = tenantry::usage::floor_hour(at);
    tenantry::usage::sample::sample_all(&pools.app, at)
        .await
        .unwrap();
    // A second instance sampling the same hour adds nothing.
    tenantry::usage::sample::sample_all(&pools.app, at)
        .await
        .unwrap();
    let query = [
        ("granularity", "hour".to_string()),
        ("from", ts(hour)),
        ("to", ts(hour + Duration::hours(1))),
    ];
    let items: Value = get_usage(&app, &tenant.token, &query)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(quantity(&items, "active_users", hour), Some(2));
    assert!(quantity(&items, "storage_bytes", hour).unwrap() > 8192);
    let samples: i64 = app
        .superuser_db()
        .await
        .query_one(
            "select count(*) from app.usage_events where tenant_id = $1 and metric = 'active_users'",
            &[&tenant.id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(samples >= 1);
    let _: &Config = &app.config;
}
