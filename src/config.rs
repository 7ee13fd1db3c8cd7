//! Configuration from the environment variables of API.md, validated once at start: a value
//! that does not parse or lies outside its allowed range stops the process with a message
//! naming the variable and the range. Nothing is clamped, so a deployment never runs with a
//! setting other than the one it asked for. Secrets are [`SecretString`]s: `Debug` of a
//! `Config` (and so any log of it) never shows them; code exposes one only where it is used.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{name} is not valid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("{name} must be between {min} and {max}, got {got}")]
    OutOfRange {
        name: &'static str,
        min: String,
        max: String,
        got: String,
    },
    /// A tenant may not be allowed more connections than the pool its actor draws from.
    #[error(
        "TENANT_MAX_CONNECTIONS ({tenant_max}) must not exceed its host thread's share of \
         APP_POOL_SIZE ({app_pool_size} connections over {hosts} thread(s) hosting tenant \
         actors: {share} each)"
    )]
    TenantConnectionsAboveShare {
        tenant_max: usize,
        app_pool_size: usize,
        hosts: usize,
        share: usize,
    },
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
    /// Owner role connection (migrations, provisioning DDL, purge). May carry a password.
    pub database_url: SecretString,
    /// App role connection (request path and workers, subject to RLS).
    pub app_database_url: SecretString,
    /// Admin role connection (BYPASSRLS, platform-admin endpoints only).
    pub admin_database_url: SecretString,
    pub roles: RoleNames,
    /// May carry a password (`redis://:password@host`).
    pub redis_url: SecretString,
    pub bind: String,
    pub platform_admin_token: Option<SecretString>,
    pub jwt_secret: SecretString,
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
    /// Lets webhook URLs reach loopback and private networks, over http too (tests,
    /// development); cloud metadata addresses stay refused. `net::outbound::Outbound::from_config`
    /// reads it; the server logs a warning at start when it is on.
    pub webhook_allow_private_targets: bool,
    /// A tenant actor with no work for this long stops (memory stays bounded).
    pub actor_idle_timeout: Duration,
    pub actor_mailbox_capacity: usize,
    /// Operations of one tenant running at once; past it, 503 + Retry-After.
    pub actor_max_in_flight: usize,
    /// Threads of their own for the tenant actors; 0 (the default) hosts them on the HTTP
    /// workers.
    pub actor_arbiters: usize,
    /// Connections of the app pool one tenant may hold at once (noisy neighbours). `None`: a
    /// quarter of APP_POOL_SIZE (at least 2), within the host thread's share; see
    /// [`Config::tenant_connections`], which checks an explicit value against that share once
    /// the number of threads hosting actors is known.
    pub tenant_max_connections: Option<usize>,
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
    /// Rate limits: per tenant, login attempts, public endpoints (`crate::ratelimit`).
    pub rate_limits: RateLimitSettings,
    /// DEFAULT_TENANT: the slug requests naming no tenant resolve to (docs/single-tenant.md).
    pub default_tenant: Option<String>,
    /// SECRETS_KEY: base64 of the AES-256 key that seals stored secrets (`crate::secrets`).
    pub secrets_key: SecretString,
    pub secrets_key_generated: bool,
    /// SECRETS_KEY_PREVIOUS: keys of earlier rotations, which open but never seal.
    pub secrets_key_previous: Vec<SecretString>,
    /// TLS_CERT_FILE and TLS_KEY_FILE: `serve` speaks HTTPS (`crate::http::tls`).
    pub tls: Option<crate::http::tls::TlsFiles>,
    /// Stripe and the dunning grace period (`crate::billing`, docs/billing.md).
    pub billing: BillingSettings,
    /// Not configuration: the wake-ups of this server's background loops
    /// ([`crate::supervise::Wakes`]), carried here because every part of one server holds a
    /// clone of its config and no other server's.
    pub wakes: std::sync::Arc<crate::supervise::Wakes>,
}

/// STRIPE_SECRET_KEY, STRIPE_API_BASE, STRIPE_WEBHOOK_SECRET, BILLING_GRACE_DAYS.
#[derive(Clone, Debug)]
pub struct BillingSettings {
    /// None: the Stripe sync is off (its jobs complete as skipped); metering and the billing
    /// API work all the same.
    pub stripe_secret_key: Option<SecretString>,
    pub stripe_api_base: String,
    /// Verifying webhook signatures. Several secrets (comma-separated) are accepted while one
    /// is being rotated; none: `POST /webhooks/stripe` refuses every event.
    pub stripe_webhook_secrets: Vec<SecretString>,
    pub grace_days: u32,
}

