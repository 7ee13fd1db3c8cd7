//! The calls made to Stripe, through async-stripe (1.0 line). Every call carries an
//! `Idempotency-Key` derived from the tenant and the operation, so a job retried after a
//! timeout or a crash gets Stripe's first answer back instead of a second customer or
//! subscription. Billing Meter events also carry an `identifier`, Stripe's own deduplication
//! of meter events.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_billing::billing_meter_event::CreateBillingMeterEvent;
use stripe_billing::subscription::{CreateSubscription, CreateSubscriptionItems};
use stripe_billing::subscription_item::UpdateSubscriptionItem;
use stripe_core::customer::CreateCustomer;
use uuid::Uuid;

use crate::config::BillingSettings;

/// Each attempt; the job's own retries (with backoff) come on top.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone)]
pub struct Stripe {
    client: Client,
}

/// What billing keeps of a subscription Stripe created.
#[derive(Clone, Debug)]
pub struct SubscriptionInfo {
    pub id: String,
    pub item_id: Option<String>,
    pub status: String,
    pub created: DateTime<Utc>,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
}

pub fn timestamp(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn key(value: String) -> Result<RequestStrategy, StripeError> {
    IdempotencyKey::new(value)
        .map(RequestStrategy::Idempotent)
        .map_err(|err| StripeError::ConfigError(err.to_string()))
}

impl Stripe {
    /// None without `STRIPE_SECRET_KEY`: the sync is off.
    pub fn from_settings(settings: &BillingSettings) -> Result<Option<Stripe>, StripeError> {
        let Some(secret) = &settings.stripe_secret_key else {
            return Ok(None);
        };
        let client = ClientBuilder::new(secret.expose_secret())
            .url(settings.stripe_api_base.clone())
            .timeout(REQUEST_TIMEOUT)
            .app_info("tenantry", Some(env!("CARGO_PKG_VERSION").into()), None)
            .build()?;
        Ok(Some(Stripe { client }))
    }

    pub async fn create_customer(
        &self,
        tenant: Uuid,
        slug: &str,
        idempotency_key: String,
    ) -> Result<String, StripeError> {
        let customer = CreateCustomer::new()
            .name(slug.to_string())
            .metadata(HashMap::from([(
                "tenant_id".to_string(),
                tenant.to_string(),
            )]))
            .customize()
            .request_strategy(key(idempotency_key)?)
            .send(&self.client)
            .await?;
        Ok(customer.id.to_string())
    }

    pub async fn create_subscription(
        &self,
        tenant: Uuid,
        customer: &str,
        price: &str,
        idempotency_key: String,
    ) -> Result<SubscriptionInfo, StripeError> {
        let item = CreateSubscriptionItems {
            price: Some(price.to_string()),
            ..Default::default()
        };
        let subscription = CreateSubscription::new()
            .customer(customer.to_string())
            .items(vec![item])
            .metadata(HashMap::from([(
                "tenant_id".to_string(),
                tenant.to_string(),
            )]))
            .customize()
            .request_strategy(key(idempotency_key)?)
            .send(&self.client)
            .await?;
        let first = subscription.items.data.first();
        Ok(SubscriptionInfo {
            id: subscription.id.to_string(),
            item_id: first.map(|i| i.id.to_string()),
            status: subscription.status.as_str().to_string(),
            created: timestamp(subscription.created),
            period_start: first.map(|i| timestamp(i.current_period_start)),
            period_end: first.map(|i| timestamp(i.current_period_end)),
        })
    }

    /// Moves the subscription item to `price` (a plan change).
    pub async fn update_item_price(
        &self,
        item: &str,
        price: &str,
        idempotency_key: String,
    ) -> Result<(), StripeError> {
        UpdateSubscriptionItem::new(item.to_string())
            .price(price.to_string())
            .customize()
            .request_strategy(key(idempotency_key)?)
            .send(&self.client)
            .await?;
        Ok(())
    }

    /// One Billing Meter event (`POST /v1/billing/meter_events`).
    pub async fn meter_event(
        &self,
        event_name: &str,
        customer: &str,
        value: i64,
        identifier: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StripeError> {
        let payload = HashMap::from([
            ("stripe_customer_id".to_string(), customer.to_string()),
            ("value".to_string(), value.to_string()),
        ]);
        CreateBillingMeterEvent::new(event_name.to_string(), payload)
            .identifier(identifier.to_string())
            .timestamp(at.timestamp())
            .customize()
            .request_strategy(key(format!("tenantry-meter-{identifier}"))?)
            .send(&self.client)
            .await?;
        Ok(())
    }
}
