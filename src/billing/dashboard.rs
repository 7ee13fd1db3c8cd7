//! `GET /billing` and `GET /billing/invoices`, for tenant admins.
//!
//! The projection (docs/billing.md): for each metric, `projected = used * period_length /
//! elapsed` (linear in time; `elapsed` at least one minute, so the first instants of a period
//! do not multiply a single call into millions); the overage of a metric with a metered price
//! is `max(0, projected - limit)`, billed per started block of `unit_size` at
//! `unit_amount_cents`; a metric whose limit is unlimited has no overage. The projected cost is
//! the plan's price plus every overage, in the plan's currency, in its smallest unit (cents),
//! as Stripe writes amounts.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::usage_api::Period;
use super::BillingError;
use crate::actors::TenantOp;
use crate::auth::Caller;
use crate::db::TenantTx;
use crate::page::{CursorKey, Keyset, Page, TimeKey};
use crate::tenant_config::snapshot::Limit;

#[derive(Debug, Serialize, ToSchema)]
pub struct MetricUsage {
    pub used: i64,
    /// Null: unlimited.
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Money {
    /// In the currency's smallest unit (cents), as Stripe writes amounts.
    pub amount: i64,
    /// ISO 4217, lowercase.
    pub currency: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BillingOverview {
    pub plan: String,
    /// The current billing period, half-open: `[period_start, period_end)`.
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub usage: BTreeMap<String, MetricUsage>,
    pub projected_cost: Money,
    /// `active`, `past_due`, `suspended` or `canceled`.
    pub billing_state: String,
}

/// One metered price of a plan (`app.plan_prices.metered`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct MeteredPrice {
    pub event_name: String,
    pub unit_amount_cents: i64,
    pub unit_size: i64,
}

pub fn parse_metered(value: &Value) -> Result<BTreeMap<String, MeteredPrice>, BillingError> {
    let prices: BTreeMap<String, MeteredPrice> =
        serde_json::from_value(value.clone()).map_err(|err| BillingError::CorruptRow {
            column: "plan_prices.metered",
            reason: err.to_string(),
        })?;
    if prices
        .values()
        .any(|p| p.unit_size < 1 || p.unit_amount_cents < 0 || p.event_name.is_empty())
    {
        return Err(BillingError::CorruptRow {
            column: "plan_prices.metered",
            reason: "unit_size must be at least 1, unit_amount_cents at least 0".into(),
        });
    }
    Ok(prices)
}

/// The plan limit a metric is held to in a period, if any: `api_calls_per_month` for
/// `api_calls`, `max_users` for `active_users`, the plan's `usage_quotas` for the others.
pub fn limit_of(caller: &Caller, metric: &str) -> Option<i64> {
    let limits = &caller.config.plan.limits;
    match metric {
        crate::usage::API_CALLS => limits.get(Limit::ApiCallsPerMonth),
        crate::usage::ACTIVE_USERS => limits.get(Limit::MaxUsers),
        other => limits.usage_quotas.get(other).copied(),
    }
}

/// `used` so far, extrapolated linearly to the whole period.
pub fn project(used: i64, period: &Period, now: DateTime<Utc>) -> i64 {
    let length = (period.end - period.start).num_seconds().max(1);
    let elapsed = (now - period.start).num_seconds().clamp(60, length);
    let projected = i128::from(used) * i128::from(length) / i128::from(elapsed);
    i64::try_from(projected).unwrap_or(i64::MAX)
}

/// What `projected` units cost over `limit` at `price`.
pub fn overage_cents(projected: i64, limit: Option<i64>, price: &MeteredPrice) -> i64 {
    let Some(limit) = limit else {
        return 0;
    };
    let over = projected.saturating_sub(limit).max(0);
    let blocks = over.saturating_add(price.unit_size - 1) / price.unit_size;
    blocks.saturating_mul(price.unit_amount_cents)
}

/// The tenant's period holding `now`, as the usage area computes periods (anchored on the
/// subscription's start, else the tenant's creation).
pub async fn current_period<C: tokio_postgres::GenericClient + Sync>(
    client: &C,
    tenant: Uuid,
    now: DateTime<Utc>,
) -> Result<Period, BillingError> {
    let anchor = super::usage_api::period_anchor(client, tenant)
        .await
        .map_err(|err| BillingError::Usage(Box::new(err)))?;
    Ok(super::usage_api::period_containing(anchor, now))
}

/// `GET /billing`.
pub struct Overview {
    pub now: DateTime<Utc>,
}

impl TenantOp for Overview {
    type Output = BillingOverview;
    type Error = BillingError;
    const OPENS_TENANT_SCHEMA: bool = false;

