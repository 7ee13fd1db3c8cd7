//! The read-mostly caches of the request path (resolved tenants, verified users, API keys, the
//! feature flag definitions) and their invalidation. A change made through one instance drops its own entries at
//! once and is published on Redis so the others drop theirs. Redis may lose messages (or
//! everything): entries also expire after CACHE_TTL_SECONDS (0 caches nothing), and a
//! reconnect drops every entry since messages may have been missed meanwhile.
//!
//! Every cache has a bound on its number of entries, since clients choose what is looked up:
//! any `X-Tenant-ID`, `Host` or unverified token claim names a tenant to resolve, and each
//! unknown name is remembered as a miss. Misses have their own, smaller bound, so that a flood
//! of made-up names evicts only other made-up names, never a tenant that exists. The bounds are
//! constants rather than settings: past a bound the least used entries are read again from
//! PostgreSQL (one indexed read each), which costs time, never correctness, while the bounds
//! keep the caches to a few tens of MB whatever clients send.
//!
//! The tenant actors' config snapshots (`actors::config`) follow the same messages: a change of
//! a tenant (`Tenant`, `Config`, `Flags` of a tenant: its overrides) or of a plan (`Plan`) makes
//! the actors concerned reload theirs
//! from PostgreSQL. The instance that made the change drops the Redis copy first and has its
//! own actor reloaded before it answers; the others reload within moments of the message.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use moka::sync::Cache;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::actors::TenantRegistry;
use crate::auth::{api_keys, users, AuthError, Role};
use crate::db::PgPool;
use crate::flags::{self, Definitions, FlagError};
use crate::tenancy::resolve::{self, ResolvedTenant, TenantKey};
use crate::tenancy::TenancyError;

pub const CHANNEL: &str = "tenantry:invalidate";

/// Keys of tenants that exist. A tenant has at most three (its id in any spelling is one key,
/// its slug, its subdomain: see `TenantKey::canonical`), so this keeps every tenant of a
/// deployment of ten thousand tenants, all active within the TTL, with room to spare.
const TENANT_KEYS: u64 = 50_000;
/// Names that resolved to no tenant. Anyone can send new ones, so they only need to absorb the
/// repeats of a misconfigured client (one name asked again and again), not every name sent.
const UNKNOWN_TENANT_KEYS: u64 = 10_000;
/// Users whose token was checked within the TTL. Only a validly signed token adds an entry.
const USERS: u64 = 100_000;
/// API keys used within the TTL. Only a key found in its tenant's rows adds an entry.
const API_KEYS: u64 = 20_000;

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
    /// Flag definitions (tenant None) or a tenant's overrides changed.
    Flags {
        tenant: Option<Uuid>,
    },
}

impl Invalidation {
    /// The tenant whose config snapshot this change makes stale, if it is one tenant's.
    pub fn snapshot_of(&self) -> Option<Uuid> {
        match *self {
            Invalidation::Tenant(tenant)
            | Invalidation::Config(tenant)
            | Invalidation::Flags {
                tenant: Some(tenant),
            } => Some(tenant),
            _ => None,
        }
    }
}

/// The caches of one instance. Each lookup asks the cache, then on a miss the area that owns
/// the data (`tenancy::resolve`, `auth::users`, `auth::api_keys`), and keeps the
/// answer unless an invalidation came in meanwhile.
pub struct Caches {
    /// False when CACHE_TTL_SECONDS is 0: every lookup asks the database.
    enabled: bool,
    /// Counts invalidations. A lookup keeps what it read only if none came in since it began:
    /// the value may predate the change, and the invalidation only dropped entries already
    /// there. The lock orders keeping against counting (see `keep`).
    invalidations: RwLock<u64>,
    tenants: Cache<TenantKey, ResolvedTenant>,
    unknown_tenants: Cache<TenantKey, ()>,
    users: Cache<(Uuid, Uuid), Role>,
    api_keys: Cache<(Uuid, String), (Uuid, Role)>,
    /// Every flag definition, as one value: evaluations read them all or look one up by key.
    flag_definitions: Cache<(), Arc<Definitions>>,
}

/// How many invalidations a lookup had seen when it began.
#[derive(Clone, Copy)]
struct Seen(u64);

/// Entries held by each cache, once pending maintenance has run (`Caches::entry_counts`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryCounts {
    pub tenants: u64,
    pub unknown_tenants: u64,
    pub users: u64,
    pub api_keys: u64,
}

