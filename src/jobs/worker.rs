//! The outbox worker: per tenant, lock a batch of due rows and run them in one transaction
//! bound to the tenant; retry with backoff.
//!
//! Tenants with a few events each (most of them, most of the time) share a transaction: up to
//! [`TENANTS_PER_TX`] of them are run one after the other in one transaction, the context set
//! to each in turn (`SET LOCAL`/`set_config(.., true)`, as the analytics flush does), so each
//! tenant's statements still run under that tenant's policies while the transaction's begin,
//! settings and commit are paid once (not under Citus, where the tenants' rows are on different
//! shards). If anything in such a group fails, it is rolled back
//! whole and each of its tenants runs in a transaction of its own, as below. A tenant whose
//! last batch was large runs alone, so a backlog does not hold the others' commit, and one
//! whose last batch was full runs several batches at once ([`super::schedule`]).
//!
//! A batch is tried whole first: each handler gets every job of the batch it wants
//! ([`super::JobHandler::handle_batch`], the webhook fan-out writes all of its messages in one
//! statement) and the rows are settled in one statement. If a handler fails, the whole batch is
//! rolled back and run again one job at a time, each under a savepoint, so the failing job is
//! retried (or dead-lettered) alone. A handler that panics is taken as one that failed (the
//! panic is caught around the handler's future): its job is counted, retried and in the end
//! dead-lettered like any other failure, instead of being run again without end.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use deadpool_postgres::Transaction;
use futures_util::stream::{self, StreamExt};
use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::schedule::{Batch, Schedule, TENANTS_PER_TX};
use super::{AfterCommit, Job, JobError, Registry};
use crate::db::tenant_tx::set_local_tenant_sql;
use crate::db::{PgPool, PooledConn, COMMIT_WITHOUT_WAITING_SQL};

/// Locks up to `$2` due rows of the tenant `$1`, filtered by the tenant with an equality (one
/// shard under Citus). SKIP LOCKED: rows another worker (of any instance) is processing are
/// left to it; its transaction holds them until it ends, so no row runs twice at once, and a
/// worker that dies releases them with its connection.
const LOCK_DUE_SQL: &str = "select id, event_type, payload, created_at, attempts + 1 \
     from app.outbox \
     where tenant_id = $1 and processed_at is null and failed_at is null \
     and deleted_at is null and next_attempt_at <= now() \
     order by next_attempt_at, id limit $2 \
     for update skip locked";

/// [`LOCK_DUE_SQL`] for the fast path, which settles every row it takes: the rows are marked
/// processed as they are locked, one statement and one new version of each row instead of a
/// lock and then an update. A handler that fails rolls the whole transaction back, marks
/// included, and the batch runs again one job at a time ([`Worker::batch_one_by_one`]).
const CLAIM_DUE_SQL: &str = "with due as ( \
       select id from app.outbox \
       where tenant_id = $1 and processed_at is null and failed_at is null \
       and deleted_at is null and next_attempt_at <= now() \
       order by next_attempt_at, id limit $2 \
       for update skip locked) \
     update app.outbox o set processed_at = now(), attempts = o.attempts + 1, last_error = null \
     from due where o.tenant_id = $1 and o.id = due.id \
     returning o.id, o.event_type, o.payload, o.created_at, o.attempts";

/// How the fast and the slow path take a tenant's due rows.
#[derive(Clone, Copy)]
enum Take {
    /// Locked and marked processed at once (the fast path settles all of them).
    Claim,
    /// Locked only (each is settled under its own savepoint).
    Lock,
}

use crate::error::error_chain;
use crate::state::AppState;

#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Rows of one tenant taken per batch (one transaction).
    pub batch_size: i32,
    /// Looks at the table this often when nothing woke the worker.
    pub poll_interval: Duration,
    /// Tenants' batches run at once by this worker (each holds one app-pool connection).
    pub concurrency: usize,
    /// Attempts before a row is dead-lettered (`failed_at` set).
    pub max_attempts: i32,
    /// Delay before retry n is `backoff_base * 2^(n-1)`, capped at `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            batch_size: 200,
            poll_interval: Duration::from_millis(500),
            concurrency: 2,
            max_attempts: 10,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(3600),
        }
    }
}

impl WorkerOptions {
    pub fn backoff(&self, attempt: i32) -> Duration {
        let exp = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        self.backoff_base
            .saturating_mul(2u32.saturating_pow(exp))
            .min(self.backoff_max)
    }
}

/// What became of one row run on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Retry,
    DeadLettered,
}

