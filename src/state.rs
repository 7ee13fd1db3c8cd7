//! What every request handler and job can reach: handles (pools, caches, registries, keys) and
//! thin methods that put an area's lookup behind the caches.

use std::sync::Arc;

use uuid::Uuid;

use crate::actors::{ExecError, TenantOp, TenantRegistry};
use crate::auth::{users, AuthError, Caller, Claims, Credential, JwtKeys, Role};
use crate::cache::{self, Caches, Invalidation};
use crate::config::Config;
use crate::db::template::TenantTemplate;
use crate::db::Pools;
use crate::metrics::Metrics;
use crate::tenancy::resolve::{ResolvedTenant, TenantKey};
use crate::tenancy::TenancyError;

pub struct AppState {
    pub config: Config,
    pub pools: Pools,
    pub redis: redis::Client,
    pub jwt: JwtKeys,
    /// Seals and opens list cursors (`crate::page`).
    pub cursors: crate::page::CursorKey,
    pub template: TenantTemplate,
    pub metrics: Metrics,
    pub actors: TenantRegistry,
    /// Shared with the loop that applies other instances' invalidations.
    pub caches: Arc<Caches>,
    pub analytics: crate::analytics::AnalyticsRegistry,
    pub api_calls: std::sync::Arc<crate::analytics::api_calls::ApiCallMeter>,
    pub ratelimit: crate::ratelimit::RateLimits,
    /// Metered quotas and the rollup loop's work list (`crate::usage`).
    pub usage: crate::usage::UsageState,
    /// Seals and opens stored secrets (`crate::secrets`).
    pub secrets: crate::secrets::Keyring,
}

impl AppState {
    pub fn provision_context(&self) -> crate::tenancy::provision::ProvisionContext<'_> {
        crate::tenancy::provision::ProvisionContext {
            owner: &self.pools.owner,
            template: &self.template,
            config: &self.config,
            jwt: &self.jwt,
        }
    }

    /// Checks a bearer credential's form and signature; 401 when it is not valid. API keys are
    /// checked against their tenant's rows in `verify_api_key` once the tenant is resolved.
    pub fn authenticate(&self, token: &str) -> Result<Credential, AuthError> {
        Credential::from_bearer(token, &self.jwt)
    }

    /// The user and role an API key acts as. The key must belong to `tenant` and be live (the
    /// caller checks first that the tenant's plan includes API access).
    pub async fn verify_api_key(
        &self,
        tenant: &ResolvedTenant,
        hash: &str,
    ) -> Result<(Uuid, Role), AuthError> {
        self.caches.api_key(&self.pools.app, tenant.id, hash).await
    }

    pub async fn resolve_tenant(
        &self,
        key: &TenantKey,
    ) -> Result<Option<ResolvedTenant>, TenancyError> {
        self.caches.resolve_tenant(&self.pools.app, key).await
    }

    /// A validly signed token is not enough: its subject must be a live user of its tenant with
    /// the role the token claims (`auth::users::check_claims`).
    pub async fn verify_live_user(
        &self,
        tenant: &ResolvedTenant,
        claims: &Claims,
    ) -> Result<(), AuthError> {
        let role = self
            .caches
            .live_role(&self.pools.app, tenant.id, claims.sub)
            .await?;
        users::check_claims(role, claims)
    }

    /// Drops what `what` names from the caches here and tells the other instances. Best effort
    /// on Redis: when it is down, other instances converge within the cache TTL.
    /// The config snapshots concerned are reloaded here before this returns; a plan's writer
    /// drops the Redis copies of its tenants' snapshots itself.
    pub async fn invalidate(&self, what: Invalidation) {
        self.caches.apply(&what);
        if let Some(tenant) = what.snapshot_of() {
            // Before anything reloads: a reload from Redis' copy would bring the old back.
            self.actors.snapshots().forget_logged(&[tenant]).await;
        }
        if let Some(reload) = cache::reload_snapshots(&self.actors, &what) {
            reload.await;
        }
        cache::publish(&self.redis, &what).await;
    }

    /// Every feature flag definition, from memory but once per change or cache TTL.
    pub async fn flag_definitions(
        &self,
    ) -> Result<Arc<crate::flags::Definitions>, crate::flags::FlagError> {
        self.caches.flag_definitions(&self.pools.app).await
    }

    /// Runs one operation of a tenant in that tenant's actor.
    pub async fn execute<O: TenantOp>(
        &self,
        caller: Caller,
        op: O,
    ) -> Result<O::Output, ExecError<O::Error>> {
        self.actors.execute(caller, op).await
    }
}