/// What `crate::ratelimit` enforces (docs/rate-limits.md).
#[derive(Clone, Debug)]
pub struct RateLimitSettings {
    /// TENANT_RATE_LIMITS: every tenant request passes its plan's `rate_limit_per_minute`.
    pub tenants: bool,
    /// RATE_LIMIT_INSTANCES: how many instances are expected to serve; while Redis does not
    /// answer, each instance admits this share of a limit on its own.
    pub instances: u32,
    /// LOGIN_ATTEMPTS_PER_MINUTE: per tenant and client address.
    pub login_attempts_per_minute: u32,
    /// PUBLIC_REQUESTS_PER_MINUTE: per client address on each public endpoint that opts in.
    pub public_requests_per_minute: u32,
    /// TRUSTED_PROXIES: peers whose `X-Forwarded-For` names the client; empty, the peer
    /// address is the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/tenantry";

/// The allowed range of every numeric variable, in one place so the error messages, the tests
/// and the documentation agree.
pub mod limits {
    use std::ops::RangeInclusive;

    pub const POOL_SIZE: RangeInclusive<usize> = 1..=1000;
    pub const TENANT_SCHEMAS_PER_CONNECTION: RangeInclusive<usize> = 1..=100_000;
    pub const STATEMENT_TIMEOUT_MS: RangeInclusive<u64> = 10..=3_600_000;
    pub const TENANT_RETENTION_DAYS: RangeInclusive<u64> = 0..=3650;
    pub const JWT_TTL_SECONDS: RangeInclusive<u64> = 60..=604_800;
    pub const ACTOR_IDLE_SECONDS: RangeInclusive<u64> = 1..=86_400;
    pub const ACTOR_QUEUE: RangeInclusive<usize> = 1..=65_536;
    pub const ACTOR_ARBITERS: RangeInclusive<usize> = 0..=256;
    pub const CACHE_TTL_SECONDS: RangeInclusive<u64> = 0..=3600;
    pub const API_CALLS_FLUSH_MS: RangeInclusive<u64> = 10..=3_600_000;
    pub const JOB_POLL_INTERVAL_MS: RangeInclusive<u64> = 10..=60_000;
    pub const RATE_LIMIT_INSTANCES: RangeInclusive<u32> = 1..=1000;
    pub const LOGIN_ATTEMPTS_PER_MINUTE: RangeInclusive<u32> = 1..=10_000;
    pub const PUBLIC_REQUESTS_PER_MINUTE: RangeInclusive<u32> = 1..=1_000_000;
    pub const BILLING_GRACE_DAYS: RangeInclusive<u32> = 0..=365;
    pub const JWT_SECRET_MIN_CHARS: usize = 32;
}

/// Where variables come from: the process environment, or (in tests) a map, so no test has to
/// change the environment that tests running beside it read.
struct Vars<F>(F);

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    /// Blank counts as unset.
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    fn number<T>(
        &self,
        name: &'static str,
        default: T,
        range: RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Display + Copy,
    {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => checked(name, &raw, range),
        }
    }

    fn optional_number<T>(
        &self,
        name: &'static str,
        range: RangeInclusive<T>,
    ) -> Result<Option<T>, ConfigError>
    where
        T: FromStr + PartialOrd + Display + Copy,
    {
        self.get(name)
            .map(|raw| checked(name, &raw, range))
            .transpose()
    }

    fn bool(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self
            .get(name)
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            None => Ok(default),
            Some("1" | "true" | "yes" | "on") => Ok(true),
            Some("0" | "false" | "no" | "off") => Ok(false),
            Some(other) => Err(ConfigError::Invalid {
                name,
                reason: format!("expected true or false, got {other:?}"),
            }),
        }
    }
}

