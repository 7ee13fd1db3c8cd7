//! Tenant schemas at scale (issue 2). Against a fresh database (dropped and recreated):
//!
//! a. provisions N tenants through `tenancy::provision` (the code behind POST /tenants) from
//!    several concurrent clients: per-tenant latency percentiles and total time;
//! b. `tenantry migrate` with nothing to do over N schemas: elapsed;
//! c. one new template migration (a column and an index) across all N schemas, shipped as a
//!    template folder (`tenantry migrate --tenant-template DIR`): elapsed;
//! d. PostgreSQL backend memory after every tenant's schema went through the app pool, with the
//!    per-connection schema budget and with the budget effectively off.
//!
//! Run: `cargo bench --bench tenant_schemas` (10,000 tenants) or
//! `cargo bench --bench tenant_schemas -- --tenants 200`. Prints its figures and writes
//! bench/results/tenant_schemas.json and bench/results/tenant_schemas.md.
//!
//! Under `cargo test` (no `--bench` argument) it runs as a smoke test with 20 tenants in a
//! throwaway database and writes no results, so the benchmark cannot rot unnoticed.

// A benchmark harness: a panic on the unexpected stops the run, which is what it should do;
// its casts are of counts, durations and percentiles of one run, far from any type's limits.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use rand::seq::SliceRandom;
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::json;
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

use tenantry::auth::{password, JwtKeys};
use tenantry::config::{with_database, Config};
use tenantry::db::migrate::{self, MigrateOptions};
use tenantry::db::template::TenantTemplate;
use tenantry::db::{begin_tenant_tx, tenant_schema_name, Pools};
use tenantry::input::Text;
use tenantry::tenancy::provision::{provision, ProvisionContext};
use tenantry::tenancy::NewTenant;

const RESULTS_JSON: &str = "bench/results/tenant_schemas.json";
const RESULTS_MD: &str = "bench/results/tenant_schemas.md";
const GOAL_PROVISION_P95_MS: f64 = 50.0;
const GOAL_MIGRATE_NOOP_S: f64 = 10.0;
const GOAL_MIGRATE_TEMPLATE_S: f64 = 300.0;
const GOAL_MEMORY_MB: f64 = 2048.0;

#[derive(Parser, Debug, Clone)]
#[command(about = "tenant-schema benchmark: provisioning, migrations and backend memory")]
struct Args {
    /// Tenants to provision.
    #[arg(long, env = "BENCH_TENANTS", default_value_t = 10_000)]
    tenants: usize,
    /// Concurrent provisioning clients (the owner pool gets as many connections).
    #[arg(long, env = "BENCH_CONCURRENCY", default_value_t = 4)]
    concurrency: usize,
    /// Tenants provisioned afterwards from a single client.
    #[arg(long, default_value_t = 50)]
    single_client: usize,
    /// `tenantry migrate --jobs` for the template migration (default: the CLI's own default).
    #[arg(long, env = "BENCH_MIGRATE_JOBS")]
    migrate_jobs: Option<usize>,
    /// Concurrent requests in the memory phase; the app pool gets as many connections.
    #[arg(long, env = "BENCH_REQUEST_CONCURRENCY", default_value_t = 16)]
    request_concurrency: usize,
    /// Passes over all tenants (shuffled each time) in the memory phase: over time every pooled
    /// connection meets every tenant, which is what the budget is for.
    #[arg(long, env = "BENCH_PASSES", default_value_t = 3)]
    passes: usize,
    /// Schema budget per connection (default: TENANT_SCHEMAS_PER_CONNECTION, i.e. 500).
    #[arg(long, env = "BENCH_BUDGET")]
    budget: Option<usize>,
    /// The "budget off" run.
    #[arg(long, default_value_t = 1_000_000)]
    unbounded_budget: usize,
    /// Stops the budget-off run early when its backends hold this much (MB): the machine may be
    /// shared.
    #[arg(long, env = "BENCH_MEMORY_LIMIT_MB", default_value_t = 6144)]
    memory_limit_mb: u64,
    /// Skips the budget-off run.
    #[arg(long)]
    skip_unbounded: bool,
    /// Database to drop, recreate and use.
    #[arg(long, env = "BENCH_DATABASE", default_value = "tenantry_bench_schemas")]
    database: String,
    /// Leaves the database in place at the end (it is dropped by default: 10,000 schemas weigh).
    #[arg(long)]
    keep_database: bool,
    /// Does not write bench/results/.
    #[arg(long)]
    no_write: bool,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

impl Args {
    fn smoke() -> Args {
        Args {
            tenants: 20,
            concurrency: 2,
            single_client: 3,
            migrate_jobs: Some(2),
            request_concurrency: 4,
            passes: 1,
            budget: Some(5),
            unbounded_budget: 1_000_000,
            memory_limit_mb: 1024,
            skip_unbounded: false,
            database: format!("tenantry_test_bench_{}", Uuid::new_v4().simple()),
            keep_database: false,
            no_write: true,
            bench: false,
        }
    }
}

fn main() -> ExitCode {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let args = if bench_mode {
        Args::parse()
    } else {
        // Under `cargo test` the arguments are libtest's (filters, --nocapture): ignore them.
        Args::smoke()
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, bench_mode)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tenant_schemas benchmark failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Serialize)]
struct Machine {
    nproc: usize,
    cpu: String,
    memory_gb: f64,
    postgres: String,
    shared_buffers: String,
    max_connections: String,
    load_start: String,
    load_end: String,
    other_active_backends_start: i64,
    other_active_backends_end: i64,
}

