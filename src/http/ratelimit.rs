//! Rate limits at the HTTP edge (`crate::ratelimit` decides): the tenant limit in the tenant
//! resolver, the login throttle in the login handler, the per-address guard a public route opts
//! into, and the IETF `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` headers on
//! every response a limit counted, refused ones included.
//!
//! A public route opts in with one line:
//! `#[get("/branding", wrap = "PerClientAddress::new(\"branding\")")]`; the policy name keys
//! its own counter, so endpoints do not eat each other's budget.

use std::future::{ready, Ready};
use std::net::IpAddr;
use std::rc::Rc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{web, HttpMessage, HttpRequest};
use futures_util::future::LocalBoxFuture;
use uuid::Uuid;

use super::problem::Problem;
use crate::config::RateLimitSettings;
use crate::ratelimit::{Quota, RateLimitError};
use crate::state::AppState;
use crate::tenancy::resolve::ResolvedTenant;
use crate::tenant_config::snapshot::{Limit, TenantSnapshot};

pub const LIMIT_HEADER: &str = "ratelimit-limit";
pub const REMAINING_HEADER: &str = "ratelimit-remaining";
pub const RESET_HEADER: &str = "ratelimit-reset";

/// The quota a response reports, kept in the request's extensions until the response leaves.
#[derive(Clone, Copy)]
struct Counted(Quota);

/// The tenant's per-minute limit. The one place that knows where it comes from: the plan in
/// the tenant's config snapshot (`rate_limit_per_minute`); missing or null: no limit.
fn tenant_limit(config: &TenantSnapshot) -> Option<u32> {
    config
        .plan
        .limit(Limit::RateLimitPerMinute)
        .map(|n| u32::try_from(n.max(0)).unwrap_or(u32::MAX))
}

/// Admits one request of `tenant` within its plan's limit, from the limiter beside its actor.
pub async fn admit_tenant(
    req: &HttpRequest,
    state: &AppState,
    tenant: &ResolvedTenant,
    config: &TenantSnapshot,
) -> Result<(), Problem> {
    if !state.ratelimit.settings().tenants {
        return Ok(());
    }
    let Some(per_minute) = tenant_limit(config) else {
        return Ok(());
    };
    let entry = state.actors.actor(tenant.id).await?;
    let outcome = state
        .ratelimit
        .check_tenant(&entry.limiter, tenant.id, per_minute)
        .await;
    counted(req, outcome).map(|_| ())
}

/// Counts one login attempt against the tenant and the client address: before the password is
/// looked at, so refused guesses cost no hashing either.
pub async fn login_attempt(
    req: &HttpRequest,
    state: &AppState,
    tenant: Uuid,
) -> Result<(), Problem> {
    let client = client_address(req, state.ratelimit.settings());
    let outcome = state.ratelimit.login_attempt(tenant, client).await;
    counted(req, outcome).map(|_| ())
}

pub fn client_address(req: &HttpRequest, settings: &RateLimitSettings) -> Option<IpAddr> {
    let peer = req.peer_addr().map(|addr| addr.ip());
    if settings.trusted_proxies.is_empty() {
        return crate::ratelimit::client::client_address(peer, std::iter::empty(), &[]);
    }
    let forwarded: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .collect();
    crate::ratelimit::client::client_address(peer, forwarded.into_iter(), &settings.trusted_proxies)
}

/// Remembers the outcome's quota for the response headers; a refusal becomes its problem.
fn counted(req: &HttpRequest, outcome: Result<Quota, RateLimitError>) -> Result<Quota, Problem> {
    match outcome {
        Ok(quota) => {
            record(req, quota);
            Ok(quota)
        }
        Err(err) => {
            if let Some(quota) = err.quota() {
                record(req, quota);
            }
            Err(err.into())
        }
    }
}

/// Of several limits counting one request (a public endpoint's and the tenant's), the headers
/// report the one with the least remaining.
fn record(req: &HttpRequest, quota: Quota) {
    let mut extensions = req.extensions_mut();
    let keep = extensions
        .get::<Counted>()
        .is_some_and(|c| c.0.remaining <= quota.remaining);
    if !keep {
        extensions.insert(Counted(quota));
    }
}

/// Adds the `RateLimit-*` headers to a response whose request a limit counted (the outermost
/// middleware calls it for every response).
pub fn write_headers<B>(response: &mut ServiceResponse<B>) {
    let Some(Counted(quota)) = response.request().extensions().get::<Counted>().copied() else {
        return;
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (LIMIT_HEADER, quota.limit),
        (REMAINING_HEADER, quota.remaining),
        (RESET_HEADER, quota.reset_seconds()),
    ] {
        headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
    }
}

/// The per-client-address limit of a public endpoint (PUBLIC_REQUESTS_PER_MINUTE), as
/// middleware a route opts into: it answers before the body is read or credentials checked.
#[derive(Clone, Copy, Debug)]
pub struct PerClientAddress {
    policy: &'static str,
}

impl PerClientAddress {
    /// `policy` names the endpoint's counter (`login`, `tenants`, `ws`, ...).
    pub const fn new(policy: &'static str) -> Self {
        PerClientAddress { policy }
    }
}

impl<S, B> Transform<S, ServiceRequest> for PerClientAddress
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = PerClientAddressService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(PerClientAddressService {
            service: Rc::new(service),
            policy: self.policy,
        }))
    }
}

pub struct PerClientAddressService<S> {
    service: Rc<S>,
    policy: &'static str,
}

impl<S, B> Service<ServiceRequest> for PerClientAddressService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let service = self.service.clone();
        let policy = self.policy;
        Box::pin(async move {
            if let Some(state) = req.app_data::<web::Data<AppState>>().cloned() {
                let client = client_address(req.request(), state.ratelimit.settings());
                let outcome = state.ratelimit.public_request(policy, client).await;
                if let Err(problem) = counted(req.request(), outcome) {
                    return Ok(req.error_response(problem).map_into_right_body());
                }
            }
            service
                .call(req)
                .await
                .map(ServiceResponse::map_into_left_body)
        })
    }
}
