//! Connection pools. Each role has its own pool; all of them are bounded whatever the number of
//! tenants. A pooled connection counts the tenant schemas it has opened and is retired past a
//! budget: PostgreSQL keeps every relation a backend has touched in that backend's relation
//! cache for its whole life, so a long-lived connection that visits thousands of tenant schemas
//! would grow without bound (docs/benchmarks.md).

use std::collections::HashSet;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use deadpool_postgres::{ClientWrapper, ManagerConfig, RecyclingMethod};
use secrecy::ExposeSecret;
use tokio_postgres::{NoTls, Statement};
use uuid::Uuid;

use super::DbError;
use crate::config::Config;

pub struct PgConn {
    client: ClientWrapper,
    tenant_schemas: HashSet<Uuid>,
    /// Set while a [`super::TenantTx`] is open on this connection. A transaction abandoned
    /// halfway (its future dropped, a panic) leaves it set, and the pool then retires the
    /// connection instead of handing an open transaction to the next tenant.
    in_transaction: AtomicBool,
    statements: TxStatements,
    /// The database runs Citus (docs/scale-out.md): the tenant context must be set with
    /// `SET LOCAL` inside `BEGIN` to reach the worker nodes. Asked once, when the connection
    /// opens, pipelined with the statements' preparation.
    citus: bool,
    /// The server's wake-ups: a commit that wrote outbox events hints its tenant here.
    wakes: Arc<crate::supervise::Wakes>,
    /// The runtime whose task drives this connection (tokio-postgres): the connection dies with
    /// it, whichever runtime uses it.
    opened_on: Option<tokio::runtime::Id>,
}

/// Sets the tenant context of the current transaction (`set_config(.., true)`: local to it).
pub const SET_TENANT_SQL: &str = "select set_config('app.current_tenant', $1, true)";

/// The statements of every tenant transaction, prepared when the connection opens so that
/// each use is only a bind and an execute.
pub struct TxStatements {
    begin: Statement,
    set_tenant: Statement,
    commit: Statement,
}

/// Whether the database has the Citus extension (docs/scale-out.md).
pub const IS_CITUS_SQL: &str =
    "select exists (select 1 from pg_catalog.pg_extension where extname = 'citus')";

impl TxStatements {
    /// The statements, and whether the database runs Citus (asked in the same round trip).
    async fn prepare(
        client: &tokio_postgres::Client,
    ) -> Result<(TxStatements, bool), tokio_postgres::Error> {
        let (begin, set_tenant, commit, citus) = futures_util::future::join4(
            client.prepare("begin"),
            client.prepare(SET_TENANT_SQL),
            client.prepare("commit"),
            // The simple protocol: one message out, no separate parse round trip.
            client.simple_query(IS_CITUS_SQL),
        )
        .await;
        Ok((
            TxStatements {
                begin: begin?,
                set_tenant: set_tenant?,
                commit: commit?,
            },
            citus?.iter().any(|message| {
                matches!(message, tokio_postgres::SimpleQueryMessage::Row(row)
                    if row.get(0) == Some("t"))
            }),
        ))
    }

    pub fn begin(&self) -> &Statement {
        &self.begin
    }

    /// `set_config('app.current_tenant', $1, true)`.
    pub fn set_tenant(&self) -> &Statement {
        &self.set_tenant
    }

    pub fn commit(&self) -> &Statement {
        &self.commit
    }
}

impl PgConn {
    /// Records that this connection opened a tenant's schema (its relations are now cached in
    /// the backend).
    pub fn touch_tenant_schema(&mut self, tenant: Uuid) {
        self.tenant_schemas.insert(tenant);
    }

    pub fn tenant_schemas_touched(&self) -> usize {
        self.tenant_schemas.len()
    }

    pub(super) fn mark_in_transaction(&self, open: bool) {
        self.in_transaction.store(open, Ordering::Release);
    }

    pub fn statements(&self) -> &TxStatements {
        &self.statements
    }

    /// The database runs Citus: see [`super::tenant_tx`] for what changes.
    /// The wake-ups of the server this connection belongs to.
    pub fn wakes(&self) -> &crate::supervise::Wakes {
        &self.wakes
    }

    pub fn is_citus(&self) -> bool {
        self.citus
    }

    pub fn in_transaction(&self) -> bool {
        self.in_transaction.load(Ordering::Acquire)
    }
}

impl Deref for PgConn {
    type Target = ClientWrapper;
    fn deref(&self) -> &ClientWrapper {
        &self.client
    }
}

impl DerefMut for PgConn {
    fn deref_mut(&mut self) -> &mut ClientWrapper {
        &mut self.client
    }
}

