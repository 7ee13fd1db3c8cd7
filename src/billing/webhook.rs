//! Inbound Stripe events (`POST /webhooks/stripe`).
//!
//! The tenant of an event is the one its Stripe customer belongs to (`app.billing_tenant_of`),
//! never anything the request names. The event is applied in one transaction bound to that
//! tenant, which first inserts its id into `app.stripe_events`: a second delivery of the same
//! event (a retry storm, or another instance receiving it at the same time) waits on that row
//! and then finds it, and changes nothing. Order: every state carries the Stripe `created`
//! time of the event that set it, and an event older than that is recorded but not applied.
//!
//! The billing state: `active` -> `past_due` (a failed payment; `past_due_since` is the
//! failure's time) -> `suspended` after `BILLING_GRACE_DAYS` ([`super::dunning`]) -> `active`
//! when an invoice is paid. Every change of state is audited and written to the outbox as a
//! `billing.*` event in the same transaction.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::stripe::timestamp;
use super::BillingError;
use crate::audit::{self, AuditAction};
use crate::db::{begin_tenant_tx, PgPool};

/// The members of a Stripe event that billing reads; the object itself stays JSON.
#[derive(Debug, Deserialize)]
pub struct StripeEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub created: i64,
    pub data: EventData,
}

#[derive(Debug, Deserialize)]
pub struct EventData {
    pub object: Value,
}

pub const HANDLED: &[&str] = &[
    "invoice.paid",
    "invoice.payment_failed",
    "customer.subscription.updated",
    "customer.subscription.deleted",
];

/// What became of an event (the answer's `outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Older than the state it would change: recorded, not applied.
    Stale,
    /// This event id was processed before.
    Duplicate,
    /// A type billing does not act on.
    Ignored,
    /// No tenant has this customer.
    UnknownCustomer,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Stale => "stale",
            Outcome::Duplicate => "duplicate",
            Outcome::Ignored => "ignored",
            Outcome::UnknownCustomer => "unknown_customer",
        }
    }
}

/// The result of [`process`]: the tenant whose suspension changed must have its config
/// snapshot reloaded by the caller.
#[derive(Debug)]
pub struct Processed {
    pub outcome: Outcome,
    pub tenant: Option<Uuid>,
    pub suspension_changed: bool,
}

pub fn parse(body: &[u8]) -> Result<StripeEvent, BillingError> {
    serde_json::from_slice(body).map_err(BillingError::Payload)
}

/// An id member that may be expanded into its object.
fn id_of(value: Option<&Value>) -> Option<&str> {
    match value? {
        Value::String(id) => Some(id),
        Value::Object(object) => object.get("id").and_then(Value::as_str),
        _ => None,
    }
}

fn at(object: &Value, key: &str) -> Option<DateTime<Utc>> {
    object.get(key).and_then(Value::as_i64).map(timestamp)
}

/// The billing account as locked for an event.
struct Account {
    state: String,
    state_at: DateTime<Utc>,
    suspended_by_billing: bool,
}

