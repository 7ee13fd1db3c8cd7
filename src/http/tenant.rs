//! The tenant resolver (DESIGN.md step 2) as extractors. The tenant of a request is, in this
//! order: the token's `tenant_id` claim, the `X-Tenant-ID` header (id or slug), the subdomain of
//! `Host` under BASE_DOMAIN. None: DEFAULT_TENANT when set, else 400. Unknown or deleted: 404.
//! Resolution comes before authentication; then missing or invalid credentials: 401, and a token of one tenant with
//! another tenant's header or subdomain: 403.

use std::ops::Deref;

use actix_web::{dev::Payload, web, FromRequest, HttpMessage, HttpRequest};
use futures_util::future::LocalBoxFuture;
use uuid::Uuid;

use super::extract::{bearer_token, RequestId};
use crate::actors::{ExecError, TenantOp};
use crate::auth::guard::PlanGate;
use crate::auth::{self, AuthError, Caller, Credential};
use crate::http::problem::Problem;
use crate::state::AppState;
use crate::tenancy::resolve::{self, ResolvedTenant, TenantKey};
use crate::tenant_config::snapshot::feature;

pub const TENANT_HEADER: &str = "x-tenant-id";

/// An authenticated request of a tenant user. Handlers reach the database only through
/// [`TenantRequest::execute`], which runs the operation bound to this tenant.
pub struct TenantRequest {
    pub caller: Caller,
    state: web::Data<AppState>,
}

/// A request that names a tenant but may carry no credentials (login, branding). A credential
/// that is present must still be valid.
pub struct PublicTenantRequest(pub TenantRequest);

impl Deref for TenantRequest {
    type Target = Caller;
    fn deref(&self) -> &Caller {
        &self.caller
    }
}

impl TenantRequest {
    pub async fn execute<O: TenantOp>(&self, op: O) -> Result<O::Output, ExecError<O::Error>> {
        self.state.execute(self.caller.clone(), op).await
    }

    pub fn state(&self) -> &web::Data<AppState> {
        &self.state
    }
}

impl FromRequest for TenantRequest {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let token = bearer_token(&req).map(str::to_string);
            resolve_with_token(&req, token, true)
                .await
                .map_err(Into::into)
        })
    }
}

impl FromRequest for PublicTenantRequest {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let token = bearer_token(&req).map(str::to_string);
            resolve_with_token(&req, token, false)
                .await
                .map(PublicTenantRequest)
                .map_err(Into::into)
        })
    }
}

