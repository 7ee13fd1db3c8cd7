//! One tenant's actor: the only way to reach that tenant's database lease. It runs each
//! operation as a future inside its own context (operations of one tenant interleave), bounded
//! by a cap on in-flight work and a cap on concurrent connections (noisy neighbours). A panic
//! in an operation is caught and turned into a stop, so the actor's `Supervisor` restarts it;
//! a panic left to unwind would drop the actor for good and close its mailbox.
//!
//! It also owns the tenant's config snapshot (`super::config`): [`LoadConfig`] (re)loads it.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::FutureExt;
use tokio::sync::{oneshot, Semaphore};
use tracing::Instrument;
use uuid::Uuid;

use super::config::{ConfigCell, Loader, Source};
use super::shared::{ActorShared, ActorStats};
use super::{ActorError, ExecError, TenantOp};
use crate::auth::Caller;
use crate::db::TenantTx;
use crate::tenant_config::load::LoadError;
use crate::tenant_config::TenantSnapshot;

pub struct TenantActor {
    tenant: Uuid,
    shared: Arc<ActorShared>,
    stats: Arc<ActorStats>,
    /// Removes this actor from the registry's map (and nothing else from it).
    leave_registry: Box<dyn Fn() + Send>,
    leases: Arc<Semaphore>,
    /// The pool of the thread hosting this actor (see `supervisor`).
    pool: crate::db::PgPool,
    /// The connection of that pool which single-statement reads share, if it has one.
    single_statements: Option<Arc<crate::db::SharedConn>>,
    in_flight: usize,
    last_active: Instant,
    /// The config snapshot, shared with the registry entry, which requests read.
    config: Arc<ConfigCell>,
    loader: Loader,
    /// Loads started so far; the number of the last one applied; loads numbered below the
    /// floor (started before the last announced change) are never applied.
    config_seq: u64,
    config_applied: u64,
    config_floor: u64,
    loads_running: usize,
}

impl TenantActor {
    pub fn new(
        tenant: Uuid,
        shared: Arc<ActorShared>,
        stats: Arc<ActorStats>,
        leave_registry: Box<dyn Fn() + Send>,
        pool: crate::db::PgPool,
        single_statements: Option<Arc<crate::db::SharedConn>>,
        config: Arc<ConfigCell>,
    ) -> Self {
        let leases = Arc::new(Semaphore::new(shared.settings.max_connections_per_tenant));
        let loader = Loader {
            tenant,
            pool: pool.clone(),
            single_statements: single_statements.clone(),
            store: shared.snapshots.clone(),
        };
        TenantActor {
            tenant,
            shared,
            stats,
            leave_registry,
            leases,
            pool,
            single_statements,
            in_flight: 0,
            last_active: Instant::now(),
            config,
            loader,
            config_seq: 0,
            config_applied: 0,
            config_floor: 0,
            loads_running: 0,
        }
    }

