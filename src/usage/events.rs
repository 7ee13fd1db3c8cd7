//! `POST /usage/events`: validation and the durable insert.
//!
//! An event is `{idempotency_key, metric, quantity, occurred_at?}`. The key is unique per
//! tenant: `INSERT ... ON CONFLICT DO NOTHING` on `(tenant_id, idempotency_key)` makes a repeat
//! a no-op whichever instance receives it, concurrently or after a restart, and the statement
//! answers which events were new so that a repeat gives back the quota it was admitted with.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde_json::Value;
use uuid::Uuid;

use super::{UsageError, GRACE, RESERVED, SKEW};
use crate::actors::TenantOp;
use crate::auth::Caller;
use crate::db::TenantTx;
use crate::error::FieldError;

/// Events in one request at most (the body is also limited to 1 MiB).
pub const MAX_BATCH: usize = 1000;
pub const MAX_KEY_CHARS: usize = 200;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageEvent {
    pub idempotency_key: String,
    pub metric: String,
    pub quantity: i64,
    pub occurred_at: DateTime<Utc>,
}

/// A metric name: a lowercase letter, then up to 62 lowercase letters, digits or `_`; not one
/// the server meters itself.
pub fn check_metric(metric: &str) -> Result<(), &'static str> {
    let mut chars = metric.chars();
    let well_formed = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && metric.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !well_formed {
        return Err(
            "a metric is a lowercase letter, then lowercase letters, digits or _ (63 at most)",
        );
    }
    if RESERVED.contains(&metric) {
        return Err("api_calls, active_users and storage_bytes are metered by the server");
    }
    Ok(())
}

/// The events of a body: one event object, or `{events: [...]}` with 1 to [`MAX_BATCH`].
/// Field names in errors are the body's own: `occurred_at` for one event,
/// `events[3].occurred_at` in a batch.
pub fn validate_body(body: &Value, now: DateTime<Utc>) -> Result<Vec<UsageEvent>, UsageError> {
    let Some(object) = body.as_object() else {
        return Err(UsageError::Validation(vec![FieldError::new(
            "body",
            "must be an event object or {\"events\": [...]}",
        )]));
    };
    let Some(batch) = object.get("events") else {
        return validate_event(body, "", now)
            .map(|e| vec![e])
            .map_err(UsageError::Validation);
    };
    if let Some(other) = object.keys().find(|k| *k != "events") {
        return Err(UsageError::Validation(vec![FieldError::new(
            other,
            "unknown member beside events",
        )]));
    }
    let Some(items) = batch.as_array() else {
        return Err(UsageError::Validation(vec![FieldError::new(
            "events",
            "must be an array",
        )]));
    };
    if items.is_empty() {
        return Err(UsageError::Validation(vec![FieldError::new(
            "events",
            "must hold at least one event",
        )]));
    }
    if items.len() > MAX_BATCH {
        return Err(UsageError::TooManyEvents {
            count: items.len(),
            max: MAX_BATCH,
        });
    }
    let mut events = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match validate_event(item, &format!("events[{i}]."), now) {
            Ok(event) => events.push(event),
            Err(mut fields) => errors.append(&mut fields),
        }
    }
    if errors.is_empty() {
        Ok(events)
    } else {
        Err(UsageError::Validation(errors))
    }
}

