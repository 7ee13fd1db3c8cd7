//! Usage metering (API.md "Usage metering and billing"; docs/usage.md): usage events, their
//! hourly and daily rollups, the hourly samples of seats and storage, billing periods and the
//! metered quotas admitted before the action.
//!
//! What other areas call (billing builds on these):
//!
//! - [`period::period_containing`]`(anchor, at) -> Period`: the monthly half-open UTC period.
//! - [`period_anchor`]`(client, tenant) -> DateTime<Utc>`: the subscription's
//!   `current_period_start`, else the tenant's `created_at`.
//! - [`period_totals`]`(client, tenant, &period, now) -> BTreeMap<metric, i64>`: the usage of
//!   each metric in the period. `client` must be inside a transaction bound to `tenant`
//!   (`TenantTx::client()` in a `TenantOp`, or a connection after `set_config`); every query
//!   also filters by tenant_id. Additive metrics are summed; the sampled gauges
//!   (`active_users`, `storage_bytes`) give their largest sample in the period. `api_calls`
//!   comes from the analytics counters (its only copy), by whole hours: an hour that straddles
//!   the period's start counts in the period before.

pub mod events;
pub mod period;
pub mod quota;
pub mod rollup;
pub mod sample;

use std::collections::BTreeMap;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use thiserror::Error;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::auth::AccessError;
use crate::db::{tenant_schema_name, DbError};
use crate::error::FieldError;
pub use period::{period_containing, Period};

/// The metric every API request of a tenant is metered as (by `analytics::api_calls`).
pub const API_CALLS: &str = "api_calls";
/// Sampled hourly by the server; clients cannot post them.
pub const ACTIVE_USERS: &str = "active_users";
pub const STORAGE_BYTES: &str = "storage_bytes";
/// Metrics whose value is a level, not an amount: rolled up and totalled as their maximum.
pub const GAUGES: [&str; 2] = [ACTIVE_USERS, STORAGE_BYTES];
/// Metrics the server meters itself.
pub const RESERVED: [&str; 3] = [API_CALLS, ACTIVE_USERS, STORAGE_BYTES];

/// Events older than this are refused; rollups older than this never change again.
pub const GRACE: TimeDelta = TimeDelta::hours(48);
/// Clock skew allowed for events from the future.
pub const SKEW: TimeDelta = TimeDelta::minutes(5);

#[derive(Debug, Error)]
pub enum UsageError {
    #[error("validation failed: {0:?}")]
    Validation(Vec<FieldError>),
    #[error("too many usage events in one request: {count} (at most {max})")]
    TooManyEvents { count: usize, max: usize },
    #[error(transparent)]
    Access(#[from] AccessError),
    /// Over a metered quota of the period.
    #[error("{metric}: the quota of {limit} for the period is reached ({used} used)")]
    QuotaExceeded {
        metric: String,
        limit: i64,
        used: i64,
        /// Until the period ends.
        retry_after: std::time::Duration,
    },
    #[error(transparent)]
    Db(#[from] DbError),
    /// The tenant's actor did not run a read the admission needed.
    #[error(transparent)]
    Actor(#[from] crate::actors::ActorError),
}

impl From<tokio_postgres::Error> for UsageError {
    fn from(err: tokio_postgres::Error) -> Self {
        UsageError::Db(err.into())
    }
}

pub fn is_gauge(metric: &str) -> bool {
    GAUGES.contains(&metric)
}

pub fn floor_hour(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::hours(1)).unwrap_or(at)
}

pub fn ceil_hour(at: DateTime<Utc>) -> DateTime<Utc> {
    let floor = floor_hour(at);
    if floor == at {
        at
    } else {
        floor + TimeDelta::hours(1)
    }
}

pub fn floor_day(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::days(1)).unwrap_or(at)
}

/// Where the tenant's billing periods are anchored.
pub async fn period_anchor<C: GenericClient + Sync>(
    client: &C,
    tenant: Uuid,
) -> Result<DateTime<Utc>, UsageError> {
    let row = client
        .query_opt(
            "select coalesce( \
               (select s.current_period_start from app.subscriptions s \
                 where s.tenant_id = $1 and s.deleted_at is null), \
               (select t.created_at from app.tenants t where t.id = $1))",
            &[&tenant],
        )
        .await?;
    Ok(row
        .and_then(|r| r.get::<_, Option<DateTime<Utc>>>(0))
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH))
}

