//! What every request handler and job can reach.

use std::time::{Duration, Instant};

use dashmap::DashMap;
use uuid::Uuid;

use crate::actors::{Caller, TenantOp, TenantRegistry};
use crate::auth::{AuthError, Claims, JwtKeys, Role};
use crate::config::Config;
use crate::db::template::TenantTemplate;
use crate::db::{begin_tenant_tx, DbError, Pools};
use crate::error::Problem;
use crate::metrics::Metrics;
use crate::tenancy::resolve::{self, ResolvedTenant, TenantKey};

pub struct AppState {
    pub config: Config,
    pub pools: Pools,
    pub redis: redis::Client,
    pub jwt: JwtKeys,
    pub template: TenantTemplate,
    pub metrics: Metrics,
    pub actors: TenantRegistry,
    pub caches: Caches,
}

/// Read-mostly caches of the request path. Entries expire after `config.cache_ttl`; changes
/// made through this instance drop them at once, and other instances are told through Redis
/// (see `crate::cache`).
#[derive(Default)]
pub struct Caches {
    tenants: DashMap<TenantKey, (Option<ResolvedTenant>, Instant)>,
    users: DashMap<(Uuid, Uuid), (Role, Instant)>,
}

impl Caches {
    pub fn forget_tenant(&self, tenant: Uuid) {
        self.tenants.retain(|_, (resolved, _)| match resolved {
            Some(t) => t.id != tenant,
            // A negative entry may be about to become a tenant (restore); drop them all.
            None => false,
        });
        self.users.retain(|(t, _), _| *t != tenant);
    }

    pub fn forget_user(&self, tenant: Uuid, user: Uuid) {
        self.users.remove(&(tenant, user));
    }

    pub fn forget_all(&self) {
        self.tenants.clear();
        self.users.clear();
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

    /// Verifies a bearer credential (a JWT) and returns its claims; 401 when it is not valid.
    pub async fn authenticate(&self, token: &str) -> Result<Claims, Problem> {
        Ok(self.jwt.verify(token)?)
    }

    pub async fn resolve_tenant(&self, key: &TenantKey) -> Result<Option<ResolvedTenant>, Problem> {
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
    ) -> Result<(), Problem> {
        let key = (tenant.id, claims.sub);
        if let Some(hit) = self.caches.users.get(&key) {
            if self.fresh(hit.1) {
                return if hit.0 == claims.role {
                    Ok(())
                } else {
                    Err(AuthError::InvalidToken("the user's role changed".into()).into())
                };
            }
        }
        let mut conn = self.pools.app.get().await.map_err(DbError::from)?;
        let tx = begin_tenant_tx(&mut conn, tenant.id).await?;
        let stmt = tx
            .prepare_cached("select role from app.users where tenant_id = $1 and id = $2 and deleted_at is null")
            .await?;
        let row = tx.query_opt(&stmt, &[&tenant.id, &claims.sub]).await?;
        tx.commit().await?;
        let Some(role) = row.and_then(|r| Role::parse(r.get::<_, &str>(0))) else {
            return Err(AuthError::InvalidToken("the user no longer exists".into()).into());
        };
        self.caches.users.insert(key, (role, Instant::now()));
        if role == claims.role {
            Ok(())
        } else {
            Err(AuthError::InvalidToken("the user's role changed".into()).into())
        }
    }

    /// Runs one operation of a tenant in that tenant's actor.
    pub async fn execute<O: TenantOp>(&self, caller: Caller, op: O) -> Result<O::Output, Problem> {
        self.actors.execute(caller, op).await
    }

    pub fn cache_ttl(&self) -> Duration {
        self.config.cache_ttl
    }
}
