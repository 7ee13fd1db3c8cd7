//! Outgoing webhooks end to end: `cargo bench --bench webhooks -- [options]`.
//!
//! Starts the server (`tenantry serve`, the binary cargo builds beside this bench) on a fresh
//! database `tenantry_bench_webhooks` (override with WEBHOOKS_BENCH_DATABASE_URL; it is dropped
//! and created again, so its name must contain `bench`) with WEBHOOK_ALLOW_PRIVATE_TARGETS, and
//! a local receiver (keep-alive HTTP/1.1, answers 200 at once). Then:
//! 1. `POST /tasks` throughput with no webhook subscribed, `--secs` seconds, `--clients` clients;
//! 2. the same with every tenant subscribed to `task.*` (the same run: same server, same
//!    database): write throughput, deliveries per minute while writing, and the lag from each
//!    `POST /tasks` answer (after its commit) to the receiver getting that task's event;
//! 3. the drain: after the writes stop, the time until every event is delivered, so the
//!    deliveries a minute of the whole run (end to end, API and worker together);
//! 4. where the lag goes, per class of tenant (limited / unlimited): from the write to the outbox
//!    worker's batch (`app.outbox`: `processed_at` is the start of that batch's transaction), and
//!    from the fan-out to the dispatcher's claim and to the receiver's answer (the server's
//!    `tenantry_webhook_lag_seconds` histogram, read from `/metrics`);
//! 5. the server process's CPU time (from /proc, so less sensitive to a busy machine than
//!    wall time): per write without webhooks, per write with, and the difference, which is what
//!    a delivery costs the server (fan-out, claim, send, record).
//!
//! It ends with one line per goal of issue 17 and whether this run met it.
//!
//! `--tenants` tenants on `pro` (its `webhook_deliveries_per_minute`, 100 by default) each get
//! `--per-tenant-per-minute` writes a minute, spread evenly over the run as a steady client
//! would send them, so they stay within their limit (`--limited-burst`: each tenant's whole
//! share as soon as the clients come to it, which is how runs before 2026-12-07 12:00 wrote:
//! every limited tenant's events in the first seconds, at 18 a second each); one tenant on
//! `enterprise` with the delivery limit lifted (null) takes every other write. Every event must
//! arrive; duplicates are counted.
//!
//! Results: bench/results/webhooks.{json,md} and bench/results/webhooks-<date>.txt (the same
//! table, kept per run). One command, on a quiet machine with the release build:
//! `cargo bench --bench webhooks`; on a shared one, under the bench lock and with the quicker
//! optimised profile: `flock /work/bench.lock cargo bench --profile profiling --bench webhooks`.

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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Parser;
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use server::{Server, OPERATOR_TOKEN};
use tenantry::db::migrate::connect;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser, Debug, Clone)]
struct Args {
    /// Seconds of each write run.
    #[arg(long, default_value_t = 30)]
    secs: u64,
    /// Concurrent HTTP clients writing tasks.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Tenants on the delivery-limited plan.
    #[arg(long, default_value_t = 100)]
    tenants: usize,
    /// Writes a minute each limited tenant gets at most (below its plan's limit).
    #[arg(long, default_value_t = 90)]
    per_tenant_per_minute: u64,
    /// Give each limited tenant its whole share as soon as the clients come to it (a burst at
    /// the start of the run, at once as fast as the writes go), instead of spread evenly over
    /// the run at `--per-tenant-per-minute`.
    #[arg(long)]
    limited_burst: bool,
    /// HTTP worker threads of the server (0: one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Seconds to wait for the queue to drain after the writes.
    #[arg(long, default_value_t = 120)]
    drain_secs: u64,
    /// cargo bench passes --bench; accepted and ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone)]
struct Tenant {
    token: String,
    project: String,
    limited: bool,
}

/// Each task written: when its answer came, and whether its tenant is delivery-limited.
type Sent = HashMap<String, (Instant, bool)>;

/// What the receiver saw: arrival time by task id, and how many requests in all.
#[derive(Default)]
struct Seen {
    arrivals: Mutex<HashMap<String, Instant>>,
    requests: AtomicU64,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let config =
        server::fresh_database("WEBHOOKS_BENCH_DATABASE_URL", "tenantry_bench_webhooks").await;
    let db = connect(config.database_url.expose_secret(), &[]).await.ok();
    let seen = Arc::new(Seen::default());
    let receiver = start_receiver(seen.clone()).await;
    let server = server::start_server(
        &config,
        args.workers,
        "webhooks_bench_server",
        &[
            // The outbox worker's polling stays at its default: a commit wakes it, so the lag
            // measured is that path, not a short poll.
            ("WEBHOOK_ALLOW_PRIVATE_TARGETS", "true"),
        ],
    )
    .await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("http client");
    let mut report = json!({
        "started_at": Utc::now(),
        "args": format!("{args:?}"),
        "machine": common::machine(db.as_ref()).await,
        "build": if cfg!(debug_assertions) { "dev" } else { "release" },
    });
    println!("machine: {}", report["machine"]);

