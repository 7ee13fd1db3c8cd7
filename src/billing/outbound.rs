//! Outbound Stripe sync as durable outbox jobs (`crate::jobs`): provisioning and plan changes
//! write a `stripe.*` row in their own transaction and return; the outbox worker calls Stripe
//! later, retrying with backoff until it answers. So provisioning never waits on Stripe nor
//! fails because of it, and nothing is lost if the process dies in between.
//!
//! Each call carries an `Idempotency-Key` derived from the tenant and the operation (and, for
//! a plan change, the job), so a job run twice (at-least-once delivery, a timeout after Stripe
//! acted) gets Stripe's first answer back: the customer and the subscription exist once.
//! What Stripe returned is written in the job's transaction; if that transaction is lost, the
//! retry replays the same keys.
//!
//! Without `STRIPE_SECRET_KEY` provisioning writes no job (the billing account only), and a job
//! that is run anyway (a plan change, or one written before the key was removed) completes as
//! skipped, logged: nothing piles up in the outbox.

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Transaction};
use futures_util::future::BoxFuture;
use serde_json::json;
use uuid::Uuid;

use super::stripe::{Stripe, SubscriptionInfo};
use super::BillingError;
use crate::db::DbError;
use crate::jobs::{Job, JobError, JobHandler};

/// Create the customer, then the subscription for the plan's price.
pub const CUSTOMER_SYNC: &str = "stripe.customer_sync";
/// Move the subscription item to the new plan's price.
pub const PLAN_CHANGE: &str = "stripe.plan_change";
/// Report one finished period's usage as Billing Meter events.
pub const METER_REPORT: &str = "stripe.meter_report";

/// In the provisioning transaction (bound to the new tenant): the tenant's billing account
/// and, when the Stripe sync is on, the job that creates its Stripe customer and subscription.
pub async fn on_provisioned(
    client: &impl GenericClient,
    tenant: Uuid,
    sync: bool,
) -> Result<(), DbError> {
    client
        .execute(
            "insert into app.billing_accounts (tenant_id) values ($1) on conflict do nothing",
            &[&tenant],
        )
        .await?;
    if sync {
        crate::jobs::enqueue_with(client, tenant, CUSTOMER_SYNC, &json!({})).await?;
    }
    Ok(())
}

/// In the operator's plan-change transaction.
pub async fn on_plan_changed(
    client: &impl GenericClient,
    tenant: Uuid,
    plan: &str,
) -> Result<(), DbError> {
    crate::jobs::enqueue_with(client, tenant, PLAN_CHANGE, &json!({ "plan": plan })).await?;
    Ok(())
}

/// The outbox handler of the `stripe.*` jobs.
pub struct StripeSync {
    stripe: Option<Stripe>,
}

impl StripeSync {
    pub fn new(stripe: Option<Stripe>) -> Self {
        StripeSync { stripe }
    }
}

fn failed(err: impl Into<BillingError>) -> JobError {
    let err = err.into();
    JobError::Handler {
        handler: "stripe",
        reason: crate::error::error_chain(&err),
    }
}

impl JobHandler for StripeSync {
    fn name(&self) -> &'static str {
        "stripe"
    }

    fn handles(&self, event_type: &str) -> bool {
        matches!(event_type, CUSTOMER_SYNC | PLAN_CHANGE | METER_REPORT)
    }

    fn handle<'a>(
        &'a self,
        tx: &'a Transaction<'a>,
        job: &'a Job,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let Some(stripe) = &self.stripe else {
                tracing::info!(event_type = %job.event_type, "STRIPE_SECRET_KEY is not set: Stripe sync skipped");
                return Ok(());
            };
            let result = match job.event_type.as_str() {
                CUSTOMER_SYNC => sync_customer(stripe, tx, job.tenant_id).await.map(|_| ()),
                PLAN_CHANGE => change_plan(stripe, tx, job).await,
                METER_REPORT => super::meter::report(stripe, tx, job).await,
                _ => Ok(()),
            };
            result.map_err(failed)
        })
    }
}

/// The tenant's slug, plan and the plan's Stripe price, if it has one.
async fn plan_of(
    tx: &Transaction<'_>,
    tenant: Uuid,
) -> Result<(String, String, Option<String>), BillingError> {
    let row = tx
        .query_one(
            "select t.slug, t.plan, p.stripe_price_id from app.tenants t \
             left join app.plan_prices p on p.plan = t.plan where t.id = $1",
            &[&tenant],
        )
        .await?;
    Ok((row.get(0), row.get(1), row.get(2)))
}

