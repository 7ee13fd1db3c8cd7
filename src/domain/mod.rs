//! The sample domain (users, projects, project members, tasks). Each operation is one
//! [`TenantOp`](crate::actors::TenantOp) struct, run in a transaction already bound to the
//! caller's tenant. Every query still names `tenant_id = caller.tenant_id` itself: row-level
//! security is the backstop, not the filter.
//!
//! Every create, update and delete writes, in its own transaction, an audit row
//! ([`crate::audit`]) and an outbox event ([`crate::jobs`]), so a change, its audit trail and its
//! events commit or vanish together.
//!
//! Decisions (API.md leaves them open):
//! - A body reference that does not resolve in the tenant (a `project_id`, `assignee_id` or
//!   member `user_id` that is unknown, deleted or another tenant's) is 422 `invalid_reference`
//!   with `errors[{field, message}]`; a path id that does not resolve is 404. The two are told
//!   apart the same way for every resource, and neither says whether the id exists elsewhere.
//! - `?limit=` outside 1..=500 is 422, not clamped, so a client never silently gets fewer rows
//!   than it asked for.
//! - Unknown body or query members (a smuggled `tenant_id` included) are refused with 422.
//! - Deleting a project also deletes its tasks and memberships; deleting a user removes their
//!   memberships and unassigns their tasks: no live row ever points at a deleted one.

pub mod audit_logs;
pub mod members;
pub mod projects;
mod refs;
pub mod tasks;
pub mod users;

use crate::db::TenantTx;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use thiserror::Error;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::audit::{self, AuditAction};
use crate::auth::AccessError;
use crate::auth::Caller;
use crate::db::DbError;
use crate::error::FieldError;
use crate::page::PageError;

#[derive(Debug, Error)]
pub enum DomainError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// A reference in the body that does not resolve inside the caller's tenant.
    #[error("invalid reference")]
    InvalidReference(Vec<FieldError>),
    /// A guard refused the caller (`auth::guard`).
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("the tenant must keep at least one admin")]
    LastAdmin,
    #[error("{0}")]
    Conflict(&'static str),
    #[error(transparent)]
    Db(#[from] DbError),
    /// A stored value this version does not know (a CHECK constraint widened by hand, a row
    /// written by a newer version): an error, never read back as some default.
    #[error("{column} holds {value:?}, which is not a value this version knows")]
    CorruptRow { column: &'static str, value: String },
}

impl From<tokio_postgres::Error> for DomainError {
    fn from(err: tokio_postgres::Error) -> Self {
        DomainError::Db(err.into())
    }
}

impl From<PageError> for DomainError {
    fn from(PageError(errors): PageError) -> Self {
        DomainError::Validation(errors)
    }
}

impl DomainError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        DomainError::Validation(vec![FieldError::new(field, message)])
    }
}

/// One operation type = one struct; this writes the `TenantOp` impl that calls its function.
/// `single_statement` marks a read by id whose only statement is a `Read::Last`
/// (`TenantOp::SINGLE_STATEMENT`).
macro_rules! tenant_op {
    ($op:ty => $out:ty, $f:path) => {
        $crate::domain::tenant_op!($op => $out, $f, false);
    };
    ($op:ty => $out:ty, $f:path, single_statement) => {
        $crate::domain::tenant_op!($op => $out, $f, true);
    };
    ($op:ty => $out:ty, $f:path, $single:literal) => {
        impl $crate::actors::TenantOp for $op {
            type Output = $out;
            type Error = $crate::domain::DomainError;
            const SINGLE_STATEMENT: bool = $single;
            // The domain lives in the shared schema only.
            const OPENS_TENANT_SCHEMA: bool = false;

            fn run<'a>(
                self,
                tx: &'a crate::db::TenantTx<'a>,
                caller: &'a $crate::auth::Caller,
            ) -> futures_util::future::BoxFuture<'a, Result<$out, $crate::domain::DomainError>> {
                Box::pin($f(tx, caller, self))
            }
        }
    };
}
pub(crate) use tenant_op;

/// Statements are prepared once per connection and reused (deadpool's statement cache).
pub(crate) async fn query(
    tx: &TenantTx<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, DomainError> {
    let stmt = tx.prepare_cached(sql).await?;
    Ok(tx.query(&stmt, params).await?)
}

pub(crate) async fn query_opt(
    tx: &TenantTx<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, DomainError> {
    let stmt = tx.prepare_cached(sql).await?;
    Ok(tx.query_opt(&stmt, params).await?)
}

/// How an operation reads one row by id.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// More statements follow.
    Plain,
    /// Locked for the update that follows.
    ForUpdate,
    /// The operation's only statement: it travels with the end of its transaction
    /// (`TenantTx::query_opt_then_commit`; see `tenant_op!(.., single_statement)`).
    Last,
}

impl Read {
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Read::ForUpdate => " for update",
            Read::Plain | Read::Last => "",
        }
    }
}

/// One row by id, read as `read` says.
pub(crate) async fn read_row(
    tx: &TenantTx<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    read: Read,
) -> Result<Option<Row>, DomainError> {
    let stmt = tx.prepare_cached(sql).await?;
    if read == Read::Last {
        return Ok(tx.query_opt_then_commit(&stmt, params).await?);
    }
    Ok(tx.query_opt(&stmt, params).await?)
}

pub(crate) async fn query_one(
    tx: &TenantTx<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Row, DomainError> {
    let stmt = tx.prepare_cached(sql).await?;
    Ok(tx.query_one(&stmt, params).await?)
}

pub(crate) async fn execute(
    tx: &TenantTx<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, DomainError> {
    let stmt = tx.prepare_cached(sql).await?;
    Ok(tx.execute(&stmt, params).await?)
}

/// A change to one row: its audit entry and its outbox event, in the caller's transaction.
pub(crate) struct Change<'a> {
    pub action: AuditAction,
    pub resource: &'static str,
    pub resource_id: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    /// e.g. `task.created`; the payload is the row after the change (before it, for deletes).
    pub event_type: &'a str,
}

pub(crate) async fn record_change(
    tx: &TenantTx<'_>,
    caller: &Caller,
    change: Change<'_>,
) -> Result<(), DomainError> {
    let payload = change
        .after
        .clone()
        .or_else(|| change.before.clone())
        .unwrap_or(Value::Null);
    audit::record(
        tx,
        caller,
        audit::Entry {
            action: change.action,
            resource: change.resource,
            resource_id: change.resource_id,
            before: change.before,
            after: change.after,
            extra: None,
        },
    )
    .await?;
    crate::jobs::enqueue(tx, caller.tenant_id, change.event_type, &payload).await?;
    Ok(())
}

/// For PATCH members that may be set to null: absent is `None`, `null` is `Some(None)`.
pub(crate) fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Trimmed text of `min..=max` characters.
pub(crate) fn text(
    field: &str,
    value: &str,
    min: usize,
    max: usize,
    errors: &mut Vec<FieldError>,
) -> String {
    let trimmed = value.trim();
    let len = trimmed.chars().count();
    if len < min || len > max {
        let message = if min == 0 {
            format!("use at most {max} characters")
        } else {
            format!("use {min} to {max} characters")
        };
        errors.push(FieldError::new(field, message));
    }
    trimmed.to_string()
}

pub(crate) fn check(errors: Vec<FieldError>) -> Result<(), DomainError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(DomainError::Validation(errors))
    }
}

pub const MAX_DESCRIPTION: usize = 10_000;
