//! Every API request of a tenant is metered as `api_calls`, for that tenant only.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn api_requests_are_counted_per_tenant() {
    let app = spawn_app().await;
    let a = app.create_tenant("alpha").await;
    let b = app.create_tenant("beta").await;
    for _ in 0..5 {
        assert_eq!(
            app.get("/tenant", &a.token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
            200
        );
    }
    let now = chrono::Utc::now();
    let range = [
        ("from", (now - chrono::Duration::hours(1)).to_rfc3339()),
        ("to", (now + chrono::Duration::hours(1)).to_rfc3339()),
    ];
    let api_calls = |token: String| {
        let request = app.get("/analytics/summary", &token).query(&range);
        async move {
            let body: Value = request.send().await.unwrap().json().await.unwrap();
            body["api_calls"].as_u64().unwrap()
        }
    };
    let mut seen = 0;
    for _ in 0..100 {
        seen = api_calls(a.token.clone()).await;
        if seen >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen >= 5, "A's requests were not metered: {seen}");
    // B made only its own summary requests; none of A's are counted there.
    let b_calls = api_calls(b.token.clone()).await;
    assert!(b_calls < 5, "B counted A's requests: {b_calls}");
}

#[tokio::test]
async fn a_tenant_that_cannot_be_written_does_not_hold_back_the_others() {
    let app = spawn_app().await;
    let tenants = [
        app.create_tenant("first").await,
        app.create_tenant("broken").await,
        app.create_tenant("third").await,
    ];
    // The second one's counts can no longer be written.
    let db = app.superuser_db().await;
    db.batch_execute(&format!(
        "drop schema {} cascade",
        tenantry::db::tenant_schema_name(tenants[1].id)
    ))
    .await
    .unwrap();
    // Interleaved, so the three are pending together and share flush transactions: a failed
    // group that kept every count back would keep the others' back with it, every time.
    for _ in 0..5 {
        for t in &tenants {
            let status = app.get("/tenant", &t.token).send().await.unwrap().status();
            assert_eq!(status.as_u16(), 200);
        }
    }
    let now = chrono::Utc::now();
    let counted = |id: uuid::Uuid| {
        let db = &db;
        async move {
            db.query_one(
                &format!(
                    "select coalesce(sum(n), 0)::int8 from {}.counters where kind = 'a' and bucket > $1",
                    tenantry::db::tenant_schema_name(id)
                ),
                &[&(now - chrono::Duration::hours(2))],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };
    let mut seen = (0, 0);
    for _ in 0..100 {
        seen = (counted(tenants[0].id).await, counted(tenants[2].id).await);
        if seen.0 >= 5 && seen.1 >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.0 >= 5 && seen.1 >= 5, "counted {seen:?}");
}