    fn finish_load(&mut self, seq: u64, result: Result<(TenantSnapshot, &'static str), LoadError>) {
        self.loads_running = self.loads_running.saturating_sub(1);
        // The requests that waited for it are about to send their operations.
        self.last_active = Instant::now();
        let counted = match result {
            Ok((snapshot, from)) if seq >= self.config_floor && seq > self.config_applied => {
                self.config_applied = seq;
                self.config.finish(Some(snapshot), None);
                from
            }
            Ok(_) => {
                self.config.finish(None, None);
                "superseded"
            }
            Err(err) => {
                tracing::warn!(tenant_id = %self.tenant, error = %crate::error::error_chain(&err),
                    "config snapshot not loaded; the last one (if any) keeps serving");
                self.config.finish(None, Some(err));
                "failed"
            }
        };
        self.shared
            .metrics
            .config_loads
            .with_label_values(&[counted])
            .inc();
    }

    fn check_idle(&mut self, ctx: &mut Context<Self>) {
        if self.stats.touched.swap(false, Ordering::Relaxed) {
            self.last_active = Instant::now();
        }
        // A config load under way (or asked for) has requests waiting for it.
        let idle = self.in_flight == 0
            && self.loads_running == 0
            && !self.config.ask_pending()
            && self.stats.queued.load(Ordering::Relaxed) == 0
            && self.last_active.elapsed() >= self.shared.settings.idle_timeout;
        if !idle {
            return;
        }
        // Dropping the registry's address first means the mailbox is disconnected when we stop,
        // so the Supervisor lets the actor go instead of restarting it.
        (self.leave_registry)();
        self.stats.evicted.store(true, Ordering::Relaxed);
        self.shared.metrics.actor_evictions.inc();
        ctx.stop();
    }
}

impl Actor for TenantActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.shared.settings.mailbox_capacity);
        self.stats.started.store(true, Ordering::Release);
        let every = (self.shared.settings.idle_timeout / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(30));
        ctx.run_interval(every, |act, ctx| act.check_idle(ctx));
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        // Still connected means the Supervisor is about to restart us: not a real stop.
        if !ctx.connected() {
            self.shared.metrics.actors_active.dec();
            tracing::debug!(tenant_id = %self.tenant, "tenant actor stopped");
        }
    }
}

impl Supervised for TenantActor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        // Everything the actor holds is rebuilt from the database on demand; work that was in
        // flight was cancelled with the old context and its callers got 503 + Retry-After.
        self.in_flight = 0;
        self.stats.in_flight.store(0, Ordering::Relaxed);
        self.leases = Arc::new(Semaphore::new(
            self.shared.settings.max_connections_per_tenant,
        ));
        self.last_active = Instant::now();
        // Loads under way were dropped with the old context: let requests ask again, and wake
        // those waiting for one. The snapshot held keeps serving.
        self.loads_running = 0;
        self.config.end_load();
        self.stats.restarts.fetch_add(1, Ordering::Relaxed);
        self.shared.metrics.actor_restarts.inc();
        tracing::warn!(tenant_id = %self.tenant, "tenant actor restarting after a failure");
    }
}

/// Loads the config snapshot from `Source`; answered once it is applied (or superseded, or
/// failed: the last snapshot then stays).
pub struct LoadConfig(pub Source);

impl Message for LoadConfig {
    type Result = ();
}

impl Handler<LoadConfig> for TenantActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, LoadConfig(source): LoadConfig, _ctx: &mut Context<Self>) -> Self::Result {
        self.config_seq += 1;
        self.loads_running += 1;
        let seq = self.config_seq;
        if source == Source::Database {
            self.config_floor = seq;
        }
        let load = self.loader.clone().load(source, self.config.current());
        Box::pin(
            load.into_actor(self)
                .map(move |result, act, _ctx| act.finish_load(seq, result)),
        )
    }
}

/// Run `op` for `caller`; the answer comes back through `reply`, so the sender can use
/// `try_send` (a full mailbox is answered with 503 at once instead of waiting).
pub struct Execute<O: TenantOp> {
    pub caller: Caller,
    pub op: O,
    pub reply: oneshot::Sender<Result<O::Output, ExecError<O::Error>>>,
}

impl<O: TenantOp> Message for Execute<O> {
    type Result = ();
}

impl<O: TenantOp> Handler<Execute<O>> for TenantActor {
    type Result = ();