#[derive(Clone)]
pub struct Worker {
    pool: PgPool,
    registry: Registry,
    options: WorkerOptions,
}

impl Worker {
    pub fn new(pool: PgPool, registry: Registry, options: WorkerOptions) -> Self {
        Worker {
            pool,
            registry,
            options,
        }
    }

    /// One pass: every tenant with events due gets one batch; returns how many rows were
    /// taken. Tests call this.
    pub async fn run_once(&self) -> Result<usize, JobError> {
        let tenants = self.pending_tenants().await?;
        let (rows, _) = self.run_tenants(tenants).await;
        Ok(rows)
    }

    /// Runs until `stop`. Tenants whose events committed in this server are taken at once
    /// (`supervise::Wakes::outbox`, hinted by `TenantTx::commit`); the table itself is looked
    /// at every `poll_interval` (events of other instances, retries coming due, a restart's
    /// backlog). Up to `concurrency` groups of batches run at once, and a tenant starts as
    /// soon as a slot is free (no waiting for a whole round of other tenants); who goes next is
    /// [`Schedule`]'s. The batches under way are finished first: their transactions commit or
    /// roll back.
    pub async fn run(self, stop: CancellationToken) {
        let mut next_scan = tokio::time::Instant::now();
        let mut schedule = Schedule::new(self.options.concurrency);
        let mut batches = tokio::task::JoinSet::new();
        let mut tasks: HashMap<tokio::task::Id, Vec<Uuid>> = HashMap::new();
        loop {
            let wakes = self.pool.manager().wakes().clone();
            let woken = wakes.outbox.notified();
            let now = tokio::time::Instant::now();
            for tenant in wakes.outbox.take() {
                schedule.want(tenant, now);
            }
            if tokio::time::Instant::now() >= next_scan {
                next_scan = tokio::time::Instant::now() + self.options.poll_interval;
                match self.pending_tenants().await {
                    Ok(found) => {
                        for tenant in found {
                            schedule.want(tenant, now);
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %error_chain(&err), "outbox not read; will retry")
                    }
                }
            }
            while let Some(group) = schedule.next(tokio::time::Instant::now()) {
                let this = self.clone();
                let members = group.clone();
                let task = batches.spawn(async move { this.group_batch(members).await });
                tasks.insert(task.id(), group);
            }
            let release = schedule.next_release().unwrap_or(next_scan);
            tokio::select! {
                _ = stop.cancelled() => break,
                Some(ended) = batches.join_next_with_id(), if !batches.is_empty() => {
                    let (id, results) = match ended {
                        Ok((id, results)) => (id, results),
                        Err(err) => {
                            // A panic rolled its transaction back: the rows are due again.
                            tracing::error!(%err, "outbox batch task failed");
                            (err.id(), Vec::new())
                        }
                    };
                    let ran: HashMap<Uuid, Batch> = results.into_iter().collect();
                    schedule.ended(
                        &tasks.remove(&id).unwrap_or_default(),
                        &ran,
                        tokio::time::Instant::now(),
                    );
                }
                _ = woken => {}
                _ = tokio::time::sleep_until(next_scan) => {}
                // A busy tenant's gather time ended.
                _ = tokio::time::sleep_until(release), if release < next_scan => {}
            }
        }
        while batches.join_next().await.is_some() {}
    }