    // The writes' own request limit is not what is measured; the delivery limit is.
    for plan in ["pro", "enterprise"] {
        set_plan_limit(&http, &server, plan, "rate_limit_per_minute", Value::Null).await;
    }
    set_plan_limit(
        &http,
        &server,
        "enterprise",
        "webhook_deliveries_per_minute",
        Value::Null,
    )
    .await;
    let mut tenants = Vec::new();
    for i in 0..args.tenants {
        tenants.push(provision(&http, &server, &format!("bench-wh-{i}"), "pro", true).await);
    }
    let unlimited = provision(&http, &server, "bench-wh-unlimited", "enterprise", false).await;
    println!("provisioned {} tenants", tenants.len() + 1);

    let cpu_before_plain = cpu_seconds(&server);
    let plain = write_run(&http, &server, &tenants, &unlimited, &args, None, "plain").await;
    let cpu_plain = cpu_seconds(&server) - cpu_before_plain;
    println!("POST /tasks, no webhook: {plain}");
    // The events of the run without webhooks are processed (with nothing to fan out to) before
    // the endpoints exist, so they do not count against the subscribed run's CPU.
    settle_outbox(db.as_ref()).await;

    for t in tenants.iter().chain(std::iter::once(&unlimited)) {
        let r = http
            .post(server.url("/webhooks"))
            .bearer_auth(&t.token)
            .json(&json!({"url": receiver, "events": ["task.*"]}))
            .send()
            .await
            .expect("POST /webhooks");
        assert_eq!(
            r.status().as_u16(),
            201,
            "{}",
            r.text().await.unwrap_or_default()
        );
    }
    seen.requests.store(0, Ordering::Relaxed);
    let cpu_before_subscribed = cpu_seconds(&server);
    let started = Instant::now();
    let (subscribed, sent) =
        write_run_with_times(&http, &server, &tenants, &unlimited, &args).await;
    let writes_done = started.elapsed();
    let during = seen.requests.load(Ordering::Relaxed);
    // Drain: every task created must arrive.
    let deadline = Instant::now() + Duration::from_secs(args.drain_secs);
    let expected = sent.len();
    loop {
        // Only this run's tasks count: events of the run without webhooks still in the outbox
        // when the endpoints were registered are fanned out to them too, and arrive as well.
        let got = {
            let arrivals = seen.arrivals.lock().unwrap();
            sent.keys()
                .filter(|task| arrivals.contains_key(*task))
                .count()
        };
        if got >= expected || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = started.elapsed();
    let cpu_subscribed = cpu_seconds(&server) - cpu_before_subscribed;
    let arrivals = seen.arrivals.lock().unwrap().clone();
    let requests = seen.requests.load(Ordering::Relaxed);
    let mut lag_unlimited = Vec::new();
    let mut lag_limited = Vec::new();
    let mut missing = 0;
    for (task, (answered, limited)) in &sent {
        match arrivals.get(task) {
            Some(at) => {
                // The answer comes after the commit, so this lag is at most commit -> receiver.
                let ms = at.saturating_duration_since(*answered).as_secs_f64() * 1000.0;
                if *limited {
                    lag_limited.push(ms);
                } else {
                    lag_unlimited.push(ms);
                }
            }
            None => missing += 1,
        }
    }
    let delivered = arrivals.len() as f64;
    let minutes = total.as_secs_f64() / 60.0;
    let delivered_limited = lag_limited.len() as f64;
    let delivered_unlimited = lag_unlimited.len() as f64;
    let writes_plain = plain["writes"].as_f64().unwrap_or(0.0).max(1.0);
    let writes_subscribed = (expected as f64).max(1.0);
    let cpu_ms_per_write_plain = cpu_plain * 1000.0 / writes_plain;
    let cpu_ms_per_write_subscribed = cpu_subscribed * 1000.0 / writes_subscribed;
    let round = |x: f64, places: i32| {
        let scale = 10f64.powi(places);
        (x * scale).round() / scale
    };
    let lag_stages = lag_stages(&http, &server, db.as_ref(), &sent).await;
    let run = json!({
        "post_tasks_no_webhooks": plain,
        "post_tasks_subscribed": subscribed,
        "events": expected,
        "delivered": arrivals.len(),
        "missing": missing,
        "duplicates": requests.saturating_sub(arrivals.len() as u64),
        "deliveries_per_minute_while_writing": (during as f64 / writes_done.as_secs_f64() * 60.0).round(),
        "deliveries_per_minute_end_to_end": (delivered / total.as_secs_f64() * 60.0).round(),
        "deliveries_per_minute_limited_tenants": (delivered_limited / minutes).round(),
        "deliveries_per_minute_unlimited_tenant": (delivered_unlimited / minutes).round(),
        "drain_seconds_after_writes": ((total - writes_done).as_secs_f64() * 10.0).round() / 10.0,
        "lag_ms_limited_tenants": common::percentiles(lag_limited, 1),
        "lag_ms_unlimited_tenant": common::percentiles(lag_unlimited, 1),
        "lag_stages_ms": lag_stages,
        "server_cpu_ms_per_write_no_webhooks": round(cpu_ms_per_write_plain, 3),
        "server_cpu_ms_per_write_subscribed": round(cpu_ms_per_write_subscribed, 3),
        "server_cpu_us_per_delivery": round((cpu_ms_per_write_subscribed - cpu_ms_per_write_plain) * 1000.0, 1),
    });
    println!("{run:#}");
    let goals = goals(&run);
    for line in &goals {
        println!("goal: {line}");
    }
    report["goals"] = json!(goals);
    report["run"] = run.clone();
    report["machine_after"] = common::machine(db.as_ref()).await;
    report["finished_at"] = json!(Utc::now());
    let extra = [
        format!(
            "build: {} (the server binary cargo built beside this bench)",
            common::cell(&report["build"])
        ),
        "busy shared machine: other builds ran beside it (see the load averages)".to_string(),
    ];
    let markdown = format!(
        "# Outgoing webhooks end to end\n\n{}\n\n{}\n\n{}\n",
        common::markdown_facts(&report, &report["machine"].to_string(), &extra),
        goals
            .iter()
            .map(|g| format!("- {g}"))
            .collect::<Vec<_>>()
            .join("\n"),
        common::markdown_table(
            &["figure", "value"],
            run.as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| vec![k.clone(), common::cell(v)])
        )
    );
    common::write_results("webhooks", &report, &markdown);
    let dated = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "bench/results/webhooks-{}.txt",
        Utc::now().format("%Y-%m-%dT%H%M")
    ));
    match std::fs::write(&dated, &markdown) {
        Ok(()) => println!("wrote {}", dated.display()),
        Err(err) => eprintln!("{}: {err}", dated.display()),
    }
}