fn validate_event(
    value: &Value,
    prefix: &str,
    now: DateTime<Utc>,
) -> Result<UsageEvent, Vec<FieldError>> {
    let mut errors = Vec::new();
    let field = |name: &str| format!("{prefix}{name}");
    let Some(object) = value.as_object() else {
        let name = prefix.trim_end_matches('.');
        return Err(vec![FieldError::new(
            if name.is_empty() { "body" } else { name },
            "must be an object",
        )]);
    };
    for key in object.keys() {
        if !matches!(
            key.as_str(),
            "idempotency_key" | "metric" | "quantity" | "occurred_at"
        ) {
            errors.push(FieldError::new(&field(key), "unknown member"));
        }
    }
    let key = match object.get("idempotency_key") {
        Some(Value::String(s))
            if !s.trim().is_empty()
                && s.chars().count() <= MAX_KEY_CHARS
                && !s.chars().any(char::is_control) =>
        {
            Some(s.clone())
        }
        Some(_) => {
            errors.push(FieldError::new(
                &field("idempotency_key"),
                "must be a string of 1 to 200 printable characters",
            ));
            None
        }
        None => {
            errors.push(FieldError::new(&field("idempotency_key"), "is required"));
            None
        }
    };
    let metric = match object.get("metric") {
        Some(Value::String(s)) => match check_metric(s) {
            Ok(()) => Some(s.clone()),
            Err(message) => {
                errors.push(FieldError::new(&field("metric"), message));
                None
            }
        },
        Some(_) => {
            errors.push(FieldError::new(&field("metric"), "must be a string"));
            None
        }
        None => {
            errors.push(FieldError::new(&field("metric"), "is required"));
            None
        }
    };
    let quantity = match object.get("quantity") {
        Some(Value::Number(n)) => match n.as_u64().and_then(|n| i64::try_from(n).ok()) {
            Some(n) => Some(n),
            None => {
                errors.push(FieldError::new(
                    &field("quantity"),
                    "must be a non-negative integer",
                ));
                None
            }
        },
        Some(_) => {
            errors.push(FieldError::new(
                &field("quantity"),
                "must be a non-negative integer",
            ));
            None
        }
        None => {
            errors.push(FieldError::new(&field("quantity"), "is required"));
            None
        }
    };
    let occurred_at = match object.get("occurred_at") {
        None | Some(Value::Null) => Some(now),
        Some(Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
            Ok(at) => {
                let at = at.with_timezone(&Utc);
                if at < now - GRACE || at > now + SKEW {
                    errors.push(FieldError::new(
                        &field("occurred_at"),
                        "must be within the last 48 hours and at most 5 minutes ahead",
                    ));
                    None
                } else {
                    Some(at)
                }
            }
            Err(_) => {
                errors.push(FieldError::new(
                    &field("occurred_at"),
                    "must be an RFC 3339 timestamp",
                ));
                None
            }
        },
        Some(_) => {
            errors.push(FieldError::new(
                &field("occurred_at"),
                "must be an RFC 3339 timestamp",
            ));
            None
        }
    };
    match (key, metric, quantity, occurred_at) {
        (Some(idempotency_key), Some(metric), Some(quantity), Some(occurred_at))
            if errors.is_empty() =>
        {
            Ok(UsageEvent {
                idempotency_key,
                metric,
                quantity,
                occurred_at,
            })
        }
        _ => Err(errors),
    }
}

/// The quantity of each metric in `events`.
pub fn quantities(events: &[UsageEvent]) -> BTreeMap<&str, i64> {
    let mut by_metric: BTreeMap<&str, i64> = BTreeMap::new();
    for event in events {
        let slot = by_metric.entry(event.metric.as_str()).or_insert(0);
        *slot = slot.saturating_add(event.quantity);
    }
    by_metric
}

/// What an insert stored: the events that were new (a repeated key is not among them).
#[derive(Debug, Default)]
pub struct Stored {
    pub inserted: Vec<(String, i64)>,
    pub submitted: usize,
}

impl Stored {
    /// Per metric, the quantity that was not stored because its key was already there.
    pub fn repeated(&self, events: &[UsageEvent]) -> BTreeMap<String, i64> {
        let mut left: BTreeMap<String, i64> = quantities(events)
            .into_iter()
            .map(|(m, q)| (m.to_string(), q))
            .collect();
        for (metric, quantity) in &self.inserted {
            if let Some(slot) = left.get_mut(metric) {
                *slot -= quantity;
            }
        }
        left.retain(|_, q| *q > 0);
        left
    }
}

/// Stores events; commits before answering (the 202 comes after the commit).
pub struct InsertEvents(pub Vec<UsageEvent>);

impl TenantOp for InsertEvents {
    type Output = Stored;
    type Error = UsageError;
    const OPENS_TENANT_SCHEMA: bool = false;

    fn run<'a>(
        self,
        tx: &'a TenantTx<'a>,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<Stored, UsageError>> {
        Box::pin(async move {
            caller.user()?;
            insert(tx.client(), caller.tenant_id, &self.0).await
        })
    }
}

/// Which of these idempotency keys the tenant has stored already.
pub struct StoredKeys(pub Vec<String>);

impl TenantOp for StoredKeys {
    type Output = std::collections::HashSet<String>;
    type Error = UsageError;
    const OPENS_TENANT_SCHEMA: bool = false;

