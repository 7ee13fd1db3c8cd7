//! The HTTP edge of every error: the one place where an area's error becomes an RFC 9457
//! `application/problem+json` response with a stable `code` (API.md "Errors").
//!
//! Areas know nothing of HTTP. Each has its own thiserror enum that keeps the source of what
//! failed, and this module has one `From<AreaError> for Problem` per enum, so a handler answers
//! with `?`. A new area adds its enum and its `From` impl here, choosing a status and a `code`
//! per variant; a variant the client cannot act on becomes a 500 through [`internal`], which
//! logs the whole source chain once and tells the client nothing more.
//!
//! The extractor configurations at the end give malformed bodies, queries and paths the same
//! shape.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Map, Value};

use crate::actors::{ActorError, ExecError};
use crate::analytics::AnalyticsError;
use crate::auth::{AccessError, AuthError};
use crate::billing::BillingError;
use crate::db::DbError;
use crate::domain::DomainError;
use crate::error::{error_chain, FieldError};
use crate::flags::FlagError;
use crate::jobs::JobError;
use crate::page::PageError;
use crate::privacy::PrivacyError;
use crate::ratelimit::RateLimitError;
use crate::tenancy::TenancyError;
use crate::tenant_config::load::LoadError;
use crate::tenant_config::ConfigError;
use crate::usage::UsageError;
use crate::webhooks::WebhookError;

/// A problem details response. Built through the `From` impls below and the helpers, so the code
/// for each situation is chosen in this file.
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub code: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub extra: Map<String, Value>,
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Problem {
            status,
            code,
            title: status.canonical_reason().unwrap_or("Error"),
            detail: detail.into(),
            extra: Map::new(),
            retry_after: None,
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "bad_request", detail)
    }

    pub fn not_found(what: &str) -> Self {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            detail,
        )
        .with("errors", json!(errors))
    }

    pub fn unavailable(detail: impl Into<String>, retry_after: u64) -> Self {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
            .retry_after(retry_after)
    }

    pub fn internal() -> Self {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an unexpected error occurred; it has been logged",
        )
    }

    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert(
            "type".into(),
            json!(format!("https://tenantry.dev/problems/{}", self.code)),
        );
        body.insert("title".into(), json!(self.title));
        body.insert("status".into(), json!(self.status.as_u16()));
        body.insert("detail".into(), json!(self.detail));
        body.insert("code".into(), json!(self.code));
        for (k, v) in &self.extra {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.detail)
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        response.insert_header((header::CONTENT_TYPE, "application/problem+json"));
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        response.body(self.body().to_string())
    }
}

/// A 500: the client learns nothing, the log gets the whole chain of causes, once.
pub fn internal(err: &dyn std::error::Error) -> Problem {
    tracing::error!(error = %error_chain(err), "internal error");
    Problem::internal()
}

impl From<DbError> for Problem {
    fn from(err: DbError) -> Self {
        match &err {
            DbError::UniqueViolation { constraint } => {
                let detail = match constraint.as_deref() {
                    Some("tenants_slug_key") => "a tenant with this slug already exists",
                    Some("tenants_subdomain_key") => "a tenant with this subdomain already exists",
                    Some("users_tenant_email_key") => "a user with this email already exists",
                    Some("projects_tenant_name_key") => "a project with this name already exists",
                    Some("tasks_tenant_project_title_key") => {
                        "a task with this title already exists in the project"
                    }
                    _ => "the resource already exists",
                };
                Problem::new(StatusCode::CONFLICT, "conflict", detail)
                    .with("constraint", constraint.clone().unwrap_or_default())
            }
            // A reference that does not resolve inside the tenant: the row may exist in another
            // tenant, which we must not confirm, so it is reported like any missing reference.
            DbError::ForeignKeyViolation { constraint } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_reference",
                "a referenced resource does not exist",
            )
            .with("constraint", constraint.clone().unwrap_or_default()),
            DbError::RowSecurity => Problem::not_found("resource"),
            DbError::Timeout => Problem::unavailable("the database did not answer in time", 1),
            DbError::Unavailable(_) | DbError::PoolTimeout | DbError::Pool(_) => {
                tracing::warn!(error = %error_chain(&err), "database unavailable");
                Problem::unavailable("the database is unavailable", 2)
            }
            DbError::InvalidUrl(_)
            | DbError::PoolBuild(_)
            | DbError::MoreThanOneRow
            | DbError::TemplateRead { .. }
            | DbError::TemplateEmpty(_)
            | DbError::TemplateDiverges(_)
            | DbError::DeploymentMode(_)
            | DbError::Migration { .. }
            | DbError::Tls { .. }
            | DbError::Postgres(_) => internal(&err),
        }
    }
}

