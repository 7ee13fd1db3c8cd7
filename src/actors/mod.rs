//! The tenant actor system (DESIGN.md, "The path of a request"): a registry of one supervised
//! actor per active tenant, through whose mailbox every operation of that tenant passes.
//!
//! An operation is a type implementing [`TenantOp`]: one typed message per operation. It runs
//! inside a transaction already bound to its tenant (`app.current_tenant` set), on a connection
//! leased from the tenant's share of the pool.

pub mod supervisor;
pub mod tenant;

use futures_util::future::BoxFuture;
use uuid::Uuid;

use crate::auth::Role;
use crate::error::Problem;

pub use supervisor::{ActorInfo, ActorSettings, TenantRegistry};

/// Who is asking, in which tenant. Built by the tenant resolver from a verified credential;
/// handlers never build one from request input.
#[derive(Clone, Debug)]
pub struct Caller {
    pub tenant_id: Uuid,
    pub tenant_slug: String,
    pub plan: String,
    /// None for unauthenticated requests that only name a tenant (e.g. GET /branding).
    pub user_id: Option<Uuid>,
    pub role: Option<Role>,
    pub request_id: String,
}

impl Caller {
    /// The authenticated user, or 401.
    pub fn user(&self) -> Result<Uuid, Problem> {
        self.user_id
            .ok_or_else(|| Problem::from(crate::auth::AuthError::MissingCredentials))
    }

    /// The authenticated user if they are a tenant admin; 401 without credentials, 403 for a
    /// member.
    pub fn admin(&self) -> Result<Uuid, Problem> {
        let user = self.user()?;
        match self.role {
            Some(Role::Admin) => Ok(user),
            _ => {
                Err(Problem::forbidden("this requires the admin role")
                    .with("required_role", "admin"))
            }
        }
    }
}

/// One operation of a tenant, run inside a transaction bound to that tenant. Every query in
/// `run` still filters by `caller.tenant_id` explicitly; RLS is the backstop, not the filter.
pub trait TenantOp: Send + 'static {
    type Output: Send + 'static;

    /// True for an operation whose only statement goes through
    /// `TenantTx::query_opt_then_commit` (a read by id): it then runs without `BEGIN`, with the
    /// tenant context and the statement under one Sync (`TenantTx::single_statement`).
    const SINGLE_STATEMENT: bool = false;

    /// False for an operation that touches only the shared schema: it then does not count
    /// against its connection's budget of tenant schemas (`db::pool`). Counting schemas it never
    /// opens would retire busy connections for nothing.
    const OPENS_TENANT_SCHEMA: bool = true;

    fn run<'a>(
        self,
        tx: &'a crate::db::TenantTx<'a>,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<Self::Output, Problem>>;
}