/// The hours of `period` whose rollups are final at `now`: whole hours inside the period, every
/// event of which was received over an hour ago (events arrive at most [`GRACE`] late).
/// Everything else of the period is read from the events themselves.
fn rolled_range(period: &Period, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let from = ceil_hour(period.start);
    let until = floor_hour(now - GRACE - TimeDelta::hours(1)).min(floor_hour(period.end));
    (from, until.max(from))
}

/// The usage of each metric of `tenant` in `period` (see the module doc).
pub async fn period_totals<C: GenericClient + Sync>(
    client: &C,
    tenant: Uuid,
    period: &Period,
    now: DateTime<Utc>,
) -> Result<BTreeMap<String, i64>, UsageError> {
    let (rolled_from, rolled_until) = rolled_range(period, now);
    let mut totals: BTreeMap<String, i64> = BTreeMap::new();
    let mut add = |metric: String, sum: i64, max: i64| {
        let slot = totals.entry(metric.clone()).or_insert(0);
        if is_gauge(&metric) {
            *slot = (*slot).max(max);
        } else {
            *slot = slot.saturating_add(sum);
        }
    };
    let rollups = client
        .query(
            "select metric, coalesce(sum(quantity), 0)::bigint, coalesce(max(quantity), 0) \
             from app.usage_rollups \
             where tenant_id = $1 and granularity = 'hour' and deleted_at is null \
               and period_start >= $2 and period_start < $3 \
             group by metric",
            &[&tenant, &rolled_from, &rolled_until],
        )
        .await?;
    for row in rollups {
        add(row.get(0), row.get(1), row.get(2));
    }
    let events = client
        .query(
            "select metric, coalesce(sum(quantity), 0)::bigint, coalesce(max(quantity), 0) \
             from app.usage_events \
             where tenant_id = $1 and deleted_at is null \
               and occurred_at >= $2 and occurred_at < $3 \
               and not (occurred_at >= $4 and occurred_at < $5) \
             group by metric",
            &[
                &tenant,
                &period.start,
                &period.end,
                &rolled_from,
                &rolled_until,
            ],
        )
        .await?;
    for row in events {
        add(row.get(0), row.get(1), row.get(2));
    }
    // A tenant schema being purged has no counters left to count (and a failed statement
    // would abort the caller's transaction).
    let schema = tenant_schema_name(tenant);
    let has_counters: bool = client
        .query_one(
            "select to_regclass($1) is not null",
            &[&format!("{schema}.counters")],
        )
        .await?
        .get(0);
    let api_calls: i64 = if has_counters {
        client
            .query_one(
                &format!(
                    "select coalesce(sum(n), 0)::bigint from {schema}.counters \
                     where tenant_id = $1 and kind = 'a' and key = '' and bucket >= $2 and bucket < $3"
                ),
                &[&tenant, &ceil_hour(period.start), &period.end],
            )
            .await?
            .get(0)
    } else {
        0
    };
    if api_calls > 0 {
        totals.insert(API_CALLS.to_string(), api_calls);
    }
    Ok(totals)
}

/// What the server holds for metering: the quota budgets and the tenants whose events the
/// rollup loop has yet to roll.
#[derive(Default)]
pub struct UsageState {
    pub quotas: std::sync::Arc<quota::Quotas>,
    pub touched: std::sync::Arc<rollup::Touched>,
}