/// User plus system CPU seconds of the server process so far.
fn cpu_seconds(server: &Server) -> f64 {
    let stat =
        std::fs::read_to_string(format!("/proc/{}/stat", server.child.id())).unwrap_or_default();
    // Fields after the command name (which may hold spaces, inside parentheses): utime and
    // stime are the 14th and 15th fields of the line, the 12th and 13th after it.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    // Linux reports these in clock ticks, 100 a second on every platform it runs on here.
    ticks / 100.0
}

/// Waits (up to 60 s) until the outbox has nothing left to process.
async fn settle_outbox(db: Option<&tokio_postgres::Client>) {
    let Some(db) = db else { return };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let left: i64 = db
            .query_one(
                "select count(*) from app.outbox where processed_at is null and failed_at is null",
                &[],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        if left == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Where the lag went, per class of tenant: the write to the outbox worker's batch (from the
/// outbox rows of this run's tasks), and the fan-out to the dispatcher's claim and to the
/// receiver's answer (p50 and p99 estimated from the server's histogram buckets).
async fn lag_stages(
    http: &reqwest::Client,
    server: &Server,
    db: Option<&tokio_postgres::Client>,
    sent: &Sent,
) -> Value {
    let mut worker_limited = Vec::new();
    let mut worker_unlimited = Vec::new();
    if let Some(db) = db {
        let rows = db
            .query(
                "select payload->>'id', extract(epoch from processed_at - created_at)::float8 \
                 from app.outbox where event_type = 'task.created' and processed_at is not null",
                &[],
            )
            .await
            .unwrap_or_default();
        for row in rows {
            let task: Option<String> = row.get(0);
            let secs: f64 = row.get(1);
            if let Some((_, limited)) = task.and_then(|t| sent.get(&t)) {
                if *limited {
                    worker_limited.push(secs * 1000.0);
                } else {
                    worker_unlimited.push(secs * 1000.0);
                }
            }
        }
    }
    let metrics = match http.get(server.url("/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let histogram = |stage: &str, limit: &str| histogram_quantiles(&metrics, stage, limit);
    json!({
        "write_to_worker_batch_limited": common::percentiles(worker_limited, 1),
        "write_to_worker_batch_unlimited": common::percentiles(worker_unlimited, 1),
        "fan_out_to_claim_limited": histogram("claimed", "limited"),
        "fan_out_to_claim_unlimited": histogram("claimed", "none"),
        "fan_out_to_answer_limited": histogram("answered", "limited"),
        "fan_out_to_answer_unlimited": histogram("answered", "none"),
    })
}

/// p50, p99 (the upper bound of the bucket each falls in) and the mean, in ms, of
/// `tenantry_webhook_lag_seconds{stage, limit}` in a Prometheus text exposition.
fn histogram_quantiles(metrics: &str, stage: &str, limit: &str) -> Value {
    let labels = [format!("limit=\"{limit}\""), format!("stage=\"{stage}\"")];
    let ours = |line: &&str| labels.iter().all(|l| line.contains(l.as_str()));
    let value = |line: &str| {
        line.rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let mut buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter(|l| l.starts_with("tenantry_webhook_lag_seconds_bucket{"))
        .filter(ours)
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, value(l)))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let one = |name: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with(name))
            .find(ours)
            .map_or(0.0, value)
    };
    let count = one("tenantry_webhook_lag_seconds_count{");
    let sum = one("tenantry_webhook_lag_seconds_sum{");
    if count == 0.0 {
        return json!({"n": 0});
    }
    let at = |q: f64| {
        buckets
            .iter()
            .find(|(_, n)| *n >= q * count)
            .map(|(le, _)| {
                if le.is_finite() {
                    json!(le * 1000.0)
                } else {
                    json!("over 60000")
                }
            })
            .unwrap_or(Value::Null)
    };
    json!({
        "n": count,
        "mean_ms": ((sum / count) * 10000.0).round() / 10.0,
        "p50_ms_at_most": at(0.5),
        "p99_ms_at_most": at(0.99),
    })
}

/// One line per goal of issue 17: the figure, the goal, and whether this run met it.
fn goals(run: &Value) -> Vec<String> {
    let per_minute = run["deliveries_per_minute_end_to_end"]
        .as_f64()
        .unwrap_or(0.0);
    let p99 = run["lag_ms_limited_tenants"]["p99_ms"]
        .as_f64()
        .unwrap_or(f64::INFINITY);
    let missing = run["missing"].as_u64().unwrap_or(u64::MAX);
    let duplicates = run["duplicates"].as_u64().unwrap_or(u64::MAX);
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    vec![
        format!(
            "deliveries a minute end to end {per_minute} (goal >= 100,000; Svix 69,400): {}",
            met(per_minute >= 100_000.0)
        ),
        format!(
            "lag p99 of the tenants below their limit {p99} ms (goal < 100 ms; Svix 87-124): {}",
            met(p99 < 100.0)
        ),
        format!(
            "missing {missing}, duplicated {duplicates} (goal 0 and 0; kill -9: tests/api/webhooks_durability.rs): {}",
            met(missing == 0 && duplicates == 0)
        ),
        format!(
            "POST /tasks a second without / with webhooks subscribed, same run: {} / {}",
            run["post_tasks_no_webhooks"]["writes_per_second"],
            run["post_tasks_subscribed"]["writes_per_second"]
        ),
        format!(
            "unlimited tenant's drain after the writes stop: {} s (keeps up when near 0)",
            run["drain_seconds_after_writes"]
        ),
    ]
}

async fn set_plan_limit(
    http: &reqwest::Client,
    server: &Server,
    plan: &str,
    limit: &str,
    value: Value,
) {
    let plans: Value = http
        .get(server.url("/plans"))
        .send()
        .await
        .expect("GET /plans")
        .json()
        .await
        .expect("plans");
    let mut body = plans["items"]
        .as_array()
        .and_then(|items| items.iter().find(|p| p["name"] == plan))
        .cloned()
        .expect("plan");
    body["limits"][limit] = value;
    let r = http
        .put(server.url(&format!("/admin/plans/{plan}")))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("PUT /admin/plans");
    assert_eq!(
        r.status().as_u16(),
        200,
        "{}",
        r.text().await.unwrap_or_default()
    );
}

async fn provision(
    http: &reqwest::Client,
    server: &Server,
    slug: &str,
    plan: &str,
    limited: bool,
) -> Tenant {
    let r = http
        .post(server.url("/tenants"))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({
            "name": slug, "slug": slug, "plan": plan,
            "admin_email": format!("admin@{slug}.example.com"),
            "admin_password": "correct-horse-battery",
        }))
        .send()
        .await
        .expect("POST /tenants");
    assert_eq!(r.status().as_u16(), 201, "provision {slug}");
    let body: Value = r.json().await.expect("tenant body");
    let token = body["credentials"]["token"].as_str().unwrap().to_string();
    let r = http
        .post(server.url("/projects"))
        .bearer_auth(&token)
        .json(&json!({"name": "bench"}))
        .send()
        .await
        .expect("POST /projects");
    let project: Value = r.json().await.expect("project");
    Tenant {
        token,
        project: project["id"].as_str().unwrap().to_string(),
        limited,
    }
}

