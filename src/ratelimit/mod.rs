//! Rate limits (docs/rate-limits.md): every tenant request within its plan's
//! `rate_limit_per_minute`, login attempts per tenant and client address, and the public
//! endpoints per client address.
//!
//! The tenant limit is answered from memory: each tenant's [`TenantLimiter`] lives in the actor
//! registry's entry beside the actor (created at activation, dropped at eviction), and holds a
//! GCRA (the `governor` crate) and a budget of requests leased from Redis a slice at a time.
//! Redis counts the slices handed out per tenant and window, so all instances together admit no
//! more than the limit in a window, with one Redis round trip per slice instead of one per
//! request. Login and public endpoints are rare and cheap to count: one Redis counter per
//! request.
//!
//! Redis unreachable or slow: each instance enforces its share of every limit on its own (the
//! limit divided by RATE_LIMIT_INSTANCES), logs it once, and asks Redis again once a second;
//! nothing fails open.
//!
//! This area knows nothing of HTTP: it answers with a [`Quota`] (the values of the `RateLimit-*`
//! headers) or a [`RateLimitError`], which `http::problem` turns into a 429.

mod authority;
pub mod client;
mod local;
mod tenant;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntCounterVec, Opts};
use thiserror::Error;
use uuid::Uuid;

use crate::config::{Config, RateLimitSettings};
pub use authority::Authority;
use local::LocalWindows;
pub use tenant::TenantLimiter;
use tenant::{Grant, Take};

/// Every limit here counts over windows of one minute.
pub const WINDOW: Duration = Duration::from_secs(60);

/// The `metric` of a 429 body, one per limit.
pub const TENANT_METRIC: &str = "requests_per_minute";
pub const LOGIN_METRIC: &str = "login_attempts_per_minute";
pub const PUBLIC_METRIC: &str = "requests_per_minute_per_client_address";

/// Where a limit stands after a request was admitted: the values of the `RateLimit-Limit`,
/// `RateLimit-Remaining` and `RateLimit-Reset` headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    pub limit: u64,
    pub remaining: u64,
    /// Until the window ends and the limit is whole again.
    pub reset: Duration,
}

impl Quota {
    /// Whole seconds, rounded up: a client that waits this long finds the window over.
    pub fn reset_seconds(&self) -> u64 {
        ceil_seconds(self.reset)
    }
}

pub fn ceil_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[derive(Debug, Error)]
pub enum RateLimitError {
    /// Over a limit: the request is refused. `quota` has nothing remaining.
    #[error("{metric}: the limit of {limit} a minute is reached; retry in {}s", ceil_seconds(*retry_after))]
    Limited {
        metric: &'static str,
        limit: u64,
        used: u64,
        retry_after: Duration,
    },
    /// Redis did not answer in time. Never reaches a client: the instance enforces its share.
    #[error("Redis did not answer within {0:?}")]
    RedisTimeout(Duration),
    /// Redis is being left alone after a failure. Never reaches a client either.
    #[error("Redis failed recently; not asked again yet")]
    RedisBackingOff,
    #[error("Redis failed")]
    Redis(#[from] redis::RedisError),
}

impl RateLimitError {
    /// The `RateLimit-*` values of a refusal.
    pub fn quota(&self) -> Option<Quota> {
        match self {
            RateLimitError::Limited {
                limit, retry_after, ..
            } => Some(Quota {
                limit: *limit,
                remaining: 0,
                reset: *retry_after,
            }),
            _ => None,
        }
    }
}

/// How much of a limit one lease from Redis hands an instance: a tenth of the limit divided
/// over the expected instances, at least 1. A busy tenant then costs about 10 Redis calls a
/// minute per instance, and an instance that stops getting a tenant's requests strands at most
/// one slice (the others cannot use it until the window ends).
pub fn slice(limit: u32, instances: u32) -> u32 {
    limit.div_ceil(instances.max(1).saturating_mul(10)).max(1)
}

/// What one instance admits on its own while Redis does not answer: its even share of the
/// limit, at least 1 (so a limit below the instance count is exceeded by at most the count).
pub fn share(limit: u32, instances: u32) -> u32 {
    (limit / instances.max(1)).max(1)
}

/// The process's rate limiting: the Redis authority, the local fallback, the settings.
pub struct RateLimits {
    settings: RateLimitSettings,
    authority: Authority,
    local: LocalWindows,
    /// Prefix of every key: deployments that share a Redis (and tests, which share one Redis
    /// across databases) do not share counters; instances of one deployment share a database.
    namespace: String,
    metrics: RateLimitMetrics,
}

/// What operators see in `/metrics` (registered by [`register_metrics`]).
#[derive(Clone)]
struct RateLimitMetrics {
    /// Requests refused with 429, by `metric`.
    refused: IntCounterVec,
    /// Decisions this instance took on its own share because Redis did not answer.
    local_decisions: IntCounter,
}

impl RateLimitMetrics {
    fn new() -> Self {
        // The definitions are constants: only a programming error makes them fail, and the first
        // test that builds the application would show it.
        let refused = IntCounterVec::new(
            Opts::new("rate_limited_total", "Requests refused with 429, by limit"),
            &["metric"],
        )
        .unwrap_or_else(|e| panic!("invalid metric definition: {e}"));
        let local_decisions = IntCounter::new(
            "rate_limit_local_decisions_total",
            "Rate limit decisions taken on this instance's share because Redis did not answer",
        )
        .unwrap_or_else(|e| panic!("invalid metric definition: {e}"));
        RateLimitMetrics {
            refused,
            local_decisions,
        }
    }
}

/// Adds the rate limit counters to the process's registry.
pub fn register_metrics(
    limits: &RateLimits,
    registry: &prometheus::Registry,
) -> prometheus::Result<()> {
    registry.register(Box::new(limits.metrics.refused.clone()))?;
    registry.register(Box::new(limits.metrics.local_decisions.clone()))
}

impl RateLimits {
    pub fn new(config: &Config, redis: redis::Client) -> Self {
        use secrecy::ExposeSecret;
        RateLimits {
            settings: config.rate_limits.clone(),
            authority: Authority::new(redis),
            local: LocalWindows::default(),
            namespace: namespace(config.database_url.expose_secret()),
            metrics: RateLimitMetrics::new(),
        }
    }

