//! GDPR erasure (docs/privacy.md): one data subject of a tenant (`POST /privacy/erasure`), and a
//! whole tenant at once (`tenantry tenants purge <tenant> --now`). The proof is catalog-driven:
//! after the erasure, every text, varchar, jsonb and uuid column of the shared schema and of
//! every tenant schema is searched, as the superuser, for the subject's email and id.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tenantry::auth::Role;
use tenantry::db::{tenant_schema_name, Pools, TENANT_TABLES};
use tenantry::jobs::{Registry, Worker, WorkerOptions};
use tenantry::net::outbound::Outbound;
use tenantry::net::ssrf::Policy;
use tenantry::secrets::Keyring;
use tenantry::webhooks::delivery::{Limits, WebhookMetrics};
use tenantry::webhooks::{Dispatcher, DispatcherOptions, FanOut, SystemClock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::cli::tenantry_with;
use crate::fixtures::{create_project, create_task, create_user, expect, id_of, token_for};
use crate::helpers::{
    assert_problem, provision_tenant, spawn_app, spawn_app_with, test_config, test_db, TestApp,
};

/// A webhook receiver that answers 200 with the body it was sent, so the delivery log's
/// response body holds the subject too.
async fn echo_receiver() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some(head_end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let length = text[..head_end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() < head_end + 4 + length {
                        continue;
                    }
                    let body = &buf[head_end + 4..head_end + 4 + length];
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(body).await;
                    let _ = stream.shutdown().await;
                    return;
                }
            });
        }
    });
    url
}

/// Runs the outbox and the webhook dispatcher of the test (the server runs neither) until
/// nothing is left to do.
async fn deliver_all(app: &TestApp) {
    let pools = Pools::new(&app.config).unwrap();
    let worker = Worker::new(
        pools.app.clone(),
        Registry::new().with(FanOut::new()),
        WorkerOptions {
            batch_size: 50,
            backoff_base: Duration::ZERO,
            ..WorkerOptions::default()
        },
    );
    let limits: Limits = Arc::new(|_tenant| Box::pin(async { None }));
    let dispatcher = Dispatcher::new(
        pools.app.clone(),
        Outbound::builder(Policy::webhooks(true))
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
        Keyring::from_config(&app.config).unwrap(),
        Arc::new(SystemClock),
        limits,
        DispatcherOptions::default(),
        WebhookMetrics::new().unwrap(),
    );
    for _ in 0..20 {
        let mut busy = 0;
        for _ in 0..100 {
            let n = worker.run_once().await.unwrap();
            busy += n;
            if n == 0 {
                break;
            }
        }
        busy += dispatcher.run_once().await.unwrap();
        if busy == 0 {
            return;
        }
    }
}

/// Every (schema.table.column, count) of the database where `needle` appears in a text,
/// varchar, jsonb or uuid column, case-insensitively, leaving out the rows of `except_tenant`
/// (a tenant that legitimately holds the same address) and its schema.
async fn occurrences(su: &Client, needle: &str, except_tenant: Uuid) -> Vec<(String, i64)> {
    let except_schema = tenant_schema_name(except_tenant);
    let columns = su
        .query(
            "select c.table_schema::text, c.table_name::text, c.column_name::text, \
                    exists (select 1 from information_schema.columns k \
                            where k.table_schema = c.table_schema and k.table_name = c.table_name \
                              and k.column_name = 'tenant_id') \
             from information_schema.columns c \
             join information_schema.tables t \
               on t.table_schema = c.table_schema and t.table_name = c.table_name \
             where t.table_type = 'BASE TABLE' \
               and c.data_type in ('text', 'character varying', 'jsonb', 'uuid', 'json') \
               and (c.table_schema = 'app' or c.table_schema like 't\\_%') \
               and c.table_schema::text <> $1::text",
            &[&except_schema],
        )
        .await
        .unwrap();
    assert!(columns.len() > 40, "the catalog lists the columns");
    let mut found = Vec::new();
    for row in columns {
        let (schema, table, column, has_tenant): (String, String, String, bool) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let scope = if has_tenant {
            "and tenant_id is distinct from $2"
        } else {
            "and $2::uuid is not null"
        };
        let sql = format!(
            "select count(*) from \"{schema}\".\"{table}\" \
             where strpos(lower(\"{column}\"::text), lower($1)) > 0 {scope}"
        );
        let n: i64 = su
            .query_one(&sql, &[&needle, &except_tenant])
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            found.push((format!("{schema}.{table}.{column}"), n));
        }
    }
    found
}

