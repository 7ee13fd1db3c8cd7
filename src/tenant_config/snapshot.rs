//! The tenant's configuration as its actor holds it: one immutable value with the tenant row,
//! its plan (limits, features, price), its settings and branding, and its feature flag
//! overrides, stamped with a version. Requests read it from memory (`actors::config`); a change
//! replaces the whole value, never a part of it, so a request sees one consistent
//! configuration from start to end.
//!
//! It is also what Redis holds (`load::SnapshotStore`), as JSON: a value of another
//! [`SNAPSHOT_FORMAT`] is read as a miss, so instances of two versions can share a Redis during
//! a rolling deploy.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::tenancy::model::default_settings;

/// Bumped whenever the serialised shape or meaning changes (2: `flags` holds the overrides).
pub const SNAPSHOT_FORMAT: u32 = 2;

/// The features API.md names; plans may carry more (any `snake_case` name).
pub mod feature {
    pub const API_ACCESS: &str = "api_access";
    pub const WEBHOOKS: &str = "webhooks";
    pub const CUSTOM_INTEGRATIONS: &str = "custom_integrations";
    pub const KNOWN: [&str; 3] = [API_ACCESS, WEBHOOKS, CUSTOM_INTEGRATIONS];
}

/// A limit of a plan. A plan without a value for it (`null`) does not limit it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    MaxUsers,
    ApiCallsPerMonth,
    RateLimitPerMinute,
    WebhookDeliveriesPerMinute,
    AnalyticsRetentionDays,
}

impl Limit {
    pub const ALL: [Limit; 5] = [
        Limit::MaxUsers,
        Limit::ApiCallsPerMonth,
        Limit::RateLimitPerMinute,
        Limit::WebhookDeliveriesPerMinute,
        Limit::AnalyticsRetentionDays,
    ];

    /// Its member in a plan's `limits`.
    pub fn key(self) -> &'static str {
        match self {
            Limit::MaxUsers => "max_users",
            Limit::ApiCallsPerMonth => "api_calls_per_month",
            Limit::RateLimitPerMinute => "rate_limit_per_minute",
            Limit::WebhookDeliveriesPerMinute => "webhook_deliveries_per_minute",
            Limit::AnalyticsRetentionDays => "analytics_retention_days",
        }
    }

    /// What it counts, as a `plan_limit` problem names it (`resource`).
    pub fn resource(self) -> &'static str {
        match self {
            Limit::MaxUsers => "users",
            Limit::ApiCallsPerMonth => "api_calls",
            Limit::RateLimitPerMinute => "requests_per_minute",
            Limit::WebhookDeliveriesPerMinute => "webhook_deliveries_per_minute",
            Limit::AnalyticsRetentionDays => "analytics_retention_days",
        }
    }

    pub fn parse(key: &str) -> Option<Limit> {
        Limit::ALL.into_iter().find(|l| l.key() == key)
    }

    /// The smallest value that makes sense: a plan may allow no users or no API call, but a
    /// request rate or a retention of 0 would make the tenant unusable rather than limited.
    pub fn minimum(self) -> i64 {
        match self {
            Limit::MaxUsers | Limit::ApiCallsPerMonth | Limit::WebhookDeliveriesPerMinute => 0,
            Limit::RateLimitPerMinute | Limit::AnalyticsRetentionDays => 1,
        }
    }
}

/// A plan's limits; `null` is unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Limits {
    /// Live users of the tenant (seats).
    pub max_users: Option<i64>,
    pub api_calls_per_month: Option<i64>,
    /// Requests of the tenant a minute, across instances.
    pub rate_limit_per_minute: Option<i64>,
    /// Outgoing webhook deliveries a minute (more are queued, not dropped).
    pub webhook_deliveries_per_minute: Option<i64>,
    /// Days analytics events are kept.
    pub analytics_retention_days: Option<i64>,
    /// Metered quotas of the billing period per metric of `POST /usage/events` (docs/usage.md);
    /// a metric not listed is unlimited.
    #[serde(default)]
    pub usage_quotas: BTreeMap<String, i64>,
}

impl Limits {
    pub fn get(&self, limit: Limit) -> Option<i64> {
        match limit {
            Limit::MaxUsers => self.max_users,
            Limit::ApiCallsPerMonth => self.api_calls_per_month,
            Limit::RateLimitPerMinute => self.rate_limit_per_minute,
            Limit::WebhookDeliveriesPerMinute => self.webhook_deliveries_per_minute,
            Limit::AnalyticsRetentionDays => self.analytics_retention_days,
        }
    }

    pub fn set(&mut self, limit: Limit, value: Option<i64>) {
        let slot = match limit {
            Limit::MaxUsers => &mut self.max_users,
            Limit::ApiCallsPerMonth => &mut self.api_calls_per_month,
            Limit::RateLimitPerMinute => &mut self.rate_limit_per_minute,
            Limit::WebhookDeliveriesPerMinute => &mut self.webhook_deliveries_per_minute,
            Limit::AnalyticsRetentionDays => &mut self.analytics_retention_days,
        };
        *slot = value;
    }
}

