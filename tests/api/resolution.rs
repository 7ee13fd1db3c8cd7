//! The tenant resolution matrix of API.md and forged credentials.

use base64::Engine;
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use tenantry::auth::{JwtKeys, Role};
use uuid::Uuid;

use crate::helpers::{assert_problem, spawn_app, TestApp, TestTenant};

async fn two_tenants() -> (TestApp, TestTenant, TestTenant) {
    let app = spawn_app().await;
    let a = app.create_tenant("alpha").await;
    let b = app.create_tenant("beta").await;
    (app, a, b)
}

fn host(app: &TestApp, sub: &str) -> String {
    format!("{sub}.{}:{}", app.config.base_domain, app.port)
}

/// POST /auth/login with A's admin credentials, naming the tenant with one header (or none).
async fn login(app: &TestApp, a: &TestTenant, header: Option<(&str, String)>) -> reqwest::Response {
    let mut request = app.http.post(app.url("/auth/login"));
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    request
        .json(&json!({"email": a.admin_email, "password": a.admin_password}))
        .send()
        .await
        .unwrap()
}

async fn slug_of(response: reqwest::Response) -> String {
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    body["slug"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn resolution_matrix() {
    let (app, a, b) = two_tenants().await;
    let get = || app.http.get(app.url("/tenant"));

    // 1. token alone
    assert_eq!(
        slug_of(get().bearer_auth(&a.token).send().await.unwrap()).await,
        "alpha"
    );
    // 2. token + matching header by slug
    let r = get()
        .bearer_auth(&a.token)
        .header("X-Tenant-ID", "alpha")
        .send()
        .await
        .unwrap();
    assert_eq!(slug_of(r).await, "alpha");
    // 3. token + matching header by id
    let r = get()
        .bearer_auth(&a.token)
        .header("X-Tenant-ID", a.id.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(slug_of(r).await, "alpha");
    // 4. token + other tenant's header (slug): 403
    let r = get()
        .bearer_auth(&a.token)
        .header("X-Tenant-ID", "beta")
        .send()
        .await
        .unwrap();
    assert_problem(r, 403, "forbidden").await;
    // 5. token + other tenant's header (id): 403
    let r = get()
        .bearer_auth(&a.token)
        .header("X-Tenant-ID", b.id.to_string())
        .send()
        .await
        .unwrap();
    assert_problem(r, 403, "forbidden").await;
    // 6. token + matching subdomain
    let r = get()
        .bearer_auth(&a.token)
        .header("Host", host(&app, "alpha"))
        .send()
        .await
        .unwrap();
    assert_eq!(slug_of(r).await, "alpha");
    // 7. token + other tenant's subdomain: 403
    let r = get()
        .bearer_auth(&a.token)
        .header("Host", host(&app, "beta"))
        .send()
        .await
        .unwrap();
    assert_problem(r, 403, "forbidden").await;
    // 8. token + unknown header: 403 (the token decides; the header disagrees with it)
    let r = get()
        .bearer_auth(&a.token)
        .header("X-Tenant-ID", "nobody")
        .send()
        .await
        .unwrap();
    assert_problem(r, 403, "forbidden").await;
    // 9. token + header takes priority over subdomain: the header is checked, and must match
    let r = get()
        .bearer_auth(&a.token)
        .header("X-Tenant-ID", "alpha")
        .header("Host", host(&app, "beta"))
        .send()
        .await
        .unwrap();
    assert_eq!(slug_of(r).await, "alpha");
    // 10. no credentials, no tenant on an authenticated route: 400 (the tenant is resolved
    // before credentials are checked)
    let r = get().send().await.unwrap();
    assert_problem(r, 400, "bad_request").await;
    // 11. login with no tenant named: 400
    let r = login(&app, &a, None).await;
    assert_problem(r, 400, "bad_request").await;
    // 12. login naming an unknown tenant by header: 404
    let r = login(&app, &a, Some(("X-Tenant-ID", "nobody".to_string()))).await;
    assert_problem(r, 404, "not_found").await;
    // 13. login naming an unknown tenant by subdomain: 404
    let r = login(&app, &a, Some(("Host", host(&app, "nobody")))).await;
    assert_problem(r, 404, "not_found").await;
    // 14. login by subdomain works, and a reserved subdomain (www) names no tenant: 400
    let r = login(&app, &a, Some(("Host", host(&app, "alpha")))).await;
    assert_eq!(r.status().as_u16(), 200);
    let r = login(&app, &a, Some(("Host", host(&app, "www")))).await;
    assert_problem(r, 400, "bad_request").await;
    // 15. an empty X-Tenant-ID header is malformed: 400
    let r = login(&app, &a, Some(("X-Tenant-ID", "".to_string()))).await;
    assert_problem(r, 400, "bad_request").await;
    // 16. a user of A logging in through B: wrong credentials there (401), never a B token
    let r = login(&app, &a, Some(("X-Tenant-ID", "beta".to_string()))).await;
    assert_problem(r, 401, "unauthorized").await;
    // 17. the header is case-insensitive by HTTP; the slug is matched exactly
    let r = get()
        .bearer_auth(&a.token)
        .header("x-tenant-id", "ALPHA")
        .send()
        .await
        .unwrap();
    assert_problem(r, 403, "forbidden").await;
}

/// API.md: "The tenant is resolved before credentials are checked: a request naming no tenant
/// gets 400 and one naming an unknown tenant 404, with or without credentials."
#[tokio::test]
async fn resolution_comes_before_authentication() {
    let (app, a, _b) = two_tenants().await;
    let tasks = || app.http.get(app.url("/tasks"));
    let now = chrono::Utc::now().timestamp();
    let unknown = Uuid::now_v7();

    // No tenant, no token: 400.
    let r = tasks().send().await.unwrap();
    assert_problem(r, 400, "bad_request").await;
    // An unknown tenant, no token: 404, by header or by subdomain.
    let r = tasks()
        .header("X-Tenant-ID", "nobody")
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "not_found").await;
    let r = tasks()
        .header("Host", host(&app, "nobody"))
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "not_found").await;
    // An unknown tenant and a garbage token: 404.
    let r = tasks()
        .header("X-Tenant-ID", "nobody")
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "not_found").await;
    // A known tenant, no token or a garbage one: 401.
    let r = tasks().header("X-Tenant-ID", "alpha").send().await.unwrap();
    assert_problem(r, 401, "unauthorized").await;
    let r = tasks()
        .header("X-Tenant-ID", "alpha")
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_problem(r, 401, "unauthorized").await;

    // A token names its tenant before it is verified: claiming an unknown tenant, with a bad
    // signature or expired, it is 404 like any other request naming that tenant...
    let other = JwtKeys::hs256(
        "another-secret-that-is-long-enough-000",
        std::time::Duration::from_secs(600),
    );
    let (wrong_key, _) = other.issue(a.admin_id, unknown, Role::Admin).unwrap();
    let r = app.get("/tasks", &wrong_key).send().await.unwrap();
    assert_problem(r, 404, "not_found").await;
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": a.admin_id, "tenant_id": unknown, "role": "admin", "iat": now - 7200, "exp": now - 3600, "iss": "tenantry"}),
        &jsonwebtoken::EncodingKey::from_secret(app.config.jwt_secret.expose_secret().as_bytes()),
    )
    .unwrap();
    let r = app.get("/tasks", &expired).send().await.unwrap();
    assert_problem(r, 404, "not_found").await;
    // ...and claiming a known tenant, the same tokens are 401: the claim chose the tenant,
    // verification decides.
    let (wrong_key, _) = other.issue(a.admin_id, a.id, Role::Admin).unwrap();
    let r = app.get("/tasks", &wrong_key).send().await.unwrap();
    assert_problem(r, 401, "unauthorized").await;
    // The token's claim comes before the header: a forged token claiming an unknown tenant
    // is 404 even beside a known tenant's header.
    let (forged, _) = other.issue(a.admin_id, unknown, Role::Admin).unwrap();
    let r = app
        .get("/tasks", &forged)
        .header("X-Tenant-ID", "alpha")
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "not_found").await;

    // An API key names its tenant too: an unknown one is 404.
    let key = format!("tk_{}_{}", unknown.simple(), "x".repeat(40));
    let r = app.get("/tasks", &key).send().await.unwrap();
    assert_problem(r, 404, "not_found").await;

    // Login (a route that needs a tenant but no credentials) keeps working, and a garbage
    // token sent with it is still refused once the tenant is known.
    let r = login(&app, &a, Some(("X-Tenant-ID", "alpha".to_string()))).await;
    assert_eq!(r.status().as_u16(), 200);
    let r = app
        .http
        .post(app.url("/auth/login"))
        .header("X-Tenant-ID", "nobody")
        .bearer_auth("not-a-token")
        .json(&json!({"email": a.admin_email, "password": a.admin_password}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "not_found").await;
}