#[derive(Serialize)]
struct Provisioning {
    tenants: usize,
    concurrency: usize,
    total_s: f64,
    per_second: f64,
    mean_ms: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    goal_p95_ms: f64,
    met: bool,
    /// Sequential costs of the two halves of provisioning, measured after the N tenants exist.
    argon2_hash_ms: f64,
    schema_ddl_ms: f64,
    /// Provisioning from one client (after the N tenants exist): no queueing for the CPU.
    single_client: usize,
    single_client_p50_ms: f64,
    single_client_p95_ms: f64,
}

#[derive(Serialize)]
struct Timed {
    elapsed_s: f64,
    goal_s: f64,
    met: bool,
    report: String,
}

#[derive(Serialize, Clone)]
struct MemorySample {
    pass: usize,
    pass_s: f64,
    backends: usize,
    schemas_cached: usize,
    pss_mb: f64,
    private_mb: f64,
    max_backend_mb: f64,
}

#[derive(Serialize)]
struct MemoryRun {
    label: String,
    budget: usize,
    pool_size: usize,
    connections_opened: usize,
    samples: Vec<MemorySample>,
    stopped_early: bool,
    final_pss_mb: f64,
    final_private_mb: f64,
    /// Private memory per tenant schema cached, over the run's backends at its last pass.
    per_schema_kb: Option<f64>,
    /// Pss of the pool once every connection has met as many schemas as it may (the budget, or
    /// every tenant without one), from the per-schema cost: where the run is heading.
    steady_state_pss_mb: Option<f64>,
    steady_state_schemas_per_connection: usize,
    /// The goal applies to the run with the budget; the run without is there to show why.
    goal_mb: Option<f64>,
    met: Option<bool>,
}

#[derive(Serialize)]
struct Memory {
    available: bool,
    /// Private memory of an app-role backend that has run one query and touched no tenant
    /// schema.
    idle_backend_private_mb: f64,
    /// Extra private memory per tenant schema a backend has touched (from the budget-off run).
    per_schema_kb: Option<f64>,
    runs: Vec<MemoryRun>,
}