impl From<TenancyError> for Problem {
    fn from(err: TenancyError) -> Self {
        match err {
            TenancyError::Validation(errors) => Problem::validation(errors),
            TenancyError::NotFound => Problem::not_found("tenant"),
            TenancyError::NotDeleted => Problem::new(
                StatusCode::CONFLICT,
                "not_deleted",
                "the tenant is not deleted",
            ),
            TenancyError::RetentionExpired => Problem::new(
                StatusCode::GONE,
                "retention_expired",
                "the tenant's retention period is over; it can no longer be restored",
            ),
            TenancyError::Db(db) => db.into(),
            TenancyError::Auth(auth) => auth.into(),
            TenancyError::InjectedFault | TenancyError::CorruptRow { .. } => internal(&err),
        }
    }
}

impl From<PageError> for Problem {
    fn from(PageError(errors): PageError) -> Self {
        Problem::validation(errors)
    }
}

/// One body per guard refusal, whichever area's operation refused (`auth::guard`).
impl From<AccessError> for Problem {
    fn from(err: AccessError) -> Self {
        let detail = err.to_string();
        match err {
            AccessError::Unauthenticated => Problem::unauthorized(detail),
            AccessError::RoleRequired { required } => {
                Problem::forbidden(detail).with("required_role", required.as_str())
            }
            AccessError::PlanRequired {
                feature,
                required_plan,
                ..
            } => Problem::new(StatusCode::FORBIDDEN, "plan_required", detail)
                .with("feature", feature)
                .with("required_plan", required_plan.unwrap_or_default()),
            AccessError::PlanLimit {
                resource,
                limit,
                current,
            } => Problem::new(StatusCode::PAYMENT_REQUIRED, "plan_limit", detail)
                .with("resource", resource)
                .with("limit", limit)
                .with("current", current),
        }
    }
}

impl From<AuthError> for Problem {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::MissingCredentials => AccessError::Unauthenticated.into(),
            AuthError::InvalidToken(reason) => {
                Problem::unauthorized(format!("invalid token: {reason}"))
            }
            AuthError::InvalidCredentials => Problem::unauthorized("invalid credentials"),
            AuthError::Access(access) => access.into(),
            AuthError::Page(page) => page.into(),
            AuthError::Db(db) => db.into(),
            AuthError::Hashing(_)
            | AuthError::HashingTask(_)
            | AuthError::Signing(_)
            | AuthError::CorruptRow { .. } => internal(&err),
        }
    }
}

impl From<DomainError> for Problem {
    fn from(err: DomainError) -> Self {
        match err {
            DomainError::NotFound(what) => Problem::not_found(what),
            DomainError::Validation(errors) => Problem::validation(errors),
            // Shaped like a validation failure (the client fixes a field), with its own code.
            DomainError::InvalidReference(errors) => {
                let mut problem = Problem::validation(errors);
                problem.code = "invalid_reference";
                problem
            }
            DomainError::Access(access) => access.into(),
            DomainError::LastAdmin => Problem::new(
                StatusCode::CONFLICT,
                "last_admin",
                "the tenant must keep at least one admin",
            ),
            DomainError::Conflict(detail) => Problem::new(StatusCode::CONFLICT, "conflict", detail),
            DomainError::Db(db) => db.into(),
            DomainError::CorruptRow { .. } => internal(&err),
        }
    }
}