pub struct TrackedManager {
    inner: deadpool_postgres::Manager,
    wakes: Arc<crate::supervise::Wakes>,
    tenant_schema_budget: usize,
    /// Set by [`confine_to_current_runtime`].
    confined_to: OnceLock<Option<tokio::runtime::Id>>,
}

impl managed::Manager for TrackedManager {
    type Type = PgConn;
    type Error = tokio_postgres::Error;

    async fn create(&self) -> Result<PgConn, tokio_postgres::Error> {
        let client = managed::Manager::create(&self.inner).await?;
        let (statements, citus) = TxStatements::prepare(&client).await?;
        Ok(PgConn {
            client,
            statements,
            citus,
            wakes: self.wakes.clone(),
            tenant_schemas: HashSet::new(),
            in_transaction: AtomicBool::new(false),
            opened_on: current_runtime(),
        })
    }

    async fn recycle(
        &self,
        conn: &mut PgConn,
        metrics: &Metrics,
    ) -> RecycleResult<tokio_postgres::Error> {
        if conn.tenant_schemas.len() >= self.tenant_schema_budget {
            return Err(RecycleError::message("tenant schema budget spent"));
        }
        if conn.in_transaction() {
            return Err(RecycleError::message("a transaction was left open"));
        }
        if self
            .confined_to
            .get()
            .is_some_and(|home| *home != conn.opened_on)
        {
            return Err(RecycleError::message(
                "opened on a runtime that may be shutting down",
            ));
        }
        managed::Manager::recycle(&self.inner, &mut conn.client, metrics).await
    }

    fn detach(&self, conn: &mut PgConn) {
        managed::Manager::detach(&self.inner, &mut conn.client)
    }
}

pub type PgPool = managed::Pool<TrackedManager>;
pub type PooledConn = managed::Object<TrackedManager>;

pub struct PoolOptions<'a> {
    pub url: &'a str,
    pub size: usize,
    /// Server settings applied at connection start (`-c name=value`).
    pub settings: Vec<(String, String)>,
    pub tenant_schema_budget: usize,
    /// The server's wake-ups (`Config::wakes`), reached through every connection of the pool.
    pub wakes: Arc<crate::supervise::Wakes>,
}

pub fn build_pool(opts: PoolOptions<'_>) -> Result<PgPool, DbError> {
    let mut pg: tokio_postgres::Config = opts
        .url
        .parse()
        .map_err(|e| DbError::InvalidUrl(Arc::new(e)))?;
    let mut options = pg.get_options().unwrap_or_default().to_string();
    for (name, value) in &opts.settings {
        options.push_str(&format!(" -c {name}={value}"));
    }
    pg.options(options.trim());
    if pg.get_application_name().is_none() {
        pg.application_name("tenantry");
    }
    pg.connect_timeout(Duration::from_secs(5));
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = if super::tls::wanted(&pg) {
        deadpool_postgres::Manager::from_config(pg, super::tls::connector()?, manager_config)
    } else {
        deadpool_postgres::Manager::from_config(pg, NoTls, manager_config)
    };
    managed::Pool::builder(TrackedManager {
        inner: manager,
        wakes: opts.wakes,
        tenant_schema_budget: opts.tenant_schema_budget,
        confined_to: OnceLock::new(),
    })
    .max_size(opts.size)
    .wait_timeout(Some(Duration::from_secs(5)))
    .create_timeout(Some(Duration::from_secs(5)))
    .recycle_timeout(Some(Duration::from_secs(5)))
    .runtime(deadpool::Runtime::Tokio1)
    .build()
    .map_err(|e| DbError::PoolBuild(Arc::new(e)))
}

fn current_runtime() -> Option<tokio::runtime::Id> {
    tokio::runtime::Handle::try_current()
        .ok()
        .map(|runtime| runtime.id())
}

/// From now on `pool` hands out only connections opened on the current runtime (or new ones),
/// and closes the others as they come back or sit idle. For the last writes of a shutdown, on
/// the runtime that outlives the HTTP workers': a connection opened on a worker dies with the
/// worker's runtime, and may still look open when taken, while that runtime is stopping. Once
/// only.
pub fn confine_to_current_runtime(pool: &PgPool) {
    let home = current_runtime();
    if pool.manager().confined_to.set(home).is_err() {
        return;
    }
    pool.retain(|conn, _| conn.opened_on == home);
}

