//! Feature flags (docs/flags.md): definitions with a global default, values per plan and an
//! optional percentage rollout; per-tenant overrides; evaluation for a tenant and a targeting
//! key; every change versioned and audited.
//!
//! - [`eval`]: the pure evaluation (definitions + the tenant's overrides + plan + targeting key
//!   -> value, reason, variant) and the Unleash-compatible rollout buckets;
//! - [`model`]: the operator's bodies and their checks (422 with field paths), the API shapes;
//! - [`ops`]: what `GET /features` and OFREP evaluate: the definitions (read once per change
//!   into `cache::Caches`) and the tenant's overrides from its config snapshot;
//! - [`admin`]: the operator's changes, through the admin role, each with its platform audit
//!   row (and the tenant's own audit row for an override) in the same transaction;
//! - [`ofrep`]: the OpenFeature Remote Evaluation Protocol's request and response shapes.
//!
//! Definitions (`app.flags`, `app.flag_versions`) are platform data like `app.plans`; overrides
//! (`app.flag_overrides`) are tenant data under row-level security. Tenants only ever read flags
//! through evaluation, for themselves; only operators change them.

pub mod admin;
pub mod eval;
pub mod model;
pub mod ofrep;
pub mod ops;

use thiserror::Error;

use crate::auth::AccessError;
use crate::db::DbError;
use crate::error::FieldError;
use crate::tenancy::TenancyError;

pub use eval::{evaluate, Definition, Definitions, Evaluation, FlagInputs, Reason, Variant};

#[derive(Debug, Error)]
pub enum FlagError {
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// `flag`, `flag version`, `flag override`.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A definition's new type (or a rolled back version's) would leave overrides of another
    /// type behind.
    #[error("{overrides} tenant override(s) of {key} hold another type than {wanted}")]
    TypeConflict {
        key: String,
        wanted: &'static str,
        overrides: i64,
    },
    /// A rolled back version names a plan that no longer exists.
    #[error("version {version} of the flag cannot be restored")]
    NotRestorable {
        version: i32,
        errors: Vec<FieldError>,
    },
    #[error(transparent)]
    Access(#[from] AccessError),
    /// Finding the tenant of an override, or writing the platform audit row.
    #[error(transparent)]
    Tenancy(#[from] TenancyError),
    #[error(transparent)]
    Db(#[from] DbError),
    /// A stored value this version cannot read: never taken as some default.
    #[error("{column} holds {value}, which is not a value this version knows")]
    CorruptRow { column: &'static str, value: String },
}

impl From<tokio_postgres::Error> for FlagError {
    fn from(err: tokio_postgres::Error) -> Self {
        FlagError::Db(err.into())
    }
}

impl From<deadpool::managed::PoolError<tokio_postgres::Error>> for FlagError {
    fn from(err: deadpool::managed::PoolError<tokio_postgres::Error>) -> Self {
        FlagError::Db(err.into())
    }
}

impl FlagError {
    pub(crate) fn check(errors: Vec<FieldError>) -> Result<(), FlagError> {
        if errors.is_empty() {
            Ok(())
        } else {
            Err(FlagError::Validation(errors))
        }
    }
}
