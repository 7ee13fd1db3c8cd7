//! Durability of analytics ingestion: the real server binary is killed with SIGKILL right
//! after a 202, or in the middle of several clients' streams, and restarted on the same
//! database. Every acknowledged event must be counted after the restart, and a batch is
//! either stored whole or not at all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use chrono::{Duration, SecondsFormat, Utc};
use serde_json::{json, Value};
use tenantry::db::tenant_schema_name;

use crate::helpers::{provision_tenant, test_db, Server, TestDb};

pub(crate) fn batch(tag: &str, n: usize) -> Value {
    let events: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "event_type": if i % 2 == 0 { "durable" } else { "sturdy" },
                "user_id": uuid::Uuid::now_v7(),
                "feature": format!("f{}", i % 4),
                "metadata": { "batch": tag, "i": i },
            })
        })
        .collect();
    json!({ "events": events })
}

async fn summary_events(http: &reqwest::Client, server: &Server, token: &str) -> i64 {
    let now = Utc::now();
    let from = (now - Duration::days(1)).to_rfc3339_opts(SecondsFormat::Micros, true);
    let to = (now + Duration::hours(1)).to_rfc3339_opts(SecondsFormat::Micros, true);
    let r = http
        .get(server.url("/analytics/summary"))
        .query(&[("from", from), ("to", to)])
        .bearer_auth(token)
        .send()
        .await
        .expect("GET /analytics/summary");
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.expect("summary body");
    body["events"].as_i64().expect("events")
}

/// Stored events per batch tag, and the rollups' total, read directly as the superuser.
pub(crate) async fn stored(db: &TestDb, tenant: uuid::Uuid) -> (HashMap<String, i64>, i64, i64) {
    let su = db.superuser_db().await;
    let schema = tenant_schema_name(tenant);
    let per_batch = su
        .query(
            &format!("select metadata ->> 'batch', count(*) from {schema}.events group by 1"),
            &[],
        )
        .await
        .expect("recount")
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect();
    let raw: i64 = su
        .query_one(&format!("select count(*) from {schema}.events"), &[])
        .await
        .expect("count")
        .get(0);
    let counted: i64 = su
        .query_one(
            &format!("select coalesce(sum(n), 0)::int8 from {schema}.counters where kind = 't'"),
            &[],
        )
        .await
        .expect("rollup")
        .get(0);
    (per_batch, raw, counted)
}

#[tokio::test]
async fn a_batch_acknowledged_right_before_sigkill_is_there_after_restart() {
    let db = test_db().await;
    let tenant = provision_tenant(&db.config, &db.pools(), "durable").await;
    let http = reqwest::Client::new();

    let mut acknowledged = 0;
    for round in 0..3 {
        let mut server = Server::start(&db).await;
        let n = 250 + round * 100;
        let r = http
            .post(server.url("/analytics/events"))
            .bearer_auth(&tenant.token)
            .json(&batch(&format!("round-{round}"), n))
            .send()
            .await
            .expect("POST /analytics/events");
        assert_eq!(r.status().as_u16(), 202);
        // Killed the moment the 202 is in: whatever the server still had to do is lost.
        server.kill();
        let body: Value = r.json().await.expect("202 body");
        assert_eq!(body["accepted"], n);
        acknowledged += n as i64;

        let server = Server::start(&db).await;
        assert_eq!(
            summary_events(&http, &server, &tenant.token).await,
            acknowledged,
            "summary after restart {round}"
        );
    }
    let (per_batch, raw, counted) = stored(&db, tenant.tenant.id).await;
    assert_eq!(raw, acknowledged);
    assert_eq!(counted, acknowledged, "hourly rollups match the raw events");
    assert_eq!(per_batch.len(), 3);
}

#[tokio::test]
async fn concurrent_posters_killed_mid_stream_lose_no_acknowledged_batch_and_leave_none_partial() {
    let db = test_db().await;
    let tenant = provision_tenant(&db.config, &db.pools(), "midstream").await;
    let http = reqwest::Client::new();
    let mut server = Server::start(&db).await;

    let acked: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
    let sizes: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let mut posters = Vec::new();
    for p in 0..6 {
        let (http, url, token) = (
            http.clone(),
            server.url("/analytics/events"),
            tenant.token.clone(),
        );
        let (acked, sizes) = (acked.clone(), sizes.clone());
        posters.push(tokio::spawn(async move {
            for k in 0.. {
                let tag = format!("p{p}-{k}");
                // Sizes vary so that flushes coalesce requests of different sizes.
                let n = 1 + (p * 37 + k * 53) % 400;
                sizes.lock().unwrap().insert(tag.clone(), n);
                let sent = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&batch(&tag, n))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().as_u16() == 202 => {
                        let body: Value = r.json().await.unwrap_or(Value::Null);
                        if body["accepted"] == n {
                            acked.lock().unwrap().push((tag, n));
                        } else {
                            // The answer was cut by the kill: not an acknowledgement.
                            return;
                        }
                    }
                    Ok(r) if r.status().as_u16() == 503 => {
                        tokio::time::sleep(StdDuration::from_millis(20)).await;
                    }
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    // Connection refused or reset: the server is gone.
                    Err(_) => return,
                }
            }
        }));
    }
    // Kill while every poster has requests in flight, after a fair number of 202s.
    for _ in 0..1_000 {
        if acked.lock().unwrap().len() >= 40 {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(5)).await;
    }
    server.kill();
    for poster in posters {
        poster.await.expect("poster");
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 40,
        "only {} batches acknowledged",
        acked.len()
    );

    let server = Server::start(&db).await;
    let (per_batch, raw, counted) = stored(&db, tenant.tenant.id).await;
    for (tag, n) in &acked {
        assert_eq!(
            per_batch.get(tag).copied(),
            Some(*n as i64),
            "acknowledged batch {tag} of {n} events"
        );
    }
    // Batches whose answer never arrived may be stored, but only whole.
    let sizes = sizes.lock().unwrap().clone();
    for (tag, count) in &per_batch {
        assert_eq!(
            Some(*count as usize),
            sizes.get(tag).copied(),
            "batch {tag}"
        );
    }
    assert_eq!(counted, raw, "rollups match the raw events");
    assert_eq!(summary_events(&http, &server, &tenant.token).await, raw);
    let acknowledged: usize = acked.iter().map(|(_, n)| n).sum();
    assert!(raw >= acknowledged as i64);
}
