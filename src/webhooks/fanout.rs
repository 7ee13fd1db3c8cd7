//! Fan-out: each outbox event becomes one message per endpoint of its tenant subscribed to its
//! type, written in the outbox row's own transaction. The unique key (tenant, outbox event,
//! endpoint) makes a second run of the same event (the outbox delivers at least once) add
//! nothing. A body over [`MAX_PAYLOAD_BYTES`] is refused here: its message is stored as
//! `refused`, with a delivery row saying why, and never sent.
//!
//! The worker hands a tenant's batch of events over at once ([`JobHandler::handle_batch`]): the
//! endpoints are read once and every message of the batch is written by one statement.
//!
//! With this server's dispatcher at hand ([`FanOut::handing_to`]) and in the worker's fast
//! path, the messages the tenant's delivery limiter admits are written already leased to this
//! server (the lease a claim gives: `locked_until`, the attempt counted, the window charged, in
//! the same transaction), and once that commits they go to the dispatcher in memory, which
//! sends them without a claim of its own. Nothing is lost if this process dies in between: the
//! lease runs out and any instance's claim sends them (at least once, as after a claim). What
//! the limit leaves is written due and the tenant's drain is woken for it.

use std::collections::HashMap;

use deadpool_postgres::Transaction;
use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::delivery::{Dispatcher, Leased};
use super::ops::message_body;
use super::{subscribed, WebhookError, MAX_PAYLOAD_BYTES, TEST_EVENT};
use crate::jobs::{AfterCommit, Job, JobError, JobHandler};

/// The `webhooks` job handler.
#[derive(Clone, Default)]
pub struct FanOut {
    /// This server's dispatcher: what it may send is leased to it and handed over.
    dispatcher: Option<Dispatcher>,
}

impl FanOut {
    /// Writes the messages due; their commit wakes the server's dispatcher for the tenant.
    pub fn new() -> FanOut {
        FanOut::default()
    }

    /// Writes what `dispatcher`'s tenant limiter admits leased to it, and hands it over after
    /// the commit.
    pub fn handing_to(dispatcher: Dispatcher) -> FanOut {
        FanOut {
            dispatcher: Some(dispatcher),
        }
    }
}

fn job_error(err: WebhookError) -> JobError {
    match err {
        WebhookError::Db(err) => JobError::Db(err),
        other => JobError::Handler {
            handler: "webhooks",
            reason: crate::error::error_chain(&other),
        },
    }
}

impl JobHandler for FanOut {
    fn name(&self) -> &'static str {
        "webhooks"
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type != TEST_EVENT
    }

    /// Without a transaction's after-commit (the worker always gives one): the messages are
    /// written due and nothing is handed over or woken; the dispatcher's look at the table
    /// finds them.
    fn handle<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
        job: &'a Job,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move { self.fan_out(tx, &[job], &AfterCommit::plain()).await })
    }

    fn handle_batch<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
        jobs: &'a [&'a Job],
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move { self.fan_out(tx, jobs, &AfterCommit::plain()).await })
    }

    fn handle_batch_then<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
        jobs: &'a [&'a Job],
        after: &'a AfterCommit,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move { self.fan_out(tx, jobs, after).await })
    }
}