impl From<JobError> for Problem {
    fn from(err: JobError) -> Self {
        match err {
            JobError::Db(db) => db.into(),
            JobError::Handler { .. } => internal(&err),
        }
    }
}

/// The operation's own error as its area maps it; the actor's as below.
impl<E> From<ExecError<E>> for Problem
where
    Problem: From<E>,
{
    fn from(err: ExecError<E>) -> Self {
        match err {
            ExecError::Op(err) => err.into(),
            ExecError::Actor(err) => err.into(),
        }
    }
}

/// Every refusal of the actor layer is transient: 503 with `Retry-After`, so the client retries.
/// A failed transaction around the operation is a database error like any other.
impl From<ActorError> for Problem {
    fn from(err: ActorError) -> Self {
        let detail = match err {
            ActorError::Db(db) => return db.into(),
            ActorError::Config(failure) => {
                return match &*failure {
                    LoadError::Db(db) => db.clone().into(),
                    LoadError::Missing(_) => Problem::not_found("tenant"),
                    LoadError::CorruptRow { .. } => internal(&*failure),
                }
            }
            ActorError::ConfigTimeout => "the tenant's configuration is still loading; retry",
            ActorError::MailboxFull => {
                return Problem::unavailable("the tenant is overloaded; retry shortly", 1)
                    .with("reason", "mailbox_full")
            }
            ActorError::TooManyInFlight => "too many operations of this tenant in progress",
            ActorError::SupervisorUnavailable(_) => "the tenant supervisor is unavailable",
            ActorError::LeasesClosed(_) => "the tenant actor is restarting",
            ActorError::Restarting => "the tenant is restarting; retry",
            ActorError::Cancelled(_) => "the operation was cancelled by a restart; retry",
            ActorError::Panicked => "the tenant's worker failed and is restarting; retry",
        };
        Problem::unavailable(detail, 1)
    }
}

/// Body, query and path extractor failures come out as problem documents too. Routes take
/// `http::extract::{Json, Query}`, whose 422 also names the member that did not fit; these
/// shape what actix's own `web::Json` and `web::Query` refuse.
pub fn json_config() -> actix_web::web::JsonConfig {
    actix_web::web::JsonConfig::default()
        .limit(1024 * 1024)
        .error_handler(|err, _req| {
            use actix_web::error::JsonPayloadError;
            let problem = match &err {
                JsonPayloadError::Overflow { .. }
                | JsonPayloadError::OverflowKnownLength { .. } => Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the body is over the limit of 1 MiB",
                ),
                JsonPayloadError::ContentType => Problem::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send the body as application/json",
                ),
                JsonPayloadError::Deserialize(e) if e.is_data() => {
                    Problem::validation(vec![FieldError::new("body", e.to_string())])
                }
                other => Problem::bad_request(format!("malformed JSON body: {other}")),
            };
            problem.into()
        })
}

/// A query string that does not fit its parameters (an unknown member such as a smuggled
/// `tenant_id`, a malformed id or number) is a validation failure, like a body that does not.
pub fn query_config() -> actix_web::web::QueryConfig {
    actix_web::web::QueryConfig::default().error_handler(|err, _req| {
        use actix_web::error::QueryPayloadError;
        match &err {
            QueryPayloadError::Deserialize(e) => {
                Problem::validation(vec![FieldError::new("query", e.to_string())]).into()
            }
            other => Problem::bad_request(format!("invalid query: {other}")).into(),
        }
    })
}

pub fn path_config() -> actix_web::web::PathConfig {
    actix_web::web::PathConfig::default()
        .error_handler(|_err, _req| Problem::not_found("resource").into())
}

