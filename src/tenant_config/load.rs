//! Where a snapshot comes from: PostgreSQL (the truth: one statement under the tenant's
//! context) and Redis (a copy with a TTL, so that a tenant activated on another instance costs
//! one Redis read). Redis may lose the copy, or be down, at any time: every path that finds no
//! copy reads PostgreSQL, and a failed Redis call is logged and otherwise ignored.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;
use redis::aio::ConnectionManager;
use serde_json::Value;
use thiserror::Error;
use uuid::Uuid;

use super::snapshot::{
    feature, FlagOverrides, Limit, Limits, Plan, Settings, SnapshotParts, TenantRow,
    TenantSnapshot, TenantState, SNAPSHOT_FORMAT,
};
use crate::db::{DbError, TenantTx};

#[derive(Debug, Error)]
pub enum LoadError {
    #[error(transparent)]
    Db(#[from] DbError),
    /// No tenant row with that id (purged), or its plan has no row.
    #[error("tenant {0} has no row, or its plan none")]
    Missing(Uuid),
    /// A stored value this version cannot read: an error, never read back as some default.
    #[error("{column} holds a value this version cannot read: {reason}")]
    CorruptRow {
        column: &'static str,
        reason: String,
    },
}

impl From<tokio_postgres::Error> for LoadError {
    fn from(err: tokio_postgres::Error) -> Self {
        LoadError::Db(err.into())
    }
}

/// The tenant row, its plan, the cheapest plan of every feature, the settings version and the
/// tenant's flag overrides (of their flag's type), in one statement. Run under the tenant's
/// context: the app role sees its own tenant row and overrides only. The tenant's rows are found
/// by `$1`, not by a correlation with `t.id` (the same tenant): Citus plans a subquery on a
/// distributed table filtered by a constant, not one correlated with a reference table.
const SNAPSHOT_SQL: &str = "\
    select t.slug, t.status, t.deleted_at is not null, t.plan, t.settings, \
           p.display_name, p.rank, p.price_cents, p.currency, p.limits, p.features, \
           coalesce((select jsonb_object_agg(c.feature, c.plan) from ( \
               select distinct on (f.key) f.key as feature, q.name as plan \
               from app.plans q cross join lateral jsonb_each(q.features) f \
               where f.value = 'true'::jsonb \
               order by f.key, q.price_cents, q.rank, q.name) c), '{}'::jsonb), \
           coalesce((select max(v.version) from app.settings_versions v \
                     where v.tenant_id = $1), 0), \
           coalesce((select jsonb_object_agg(o.flag_key, o.value) \
                     from app.flag_overrides o join app.flags f on f.key = o.flag_key \
                     where o.tenant_id = $1 and o.deleted_at is null \
                       and jsonb_typeof(o.value) = jsonb_typeof(f.default_value)), '{}'::jsonb) \
    from app.tenants t join app.plans p on p.name = t.plan \
    where t.id = $1";

/// Reads `tenant`'s snapshot from PostgreSQL. `tx` is a single-statement transaction bound to
/// the tenant (`TenantTx::single_statement`): this is its only statement.
pub async fn read(tx: &TenantTx<'_>, tenant: Uuid) -> Result<TenantSnapshot, LoadError> {
    let stmt = tx.prepare_cached(SNAPSHOT_SQL).await?;
    let row = tx
        .query_opt_then_commit(&stmt, &[&tenant])
        .await?
        .ok_or(LoadError::Missing(tenant))?;
    let status: &str = row.get(1);
    let deleted: bool = row.get(2);
    let state = match (deleted, status) {
        (true, _) => TenantState::Deleted,
        (false, "active") => TenantState::Active,
        (false, "suspended") => TenantState::Suspended,
        (false, other) => {
            return Err(LoadError::CorruptRow {
                column: "tenants.status",
                reason: format!("{other:?} is not a status this version knows"),
            })
        }
    };
    let plan_name: String = row.get(3);
    let settings =
        Settings::from_stored(&row.get::<_, Value>(4)).map_err(|err| LoadError::CorruptRow {
            column: "tenants.settings",
            reason: err.to_string(),
        })?;
    let plan = plan_from_columns(PlanColumns {
        name: plan_name.clone(),
        display_name: row.get(5),
        rank: row.get(6),
        price_cents: row.get(7),
        currency: row.get(8),
        limits: row.get(9),
        features: row.get(10),
    })?;
    let cheapest_with: BTreeMap<String, String> =
        serde_json::from_value(row.get(11)).map_err(|err| LoadError::CorruptRow {
            column: "plans.features",
            reason: err.to_string(),
        })?;
    Ok(TenantSnapshot::new(SnapshotParts {
        tenant: TenantRow {
            id: tenant,
            slug: row.get(0),
            state,
            plan: plan_name,
        },
        plan,
        cheapest_with,
        settings,
        settings_version: row.get(12),
        flags: serde_json::from_value::<FlagOverrides>(row.get(13)).map_err(|err| {
            LoadError::CorruptRow {
                column: "flag_overrides.value",
                reason: err.to_string(),
            }
        })?,
        loaded_at: Utc::now(),
    }))
}

/// The columns of one `app.plans` row.
pub struct PlanColumns {
    pub name: String,
    pub display_name: String,
    pub rank: i32,
    pub price_cents: i64,
    pub currency: String,
    pub limits: Value,
    pub features: Value,
}

/// A plan row as a [`Plan`]. A limit missing from the row is unlimited (as before limits were
/// all named); one that is neither null nor an integer is corrupt. The features API.md names are
/// always listed.
/// The member of a plan's `limits` holding the metered quotas of usage events.
pub const USAGE_QUOTAS: &str = "usage_quotas";

pub fn plan_from_columns(columns: PlanColumns) -> Result<Plan, LoadError> {
    let corrupt = |column: &'static str, reason: String| LoadError::CorruptRow { column, reason };
    let mut limits = Limits::default();
    let stored = columns.limits.as_object();
    for limit in Limit::ALL {
        let value = match stored.and_then(|l| l.get(limit.key())) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_i64().ok_or_else(|| {
                corrupt(
                    "plans.limits",
                    format!("{} of plan {} is {v}", limit.key(), columns.name),
                )
            })?),
        };
        limits.set(limit, value);
    }
    if let Some(quotas) = stored
        .and_then(|l| l.get(USAGE_QUOTAS))
        .and_then(Value::as_object)
    {
        for (metric, value) in quotas {
            if value.is_null() {
                continue;
            }
            let n = value.as_i64().ok_or_else(|| {
                corrupt(
                    "plans.limits",
                    format!("usage_quotas.{metric} of plan {} is {value}", columns.name),
                )
            })?;
            limits.usage_quotas.insert(metric.clone(), n);
        }
    }
    let mut features: BTreeMap<String, bool> = feature::KNOWN
        .iter()
        .map(|f| (f.to_string(), false))
        .collect();
    if let Some(stored) = columns.features.as_object() {
        for (key, value) in stored {
            let on = value.as_bool().ok_or_else(|| {
                corrupt(
                    "plans.features",
                    format!("{key} of plan {} is {value}", columns.name),
                )
            })?;
            features.insert(key.clone(), on);
        }
    }
    Ok(Plan {
        name: columns.name,
        display_name: columns.display_name,
        rank: columns.rank,
        price_cents: columns.price_cents,
        currency: columns.currency,
        limits,
        features,
    })
}

