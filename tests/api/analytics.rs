//! Analytics: exactness against a direct recount, isolation between tenants under concurrent
//! ingest, validation, group commit (nothing acknowledged unless committed), back-pressure and
//! retention.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tenantry::analytics::buckets::{floor_day, floor_hour, Interval};
use tenantry::analytics::query::{FeatureCount, Series, Summary};
use tenantry::analytics::retention::{cleanup_tenant, RetentionConfig};
use tenantry::analytics::store::{flush_lock_key, insert_batch, record_api_calls};
use tenantry::analytics::{
    AnalyticsError, CommitterConfig, GroupCommitter, IngestRules, NewEvent, ValidEvent,
};
use tenantry::db::{begin_tenant_tx, tenant_schema_name, PgPool, Pools};
use tenantry::http::problem::Problem;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::helpers::{
    allow_test_triggers, assert_problem, spawn_app, spawn_app_with, test_config,
    undistribute_for_replay, TestApp, TestTenant,
};

const TYPES: &[&str] = &["click", "view", "signup", "purchase", "search"];
const FEATURES: &[&str] = &["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];

pub(crate) fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn app_pool(app: &TestApp) -> PgPool {
    Pools::new(&app.config).expect("pools").app
}

fn random_event(rng: &mut StdRng, users: &[Uuid], at: DateTime<Utc>) -> Value {
    let mut e = json!({ "event_type": TYPES[rng.random_range(0..TYPES.len())] });
    if rng.random_bool(0.85) {
        e["user_id"] = json!(users[rng.random_range(0..users.len())]);
    }
    if rng.random_bool(0.7) {
        e["feature"] = json!(FEATURES[rng.random_range(0..FEATURES.len())]);
    }
    if rng.random_bool(0.3) {
        e["metadata"] = json!({ "n": rng.random_range(0..1000) });
    }
    e["timestamp"] = json!(rfc(at));
    e
}

pub(crate) async fn post_events(
    app: &TestApp,
    token: &str,
    events: Vec<Value>,
) -> reqwest::Response {
    app.post("/analytics/events", token)
        .json(&json!({ "events": events }))
        .send()
        .await
        .expect("POST /analytics/events")
}

/// Posts `events` in batches of random size, several requests at once, and checks every
/// batch was acknowledged in full.
async fn ingest(app: &TestApp, token: &str, rng: &mut StdRng, mut events: Vec<Value>) {
    let mut batches = Vec::new();
    while !events.is_empty() {
        let n = rng.random_range(1..=250).min(events.len());
        batches.push(events.drain(..n).collect::<Vec<_>>());
    }
    for group in batches.chunks(6) {
        let responses = futures_util::future::join_all(
            group.iter().map(|b| post_events(app, token, b.clone())),
        )
        .await;
        for (response, batch) in responses.into_iter().zip(group) {
            assert_eq!(response.status().as_u16(), 202);
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["accepted"], batch.len());
        }
    }
}

/// The recount: straight SQL over the tenant's raw events, as the superuser.
struct Recount<'a> {
    db: &'a Client,
    schema: String,
}