/// `POST /tasks` for `--secs`: the limited tenants in turn, each at most
/// `--per-tenant-per-minute`, spread evenly over the run (or all at once with
/// `--limited-burst`), everything else to the unlimited tenant. Returns the figures and
/// (when `times`) each task's id with the instant its answer arrived.
async fn write_run(
    http: &reqwest::Client,
    server: &Server,
    tenants: &[Tenant],
    unlimited: &Tenant,
    args: &Args,
    times: Option<Arc<Mutex<Sent>>>,
    // Titles are unique per project: each run names its tasks apart.
    run_tag: &'static str,
) -> Value {
    let per_tenant: Vec<AtomicU64> = tenants.iter().map(|_| AtomicU64::new(0)).collect();
    let per_tenant = Arc::new(per_tenant);
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let run = Duration::from_secs(args.secs);
    let cap = (args.per_tenant_per_minute * args.secs).div_ceil(60);
    let (burst, per_minute) = (args.limited_burst, args.per_tenant_per_minute);
    let started = Instant::now();
    let mut clients = Vec::new();
    for c in 0..args.clients {
        let (http, base) = (http.clone(), server.address.clone());
        let (tenants, unlimited) = (tenants.to_vec(), unlimited.clone());
        let (per_tenant, ok, failed, times) = (
            per_tenant.clone(),
            ok.clone(),
            failed.clone(),
            times.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut n = c as u64;
            while started.elapsed() < run {
                n += 1;
                let i = (n as usize) % (tenants.len() + 1);
                // Steady: a limited tenant's k-th write is due k/rate into the run.
                let due = if burst {
                    cap
                } else {
                    ((started.elapsed().as_secs_f64() * per_minute as f64 / 60.0) as u64 + 1)
                        .min(cap)
                };
                let tenant = if i < tenants.len() && take_one(&per_tenant[i], due) {
                    &tenants[i]
                } else {
                    &unlimited
                };
                let r = http
                    .post(format!("{base}/tasks"))
                    .bearer_auth(&tenant.token)
                    .json(&json!({"project_id": tenant.project, "title": format!("{run_tag}-{c}-{n}")}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 201 => {
                        let at = Instant::now();
                        ok.fetch_add(1, Ordering::Relaxed);
                        if let Some(times) = &times {
                            if let Ok(body) = r.json::<Value>().await {
                                if let Some(id) = body["id"].as_str() {
                                    times
                                        .lock()
                                        .unwrap()
                                        .insert(id.to_string(), (at, tenant.limited));
                                }
                            }
                        }
                    }
                    Ok(r) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        if failed.load(Ordering::Relaxed) <= 3 {
                            eprintln!("POST /tasks answered {}", r.status());
                        }
                    }
                    Err(err) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        eprintln!("POST /tasks failed: {err}");
                    }
                }
            }
        }));
    }
    for c in clients {
        let _ = c.await;
    }
    let secs = started.elapsed().as_secs_f64();
    let ok = ok.load(Ordering::Relaxed);
    json!({
        "writes": ok,
        "failed": failed.load(Ordering::Relaxed),
        "writes_per_second": (ok as f64 / secs * 10.0).round() / 10.0,
    })
}

