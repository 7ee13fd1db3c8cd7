//! Flag evaluation inside the process: `cargo bench --bench flags_eval -- [options]`.
//!
//! Builds what a request evaluates (`tenantry::flags::FlagInputs`: the process's definitions and
//! the overrides of the tenant's config snapshot): 50 flag definitions of every JSON type, two thirds with plan values, a third with a percentage
//! rollout, and overrides for a fifth of them. Then it times, one call at a time:
//! 1. single evaluations (`FlagInputs::evaluate`: the lookup by key, the resolution and, for
//!    rollout flags, the murmur3 bucket of the targeting key), random flags and keys;
//! 2. evaluations of all 50 flags (`evaluate_all`, what `GET /features` and the OFREP bulk
//!    endpoint do), values cloned out as the responses do.
//!
//! No database, no HTTP: the pure function requests answer from, in memory. Results:
//! bench/results/flags_eval.{json,md}. CPU-bound and short; on a shared machine run it under
//! the bench lock: `flock /work/bench.lock cargo bench --bench flags_eval`.

// A benchmark harness: a panic on the unexpected stops the run, which is what it should do;
// its casts are of counts, durations and percentiles of one run, far from any type's limits.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

// Its millisecond percentiles are too coarse here: this bench counts in microseconds.
#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use chrono::Utc;
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tenantry::flags::{Definition, Definitions, FlagInputs};

