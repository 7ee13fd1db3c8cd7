//! Outgoing webhooks (docs/webhooks.md, API.md "Outgoing webhooks").
//!
//! - [`model`]: endpoints, messages and deliveries as the API shows them, and the bodies;
//! - [`ops`]: the tenant operations behind the routes (admins only, plan feature `webhooks`);
//! - [`fanout`]: the outbox handler that turns each event into one message per subscribed
//!   endpoint, in the outbox row's transaction (idempotent on the event id);
//! - [`delivery`]: the dispatcher that claims due messages per tenant (a lease, `SKIP LOCKED`,
//!   the tenant's sliding 60 s window shared by every instance), signs, sends, records each
//!   attempt and schedules the retries;
//! - [`queue`]: the tenant's queue state held beside its actor (drain, in flight, limiter);
//! - [`signing`]: Standard Webhooks signatures; [`secret`]: how signing secrets are stored.
//!
//! PostgreSQL holds everything that must survive (messages, attempts, leases, the rate window):
//! Redis plays no part, so losing it loses nothing.

pub mod delivery;
pub mod fanout;
pub mod model;
pub mod ops;
pub mod queue;
pub mod secret;
pub mod signing;

use thiserror::Error;

use crate::auth::AccessError;
use crate::db::DbError;
use crate::error::FieldError;
use crate::page::PageError;

pub use delivery::{Clock, Dispatcher, DispatcherOptions, SystemClock};
pub use fanout::FanOut;
pub use queue::TenantQueue;

/// The event types an endpoint may subscribe to, as exact types or `prefix.*`.
pub const EVENT_PREFIXES: &[&str] = &[
    "task", "project", "user", "member", "tenant", "billing", "webhook",
];

/// The type of the event `POST /webhooks/{id}/test` sends.
pub const TEST_EVENT: &str = "webhook.test";

/// Recorded in the outbox when an endpoint is disabled for failing (5 days, or 410 Gone).
pub const ENDPOINT_DISABLED_EVENT: &str = "webhook.endpoint_disabled";

/// A message body larger than this is refused when it is enqueued (API.md: 1 MiB).
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

#[derive(Debug, Error)]
pub enum WebhookError {
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// `webhook`, `delivery`.
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Db(#[from] DbError),
    /// A stored secret that cannot be opened or decoded.
    #[error("the stored signing secret cannot be read")]
    Secret(#[from] secret::SecretError),
    /// A stored value this version does not know.
    #[error("{column} holds {value:?}, which is not a value this version knows")]
    CorruptRow { column: &'static str, value: String },
}

impl From<tokio_postgres::Error> for WebhookError {
    fn from(err: tokio_postgres::Error) -> Self {
        WebhookError::Db(err.into())
    }
}

impl From<deadpool::managed::PoolError<tokio_postgres::Error>> for WebhookError {
    fn from(err: deadpool::managed::PoolError<tokio_postgres::Error>) -> Self {
        WebhookError::Db(err.into())
    }
}

impl From<PageError> for WebhookError {
    fn from(PageError(errors): PageError) -> Self {
        WebhookError::Validation(errors)
    }
}

/// Whether an endpoint subscribed to `patterns` wants events of `event_type`: an exact type,
/// `prefix.*` (any type under the prefix, at any depth) or `*`.
pub fn subscribed(patterns: &[String], event_type: &str) -> bool {
    patterns.iter().any(|p| {
        if p == "*" || p == event_type {
            return true;
        }
        match p.strip_suffix(".*") {
            Some(prefix) => event_type
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('.')),
            None => false,
        }
    })
}

/// Checks one subscription pattern; the reason when it is not one.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern == "*" {
        return Ok(());
    }
    let (base, wildcard) = match pattern.strip_suffix(".*") {
        Some(base) => (base, true),
        None => (pattern, false),
    };
    let segments: Vec<&str> = base.split('.').collect();
    let well_formed = segments.iter().all(|s| {
        let mut chars = s.chars();
        chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    });
    if !well_formed || base.len() > 100 || (!wildcard && segments.len() < 2) {
        return Err(format!(
            "`{pattern}` is not an event type (`task.created`) or a wildcard (`project.*`)"
        ));
    }
    if !EVENT_PREFIXES.contains(&segments[0]) {
        return Err(format!(
            "`{pattern}`: no events start with `{}`; known: {}",
            segments[0],
            EVENT_PREFIXES.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_match_exact_types_and_prefixes() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(subscribed(&p(&["task.created"]), "task.created"));
        assert!(!subscribed(&p(&["task.created"]), "task.updated"));
        assert!(subscribed(&p(&["project.*"]), "project.member_added"));
        assert!(!subscribed(&p(&["project.*"]), "projects.created"));
        assert!(!subscribed(&p(&["project.*"]), "project"));
        assert!(subscribed(&p(&["*"]), "billing.paid"));
        assert!(!subscribed(&p(&[]), "task.created"));
    }

    #[test]
    fn patterns_are_checked() {
        for ok in [
            "task.created",
            "project.*",
            "*",
            "billing.invoice.paid",
            "user.*",
        ] {
            assert_eq!(check_pattern(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "task",
            "Task.created",
            "task.*.x",
            "nope.*",
            "task..x",
            "task.created ",
        ] {
            assert!(check_pattern(bad).is_err(), "{bad}");
        }
    }
}