    fn run<'a>(
        self,
        tx: &'a TenantTx<'a>,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<BillingOverview, BillingError>> {
        Box::pin(async move {
            caller.admin()?;
            let tenant = caller.tenant_id;
            let period = current_period(tx.client(), tenant, self.now).await?;
            let row = tx
                .query_opt(
                    "select p.metered, a.state from app.tenants t \
                     left join app.plan_prices p on p.plan = t.plan \
                     left join app.billing_accounts a on a.tenant_id = t.id where t.id = $1",
                    &[&tenant],
                )
                .await?;
            let (metered, state) = match &row {
                Some(row) => (
                    row.get::<_, Option<Value>>(0),
                    row.get::<_, Option<String>>(1),
                ),
                None => (None, None),
            };
            let metered = match metered {
                Some(value) => parse_metered(&value)?,
                None => BTreeMap::new(),
            };
            let totals = super::usage_api::period_totals(tx.client(), tenant, &period, self.now)
                .await
                .map_err(|err| BillingError::Usage(Box::new(err)))?;
            let plan = &caller.config.plan;
            let mut cost = plan.price_cents;
            let mut usage = BTreeMap::new();
            let metrics = totals
                .keys()
                .cloned()
                .chain(metered.keys().cloned())
                .chain(["api_calls".to_string()]);
            for metric in metrics {
                let used = totals.get(&metric).copied().unwrap_or(0);
                let limit = limit_of(caller, &metric);
                if let Some(price) = metered.get(&metric) {
                    cost = cost.saturating_add(overage_cents(
                        project(used, &period, self.now),
                        limit,
                        price,
                    ));
                }
                usage.insert(metric, MetricUsage { used, limit });
            }
            Ok(BillingOverview {
                plan: plan.name.clone(),
                period_start: period.start,
                period_end: period.end,
                usage,
                projected_cost: Money {
                    amount: cost,
                    currency: plan.currency.clone(),
                },
                billing_state: state.unwrap_or_else(|| "active".into()),
            })
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Invoice {
    pub id: Uuid,
    pub stripe_invoice_id: String,
    pub status: Option<String>,
    pub currency: String,
    pub amount_due: i64,
    pub amount_paid: i64,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
    pub hosted_invoice_url: Option<String>,
    /// When Stripe created the invoice.
    pub created: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// The invoice object of Stripe's latest event about it, as Stripe sent it.
    #[schema(value_type = Object)]
    pub object: Value,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InvoiceQuery {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

static INVOICES: Keyset<TimeKey> = Keyset::descending("invoices", &["created_at", "id"]);

/// `GET /billing/invoices`: newest first.
pub struct ListInvoices(pub InvoiceQuery, pub CursorKey);

impl TenantOp for ListInvoices {
    type Output = Page<Invoice>;
    type Error = BillingError;
    const OPENS_TENANT_SCHEMA: bool = false;

    fn run<'a>(
        self,
        tx: &'a TenantTx<'a>,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<Page<Invoice>, BillingError>> {
        Box::pin(async move {
            caller.admin()?;
            let ListInvoices(q, cursors) = self;
            let page = INVOICES.parse(&cursors, q.limit, q.cursor.as_deref())?;
            let items = page
                .fetch(
                    tx,
                    "select id, stripe_invoice_id, status, currency, amount_due, amount_paid, \
                     period_start, period_end, hosted_invoice_url, stripe_created, created_at, \
                     object from app.invoices where tenant_id = $1 and deleted_at is null",
                    &[&caller.tenant_id],
                    |r| {
                        Ok::<_, tokio_postgres::Error>(Invoice {
                            id: r.get(0),
                            stripe_invoice_id: r.get(1),
                            status: r.get(2),
                            currency: r.get(3),
                            amount_due: r.get(4),
                            amount_paid: r.get(5),
                            period_start: r.get(6),
                            period_end: r.get(7),
                            hosted_invoice_url: r.get(8),
                            created: r.get(9),
                            created_at: r.get(10),
                            object: r.get(11),
                        })
                    },
                    |i| TimeKey {
                        at: i.created_at,
                        id: i.id,
                    },
                )
                .await?;
            Ok(items)
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn period() -> Period {
        Period {
            start: Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap(),
            end: Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap(),
        }
    }

    #[test]
    fn projection_is_linear_in_time() {
        let p = period();
        let mid = Utc.with_ymd_and_hms(2026, 2, 15, 0, 0, 0).unwrap();
        assert_eq!(project(1_000, &p, mid), 2_000);
        assert_eq!(project(1_000, &p, p.end), 1_000);
        // The first minute counts as a minute, not as an instant.
        assert_eq!(project(1, &p, p.start), 28 * 24 * 60);
    }

    #[test]
    fn overage_is_billed_per_started_block() {
        let price = MeteredPrice {
            event_name: "api_calls".into(),
            unit_amount_cents: 5,
            unit_size: 1000,
        };
        assert_eq!(overage_cents(1_000, Some(1_000), &price), 0);
        assert_eq!(overage_cents(1_001, Some(1_000), &price), 5);
        assert_eq!(overage_cents(3_000, Some(1_000), &price), 10);
        assert_eq!(overage_cents(1_000_000, None, &price), 0);
    }

    #[test]
    fn metered_prices_are_checked() {
        let ok = serde_json::json!({"api_calls": {"event_name": "e", "unit_amount_cents": 1, "unit_size": 10}});
        assert_eq!(parse_metered(&ok).unwrap().len(), 1);
        let bad = serde_json::json!({"api_calls": {"event_name": "e", "unit_amount_cents": 1, "unit_size": 0}});
        assert!(parse_metered(&bad).is_err());
    }
}
