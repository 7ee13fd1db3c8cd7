//! Background jobs from the transactional outbox (DESIGN.md "Outbox", "Context propagation").
//!
//! A domain change calls [`enqueue`] inside its own transaction, so the event exists exactly when
//! the change does; its commit wakes this server's worker for that tenant (`supervise::Wakes`). The
//! [`Worker`] takes a batch of each tenant's due rows and runs every matching [`JobHandler`] in
//! one transaction bound to that tenant (`db::begin_tenant_tx`), inside a tracing span carrying
//! the tenant id, with the tenant id also in the task-local context ([`crate::context`]). A job
//! always carries its `tenant_id`; nothing about it is global.
//!
//! Who may see every tenant's backlog. The app role sees no row without a tenant context, the
//! admin role (BYPASSRLS) is reserved to audited operator endpoints, and the owner pool is for
//! DDL. Which tenants have events due is therefore asked of `app.outbox_pending_tenants`
//! (migration V11): a SECURITY DEFINER function owned by the owner role, with a pinned
//! search_path, executable by the app role only, returning tenant ids and nothing else. Each
//! tenant's rows are then locked, read and settled, and the handlers run, in a transaction
//! bound to that tenant under the ordinary policies as the app role. So the cross-tenant
//! capability is one audited-in-code statement that lists tenants, not a role that can read
//! rows. (`app.claim_outbox` of V3 stays in the schema for an older binary during a rolling
//! deploy; this version no longer calls it.)
//!
//! Delivery is at least once: handlers must be idempotent on the job id. A handler that writes to
//! the database does so in the job's transaction, so its writes commit only with the job.

mod schedule;
mod worker;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use futures_util::future::BoxFuture;
use serde_json::Value;
use thiserror::Error;
use uuid::Uuid;

use crate::db::DbError;

pub use worker::{for_server, Worker, WorkerOptions};

#[derive(Debug, Error)]
pub enum JobError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("handler {handler} failed: {reason}")]
    Handler {
        handler: &'static str,
        reason: String,
    },
}

impl From<tokio_postgres::Error> for JobError {
    fn from(err: tokio_postgres::Error) -> Self {
        JobError::Db(err.into())
    }
}

impl From<deadpool::managed::PoolError<tokio_postgres::Error>> for JobError {
    fn from(err: deadpool::managed::PoolError<tokio_postgres::Error>) -> Self {
        JobError::Db(err.into())
    }
}

/// One outbox row being processed.
#[derive(Clone, Debug)]
pub struct Job {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub event_type: String,
    pub payload: Value,
    /// 1 on the first attempt.
    pub attempt: i32,
    pub created_at: DateTime<Utc>,
}

/// Something done for outbox events: webhook fan-out, usage metering, analytics, ...
pub trait JobHandler: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// Whether this handler wants events of this type (e.g. `task.created`).
    fn handles(&self, event_type: &str) -> bool;

    /// Runs inside a transaction bound to `job.tenant_id`. An error rolls back what every
    /// handler did for this job and schedules a retry.
    fn handle<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
        job: &'a Job,
    ) -> BoxFuture<'a, Result<(), JobError>>;

    /// The jobs of one tenant's batch (each of the type this handler wants), in the batch's
    /// transaction: a handler that can do the work of many events in a few statements does so
    /// here. An error rolls back the whole batch, which the worker then runs again one job at a
    /// time through [`handle`](JobHandler::handle), so one failing event fails alone.
    fn handle_batch<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
        jobs: &'a [&'a Job],
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            for job in jobs {
                self.handle(tx, job).await?;
            }
            Ok(())
        })
    }

    /// [`handle_batch`](JobHandler::handle_batch) for a handler that has something to do once
    /// the batch's transaction has committed (hand its writes to whoever consumes them): it
    /// leaves that in `after`, which runs it after the commit and drops it after a rollback.
    fn handle_batch_then<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
        jobs: &'a [&'a Job],
        _after: &'a AfterCommit,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        self.handle_batch(tx, jobs)
    }

    /// Called once the job's transaction has committed with this handler's writes (e.g. to
    /// wake whoever consumes them).
    fn committed(&self, _job: &Job, _wakes: &crate::supervise::Wakes) {}
}

/// What handlers leave to do once their transaction has committed, given the server's
/// wake-ups. Tied to one transaction (or one job's savepoint) by the worker: it runs only after
/// that commits, so nothing done for a rolled-back transaction (a lease, a hand-over) escapes
/// it.
pub struct AfterCommit {
    tasks: std::sync::Mutex<Vec<AfterCommitTask>>,
    hand_over: bool,
}