fn checked<T>(name: &'static str, raw: &str, range: RangeInclusive<T>) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + Display + Copy,
{
    let out_of_range = |got: String| ConfigError::OutOfRange {
        name,
        min: range.start().to_string(),
        max: range.end().to_string(),
        got,
    };
    let value: T = raw
        .trim()
        .parse()
        .map_err(|_| out_of_range(format!("{:?}", raw.trim())))?;
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(out_of_range(value.to_string()))
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
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// The configuration the variables `lookup` returns describe (`from_env` passes the
    /// process environment).
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        use limits::*;
        let vars = Vars(lookup);
        let database_url = vars
            .get("DATABASE_URL")
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string());
        let roles = RoleNames {
            owner: vars
                .get("DB_OWNER_ROLE")
                .unwrap_or_else(|| "tenantry_owner".into()),
            app: vars
                .get("DB_APP_ROLE")
                .unwrap_or_else(|| "tenantry_app".into()),
            admin: vars
                .get("DB_ADMIN_ROLE")
                .unwrap_or_else(|| "tenantry_admin".into()),
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
        let app_database_url = match vars.get("APP_DATABASE_URL") {
            Some(url) => url,
            None => with_user(&database_url, &roles.app)?,
        };
        let admin_database_url = match vars.get("ADMIN_DATABASE_URL") {
            Some(url) => url,
            None => with_user(&database_url, &roles.admin)?,
        };
        let (jwt_secret, jwt_secret_generated) = match vars.get("JWT_SECRET") {
            Some(secret) if secret.chars().count() < JWT_SECRET_MIN_CHARS => {
                return Err(ConfigError::Invalid {
                    name: "JWT_SECRET",
                    reason: format!("use at least {JWT_SECRET_MIN_CHARS} characters"),
                })
            }
            Some(secret) => (secret, false),
            None => (crate::auth::random_token(48), true),
        };
        let log_format = match vars.get("LOG_FORMAT").as_deref().map(str::trim) {
            None | Some("json") => LogFormat::Json,
            Some("pretty") => LogFormat::Pretty,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "LOG_FORMAT",
                    reason: format!("expected json or pretty, got {other:?}"),
                })
            }
        };
        let app_pool_size = vars.number("APP_POOL_SIZE", 16, POOL_SIZE)?;
        let tenant_max_connections =
            vars.optional_number("TENANT_MAX_CONNECTIONS", 1..=*POOL_SIZE.end())?;
        if let Some(n) = tenant_max_connections.filter(|n| *n > app_pool_size) {
            return Err(ConfigError::OutOfRange {
                name: "TENANT_MAX_CONNECTIONS",
                min: "1".into(),
                max: format!("APP_POOL_SIZE ({app_pool_size})"),
                got: n.to_string(),
            });
        }
        let bind = vars.get("BIND").unwrap_or_else(|| "127.0.0.1:8080".into());
        let (secrets_key, secrets_key_generated, secrets_key_previous) =
            secrets_keys(&vars, &bind)?;
        Ok(Config {
            database_url: database_url.into(),
            app_database_url: app_database_url.into(),
            admin_database_url: admin_database_url.into(),
            roles,
            redis_url: vars
                .get("REDIS_URL")
                .unwrap_or_else(|| "redis://127.0.0.1:6379".into())
                .into(),
            bind,
            platform_admin_token: vars.get("PLATFORM_ADMIN_TOKEN").map(Into::into),
            jwt_secret: jwt_secret.into(),
            jwt_secret_generated,
            jwt_ttl: Duration::from_secs(vars.number("JWT_TTL_SECONDS", 3600, JWT_TTL_SECONDS)?),
            base_domain: vars
                .get("BASE_DOMAIN")
                .unwrap_or_else(|| "localhost".into())
                .to_ascii_lowercase(),
            log_format,
            app_pool_size,
            app_shared_pool_size: vars.number("APP_SHARED_POOL_SIZE", 8, POOL_SIZE)?,
            admin_pool_size: vars.number("ADMIN_POOL_SIZE", 4, POOL_SIZE)?,
            owner_pool_size: vars.number("OWNER_POOL_SIZE", 4, POOL_SIZE)?,
            tenant_schemas_per_connection: vars.number(
                "TENANT_SCHEMAS_PER_CONNECTION",
                500,
                TENANT_SCHEMAS_PER_CONNECTION,
            )?,
            statement_timeout: Duration::from_millis(vars.number(
                "STATEMENT_TIMEOUT_MS",
                5000,
                STATEMENT_TIMEOUT_MS,
            )?),
            retention: Duration::from_secs(
                vars.number("TENANT_RETENTION_DAYS", 30, TENANT_RETENTION_DAYS)? * 86_400,
            ),
            webhook_allow_private_targets: vars.bool("WEBHOOK_ALLOW_PRIVATE_TARGETS", false)?,
            actor_idle_timeout: Duration::from_secs(vars.number(
                "ACTOR_IDLE_SECONDS",
                300,
                ACTOR_IDLE_SECONDS,
            )?),
            actor_mailbox_capacity: vars.number("ACTOR_MAILBOX_CAPACITY", 256, ACTOR_QUEUE)?,
            actor_max_in_flight: vars.number("ACTOR_MAX_IN_FLIGHT", 256, ACTOR_QUEUE)?,
            actor_arbiters: vars.number("ACTOR_ARBITERS", 0, ACTOR_ARBITERS)?,
            tenant_max_connections,
            cache_ttl: Duration::from_secs(vars.number(
                "CACHE_TTL_SECONDS",
                30,
                CACHE_TTL_SECONDS,
            )?),
            fault_injection: false,
            job_worker: vars.bool("JOB_WORKER", true)?,
            api_calls_flush_interval: Duration::from_millis(vars.number(
                "API_CALLS_FLUSH_MS",
                10_000,
                API_CALLS_FLUSH_MS,
            )?),
            job_poll_interval: Duration::from_millis(vars.number(
                "JOB_POLL_INTERVAL_MS",
                500,
                JOB_POLL_INTERVAL_MS,
            )?),
            rate_limits: rate_limit_settings(&vars)?,
            billing: billing_settings(&vars)?,
            default_tenant: default_tenant(&vars)?,
            secrets_key,
            secrets_key_generated,
            secrets_key_previous,
            tls: tls_files(&vars)?,
            wakes: std::sync::Arc::default(),
        })
    }

    /// Connections of its host thread's pool one tenant may hold at once, when `hosts` threads
    /// host the tenant actors and each has `share` of APP_POOL_SIZE. The derived default fits
    /// in the share; an explicit TENANT_MAX_CONNECTIONS above it is an error, not a clamp.
    pub fn tenant_connections(&self, hosts: usize, share: usize) -> Result<usize, ConfigError> {
        match self.tenant_max_connections {
            None => Ok((self.app_pool_size / 4).max(2).min(share)),
            Some(n) if n <= share => Ok(n),
            Some(n) => Err(ConfigError::TenantConnectionsAboveShare {
                tenant_max: n,
                app_pool_size: self.app_pool_size,
                hosts,
                share,
            }),
        }
    }

    /// What the server warns about when it starts: settings that work but should not reach a
    /// production deployment unnoticed.
    pub fn startup_warnings(&self) -> Vec<&'static str> {
        let mut warnings = Vec::new();
        if self.jwt_secret_generated {
            warnings.push(
                "JWT_SECRET is not set: generated one for this run; tokens will not survive a restart",
            );
        }
        if self.tls.is_none() && !bind_is_loopback(&self.bind) {
            warnings.push(
                "BIND is not a loopback address and TLS_CERT_FILE is not set: plain HTTP is served \
                 to the network; set TLS_CERT_FILE and TLS_KEY_FILE or terminate TLS in front",
            );
        }
        if self.secrets_key_generated {
            warnings.push(
                "SECRETS_KEY is not set: generated one for this run; secrets stored now will not \
                 open after a restart",
            );
        }
        if self.platform_admin_token.is_none() {
            warnings.push("PLATFORM_ADMIN_TOKEN is not set: operator endpoints answer 401");
        }
        if !self.rate_limits.tenants {
            warnings.push("TENANT_RATE_LIMITS is off: tenants' requests are not rate limited");
        }
        if self.webhook_allow_private_targets {
            warnings.push(
                "WEBHOOK_ALLOW_PRIVATE_TARGETS is on: webhook URLs may reach loopback and private \
                 networks; use it for tests and development only",
            );
        }
        warnings
    }
}

