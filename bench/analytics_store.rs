//! Analytics storage benchmark: `cargo bench --bench analytics_store -- [options]`.
//!
//! Against the database `tenantry_bench_analytics` (override with BENCH_DATABASE_URL):
//! 1. one tenant with `--large` events (default 10M) and one with `--medium` (1M), 10,000
//!    distinct users over 90 days, 2% of the events late by up to 3 days, loaded through
//!    `store::insert_batch` (the ingest path, rollups included) 10,000 events per transaction;
//! 2. p50/p95/p99 of the summary and the series over several ranges, each run in a tenant-bound
//!    transaction like an HTTP request's `TenantOp`;
//! 3. ingest throughput through `GroupCommitter`, batches of 1,000 events from several
//!    concurrent clients (one tenant; several tenants; into the 10M tenant);
//! 4. `--tenants` tenants (default 10,000) holding `--tenant-events` events each (default
//!    1,000), and the query latencies on random tenants among them;
//! 5. with `--index-study`: the raw-table layouts compared on a copy of the large tenant's
//!    events (B-tree, BRIN, partitions, the chosen primary key).
//!
//! Tenants and data are kept between runs (bookkeeping in `public.bench_loaded`), so a second
//! run only measures. Results: bench/results/analytics.json and bench/results/analytics.md.

// A benchmark harness: a panic on the unexpected stops the run, which is what it should do;
// its casts are of counts, durations and percentiles of one run, far from any type's limits.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use tenantry::analytics::buckets::{floor_day, floor_hour, Interval};
use tenantry::analytics::model::validate_events;
use tenantry::analytics::query::{self, Metric, SeriesRequest};
use tenantry::analytics::store::{insert_batch, record_api_calls};
use tenantry::analytics::{
    AnalyticsError, CommitterConfig, GroupCommitter, IngestRules, NewEvent, ValidEvent,
};
use tenantry::config::{with_database, with_user, Config};
use tenantry::db::migrate::{self, connect, create_tenant_schema, MigrateOptions};
use tenantry::db::template::TenantTemplate;
use tenantry::db::tenant_tx::SET_TENANT_SQL;
use tenantry::db::{begin_tenant_tx, tenant_schema_name, PgPool, Pools};
use tokio_postgres::types::Type;
use tokio_postgres::Client;
use uuid::Uuid;

#[derive(Parser, Debug, Clone)]
struct Args {
    #[arg(long, default_value_t = 10_000_000)]
    large: u64,
    #[arg(long, default_value_t = 1_000_000)]
    medium: u64,
    #[arg(long, default_value_t = 10_000)]
    users: u64,
    #[arg(long, default_value_t = 90)]
    days: i64,
    #[arg(long, default_value_t = 10_000)]
    tenants: usize,
    #[arg(long, default_value_t = 1_000)]
    tenant_events: usize,
    /// Timed iterations per query case (after 3 warm-up runs).
    #[arg(long, default_value_t = 60)]
    iterations: usize,
    #[arg(long, default_value_t = 20)]
    ingest_secs: u64,
    #[arg(long, default_value_t = 8)]
    clients: usize,
    #[arg(long)]
    skip_many: bool,
    #[arg(long)]
    skip_ingest: bool,
    #[arg(long)]
    index_study: bool,
    /// cargo bench passes --bench; accepted and ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

const TYPES: &[&str] = &[
    "page_view",
    "click",
    "signup",
    "login",
    "logout",
    "purchase",
    "search",
    "share",
    "upload",
    "download",
];

fn user_id(i: u64) -> Uuid {
    Uuid::from_u128(0xb0b0_0000_0000_7000_8000_0000_0000_0000 | u128::from(i))
}

fn feature(i: u64) -> Option<String> {
    (!i.is_multiple_of(3)).then(|| format!("feature_{:02}", i % 20))
}

struct Bench {
    config: Config,
    pools: Pools,
    template: TenantTemplate,
    su: Client,
    now: DateTime<Utc>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let bench = setup().await;
    let mut report = json!({
        "started_at": Utc::now(),
        "args": format!("{args:?}"),
        "machine": common::machine(Some(&bench.su)).await,
    });
    println!("machine: {}", report["machine"]);
    report["relations_per_tenant"] = relations_per_tenant(&bench).await;
    println!(
        "relations per tenant schema: {}",
        report["relations_per_tenant"]
    );

    let mut datasets = Vec::new();
    for (slug, events) in [("bench-large", args.large), ("bench-medium", args.medium)] {
        if events == 0 {
            continue;
        }
        let tenant = ensure_tenant(&bench, slug).await;
        let (load, until) = load_large(&bench, tenant, events, &args).await;
        datasets.push((slug, tenant, events, load, until));
    }
    let mut queries = Vec::new();
    for (slug, tenant, events, load, until) in &datasets {
        println!("\n== queries on {slug} ({events} events)");
        let cases = measure_cases(&bench, &[*tenant], args.iterations, *until).await;
        queries.push(json!({"dataset": slug, "events": events, "load": load, "cases": cases}));
    }
    report["single_tenant"] = json!(queries);

