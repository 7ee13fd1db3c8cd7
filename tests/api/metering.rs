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
