//! Cross-instance cache invalidation. Every instance keeps read-mostly caches (resolved
//! tenants, verified users, API keys, plans); a change made through one instance drops its own
//! entries at once and is published on Redis so the others drop theirs. Redis may lose
//! messages (or everything): entries also expire after CACHE_TTL_SECONDS, and a reconnect drops
//! every entry since messages may have been missed meanwhile.

use std::time::Duration;

use actix_web::web;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::state::AppState;

pub const CHANNEL: &str = "tenantry:invalidate";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Invalidation {
    Tenant(Uuid),
    User { tenant: Uuid, user: Uuid },
    ApiKeys(Uuid),
    Plans,
    Flags { tenant: Option<Uuid> },
}

impl AppState {
    fn apply(&self, what: &Invalidation) {
        match what {
            Invalidation::Tenant(tenant) => self.caches.forget_tenant(*tenant),
            Invalidation::User { tenant, user } => self.caches.forget_user(*tenant, *user),
            Invalidation::ApiKeys(tenant) => self.caches.forget_api_keys(*tenant),
            Invalidation::Plans => self.caches.forget_plans(),
            // Flag definitions (tenant None) or a tenant's overrides: nothing caches them yet
            // (flags::ops loads them per request); the actor's config snapshot will drop them.
            Invalidation::Flags { .. } => {}
        }
    }

    /// Drops the entries here and tells the other instances. Best effort on Redis: when it is
    /// down, other instances converge within the cache TTL.
    pub async fn invalidate(&self, what: Invalidation) {
        self.apply(&what);
        publish(&self.redis, &what).await;
    }
}

/// Tells every instance to drop `what` (the CLI uses it after changing a tenant).
pub async fn publish(redis: &redis::Client, what: &Invalidation) {
    let Ok(payload) = serde_json::to_string(what) else {
        return;
    };
    let published = async {
        let mut conn = redis.get_multiplexed_async_connection().await?;
        redis::cmd("PUBLISH")
            .arg(CHANNEL)
            .arg(payload)
            .query_async::<i64>(&mut conn)
            .await
    };
    match tokio::time::timeout(Duration::from_secs(1), published).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => tracing::warn!(%err, ?what, "cache invalidation not published"),
        Err(_) => tracing::warn!(?what, "cache invalidation not published: Redis timed out"),
    }
}

/// Listens for other instances' invalidations until the process ends, reconnecting with
/// backoff.
pub async fn subscribe(state: web::Data<AppState>, stop: CancellationToken) {
    // Nothing here is worth finishing: dropped wherever it waits.
    stop.run_until_cancelled(listen(state)).await;
}

async fn listen(state: web::Data<AppState>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match state.redis.get_async_pubsub().await {
            Ok(mut pubsub) => {
                if let Err(err) = pubsub.subscribe(CHANNEL).await {
                    tracing::warn!(%err, "cannot subscribe to cache invalidations");
                } else {
                    // Anything published while we were not listening is lost: start clean.
                    state.caches.forget_all();
                    backoff = Duration::from_millis(200);
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        let Ok(payload) = message.get_payload::<String>() else {
                            continue;
                        };
                        match serde_json::from_str::<Invalidation>(&payload) {
                            Ok(what) => state.apply(&what),
                            Err(err) => tracing::warn!(%err, "ignored a malformed invalidation"),
                        }
                    }
                    tracing::warn!("cache invalidation stream ended; reconnecting");
                }
            }
            Err(err) => tracing::warn!(%err, "Redis unavailable for cache invalidations"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        let t = Uuid::nil();
        let json = serde_json::to_string(&Invalidation::User { tenant: t, user: t }).unwrap();
        assert!(json.contains("\"kind\":\"user\""));
        assert_eq!(
            serde_json::from_str::<Invalidation>(&json).unwrap(),
            Invalidation::User { tenant: t, user: t }
        );
    }
}