    if !args.skip_ingest {
        report["ingest"] = ingest_benches(&bench, &args, datasets.first().map(|d| d.1)).await;
    }
    if !args.skip_many && args.tenants > 0 {
        report["many_tenants"] = many_tenants(&bench, &args).await;
    }
    if args.index_study {
        if let Some((_, tenant, _, _, _)) = datasets.first() {
            report["index_study"] = index_study(&bench, *tenant).await;
        }
    }
    report["finished_at"] = json!(Utc::now());
    report["machine_after"] = common::machine(Some(&bench.su)).await;
    common::write_results("analytics", &report, &markdown(&report));
}

async fn setup() -> Bench {
    let mut config = Config::from_env().expect("configuration");
    let url = std::env::var("BENCH_DATABASE_URL").unwrap_or_else(|_| {
        with_database(
            config.database_url.expose_secret(),
            "tenantry_bench_analytics",
        )
    });
    config.database_url = url.clone().into();
    config.app_database_url = with_user(&url, &config.roles.app).expect("app url").into();
    config.admin_database_url = with_user(&url, &config.roles.admin)
        .expect("admin url")
        .into();
    config.app_shared_pool_size = 16;
    config.owner_pool_size = 4;
    migrate::create_database_if_missing(&url)
        .await
        .expect("create database");
    let template = TenantTemplate::embedded();
    let report = migrate::migrate(
        &config,
        MigrateOptions {
            jobs: 4,
            template: template.clone(),
            progress: true,
        },
    )
    .await
    .expect("migrate");
    println!("{report}");
    let su = connect(&url, &[]).await.expect("connect");
    su.batch_execute(
        "create table if not exists public.bench_loaded (tenant_id uuid primary key, events bigint not null); \
         alter table public.bench_loaded add column if not exists until timestamptz",
    )
    .await
    .expect("bookkeeping table");
    let pools = Pools::new(&config).expect("pools");
    Bench {
        config,
        pools,
        template,
        su,
        now: Utc::now(),
    }
}

/// Provisions a tenant the quick way (row + schema, no admin user: no password hashing),
/// through the same `create_tenant_schema` as `POST /tenants`, or returns the existing one.
async fn ensure_tenant(bench: &Bench, slug: &str) -> Uuid {
    let mut conn = bench.pools.owner.get().await.expect("owner conn");
    if let Some(row) = conn
        .query_opt("select id from app.tenants where slug = $1", &[&slug])
        .await
        .expect("lookup")
    {
        return row.get(0);
    }
    let id = Uuid::now_v7();
    conn.touch_tenant_schema(id);
    let tx = conn.transaction().await.expect("tx");
    tx.execute(SET_TENANT_SQL, &[&id.to_string()])
        .await
        .expect("context");
    tx.execute(
        "insert into app.tenants (id, name, slug, subdomain, plan) values ($1, $2, $3, $3, 'pro')",
        &[&id, &slug, &slug],
    )
    .await
    .expect("insert tenant");
    create_tenant_schema(&tx, id, &bench.template, &bench.config)
        .await
        .expect("tenant schema");
    tx.commit().await.expect("commit");
    id
}

/// Events loaded into `tenant` and the end of their time span, if it was loaded.
async fn loaded(bench: &Bench, tenant: Uuid) -> Option<(i64, DateTime<Utc>)> {
    let row = bench
        .su
        .query_opt(
            "select events, until from public.bench_loaded where tenant_id = $1",
            &[&tenant],
        )
        .await
        .expect("bookkeeping")?;
    let events: i64 = row.get(0);
    let until = match row.get::<_, Option<DateTime<Utc>>>(1) {
        Some(until) => until,
        // Loaded before the end was recorded: every loaded event carries the load's clock as
        // received_at, and events ingested later carry a later one.
        None => {
            let until: DateTime<Utc> = bench
                .su
                .query_one(
                    &format!(
                        "select coalesce(min(received_at), now()) from {}.events",
                        tenant_schema_name(tenant)
                    ),
                    &[],
                )
                .await
                .expect("load end")
                .get(0);
            mark_loaded(bench, tenant, events, until).await;
            until
        }
    };
    Some((events, until))
}

async fn mark_loaded(bench: &Bench, tenant: Uuid, events: i64, until: DateTime<Utc>) {
    bench
        .su
        .execute(
            "insert into public.bench_loaded values ($1, $2, $3) on conflict (tenant_id) do update set events = excluded.events, until = excluded.until",
            &[&tenant, &events, &until],
        )
        .await
        .expect("bookkeeping");
}

async fn write_batch(pool: &PgPool, tenant: Uuid, events: &[ValidEvent]) {
    let mut conn = pool.get().await.expect("app conn");
    conn.touch_tenant_schema(tenant);
    let tx = begin_tenant_tx(&mut conn, tenant).await.expect("tx");
    insert_batch(&tx, tenant, events)
        .await
        .expect("insert batch");
    tx.commit().await.expect("commit");
}

/// `total` events over `days` days ending now, in time order with 2% late by up to 3 days.
/// Returns the load's description and the end of its span, where the measured ranges end:
/// the ingest runs add events after it (into the large tenant), and a later run must still
/// measure the data set as loaded.
async fn load_large(
    bench: &Bench,
    tenant: Uuid,
    total: u64,
    args: &Args,
) -> (Value, DateTime<Utc>) {
    if let Some((events, until)) = loaded(bench, tenant).await {
        println!("{tenant}: {events} events already loaded, up to {until}");
        return (
            json!({"reused": true, "events": events, "until": until}),
            until,
        );
    }
    println!("loading {total} events into {tenant} ...");
    let start = bench.now - Duration::days(args.days);
    let span_us = Duration::days(args.days)
        .num_microseconds()
        .unwrap_or(i64::MAX);
    let mut rng = StdRng::seed_from_u64(total);
    let began = Instant::now();
    let batch = 10_000u64;
    let mut i = 0u64;
    while i < total {
        let n = batch.min(total - i);
        let events: Vec<ValidEvent> = (i..i + n)
            .map(|k| {
                let mut at = start
                    + Duration::microseconds((span_us as f64 * k as f64 / total as f64) as i64);
                if rng.random_range(0..50) == 0 {
                    at -= Duration::seconds(rng.random_range(0..3 * 86_400));
                }
                let u = rng.random_range(0..args.users);
                ValidEvent {
                    id: Uuid::now_v7(),
                    event_type: TYPES[rng.random_range(0..TYPES.len())].to_string(),
                    user_id: Some(user_id(u).to_string()),
                    feature: feature(rng.random_range(0..60)),
                    metadata: Some(json!({"n": k % 100})),
                    occurred_at: at,
                    received_at: bench.now,
                }
            })
            .collect();
        write_batch(&bench.pools.app, tenant, &events).await;
        i += n;
        if i.is_multiple_of(1_000_000) || i == total {
            let secs = began.elapsed().as_secs_f64();
            println!("  {i} events, {:.0} events/s", i as f64 / secs);
        }
    }
    let secs = began.elapsed().as_secs_f64();
    // API calls of every hour of the period, as the request pipeline would record them.
    let calls: Vec<(DateTime<Utc>, i64)> = (0..args.days * 24)
        .map(|h| (start + Duration::hours(h), rng.random_range(100..1_000)))
        .collect();
    {
        let mut conn = bench.pools.app.get().await.expect("conn");
        let tx = begin_tenant_tx(&mut conn, tenant).await.expect("tx");
        record_api_calls(&tx, tenant, &calls)
            .await
            .expect("api calls");
        tx.commit().await.expect("commit");
    }
    // What autovacuum would have done by the time anyone queries: visibility map and stats.
    let schema = tenant_schema_name(tenant);
    for table in ["events", "counters", "user_activity", "type_activity"] {
        bench
            .su
            .batch_execute(&format!("vacuum analyze {schema}.{table}"))
            .await
            .expect("vacuum");
    }
    mark_loaded(bench, tenant, total as i64, bench.now).await;
    let sizes = table_sizes(bench, tenant).await;
    println!("  loaded in {secs:.0} s; sizes {sizes}");
    (
        json!({"reused": false, "events": total, "seconds": secs, "events_per_second": total as f64 / secs, "sizes": sizes, "until": bench.now}),
        bench.now,
    )
}

async fn table_sizes(bench: &Bench, tenant: Uuid) -> Value {
    let schema = tenant_schema_name(tenant);
    let rows = bench
        .su
        .query(
            "select c.relname::text, pg_total_relation_size(c.oid), coalesce(c.reltuples, 0)::int8 \
             from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where n.nspname = $1 and c.relkind = 'r' order by 1",
            &[&schema],
        )
        .await
        .expect("sizes");
    let mut out = serde_json::Map::new();
    for r in rows {
        let name: String = r.get(0);
        let bytes: i64 = r.get(1);
        let rows: i64 = r.get(2);
        out.insert(name, json!({"mb": bytes / 1_048_576, "rows": rows}));
    }
    Value::Object(out)
}

async fn relations_per_tenant(bench: &Bench) -> Value {
    let tenant = ensure_tenant(bench, "bench-probe").await;
    let schema = tenant_schema_name(tenant);
    let rows = bench
        .su
        .query(
            "with own as (select oid, reltoastrelid from pg_class where relnamespace = (select oid from pg_namespace where nspname = $1)) \
             select c.relkind::text, count(*) from pg_class c \
             where c.oid in (select oid from own) \
                or c.oid in (select reltoastrelid from own where reltoastrelid <> 0) \
                or c.oid in (select indexrelid from pg_index where indrelid in (select reltoastrelid from own)) \
             group by 1 order by 1",
            &[&schema],
        )
        .await
        .expect("relations");
    let by_kind: BTreeMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let total: i64 = by_kind.values().sum();
    json!({"total": total, "by_relkind": by_kind, "note": "r table, i index, t toast (its index counted under i); includes refinery_schema_history"})
}

#[derive(Clone, Debug)]
enum Case {
    Summary {
        span: Duration,
        aligned: bool,
    },
    Series {
        metric: Metric,
        interval: Interval,
        span: Duration,
        event_type: Option<&'static str>,
    },
}

impl Case {
    fn name(&self) -> String {
        match self {
            Case::Summary { span, aligned } => format!(
                "summary {}d{}",
                span.num_hours() as f64 / 24.0,
                if *aligned { " (day-aligned)" } else { "" }
            ),
            Case::Series {
                metric,
                interval,
                span,
                event_type,
            } => format!(
                "timeseries {metric:?} by {} over {}d{}",
                interval.as_str(),
                span.num_hours() as f64 / 24.0,
                event_type
                    .map(|t| format!(" event_type={t}"))
                    .unwrap_or_default()
            ),
        }
    }
}

fn cases() -> Vec<Case> {
    let d = Duration::days;
    let s = |metric, interval, span, event_type| Case::Series {
        metric,
        interval,
        span,
        event_type,
    };
    vec![
        Case::Summary {
            span: d(1),
            aligned: false,
        },
        Case::Summary {
            span: d(7),
            aligned: false,
        },
        Case::Summary {
            span: d(30),
            aligned: false,
        },
        Case::Summary {
            span: d(30),
            aligned: true,
        },
        Case::Summary {
            span: d(90),
            aligned: false,
        },
        s(Metric::Events, Interval::Hour, d(1), None),
        s(Metric::Events, Interval::Hour, d(7), None),
        s(Metric::Events, Interval::Day, d(30), None),
        s(Metric::Events, Interval::Day, d(90), None),
        s(Metric::Events, Interval::Day, d(30), Some("purchase")),
        s(Metric::ActiveUsers, Interval::Hour, d(1), None),
        s(Metric::ActiveUsers, Interval::Hour, d(7), None),
        s(Metric::ActiveUsers, Interval::Day, d(30), None),
        s(Metric::ActiveUsers, Interval::Day, d(90), None),
        s(Metric::ActiveUsers, Interval::Day, d(7), Some("purchase")),
        s(Metric::ActiveUsers, Interval::Day, d(30), Some("purchase")),
        s(Metric::ActiveUsers, Interval::Hour, d(1), Some("purchase")),
        s(Metric::ActiveUsers, Interval::Hour, d(7), Some("purchase")),
        s(Metric::ApiCalls, Interval::Day, d(30), None),
    ]
}

async fn run_case(pool: &PgPool, tenant: Uuid, case: &Case, to: DateTime<Utc>) -> usize {
    let mut conn = pool.get().await.expect("conn");
    conn.touch_tenant_schema(tenant);
    let tx = begin_tenant_tx(&mut conn, tenant).await.expect("tx");
    let size = match case {
        Case::Summary { span, .. } => {
            let s = query::summary(&*tx, tenant, to - *span, to)
                .await
                .expect("summary");
            s.top_features.len()
        }
        Case::Series {
            metric,
            interval,
            span,
            event_type,
        } => {
            let s = query::timeseries(
                &*tx,
                tenant,
                &SeriesRequest {
                    metric: *metric,
                    event_type: event_type.map(str::to_string),
                    interval: *interval,
                    from: to - *span,
                    to,
                },
            )
            .await
            .expect("series");
            s.points.len()
        }
    };
    tx.commit().await.expect("commit");
    size
}

/// Each case `iterations` times on a tenant drawn from `tenants`, `to` a random instant of the
/// hour before `until` (or the midnight before it for day-aligned cases).
async fn measure_cases(
    bench: &Bench,
    tenants: &[Uuid],
    iterations: usize,
    until: DateTime<Utc>,
) -> Vec<Value> {
    let mut rng = StdRng::seed_from_u64(42);
    let mut out = Vec::new();
    for case in cases() {
        let mut ms = Vec::with_capacity(iterations);
        for i in 0..iterations + 3 {
            let tenant = tenants[rng.random_range(0..tenants.len())];
            let to = match case {
                Case::Summary { aligned: true, .. } => floor_day(until),
                _ => until - Duration::microseconds(rng.random_range(0..3_600_000_000)),
            };
            let began = Instant::now();
            run_case(&bench.pools.app, tenant, &case, to).await;
            if i >= 3 {
                ms.push(began.elapsed().as_secs_f64() * 1000.0);
            }
        }
        let stats = common::percentiles(ms, 2);
        println!("  {:<55} {}", case.name(), stats);
        out.push(json!({"case": case.name(), "latency": stats}));
    }
    out
}

fn new_events(rng: &mut StdRng, n: usize, users: u64) -> Vec<NewEvent> {
    (0..n)
        .map(|_| {
            let u = rng.random_range(0..users);
            NewEvent {
                event_type: TYPES[rng.random_range(0..TYPES.len())].to_string(),
                user_id: Some(user_id(u).to_string()),
                feature: feature(rng.random_range(0..60)),
                metadata: Some(json!({"plan": "pro"})),
                timestamp: None,
            }
        })
        .collect()
}

async fn ingest_run(
    bench: &Bench,
    label: &str,
    tenants: &[Uuid],
    clients_per_tenant: usize,
    secs: u64,
    users: u64,
) -> Value {
    let committers: Vec<Arc<GroupCommitter>> = tenants
        .iter()
        .map(|t| GroupCommitter::new(*t, bench.pools.app.clone(), CommitterConfig::default()))
        .collect();
    let deadline = Instant::now() + StdDuration::from_secs(secs);
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    let mut tasks = Vec::new();
    for (ci, committer) in committers.iter().enumerate() {
        for k in 0..clients_per_tenant {
            let committer = committer.clone();
            let accepted = accepted.clone();
            let refused = refused.clone();
            tasks.push(tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64((ci * 1000 + k) as u64);
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let rules = IngestRules {
                        now: Utc::now(),
                        retention_days: Some(365),
                    };
                    let events = validate_events(new_events(&mut rng, 1_000, users), &rules)
                        .expect("valid events");
                    let sent = Instant::now();
                    match committer.submit(events).await {
                        Ok(n) => {
                            accepted.fetch_add(n, Ordering::Relaxed);
                            latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                        }
                        Err(AnalyticsError::Overloaded { retry_after }) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(StdDuration::from_millis(retry_after * 100)).await;
                        }
                        Err(err) => panic!("ingest failed: {err}"),
                    }
                }
                latencies
            }));
        }
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("client"));
    }
    let elapsed = began.elapsed().as_secs_f64();
    let events = accepted.load(Ordering::Relaxed);
    let flushes: u64 = committers.iter().map(|c| c.stats().flushes).sum();
    let out = json!({
        "run": label,
        "tenants": tenants.len(),
        "clients": tenants.len() * clients_per_tenant,
        "distinct_users": users,
        "seconds": (elapsed * 10.0).round() / 10.0,
        "events": events,
        "events_per_second": (events as f64 / elapsed).round(),
        "flushes": flushes,
        "events_per_flush": events.checked_div(flushes).unwrap_or(0),
        "refused_overloaded": refused.load(Ordering::Relaxed),
        "submit_latency": common::percentiles(latencies, 2),
    });
    println!("  {out}");
    out
}

