//! Usage to Stripe at each period end, as Billing Meter events (`/v1/billing/meter_events`;
//! legacy usage records were removed in API version 2025-03-31 and are not used).
//!
//! [`run_once`] (the supervised loop passes the wall clock, tests a `now` of their choice)
//! finds, per tenant with a Stripe customer, the last period that ended at least [`SETTLE`]
//! before `now` (rollups are complete within five minutes of a period's end), and if it was
//! not reported yet, writes a `stripe.meter_report` job and moves `metered_through` to the
//! period's end in the same transaction: each period is enqueued once. The job ([`report`])
//! sends one event per metric that the plan meters, with the value from the usage rollups and
//! an `identifier` of tenant, metric and period, which Stripe deduplicates, and an
//! `Idempotency-Key` from the identifier, so a job run twice reports once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::dashboard::parse_metered;
use super::stripe::Stripe;
use super::usage_api::{period_containing, Period};
use super::BillingError;
use crate::db::{begin_tenant_tx, PgPool};
use crate::jobs::Job;
use crate::state::AppState;

/// How long after a period's end its usage is reported: the rollups' completion bound.
pub const SETTLE: chrono::Duration = chrono::Duration::minutes(10);
pub const CHECK_INTERVAL: Duration = Duration::from_secs(300);

/// Enqueues the report of every finished, unreported period. Returns the tenants enqueued.
pub async fn run_once(pool: &PgPool, now: DateTime<Utc>) -> Result<Vec<Uuid>, BillingError> {
    let tenants: Vec<Uuid> = {
        let conn = pool.get().await?;
        conn.query("select tenant_id from app.billing_customers()", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let mut enqueued = Vec::new();
    for tenant in tenants {
        let mut conn = pool.get().await?;
        let tx = begin_tenant_tx(&mut conn, tenant).await?;
        if enqueue_due(&tx, tenant, now).await? {
            enqueued.push(tenant);
        }
        tx.commit().await?;
    }
    Ok(enqueued)
}

async fn enqueue_due(
    tx: &Transaction<'_>,
    tenant: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, BillingError> {
    let row = tx
        .query_opt(
            "select metered_through from app.billing_accounts where tenant_id = $1 for update",
            &[&tenant],
        )
        .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    let through: Option<DateTime<Utc>> = row.get(0);
    let anchor = super::usage_api::period_anchor(&**tx, tenant)
        .await
        .map_err(|err| BillingError::Usage(Box::new(err)))?;
    // Every finished period from the first unreported one (a server down over a period end
    // catches up), at most a year of them per pass.
    let mut next = period_containing(anchor, through.unwrap_or(anchor).max(anchor));
    let mut reported = None;
    for _ in 0..12 {
        if next.end > now - SETTLE {
            break;
        }
        crate::jobs::enqueue_with(
            tx,
            tenant,
            super::outbound::METER_REPORT,
            &json!({"period_start": next.start, "period_end": next.end}),
        )
        .await?;
        reported = Some(next.end);
        next = period_containing(anchor, next.end);
    }
    let Some(through) = reported else {
        return Ok(false);
    };
    tx.execute(
        "update app.billing_accounts set metered_through = $2, updated_at = now() where tenant_id = $1",
        &[&tenant, &through],
    )
    .await?;
    Ok(true)
}

/// The `stripe.meter_report` job: one meter event per metered metric of the tenant's plan.
pub async fn report(stripe: &Stripe, tx: &Transaction<'_>, job: &Job) -> Result<(), BillingError> {
    let tenant = job.tenant_id;
    let period: Period = match (
        job.payload
            .get("period_start")
            .and_then(|v| serde_json::from_value(v.clone()).ok()),
        job.payload
            .get("period_end")
            .and_then(|v| serde_json::from_value(v.clone()).ok()),
    ) {
        (Some(start), Some(end)) => Period { start, end },
        _ => {
            tracing::error!(payload = %job.payload, "meter report without a period: dropped");
            return Ok(());
        }
    };
    let row = tx
        .query_one(
            "select a.stripe_customer_id, p.metered from app.billing_accounts a \
             join app.tenants t on t.id = a.tenant_id \
             left join app.plan_prices p on p.plan = t.plan where a.tenant_id = $1",
            &[&tenant],
        )
        .await?;
    let Some(customer): Option<String> = row.get(0) else {
        return Ok(());
    };
    let metered = match row.get::<_, Option<serde_json::Value>>(1) {
        Some(value) => parse_metered(&value)?,
        None => return Ok(()),
    };
    let totals = super::usage_api::period_totals(&**tx, tenant, &period, Utc::now())
        .await
        .map_err(|err| BillingError::Usage(Box::new(err)))?;
    // Within the period: Stripe attributes an event to the period holding its timestamp.
    let at = period.end - chrono::Duration::seconds(1);
    for (metric, price) in &metered {
        let value = totals.get(metric).copied().unwrap_or(0);
        let identifier = format!("{tenant}-{metric}-{}", period.start.timestamp());
        stripe
            .meter_event(&price.event_name, &customer, value, &identifier, at)
            .await?;
    }
    Ok(())
}

/// The supervised loop (`crate::supervise`).
pub async fn run(state: actix_web::web::Data<AppState>, stop: CancellationToken) {
    loop {
        if let Err(err) = run_once(&state.pools.app, Utc::now()).await {
            tracing::warn!(error = %crate::error::error_chain(&err), "billing meter check failed; will retry");
        }
        if !crate::supervise::pause(&stop, CHECK_INTERVAL).await {
            return;
        }
    }
}
