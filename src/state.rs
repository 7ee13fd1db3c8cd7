//! What every request handler and job can reach.

use crate::auth::JwtKeys;
use crate::config::Config;
use crate::db::template::TenantTemplate;
use crate::db::Pools;

pub struct AppState {
    pub config: Config,
    pub pools: Pools,
    pub redis: redis::Client,
    pub jwt: JwtKeys,
    pub template: TenantTemplate,
    pub analytics: crate::analytics::AnalyticsRegistry,
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
}

use crate::actors::{Caller, TenantOp};
use crate::auth::{AuthError, Claims};
use crate::db::begin_tenant_tx;
use crate::error::Problem;
use crate::tenancy::resolve::{self, ResolvedTenant, TenantKey};

impl AppState {
    /// Verifies a bearer credential (a JWT) and returns its claims; 401 when it is not valid.
    pub async fn authenticate(&self, token: &str) -> Result<Claims, Problem> {
        Ok(self.jwt.verify(token)?)
    }

    pub async fn resolve_tenant(&self, key: &TenantKey) -> Result<Option<ResolvedTenant>, Problem> {
        Ok(resolve::lookup(&self.pools.app, key).await?)
    }

    /// A validly signed token is not enough: its subject must be a live user of its tenant with
    /// the role the token claims (a deleted or demoted user's tokens stop working at once).
    pub async fn verify_live_user(
        &self,
        tenant: &ResolvedTenant,
        claims: &Claims,
    ) -> Result<(), Problem> {
        let mut conn = self
            .pools
            .app
            .get()
            .await
            .map_err(crate::db::DbError::from)?;
        let tx = begin_tenant_tx(&mut conn, tenant.id).await?;
        let stmt = tx
            .prepare_cached(
                "select role from app.users where tenant_id = $1 and id = $2 and deleted_at is null",
            )
            .await
            .map_err(crate::db::DbError::from)?;
        let row = tx
            .query_opt(&stmt, &[&tenant.id, &claims.sub])
            .await
            .map_err(crate::db::DbError::from)?;
        tx.commit().await.map_err(crate::db::DbError::from)?;
        match row {
            Some(row) if row.get::<_, &str>(0) == claims.role.as_str() => Ok(()),
            _ => Err(
                AuthError::InvalidToken("the user no longer exists or changed role".into()).into(),
            ),
        }
    }

    /// Runs one operation of a tenant inside a transaction bound to it.
    pub async fn execute<O: TenantOp>(&self, caller: Caller, op: O) -> Result<O::Output, Problem> {
        let mut conn = self
            .pools
            .app
            .get()
            .await
            .map_err(crate::db::DbError::from)?;
        let tx = begin_tenant_tx(&mut conn, caller.tenant_id).await?;
        let output = op.run(&tx, &caller).await?;
        tx.commit().await.map_err(crate::db::DbError::from)?;
        Ok(output)
    }
}