    /// Tenants with events due: the one cross-tenant read (`app.outbox_pending_tenants`,
    /// migration V11), tenant ids only.
    async fn pending_tenants(&self) -> Result<Vec<Uuid>, JobError> {
        let conn = self.pool.get().await?;
        // No tenant context here on purpose: the function is the only cross-tenant path.
        let stmt = conn
            .prepare_cached("select tenant_id from app.outbox_pending_tenants($1)")
            .await?;
        let rows = conn.query(&stmt, &[&10_000i32]).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// One batch of each tenant, [`TENANTS_PER_TX`] tenants to a transaction and `concurrency`
    /// transactions at once: the rows taken, and the tenants whose batch was full.
    async fn run_tenants(&self, tenants: Vec<Uuid>) -> (usize, Vec<Uuid>) {
        let mut rows = 0;
        let mut full = Vec::new();
        let groups: Vec<Vec<Uuid>> = tenants
            .chunks(TENANTS_PER_TX)
            .map(<[Uuid]>::to_vec)
            .collect();
        let mut batches = stream::iter(groups)
            .map(|group| self.group_batch(group))
            .buffer_unordered(self.options.concurrency.max(1));
        while let Some(results) = batches.next().await {
            for (tenant, batch) in results {
                rows += batch.rows;
                if batch.full {
                    full.push(tenant);
                }
            }
        }
        (rows, full)
    }

    /// One batch of each of `tenants`: in one shared transaction when there are several (and
    /// nothing fails), else each in its own.
    async fn group_batch(&self, tenants: Vec<Uuid>) -> Vec<(Uuid, Batch)> {
        if tenants.len() > 1 {
            match self.batch_group_together(&tenants).await {
                Ok(Some(batches)) => return batches,
                Ok(None) => {}
                Err(err) => {
                    tracing::info!(error = %error_chain(&err), tenants = tenants.len(),
                        "shared outbox transaction failed; its tenants run one by one")
                }
            }
        }
        let mut batches = Vec::with_capacity(tenants.len());
        for tenant in tenants {
            batches.push((tenant, self.tenant_batch(tenant).await));
        }
        batches
    }

    /// The fast path of [`Worker::batch_together`] for several tenants in one transaction, the
    /// context set to each in turn before its rows are taken. None when a handler failed
    /// (everything was rolled back).
    async fn batch_group_together(
        &self,
        tenants: &[Uuid],
    ) -> Result<Option<Vec<(Uuid, Batch)>>, JobError> {
        let mut conn = self.pool.get().await?;
        if conn.is_citus() {
            // There the tenants' rows live on different shards: a transaction over several
            // of them would be a distributed one, dearer than one transaction each.
            return Ok(None);
        }
        let set_tenant = conn.statements().set_tenant().clone();
        let tx = conn.transaction().await?;
        // Prepared before anything is pipelined with it (a statement still to prepare would
        // be sent after what follows it).
        let claim = tx.prepare_cached(CLAIM_DUE_SQL).await?;
        let mut done = Vec::new();
        let mut batches = Vec::with_capacity(tenants.len());
        let after = AfterCommit::handing_over();
        for (i, &tenant) in tenants.iter().enumerate() {
            let span = tracing::info_span!("jobs", tenant_id = %tenant);
            let ran = crate::context::scope(tenant, async {
                // This tenant's context and the claim of its rows go out together (one round
                // trip; on the first, the commit setting too): requests on one connection run
                // in the order they were sent, so the claim runs under this context.
                let context = tenant.hyphenated().to_string();
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&context];
                let limit = self.batch_limit();
                let by_tenant: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&tenant, &limit];
                let (sync, set, rows) = futures_util::join!(
                    async {
                        if i == 0 {
                            tx.batch_execute(COMMIT_WITHOUT_WAITING_SQL).await
                        } else {
                            Ok(())
                        }
                    },
                    tx.execute(&set_tenant, &params),
                    tx.query(&claim, &by_tenant)
                );
                sync?;
                set?;
                let jobs = jobs_of(tenant, &rows?);
                if !jobs.is_empty() && !self.handle(&tx, &jobs, &after).await {
                    return Ok::<_, JobError>(None);
                }
                Ok(Some(jobs))
            })
            .instrument(span)
            .await?;
            let Some(jobs) = ran else {
                tx.rollback().await?;
                return Ok(None);
            };
            batches.push((tenant, self.batch_of(&jobs)));
            done.extend(jobs);
        }
        tx.commit().await?;
        after.run(self.pool.manager().wakes());
        for job in &done {
            for handler in self.registry.matching(&job.event_type) {
                handler.committed(job, self.pool.manager().wakes());
            }
        }
        Ok(Some(batches))
    }

    /// Runs every handler on its jobs of the batch, in `tx`. False when a handler failed (the
    /// caller rolls back).
    async fn handle(&self, tx: &Transaction<'_>, jobs: &[Job], after: &AfterCommit) -> bool {
        for handler in self.registry.handlers() {
            let mine: Vec<&Job> = jobs
                .iter()
                .filter(|job| handler.handles(&job.event_type))
                .collect();
            if mine.is_empty() {
                continue;
            }
            if let Err(err) =
                caught(handler.name(), handler.handle_batch_then(tx, &mine, after)).await
            {
                tracing::info!(handler = handler.name(), error = %error_chain(&err),
                    "outbox batch failed; its jobs run one by one");
                return false;
            }
        }
        true
    }

    async fn tenant_batch(&self, tenant: Uuid) -> Batch {
        let span = tracing::info_span!("jobs", tenant_id = %tenant);
        let result = crate::context::scope(tenant, async {
            match self.batch_together(tenant).await {
                Ok(Some(batch)) => Ok(batch),
                // A handler failed and the batch was rolled back: each job alone now.
                Ok(None) => self.batch_one_by_one(tenant).await,
                Err(err) => Err(err),
            }
        })
        .instrument(span.clone())
        .await;
        match result {
            Ok(batch) => batch,
            Err(err) => {
                // Rolled back: the rows are due as they were and are taken again.
                span.in_scope(|| {
                    tracing::warn!(error = %error_chain(&err), tenant_id = %tenant,
                    "outbox batch could not be settled; will retry")
                });
                Batch::default()
            }
        }
    }

    fn batch_limit(&self) -> i64 {
        i64::from(self.options.batch_size.max(1))
    }

    /// Takes up to `limit` due rows of `tenant` ([`LOCK_DUE_SQL`], [`CLAIM_DUE_SQL`]), in a
    /// transaction bound to it.
    async fn take_due(
        tx: &Transaction<'_>,
        tenant: Uuid,
        limit: i64,
        take: Take,
    ) -> Result<Vec<Job>, JobError> {
        let sql = match take {
            Take::Claim => CLAIM_DUE_SQL,
            Take::Lock => LOCK_DUE_SQL,
        };
        let stmt = tx.prepare_cached(sql).await?;
        Ok(jobs_of(tenant, &tx.query(&stmt, &[&tenant, &limit]).await?))
    }

    /// Opens the tenant's transaction and takes its due rows ([`Worker::take_due`]): the
    /// tenant context, the commit setting and the statement that takes them go out together,
    /// one round trip after `BEGIN` (requests on one connection run in the order they were
    /// sent, so it runs under the context).
    async fn begin_taking<'c>(
        &self,
        conn: &'c mut PooledConn,
        tenant: Uuid,
        take: Take,
    ) -> Result<(Transaction<'c>, Vec<Job>), JobError> {
        let citus = conn.is_citus();
        let set_tenant = conn.statements().set_tenant().clone();
        let tx = conn.transaction().await?;
        let context = tenant.hyphenated().to_string();
        let citus_context = set_local_tenant_sql(tenant);
        let (set, sync, jobs) = futures_util::join!(
            async {
                if citus {
                    tx.batch_execute(&citus_context).await
                } else {
                    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&context];
                    tx.execute(&set_tenant, &params).await.map(|_| ())
                }
            },
            // Delivery is at least once, so a settled job whose commit a PostgreSQL crash loses
            // is simply run again: the commit need not wait for the WAL flush. Every write of a
            // domain change already waited for its own; this spares each one a second.
            tx.batch_execute(COMMIT_WITHOUT_WAITING_SQL),
            Self::take_due(&tx, tenant, self.batch_limit(), take)
        );
        set?;
        sync?;
        let jobs = jobs?;
        Ok((tx, jobs))
    }

    fn batch_of(&self, jobs: &[Job]) -> Batch {
        Batch {
            rows: jobs.len(),
            full: i64::try_from(jobs.len()).unwrap_or(i64::MAX) >= self.batch_limit(),
        }
    }

    /// The fast path: the rows are taken and marked processed, and every handler takes the
    /// whole batch, in one transaction. None when a handler failed (everything was rolled
    /// back, the marks too).
    async fn batch_together(&self, tenant: Uuid) -> Result<Option<Batch>, JobError> {
        let mut conn = self.pool.get().await?;
        let (tx, jobs) = self.begin_taking(&mut conn, tenant, Take::Claim).await?;
        if jobs.is_empty() {
            tx.commit().await?;
            return Ok(Some(Batch::default()));
        }
        let after = AfterCommit::handing_over();
        if !self.handle(&tx, &jobs, &after).await {
            tx.rollback().await?;
            return Ok(None);
        }
        tx.commit().await?;
        after.run(self.pool.manager().wakes());
        for job in &jobs {
            for handler in self.registry.matching(&job.event_type) {
                handler.committed(job, self.pool.manager().wakes());
            }
        }
        Ok(Some(self.batch_of(&jobs)))
    }

    /// The slow path, after a failed batch: each job under a savepoint of its own, so a
    /// failing handler's writes are undone while the others' commit, and its failure is
    /// recorded (retry with backoff, or dead letter).
    async fn batch_one_by_one(&self, tenant: Uuid) -> Result<Batch, JobError> {
        let mut conn = self.pool.get().await?;
        let (mut tx, jobs) = self.begin_taking(&mut conn, tenant, Take::Lock).await?;
        let mut done = Vec::new();
        let after = AfterCommit::plain();
        for job in &jobs {
            let span = tracing::info_span!(
                "job",
                job_id = %job.id,
                attempt = job.attempt,
                event_type = %job.event_type,
            );
            if self.settle(&mut tx, job, &after).instrument(span).await? == Outcome::Done {
                done.push(job);
            }
        }
        tx.commit().await?;
        after.run(self.pool.manager().wakes());
        for job in done {
            for handler in self.registry.matching(&job.event_type) {
                handler.committed(job, self.pool.manager().wakes());
            }
        }
        Ok(self.batch_of(&jobs))
    }

    async fn settle(
        &self,
        tx: &mut Transaction<'_>,
        job: &Job,
        after: &AfterCommit,
    ) -> Result<Outcome, JobError> {
        let result = {
            let savepoint = tx.transaction().await?;
            // The job's own: kept only if its savepoint is released.
            let job_after = AfterCommit::plain();
            let one = [job];
            let mut result = Ok(());
            for handler in self.registry.matching(&job.event_type) {
                let run = handler.handle_batch_then(&savepoint, &one, &job_after);
                if let Err(err) = caught(handler.name(), run).await {
                    result = Err(err);
                    break;
                }
            }
            match result {
                Ok(()) => match savepoint.commit().await {
                    Ok(()) => {
                        after.absorb(job_after);
                        Ok(())
                    }
                    Err(err) => Err(JobError::from(err)),
                },
                Err(err) => {
                    savepoint.rollback().await?;
                    Err(err)
                }
            }
        };
        let reason = match result {
            Ok(()) => {
                let stmt = tx
                    .prepare_cached(
                        "update app.outbox set processed_at = now(), attempts = $3, \
                         last_error = null where tenant_id = $1 and id = $2",
                    )
                    .await?;
                tx.execute(&stmt, &[&job.tenant_id, &job.id, &job.attempt])
                    .await?;
                return Ok(Outcome::Done);
            }
            Err(err) => err.to_string(),
        };
        if job.attempt >= self.options.max_attempts {
            tracing::error!(error = %reason, "outbox job failed for the last time; dead-lettered");
            let stmt = tx
                .prepare_cached(
                    "update app.outbox set failed_at = now(), attempts = $3, last_error = $4 \
                     where tenant_id = $1 and id = $2",
                )
                .await?;
            tx.execute(&stmt, &[&job.tenant_id, &job.id, &job.attempt, &reason])
                .await?;
            return Ok(Outcome::DeadLettered);
        }
        let delay = self.options.backoff(job.attempt);
        tracing::warn!(error = %reason, retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "outbox job failed; will retry");
        let stmt = tx
            .prepare_cached(
                "update app.outbox set attempts = $3, last_error = $4, \
                 next_attempt_at = now() + make_interval(secs => $5) \
                 where tenant_id = $1 and id = $2",
            )
            .await?;
        tx.execute(
            &stmt,
            &[
                &job.tenant_id,
                &job.id,
                &job.attempt,
                &reason,
                &delay.as_secs_f64(),
            ],
        )
        .await?;
        Ok(Outcome::Retry)
    }
}

