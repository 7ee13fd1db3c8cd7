//! The registry of tenant actors and the supervisor that activates them.
//!
//! Lookups are lock-free (a DashMap read on the request path). A miss asks the single
//! `TenantSupervisor` actor, whose mailbox serialises activations, so a tenant is activated
//! exactly once however many first requests race. Actors are spread by tenant id over the
//! threads that host them, and their addresses are replaced when their mailbox has closed.
//!
//! The hosts are the HTTP worker threads themselves (each registers in the server's app factory,
//! [`TenantRegistry::host_on_current_thread`]), and each host has its own slice of the app pool.
//! A request whose tenant lives on the worker that accepted it then runs without leaving that
//! thread: mailbox, reply and the connection's I/O task (tokio-postgres drives each connection
//! from a task on the thread that opened it) are all local. On a small machine, thread
//! hand-offs cost more than the work itself (docs/benchmarks.md).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::ThreadId;
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use actix::Supervisor;
use dashmap::DashMap;
use futures_util::future::BoxFuture;
use serde::Serialize;
use tokio::sync::oneshot;
use utoipa::ToSchema;
use uuid::Uuid;

use super::config::{ConfigCell, Need, Source};
use super::shared::{ActorSettings, ActorShared, ActorStats};
use super::tenant::{Execute, LoadConfig, TenantActor};
use super::{ActorError, ExecError, TenantOp};
use crate::auth::Caller;
use crate::config::Config;
use crate::db::{DbError, PgPool};
use crate::metrics::Metrics;
use crate::tenant_config::load::SnapshotStore;
use crate::tenant_config::TenantSnapshot;

/// A thread hosting tenant actors, the pool its actors' operations use, and the one connection
/// of that pool their single-statement reads share (none for a pool of one).
pub struct ActorHost {
    arbiter: ArbiterHandle,
    thread: Option<ThreadId>,
    pub pool: PgPool,
    pub single_statements: Option<Arc<crate::db::SharedConn>>,
}

/// What the registry knows of one running actor, readable without messaging it.
pub struct ActorEntry {
    pub addr: Addr<TenantActor>,
    pub stats: Arc<ActorStats>,
    /// The tenant's config snapshot, which only the actor replaces.
    pub config: Arc<ConfigCell>,
    /// The tenant's rate limiter: lives and dies with the actor, answers without messaging it.
    pub limiter: crate::ratelimit::TenantLimiter,
    /// The tenant's webhook queue (in-flight attempts, delivery limiter, drain state), read by
    /// the dispatcher the same way (`webhooks::queue`).
    pub webhooks: Arc<crate::webhooks::queue::TenantQueue>,
}

/// How long the first requests of a freshly activated tenant wait for its config snapshot.
const FIRST_LOAD_WAIT: Duration = Duration::from_secs(10);

/// The registry's state, shared with its supervisor actor.
struct Registry {
    /// What every tenant actor reads.
    actor: Arc<ActorShared>,
    hosts: RwLock<Vec<Arc<ActorHost>>>,
    config: Config,
    actors: DashMap<Uuid, Arc<ActorEntry>>,
}

#[derive(Clone)]
pub struct TenantRegistry {
    shared: Arc<Registry>,
    supervisor: Addr<TenantSupervisor>,
}

#[derive(Serialize, ToSchema)]
pub struct ActorInfo {
    pub tenant_id: Uuid,
    pub activated_at: chrono::DateTime<chrono::Utc>,
    pub mailbox_depth: usize,
    pub in_flight: usize,
    pub restarts: u64,
    pub connected: bool,
}

impl TenantRegistry {
    /// Must be called inside an actix System. With `settings.arbiters` 0 the actors wait for
    /// hosts to register ([`host_on_current_thread`](Self::host_on_current_thread)); if none
    /// has when the first tenant is activated, dedicated threads are started instead.
    pub fn start(
        config: &Config,
        metrics: Metrics,
        settings: ActorSettings,
        snapshots: Arc<SnapshotStore>,
    ) -> Result<TenantRegistry, DbError> {
        let shared = Arc::new(Registry {
            actor: Arc::new(ActorShared {
                metrics,
                settings,
                snapshots,
            }),
            hosts: RwLock::new(Vec::new()),
            config: config.clone(),
            actors: DashMap::new(),
        });
        for _ in 0..shared.actor.settings.arbiters {
            shared.add_host(Arbiter::new().handle(), None)?;
        }
        let supervisor = TenantSupervisor {
            shared: shared.clone(),
        }
        .start();
        Ok(TenantRegistry { shared, supervisor })
    }