/// One connection taken out of its pool and used by many operations at once: those whose
/// whole database work is a single request under one Sync ([`TenantTx::single_statement`]:
/// the tenant context and the statement, in the implicit transaction PostgreSQL ends at that
/// Sync). tokio-postgres writes each such request in one piece and in order, and PostgreSQL
/// ends one request's implicit transaction, and with it its `set_config(.., true)`, before it
/// reads the next, so requests of different tenants on one connection cannot see each other's
/// context. What sharing buys is that concurrent reads go out in one write and come back in one
/// read, and one backend stays busy instead of many waking in turn (bench/http_load.sh;
/// docs/benchmarks.md).
///
/// [`TenantTx::single_statement`]: super::TenantTx::single_statement
pub struct SharedConn {
    pool: PgPool,
    conn: Mutex<Option<Arc<PooledConn>>>,
}

impl SharedConn {
    /// None for a pool of one: the shared connection stays out of its pool for good, and would
    /// leave every other operation waiting for it; reads then lease like everything else.
    pub fn for_pool(pool: PgPool) -> Option<SharedConn> {
        (pool.status().max_size > 1).then(|| SharedConn {
            pool,
            conn: Mutex::new(None),
        })
    }

    fn current(&self) -> Option<Arc<PooledConn>> {
        let slot = self
            .conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slot.as_ref().filter(|conn| !conn.is_closed()).cloned()
    }

    /// The shared connection, taken from the pool on first use and again once it has closed
    /// (a closed one goes back to the pool with its last user, which retires it).
    pub async fn get(&self) -> Result<Arc<PooledConn>, DbError> {
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let fresh = Arc::new(self.pool.get().await?);
        let mut slot = self
            .conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Another operation may have replaced it meanwhile; ours then serves this one
        // operation and goes back to the pool.
        match slot.as_ref().filter(|conn| !conn.is_closed()) {
            Some(current) => Ok(current.clone()),
            None => {
                *slot = Some(fresh.clone());
                Ok(fresh)
            }
        }
    }
}

/// The three pools of DESIGN.md's roles.
#[derive(Clone)]
pub struct Pools {
    /// The app role (RLS applies) for work outside the tenant actors: resolving tenants and
    /// users on a cache miss, jobs, analytics flushes, metering. Tenant operations use the
    /// pools of the threads hosting the actors (`crate::actors`).
    pub app: PgPool,
    /// BYPASSRLS, platform-admin endpoints only, every use audited.
    pub admin: PgPool,
    /// DDL: provisioning and purging tenant schemas. Never used by a tenant's request.
    pub owner: PgPool,
}

impl Pools {
    pub fn new(config: &Config) -> Result<Pools, DbError> {
        let app = app_pool(config, config.app_shared_pool_size)?;
        let admin = build_pool(PoolOptions {
            url: config.admin_database_url.expose_secret(),
            size: config.admin_pool_size,
            settings: vec![statement_timeout(config)],
            tenant_schema_budget: config.tenant_schemas_per_connection,
            wakes: config.wakes.clone(),
        })?;
        let owner = build_pool(PoolOptions {
            url: config.database_url.expose_secret(),
            size: config.owner_pool_size,
            settings: owner_settings(config),
            tenant_schema_budget: config.tenant_schemas_per_connection,
            wakes: config.wakes.clone(),
        })?;
        Ok(Pools { app, admin, owner })
    }
}

fn statement_timeout(config: &Config) -> (String, String) {
    (
        "statement_timeout".to_string(),
        config.statement_timeout.as_millis().to_string(),
    )
}

/// A pool of the app role (RLS applies). The tenant actors get one per thread hosting them, so
/// each connection's I/O task runs on the thread whose operations use it.
pub fn app_pool(config: &Config, size: usize) -> Result<PgPool, DbError> {
    build_pool(PoolOptions {
        url: config.app_database_url.expose_secret(),
        size,
        settings: vec![statement_timeout(config)],
        tenant_schema_budget: config.tenant_schemas_per_connection,
        wakes: config.wakes.clone(),
    })
}

/// Objects created through the owner connection must belong to the owner role even when
/// DATABASE_URL logs in as a superuser (the local default), so the session takes that role.
pub fn owner_settings(config: &Config) -> Vec<(String, String)> {
    let login_user = config
        .database_url
        .expose_secret()
        .parse::<tokio_postgres::Config>()
        .ok()
        .and_then(|c| c.get_user().map(str::to_string));
    if login_user.as_deref() == Some(config.roles.owner.as_str()) {
        Vec::new()
    } else {
        vec![("role".to_string(), config.roles.owner.clone())]
    }
}

impl TrackedManager {
    /// The wake-ups of the server this pool belongs to.
    pub fn wakes(&self) -> &Arc<crate::supervise::Wakes> {
        &self.wakes
    }
}