async fn run(args: Args, bench_mode: bool) -> Result<()> {
    let started = Instant::now();
    let mut config = Config::from_env().context("configuration")?;
    config.database_url = with_database(config.database_url.expose_secret(), &args.database).into();
    config.app_database_url =
        with_database(config.app_database_url.expose_secret(), &args.database).into();
    config.admin_database_url =
        with_database(config.admin_database_url.expose_secret(), &args.database).into();
    config.owner_pool_size = args.concurrency.max(1);
    config.app_shared_pool_size = args.request_concurrency.max(1);
    config.admin_pool_size = 1;
    if let Some(budget) = args.budget {
        config.tenant_schemas_per_connection = budget.max(1);
    }
    let budget = config.tenant_schemas_per_connection;

    // Pasted into DROP/CREATE DATABASE: only a plain identifier is accepted.
    if !tenantry::config::is_plain_identifier(&args.database) {
        bail!("--database: use lowercase letters, digits and underscores");
    }
    let maintenance = connect(&with_database(
        config.database_url.expose_secret(),
        "postgres",
    ))
    .await?;
    let machine_start = (
        load_average(),
        other_active(&maintenance, &args.database).await?,
    );
    let postgres: String = maintenance.query_one("select version()", &[]).await?.get(0);
    let shared_buffers = show(&maintenance, "shared_buffers").await?;
    let max_connections = show(&maintenance, "max_connections").await?;
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let (cpu, memory_gb) = machine_facts();
    println!(
        "tenant_schemas benchmark{}",
        if bench_mode { "" } else { " (smoke run)" }
    );
    println!(
        "  machine:    {nproc} cpu ({cpu}), {memory_gb:.1} GB RAM, load {}",
        machine_start.0
    );
    println!("  postgres:   {postgres}");
    println!("              shared_buffers {shared_buffers}, max_connections {max_connections}");
    if machine_start.1 > 0 {
        println!(
            "  note:       {} other active backend(s) on the server at start: figures may be disturbed",
            machine_start.1
        );
    }
    if busy_cpu(nproc) {
        println!(
            "  note:       the load average is above the core count: other work competes for the CPU and inflates latencies"
        );
    }
    println!(
        "  parameters: {} tenants, {} provisioning clients, app pool {}, budget {budget}, {} pass(es)",
        args.tenants, args.concurrency, args.request_concurrency, args.passes
    );

    step(&format!("recreating database {}", args.database));
    maintenance
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            args.database
        ))
        .await?;
    migrate::create_database_if_missing(config.database_url.expose_secret()).await?;
    migrate::migrate(
        &config,
        MigrateOptions {
            jobs: 2,
            template: TenantTemplate::embedded(),
            progress: false,
        },
    )
    .await?;

    let result = phases(&args, &config, budget).await;

    let machine_end = (
        load_average(),
        other_active(&maintenance, &args.database).await?,
    );
    if !args.keep_database {
        maintenance
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                args.database
            ))
            .await?;
    }
    let (provisioning, migrate_noop, migrate_template, memory) = result?;
    if machine_end.1 > 0 {
        println!(
            "note: {} other active backend(s) on the server at the end: figures may be disturbed",
            machine_end.1
        );
    }
    let machine = Machine {
        nproc,
        cpu,
        memory_gb,
        postgres,
        shared_buffers,
        max_connections,
        load_start: machine_start.0,
        load_end: machine_end.0,
        other_active_backends_start: machine_start.1,
        other_active_backends_end: machine_end.1,
    };
    let report = json!({
        "benchmark": "tenant_schemas",
        "finished_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "git_commit": git_commit(),
        "command": format!("cargo bench --bench tenant_schemas -- --tenants {}", args.tenants),
        "elapsed_s": round(started.elapsed().as_secs_f64()),
        "machine": machine,
        "parameters": {
            "tenants": args.tenants,
            "provisioning_clients": args.concurrency,
            "app_pool_size": args.request_concurrency,
            "budget": budget,
            "unbounded_budget": args.unbounded_budget,
            "passes": args.passes,
        },
        "provisioning": provisioning,
        "migrate_noop": migrate_noop,
        "migrate_template": migrate_template,
        "backend_memory": memory,
    });
    let markdown = markdown(&report);
    println!("\n{markdown}");
    if !args.no_write {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        std::fs::create_dir_all(root.join("bench/results"))?;
        std::fs::write(
            root.join(RESULTS_JSON),
            serde_json::to_string_pretty(&report)? + "\n",
        )?;
        std::fs::write(root.join(RESULTS_MD), markdown)?;
        println!("wrote {RESULTS_JSON} and {RESULTS_MD}");
    }
    Ok(())
}

async fn phases(
    args: &Args,
    config: &Config,
    budget: usize,
) -> Result<(Provisioning, Timed, Timed, Memory)> {
    let (provisioning, tenants) = provision_tenants(args, config).await?;
    let migrate_noop = migrate_noop(config).await?;
    let migrate_template = migrate_template(args, config).await?;
    let memory = backend_memory(args, config, budget, &tenants).await?;
    Ok((provisioning, migrate_noop, migrate_template, memory))
}

// ---------------------------------------------------------------------------------------------
// a. provisioning

fn new_tenant(slug: String) -> NewTenant {
    // Made here from a number, so never holding a NUL.
    let text = |s: String| Text::parse(s).expect("text without NUL");
    NewTenant {
        name: text(format!("Bench {slug}")),
        admin_email: text(format!("admin@{slug}.example.com")),
        slug: text(slug),
        subdomain: None,
        plan: None,
        admin_password: Some(text("bench-password-0123".into())),
    }
}