    /// Makes the current thread (an actix arbiter, e.g. an HTTP worker) a host of tenant
    /// actors, once. Does nothing when the registry has dedicated threads.
    pub fn host_on_current_thread(&self) -> Result<(), DbError> {
        if self.shared.actor.settings.arbiters > 0 {
            return Ok(());
        }
        let Some(arbiter) = actix::Arbiter::try_current() else {
            return Ok(());
        };
        let thread = std::thread::current().id();
        let known = self
            .shared
            .hosts
            .read()
            .map(|hosts| hosts.iter().any(|h| h.thread == Some(thread)))
            .unwrap_or(false);
        if known {
            return Ok(());
        }
        self.shared.add_host(arbiter, Some(thread))
    }

    /// The tenant's actor, activating it on first use.
    pub async fn actor(&self, tenant: Uuid) -> Result<Arc<ActorEntry>, ActorError> {
        if let Some(entry) = self.shared.actors.get(&tenant) {
            if entry.addr.connected() {
                return Ok(entry.clone());
            }
        }
        self.activate(tenant).await
    }

    async fn activate(&self, tenant: Uuid) -> Result<Arc<ActorEntry>, ActorError> {
        Ok(self
            .supervisor
            .send(Activate { tenant })
            .await
            .map_err(ActorError::SupervisorUnavailable)??)
    }

    /// Runs `op` in the tenant's actor. A full mailbox is refused at once (back-pressure); an
    /// operation lost to a restart is reported as such, so the caller retries.
    pub async fn execute<O: TenantOp>(
        &self,
        caller: Caller,
        op: O,
    ) -> Result<O::Output, ExecError<O::Error>> {
        let entry = self.actor(caller.tenant_id).await?;
        let (reply, answer) = oneshot::channel();
        entry.stats.queued.fetch_add(1, Ordering::Relaxed);
        let message = Execute { caller, op, reply };
        if !entry.stats.started.load(Ordering::Acquire) {
            // Not yet started: the mailbox has no bound of ours yet. What queues here is bounded
            // by the requests in progress, and the actor drains it as soon as it runs.
            entry.addr.do_send(message);
            return answer.await.map_err(ActorError::Cancelled)?;
        }
        match entry.addr.try_send(message) {
            Ok(()) => {}
            Err(SendError::Full(_)) => {
                entry.stats.queued.fetch_sub(1, Ordering::Relaxed);
                self.shared
                    .actor
                    .metrics
                    .actor_rejections
                    .with_label_values(&["mailbox_full"])
                    .inc();
                return Err(ActorError::MailboxFull.into());
            }
            Err(SendError::Closed(message)) => {
                entry.stats.queued.fetch_sub(1, Ordering::Relaxed);
                // The actor died between lookup and send: activate a fresh one and retry once.
                let fresh = self.activate(message.caller.tenant_id).await?;
                fresh.stats.queued.fetch_add(1, Ordering::Relaxed);
                if fresh.addr.try_send(message).is_err() {
                    fresh.stats.queued.fetch_sub(1, Ordering::Relaxed);
                    return Err(ActorError::Restarting.into());
                }
            }
        }
        answer.await.map_err(ActorError::Cancelled)?
    }

