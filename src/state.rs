//! What every request handler and job can reach.

use std::time::{Duration, Instant};

use dashmap::DashMap;
use uuid::Uuid;

use crate::actors::{ExecError, TenantOp, TenantRegistry};
use crate::auth::{
    self, api_keys, AccessError, AuthError, Caller, Claims, Credential, JwtKeys, Role,
};
use crate::config::Config;
use crate::db::template::TenantTemplate;
use crate::db::{begin_tenant_tx, DbError, Pools, TenantTx};
use crate::metrics::Metrics;
use crate::tenancy::resolve::{self, ResolvedTenant, TenantKey};
use crate::tenancy::TenancyError;

pub struct AppState {
    pub config: Config,
    pub pools: Pools,
    pub redis: redis::Client,
    pub jwt: JwtKeys,
    pub template: TenantTemplate,
    pub metrics: Metrics,
    pub actors: TenantRegistry,
    pub caches: Caches,
    pub analytics: crate::analytics::AnalyticsRegistry,
    pub api_calls: std::sync::Arc<crate::analytics::api_calls::ApiCallMeter>,
    pub ratelimit: crate::ratelimit::RateLimits,
}

/// Read-mostly caches of the request path. Entries expire after `config.cache_ttl`; changes
/// made through this instance drop them at once, and other instances are told through Redis
/// (see `crate::cache`).
#[derive(Default)]
pub struct Caches {
    tenants: DashMap<TenantKey, (Option<ResolvedTenant>, Instant)>,
    users: DashMap<(Uuid, Uuid), (Role, Instant)>,
    api_keys: DashMap<(Uuid, String), ((Uuid, Role), Instant)>,
    plans: DashMap<String, (Plan, Instant)>,
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    pub rank: i32,
    pub limits: serde_json::Value,
    pub features: serde_json::Value,
}

impl Plan {
    pub fn feature(&self, key: &str) -> bool {
        self.features
            .get(key)
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    }

    /// A numeric limit; None means unlimited.
    pub fn limit(&self, key: &str) -> Option<i64> {
        self.limits.get(key).and_then(|v| v.as_i64())
    }
}

impl Caches {
    pub fn forget_tenant(&self, tenant: Uuid) {
        self.tenants.retain(|_, (resolved, _)| match resolved {
            Some(t) => t.id != tenant,
            // A negative entry may be about to become a tenant (restore); drop them all.
            None => false,
        });
        self.users.retain(|(t, _), _| *t != tenant);
        self.api_keys.retain(|(t, _), _| *t != tenant);
    }

    pub fn forget_api_keys(&self, tenant: Uuid) {
        self.api_keys.retain(|(t, _), _| *t != tenant);
    }

    pub fn forget_plans(&self) {
        self.plans.clear();
    }

    pub fn forget_user(&self, tenant: Uuid, user: Uuid) {
        self.users.remove(&(tenant, user));
    }

    pub fn forget_all(&self) {
        self.tenants.clear();
        self.users.clear();
        self.api_keys.clear();
        self.plans.clear();
    }
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

    fn fresh(&self, at: Instant) -> bool {
        at.elapsed() < self.config.cache_ttl
    }

    /// Checks a bearer credential's form and signature; 401 when it is not valid. API keys are
    /// checked against their tenant's rows in `verify_api_key` once the tenant is resolved.
    pub fn authenticate(&self, token: &str) -> Result<Credential, AuthError> {
        if token.starts_with(api_keys::PREFIX) {
            let tenant = api_keys::tenant_of(token)
                .ok_or_else(|| AuthError::InvalidToken("malformed API key".into()))?;
            return Ok(Credential::ApiKey {
                tenant,
                hash: api_keys::hash(token),
            });
        }
        Ok(Credential::Jwt(self.jwt.verify(token)?))
    }

    /// The plan's limits and features, from the database (plans are data, not code).
    pub async fn plan(&self, name: &str) -> Result<Plan, AuthError> {
        if let Some(hit) = self.caches.plans.get(name) {
            if self.fresh(hit.1) {
                return Ok(hit.0.clone());
            }
        }
        let conn = self.pools.app.get().await.map_err(DbError::from)?;
        let stmt = conn
            .prepare_cached("select name, rank, limits, features from app.plans where name = $1")
            .await?;
        let row = conn
            .query_opt(&stmt, &[&name])
            .await?
            .ok_or_else(|| AuthError::UnknownPlan(name.to_string()))?;
        let plan = Plan {
            name: row.get(0),
            rank: row.get(1),
            limits: row.get(2),
            features: row.get(3),
        };
        self.caches
            .plans
            .insert(name.to_string(), (plan.clone(), Instant::now()));
        Ok(plan)
    }

