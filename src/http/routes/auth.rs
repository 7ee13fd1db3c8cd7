//! Login and API keys.

use actix_web::{delete, get, post, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::actors::TenantOp;
use crate::audit::{self, AuditAction};
use crate::auth::{self, api_keys, password, AuthError, Caller, Role};
use crate::error::FieldError;
use crate::http::problem::Problem;
use crate::http::ratelimit::{login_attempt, PerClientAddress};
use crate::http::tenant::{PublicTenantRequest, TenantRequest};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(login)
        .service(create_api_key)
        .service(list_api_keys)
        .service(delete_api_key);
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Serialize, ToSchema)]
pub struct LoginUser {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
}

#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub user: LoginUser,
}

struct FindLoginUser {
    email: String,
}

impl TenantOp for FindLoginUser {
    type Output = Option<(Uuid, String, String, Option<String>)>;
    type Error = AuthError;
    const OPENS_TENANT_SCHEMA: bool = false;

    fn run<'a>(
        self,
        tx: &'a crate::db::TenantTx<'a>,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<Self::Output, AuthError>> {
        Box::pin(async move {
            let stmt = tx
                .prepare_cached(
                    "select id, email, role, password_hash from app.users \
                     where tenant_id = $1 and lower(email) = lower($2) and deleted_at is null",
                )
                .await?;
            let row = tx
                .query_opt(&stmt, &[&caller.tenant_id, &self.email])
                .await?;
            Ok(row.map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))))
        })
    }
}

/// A real hash to verify against when the email is unknown, so that a wrong email and a wrong
/// password cost the same time.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| password::hash("not-a-real-password").unwrap_or_default())
}

#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest,
    params(("X-Tenant-ID" = Option<String>, Header, description = "tenant id or slug (or use the tenant's subdomain)")),
    responses((status = 200, body = LoginResponse), (status = 401), (status = 404), (status = 422),
        (status = 429, description = "too many attempts from this client address (per tenant, or on the endpoint): Retry-After")))]
#[post("/auth/login", wrap = "PerClientAddress::new(\"login\")")]
pub async fn login(
    http: HttpRequest,
    req: PublicTenantRequest,
    body: web::Json<LoginRequest>,
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
    let user = req.execute(FindLoginUser { email }).await?;
    let (stored, user) = match user {
        Some((id, email, role, Some(hash))) => (hash, Some((id, email, role))),
        _ => (String::new(), None),
    };
    let matches = tokio::task::spawn_blocking(move || {
        let hash = if stored.is_empty() {
            dummy_hash()
        } else {
            stored.as_str()
        };
        password::verify(&given, hash)
    })
    .await
    .map_err(AuthError::HashingTask)?;
    let Some((id, email, role)) = user.filter(|_| matches) else {
        return Err(AuthError::InvalidCredentials.into());
    };
    let role = auth::stored_role("users.role", &role)?;
    let (token, expires_at) = req.state().jwt.issue(id, req.tenant_id, role)?;
    Ok(HttpResponse::Ok().json(LoginResponse {
        token,
        expires_at,
        user: LoginUser { id, email, role },
    }))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    #[serde(default)]
    pub name: String,
    /// `admin` (default) or `member`.
    pub role: Option<Role>,
}

#[derive(Serialize, ToSchema)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub role: Role,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedApiKey {
    pub id: Uuid,
    /// Shown once; only its hash is stored.
    pub key: String,
    pub name: String,
    pub prefix: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

struct InsertApiKey {
    id: Uuid,
    name: String,
    role: Role,
    key: api_keys::NewKey,
}

impl TenantOp for InsertApiKey {
    type Output = DateTime<Utc>;
    type Error = AuthError;
    const OPENS_TENANT_SCHEMA: bool = false;

    fn run<'a>(
        self,
        tx: &'a crate::db::TenantTx<'a>,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<Self::Output, AuthError>> {
        Box::pin(async move {
            let user = caller.admin()?;
            let row = tx
                .query_one(
                    "insert into app.api_keys (tenant_id, id, name, prefix, key_hash, role, created_by) \
                     values ($1, $2, $3, $4, $5, $6, $7) returning created_at",
                    &[
                        &caller.tenant_id,
                        &self.id,
                        &self.name,
                        &self.key.display_prefix,
                        &self.key.hash,
                        &self.role.as_str(),
                        &user,
                    ],
                )
                .await?;
            let after = serde_json::json!({"id": self.id, "name": self.name, "prefix": self.key.display_prefix, "role": self.role});
            audit::record(
                tx,
                caller,
                audit::Entry {
                    action: AuditAction::Create,
                    resource: "api_key",
                    resource_id: self.id.to_string(),
                    before: None,
                    after: Some(after),
                    extra: None,
                },
            )
            .await?;
            Ok(row.get(0))
        })
    }
}

