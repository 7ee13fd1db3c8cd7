//! The registry of tenant actors and the supervisor that activates them.
//!
//! Lookups are lock-free (a DashMap read on the request path). A miss asks the single
//! `TenantSupervisor` actor, whose mailbox serialises activations, so a tenant is activated
//! exactly once however many first requests race. Actors are spread over a fixed set of
//! arbiters (one per core) by tenant id, and their addresses are replaced when their mailbox has
//! closed.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use actix::Supervisor;
use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::oneshot;
use utoipa::ToSchema;
use uuid::Uuid;

use super::tenant::{Execute, TenantActor};
use super::{Caller, TenantOp};
use crate::config::Config;
use crate::db::PgPool;
use crate::error::Problem;
use crate::metrics::Metrics;

#[derive(Clone, Debug)]
pub struct ActorSettings {
    pub idle_timeout: Duration,
    pub mailbox_capacity: usize,
    pub max_in_flight: usize,
    pub max_connections_per_tenant: usize,
    pub arbiters: usize,
}

impl ActorSettings {
    pub fn from_config(config: &Config) -> Self {
        ActorSettings {
            idle_timeout: config.actor_idle_timeout,
            mailbox_capacity: config.actor_mailbox_capacity,
            max_in_flight: config.actor_max_in_flight,
            max_connections_per_tenant: config.tenant_max_connections,
            arbiters: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        }
    }
}

/// What the registry knows of one running actor, readable without messaging it.
pub struct ActorEntry {
    pub addr: Addr<TenantActor>,
    pub stats: Arc<ActorStats>,
}

pub struct ActorStats {
    pub activated_at: SystemTime,
    /// Messages sent but not yet picked up by the actor.
    pub queued: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub restarts: AtomicU64,
    pub evicted: AtomicBool,
}

pub struct ActorShared {
    pub pool: PgPool,
    pub metrics: Metrics,
    pub settings: ActorSettings,
    pub actors: DashMap<Uuid, Arc<ActorEntry>>,
}

#[derive(Clone)]
pub struct TenantRegistry {
    shared: Arc<ActorShared>,
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
    /// Must be called inside an actix System.
    pub fn start(pool: PgPool, metrics: Metrics, settings: ActorSettings) -> TenantRegistry {
        let arbiters: Vec<ArbiterHandle> = (0..settings.arbiters.max(1))
            .map(|_| Arbiter::new().handle())
            .collect();
        let shared = Arc::new(ActorShared {
            pool,
            metrics,
            settings,
            actors: DashMap::new(),
        });
        let supervisor = TenantSupervisor {
            shared: shared.clone(),
            arbiters,
        }
        .start();
        TenantRegistry { shared, supervisor }
    }

    /// The tenant's actor, activating it on first use.
    pub async fn actor(&self, tenant: Uuid) -> Result<Arc<ActorEntry>, Problem> {
        if let Some(entry) = self.shared.actors.get(&tenant) {
            if entry.addr.connected() {
                return Ok(entry.clone());
            }
        }
        self.supervisor
            .send(Activate { tenant })
            .await
            .map_err(|_| Problem::unavailable("the tenant supervisor is unavailable", 1))
    }

    /// Runs `op` in the tenant's actor. A full mailbox answers 503 at once (back-pressure); an
    /// operation lost to a restart answers 503 so the caller retries.
    pub async fn execute<O: TenantOp>(&self, caller: Caller, op: O) -> Result<O::Output, Problem> {
        let entry = self.actor(caller.tenant_id).await?;
        let (reply, answer) = oneshot::channel();
        entry.stats.queued.fetch_add(1, Ordering::Relaxed);
        let message = Execute { caller, op, reply };
        match entry.addr.try_send(message) {
            Ok(()) => {}
            Err(SendError::Full(_)) => {
                entry.stats.queued.fetch_sub(1, Ordering::Relaxed);
                self.shared
                    .metrics
                    .actor_rejections
                    .with_label_values(&["mailbox_full"])
                    .inc();
                return Err(
                    Problem::unavailable("the tenant is overloaded; retry shortly", 1)
                        .with("reason", "mailbox_full"),
                );
            }
            Err(SendError::Closed(message)) => {
                entry.stats.queued.fetch_sub(1, Ordering::Relaxed);
                // The actor died between lookup and send: activate a fresh one and retry once.
                let fresh = self
                    .supervisor
                    .send(Activate {
                        tenant: message.caller.tenant_id,
                    })
                    .await
                    .map_err(|_| Problem::unavailable("the tenant supervisor is unavailable", 1))?;
                fresh.stats.queued.fetch_add(1, Ordering::Relaxed);
                if fresh.addr.try_send(message).is_err() {
                    fresh.stats.queued.fetch_sub(1, Ordering::Relaxed);
                    return Err(Problem::unavailable("the tenant is restarting; retry", 1));
                }
            }
        }
        answer.await.map_err(|_| {
            Problem::unavailable("the operation was cancelled by a restart; retry", 1)
        })?
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
        self.shared.metrics.mailbox_depth_max.set(max_depth as i64);
        items.sort_by_key(|i| i.tenant_id);
        items
    }

    pub fn active(&self) -> usize {
        self.shared.actors.len()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }
}

pub struct TenantSupervisor {
    shared: Arc<ActorShared>,
    arbiters: Vec<ArbiterHandle>,
}

impl Actor for TenantSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Activations arrive in bursts at start-up; a small mailbox would turn them into 503s.
        ctx.set_mailbox_capacity(4096);
    }
}

#[derive(Message)]
#[rtype(result = "Arc<ActorEntry>")]
struct Activate {
    tenant: Uuid,
}

impl Handler<Activate> for TenantSupervisor {
    type Result = MessageResult<Activate>;

    fn handle(&mut self, msg: Activate, _ctx: &mut Context<Self>) -> Self::Result {
        if let Some(entry) = self.shared.actors.get(&msg.tenant) {
            if entry.addr.connected() {
                return MessageResult(entry.clone());
            }
        }
        let index = (msg.tenant.as_u128() % self.arbiters.len() as u128) as usize;
        let shared = self.shared.clone();
        let tenant = msg.tenant;
        let stats = Arc::new(ActorStats {
            activated_at: SystemTime::now(),
            queued: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            restarts: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
        });
        let actor_stats = stats.clone();
        let addr = Supervisor::start_in_arbiter(&self.arbiters[index], move |_ctx| {
            TenantActor::new(tenant, shared, actor_stats)
        });
        let entry = Arc::new(ActorEntry { addr, stats });
        self.shared.actors.insert(msg.tenant, entry.clone());
        self.shared.metrics.actor_activations.inc();
        self.shared.metrics.actors_active.inc();
        MessageResult(entry)
    }
}