    pub fn settings(&self) -> &RateLimitSettings {
        &self.settings
    }

    /// The Redis authority, shared with the metered quotas (`usage::quota`): one connection,
    /// one back-off while Redis does not answer.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The prefix of every Redis key of this deployment.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Admits one request of `tenant` within `per_minute`, from the tenant's limiter in memory;
    /// a Redis round trip only when the instance's leased slice is used up.
    pub async fn check_tenant(
        &self,
        limiter: &TenantLimiter,
        tenant: Uuid,
        per_minute: u32,
    ) -> Result<Quota, RateLimitError> {
        let outcome = self.admit_tenant(limiter, tenant, per_minute).await;
        self.count_refusal(&outcome);
        outcome
    }

    async fn admit_tenant(
        &self,
        limiter: &TenantLimiter,
        tenant: Uuid,
        per_minute: u32,
    ) -> Result<Quota, RateLimitError> {
        let instances = self.settings.instances;
        let Some(budget) = limiter.budget(per_minute, instances) else {
            return Err(RateLimitError::Limited {
                metric: TENANT_METRIC,
                limit: 0,
                used: 0,
                retry_after: WINDOW,
            });
        };
        // Each pass either answers or leases; a lease leaves tokens or an exhausted window, so
        // the second pass answers unless the window ended meanwhile.
        for _ in 0..3 {
            match budget.take(Instant::now()) {
                Take::Admitted(quota) => return Ok(quota),
                Take::Refused(err) => return Err(err),
                Take::Empty => {}
            }
            // One lease at a time per tenant; who waited here finds the tokens it brought.
            let _turn = budget.lease_turn().await;
            if !budget.needs_lease(Instant::now()) {
                continue;
            }
            let sent = Instant::now();
            let grant = match self
                .authority
                .lease(
                    &self.tenant_key(tenant, per_minute),
                    per_minute,
                    budget.slice(),
                )
                .await
            {
                Ok(lease) => Grant::leased(lease, per_minute),
                Err(_) => {
                    self.metrics.local_decisions.inc();
                    Grant::local_share(share(per_minute, instances))
                }
            };
            if budget.apply(grant, sent) {
                match budget.take_own(Instant::now()) {
                    Take::Admitted(quota) => return Ok(quota),
                    Take::Refused(err) => return Err(err),
                    Take::Empty => {}
                }
            }
        }
        Err(RateLimitError::Limited {
            metric: TENANT_METRIC,
            limit: u64::from(per_minute),
            used: u64::from(per_minute),
            retry_after: Duration::from_secs(1),
        })
    }