/// A token whose `nbf` lies in the future is not valid yet: 401. A role this version does not
/// know is an invalid token, never read as `member`: 401.
#[tokio::test]
async fn tokens_not_yet_valid_or_with_an_unknown_role_are_refused() {
    let (app, a, _b) = two_tenants().await;
    let now = chrono::Utc::now().timestamp();
    let sign = |claims: Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(
                app.config.jwt_secret.expose_secret().as_bytes(),
            ),
        )
        .unwrap()
    };
    let claims = |role: &str, nbf: i64| {
        json!({"sub": a.admin_id, "tenant_id": a.id, "role": role, "iat": now, "nbf": nbf,
            "exp": now + 600, "iss": "tenantry"})
    };
    // The same claims with `nbf` now are accepted, so the refusals below are about `nbf` and
    // the role alone.
    let r = app
        .get("/tenant", &sign(claims("admin", now)))
        .send()
        .await
        .unwrap();
    assert_eq!(slug_of(r).await, "alpha");
    let r = app
        .get("/tenant", &sign(claims("admin", now + 600)))
        .send()
        .await
        .unwrap();
    assert_problem(r, 401, "unauthorized").await;
    let r = app
        .get("/tenant", &sign(claims("superuser", now)))
        .send()
        .await
        .unwrap();
    assert_problem(r, 401, "unauthorized").await;
}