impl FanOut {
    /// The messages of `jobs`, all of one tenant; what to do after the commit goes to `after`.
    async fn fan_out(
        &self,
        tx: &Transaction<'_>,
        jobs: &[&Job],
        after: &AfterCommit,
    ) -> Result<(), JobError> {
        let Some(tenant) = jobs.first().map(|job| job.tenant_id) else {
            return Ok(());
        };
        let dispatcher = self.dispatcher.as_ref().filter(|_| after.may_hand_over());
        // Handing over, the endpoints are read as the sender needs them too (one read).
        let stmt = match dispatcher {
            Some(_) => {
                tx.prepare_cached(&format!(
                    "select id, events, {} from app.webhooks \
                     where tenant_id = $1 and status = 'enabled' and deleted_at is null",
                    Dispatcher::TARGET_COLUMNS
                ))
                .await?
            }
            None => {
                tx.prepare_cached(
                    "select id, events from app.webhooks \
                     where tenant_id = $1 and status = 'enabled' and deleted_at is null",
                )
                .await?
            }
        };
        // The tenant's rate-window row is read and locked beside the endpoints (one round
        // trip); a tenant with no endpoint wanting these events only had its row locked.
        let start = match dispatcher {
            Some(dispatcher) => dispatcher.lease_start(tenant).await,
            None => None,
        };
        let by_tenant: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&tenant];
        let (rows, window) = match (dispatcher, &start) {
            (Some(dispatcher), Some(start)) => {
                let (rows, window) = futures_util::join!(
                    tx.query(&stmt, &by_tenant),
                    dispatcher.read_window(tx, start)
                );
                (rows?, window.map_err(job_error)?)
            }
            _ => (
                tx.query(&stmt, &by_tenant).await?,
                super::delivery::WindowRead::Missing,
            ),
        };
        let endpoints: Vec<(Uuid, Vec<String>)> =
            rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        if endpoints.is_empty() {
            return Ok(());
        }
        // A secret that cannot be opened leaves the messages to the claim, which fails and
        // says so the same way for every instance.
        let targets = dispatcher.and_then(|dispatcher| {
            let now = chrono::Utc::now();
            rows.iter()
                .map(|row| Ok((row.get::<_, Uuid>(0), dispatcher.target(row, 2, now)?)))
                .collect::<Result<HashMap<_, _>, WebhookError>>()
                .inspect_err(|err| {
                    tracing::debug!(tenant_id = %tenant, error = %crate::error::error_chain(err),
                        "webhook messages not handed over: a secret cannot be opened")
                })
                .ok()
        });
        // One row per (event, subscribed endpoint), as parallel arrays for one insert.
        let mut ids = Vec::new();
        let mut webhook_ids = Vec::new();
        let mut outbox_ids = Vec::new();
        let mut types: Vec<&str> = Vec::new();
        let mut bodies = Vec::new();
        let mut statuses: Vec<&str> = Vec::new();
        let mut sizes = Vec::new();
        for job in jobs {
            debug_assert_eq!(job.tenant_id, tenant);
            let wanted: Vec<Uuid> = endpoints
                .iter()
                .filter(|(_, events)| subscribed(events, &job.event_type))
                .map(|(id, _)| *id)
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let body = message_body(&job.event_type, job.created_at, &job.payload);
            let size = body.len();
            let refused = size > MAX_PAYLOAD_BYTES;
            for endpoint in wanted {
                ids.push(Uuid::now_v7());
                webhook_ids.push(endpoint);
                outbox_ids.push(job.id);
                types.push(job.event_type.as_str());
                // A refused message keeps no body: it is never sent, and the limit is what
                // refused it.
                bodies.push(if refused { String::new() } else { body.clone() });
                statuses.push(if refused { "refused" } else { "pending" });
                sizes.push(size);
            }
        }
        if ids.is_empty() {
            return Ok(());
        }
        // What the limiter admits is written leased to this server: the first `take` of the
        // messages to send.
        let pending = statuses.iter().filter(|s| **s == "pending").count();
        let lease = match (dispatcher, start, &targets) {
            (Some(dispatcher), Some(start), Some(_)) => dispatcher
                .lease(tx, start, window, pending)
                .await
                .map_err(job_error)?,
            _ => None,
        };
        let mut leased_until = Vec::with_capacity(ids.len());
        let mut attempts = Vec::with_capacity(ids.len());
        let mut left = lease.as_ref().map_or(0, |lease| lease.take);
        for status in &statuses {
            if *status == "pending" && left > 0 {
                left -= 1;
                leased_until.push(lease.as_ref().map(|lease| lease.until));
                attempts.push(1i32);
            } else {
                leased_until.push(None);
                attempts.push(0i32);
            }
        }
        let stmt = tx
            .prepare_cached(
                "insert into app.webhook_messages \
                 (tenant_id, id, webhook_id, outbox_id, event_type, body, status, \
                  locked_until, attempts) \
                 select $1, m.id, m.webhook_id, m.outbox_id, m.event_type, m.body, m.status, \
                   m.locked_until, m.attempts \
                 from unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], \
                   $7::text[], $8::timestamptz[], $9::int4[]) \
                   as m (id, webhook_id, outbox_id, event_type, body, status, locked_until, \
                     attempts) \
                 on conflict (tenant_id, outbox_id, webhook_id) do nothing \
                 returning id, webhook_id, status, attempts, created_at",
            )
            .await?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 9] = [
            &tenant,
            &ids,
            &webhook_ids,
            &outbox_ids,
            &types,
            &bodies,
            &statuses,
            &leased_until,
            &attempts,
        ];
        // The window's charge goes out with the insert (one round trip for both).
        let (inserted, charged) = match (dispatcher, &lease) {
            (Some(dispatcher), Some(lease)) => {
                let (inserted, charged) =
                    futures_util::join!(tx.query(&stmt, &params), dispatcher.charge(tx, lease));
                (inserted, charged.map_err(job_error))
            }
            _ => (tx.query(&stmt, &params).await, Ok(())),
        };
        let inserted = inserted?;
        charged?;
        let mut unleased = false;
        let mut handed = Vec::new();
        let mut refused: Vec<(Uuid, Uuid)> = Vec::new();
        let index: HashMap<Uuid, usize> = if lease.is_some() {
            ids.iter().enumerate().map(|(i, id)| (*id, i)).collect()
        } else {
            HashMap::new()
        };
        for row in &inserted {
            let id: Uuid = row.get(0);
            let webhook_id: Uuid = row.get(1);
            match row.get::<_, &str>(2) {
                "refused" => refused.push((id, webhook_id)),
                _ if row.get::<_, i32>(3) == 0 => unleased = true,
                _ => {
                    let body = index
                        .get(&id)
                        .and_then(|i| bodies.get(*i))
                        .cloned()
                        .unwrap_or_default();
                    handed.push(Leased {
                        id,
                        webhook_id,
                        body,
                        created_at: row.get(4),
                    });
                }
            }
        }
        match (dispatcher, lease, targets) {
            (Some(dispatcher), Some(lease), Some(targets)) if !handed.is_empty() => {
                let handed = dispatcher.handed(lease, handed, targets, unleased);
                let dispatcher = dispatcher.clone();
                after.push(move |wakes| dispatcher.hand_over(handed, wakes));
            }
            _ if unleased || !handed.is_empty() => {
                after.push(move |wakes| super::delivery::wake_tenant(wakes, tenant));
            }
            _ => {}
        }
        if refused.is_empty() {
            return Ok(());
        }
        let stmt = tx
            .prepare_cached(
                "insert into app.webhook_deliveries \
                 (tenant_id, id, message_id, webhook_id, attempt, status, error) \
                 values ($1, $2, $3, $4, 0, 'refused', $5)",
            )
            .await?;
        for (message, endpoint) in refused {
            let size = ids
                .iter()
                .position(|id| *id == message)
                .and_then(|i| sizes.get(i))
                .copied()
                .unwrap_or_default();
            let reason =
                format!("the payload is {size} bytes, over the limit of {MAX_PAYLOAD_BYTES}");
            tx.execute(
                &stmt,
                &[&tenant, &Uuid::now_v7(), &message, &endpoint, &reason],
            )
            .await?;
            tracing::warn!(tenant_id = %tenant, message_id = %message, %reason,
                "webhook message refused");
        }
        Ok(())
    }
}