type AfterCommitTask = Box<dyn FnOnce(&crate::supervise::Wakes) + Send>;

impl AfterCommit {
    /// For the batch's fast path: handlers may also take work for this server in the
    /// transaction (the webhook fan-out leases what it wrote for this server's dispatcher).
    pub fn handing_over() -> AfterCommit {
        AfterCommit {
            tasks: std::sync::Mutex::default(),
            hand_over: true,
        }
    }

    /// For the one-job-at-a-time path after a failure: only the handlers' own work, nothing
    /// taken on the side, so a failure of that can never fail the event.
    pub fn plain() -> AfterCommit {
        AfterCommit {
            tasks: std::sync::Mutex::default(),
            hand_over: false,
        }
    }

    /// Whether handlers may take work for this server in the transaction.
    pub fn may_hand_over(&self) -> bool {
        self.hand_over
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, Vec<AfterCommitTask>> {
        self.tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn push(&self, task: impl FnOnce(&crate::supervise::Wakes) + Send + 'static) {
        self.tasks().push(Box::new(task));
    }

    /// Takes over the tasks of `other` (a job's savepoint that was released into this
    /// transaction).
    pub fn absorb(&self, other: AfterCommit) {
        let moved = std::mem::take(&mut *other.tasks());
        self.tasks().extend(moved);
    }

    /// After the commit.
    pub fn run(self, wakes: &crate::supervise::Wakes) {
        let tasks = std::mem::take(&mut *self.tasks());
        for task in tasks {
            task(wakes);
        }
    }
}

/// The handlers the worker dispatches to.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: Vec<Arc<dyn JobHandler>>,
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    pub fn with(mut self, handler: impl JobHandler) -> Self {
        self.handlers.push(Arc::new(handler));
        self
    }

    pub fn handlers(&self) -> impl Iterator<Item = &dyn JobHandler> {
        self.handlers.iter().map(|h| h.as_ref())
    }

    pub fn matching<'a>(&'a self, event_type: &'a str) -> impl Iterator<Item = &'a dyn JobHandler> {
        self.handlers
            .iter()
            .filter(move |h| h.handles(event_type))
            .map(|h| h.as_ref())
    }

    /// What the server runs today; the webhook, metering and analytics areas add theirs here.
    /// The fan-out hands what it writes to `dispatcher` (this server's) when there is one.
    pub fn standard(dispatcher: Option<crate::webhooks::Dispatcher>) -> Self {
        let fan_out = match dispatcher {
            Some(dispatcher) => crate::webhooks::FanOut::handing_to(dispatcher),
            None => crate::webhooks::FanOut::new(),
        };
        Registry::new().with(LogEvents).with(fan_out)
    }
}

/// Logs every event, in the job's span (tenant id included).
pub struct LogEvents;

impl JobHandler for LogEvents {
    fn name(&self) -> &'static str {
        "log"
    }

    fn handles(&self, _event_type: &str) -> bool {
        true
    }

    fn handle<'a>(
        &'a self,
        _tx: &'a Transaction<'a>,
        job: &'a Job,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            tracing::info!(event_type = %job.event_type, attempt = job.attempt, "outbox event");
            Ok(())
        })
    }
}

/// Writes an event to the outbox in the caller's transaction (which must be bound to `tenant`).
pub async fn enqueue(
    tx: &crate::db::TenantTx<'_>,
    tenant: Uuid,
    event_type: &str,
    payload: &Value,
) -> Result<Uuid, DbError> {
    let id = Uuid::now_v7();
    let stmt = tx
        .prepare_cached(
            "insert into app.outbox (tenant_id, id, event_type, payload) values ($1, $2, $3, $4)",
        )
        .await?;
    tx.execute(&stmt, &[&tenant, &id, &event_type, payload])
        .await?;
    tx.note_enqueued();
    Ok(id)
}

/// [`enqueue`] through any client whose transaction is bound to `tenant`, or may write every
/// tenant's rows (an operator's admin transaction): job handlers and operator changes that
/// cause events hold a deadpool transaction, not a [`crate::db::TenantTx`].
pub async fn enqueue_with(
    client: &impl deadpool_postgres::GenericClient,
    tenant: Uuid,
    event_type: &str,
    payload: &Value,
) -> Result<Uuid, DbError> {
    let id = Uuid::now_v7();
    client
        .execute(
            "insert into app.outbox (tenant_id, id, event_type, payload) values ($1, $2, $3, $4)",
            &[&tenant, &id, &event_type, payload],
        )
        .await?;
    Ok(id)
}
