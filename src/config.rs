//! Configuration from the environment variables of API.md, validated once at start.

use std::time::Duration;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{name} is not valid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Role names are configurable so one cluster can host several deployments.
#[derive(Clone, Debug)]
pub struct RoleNames {
    pub owner: String,
    pub app: String,
    pub admin: String,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Owner role connection (migrations, provisioning DDL, purge).
    pub database_url: String,
    /// App role connection (request path and workers, subject to RLS).
    pub app_database_url: String,
    /// Admin role connection (BYPASSRLS, platform-admin endpoints only).
    pub admin_database_url: String,
    pub roles: RoleNames,
    pub redis_url: String,
    pub bind: String,
    pub platform_admin_token: Option<String>,
    pub jwt_secret: String,
    pub jwt_secret_generated: bool,
    pub jwt_ttl: Duration,
    pub base_domain: String,
    pub log_format: LogFormat,
    /// App-role connections of the tenant actors' operations (the request path), split evenly
    /// over the threads hosting actors: bounded whatever the number of tenants.
    pub app_pool_size: usize,
    /// App-role connections for everything else: resolving tenants and users on a cache miss,
    /// jobs, analytics flushes, metering.
    pub app_shared_pool_size: usize,
    pub admin_pool_size: usize,
    pub owner_pool_size: usize,
    /// A pooled connection is retired once it has opened this many tenant schemas, which bounds
    /// the relation-cache memory each backend accumulates.
    pub tenant_schemas_per_connection: usize,
    pub statement_timeout: Duration,
    pub retention: Duration,
    pub webhook_allow_private_targets: bool,
    /// A tenant actor with no work for this long stops (memory stays bounded).
    pub actor_idle_timeout: Duration,
    pub actor_mailbox_capacity: usize,
    /// Operations of one tenant running at once; past it, 503 + Retry-After.
    pub actor_max_in_flight: usize,
    /// Threads of their own for the tenant actors; 0 (the default) hosts them on the HTTP
    /// workers.
    pub actor_arbiters: usize,
    /// Connections of the app pool one tenant may hold at once (noisy neighbours).
    pub tenant_max_connections: usize,
    /// How long resolved tenants and verified users are trusted without asking the database;
    /// changes made through any instance invalidate them sooner (Redis pub/sub).
    pub cache_ttl: Duration,
    /// Test-only routes that make tenant work fail on purpose. Never read from the
    /// environment: only tests set it.
    pub fault_injection: bool,
    /// Whether this instance runs the outbox worker (JOB_WORKER); every instance may, since
    /// claims skip each other's rows.
    pub job_worker: bool,
    /// How long the outbox worker sleeps when it found nothing due (JOB_POLL_INTERVAL_MS).
    pub job_poll_interval: Duration,
    /// How often the in-memory `api_calls` counts are written to the tenants' counters: each
    /// write touches every tenant that made calls, so a short interval costs database work in
    /// proportion to the busy tenants.
    pub api_calls_flush_interval: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/tenantry";

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse_var<T: std::str::FromStr>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|e: T::Err| ConfigError::Invalid {
                name,
                reason: e.to_string(),
            }),
    }
}

fn parse_bool(name: &'static str, default: bool) -> Result<bool, ConfigError> {
    match var(name).as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some("0" | "false" | "no" | "off") => Ok(false),
        Some(other) => Err(ConfigError::Invalid {
            name,
            reason: format!("expected true or false, got {other:?}"),
        }),
    }
}

/// Replaces the user (and drops the password) of a postgres URL, so the app and admin
/// connections can be derived from the owner's for a local run.
pub fn with_user(url: &str, user: &str) -> Result<String, ConfigError> {
    let invalid = |reason: &str| ConfigError::Invalid {
        name: "DATABASE_URL",
        reason: reason.to_string(),
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid("expected postgres://user@host:port/database"))?;
    let host_part = match rest.rsplit_once('@') {
        Some((_, host)) => host,
        None => rest,
    };
    Ok(format!("{scheme}://{user}@{host_part}"))
}