pub async fn process(pool: &PgPool, event: &StripeEvent) -> Result<Processed, BillingError> {
    let ignored = |outcome| Processed {
        outcome,
        tenant: None,
        suspension_changed: false,
    };
    if !HANDLED.contains(&event.kind.as_str()) {
        return Ok(ignored(Outcome::Ignored));
    }
    let Some(customer) = id_of(event.data.object.get("customer")) else {
        return Ok(ignored(Outcome::UnknownCustomer));
    };
    let mut conn = pool.get().await?;
    // No tenant context yet: the function is the only way from a customer to its tenant.
    let tenant: Option<Uuid> = conn
        .query_one("select app.billing_tenant_of($1)", &[&customer])
        .await?
        .get(0);
    let Some(tenant) = tenant else {
        return Ok(ignored(Outcome::UnknownCustomer));
    };
    let tx = begin_tenant_tx(&mut conn, tenant).await?;
    let created = timestamp(event.created);
    // The claim of this event id. A concurrent delivery blocks here until ours commits, then
    // inserts nothing.
    let fresh = tx
        .query_opt(
            "insert into app.stripe_events (tenant_id, event_id, type, created, outcome) \
             values ($1, $2, $3, $4, 'pending') on conflict do nothing returning 1",
            &[&tenant, &event.id, &event.kind, &created],
        )
        .await?
        .is_some();
    if !fresh {
        return Ok(Processed {
            outcome: Outcome::Duplicate,
            tenant: Some(tenant),
            suspension_changed: false,
        });
    }
    let row = tx
        .query_one(
            "select state, state_at, suspended_by_billing from app.billing_accounts \
             where tenant_id = $1 for update",
            &[&tenant],
        )
        .await?;
    let account = Account {
        state: row.get(0),
        state_at: row.get(1),
        suspended_by_billing: row.get(2),
    };
    let object = &event.data.object;
    let mut change = None;
    let mut outcome = Outcome::Applied;
    match event.kind.as_str() {
        "invoice.paid" | "invoice.payment_failed" => {
            store_invoice(&tx, tenant, object, created).await?;
            let paid = event.kind == "invoice.paid";
            if created < account.state_at {
                outcome = Outcome::Stale;
            } else if paid && account.state != "active" && account.state != "canceled" {
                change = Some(("active", None));
            } else if !paid && account.state == "active" {
                change = Some(("past_due", Some(created)));
            }
        }
        kind => {
            let deleted = kind == "customer.subscription.deleted";
            let applied = store_subscription(&tx, tenant, object, created, deleted).await?;
            let status = if deleted {
                "canceled"
            } else {
                object.get("status").and_then(Value::as_str).unwrap_or("")
            };
            if !applied || created < account.state_at {
                outcome = Outcome::Stale;
            } else {
                change = match (status, account.state.as_str()) {
                    ("canceled", s) if s != "canceled" => Some(("canceled", None)),
                    ("past_due" | "unpaid", "active") => Some(("past_due", Some(created))),
                    ("active" | "trialing", "past_due" | "suspended") => Some(("active", None)),
                    _ => None,
                };
            }
        }
    }
    let mut suspension_changed = false;
    if let Some((state, past_due_since)) = change {
        suspension_changed = set_state(
            &tx,
            tenant,
            &account,
            StateChange {
                state,
                state_at: created,
                past_due_since,
                cause: json!({"stripe_event": event.id, "type": event.kind}),
            },
        )
        .await?;
    }
    if outcome == Outcome::Applied {
        // The newest word on the account, even when it changed nothing: an older event
        // delivered after it must not change the state either.
        tx.execute(
            "update app.billing_accounts set state_at = greatest(state_at, $2) where tenant_id = $1",
            &[&tenant, &created],
        )
        .await?;
    }
    tx.execute(
        "update app.stripe_events set outcome = $3 where tenant_id = $1 and event_id = $2",
        &[&tenant, &event.id, &outcome.as_str()],
    )
    .await?;
    tx.commit().await?;
    Ok(Processed {
        outcome,
        tenant: Some(tenant),
        suspension_changed,
    })
}

pub(crate) struct StateChange {
    pub state: &'static str,
    pub state_at: DateTime<Utc>,
    pub past_due_since: Option<DateTime<Utc>>,
    /// What caused it, for the audit row and the outbox event.
    pub cause: Value,
}

/// Moves the locked account to `change.state`, suspending or resuming the tenant through the
/// existing suspension when the state calls for it; audits it and writes `billing.<state>` to
/// the outbox, all in `tx`. Returns whether the tenant's suspension changed.
async fn set_state(
    tx: &Transaction<'_>,
    tenant: Uuid,
    account: &Account,
    change: StateChange,
) -> Result<bool, BillingError> {
    let (suspend, resume) = (
        change.state == "suspended",
        change.state == "active" && account.suspended_by_billing,
    );
    let mut suspension_changed = false;
    if suspend || resume {
        suspension_changed = tx
            .query_one("select app.billing_set_tenant_suspended($1)", &[&suspend])
            .await?
            .get(0);
    }
    // Only a suspension billing made is one billing may lift.
    let suspended_by_billing = if suspend {
        suspension_changed
    } else if resume {
        false
    } else {
        account.suspended_by_billing
    };
    tx.execute(
        "update app.billing_accounts set state = $2, state_at = greatest(state_at, $3), \
         past_due_since = case when $2 = 'past_due' then $4 when $2 = 'suspended' \
         then past_due_since else null end, suspended_by_billing = $5, updated_at = now() \
         where tenant_id = $1",
        &[
            &tenant,
            &change.state,
            &change.state_at,
            &change.past_due_since,
            &suspended_by_billing,
        ],
    )
    .await?;
    let mut extra = Map::new();
    extra.insert("cause".into(), change.cause.clone());
    audit::record_platform(
        tx,
        tenant,
        audit::Entry {
            action: AuditAction::Update,
            resource: "billing",
            resource_id: tenant.to_string(),
            before: Some(json!({"state": account.state})),
            after: Some(json!({"state": change.state})),
            extra: Some(extra),
        },
        None,
    )
    .await?;
    crate::jobs::enqueue_with(
        tx,
        tenant,
        &format!("billing.{}", change.state),
        &json!({
            "tenant_id": tenant,
            "state": change.state,
            "previous_state": account.state,
            "cause": change.cause,
        }),
    )
    .await?;
    Ok(suspension_changed)
}

