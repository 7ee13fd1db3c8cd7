//! Usage metering: `cargo bench --bench usage_http -- [options]`, under the bench lock on a shared
//! machine: `flock /work/bench.lock cargo bench --bench usage_http`.
//!
//! Starts the server binary cargo builds beside this bench on a fresh database
//! `tenantry_bench_usage` (dropped and created again), then, in one run:
//! 1. usage events accepted per second, each with its own idempotency key, in batches of 100 and
//!    of 1, beside the analytics ingest rate (batches of 100) measured the same way;
//! 2. `GET /tasks/{id}` throughput of a tenant whose plan has an `api_calls_per_month` quota
//!    (admitted on every request) and of one without, alternated on/off/on/off;
//! 3. in-process quota admission (`usage::quota::Quotas::admit` from memory, leases answered by
//!    an in-memory authority): latency percentiles in microseconds.
//!
//! Results: bench/results/usage.{json,md}.

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
mod server;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Parser;
use futures_util::future::BoxFuture;
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use server::{Server, OPERATOR_TOKEN};
use tenantry::auth::Caller;
use tenantry::db::migrate::connect;
use tenantry::tenant_config::snapshot::TenantSnapshot;
use tenantry::usage::quota::{Backing, Quotas};
use tenantry::usage::{Period, UsageError};

#[derive(Parser, Debug, Clone)]
struct Args {
    /// Seconds of each throughput run.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Concurrent HTTP clients of each run.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// In-process admissions measured.
    #[arg(long, default_value_t = 200_000)]
    admissions: usize,
    /// HTTP worker threads of the server (0: one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    #[arg(long, hide = true)]
    bench: bool,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let config = server::fresh_database("USAGE_BENCH_DATABASE_URL", "tenantry_bench_usage").await;
    let db = connect(config.database_url.expose_secret(), &[])
        .await
        .expect("connect");
    let server = server::start_server(&config, args.workers, "usage_bench_server", &[]).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("http client");
    let mut report = json!({
        "started_at": Utc::now(),
        "args": format!("{args:?}"),
        "machine": common::machine(Some(&db)).await,
    });
    println!("machine: {}", report["machine"]);

    // Plans of the bench's own: no rate limit; a quota far above what the run reaches, or none.
    for (plan, quota) in [
        ("bench_quota_on", json!(1_000_000_000_000i64)),
        ("bench_quota_off", Value::Null),
    ] {
        let limits = json!({"max_users": null, "api_calls_per_month": quota,
            "rate_limit_per_minute": null, "webhook_deliveries_per_minute": 100,
            "analytics_retention_days": null, "usage_quotas": {}});
        db.execute(
            "insert into app.plans (name, display_name, rank, limits, features) \
             values ($1, $1, 90, $2, '{\"api_access\": true}')",
            &[&plan, &limits],
        )
        .await
        .expect("bench plan");
    }
    let usage = provision(&http, &server, &db, "bench-usage", "bench_quota_off").await;
    let analytics = provision(&http, &server, &db, "bench-analytics", "bench_quota_off").await;
    let on = provision(&http, &server, &db, "bench-quota-on", "bench_quota_on").await;
    let off = provision(&http, &server, &db, "bench-quota-off", "bench_quota_off").await;

    let seq = Arc::new(AtomicU64::new(0));
    let mut ingest = Vec::new();
    for (label, path, token, batch) in [
        ("usage events, batches of 100", "/usage/events", &usage, 100),
        ("usage events, batches of 1", "/usage/events", &usage, 1),
        (
            "analytics events, batches of 100",
            "/analytics/events",
            &analytics,
            100,
        ),
    ] {
        let seq = seq.clone();
        let body = move || -> Vec<u8> {
            let events: Vec<Value> = (0..batch)
                .map(|_| {
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    if path == "/usage/events" {
                        json!({"idempotency_key": format!("k{n}"), "metric": "emails_sent", "quantity": 1})
                    } else {
                        json!({"event_type": "view", "user_id": format!("u{}", n % 1000), "feature": "f"})
                    }
                })
                .collect();
            serde_json::to_vec(&json!({ "events": events })).expect("body")
        };
        let (http2, url, token) = (
            http.clone(),
            format!("{}{path}", server.address),
            token.clone(),
        );
        let make: MakeRequest = Arc::new(move || {
            let (http, url, token, body) = (http2.clone(), url.clone(), token.clone(), body());
            Box::pin(async move {
                let r = http
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                matches!(r, Ok(r) if r.status().as_u16() == 202)
            })
        });
        let (requests, secs) = run(&args, make).await;
        let rate = (requests * batch) as f64 / secs;
        println!("{label}: {rate:.0} events/s");
        ingest.push(json!({"run": label, "batch": batch, "requests": requests, "events_per_s": rate.round()}));
    }
    report["ingest"] = json!(ingest);

    let task_on = create_task(&http, &server, &on).await;
    let task_off = create_task(&http, &server, &off).await;
    let mut reads = Vec::new();
    for (label, token, task) in [
        ("quota on", &on, &task_on),
        ("quota off", &off, &task_off),
        ("quota on", &on, &task_on),
        ("quota off", &off, &task_off),
    ] {
        let url = format!("{}/tasks/{task}", server.address);
        let (http2, token) = (http.clone(), token.clone());
        let make: MakeRequest = Arc::new(move || {
            let (http, url, token) = (http2.clone(), url.clone(), token.clone());
            Box::pin(async move {
                let r = http.get(&url).bearer_auth(&token).send().await;
                matches!(r, Ok(r) if r.status().as_u16() == 200)
            })
        });
        let (requests, secs) = run(&args, make).await;
        let rate = requests as f64 / secs;
        println!("GET /tasks/{{id}}, {label}: {rate:.0} req/s");
        reads.push(json!({"run": label, "requests": requests, "req_per_s": rate.round()}));
    }
    report["get_task"] = json!(reads);