    fn handle(&mut self, msg: Execute<O>, ctx: &mut Context<Self>) {
        self.stats.queued.fetch_sub(1, Ordering::Relaxed);
        self.last_active = Instant::now();
        if self.in_flight >= self.shared.settings.max_in_flight {
            self.shared
                .metrics
                .actor_rejections
                .with_label_values(&["in_flight"])
                .inc();
            let _ = msg.reply.send(Err(ActorError::TooManyInFlight.into()));
            return;
        }
        self.in_flight += 1;
        self.stats
            .in_flight
            .store(self.in_flight, Ordering::Relaxed);
        let Execute { caller, op, reply } = msg;
        let leases = self.leases.clone();
        let shared = self.shared.clone();
        let pool = self.pool.clone();
        let single_statements = self.single_statements.clone();
        let tenant = self.tenant;
        let span = tracing::info_span!(
            "tenant_op",
            tenant_id = %tenant,
            request_id = %caller.request_id,
            op = short_type_name::<O>(),
        );
        // Boxed before the combinators below: the operation's future is large, and each
        // combinator would otherwise move it whole.
        let work = Box::pin(
            async move {
                let _lease = leases
                    .acquire_owned()
                    .await
                    .map_err(ActorError::LeasesClosed)?;
                shared.metrics.tenant_pool_in_use.inc();
                let result = crate::context::scope(
                    tenant,
                    run_in_tenant_tx(&pool, single_statements.as_deref(), tenant, &caller, op),
                )
                .await;
                shared.metrics.tenant_pool_in_use.dec();
                result
            }
            .instrument(span),
        );
        let fut = AssertUnwindSafe(work)
            .catch_unwind()
            .into_actor(self)
            .map(move |outcome, act, ctx| {
                act.in_flight = act.in_flight.saturating_sub(1);
                act.stats.in_flight.store(act.in_flight, Ordering::Relaxed);
                act.last_active = Instant::now();
                match outcome {
                    Ok(result) => {
                        let _ = reply.send(result);
                    }
                    Err(_panic) => {
                        tracing::error!(tenant_id = %act.tenant, "tenant operation panicked; restarting the tenant actor");
                        let _ = reply.send(Err(ActorError::Panicked.into()));
                        ctx.stop();
                    }
                }
            });
        ctx.spawn(fut);
    }
}

async fn run_in_tenant_tx<O: TenantOp>(
    pool: &crate::db::PgPool,
    single_statements: Option<&crate::db::SharedConn>,
    tenant: Uuid,
    caller: &Caller,
    op: O,
) -> Result<O::Output, ExecError<O::Error>> {
    if let Some(shared) =
        single_statements.filter(|_| O::SINGLE_STATEMENT && !O::OPENS_TENANT_SCHEMA)
    {
        // Nothing to commit or roll back: the statement's implicit transaction ended with it,
        // on a connection other operations use at the same time (see `SharedConn`). Not on
        // Citus, where the context needs BEGIN and SET LOCAL: two requests, which another
        // operation's could come between (`TenantTx::query_opt_then_commit`).
        let conn = shared.get().await?;
        if !conn.is_citus() {
            return op
                .run(&TenantTx::single_statement(&conn, tenant), caller)
                .await
                .map_err(ExecError::Op);
        }
    }
    let mut conn = pool.get().await.map_err(crate::db::DbError::from)?;
    // An operation that opens the tenant's own schema (analytics do) counts against the
    // connection's schema budget: a connection that served many tenants is retired instead of
    // growing its relation cache without bound.
    if O::OPENS_TENANT_SCHEMA {
        conn.touch_tenant_schema(tenant);
    }
    if O::SINGLE_STATEMENT {
        // Nothing to commit or roll back: the statement's implicit transaction ended with it.
        return op
            .run(&TenantTx::single_statement(&conn, tenant), caller)
            .await
            .map_err(ExecError::Op);
    }
    // BEGIN, the tenant context and the operation's first query leave in one write and come
    // back in one read; `join` polls `opened` first, so they are queued in that order.
    let (tx, opened) = TenantTx::open(&conn, tenant);
    let (opened, output) = futures_util::future::join(opened, op.run(&tx, caller)).await;
    match (opened, output) {
        (Ok(()), Ok(output)) => {
            tx.commit().await?;
            Ok(output)
        }
        (Err(not_opened), _) => {
            tx.rollback().await;
            Err(not_opened.into())
        }
        (Ok(()), Err(failed)) => {
            tx.rollback().await;
            Err(ExecError::Op(failed))
        }
    }
}

fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}