    pub fn snapshot(&self) -> Vec<ActorInfo> {
        let mut max_depth = 0;
        let mut items: Vec<ActorInfo> = self
            .shared
            .actors
            .iter()
            .map(|e| {
                let queued = e.stats.queued.load(Ordering::Relaxed);
                let in_flight = e.stats.in_flight.load(Ordering::Relaxed);
                max_depth = max_depth.max(queued + in_flight);
                ActorInfo {
                    tenant_id: *e.key(),
                    activated_at: e.stats.activated_at.into(),
                    mailbox_depth: queued,
                    in_flight,
                    restarts: e.stats.restarts.load(Ordering::Relaxed),
                    connected: e.addr.connected(),
                }
            })
            .collect();
        self.shared
            .actor
            .metrics
            .mailbox_depth_max
            .set(i64::try_from(max_depth).unwrap_or(i64::MAX));
        items.sort_by_key(|i| i.tenant_id);
        items
    }

    pub fn active(&self) -> usize {
        self.shared.actors.len()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.actor.metrics
    }

    /// The config snapshots' copies in Redis (writers drop a tenant's copy before announcing
    /// a change).
    pub fn snapshots(&self) -> &Arc<SnapshotStore> {
        &self.shared.actor.snapshots
    }

    /// The tenant's config snapshot, activating its actor on first use. Read from the registry
    /// entry without messaging the actor; only the first requests of a tenant wait, for its
    /// first load. One older than the TTL is still returned, and the actor asked to refresh it
    /// (`actors::config`).
    pub async fn config(&self, tenant: Uuid) -> Result<Arc<TenantSnapshot>, ActorError> {
        let entry = self.actor(tenant).await?;
        entry.stats.touched.store(true, Ordering::Relaxed);
        match entry.config.need(self.shared.actor.snapshots.ttl()) {
            Need::Ready(snapshot) => return Ok(snapshot),
            Need::Stale(snapshot, source) => {
                if entry.config.claim_ask() {
                    entry.addr.do_send(LoadConfig(source));
                }
                return Ok(snapshot);
            }
            Need::Missing => {}
        }
        let deadline = tokio::time::Instant::now() + FIRST_LOAD_WAIT;
        let start = entry.config.loads();
        loop {
            let seen = entry.config.loads();
            if let Some(snapshot) = entry.config.current() {
                return Ok(snapshot);
            }
            if let Some(failure) = entry.config.failure_since(start) {
                return Err(ActorError::Config(failure));
            }
            // Sent even before the actor started: its bound mailbox is not set yet, and the
            // ask is made once for all the requests waiting.
            if entry.config.claim_ask() {
                entry.addr.do_send(LoadConfig(Source::Cache));
            }
            if !entry.config.wait_for_load(seen, deadline).await {
                return Err(ActorError::ConfigTimeout);
            }
        }
    }

    /// After a change of `tenant`'s configuration: its actor on this instance, if it has one,
    /// reloads the snapshot from PostgreSQL. The future ends once the reload has ended.
    pub fn reload_config(&self, tenant: Uuid) -> BoxFuture<'static, ()> {
        let entry = self.shared.actors.get(&tenant).map(|e| e.clone());
        Box::pin(async move {
            if let Some(entry) = entry {
                reload(entry).await;
            }
        })
    }

    /// After a change of the plan `plan`: the actors of the tenants on it reload; the others
    /// refresh from PostgreSQL at their next request (the cheapest plan with a feature, which
    /// their `plan_required` answers name, may have changed too). Spread over the requests that
    /// follow rather than all at once: a plan may have every tenant of the instance.
    pub fn reload_plan(&self, plan: &str) -> BoxFuture<'static, ()> {
        let mut on_plan = Vec::new();
        for entry in self.shared.actors.iter() {
            if entry.config.current().is_none_or(|s| s.tenant.plan == plan) {
                on_plan.push(entry.clone());
            } else {
                entry.config.expire(Source::Database);
            }
        }
        Box::pin(async move {
            futures_util::future::join_all(on_plan.into_iter().map(reload)).await;
        })
    }

    /// Every snapshot is refreshed from PostgreSQL at its tenant's next request (changes may
    /// have been announced while this instance was not listening).
    pub fn expire_configs(&self) {
        for entry in self.shared.actors.iter() {
            entry.config.expire(Source::Database);
        }
    }
}

