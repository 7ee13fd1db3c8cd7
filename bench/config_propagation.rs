//! A config change seen by a second instance: `cargo bench --bench config_propagation -- [options]`.
//!
//! Starts two servers (`tenantry serve`, the binary cargo builds beside this bench) on one fresh
//! database `tenantry_bench_config_propagation` (override with CONFIG_PROPAGATION_DATABASE_URL;
//! it is dropped and created again, so its name must contain `bench`) and the Redis of
//! REDIS_URL, provisions one tenant through the first, and has both hold its config snapshot.
//! Then, `--changes` times, it changes the tenant's branding through the first server
//! (`PUT /settings/branding`, a new primary colour each time) and polls `GET /branding` on the
//! second until it shows the new colour. Each sample is the time from the first server's answer
//! to the second server's first answer with the new colour (and, beside it, from the request
//! being sent). Every kind of change (plan, suspension, settings) takes the same way between
//! instances: the writer drops the Redis copy, reloads its own actor, publishes on
//! `tenantry:invalidate`; the other instance's actor reloads from PostgreSQL.
//!
//! Results: bench/results/config_propagation.{json,md}. Run it under the bench lock on a shared
//! machine: `flock /work/bench.lock cargo bench --bench config_propagation`.

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

use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Parser;
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use server::{Server, OPERATOR_TOKEN};
use tenantry::db::migrate::connect;

#[derive(Parser, Debug, Clone)]
struct Args {
    /// Changes to time.
    #[arg(long, default_value_t = 200)]
    changes: usize,
    /// Pause between two changes, so that each is timed alone.
    #[arg(long, default_value_t = 20)]
    pause_ms: u64,
    /// A change not seen by the second server after this long counts as missed.
    #[arg(long, default_value_t = 5_000)]
    give_up_ms: u64,
    /// HTTP worker threads of each server (0: one per core).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// cargo bench passes --bench; accepted and ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let config = server::fresh_database(
        "CONFIG_PROPAGATION_DATABASE_URL",
        "tenantry_bench_config_propagation",
    )
    .await;
    let db = connect(config.database_url.expose_secret(), &[]).await.ok();
    // Only the first server runs the outbox worker; nothing here needs two.
    let one = server::start_server(
        &config,
        args.workers,
        "config_propagation_one",
        &[("JOB_WORKER", "true")],
    )
    .await;
    let two = server::start_server(
        &config,
        args.workers,
        "config_propagation_two",
        &[("JOB_WORKER", "false")],
    )
    .await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(8)
        .build()
        .expect("http client");
    let mut report = json!({
        "started_at": Utc::now(),
        "args": format!("{args:?}"),
        "machine": common::machine(db.as_ref()).await,
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
    });
    println!("machine: {}", report["machine"]);

    let r = http
        .post(one.url("/tenants"))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({
            "name": "bench propagation",
            "slug": "bench-propagation",
            "plan": "pro",
            "admin_email": "admin@bench-propagation.example.com",
            "admin_password": "correct-horse-battery",
        }))
        .send()
        .await
        .expect("POST /tenants");
    assert_eq!(r.status().as_u16(), 201, "provision the tenant");
    let created: Value = r.json().await.expect("json");
    let token = created["credentials"]["token"]
        .as_str()
        .expect("token")
        .to_string();

    // Both servers hold the snapshot, and the second one listens: a first change, untimed,
    // must reach it.
    let warm = change(
        &http,
        &one,
        &two,
        &token,
        "#010101",
        Duration::from_secs(30),
    )
    .await;
    assert!(warm.seen.is_some(), "the second server never saw a change");

    let mut from_answer = Vec::with_capacity(args.changes);
    let mut from_request = Vec::with_capacity(args.changes);
    let mut missed = 0;
    for i in 0..args.changes {
        let color = format!("#{:06x}", 0x100000 + i);
        let sample = change(
            &http,
            &one,
            &two,
            &token,
            &color,
            Duration::from_millis(args.give_up_ms),
        )
        .await;
        match sample.seen {
            Some(seen) => {
                from_answer.push(ms(seen.saturating_duration_since(sample.answered)));
                from_request.push(ms(seen.saturating_duration_since(sample.sent)));
            }
            None => missed += 1,
        }
        tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
    }
    report["samples"] = json!(args.changes);
    report["missed"] = json!(missed);
    report["from_answer"] = common::percentiles(from_answer, 2);
    report["from_request"] = common::percentiles(from_request, 2);
    report["finished_at"] = json!(Utc::now());
    report["machine_after"] = common::machine(db.as_ref()).await;
    println!(
        "seen on the second instance, from the writer's answer: {}",
        report["from_answer"]
    );
    common::write_results("config_propagation", &report, &markdown(&report));
}

struct Sample {
    sent: Instant,
    answered: Instant,
    seen: Option<Instant>,
}

async fn change(
    http: &reqwest::Client,
    one: &Server,
    two: &Server,
    token: &str,
    color: &str,
    give_up: Duration,
) -> Sample {
    let sent = Instant::now();
    let r = http
        .put(one.url("/settings/branding"))
        .bearer_auth(token)
        .json(&json!({"logo_url": null, "primary_color": color, "accent_color": "#000000"}))
        .send()
        .await
        .expect("PUT /settings/branding");
    assert_eq!(
        r.status().as_u16(),
        200,
        "{}",
        r.text().await.unwrap_or_default()
    );
    let answered = Instant::now();
    loop {
        let body: Value = http
            .get(two.url("/branding"))
            .header("X-Tenant-ID", "bench-propagation")
            .send()
            .await
            .expect("GET /branding")
            .json()
            .await
            .expect("branding json");
        if body["primary_color"] == color {
            return Sample {
                sent,
                answered,
                seen: Some(Instant::now()),
            };
        }
        if answered.elapsed() > give_up {
            return Sample {
                sent,
                answered,
                seen: None,
            };
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn markdown(r: &Value) -> String {
    let machine = format!(
        "{} cores, {}",
        common::cell(&r["machine"]["cores"]),
        common::cell(&r["machine"]["postgres"])
    );
    let mut md = String::from(
        "# Config change seen by a second instance\n\nGenerated by `cargo bench --bench config_propagation` (bench/config_propagation.rs): two `tenantry serve` processes on one database and one Redis; a branding change through the first, polled on the second with `GET /branding`.\n\n",
    );
    md.push_str(&common::markdown_facts(
        r,
        &machine,
        &[
            format!("build of the servers: {}", common::cell(&r["build"])),
            format!(
                "changes: {}, not seen within the give-up time: {}",
                common::cell(&r["samples"]),
                common::cell(&r["missed"])
            ),
        ],
    ));
    let row = |name: &str, v: &Value| {
        vec![
            name.to_string(),
            common::cell(&v["n"]),
            common::cell(&v["p50_ms"]),
            common::cell(&v["p95_ms"]),
            common::cell(&v["p99_ms"]),
            common::cell(&v["max_ms"]),
        ]
    };
    md.push_str(&common::markdown_table(
        &["from", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"],
        [
            row("the writer's answer", &r["from_answer"]),
            row("the change request sent", &r["from_request"]),
        ],
    ));
    md.push_str("\nGoal (issue 12): p99 under 1 s.\n");
    md
}
