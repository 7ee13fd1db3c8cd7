//! Feature flags through the API: resolution (override > plan > default) for every JSON type,
//! rollouts with Unleash's bucketing and their stickiness across evaluations, restarts and
//! instances, versions and rollback, audit rows with before and after, tenant isolation, and
//! the 422 field paths.

use serde_json::{json, Value};
use tenantry::auth::Role;
use uuid::Uuid;

use crate::fixtures::{create_user, expect, id_of, token_for};
use crate::helpers::{
    assert_problem, provision_tenant, spawn_app, test_db, Server, TestApp, OPERATOR_TOKEN,
};

pub async fn put_flag(app: &TestApp, key: &str, body: Value) -> reqwest::Response {
    app.operator(app.http.put(app.url(&format!("/admin/flags/{key}"))))
        .json(&body)
        .send()
        .await
        .unwrap()
}

pub async fn define(app: &TestApp, key: &str, body: Value) -> Value {
    let r = put_flag(app, key, body).await;
    assert!(
        r.status().is_success(),
        "PUT /admin/flags/{key}: {}",
        r.status()
    );
    r.json().await.unwrap()
}

pub async fn put_override(
    app: &TestApp,
    tenant: Uuid,
    key: &str,
    body: Value,
) -> reqwest::Response {
    app.operator(
        app.http
            .put(app.url(&format!("/admin/tenants/{tenant}/flags/{key}"))),
    )
    .json(&body)
    .send()
    .await
    .unwrap()
}

async fn delete_override(app: &TestApp, tenant: Uuid, key: &str) -> reqwest::Response {
    app.operator(
        app.http
            .delete(app.url(&format!("/admin/tenants/{tenant}/flags/{key}"))),
    )
    .send()
    .await
    .unwrap()
}

pub async fn features(app: &TestApp, token: &str) -> Value {
    let r = app.get("/features", token).send().await.unwrap();
    expect(r, 200).await["flags"].clone()
}

/// One flag of each JSON type, with a value for the pro plan.
async fn define_typed_flags(app: &TestApp) {
    define(
        app,
        "beta",
        json!({"description": "the beta UI", "default": false, "plans": {"pro": true}}),
    )
    .await;
    define(
        app,
        "banner",
        json!({"default": "hello", "plans": {"pro": "hello, pro"}}),
    )
    .await;
    define(
        app,
        "max-rows",
        json!({"default": 10, "plans": {"pro": 100}}),
    )
    .await;
    define(
        app,
        "theme",
        json!({"default": {"color": "blue"}, "plans": {"pro": {"color": "gold", "dark": true}}}),
    )
    .await;
}