/// The jobs of the rows [`LOCK_DUE_SQL`] or [`CLAIM_DUE_SQL`] returned.
fn jobs_of(tenant: Uuid, rows: &[tokio_postgres::Row]) -> Vec<Job> {
    rows.iter()
        .map(|r| Job {
            tenant_id: tenant,
            id: r.get(0),
            event_type: r.get(1),
            payload: r.get(2),
            created_at: r.get(3),
            attempt: r.get(4),
        })
        .collect()
}

/// A handler's run, with a panic in it turned into the handler's error. The transaction it
/// used is rolled back after either, so nothing half-done of it is kept.
async fn caught(
    handler: &'static str,
    run: impl Future<Output = Result<(), JobError>>,
) -> Result<(), JobError> {
    match AssertUnwindSafe(run).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => Err(JobError::Handler {
            handler,
            reason: format!("panicked: {}", panic_message(panic.as_ref())),
        }),
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(message) = panic.downcast_ref::<&str>() {
        message
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message
    } else {
        "(no message)"
    }
}

/// The outbox worker of this instance, unless JOB_WORKER=false. Several instances may each run
/// one: a row is processed under its row lock, so never by two of them at once.
pub fn for_server(state: &AppState, registry: Registry) -> Option<Worker> {
    if !state.config.job_worker {
        return None;
    }
    let options = WorkerOptions {
        poll_interval: state.config.job_poll_interval,
        // Leaves most of the app pool to requests.
        concurrency: (state.config.app_shared_pool_size / 2).max(1),
        ..WorkerOptions::default()
    };
    Some(Worker::new(state.pools.app.clone(), registry, options))
}