async fn ingest_benches(bench: &Bench, args: &Args, large: Option<Uuid>) -> Value {
    println!("\n== ingest through GroupCommitter, batches of 1,000");
    let mut runs = Vec::new();
    // New tenants each run: "fresh" must not mean the tables an earlier run filled.
    let run = bench.now.timestamp();
    let one = ensure_tenant(bench, &format!("bench-ingest-{run}-0")).await;
    runs.push(
        ingest_run(
            bench,
            "one fresh tenant",
            &[one],
            args.clients,
            args.ingest_secs,
            10_000,
        )
        .await,
    );
    let unique = ensure_tenant(bench, &format!("bench-ingest-{run}-unique")).await;
    runs.push(
        ingest_run(
            bench,
            "one fresh tenant, every event by a new user",
            &[unique],
            args.clients,
            args.ingest_secs,
            u64::MAX >> 16,
        )
        .await,
    );
    let mut several = Vec::new();
    for i in 0..args.clients {
        several.push(ensure_tenant(bench, &format!("bench-ingest-{run}-{}", i + 1)).await);
    }
    runs.push(
        ingest_run(
            bench,
            "one client per tenant",
            &several,
            1,
            args.ingest_secs,
            10_000,
        )
        .await,
    );
    if let Some(large) = large {
        runs.push(
            ingest_run(
                bench,
                "into the large tenant",
                &[large],
                args.clients,
                args.ingest_secs,
                10_000,
            )
            .await,
        );
    }
    json!(runs)
}

