//! POST /tenants: validation, operator authentication, conflicts, credentials, atomicity and
//! concurrent requests for one slug.

use base64::Engine;
use futures_util::future::join_all;
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use tenantry::auth::{password, JwtKeys, Role};
use tenantry::db::template::TenantTemplate;
use tenantry::tenancy::provision::{provision_with_fault, FaultPoint, ProvisionContext};
use tenantry::tenancy::TenancyError;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::helpers::{assert_problem, new_tenant, spawn_app, test_db, OPERATOR_TOKEN};

fn body(slug: &str) -> Value {
    json!({
        "name": format!("Tenant {slug}"),
        "slug": slug,
        "admin_email": format!("admin@{slug}.example.com"),
        "admin_password": "correct-horse-battery",
    })
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

async fn count(db: &Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn invalid_input_is_422_with_field_errors() {
    let app = spawn_app().await;
    let cases = [
        (with(body("ok"), "slug", json!("Bad Slug")), "slug"),
        (with(body("ok"), "slug", json!("-dash")), "slug"),
        (with(body("ok"), "slug", json!("a".repeat(64))), "slug"),
        (with(body("ok"), "slug", json!("www")), "slug"),
        (with(body("ok"), "slug", json!("api")), "slug"),
        (with(body("ok"), "slug", json!("admin")), "slug"),
        (with(body("ok"), "subdomain", json!("www")), "subdomain"),
        (
            with(body("ok"), "subdomain", json!("not valid")),
            "subdomain",
        ),
        (
            with(body("ok"), "admin_email", json!("not-an-email")),
            "admin_email",
        ),
        (with(body("ok"), "admin_email", json!("a@b")), "admin_email"),
        (
            with(body("ok"), "admin_password", json!("short")),
            "admin_password",
        ),
        (with(body("ok"), "plan", json!("platinum")), "plan"),
        (with(body("ok"), "name", json!("  ")), "name"),
    ];
    for (request, field) in cases {
        let r = app.create_tenant_raw(&request).await;
        let problem = assert_problem(r, 422, "validation_failed").await;
        let errors = problem["errors"].as_array().expect("errors array");
        assert!(
            errors.iter().any(
                |e| e["field"] == field && e["message"].as_str().is_some_and(|m| !m.is_empty())
            ),
            "{request} -> {problem}"
        );
    }

    // Every bad field is reported at once.
    let r = app
        .create_tenant_raw(&json!({
            "name": "x", "slug": "www", "plan": "gold",
            "admin_email": "nope", "admin_password": "short",
        }))
        .await;
    let problem = assert_problem(r, 422, "validation_failed").await;
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for f in ["slug", "plan", "admin_email", "admin_password"] {
        assert!(fields.contains(&f), "{f} missing in {problem}");
    }

    // Nothing of the refused requests reached the database.
    let db = app.superuser_db().await;
    assert_eq!(count(&db, "select count(*) from app.tenants").await, 0);
}

#[tokio::test]
async fn operator_token_is_required() {
    let app = spawn_app().await;
    let r = app
        .http
        .post(app.url("/tenants"))
        .json(&body("acme"))
        .send()
        .await
        .unwrap();
    assert_problem(r, 401, "unauthorized").await;
    let r = app
        .http
        .post(app.url("/tenants"))
        .bearer_auth(format!("{OPERATOR_TOKEN}x"))
        .json(&body("acme"))
        .send()
        .await
        .unwrap();
    assert_problem(r, 401, "unauthorized").await;
    // A tenant user's token is not an operator's.
    let tenant = app.create_tenant("first").await;
    let r = app
        .post("/tenants", &tenant.token)
        .json(&body("acme"))
        .send()
        .await
        .unwrap();
    assert_problem(r, 401, "unauthorized").await;

    let db = app.superuser_db().await;
    assert_eq!(
        count(&db, "select count(*) from app.tenants where slug = 'acme'").await,
        0
    );
}

#[tokio::test]
async fn duplicate_slug_or_subdomain_is_409() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let r = app.create_tenant_raw(&body("acme")).await;
    assert_problem(r, 409, "conflict").await;
    // Another slug whose subdomain is taken (the first tenant's subdomain defaults to its slug).
    let r = app
        .create_tenant_raw(&with(body("acme-two"), "subdomain", json!("acme")))
        .await;
    assert_problem(r, 409, "conflict").await;
    let r = app
        .create_tenant_raw(&with(body("acme-three"), "subdomain", json!("acme-3")))
        .await;
    assert_eq!(r.status().as_u16(), 201);
    let r = app
        .create_tenant_raw(&with(body("acme-four"), "subdomain", json!("acme-3")))
        .await;
    assert_problem(r, 409, "conflict").await;
    let db = app.superuser_db().await;
    assert_eq!(count(&db, "select count(*) from app.tenants").await, 2);
    assert_eq!(
        count(
            &db,
            "select count(*) from pg_namespace where nspname like 't\\_%'"
        )
        .await,
        2
    );
}

#[tokio::test]
async fn provisioning_creates_everything_and_returns_working_credentials() {
    let app = spawn_app().await;
    let r = app
        .create_tenant_raw(&json!({
            "name": "Acme Corp", "slug": "acme", "plan": "pro",
            "admin_email": "boss@acme.example.com",
        }))
        .await;
    assert_eq!(r.status().as_u16(), 201);
    let created: Value = r.json().await.unwrap();
    let tenant = &created["tenant"];
    for key in [
        "id",
        "name",
        "slug",
        "subdomain",
        "plan",
        "status",
        "settings",
        "created_at",
    ] {
        assert!(!tenant[key].is_null(), "tenant.{key} missing in {created}");
    }
    assert_eq!(tenant["slug"], "acme");
    assert_eq!(tenant["subdomain"], "acme");
    assert_eq!(tenant["plan"], "pro");
    assert_eq!(tenant["status"], "active");
    assert_eq!(created["admin"]["email"], "boss@acme.example.com");
    let tenant_id: Uuid = tenant["id"].as_str().unwrap().parse().unwrap();
    let admin_id: Uuid = created["admin"]["id"].as_str().unwrap().parse().unwrap();
    // Ids are UUIDv7 (time ordered).
    assert_eq!(tenant_id.get_version_num(), 7);
    assert_eq!(admin_id.get_version_num(), 7);

    // The generated password is returned once and matches the stored argon2 hash.
    let generated = created["credentials"]["password"]
        .as_str()
        .expect("generated password");
    assert!(generated.len() >= 16, "{generated}");
    let db = app.superuser_db().await;
    let row = db
        .query_one(
            "select password_hash, role, email from app.users where tenant_id = $1 and id = $2",
            &[&tenant_id, &admin_id],
        )
        .await
        .unwrap();
    let hash: String = row.get(0);
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains(generated));
    assert!(password::verify(generated, &hash));
    assert!(!password::verify("not-the-password", &hash));
    assert_eq!(row.get::<_, String>(1), "admin");

    // The token carries exactly the claims of API.md.
    let token = created["credentials"]["token"].as_str().unwrap();
    let keys = JwtKeys::hs256(app.config.jwt_secret.expose_secret(), app.config.jwt_ttl);
    let claims = keys.verify(token).expect("valid token");
    assert_eq!(claims.sub, admin_id);
    assert_eq!(claims.tenant_id, tenant_id);
    assert_eq!(claims.role, Role::Admin);
    assert_eq!(claims.iss, "tenantry");
    assert_eq!(claims.exp - claims.iat, app.config.jwt_ttl.as_secs() as i64);
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = token.split('.');
    let header: Value =
        serde_json::from_slice(&b64.decode(parts.next().unwrap()).unwrap()).unwrap();
    assert_eq!(header["alg"], "HS256");
    let payload: Value =
        serde_json::from_slice(&b64.decode(parts.next().unwrap()).unwrap()).unwrap();
    let mut names: Vec<&str> = payload
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    names.sort();
    assert_eq!(names, ["exp", "iat", "iss", "role", "sub", "tenant_id"]);
    assert_eq!(payload["role"], "admin");
    let r = app.get("/tenant", token).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // Tenant row, settings, schema at the template version, audit rows.
    let row = db
        .query_one(
            "select schema_version, settings from app.tenants where id = $1",
            &[&tenant_id],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, i32>(0),
        TenantTemplate::embedded().latest_version()
    );
    assert_eq!(
        row.get::<_, Value>(1),
        tenantry::tenancy::model::default_settings()
    );
    let schema = tenantry::db::tenant_schema_name(tenant_id);
    assert_eq!(
        count(
            &db,
            &format!("select count(*) from pg_namespace where nspname = '{schema}'")
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &db,
            &format!("select count(*) from {schema}.refinery_schema_history")
        )
        .await,
        TenantTemplate::embedded().latest_version() as i64
    );
    let audit: i64 = db
        .query_one(
            "select count(*) from app.audit_logs where tenant_id = $1 and action = 'create' and resource = 'tenant'",
            &[&tenant_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(audit, 1);
    let platform: i64 = db
        .query_one(
            "select count(*) from app.platform_audit_logs where target_tenant_id = $1 and action = 'tenant.create'",
            &[&tenant_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(platform, 1);

    // With a password given, none is echoed back.
    let r = app.create_tenant_raw(&body("given")).await;
    assert_eq!(r.status().as_u16(), 201);
    let created: Value = r.json().await.unwrap();
    assert!(created["credentials"]
        .get("password")
        .is_none_or(Value::is_null));
}

#[tokio::test]
async fn a_failure_after_the_schema_is_created_leaves_nothing_behind() {
    let db = test_db().await;
    let pools = db.pools();
    let jwt = JwtKeys::hs256(db.config.jwt_secret.expose_secret(), db.config.jwt_ttl);
    let template = TenantTemplate::embedded();
    let ctx = ProvisionContext {
        owner: &pools.owner,
        template: &template,
        config: &db.config,
        jwt: &jwt,
    };
    let err = provision_with_fault(
        &ctx,
        new_tenant("doomed"),
        Some("req-doomed"),
        FaultPoint::AfterSchemaCreated,
    )
    .await
    .expect_err("the injected fault");
    assert!(matches!(err, TenancyError::InjectedFault), "{err:?}");

    let su = db.superuser_db().await;
    for (what, sql) in [
        ("tenant rows", "select count(*) from app.tenants"),
        ("users", "select count(*) from app.users"),
        ("audit rows", "select count(*) from app.audit_logs"),
        (
            "platform audit rows",
            "select count(*) from app.platform_audit_logs",
        ),
        (
            "tenant schemas",
            "select count(*) from pg_namespace where nspname like 't\\_%'",
        ),
    ] {
        assert_eq!(count(&su, sql).await, 0, "{what} left behind");
    }

    // Nothing is reserved either: the same slug provisions fine afterwards.
    let created = tenantry::tenancy::provision(&ctx, new_tenant("doomed"), None)
        .await
        .expect("provision after the failure");
    assert_eq!(created.tenant.slug, "doomed");
    assert_eq!(
        count(
            &su,
            "select count(*) from pg_namespace where nspname like 't\\_%'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn concurrent_requests_for_one_slug_create_exactly_one_tenant() {
    let app = spawn_app().await;
    let requests = (0..20).map(|i| {
        let request = json!({
            "name": format!("Racer {i}"),
            "slug": "race",
            "admin_email": format!("racer{i}@race.example.com"),
            "admin_password": "correct-horse-battery",
        });
        let app = &app;
        async move {
            let r = app.create_tenant_raw(&request).await;
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            (status, body)
        }
    });
    let results = join_all(requests).await;
    let created = results.iter().filter(|(s, _)| *s == 201).count();
    let conflicts = results
        .iter()
        .filter(|(s, b)| *s == 409 && b["code"] == "conflict")
        .count();
    assert_eq!(
        (created, conflicts),
        (1, 19),
        "{:?}",
        results.iter().map(|(s, _)| s).collect::<Vec<_>>()
    );
    let db = app.superuser_db().await;
    assert_eq!(count(&db, "select count(*) from app.tenants").await, 1);
    assert_eq!(count(&db, "select count(*) from app.users").await, 1);
    assert_eq!(
        count(
            &db,
            "select count(*) from pg_namespace where nspname like 't\\_%'"
        )
        .await,
        1
    );
}