#[utoipa::path(post, path = "/api-keys", tag = "auth", request_body = NewApiKey, security(("bearer" = [])),
    responses((status = 201, body = CreatedApiKey), (status = 403, description = "not an admin, or plan_required")))]
#[post("/api-keys")]
pub async fn create_api_key(
    req: TenantRequest,
    body: Option<web::Json<NewApiKey>>,
) -> Result<HttpResponse, Problem> {
    req.admin()?;
    req.state().require_feature(&req.plan, "api_access").await?;
    let body = body.map(|b| b.into_inner()).unwrap_or_default();
    if body.name.chars().count() > 200 {
        return Err(Problem::validation(vec![FieldError::new(
            "name",
            "use at most 200 characters",
        )]));
    }
    let role = body.role.unwrap_or(Role::Admin);
    let key = api_keys::generate(req.tenant_id);
    let id = Uuid::now_v7();
    let (secret, prefix) = (key.key.clone(), key.display_prefix.clone());
    let created_at = req
        .execute(InsertApiKey {
            id,
            name: body.name.clone(),
            role,
            key,
        })
        .await?;
    Ok(HttpResponse::Created().json(CreatedApiKey {
        id,
        key: secret,
        name: body.name,
        prefix,
        role,
        created_at,
    }))
}

struct ListApiKeys;

impl TenantOp for ListApiKeys {
    type Output = Vec<ApiKey>;
    type Error = AuthError;
    const OPENS_TENANT_SCHEMA: bool = false;

    fn run<'a>(
        self,
        tx: &'a crate::db::TenantTx<'a>,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<Self::Output, AuthError>> {
        Box::pin(async move {
            let rows = tx
                .query(
                    "select id, name, prefix, role, created_by, created_at, last_used_at from app.api_keys \
                     where tenant_id = $1 and deleted_at is null order by id",
                    &[&caller.tenant_id],
                )
                .await?;
            let keys = rows
                .iter()
                .map(|r| {
                    Ok(ApiKey {
                        id: r.get(0),
                        name: r.get(1),
                        prefix: r.get(2),
                        role: auth::stored_role("api_keys.role", r.get(3))?,
                        created_by: r.get(4),
                        created_at: r.get(5),
                        last_used_at: r.get(6),
                    })
                })
                .collect::<Result<_, AuthError>>()?;
            Ok(keys)
        })
    }
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyList {
    pub items: Vec<ApiKey>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api-keys", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = ApiKeyList), (status = 403)))]
#[get("/api-keys")]
pub async fn list_api_keys(req: TenantRequest) -> Result<HttpResponse, Problem> {
    req.admin()?;
    let items = req.execute(ListApiKeys).await?;
    Ok(HttpResponse::Ok().json(ApiKeyList {
        items,
        next_cursor: None,
    }))
}

struct RevokeApiKey {
    id: Uuid,
}

impl TenantOp for RevokeApiKey {
    type Output = bool;
    type Error = AuthError;
    const OPENS_TENANT_SCHEMA: bool = false;

    fn run<'a>(
        self,
        tx: &'a crate::db::TenantTx<'a>,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<Self::Output, AuthError>> {
        Box::pin(async move {
            let revoked = tx
                .execute(
                    "update app.api_keys set deleted_at = now() where tenant_id = $1 and id = $2 and deleted_at is null",
                    &[&caller.tenant_id, &self.id],
                )
                .await?;
            if revoked == 1 {
                audit::record(
                    tx,
                    caller,
                    audit::Entry {
                        action: AuditAction::Delete,
                        resource: "api_key",
                        resource_id: self.id.to_string(),
                        before: Some(serde_json::json!({"id": self.id})),
                        after: None,
                        extra: None,
                    },
                )
                .await?;
            }
            Ok(revoked == 1)
        })
    }
}

#[utoipa::path(delete, path = "/api-keys/{id}", tag = "auth", security(("bearer" = [])),
    responses((status = 204), (status = 404)))]
#[delete("/api-keys/{id}")]
pub async fn delete_api_key(
    req: TenantRequest,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    req.admin()?;
    if !req.execute(RevokeApiKey { id: *id }).await? {
        return Err(Problem::not_found("API key"));
    }
    req.state()
        .invalidate(crate::cache::Invalidation::ApiKeys(req.tenant_id))
        .await;
    Ok(HttpResponse::NoContent().finish())
}