/// A plan as `GET /plans` shows it and `PUT /admin/plans/{plan}` takes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Plan {
    pub name: String,
    pub display_name: String,
    /// Orders plans from the smallest; with the price it decides which plan is the cheapest
    /// with a feature (`required_plan`).
    pub rank: i32,
    /// The price of a month, in the smallest unit of `currency`.
    pub price_cents: i64,
    /// ISO 4217, lowercase (as Stripe writes it).
    pub currency: String,
    pub limits: Limits,
    /// Every feature the plan names, on or off (API.md's `api_access`, `webhooks` and
    /// `custom_integrations` are always listed).
    pub features: BTreeMap<String, bool>,
}

impl Plan {
    pub fn has(&self, feature: &str) -> bool {
        self.features.get(feature).copied().unwrap_or(false)
    }

    pub fn limit(&self, limit: Limit) -> Option<i64> {
        self.limits.get(limit)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantState {
    Active,
    Suspended,
    Deleted,
}

/// What the snapshot keeps of the tenant row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRow {
    pub id: Uuid,
    pub slug: String,
    pub state: TenantState,
    pub plan: String,
}

/// `GET /branding`: what a login page or an embedding product shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Branding {
    /// An https URL, or null for none.
    pub logo_url: Option<String>,
    /// `#rrggbb`.
    pub primary_color: String,
    /// `#rrggbb`.
    pub accent_color: String,
}

/// A tenant's settings (`GET /settings`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Settings {
    /// An IANA time zone name, e.g. `Europe/Paris`.
    pub timezone: String,
    /// A BCP 47 language tag, e.g. `en-US`.
    pub locale: String,
    pub branding: Branding,
}

impl Settings {
    /// The settings a tenant starts with (`tenancy::model::default_settings`).
    #[allow(clippy::expect_used)] // see below
    pub fn defaults() -> Settings {
        // A constant of this version, not input: a mismatch is a bug the tests catch.
        Settings::from_stored(&Value::Null).expect("default_settings() has the shape of Settings")
    }

    /// The settings stored in `app.tenants.settings`: the defaults, overlaid with what is
    /// stored (a member added by a later version is read as its default). Members this version
    /// does not know are ignored; a known member of the wrong type is an error, never read
    /// back as its default.
    pub fn from_stored(stored: &Value) -> Result<Settings, serde_json::Error> {
        let mut merged = default_settings();
        overlay(&mut merged, stored);
        serde_json::from_value(merged)
    }
}

