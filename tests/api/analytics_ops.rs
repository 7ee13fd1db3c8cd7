//! Operating analytics: ingest totals in `/metrics`, eviction of idle committers without
//! losing their totals, and what the GDPR export carries of a tenant's analytics.

use std::time::Duration as StdDuration;

use serde_json::{json, Value};
use tenantry::analytics::{AnalyticsRegistry, CommitterConfig, IngestRules, NewEvent};
use tenantry::db::Pools;
use uuid::Uuid;

use crate::helpers::spawn_app;

/// The value of an unlabelled metric in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn metrics_export_the_ingest_totals() {
    let app = spawn_app().await;
    let t = app.create_tenant("metered").await;
    for n in [3usize, 5] {
        let r = app
            .post("/analytics/events", &t.token)
            .json(&json!({ "events": vec![json!({"event_type": "click"}); n] }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
    }
    let text = app.metrics_text().await;
    for (name, value) in [
        ("tenantry_analytics_events_accepted_total", 8.0),
        ("tenantry_analytics_events_committed_total", 8.0),
        ("tenantry_analytics_events_refused_total", 0.0),
        ("tenantry_analytics_events_failed_total", 0.0),
        ("tenantry_analytics_events_pending", 0.0),
        ("tenantry_analytics_committers_active", 1.0),
    ] {
        assert_eq!(metric(&text, name), Some(value), "{name} in\n{text}");
    }
    let flushes = metric(&text, "tenantry_analytics_flushes_total").unwrap_or(0.0);
    assert!((1.0..=2.0).contains(&flushes), "flushes {flushes}");
}

#[tokio::test]
async fn evicting_idle_committers_keeps_the_totals_and_spares_busy_ones() {
    let app = spawn_app().await;
    let (a, b) = (
        app.create_tenant("evict-a").await,
        app.create_tenant("evict-b").await,
    );
    let pool = Pools::new(&app.config).expect("pools").app;
    let registry = AnalyticsRegistry::new(pool, CommitterConfig::default());
    let rules = IngestRules {
        now: chrono::Utc::now(),
        retention_days: Some(30),
    };
    let events = |n: usize| {
        let batch = (0..n)
            .map(|_| NewEvent {
                event_type: "e".into(),
                user_id: Some(Uuid::now_v7().to_string()),
                ..Default::default()
            })
            .collect();
        tenantry::analytics::model::validate_events(batch, &rules).unwrap()
    };
    registry.committer(a.id).submit(events(4)).await.unwrap();
    registry.committer(b.id).submit(events(6)).await.unwrap();
    // b has a live subscriber (an open WebSocket would): it stays.
    let live = registry.committer(b.id).subscribe();
    let before = registry.totals();
    assert_eq!(before.committers_active, 2);
    assert_eq!(before.stats.committed_events, 10);

    assert_eq!(registry.evict_idle(), 1);
    assert!(registry.existing(a.id).is_none());
    assert!(registry.existing(b.id).is_some());
    let after = registry.totals();
    assert_eq!(after.committers_active, 1);
    assert_eq!(after.committers_evicted, 1);
    assert_eq!(after.stats.committed_events, 10, "evicted totals are kept");
    assert_eq!(after.stats.accepted_events, 10);

    // A new committer for a starts from zero; the totals go on growing.
    registry.committer(a.id).submit(events(2)).await.unwrap();
    assert_eq!(registry.totals().stats.committed_events, 12);
    drop(live);
    assert_eq!(registry.evict_idle(), 2);
    let last = registry.totals();
    assert_eq!(
        (last.committers_active, last.stats.committed_events),
        (0, 12)
    );
}

#[tokio::test]
async fn the_export_carries_the_raw_events_and_no_rollups() {
    let app = spawn_app().await;
    let t = app.create_tenant("exported").await;
    let user = Uuid::now_v7();
    let r = app
        .post("/analytics/events", &t.token)
        .json(&json!({ "events": [
            {"event_type": "login", "user_id": user, "feature": "sso", "metadata": {"ip": "x"}},
            {"event_type": "click", "user_id": user},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let r = app.get("/tenant/export", &t.token).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = tokio::time::timeout(StdDuration::from_secs(30), r.text())
        .await
        .expect("export in time")
        .unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let events: Vec<&Value> = lines.iter().filter(|l| l["type"] == "events").collect();
    assert_eq!(events.len(), 2, "{text}");
    assert!(events.iter().all(|e| e["user_id"] == user.to_string()));
    assert!(events.iter().any(|e| e["metadata"]["ip"] == "x"));
    for derived in ["counters", "user_activity", "type_activity"] {
        assert!(
            lines.iter().all(|l| l["type"] != derived),
            "{derived} in the export"
        );
    }
}

#[tokio::test]
async fn a_retention_pass_opens_only_the_tenants_whose_cutoff_moved() {
    use chrono::{Duration, Utc};
    use tenantry::analytics::buckets::floor_day;
    use tenantry::analytics::retention::{cleanup_all, CleanedUpTo, RetentionConfig};
    use tenantry::analytics::store::insert_batch;
    use tenantry::analytics::ValidEvent;
    use tenantry::db::{begin_tenant_tx, tenant_schema_name};

    let app = spawn_app().await;
    let t = app.create_tenant("retained").await; // free plan: 30 days
    let pool = Pools::new(&app.config).unwrap().app;
    // Written through the store: the API refuses events this old, and a pass that skips a
    // tenant would leave such a row in place, which is what shows it was skipped.
    let insert_old = |at: chrono::DateTime<Utc>| {
        let pool = pool.clone();
        async move {
            let mut conn = pool.get().await.unwrap();
            let tx = begin_tenant_tx(&mut conn, t.id).await.unwrap();
            let event = ValidEvent {
                id: Uuid::now_v7(),
                event_type: "click".into(),
                user_id: Some(Uuid::now_v7().to_string()),
                feature: None,
                metadata: None,
                occurred_at: at,
                received_at: at,
            };
            insert_batch(&tx, t.id, &[event]).await.unwrap();
            tx.commit().await.unwrap();
        }
    };
    let db = app.superuser_db().await;
    let stored = || async {
        db.query_one(
            &format!("select count(*) from {}.events", tenant_schema_name(t.id)),
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
    };
    let now = Utc::now();
    let config = RetentionConfig::default();
    let mut cleaned = CleanedUpTo::default();

    insert_old(now - Duration::days(40)).await;
    let reports = cleanup_all(&pool, now, &config, &mut cleaned)
        .await
        .unwrap();
    let cutoff = floor_day(now - Duration::days(30));
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].tenant_id, t.id);
    assert_eq!(reports[0].events_deleted, 1);
    assert_eq!(cleaned.get(t.id), Some(cutoff));
    assert_eq!(stored().await, 0);

    // Same cutoff (a later pass of the same day): the tenant is not opened again.
    insert_old(now - Duration::days(40)).await;
    let reports = cleanup_all(&pool, now, &config, &mut cleaned)
        .await
        .unwrap();
    assert!(reports.is_empty(), "{reports:?}");
    assert_eq!(stored().await, 1);

    // A day later the cutoff has moved, and the tenant is cleaned again.
    let reports = cleanup_all(&pool, now + Duration::days(1), &config, &mut cleaned)
        .await
        .unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].events_deleted, 1);
    assert_eq!(stored().await, 0);
}