#[tokio::test]
async fn the_most_specific_value_wins_for_every_type() {
    let app = spawn_app().await;
    let free = app.create_tenant_on_plan("flags-free", "free").await;
    let pro = app.create_tenant_on_plan("flags-pro", "pro").await;
    let enterprise = app.create_tenant_on_plan("flags-ent", "enterprise").await;
    define_typed_flags(&app).await;

    let defaults =
        json!({"beta": false, "banner": "hello", "max-rows": 10, "theme": {"color": "blue"}});
    let pro_values = json!({"beta": true, "banner": "hello, pro", "max-rows": 100, "theme": {"color": "gold", "dark": true}});
    // No plan value for enterprise: the global default.
    assert_eq!(features(&app, &free.token).await, defaults);
    assert_eq!(features(&app, &enterprise.token).await, defaults);
    assert_eq!(features(&app, &pro.token).await, pro_values);

    // A tenant override beats the plan value and the default, for each type.
    let overrides = json!({"beta": false, "banner": "just for you", "max-rows": 7.5, "theme": {"color": "red"}});
    for (key, value) in overrides.as_object().unwrap() {
        let r = put_override(&app, pro.id, key, json!({"value": value})).await;
        let body = expect(r, 201).await;
        assert_eq!(body["value"], *value);
        assert_eq!(body["version"], 1);
        assert_eq!(body["tenant_id"], pro.id.to_string());
        let r = put_override(&app, free.id, key, json!({"value": value})).await;
        expect(r, 201).await;
    }
    assert_eq!(features(&app, &pro.token).await, overrides);
    assert_eq!(features(&app, &free.token).await, overrides);
    assert_eq!(features(&app, &enterprise.token).await, defaults);

    // The same value again changes nothing; another one is the next version.
    let same = expect(
        put_override(&app, pro.id, "banner", json!({"value": "just for you"})).await,
        200,
    )
    .await;
    assert_eq!(same["version"], 1);
    let next = expect(
        put_override(&app, pro.id, "banner", json!({"value": "again"})).await,
        200,
    )
    .await;
    assert_eq!(next["version"], 2);

    // Without its override the tenant falls back to its plan's value, then the default.
    for key in ["beta", "banner", "max-rows", "theme"] {
        expect(delete_override(&app, pro.id, key).await, 204).await;
        expect(delete_override(&app, free.id, key).await, 204).await;
    }
    assert_eq!(features(&app, &pro.token).await, pro_values);
    assert_eq!(features(&app, &free.token).await, defaults);
    assert_problem(
        delete_override(&app, pro.id, "beta").await,
        404,
        "not_found",
    )
    .await;
    // Back after a delete, one version further.
    let back = expect(
        put_override(&app, pro.id, "beta", json!({"value": false})).await,
        201,
    )
    .await;
    assert_eq!(back["version"], 3);

    // A plan value changed by the operator shows on the next request.
    define(
        &app,
        "max-rows",
        json!({"default": 10, "plans": {"pro": 100, "enterprise": 1000}}),
    )
    .await;
    assert_eq!(features(&app, &enterprise.token).await["max-rows"], 1000);

    // Any user of the tenant reads them; nobody without credentials.
    let member = create_user(&app, &pro.token, "member@flags-pro.example.com", "member").await;
    let member_token = token_for(&app, pro.id, id_of(&member), Role::Member);
    assert_eq!(features(&app, &member_token).await["max-rows"], 100);
    let r = app
        .http
        .get(app.url("/features"))
        .header("X-Tenant-ID", pro.id.to_string())
        .send()
        .await
        .unwrap();
    assert_problem(r, 401, "unauthorized").await;
}

/// OFREP with an explicit targeting key: the bucket of that key.
async fn evaluate_for(base: &str, token: &str, key: &str, subject: &str) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{base}/ofrep/v1/evaluate/flags/{key}"))
        .bearer_auth(token)
        .json(&json!({"context": {"targetingKey": subject}}))
        .send()
        .await
        .unwrap();
    expect(r, 200).await
}