/// Replaces the database name of a postgres URL (tests create one database each).
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match base.rfind('/') {
        Some(i) if i > base.find("://").map(|p| p + 2).unwrap_or(0) => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let database_url = var("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string());
        let roles = RoleNames {
            owner: var("DB_OWNER_ROLE").unwrap_or_else(|| "tenantry_owner".into()),
            app: var("DB_APP_ROLE").unwrap_or_else(|| "tenantry_app".into()),
            admin: var("DB_ADMIN_ROLE").unwrap_or_else(|| "tenantry_admin".into()),
        };
        for (name, role) in [
            ("DB_OWNER_ROLE", &roles.owner),
            ("DB_APP_ROLE", &roles.app),
            ("DB_ADMIN_ROLE", &roles.admin),
        ] {
            if !is_plain_identifier(role) {
                return Err(ConfigError::Invalid {
                    name,
                    reason: "use lowercase letters, digits and underscores".into(),
                });
            }
        }
        let app_database_url = match var("APP_DATABASE_URL") {
            Some(url) => url,
            None => with_user(&database_url, &roles.app)?,
        };
        let admin_database_url = match var("ADMIN_DATABASE_URL") {
            Some(url) => url,
            None => with_user(&database_url, &roles.admin)?,
        };
        let (jwt_secret, jwt_secret_generated) = match var("JWT_SECRET") {
            Some(secret) if secret.len() < 32 => {
                return Err(ConfigError::Invalid {
                    name: "JWT_SECRET",
                    reason: "use at least 32 characters".into(),
                })
            }
            Some(secret) => (secret, false),
            None => (crate::auth::random_token(48), true),
        };
        let log_format = match var("LOG_FORMAT").as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("pretty") => LogFormat::Pretty,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "LOG_FORMAT",
                    reason: format!("expected json or pretty, got {other:?}"),
                })
            }
        };
        let app_pool_size = parse_var("APP_POOL_SIZE", 16usize)?;
        if app_pool_size == 0 {
            return Err(ConfigError::Invalid {
                name: "APP_POOL_SIZE",
                reason: "must be at least 1".into(),
            });
        }
        Ok(Config {
            database_url,
            app_database_url,
            admin_database_url,
            roles,
            redis_url: var("REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".into()),
            bind: var("BIND").unwrap_or_else(|| "127.0.0.1:8080".into()),
            platform_admin_token: var("PLATFORM_ADMIN_TOKEN"),
            jwt_secret,
            jwt_secret_generated,
            jwt_ttl: Duration::from_secs(parse_var("JWT_TTL_SECONDS", 3600u64)?),
            base_domain: var("BASE_DOMAIN")
                .unwrap_or_else(|| "localhost".into())
                .to_ascii_lowercase(),
            log_format,
            app_pool_size,
            app_shared_pool_size: parse_var("APP_SHARED_POOL_SIZE", 8usize)?.max(1),
            admin_pool_size: parse_var("ADMIN_POOL_SIZE", 4usize)?.max(1),
            owner_pool_size: parse_var("OWNER_POOL_SIZE", 4usize)?.max(1),
            tenant_schemas_per_connection: parse_var("TENANT_SCHEMAS_PER_CONNECTION", 500usize)?
                .max(1),
            statement_timeout: Duration::from_millis(parse_var("STATEMENT_TIMEOUT_MS", 5000u64)?),
            retention: Duration::from_secs(
                parse_var("TENANT_RETENTION_DAYS", 30u64)?.saturating_mul(86_400),
            ),
            webhook_allow_private_targets: parse_bool("WEBHOOK_ALLOW_PRIVATE_TARGETS", false)?,
            actor_idle_timeout: Duration::from_secs(
                parse_var("ACTOR_IDLE_SECONDS", 300u64)?.max(1),
            ),
            actor_mailbox_capacity: parse_var("ACTOR_MAILBOX_CAPACITY", 256usize)?.max(1),
            actor_max_in_flight: parse_var("ACTOR_MAX_IN_FLIGHT", 256usize)?.max(1),
            actor_arbiters: parse_var("ACTOR_ARBITERS", 0usize)?.min(256),
            tenant_max_connections: parse_var(
                "TENANT_MAX_CONNECTIONS",
                (app_pool_size / 4).max(2),
            )?
            .clamp(1, app_pool_size),
            cache_ttl: Duration::from_secs(parse_var("CACHE_TTL_SECONDS", 30u64)?),
            fault_injection: false,
            job_worker: parse_bool("JOB_WORKER", true)?,
            api_calls_flush_interval: Duration::from_millis(
                parse_var("API_CALLS_FLUSH_MS", 10_000u64)?.max(10),
            ),
            job_poll_interval: Duration::from_millis(
                parse_var("JOB_POLL_INTERVAL_MS", 500u64)?.max(10),
            ),
        })
    }
}

/// Role and schema names are pasted into DDL; only this shape is ever accepted.
pub fn is_plain_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_role_urls() {
        assert_eq!(
            with_user(
                "postgres://postgres:pw@127.0.0.1:5432/tenantry",
                "tenantry_app"
            )
            .unwrap(),
            "postgres://tenantry_app@127.0.0.1:5432/tenantry"
        );
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/tenantry", "other"),
            "postgres://postgres@127.0.0.1:5432/other"
        );
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/x?sslmode=disable", "y"),
            "postgres://postgres@127.0.0.1:5432/y?sslmode=disable"
        );
    }

    #[test]
    fn identifiers() {
        assert!(is_plain_identifier("tenantry_app"));
        assert!(!is_plain_identifier("app; drop"));
        assert!(!is_plain_identifier("App"));
    }
}
