//! Durability of webhook delivery. The real server binary killed with SIGKILL while deliveries
//! are under way and restarted on the same database: every event still reaches the receiver
//! (at least once, each with its one message id). Redis flushed mid-run: nothing is lost,
//! since webhooks keep nothing there (the queue, the leases and the rate window are rows).

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

/// Redis flushed mid-run: the server uses a Redis database of its own (number 14, which no
/// other test uses), flushed while events are being written and delivered. Every event still
/// arrives: the queue, the leases and the rate window are rows in PostgreSQL, and a tenant's
/// config snapshot (its delivery limit) is read again from PostgreSQL.
#[tokio::test]
async fn flushing_redis_mid_run_loses_no_delivery() {
    let (mut config, database) = crate::helpers::test_config().await;
    let redis_url = "redis://127.0.0.1:6379/14";
    config.redis_url = redis_url.to_string().into();
    config.webhook_allow_private_targets = true;
    config.job_poll_interval = Duration::from_millis(50);
    let app = crate::helpers::spawn_app_with(config, database).await;
    let t = app.create_tenant_on_plan("wh-flush", "pro").await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    let r = app
        .post("/webhooks", &t.token)
        .json(&json!({"url": receiver.url, "events": ["project.*"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let redis = redis::Client::open(redis_url).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let events = 20;
    for i in 0..events {
        if i == events / 2 {
            let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.unwrap();
        }
        crate::fixtures::create_project(&app, &t.token, &format!("Flushed {i}")).await;
    }
    let mut names = HashSet::new();
    for _ in 0..200 {
        names = receiver
            .all()
            .iter()
            .map(|r| {
                let body: Value = serde_json::from_slice(&r.body).unwrap();
                body["data"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        if names.len() >= events {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        names.len(),
        events,
        "every event delivered across the flush"
    );
    let ids: Vec<String> = receiver
        .all()
        .iter()
        .map(|r| r.header("webhook-id"))
        .collect();
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "no event sent twice");
}
