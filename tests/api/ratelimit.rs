//! Rate limits against the real PostgreSQL and Redis (docs/rate-limits.md): a tenant's plan
//! limit on one server and on two sharing the tenant, the headers, login throttling, public
//! endpoints per client address, and Redis unreachable.
//!
//! No assertion depends on timing: every window lasts a minute from its first request, and
//! each test fires its requests well within it. Keys do not collide with other tests: each test
//! has its own database, which names the keys' namespace, and its own tenants.

use std::net::TcpListener;

use serde_json::{json, Value};
use tenantry::config::Config;
use uuid::Uuid;

use crate::helpers::{
    assert_problem, spawn_app_with, test_config, TestApp, TestTenant, OPERATOR_TOKEN,
};

const LIMIT: u32 = 30;

/// Moves `tenant` to a plan of this test's own with `per_minute` requests a minute (None: no
/// limit). Done before the tenant's first request, so no cache holds its old plan.
async fn limit_tenant(app: &TestApp, tenant: Uuid, per_minute: Option<u32>) {
    let db = app.superuser_db().await;
    let plan = match per_minute {
        Some(n) => format!("rate_limit_test_{n}"),
        None => "rate_limit_test_none".to_string(),
    };
    let limits = json!({ "rate_limit_per_minute": per_minute, "max_users": 100 });
    db.execute(
        "insert into app.plans (name, display_name, rank, limits, features) \
         values ($1, 'Rate limit test', 50, $2, '{}') \
         on conflict (name) do update set limits = excluded.limits",
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

fn header(response: &reqwest::Response, name: &str) -> Option<u64> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii").parse().expect("a number"))
}

/// GET /projects as the tenant's admin: the status and the response.
async fn get_projects(app: &TestApp, tenant: &TestTenant) -> reqwest::Response {
    app.get("/projects", &tenant.token)
        .send()
        .await
        .expect("GET /projects")
}

async fn spawn(config: Config, database: String) -> TestApp {
    spawn_app_with(config, database).await
}

#[tokio::test]
async fn one_server_admits_exactly_the_limit_with_the_headers() {
    let (config, database) = test_config().await;
    let app = spawn(config, database).await;
    let tenant = app.create_tenant("limited").await;
    let other = app.create_tenant("neighbour").await;
    let unlimited = app.create_tenant("unlimited").await;
    limit_tenant(&app, tenant.id, Some(LIMIT)).await;
    limit_tenant(&app, other.id, Some(LIMIT)).await;
    limit_tenant(&app, unlimited.id, None).await;

    let mut admitted = 0;
    let mut refused = Vec::new();
    for i in 0..LIMIT + 10 {
        let response = get_projects(&app, &tenant).await;
        match response.status().as_u16() {
            200 => {
                admitted += 1;
                assert_eq!(header(&response, "ratelimit-limit"), Some(LIMIT.into()));
                let remaining = header(&response, "ratelimit-remaining").expect("remaining");
                if i == 0 {
                    assert_eq!(remaining, u64::from(LIMIT) - 1);
                }
                assert!(remaining < u64::from(LIMIT), "{remaining}");
                let reset = header(&response, "ratelimit-reset").expect("reset");
                assert!((1..=60).contains(&reset), "reset {reset}");
            }
            429 => refused.push(response),
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(admitted, LIMIT, "exactly the limit is admitted");
    assert_eq!(refused.len(), 10);

    let response = refused.pop().unwrap();
    let retry_after = header(&response, "retry-after").expect("Retry-After");
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(header(&response, "ratelimit-limit"), Some(LIMIT.into()));
    assert_eq!(header(&response, "ratelimit-remaining"), Some(0));
    let reset = header(&response, "ratelimit-reset").expect("reset");
    assert!((1..=60).contains(&reset), "reset {reset}");
    let body = assert_problem(response, 429, "rate_limited").await;
    assert_eq!(body["metric"], "requests_per_minute");
    assert_eq!(body["limit"], LIMIT);
    assert_eq!(body["used"], LIMIT);
    assert_eq!(
        app.metric("tenantry_rate_limited_total{metric=\"requests_per_minute\"}")
            .await,
        10
    );
    assert_eq!(
        app.metric("tenantry_rate_limit_local_decisions_total")
            .await,
        0,
        "Redis answered"
    );

    // Refused requests are not metered, and the neighbour's budget is its own.
    let response = get_projects(&app, &other).await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        header(&response, "ratelimit-remaining"),
        Some(u64::from(LIMIT) - 1)
    );
    // A plan whose rate_limit_per_minute is null: no limit, no headers.
    for _ in 0..LIMIT + 5 {
        let response = get_projects(&app, &unlimited).await;
        assert_eq!(response.status().as_u16(), 200);
        assert!(response.headers().get("ratelimit-limit").is_none());
    }
    // Requests without valid credentials do not spend the tenant's budget (nor are they told
    // about it): a stranger cannot lock a tenant out.
    let response = app.get("/projects", "not-a-token").send().await.unwrap();
    assert!(response.headers().get("ratelimit-limit").is_none());
    assert_problem(response, 401, "unauthorized").await;
}

#[tokio::test]
async fn two_servers_share_one_tenants_budget() {
    let (mut config, database) = test_config().await;
    config.rate_limits.instances = 2;
    let slice = tenantry::ratelimit::slice(LIMIT, 2);
    let a = spawn(config.clone(), database.clone()).await;
    let b = spawn(config, database).await;
    let tenant = a.create_tenant("shared").await;
    limit_tenant(&a, tenant.id, Some(LIMIT)).await;

    // Two thirds of the limit through one server: more than its share (15), which is all it
    // could admit on its own.
    let first = LIMIT * 2 / 3;
    for _ in 0..first {
        assert_eq!(get_projects(&a, &tenant).await.status().as_u16(), 200);
    }
    let (mut on_a, mut on_b) = (first, 0u32);
    for _ in 0..LIMIT {
        for (server, count) in [(&a, &mut on_a), (&b, &mut on_b)] {
            match get_projects(server, &tenant).await.status().as_u16() {
                200 => *count += 1,
                429 => {}
                other => panic!("unexpected status {other}"),
            }
        }
    }
    // Redis hands out at most the limit per window, a slice at a time; tokens leased but not
    // used would only make the total smaller. Both servers keep asking until refused, so none
    // is stranded here and the total is the limit exactly.
    assert!(on_b > 0, "the second server served too: {on_a} + {on_b}");
    assert!(
        on_a + on_b <= LIMIT,
        "{on_a} + {on_b} over the limit {LIMIT}"
    );
    assert!(
        on_a + on_b + 2 * slice >= LIMIT,
        "{on_a} + {on_b} short of the limit by more than a slice per server"
    );
    assert_eq!(on_a + on_b, LIMIT);

    // What Redis holds: the window's count of leased requests, expiring with the window.
    let redis = redis::Client::open(
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
    )
    .unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let key = format!("tenantry:{}:rate:{{{}}}:{LIMIT}", a.database, tenant.id);
    let leased: u32 = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(leased, LIMIT);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "PTTL {ttl}");
}

async fn login(
    app: &TestApp,
    tenant: &TestTenant,
    password: &str,
    client: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .http
        .post(app.url("/auth/login"))
        .header("X-Tenant-ID", &tenant.slug)
        .json(&json!({"email": tenant.admin_email, "password": password}));
    if let Some(client) = client {
        request = request.header("X-Forwarded-For", client);
    }
    request.send().await.expect("POST /auth/login")
}

#[tokio::test]
async fn login_is_throttled_per_tenant_and_client_address_across_servers() {
    let (mut config, database) = test_config().await;
    // Both test clients connect from 127.0.0.1: as a trusted proxy it may name the client.
    config.rate_limits.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let attempts = config.rate_limits.login_attempts_per_minute;
    assert_eq!(attempts, 10, "the default");
    let app = spawn(config.clone(), database.clone()).await;
    let second = spawn(config, database).await;
    let tenant = app.create_tenant("guarded").await;
    let other = app.create_tenant("elsewhere").await;
    let guesser = Some("203.0.113.5");

    for i in 0..attempts {
        // Spread over both servers: the count is shared through Redis.
        let server = if i % 2 == 0 { &app } else { &second };
        let response = login(server, &tenant, "wrong-password", guesser).await;
        assert_problem(response, 401, "unauthorized").await;
    }
    for server in [&app, &second] {
        // Even the right password: the attempt is refused before it is checked.
        let response = login(server, &tenant, &tenant.admin_password, guesser).await;
        let retry_after = header(&response, "retry-after").expect("Retry-After");
        assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
        assert_eq!(header(&response, "ratelimit-remaining"), Some(0));
        let body = assert_problem(response, 429, "rate_limited").await;
        assert_eq!(body["metric"], "login_attempts_per_minute");
        assert_eq!(body["limit"], attempts);
    }

    // Another tenant, same address: its own count.
    let response = login(&app, &other, "wrong-password", guesser).await;
    assert_problem(response, 401, "unauthorized").await;
    let response = login(&app, &other, &other.admin_password, guesser).await;
    assert_eq!(response.status().as_u16(), 200);
    // Same tenant, another address (and the proxy itself): unaffected.
    let response = login(&app, &tenant, &tenant.admin_password, Some("203.0.113.6")).await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(header(&response, "ratelimit-limit"), Some(attempts.into()));
    assert_eq!(
        header(&response, "ratelimit-remaining"),
        Some(u64::from(attempts) - 1)
    );
    let response = login(&second, &tenant, &tenant.admin_password, None).await;
    assert_eq!(response.status().as_u16(), 200);
    // A client cannot pick its address by writing the header itself: only the hop the trusted
    // proxy appended counts.
    let forged = Some("198.51.100.77, 203.0.113.5");
    let response = login(&app, &tenant, &tenant.admin_password, forged).await;
    assert_problem(response, 429, "rate_limited").await;
}

#[tokio::test]
async fn public_endpoints_are_limited_per_client_address() {
    let (mut config, database) = test_config().await;
    config.rate_limits.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    config.rate_limits.public_requests_per_minute = 3;
    let app = spawn(config, database).await;
    let tenant = app.create_tenant("public").await;

    let create = |client: &'static str, token: &'static str| {
        app.http
            .post(app.url("/tenants"))
            .bearer_auth(token)
            .header("X-Forwarded-For", client)
            .json(&json!({"name": "x", "slug": "x", "admin_email": "not-an-email"}))
            .send()
    };
    // Guessing the operator token: three tries an address a minute.
    for _ in 0..3 {
        let response = create("203.0.113.10", "guessed-token").await.unwrap();
        assert_eq!(header(&response, "ratelimit-limit"), Some(3));
        assert_problem(response, 401, "unauthorized").await;
    }
    let response = create("203.0.113.10", OPERATOR_TOKEN).await.unwrap();
    assert!(header(&response, "retry-after").is_some());
    let body = assert_problem(response, 429, "rate_limited").await;
    assert_eq!(body["metric"], "requests_per_minute_per_client_address");
    // Another address is not affected (its request fails validation, after the limit).
    let response = create("203.0.113.11", OPERATOR_TOKEN).await.unwrap();
    assert_problem(response, 422, "validation_failed").await;

    // The WebSocket upgrade and login count on their own.
    let socket = |client: &'static str| {
        app.http
            .get(app.url(&format!("/ws/analytics?token={}", tenant.token)))
            .header("X-Forwarded-For", client)
            .send()
    };
    for _ in 0..3 {
        let response = socket("203.0.113.10").await.unwrap();
        assert_ne!(response.status().as_u16(), 429);
    }
    let response = socket("203.0.113.10").await.unwrap();
    assert_problem(response, 429, "rate_limited").await;
    let response = login(&app, &tenant, &tenant.admin_password, Some("203.0.113.10")).await;
    assert_eq!(response.status().as_u16(), 200);
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

#[tokio::test]
async fn redis_unreachable_each_instance_enforces_its_share() {
    let (mut config, database) = test_config().await;
    config.redis_url = format!("redis://127.0.0.1:{}", closed_port()).into();
    config.rate_limits.instances = 2;
    config.rate_limits.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let share = tenantry::ratelimit::share(LIMIT, 2);
    assert_eq!(share, 15);
    let app = spawn(config, database).await;
    let tenant = app.create_tenant("isolated").await;
    limit_tenant(&app, tenant.id, Some(LIMIT)).await;

    let mut admitted = 0;
    for _ in 0..LIMIT + 10 {
        let response = get_projects(&app, &tenant).await;
        match response.status().as_u16() {
            200 => {
                admitted += 1;
                // The policy is still the plan's limit; what remains is this instance's share.
                assert_eq!(header(&response, "ratelimit-limit"), Some(LIMIT.into()));
            }
            429 => {
                let body = assert_problem(response, 429, "rate_limited").await;
                assert_eq!(body["limit"], LIMIT);
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(
        admitted, share,
        "the local share, not the whole limit, nor unlimited"
    );
    assert!(
        app.metric("tenantry_rate_limit_local_decisions_total")
            .await
            > 0
    );

    // Login attempts too: 10 a minute shared by two instances is 5 here.
    for _ in 0..5 {
        let response = login(&app, &tenant, "wrong-password", Some("203.0.113.20")).await;
        assert_problem(response, 401, "unauthorized").await;
    }
    let response = login(&app, &tenant, "wrong-password", Some("203.0.113.20")).await;
    let body: Value = assert_problem(response, 429, "rate_limited").await;
    assert_eq!(body["limit"], 5);
}

/// A TCP relay to the test Redis that holds each new connection's traffic back for `delay`
/// (a Redis slow to accept, as on a loaded host). Answers its URL.
async fn slow_redis(delay: std::time::Duration) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let upstream = std::env::var("REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_string();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if let Ok(mut redis) = tokio::net::TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut socket, &mut redis).await;
                }
            });
        }
    });
    format!("redis://127.0.0.1:{port}")
}

#[tokio::test]
async fn a_redis_slow_to_connect_is_connected_before_the_first_request() {
    let (mut config, database) = test_config().await;
    // Longer than a request waits for Redis in all (250 ms, the connection included), shorter
    // than a start waits for the connections (2 s).
    config.redis_url = slow_redis(std::time::Duration::from_millis(600))
        .await
        .into();
    let app = spawn(config, database).await;
    // Provisioning is limited per client address: the first call to Redis.
    let tenant = app.create_tenant("early").await;
    limit_tenant(&app, tenant.id, Some(LIMIT)).await;
    for i in 0..5 {
        let response = get_projects(&app, &tenant).await;
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(
            header(&response, "ratelimit-remaining"),
            Some(u64::from(LIMIT) - 1 - i)
        );
    }
    assert_eq!(
        app.metric("tenantry_rate_limit_local_decisions_total")
            .await,
        0,
        "a request waited for the connection and was decided locally"
    );
}