/// The customer (created if missing) and the subscription (created if missing and the plan
/// has a price). Returns the customer id.
pub async fn sync_customer(
    stripe: &Stripe,
    tx: &Transaction<'_>,
    tenant: Uuid,
) -> Result<String, BillingError> {
    tx.execute(
        "insert into app.billing_accounts (tenant_id) values ($1) on conflict do nothing",
        &[&tenant],
    )
    .await?;
    let stored: Option<String> = tx
        .query_one(
            "select stripe_customer_id from app.billing_accounts where tenant_id = $1 for update",
            &[&tenant],
        )
        .await?
        .get(0);
    let (slug, plan, price) = plan_of(tx, tenant).await?;
    let customer = match stored {
        Some(customer) => customer,
        None => {
            let customer = stripe
                .create_customer(tenant, &slug, format!("tenantry-{tenant}-customer"))
                .await?;
            tx.execute(
                "update app.billing_accounts set stripe_customer_id = $2, updated_at = now() \
                 where tenant_id = $1",
                &[&tenant, &customer],
            )
            .await?;
            customer
        }
    };
    let has_subscription = tx
        .query_opt(
            "select 1 from app.subscriptions where tenant_id = $1 and stripe_subscription_id is not null",
            &[&tenant],
        )
        .await?
        .is_some();
    if let (false, Some(price)) = (has_subscription, price) {
        let info = stripe
            .create_subscription(
                tenant,
                &customer,
                &price,
                format!("tenantry-{tenant}-subscription-{plan}"),
            )
            .await?;
        store_subscription(tx, tenant, &plan, &info).await?;
    }
    Ok(customer)
}

/// Writes what Stripe answered for a new subscription onto the tenant's subscription row
/// (`app.subscriptions`, V8), created if the tenant has none yet.
async fn store_subscription(
    tx: &Transaction<'_>,
    tenant: Uuid,
    plan: &str,
    info: &SubscriptionInfo,
) -> Result<(), BillingError> {
    let updated = tx
        .execute(
            "update app.subscriptions set stripe_subscription_id = $2, stripe_item_id = $3, \
             plan = $4, status = $5, current_period_start = coalesce($6, current_period_start), \
             current_period_end = coalesce($7, current_period_end), updated_at = now() \
             where tenant_id = $1",
            &[
                &tenant,
                &info.id,
                &info.item_id,
                &plan,
                &info.status,
                &info.period_start,
                &info.period_end,
            ],
        )
        .await?;
    if updated == 0 {
        let start: DateTime<Utc> = info.period_start.unwrap_or(info.created);
        let end: Option<DateTime<Utc>> = info.period_end;
        tx.execute(
            "insert into app.subscriptions (tenant_id, stripe_subscription_id, stripe_item_id, \
             plan, status, current_period_start, current_period_end) \
             values ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &tenant,
                &info.id,
                &info.item_id,
                &plan,
                &info.status,
                &start,
                &end,
            ],
        )
        .await?;
    }
    Ok(())
}

async fn change_plan(stripe: &Stripe, tx: &Transaction<'_>, job: &Job) -> Result<(), BillingError> {
    let tenant = job.tenant_id;
    let (_, plan, price) = plan_of(tx, tenant).await?;
    let Some(price) = price else {
        tracing::info!(%plan, "the new plan has no Stripe price: the subscription is left as it is");
        return Ok(());
    };
    let item: Option<String> = tx
        .query_opt(
            "select stripe_item_id from app.subscriptions \
             where tenant_id = $1 and stripe_subscription_id is not null for update",
            &[&tenant],
        )
        .await?
        .and_then(|row| row.get(0));
    match item {
        Some(item) => {
            stripe
                .update_item_price(&item, &price, format!("tenantry-{tenant}-plan-{}", job.id))
                .await?;
            tx.execute(
                "update app.subscriptions set plan = $2, updated_at = now() where tenant_id = $1",
                &[&tenant, &plan],
            )
            .await?;
        }
        // No subscription yet (the plan had no price, or the first sync is still to come).
        None => {
            sync_customer(stripe, tx, tenant).await?;
        }
    }
    Ok(())
}
