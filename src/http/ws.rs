//! GET /ws/analytics: the tenant's live analytics stream.
//!
//! Each socket subscribes to its own tenant's committed batches (a bounded broadcast channel
//! fed by the tenant's group committer after each commit), aggregates them, and sends at most
//! one `tick` a second. A slow client makes its receiver lag: it loses ticks (counted in
//! `dropped`), never server memory. Pings every 5 s; a socket silent for 15 s, or closed, is
//! dropped with its subscription.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use actix_web::{get, web, HttpRequest, HttpResponse};
use actix_ws::Message;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::http::extract::{bearer_token, Query};
use crate::http::problem::Problem;
use crate::http::ratelimit::PerClientAddress;
use crate::http::tenant::resolve_with_token;

const TICK: Duration = Duration::from_secs(1);
const PING: Duration = Duration::from_secs(5);
const SILENCE_LIMIT: Duration = Duration::from_secs(15);
const RECENT_EVENTS: usize = 20;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(analytics_socket);
}

#[derive(serde::Deserialize)]
struct SocketQuery {
    token: Option<String>,
}

#[utoipa::path(get, path = "/ws/analytics", tag = "analytics",
    params(("token" = Option<String>, Query, description = "JWT or API key, when the client cannot send an Authorization header")),
    responses((status = 101, description = "WebSocket: at most one {type: \"tick\", ts, counts, events} message a second"),
        (status = 401), (status = 429, description = "too many upgrades from this client address, or the tenant's rate limit: Retry-After")))]
#[get("/ws/analytics", wrap = "PerClientAddress::new(\"ws\")")]
pub async fn analytics_socket(
    req: HttpRequest,
    body: web::Payload,
    query: Query<SocketQuery>,
) -> Result<HttpResponse, Problem> {
    // Browsers cannot set headers on a WebSocket: the query string carries the token then.
    let token = bearer_token(&req)
        .map(str::to_string)
        .or(query.into_inner().token);
    let tenant = resolve_with_token(&req, token, true).await?;
    tenant.user()?;
    let state = tenant.state().clone();
    let live = state.analytics.committer(tenant.tenant_id).subscribe();
    let (response, session, messages) = actix_ws::handle(&req, body)
        .map_err(|e| Problem::bad_request(format!("not a WebSocket upgrade: {e}")))?;
    state.metrics.ws_connections.inc();
    let tenant_id = tenant.tenant_id;
    actix_web::rt::spawn(async move {
        run_socket(session, messages, live, tenant_id).await;
        state.metrics.ws_connections.dec();
    });
    Ok(response)
}

async fn run_socket(
    mut session: actix_ws::Session,
    mut messages: actix_ws::MessageStream,
    mut live: tokio::sync::broadcast::Receiver<std::sync::Arc<crate::analytics::CommittedBatch>>,
    tenant: Uuid,
) {
    let mut tick = tokio::time::interval(TICK);
    let mut ping = tokio::time::interval(PING);
    let mut last_heard = Instant::now();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut recent: VecDeque<Value> = VecDeque::with_capacity(RECENT_EVENTS);
    let mut dropped: u64 = 0;
    loop {
        tokio::select! {
            batch = live.recv() => match batch {
                Ok(batch) => {
                    // Defence in depth: the channel is the tenant's own.
                    if batch.tenant_id != tenant {
                        continue;
                    }
                    for event in &batch.events {
                        *counts.entry(event.event_type.clone()).or_default() += 1;
                        if recent.len() == RECENT_EVENTS {
                            recent.pop_front();
                        }
                        recent.push_back(json!({
                            "id": event.id,
                            "event_type": event.event_type,
                            "user_id": event.user_id,
                            "feature": event.feature,
                            "timestamp": event.occurred_at,
                        }));
                    }
                }
                Err(RecvError::Lagged(n)) => dropped += n,
                Err(RecvError::Closed) => break,
            },
            _ = tick.tick() => {
                if counts.is_empty() && dropped == 0 {
                    continue;
                }
                let message = json!({
                    "type": "tick",
                    "ts": chrono::Utc::now(),
                    "counts": counts,
                    "events": recent,
                    "dropped_batches": dropped,
                });
                counts.clear();
                recent.clear();
                dropped = 0;
                if session.text(message.to_string()).await.is_err() {
                    break;
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > SILENCE_LIMIT || session.ping(b"").await.is_err() {
                    break;
                }
            }
            message = messages.next() => match message {
                Some(Ok(Message::Ping(bytes))) => {
                    last_heard = Instant::now();
                    if session.pong(&bytes).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => last_heard = Instant::now(),
            },
        }
    }
    let _ = session.close(None).await;
}
