//! The tenant actor system (DESIGN.md, "The path of a request"): a registry of one supervised
//! actor per active tenant, through whose mailbox every operation of that tenant passes.
//!
//! An operation is a type implementing [`TenantOp`]: one typed message per operation. It runs
//! inside a transaction already bound to its tenant (`app.current_tenant` set), on a connection
//! leased from the tenant's share of the pool.

pub mod supervisor;
pub mod tenant;

use futures_util::future::BoxFuture;

use crate::auth::Caller;
use crate::error::Problem;

pub use supervisor::{ActorInfo, ActorSettings, TenantRegistry};

/// One operation of a tenant, run inside a transaction bound to that tenant. Every query in
/// `run` still filters by `caller.tenant_id` explicitly; RLS is the backstop, not the filter.
pub trait TenantOp: Send + 'static {
    type Output: Send + 'static;

    /// True for an operation whose only statement goes through
    /// `TenantTx::query_opt_then_commit` (a read by id): it then runs without `BEGIN`, with the
    /// tenant context and the statement under one Sync (`TenantTx::single_statement`).
    const SINGLE_STATEMENT: bool = false;

    /// False for an operation that touches only the shared schema: it then does not count
    /// against its connection's budget of tenant schemas (`db::pool`). Counted, a thousand busy
    /// tenants spent that budget in about a second and retired a connection each time.
    const OPENS_TENANT_SCHEMA: bool = true;

    fn run<'a>(
        self,
        tx: &'a crate::db::TenantTx<'a>,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<Self::Output, Problem>>;
}