impl From<tokio_postgres::Error> for Problem {
    fn from(err: tokio_postgres::Error) -> Self {
        DbError::from(err).into()
    }
}

impl From<ConfigError> for Problem {
    fn from(err: ConfigError) -> Self {
        match err {
            ConfigError::Validation(errors) => Problem::validation(errors),
            ConfigError::TenantNotFound => Problem::not_found("tenant"),
            ConfigError::Access(access) => access.into(),
            ConfigError::Db(db) => db.into(),
            ConfigError::Tenancy(tenancy) => tenancy.into(),
            ConfigError::Load(_) => internal(&err),
        }
    }
}

impl From<AnalyticsError> for Problem {
    fn from(err: AnalyticsError) -> Self {
        match err {
            AnalyticsError::Validation(errors) => Problem::validation(errors),
            AnalyticsError::Overloaded { retry_after } => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many analytics events are waiting to be stored for this tenant; retry later",
            )
            .retry_after(retry_after),
            AnalyticsError::Unavailable(reason) => {
                tracing::warn!(%reason, "analytics unavailable");
                Problem::unavailable("analytics ingestion is unavailable; nothing was stored", 1)
            }
            AnalyticsError::Db(db) => db.into(),
            AnalyticsError::FlushPanicked
            | AnalyticsError::RollupChanged { .. }
            | AnalyticsError::UserKeyMissing => internal(&err),
        }
    }
}

impl From<FlagError> for Problem {
    fn from(err: FlagError) -> Self {
        let detail = err.to_string();
        match err {
            FlagError::Validation(errors) => Problem::validation(errors),
            FlagError::NotFound(what) => Problem::not_found(what),
            FlagError::TypeConflict {
                wanted, overrides, ..
            } => Problem::new(StatusCode::CONFLICT, "flag_type_conflict", detail)
                .with("type", wanted)
                .with("overrides", overrides),
            FlagError::NotRestorable { errors, .. } => {
                Problem::new(StatusCode::CONFLICT, "version_not_restorable", detail)
                    .with("errors", json!(errors))
            }
            FlagError::Access(access) => access.into(),
            FlagError::Tenancy(tenancy) => tenancy.into(),
            FlagError::Db(db) => db.into(),
            FlagError::CorruptRow { .. } => internal(&err),
        }
    }
}

impl From<WebhookError> for Problem {
    fn from(err: WebhookError) -> Self {
        match err {
            WebhookError::Validation(errors) => Problem::validation(errors),
            WebhookError::NotFound(what) => Problem::not_found(what),
            WebhookError::Access(access) => access.into(),
            WebhookError::Db(db) => db.into(),
            WebhookError::Secret(_) | WebhookError::CorruptRow { .. } => internal(&err),
        }
    }
}

impl From<PrivacyError> for Problem {
    fn from(err: PrivacyError) -> Self {
        match err {
            PrivacyError::Validation(errors) => Problem::validation(errors),
            PrivacyError::NotFound(what) => Problem::not_found(what),
            PrivacyError::LastAdmin => Problem::new(
                StatusCode::CONFLICT,
                "last_admin",
                "the tenant must keep at least one admin",
            ),
            PrivacyError::Access(access) => access.into(),
            PrivacyError::Db(db) => db.into(),
        }
    }
}

impl From<BillingError> for Problem {
    fn from(err: BillingError) -> Self {
        match err {
            BillingError::Validation(errors) => Problem::validation(errors),
            BillingError::Access(access) => access.into(),
            BillingError::Db(db) => db.into(),
            BillingError::Signature(reason) => Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid_signature",
                format!("the Stripe-Signature header is not valid: {reason}"),
            ),
            BillingError::Payload(reason) => Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid_event",
                format!("the body is not a Stripe event: {reason}"),
            ),
            BillingError::WebhooksOff => {
                Problem::unavailable("Stripe webhooks are not configured on this server", 60)
            }
            BillingError::Stripe(_) | BillingError::Usage(_) | BillingError::CorruptRow { .. } => {
                internal(&err)
            }
        }
    }
}