fn bounded<K, V>(capacity: u64, ttl: Duration) -> Cache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    Cache::builder()
        .max_capacity(capacity)
        .time_to_live(ttl)
        .support_invalidation_closures()
        .build()
}

impl Caches {
    /// Caches whose entries live for `ttl`; a zero `ttl` caches nothing.
    pub fn new(ttl: Duration) -> Caches {
        Caches {
            enabled: !ttl.is_zero(),
            invalidations: RwLock::new(0),
            tenants: bounded(TENANT_KEYS, ttl),
            unknown_tenants: bounded(UNKNOWN_TENANT_KEYS, ttl),
            users: bounded(USERS, ttl),
            api_keys: bounded(API_KEYS, ttl),
            flag_definitions: bounded(1, ttl),
        }
    }

    fn seen(&self) -> Seen {
        Seen(*self.invalidations.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Runs `insert` if caching is on and no invalidation came in since `seen`. Holding the
    /// read lock while inserting means an invalidation counted after the check starts after the
    /// insert, so its predicate (which covers entries inserted before it) drops the entry.
    fn keep(&self, seen: Seen, insert: impl FnOnce()) {
        if !self.enabled {
            return;
        }
        let count = self.invalidations.read().unwrap_or_else(|e| e.into_inner());
        if *count == seen.0 {
            insert();
        }
    }

    fn counted(&self) {
        *self
            .invalidations
            .write()
            .unwrap_or_else(|e| e.into_inner()) += 1;
    }

    /// The tenant `key` names; None when it names none (a deleted tenant names none).
    pub async fn resolve_tenant(
        &self,
        pool: &PgPool,
        key: &TenantKey,
    ) -> Result<Option<ResolvedTenant>, TenancyError> {
        let Some(key) = key.canonical() else {
            return Ok(None);
        };
        if let Some(tenant) = self.tenants.get(&key) {
            return Ok(Some(tenant));
        }
        // `get`, not `contains_key`: a name asked again is more likely kept than one asked once.
        if self.unknown_tenants.get(&key).is_some() {
            return Ok(None);
        }
        let seen = self.seen();
        let resolved = resolve::lookup(pool, &key).await?;
        self.keep(seen, || match &resolved {
            Some(tenant) => self.tenants.insert(key, tenant.clone()),
            None => self.unknown_tenants.insert(key, ()),
        });
        Ok(resolved)
    }

    /// The role of `user` if they are a live user of `tenant`. Only live users are cached.
    pub async fn live_role(
        &self,
        pool: &PgPool,
        tenant: Uuid,
        user: Uuid,
    ) -> Result<Option<Role>, AuthError> {
        let key = (tenant, user);
        if let Some(role) = self.users.get(&key) {
            return Ok(Some(role));
        }
        let seen = self.seen();
        let role = users::live_role(pool, tenant, user).await?;
        if let Some(role) = role {
            self.keep(seen, || self.users.insert(key, role));
        }
        Ok(role)
    }

    /// The user and role the live API key with this hash acts as (`auth::api_keys::verify`).
    /// Only keys found are cached.
    pub async fn api_key(
        &self,
        pool: &PgPool,
        tenant: Uuid,
        hash: &str,
    ) -> Result<(Uuid, Role), AuthError> {
        let key = (tenant, hash.to_string());
        if let Some(identity) = self.api_keys.get(&key) {
            return Ok(identity);
        }
        let seen = self.seen();
        let identity = api_keys::verify(pool, tenant, hash).await?;
        self.keep(seen, || self.api_keys.insert(key, identity));
        Ok(identity)
    }

    /// Every feature flag definition (`flags::ops::read_definitions` on a miss).
    pub async fn flag_definitions(&self, pool: &PgPool) -> Result<Arc<Definitions>, FlagError> {
        if let Some(definitions) = self.flag_definitions.get(&()) {
            return Ok(definitions);
        }
        let seen = self.seen();
        let definitions = Arc::new(flags::ops::read_definitions(pool).await?);
        self.keep(seen, || {
            self.flag_definitions.insert((), definitions.clone())
        });
        Ok(definitions)
    }

    /// Drops what `what` names. Reads never return a dropped entry, even before maintenance
    /// has removed it.
    pub fn apply(&self, what: &Invalidation) {
        self.counted();
        let dropped = match *what {
            Invalidation::Tenant(tenant) => {
                // A name that named no tenant may name this one now (a restore): drop them all.
                self.unknown_tenants.invalidate_all();
                self.tenants
                    .invalidate_entries_if(move |_, t| t.id == tenant)
                    .and(self.users.invalidate_entries_if(move |k, _| k.0 == tenant))
                    .and(
                        self.api_keys
                            .invalidate_entries_if(move |k, _| k.0 == tenant),
                    )
                    .map(|_| ())
            }
            Invalidation::User { tenant, user } => {
                self.users.invalidate(&(tenant, user));
                // A key acts as the user who made it and dies with them (`api_keys::verify`):
                // a cached key would outlive its deleted creator until the TTL.
                self.api_keys
                    .invalidate_entries_if(move |k, v| k.0 == tenant && v.0 == user)
                    .map(|_| ())
            }
            Invalidation::ApiKeys(tenant) => self
                .api_keys
                .invalidate_entries_if(move |k, _| k.0 == tenant)
                .map(|_| ()),
            // Plans are read through the actors' snapshots, which `reload_snapshots` renews.
            Invalidation::Plans | Invalidation::Plan(_) => Ok(()),
            // Only the actors' snapshots hold a tenant's settings and branding.
            Invalidation::Config(_) => Ok(()),
            Invalidation::Flags { tenant: None } => {
                self.flag_definitions.invalidate_all();
                Ok(())
            }
            // A tenant's overrides are in its actor's snapshot, which `reload_snapshots` renews.
            Invalidation::Flags { tenant: Some(_) } => Ok(()),
        };
        if let Err(err) = dropped {
            // Cannot happen (every cache is built to take predicates); dropping everything is
            // the answer that stays correct if it ever did.
            tracing::error!(%err, ?what, "cache invalidation by predicate failed; dropping every entry");
            self.forget_all();
        }
    }

    /// Drops every entry.
    pub fn forget_all(&self) {
        self.counted();
        self.tenants.invalidate_all();
        self.unknown_tenants.invalidate_all();
        self.users.invalidate_all();
        self.api_keys.invalidate_all();
        self.flag_definitions.invalidate_all();
    }

    /// Runs the maintenance the caches otherwise do a little at a time on reads and writes
    /// (evictions, expiries, invalidations), so that the counts below are exact.
    pub fn run_pending_tasks(&self) {
        self.tenants.run_pending_tasks();
        self.unknown_tenants.run_pending_tasks();
        self.users.run_pending_tasks();
        self.api_keys.run_pending_tasks();
        self.flag_definitions.run_pending_tasks();
    }

    pub fn entry_counts(&self) -> EntryCounts {
        EntryCounts {
            tenants: self.tenants.entry_count(),
            unknown_tenants: self.unknown_tenants.entry_count(),
            users: self.users.entry_count(),
            api_keys: self.api_keys.entry_count(),
        }
    }

    /// The bounds of [`EntryCounts`]' caches.
    pub fn capacities() -> EntryCounts {
        EntryCounts {
            tenants: TENANT_KEYS,
            unknown_tenants: UNKNOWN_TENANT_KEYS,
            users: USERS,
            api_keys: API_KEYS,
        }
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

/// Listens for other instances' invalidations until `stop`, reconnecting with backoff.
pub async fn subscribe(
    caches: Arc<Caches>,
    actors: TenantRegistry,
    redis: redis::Client,
    stop: CancellationToken,
) {
    // Nothing here is worth finishing: dropped wherever it waits.
    stop.run_until_cancelled(listen(&caches, &actors, &redis))
        .await;
}

async fn listen(caches: &Caches, actors: &TenantRegistry, redis: &redis::Client) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match redis.get_async_pubsub().await {
            Ok(mut pubsub) => {
                if let Err(err) = pubsub.subscribe(CHANNEL).await {
                    tracing::warn!(%err, "cannot subscribe to cache invalidations");
                } else {
                    // Anything published while we were not listening is lost: start clean.
                    caches.forget_all();
                    actors.expire_configs();
                    backoff = Duration::from_millis(200);
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        let Ok(payload) = message.get_payload::<String>() else {
                            continue;
                        };
                        match serde_json::from_str::<Invalidation>(&payload) {
                            Ok(what) => {
                                caches.apply(&what);
                                // Not awaited: the next message is not held behind a reload.
                                if let Some(reload) = reload_snapshots(actors, &what) {
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

/// The reload of the config snapshots `what` makes stale, on this instance.
pub fn reload_snapshots(
    actors: &TenantRegistry,
    what: &Invalidation,
) -> Option<BoxFuture<'static, ()>> {
    if let Some(tenant) = what.snapshot_of() {
        return Some(actors.reload_config(tenant));
    }
    match what {
        Invalidation::Plan(plan) => Some(actors.reload_plan(plan)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: Uuid, slug: &str) -> ResolvedTenant {
        ResolvedTenant {
            id,
            slug: slug.into(),
            subdomain: slug.into(),
            plan: "free".into(),
            suspended: false,
        }
    }

    /// Caches holding, for tenants `a` and `b`: their three keys, a user, an API key; plus a
    /// miss and a plan.
    fn filled(a: Uuid, b: Uuid) -> Caches {
        let caches = Caches::new(Duration::from_secs(600));
        for (id, slug) in [(a, "alpha"), (b, "beta")] {
            for key in [
                TenantKey::Id(id),
                TenantKey::IdOrSlug(slug.into()),
                TenantKey::Subdomain(slug.into()),
            ] {
                caches.tenants.insert(key, tenant(id, slug));
            }
            caches.users.insert((id, id), Role::Admin);
            caches
                .api_keys
                .insert((id, "hash".into()), (id, Role::Member));
        }
        caches
            .unknown_tenants
            .insert(TenantKey::IdOrSlug("nobody".into()), ());
        caches
    }

    fn counts(caches: &Caches) -> EntryCounts {
        caches.run_pending_tasks();
        caches.entry_counts()
    }

    #[test]
    fn a_tenant_invalidation_drops_that_tenant_and_every_miss() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let caches = filled(a, b);
        caches.apply(&Invalidation::Tenant(a));
        // Reads already miss, before any maintenance ran.
        assert!(caches
            .tenants
            .get(&TenantKey::IdOrSlug("alpha".into()))
            .is_none());
        assert!(caches.users.get(&(a, a)).is_none());
        assert!(caches
            .tenants
            .get(&TenantKey::Subdomain("beta".into()))
            .is_some());
        assert_eq!(
            counts(&caches),
            EntryCounts {
                tenants: 3,
                unknown_tenants: 0,
                users: 1,
                api_keys: 1,
            }
        );
        assert!(caches.api_keys.get(&(b, "hash".into())).is_some());
    }

    #[test]
    fn user_and_api_key_invalidations_drop_only_theirs() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let caches = filled(a, b);
        // Another user of `a` with a key of their own.
        let other = Uuid::now_v7();
        caches.users.insert((a, other), Role::Member);
        caches
            .api_keys
            .insert((a, "other".into()), (other, Role::Member));
        caches.apply(&Invalidation::User { tenant: a, user: a });
        caches.apply(&Invalidation::ApiKeys(b));
        assert!(caches.users.get(&(a, a)).is_none());
        assert!(caches.users.get(&(b, b)).is_some());
        assert!(caches.api_keys.get(&(b, "hash".into())).is_none());
        // The user's keys go with them (a deleted user's key must stop at once); another
        // user's stay.
        assert!(caches.api_keys.get(&(a, "hash".into())).is_none());
        assert!(caches.api_keys.get(&(a, "other".into())).is_some());
        assert!(caches.users.get(&(a, other)).is_some());
        caches.apply(&Invalidation::Plans);
        assert_eq!(
            counts(&caches),
            EntryCounts {
                tenants: 6,
                unknown_tenants: 1,
                users: 2,
                api_keys: 1,
            }
        );
    }

    #[test]
    fn a_value_read_before_an_invalidation_is_not_kept_after_it() {
        let caches = Caches::new(Duration::from_secs(600));
        let (tenant, user) = (Uuid::now_v7(), Uuid::now_v7());
        let seen = caches.seen();
        // The lookup read the user's old role; the change and its invalidation land before
        // the lookup stores what it read.
        caches.apply(&Invalidation::User { tenant, user });
        caches.keep(seen, || caches.users.insert((tenant, user), Role::Admin));
        assert!(caches.users.get(&(tenant, user)).is_none());
        // A lookup that began after it keeps its value.
        let seen = caches.seen();
        caches.keep(seen, || caches.users.insert((tenant, user), Role::Member));
        assert_eq!(caches.users.get(&(tenant, user)), Some(Role::Member));
    }

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
