//! Fan-out: each outbox event becomes one message per endpoint of its tenant subscribed to its
//! type, written in the outbox row's own transaction. The unique key (tenant, outbox event,
//! endpoint) makes a second run of the same event (the outbox delivers at least once) add
//! nothing. A body over [`MAX_PAYLOAD_BYTES`] is refused here: its message is stored as
//! `refused`, with a delivery row saying why, and never sent.

use deadpool_postgres::Transaction;
use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::ops::message_body;
use super::{subscribed, MAX_PAYLOAD_BYTES, TEST_EVENT};
use crate::jobs::{Job, JobError, JobHandler};

pub struct FanOut;

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
        Box::pin(async move { fan_out(tx, job).await })
    }

    fn committed(&self, _job: &Job) {
        super::delivery::wake();
    }
}

pub async fn fan_out(tx: &Transaction<'_>, job: &Job) -> Result<(), JobError> {
    let stmt = tx
        .prepare_cached(
            "select id, events from app.webhooks \
             where tenant_id = $1 and status = 'enabled' and deleted_at is null",
        )
        .await?;
    let endpoints: Vec<Uuid> = tx
        .query(&stmt, &[&job.tenant_id])
        .await?
        .iter()
        .filter(|r| subscribed(&r.get::<_, Vec<String>>(1), &job.event_type))
        .map(|r| r.get(0))
        .collect();
    if endpoints.is_empty() {
        return Ok(());
    }
    let body = message_body(&job.event_type, job.created_at, &job.payload);
    let size = body.len();
    let refused = size > MAX_PAYLOAD_BYTES;
    let ids: Vec<Uuid> = endpoints.iter().map(|_| Uuid::now_v7()).collect();
    // A refused message keeps no body: it is never sent, and the limit is what refused it.
    let stored = if refused { String::new() } else { body };
    let status = if refused { "refused" } else { "pending" };
    let stmt = tx
        .prepare_cached(
            "insert into app.webhook_messages \
             (tenant_id, id, webhook_id, outbox_id, event_type, body, status) \
             select $1, m.id, m.webhook_id, $4, $5, $6, $7 \
             from unnest($2::uuid[], $3::uuid[]) as m (id, webhook_id) \
             on conflict (tenant_id, outbox_id, webhook_id) do nothing \
             returning id, webhook_id",
        )
        .await?;
    let inserted = tx
        .query(
            &stmt,
            &[
                &job.tenant_id,
                &ids,
                &endpoints,
                &job.id,
                &job.event_type,
                &stored,
                &status,
            ],
        )
        .await?;
    if refused {
        let stmt = tx
            .prepare_cached(
                "insert into app.webhook_deliveries \
                 (tenant_id, id, message_id, webhook_id, attempt, status, error) \
                 values ($1, $2, $3, $4, 0, 'refused', $5)",
            )
            .await?;
        let reason = format!("the payload is {size} bytes, over the limit of {MAX_PAYLOAD_BYTES}");
        for row in &inserted {
            let (message, endpoint): (Uuid, Uuid) = (row.get(0), row.get(1));
            tx.execute(
                &stmt,
                &[
                    &job.tenant_id,
                    &Uuid::now_v7(),
                    &message,
                    &endpoint,
                    &reason,
                ],
            )
            .await?;
            tracing::warn!(tenant_id = %job.tenant_id, message_id = %message, %reason,
                "webhook message refused");
        }
    }
    Ok(())
}
