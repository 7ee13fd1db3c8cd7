//! Real-time analytics of a tenant (API.md "Analytics"): ingestion with group commit, rollups
//! kept exact in the same transaction as the events, summary and time series queries, and
//! retention per plan. The tables live in each tenant's own schema (tenant_template/V2).

pub mod api_calls;
pub mod buckets;
pub mod ingest;
pub mod model;
pub mod query;
pub mod retention;
pub mod store;

use std::sync::Arc;

use dashmap::DashMap;
use uuid::Uuid;

use crate::db::{DbError, PgPool};
use crate::error::FieldError;

pub use ingest::{CommittedBatch, CommitterConfig, CommitterStats, GroupCommitter};
pub use model::{EventBatch, IngestRules, NewEvent, ValidEvent};
pub use query::{Metric, Series, SeriesRequest, Summary};

#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error("validation failed: {0:?}")]
    Validation(Vec<FieldError>),
    #[error("too many analytics events pending for the tenant")]
    Overloaded { retry_after: u64 },
    #[error("analytics unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("analytics internal error: {0}")]
    Internal(String),
}

impl From<tokio_postgres::Error> for AnalyticsError {
    fn from(err: tokio_postgres::Error) -> Self {
        AnalyticsError::Db(err.into())
    }
}

/// One failed flush answers every request it held, so the error is copied to each.
impl Clone for AnalyticsError {
    fn clone(&self) -> Self {
        match self {
            AnalyticsError::Validation(e) => AnalyticsError::Validation(e.clone()),
            AnalyticsError::Overloaded { retry_after } => AnalyticsError::Overloaded {
                retry_after: *retry_after,
            },
            AnalyticsError::Unavailable(s) => AnalyticsError::Unavailable(s.clone()),
            AnalyticsError::Internal(s) => AnalyticsError::Internal(s.clone()),
            AnalyticsError::Db(db) => AnalyticsError::Db(match db {
                DbError::UniqueViolation { constraint } => DbError::UniqueViolation {
                    constraint: constraint.clone(),
                },
                DbError::ForeignKeyViolation { constraint } => DbError::ForeignKeyViolation {
                    constraint: constraint.clone(),
                },
                DbError::RowSecurity => DbError::RowSecurity,
                DbError::Timeout => DbError::Timeout,
                DbError::Unavailable(s) => DbError::Unavailable(s.clone()),
                DbError::Other(s) => DbError::Other(s.clone()),
            }),
        }
    }
}

/// The group committers of the tenants that ingested since the start, created on first use.
/// The tenant actor takes over ownership of its committer later (DESIGN.md); the committer
/// does not depend on this registry.
pub struct AnalyticsRegistry {
    pool: PgPool,
    config: CommitterConfig,
    committers: DashMap<Uuid, Arc<GroupCommitter>>,
}

impl AnalyticsRegistry {
    pub fn new(pool: PgPool, config: CommitterConfig) -> AnalyticsRegistry {
        AnalyticsRegistry {
            pool,
            config,
            committers: DashMap::new(),
        }
    }

    pub fn committer(&self, tenant: Uuid) -> Arc<GroupCommitter> {
        if let Some(found) = self.committers.get(&tenant) {
            return found.clone();
        }
        self.committers
            .entry(tenant)
            .or_insert_with(|| GroupCommitter::new(tenant, self.pool.clone(), self.config.clone()))
            .clone()
    }

    /// The tenant's committer if it exists (live subscriptions).
    pub fn existing(&self, tenant: Uuid) -> Option<Arc<GroupCommitter>> {
        self.committers.get(&tenant).map(|c| c.clone())
    }

    /// Drops committers with nothing pending and no live subscriber, bounding memory when many
    /// tenants ingest once in a while. Returns how many were dropped.
    pub fn evict_idle(&self) -> usize {
        let before = self.committers.len();
        self.committers.retain(|_, c| {
            Arc::strong_count(c) > 1 || c.stats().pending_events > 0 || c.has_subscribers()
        });
        before - self.committers.len()
    }
}
