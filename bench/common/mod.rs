//! What the analytics benches (`analytics_store`, `analytics_http`) share: latency percentiles,
//! the facts of the machine a run was taken on, and a run's report written to bench/results/ as
//! JSON and as Markdown. Each bench includes it with `mod common;`.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use tokio_postgres::Client;

/// Nearest-rank p50/p95/p99/max of latencies in milliseconds, rounded to `decimals` places.
pub fn percentiles(mut ms: Vec<f64>, decimals: i32) -> Value {
    if ms.is_empty() {
        return json!({"n": 0});
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    let scale = 10f64.powi(decimals);
    let at = |p: f64| {
        let idx = ((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1;
        (ms[idx] * scale).round() / scale
    };
    json!({"n": ms.len(), "p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99), "max_ms": at(1.0)})
}

const SETTINGS: &str = "select name, setting from pg_settings where name in \
    ('shared_buffers', 'work_mem', 'max_connections', 'synchronous_commit', \
    'max_parallel_workers_per_gather')";

/// Cores, load average, PostgreSQL's version and the settings that move the figures; the
/// PostgreSQL facts are left empty when there is no connection to ask.
pub async fn machine(db: Option<&Client>) -> Value {
    let mut postgres = String::new();
    let mut settings: BTreeMap<String, String> = BTreeMap::new();
    if let Some(db) = db {
        postgres = db
            .query_one("select version()", &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or_default();
        settings = db
            .query(SETTINGS, &[])
            .await
            .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
            .unwrap_or_default();
    }
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "postgres": postgres,
        "settings": settings,
    })
}

/// Writes `report` to bench/results/`<stem>`.json and `markdown` to bench/results/`<stem>`.md.
pub fn write_results(stem: &str, report: &Value, markdown: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/results");
    std::fs::create_dir_all(&dir).expect("results dir");
    std::fs::write(
        dir.join(format!("{stem}.json")),
        serde_json::to_string_pretty(report).expect("json"),
    )
    .expect("write json");
    std::fs::write(dir.join(format!("{stem}.md")), markdown).expect("write markdown");
    println!("\nwrote bench/results/{stem}.json and bench/results/{stem}.md");
}

/// A value as a Markdown cell: strings without their JSON quotes, null as nothing.
pub fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The Markdown list that opens a report: when the run was taken, on what (`machine`), with
/// which arguments, then one item for each of `extra`.
pub fn markdown_facts(r: &Value, machine: &str, extra: &[String]) -> String {
    let mut md = format!(
        "- started {} / finished {}\n- machine: {machine}\n- load average before / after: {} / {}\n- args: `{}`\n",
        cell(&r["started_at"]),
        cell(&r["finished_at"]),
        cell(&r["machine"]["loadavg"]),
        cell(&r["machine_after"]["loadavg"]),
        cell(&r["args"]),
    );
    for item in extra {
        md.push_str(&format!("- {item}\n"));
    }
    md.push('\n');
    md
}

/// A Markdown table: its header row, the separator, then one line for each row.
pub fn markdown_table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut md = format!(
        "| {} |\n|{}\n",
        header.join(" | "),
        "---|".repeat(header.len())
    );
    for row in rows {
        md.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    md
}