/// Objects are merged member by member; anything else replaces.
fn overlay(base: &mut Value, top: &Value) {
    match (base, top) {
        (Value::Object(base), Value::Object(top)) => {
            for (key, value) in top {
                match base.get_mut(key) {
                    Some(slot) => overlay(slot, value),
                    None => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (_, Value::Null) => {}
        (base, top) => *base = top.clone(),
    }
}

/// This tenant's feature flag overrides, by flag key (`app.flag_overrides`). The definitions
/// are the same for every tenant and kept once per process (`cache::Caches::flag_definitions`);
/// evaluation borrows both (`flags::FlagInputs`). An override change reloads the tenant's
/// snapshot (`cache::Invalidation::Flags` with the tenant).
pub type FlagOverrides = BTreeMap<String, Value>;

/// One tenant's configuration at one moment. Never changed once built.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TenantSnapshot {
    pub format: u32,
    pub tenant: TenantRow,
    pub plan: Plan,
    /// For every feature some plan has: the cheapest plan that has it (price, then rank, then
    /// name), for `plan_required` answers.
    pub cheapest_with: BTreeMap<String, String>,
    pub settings: Settings,
    /// The number of the last row of `app.settings_versions` (0: never changed).
    pub settings_version: i32,
    pub flags: FlagOverrides,
    /// When PostgreSQL was read: the snapshot's age, wherever it was copied since.
    pub loaded_at: DateTime<Utc>,
    /// A digest of everything above but `loaded_at`: equal versions, equal configurations.
    pub version: String,
}

/// What a snapshot is built from.
pub struct SnapshotParts {
    pub tenant: TenantRow,
    pub plan: Plan,
    pub cheapest_with: BTreeMap<String, String>,
    pub settings: Settings,
    pub settings_version: i32,
    pub flags: FlagOverrides,
    pub loaded_at: DateTime<Utc>,
}

impl TenantSnapshot {
    pub fn new(parts: SnapshotParts) -> TenantSnapshot {
        let version = digest(&(
            &parts.tenant,
            &parts.plan,
            &parts.cheapest_with,
            &parts.settings,
            parts.settings_version,
            &parts.flags,
        ));
        TenantSnapshot {
            format: SNAPSHOT_FORMAT,
            tenant: parts.tenant,
            plan: parts.plan,
            cheapest_with: parts.cheapest_with,
            settings: parts.settings,
            settings_version: parts.settings_version,
            flags: parts.flags,
            loaded_at: parts.loaded_at,
            version,
        }
    }

    /// A configuration that allows nothing: no feature, every limit 0, default settings. For
    /// a `Caller` built outside the request path (tests, tools), never for a real request.
    pub fn bare(tenant: Uuid, slug: &str, plan: &str) -> TenantSnapshot {
        let mut limits = Limits::default();
        for limit in Limit::ALL {
            limits.set(limit, Some(0));
        }
        TenantSnapshot::new(SnapshotParts {
            tenant: TenantRow {
                id: tenant,
                slug: slug.to_string(),
                state: TenantState::Active,
                plan: plan.to_string(),
            },
            plan: Plan {
                name: plan.to_string(),
                display_name: plan.to_string(),
                rank: 0,
                price_cents: 0,
                currency: "usd".into(),
                limits,
                features: BTreeMap::new(),
            },
            cheapest_with: BTreeMap::new(),
            settings: Settings::defaults(),
            settings_version: 0,
            flags: FlagOverrides::new(),
            loaded_at: Utc::now(),
        })
    }

    pub fn is_suspended(&self) -> bool {
        self.tenant.state == TenantState::Suspended
    }

    /// Older than `ttl` since PostgreSQL was read.
    pub fn is_older_than(&self, ttl: Duration, now: DateTime<Utc>) -> bool {
        let age = now.signed_duration_since(self.loaded_at);
        age.to_std().is_ok_and(|age| age >= ttl)
    }

    /// The cheapest plan with `feature`, if any plan has it.
    pub fn cheapest_plan_with(&self, feature: &str) -> Option<&str> {
        self.cheapest_with.get(feature).map(String::as_str)
    }

    /// The strong `ETag` of `GET /branding`: changes with the branding only.
    pub fn branding_etag(&self) -> String {
        format!("\"{}\"", digest(&self.settings.branding))
    }
}

/// 128 bits of SHA-256 over the JSON of `value`, in hex. serde_json writes struct members in
/// declaration order and maps (BTreeMap) in key order, so equal values give equal digests.
fn digest<T: Serialize>(value: &T) -> String {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    hex::encode(&Sha256::digest(&bytes)[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stored_settings_overlay_the_defaults() {
        let defaults = Settings::defaults();
        assert_eq!(defaults.timezone, "UTC");
        assert_eq!(defaults.branding.primary_color, "#2563eb");
        let stored = json!({"timezone": "Europe/Paris", "branding": {"logo_url": "https://a.example/l.png"}, "unknown": 1});
        let settings = Settings::from_stored(&stored).unwrap();
        assert_eq!(settings.timezone, "Europe/Paris");
        assert_eq!(settings.locale, "en");
        assert_eq!(
            settings.branding.logo_url.as_deref(),
            Some("https://a.example/l.png")
        );
        assert_eq!(settings.branding.accent_color, "#f59e0b");
        assert!(Settings::from_stored(&json!({"timezone": 5})).is_err());
    }

    #[test]
    fn the_version_follows_the_content_not_the_load_time() {
        let a = TenantSnapshot::bare(Uuid::nil(), "a", "free");
        let mut b = TenantSnapshot::bare(Uuid::nil(), "a", "free");
        b.loaded_at = a.loaded_at + chrono::Duration::seconds(5);
        assert_eq!(a.version, TenantSnapshot::new(parts_of(&b)).version);
        let mut parts = parts_of(&a);
        parts.settings.locale = "fr".into();
        let c = TenantSnapshot::new(parts);
        assert_ne!(a.version, c.version);
        assert_eq!(a.branding_etag(), c.branding_etag());
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<TenantSnapshot>(&json).unwrap(), c);
    }

    #[test]
    fn age() {
        let s = TenantSnapshot::bare(Uuid::nil(), "a", "free");
        let ttl = Duration::from_secs(30);
        assert!(!s.is_older_than(ttl, s.loaded_at + chrono::Duration::seconds(29)));
        assert!(s.is_older_than(ttl, s.loaded_at + chrono::Duration::seconds(30)));
        // A clock that went back: not stale.
        assert!(!s.is_older_than(ttl, s.loaded_at - chrono::Duration::seconds(5)));
    }

    fn parts_of(s: &TenantSnapshot) -> SnapshotParts {
        SnapshotParts {
            tenant: s.tenant.clone(),
            plan: s.plan.clone(),
            cheapest_with: s.cheapest_with.clone(),
            settings: s.settings.clone(),
            settings_version: s.settings_version,
            flags: s.flags.clone(),
            loaded_at: s.loaded_at,
        }
    }
}