#[tokio::test]
async fn deleted_tenant_resolves_to_404_everywhere() {
    let (app, a, _b) = two_tenants().await;
    let r = app
        .operator(
            app.http
                .delete(app.url(&format!("/admin/tenants/{}", a.id))),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let r = app.get("/tenant", &a.token).send().await.unwrap();
    assert_problem(r, 404, "not_found").await;
    let r = login(&app, &a, Some(("X-Tenant-ID", "alpha".to_string()))).await;
    assert_problem(r, 404, "not_found").await;
}

fn b64(value: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

#[tokio::test]
async fn forged_tokens_are_refused() {
    let (app, a, b) = two_tenants().await;
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"sub": a.admin_id, "tenant_id": a.id, "role": "admin", "iat": now, "exp": now + 600, "iss": "tenantry"});

    // alg: none
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims)
    );
    assert_problem(
        app.get("/tenant", &none).send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;

    // the right claims signed with the wrong key
    let other = JwtKeys::hs256(
        "another-secret-that-is-long-enough-000",
        std::time::Duration::from_secs(600),
    );
    let (wrong_key, _) = other.issue(a.admin_id, a.id, Role::Admin).unwrap();
    assert_problem(
        app.get("/tenant", &wrong_key).send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;

    // expired (signed with the real key)
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": a.admin_id, "tenant_id": a.id, "role": "admin", "iat": now - 7200, "exp": now - 3600, "iss": "tenantry"}),
        &jsonwebtoken::EncodingKey::from_secret(app.config.jwt_secret.expose_secret().as_bytes()),
    )
    .unwrap();
    assert_problem(
        app.get("/tenant", &expired).send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;

    // wrong issuer
    let wrong_iss = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": a.admin_id, "tenant_id": a.id, "role": "admin", "iat": now, "exp": now + 600, "iss": "someone-else"}),
        &jsonwebtoken::EncodingKey::from_secret(app.config.jwt_secret.expose_secret().as_bytes()),
    )
    .unwrap();
    assert_problem(
        app.get("/tenant", &wrong_iss).send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;

    // a real token with its payload edited to another tenant (signature no longer matches)
    let mut parts: Vec<String> = a.token.split('.').map(String::from).collect();
    let mut edited = claims.clone();
    edited["tenant_id"] = json!(b.id);
    parts[1] = b64(&edited);
    let tampered = parts.join(".");
    assert_problem(
        app.get("/tenant", &tampered).send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;

    // validly signed, but claiming A's admin in tenant B: the subject is not a user of B
    let keys = JwtKeys::hs256(
        app.config.jwt_secret.expose_secret(),
        std::time::Duration::from_secs(600),
    );
    let (cross, _) = keys.issue(a.admin_id, b.id, Role::Admin).unwrap();
    assert_problem(
        app.get("/tenant", &cross).send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;

    // validly signed for a user that does not exist
    let (ghost, _) = keys.issue(Uuid::now_v7(), a.id, Role::Admin).unwrap();
    assert_problem(
        app.get("/tenant", &ghost).send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;

    // a real user claiming a role it does not have
    let db = app.superuser_db().await;
    let member = Uuid::now_v7();
    db.execute(
        "insert into app.users (tenant_id, id, email, role) values ($1, $2, 'm@alpha.example.com', 'member')",
        &[&a.id, &member],
    )
    .await
    .unwrap();
    let (escalated, _) = keys.issue(member, a.id, Role::Admin).unwrap();
    assert_problem(
        app.get("/tenant", &escalated).send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;

    // garbage
    assert_problem(
        app.get("/tenant", "not-a-token").send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
}

#[tokio::test]
async fn a_deleted_users_token_stops_working() {
    let (app, a, _b) = two_tenants().await;
    let db = app.superuser_db().await;
    let user = Uuid::now_v7();
    db.execute(
        "insert into app.users (tenant_id, id, email, role) values ($1, $2, 'gone@alpha.example.com', 'member')",
        &[&a.id, &user],
    )
    .await
    .unwrap();
    let keys = JwtKeys::hs256(
        app.config.jwt_secret.expose_secret(),
        std::time::Duration::from_secs(600),
    );
    let (token, _) = keys.issue(user, a.id, Role::Member).unwrap();
    assert_eq!(
        app.get("/tenant", &token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    db.execute(
        "update app.users set deleted_at = now() where tenant_id = $1 and id = $2",
        &[&a.id, &user],
    )
    .await
    .unwrap();
    // The user cache is told about changes made through the API; a change made behind its back
    // (as here) is picked up once the entry expires, so expire it the way another instance would.
    let redis = redis::Client::open(app.config.redis_url.expose_secret()).unwrap();
    tenantry::cache::publish(
        &redis,
        &tenantry::cache::Invalidation::User { tenant: a.id, user },
    )
    .await;
    let mut refused = false;
    for _ in 0..50 {
        if app
            .get("/tenant", &token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
            == 401
        {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(refused, "a deleted user's token must be refused");
}