fn rate_limit_settings<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
) -> Result<RateLimitSettings, ConfigError> {
    use limits::*;
    let trusted_proxies = match vars.get("TRUSTED_PROXIES") {
        None => Vec::new(),
        Some(list) => list
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|item| !item.is_empty())
            .map(|item| {
                item.parse::<ipnet::IpNet>()
                    .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| ConfigError::Invalid {
                        name: "TRUSTED_PROXIES",
                        reason: format!("{item:?} is not an IP address or a CIDR block"),
                    })
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(RateLimitSettings {
        tenants: vars.bool("TENANT_RATE_LIMITS", true)?,
        instances: vars.number("RATE_LIMIT_INSTANCES", 1, RATE_LIMIT_INSTANCES)?,
        login_attempts_per_minute: vars.number(
            "LOGIN_ATTEMPTS_PER_MINUTE",
            10,
            LOGIN_ATTEMPTS_PER_MINUTE,
        )?,
        public_requests_per_minute: vars.number(
            "PUBLIC_REQUESTS_PER_MINUTE",
            120,
            PUBLIC_REQUESTS_PER_MINUTE,
        )?,
        trusted_proxies,
    })
}

fn billing_settings<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
) -> Result<BillingSettings, ConfigError> {
    let stripe_api_base = vars
        .get("STRIPE_API_BASE")
        .unwrap_or_else(|| "https://api.stripe.com/".into());
    if !(stripe_api_base.starts_with("https://") || stripe_api_base.starts_with("http://")) {
        return Err(ConfigError::Invalid {
            name: "STRIPE_API_BASE",
            reason: "expected an http(s) URL".into(),
        });
    }
    Ok(BillingSettings {
        stripe_secret_key: vars.get("STRIPE_SECRET_KEY").map(Into::into),
        stripe_api_base,
        stripe_webhook_secrets: vars
            .get("STRIPE_WEBHOOK_SECRET")
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| SecretString::from(s.to_string()))
                    .collect()
            })
            .unwrap_or_default(),
        grace_days: vars.number("BILLING_GRACE_DAYS", 7, limits::BILLING_GRACE_DAYS)?,
    })
}

