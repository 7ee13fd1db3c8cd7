//! Plans as data: the public list, the operator's changes with their audit rows, moving a
//! tenant, and the plan gates answered from the snapshot.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::fixtures::expect;
use crate::helpers::{assert_problem, spawn_app, TestApp};

fn put_plan(app: &TestApp, name: &str, request_id: &str) -> reqwest::RequestBuilder {
    app.operator(app.http.put(app.url(&format!("/admin/plans/{name}"))))
        .header("X-Request-Id", request_id)
}

fn field_errors(body: &Value) -> Vec<String> {
    let mut fields: Vec<String> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_string())
        .collect();
    fields.sort();
    fields
}

#[tokio::test]
async fn the_public_list_has_the_defaults_of_api_md() {
    let app = spawn_app().await;
    let r = app.http.get(app.url("/plans")).send().await.unwrap();
    assert_eq!(r.headers()["cache-control"], "public, max-age=60");
    let body = expect(r, 200).await;
    let names: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["free", "pro", "enterprise"]);
    assert_eq!(body["next_cursor"], Value::Null);

    let free = app.plan("free").await;
    assert_eq!(
        free["limits"],
        json!({"max_users": 100, "api_calls_per_month": 100000, "rate_limit_per_minute": 600,
               "webhook_deliveries_per_minute": 100, "analytics_retention_days": 30, "usage_quotas": {}})
    );
    assert_eq!(
        free["features"],
        json!({"api_access": false, "webhooks": false, "custom_integrations": false})
    );
    assert_eq!(free["price_cents"], 0);
    assert_eq!(free["currency"], "usd");
    let pro = app.plan("pro").await;
    assert_eq!(pro["limits"]["max_users"], 1000);
    assert_eq!(pro["limits"]["rate_limit_per_minute"], 6000);
    assert_eq!(
        pro["features"],
        json!({"api_access": true, "webhooks": true, "custom_integrations": false})
    );
    let enterprise = app.plan("enterprise").await;
    assert_eq!(enterprise["limits"]["max_users"], Value::Null);
    assert_eq!(enterprise["limits"]["api_calls_per_month"], Value::Null);
    assert_eq!(enterprise["limits"]["rate_limit_per_minute"], Value::Null);
    assert_eq!(enterprise["limits"]["webhook_deliveries_per_minute"], 100);
    assert_eq!(enterprise["features"]["custom_integrations"], true);
    assert_eq!(enterprise["price_cents"], 49900);
}