async fn many_tenants(bench: &Bench, args: &Args) -> Value {
    println!(
        "\n== {} tenants x {} events",
        args.tenants, args.tenant_events
    );
    let began = Instant::now();
    let slugs: Vec<String> = (0..args.tenants)
        .map(|i| format!("bench-many-{i:05}"))
        .collect();
    let mut tenants = Vec::with_capacity(slugs.len());
    let mut created = 0usize;
    for chunk in slugs.chunks(4) {
        let ids =
            futures_util::future::join_all(chunk.iter().map(|s| ensure_tenant(bench, s))).await;
        tenants.extend(ids);
        created += chunk.len();
        if created.is_multiple_of(1000) {
            println!(
                "  {created} tenants ready ({:.0} s)",
                began.elapsed().as_secs_f64()
            );
        }
    }
    let provision_secs = began.elapsed().as_secs_f64();
    let done: std::collections::HashSet<Uuid> = bench
        .su
        .query("select tenant_id from public.bench_loaded", &[])
        .await
        .expect("bookkeeping")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let todo: Vec<Uuid> = tenants
        .iter()
        .copied()
        .filter(|t| !done.contains(t))
        .collect();
    let load_began = Instant::now();
    let per = args.tenant_events;
    let now = bench.now;
    for (ci, chunk) in todo.chunks(8).enumerate() {
        futures_util::future::join_all(chunk.iter().enumerate().map(|(k, t)| {
            let mut rng = StdRng::seed_from_u64((ci * 8 + k) as u64);
            let events: Vec<ValidEvent> = (0..per)
                .map(|i| ValidEvent {
                    id: Uuid::now_v7(),
                    event_type: TYPES[i % TYPES.len()].to_string(),
                    user_id: Some(user_id(rng.random_range(0..50)).to_string()),
                    feature: feature(rng.random_range(0..60)),
                    metadata: None,
                    occurred_at: now - Duration::seconds(rng.random_range(0..30 * 86_400)),
                    received_at: now,
                })
                .collect();
            async move {
                write_batch(&bench.pools.app, *t, &events).await;
                mark_loaded(bench, *t, per as i64, now).await;
            }
        }))
        .await;
        if (ci + 1) % 125 == 0 {
            println!(
                "  {} tenants loaded ({:.0} s)",
                (ci + 1) * 8,
                load_began.elapsed().as_secs_f64()
            );
        }
    }
    let load_secs = load_began.elapsed().as_secs_f64();
    let catalog: (i64, i64) = bench
        .su
        .query_one(
            "select (select count(*) from pg_class), pg_database_size(current_database())",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .expect("catalog");
    println!(
        "  pg_class rows {}, database {} MB",
        catalog.0,
        catalog.1 / 1_048_576
    );
    let cases = measure_cases(bench, &tenants, args.iterations.max(200), bench.now).await;
    json!({
        "tenants": tenants.len(),
        "events_per_tenant": per,
        "provision_seconds": provision_secs,
        "load_seconds": load_secs,
        "loaded_now": todo.len(),
        "pg_class_rows": catalog.0,
        "database_mb": catalog.1 / 1_048_576,
        "cases": cases,
    })
}

/// Median of `runs` executions of `sql` on `db`.
async fn median_ms(db: &Client, sql: &str, runs: usize) -> f64 {
    let mut ms = Vec::new();
    for _ in 0..runs {
        let began = Instant::now();
        db.query(sql, &[]).await.expect("study query");
        ms.push(began.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    (ms[ms.len() / 2] * 100.0).round() / 100.0
}

/// The raw-table layouts compared on a copy of the large tenant's events.
async fn index_study(bench: &Bench, tenant: Uuid) -> Value {
    println!("\n== index study on a copy of {tenant}'s events");
    let src = format!("{}.events", tenant_schema_name(tenant));
    let su = &bench.su;
    su.batch_execute("create schema if not exists bench_study; set maintenance_work_mem = '512MB'")
        .await
        .expect("schema");
    let cols = "tenant_id uuid not null, id uuid not null, event_type text not null, user_id uuid, feature text, metadata jsonb, occurred_at timestamptz not null, received_at timestamptz not null";
    let (first, last): (DateTime<Utc>, DateTime<Utc>) = su
        .query_one(
            &format!("select min(occurred_at), max(occurred_at) from {src}"),
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .expect("bounds");
    let weeks = (last - first).num_days() / 7 + 2;
    let part_origin = floor_day(first);
    let variants: Vec<(&str, String, String)> = vec![
        (
            "v1: pk (tenant_id, id) + btree (tenant_id, occurred_at)",
            format!("create table bench_study.v_btree ({cols})"),
            "alter table bench_study.v_btree add primary key (tenant_id, id); \
             create index on bench_study.v_btree (tenant_id, occurred_at)"
                .into(),
        ),
        (
            "pk (tenant_id, id) + brin minmax_multi (tenant_id, occurred_at), 32 pages/range",
            format!("create table bench_study.v_brin ({cols})"),
            "alter table bench_study.v_brin add primary key (tenant_id, id); \
             create index on bench_study.v_brin using brin (tenant_id, occurred_at timestamptz_minmax_multi_ops) with (pages_per_range = 32)"
                .into(),
        ),
        (
            "weekly partitions, pk (tenant_id, occurred_at, id)",
            format!("create table bench_study.v_part ({cols}) partition by range (occurred_at)"),
            "alter table bench_study.v_part add primary key (tenant_id, occurred_at, id)".into(),
        ),
        (
            "chosen: pk (tenant_id, occurred_at, id) only",
            format!("create table bench_study.v_pk ({cols})"),
            "alter table bench_study.v_pk add primary key (tenant_id, occurred_at, id)".into(),
        ),
    ];
    let mid = first + (last - first) / 2;
    let edge_lo = floor_hour(mid) + Duration::minutes(23);
    let edge_hi = floor_hour(mid) + Duration::hours(1);
    let day_lo = floor_day(mid);
    let t = tenant;
    let mut out = Vec::new();
    for (label, create, index) in variants {
        let table = create
            .split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_string();
        su.batch_execute(&format!("drop table if exists {table} cascade; {create}"))
            .await
            .expect("create");
        if table.ends_with("v_part") {
            for w in 0..weeks {
                let lo = part_origin + Duration::days(7 * w) - Duration::days(7);
                let hi = lo + Duration::days(7);
                su.batch_execute(&format!(
                    "create table {table}_{w} partition of {table} for values from ('{}') to ('{}')",
                    lo.to_rfc3339(),
                    hi.to_rfc3339()
                ))
                .await
                .expect("partition");
            }
        }
        let began = Instant::now();
        su.batch_execute(&format!("insert into {table} select * from {src}"))
            .await
            .expect("copy");
        su.batch_execute(&index).await.expect("index");
        su.batch_execute(&format!("vacuum analyze {table}"))
            .await
            .expect("vacuum");
        let build = began.elapsed().as_secs_f64();
        let relations: i64 = su
            .query_one(
                &format!(
                    "with t as (select c.oid, c.reltoastrelid from pg_class c where c.oid = '{table}'::regclass \
                       or c.oid in (select inhrelid from pg_inherits where inhparent = '{table}'::regclass)) \
                     select (select count(*) from t) + (select count(*) from t where reltoastrelid <> 0) * 2 \
                          + (select count(*) from pg_index where indrelid in (select oid from t))"
                ),
                &[],
            )
            .await
            .map(|r| r.get(0))
            .expect("relations");
        let index_mb: i64 = su
            .query_one(
                &format!(
                    "select coalesce(sum(pg_relation_size(indexrelid)), 0)::int8 / 1048576 from pg_index \
                     where indrelid = '{table}'::regclass \
                        or indrelid in (select inhrelid from pg_inherits where inhparent = '{table}'::regclass)"
                ),
                &[],
            )
            .await
            .map(|r| r.get(0))
            .expect("index size");
        let w = format!(
            "tenant_id = '{t}' and occurred_at >= '{}' and occurred_at < '{}'",
            edge_lo.to_rfc3339(),
            edge_hi.to_rfc3339()
        );
        let day = format!(
            "tenant_id = '{t}' and occurred_at >= '{}' and occurred_at < '{}'",
            day_lo.to_rfc3339(),
            (day_lo + Duration::days(1)).to_rfc3339()
        );
        let q_edge = median_ms(su, &format!("select count(*) from {table} where {w}"), 15).await;
        let q_edge_users = median_ms(
            su,
            &format!("select count(distinct user_id), count(feature) from {table} where {w}"),
            15,
        )
        .await;
        let q_day = median_ms(su, &format!("select count(*) from {table} where {day}"), 7).await;
        let insert = study_insert(bench, &table, tenant, last).await;
        let row = json!({
            "layout": label,
            "relations": relations,
            "index_mb": index_mb,
            "build_seconds": build.round(),
            "edge_37min_count_ms": q_edge,
            "edge_37min_distinct_users_ms": q_edge_users,
            "one_day_count_ms": q_day,
            "insert_rows_per_second_4_clients": insert,
        });
        println!("  {row}");
        out.push(row);
        su.batch_execute(&format!("drop table {table} cascade"))
            .await
            .expect("drop");
    }
    json!(out)
}

/// 4 clients inserting batches of 1,000 rows (2% late by up to 2 days) for 10 s each, with the
/// same unnest INSERT as the ingest path (no rollups: this compares the raw table only).
async fn study_insert(bench: &Bench, table: &str, tenant: Uuid, last: DateTime<Utc>) -> f64 {
    let deadline = Instant::now() + StdDuration::from_secs(10);
    let began = Instant::now();
    let rows = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for k in 0..4u64 {
        let url = bench.config.database_url.expose_secret().to_string();
        let table = table.to_string();
        let rows = rows.clone();
        tasks.push(tokio::spawn(async move {
            let db = connect(&url, &[]).await.expect("connect");
            let mut rng = StdRng::seed_from_u64(k);
            let sql = format!(
                "insert into {table} (tenant_id, id, event_type, user_id, feature, metadata, occurred_at, received_at) \
                 select $1, * from unnest($2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::jsonb[], $7::timestamptz[], $8::timestamptz[])"
            );
            while Instant::now() < deadline {
                let now = Utc::now();
                let n = 1_000;
                let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
                let types: Vec<&str> = (0..n).map(|i| TYPES[i % TYPES.len()]).collect();
                let users: Vec<Option<Uuid>> = (0..n)
                    .map(|_| Some(user_id(rng.random_range(0..10_000))))
                    .collect();
                let features: Vec<Option<String>> =
                    (0..n).map(|i| feature(i as u64)).collect();
                let meta: Vec<Option<Value>> = (0..n).map(|_| Some(json!({"n": 1}))).collect();
                let at: Vec<DateTime<Utc>> = (0..n)
                    .map(|_| {
                        if rng.random_range(0..50) == 0 {
                            last - Duration::seconds(rng.random_range(0..2 * 86_400))
                        } else {
                            last + (Utc::now() - now)
                        }
                    })
                    .collect();
                let received: Vec<DateTime<Utc>> = vec![now; n];
                db.query_typed(
                    &sql,
                    &[
                        (&tenant, Type::UUID),
                        (&ids, Type::UUID_ARRAY),
                        (&types, Type::TEXT_ARRAY),
                        (&users, Type::UUID_ARRAY),
                        (&features, Type::TEXT_ARRAY),
                        (&meta, Type::JSONB_ARRAY),
                        (&at, Type::TIMESTAMPTZ_ARRAY),
                        (&received, Type::TIMESTAMPTZ_ARRAY),
                    ],
                )
                .await
                .expect("insert");
                rows.fetch_add(n as u64, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    (rows.load(Ordering::Relaxed) as f64 / began.elapsed().as_secs_f64()).round()
}

fn markdown(r: &Value) -> String {
    use common::{cell, markdown_table};
    let mut md = String::new();
    md.push_str("# Analytics storage benchmark\n\n");
    md.push_str("Generated by `cargo bench --bench analytics_store` (bench/analytics_store.rs). ");
    md.push_str(
        "Latencies are wall-clock per call, each in its own tenant-bound transaction on a pooled ",
    );
    md.push_str("app-role connection (what an HTTP request's TenantOp does, minus HTTP).\n\n");
    md.push_str(&common::markdown_facts(
        r,
        &cell(&r["machine"]["postgres"]),
        &[format!(
            "relations per tenant schema: {}",
            r["relations_per_tenant"]
        )],
    ));
    let latency_table = |md: &mut String, cases: &Value| {
        md.push_str(&markdown_table(
            &["case", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"],
            cases.as_array().into_iter().flatten().map(|c| {
                let l = &c["latency"];
                vec![
                    cell(&c["case"]),
                    l["n"].to_string(),
                    l["p50_ms"].to_string(),
                    l["p95_ms"].to_string(),
                    l["p99_ms"].to_string(),
                    l["max_ms"].to_string(),
                ]
            }),
        ));
        md.push('\n');
    };
    for d in r["single_tenant"].as_array().into_iter().flatten() {
        md.push_str(&format!(
            "## One tenant, {} events (10,000 users, 90 days)\n\nLoad: {}\n\n",
            d["events"], d["load"]
        ));
        latency_table(&mut md, &d["cases"]);
    }
    if let Some(runs) = r["ingest"].as_array() {
        md.push_str("## Ingest through GroupCommitter (batches of 1,000)\n\n");
        md.push_str(&markdown_table(
            &[
                "run",
                "tenants",
                "clients",
                "distinct users",
                "seconds",
                "events/s",
                "events/flush",
                "refused",
                "submit p50 ms",
                "submit p95 ms",
            ],
            runs.iter().map(|x| {
                vec![
                    cell(&x["run"]),
                    x["tenants"].to_string(),
                    x["clients"].to_string(),
                    x["distinct_users"].to_string(),
                    x["seconds"].to_string(),
                    x["events_per_second"].to_string(),
                    x["events_per_flush"].to_string(),
                    x["refused_overloaded"].to_string(),
                    x["submit_latency"]["p50_ms"].to_string(),
                    x["submit_latency"]["p95_ms"].to_string(),
                ]
            }),
        ));
        md.push('\n');
    }
    if r["many_tenants"].is_object() {
        let m = &r["many_tenants"];
        md.push_str(&format!(
            "## {} tenants x {} events (random tenant per call)\n\nprovisioning {:.0} s, loading {:.0} s ({} loaded in this run), pg_class rows {}, database {} MB\n\n",
            m["tenants"], m["events_per_tenant"],
            m["provision_seconds"].as_f64().unwrap_or(0.0),
            m["load_seconds"].as_f64().unwrap_or(0.0),
            m["loaded_now"], m["pg_class_rows"], m["database_mb"]
        ));
        latency_table(&mut md, &m["cases"]);
    }
    if let Some(rows) = r["index_study"].as_array() {
        md.push_str("## Raw-table layouts (copy of the large tenant's events)\n\n");
        md.push_str(&markdown_table(
            &[
                "layout",
                "relations",
                "index MB",
                "37-min count ms",
                "37-min distinct users ms",
                "1-day count ms",
                "insert rows/s (4 clients)",
            ],
            rows.iter().map(|x| {
                vec![
                    cell(&x["layout"]),
                    x["relations"].to_string(),
                    x["index_mb"].to_string(),
                    x["edge_37min_count_ms"].to_string(),
                    x["edge_37min_distinct_users_ms"].to_string(),
                    x["one_day_count_ms"].to_string(),
                    x["insert_rows_per_second_4_clients"].to_string(),
                ]
            }),
        ));
        md.push('\n');
    }
    md
}
