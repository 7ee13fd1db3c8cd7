//! PostgreSQL access: pools (one per role), tenant-bound transactions, roles and grants, and the
//! migration runner for the shared schema and every tenant schema.

pub mod migrate;
pub mod pool;
pub mod roles;
pub mod template;
pub mod tenant_tx;

use thiserror::Error;
use tokio_postgres::error::SqlState;

pub use pool::{PgPool, PooledConn, Pools, SharedConn};
pub use tenant_tx::{begin_tenant_tx, tenant_schema_name, TenantTx, COMMIT_WITHOUT_WAITING_SQL};

#[derive(Debug, Error)]
pub enum DbError {
    #[error("unique constraint {constraint:?} violated")]
    UniqueViolation { constraint: Option<String> },
    #[error("foreign key {constraint:?} violated")]
    ForeignKeyViolation { constraint: Option<String> },
    #[error("row-level security rejected the row")]
    RowSecurity,
    #[error("statement timed out")]
    Timeout,
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Other(String),
}

impl From<tokio_postgres::Error> for DbError {
    fn from(err: tokio_postgres::Error) -> Self {
        if let Some(db) = err.as_db_error() {
            let constraint = db.constraint().map(str::to_string);
            let code = db.code();
            if *code == SqlState::UNIQUE_VIOLATION {
                return DbError::UniqueViolation { constraint };
            }
            if *code == SqlState::FOREIGN_KEY_VIOLATION {
                return DbError::ForeignKeyViolation { constraint };
            }
            if *code == SqlState::INSUFFICIENT_PRIVILEGE
                && db.message().contains("row-level security")
            {
                return DbError::RowSecurity;
            }
            if *code == SqlState::QUERY_CANCELED {
                return DbError::Timeout;
            }
            if *code == SqlState::TOO_MANY_CONNECTIONS || *code == SqlState::ADMIN_SHUTDOWN {
                return DbError::Unavailable(db.message().to_string());
            }
            return DbError::Other(format!("{}: {}", code.code(), db.message()));
        }
        if err.is_closed() {
            return DbError::Unavailable(err.to_string());
        }
        DbError::Other(err.to_string())
    }
}

impl From<deadpool::managed::PoolError<tokio_postgres::Error>> for DbError {
    fn from(err: deadpool::managed::PoolError<tokio_postgres::Error>) -> Self {
        use deadpool::managed::PoolError;
        match err {
            PoolError::Backend(e) => DbError::Unavailable(e.to_string()),
            PoolError::Timeout(_) => DbError::Unavailable("no database connection free".into()),
            other => DbError::Unavailable(other.to_string()),
        }
    }
}

/// Every table of the shared schema holding tenant data, a referenced table before the tables
/// pointing at it (soft delete and restore walk it in order, purge in reverse). The catalog test
/// checks both the set and the order against the database, so a table added without being
/// listed here, or listed after a table that references it, breaks the tests.
pub const TENANT_TABLES: &[&str] = &[
    "users",
    "projects",
    "project_members",
    "tasks",
    "audit_logs",
    "api_keys",
    "outbox",
];
