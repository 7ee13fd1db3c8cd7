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