/// Over a limit: 429 with `Retry-After` and `{metric, limit, used}` (API.md "Errors"). The
/// `RateLimit-*` headers are added by `http::ratelimit` to every response it counted.
impl From<RateLimitError> for Problem {
    fn from(err: RateLimitError) -> Self {
        match err {
            RateLimitError::Limited {
                metric,
                limit,
                used,
                retry_after,
            } => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "{metric}: the limit of {limit} is reached; retry after {} s",
                    crate::ratelimit::ceil_seconds(retry_after).max(1)
                ),
            )
            .with("metric", metric)
            .with("limit", limit)
            .with("used", used)
            .retry_after(crate::ratelimit::ceil_seconds(retry_after).max(1)),
            // The limiter decides locally when Redis fails; these never reach a client.
            RateLimitError::RedisTimeout(_)
            | RateLimitError::RedisBackingOff
            | RateLimitError::Redis(_) => Problem::unavailable("rate limiting is unavailable", 1),
        }
    }
}

/// Usage metering (docs/usage.md). Over a metered quota: 429 `quota_exceeded` with
/// `Retry-After` (seconds to the end of the billing period) and `{metric, limit, used}`.
impl From<UsageError> for Problem {
    fn from(err: UsageError) -> Self {
        let detail = err.to_string();
        match err {
            UsageError::Validation(errors) => Problem::validation(errors),
            UsageError::TooManyEvents { max, .. } => {
                Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "too_many_events", detail)
                    .with("max_events", max)
            }
            UsageError::Access(access) => access.into(),
            UsageError::QuotaExceeded {
                metric,
                limit,
                used,
                retry_after,
            } => {
                let seconds = crate::ratelimit::ceil_seconds(retry_after).max(1);
                Problem::new(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", detail)
                    .with("metric", metric)
                    .with("limit", limit)
                    .with("used", used)
                    .retry_after(seconds)
            }
            UsageError::Db(db) => db.into(),
            UsageError::Actor(actor) => actor.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    #[test]
    fn an_unexpected_database_error_is_a_bare_500() {
        let parse: tokio_postgres::Error = "host=/nowhere port=x"
            .parse::<tokio_postgres::Config>()
            .expect_err("an invalid port");
        let err = DbError::from(parse);
        assert!(matches!(err, DbError::Postgres(_)), "{err:?}");
        assert!(std::error::Error::source(&err).is_some());
        let problem = Problem::from(err);
        assert_eq!(problem.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(problem.code, "internal");
        assert!(problem.extra.is_empty());
    }

    #[test]
    fn a_role_refusal_has_one_body() {
        let direct = Problem::from(AccessError::RoleRequired {
            required: Role::Admin,
        });
        let wrapped = Problem::from(ExecError::Op(DomainError::Access(
            AccessError::RoleRequired {
                required: Role::Admin,
            },
        )));
        assert_eq!(direct.body(), wrapped.body());
        assert_eq!(direct.status, StatusCode::FORBIDDEN);
        assert_eq!(direct.body()["code"], "forbidden");
        assert_eq!(direct.body()["required_role"], "admin");
        assert_eq!(direct.body()["detail"], "this requires the admin role");
    }

    #[test]
    fn the_actor_layer_answers_503_with_retry_after() {
        let full = Problem::from(ExecError::<DomainError>::Actor(ActorError::MailboxFull));
        assert_eq!(full.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(full.retry_after, Some(1));
        assert_eq!(full.body()["reason"], "mailbox_full");
        for err in [
            ActorError::TooManyInFlight,
            ActorError::Restarting,
            ActorError::Panicked,
        ] {
            let problem = Problem::from(err);
            assert_eq!(problem.status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(problem.code, "unavailable");
            assert_eq!(problem.retry_after, Some(1));
        }
        let db = Problem::from(ActorError::Db(DbError::UniqueViolation {
            constraint: Some("users_tenant_email_key".into()),
        }));
        assert_eq!(db.status, StatusCode::CONFLICT);
    }

    #[test]
    fn over_a_limit_is_429_with_retry_after() {
        let limited = Problem::from(RateLimitError::Limited {
            metric: crate::ratelimit::TENANT_METRIC,
            limit: 30,
            used: 30,
            retry_after: std::time::Duration::from_millis(12_300),
        });
        assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.retry_after, Some(13));
        let body = limited.body();
        assert_eq!(body["code"], "rate_limited");
        assert_eq!(body["metric"], "requests_per_minute");
        assert_eq!(
            (body["limit"].as_u64(), body["used"].as_u64()),
            (Some(30), Some(30))
        );
    }

    /// (status, code, Retry-After) of a problem, for the tables below.
    type Shape = (u16, &'static str, Option<u64>);

    fn shape(problem: &Problem) -> Shape {
        (problem.status.as_u16(), problem.code, problem.retry_after)
    }

    #[test]
    fn database_refusals_map_to_stable_codes() {
        let cases: [(DbError, Shape); 8] = [
            (
                DbError::UniqueViolation {
                    constraint: Some("tenants_slug_key".into()),
                },
                (409, "conflict", None),
            ),
            (
                DbError::UniqueViolation { constraint: None },
                (409, "conflict", None),
            ),
            (
                DbError::ForeignKeyViolation {
                    constraint: Some("tasks_project_fkey".into()),
                },
                (422, "invalid_reference", None),
            ),
            (DbError::RowSecurity, (404, "not_found", None)),
            (DbError::Timeout, (503, "unavailable", Some(1))),
            (DbError::PoolTimeout, (503, "unavailable", Some(2))),
            (DbError::MoreThanOneRow, (500, "internal", None)),
            (
                DbError::TemplateEmpty("tenant_template".into()),
                (500, "internal", None),
            ),
        ];
        for (err, want) in cases {
            let text = err.to_string();
            assert_eq!(shape(&Problem::from(err)), want, "{text}");
        }
        let slug = Problem::from(DbError::UniqueViolation {
            constraint: Some("tenants_slug_key".into()),
        });
        assert_eq!(slug.detail, "a tenant with this slug already exists");
        assert_eq!(slug.body()["constraint"], "tenants_slug_key");
        let unnamed = Problem::from(DbError::UniqueViolation { constraint: None });
        assert_eq!(unnamed.detail, "the resource already exists");
        assert_eq!(unnamed.body()["constraint"], "");
    }

    #[test]
    fn area_errors_map_to_stable_codes() {
        let field = || vec![FieldError::new("name", "must not be empty")];
        let cases: &[(Problem, Shape)] = &[
            (TenancyError::NotFound.into(), (404, "not_found", None)),
            (TenancyError::NotDeleted.into(), (409, "not_deleted", None)),
            (
                TenancyError::RetentionExpired.into(),
                (410, "retention_expired", None),
            ),
            (
                TenancyError::Validation(field()).into(),
                (422, "validation_failed", None),
            ),
            (TenancyError::InjectedFault.into(), (500, "internal", None)),
            (
                AuthError::InvalidCredentials.into(),
                (401, "unauthorized", None),
            ),
            (
                AuthError::MissingCredentials.into(),
                (401, "unauthorized", None),
            ),
            (DomainError::LastAdmin.into(), (409, "last_admin", None)),
            (
                DomainError::InvalidReference(field()).into(),
                (422, "invalid_reference", None),
            ),
            (
                DomainError::Conflict("taken").into(),
                (409, "conflict", None),
            ),
            (
                JobError::Handler {
                    handler: "h",
                    reason: "r".into(),
                }
                .into(),
                (500, "internal", None),
            ),
            (
                AnalyticsError::Overloaded { retry_after: 7 }.into(),
                (503, "overloaded", Some(7)),
            ),
            (
                AnalyticsError::Unavailable("redis".into()).into(),
                (503, "unavailable", Some(1)),
            ),
            (
                AnalyticsError::FlushPanicked.into(),
                (500, "internal", None),
            ),
            (
                FlagError::TypeConflict {
                    key: "k".into(),
                    wanted: "boolean",
                    overrides: 2,
                }
                .into(),
                (409, "flag_type_conflict", None),
            ),
            (
                FlagError::NotRestorable {
                    version: 3,
                    errors: field(),
                }
                .into(),
                (409, "version_not_restorable", None),
            ),
            (FlagError::NotFound("flag").into(), (404, "not_found", None)),
            (
                WebhookError::NotFound("endpoint").into(),
                (404, "not_found", None),
            ),
            (
                WebhookError::CorruptRow {
                    column: "status",
                    value: "x".into(),
                }
                .into(),
                (500, "internal", None),
            ),
            (
                BillingError::WebhooksOff.into(),
                (503, "unavailable", Some(60)),
            ),
            (
                BillingError::Payload(serde_json::from_str::<Value>("{").expect_err("not JSON"))
                    .into(),
                (400, "invalid_event", None),
            ),
            (
                RateLimitError::RedisBackingOff.into(),
                (503, "unavailable", Some(1)),
            ),
            (
                UsageError::TooManyEvents {
                    count: 2000,
                    max: 1000,
                }
                .into(),
                (413, "too_many_events", None),
            ),
            (
                UsageError::QuotaExceeded {
                    metric: "api_calls".into(),
                    limit: 10,
                    used: 10,
                    retry_after: std::time::Duration::from_millis(1_500),
                }
                .into(),
                (429, "quota_exceeded", Some(2)),
            ),
            (
                UsageError::Actor(ActorError::ConfigTimeout).into(),
                (503, "unavailable", Some(1)),
            ),
            (ConfigError::TenantNotFound.into(), (404, "not_found", None)),
            (
                ConfigError::Tenancy(TenancyError::NotFound).into(),
                (404, "not_found", None),
            ),
            (
                ActorError::Config(std::sync::Arc::new(LoadError::Missing(uuid::Uuid::nil())))
                    .into(),
                (404, "not_found", None),
            ),
            (
                ActorError::Config(std::sync::Arc::new(LoadError::CorruptRow {
                    column: "plan",
                    reason: "unknown".into(),
                }))
                .into(),
                (500, "internal", None),
            ),
        ];
        for (problem, want) in cases {
            assert_eq!(shape(problem), *want, "{problem:?}");
            // Every problem document carries its status and code in the body too.
            let body = problem.body();
            assert_eq!(body["status"], problem.status.as_u16(), "{body}");
            assert_eq!(body["code"], problem.code, "{body}");
        }
    }

    #[test]
    fn limits_name_what_was_exceeded() {
        let conflict = Problem::from(FlagError::TypeConflict {
            key: "dark_mode".into(),
            wanted: "boolean",
            overrides: 2,
        });
        assert_eq!(conflict.body()["type"], "boolean");
        assert_eq!(conflict.body()["overrides"], 2);
        let quota = Problem::from(UsageError::QuotaExceeded {
            metric: "api_calls".into(),
            limit: 10,
            used: 11,
            retry_after: std::time::Duration::from_secs(30),
        })
        .body();
        assert_eq!(
            (&quota["metric"], &quota["limit"], &quota["used"]),
            (&json!("api_calls"), &json!(10), &json!(11))
        );
        let too_many = Problem::from(UsageError::TooManyEvents {
            count: 2000,
            max: 1000,
        });
        assert_eq!(too_many.body()["max_events"], 1000);
    }
}
