//! Analytics user ids as strings (API.md "Analytics", tenant_template V6): any string of 1 to
//! 200 characters, counted exactly beside UUIDs, one user per UUID whatever its spelling, one
//! dictionary per tenant, and the UUIDs stored before V6 still the same users after it.

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use tenantry::analytics::model::canonical_user_id;
use tenantry::db::{begin_tenant_tx, tenant_schema_name, Pools};
use uuid::Uuid;

use crate::analytics::{post_events, rfc, summary};
use crate::helpers::{assert_problem, spawn_app, TestApp, TestTenant};

async fn post_ok(app: &TestApp, token: &str, events: Vec<Value>) {
    let n = events.len();
    let r = post_events(app, token, events).await;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], n);
}

/// Distinct users of `sent` (user id, occurred at) in [from, to), spellings folded as the
/// server is meant to fold them.
fn expected_users(sent: &[(String, DateTime<Utc>)], from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    sent.iter()
        .filter(|(_, at)| *at >= from && *at < to)
        .map(|(u, _)| canonical_user_id(u.clone()))
        .collect::<HashSet<_>>()
        .len() as i64
}

async fn dictionary_size(app: &TestApp, tenant: Uuid) -> i64 {
    app.superuser_db()
        .await
        .query_one(
            &format!(
                "select count(*) from {}.user_ids where tenant_id = $1",
                tenant_schema_name(tenant)
            ),
            &[&tenant],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn string_and_anonymous_user_ids_count_exactly_beside_uuids() {
    let app = spawn_app().await;
    let t = app.create_tenant("strids").await;
    let now = Utc::now();
    let uuid = Uuid::now_v7();
    let users: Vec<String> = vec![
        "alice".into(),
        "anon:1f3c9a".into(),
        "user@example.com".into(),
        uuid.to_string(),
        uuid.to_string().to_uppercase(),
        format!("{{{uuid}}}"),
        uuid.simple().to_string(),
        "é".repeat(200),
        "x".repeat(200),
        " spaced id ".into(),
    ];
    // Three times over, 50 hours back to now: DAU's 24-hour window cuts hours in two, so the
    // partial hours are counted from the raw events through the dictionary, the whole ones from
    // the activity masks; the later posts find the ids already keyed.
    let mut sent = Vec::new();
    for round in 0..3 {
        let events: Vec<Value> = users
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let at = now - Duration::minutes((i as i64 * 7 + round * 131) % (50 * 60));
                sent.push((u.clone(), at));
                json!({"event_type": "open", "user_id": u, "timestamp": rfc(at)})
            })
            .collect();
        post_ok(&app, &t.token, events).await;
    }
    post_ok(&app, &t.token, vec![json!({"event_type": "open"})]).await;

    let to = now + Duration::seconds(30);
    let s = summary(&app, &t.token, to - Duration::days(3), to).await;
    assert_eq!(s.mau, expected_users(&sent, to - Duration::days(30), to));
    assert_eq!(s.mau, 7, "the four spellings of one UUID are one user");
    assert_eq!(s.dau, expected_users(&sent, to - Duration::hours(24), to));
    assert_eq!(s.events, 31);
    assert_eq!(dictionary_size(&app, t.id).await, 7);

    // The raw events keep the id as sent, a UUID in its canonical spelling.
    let stored: Vec<String> = app
        .superuser_db()
        .await
        .query(
            &format!(
                "select distinct user_id from {}.events where user_id is not null",
                tenant_schema_name(t.id)
            ),
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    assert!(stored.contains(&uuid.to_string()));
    assert!(stored.contains(&" spaced id ".to_string()));
    assert_eq!(stored.len(), 7);
}

#[tokio::test]
async fn user_ids_of_0_or_201_characters_are_422_and_nothing_is_stored() {
    let app = spawn_app().await;
    let t = app.create_tenant("badids").await;
    let r = post_events(
        &app,
        &t.token,
        vec![
            json!({"event_type": "ok", "user_id": "x".repeat(200)}),
            json!({"event_type": "a", "user_id": ""}),
            json!({"event_type": "b", "user_id": "y".repeat(201)}),
            json!({"event_type": "c", "user_id": 42}),
            json!({"event_type": "d", "user_id": "nul\u{0}inside"}),
        ],
    )
    .await;
    let body = assert_problem(r, 422, "validation_failed").await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        vec![
            "events[1].user_id",
            "events[2].user_id",
            "events[3].user_id",
            "events[4].user_id"
        ]
    );
    let now = Utc::now();
    let s = summary(
        &app,
        &t.token,
        now - Duration::days(1),
        now + Duration::minutes(1),
    )
    .await;
    assert_eq!((s.events, s.mau), (0, 0));
    assert_eq!(dictionary_size(&app, t.id).await, 0);
}