/// The Redis key of a tenant's snapshot. Hash-tagged by tenant (`{...}`) so that, on Redis
/// Cluster, every key of one tenant lives in one slot.
pub fn redis_key(tenant: Uuid) -> String {
    format!("tenantry:{{{tenant}}}:snapshot")
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("Redis did not answer in time")]
    Timeout,
    /// Redis was unreachable a moment ago: not tried again yet.
    #[error("Redis is unreachable; not retried yet")]
    Unreachable,
}

/// How long one Redis call may take before the snapshot is read from PostgreSQL instead.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// After a failed connection, Redis is not tried again for this long: an activation then goes
/// straight to PostgreSQL instead of waiting for a timeout each time.
const REDIS_RETRY: Duration = Duration::from_secs(1);

/// The snapshots' copies in Redis. One connection for the process, opened on first use (Redis
/// may be down when the server starts) on the runtime given at construction, which outlives
/// the HTTP workers; `ConnectionManager` reconnects it after a failure.
pub struct SnapshotStore {
    client: redis::Client,
    ttl: Duration,
    runtime: Option<tokio::runtime::Handle>,
    conn: Mutex<Connection>,
}

#[derive(Default)]
struct Connection {
    manager: Option<ConnectionManager>,
    failed_at: Option<Instant>,
}

