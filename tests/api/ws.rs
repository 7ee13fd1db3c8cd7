//! The live analytics WebSocket: isolation, throttling, authentication and cleanup.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{spawn_app, TestApp};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(app: &TestApp, token: &str, in_query: bool) -> Socket {
    let url = if in_query {
        format!("ws://127.0.0.1:{}/ws/analytics?token={token}", app.port)
    } else {
        format!("ws://127.0.0.1:{}/ws/analytics", app.port)
    };
    let mut request = url.into_client_request().unwrap();
    if !in_query {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket handshake");
    socket
}

/// The next tick within `wait`, answering pings on the way.
async fn next_tick(socket: &mut Socket, wait: Duration) -> Option<Value> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let value: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(value["type"], "tick");
                return Some(value);
            }
            Ok(Some(Ok(Message::Ping(p)))) => socket.send(Message::Pong(p)).await.unwrap(),
            Ok(Some(Ok(_))) => {}
            _ => return None,
        }
    }
}

async fn send_events(app: &TestApp, token: &str, types: &[&str]) {
    let events: Vec<Value> = types.iter().map(|t| json!({"event_type": t})).collect();
    let r = app
        .post("/analytics/events", token)
        .json(&json!({"events": events}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
}

#[tokio::test]
async fn each_tenant_sees_only_its_own_events() {
    let app = spawn_app().await;
    let a = app.create_tenant("alpha").await;
    let b = app.create_tenant("beta").await;
    let mut sa = open(&app, &a.token, true).await;
    let mut sb = open(&app, &b.token, false).await;
    send_events(&app, &a.token, &["click", "click", "click", "view"]).await;
    send_events(&app, &b.token, &["b_only"]).await;

    let mut counts_a = serde_json::Map::new();
    while counts_a.values().map(|v| v.as_u64().unwrap()).sum::<u64>() < 4 {
        let tick = next_tick(&mut sa, Duration::from_secs(10))
            .await
            .expect("tick for A");
        for (k, v) in tick["counts"].as_object().unwrap() {
            let n = counts_a.get(k).and_then(Value::as_u64).unwrap_or(0) + v.as_u64().unwrap();
            counts_a.insert(k.clone(), json!(n));
        }
        assert!(
            !tick.to_string().contains("b_only"),
            "A saw B's event: {tick}"
        );
    }
    assert_eq!(Value::Object(counts_a), json!({"click": 3, "view": 1}));
    let tick_b = next_tick(&mut sb, Duration::from_secs(10))
        .await
        .expect("tick for B");
    assert_eq!(tick_b["counts"], json!({"b_only": 1}));
    assert!(!tick_b.to_string().contains("click"));
}

#[tokio::test]
async fn ticks_come_at_most_once_a_second() {
    let app = spawn_app().await;
    let a = app.create_tenant("alpha").await;
    let mut socket = open(&app, &a.token, true).await;
    let sender = {
        let token = a.token.clone();
        let http = app.http.clone();
        let url = app.url("/analytics/events");
        tokio::spawn(async move {
            let started = Instant::now();
            let mut sent = 0u64;
            while started.elapsed() < Duration::from_millis(3500) {
                http.post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"event_type": "burst"}))
                    .send()
                    .await
                    .unwrap();
                sent += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sent
        })
    };
    let mut arrivals = Vec::new();
    let mut total = 0;
    let sent = loop {
        if let Some(tick) = next_tick(&mut socket, Duration::from_secs(3)).await {
            arrivals.push(Instant::now());
            total += tick["counts"]["burst"].as_u64().unwrap_or(0);
        } else if sender.is_finished() {
            break sender.await.unwrap();
        }
    };
    assert!(arrivals.len() >= 3, "{} ticks", arrivals.len());
    for pair in arrivals.windows(2) {
        // The server ticks on a one-second interval; allow for scheduling jitter in delivery.
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(700),
            "ticks too close: {:?}",
            pair[1] - pair[0]
        );
    }
    assert_eq!(
        total, sent,
        "every acknowledged event is counted in some tick"
    );
}

#[tokio::test]
async fn sockets_need_credentials_and_are_cleaned_up() {
    let app = spawn_app().await;
    let a = app.create_tenant("alpha").await;
    let url = format!("ws://127.0.0.1:{}/ws/analytics", app.port);
    let refused = tokio_tungstenite::connect_async(url.as_str()).await;
    assert!(
        refused.is_err(),
        "a socket without credentials was accepted"
    );
    let refused = tokio_tungstenite::connect_async(format!("{url}?token=forged")).await;
    assert!(
        refused.is_err(),
        "a socket with a forged token was accepted"
    );

    let gauge = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("tenantry_analytics_ws_connections "))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(|v| v.parse::<f64>().unwrap())
            .unwrap()
    };
    let mut socket = open(&app, &a.token, true).await;
    assert_eq!(gauge(&app.metrics_text().await), 1.0);
    socket.close(None).await.unwrap();
    drop(socket);
    let mut closed = false;
    for _ in 0..100 {
        if gauge(&app.metrics_text().await) == 0.0 {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "a closed socket was not removed");
}
