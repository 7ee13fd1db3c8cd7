//! The tenant actor system (DESIGN.md, "The path of a request"): a registry of one supervised
//! actor per active tenant, through whose mailbox every operation of that tenant passes.
//!
//! An operation is a type implementing [`TenantOp`]: one typed message per operation. It runs
//! inside a transaction already bound to its tenant (`app.current_tenant` set), on a connection
//! leased from the tenant's share of the pool.
//!
//! Errors come in two layers: an operation fails with its own area's error
//! ([`TenantOp::Error`]), the machinery around it with an [`ActorError`] (the tenant is
//! overloaded or restarting, the transaction could not be opened or committed). The caller gets
//! both as one [`ExecError`]; neither knows about HTTP.

pub mod config;
pub mod faults;
pub mod shared;
pub mod supervisor;
pub mod tenant;

use futures_util::future::BoxFuture;
use thiserror::Error;

use crate::auth::Caller;
use crate::db::DbError;

pub use shared::ActorSettings;
pub use supervisor::{ActorInfo, TenantRegistry};

/// One operation of a tenant, run inside a transaction bound to that tenant. Every query in
/// `run` still filters by `caller.tenant_id` explicitly; RLS is the backstop, not the filter.
pub trait TenantOp: Send + 'static {
    type Output: Send + 'static;

    /// What the operation itself can fail with: its area's error enum.
    type Error: std::error::Error + Send + 'static;

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
    ) -> BoxFuture<'a, Result<Self::Output, Self::Error>>;
}

/// Why a tenant's actor did not run an operation to the end. Every variant but `Db` and
/// `Config` is transient: the operation may be retried as it is.
#[derive(Debug, Error)]
pub enum ActorError {
    /// Back-pressure: the tenant's mailbox is full.
    #[error("the tenant's mailbox is full")]
    MailboxFull,
    /// Back-pressure: the tenant has as many operations in progress as it may.
    #[error("too many operations of this tenant in progress")]
    TooManyInFlight,
    #[error("the tenant supervisor is unavailable")]
    SupervisorUnavailable(#[source] actix::MailboxError),
    /// The actor restarted while the operation waited for a connection lease.
    #[error("the tenant actor is restarting")]
    LeasesClosed(#[source] tokio::sync::AcquireError),
    /// The actor died and its replacement could not take the operation either.
    #[error("the tenant actor is restarting")]
    Restarting,
    /// The operation was dropped by a restart before it answered.
    #[error("the operation was cancelled by a restart")]
    Cancelled(#[source] tokio::sync::oneshot::error::RecvError),
    /// The operation panicked; the actor restarts.
    #[error("the tenant's operation panicked")]
    Panicked,
    /// Leasing the connection, opening or committing the transaction around the operation.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The tenant's config snapshot could not be loaded, and there is none to serve.
    #[error("the tenant's configuration could not be loaded")]
    Config(#[source] std::sync::Arc<crate::tenant_config::load::LoadError>),
    /// The tenant's first config snapshot took too long to load.
    #[error("the tenant's configuration is still loading")]
    ConfigTimeout,
}

/// The outcome of [`TenantRegistry::execute`] when it is not the operation's output.
#[derive(Debug, Error)]
pub enum ExecError<E> {
    /// The operation ran and failed.
    #[error(transparent)]
    Op(E),
    /// The operation did not run, or its transaction did not commit.
    #[error(transparent)]
    Actor(#[from] ActorError),
}

impl<E> From<DbError> for ExecError<E> {
    fn from(err: DbError) -> Self {
        ExecError::Actor(ActorError::Db(err))
    }
}
