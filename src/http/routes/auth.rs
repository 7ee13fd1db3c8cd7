//! Login and API keys.

use actix_web::{delete, get, post, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::api_keys::{ApiKey, CreateApiKey, CreatedApiKey, ListApiKeys, RevokeApiKey};
use crate::auth::users::{self, FindLoginUser, LoginUser};
use crate::auth::Role;
use crate::cache::Invalidation;
use crate::error::FieldError;
use crate::http::extract::Json;
use crate::http::problem::Problem;
use crate::http::ratelimit::{login_attempt, PerClientAddress};
use crate::http::tenant::{PublicTenantRequest, TenantRequest};
use crate::input::Text;
use crate::page::Page;
use crate::tenant_config::snapshot::feature;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(login)
        .service(create_api_key)
        .service(list_api_keys)
        .service(delete_api_key);
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: Text,
    pub password: Text,
}

#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub user: LoginUser,
}

#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest,
    params(("X-Tenant-ID" = Option<String>, Header, description = "tenant id or slug (or use the tenant's subdomain)")),
    responses((status = 200, body = LoginResponse), (status = 401), (status = 404), (status = 422),
        (status = 429, description = "too many attempts from this client address (per tenant, or on the endpoint): Retry-After")))]
#[post("/auth/login", wrap = "PerClientAddress::new(\"login\")")]
pub async fn login(
    http: HttpRequest,
    req: PublicTenantRequest,
    body: Json<LoginRequest>,
) -> Result<HttpResponse, Problem> {
    let req = req.0;
    login_attempt(&http, req.state(), req.tenant_id).await?;
    let LoginRequest {
        email,
        password: given,
    } = body.into_inner();
    if email.trim().is_empty() || given.is_empty() {
        return Err(Problem::validation(vec![FieldError::new(
            "email",
            "email and password are required",
        )]));
    }
    let candidate = req.execute(FindLoginUser { email }).await?;
    let user = users::check_password(candidate, given.into_string()).await?;
    let (token, expires_at) = req.state().jwt.issue(user.id, req.tenant_id, user.role)?;
    Ok(HttpResponse::Ok().json(LoginResponse {
        token,
        expires_at,
        user,
    }))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    #[serde(default)]
    pub name: Text,
    /// `admin` (default) or `member`.
    pub role: Option<Role>,
}

#[utoipa::path(post, path = "/api-keys", tag = "auth", request_body = NewApiKey, security(("bearer" = [])),
    responses((status = 201, body = CreatedApiKey), (status = 403, description = "not an admin, or plan_required")))]
#[post("/api-keys")]
pub async fn create_api_key(
    req: TenantRequest,
    body: Json<Option<NewApiKey>>,
) -> Result<HttpResponse, Problem> {
    req.admin()?;
    req.plan().require_feature(feature::API_ACCESS)?;
    // No body at all takes the defaults.
    let body = body.into_inner().unwrap_or_default();
    if body.name.chars().count() > 200 {
        return Err(Problem::validation(vec![FieldError::new(
            "name",
            "use at most 200 characters",
        )]));
    }
    let created = req
        .execute(CreateApiKey {
            name: body.name,
            role: body.role.unwrap_or(Role::Admin),
        })
        .await?;
    Ok(HttpResponse::Created().json(created))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ApiKeyQuery {
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/api-keys", tag = "auth", params(ApiKeyQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<ApiKey>), (status = 403), (status = 422)))]
#[get("/api-keys")]
pub async fn list_api_keys(
    req: TenantRequest,
    query: web::Query<ApiKeyQuery>,
) -> Result<HttpResponse, Problem> {
    let ApiKeyQuery { limit, cursor } = query.into_inner();
    let cursors = req.state().cursors.clone();
    let keys = req
        .execute(ListApiKeys {
            limit,
            cursor,
            cursors,
        })
        .await?;
    Ok(HttpResponse::Ok().json(keys))
}

#[utoipa::path(delete, path = "/api-keys/{id}", tag = "auth", security(("bearer" = [])),
    responses((status = 204), (status = 404)))]
#[delete("/api-keys/{id}")]
pub async fn delete_api_key(
    req: TenantRequest,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    if !req.execute(RevokeApiKey { id: *id }).await? {
        return Err(Problem::not_found("API key"));
    }
    req.state()
        .invalidate(Invalidation::ApiKeys(req.tenant_id))
        .await;
    Ok(HttpResponse::NoContent().finish())
}