    /// Counts one login attempt of `client` on `tenant`.
    pub async fn login_attempt(
        &self,
        tenant: Uuid,
        client: Option<IpAddr>,
    ) -> Result<Quota, RateLimitError> {
        let key = format!(
            "{}:login:{{{tenant}}}:{}",
            self.namespace,
            client_label(client)
        );
        self.count(key, self.settings.login_attempts_per_minute, LOGIN_METRIC)
            .await
    }

    /// Counts one request of `client` to the public endpoint `policy`.
    pub async fn public_request(
        &self,
        policy: &str,
        client: Option<IpAddr>,
    ) -> Result<Quota, RateLimitError> {
        let key = format!(
            "{}:public:{policy}:{{{}}}",
            self.namespace,
            client_label(client)
        );
        self.count(key, self.settings.public_requests_per_minute, PUBLIC_METRIC)
            .await
    }

    fn count_refusal<T>(&self, outcome: &Result<T, RateLimitError>) {
        if let Err(RateLimitError::Limited { metric, .. }) = outcome {
            self.metrics.refused.with_label_values(&[metric]).inc();
        }
    }

    /// One count per tenant, window and limit: a plan change starts a count of its own, since
    /// the slices leased under a higher limit (unused, but counted) would otherwise refuse
    /// every request under a lower one until the window ends.
    fn tenant_key(&self, tenant: Uuid, per_minute: u32) -> String {
        format!("{}:rate:{{{tenant}}}:{per_minute}", self.namespace)
    }

    /// A fixed window counter in Redis (one round trip), or this instance's share of it in
    /// memory while Redis does not answer.
    async fn count(
        &self,
        key: String,
        limit: u32,
        metric: &'static str,
    ) -> Result<Quota, RateLimitError> {
        let (limit, used, reset) = match self.authority.count(&key).await {
            Ok((used, reset)) => (limit, used, reset),
            Err(_) => {
                self.metrics.local_decisions.inc();
                let (used, reset) = self.local.count(key, Instant::now());
                (share(limit, self.settings.instances), used, reset)
            }
        };
        let limit = u64::from(limit);
        if used > limit {
            self.metrics.refused.with_label_values(&[metric]).inc();
            return Err(RateLimitError::Limited {
                metric,
                limit,
                used,
                retry_after: reset,
            });
        }
        Ok(Quota {
            limit,
            remaining: limit - used,
            reset,
        })
    }
}

fn client_label(client: Option<IpAddr>) -> String {
    // Without a peer address (not TCP) every such client shares one counter.
    client.map_or_else(|| "unknown".to_string(), |ip| ip.to_string())
}

/// `tenantry:<database>` from the database URL, in characters safe inside a Redis key (no `{`,
/// which would change the key's hash slot).
fn namespace(database_url: &str) -> String {
    let path = database_url.split(['?', '#']).next().unwrap_or("");
    let after_host = path.split_once("://").map_or(path, |(_, rest)| rest);
    let database = after_host
        .split_once('/')
        .map(|(_, db)| db)
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .collect::<String>();
    if database.is_empty() {
        "tenantry".to_string()
    } else {
        format!("tenantry:{database}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_and_shares() {
        assert_eq!(slice(30, 1), 3);
        assert_eq!(slice(30, 2), 2);
        assert_eq!(slice(1, 1), 1);
        assert_eq!(slice(1, 1000), 1);
        assert_eq!(slice(6000, 3), 200);
        assert_eq!(slice(u32::MAX, 1), u32::MAX.div_ceil(10));
        assert_eq!(share(30, 1), 30);
        assert_eq!(share(30, 2), 15);
        assert_eq!(share(31, 2), 15);
        assert_eq!(share(1, 4), 1);
    }

    #[test]
    fn namespaces() {
        assert_eq!(
            namespace("postgres://postgres@127.0.0.1:5432/tenantry_test_1?sslmode=disable"),
            "tenantry:tenantry_test_1"
        );
        assert_eq!(
            namespace("postgres://u:p@%2Fvar%2Frun%2Fpostgresql/bench"),
            "tenantry:bench"
        );
        assert_eq!(namespace("postgres://host/we{ird}"), "tenantry:weird");
        assert_eq!(namespace("postgres://host"), "tenantry");
    }

    #[test]
    fn a_refusal_has_nothing_remaining() {
        let err = RateLimitError::Limited {
            metric: TENANT_METRIC,
            limit: 30,
            used: 30,
            retry_after: Duration::from_millis(1500),
        };
        let quota = err.quota().unwrap();
        assert_eq!((quota.limit, quota.remaining), (30, 0));
        assert_eq!(quota.reset_seconds(), 2);
        assert!(err.to_string().contains("retry in 2s"), "{err}");
    }
}
