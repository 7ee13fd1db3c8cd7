//! Stripe billing (issue 13 items 4-6; docs/billing.md).
//!
//! - [`stripe`]: the async-stripe client, built from `STRIPE_SECRET_KEY` / `STRIPE_API_BASE`.
//! - [`outbound`]: durable outbox jobs that create the customer and subscription at
//!   provisioning, move the subscription item on a plan change, and report each period's usage
//!   as Billing Meter events ([`meter`] decides when).
//! - [`webhook`]: `POST /webhooks/stripe`, signature checked, each event applied once, in
//!   Stripe's own time order; it drives the billing state that [`dunning`] turns into a
//!   suspension after the grace period.
//! - [`dashboard`]: `GET /billing` and `GET /billing/invoices`.

pub mod dashboard;
pub mod dunning;
pub mod meter;
pub mod outbound;
pub mod signature;
pub mod stripe;
pub mod usage_api;
pub mod webhook;

use actix_web::web;
use thiserror::Error;

use crate::auth::AccessError;
use crate::config::Config;
use crate::db::DbError;
use crate::error::FieldError;
use crate::page::PageError;
use crate::state::AppState;
use crate::supervise::Supervisor;

/// The outbox handler of the `stripe.*` jobs; without a usable key the sync is off and its jobs
/// complete as skipped.
pub fn job_handler(config: &Config) -> outbound::StripeSync {
    let stripe = stripe::Stripe::from_settings(&config.billing).unwrap_or_else(|err| {
        tracing::error!(%err, "the Stripe client could not be built: the Stripe sync is off");
        None
    });
    outbound::StripeSync::new(stripe)
}

/// The billing loops under the server's supervisor: the grace check and the meter report.
pub fn supervise(background: &Supervisor, state: &web::Data<AppState>) {
    let billing = state.clone();
    background.spawn("billing_grace", move |stop| {
        let state = billing.clone();
        async move {
            dunning::run(state, stop).await;
            Ok(())
        }
    });
    let billing = state.clone();
    background.spawn("billing_meter", move |stop| {
        let state = billing.clone();
        async move {
            meter::run(state, stop).await;
            Ok(())
        }
    });
}

#[derive(Debug, Error)]
pub enum BillingError {
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Db(#[from] DbError),
    /// `Stripe-Signature` missing, malformed, stale or matching no secret.
    #[error("the Stripe-Signature header is not valid: {0}")]
    Signature(#[from] signature::SignatureError),
    /// A signed body that is not a Stripe event.
    #[error("the body is not a Stripe event")]
    Payload(#[source] serde_json::Error),
    /// No `STRIPE_WEBHOOK_SECRET`: no event can be verified, so none is accepted.
    #[error("Stripe webhooks are not configured (STRIPE_WEBHOOK_SECRET)")]
    WebhooksOff,
    /// Reading the usage rollups (`crate::usage`).
    #[error("the usage of the period could not be read")]
    Usage(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("a Stripe request failed")]
    Stripe(#[from] ::stripe::StripeError),
    /// A stored value this version cannot read: an error, never read back as some default.
    #[error("{column} holds a value this version cannot read: {reason}")]
    CorruptRow {
        column: &'static str,
        reason: String,
    },
}

impl From<tokio_postgres::Error> for BillingError {
    fn from(err: tokio_postgres::Error) -> Self {
        BillingError::Db(err.into())
    }
}

impl From<deadpool::managed::PoolError<tokio_postgres::Error>> for BillingError {
    fn from(err: deadpool::managed::PoolError<tokio_postgres::Error>) -> Self {
        BillingError::Db(err.into())
    }
}

impl From<PageError> for BillingError {
    fn from(PageError(errors): PageError) -> Self {
        BillingError::Validation(errors)
    }
}