/// `POST /usage/events` after validation: admits the quantities of metrics with a quota in the
/// caller's plan, stores the events (committed before this returns), and gives back what
/// repeated keys were admitted for. A failed insert gives back everything. Over a quota, the
/// events already stored are set aside and the rest admitted again: a client retrying a batch
/// that was stored gets its 202, not a 429.
pub async fn ingest(
    state: &crate::state::AppState,
    caller: &crate::auth::Caller,
    events: Vec<events::UsageEvent>,
) -> Result<events::Stored, UsageError> {
    caller.user()?;
    let submitted = events.len();
    let backing = &quota::ServerBacking { state };
    let limits = &caller.config.plan.limits.usage_quotas;
    let amounts_of = |events: &[events::UsageEvent]| -> Vec<(String, i64, i64)> {
        events::quantities(events)
            .into_iter()
            .filter_map(|(metric, n)| {
                limits
                    .get(metric)
                    .map(|limit| (metric.to_string(), n, *limit))
            })
            .collect()
    };
    let admit = |amounts: Vec<(String, i64, i64)>| async move {
        if amounts.is_empty() {
            return Ok(None);
        }
        let amounts: Vec<(&str, i64, i64)> = amounts
            .iter()
            .map(|(m, n, l)| (m.as_str(), *n, *l))
            .collect();
        state
            .usage
            .quotas
            .admit(backing, caller, &amounts)
            .await
            .map(Some)
    };
    let exec = |err: crate::actors::ExecError<UsageError>| match err {
        crate::actors::ExecError::Op(err) => err,
        crate::actors::ExecError::Actor(err) => UsageError::Actor(err),
    };
    let (events, admitted) = match admit(amounts_of(&events)).await {
        Ok(admitted) => (events, admitted),
        Err(refused @ UsageError::QuotaExceeded { .. }) => {
            let keys = events.iter().map(|e| e.idempotency_key.clone()).collect();
            let stored = state
                .execute(caller.clone(), events::StoredKeys(keys))
                .await
                .map_err(exec)?;
            let fresh: Vec<events::UsageEvent> = events
                .into_iter()
                .filter(|e| !stored.contains(&e.idempotency_key))
                .collect();
            if fresh.len() == submitted {
                return Err(refused);
            }
            let admitted = admit(amounts_of(&fresh)).await?;
            (fresh, admitted)
        }
        Err(err) => return Err(err),
    };
    let outcome = state
        .execute(caller.clone(), events::InsertEvents(events.clone()))
        .await;
    let mut stored = match outcome {
        Ok(stored) => stored,
        Err(err) => {
            if let Some(admitted) = &admitted {
                state.usage.quotas.give_back(caller.tenant_id, admitted);
            }
            return Err(exec(err));
        }
    };
    if let Some(admitted) = &admitted {
        for (metric, n) in stored.repeated(&events) {
            state
                .usage
                .quotas
                .give_back_some(caller.tenant_id, admitted, &metric, n);
        }
    }
    if !stored.inserted.is_empty() {
        state.usage.touched.mark(caller.tenant_id);
    }
    stored.submitted = submitted;
    Ok(stored)
}

/// One API call of the caller against the plan's `api_calls_per_month`, before the request is
/// handled (no limit: nothing to do, not even a lookup).
pub async fn admit_api_call(
    state: &crate::state::AppState,
    caller: &crate::auth::Caller,
) -> Result<(), UsageError> {
    let Some(limit) = caller
        .config
        .plan
        .limit(crate::tenant_config::Limit::ApiCallsPerMonth)
    else {
        return Ok(());
    };
    let backing = quota::ServerBacking { state };
    state
        .usage
        .quotas
        .admit_unit(&backing, caller, API_CALLS, 1, limit)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn hours() {
        assert_eq!(
            ceil_hour(t("2026-01-01T10:30:00Z")),
            t("2026-01-01T11:00:00Z")
        );
        assert_eq!(
            ceil_hour(t("2026-01-01T10:00:00Z")),
            t("2026-01-01T10:00:00Z")
        );
        assert_eq!(
            floor_day(t("2026-01-01T10:30:00Z")),
            t("2026-01-01T00:00:00Z")
        );
    }

    #[test]
    fn only_final_whole_hours_come_from_rollups() {
        let period = Period {
            start: t("2026-01-01T10:30:00Z"),
            end: t("2026-02-01T10:30:00Z"),
        };
        // Early in the period nothing is final.
        let (from, until) = rolled_range(&period, t("2026-01-02T00:00:00Z"));
        assert_eq!(from, until);
        let (from, until) = rolled_range(&period, t("2026-01-20T12:10:00Z"));
        assert_eq!(from, t("2026-01-01T11:00:00Z"));
        assert_eq!(until, t("2026-01-18T11:00:00Z"));
        // Long after the period: every whole hour, not the partial last one.
        let (_, until) = rolled_range(&period, t("2026-06-01T00:00:00Z"));
        assert_eq!(until, t("2026-02-01T10:00:00Z"));
    }
}