    fn run<'a>(
        self,
        tx: &'a TenantTx<'a>,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<Self::Output, UsageError>> {
        Box::pin(async move {
            caller.user()?;
            let rows = tx
                .client()
                .query(
                    "select idempotency_key from app.usage_events \
                     where tenant_id = $1 and idempotency_key = any($2) and deleted_at is null",
                    &[&caller.tenant_id, &self.0],
                )
                .await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }
}

/// One statement for the whole batch; repeats (also within the batch) are skipped.
pub async fn insert<C: tokio_postgres::GenericClient + Sync>(
    client: &C,
    tenant: Uuid,
    events: &[UsageEvent],
) -> Result<Stored, UsageError> {
    let ids: Vec<Uuid> = events.iter().map(|_| Uuid::now_v7()).collect();
    let keys: Vec<&str> = events.iter().map(|e| e.idempotency_key.as_str()).collect();
    let metrics: Vec<&str> = events.iter().map(|e| e.metric.as_str()).collect();
    let quantities: Vec<i64> = events.iter().map(|e| e.quantity).collect();
    let occurred: Vec<DateTime<Utc>> = events.iter().map(|e| e.occurred_at).collect();
    let rows = client
        .query(
            "insert into app.usage_events (tenant_id, id, idempotency_key, metric, quantity, occurred_at) \
             select $1, e.id, e.key, e.metric, e.quantity, e.occurred_at \
             from unnest($2::uuid[], $3::text[], $4::text[], $5::int8[], $6::timestamptz[]) \
               as e(id, key, metric, quantity, occurred_at) \
             on conflict (tenant_id, idempotency_key) do nothing \
             returning metric, quantity",
            &[&tenant, &ids, &keys, &metrics, &quantities, &occurred],
        )
        .await?;
    Ok(Stored {
        inserted: rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        submitted: events.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(err: UsageError) -> Vec<String> {
        match err {
            UsageError::Validation(f) => f.into_iter().map(|f| f.field).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_event_or_a_batch() {
        let now = Utc::now();
        let one = validate_body(
            &json!({"idempotency_key": "k1", "metric": "emails_sent", "quantity": 3}),
            now,
        )
        .unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].occurred_at, now);
        let batch = validate_body(
            &json!({"events": [
                {"idempotency_key": "a", "metric": "gb_processed", "quantity": 0,
                 "occurred_at": (now - chrono::Duration::hours(47)).to_rfc3339()},
                {"idempotency_key": "b", "metric": "gb_processed", "quantity": 2}
            ]}),
            now,
        )
        .unwrap();
        assert_eq!(quantities(&batch)["gb_processed"], 2);
    }

    #[test]
    fn errors_name_the_field_and_the_index() {
        let now = Utc::now();
        let late = (now - chrono::Duration::hours(49)).to_rfc3339();
        let ahead = (now + chrono::Duration::minutes(6)).to_rfc3339();
        let err = validate_body(
            &json!({"events": [
                {"idempotency_key": "a", "metric": "x", "quantity": 1},
                {"idempotency_key": "b", "metric": "x", "quantity": -1},
                {"idempotency_key": "", "metric": "Bad", "quantity": 1.5},
                {"idempotency_key": "d", "metric": "x", "quantity": 1, "occurred_at": late},
                {"idempotency_key": "e", "metric": "api_calls", "quantity": 1, "occurred_at": ahead, "extra": 1}
            ]}),
            now,
        )
        .unwrap_err();
        assert_eq!(
            fields(err),
            [
                "events[1].quantity",
                "events[2].idempotency_key",
                "events[2].metric",
                "events[2].quantity",
                "events[3].occurred_at",
                "events[4].extra",
                "events[4].metric",
                "events[4].occurred_at",
            ]
        );
        let err = validate_body(&json!({"metric": "x", "quantity": 1}), now).unwrap_err();
        assert_eq!(fields(err), ["idempotency_key"]);
    }

    #[test]
    fn batch_bounds() {
        let now = Utc::now();
        assert_eq!(
            fields(validate_body(&json!({"events": []}), now).unwrap_err()),
            ["events"]
        );
        let many: Vec<Value> = (0..=MAX_BATCH)
            .map(|i| json!({"idempotency_key": i.to_string(), "metric": "x", "quantity": 1}))
            .collect();
        assert!(matches!(
            validate_body(&json!({ "events": many }), now),
            Err(UsageError::TooManyEvents { .. })
        ));
    }

    #[test]
    fn metric_names() {
        assert!(check_metric("emails_sent").is_ok());
        assert!(check_metric("a").is_ok());
        for bad in [
            "",
            "1a",
            "A",
            "a-b",
            "a.b",
            "storage_bytes",
            &"a".repeat(64),
        ] {
            assert!(check_metric(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn repeats_are_what_was_not_inserted() {
        let e = |k: &str, m: &str, q: i64| UsageEvent {
            idempotency_key: k.into(),
            metric: m.into(),
            quantity: q,
            occurred_at: Utc::now(),
        };
        let events = [e("a", "x", 2), e("b", "x", 3), e("c", "y", 1)];
        let stored = Stored {
            inserted: vec![("x".into(), 3)],
            submitted: 3,
        };
        let repeated = stored.repeated(&events);
        assert_eq!(repeated.get("x"), Some(&2));
        assert_eq!(repeated.get("y"), Some(&1));
    }
}
