//! Billing (API.md "Usage metering and billing"): the dashboard of tenant admins and Stripe's
//! webhook. The webhook is public and names no tenant: it is not resolved through the tenant
//! extractors; the tenant comes from the event's Stripe customer.

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use crate::billing::dashboard::{BillingOverview, Invoice, InvoiceQuery, ListInvoices, Overview};
use crate::billing::{dunning, meter, signature, webhook, BillingError};
use crate::cache::Invalidation;
use crate::http::extract::Query;
use crate::http::problem::Problem;
use crate::http::tenant::TenantRequest;
use crate::page::Page;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(get_billing)
        .service(list_invoices)
        .service(stripe_webhook);
}

/// Test-only: the billing loops' passes at a `now` the test chooses (the injectable clock).
/// Registered with the other fault routes, only when `Config::fault_injection` is set.
pub fn configure_test_hooks(cfg: &mut web::ServiceConfig) {
    cfg.service(grace_check_at).service(meter_check_at);
}

#[utoipa::path(get, path = "/billing", tag = "billing", security(("bearer" = [])),
    responses((status = 200, body = BillingOverview), (status = 401), (status = 403, description = "Not a tenant admin")))]
#[get("/billing")]
pub async fn get_billing(req: TenantRequest) -> Result<HttpResponse, Problem> {
    let overview = req.execute(Overview { now: Utc::now() }).await?;
    Ok(HttpResponse::Ok().json(overview))
}

#[utoipa::path(get, path = "/billing/invoices", tag = "billing", params(InvoiceQuery), security(("bearer" = [])),
    responses((status = 200, description = "The tenant's invoices as Stripe reported them, newest first", body = Page<Invoice>),
        (status = 401), (status = 403, description = "Not a tenant admin"), (status = 422)))]
#[get("/billing/invoices")]
pub async fn list_invoices(
    req: TenantRequest,
    query: Query<InvoiceQuery>,
) -> Result<HttpResponse, Problem> {
    let page = req
        .execute(ListInvoices(
            query.into_inner(),
            req.state().cursors.clone(),
        ))
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

#[utoipa::path(post, path = "/webhooks/stripe", tag = "billing",
    params(("Stripe-Signature" = String, Header, description = "t=<unix seconds>,v1=<HMAC-SHA256 hex>[,v1=...]")),
    request_body(content = Object, description = "A Stripe event, as Stripe sends it"),
    responses((status = 200, description = "Received: `{received: true, outcome}` (applied, stale, duplicate, ignored, unknown_customer)"),
        (status = 400, description = "Signature missing, forged or older than 300 s (`invalid_signature`), or not an event"),
        (status = 503, description = "STRIPE_WEBHOOK_SECRET is not set")))]
#[post("/webhooks/stripe")]
pub async fn stripe_webhook(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, Problem> {
    let secrets = &state.config.billing.stripe_webhook_secrets;
    if secrets.is_empty() {
        return Err(BillingError::WebhooksOff.into());
    }
    let header = req
        .headers()
        .get("stripe-signature")
        .and_then(|h| h.to_str().ok());
    signature::verify(&body, header, secrets, Utc::now().timestamp())
        .map_err(BillingError::from)?;
    let event = webhook::parse(&body)?;
    let processed = webhook::process(&state.pools.app, &event).await?;
    if let (true, Some(tenant)) = (processed.suspension_changed, processed.tenant) {
        state.invalidate(Invalidation::Tenant(tenant)).await;
    }
    Ok(HttpResponse::Ok().json(json!({
        "received": true,
        "outcome": processed.outcome.as_str(),
    })))
}

#[derive(Deserialize)]
struct At {
    now: DateTime<Utc>,
}

#[post("/__faults/billing/grace")]
async fn grace_check_at(
    state: web::Data<AppState>,
    at: Query<At>,
) -> Result<HttpResponse, Problem> {
    let suspended = dunning::run_once(&state, at.now).await?;
    Ok(HttpResponse::Ok().json(json!({ "suspended": suspended })))
}

#[post("/__faults/billing/meter")]
async fn meter_check_at(
    state: web::Data<AppState>,
    at: Query<At>,
) -> Result<HttpResponse, Problem> {
    let enqueued = meter::run_once(&state.pools.app, at.now).await?;
    Ok(HttpResponse::Ok().json(json!({ "enqueued": enqueued })))
}
