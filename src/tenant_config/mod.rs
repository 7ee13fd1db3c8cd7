//! A tenant's configuration (API.md "Plans, settings, branding, feature flags";
//! docs/configuration-model.md): plans as data, the tenant's settings and branding, and the
//! snapshot of all of it that the tenant's actor holds so that policy questions are answered
//! from memory.
//!
//! - [`snapshot`]: the immutable [`TenantSnapshot`] and the types in it;
//! - [`load`]: reading one from PostgreSQL, and its copies in Redis;
//! - [`plans`]: `GET /plans`, `PUT /admin/plans/{plan}`, `PUT /admin/tenants/{id}/plan`;
//! - [`settings`]: `GET|PATCH /settings`, `PUT /settings/branding`, with their validation.
//!
//! Every change here is followed by `AppState::invalidate` (the Redis copy is dropped, this
//! instance's actor reloads, the others are told over Redis pub/sub); plan gates read the
//! snapshot through `auth::guard::PlanGate`.

pub mod load;
pub mod plans;
pub mod settings;
pub mod snapshot;

use thiserror::Error;

use crate::auth::AccessError;
use crate::db::DbError;
use crate::error::FieldError;

pub use snapshot::{Branding, Limit, Limits, Plan, Settings, TenantSnapshot};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("tenant not found")]
    TenantNotFound,
    /// A guard refused the caller (`auth::guard`).
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Db(#[from] DbError),
    /// A stored value this version cannot read.
    #[error(transparent)]
    Load(#[from] load::LoadError),
    /// Reading a tenant or writing the platform audit trail (`tenancy::lifecycle`).
    #[error(transparent)]
    Tenancy(#[from] crate::tenancy::TenancyError),
}

impl From<tokio_postgres::Error> for ConfigError {
    fn from(err: tokio_postgres::Error) -> Self {
        ConfigError::Db(err.into())
    }
}

impl From<deadpool::managed::PoolError<tokio_postgres::Error>> for ConfigError {
    fn from(err: deadpool::managed::PoolError<tokio_postgres::Error>) -> Self {
        ConfigError::Db(err.into())
    }
}

impl ConfigError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        ConfigError::Validation(vec![FieldError::new(field, message)])
    }
}

/// Collected field errors as the result of a validation.
fn checked<T>(value: T, errors: Vec<FieldError>) -> Result<T, ConfigError> {
    if errors.is_empty() {
        Ok(value)
    } else {
        Err(ConfigError::Validation(errors))
    }
}

/// A string a client sent that PostgreSQL can store and a log can show: no NUL, no other
/// control character.
fn printable(value: &str) -> bool {
    !value.chars().any(char::is_control)
}