#[tokio::test]
async fn operators_replace_and_create_plans_audited_before_and_after() {
    let app = spawn_app().await;
    let t = app.create_tenant("planned").await;
    let db = app.superuser_db().await;

    // No operator token: 401.
    let r = app
        .http
        .put(app.url("/admin/plans/free"))
        .json(&app.plan("free").await)
        .send()
        .await
        .unwrap();
    assert_problem(r, 401, "unauthorized").await;
    let r = app
        .http
        .put(app.url("/admin/plans/free"))
        .bearer_auth(&t.token)
        .json(&app.plan("free").await)
        .send()
        .await
        .unwrap();
    assert_problem(r, 401, "unauthorized").await;

    // Replace: the body is the plan as GET /plans shows it.
    let mut free = app.plan("free").await;
    free["display_name"] = json!("Free forever");
    free["limits"]["max_users"] = json!(3);
    let r = put_plan(&app, "free", "plan-put-1")
        .json(&free)
        .send()
        .await
        .unwrap();
    let saved = expect(r, 200).await;
    assert_eq!(saved, free);
    assert_eq!(app.plan("free").await, free);
    let row = db
        .query_one(
            "select action, target_tenant_id, details from app.platform_audit_logs where request_id = 'plan-put-1'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "plan.update");
    assert_eq!(row.get::<_, Option<Uuid>>(1), None);
    let details: Value = row.get(2);
    assert_eq!(details["plan"], "free");
    assert_eq!(details["before"]["limits"]["max_users"], 100);
    assert_eq!(details["before"]["display_name"], "Free");
    assert_eq!(details["after"]["limits"]["max_users"], 3);
    assert_eq!(details["after"]["display_name"], "Free forever");

    // Create: a new plan, named by the path (the body's name may be left out).
    let mut team = free.clone();
    team.as_object_mut().unwrap().remove("name");
    team["display_name"] = json!("Team");
    team["rank"] = json!(1);
    team["price_cents"] = json!(1900);
    team["features"]["api_access"] = json!(true);
    team["features"]["sso"] = json!(true);
    let r = put_plan(&app, "team", "plan-put-2")
        .json(&team)
        .send()
        .await
        .unwrap();
    let created = expect(r, 201).await;
    assert_eq!(created["name"], "team");
    assert_eq!(created["features"]["sso"], true);
    let names: Vec<String> = app
        .http
        .get(app.url("/plans"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["free", "team", "pro", "enterprise"]);
    let row = db
        .query_one(
            "select action, details from app.platform_audit_logs where request_id = 'plan-put-2'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "plan.create");
    let details: Value = row.get(1);
    assert_eq!(details["before"], Value::Null);
    assert_eq!(details["after"]["price_cents"], 1900);
}

#[tokio::test]
async fn a_plan_body_is_validated_with_field_paths() {
    let app = spawn_app().await;
    let good = app.plan("pro").await;
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        ("pro", json!({"name": "free"}), vec!["name"]),
        // Invalid, and not the name of the body either.
        ("Pro!", json!({}), vec!["name", "name"]),
        ("pro", json!({"display_name": ""}), vec!["display_name"]),
        (
            "pro",
            json!({"display_name": "a\u{0}b"}),
            vec!["display_name"],
        ),
        ("pro", json!({"rank": -1}), vec!["rank"]),
        ("pro", json!({"rank": "1"}), vec!["rank"]),
        ("pro", json!({"price_cents": -5}), vec!["price_cents"]),
        ("pro", json!({"currency": "dollars"}), vec!["currency"]),
        ("pro", json!({"tenant_id": "x"}), vec!["tenant_id"]),
        (
            "pro",
            json!({"limits": {"max_users": -1}}),
            vec!["limits.max_users"],
        ),
        (
            "pro",
            json!({"limits": {"max_users": "ten"}}),
            vec!["limits.max_users"],
        ),
        (
            "pro",
            json!({"limits": {"max_users": 1.5}}),
            vec!["limits.max_users"],
        ),
        (
            "pro",
            json!({"limits": {"rate_limit_per_minute": 0}}),
            vec!["limits.rate_limit_per_minute"],
        ),
        ("pro", json!({"limits": {"seats": 3}}), vec!["limits.seats"]),
        ("pro", json!({"limits": []}), vec!["limits"]),
        (
            "pro",
            json!({"features": {"webhooks": "yes"}}),
            vec!["features.webhooks"],
        ),
        (
            "pro",
            json!({"features": {"Not Valid": true}}),
            vec!["features.Not Valid"],
        ),
    ];
    for (name, change, fields) in cases {
        let mut body = good.clone();
        for (key, value) in change.as_object().unwrap() {
            if let (Some(inner), Some(target)) = (value.as_object(), body[key].as_object_mut()) {
                for (k, v) in inner {
                    target.insert(k.clone(), v.clone());
                }
            } else {
                body[key] = value.clone();
            }
        }
        let r = put_plan(&app, name, "v").json(&body).send().await.unwrap();
        let problem = assert_problem(r, 422, "validation_failed").await;
        assert_eq!(field_errors(&problem), fields, "{name} {change}");
    }
    // A limit left out is refused, not read as unlimited.
    let mut body = good.clone();
    body["limits"]
        .as_object_mut()
        .unwrap()
        .remove("webhook_deliveries_per_minute");
    let r = put_plan(&app, "pro", "v").json(&body).send().await.unwrap();
    let problem = assert_problem(r, 422, "validation_failed").await;
    assert_eq!(
        field_errors(&problem),
        ["limits.webhook_deliveries_per_minute"]
    );
    // Nothing was changed by the refused bodies.
    assert_eq!(app.plan("pro").await, good);
}

#[tokio::test]
async fn moving_a_tenant_to_another_plan_is_audited_and_effective_at_once() {
    let app = spawn_app().await;
    let t = app.create_tenant("mover").await;
    let db = app.superuser_db().await;
    let key = |app: &TestApp| {
        app.post("/api-keys", &t.token)
            .json(&json!({"name": "ci"}))
            .send()
    };
    let body = assert_problem(key(&app).await.unwrap(), 403, "plan_required").await;
    assert_eq!(body["required_plan"], "pro");
    assert_eq!(body["feature"], "api_access");

    let put = |id: Uuid, plan: Value, request_id: &str| {
        app.operator(app.http.put(app.url(&format!("/admin/tenants/{id}/plan"))))
            .header("X-Request-Id", request_id)
            .json(&json!({"plan": plan}))
            .send()
    };
    let problem = assert_problem(
        put(t.id, json!("platinum"), "m0").await.unwrap(),
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(field_errors(&problem), ["plan"]);
    assert_problem(
        put(t.id, json!("pro\u{0}"), "m0").await.unwrap(),
        422,
        "validation_failed",
    )
    .await;
    assert_problem(
        put(Uuid::now_v7(), json!("pro"), "m0").await.unwrap(),
        404,
        "not_found",
    )
    .await;
    let r = app
        .operator(
            app.http
                .put(app.url(&format!("/admin/tenants/{}/plan", t.id))),
        )
        .json(&json!({"plan": "pro", "tenant_id": Uuid::now_v7()}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 422, "validation_failed").await;

    let moved = expect(put(t.id, json!("pro"), "move-1").await.unwrap(), 200).await;
    assert_eq!(moved["plan"], "pro");
    assert_eq!(moved["id"], t.id.to_string());
    // Effective on the tenant's next request.
    assert_eq!(key(&app).await.unwrap().status().as_u16(), 201);

    let row = db
        .query_one(
            "select action, target_tenant_id, details from app.platform_audit_logs where request_id = 'move-1'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "tenant.plan");
    assert_eq!(row.get::<_, Option<Uuid>>(1), Some(t.id));
    assert_eq!(
        row.get::<_, Value>(2),
        json!({"before": "free", "after": "pro"})
    );
    // The tenant's own trail shows it too, to its admins.
    let logs = expect(
        app.get("/audit-logs?resource=tenant", &t.token)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let entry = logs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["request_id"] == "move-1")
        .cloned()
        .expect("the move in the tenant's audit trail");
    assert_eq!(entry["actor"], "platform");
    assert_eq!(entry["action"], "update");
    assert_eq!(entry["changes"]["before"], json!({"plan": "free"}));
    assert_eq!(entry["changes"]["after"], json!({"plan": "pro"}));

    // Moving it where it is changes and records nothing.
    expect(put(t.id, json!("pro"), "move-2").await.unwrap(), 200).await;
    let n: i64 = db
        .query_one(
            "select count(*) from app.platform_audit_logs where request_id = 'move-2'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn gates_name_the_cheapest_plan_and_the_limit() {
    let app = spawn_app().await;
    let t = app.create_tenant("gated").await;

    // Seats: the admin holds one of one.
    app.set_plan_limit("free", "max_users", json!(1)).await;
    let r = app
        .post("/users", &t.token)
        .json(&json!({"email": "two@gated.example.com", "name": "Two"}))
        .send()
        .await
        .unwrap();
    let body = assert_problem(r, 402, "plan_limit").await;
    assert_eq!(body["limit"], 1);
    assert_eq!(body["current"], 1);
    assert_eq!(body["resource"], "users");
    app.set_plan_limit("free", "max_users", json!(2)).await;
    let r = app
        .post("/users", &t.token)
        .json(&json!({"email": "two@gated.example.com", "name": "Two"}))
        .send()
        .await
        .unwrap();
    expect(r, 201).await;

    // A cheaper plan with API access: it is the one a free tenant is told about. Tenants on
    // other plans than the one changed refresh at their next request, so the answer may lag
    // by one request.
    let mut starter = app.plan("free").await;
    starter["name"] = json!("starter");
    starter["display_name"] = json!("Starter");
    starter["rank"] = json!(1);
    starter["price_cents"] = json!(900);
    starter["features"]["api_access"] = json!(true);
    let r = app
        .operator(app.http.put(app.url("/admin/plans/starter")))
        .json(&starter)
        .send()
        .await
        .unwrap();
    expect(r, 201).await;
    let mut named = Vec::new();
    for _ in 0..50 {
        let r = app
            .post("/api-keys", &t.token)
            .json(&json!({"name": "ci"}))
            .send()
            .await
            .unwrap();
        let body = assert_problem(r, 403, "plan_required").await;
        named.push(body["required_plan"].as_str().unwrap().to_string());
        if named.last().map(String::as_str) == Some("starter") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        named.last().map(String::as_str),
        Some("starter"),
        "{named:?}"
    );
}