async fn provision_tenants(args: &Args, config: &Config) -> Result<(Provisioning, Vec<Uuid>)> {
    step(&format!(
        "a. provisioning {} tenants with {} concurrent clients",
        args.tenants, args.concurrency
    ));
    let pools = Pools::new(config)?;
    let template = TenantTemplate::embedded();
    let jwt = JwtKeys::hs256(config.jwt_secret.expose_secret(), config.jwt_ttl);
    let ctx = ProvisionContext {
        owner: &pools.owner,
        template: &template,
        config,
        jwt: &jwt,
    };
    let progress_every = (args.tenants / 10).max(1);
    let started = Instant::now();
    let mut done = 0usize;
    let mut latencies = Vec::with_capacity(args.tenants);
    let mut tenants = Vec::with_capacity(args.tenants);
    let mut results = stream::iter(0..args.tenants)
        .map(|i| {
            let ctx = &ctx;
            async move {
                let t = Instant::now();
                let created = provision(ctx, new_tenant(format!("bench-{i:06}")), None)
                    .await
                    .map_err(|e| anyhow::anyhow!("provisioning tenant {i}: {e}"))?;
                Ok::<_, anyhow::Error>((created.tenant.id, t.elapsed()))
            }
        })
        .buffer_unordered(args.concurrency.max(1));
    while let Some((id, latency)) = results.try_next().await? {
        tenants.push(id);
        latencies.push(latency);
        done += 1;
        if done.is_multiple_of(progress_every) {
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "   {done}/{} provisioned, {:.0}/s, load {}",
                args.tenants,
                done as f64 / secs,
                load_average()
            );
        }
    }
    drop(results);
    let total = started.elapsed();

    // Where the time goes: the password hash (CPU, on the blocking pool) against the
    // transaction with the schema DDL. Sequential, so neither waits for the other.
    let samples = 10;
    let t = Instant::now();
    for _ in 0..samples {
        tokio::task::spawn_blocking(|| password::hash("bench-password-0123"))
            .await?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let argon2_hash_ms = ms(t.elapsed()) / samples as f64;
    let mut ddl = Duration::ZERO;
    for _ in 0..samples {
        let mut conn = pools.owner.get().await?;
        let tx = conn.transaction().await?;
        let t = Instant::now();
        migrate::create_tenant_schema(&tx, Uuid::now_v7(), &template, config).await?;
        ddl += t.elapsed();
        tx.rollback().await?;
    }
    let schema_ddl_ms = ms(ddl) / samples as f64;
    // The same provisioning from a single client: its latency without queueing for the CPU.
    let mut single = Vec::with_capacity(args.single_client);
    for i in 0..args.single_client {
        let slug = format!("bench-single-{i}");
        let t = Instant::now();
        let created = provision(&ctx, new_tenant(slug), None)
            .await
            .map_err(|e| anyhow::anyhow!("single-client provisioning: {e}"))?;
        single.push(t.elapsed());
        tenants.push(created.tenant.id);
    }
    single.sort();
    pools.owner.close();

    latencies.sort();
    let mean_ms = latencies.iter().map(|d| ms(*d)).sum::<f64>() / latencies.len().max(1) as f64;
    let p95 = percentile(&latencies, 95.0);
    let result = Provisioning {
        tenants: args.tenants,
        concurrency: args.concurrency,
        total_s: round(total.as_secs_f64()),
        per_second: round(args.tenants as f64 / total.as_secs_f64()),
        mean_ms: round(mean_ms),
        p50_ms: percentile(&latencies, 50.0),
        p95_ms: p95,
        p99_ms: percentile(&latencies, 99.0),
        max_ms: latencies.last().map(|d| round(ms(*d))).unwrap_or(0.0),
        goal_p95_ms: GOAL_PROVISION_P95_MS,
        met: p95 < GOAL_PROVISION_P95_MS,
        argon2_hash_ms: round(argon2_hash_ms),
        schema_ddl_ms: round(schema_ddl_ms),
        single_client: single.len(),
        single_client_p50_ms: percentile(&single, 50.0),
        single_client_p95_ms: percentile(&single, 95.0),
    };
    println!(
        "   total {:.1}s ({:.0}/s); latency mean {:.1} ms, p50 {:.1}, p95 {:.1}, p99 {:.1}, max {:.1} ms [goal p95 < {GOAL_PROVISION_P95_MS} ms: {}]",
        result.total_s,
        result.per_second,
        result.mean_ms,
        result.p50_ms,
        result.p95_ms,
        result.p99_ms,
        result.max_ms,
        verdict(result.met)
    );
    println!(
        "   one client, {} tenants: p50 {:.1} ms, p95 {:.1} ms; its halves one at a time: argon2 hash {:.1} ms, schema DDL {:.1} ms",
        result.single_client,
        result.single_client_p50_ms,
        result.single_client_p95_ms,
        result.argon2_hash_ms,
        result.schema_ddl_ms
    );
    Ok((result, tenants))
}

// ---------------------------------------------------------------------------------------------
// b. and c. `tenantry migrate`

fn tenantry(config: &Config) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tenantry"));
    cmd.env("DATABASE_URL", config.database_url.expose_secret())
        .env("APP_DATABASE_URL", config.app_database_url.expose_secret())
        .env(
            "ADMIN_DATABASE_URL",
            config.admin_database_url.expose_secret(),
        )
        .env("LOG_FORMAT", "pretty")
        .env("RUST_LOG", "warn")
        .env_remove("TENANT_TEMPLATE_DIR")
        .stdin(std::process::Stdio::null());
    cmd
}