/// SECRETS_KEY (generated when unset, but only on a loopback BIND: a reachable server must
/// not lose its secrets at a restart) and SECRETS_KEY_PREVIOUS (comma-separated).
fn secrets_keys<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
    bind: &str,
) -> Result<(SecretString, bool, Vec<SecretString>), ConfigError> {
    let check = |name: &'static str, text: String| {
        if crate::secrets::SecretKey::from_base64(&text).is_some() {
            Ok(SecretString::from(text.trim().to_string()))
        } else {
            Err(ConfigError::Invalid {
                name,
                reason: "expected standard base64 of 32 bytes (openssl rand -base64 32)".into(),
            })
        }
    };
    let (key, generated) = match vars.get("SECRETS_KEY") {
        Some(text) => (check("SECRETS_KEY", text)?, false),
        None if bind_is_loopback(bind) => (crate::secrets::SecretKey::generate_base64(), true),
        None => {
            return Err(ConfigError::Invalid {
                name: "SECRETS_KEY",
                reason: format!(
                    "required when BIND ({bind}) is not a loopback address: stored secrets \
                     sealed under a key generated per run would not open after a restart"
                ),
            })
        }
    };
    let previous = match vars.get("SECRETS_KEY_PREVIOUS") {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .filter(|item| !item.trim().is_empty())
            .map(|item| check("SECRETS_KEY_PREVIOUS", item.to_string()))
            .collect::<Result<_, _>>()?,
    };
    Ok((key, generated, previous))
}

fn tls_files<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
) -> Result<Option<crate::http::tls::TlsFiles>, ConfigError> {
    match (vars.get("TLS_CERT_FILE"), vars.get("TLS_KEY_FILE")) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(crate::http::tls::TlsFiles {
            cert: cert.trim().into(),
            key: key.trim().into(),
        })),
        (Some(_), None) => Err(ConfigError::Invalid {
            name: "TLS_KEY_FILE",
            reason: "TLS_CERT_FILE is set: set both or neither".into(),
        }),
        (None, Some(_)) => Err(ConfigError::Invalid {
            name: "TLS_CERT_FILE",
            reason: "TLS_KEY_FILE is set: set both or neither".into(),
        }),
    }
}

