//! The outbox worker: claim due rows, run each in its tenant's context, retry with backoff.

use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::{Job, JobError, Registry};
use crate::db::{begin_tenant_tx, PgPool, COMMIT_WITHOUT_WAITING_SQL};
use crate::error::error_chain;
use crate::state::AppState;

#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Rows leased per claim.
    pub batch_size: i32,
    /// How long a claimed row stays hidden from other claims before its handler has locked it;
    /// after a crash, how long until another worker retries it.
    pub lease: Duration,
    /// Sleep when nothing was due.
    pub poll_interval: Duration,
    /// Jobs run at once by this worker (each holds one app-pool connection while it runs).
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
            batch_size: 32,
            lease: Duration::from_secs(60),
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
        let exp = attempt.saturating_sub(1).clamp(0, 30).unsigned_abs();
        self.backoff_base
            .saturating_mul(2u32.saturating_pow(exp))
            .min(self.backoff_max)
    }
}

/// What became of one claimed row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Retry,
    DeadLettered,
    /// Another worker holds it, or it was re-claimed after our lease ran out.
    Skipped,
}

#[derive(Clone)]
pub struct Worker {
    pool: PgPool,
    registry: Registry,
    options: WorkerOptions,
}

struct Claim {
    tenant_id: Uuid,
    id: Uuid,
    attempt: i32,
}

impl Worker {
    pub fn new(pool: PgPool, registry: Registry, options: WorkerOptions) -> Self {
        Worker {
            pool,
            registry,
            options,
        }
    }

    /// Claims one batch and runs it; returns how many rows were claimed.
    pub async fn run_once(&self) -> Result<usize, JobError> {
        let claims = self.claim().await?;
        let claimed = claims.len();
        stream::iter(claims)
            .map(|claim| self.process(claim))
            .buffer_unordered(self.options.concurrency.max(1))
            .for_each(|_| async {})
            .await;
        Ok(claimed)
    }

    /// Runs until `stop`; the batch under way is finished first, so no claimed row waits for
    /// its lease to run out.
    pub async fn run(self, stop: CancellationToken) {
        while !stop.is_cancelled() {
            match self.run_once().await {
                Ok(n) if i32::try_from(n).unwrap_or(i32::MAX) >= self.options.batch_size => {
                    continue
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(error = %error_chain(&err), "outbox claim failed; will retry")
                }
            }
            if !crate::supervise::pause(&stop, self.options.poll_interval).await {
                return;
            }
        }
    }

    async fn claim(&self) -> Result<Vec<Claim>, JobError> {
        let conn = self.pool.get().await?;
        // No tenant context here on purpose: the function is the only cross-tenant path.
        let stmt = conn
            .prepare_cached("select tenant_id, id, attempts from app.claim_outbox($1, $2)")
            .await?;
        let lease = i32::try_from(self.options.lease.as_secs().max(1)).unwrap_or(i32::MAX);
        let rows = conn
            .query(&stmt, &[&self.options.batch_size, &lease])
            .await?;
        Ok(rows
            .iter()
            .map(|r| Claim {
                tenant_id: r.get(0),
                id: r.get(1),
                attempt: r.get(2),
            })
            .collect())
    }

    async fn process(&self, claim: Claim) -> Outcome {
        let span = tracing::info_span!(
            "job",
            tenant_id = %claim.tenant_id,
            job_id = %claim.id,
            attempt = claim.attempt,
            event_type = tracing::field::Empty,
        );
        let (tenant, id) = (claim.tenant_id, claim.id);
        let outcome = crate::context::scope(tenant, self.process_in_context(claim))
            .instrument(span.clone())
            .await;
        match outcome {
            Ok(outcome) => outcome,
            Err(err) => {
                // The row keeps its lease and is retried once the lease runs out.
                span.in_scope(|| tracing::warn!(error = %error_chain(&err), tenant_id = %tenant, job_id = %id, "outbox job could not be settled"));
                Outcome::Retry
            }
        }
    }