async fn reload(entry: Arc<ActorEntry>) {
    // If the reload cannot be delivered (the actor just stopped), the next request refreshes.
    entry.config.expire(Source::Database);
    if entry.addr.connected() {
        let _ = entry.addr.send(LoadConfig(Source::Database)).await;
    }
}

impl Registry {
    fn add_host(&self, arbiter: ArbiterHandle, thread: Option<ThreadId>) -> Result<(), DbError> {
        let pool =
            crate::db::pool::app_pool(&self.config, self.actor.settings.pool_per_host.max(1))?;
        // Only a push happens under the write lock: a panic there leaves the list valid.
        let mut hosts = self.hosts.write().unwrap_or_else(PoisonError::into_inner);
        hosts.push(Arc::new(ActorHost {
            arbiter,
            thread,
            single_statements: crate::db::SharedConn::for_pool(pool.clone()).map(Arc::new),
            pool,
        }));
        Ok(())
    }

    /// The host of `tenant`: always the same one while the set of hosts does not change.
    fn host_for(&self, tenant: Uuid) -> Result<Arc<ActorHost>, DbError> {
        let empty = self.hosts.read().map(|h| h.is_empty()).unwrap_or(true);
        if empty {
            // No HTTP worker registered (a library user, a test without a server): start
            // dedicated threads once.
            for _ in 0..self.actor.settings.expected_hosts.max(1) {
                self.add_host(Arbiter::new().handle(), None)?;
            }
        }
        let hosts = self.hosts.read().unwrap_or_else(PoisonError::into_inner);
        // Below hosts.len(), a usize.
        #[allow(clippy::cast_possible_truncation)]
        let index = (tenant.as_u128() % hosts.len() as u128) as usize;
        Ok(hosts[index].clone())
    }
}

pub struct TenantSupervisor {
    shared: Arc<Registry>,
}

impl Actor for TenantSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Activations arrive in bursts at start-up; a small mailbox would turn them into 503s.
        ctx.set_mailbox_capacity(4096);
    }
}

#[derive(Message)]
#[rtype(result = "Result<Arc<ActorEntry>, DbError>")]
struct Activate {
    tenant: Uuid,
}

impl Handler<Activate> for TenantSupervisor {
    type Result = MessageResult<Activate>;

    fn handle(&mut self, msg: Activate, _ctx: &mut Context<Self>) -> Self::Result {
        if let Some(entry) = self.shared.actors.get(&msg.tenant) {
            if entry.addr.connected() {
                return MessageResult(Ok(entry.clone()));
            }
        }
        let host = match self.shared.host_for(msg.tenant) {
            Ok(host) => host,
            Err(err) => return MessageResult(Err(err)),
        };
        let shared = self.shared.actor.clone();
        let tenant = msg.tenant;
        let stats = Arc::new(ActorStats {
            activated_at: SystemTime::now(),
            queued: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            restarts: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            started: AtomicBool::new(false),
            touched: AtomicBool::new(false),
        });
        let config = Arc::new(ConfigCell::default());
        let actor_config = config.clone();
        let actor_stats = stats.clone();
        // How an idle actor leaves the map: only its own entry (a newer actor of the same
        // tenant may have replaced it), told apart by its counters.
        let leave_registry = {
            let registry = self.shared.clone();
            let stats = stats.clone();
            move || {
                registry
                    .actors
                    .remove_if(&tenant, |_, entry| Arc::ptr_eq(&entry.stats, &stats));
            }
        };
        let pool = host.pool.clone();
        let single_statements = host.single_statements.clone();
        let addr = Supervisor::start_in_arbiter(&host.arbiter, move |_ctx| {
            TenantActor::new(
                tenant,
                shared,
                actor_stats,
                Box::new(leave_registry),
                pool,
                single_statements,
                actor_config,
            )
        });
        let entry = Arc::new(ActorEntry {
            addr,
            stats,
            config,
            limiter: Default::default(),
            webhooks: Default::default(),
        });
        self.shared.actors.insert(msg.tenant, entry.clone());
        self.shared.actor.metrics.actor_activations.inc();
        self.shared.actor.metrics.actors_active.inc();
        MessageResult(Ok(entry))
    }
}