async fn run_migrate(config: &Config, extra: &[&str]) -> Result<(Duration, String)> {
    let mut cmd = tenantry(config);
    cmd.arg("migrate").arg("--no-progress").args(extra);
    let (output, elapsed) = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let output = cmd.output();
        (output, started.elapsed())
    })
    .await?;
    let output = output.context("running tenantry migrate")?;
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if !output.status.success() {
        bail!(
            "tenantry migrate failed ({}): {stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok((elapsed, stdout))
}

async fn migrate_noop(config: &Config) -> Result<Timed> {
    step("b. tenantry migrate with nothing to do");
    let (elapsed, report) = run_migrate(config, &[]).await?;
    let secs = elapsed.as_secs_f64();
    println!(
        "   {secs:.2}s (whole process) [goal < {GOAL_MIGRATE_NOOP_S}s: {}]\n   {report}",
        verdict(secs < GOAL_MIGRATE_NOOP_S)
    );
    Ok(Timed {
        elapsed_s: round(secs),
        goal_s: GOAL_MIGRATE_NOOP_S,
        met: secs < GOAL_MIGRATE_NOOP_S,
        report,
    })
}

/// The built-in template plus one migration that adds a column and an index.
fn template_dir(next_version: i32) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("tenantry-bench-template-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tenant_template");
    for entry in std::fs::read_dir(&source)? {
        let entry = entry?;
        if entry.path().extension().is_some_and(|e| e == "sql") {
            std::fs::copy(entry.path(), dir.join(entry.file_name()))?;
        }
    }
    std::fs::write(
        dir.join(format!("V{next_version}__bench_add_column.sql")),
        "ALTER TABLE events ADD COLUMN bench_source text;\n\
         CREATE INDEX events_bench_source_idx ON events (tenant_id, bench_source);\n",
    )?;
    Ok(dir)
}

async fn migrate_template(args: &Args, config: &Config) -> Result<Timed> {
    let next_version = TenantTemplate::embedded().latest_version() + 1;
    step(&format!(
        "c. tenantry migrate --tenant-template DIR: V{next_version} adds a column and an index to every schema"
    ));
    let dir = template_dir(next_version)?;
    let dir_arg = dir.display().to_string();
    let jobs = args.migrate_jobs.map(|j| j.to_string());
    let mut extra = vec!["--tenant-template", dir_arg.as_str()];
    if let Some(jobs) = &jobs {
        extra.extend(["--jobs", jobs.as_str()]);
    }
    let result = run_migrate(config, &extra).await;
    let _ = std::fs::remove_dir_all(&dir);
    let (elapsed, report) = result?;
    let db = connect(config.database_url.expose_secret()).await?;
    let migrated: i64 = db
        .query_one(
            "select count(*) from app.tenants where schema_version = $1",
            &[&next_version],
        )
        .await?
        .get(0);
    let total: i64 = db
        .query_one("select count(*) from app.tenants", &[])
        .await?
        .get(0);
    if migrated != total {
        bail!("only {migrated} of {total} tenant schemas reached V{next_version}");
    }
    let secs = elapsed.as_secs_f64();
    println!(
        "   {secs:.1}s for {total} schemas ({:.0} schemas/s) [goal < {GOAL_MIGRATE_TEMPLATE_S}s: {}]\n   {report}",
        total as f64 / secs,
        verdict(secs < GOAL_MIGRATE_TEMPLATE_S)
    );
    Ok(Timed {
        elapsed_s: round(secs),
        goal_s: GOAL_MIGRATE_TEMPLATE_S,
        met: secs < GOAL_MIGRATE_TEMPLATE_S,
        report,
    })
}

// ---------------------------------------------------------------------------------------------
// d. backend memory

#[derive(Default, Clone, Copy)]
struct ProcMemory {
    pss_kb: u64,
    private_kb: u64,
}

/// /proc/<pid>/smaps_rollup of a PostgreSQL backend: readable when we run as root (or as the
/// postgres user) on the database's machine.
fn proc_memory(pid: i32) -> Option<ProcMemory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let mut m = ProcMemory::default();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let value: u64 = value.parse().unwrap_or(0);
        match key {
            "Pss:" => m.pss_kb = value,
            "Private_Clean:" | "Private_Dirty:" => m.private_kb += value,
            _ => {}
        }
    }
    Some(m)
}

/// Memory of the app-role backends of the benchmark database.
async fn app_backends(
    monitor: &Client,
    database: &str,
    role: &str,
) -> Result<Vec<(i32, ProcMemory)>> {
    let rows = monitor
        .query(
            "select pid from pg_stat_activity where datname = $1 and usename = $2 \
             and pid <> pg_backend_pid()",
            &[&database, &role],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let pid: i32 = r.get(0);
            proc_memory(pid).map(|m| (pid, m))
        })
        .collect())
}

