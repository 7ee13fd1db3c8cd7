//! Graceful shutdown of the real server binary, and the supervisor's face in `/metrics`.

use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tenantry::analytics::store::flush_lock_key;
use tenantry::db::tenant_schema_name;
use uuid::Uuid;

use crate::analytics_durability::{batch, stored};
use crate::helpers::{provision_tenant, spawn_app, test_db, Server, TestDb};

async fn stored_api_calls(db: &TestDb, tenant: Uuid) -> i64 {
    db.superuser_db()
        .await
        .query_one(
            &format!(
                "select coalesce(sum(n), 0)::int8 from {}.counters where kind = 'a'",
                tenant_schema_name(tenant)
            ),
            &[],
        )
        .await
        .expect("count api calls")
        .get(0)
}

async fn pending_events(http: &reqwest::Client, server: &Server) -> Option<i64> {
    let text = http
        .get(server.url("/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("tenantry_analytics_events_pending "))
        .and_then(|v| v.trim().parse().ok())
}

/// SIGTERM while one tenant's requests wait for their commit and another tenant's clients
/// post events and read as fast as they can. The server must stop taking connections, answer
/// the requests under way, write the `api_calls` it counted (their flush interval is a
/// minute here, so only the shutdown writes them) and exit 0; every acknowledged event is
/// stored.
///
/// One HTTP worker: with several, a worker that has drained its own connections stops its
/// runtime, and the pooled database connections it opened close with it, though a request
/// still running on another worker may be using one of them (that request then fails; none
/// is acknowledged that was not committed).
#[tokio::test]
async fn sigterm_during_ingest_loses_no_acknowledged_event_and_no_counted_call() {
    let db = test_db().await;
    let pools = db.pools();
    let held = provision_tenant(&db.config, &pools, "held").await;
    let busy = provision_tenant(&db.config, &pools, "busy").await;
    let mut server = Server::start_with(&db, 1, &[("API_CALLS_FLUSH_MS", "60000")]).await;
    let http = reqwest::Client::new();

    // The held tenant's requests: the first one's flush waits for the lock, the others queue
    // behind it. All of them are under way when SIGTERM arrives.
    let lock = db.superuser_db().await;
    lock.execute(
        "select pg_advisory_lock(hashtextextended($1, 0))",
        &[&flush_lock_key(held.tenant.id)],
    )
    .await
    .expect("hold the flush lock");
    let held_sizes = [3usize, 5, 7];
    let mut waiting = Vec::new();
    for (k, n) in held_sizes.iter().enumerate() {
        let request = reqwest::Client::new()
            .post(server.url("/analytics/events"))
            .bearer_auth(&held.token)
            .json(&batch(&format!("held-{k}"), *n));
        waiting.push(tokio::spawn(request.send()));
        let expected = held_sizes[..=k].iter().sum::<usize>() as i64;
        let mut pending = None;
        for _ in 0..500 {
            pending = pending_events(&http, &server).await;
            if pending == Some(expected) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(pending, Some(expected), "held request {k} is queued");
    }

    // The busy tenant: posters and readers until the server goes away.
    let acked: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
    let answered = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for p in 0..4 {
        let (http, base, token) = (
            reqwest::Client::new(),
            server.address.clone(),
            busy.token.clone(),
        );
        let (acked, answered, sent) = (acked.clone(), answered.clone(), sent.clone());
        clients.push(tokio::spawn(async move {
            for k in 0.. {
                sent.fetch_add(1, Ordering::SeqCst);
                let response = if p % 2 == 0 {
                    let tag = format!("p{p}-{k}");
                    let n = 1 + (p * 31 + k * 17) % 120;
                    let r = http
                        .post(format!("{base}/analytics/events"))
                        .bearer_auth(&token)
                        .json(&batch(&tag, n))
                        .send()
                        .await;
                    if let Ok(r) = r {
                        let status = r.status();
                        let body: Value = r.json().await.unwrap_or(Value::Null);
                        if status.as_u16() == 202 && body["accepted"] == n {
                            acked.lock().unwrap().push((tag, n));
                        }
                        Ok(status)
                    } else {
                        Err(())
                    }
                } else {
                    let r = http
                        .get(format!("{base}/tenant"))
                        .bearer_auth(&token)
                        .send()
                        .await;
                    r.map(|r| r.status()).map_err(|_| ())
                };
                match response {
                    Ok(status) if status.is_success() => {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(status) => panic!("unexpected status {status}"),
                    // Refused or reset: the server has stopped.
                    Err(()) => return,
                }
            }
        }));
    }
    for _ in 0..1_000 {
        if acked.lock().unwrap().len() >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        acked.lock().unwrap().len() >= 20,
        "the busy tenant is ingesting"
    );

    server.terminate();
    // New connections are refused while the held requests are still under way...
    let port: u16 = server
        .address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let mut refused = false;
    for _ in 0..600 {
        if TcpStream::connect(("127.0.0.1", port)).is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        refused,
        "the server still accepts connections after SIGTERM"
    );
    for client in clients {
        client.await.expect("client");
    }
    assert!(
        waiting.iter().all(|w| !w.is_finished()),
        "the held requests wait for their commit"
    );
    // ...and are answered once their events can be written.
    drop(lock);
    for (k, request) in waiting.into_iter().enumerate() {
        let response = request.await.expect("join").expect("held request answered");
        assert_eq!(response.status().as_u16(), 202, "held request {k}");
        let body: Value = response.json().await.expect("202 body");
        assert_eq!(body["accepted"], held_sizes[k]);
    }
    let status = server.exit_status().await;
    assert!(status.success(), "exit status {status}");

    let (per_batch, _, _) = stored(&db, held.tenant.id).await;
    for (k, n) in held_sizes.iter().enumerate() {
        assert_eq!(per_batch.get(&format!("held-{k}")), Some(&(*n as i64)));
    }
    let (per_batch, raw, counted) = stored(&db, busy.tenant.id).await;
    assert_eq!(counted, raw, "rollups match the raw events");
    let acked = acked.lock().unwrap().clone();
    for (tag, n) in &acked {
        assert_eq!(
            per_batch.get(tag),
            Some(&(*n as i64)),
            "acknowledged batch {tag}"
        );
    }
    // Every request answered with success was counted before it was answered; none is lost.
    let calls = stored_api_calls(&db, busy.tenant.id).await;
    let (answered, sent) = (
        answered.load(Ordering::SeqCst) as i64,
        sent.load(Ordering::SeqCst) as i64,
    );
    assert!(
        calls >= answered && calls <= sent,
        "api_calls counted {calls}, answered {answered}, sent {sent}"
    );
    assert_eq!(
        stored_api_calls(&db, held.tenant.id).await,
        held_sizes.len() as i64
    );
}

#[tokio::test]
async fn every_background_task_has_its_restart_counter_in_metrics() {
    let app = spawn_app().await;
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The test server runs no purge or retention loop (purge_interval: None).
    for task in [
        "api_calls_flush",
        "cache_invalidations",
        "analytics_upkeep",
        "outbox_worker",
    ] {
        let series = format!("tenantry_background_task_restarts_total{{task=\"{task}\"}} 0");
        assert!(
            metrics.contains(&series),
            "{series} missing from\n{metrics}"
        );
    }
}