/// Whether BIND only listens on this machine (`127.0.0.0/8`, `::1`, `localhost`).
pub fn bind_is_loopback(bind: &str) -> bool {
    let host = match bind.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => bind,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn default_tenant<F: Fn(&str) -> Option<String>>(
    vars: &Vars<F>,
) -> Result<Option<String>, ConfigError> {
    let Some(slug) = vars.get("DEFAULT_TENANT") else {
        return Ok(None);
    };
    let slug = slug.trim().to_string();
    if !crate::tenancy::validate::is_slug_shaped(&slug) {
        return Err(ConfigError::Invalid {
            name: "DEFAULT_TENANT",
            reason: format!("{slug:?} is not a tenant slug"),
        });
    }
    Ok(Some(slug))
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
    use std::collections::HashMap;

    use secrecy::ExposeSecret;

    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_vars(|name| vars.get(name).cloned())
    }

    /// The message of the error `vars` give, which must name `variable`.
    fn rejected(vars: &[(&str, &str)], variable: &str) -> String {
        let message = match parse(vars) {
            Ok(config) => panic!("{vars:?} was accepted: {config:?}"),
            Err(err) => err.to_string(),
        };
        assert!(
            message.starts_with(variable),
            "{vars:?}: {message:?} does not name {variable}"
        );
        message
    }

    #[test]
    fn defaults_are_accepted() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.app_pool_size, 16);
        assert_eq!(config.app_shared_pool_size, 8);
        assert_eq!((config.admin_pool_size, config.owner_pool_size), (4, 4));
        assert_eq!(config.tenant_schemas_per_connection, 500);
        assert_eq!(config.statement_timeout, Duration::from_millis(5000));
        assert_eq!(config.retention, Duration::from_secs(30 * 86_400));
        assert_eq!(config.jwt_ttl, Duration::from_secs(3600));
        assert_eq!(config.actor_idle_timeout, Duration::from_secs(300));
        assert_eq!(
            (config.actor_mailbox_capacity, config.actor_max_in_flight),
            (256, 256)
        );
        assert_eq!(config.actor_arbiters, 0);
        assert_eq!(config.tenant_max_connections, None);
        assert_eq!(config.cache_ttl, Duration::from_secs(30));
        assert_eq!(
            config.api_calls_flush_interval,
            Duration::from_millis(10_000)
        );
        assert_eq!(config.job_poll_interval, Duration::from_millis(500));
        assert!(config.job_worker);
        assert!(!config.webhook_allow_private_targets);
        assert!(config.jwt_secret_generated);
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.database_url.expose_secret(), DEFAULT_DATABASE_URL);
        assert_eq!(
            config.app_database_url.expose_secret(),
            "postgres://tenantry_app@127.0.0.1:5432/tenantry"
        );
    }

    #[test]
    fn values_inside_their_ranges_are_accepted() {
        let config = parse(&[
            ("APP_POOL_SIZE", "1000"),
            ("APP_SHARED_POOL_SIZE", "1"),
            ("ADMIN_POOL_SIZE", " 1 "),
            ("OWNER_POOL_SIZE", "1000"),
            ("TENANT_SCHEMAS_PER_CONNECTION", "1"),
            ("STATEMENT_TIMEOUT_MS", "10"),
            ("TENANT_RETENTION_DAYS", "0"),
            ("JWT_TTL_SECONDS", "604800"),
            ("ACTOR_IDLE_SECONDS", "1"),
            ("ACTOR_MAILBOX_CAPACITY", "65536"),
            ("ACTOR_MAX_IN_FLIGHT", "1"),
            ("ACTOR_ARBITERS", "256"),
            ("TENANT_MAX_CONNECTIONS", "1000"),
            ("CACHE_TTL_SECONDS", "0"),
            ("API_CALLS_FLUSH_MS", "3600000"),
            ("JOB_POLL_INTERVAL_MS", "10"),
            ("JOB_WORKER", "off"),
            ("WEBHOOK_ALLOW_PRIVATE_TARGETS", "TRUE"),
            ("LOG_FORMAT", "pretty"),
        ])
        .unwrap();
        assert_eq!(config.app_pool_size, 1000);
        assert_eq!(config.admin_pool_size, 1);
        assert_eq!(config.retention, Duration::ZERO);
        assert_eq!(config.actor_arbiters, 256);
        assert_eq!(config.tenant_max_connections, Some(1000));
        assert_eq!(config.cache_ttl, Duration::ZERO);
        assert!(!config.job_worker);
        assert!(config.webhook_allow_private_targets);
        assert_eq!(config.log_format, LogFormat::Pretty);
    }

    #[test]
    fn values_outside_their_ranges_stop_the_process() {
        assert_eq!(
            rejected(&[("ADMIN_POOL_SIZE", "0")], "ADMIN_POOL_SIZE"),
            "ADMIN_POOL_SIZE must be between 1 and 1000, got 0"
        );
        let cases: &[(&str, &str, &str)] = &[
            ("APP_POOL_SIZE", "0", "between 1 and 1000"),
            ("APP_POOL_SIZE", "1001", "between 1 and 1000"),
            ("APP_SHARED_POOL_SIZE", "0", "between 1 and 1000"),
            ("OWNER_POOL_SIZE", "0", "between 1 and 1000"),
            ("TENANT_SCHEMAS_PER_CONNECTION", "0", "between 1 and 100000"),
            ("STATEMENT_TIMEOUT_MS", "0", "between 10 and 3600000"),
            ("TENANT_RETENTION_DAYS", "3651", "between 0 and 3650"),
            ("JWT_TTL_SECONDS", "59", "between 60 and 604800"),
            ("ACTOR_IDLE_SECONDS", "0", "between 1 and 86400"),
            ("ACTOR_MAILBOX_CAPACITY", "0", "between 1 and 65536"),
            ("ACTOR_MAX_IN_FLIGHT", "65537", "between 1 and 65536"),
            ("ACTOR_ARBITERS", "257", "between 0 and 256"),
            ("TENANT_MAX_CONNECTIONS", "0", "between 1 and 1000"),
            ("CACHE_TTL_SECONDS", "3601", "between 0 and 3600"),
            ("API_CALLS_FLUSH_MS", "9", "between 10 and 3600000"),
            ("JOB_POLL_INTERVAL_MS", "60001", "between 10 and 60000"),
        ];
        for (name, value, range) in cases {
            let message = rejected(&[(name, value)], name);
            assert!(
                message.contains(range) && message.ends_with(&format!("got {value}")),
                "{name}={value}: {message:?}"
            );
        }
    }

    #[test]
    fn values_that_do_not_parse_name_the_variable_and_the_range() {
        for (name, value) in [
            ("APP_POOL_SIZE", "sixteen"),
            ("ADMIN_POOL_SIZE", "-1"),
            ("STATEMENT_TIMEOUT_MS", "5s"),
            ("TENANT_RETENTION_DAYS", "1.5"),
            ("ACTOR_ARBITERS", "99999999999999999999999"),
        ] {
            let message = rejected(&[(name, value)], name);
            assert!(message.contains("must be between"), "{message}");
        }
        for (name, value) in [
            ("JOB_WORKER", "maybe"),
            ("WEBHOOK_ALLOW_PRIVATE_TARGETS", "2"),
            ("LOG_FORMAT", "xml"),
            ("DB_APP_ROLE", "App; drop"),
            ("JWT_SECRET", "too-short"),
        ] {
            rejected(&[(name, value)], name);
        }
    }

    #[test]
    fn tenant_connections_are_checked_against_the_pool_not_clamped() {
        assert_eq!(
            rejected(
                &[("APP_POOL_SIZE", "8"), ("TENANT_MAX_CONNECTIONS", "9")],
                "TENANT_MAX_CONNECTIONS"
            ),
            "TENANT_MAX_CONNECTIONS must be between 1 and APP_POOL_SIZE (8), got 9"
        );
        let config = parse(&[("APP_POOL_SIZE", "16"), ("TENANT_MAX_CONNECTIONS", "5")]).unwrap();
        // Two threads host actors: 8 connections each.
        assert_eq!(config.tenant_connections(2, 8).unwrap(), 5);
        // Four threads: 4 each, fewer than the 5 asked for.
        let message = config.tenant_connections(4, 4).unwrap_err().to_string();
        assert!(
            message.starts_with("TENANT_MAX_CONNECTIONS (5)")
                && message.contains("APP_POOL_SIZE (16 connections over 4 thread(s)"),
            "{message}"
        );
        // Unset, the default is derived: a quarter of the pool, at least 2, within the share.
        let derived = parse(&[("APP_POOL_SIZE", "16")]).unwrap();
        assert_eq!(derived.tenant_connections(2, 8).unwrap(), 4);
        assert_eq!(derived.tenant_connections(8, 2).unwrap(), 2);
        let small = parse(&[("APP_POOL_SIZE", "1")]).unwrap();
        assert_eq!(small.tenant_connections(2, 1).unwrap(), 1);
    }

    #[test]
    fn rate_limit_settings() {
        let defaults = parse(&[]).unwrap().rate_limits;
        assert!(defaults.tenants);
        assert_eq!(defaults.instances, 1);
        assert_eq!(defaults.login_attempts_per_minute, 10);
        assert_eq!(defaults.public_requests_per_minute, 120);
        assert!(defaults.trusted_proxies.is_empty());

        let set = parse(&[
            ("TENANT_RATE_LIMITS", "off"),
            ("RATE_LIMIT_INSTANCES", "1000"),
            ("LOGIN_ATTEMPTS_PER_MINUTE", "1"),
            ("PUBLIC_REQUESTS_PER_MINUTE", "1000000"),
            ("TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8 ::1,fd00::/8"),
        ])
        .unwrap()
        .rate_limits;
        assert!(!set.tenants);
        assert_eq!(set.instances, 1000);
        assert_eq!(set.login_attempts_per_minute, 1);
        assert_eq!(set.public_requests_per_minute, 1_000_000);
        let proxies: Vec<String> = set.trusted_proxies.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            proxies,
            ["127.0.0.1/32", "10.0.0.0/8", "::1/128", "fd00::/8"]
        );

        for (name, value, range) in [
            ("RATE_LIMIT_INSTANCES", "0", "between 1 and 1000"),
            ("RATE_LIMIT_INSTANCES", "1001", "between 1 and 1000"),
            ("LOGIN_ATTEMPTS_PER_MINUTE", "0", "between 1 and 10000"),
            ("LOGIN_ATTEMPTS_PER_MINUTE", "10001", "between 1 and 10000"),
            ("PUBLIC_REQUESTS_PER_MINUTE", "0", "between 1 and 1000000"),
            (
                "PUBLIC_REQUESTS_PER_MINUTE",
                "1000001",
                "between 1 and 1000000",
            ),
        ] {
            let message = rejected(&[(name, value)], name);
            assert!(message.contains(range), "{name}={value}: {message}");
        }
        rejected(&[("TENANT_RATE_LIMITS", "sometimes")], "TENANT_RATE_LIMITS");
        rejected(&[("RATE_LIMIT_INSTANCES", "two")], "RATE_LIMIT_INSTANCES");
        for bad in ["10.0.0.0/33", "localhost", "127.0.0.1;", "1.2.3"] {
            let message = rejected(&[("TRUSTED_PROXIES", bad)], "TRUSTED_PROXIES");
            assert!(message.contains("not an IP address"), "{message}");
        }
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let config = parse(&[
            ("JWT_SECRET", "jwt-secret-jwt-secret-jwt-secret-0001"),
            ("PLATFORM_ADMIN_TOKEN", "operator-token-0002"),
            (
                "DATABASE_URL",
                "postgres://owner:owner-password-0003@db:5432/tenantry",
            ),
            (
                "APP_DATABASE_URL",
                "postgres://app:app-password-0004@db:5432/tenantry",
            ),
            (
                "ADMIN_DATABASE_URL",
                "postgres://admin:admin-password-0005@db:5432/tenantry",
            ),
            ("REDIS_URL", "redis://:redis-password-0006@cache:6379"),
        ])
        .unwrap();
        let debug = format!("{config:?}");
        for secret in [
            "jwt-secret-jwt-secret",
            "operator-token-0002",
            "owner-password-0003",
            "app-password-0004",
            "admin-password-0005",
            "redis-password-0006",
        ] {
            assert!(!debug.contains(secret), "{secret} shows in {debug}");
        }
        assert!(debug.contains("REDACTED"));
        assert_eq!(
            config.jwt_secret.expose_secret(),
            "jwt-secret-jwt-secret-jwt-secret-0001"
        );
        assert_eq!(
            config
                .platform_admin_token
                .as_ref()
                .map(|t| t.expose_secret()),
            Some("operator-token-0002")
        );
    }

    #[test]
    fn startup_warnings() {
        let quiet = parse(&[
            ("JWT_SECRET", "jwt-secret-jwt-secret-jwt-secret-0001"),
            ("PLATFORM_ADMIN_TOKEN", "operator-token"),
            ("SECRETS_KEY", KEY_A),
        ])
        .unwrap();
        assert!(quiet.startup_warnings().is_empty());
        let loud = parse(&[("WEBHOOK_ALLOW_PRIVATE_TARGETS", "true")]).unwrap();
        let warnings = loud.startup_warnings();
        assert_eq!(warnings.len(), 4, "{warnings:?}");
        assert!(warnings
            .iter()
            .any(|w| w.starts_with("WEBHOOK_ALLOW_PRIVATE_TARGETS is on")));
    }

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

    const KEY_A: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    const KEY_B: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

    #[test]
    fn secrets_keys() {
        let dev = parse(&[]).unwrap();
        assert!(dev.secrets_key_generated);
        assert!(dev.secrets_key_previous.is_empty());
        crate::secrets::Keyring::from_config(&dev).unwrap();

        let set = parse(&[
            ("SECRETS_KEY", KEY_A),
            ("SECRETS_KEY_PREVIOUS", &format!(" {KEY_B} ,")),
            ("BIND", "0.0.0.0:8080"),
        ])
        .unwrap();
        assert!(!set.secrets_key_generated);
        assert_eq!(set.secrets_key.expose_secret(), KEY_A);
        assert_eq!(set.secrets_key_previous.len(), 1);
        assert!(!format!("{set:?}").contains(KEY_B));

        // Reachable from other machines, the key must be given.
        for bind in [
            "0.0.0.0:8080",
            "10.1.2.3:80",
            "[::]:8080",
            "tenantry.internal:8080",
        ] {
            let message = rejected(&[("BIND", bind)], "SECRETS_KEY");
            assert!(message.contains("required when BIND"), "{message}");
        }
        for bind in [
            "127.0.0.1:8080",
            "127.1.2.3:1",
            "[::1]:8080",
            "localhost:8080",
        ] {
            assert!(
                parse(&[("BIND", bind)]).unwrap().secrets_key_generated,
                "{bind}"
            );
        }
        for bad in ["short", "AQEBAQ==", &format!("{KEY_A}AA")] {
            rejected(&[("SECRETS_KEY", bad)], "SECRETS_KEY");
            rejected(
                &[("SECRETS_KEY", KEY_A), ("SECRETS_KEY_PREVIOUS", bad)],
                "SECRETS_KEY_PREVIOUS",
            );
        }
        // The same key twice cannot be told apart in stored values.
        let twice = parse(&[("SECRETS_KEY", KEY_A), ("SECRETS_KEY_PREVIOUS", KEY_A)]).unwrap();
        assert!(crate::secrets::Keyring::from_config(&twice).is_err());
    }

    #[test]
    fn tls_files_come_in_pairs_and_plain_http_to_the_network_is_warned_about() {
        assert_eq!(parse(&[]).unwrap().tls, None);
        let tls = parse(&[
            ("TLS_CERT_FILE", "/etc/t/cert.pem"),
            ("TLS_KEY_FILE", "/etc/t/key.pem"),
        ])
        .unwrap()
        .tls
        .unwrap();
        assert_eq!(tls.cert, std::path::PathBuf::from("/etc/t/cert.pem"));
        assert_eq!(tls.key, std::path::PathBuf::from("/etc/t/key.pem"));
        rejected(&[("TLS_CERT_FILE", "/etc/t/cert.pem")], "TLS_KEY_FILE");
        rejected(&[("TLS_KEY_FILE", "/etc/t/key.pem")], "TLS_CERT_FILE");

        let plain = |vars: &[(&str, &str)]| {
            parse(vars)
                .unwrap()
                .startup_warnings()
                .iter()
                .any(|w| w.contains("plain HTTP is served to the network"))
        };
        assert!(!plain(&[]));
        assert!(plain(&[("BIND", "0.0.0.0:8080"), ("SECRETS_KEY", KEY_A)]));
        assert!(!plain(&[
            ("BIND", "0.0.0.0:8080"),
            ("SECRETS_KEY", KEY_A),
            ("TLS_CERT_FILE", "c.pem"),
            ("TLS_KEY_FILE", "k.pem"),
        ]));
    }

    #[test]
    fn default_tenant() {
        assert_eq!(parse(&[]).unwrap().default_tenant, None);
        assert_eq!(
            parse(&[("DEFAULT_TENANT", " acme ")])
                .unwrap()
                .default_tenant
                .as_deref(),
            Some("acme")
        );
        for bad in ["Acme", "acme corp", "-acme"] {
            rejected(&[("DEFAULT_TENANT", bad)], "DEFAULT_TENANT");
        }
    }

    #[test]
    fn identifiers() {
        assert!(is_plain_identifier("tenantry_app"));
        assert!(!is_plain_identifier("app; drop"));
        assert!(!is_plain_identifier("App"));
    }
}