#[tokio::test]
async fn rollouts_use_unleash_buckets() {
    let app = spawn_app().await;
    let t = app.create_tenant_on_plan("rollout", "pro").await;
    let on_pro = json!({"free": true, "pro": true, "enterprise": true});
    define(
        &app,
        "Feature.flexibleRollout.10",
        json!({"default": false, "plans": on_pro, "rollout_percent": 10}),
    )
    .await;
    define(
        &app,
        "Feature.flexibleRollout.userId.55",
        json!({"default": false, "plans": on_pro, "rollout_percent": 55}),
    )
    .await;
    define(
        &app,
        "Feature.flexibleRollout.100",
        json!({"default": false, "plans": on_pro, "rollout_percent": 100}),
    )
    .await;
    define(
        &app,
        "off",
        json!({"default": false, "plans": on_pro, "rollout_percent": 0}),
    )
    .await;

    // Unleash's client specification (10-flexible-rollout-strategy.json).
    let e = evaluate_for(&app.address, &t.token, "Feature.flexibleRollout.10", "174").await;
    assert_eq!(
        (
            e["value"].clone(),
            e["reason"].clone(),
            e["variant"].clone()
        ),
        (json!(true), json!("SPLIT"), json!("plan"))
    );
    let e = evaluate_for(&app.address, &t.token, "Feature.flexibleRollout.10", "499").await;
    assert_eq!(
        (
            e["value"].clone(),
            e["reason"].clone(),
            e["variant"].clone()
        ),
        (json!(false), json!("SPLIT"), json!("default"))
    );
    let e = evaluate_for(
        &app.address,
        &t.token,
        "Feature.flexibleRollout.userId.55",
        "25",
    )
    .await;
    assert_eq!(e["value"], true);
    let e = evaluate_for(&app.address, &t.token, "Feature.flexibleRollout.100", "499").await;
    assert_eq!(e["value"], true);
    let e = evaluate_for(&app.address, &t.token, "off", "174").await;
    assert_eq!(
        (e["value"].clone(), e["reason"].clone()),
        (json!(false), json!("DISABLED"))
    );

    // An override wins over the rollout, inside it or not.
    expect(
        put_override(
            &app,
            t.id,
            "Feature.flexibleRollout.10",
            json!({"value": true}),
        )
        .await,
        201,
    )
    .await;
    let e = evaluate_for(&app.address, &t.token, "Feature.flexibleRollout.10", "499").await;
    assert_eq!(
        (
            e["value"].clone(),
            e["reason"].clone(),
            e["variant"].clone()
        ),
        (json!(true), json!("TARGETING_MATCH"), json!("override"))
    );

    // GET /features buckets by user: about half of many users are in a 50 % rollout, each
    // with the same answer every time.
    define(
        &app,
        "half",
        json!({"default": "old", "plans": {"pro": "new"}, "rollout_percent": 50}),
    )
    .await;
    let mut inside = 0;
    for i in 0..30 {
        let user = create_user(
            &app,
            &t.token,
            &format!("u{i}@rollout.example.com"),
            "member",
        )
        .await;
        let token = token_for(&app, t.id, id_of(&user), Role::Member);
        let first = features(&app, &token).await["half"].clone();
        assert_eq!(features(&app, &token).await["half"], first);
        let by_key = evaluate_for(
            &app.address,
            &token,
            "half",
            id_of(&user).to_string().as_str(),
        )
        .await;
        assert_eq!(
            by_key["value"], first,
            "GET /features buckets by the user's id"
        );
        if first == "new" {
            inside += 1;
        }
    }
    assert!(
        (5..=25).contains(&inside),
        "{inside} of 30 users in a 50 % rollout"
    );
}

fn operator_put(base: &str, path: &str, body: Value) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .put(format!("{base}{path}"))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&body)
}

async fn answers(base: &str, token: &str, keys: &[String]) -> Vec<Value> {
    let mut out = Vec::new();
    for key in keys {
        out.push(evaluate_for(base, token, "sticky", key).await["value"].clone());
    }
    out
}

