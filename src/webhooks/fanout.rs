//! Fan-out: each outbox event becomes one message per endpoint of its tenant subscribed to its
//! type, written in the outbox row's own transaction. The unique key (tenant, outbox event,
//! endpoint) makes a second run of the same event (the outbox delivers at least once) add
//! nothing. A body over [`MAX_PAYLOAD_BYTES`] is refused here: its message is stored as
//! `refused`, with a delivery row saying why, and never sent.
//!
//! The worker hands a tenant's batch of events over at once ([`JobHandler::handle_batch`]): the
//! endpoints are read once and every message of the batch is written by one statement.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};

use deadpool_postgres::Transaction;
use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::ops::message_body;
use super::{subscribed, MAX_PAYLOAD_BYTES, TEST_EVENT};
use crate::jobs::{Job, JobError, JobHandler};

pub struct FanOut;

/// Tenants for which messages were written in a transaction not yet known to be committed:
/// their commit wakes the dispatcher for them (and only for them, so events no endpoint wants
/// cost the dispatcher nothing). One left by a rolled-back transaction costs one spare wake.
static QUEUED: LazyLock<Mutex<HashSet<Uuid>>> = LazyLock::new(|| Mutex::new(HashSet::new()));

impl JobHandler for FanOut {
    fn name(&self) -> &'static str {
        "webhooks"
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type != TEST_EVENT
    }

    fn handle<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
        job: &'a Job,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move { self.fan_out(tx, &[job]).await })
    }

    fn handle_batch<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
        jobs: &'a [&'a Job],
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move { self.fan_out(tx, jobs).await })
    }

    fn committed(&self, job: &Job, wakes: &crate::supervise::Wakes) {
        let queued = QUEUED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&job.tenant_id);
        if queued {
            super::delivery::wake_tenant(wakes, job.tenant_id);
        }
    }
}

impl FanOut {
    /// The messages of `jobs`, all of one tenant.
    async fn fan_out(&self, tx: &Transaction<'_>, jobs: &[&Job]) -> Result<(), JobError> {
        let Some(tenant) = jobs.first().map(|job| job.tenant_id) else {
            return Ok(());
        };
        let stmt = tx
            .prepare_cached(
                "select id, events from app.webhooks \
                 where tenant_id = $1 and status = 'enabled' and deleted_at is null",
            )
            .await?;
        let endpoints: Vec<(Uuid, Vec<String>)> = tx
            .query(&stmt, &[&tenant])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        if endpoints.is_empty() {
            return Ok(());
        }
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
        let stmt = tx
            .prepare_cached(
                "insert into app.webhook_messages \
                 (tenant_id, id, webhook_id, outbox_id, event_type, body, status) \
                 select $1, m.id, m.webhook_id, m.outbox_id, m.event_type, m.body, m.status \
                 from unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[]) \
                   as m (id, webhook_id, outbox_id, event_type, body, status) \
                 on conflict (tenant_id, outbox_id, webhook_id) do nothing \
                 returning id, webhook_id, status",
            )
            .await?;
        let inserted = tx
            .query(
                &stmt,
                &[
                    &tenant,
                    &ids,
                    &webhook_ids,
                    &outbox_ids,
                    &types,
                    &bodies,
                    &statuses,
                ],
            )
            .await?;
        let mut pending = false;
        let refused: Vec<(Uuid, Uuid)> = inserted
            .iter()
            .filter_map(|row| {
                let status: &str = row.get(2);
                pending |= status == "pending";
                (status == "refused").then(|| (row.get(0), row.get(1)))
            })
            .collect();
        if pending {
            QUEUED
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(tenant);
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
