//! PostgreSQL access: pools (one per role), tenant-bound transactions, roles and grants, and the
//! migration runner for the shared schema and every tenant schema.

pub mod citus;
pub mod migrate;
pub mod pool;
pub mod roles;
pub mod template;
pub mod tenant_tx;
pub mod tls;

use std::sync::Arc;

use deadpool::managed::PoolError;
use thiserror::Error;
use tokio_postgres::error::SqlState;

pub use pool::{PgPool, PooledConn, Pools, SharedConn};
pub use tenant_tx::{
    begin_tenant_tx, begin_tenant_tx_without_waiting, tenant_schema_name, TenantTx,
    COMMIT_WITHOUT_WAITING_SQL,
};

/// What can go wrong talking to PostgreSQL. The variants a client can cause or must react to
/// (a duplicate, a missing reference, a timeout, an outage) are told apart; everything else keeps
/// the driver's error as its source, for the log.
///
/// Cheap to clone (the sources are shared): one failed group commit answers every request it
/// held with the same error.
#[derive(Debug, Clone, Error)]
pub enum DbError {
    #[error("unique constraint {constraint:?} violated")]
    UniqueViolation { constraint: Option<String> },
    #[error("foreign key {constraint:?} violated")]
    ForeignKeyViolation { constraint: Option<String> },
    #[error("row-level security rejected the row")]
    RowSecurity,
    #[error("statement timed out")]
    Timeout,
    /// The server refused or dropped the connection (too many connections, shutdown, closed).
    #[error("database unavailable")]
    Unavailable(#[source] Arc<tokio_postgres::Error>),
    #[error("no database connection became free in time")]
    PoolTimeout,
    #[error("the connection pool failed")]
    Pool(#[source] Arc<PoolError<tokio_postgres::Error>>),
    #[error("invalid database URL")]
    InvalidUrl(#[source] Arc<tokio_postgres::Error>),
    #[error("cannot build the connection pool")]
    PoolBuild(#[source] Arc<deadpool::managed::BuildError>),
    #[error("a query for at most one row returned more")]
    MoreThanOneRow,
    #[error("cannot read the tenant template in {dir}")]
    TemplateRead {
        dir: String,
        #[source]
        source: Arc<refinery_core::Error>,
    },
    #[error("no V<n>__<name>.sql migrations in {0}")]
    TemplateEmpty(String),
    #[error("the tenant template diverges: {0}")]
    TemplateDiverges(String),
    /// `tenantry migrate` on a Citus database without `--citus`, or the reverse.
    #[error("{0}")]
    DeploymentMode(String),
    #[error("migration of {schema} failed")]
    Migration {
        schema: String,
        #[source]
        source: Arc<refinery::Error>,
    },
    /// sslmode=require, and the TLS client cannot be set up (PGSSLROOTCERT unreadable).
    #[error("cannot set up TLS to the database: {detail}")]
    Tls {
        detail: String,
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// Anything else PostgreSQL or the driver reported: a bug or an operator's problem.
    #[error("database error")]
    Postgres(#[source] Arc<tokio_postgres::Error>),
}

impl From<tokio_postgres::Error> for DbError {
    fn from(err: tokio_postgres::Error) -> Self {
        if let Some(db) = err.as_db_error() {
            let constraint = db
                .constraint()
                .map(|c| logical_constraint_name(c).to_string());
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
                return DbError::Unavailable(Arc::new(err));
            }
            return DbError::Postgres(Arc::new(err));
        }
        if err.is_closed() {
            return DbError::Unavailable(Arc::new(err));
        }
        DbError::Postgres(Arc::new(err))
    }
}

impl From<PoolError<tokio_postgres::Error>> for DbError {
    fn from(err: PoolError<tokio_postgres::Error>) -> Self {
        match err {
            // A new connection could not be opened: the server is down or refuses us.
            PoolError::Backend(e) => DbError::Unavailable(Arc::new(e)),
            PoolError::Timeout(_) => DbError::PoolTimeout,
            other => DbError::Pool(Arc::new(other)),
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
    "settings_versions",
    "flag_overrides",
    "webhooks",
    "webhook_messages",
    "webhook_deliveries",
    "webhook_rate_windows",
    "usage_events",
    "usage_rollups",
    "subscriptions",
    "billing_accounts",
    "stripe_events",
    "invoices",
];

/// A constraint's name as the schema declares it. An error raised on a Citus worker names the
/// shard's copy, the table's constraint with `_<shard id>` appended (shard ids are 6 digits and
/// up; no constraint of tenantry ends in digits), so the 409's detail and `constraint` match
/// those of plain PostgreSQL (docs/scale-out.md).
fn logical_constraint_name(name: &str) -> &str {
    match name.rsplit_once('_') {
        Some((base, shard))
            if !base.is_empty()
                && shard.len() >= 6
                && shard.bytes().all(|b| b.is_ascii_digit()) =>
        {
            base
        }
        _ => name,
    }
}

#[cfg(test)]
mod constraint_name_tests {
    use super::logical_constraint_name;

    #[test]
    fn a_citus_shard_suffix_is_dropped_and_nothing_else() {
        assert_eq!(
            logical_constraint_name("tenants_slug_key_102014"),
            "tenants_slug_key"
        );
        assert_eq!(
            logical_constraint_name("tenants_slug_key"),
            "tenants_slug_key"
        );
        assert_eq!(logical_constraint_name("events_2024"), "events_2024");
        assert_eq!(logical_constraint_name("_102014"), "_102014");
    }
}