    /// One limit of a plan without copying the plan (the rate limiter reads one per request).
    pub async fn plan_limit(&self, name: &str, key: &str) -> Result<Option<i64>, AuthError> {
        if let Some(hit) = self.caches.plans.get(name) {
            if self.fresh(hit.1) {
                return Ok(hit.0.limit(key));
            }
        }
        Ok(self.plan(name).await?.limit(key))
    }

    /// The plan gate on a feature: `PlanRequired` unless the tenant's plan has `feature`.
    pub async fn require_feature(&self, plan: &str, feature: &str) -> Result<(), AuthError> {
        let current = self.plan(plan).await?;
        if current.feature(feature) {
            return Ok(());
        }
        let required = self.cheapest_plan_with(feature).await?;
        Err(AccessError::PlanRequired {
            feature: feature.to_string(),
            plan: plan.to_string(),
            required_plan: required,
        }
        .into())
    }

    async fn cheapest_plan_with(&self, feature: &str) -> Result<Option<String>, AuthError> {
        let conn = self.pools.app.get().await.map_err(DbError::from)?;
        let row = conn
            .query_opt(
                "select name from app.plans where coalesce((features ->> $1)::boolean, false) order by rank limit 1",
                &[&feature],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// The user and role an API key acts as. The key must belong to `tenant` and be live, and
    /// the tenant's plan must include API access.
    pub async fn verify_api_key(
        &self,
        tenant: &ResolvedTenant,
        hash: &str,
    ) -> Result<(Uuid, Role), AuthError> {
        self.require_feature(&tenant.plan, "api_access").await?;
        let key = (tenant.id, hash.to_string());
        if let Some(hit) = self.caches.api_keys.get(&key) {
            if self.fresh(hit.1) {
                return Ok(hit.0);
            }
        }
        let mut conn = self.pools.app.get().await.map_err(DbError::from)?;
        let tx = begin_tenant_tx(&mut conn, tenant.id).await?;
        let stmt = tx
            .prepare_cached(
                "update app.api_keys k set last_used_at = now() from app.users u \
                 where k.tenant_id = $1 and k.key_hash = $2 and k.deleted_at is null \
                 and u.tenant_id = k.tenant_id and u.id = k.created_by and u.deleted_at is null \
                 returning k.created_by, k.role",
            )
            .await?;
        let row = tx.query_opt(&stmt, &[&tenant.id, &hash]).await?;
        tx.commit().await?;
        let Some(row) = row else {
            return Err(AuthError::InvalidToken("unknown or revoked API key".into()));
        };
        let identity = (
            row.get::<_, Uuid>(0),
            auth::stored_role("api_keys.role", row.get(1))?,
        );
        self.caches.api_keys.insert(key, (identity, Instant::now()));
        Ok(identity)
    }

    pub async fn resolve_tenant(
        &self,
        key: &TenantKey,
    ) -> Result<Option<ResolvedTenant>, TenancyError> {
        if let Some(hit) = self.caches.tenants.get(key) {
            if self.fresh(hit.1) {
                return Ok(hit.0.clone());
            }
        }
        let resolved = resolve::lookup(&self.pools.app, key).await?;
        self.caches
            .tenants
            .insert(key.clone(), (resolved.clone(), Instant::now()));
        Ok(resolved)
    }

    /// A validly signed token is not enough: its subject must be a live user of its tenant with
    /// the role the token claims (a deleted or demoted user's tokens stop working at once).
    pub async fn verify_live_user(
        &self,
        tenant: &ResolvedTenant,
        claims: &Claims,
    ) -> Result<(), AuthError> {
        let key = (tenant.id, claims.sub);
        if let Some(hit) = self.caches.users.get(&key) {
            if self.fresh(hit.1) {
                return if hit.0 == claims.role {
                    Ok(())
                } else {
                    Err(AuthError::InvalidToken("the user's role changed".into()))
                };
            }
        }
        let conn = self.pools.app.get().await.map_err(DbError::from)?;
        let stmt = conn
            .prepare_cached("select role from app.users where tenant_id = $1 and id = $2 and deleted_at is null")
            .await?;
        // The context and the read share one Sync: a cache miss costs one round trip.
        let row = TenantTx::single_statement(&conn, tenant.id)
            .query_opt_then_commit(&stmt, &[&tenant.id, &claims.sub])
            .await?;
        let Some(row) = row else {
            return Err(AuthError::InvalidToken("the user no longer exists".into()));
        };
        let role = auth::stored_role("users.role", row.get(0))?;
        self.caches.users.insert(key, (role, Instant::now()));
        if role == claims.role {
            Ok(())
        } else {
            Err(AuthError::InvalidToken("the user's role changed".into()))
        }
    }

    /// Runs one operation of a tenant in that tenant's actor.
    pub async fn execute<O: TenantOp>(
        &self,
        caller: Caller,
        op: O,
    ) -> Result<O::Output, ExecError<O::Error>> {
        self.actors.execute(caller, op).await
    }

    pub fn cache_ttl(&self) -> Duration {
        self.config.cache_ttl
    }
}