/// The same targeting key gets the same answer on every evaluation, after a restart of the
/// server, and from a second instance.
#[tokio::test]
async fn rollouts_are_sticky_across_restarts_and_instances() {
    let db = test_db().await;
    let pools = db.pools();
    let tenant = provision_tenant(&db.config, &pools, "sticky").await;
    let env = [("PLATFORM_ADMIN_TOKEN", OPERATOR_TOKEN)];
    let mut first = Server::start_with(&db, 1, &env).await;
    let r = operator_put(
        &first.address,
        "/admin/flags/sticky",
        json!({"default": 0, "plans": {"free": 1}, "rollout_percent": 30}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let keys: Vec<String> = (0..40).map(|i| format!("user-{i}")).collect();
    let before = answers(&first.address, &tenant.token, &keys).await;
    assert_eq!(answers(&first.address, &tenant.token, &keys).await, before);
    let on = before.iter().filter(|v| **v == json!(1)).count();
    assert!((3..=25).contains(&on), "{on} of 40 keys in a 30 % rollout");

    first.kill();
    let restarted = Server::start_with(&db, 1, &env).await;
    let other = Server::start_with(&db, 1, &env).await;
    assert_eq!(
        answers(&restarted.address, &tenant.token, &keys).await,
        before
    );
    assert_eq!(answers(&other.address, &tenant.token, &keys).await, before);
}

#[tokio::test]
async fn every_definition_version_is_kept_and_rollback_restores_one() {
    let app = spawn_app().await;
    let t = app.create_tenant_on_plan("versions", "pro").await;
    let v1 = json!({"description": "first", "default": "a", "plans": {"pro": "b"}});
    let r = put_flag(&app, "copy", v1.clone()).await;
    let created = expect(r, 201).await;
    assert_eq!(created["version"], 1);
    // The same body again is no new version.
    assert_eq!(
        expect(put_flag(&app, "copy", v1.clone()).await, 200).await["version"],
        1
    );
    let v2 = expect(put_flag(&app, "copy", json!({"description": "second", "default": "a", "plans": {"pro": "c"}, "rollout_percent": 50})).await, 200).await;
    assert_eq!(v2["version"], 2);
    let v3 = expect(put_flag(&app, "copy", json!({"default": "z"})).await, 200).await;
    assert_eq!(
        (
            v3["version"].clone(),
            v3["plans"].clone(),
            v3["rollout_percent"].clone()
        ),
        (json!(3), json!({}), Value::Null)
    );
    assert_eq!(features(&app, &t.token).await["copy"], "z");

    let versions = |query: &'static str| {
        let app = &app;
        async move {
            let r = app
                .operator(
                    app.http
                        .get(app.url(&format!("/admin/flags/copy/versions{query}"))),
                )
                .send()
                .await
                .unwrap();
            expect(r, 200).await
        }
    };
    let page = versions("").await;
    let listed: Vec<(i64, &str)> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_i64().unwrap(),
                v["change"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed, vec![(3, "update"), (2, "update"), (1, "create")]);
    assert_eq!(page["items"][2]["default"], "a");
    assert_eq!(page["items"][2]["plans"], json!({"pro": "b"}));
    assert_eq!(page["items"][1]["rollout_percent"], 50);
    assert_eq!(page["items"][0]["actor"], "operator");
    assert!(page["next_cursor"].is_null());
    let first = versions("?limit=2").await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    let rest = {
        let r = app
            .operator(app.http.get(app.url(&format!(
                "/admin/flags/copy/versions?limit=2&cursor={cursor}"
            ))))
            .send()
            .await
            .unwrap();
        expect(r, 200).await
    };
    assert_eq!(rest["items"][0]["version"], 1);
    assert!(rest["next_cursor"].is_null());

    // Rollback writes a new version equal to the old one.
    let rollback = |body: Value| {
        let app = &app;
        async move {
            app.operator(app.http.post(app.url("/admin/flags/copy/rollback")))
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let restored = expect(rollback(json!({"version": 1})).await, 200).await;
    assert_eq!(restored["version"], 4);
    assert_eq!(restored["description"], "first");
    assert_eq!(restored["default"], "a");
    assert_eq!(restored["plans"], json!({"pro": "b"}));
    assert_eq!(features(&app, &t.token).await["copy"], "b");
    let latest = versions("?limit=1").await;
    assert_eq!(latest["items"][0]["change"], "rollback");
    assert_eq!(latest["items"][0]["restored_version"], 1);
    assert_eq!(latest["items"][0]["version"], 4);

    assert_problem(rollback(json!({"version": 99})).await, 404, "not_found").await;
    let bad = assert_problem(
        rollback(json!({"version": "one"})).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(bad["errors"][0]["field"], "version");
    let r = app
        .operator(app.http.get(app.url("/admin/flags/nope/versions")))
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "not_found").await;
    let r = app
        .operator(app.http.post(app.url("/admin/flags/nope/rollback")))
        .json(&json!({"version": 1}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "not_found").await;
}

#[tokio::test]
async fn every_change_is_audited_with_before_and_after() {
    let app = spawn_app().await;
    let t = app.create_tenant_on_plan("audited", "free").await;
    define(&app, "audited", json!({"default": 1})).await;
    define(&app, "audited", json!({"default": 2})).await;
    let r = app
        .operator(app.http.post(app.url("/admin/flags/audited/rollback")))
        .header("X-Request-Id", "rollback-request-1")
        .json(&json!({"version": 1}))
        .send()
        .await
        .unwrap();
    expect(r, 200).await;
    expect(
        put_override(&app, t.id, "audited", json!({"value": 5})).await,
        201,
    )
    .await;
    expect(
        put_override(&app, t.id, "audited", json!({"value": 6})).await,
        200,
    )
    .await;
    expect(delete_override(&app, t.id, "audited").await, 204).await;

    let db = app.superuser_db().await;
    let platform: Vec<(String, Option<Uuid>, Value, Option<String>)> = db
        .query(
            "select action, target_tenant_id, details, request_id from app.platform_audit_logs \
             where action like 'flag%' order by created_at, id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let actions: Vec<&str> = platform.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(
        actions,
        vec![
            "flag.create",
            "flag.update",
            "flag.rollback",
            "flag_override.set",
            "flag_override.set",
            "flag_override.delete"
        ]
    );
    let (_, _, created, _) = &platform[0];
    assert!(created["before"].is_null());
    assert_eq!(created["after"]["default"], 1);
    let (_, _, updated, _) = &platform[1];
    assert_eq!(
        (
            updated["before"]["default"].clone(),
            updated["after"]["default"].clone()
        ),
        (json!(1), json!(2))
    );
    let (_, _, rolled, request) = &platform[2];
    assert_eq!(
        (
            rolled["before"]["version"].clone(),
            rolled["after"]["version"].clone()
        ),
        (json!(2), json!(3))
    );
    assert_eq!(rolled["after"]["default"], 1);
    assert_eq!(rolled["restored_version"], 1);
    assert_eq!(request.as_deref(), Some("rollback-request-1"));
    for (_, target, details, _) in &platform[3..] {
        assert_eq!(*target, Some(t.id));
        assert_eq!(details["key"], "audited");
    }
    assert_eq!(
        (
            platform[4].2["before"]["value"].clone(),
            platform[4].2["after"]["value"].clone()
        ),
        (json!(5), json!(6))
    );

    // The tenant's own trail shows the operator's changes of its overrides.
    let r = app
        .get("/audit-logs?resource=flag_override", &t.token)
        .send()
        .await
        .unwrap();
    let trail = expect(r, 200).await;
    let items = trail["items"].as_array().unwrap();
    let actions: Vec<&str> = items
        .iter()
        .map(|i| i["action"].as_str().unwrap())
        .collect();
    let mut sorted = actions.clone();
    sorted.sort();
    assert_eq!(sorted, vec!["create", "delete", "update"], "{trail}");
    for item in items {
        assert_eq!(item["actor"], "platform");
        assert_eq!(item["resource_id"], "audited");
        assert!(item["user_id"].is_null());
        match item["action"].as_str().unwrap() {
            "create" => {
                assert!(item["changes"]["before"].is_null());
                assert_eq!(item["changes"]["after"]["value"], 5);
            }
            "update" => {
                assert_eq!(item["changes"]["before"]["value"], 5);
                assert_eq!(item["changes"]["after"]["value"], 6);
            }
            _ => {
                assert_eq!(item["changes"]["before"]["value"], 6);
                assert!(item["changes"]["after"].is_null());
            }
        }
    }
}

fn host(app: &TestApp, sub: &str) -> String {
    format!("{sub}.{}:{}", app.config.base_domain, app.port)
}

#[tokio::test]
async fn a_tenant_never_reads_or_changes_another_tenants_overrides() {
    let app = spawn_app().await;
    let a = app.create_tenant_on_plan("iso-a", "pro").await;
    let b = app.create_tenant_on_plan("iso-b", "pro").await;
    define(&app, "secret", json!({"default": "public"})).await;
    expect(
        put_override(&app, a.id, "secret", json!({"value": "a only"})).await,
        201,
    )
    .await;
    assert_eq!(features(&app, &a.token).await["secret"], "a only");
    assert_eq!(features(&app, &b.token).await["secret"], "public");

    // By id: the override endpoints are the operator's, whatever a tenant's credentials.
    for token in [&a.token, &b.token] {
        let r = app
            .http
            .put(app.url(&format!("/admin/tenants/{}/flags/secret", a.id)))
            .bearer_auth(token)
            .json(&json!({"value": "stolen"}))
            .send()
            .await
            .unwrap();
        assert_problem(r, 401, "unauthorized").await;
        let r = app
            .http
            .delete(app.url(&format!("/admin/tenants/{}/flags/secret", a.id)))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_problem(r, 401, "unauthorized").await;
        let r = app
            .http
            .put(app.url("/admin/flags/secret"))
            .bearer_auth(token)
            .json(&json!({"default": "mine"}))
            .send()
            .await
            .unwrap();
        assert_problem(r, 401, "unauthorized").await;
    }
    // By header or subdomain: B's credentials naming A are refused.
    let r = app
        .get("/features", &b.token)
        .header("X-Tenant-ID", a.id.to_string())
        .send()
        .await
        .unwrap();
    assert_problem(r, 403, "forbidden").await;
    let r = app
        .get("/features", &b.token)
        .header("X-Tenant-ID", "iso-a")
        .send()
        .await
        .unwrap();
    assert_problem(r, 403, "forbidden").await;
    let r = app
        .get("/features", &b.token)
        .header("Host", host(&app, "iso-a"))
        .send()
        .await
        .unwrap();
    assert_problem(r, 403, "forbidden").await;
    let r = app
        .post("/ofrep/v1/evaluate/flags/secret", &b.token)
        .header("X-Tenant-ID", a.id.to_string())
        .json(&json!({"context": {"targetingKey": "x"}}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 403, "forbidden").await;
    // By body: naming A in the evaluation context changes nothing.
    for context in [
        json!({"targetingKey": a.id.to_string()}),
        json!({"targetingKey": "x", "tenant_id": a.id, "tenantId": a.id, "tenant": "iso-a"}),
    ] {
        let r = app
            .post("/ofrep/v1/evaluate/flags/secret", &b.token)
            .json(&json!({"context": context}))
            .send()
            .await
            .unwrap();
        assert_eq!(expect(r, 200).await["value"], "public");
        let r = app
            .post("/ofrep/v1/evaluate/flags", &b.token)
            .json(&json!({"context": context}))
            .send()
            .await
            .unwrap();
        let bulk = expect(r, 200).await;
        assert_eq!(bulk["flags"][0]["value"], "public", "{bulk}");
    }
    // A's override stays as it was; an operator change of B's leaves A's alone.
    expect(
        put_override(&app, b.id, "secret", json!({"value": "b only"})).await,
        201,
    )
    .await;
    assert_eq!(features(&app, &a.token).await["secret"], "a only");
    assert_eq!(features(&app, &b.token).await["secret"], "b only");

    // A deleted tenant's overrides go with it, and come back with a restore.
    let r = app
        .operator(
            app.http
                .delete(app.url(&format!("/admin/tenants/{}", a.id))),
        )
        .send()
        .await
        .unwrap();
    expect(r, 204).await;
    assert_problem(
        put_override(&app, a.id, "secret", json!({"value": "x"})).await,
        404,
        "not_found",
    )
    .await;
    let db = app.superuser_db().await;
    let live: i64 = db
        .query_one(
            "select count(*) from app.flag_overrides where tenant_id = $1 and deleted_at is null",
            &[&a.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(live, 0);
    let r = app
        .operator(
            app.http
                .post(app.url(&format!("/admin/tenants/{}/restore", a.id))),
        )
        .send()
        .await
        .unwrap();
    expect(r, 200).await;
    assert_eq!(features(&app, &a.token).await["secret"], "a only");
}

fn fields(problem: &Value) -> Vec<String> {
    let mut fields: Vec<String> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_string())
        .collect();
    fields.sort();
    fields
}

#[tokio::test]
async fn invalid_input_is_422_with_field_paths() {
    let app = spawn_app().await;
    let t = app.create_tenant("flags-validation").await;
    for (key, body, expected) in [
        ("bad key!", json!({"default": true}), vec!["key"]),
        ("-leading", json!({"default": true}), vec!["key"]),
        (
            "ok",
            json!({"default": true, "rollout_percent": 101}),
            vec!["rollout_percent"],
        ),
        (
            "ok",
            json!({"default": true, "rollout_percent": -5}),
            vec!["rollout_percent"],
        ),
        (
            "ok",
            json!({"default": true, "rollout_percent": 12.5}),
            vec!["rollout_percent"],
        ),
        (
            "ok",
            json!({"default": true, "plans": {"gold": true}}),
            vec!["plans.gold"],
        ),
        (
            "ok",
            json!({"default": true, "plans": {"pro": "yes"}}),
            vec!["plans.pro"],
        ),
        (
            "ok",
            json!({"default": true, "colour": "red", "tenant_id": t.id}),
            vec!["colour", "tenant_id"],
        ),
        ("ok", json!({"plans": {}}), vec!["default"]),
        ("ok", json!({"default": null}), vec!["default"]),
        (
            "ok",
            json!({"default": 1, "description": "d".repeat(1001)}),
            vec!["description"],
        ),
        ("ok", json!([true]), vec!["body"]),
    ] {
        let r = put_flag(&app, &urlencode(key), body.clone()).await;
        let problem = assert_problem(r, 422, "validation_failed").await;
        assert_eq!(fields(&problem), expected, "{key} {body}");
    }
    // Nothing was written by any of them.
    let r = app
        .operator(app.http.get(app.url("/admin/flags/ok/versions")))
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "not_found").await;

    define(&app, "ok", json!({"default": true})).await;
    for (body, expected) in [
        (json!({"value": "yes"}), vec!["value"]),
        (json!({"value": null}), vec!["value"]),
        (json!({}), vec!["value"]),
        (
            json!({"value": true, "tenant_id": Uuid::now_v7()}),
            vec!["tenant_id"],
        ),
    ] {
        let problem = assert_problem(
            put_override(&app, t.id, "ok", body.clone()).await,
            422,
            "validation_failed",
        )
        .await;
        assert_eq!(fields(&problem), expected, "{body}");
    }
    assert_problem(
        put_override(&app, t.id, "missing", json!({"value": true})).await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        put_override(&app, Uuid::now_v7(), "ok", json!({"value": true})).await,
        404,
        "not_found",
    )
    .await;
    let r = app
        .operator(app.http.get(app.url("/admin/flags/ok/versions?limit=0")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        fields(&assert_problem(r, 422, "validation_failed").await),
        vec!["limit"]
    );

    // A new type for a flag that tenants override with the old one: 409, nothing changed.
    expect(
        put_override(&app, t.id, "ok", json!({"value": false})).await,
        201,
    )
    .await;
    let conflict = assert_problem(
        put_flag(&app, "ok", json!({"default": "on"})).await,
        409,
        "flag_type_conflict",
    )
    .await;
    assert_eq!(conflict["overrides"], 1);
    assert_eq!(features(&app, &t.token).await["ok"], false);
    expect(delete_override(&app, t.id, "ok").await, 204).await;
    assert_eq!(
        expect(put_flag(&app, "ok", json!({"default": "on"})).await, 200).await["version"],
        2
    );
}

fn urlencode(key: &str) -> String {
    key.replace(' ', "%20").replace('!', "%21")
}

#[tokio::test]
async fn the_openapi_document_lists_the_flag_routes() {
    let app = spawn_app().await;
    let doc = app.openapi().await;
    for path in [
        "/features",
        "/admin/flags/{key}",
        "/admin/flags/{key}/versions",
        "/admin/flags/{key}/rollback",
        "/admin/tenants/{id}/flags/{key}",
        "/ofrep/v1/evaluate/flags/{key}",
        "/ofrep/v1/evaluate/flags",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from /openapi.json"
        );
    }
    assert!(doc["paths"]["/admin/tenants/{id}/flags/{key}"]
        .get("delete")
        .is_some());
}