    async fn process_in_context(&self, claim: Claim) -> Result<Outcome, JobError> {
        let mut conn = self.pool.get().await?;
        let mut tx = begin_tenant_tx(&mut conn, claim.tenant_id).await?;
        // Delivery is at least once, so a settled job whose commit a PostgreSQL crash loses is
        // simply run again: the commit need not wait for the WAL flush. Every write of a
        // domain change already waited for its own; this spares each one a second.
        tx.batch_execute(COMMIT_WITHOUT_WAITING_SQL).await?;
        // Filtered by tenant explicitly, under RLS. The row lock keeps every other claim off it
        // while the handlers run; the attempt number fences out a claim that outlived its lease.
        // This waits for a lock instead of skipping it: another instance's claim that read the
        // row before our claim committed locks it while it re-checks (and finds it leased), and
        // keeps that lock until its claim commits a moment later. Skipping there would leave
        // the row untouched until its lease runs out. A lock held by another handler means our
        // lease ran out and the row was claimed again: after the wait the attempt number no
        // longer matches, and the row is skipped.
        let stmt = tx
            .prepare_cached(
                "select event_type, payload, created_at from app.outbox \
                 where tenant_id = $1 and id = $2 and attempts = $3 \
                 and processed_at is null and failed_at is null and deleted_at is null \
                 for update",
            )
            .await?;
        let Some(row) = tx
            .query_opt(&stmt, &[&claim.tenant_id, &claim.id, &claim.attempt])
            .await?
        else {
            return Ok(Outcome::Skipped);
        };
        let job = Job {
            tenant_id: claim.tenant_id,
            id: claim.id,
            event_type: row.get(0),
            payload: row.get(1),
            attempt: claim.attempt,
            created_at: row.get(2),
        };
        tracing::Span::current().record("event_type", job.event_type.as_str());

        let result = {
            // A savepoint, so a failing handler's writes are undone while the row stays locked
            // for recording the failure.
            let savepoint = tx.transaction().await?;
            let mut result = Ok(());
            for handler in self.registry.matching(&job.event_type) {
                if let Err(err) = handler.handle(&savepoint, &job).await {
                    result = Err(err);
                    break;
                }
            }
            match result {
                Ok(()) => savepoint.commit().await.map_err(JobError::from),
                Err(err) => {
                    savepoint.rollback().await?;
                    Err(err)
                }
            }
        };

        let outcome = match result {
            Ok(()) => {
                let stmt = tx
                    .prepare_cached(
                        "update app.outbox set processed_at = now(), last_error = null \
                         where tenant_id = $1 and id = $2",
                    )
                    .await?;
                tx.execute(&stmt, &[&job.tenant_id, &job.id]).await?;
                Outcome::Done
            }
            Err(err) => {
                let reason = err.to_string();
                if job.attempt >= self.options.max_attempts {
                    tracing::error!(error = %reason, "outbox job failed for the last time; dead-lettered");
                    let stmt = tx
                        .prepare_cached(
                            "update app.outbox set failed_at = now(), last_error = $3 \
                             where tenant_id = $1 and id = $2",
                        )
                        .await?;
                    tx.execute(&stmt, &[&job.tenant_id, &job.id, &reason])
                        .await?;
                    Outcome::DeadLettered
                } else {
                    let delay = self.options.backoff(job.attempt);
                    tracing::warn!(error = %reason, retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "outbox job failed; will retry");
                    let stmt = tx
                        .prepare_cached(
                            "update app.outbox set last_error = $3, \
                             next_attempt_at = now() + make_interval(secs => $4) \
                             where tenant_id = $1 and id = $2",
                        )
                        .await?;
                    tx.execute(
                        &stmt,
                        &[&job.tenant_id, &job.id, &reason, &delay.as_secs_f64()],
                    )
                    .await?;
                    Outcome::Retry
                }
            }
        };
        tx.commit().await?;
        if outcome == Outcome::Done {
            for handler in self.registry.matching(&job.event_type) {
                handler.committed(&job);
            }
        }
        Ok(outcome)
    }
}

/// The outbox worker of this instance, unless JOB_WORKER=false. Several instances may each run
/// one: claims never hand the same row to two of them.
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
