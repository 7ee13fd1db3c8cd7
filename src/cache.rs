//! Cross-instance cache invalidation. Every instance keeps read-mostly caches (resolved
//! tenants, verified users, API keys, plans); a change made through one instance drops its own
//! entries at once and is published on Redis so the others drop theirs. Redis may lose
//! messages (or everything): entries also expire after CACHE_TTL_SECONDS, and a reconnect drops
//! every entry since messages may have been missed meanwhile.
//!
//! The tenant actors' config snapshots (`actors::config`) follow the same messages: a change of
//! a tenant (`Tenant`, `Config`) or of a plan (`Plan`) makes the actors concerned reload theirs
//! from PostgreSQL. The instance that made the change drops the Redis copy first and has its
//! own actor reloaded before it answers; the others reload within moments of the message.

use std::time::Duration;

use actix_web::web;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::state::AppState;

pub const CHANNEL: &str = "tenantry:invalidate";

/// On the wire: `{"kind": "tenant", "value": "<uuid>"}`. Adjacently tagged, because an
/// internally tagged enum cannot carry a newtype variant of a string (serde refuses to
/// serialise `Tenant(Uuid)` that way, and such a message was never sent).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Invalidation {
    Tenant(Uuid),
    User {
        tenant: Uuid,
        user: Uuid,
    },
    ApiKeys(Uuid),
    Plans,
    /// The tenant's configuration (settings, branding) changed.
    Config(Uuid),
    /// The plan of that name changed.
    Plan(String),
}

impl AppState {
    fn apply(&self, what: &Invalidation) {
        match what {
            Invalidation::Tenant(tenant) => self.caches.forget_tenant(*tenant),
            Invalidation::User { tenant, user } => self.caches.forget_user(*tenant, *user),
            Invalidation::ApiKeys(tenant) => self.caches.forget_api_keys(*tenant),
            Invalidation::Plans | Invalidation::Plan(_) => self.caches.forget_plans(),
            Invalidation::Config(_) => {}
        }
    }

    /// The reload of the config snapshots `what` makes stale, on this instance.
    fn reload_snapshots(&self, what: &Invalidation) -> Option<BoxFuture<'static, ()>> {
        match what {
            Invalidation::Tenant(tenant) | Invalidation::Config(tenant) => {
                Some(self.actors.reload_config(*tenant))
            }
            Invalidation::Plan(plan) => Some(self.actors.reload_plan(plan)),
            _ => None,
        }
    }

    /// Drops the entries here, reloads the snapshots concerned here, and tells the other
    /// instances. Best effort on Redis: when it is down, other instances converge within the
    /// cache TTL. A plan's writer drops the Redis copies of its tenants' snapshots itself.
    pub async fn invalidate(&self, what: Invalidation) {
        self.apply(&what);
        if let Invalidation::Tenant(tenant) | Invalidation::Config(tenant) = &what {
            // Before anything reloads: a reload from Redis' copy would bring the old back.
            self.actors.snapshots().forget_logged(&[*tenant]).await;
        }
        if let Some(reload) = self.reload_snapshots(&what) {
            reload.await;
        }
        publish(&self.redis, &what).await;
    }
}

/// Tells every instance to drop `what` (the CLI uses it after changing a tenant).
pub async fn publish(redis: &redis::Client, what: &Invalidation) {
    let payload = match serde_json::to_string(what) {
        Ok(payload) => payload,
        Err(err) => {
            tracing::error!(%err, ?what, "cache invalidation not serialisable; not published");
            return;
        }
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
                    state.actors.expire_configs();
                    backoff = Duration::from_millis(200);
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        let Ok(payload) = message.get_payload::<String>() else {
                            continue;
                        };
                        match serde_json::from_str::<Invalidation>(&payload) {
                            Ok(what) => {
                                state.apply(&what);
                                // Not awaited: the next message is not held behind a reload.
                                if let Some(reload) = state.reload_snapshots(&what) {
                                    tokio::spawn(reload);
                                }
                            }
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

    #[test]
    fn every_variant_goes_over_the_wire() {
        let t = Uuid::now_v7();
        for what in [
            Invalidation::Tenant(t),
            Invalidation::User { tenant: t, user: t },
            Invalidation::ApiKeys(t),
            Invalidation::Plans,
            Invalidation::Config(t),
            Invalidation::Plan("pro".into()),
        ] {
            let json = serde_json::to_string(&what).unwrap();
            assert_eq!(serde_json::from_str::<Invalidation>(&json).unwrap(), what);
        }
        assert_eq!(
            serde_json::to_string(&Invalidation::Tenant(Uuid::nil())).unwrap(),
            r#"{"kind":"tenant","value":"00000000-0000-0000-0000-000000000000"}"#
        );
    }
}