#[tokio::test]
async fn the_same_user_id_in_two_tenants_is_two_users() {
    let app = spawn_app().await;
    let a = app.create_tenant("idsa").await;
    let b = app.create_tenant("idsb").await;
    post_ok(
        &app,
        &a.token,
        vec![
            json!({"event_type": "x", "user_id": "alice"}),
            json!({"event_type": "x", "user_id": "bob"}),
        ],
    )
    .await;
    post_ok(
        &app,
        &b.token,
        vec![json!({"event_type": "x", "user_id": "alice"})],
    )
    .await;
    let now = Utc::now();
    let (from, to) = (now - Duration::days(1), now + Duration::minutes(1));
    assert_eq!(summary(&app, &a.token, from, to).await.mau, 2);
    assert_eq!(summary(&app, &b.token, from, to).await.mau, 1);
    assert_eq!(dictionary_size(&app, a.id).await, 2);
    assert_eq!(dictionary_size(&app, b.id).await, 1);

    // Under the app role, a transaction bound to one tenant sees none of the other's
    // dictionary, even naming the other's schema (RLS on user_ids).
    let pool = Pools::new(&app.config).expect("pools").app;
    let mut conn = pool.get().await.unwrap();
    let tx = begin_tenant_tx(&mut conn, a.id).await.unwrap();
    let seen: i64 = tx
        .query_one(
            &format!("select count(*) from {}.user_ids", tenant_schema_name(b.id)),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 0);
    let inserted = tx
        .execute(
            &format!(
                "insert into {}.user_ids (tenant_id, user_id, user_key) values ($1, 'mallory', 99)",
                tenant_schema_name(b.id)
            ),
            &[&b.id],
        )
        .await;
    assert!(
        inserted.is_err(),
        "a write into another tenant's dictionary"
    );
}

/// Puts a tenant's schema back in the shape V5 left it in (uuid user ids, no dictionary),
/// keeping the users it has, then replays V6 as a migration would: as the owner, whose tables
/// the app role gets by default privileges.
async fn replay_v6(app: &TestApp, t: &TestTenant) {
    let schema = tenant_schema_name(t.id);
    let mut db = app.superuser_db().await;
    let tx = db.transaction().await.unwrap();
    tx.batch_execute(&format!(
        "create function pg_temp.user_uuid(k integer) returns uuid language sql stable \
           as 'select user_id::uuid from {schema}.user_ids where user_key = k'; \
         alter table {schema}.user_activity alter user_id type uuid using pg_temp.user_uuid(user_id); \
         alter table {schema}.type_activity alter user_id type uuid using pg_temp.user_uuid(user_id); \
         alter table {schema}.events alter user_id type uuid using user_id::uuid; \
         drop table {schema}.user_ids; \
         set local search_path to {schema}; \
         set local role {owner}",
        owner = app.config.roles.owner
    ))
    .await
    .unwrap();
    tx.execute(
        "select set_config('app.current_tenant', $1, true)",
        &[&t.id.to_string()],
    )
    .await
    .unwrap();
    tx.batch_execute(include_str!("../../tenant_template/V6__user_ids.sql"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn uuids_stored_before_v6_keep_counting_as_the_same_users() {
    // Upgrading an existing tenant schema through V6 is plain PostgreSQL's path: on Citus a
    // template migration whose backfill is an `insert ... select` cannot run on a distributed
    // schema (docs/scale-out.md, limits), and tenants there are provisioned at V6 or later.
    if crate::helpers::citus_workers().is_some() {
        eprintln!("skipped on Citus: replays V6 on an existing distributed schema");
        return;
    }
    let app = spawn_app().await;
    let t = app.create_tenant("prev6").await;
    let now = Utc::now();
    let users: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    let before: Vec<Value> = users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            json!({"event_type": "v5", "user_id": u,
                   "timestamp": rfc(now - Duration::hours(i as i64 * 5))})
        })
        .collect();
    post_ok(&app, &t.token, before).await;
    replay_v6(&app, &t).await;
    assert_eq!(dictionary_size(&app, t.id).await, 5);

    // The same users in other spellings and a new string id: one user more, not four.
    post_ok(
        &app,
        &t.token,
        vec![
            json!({"event_type": "v6", "user_id": users[0].to_string().to_uppercase()}),
            json!({"event_type": "v6", "user_id": format!("{{{}}}", users[1])}),
            json!({"event_type": "v6", "user_id": users[4].simple().to_string()}),
            json!({"event_type": "v6", "user_id": "carol"}),
        ],
    )
    .await;
    let to = Utc::now() + Duration::seconds(30);
    let s = summary(&app, &t.token, to - Duration::days(2), to).await;
    assert_eq!(s.mau, 6);
    assert_eq!(s.dau, 6);
    assert_eq!(dictionary_size(&app, t.id).await, 6);
    // The last hour: the first event from before V6 and the four after it.
    let s = summary(&app, &t.token, to - Duration::hours(1), to).await;
    assert_eq!(s.events, 5);
}
