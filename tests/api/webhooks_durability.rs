//! Durability of webhook delivery with the real server binary: killed with SIGKILL while
//! deliveries are under way and restarted on the same database, every event still reaches the
//! receiver (at least once, each with its one message id). Webhooks keep nothing in Redis, so
//! losing Redis cannot lose or strand a delivery; the leases and the queue are rows.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};
use tenantry::auth::JwtKeys;
use tenantry::db::template::TenantTemplate;
use tenantry::input::Text;
use tenantry::tenancy::provision::{provision, ProvisionContext};

use crate::helpers::{new_tenant, test_db, Server};
use crate::webhooks::{Receiver, Reply};

#[tokio::test]
async fn every_event_is_delivered_after_a_kill_9_mid_delivery() {
    let db = test_db().await;
    let pools = db.pools();
    let jwt = {
        use secrecy::ExposeSecret;
        JwtKeys::hs256(db.config.jwt_secret.expose_secret(), db.config.jwt_ttl)
    };
    let mut tenant = new_tenant("wh-durable");
    tenant.plan = Some(Text::parse("pro").unwrap());
    let tenant = provision(
        &ProvisionContext {
            owner: &pools.owner,
            template: &TenantTemplate::embedded(),
            config: &db.config,
            jwt: &jwt,
        },
        tenant,
        None,
    )
    .await
    .unwrap();
    let receiver = Receiver::start(Reply::Status(200)).await;
    // The first attempts hang (within the 10 s timeout), so the kill finds them under way.
    receiver.script([
        Reply::Hang(Duration::from_secs(8)),
        Reply::Hang(Duration::from_secs(8)),
        Reply::Hang(Duration::from_secs(8)),
    ]);
    let env = [
        ("WEBHOOK_ALLOW_PRIVATE_TARGETS", "true"),
        ("JOB_POLL_INTERVAL_MS", "50"),
    ];
    let http = reqwest::Client::new();
    let mut first = Server::start_with(&db, 1, &env).await;
    let r = http
        .post(first.url("/webhooks"))
        .bearer_auth(&tenant.token)
        .json(&json!({"url": receiver.url, "events": ["project.*"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let events = 10;
    for i in 0..events {
        let r = http
            .post(first.url("/projects"))
            .bearer_auth(&tenant.token)
            .json(&json!({"name": format!("Durable {i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
    }
    for _ in 0..300 {
        if receiver.count() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(receiver.count() >= 1, "no delivery started before the kill");
    first.kill();

    // The attempts under way are leased to the dead process; the restarted one sends them
    // once the lease (30 s) is over, and everything not yet sent at once.
    let _second = Server::start_with(&db, 1, &env).await;
    // Delivered: the receiver's 200 reached the sender, which recorded it.
    let su = db.superuser_db().await;
    let mut succeeded = 0i64;
    for _ in 0..180 {
        succeeded = su
            .query_one(
                "select count(*) from app.webhook_messages \
                 where tenant_id = $1 and status = 'succeeded'",
                &[&tenant.tenant.id],
            )
            .await
            .unwrap()
            .get(0);
        if succeeded >= events as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        succeeded, events as i64,
        "every event delivered after the restart"
    );
    let cut_off = receiver
        .all()
        .iter()
        .filter(|r| !r.answered_at_once)
        .count();
    assert!(cut_off >= 1, "the kill found no attempt under way");
    let all: HashSet<String> = receiver
        .all()
        .iter()
        .map(|r| r.header("webhook-id"))
        .collect();
    assert_eq!(
        all.len(),
        events,
        "one message id per event, reused by every attempt"
    );
    let bodies: HashSet<String> = receiver
        .all()
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            body["data"]["name"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(bodies.len(), events);
}
