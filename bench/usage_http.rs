//! Usage metering: `cargo bench --profile profiling --bench usage_http -- [options]`, under the
//! bench lock on a shared machine: `flock /work/bench.lock cargo bench --profile profiling --bench usage_http`.
//!
//! Starts the server binary cargo builds beside this bench on a fresh database
//! `tenantry_bench_usage` (dropped and created again), then, in one run:
//! 1. `GET /tasks/{id}` throughput of a tenant whose plan has an `api_calls_per_month` quota
//!    (admitted on every request) and of one without, alternated on/off `--pairs` times, first,
//!    while the server has no other work;
//! 2. the same requests, one at a time, against a second server on the same database run under
//!    `valgrind --tool=callgrind` (skipped when valgrind is missing or `--callgrind-requests 0`):
//!    instructions per request, quota on and off, which the machine's load does not move;
//! 3. rollup lag: `--lag-tenants` tenants each store events in the last minute of an hour; the
//!    time from the last event's 202 to the moment the hourly and daily rollup rows of that hour
//!    hold every event, over `--lag-rounds` rounds started at different points of the rollup
//!    loop's minute (the real loop of the server, not a fast-forwarded one);
//! 4. usage events accepted per second, each with its own idempotency key, in batches of 100 and
//!    of 1, beside the analytics ingest rate (batches of 100) measured the same way;
//! 5. in-process quota admission (`usage::quota::Quotas::admit_unit`, the per-request path, from memory, leases answered by
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

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, Utc};
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
    /// On/off pairs of `GET /tasks/{id}` runs.
    #[arg(long, default_value_t = 3)]
    pairs: usize,
    /// Requests of each callgrind run (0: no callgrind runs).
    #[arg(long, default_value_t = 2_000)]
    callgrind_requests: usize,
    /// Tenants of the rollup lag measurement.
    #[arg(long, default_value_t = 20)]
    lag_tenants: usize,
    /// Rounds (hours) of the rollup lag measurement (0: none).
    #[arg(long, default_value_t = 3)]
    lag_rounds: usize,
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
        "profile": PROFILE,
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
    let on = provision(&http, &server, &db, "bench-quota-on", "bench_quota_on").await;
    let off = provision(&http, &server, &db, "bench-quota-off", "bench_quota_off").await;
    let task_on = create_task(&http, &server, &on).await;
    let task_off = create_task(&http, &server, &off).await;

    // 1. GET /tasks/{id}, quota on and off, alternated.
    let mut reads = Vec::new();
    for pair in 0..args.pairs {
        for (label, token, task) in [("quota on", &on, &task_on), ("quota off", &off, &task_off)] {
            let url = format!("{}/tasks/{task}", server.address);
            let (http2, token) = (http.clone(), token.clone());
            let make: MakeRequest = Arc::new(move || {
                let (http, url, token) = (http2.clone(), url.clone(), token.clone());
                Box::pin(async move { answered(http.get(&url).bearer_auth(&token), 200).await })
            });
            let outcome = run(&args, make).await;
            let rate = outcome.ok as f64 / outcome.secs;
            println!("GET /tasks/{{id}}, {label} ({pair}): {rate:.0} req/s");
            reads.push(json!({"run": label, "pair": pair, "requests": outcome.ok,
                "other": outcome.other, "req_per_s": rate.round()}));
        }
    }
    let mean = |label: &str| {
        let xs: Vec<f64> = reads
            .iter()
            .filter(|r| r["run"] == label)
            .filter_map(|r| r["req_per_s"].as_f64())
            .collect();
        xs.iter().sum::<f64>() / xs.len().max(1) as f64
    };
    let (mean_on, mean_off) = (mean("quota on"), mean("quota off"));
    report["get_task"] = json!({
        "runs": reads,
        "mean_on": mean_on.round(),
        "mean_off": mean_off.round(),
        "on_below_off_pct": round2((mean_off - mean_on) / mean_off.max(1.0) * 100.0),
    });

    // 2. Instructions per request under callgrind.
    report["callgrind"] = if args.callgrind_requests > 0 {
        callgrind(&config, &http, &args, [(&on, &task_on), (&off, &task_off)]).await
    } else {
        Value::Null
    };

    // 3. Rollup lag after the end of an hour.
    report["rollup_lag"] = if args.lag_rounds > 0 {
        rollup_lag(&http, &server, &db, &args).await
    } else {
        Value::Null
    };

    // 4. Ingest: usage events with idempotency keys, then analytics events, same server.
    let usage = provision(&http, &server, &db, "bench-usage", "bench_quota_off").await;
    let analytics = provision(&http, &server, &db, "bench-analytics", "bench_quota_off").await;
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
                let request = http
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body);
                answered(request, 202).await
            })
        });
        let outcome = run(&args, make).await;
        let rate = (outcome.ok * batch) as f64 / outcome.secs;
        println!("{label}: {rate:.0} events/s");
        ingest.push(json!({"run": label, "batch": batch, "requests": outcome.ok,
            "other": outcome.other, "first_other": outcome.first_other,
            "events_per_s": rate.round()}));
    }
    report["ingest"] = json!(ingest);

    // 5. Admission from memory, in this process.
    report["admission_us"] = admission(args.admissions).await;
    println!("in-process admission: {}", report["admission_us"]);
    report["finished_at"] = json!(Utc::now());
    report["machine_after"] = common::machine(Some(&db)).await;
    common::write_results("usage", &report, &markdown(&report));
}