    report["admission_us"] = admission(args.admissions).await;
    println!("in-process admission: {}", report["admission_us"]);
    report["finished_at"] = json!(Utc::now());
    report["machine_after"] = common::machine(Some(&db)).await;
    common::write_results("usage", &report, &markdown(&report));
}

type MakeRequest = Arc<dyn Fn() -> BoxFuture<'static, bool> + Send + Sync>;

/// `args.clients` clients sending requests back to back for `args.secs`; the successful ones
/// and the seconds measured.
async fn run(args: &Args, make: MakeRequest) -> (usize, f64) {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.secs);
    let ok = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..args.clients)
        .map(|_| {
            let (make, ok) = (make.clone(), ok.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    if make().await {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.await.expect("client");
    }
    (
        ok.load(Ordering::Relaxed) as usize,
        started.elapsed().as_secs_f64(),
    )
}

/// An authority that grants every lease: what is measured is the path from memory.
struct Granting;

impl Backing for Granting {
    fn lease<'a>(
        &'a self,
        _: &'a str,
        _: i64,
        want: i64,
        _: Duration,
        _: Option<i64>,
    ) -> BoxFuture<'a, Result<Option<(i64, i64)>, ()>> {
        Box::pin(async move { Ok(Some((want, 0))) })
    }
    fn anchor<'a>(&'a self, _: &'a Caller) -> BoxFuture<'a, Result<DateTime<Utc>, UsageError>> {
        Box::pin(async { Ok(Utc::now() - chrono::Duration::days(1)) })
    }
    fn used<'a>(
        &'a self,
        _: &'a Caller,
        _: &'a str,
        _: Period,
    ) -> BoxFuture<'a, Result<i64, UsageError>> {
        Box::pin(async { Ok(0) })
    }
    fn instances(&self) -> i64 {
        1
    }
    fn namespace(&self) -> &str {
        "bench"
    }
}

async fn admission(n: usize) -> Value {
    let quotas = Quotas::default();
    let tenant = uuid::Uuid::now_v7();
    let caller = Caller {
        tenant_id: tenant,
        tenant_slug: "bench".into(),
        config: Arc::new(TenantSnapshot::bare(tenant, "bench", "pro")),
        user_id: Some(uuid::Uuid::now_v7()),
        role: None,
        request_id: "bench".into(),
    };
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        quotas
            .admit(&Granting, &caller, &[("api_calls", 1, i64::MAX / 2)])
            .await
            .expect("admitted");
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    // In microseconds: the percentiles of milliseconds times 1,000.
    let p = common::percentiles(ms, 6);
    let us = |k: &str| (p[k].as_f64().unwrap_or(0.0) * 1000.0 * 100.0).round() / 100.0;
    json!({"n": n, "p50_us": us("p50_ms"), "p99_us": us("p99_ms"), "max_us": us("max_ms")})
}

async fn create_task(http: &reqwest::Client, server: &Server, token: &str) -> String {
    let project: Value = http
        .post(format!("{}/projects", server.address))
        .bearer_auth(token)
        .json(&json!({"name": "bench"}))
        .send()
        .await
        .expect("POST /projects")
        .json()
        .await
        .expect("project");
    let task: Value = http
        .post(format!("{}/tasks", server.address))
        .bearer_auth(token)
        .json(&json!({"project_id": project["id"], "title": "bench"}))
        .send()
        .await
        .expect("POST /tasks")
        .json()
        .await
        .expect("task");
    task["id"].as_str().expect("task id").to_string()
}

async fn provision(
    http: &reqwest::Client,
    server: &Server,
    db: &tokio_postgres::Client,
    slug: &str,
    plan: &str,
) -> String {
    let r = http
        .post(format!("{}/tenants", server.address))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({"name": slug, "slug": slug, "plan": "pro",
            "admin_email": format!("admin@{slug}.example.com"),
            "admin_password": "correct-horse-battery"}))
        .send()
        .await
        .expect("POST /tenants");
    assert_eq!(r.status().as_u16(), 201, "provision {slug}");
    let body: Value = r.json().await.expect("tenant");
    // POST /tenants takes the public plans only; the bench's plan is set before any request.
    db.execute(
        "update app.tenants set plan = $1 where slug = $2",
        &[&plan, &slug],
    )
    .await
    .expect("move to the bench plan");
    body["credentials"]["token"]
        .as_str()
        .expect("token")
        .to_string()
}

fn markdown(r: &Value) -> String {
    let machine = common::cell(&r["machine"]["cores"]) + " cores";
    let mut md = String::from(
        "# Usage metering (bench/usage_http.rs)\n\nBusy shared machine: see the load average.\n\n",
    );
    md.push_str(&common::markdown_facts(r, &machine, &[]));
    md.push_str(&common::markdown_table(
        &["ingest run", "events/s"],
        r["ingest"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| vec![common::cell(&x["run"]), common::cell(&x["events_per_s"])]),
    ));
    md.push('\n');
    md.push_str(&common::markdown_table(
        &["GET /tasks/{id}", "req/s"],
        r["get_task"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| vec![common::cell(&x["run"]), common::cell(&x["req_per_s"])]),
    ));
    md.push('\n');
    let a = &r["admission_us"];
    md.push_str(&format!(
        "In-process quota admission ({} admissions): p50 {} µs, p99 {} µs, max {} µs.\n",
        common::cell(&a["n"]),
        common::cell(&a["p50_us"]),
        common::cell(&a["p99_us"]),
        common::cell(&a["max_us"])
    ));
    md
}
