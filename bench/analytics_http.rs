//! Analytics over HTTP: `cargo bench --bench analytics_http -- [options]`.
//!
//! Starts the release server (`tenantry serve`, the binary cargo builds beside this bench) on
//! a fresh database `tenantry_bench_analytics_http` (override with ANALYTICS_HTTP_DATABASE_URL;
//! it is dropped and created again, so its name must contain `bench`), provisions the tenants
//! through `POST /tenants`, then measures:
//! 1. ingest throughput: clients each posting batches of 1,000 events back to back for
//!    `--secs` seconds, into one tenant, then spread over several tenants;
//! 2. live lag: from the 202 of a small batch to the WebSocket tick that carries it
//!    (`/ws/analytics`), on an idle server and while the several-tenant ingest runs.
//!
//! Bodies are serialised once before the runs, so the client costs little more than the
//! HTTP round trips. Results: bench/results/analytics_http.{json,md}. Run it under the bench
//! lock on a shared machine: `flock /work/bench.lock cargo bench --bench analytics_http`.

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
use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use server::{Server, OPERATOR_TOKEN};
use tenantry::db::migrate::connect;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Debug, Clone)]
struct Args {
    /// Seconds of each throughput run.
    #[arg(long, default_value_t = 20)]
    secs: u64,
    /// Concurrent HTTP clients of each throughput run.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Tenants of the several-tenant run (the clients are spread over them).
    #[arg(long, default_value_t = 8)]
    tenants: usize,
    /// Distinct users the events are spread over.
    #[arg(long, default_value_t = 10_000)]
    users: u64,
    /// Lag samples per lag run (one small batch every `--lag-every-ms`).
    #[arg(long, default_value_t = 100)]
    lag_samples: usize,
    #[arg(long, default_value_t = 230)]
    lag_every_ms: u64,
    /// HTTP worker threads of the server (0: one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// The ingest runs only (UUID and string user ids), no lag runs.
    #[arg(long)]
    ingest_only: bool,
    /// cargo bench passes --bench; accepted and ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

const TYPES: &[&str] = &[
    "page_view",
    "click",
    "signup",
    "login",
    "purchase",
    "search",
    "share",
    "upload",
];

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let config = server::fresh_database(
        "ANALYTICS_HTTP_DATABASE_URL",
        "tenantry_bench_analytics_http",
    )
    .await;
    // For the machine facts before and after the run; without it they say nothing of PostgreSQL.
    let db = connect(config.database_url.expose_secret(), &[]).await.ok();
    let server = server::start_server(&config, args.workers, "analytics_http_server", &[]).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("http client");
    let mut report = json!({
        "started_at": Utc::now(),
        "args": format!("{args:?}"),
        "machine": common::machine(db.as_ref()).await,
    });
    println!("machine: {}", report["machine"]);

    let tenants = provision(&http, &server, args.tenants.max(1) + 2).await;
    let (one, rest) = tenants.split_first().expect("tenants");
    let (lag_tenant, several) = rest.split_last().expect("tenants");
    // The same events with the product's own ids and anonymous ids in place of the UUIDs
    // (tenant_template V6): one tenant, then several, right after their UUID runs.
    let string_bodies = Arc::new(bodies(&args, UserIds::Strings));
    let bodies = Arc::new(bodies(&args, UserIds::Uuid));

    let mut runs = Vec::new();
    runs.push(
        throughput(
            &http,
            &server.address,
            "one tenant",
            std::slice::from_ref(one),
            &args,
            &bodies,
        )
        .await,
    );
    runs.push(
        throughput(
            &http,
            &server.address,
            "one tenant, string user ids",
            std::slice::from_ref(one),
            &args,
            &string_bodies,
        )
        .await,
    );
    runs.push(
        throughput(
            &http,
            &server.address,
            "several tenants",
            several,
            &args,
            &bodies,
        )
        .await,
    );
    runs.push(
        throughput(
            &http,
            &server.address,
            "several tenants, string user ids",
            several,
            &args,
            &string_bodies,
        )
        .await,
    );
    report["ingest"] = json!(runs);
    if args.ingest_only {
        report["finished_at"] = json!(Utc::now());
        report["machine_after"] = common::machine(db.as_ref()).await;
        common::write_results("analytics_http_user_ids", &report, &markdown(&report));
        return;
    }