impl SnapshotStore {
    /// `ttl`: how long a copy lives in Redis (at least a second).
    pub fn new(client: redis::Client, ttl: Duration) -> SnapshotStore {
        SnapshotStore {
            client,
            ttl: ttl.max(Duration::from_secs(1)),
            runtime: tokio::runtime::Handle::try_current().ok(),
            conn: Mutex::new(Connection::default()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Connection> {
        // Only assignments happen under the lock: a panic cannot leave it half changed.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        {
            let slot = self.slot();
            if slot.failed_at.is_some_and(|at| at.elapsed() < REDIS_RETRY) {
                return Err(StoreError::Unreachable);
            }
            if let Some(manager) = &slot.manager {
                return Ok(manager.clone());
            }
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT)
            .set_number_of_retries(1);
        let connect = ConnectionManager::new_with_config(self.client.clone(), config);
        let opened = match &self.runtime {
            Some(runtime) => match runtime.spawn(connect).await {
                Ok(opened) => opened,
                // The runtime is shutting down: so is the process.
                Err(_) => return Err(StoreError::Unreachable),
            },
            None => connect.await,
        };
        let mut slot = self.slot();
        match opened {
            Ok(manager) => {
                slot.failed_at = None;
                Ok(slot.manager.get_or_insert(manager).clone())
            }
            Err(err) => {
                slot.failed_at = Some(Instant::now());
                Err(err.into())
            }
        }
    }

    /// Opens the connection ahead of the first load, which then waits only for its command
    /// (opening a connection on a loaded host can take longer than a load waits for Redis).
    /// A failure is noted like any other: the next load after [`REDIS_RETRY`] tries again.
    pub async fn open(&self) -> Result<(), StoreError> {
        self.connection().await.map(|_| ())
    }

    /// Notes a failed call: Redis is left alone for [`REDIS_RETRY`] (the manager reconnects
    /// meanwhile), so that an outage costs loads one failure a second, not one timeout each.
    fn failed<T>(&self, err: StoreError) -> Result<T, StoreError> {
        let unreachable = match &err {
            StoreError::Redis(e) => e.is_io_error() || e.is_connection_dropped() || e.is_timeout(),
            StoreError::Timeout | StoreError::Unreachable => true,
        };
        if unreachable {
            self.slot().failed_at = Some(Instant::now());
        }
        Err(err)
    }

    async fn call<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, StoreError> {
        let mut conn = self.connection().await?;
        match tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => self.failed(err.into()),
            Err(_) => self.failed(StoreError::Timeout),
        }
    }

    /// The copy of `tenant`'s snapshot, if Redis has one this version can read.
    pub async fn get(&self, tenant: Uuid) -> Result<Option<TenantSnapshot>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(redis_key(tenant));
        let Some(json) = self.call::<Option<String>>(cmd).await? else {
            return Ok(None);
        };
        // Another format (another version of tenantry) or a foreign value: a miss.
        Ok(serde_json::from_str::<TenantSnapshot>(&json)
            .ok()
            .filter(|s| s.format == SNAPSHOT_FORMAT && s.tenant.id == tenant))
    }

    /// Stores a copy of `snapshot` for the TTL.
    pub async fn put(&self, snapshot: &TenantSnapshot) -> Result<(), StoreError> {
        let json = serde_json::to_string(snapshot).unwrap_or_default();
        let mut cmd = redis::cmd("SET");
        cmd.arg(redis_key(snapshot.tenant.id))
            .arg(json)
            .arg("EX")
            .arg(self.ttl.as_secs().max(1));
        self.call::<()>(cmd).await
    }

    /// Drops the copies of `tenants`, one DEL each (a multi-key DEL would cross Cluster slots).
    pub async fn forget(&self, tenants: &[Uuid]) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        for chunk in tenants.chunks(1_000) {
            let mut pipe = redis::pipe();
            for tenant in chunk {
                pipe.cmd("DEL").arg(redis_key(*tenant)).ignore();
            }
            match tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async::<()>(&mut conn)).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => return self.failed(err.into()),
                Err(_) => return self.failed(StoreError::Timeout),
            }
        }
        Ok(())
    }

    /// [`forget`](Self::forget), logged instead of returned: the writer of a change calls it
    /// before telling the other instances, and goes on whatever Redis answers (their copies
    /// expire within the TTL).
    pub async fn forget_logged(&self, tenants: &[Uuid]) {
        if let Err(err) = self.forget(tenants).await {
            tracing::warn!(%err, tenants = tenants.len(), "config snapshot copies not dropped from Redis; they expire within the TTL");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_hash_tagged_by_tenant() {
        let t = Uuid::nil();
        assert_eq!(
            redis_key(t),
            "tenantry:{00000000-0000-0000-0000-000000000000}:snapshot"
        );
    }

    fn columns(limits: Value, features: Value) -> PlanColumns {
        PlanColumns {
            name: "p".into(),
            display_name: "P".into(),
            rank: 0,
            price_cents: 0,
            currency: "usd".into(),
            limits,
            features,
        }
    }

    #[test]
    fn plan_rows() {
        let plan = plan_from_columns(columns(
            json!({"max_users": 3, "api_calls_per_month": null}),
            json!({"webhooks": true, "sso": true}),
        ))
        .unwrap();
        assert_eq!(plan.limit(Limit::MaxUsers), Some(3));
        assert_eq!(plan.limit(Limit::ApiCallsPerMonth), None);
        assert_eq!(plan.limit(Limit::RateLimitPerMinute), None);
        assert!(plan.has("webhooks") && plan.has("sso") && !plan.has("api_access"));
        assert!(plan.features.contains_key("custom_integrations"));
        assert!(plan_from_columns(columns(json!({"max_users": "3"}), json!({}))).is_err());
        assert!(plan_from_columns(columns(json!({}), json!({"sso": 1}))).is_err());
    }
}