impl Recount<'_> {
    async fn events(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
        self.db
            .query_one(
                &format!(
                    "select count(*) from {}.events where occurred_at >= $1 and occurred_at < $2",
                    self.schema
                ),
                &[&from, &to],
            )
            .await
            .unwrap()
            .get(0)
    }

    async fn users(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
        self.db
            .query_one(
                &format!(
                    "select count(distinct user_id) from {}.events where occurred_at >= $1 and occurred_at < $2",
                    self.schema
                ),
                &[&from, &to],
            )
            .await
            .unwrap()
            .get(0)
    }

    async fn top_features(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<FeatureCount> {
        self.db
            .query(
                &format!(
                    "select feature, count(*) from {}.events where occurred_at >= $1 and occurred_at < $2 \
                     and feature is not null group by 1 order by 2 desc, feature collate \"C\" limit 10",
                    self.schema
                ),
                &[&from, &to],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| FeatureCount {
                feature: r.get(0),
                count: r.get(1),
            })
            .collect()
    }

    async fn series(
        &self,
        interval: Interval,
        users: bool,
        event_type: Option<&str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> BTreeMap<DateTime<Utc>, i64> {
        let what = if users {
            "count(distinct user_id)"
        } else {
            "count(*)"
        };
        let sql = format!(
            "select date_bin('1 {}', occurred_at, timestamptz '1970-01-01Z'), {what} from {}.events \
             where occurred_at >= $1 and occurred_at < $2 and ($3::text is null or event_type = $3) group by 1",
            interval.as_str(),
            self.schema
        );
        self.db
            .query(&sql, &[&from, &to, &event_type])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }
}

fn api_expected(
    calls: &[(DateTime<Utc>, i64)],
    interval: Interval,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> BTreeMap<DateTime<Utc>, i64> {
    // API calls are counted per hour: a range counts every hour it overlaps.
    let mut out = BTreeMap::new();
    for (at, n) in calls {
        let hour = floor_hour(*at);
        if hour + Duration::hours(1) > from && hour < to {
            *out.entry(interval.floor(hour)).or_insert(0) += n;
        }
    }
    out
}

fn points(series: &Series) -> BTreeMap<DateTime<Utc>, i64> {
    series
        .points
        .iter()
        .filter(|p| p.value != 0)
        .map(|p| (p.ts, p.value))
        .collect()
}

fn nonzero(map: BTreeMap<DateTime<Utc>, i64>) -> BTreeMap<DateTime<Utc>, i64> {
    map.into_iter().filter(|(_, v)| *v != 0).collect()
}

pub(crate) async fn summary(
    app: &TestApp,
    token: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Summary {
    let r = app
        .get("/analytics/summary", token)
        .query(&[("from", rfc(from)), ("to", rfc(to))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.unwrap()
}

async fn series(
    app: &TestApp,
    token: &str,
    metric: &str,
    interval: Interval,
    event_type: Option<&str>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Series {
    let mut q = vec![
        ("metric", metric.to_string()),
        ("interval", interval.as_str().to_string()),
        ("from", rfc(from)),
        ("to", rfc(to)),
    ];
    if let Some(t) = event_type {
        q.push(("event_type", t.to_string()));
    }
    let r = app
        .get("/analytics/timeseries", token)
        .query(&q)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{metric} {interval:?}");
    r.json().await.unwrap()
}

#[tokio::test]
async fn summary_and_every_series_match_a_direct_recount() {
    // The api_calls expected here are the ones the test records itself; the test's own
    // requests must not be flushed into the counters while it compares.
    let (mut config, database) = test_config().await;
    config.api_calls_flush_interval = std::time::Duration::from_secs(3600);
    let app = spawn_app_with(config, database).await;
    let tenant = app.create_tenant("exact").await;
    let mut rng = StdRng::seed_from_u64(20240501);
    let now = Utc::now();
    let users: Vec<Uuid> = (0..300).map(|_| Uuid::now_v7()).collect();

    // Mostly in time order over five days, then a wave of late events for earlier days.
    let mut events: Vec<Value> = (0..1500)
        .map(|i| {
            let at = now - Duration::days(5) + Duration::seconds(i * 5 * 86_400 / 1500)
                - Duration::seconds(rng.random_range(0..600));
            random_event(&mut rng, &users, at)
        })
        .collect();
    events.push(json!({"event_type": "click", "user_id": users[0]}));
    ingest(&app, &tenant.token, &mut rng, events).await;
    let late: Vec<Value> = (0..300)
        .map(|_| {
            let at = now - Duration::seconds(rng.random_range(3_600..4 * 86_400));
            random_event(&mut rng, &users, at)
        })
        .collect();
    ingest(&app, &tenant.token, &mut rng, late).await;

    // API calls as the request pipeline records them.
    let pool = app_pool(&app);
    let calls: Vec<(DateTime<Utc>, i64)> = (0..60)
        .map(|_| {
            (
                now - Duration::seconds(rng.random_range(0..5 * 86_400)),
                rng.random_range(1..50),
            )
        })
        .collect();
    {
        let mut conn = pool.get().await.unwrap();
        let tx = begin_tenant_tx(&mut conn, tenant.id).await.unwrap();
        record_api_calls(&tx, tenant.id, &calls).await.unwrap();
        tx.commit().await.unwrap();
    }

    let db = app.superuser_db().await;
    let recount = Recount {
        db: &db,
        schema: tenant_schema_name(tenant.id),
    };
    assert_eq!(
        recount
            .events(now - Duration::days(30), now + Duration::hours(1))
            .await,
        1801
    );

    let mut ranges = vec![
        (floor_day(now) - Duration::days(3), floor_day(now)),
        (floor_hour(now) - Duration::hours(30), floor_hour(now)),
        (now - Duration::minutes(50), now - Duration::minutes(20)),
        (now - Duration::days(6), now + Duration::minutes(10)),
    ];
    for _ in 0..6 {
        let from = now
            - Duration::seconds(rng.random_range(0..5 * 86_400))
            - Duration::microseconds(rng.random_range(0..1_000_000));
        let to = from + Duration::seconds(rng.random_range(60..4 * 86_400));
        ranges.push((from, to));
    }

    for (from, to) in ranges {
        let s = summary(&app, &tenant.token, from, to).await;
        assert_eq!(
            s.events,
            recount.events(from, to).await,
            "events {from} {to}"
        );
        assert_eq!(
            s.dau,
            recount.users(to - Duration::days(1), to).await,
            "dau {to}"
        );
        assert_eq!(
            s.mau,
            recount.users(to - Duration::days(30), to).await,
            "mau {to}"
        );
        assert_eq!(
            s.top_features,
            recount.top_features(from, to).await,
            "features"
        );
        let api: i64 = api_expected(&calls, Interval::Day, from, to).values().sum();
        assert_eq!(s.api_calls, api, "api_calls {from} {to}");

        for interval in [Interval::Hour, Interval::Day] {
            let expected_points = interval.buckets_between(from, to) as usize;
            for (metric, users, event_type) in [
                ("events", false, None),
                ("events", false, Some("purchase")),
                ("active_users", true, None),
                ("active_users", true, Some("click")),
            ] {
                let got = series(&app, &tenant.token, metric, interval, event_type, from, to).await;
                assert_eq!(got.points.len(), expected_points);
                assert_eq!(got.points[0].ts, interval.floor(from));
                let want = recount.series(interval, users, event_type, from, to).await;
                assert_eq!(
                    points(&got),
                    nonzero(want),
                    "{metric} {interval:?} {event_type:?} [{from}, {to})"
                );
            }
            let got = series(&app, &tenant.token, "api_calls", interval, None, from, to).await;
            assert_eq!(
                points(&got),
                nonzero(api_expected(&calls, interval, from, to)),
                "api_calls {interval:?}"
            );
        }
    }
}

/// Per-type active users by day and by hour, for every type in `TYPES` and one never sent,
/// against the recount.
async fn check_type_users(
    app: &TestApp,
    token: &str,
    recount: &Recount<'_>,
    ranges: &[(DateTime<Utc>, DateTime<Utc>)],
    stage: &str,
) {
    for &(from, to) in ranges {
        for interval in [Interval::Day, Interval::Hour] {
            for event_type in TYPES.iter().copied().chain(["never_sent"]) {
                let got = series(
                    app,
                    token,
                    "active_users",
                    interval,
                    Some(event_type),
                    from,
                    to,
                )
                .await;
                assert_eq!(
                    got.points.len(),
                    interval.buckets_between(from, to) as usize
                );
                let want = recount
                    .series(interval, true, Some(event_type), from, to)
                    .await;
                assert_eq!(
                    points(&got),
                    nonzero(want),
                    "{stage}: {event_type} by {interval:?} [{from}, {to})"
                );
            }
        }
    }
}

#[tokio::test]
async fn active_users_of_one_event_type_stay_exact_as_late_events_arrive() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("per-type").await;
    let mut rng = StdRng::seed_from_u64(20241122);
    let now = Utc::now();
    // Few users, so most (user, type, day) triples come back many times.
    let users: Vec<Uuid> = (0..40).map(|_| Uuid::now_v7()).collect();
    let db = app.superuser_db().await;
    let recount = Recount {
        db: &db,
        schema: tenant_schema_name(tenant.id),
    };
    let today = floor_day(now);
    let ranges = [
        (today - Duration::days(5), today),
        (
            now - Duration::days(6) - Duration::seconds(rng.random_range(0..86_400)),
            now + Duration::minutes(1),
        ),
        (
            today - Duration::days(2) + Duration::hours(3),
            today - Duration::days(1),
        ),
        (
            today - Duration::days(3) + Duration::minutes(17),
            today - Duration::days(3) + Duration::hours(20),
        ),
        (today - Duration::days(4) - Duration::minutes(5), now),
    ];

    // In time order over six days.
    let first: Vec<Value> = (0..800)
        .map(|i| {
            let at = now - Duration::days(6) + Duration::seconds(i * 6 * 86_400 / 800);
            random_event(&mut rng, &users, at)
        })
        .collect();
    ingest(&app, &tenant.token, &mut rng, first.clone()).await;
    check_type_users(&app, &tenant.token, &recount, &ranges, "in order").await;

    // Late events for hours and days already counted: the same (user, type) at another
    // instant of the same hour, which must count again in neither the hour nor the day; at
    // another instant of the same day, a new hour of a day already counted; and events of
    // new (user, type, hour) triples.
    let mut late: Vec<Value> = first
        .iter()
        .filter(|e| e.get("user_id").is_some())
        .take(400)
        .enumerate()
        .map(|(i, e)| {
            let at: DateTime<Utc> = e["timestamp"].as_str().unwrap().parse().unwrap();
            let other = if i % 2 == 0 {
                floor_hour(at) + Duration::seconds(rng.random_range(0..3_600))
            } else {
                floor_day(at) + Duration::seconds(rng.random_range(0..86_400))
            };
            let mut again = e.clone();
            again["timestamp"] = json!(rfc(other.min(now)));
            again
        })
        .collect();
    late.extend((0..300).map(|_| {
        let at = now - Duration::seconds(rng.random_range(3_600..6 * 86_400));
        random_event(&mut rng, &users, at)
    }));
    ingest(&app, &tenant.token, &mut rng, late).await;
    check_type_users(&app, &tenant.token, &recount, &ranges, "late").await;

    // Recent events twice over: the second time every (user, type, hour) is one the
    // committer has seen committed.
    let recent: Vec<Value> = (0..200)
        .map(|_| {
            let at = now - Duration::seconds(rng.random_range(0..600));
            random_event(&mut rng, &users, at)
        })
        .collect();
    ingest(&app, &tenant.token, &mut rng, recent.clone()).await;
    ingest(&app, &tenant.token, &mut rng, recent).await;
    check_type_users(&app, &tenant.token, &recount, &ranges, "recent").await;
}

/// Templates V4 and V5 fold the events stored before them into `type_activity` and the `P`
/// and `p` counters; run again over a tenant's events, they must rebuild exactly what the
/// flushes maintained.
#[tokio::test]
async fn the_v4_and_v5_backfills_rebuild_what_the_flushes_maintained() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("backfill").await;
    let mut rng = StdRng::seed_from_u64(4);
    let now = Utc::now();
    let users: Vec<Uuid> = (0..30).map(|_| Uuid::now_v7()).collect();
    let events: Vec<Value> = (0..900)
        .map(|_| {
            let at = now - Duration::seconds(rng.random_range(0..25 * 86_400));
            random_event(&mut rng, &users, at)
        })
        .collect();
    ingest(&app, &tenant.token, &mut rng, events).await;

    let schema = tenant_schema_name(tenant.id);
    let hours: Vec<String> = (0..32).map(|d| format!("d{d:02}")).collect();
    let state = |db: &'static str| {
        format!(
            "select coalesce(string_agg(r, ';' order by r), '') from ( \
               select concat_ws(' ', block, event_type, k.user_id, days, {}) as r \
               from {schema}.type_activity t join {schema}.user_ids k on k.user_key = t.user_id \
               union all \
               select format('%s %s %s %s', kind, bucket, key, n) from {schema}.counters \
               where kind in ('P', 'p') \
             ) s -- {db}",
            hours.join(", ")
        )
    };
    let mut db = app.superuser_db().await;
    let maintained: String = db.query_one(&state("flushes"), &[]).await.unwrap().get(0);
    assert!(maintained.contains("P "), "no P counter: {maintained}");
    assert!(maintained.contains("p "), "no p counter: {maintained}");

    undistribute_for_replay(&db, &schema).await;
    let tx = db.transaction().await.unwrap();
    // Back to what V4 and V5 start from (V3's index, which V5 drops, included, and the uuid
    // user ids V6 turns into strings and dictionary keys), so V6 is replayed too.
    tx.batch_execute(&format!(
        "create function pg_temp.user_uuid(k integer) returns uuid language sql stable \
           as 'select user_id::uuid from {schema}.user_ids where user_key = k'; \
         alter table {schema}.user_activity alter user_id type uuid using pg_temp.user_uuid(user_id); \
         alter table {schema}.events alter user_id type uuid using user_id::uuid; \
         drop table {schema}.user_ids; \
         drop table {schema}.type_activity; \
         delete from {schema}.counters where kind in ('P', 'p'); \
         create index events_type_time_idx on {schema}.events \
           (tenant_id, event_type, occurred_at) include (user_id); \
         set local search_path to {schema}"
    ))
    .await
    .unwrap();
    tx.execute(
        "select set_config('app.current_tenant', $1, true)",
        &[&tenant.id.to_string()],
    )
    .await
    .unwrap();
    tx.batch_execute(include_str!("../../tenant_template/V4__type_activity.sql"))
        .await
        .unwrap();
    tx.batch_execute(include_str!(
        "../../tenant_template/V5__type_activity_hours.sql"
    ))
    .await
    .unwrap();
    tx.batch_execute(include_str!("../../tenant_template/V6__user_ids.sql"))
        .await
        .unwrap();
    let rebuilt: String = tx.query_one(&state("backfill"), &[]).await.unwrap().get(0);
    tx.rollback().await.unwrap();
    assert_eq!(rebuilt, maintained);
}

#[tokio::test]
async fn tenants_never_see_each_others_events_under_concurrent_ingest() {
    let app = spawn_app().await;
    let mut tenants: Vec<TestTenant> = Vec::new();
    for i in 0..5 {
        tenants.push(app.create_tenant(&format!("iso{i}")).await);
    }
    let now = Utc::now();
    // Every tenant posts 8 batches of 60 events at the same time as all the others.
    let app_ref = &app;
    let posts = tenants.iter().flat_map(|t| {
        (0..8).map(move |_| {
            let events: Vec<Value> = (0..60)
                .map(|i| {
                    json!({"event_type": "ping", "feature": t.slug, "user_id": Uuid::now_v7(),
                           "metadata": {"tenant": t.slug},
                           "timestamp": rfc(now - Duration::minutes(i))})
                })
                .collect();
            post_events(app_ref, &t.token, events)
        })
    });
    for response in futures_util::future::join_all(posts).await {
        assert_eq!(response.status().as_u16(), 202);
    }

    let db = app.superuser_db().await;
    for t in &tenants {
        let s = summary(
            &app,
            &t.token,
            now - Duration::days(1),
            now + Duration::minutes(1),
        )
        .await;
        assert_eq!(s.events, 480);
        assert_eq!(s.mau, 480);
        assert_eq!(
            s.top_features,
            vec![FeatureCount {
                feature: t.slug.clone(),
                count: 480
            }]
        );
        let schema = tenant_schema_name(t.id);
        for table in ["events", "counters", "user_activity", "type_activity"] {
            let foreign: i64 = db
                .query_one(
                    &format!("select count(*) from {schema}.{table} where tenant_id <> $1"),
                    &[&t.id],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(foreign, 0, "{table} of {}", t.slug);
        }
        let others: i64 = db
            .query_one(
                &format!("select count(*) from {schema}.events where metadata->>'tenant' <> $1"),
                &[&t.slug],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(others, 0);
    }

    // Under RLS, tenant A's context sees nothing in B's schema and cannot write there.
    let (a, b) = (&tenants[0], &tenants[1]);
    let mut app_db = app.app_db().await;
    let tx = app_db.transaction().await.unwrap();
    tx.execute(
        "select set_config('app.current_tenant', $1, true)",
        &[&a.id.to_string()],
    )
    .await
    .unwrap();
    let b_schema = tenant_schema_name(b.id);
    for table in ["events", "counters", "user_activity", "type_activity"] {
        let seen: i64 = tx
            .query_one(&format!("select count(*) from {b_schema}.{table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(seen, 0, "{table} of B seen from A");
    }
    let err = tx
        .execute(
            &format!(
                "insert into {b_schema}.events (tenant_id, id, event_type, occurred_at) values ($1, $2, 'x', now())"
            ),
            &[&b.id, &Uuid::now_v7()],
        )
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("row-level security"), "{err:?}");
}

#[tokio::test]
async fn invalid_events_are_refused_with_field_paths_and_nothing_is_stored() {
    let app = spawn_app().await;
    let t = app.create_tenant("valid").await;
    let now = Utc::now();

    let r = post_events(
        &app,
        &t.token,
        vec![
            json!({"event_type": "ok"}),
            json!({"feature": "x"}),
            json!({"event_type": "a", "timestamp": rfc(now + Duration::minutes(10))}),
            json!({"event_type": "b", "timestamp": rfc(now - Duration::days(40))}),
            json!({"event_type": "c", "user_id": "", "metadata": [1]}),
            json!({"event_type": "d", "timestamp": "yesterday"}),
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
            "events[1].event_type",
            "events[2].timestamp",
            "events[3].timestamp",
            "events[4].user_id",
            "events[4].metadata",
            "events[5].timestamp"
        ]
    );

    let too_many: Vec<Value> = (0..1001).map(|_| json!({"event_type": "x"})).collect();
    let body = assert_problem(
        post_events(&app, &t.token, too_many).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "events");

    let big = "x".repeat(1024 * 1024);
    let r = app
        .post("/analytics/events", &t.token)
        .json(&json!({"event_type": "x", "metadata": {"blob": big}}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 413, "payload_too_large").await;

    let r = app
        .http
        .post(app.url("/analytics/events"))
        .header("x-tenant-id", &t.slug)
        .json(&json!({"event_type": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    let db = app.superuser_db().await;
    let stored: i64 = db
        .query_one(
            &format!("select count(*) from {}.events", tenant_schema_name(t.id)),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0);

    // One event object is a valid body too.
    let r = app
        .post("/analytics/events", &t.token)
        .json(&json!({"event_type": "solo", "feature": "f"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(r.json::<Value>().await.unwrap()["accepted"], 1);

    for (query, field) in [
        (vec![("metric", "bogus")], "metric"),
        (vec![("interval", "week")], "interval"),
        (
            vec![
                ("from", "2024-01-02T00:00:00Z"),
                ("to", "2024-01-01T00:00:00Z"),
            ],
            "from",
        ),
        (vec![("from", "last week")], "from"),
        (
            vec![
                ("from", "2020-01-01T00:00:00Z"),
                ("to", "2024-01-01T00:00:00Z"),
            ],
            "interval",
        ),
        (
            vec![("metric", "api_calls"), ("event_type", "x")],
            "event_type",
        ),
    ] {
        let r = app
            .get("/analytics/timeseries", &t.token)
            .query(&query)
            .send()
            .await
            .unwrap();
        let body = assert_problem(r, 422, "validation_failed").await;
        assert_eq!(body["errors"][0]["field"], field, "{query:?}");
    }
    let r = app
        .get("/analytics/summary", &t.token)
        .query(&[
            ("to", "2024-01-01T00:00:00Z"),
            ("from", "2024-02-01T00:00:00Z"),
        ])
        .send()
        .await
        .unwrap();
    assert_problem(r, 422, "validation_failed").await;
}

fn valid_events(n: usize, user: Uuid) -> Vec<ValidEvent> {
    let rules = IngestRules {
        now: Utc::now(),
        retention_days: Some(30),
    };
    let events = (0..n)
        .map(|i| NewEvent {
            event_type: "e".into(),
            user_id: Some(user.to_string()),
            feature: Some(format!("f{}", i % 3)),
            ..Default::default()
        })
        .collect();
    tenantry::analytics::model::validate_events(events, &rules).unwrap()
}

/// Holds the tenant's flush lock from another session, so flushes queue up behind it.
async fn hold_flush_lock(app: &TestApp, tenant: Uuid) -> Client {
    let db = app.superuser_db().await;
    db.execute(
        "select pg_advisory_lock(hashtextextended($1, 0))",
        &[&flush_lock_key(tenant)],
    )
    .await
    .unwrap();
    db
}

async fn wait_for_pending(committer: &GroupCommitter, events: usize) {
    for _ in 0..500 {
        if committer.stats().pending_events == events {
            return;
        }
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
    panic!(
        "pending events never reached {events}: {:?}",
        committer.stats()
    );
}

#[tokio::test]
async fn a_failed_flush_acknowledges_nothing_and_a_committed_one_everything() {
    let app = spawn_app().await;
    let t = app.create_tenant("faulty").await;
    let schema = tenant_schema_name(t.id);
    let db = app.superuser_db().await;
    allow_test_triggers(&db).await;
    // Fails at COMMIT, after every statement of the flush succeeded: the hardest case.
    db.batch_execute(&format!(
        "create function {schema}.fail_commit() returns trigger language plpgsql as \
         $$ begin raise exception 'injected commit failure'; end $$"
    ))
    .await
    .unwrap();
    db.batch_execute(&format!(
        "create constraint trigger fail_commit after insert on {schema}.events \
         deferrable initially deferred for each row execute function {schema}.fail_commit()"
    ))
    .await
    .unwrap();

    let committer = GroupCommitter::new(t.id, app_pool(&app), CommitterConfig::default());
    let lock = hold_flush_lock(&app, t.id).await;
    let first = tokio::spawn({
        let c = committer.clone();
        async move { c.submit(valid_events(10, Uuid::now_v7())).await }
    });
    wait_for_pending(&committer, 10).await;
    // These queue behind the blocked flush and are coalesced into one transaction.
    let rest: Vec<_> = (0..4)
        .map(|_| {
            let c = committer.clone();
            tokio::spawn(async move { c.submit(valid_events(25, Uuid::now_v7())).await })
        })
        .collect();
    wait_for_pending(&committer, 110).await;
    drop(lock);

    assert!(first.await.unwrap().is_err());
    for r in rest {
        assert!(r.await.unwrap().is_err());
    }
    let stats = committer.stats();
    assert_eq!((stats.failed_flushes, stats.flushes), (2, 0));
    assert_eq!(stats.pending_events, 0);
    for table in ["events", "counters", "user_activity", "type_activity"] {
        let n: i64 = db
            .query_one(&format!("select count(*) from {schema}.{table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{table}");
    }

    // Over HTTP the same failure is an error status, and nothing is stored.
    let r = post_events(&app, &t.token, vec![json!({"event_type": "x"})]).await;
    assert!(r.status().is_server_error(), "{}", r.status());

    db.batch_execute(&format!("drop trigger fail_commit on {schema}.events"))
        .await
        .unwrap();
    let mut accepted = 0;
    for _ in 0..3 {
        let r = post_events(&app, &t.token, vec![json!({"event_type": "x"}); 7]).await;
        assert_eq!(r.status().as_u16(), 202);
        accepted += r.json::<Value>().await.unwrap()["accepted"]
            .as_i64()
            .unwrap();
    }
    let stored: i64 = db
        .query_one(&format!("select count(*) from {schema}.events"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, accepted);
}

#[tokio::test]
async fn group_commit_coalesces_bounds_the_queue_and_feeds_the_live_stream() {
    let app = spawn_app().await;
    let t = app.create_tenant("grouped").await;
    let committer = GroupCommitter::new(
        t.id,
        app_pool(&app),
        CommitterConfig {
            max_pending_events: 100,
            retry_after_secs: 3,
            ..Default::default()
        },
    );
    let mut live = committer.subscribe();
    let lock = hold_flush_lock(&app, t.id).await;
    let first = tokio::spawn({
        let c = committer.clone();
        async move { c.submit(valid_events(60, Uuid::now_v7())).await }
    });
    wait_for_pending(&committer, 60).await;
    let second = tokio::spawn({
        let c = committer.clone();
        async move { c.submit(valid_events(30, Uuid::now_v7())).await }
    });
    let third = tokio::spawn({
        let c = committer.clone();
        async move { c.submit(valid_events(10, Uuid::now_v7())).await }
    });
    wait_for_pending(&committer, 100).await;
    // Full: refused at once, with the time to wait.
    let refused = committer.submit(valid_events(1, Uuid::now_v7())).await;
    let Err(err @ AnalyticsError::Overloaded { retry_after: 3 }) = refused else {
        panic!("expected Overloaded, got {refused:?}");
    };
    let problem = Problem::from(err);
    assert_eq!(problem.status.as_u16(), 503);
    assert_eq!(problem.retry_after, Some(3));
    drop(lock);

    assert_eq!(first.await.unwrap().unwrap(), 60);
    assert_eq!(second.await.unwrap().unwrap(), 30);
    assert_eq!(third.await.unwrap().unwrap(), 10);
    let stats = committer.stats();
    assert_eq!(stats.flushes, 2, "{stats:?}");
    assert_eq!(stats.largest_flush, 60);
    assert_eq!(stats.committed_events, 100);
    assert_eq!(stats.rejected_overloaded, 1);

    let a = live.recv().await.unwrap();
    let b = live.recv().await.unwrap();
    assert_eq!(a.tenant_id, t.id);
    assert_eq!((a.events.len(), b.events.len()), (60, 40));

    let db = app.superuser_db().await;
    let stored: i64 = db
        .query_one(
            &format!("select count(*) from {}.events", tenant_schema_name(t.id)),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 100);
}

async fn count_events(db: &Client, tenant: Uuid) -> i64 {
    db.query_one(
        &format!("select count(*) from {}.events", tenant_schema_name(tenant)),
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// Submits each of `requests` from its own task while the tenant's flush lock is held behind
/// a first request of `first` events, so that they all go into one transaction; then lets
/// the flushes run and returns each request's answer.
async fn one_group(
    app: &TestApp,
    committer: &Arc<GroupCommitter>,
    tenant: Uuid,
    requests: Vec<Vec<ValidEvent>>,
) -> Vec<Result<u64, AnalyticsError>> {
    let lock = hold_flush_lock(app, tenant).await;
    let before = committer.stats();
    let first = tokio::spawn({
        let c = committer.clone();
        async move { c.submit(valid_events(2, Uuid::now_v7())).await }
    });
    wait_for_pending(committer, 2).await;
    let mut pending = 2;
    let mut tasks = Vec::new();
    for events in requests {
        pending += events.len();
        let c = committer.clone();
        tasks.push(tokio::spawn(async move { c.submit(events).await }));
        // One at a time, so the group keeps the order given.
        wait_for_pending(committer, pending).await;
    }
    drop(lock);
    assert_eq!(first.await.unwrap().unwrap(), 2);
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    let after = committer.stats();
    assert_eq!(
        after.failed_flushes - before.failed_flushes,
        1,
        "one group failed"
    );
    assert_eq!(after.pending_events, 0);
    answers
}

fn with_metadata(mut events: Vec<ValidEvent>, i: usize, metadata: Value) -> Vec<ValidEvent> {
    events[i].metadata = Some(metadata);
    events
}

#[tokio::test]
async fn a_request_the_database_refuses_fails_alone_and_the_rest_of_its_group_commits() {
    let app = spawn_app().await;
    let t = app.create_tenant("isolated").await;
    let db = app.superuser_db().await;
    let committer = GroupCommitter::new(t.id, app_pool(&app), CommitterConfig::default());
    let user = Uuid::now_v7();
    let mut live = committer.subscribe();

    // NULs, which PostgreSQL refuses in jsonb, in a value deep down and in a key.
    let answers = one_group(
        &app,
        &committer,
        t.id,
        vec![
            valid_events(10, user),
            with_metadata(valid_events(3, user), 1, json!({"a": [{"b": "x\u{0}y"}]})),
            valid_events(7, user),
            with_metadata(valid_events(2, user), 0, json!({"k\u{0}": 1})),
            valid_events(4, user),
        ],
    )
    .await;
    assert_eq!(answers[0].as_ref().unwrap(), &10);
    assert_eq!(answers[2].as_ref().unwrap(), &7);
    assert_eq!(answers[4].as_ref().unwrap(), &4);
    for (i, field) in [(1, "events[1].metadata"), (3, "events[0].metadata")] {
        let Err(AnalyticsError::Validation(fields)) = &answers[i] else {
            panic!("request {i}: {:?}", answers[i]);
        };
        assert_eq!(fields.len(), 1);
        assert_eq!(fields[0].field, field);
        let problem = Problem::from(AnalyticsError::Validation(fields.clone()));
        assert_eq!(problem.status.as_u16(), 422);
    }
    assert_eq!(count_events(&db, t.id).await, 2 + 10 + 7 + 4);
    let stats = committer.stats();
    assert_eq!(stats.committed_events, 23);
    assert_eq!(stats.failed_events, 5);
    // The first request, then the three valid ones together.
    assert_eq!(stats.flushes, 2);
    let first = live.recv().await.unwrap();
    let rest = live.recv().await.unwrap();
    assert_eq!((first.events.len(), rest.events.len()), (2, 21));

    // A refusal the committer cannot attribute by looking (a trigger here): each request is
    // written alone, and only the guilty one fails, with the database's error.
    let schema = tenant_schema_name(t.id);
    allow_test_triggers(&db).await;
    db.batch_execute(&format!(
        "create function {schema}.refuse_poison() returns trigger language plpgsql as \
         $$ begin if new.event_type = 'poison' then raise exception 'poisoned event'; end if; \
         return new; end $$"
    ))
    .await
    .unwrap();
    db.batch_execute(&format!(
        "create trigger refuse_poison before insert on {schema}.events \
         for each row execute function {schema}.refuse_poison()"
    ))
    .await
    .unwrap();
    let mut poisoned = valid_events(3, user);
    poisoned[2].event_type = "poison".into();
    let before = committer.stats();
    let answers = one_group(
        &app,
        &committer,
        t.id,
        vec![valid_events(5, user), poisoned, valid_events(6, user)],
    )
    .await;
    assert_eq!(answers[0].as_ref().unwrap(), &5);
    assert!(
        matches!(&answers[1], Err(AnalyticsError::Db(_))),
        "{:?}",
        answers[1]
    );
    assert_eq!(answers[2].as_ref().unwrap(), &6);
    let after = committer.stats();
    // The first request, then the two valid ones, each alone.
    assert_eq!(after.flushes - before.flushes, 3);
    assert_eq!(after.failed_events - before.failed_events, 3);
    assert_eq!(count_events(&db, t.id).await, 23 + 2 + 5 + 6);
}

#[tokio::test]
async fn a_nul_in_one_posts_metadata_is_422_for_it_and_202_for_the_others_of_its_group() {
    let app = spawn_app().await;
    let t = app.create_tenant("nulpost").await;
    let pending = || async {
        let text = app.metrics_text().await;
        text.lines()
            .find_map(|l| l.strip_prefix("tenantry_analytics_events_pending "))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0)
    };
    let event = |tag: &str| json!({"event_type": "ok", "metadata": {"tag": tag}});
    let bodies = [
        json!({"events": [event("first")]}),
        json!({"events": [event("a"), event("a")]}),
        json!({"events": [event("b"), {"event_type": "bad", "metadata": {"note": "nul\u{0}"}}]}),
        json!({"event_type": "bad", "metadata": {"nested": ["\u{0}"]}}),
        json!({"events": [event("c"), event("c"), event("c")]}),
    ];
    let lock = hold_flush_lock(&app, t.id).await;
    let mut sent = Vec::new();
    let mut expected = 0;
    for body in &bodies {
        let request = app.post("/analytics/events", &t.token).json(body);
        sent.push(tokio::spawn(request.send()));
        // A body with a NUL is refused by validation: its events never queue.
        if !body.to_string().contains("\\u0000") {
            expected += body["events"].as_array().map_or(1, Vec::len);
        }
        // In order: the first waits for the lock, the others queue into one group.
        for _ in 0..500 {
            if pending().await == expected {
                break;
            }
            tokio::time::sleep(StdDuration::from_millis(10)).await;
        }
        assert_eq!(pending().await, expected);
    }
    drop(lock);
    let mut responses = Vec::new();
    for request in sent {
        responses.push(request.await.unwrap().unwrap());
    }
    let statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses, [202, 202, 422, 422, 202]);
    let mut responses = responses.into_iter();
    for n in [1, 2] {
        let body: Value = responses.next().unwrap().json().await.unwrap();
        assert_eq!(body["accepted"], n);
    }
    for field in ["events[1].metadata", "metadata"] {
        let body = assert_problem(responses.next().unwrap(), 422, "validation_failed").await;
        let fields: Vec<&str> = body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, [field], "{body}");
    }
    let db = app.superuser_db().await;
    let stored: Vec<String> = db
        .query(
            &format!(
                "select metadata ->> 'tag' from {}.events order by 1",
                tenant_schema_name(t.id)
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored, ["a", "a", "c", "c", "c", "first"]);
}

#[tokio::test]
async fn a_flusher_whose_runtime_shuts_down_leaves_its_queue_to_the_rescue_runtime() {
    let app = spawn_app().await;
    let t = app.create_tenant("rescued").await;
    let committer = GroupCommitter::new(
        t.id,
        app_pool(&app),
        CommitterConfig {
            rescue_runtime: Some(tokio::runtime::Handle::current()),
            ..Default::default()
        },
    );
    let lock = hold_flush_lock(&app, t.id).await;
    // The first submit starts the flusher on a runtime of its own (an HTTP worker's, in the
    // server), whose flush then waits for the lock.
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn({
        let c = committer.clone();
        move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                tokio::spawn(async move { c.submit(valid_events(4, Uuid::now_v7())).await });
                tokio::task::spawn_blocking(move || stopped.recv())
                    .await
                    .unwrap()
                    .unwrap();
            });
            // Dropping the runtime drops the flusher in the middle of its flush.
        }
    });
    wait_for_pending(&committer, 4).await;
    let queued: Vec<_> = [6, 2]
        .into_iter()
        .map(|n| {
            let c = committer.clone();
            tokio::spawn(async move { c.submit(valid_events(n, Uuid::now_v7())).await })
        })
        .collect();
    wait_for_pending(&committer, 12).await;
    stop.send(()).unwrap();
    tokio::task::spawn_blocking(move || worker.join())
        .await
        .unwrap()
        .unwrap();
    // The batch being written died with its runtime; the queued ones wait for the lock again,
    // now on the rescue runtime.
    wait_for_pending(&committer, 8).await;
    drop(lock);
    let answers: Vec<u64> = futures_util::future::join_all(queued)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    assert_eq!(answers, [6, 2]);
    let stats = committer.stats();
    assert_eq!((stats.failed_events, stats.committed_events), (4, 8));
    assert_eq!(stats.pending_events, 0);
    assert_eq!(count_events(&app.superuser_db().await, t.id).await, 8);
}

#[tokio::test]
async fn retention_deletes_what_the_plan_no_longer_keeps_while_ingestion_goes_on() {
    let app = spawn_app().await;
    let t = app.create_tenant("retained").await; // free plan: 30 days
    let pool = app_pool(&app);
    let now = Utc::now();
    let users: Vec<Uuid> = (0..12).map(|_| Uuid::now_v7()).collect();
    let mut rng = StdRng::seed_from_u64(99);
    // Written through the store directly: the API refuses events this old.
    let old: Vec<ValidEvent> = (0..400)
        .map(|i| ValidEvent {
            id: Uuid::now_v7(),
            event_type: TYPES[i % TYPES.len()].into(),
            user_id: Some(users[rng.random_range(0..users.len())].to_string()),
            feature: Some(FEATURES[i % FEATURES.len()].into()),
            metadata: None,
            occurred_at: now - Duration::seconds(rng.random_range(0..60 * 86_400)),
            received_at: now,
        })
        .collect();
    {
        let mut conn = pool.get().await.unwrap();
        let tx = begin_tenant_tx(&mut conn, t.id).await.unwrap();
        insert_batch(&tx, t.id, &old).await.unwrap();
        tx.commit().await.unwrap();
    }

    let committer = GroupCommitter::new(t.id, pool.clone(), CommitterConfig::default());
    let ingesting = tokio::spawn({
        let c = committer.clone();
        let user = users[0];
        async move {
            let mut n = 0;
            for _ in 0..20 {
                n += c.submit(valid_events(50, user)).await.unwrap();
            }
            n
        }
    });
    let report = cleanup_tenant(
        &pool,
        t.id,
        now,
        &RetentionConfig {
            batch_rows: 7,
            pause: StdDuration::from_millis(1),
            spread_over: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(ingesting.await.unwrap(), 1000);
    let cutoff = floor_day(now - Duration::days(30));
    assert_eq!(report.cutoff, Some(cutoff));

    let db = app.superuser_db().await;
    let schema = tenant_schema_name(t.id);
    let expected_deleted = old.iter().filter(|e| e.occurred_at < cutoff).count() as u64;
    assert!(
        report.activity_deleted + report.activity_trimmed > 0,
        "{report:?}"
    );
    assert!(
        report.type_activity_deleted + report.type_activity_trimmed > 0,
        "{report:?}"
    );
    assert_eq!(report.events_deleted, expected_deleted);
    let left: i64 = db
        .query_one(
            &format!("select count(*) from {schema}.events where occurred_at < $1"),
            &[&cutoff],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    let left: i64 = db
        .query_one(
            &format!("select count(*) from {schema}.counters where bucket < $1"),
            &[&cutoff],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);

    // The rollups still agree with the raw events, also for windows reaching past the cutoff.
    let recount = Recount {
        db: &db,
        schema: schema.clone(),
    };
    for to in [
        cutoff + Duration::days(3),
        cutoff + Duration::hours(30),
        now + Duration::minutes(1),
    ] {
        let from = to - Duration::days(40);
        let s = summary(&app, &t.token, from, to).await;
        assert_eq!(s.events, recount.events(from, to).await);
        assert_eq!(
            s.mau,
            recount.users(to - Duration::days(30), to).await,
            "mau {to}"
        );
        assert_eq!(
            s.dau,
            recount.users(to - Duration::days(1), to).await,
            "dau {to}"
        );
        let got = series(
            &app,
            &t.token,
            "active_users",
            Interval::Day,
            None,
            from,
            to,
        )
        .await;
        assert_eq!(
            points(&got),
            nonzero(recount.series(Interval::Day, true, None, from, to).await)
        );
        for event_type in TYPES {
            let got = series(
                &app,
                &t.token,
                "active_users",
                Interval::Day,
                Some(event_type),
                from,
                to,
            )
            .await;
            assert_eq!(
                points(&got),
                nonzero(
                    recount
                        .series(Interval::Day, true, Some(event_type), from, to)
                        .await
                ),
                "{event_type} to {to}"
            );
        }
    }
    // No activity bit is left on a day before the cutoff.
    let (first_kept_block, keep_days) = {
        let day = cutoff.timestamp().div_euclid(86_400);
        (
            day.div_euclid(32) as i32,
            (!0u32 << day.rem_euclid(32)) as i32,
        )
    };
    for table in ["user_activity", "type_activity"] {
        let stale: i64 = db
            .query_one(
                &format!(
                    "select count(*) from {schema}.{table} \
                     where block < $1 or (block = $1 and days & ~$2::int4 <> 0)"
                ),
                &[&first_kept_block, &keep_days],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(stale, 0, "{table}");
    }
    // A second pass finds nothing left to do.
    let again = cleanup_tenant(&pool, t.id, now, &RetentionConfig::default())
        .await
        .unwrap();
    assert_eq!(
        (
            again.events_deleted,
            again.counters_deleted,
            again.activity_deleted,
            again.activity_trimmed,
            again.type_activity_deleted,
            again.type_activity_trimmed
        ),
        (0, 0, 0, 0, 0, 0)
    );
}