/// The cargo profile this bench (and so the server beside it) was built with.
const PROFILE: &str = if cfg!(debug_assertions) {
    "dev (unoptimised)"
} else {
    "optimised (profiling or release: see the command)"
};

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// What a request came to: `Ok(())` when answered `want`, else the status and the start of the
/// body (or the error). The body is read either way, so the connection is used again.
type Answer = Result<(), String>;

async fn answered(request: reqwest::RequestBuilder, want: u16) -> Answer {
    match request.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let body = r.bytes().await.unwrap_or_default();
            if status == want {
                Ok(())
            } else {
                let text = String::from_utf8_lossy(&body);
                Err(format!(
                    "{status} {}",
                    text.chars().take(300).collect::<String>()
                ))
            }
        }
        Err(err) => Err(format!("error: {err}")),
    }
}

type MakeRequest = Arc<dyn Fn() -> BoxFuture<'static, Answer> + Send + Sync>;

struct Outcome {
    /// Requests answered as wanted.
    ok: usize,
    /// Requests answered otherwise (or failed).
    other: usize,
    /// The first of those, to say why.
    first_other: Option<String>,
    secs: f64,
}

/// `args.clients` clients sending requests back to back for `args.secs`.
async fn run(args: &Args, make: MakeRequest) -> Outcome {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.secs);
    let ok = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let first_other = Arc::new(std::sync::Mutex::new(None::<String>));
    let clients: Vec<_> = (0..args.clients)
        .map(|_| {
            let (make, ok, other, first) =
                (make.clone(), ok.clone(), other.clone(), first_other.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    match make().await {
                        Ok(()) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(why) => {
                            if other.fetch_add(1, Ordering::Relaxed) == 0 {
                                eprintln!("unexpected answer: {why}");
                                *first.lock().expect("first") = Some(why);
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.await.expect("client");
    }
    let first_other = first_other.lock().expect("first").take();
    Outcome {
        ok: ok.load(Ordering::Relaxed) as usize,
        other: other.load(Ordering::Relaxed) as usize,
        first_other,
        secs: started.elapsed().as_secs_f64(),
    }
}

/// A second server on the same database under callgrind, collection off until asked: for each
/// of quota on / off (twice, alternated), warm-up requests, counters zeroed, `n` requests one at
/// a time, counters dumped. Instructions (Ir) of the whole process, every thread, per request.
async fn callgrind(
    config: &tenantry::config::Config,
    http: &reqwest::Client,
    args: &Args,
    sides: [(&String, &String); 2],
) -> Value {
    if Command::new("valgrind").arg("--version").output().is_err() {
        println!("callgrind: valgrind not found, skipped");
        return json!({"skipped": "valgrind not found"});
    }
    let dir = std::env::temp_dir().join("usage_bench_callgrind");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("callgrind dir");
    let out = format!("--callgrind-out-file={}/callgrind.out", dir.display());
    let wrapper = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        "--dump-instr=no",
        out.as_str(),
    ];
    let server = server::start_server_wrapped(
        config,
        1,
        "usage_bench_callgrind",
        &[],
        &wrapper,
        Duration::from_secs(300),
    )
    .await;
    let pid = server.child.id().to_string();
    let control = |what: &str| {
        let status = Command::new("callgrind_control")
            .args([what, &pid])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("callgrind_control");
        assert!(status.success(), "callgrind_control {what} failed");
    };
    let n = args.callgrind_requests;
    let mut runs = Vec::new();
    for round in 0..2 {
        for (label, (token, task)) in ["quota on", "quota off"].into_iter().zip(sides) {
            let url = server.url(&format!("/tasks/{task}"));
            for _ in 0..50 {
                let _ = answered(http.get(&url).bearer_auth(token), 200).await;
            }
            control("--instr=on");
            control("--zero");
            let mut ok = 0usize;
            for _ in 0..n {
                if answered(http.get(&url).bearer_auth(token), 200)
                    .await
                    .is_ok()
                {
                    ok += 1;
                }
            }
            control("--dump");
            control("--instr=off");
            let ir = latest_dump_ir(&dir);
            let per = ir as f64 / n.max(1) as f64;
            println!("callgrind, {label} ({round}): {per:.0} Ir/request ({ok}/{n} answered 200)");
            runs.push(
                json!({"run": label, "round": round, "requests": n, "ok": ok,
                "ir": ir, "ir_per_request": per.round()}),
            );
        }
    }
    drop(server);
    let mean = |label: &str| {
        let xs: Vec<f64> = runs
            .iter()
            .filter(|r| r["run"] == label)
            .filter_map(|r| r["ir_per_request"].as_f64())
            .collect();
        xs.iter().sum::<f64>() / xs.len().max(1) as f64
    };
    let (on, off) = (mean("quota on"), mean("quota off"));
    json!({"runs": runs, "dumps": dir.display().to_string(), "mean_on": on.round(),
        "mean_off": off.round(), "on_minus_off": (on - off).round(),
        "on_over_off_pct": round2((on - off) / off.max(1.0) * 100.0)})
}

/// The `totals:` (or `summary:`) Ir of the newest dump in `dir`.
fn latest_dump_ir(dir: &std::path::Path) -> u64 {
    let newest = std::fs::read_dir(dir)
        .expect("callgrind dir")
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max()
        .map(|(_, p)| p)
        .expect("a callgrind dump");
    let text = std::fs::read_to_string(&newest).expect("read dump");
    text.lines()
        .rev()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Rollup lag: each round, every lag tenant stores 200 events (two batches of 100) dated in the
/// last minute of the hour that ended most recently, under a metric of the round's own; the lag
/// of a tenant is the time from its last 202 (the moment the hour's data is all in: the hardest
/// case, an event arriving right at the period's end) until its hourly and daily rows of that
/// metric both hold the 200. The rows are polled every 100 ms in PostgreSQL. Round r > 0 starts
/// r/R of the loop's interval after the previous round completed (just after a pass), round 0
/// wherever the loop is, so the rounds spread over the interval.
async fn rollup_lag(
    http: &reqwest::Client,
    server: &Server,
    db: &tokio_postgres::Client,
    args: &Args,
) -> Value {
    let every = tenantry::usage::rollup::EVERY;
    let mut tenants = Vec::new();
    for i in 0..args.lag_tenants {
        let slug = format!("bench-lag-{i}");
        let token = provision(http, server, db, &slug, "bench_quota_off").await;
        let id: uuid::Uuid = db
            .query_one("select id from app.tenants where slug = $1", &[&slug])
            .await
            .expect("tenant id")
            .get(0);
        tenants.push((id, token));
    }
    const PER_TENANT: i64 = 200;
    let mut lags_ms = Vec::new();
    let mut rounds = Vec::new();
    for round in 0..args.lag_rounds {
        let offset = every.mul_f64(round as f64 / args.lag_rounds as f64);
        tokio::time::sleep(offset).await;
        let metric = format!("bench_lag_{round}");
        let now = Utc::now();
        let hour_end = now
            .duration_trunc(chrono::TimeDelta::hours(1))
            .expect("hour");
        let mut stored_at = Vec::new();
        for (t, (_, token)) in tenants.iter().enumerate() {
            for batch in 0..2 {
                let events: Vec<Value> = (0..100)
                    .map(|k| {
                        // Spread over the hour's last minute, the last one 10 ms before its end.
                        let before = chrono::TimeDelta::milliseconds(10 + (99 - k) * 600);
                        json!({"idempotency_key": format!("lag-{round}-{t}-{batch}-{k}"),
                            "metric": metric, "quantity": 1,
                            "occurred_at": (hour_end - before).to_rfc3339()})
                    })
                    .collect();
                let request = http
                    .post(server.url("/usage/events"))
                    .bearer_auth(token)
                    .json(&json!({ "events": events }));
                if let Err(why) = answered(request, 202).await {
                    panic!("rollup lag: events not stored: {why}");
                }
            }
            stored_at.push(Instant::now());
        }
        let mut done: Vec<Option<Duration>> = vec![None; tenants.len()];
        let give_up = Instant::now() + Duration::from_secs(600);
        while done.iter().any(Option::is_none) && Instant::now() < give_up {
            let rows = db
                .query(
                    "select tenant_id, \
                       coalesce(sum(quantity) filter (where granularity = 'hour'), 0)::bigint, \
                       coalesce(sum(quantity) filter (where granularity = 'day'), 0)::bigint \
                     from app.usage_rollups where metric = $1 and deleted_at is null \
                     group by tenant_id",
                    &[&metric],
                )
                .await
                .expect("rollup rows");
            let seen = Instant::now();
            for row in rows {
                let (tenant, hour, day): (uuid::Uuid, i64, i64) =
                    (row.get(0), row.get(1), row.get(2));
                if let Some(i) = tenants.iter().position(|(id, _)| *id == tenant) {
                    if done[i].is_none() && hour == PER_TENANT && day == PER_TENANT {
                        done[i] = Some(seen - stored_at[i]);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let complete: Vec<f64> = done
            .iter()
            .flatten()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        let incomplete = done.len() - complete.len();
        let p = common::percentiles(complete.clone(), 0);
        println!(
            "rollup lag, round {round} (+{:.0} s): {p} ({incomplete} incomplete after 600 s)",
            offset.as_secs_f64()
        );
        rounds.push(
            json!({"round": round, "offset_s": offset.as_secs(), "hour_end": hour_end,
            "lag_ms": p, "incomplete": incomplete}),
        );
        lags_ms.extend(complete);
    }
    let all = common::percentiles(lags_ms, 0);
    let s = |k: &str| all[k].as_f64().map(|ms| round2(ms / 1000.0));
    json!({"tenants": args.lag_tenants, "rounds": rounds, "loop_every_s": every.as_secs(),
        "events_per_tenant": PER_TENANT, "n": all["n"],
        "p50_s": s("p50_ms"), "p99_s": s("p99_ms"), "max_s": s("max_ms")})
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
            .admit_unit(&Granting, &caller, "api_calls", 1, i64::MAX / 2)
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
        "# Usage metering (bench/usage_http.rs)\n\nHow busy the machine was: see the load average before and after.\n\n",
    );
    md.push_str(&common::markdown_facts(
        r,
        &machine,
        &[format!("build: {}", common::cell(&r["profile"]))],
    ));
    md.push_str("## Ingest\n\n");
    md.push_str(&common::markdown_table(
        &["ingest run", "events/s", "requests 202", "other answers"],
        r["ingest"].as_array().into_iter().flatten().map(|x| {
            vec![
                common::cell(&x["run"]),
                common::cell(&x["events_per_s"]),
                common::cell(&x["requests"]),
                common::cell(&x["other"]),
            ]
        }),
    ));
    md.push_str("\n## `GET /tasks/{id}`, quota on and off\n\n");
    let g = &r["get_task"];
    md.push_str(&common::markdown_table(
        &["run", "req/s"],
        g["runs"].as_array().into_iter().flatten().map(|x| {
            vec![
                format!("{} ({})", common::cell(&x["run"]), common::cell(&x["pair"])),
                common::cell(&x["req_per_s"]),
            ]
        }),
    ));
    md.push_str(&format!(
        "\nMean: on {} req/s, off {} req/s: on is {}% below off.\n",
        common::cell(&g["mean_on"]),
        common::cell(&g["mean_off"]),
        common::cell(&g["on_below_off_pct"])
    ));
    let c = &r["callgrind"];
    if c["runs"].is_array() {
        md.push_str("\nUnder callgrind (one worker, requests one at a time; instructions of the whole server process per request):\n\n");
        md.push_str(&common::markdown_table(
            &["run", "Ir/request"],
            c["runs"].as_array().into_iter().flatten().map(|x| {
                vec![
                    format!(
                        "{} ({})",
                        common::cell(&x["run"]),
                        common::cell(&x["round"])
                    ),
                    common::cell(&x["ir_per_request"]),
                ]
            }),
        ));
        md.push_str(&format!(
            "\nMean: on {} Ir, off {} Ir: on costs {} Ir ({}%) more.\n",
            common::cell(&c["mean_on"]),
            common::cell(&c["mean_off"]),
            common::cell(&c["on_minus_off"]),
            common::cell(&c["on_over_off_pct"])
        ));
    }
    let a = &r["admission_us"];
    md.push_str(&format!(
        "\nIn-process quota admission ({} admissions): p50 {} µs, p99 {} µs, max {} µs.\n",
        common::cell(&a["n"]),
        common::cell(&a["p50_us"]),
        common::cell(&a["p99_us"]),
        common::cell(&a["max_us"])
    ));
    let l = &r["rollup_lag"];
    if l["rounds"].is_array() {
        md.push_str(&format!(
            "\n## Rollup lag after an hour's end\n\n{} tenants x {} rounds, {} events each dated in the hour's last minute; \
             lag = last 202 -> hourly and daily rows complete (rollup loop every {} s).\n\n",
            common::cell(&l["tenants"]),
            l["rounds"].as_array().map_or(0, Vec::len),
            common::cell(&l["events_per_tenant"]),
            common::cell(&l["loop_every_s"]),
        ));
        md.push_str(&common::markdown_table(
            &[
                "round",
                "started after a pass +",
                "p50 ms",
                "max ms",
                "incomplete",
            ],
            l["rounds"].as_array().into_iter().flatten().map(|x| {
                vec![
                    common::cell(&x["round"]),
                    format!("{} s", common::cell(&x["offset_s"])),
                    common::cell(&x["lag_ms"]["p50_ms"]),
                    common::cell(&x["lag_ms"]["max_ms"]),
                    common::cell(&x["incomplete"]),
                ]
            }),
        ));
        md.push_str(&format!(
            "\nAll {} samples: p50 {} s, p99 {} s, max {} s.\n",
            common::cell(&l["n"]),
            common::cell(&l["p50_s"]),
            common::cell(&l["p99_s"]),
            common::cell(&l["max_s"])
        ));
    }
    md
}