/// The grace check's transition (see [`super::dunning`]), on the locked account.
pub(crate) async fn suspend_locked(
    tx: &Transaction<'_>,
    tenant: Uuid,
    cutoff: DateTime<Utc>,
) -> Result<bool, BillingError> {
    let row = tx
        .query_opt(
            "select state, state_at, suspended_by_billing, past_due_since \
             from app.billing_accounts where tenant_id = $1 for update",
            &[&tenant],
        )
        .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    let account = Account {
        state: row.get(0),
        state_at: row.get(1),
        suspended_by_billing: row.get(2),
    };
    let since: Option<DateTime<Utc>> = row.get(3);
    // Re-checked under the lock: a payment may have arrived since the listing.
    if account.state != "past_due" || since.is_none_or(|s| s > cutoff) {
        return Ok(false);
    }
    set_state(
        tx,
        tenant,
        &account,
        StateChange {
            state: "suspended",
            // The grace check is our clock, not Stripe's: the state keeps the time of the
            // failed payment, so that a payment made before the suspension is still newer.
            state_at: account.state_at,
            past_due_since: since,
            cause: json!({"grace_period_ended": cutoff}),
        },
    )
    .await
}

/// Upserts the invoice unless a newer event already wrote it.
async fn store_invoice(
    tx: &Transaction<'_>,
    tenant: Uuid,
    object: &Value,
    event_at: DateTime<Utc>,
) -> Result<(), BillingError> {
    let Some(stripe_id) = object.get("id").and_then(Value::as_str) else {
        return Ok(());
    };
    let int = |key: &str| object.get(key).and_then(Value::as_i64).unwrap_or(0);
    let text = |key: &str| object.get(key).and_then(Value::as_str).map(str::to_string);
    tx.execute(
        "insert into app.invoices (tenant_id, id, stripe_invoice_id, status, currency, amount_due, \
         amount_paid, period_start, period_end, hosted_invoice_url, stripe_created, event_at, object) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         on conflict (tenant_id, stripe_invoice_id) do update set status = excluded.status, \
         currency = excluded.currency, amount_due = excluded.amount_due, \
         amount_paid = excluded.amount_paid, period_start = excluded.period_start, \
         period_end = excluded.period_end, hosted_invoice_url = excluded.hosted_invoice_url, \
         event_at = excluded.event_at, object = excluded.object, updated_at = excluded.updated_at \
         where app.invoices.event_at <= excluded.event_at",
        &[
            &tenant,
            &Uuid::now_v7(),
            &stripe_id,
            &text("status"),
            &text("currency").unwrap_or_else(|| "usd".into()),
            &int("amount_due"),
            &int("amount_paid"),
            &at(object, "period_start"),
            &at(object, "period_end"),
            &text("hosted_invoice_url"),
            &at(object, "created").unwrap_or(event_at),
            &event_at,
            object,
        ],
    )
    .await?;
    Ok(())
}

/// Writes the subscription's status and period unless a newer event already did. Returns
/// whether it was applied.
async fn store_subscription(
    tx: &Transaction<'_>,
    tenant: Uuid,
    object: &Value,
    event_at: DateTime<Utc>,
    deleted: bool,
) -> Result<bool, BillingError> {
    let Some(stripe_id) = object.get("id").and_then(Value::as_str) else {
        return Ok(false);
    };
    let status = if deleted {
        "canceled".to_string()
    } else {
        object
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("active")
            .to_string()
    };
    // Since API version 2025-03-31 the period is on the items.
    let item = object.pointer("/items/data/0");
    let period = |key: &str| item.and_then(|i| at(i, key)).or_else(|| at(object, key));
    let item_id = item.and_then(|i| i.get("id")).and_then(Value::as_str);
    let updated = tx
        .execute(
            "update app.subscriptions set stripe_subscription_id = $2, status = $3, \
             current_period_start = coalesce($4, current_period_start), \
             current_period_end = coalesce($5, current_period_end), \
             stripe_item_id = coalesce($6, stripe_item_id), stripe_event_at = $7, updated_at = now() \
             where tenant_id = $1 and (stripe_subscription_id is null or stripe_subscription_id = $2) \
             and (stripe_event_at is null or stripe_event_at <= $7)",
            &[
                &tenant,
                &stripe_id,
                &status,
                &period("current_period_start"),
                &period("current_period_end"),
                &item_id,
                &event_at,
            ],
        )
        .await?;
    if updated > 0 {
        return Ok(true);
    }
    // Not written: either a newer event wrote the row (stale), or the tenant has no
    // subscription row this one could go to (the state may still follow the event).
    let newer = tx
        .query_opt(
            "select 1 from app.subscriptions where tenant_id = $1 and stripe_event_at > $2",
            &[&tenant, &event_at],
        )
        .await?
        .is_some();
    Ok(!newer)
}