async fn wait_for_no_backends(monitor: &Client, database: &str, role: &str) -> Result<()> {
    for _ in 0..100 {
        let n: i64 = monitor
            .query_one(
                "select count(*) from pg_stat_activity where datname = $1 and usename = $2",
                &[&database, &role],
            )
            .await?
            .get(0);
        if n == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("app-role backends did not exit after their pool closed")
}

async fn backend_memory(
    args: &Args,
    config: &Config,
    budget: usize,
    tenants: &[Uuid],
) -> Result<Memory> {
    let monitor = connect(config.database_url.expose_secret()).await?;
    let role = config.roles.app.clone();
    wait_for_no_backends(&monitor, &args.database, &role).await?;

    // An app backend that touched no tenant schema, for reference.
    let idle_private_kb = {
        let pools = Pools::new(config)?;
        {
            let mut conn = pools.app.get().await?;
            let tx = begin_tenant_tx(&mut conn, Uuid::nil()).await?;
            tx.query_one("select count(*) from app.tenants", &[])
                .await?;
            tx.commit().await?;
        }
        let backends = app_backends(&monitor, &args.database, &role).await?;
        pools.app.close();
        wait_for_no_backends(&monitor, &args.database, &role).await?;
        backends.first().map(|(_, m)| m.private_kb)
    };
    let Some(idle_private_kb) = idle_private_kb else {
        println!(
            "d. backend memory: /proc/<pid>/smaps_rollup of the PostgreSQL backends is not readable \
             (run as root on the database's machine); skipped"
        );
        return Ok(Memory {
            available: false,
            idle_backend_private_mb: 0.0,
            per_schema_kb: None,
            runs: Vec::new(),
        });
    };

    let mut runs = Vec::new();
    let mut per_schema_kb = None;
    let mut plans = vec![("budget", budget)];
    if !args.skip_unbounded {
        plans.push(("budget off", args.unbounded_budget));
    }
    for (label, run_budget) in plans {
        step(&format!(
            "d. backend memory, {label} ({run_budget} schemas per connection): {} pass(es) over {} tenants, app pool {}",
            args.passes,
            tenants.len(),
            args.request_concurrency
        ));
        let mut cfg = config.clone();
        cfg.tenant_schemas_per_connection = run_budget;
        let pools = Pools::new(&cfg)?;
        // Which schemas each backend has touched, by backend pid, to relate memory to them.
        let mut touched: HashMap<i32, HashSet<Uuid>> = HashMap::new();
        let mut samples = Vec::new();
        let mut stopped_early = false;
        let mut run_per_schema_kb = None;
        let mut order = tenants.to_vec();
        for pass in 1..=args.passes {
            order.shuffle(&mut rand::rng());
            let t = Instant::now();
            let seen: Vec<(i32, Uuid)> = stream::iter(order.iter().copied())
                .map(|tenant| {
                    let pool = pools.app.clone();
                    async move {
                        let mut conn = pool.get().await?;
                        conn.touch_tenant_schema(tenant);
                        let tx = begin_tenant_tx(&mut conn, tenant).await?;
                        let row = tx
                            .query_one(
                                &format!(
                                    "select count(*), pg_backend_pid() from {}.events where tenant_id = $1",
                                    tenant_schema_name(tenant)
                                ),
                                &[&tenant],
                            )
                            .await?;
                        tx.commit().await?;
                        Ok::<_, anyhow::Error>((row.get::<_, i32>(1), tenant))
                    }
                })
                .buffer_unordered(args.request_concurrency.max(1))
                .try_collect()
                .await?;
            let pass_s = t.elapsed().as_secs_f64();
            for (pid, tenant) in seen {
                touched.entry(pid).or_default().insert(tenant);
            }
            let backends = app_backends(&monitor, &args.database, &role).await?;
            let schemas_cached: usize = backends
                .iter()
                .map(|(pid, _)| touched.get(pid).map_or(0, HashSet::len))
                .sum();
            let sample = MemorySample {
                pass,
                pass_s: round(pass_s),
                backends: backends.len(),
                schemas_cached,
                pss_mb: mb(backends.iter().map(|(_, m)| m.pss_kb).sum()),
                private_mb: mb(backends.iter().map(|(_, m)| m.private_kb).sum()),
                max_backend_mb: mb(backends.iter().map(|(_, m)| m.pss_kb).max().unwrap_or(0)),
            };
            println!(
                "   pass {pass}: {:.1}s; {} backends holding {} tenant schemas: Pss {:.0} MB, private {:.0} MB, largest backend {:.0} MB",
                sample.pass_s,
                sample.backends,
                sample.schemas_cached,
                sample.pss_mb,
                sample.private_mb,
                sample.max_backend_mb
            );
            run_per_schema_kb = (schemas_cached > 0).then(|| {
                let extra_kb = backends.iter().map(|(_, m)| m.private_kb).sum::<u64>() as f64
                    - (idle_private_kb * backends.len() as u64) as f64;
                round(extra_kb / schemas_cached as f64)
            });
            samples.push(sample);
            let private_mb = samples.last().map_or(0.0, |s| s.private_mb);
            if private_mb > args.memory_limit_mb as f64 && pass < args.passes {
                println!(
                    "   stopping: over --memory-limit-mb {} (the machine may be shared)",
                    args.memory_limit_mb
                );
                stopped_early = true;
                break;
            }
        }
        pools.app.close();
        drop(pools);
        wait_for_no_backends(&monitor, &args.database, &role).await?;
        let last = samples.last().cloned();
        let final_pss_mb = last.as_ref().map_or(0.0, |s| s.pss_mb);
        let final_private_mb = last.as_ref().map_or(0.0, |s| s.private_mb);
        // Shared memory (the backends' share of shared_buffers and the executable) stays what it
        // was; the private part grows with the schemas each connection holds.
        let steady_state_pss_mb = run_per_schema_kb.map(|kb| {
            let schemas = run_budget.min(tenants.len()) as f64;
            let pool = args.request_concurrency as f64;
            round(
                final_pss_mb - final_private_mb
                    + pool * (mb(idle_private_kb) + schemas * kb / 1024.0),
            )
        });
        let with_goal = label == "budget";
        let met = with_goal.then(|| {
            final_pss_mb < GOAL_MEMORY_MB
                && steady_state_pss_mb.is_none_or(|mb| mb < GOAL_MEMORY_MB)
        });
        println!(
            "   {} connection(s) opened in all; final Pss {final_pss_mb:.0} MB; once every connection holds {} schemas: about {:.0} MB{}",
            touched.len(),
            run_budget.min(tenants.len()),
            steady_state_pss_mb.unwrap_or(0.0),
            match met {
                Some(met) => format!(" [goal < {GOAL_MEMORY_MB} MB: {}]", verdict(met)),
                None => String::new(),
            }
        );
        if run_budget == args.unbounded_budget || per_schema_kb.is_none() {
            per_schema_kb = run_per_schema_kb;
        }
        runs.push(MemoryRun {
            label: label.to_string(),
            budget: run_budget,
            pool_size: args.request_concurrency,
            connections_opened: touched.len(),
            samples,
            stopped_early,
            final_pss_mb,
            final_private_mb,
            per_schema_kb: run_per_schema_kb,
            steady_state_pss_mb,
            steady_state_schemas_per_connection: run_budget.min(tenants.len()),
            goal_mb: with_goal.then_some(GOAL_MEMORY_MB),
            met,
        });
    }
    if let Some(kb) = per_schema_kb {
        println!(
            "   each tenant schema a backend has touched costs it about {kb:.0} KB; a connection that met all {} schemas would hold about {:.0} MB, a pool of {} about {:.1} GB",
            tenants.len(),
            kb * tenants.len() as f64 / 1024.0,
            args.request_concurrency,
            kb * tenants.len() as f64 * args.request_concurrency as f64 / 1024.0 / 1024.0
        );
    }
    Ok(Memory {
        available: true,
        idle_backend_private_mb: mb(idle_private_kb),
        per_schema_kb,
        runs,
    })
}

// ---------------------------------------------------------------------------------------------
// reporting

fn markdown(r: &serde_json::Value) -> String {
    let m = &r["machine"];
    let p = &r["provisioning"];
    let yes = |v: &serde_json::Value| {
        if v.as_bool() == Some(true) {
            "yes"
        } else {
            "**no**"
        }
    };
    let mut s = String::new();
    s.push_str(&format!(
        "### tenant_schemas: {} tenants\n\n{} · {} cpu ({}) · {} GB RAM · load {} → {} · {}\n\n",
        r["parameters"]["tenants"],
        r["finished_at"].as_str().unwrap_or(""),
        m["nproc"],
        m["cpu"].as_str().unwrap_or(""),
        m["memory_gb"],
        m["load_start"].as_str().unwrap_or(""),
        m["load_end"].as_str().unwrap_or(""),
        m["postgres"]
            .as_str()
            .unwrap_or("")
            .split(" on ")
            .next()
            .unwrap_or(""),
    ));
    s.push_str("| measure | result | goal | met |\n|---|---|---|---|\n");
    s.push_str(&format!(
        "| provisioning, {} clients: p50 / p95 / p99 / mean | {} / {} / {} / {} ms | p95 < 50 ms | {} |\n",
        p["concurrency"], p["p50_ms"], p["p95_ms"], p["p99_ms"], p["mean_ms"], yes(&p["met"])
    ));
    s.push_str(&format!(
        "| provisioning, total | {} s ({} tenants/s) | | |\n",
        p["total_s"], p["per_second"]
    ));
    s.push_str(&format!(
        "| provisioning, 1 client ({} tenants): p50 / p95 | {} / {} ms | | |\n",
        p["single_client"], p["single_client_p50_ms"], p["single_client_p95_ms"]
    ));
    s.push_str(&format!(
        "| its halves, one at a time: argon2 hash / schema DDL (no commit) | {} / {} ms | | |\n",
        p["argon2_hash_ms"], p["schema_ddl_ms"]
    ));
    s.push_str(&format!(
        "| `tenantry migrate`, nothing to do | {} s | < 10 s | {} |\n",
        r["migrate_noop"]["elapsed_s"],
        yes(&r["migrate_noop"]["met"])
    ));
    s.push_str(&format!(
        "| `tenantry migrate --tenant-template`, column + index on every schema | {} s | < 300 s | {} |\n",
        r["migrate_template"]["elapsed_s"],
        yes(&r["migrate_template"]["met"])
    ));
    let memory = &r["backend_memory"];
    if let Some(runs) = memory["runs"].as_array() {
        for run in runs {
            let samples = run["samples"].as_array().cloned().unwrap_or_default();
            let last = samples.last().cloned().unwrap_or_default();
            let has_goal = !run["goal_mb"].is_null();
            let growth = match (samples.first(), samples.last()) {
                (Some(first), Some(last)) if samples.len() > 1 => format!(
                    ", +{:.0} MB a pass",
                    (last["pss_mb"].as_f64().unwrap_or(0.0)
                        - first["pss_mb"].as_f64().unwrap_or(0.0))
                        / (samples.len() - 1) as f64
                ),
                _ => String::new(),
            };
            s.push_str(&format!(
                "| backend memory, {} ({} schemas/connection), pool {}, after {} pass(es) over all tenants: Pss (private) | {} MB ({} MB): {} backends caching {} schemas{} | {} | {} |\n",
                run["label"].as_str().unwrap_or(""),
                run["budget"],
                run["pool_size"],
                last["pass"],
                last["pss_mb"],
                last["private_mb"],
                last["backends"],
                last["schemas_cached"],
                growth,
                if has_goal { "< 2048 MB" } else { "none: shows why the budget exists" },
                if has_goal { yes(&run["met"]) } else { "" },
            ));
            if let Some(steady) = run["steady_state_pss_mb"].as_f64() {
                let holds = &run["steady_state_schemas_per_connection"];
                s.push_str(&format!(
                    "| ... estimated once every connection holds {holds} schemas | {} | {} | {} |\n",
                    if steady >= 1024.0 {
                        format!("{:.1} GB", steady / 1024.0)
                    } else {
                        format!("{steady:.0} MB")
                    },
                    if has_goal { "< 2048 MB" } else { "" },
                    if has_goal { yes(&run["met"]) } else { "" },
                ));
            }
        }
        if let Some(kb) = memory["per_schema_kb"].as_f64() {
            s.push_str(&format!(
                "| backend memory per tenant schema touched | {kb} KB | | |\n"
            ));
        }
    } else {
        s.push_str("| backend memory | not measured (/proc of the backends not readable) | | |\n");
    }
    s
}

// ---------------------------------------------------------------------------------------------
// helpers

async fn connect(url: &str) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connecting to {}", redact(url)))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    }
}

