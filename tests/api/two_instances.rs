//! Two `tenantry serve` processes on one database and one Redis ([`Cluster`]): what must hold
//! across instances (DESIGN.md "Several machines") holds. A change made through one instance is
//! seen by the other within a second (a suspension, a plan change, a deleted or demoted user);
//! failed logins through both count against one limit; an outbox event is processed once; two
//! migration runners started together apply each migration once.
//!
//! The same rules have in-process tests with more detail, two apps in one test process
//! (`spawn_app_with` twice): `config_snapshot::changes_through_one_instance_are_seen_by_another_within_a_second`
//! (also with Redis losing its copies), `config_snapshot::flags_are_answered_from_memory_and_changes_reach_another_instance_within_a_second`,
//! `ratelimit::login_is_throttled_per_tenant_and_client_address_across_servers` (per client
//! address behind a trusted proxy), `ratelimit::two_servers_share_one_tenants_budget`,
//! `usage::two_servers_admit_exactly_the_api_call_quota_together`,
//! `migrate::two_runners_started_together_migrate_each_schema_once` (the library, not the
//! binary). The tests here are the same deployment as production: two processes, whatever
//! one process shares with itself left out.
//!
//! "Within a second": the time is counted from the writer's answer, the other instance is
//! polled until it answers the new way (`helpers::eventually`), and nothing else is timed.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::cluster::Cluster;
use crate::helpers::{assert_problem, eventually, provision_tenant, unmigrated_config, TestDb};
use crate::migrate::{TemplateDir, NEXT};
use crate::webhooks::{Receiver, Reply};

const A: usize = 0;
const B: usize = 1;

fn within_a_second() -> Duration {
    Duration::from_secs(1)
}

async fn status(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.expect("request").status().as_u16()
}

/// `POST /projects` through instance `i`: the status.
async fn write(c: &Cluster, i: usize, token: &str) -> u16 {
    status(
        c.post(i, "/projects", token)
            .json(&json!({"name": format!("p-{}", Uuid::now_v7())})),
    )
    .await
}

/// `POST /api-keys` through instance `i` (a Pro feature): the status, and the key if made.
async fn make_api_key(c: &Cluster, i: usize, token: &str) -> (u16, Option<String>) {
    let r = c
        .post(i, "/api-keys", token)
        .json(&json!({"name": format!("k-{}", Uuid::now_v7())}))
        .send()
        .await
        .expect("POST /api-keys");
    let code = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or_default();
    (code, body["key"].as_str().map(str::to_string))
}

async fn operator_ok(c: &Cluster, i: usize, method: Method, path: &str, body: Option<Value>) {
    let mut request = c.operator(i, method, path);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await.expect("operator request");
    let code = r.status().as_u16();
    assert!(
        (200..300).contains(&code),
        "{path}: {code} {}",
        r.text().await.unwrap_or_default()
    );
}

#[tokio::test]
async fn a_suspension_through_one_instance_is_enforced_by_the_other_within_a_second() {
    let c = Cluster::start(2).await;
    let t = c.create_tenant(A, "suspended", "free").await;
    assert_eq!(write(&c, B, &t.token).await, 201);

    operator_ok(
        &c,
        A,
        Method::POST,
        &format!("/admin/tenants/{}/suspend", t.id),
        None,
    )
    .await;
    let since = tokio::time::Instant::now();
    assert_eq!(write(&c, A, &t.token).await, 402, "at once on the writer");
    assert!(
        eventually(since, within_a_second(), || async {
            write(&c, B, &t.token).await == 402
        })
        .await,
        "the suspension was not enforced by the other instance within a second"
    );
    assert_problem(
        c.post(B, "/projects", &t.token)
            .json(&json!({"name": "refused"}))
            .send()
            .await
            .unwrap(),
        402,
        "tenant_suspended",
    )
    .await;
    // Reads still work on both.
    for i in [A, B] {
        assert_eq!(status(c.get(i, "/projects", &t.token)).await, 200);
    }

    // And back, the other way round: resumed through B, A accepts writes again.
    operator_ok(
        &c,
        B,
        Method::POST,
        &format!("/admin/tenants/{}/resume", t.id),
        None,
    )
    .await;
    let since = tokio::time::Instant::now();
    assert_eq!(write(&c, B, &t.token).await, 201, "at once on the writer");
    assert!(
        eventually(since, within_a_second(), || async {
            write(&c, A, &t.token).await == 201
        })
        .await,
        "the resumption was not seen by the other instance within a second"
    );
}

