//! Tenants: validation, provisioning (one transaction: tenant, settings, admin, schema), the
//! lifecycle (suspend, resume, soft delete, restore, purge) and the GDPR export.

pub mod bypass;
pub mod current;
pub mod export;
pub mod lifecycle;
pub mod model;
pub mod provision;
pub mod resolve;
pub mod validate;

use thiserror::Error;

use crate::auth::AuthError;
use crate::db::DbError;
use crate::error::FieldError;
use crate::page::PageError;

pub use model::{Tenant, TenantStatus};
pub use provision::{provision, NewTenant, Provisioned};

#[derive(Debug, Error)]
pub enum TenancyError {
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("tenant not found")]
    NotFound,
    #[error("tenant is not deleted")]
    NotDeleted,
    #[error("the retention period of the deleted tenant is over")]
    RetentionExpired,
    #[error(transparent)]
    Db(#[from] DbError),
    /// Hashing the admin's password or signing their first token.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A stored value this version does not know (a CHECK constraint widened by hand, a row
    /// written by a newer version): an error, never read back as some default.
    #[error("{column} holds {value:?}, which is not a value this version knows")]
    CorruptRow { column: &'static str, value: String },
    /// A test made provisioning fail on purpose (`provision::FaultPoint`).
    #[error("injected failure after schema creation")]
    InjectedFault,
}

impl From<PageError> for TenancyError {
    fn from(PageError(errors): PageError) -> Self {
        TenancyError::Validation(errors)
    }
}

impl From<tokio_postgres::Error> for TenancyError {
    fn from(err: tokio_postgres::Error) -> Self {
        TenancyError::Db(err.into())
    }
}

impl From<deadpool::managed::PoolError<tokio_postgres::Error>> for TenancyError {
    fn from(err: deadpool::managed::PoolError<tokio_postgres::Error>) -> Self {
        TenancyError::Db(err.into())
    }
}