    let idle = lag(&http, &server, lag_tenant, &args, "idle server").await;
    // The same while the several-tenant ingest runs: the tick must not wait behind it.
    let load = {
        let (http2, bodies2, args2) = (http.clone(), bodies.clone(), args.clone());
        let several2: Vec<Tenant> = several.to_vec();
        let address = server.address.clone();
        let secs = (args.lag_samples as u64 * args.lag_every_ms / 1000 + 4).max(args.secs);
        tokio::spawn(async move {
            throughput(
                &http2,
                &address,
                "several tenants, during the lag run",
                &several2,
                &Args { secs, ..args2 },
                &bodies2,
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let busy = lag(
        &http,
        &server,
        lag_tenant,
        &args,
        "during several-tenant ingest",
    )
    .await;
    let background = load.await.expect("background ingest");
    report["lag"] = json!([idle, busy]);
    report["ingest_during_lag"] = background;
    report["server_rss_mb"] = json!(server.rss_mb());
    report["finished_at"] = json!(Utc::now());
    report["machine_after"] = common::machine(db.as_ref()).await;
    common::write_results("analytics_http", &report, &markdown(&report));
}

#[derive(Clone)]
struct Tenant {
    slug: String,
    token: String,
}

async fn provision(http: &reqwest::Client, server: &Server, n: usize) -> Vec<Tenant> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let slug = format!("bench-http-{i}");
        let r = http
            .post(server.url("/tenants"))
            .bearer_auth(OPERATOR_TOKEN)
            .json(&json!({
                "name": slug,
                "slug": slug,
                "plan": "pro",
                "admin_email": format!("admin@{slug}.example.com"),
                "admin_password": "correct-horse-battery",
            }))
            .send()
            .await
            .expect("POST /tenants");
        assert_eq!(r.status().as_u16(), 201, "provision {slug}");
        let body: Value = r.json().await.expect("tenant body");
        let token = body["credentials"]["token"]
            .as_str()
            .expect("admin token")
            .to_string();
        out.push(Tenant { slug, token });
    }
    println!("provisioned {n} tenants through POST /tenants");
    out
}

/// Request bodies of 1,000 events each, serialised once; clients cycle through them.
#[derive(Clone, Copy)]
enum UserIds {
    Uuid,
    /// Half e-mail-like product ids, half anonymous ids, as PostHog's `distinct_id` and
    /// Segment's `anonymousId` look.
    Strings,
}

fn user_id(u: u64, ids: UserIds) -> Value {
    match ids {
        UserIds::Uuid => json!(uuid::Uuid::from_u128(
            0xb0b0_0000_0000_7000_8000_0000_0000_0000 | u128::from(u)
        )),
        UserIds::Strings if u.is_multiple_of(2) => json!(format!("user-{u}@customer.example.com")),
        UserIds::Strings => json!(format!("anon_{u:016x}_web")),
    }
}

fn bodies(args: &Args, ids: UserIds) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(7);
    (0..32)
        .map(|_| {
            let events: Vec<Value> = (0..1_000)
                .map(|_| {
                    let u = rng.random_range(0..args.users);
                    json!({
                        "event_type": TYPES[rng.random_range(0..TYPES.len())],
                        "user_id": user_id(u, ids),
                        "feature": format!("feature_{:02}", rng.random_range(0..20)),
                        "metadata": {"plan": "pro", "n": rng.random_range(0..100)},
                    })
                })
                .collect();
            serde_json::to_vec(&json!({ "events": events })).expect("body")
        })
        .collect()
}

/// `args.clients` clients spread over `tenants`, each posting 1,000-event batches back to back.
async fn throughput(
    http: &reqwest::Client,
    address: &str,
    label: &str,
    tenants: &[Tenant],
    args: &Args,
    bodies: &Arc<Vec<Vec<u8>>>,
) -> Value {
    let url = format!("{address}/analytics/events");
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    let deadline = began + Duration::from_secs(args.secs);
    let mut tasks = Vec::new();
    for c in 0..args.clients.max(1) {
        let tenant = tenants[c % tenants.len()].clone();
        let (http, url, bodies) = (http.clone(), url.clone(), bodies.clone());
        let (accepted, refused, failed) = (accepted.clone(), refused.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut k = c;
            while Instant::now() < deadline {
                let body = bodies[k % bodies.len()].clone();
                k += 1;
                let sent = Instant::now();
                let r = http
                    .post(&url)
                    .bearer_auth(&tenant.token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 202 => {
                        let _ = r.bytes().await;
                        accepted.fetch_add(1_000, Ordering::Relaxed);
                        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                    }
                    Ok(r) if r.status().as_u16() == 503 => {
                        let wait = r
                            .headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<u64>().ok())
                            .unwrap_or(1);
                        let _ = r.bytes().await;
                        refused.fetch_add(1, Ordering::Relaxed);
                        // A tenth of Retry-After: the queue drains in well under a second.
                        tokio::time::sleep(Duration::from_millis(wait * 100)).await;
                    }
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        eprintln!("unexpected {status}: {text}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(err) => {
                        eprintln!("request failed: {err}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("client"));
    }
    let secs = began.elapsed().as_secs_f64();
    let events = accepted.load(Ordering::Relaxed);
    let out = json!({
        "run": label,
        "tenants": tenants.len(),
        "clients": args.clients,
        "batch": 1000,
        "seconds": (secs * 10.0).round() / 10.0,
        "events": events,
        "events_per_second": (events as f64 / secs).round(),
        "refused_503": refused.load(Ordering::Relaxed),
        "failed": failed.load(Ordering::Relaxed),
        "latency_202": common::percentiles(latencies, 1),
        "tenant_slugs": tenants.iter().map(|t| t.slug.clone()).collect::<Vec<_>>(),
    });
    println!("  {out}");
    out
}

/// From the 202 of a marked batch to the arrival of the tick that counts it. Each sample is
/// a batch of 10 events of a unique event type (`lag<n>`), so the tick's `counts` say which
/// samples it carries. Ticks come at most once a second, so the expected lag is spread over
/// 0 to 1 s, plus the commit and delivery times.
async fn lag(
    http: &reqwest::Client,
    server: &Server,
    tenant: &Tenant,
    args: &Args,
    label: &str,
) -> Value {
    let ws_url = format!(
        "{}/ws/analytics?token={}",
        server.address.replacen("http://", "ws://", 1),
        tenant.token
    );
    let (socket, _) = tokio_tungstenite::connect_async(&ws_url)
        .await
        .expect("WebSocket connect");
    let (mut sink, mut stream) = socket.split();
    let acked: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let ticks = Arc::new(AtomicU64::new(0));
    let reader = {
        let (seen, ticks) = (seen.clone(), ticks.clone());
        tokio::spawn(async move {
            while let Some(message) = stream.next().await {
                let at = Instant::now();
                let Ok(Message::Text(text)) = message else {
                    continue;
                };
                let Ok(tick) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                ticks.fetch_add(1, Ordering::Relaxed);
                if let Some(counts) = tick["counts"].as_object() {
                    let mut seen = seen.lock().expect("seen");
                    for key in counts.keys().filter(|k| k.starts_with("lag")) {
                        seen.entry(key.clone()).or_insert(at);
                    }
                }
            }
        })
    };
    let url = server.url("/analytics/events");
    let run = Utc::now().timestamp_millis();
    for n in 0..args.lag_samples {
        let marker = format!("lag{run}_{n}");
        let events: Vec<Value> = (0..10)
            .map(|i| json!({"event_type": marker, "user_id": uuid::Uuid::from_u128(i as u128 + 1)}))
            .collect();
        let r = http
            .post(&url)
            .bearer_auth(&tenant.token)
            .json(&json!({ "events": events }))
            .send()
            .await
            .expect("POST lag sample");
        let at = Instant::now();
        assert_eq!(r.status().as_u16(), 202, "lag sample");
        acked.lock().expect("acked").insert(marker, at);
        tokio::time::sleep(Duration::from_millis(args.lag_every_ms)).await;
    }
    // The last samples wait for their tick.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let _ = sink.send(Message::Close(None)).await;
    reader.abort();
    let acked = acked.lock().expect("acked").clone();
    let seen = seen.lock().expect("seen").clone();
    let mut ms = Vec::new();
    let mut early = 0;
    let mut missing = 0;
    for (marker, ack) in &acked {
        match seen.get(marker) {
            Some(tick) if *tick >= *ack => ms.push((*tick - *ack).as_secs_f64() * 1000.0),
            // The broadcast follows the commit at once, so a tick may beat the 202 to the
            // client: the lag is then zero.
            Some(_) => {
                early += 1;
                ms.push(0.0);
            }
            None => missing += 1,
        }
    }
    let out = json!({
        "run": label,
        "samples": acked.len(),
        "ticks": ticks.load(Ordering::Relaxed),
        "tick_before_202": early,
        "missing": missing,
        "lag": common::percentiles(ms, 1),
    });
    println!("  lag {out}");
    out
}

fn markdown(r: &Value) -> String {
    use common::{cell, markdown_table};
    let mut md = String::new();
    md.push_str("# Analytics over HTTP\n\n");
    md.push_str(
        "Generated by `cargo bench --bench analytics_http` (bench/analytics_http.rs): the release \
         server on its own database, tenants provisioned through `POST /tenants`, the load \
         generator (reqwest, bodies serialised once) on the same machine.\n\n",
    );
    md.push_str(&common::markdown_facts(
        r,
        &format!(
            "{} cores, {}",
            r["machine"]["cores"],
            cell(&r["machine"]["postgres"])
        ),
        &[format!("server RSS at the end: {} MB", r["server_rss_mb"])],
    ));
    md.push_str("## Ingest: `POST /analytics/events`, batches of 1,000 events\n\n");
    let mut rows: Vec<&Value> = r["ingest"].as_array().into_iter().flatten().collect();
    if r["ingest_during_lag"].is_object() {
        rows.push(&r["ingest_during_lag"]);
    }
    md.push_str(&markdown_table(
        &[
            "run",
            "tenants",
            "clients",
            "seconds",
            "events/s",
            "503",
            "failed",
            "202 p50 ms",
            "202 p95 ms",
            "202 p99 ms",
        ],
        rows.into_iter().map(|x| {
            vec![
                cell(&x["run"]),
                x["tenants"].to_string(),
                x["clients"].to_string(),
                x["seconds"].to_string(),
                x["events_per_second"].to_string(),
                x["refused_503"].to_string(),
                x["failed"].to_string(),
                x["latency_202"]["p50_ms"].to_string(),
                x["latency_202"]["p95_ms"].to_string(),
                x["latency_202"]["p99_ms"].to_string(),
            ]
        }),
    ));
    md.push_str("\n## Live lag: 202 to the WebSocket tick carrying the batch\n\n");
    md.push_str(&markdown_table(
        &[
            "run", "samples", "ticks", "missing", "p50 ms", "p95 ms", "max ms",
        ],
        r["lag"].as_array().into_iter().flatten().map(|x| {
            vec![
                cell(&x["run"]),
                x["samples"].to_string(),
                x["ticks"].to_string(),
                x["missing"].to_string(),
                x["lag"]["p50_ms"].to_string(),
                x["lag"]["p95_ms"].to_string(),
                x["lag"]["max_ms"].to_string(),
            ]
        }),
    ));
    md.push('\n');
    md
}