#[tokio::test]
async fn a_plan_change_through_one_instance_gates_the_other_within_a_second() {
    let c = Cluster::start(2).await;
    let t = c.create_tenant(A, "replanned", "free").await;
    for i in [A, B] {
        assert_problem(
            c.post(i, "/api-keys", &t.token)
                .json(&json!({"name": "early"}))
                .send()
                .await
                .unwrap(),
            403,
            "plan_required",
        )
        .await;
    }

    // Up: API access (a Pro feature) opens on B.
    let plan_path = format!("/admin/tenants/{}/plan", t.id);
    operator_ok(&c, A, Method::PUT, &plan_path, Some(json!({"plan": "pro"}))).await;
    let since = tokio::time::Instant::now();
    assert_eq!(
        make_api_key(&c, A, &t.token).await.0,
        201,
        "at once on the writer"
    );
    let key = loop {
        let (code, made) = make_api_key(&c, B, &t.token).await;
        if let Some(key) = made {
            break key;
        }
        assert_eq!(code, 403, "before the upgrade is seen");
        assert!(
            since.elapsed() < within_a_second(),
            "the upgrade was not seen by the other instance within a second"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    for i in [A, B] {
        assert_eq!(
            status(c.get(i, "/projects", &key)).await,
            200,
            "the key on {i}"
        );
    }

    // Down, through the other instance: the gate closes on A, for new keys and for the key
    // already made (API access is checked on every request).
    operator_ok(
        &c,
        B,
        Method::PUT,
        &plan_path,
        Some(json!({"plan": "free"})),
    )
    .await;
    let since = tokio::time::Instant::now();
    assert_eq!(
        make_api_key(&c, B, &t.token).await.0,
        403,
        "at once on the writer"
    );
    assert!(
        eventually(since, within_a_second(), || async {
            make_api_key(&c, A, &t.token).await.0 == 403
                && status(c.get(A, "/projects", &key)).await == 403
        })
        .await,
        "the downgrade was not seen by the other instance within a second"
    );
    assert_problem(
        c.get(A, "/projects", &key).send().await.unwrap(),
        403,
        "plan_required",
    )
    .await;
}

/// A user made through `via` with `role` and a password; their id.
async fn add_user(c: &Cluster, via: usize, admin_token: &str, email: &str, role: &str) -> Uuid {
    let r = c
        .post(via, "/users", admin_token)
        .json(&json!({"email": email, "name": "Someone", "role": role, "password": "a-long-password-1"}))
        .send()
        .await
        .expect("POST /users");
    assert_eq!(r.status().as_u16(), 201, "POST /users");
    let body: Value = r.json().await.unwrap();
    body["id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_deleted_or_demoted_user_is_refused_by_the_other_instance_within_a_second() {
    let c = Cluster::start(2).await;
    let t = c.create_tenant(A, "leavers", "pro").await;
    let leaver = add_user(&c, A, &t.token, "leaver@leavers.example.com", "admin").await;
    let demoted = add_user(&c, A, &t.token, "demoted@leavers.example.com", "admin").await;

    // Each logs in through B and is known (cached as live) by both instances; the leaver also
    // has an API key, used through both.
    let leaver_token = c
        .token(
            B,
            &t.slug,
            "leaver@leavers.example.com",
            "a-long-password-1",
        )
        .await;
    let demoted_token = c
        .token(
            B,
            &t.slug,
            "demoted@leavers.example.com",
            "a-long-password-1",
        )
        .await;
    let (code, key) = make_api_key(&c, B, &leaver_token).await;
    assert_eq!(code, 201);
    let key = key.expect("the leaver's API key");
    for i in [A, B] {
        for token in [&leaver_token, &demoted_token, &key] {
            assert_eq!(status(c.get(i, "/users", token)).await, 200);
        }
    }

    // Deleted through A: the token and the API key are refused by A at once, by B within a
    // second.
    let r = c
        .delete(A, &format!("/users/{leaver}"), &t.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let since = tokio::time::Instant::now();
    for (what, credential) in [("token", &leaver_token), ("API key", &key)] {
        assert_eq!(
            status(c.get(A, "/users", credential)).await,
            401,
            "the deleted user's {what} at once on the writer"
        );
    }
    assert!(
        eventually(since, within_a_second(), || async {
            status(c.get(B, "/users", &leaver_token)).await == 401
                && status(c.get(B, "/users", &key)).await == 401
        })
        .await,
        "the deleted user was not refused by the other instance within a second"
    );
    assert_problem(
        c.get(B, "/users", &leaver_token).send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;

    // Demoted through B: the token claims a role the user no longer has, refused by A.
    let r = c
        .patch(B, &format!("/users/{demoted}"), &t.token)
        .json(&json!({"role": "member"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let since = tokio::time::Instant::now();
    assert_eq!(status(c.get(B, "/users", &demoted_token)).await, 401);
    assert!(
        eventually(since, within_a_second(), || async {
            status(c.get(A, "/users", &demoted_token)).await == 401
        })
        .await,
        "the demoted user's admin token was not refused by the other instance within a second"
    );
    // The admin who made the changes is unaffected anywhere.
    for i in [A, B] {
        assert_eq!(status(c.get(i, "/users", &t.token)).await, 200);
    }
}

#[tokio::test]
async fn failed_logins_through_both_instances_count_against_one_limit() {
    let c = Cluster::start(2).await;
    let t = c.create_tenant(A, "guarded", "free").await;
    // The default limit; the tests' clients all come from 127.0.0.1, one client address.
    let attempts = 10;
    for i in 0..attempts {
        let via = if i % 2 == 0 { A } else { B };
        let r = c
            .login(via, &t.slug, &t.admin_email, "wrong-password")
            .await;
        assert_problem(r, 401, "unauthorized").await;
    }
    // Five through each: on its own, neither instance would have refused anything yet.
    for via in [A, B] {
        // Even the right password: refused before it is checked.
        let r = c
            .login(via, &t.slug, &t.admin_email, &t.admin_password)
            .await;
        assert!(
            r.headers().contains_key("retry-after"),
            "Retry-After on {via}"
        );
        let body = assert_problem(r, 429, "rate_limited").await;
        assert_eq!(body["metric"], "login_attempts_per_minute");
        assert_eq!(body["limit"], attempts);
    }
}

#[tokio::test]
async fn an_outbox_event_is_processed_once_with_both_instances_running() {
    let c = Cluster::start_with(
        2,
        &[
            ("WEBHOOK_ALLOW_PRIVATE_TARGETS", "true"),
            // Both instances poll the outbox and the webhook queue often: they compete for
            // every row.
            ("JOB_POLL_INTERVAL_MS", "20"),
        ],
    )
    .await;
    let t = c.create_tenant(A, "once", "pro").await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    let r = c
        .post(A, "/webhooks", &t.token)
        .json(&json!({"url": receiver.url, "events": ["project.*"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);

    // Written through both instances, each a project.created event in the outbox.
    let events: usize = 30;
    let events_i64 = i64::try_from(events).unwrap();
    for i in 0..events {
        assert_eq!(write(&c, i % 2, &t.token).await, 201);
    }
    let su = c.db.superuser_db().await;
    let succeeded = || async {
        su.query_one(
            "select count(*) from app.webhook_messages where tenant_id = $1 and status = 'succeeded'",
            &[&t.id],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
    };
    assert!(
        eventually(
            tokio::time::Instant::now(),
            Duration::from_secs(90),
            || async { succeeded().await >= events_i64 }
        )
        .await,
        "not every event was delivered: {} of {events}",
        succeeded().await
    );

    // Each outbox row claimed once (`attempts` counts claims) and processed.
    let rows = su
        .query(
            "select attempts, processed_at is not null from app.outbox \
             where tenant_id = $1 and event_type = 'project.created'",
            &[&t.id],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), events);
    for row in &rows {
        assert_eq!(
            (row.get::<_, i32>(0), row.get::<_, bool>(1)),
            (1, true),
            "an outbox row claimed more than once or not processed"
        );
    }
    // One message per event, one attempt per message, and one request to the receiver.
    let counts = su
        .query_one(
            "select (select count(*) from app.webhook_messages where tenant_id = $1), \
                    (select count(*) from app.webhook_deliveries where tenant_id = $1)",
            &[&t.id],
        )
        .await
        .unwrap();
    assert_eq!(
        (counts.get::<_, i64>(0), counts.get::<_, i64>(1)),
        (events_i64, events_i64),
        "messages and delivery attempts"
    );
    let received = receiver.all();
    let ids: HashSet<String> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(
        (received.len(), ids.len()),
        (events, events),
        "requests and distinct webhook ids at the receiver"
    );
}

/// `tenantry migrate` as a process of its own on the database of `db`.
fn migrate_command(db: &TestDb, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tenantry"));
    command
        .args(["migrate", "--no-progress", "--jobs", "2"])
        .args(extra)
        .env("DATABASE_URL", db.config.database_url.expose_secret())
        .env(
            "APP_DATABASE_URL",
            db.config.app_database_url.expose_secret(),
        )
        .env(
            "ADMIN_DATABASE_URL",
            db.config.admin_database_url.expose_secret(),
        )
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    command
}

/// Two `tenantry migrate` started together; both must succeed.
async fn migrate_twice(db: &TestDb, extra: &[&str]) {
    let runs = [migrate_command(db, extra), migrate_command(db, extra)].map(|mut command| {
        tokio::task::spawn_blocking(move || command.output().expect("run tenantry migrate"))
    });
    for run in runs {
        let output = run.await.expect("join");
        assert!(
            output.status.success(),
            "tenantry migrate failed: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[tokio::test]
async fn two_migration_runners_started_together_apply_each_migration_once() {
    // A database that does not exist yet: both runners create it, the roles and the schema.
    let (config, database) = unmigrated_config();
    let db = TestDb { config, database };
    migrate_twice(&db, &[]).await;
    let su = db.superuser_db().await;
    let shared: Vec<i32> = su
        .query(
            "select version from app.refinery_schema_history order by version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".sql"))
        })
        .count();
    let expected: Vec<i32> = (1..=i32::try_from(files).unwrap()).collect();
    assert_eq!(shared, expected, "each shared migration applied once");

    // Tenant schemas, and a new template version: two runners again.
    let pools = db.pools();
    let mut tenants = Vec::new();
    for slug in ["mig-one", "mig-two", "mig-three"] {
        tenants.push(provision_tenant(&db.config, &pools, slug).await.tenant.id);
    }
    let dir = TemplateDir::with_v2();
    let template = dir.0.to_string_lossy().to_string();
    migrate_twice(&db, &["--tenant-template", &template]).await;
    let expected: Vec<i32> = (1..=NEXT).collect();
    for tenant in tenants {
        let schema = tenantry::db::tenant_schema_name(tenant);
        let history: Vec<i32> = su
            .query(
                &format!("select version from {schema}.refinery_schema_history order by version"),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            history, expected,
            "each template migration applied once in {schema}"
        );
        let version: i32 = su
            .query_one(
                "select schema_version from app.tenants where id = $1",
                &[&tenant],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(version, NEXT);
    }
}