fn named_tenant(req: &HttpRequest, base_domain: &str) -> Result<Option<TenantKey>, Problem> {
    if let Some(value) = req.headers().get(TENANT_HEADER) {
        let value = value
            .to_str()
            .map_err(|_| Problem::bad_request("X-Tenant-ID is not valid text"))?
            .trim();
        if value.is_empty() {
            return Err(Problem::bad_request("X-Tenant-ID is empty"));
        }
        return Ok(Some(TenantKey::IdOrSlug(value.to_string())));
    }
    let host = req
        .headers()
        .get(actix_web::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    Ok(resolve::subdomain_of(host, base_domain).map(TenantKey::Subdomain))
}

fn names_same_tenant(key: &TenantKey, tenant: &ResolvedTenant) -> bool {
    match key {
        TenantKey::Id(id) => *id == tenant.id,
        TenantKey::IdOrSlug(raw) => match Uuid::parse_str(raw) {
            Ok(id) => id == tenant.id,
            Err(_) => *raw == tenant.slug,
        },
        TenantKey::Subdomain(sub) => *sub == tenant.subdomain,
    }
}

/// Resolves the request's tenant, then verifies `token` (the bearer credential, or one a
/// WebSocket client passed in the query string), in the order API.md gives: a request naming
/// no tenant is 400 and one naming an unknown tenant 404, with or without credentials; only
/// then are credentials checked (401), and a token of another tenant than the header or
/// subdomain names is 403.
///
/// A token names its tenant before it is verified: the claim is read unverified and only
/// chooses which tenant to look up. Trusting it for nothing else is what makes that safe: a
/// forged claim of an unknown tenant learns the 404 that `X-Tenant-ID` already answers, and
/// one of a known tenant fails verification (401) like any other bad token.
pub async fn resolve_with_token(
    req: &HttpRequest,
    token: Option<String>,
    require_user: bool,
) -> Result<TenantRequest, Problem> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(Problem::internal)?;
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_else(|| Uuid::now_v7().to_string());
    let named = named_tenant(req, &state.config.base_domain)?;
    // A token verified before names its tenant from its verified claims; the others are read
    // unverified, and verified below.
    let remembered = token.as_deref().and_then(|t| state.jwt.verified(t));
    let claimed = match &remembered {
        Some(claims) => Some(claims.tenant_id),
        None => token.as_deref().and_then(auth::claimed_tenant),
    };
    let key = match (claimed, &named) {
        (Some(id), _) => TenantKey::Id(id),
        (None, Some(key)) => key.clone(),
        // The credential is what was meant to name the tenant, and it is unreadable: the
        // client's fault lies with the credential, not with a missing tenant.
        (None, None) if token.is_some() => {
            return Err(AuthError::InvalidToken("the token names no tenant".into()).into())
        }
        // A single-tenant deployment's clients name no tenant (docs/single-tenant.md).
        (None, None) => match &state.config.default_tenant {
            Some(slug) => TenantKey::IdOrSlug(slug.clone()),
            None => {
                return Err(Problem::bad_request(
                    "no tenant identified: send a token, an X-Tenant-ID header or use the tenant's subdomain",
                )
                .with("code_detail", "tenant_required"))
            }
        },
    };
    let tenant = state
        .resolve_tenant(&key)
        .await?
        .ok_or_else(|| Problem::not_found("tenant"))?;
    let credential: Option<Credential> = match (remembered, token.as_deref()) {
        (Some(claims), _) => Some(Credential::Jwt(claims)),
        (None, Some(token)) => Some(state.authenticate(token)?),
        (None, None) if require_user => return Err(AuthError::MissingCredentials.into()),
        (None, None) => None,
    };
    if let Some(credential) = &credential {
        // The verified claim is the one that was resolved (both read the same token); checked
        // again so that no later change to either reading can let them disagree silently.
        if credential.tenant() != tenant.id {
            return Err(AuthError::InvalidToken("the token's tenant changed".into()).into());
        }
        if let Some(key) = &named {
            if !names_same_tenant(key, &tenant) {
                return Err(Problem::forbidden(
                    "the credentials belong to another tenant than the one named by the request",
                )
                .with("code_detail", "tenant_mismatch"));
            }
        }
    }
    // The tenant's plan, status and settings, from its actor's memory.
    let config = state.actors.config(tenant.id).await?;
    let identity = match &credential {
        Some(Credential::Jwt(claims)) => {
            state.verify_live_user(&tenant, claims).await?;
            Some((claims.sub, claims.role))
        }
        Some(Credential::ApiKey { hash, .. }) => {
            PlanGate(&config).require_feature(feature::API_ACCESS)?;
            Some(state.verify_api_key(&tenant, hash).await?)
        }
        None => None,
    };
    if config.is_suspended() && !req.method().is_safe() && req.path() != "/auth/login" {
        return Err(Problem::new(
            actix_web::http::StatusCode::PAYMENT_REQUIRED,
            "tenant_suspended",
            "the tenant is suspended: reads work, writes are refused until it is resumed",
        ));
    }
    if credential.is_some() {
        // Anonymous requests (login, branding) are limited per client address instead: a
        // stranger must not be able to spend a tenant's budget.
        super::ratelimit::admit_tenant(req, &state, &tenant, &config).await?;
    }
    tracing::Span::current().record("tenant_id", tracing::field::display(tenant.id));
    let caller = Caller {
        tenant_id: tenant.id,
        tenant_slug: tenant.slug,
        config,
        user_id: identity.map(|(user, _)| user),
        role: identity.map(|(_, role)| role),
        request_id,
    };
    if credential.is_some() {
        // The plan's api_calls_per_month, before the request is handled; anonymous requests
        // are metered but, like the rate limit, cannot spend the tenant's quota.
        crate::usage::admit_api_call(&state, &caller).await?;
    }
    state.api_calls.record(tenant.id);
    Ok(TenantRequest { caller, state })
}