async fn show(client: &Client, setting: &str) -> Result<String> {
    Ok(client
        .query_one("select current_setting($1)", &[&setting])
        .await?
        .get(0))
}

/// Client backends busy on other databases: another benchmark or test run on the same server.
async fn other_active(client: &Client, database: &str) -> Result<i64> {
    Ok(client
        .query_one(
            "select count(*) from pg_stat_activity where state = 'active' \
             and backend_type = 'client backend' and datname is distinct from $1 \
             and pid <> pg_backend_pid()",
            &[&database],
        )
        .await?
        .get(0))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

/// Whether the 1-minute load average, read before the benchmark starts working, exceeds the cores.
fn busy_cpu(nproc: usize) -> bool {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .is_some_and(|load| load > nproc as f64 + 1.0)
}

fn machine_facts() -> (String, f64) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let memory_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kb| round(kb / 1024.0 / 1024.0))
        .unwrap_or(0.0);
    (cpu, memory_gb)
}

fn git_commit() -> Option<String> {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn step(what: &str) {
    println!("\n{what}");
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mb(kb: u64) -> f64 {
    round(kb as f64 / 1024.0)
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Nearest-rank percentile of sorted durations, in ms.
fn percentile(sorted: &[Duration], pct: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    round(ms(sorted[rank.clamp(1, sorted.len()) - 1]))
}