async fn count(
    su: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> i64 {
    su.query_one(sql, params).await.unwrap().get(0)
}

#[tokio::test]
async fn nothing_of_an_erased_subject_is_left_in_any_table_or_tenant_schema() {
    let (mut config, database) = test_config().await;
    config.job_worker = false;
    config.webhook_allow_private_targets = true;
    let app = spawn_app_with(config, database).await;
    let t = app.create_tenant_on_plan("erase-co", "pro").await;
    let other_tenant = app.create_tenant_on_plan("keep-co", "pro").await;
    let su = app.superuser_db().await;

    // The webhook exists first, so every event about the subject is delivered and logged.
    let receiver = echo_receiver().await;
    expect(
        app.post("/webhooks", &t.token)
            .json(&json!({"url": receiver, "events": ["user.*", "task.*", "project.*"]}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;

    let email = "Ada.Erasable+gdpr@Subject.example.org";
    let subject = id_of(&create_user(&app, &t.token, email, "admin").await);
    let subject_token = token_for(&app, t.id, subject, Role::Admin);
    let bystander = id_of(&create_user(&app, &t.token, "grace@keep.example.org", "member").await);
    // The same address in another tenant is another person's account there.
    let elsewhere = id_of(&create_user(&app, &other_tenant.token, email, "member").await);

    // Data everywhere: a project the subject made and is a member of, a task assigned to
    // them that mentions them, an API key they created, a settings change of theirs.
    let project = id_of(&create_project(&app, &subject_token, "Subject's project").await);
    expect(
        app.post(&format!("/projects/{project}/members"), &t.token)
            .json(&json!({"user_id": subject}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    let task = id_of(&create_task(&app, &t.token, project, "Review").await);
    expect(
        app.patch(&format!("/tasks/{task}"), &t.token)
            .json(&json!({"assignee_id": subject, "description": format!("ask {email} first")}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let key = expect(
        app.post("/api-keys", &subject_token)
            .json(&json!({"name": "subject's key"}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    expect(
        app.patch("/settings", &subject_token)
            .json(&json!({"timezone": "Europe/Paris"}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    // Analytics: events under their id and under their email, their email in another
    // user's event properties; the bystander's own events.
    expect(
        app.post("/analytics/events", &t.token)
            .json(&json!({"events": [
                {"event_type": "login", "user_id": subject.to_string(), "metadata": {"email": email}},
                {"event_type": "click", "user_id": email.to_lowercase(), "feature": "export"},
                {"event_type": "share", "user_id": bystander.to_string(),
                 "metadata": {"shared_with": email, "owner": subject.to_string()}},
                {"event_type": "login", "user_id": bystander.to_string()},
            ]}))
            .send()
            .await
            .unwrap(),
        202,
    )
    .await;
    expect(
        app.post("/analytics/events", &other_tenant.token)
            .json(&json!({"event_type": "login", "user_id": email}))
            .send()
            .await
            .unwrap(),
        202,
    )
    .await;
    // Usage: a product that keys its events by user.
    expect(
        app.post("/usage/events", &t.token)
            .json(&json!({"idempotency_key": format!("seat-{subject}"), "metric": "seats", "quantity": 1}))
            .send()
            .await
            .unwrap(),
        202,
    )
    .await;
    deliver_all(&app).await;

    // The fixture reached every place it means to: otherwise the search below proves nothing.
    let before_email = occurrences(&su, email, other_tenant.id).await;
    let before_id = occurrences(&su, &subject.to_string(), other_tenant.id).await;
    let places: Vec<&str> = before_email
        .iter()
        .chain(&before_id)
        .map(|(p, _)| p.as_str())
        .collect();
    for expected in [
        "app.users.email",
        "app.audit_logs.changes",
        "app.audit_logs.user_id",
        "app.outbox.payload",
        "app.webhook_messages.body",
        "app.webhook_deliveries.response_body",
        "app.project_members.user_id",
        "app.tasks.assignee_id",
        "app.tasks.description",
        "app.api_keys.created_by",
        "app.settings_versions.user_id",
        "app.usage_events.idempotency_key",
    ] {
        assert!(
            places.contains(&expected),
            "fixture misses {expected}: {places:?}"
        );
    }
    let schema = tenant_schema_name(t.id);
    for expected in ["events.user_id", "events.metadata", "user_ids.user_id"] {
        let place = format!("{schema}.{expected}");
        assert!(
            places.contains(&place.as_str()),
            "fixture misses {place}: {places:?}"
        );
    }
    let audit_before = count(
        &su,
        "select count(*) from app.audit_logs where tenant_id = $1",
        &[&t.id],
    )
    .await;
    let subject_audit_rows = count(
        &su,
        "select count(*) from app.audit_logs where tenant_id = $1 and user_id = $2",
        &[&t.id, &subject],
    )
    .await;
    assert!(
        subject_audit_rows >= 1,
        "the subject acted: {subject_audit_rows}"
    );

    let erasure = expect(
        erase(&app, &t.token, json!({"email": email.to_uppercase()})).await,
        202,
    )
    .await;
    let erasure_id: Uuid = erasure["erasure_id"].as_str().unwrap().parse().unwrap();
    let pseudonym: Uuid = erasure["pseudonym"].as_str().unwrap().parse().unwrap();

    // Nothing of the subject anywhere, in any table or tenant schema.
    assert_eq!(occurrences(&su, email, other_tenant.id).await, vec![]);
    assert_eq!(
        occurrences(&su, &subject.to_string(), other_tenant.id).await,
        vec![]
    );
    // Nor their name, in the trail or the events that described them.
    assert_eq!(
        occurrences(&su, &format!("User {email}"), other_tenant.id).await,
        vec![]
    );

    // The trail is kept, the subject pseudonymised, and the erasure itself is on it.
    let audit_after = count(
        &su,
        "select count(*) from app.audit_logs where tenant_id = $1",
        &[&t.id],
    )
    .await;
    assert_eq!(audit_after, audit_before + 1);
    assert_eq!(
        count(
            &su,
            "select count(*) from app.audit_logs where tenant_id = $1 and user_id = $2",
            &[&t.id, &pseudonym],
        )
        .await,
        subject_audit_rows
    );
    let record = su
        .query_one(
            "select user_id, changes::text from app.audit_logs \
             where tenant_id = $1 and action = 'privacy.erasure' and resource_id = $2",
            &[&t.id, &erasure_id.to_string()],
        )
        .await
        .unwrap();
    assert_eq!(record.get::<_, Option<Uuid>>(0), Some(t.admin_id));
    let changes: String = record.get(1);
    assert!(
        !changes.to_lowercase().contains(&email.to_lowercase()),
        "{changes}"
    );

    // Rows kept without the reference: the task, unassigned. The subject's API key is revoked
    // with them, as a deleted user's keys are.
    let task_now = expect(
        app.get(&format!("/tasks/{task}"), &t.token)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(task_now["assignee_id"], Value::Null);
    let api_key = key["key"].as_str().unwrap();
    assert_eq!(
        app.get("/projects", api_key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    assert_eq!(
        count(
            &su,
            "select count(*) from app.api_keys where tenant_id = $1 and created_by = $2",
            &[&t.id, &pseudonym]
        )
        .await,
        1
    );
    // The subject's own token is dead.
    assert_eq!(
        app.get("/projects", &subject_token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    let status = expect(
        app.get(&format!("/privacy/erasure/{erasure_id}"), &t.token)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(status["status"], "completed");
    assert_eq!(status["users_erased"], 1);

    // The bystander and the other tenant's user with the same address are untouched.
    let grace = expect(
        app.get(&format!("/users/{bystander}"), &t.token)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(grace["email"], "grace@keep.example.org");
    assert_eq!(
        count(
            &su,
            &format!("select count(*) from {schema}.events where user_id = $1"),
            &[&bystander.to_string()],
        )
        .await,
        2
    );
    let there = expect(
        app.get(&format!("/users/{elsewhere}"), &other_tenant.token)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(there["email"], email);
    assert_eq!(
        count(
            &su,
            &format!(
                "select count(*) from {}.events where user_id = $1",
                tenant_schema_name(other_tenant.id)
            ),
            &[&email],
        )
        .await,
        1
    );
}

#[tokio::test]
async fn erasure_is_for_admins_of_the_subjects_own_tenant() {
    let app = spawn_app().await;
    let a = app.create_tenant("priv-a").await;
    let b = app.create_tenant("priv-b").await;
    let member = id_of(&create_user(&app, &a.token, "member@priv-a.example.com", "member").await);
    let member_token = token_for(&app, a.id, member, Role::Member);
    let of_b = id_of(&create_user(&app, &b.token, "someone@priv-b.example.com", "member").await);

    // A member may not erase anyone, themselves included.
    assert_problem(
        erase(&app, &member_token, json!({"user_id": member})).await,
        403,
        "forbidden",
    )
    .await;
    // Another tenant's user, by id or by email, does not exist here.
    assert_problem(
        erase(&app, &a.token, json!({"user_id": of_b})).await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        erase(
            &app,
            &a.token,
            json!({"email": "someone@priv-b.example.com"}),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        erase(&app, &a.token, json!({"user_id": Uuid::now_v7()})).await,
        404,
        "not_found",
    )
    .await;
    for body in [
        json!({}),
        json!({"user_id": member, "email": "member@priv-a.example.com"}),
        json!({"email": "not an email"}),
        json!({"user_id": "not-a-uuid"}),
        json!({"user_id": member, "extra": 1}),
    ] {
        let r = erase(&app, &a.token, body.clone()).await;
        assert_eq!(r.status().as_u16(), 422, "{body}");
    }
    // The tenant's only admin cannot be erased: the tenant would have none.
    assert_problem(
        erase(&app, &a.token, json!({"user_id": a.admin_id})).await,
        409,
        "last_admin",
    )
    .await;
    // Nothing happened to b's user, nor to the member.
    let su = app.superuser_db().await;
    assert_eq!(
        count(
            &su,
            "select count(*) from app.users where id = any($1)",
            &[&vec![of_b, member]],
        )
        .await,
        2
    );

    // The erasure's status: the tenant's admins only, its own erasures only.
    let done = expect(erase(&app, &a.token, json!({"user_id": member})).await, 202).await;
    let id = done["erasure_id"].as_str().unwrap();
    expect(
        app.get(&format!("/privacy/erasure/{id}"), &a.token)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_problem(
        app.get(&format!("/privacy/erasure/{id}"), &b.token)
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    let b_member = id_of(&create_user(&app, &b.token, "m2@priv-b.example.com", "member").await);
    assert_problem(
        app.get(
            &format!("/privacy/erasure/{id}"),
            &token_for(&app, b.id, b_member, Role::Member),
        )
        .send()
        .await
        .unwrap(),
        403,
        "forbidden",
    )
    .await;
    // An admin may erase themselves (another admin remains): the erasure's record names the
    // pseudonym, not them, and their token is dead.
    let second = id_of(&create_user(&app, &a.token, "second@priv-a.example.com", "admin").await);
    let second_token = token_for(&app, a.id, second, Role::Admin);
    let own = expect(
        erase(
            &app,
            &second_token,
            json!({"email": "second@priv-a.example.com"}),
        )
        .await,
        202,
    )
    .await;
    let by: Option<Uuid> = su
        .query_one(
            "select user_id from app.audit_logs where tenant_id = $1 \
             and action = 'privacy.erasure' and resource_id = $2",
            &[&a.id, &own["erasure_id"].as_str().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        by.map(|u| u.to_string()),
        own["pseudonym"].as_str().map(str::to_string)
    );
    assert_eq!(
        app.get("/projects", &second_token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );

    // Erased is erased: a second request for the same person finds nobody.
    assert_problem(
        erase(&app, &a.token, json!({"user_id": member})).await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn purge_now_erases_one_tenant_at_once_after_confirmation() {
    let db = test_db().await;
    let pools = db.pools();
    let gone = provision_tenant(&db.config, &pools, "purge-me").await;
    let kept = provision_tenant(&db.config, &pools, "keep-me").await;
    let su = db.superuser_db().await;

    // Without a terminal to confirm on, and without --yes: refused, nothing removed.
    let out = tenantry_with(&db, &["tenants", "purge", "purge-me", "--now"], &[]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--yes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        count(
            &su,
            "select count(*) from app.tenants where id = $1",
            &[&gone.tenant.id]
        )
        .await,
        1
    );
    // A tenant without --now is not an immediate purge.
    let out = tenantry_with(&db, &["tenants", "purge", "purge-me"], &[]).await;
    assert!(!out.status.success());

    let out = tenantry_with(
        &db,
        &["tenants", "purge", "purge-me", "--now", "--yes"],
        &[],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        count(
            &su,
            "select count(*) from app.tenants where id = $1",
            &[&gone.tenant.id]
        )
        .await,
        0
    );
    for table in TENANT_TABLES {
        assert_eq!(
            count(
                &su,
                &format!("select count(*) from app.{table} where tenant_id = $1"),
                &[&gone.tenant.id],
            )
            .await,
            0,
            "{table}"
        );
    }
    assert_eq!(
        count(
            &su,
            "select count(*) from pg_namespace where nspname = $1",
            &[&tenant_schema_name(gone.tenant.id)],
        )
        .await,
        0
    );
    // The admin's address is nowhere.
    assert_eq!(
        occurrences(&su, &gone.admin_email, kept.tenant.id).await,
        vec![]
    );
    // On the platform's record, without the tenant's data.
    let details: String = su
        .query_one(
            "select details::text from app.platform_audit_logs \
             where action = 'tenant.purge' and target_tenant_id = $1",
            &[&gone.tenant.id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        !details.contains("purge-me") && !details.contains(&gone.admin_email),
        "{details}"
    );
    // The other tenant is whole.
    assert_eq!(
        count(
            &su,
            "select count(*) from app.users where tenant_id = $1",
            &[&kept.tenant.id]
        )
        .await,
        1
    );
    let out = tenantry_with(
        &db,
        &["tenants", "purge", "purge-me", "--now", "--yes"],
        &[],
    )
    .await;
    assert!(!out.status.success(), "an unknown tenant is an error");
}

/// `POST /privacy/erasure` with `body`, as `token`.
async fn erase(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.post("/privacy/erasure", token)
        .json(&body)
        .send()
        .await
        .unwrap()
}