/// Counts one more write of a limited tenant if it has had fewer than `due`.
fn take_one(count: &AtomicU64, due: u64) -> bool {
    count
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < due).then_some(n + 1)
        })
        .is_ok()
}

async fn write_run_with_times(
    http: &reqwest::Client,
    server: &Server,
    tenants: &[Tenant],
    unlimited: &Tenant,
    args: &Args,
) -> (Value, Sent) {
    let times = Arc::new(Mutex::new(HashMap::new()));
    let figures = write_run(
        http,
        server,
        tenants,
        unlimited,
        args,
        Some(times.clone()),
        "subscribed",
    )
    .await;
    let times = times.lock().unwrap().clone();
    (figures, times)
}

/// A keep-alive HTTP/1.1 receiver answering 200 at once; records each task event's arrival.
async fn start_receiver(seen: Arc<Seen>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("receiver");
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let _ = serve(stream, seen).await;
            });
        }
    });
    url
}

async fn serve(mut stream: tokio::net::TcpStream, seen: Arc<Seen>) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let at = Instant::now();
        let body: Value =
            serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or_default();
        seen.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(id) = body["data"]["id"].as_str() {
            seen.arrivals
                .lock()
                .unwrap()
                .entry(id.to_string())
                .or_insert(at);
        }
        buf.drain(..head_end + length);
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await?;
    }
}