#[derive(Parser, Debug, Clone)]
struct Args {
    /// Timed single evaluations.
    #[arg(long, default_value_t = 2_000_000)]
    evaluations: usize,
    /// Timed evaluations of every flag.
    #[arg(long, default_value_t = 50_000)]
    bulk: usize,
    /// Distinct targeting keys (user ids).
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// cargo bench passes --bench; accepted and ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

const FLAGS: usize = 50;

fn value_of(kind: usize, n: usize) -> Value {
    match kind % 4 {
        0 => json!(n.is_multiple_of(2)),
        1 => json!(format!("variant-{n}")),
        2 => json!(n * 10),
        _ => json!({"color": format!("#{:06x}", n * 4099), "limit": n, "beta": true}),
    }
}

fn inputs(rng: &mut StdRng) -> (Definitions, BTreeMap<String, Value>) {
    let mut definitions = BTreeMap::new();
    let mut overrides = BTreeMap::new();
    for i in 0..FLAGS {
        let key = format!("team-{}.feature-{i:02}", i % 5);
        let mut plans = BTreeMap::new();
        if i % 3 != 0 {
            plans.insert("pro".to_string(), value_of(i, i + 1));
            plans.insert("enterprise".to_string(), value_of(i, i + 2));
        }
        let rollout_percent = (i % 3 == 1).then(|| rng.random_range(5..=95u8));
        if i % 5 == 0 {
            overrides.insert(key.clone(), value_of(i, i + 3));
        }
        definitions.insert(
            key.clone(),
            Definition {
                key,
                description: format!("flag number {i}"),
                default: value_of(i, i),
                plans,
                rollout_percent,
                version: 1 + (i as i32 % 7),
                updated_at: Utc::now(),
            },
        );
    }
    (definitions, overrides)
}

/// Nearest-rank percentiles of nanosecond samples, in microseconds.
fn micros(mut ns: Vec<u64>) -> Value {
    ns.sort_unstable();
    let at = |p: f64| {
        let idx = ((p * ns.len() as f64).ceil() as usize).clamp(1, ns.len()) - 1;
        ns[idx] as f64 / 1000.0
    };
    let mean = ns.iter().sum::<u64>() as f64 / ns.len() as f64 / 1000.0;
    json!({"n": ns.len(), "mean_us": (mean * 1000.0).round() / 1000.0, "p50_us": at(0.50),
           "p95_us": at(0.95), "p99_us": at(0.99), "p999_us": at(0.999), "max_us": at(1.0)})
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let machine = runtime.block_on(common::machine(None));
    let started_at = Utc::now();
    let mut rng = StdRng::seed_from_u64(7);
    let (definitions, overrides) = inputs(&mut rng);
    let inputs = FlagInputs {
        definitions: &definitions,
        overrides: &overrides,
    };
    let keys: Vec<String> = (0..args.keys)
        .map(|_| uuid::Uuid::from_u128(rng.random()).hyphenated().to_string())
        .collect();
    let flag_keys: Vec<&String> = inputs.definitions.keys().collect();
    let plans = ["free", "pro", "enterprise"];

    // The cost of reading the clock twice, which every sample below includes.
    let mut clock = Vec::with_capacity(100_000);
    for _ in 0..100_000 {
        let t = Instant::now();
        clock.push(t.elapsed().as_nanos() as u64);
    }

    let picks: Vec<(usize, usize, usize)> = (0..args.evaluations)
        .map(|_| {
            (
                rng.random_range(0..FLAGS),
                rng.random_range(0..keys.len()),
                rng.random_range(0..plans.len()),
            )
        })
        .collect();
    for &(f, k, p) in picks.iter().take(200_000) {
        black_box(inputs.evaluate(flag_keys[f], plans[p], &keys[k]));
    }
    let mut single = Vec::with_capacity(picks.len());
    for &(f, k, p) in &picks {
        let t = Instant::now();
        let result = inputs.evaluate(black_box(flag_keys[f]), plans[p], &keys[k]);
        black_box(result);
        single.push(t.elapsed().as_nanos() as u64);
    }
    let total = Instant::now();
    for &(f, k, p) in &picks {
        black_box(inputs.evaluate(black_box(flag_keys[f]), plans[p], &keys[k]));
    }
    let per_second = picks.len() as f64 / total.elapsed().as_secs_f64();

    let mut bulk = Vec::with_capacity(args.bulk);
    for i in 0..args.bulk {
        let (key, plan) = (&keys[i % keys.len()], plans[i % plans.len()]);
        let t = Instant::now();
        let values: Vec<(String, Value)> = inputs
            .evaluate_all(plan, black_box(key))
            .map(|(d, e)| (d.key.clone(), e.value.clone()))
            .collect();
        black_box(values);
        bulk.push(t.elapsed().as_nanos() as u64);
    }

    let report = json!({
        "bench": "flags_eval",
        "started_at": started_at.to_rfc3339(),
        "finished_at": Utc::now().to_rfc3339(),
        "args": format!("{args:?}"),
        "machine": machine,
        "machine_after": runtime.block_on(common::machine(None)),
        "flags": FLAGS,
        "with_rollout": inputs.definitions.values().filter(|d| d.rollout_percent.is_some()).count(),
        "with_plan_values": inputs.definitions.values().filter(|d| !d.plans.is_empty()).count(),
        "overrides": inputs.overrides.len(),
        "clock_read": micros(clock),
        "single": micros(single),
        "single_per_second": per_second.round() as u64,
        "all_50": micros(bulk),
    });
    println!("{}", serde_json::to_string_pretty(&report).expect("json"));

    let row = |name: &str, v: &Value| {
        vec![
            name.to_string(),
            common::cell(&v["n"]),
            common::cell(&v["mean_us"]),
            common::cell(&v["p50_us"]),
            common::cell(&v["p95_us"]),
            common::cell(&v["p99_us"]),
            common::cell(&v["p999_us"]),
            common::cell(&v["max_us"]),
        ]
    };
    let mut md =
        String::from("# Flag evaluation in the process\n\n`cargo bench --bench flags_eval`\n\n");
    md.push_str(&common::markdown_facts(
        &report,
        &format!(
            "{} cores",
            common::cell(&report["machine"]["cores"])
        ),
        &[
            format!(
                "{} flags: {} with plan values, {} with a rollout (murmur3 bucket), {} overridden; {} targeting keys",
                FLAGS,
                report["with_plan_values"],
                report["with_rollout"],
                report["overrides"],
                args.keys
            ),
            format!(
                "single evaluations back to back, untimed: {} a second on one core",
                report["single_per_second"]
            ),
            "every sample includes reading the clock twice (the `clock` row)".to_string(),
        ],
    ));
    md.push_str(&common::markdown_table(
        &[
            "what",
            "n",
            "mean µs",
            "p50 µs",
            "p95 µs",
            "p99 µs",
            "p99.9 µs",
            "max µs",
        ],
        [
            row(
                "one flag (lookup + resolution + rollout hash)",
                &report["single"],
            ),
            row("all 50 flags, values cloned", &report["all_50"]),
            row("clock", &report["clock_read"]),
        ],
    ));
    common::write_results("flags_eval", &report, &md);
}
