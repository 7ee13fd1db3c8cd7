//! The shape of analytics events on the wire, and their validation into `ValidEvent`s with
//! field errors whose paths name the offending member (`events[3].timestamp`).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::buckets::to_micros;
use crate::error::FieldError;
use crate::input::{json_is_storable, InputError};

pub const MAX_EVENTS_PER_REQUEST: usize = 1_000;
/// Longest event_type or feature, in characters; the rollup key column is varchar(100).
pub const MAX_NAME_CHARS: usize = 100;
/// Longest user_id, in characters (API.md); the dictionary column is varchar(200).
pub const MAX_USER_ID_CHARS: usize = 200;
/// Serialized size of one event's metadata.
pub const MAX_METADATA_BYTES: usize = 32 * 1024;
pub const MAX_FUTURE: Duration = Duration::minutes(5);

/// One event as a client sends it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
pub struct NewEvent {
    /// Required; 1 to 100 characters.
    pub event_type: String,
    /// The product's own user id or an anonymous id: 1 to 200 characters. A UUID, in any
    /// spelling, is one user whatever the spelling (`canonical_user_id`).
    pub user_id: Option<String>,
    /// The product feature the event belongs to, counted in `top_features`.
    pub feature: Option<String>,
    /// Any JSON object, at most 32 KiB.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// When it happened (RFC 3339); the time of receipt when absent. At most 5 minutes in the
    /// future, and no older than the plan's analytics retention.
    pub timestamp: Option<DateTime<Utc>>,
}

/// The body of POST /analytics/events: this, or a single event object.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct EventBatch {
    /// 1 to 1,000 events.
    pub events: Vec<NewEvent>,
}

/// An event that passed validation, with its server-assigned id and times.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ValidEvent {
    pub id: Uuid,
    pub event_type: String,
    /// Canonical (`canonical_user_id`).
    pub user_id: Option<String>,
    pub feature: Option<String>,
    pub metadata: Option<Value>,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
}

/// What an event is checked against: the clock and the tenant's plan.
#[derive(Clone, Copy, Debug)]
pub struct IngestRules {
    pub now: DateTime<Utc>,
    /// None: the plan keeps analytics forever.
    pub retention_days: Option<u32>,
}

impl IngestRules {
    pub fn oldest_accepted(&self) -> Option<DateTime<Utc>> {
        self.retention_days
            .map(|days| self.now - Duration::days(i64::from(days)))
    }
}

fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_string()
    } else {
        format!("{prefix}.{field}")
    }
}

/// Reads the request body: `{events: [...]}` or one event object. Field paths are relative to
/// the body (`events[3].timestamp`, or `timestamp` for a single object).
pub fn validate_body(
    body: &Value,
    rules: &IngestRules,
) -> Result<Vec<ValidEvent>, Vec<FieldError>> {
    let Some(object) = body.as_object() else {
        return Err(vec![FieldError::new(
            "body",
            "must be an event object or {\"events\": [...]}",
        )]);
    };
    let mut errors = Vec::new();
    let mut valid = Vec::new();
    match object.get("events") {
        Some(Value::Array(items)) => {
            if items.is_empty() || items.len() > MAX_EVENTS_PER_REQUEST {
                return Err(vec![FieldError::new(
                    "events",
                    format!(
                        "must hold 1 to {MAX_EVENTS_PER_REQUEST} events, got {}",
                        items.len()
                    ),
                )]);
            }
            for (i, item) in items.iter().enumerate() {
                let path = format!("events[{i}]");
                if let Some(event) = read_event(item, &path, &mut errors) {
                    if let Some(v) = validate_event(event, &path, rules, &mut errors) {
                        valid.push(v);
                    }
                }
            }
        }
        Some(_) => errors.push(FieldError::new("events", "must be an array of events")),
        None => {
            if let Some(event) = read_event(body, "", &mut errors) {
                if let Some(v) = validate_event(event, "", rules, &mut errors) {
                    valid.push(v);
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(valid)
    } else {
        Err(errors)
    }
}

/// The typed entry point (library callers, benchmarks): the same rules as the HTTP body.
pub fn validate_events(
    events: Vec<NewEvent>,
    rules: &IngestRules,
) -> Result<Vec<ValidEvent>, Vec<FieldError>> {
    if events.is_empty() || events.len() > MAX_EVENTS_PER_REQUEST {
        return Err(vec![FieldError::new(
            "events",
            format!(
                "must hold 1 to {MAX_EVENTS_PER_REQUEST} events, got {}",
                events.len()
            ),
        )]);
    }
    let mut errors = Vec::new();
    let valid: Vec<ValidEvent> = events
        .into_iter()
        .enumerate()
        .filter_map(|(i, e)| validate_event(e, &format!("events[{i}]"), rules, &mut errors))
        .collect();
    if errors.is_empty() {
        Ok(valid)
    } else {
        Err(errors)
    }
}

/// The fields of `events` holding text PostgreSQL cannot store: the NUL character, which
/// neither `text` nor `jsonb` takes. Validation refuses it already ([`validate_events`]); this
/// is for events built by hand, which the group committer checks when a group fails. Named as
/// in a batch body: `events[3].metadata` (or `.event_type`, `.feature`).
pub fn unstorable_fields(events: &[ValidEvent]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let nul = |field: &str| {
            FieldError::new(&format!("events[{i}].{field}"), InputError::Nul.to_string())
        };
        if e.event_type.contains('\0') {
            errors.push(nul("event_type"));
        }
        if e.feature.as_ref().is_some_and(|f| f.contains('\0')) {
            errors.push(nul("feature"));
        }
        if e.metadata.as_ref().is_some_and(|m| !json_is_storable(m)) {
            errors.push(nul("metadata"));
        }
    }
    errors
}

/// Member by member, so one request reports every bad field rather than the first serde
/// error.
fn read_event(value: &Value, path: &str, errors: &mut Vec<FieldError>) -> Option<NewEvent> {
    let Some(object) = value.as_object() else {
        errors.push(FieldError::new(
            if path.is_empty() { "body" } else { path },
            "must be an event object",
        ));
        return None;
    };
    let before = errors.len();
    let mut event = NewEvent::default();
    match object.get("event_type") {
        None | Some(Value::Null) => {
            errors.push(FieldError::new(&join(path, "event_type"), "is required"))
        }
        Some(Value::String(s)) => event.event_type = s.clone(),
        Some(_) => errors.push(FieldError::new(
            &join(path, "event_type"),
            "must be a string",
        )),
    }
    match object.get("user_id") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if check_user_id(s, &join(path, "user_id"), errors) {
                event.user_id = Some(s.clone());
            }
        }
        Some(_) => errors.push(FieldError::new(&join(path, "user_id"), "must be a string")),
    }
    match object.get("feature") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => event.feature = Some(s.clone()),
        Some(_) => errors.push(FieldError::new(&join(path, "feature"), "must be a string")),
    }
    match object.get("metadata") {
        None | Some(Value::Null) => {}
        Some(v @ Value::Object(_)) => event.metadata = Some(v.clone()),
        Some(_) => errors.push(FieldError::new(
            &join(path, "metadata"),
            "must be a JSON object",
        )),
    }
    match object.get("timestamp") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => event.timestamp = Some(t.with_timezone(&Utc)),
            Err(_) => errors.push(FieldError::new(
                &join(path, "timestamp"),
                "must be an RFC 3339 timestamp",
            )),
        },
        Some(_) => errors.push(FieldError::new(
            &join(path, "timestamp"),
            "must be an RFC 3339 timestamp",
        )),
    }
    (errors.len() == before).then_some(event)
}

/// One user, one string: a user id that parses as a UUID (any spelling `Uuid::parse_str`
/// takes: upper case, braces, `urn:uuid:`, no hyphens) becomes its lower-case hyphenated form,
/// the form the UUIDs stored before string ids were accepted have (tenant_template V6), so
/// they keep counting as the same users. Anything else is kept as sent.
pub fn canonical_user_id(id: String) -> String {
    match Uuid::parse_str(&id) {
        Ok(uuid) => uuid.hyphenated().to_string(),
        Err(_) => id,
    }
}

/// 1 to 200 characters, no NUL (PostgreSQL text cannot hold it); anything else goes.
fn check_user_id(value: &str, field: &str, errors: &mut Vec<FieldError>) -> bool {
    let chars = value.chars().count();
    if chars == 0 || chars > MAX_USER_ID_CHARS {
        errors.push(FieldError::new(
            field,
            format!("must be 1 to {MAX_USER_ID_CHARS} characters"),
        ));
        false
    } else if value.contains('\0') {
        errors.push(FieldError::new(field, InputError::Nul.to_string()));
        false
    } else {
        true
    }
}

fn check_name(value: &str, field: &str, errors: &mut Vec<FieldError>) -> bool {
    let chars = value.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        errors.push(FieldError::new(
            field,
            format!("must be 1 to {MAX_NAME_CHARS} characters"),
        ));
        false
    } else if value.chars().any(char::is_control) {
        errors.push(FieldError::new(
            field,
            "must not contain control characters",
        ));
        false
    } else {
        true
    }
}

fn validate_event(
    event: NewEvent,
    path: &str,
    rules: &IngestRules,
    errors: &mut Vec<FieldError>,
) -> Option<ValidEvent> {
    let before = errors.len();
    check_name(&event.event_type, &join(path, "event_type"), errors);
    if let Some(feature) = &event.feature {
        check_name(feature, &join(path, "feature"), errors);
    }
    let user_id = event.user_id.map(canonical_user_id);
    if let Some(user) = &user_id {
        check_user_id(user, &join(path, "user_id"), errors);
    }
    if let Some(metadata) = &event.metadata {
        if !metadata.is_object() {
            errors.push(FieldError::new(
                &join(path, "metadata"),
                "must be a JSON object",
            ));
        } else if !json_is_storable(metadata) {
            errors.push(FieldError::new(
                &join(path, "metadata"),
                InputError::Nul.to_string(),
            ));
        } else if serde_json::to_vec(metadata).map_or(true, |b| b.len() > MAX_METADATA_BYTES) {
            errors.push(FieldError::new(
                &join(path, "metadata"),
                format!("must be at most {MAX_METADATA_BYTES} bytes"),
            ));
        }
    }
    let received_at = to_micros(rules.now);
    let occurred_at = event.timestamp.map(to_micros).unwrap_or(received_at);
    if occurred_at > rules.now + MAX_FUTURE {
        errors.push(FieldError::new(
            &join(path, "timestamp"),
            "must not be more than 5 minutes in the future",
        ));
    }
    if let (Some(oldest), Some(days)) = (rules.oldest_accepted(), rules.retention_days) {
        if occurred_at < oldest {
            errors.push(FieldError::new(
                &join(path, "timestamp"),
                format!("is older than the plan's analytics retention of {days} days"),
            ));
        }
    }
    (errors.len() == before).then(|| ValidEvent {
        id: Uuid::now_v7(),
        event_type: event.event_type,
        user_id,
        feature: event.feature,
        metadata: event.metadata,
        occurred_at,
        received_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> IngestRules {
        IngestRules {
            now: "2024-05-01T12:00:00Z".parse().unwrap(),
            retention_days: Some(30),
        }
    }

    #[test]
    fn single_object_and_batch() {
        let one = validate_body(&json!({"event_type": "click"}), &rules()).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].occurred_at, rules().now);
        let many = validate_body(
            &json!({"events": [{"event_type": "a", "user_id": Uuid::nil(), "feature": "f",
                "metadata": {"k": 1}, "timestamp": "2024-05-01T11:00:00+02:00"}]}),
            &rules(),
        )
        .unwrap();
        assert_eq!(
            many[0].occurred_at,
            "2024-05-01T09:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
    }

    #[test]
    fn field_paths_name_each_bad_member() {
        let errors = validate_body(
            &json!({"events": [
                {"event_type": "ok"},
                {"feature": 3},
                {"event_type": "x", "timestamp": "2024-05-01T12:06:00Z"},
                {"event_type": "x", "user_id": ""},
                {"event_type": "", "metadata": [1]}
            ]}),
            &rules(),
        )
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "events[1].event_type",
                "events[1].feature",
                "events[2].timestamp",
                "events[3].user_id",
                "events[4].metadata",
            ]
        );
        let errors = validate_body(
            &json!({"events": [{"event_type": "x", "timestamp": "2024-03-01T00:00:00Z"}, {"event_type": ""}]}),
            &rules(),
        )
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["events[0].timestamp", "events[1].event_type"]);
    }

    #[test]
    fn user_ids_are_strings_and_uuids_one_spelling() {
        let id = "6F9619FF-8B86-D011-B42D-00C04FC964FF";
        let lower = "6f9619ff-8b86-d011-b42d-00c04fc964ff";
        for spelling in [
            id,
            lower,
            "{6f9619ff-8b86-d011-b42d-00c04fc964ff}",
            "6f9619ff8b86d011b42d00c04fc964ff",
        ] {
            let v =
                validate_body(&json!({"event_type": "a", "user_id": spelling}), &rules()).unwrap();
            assert_eq!(v[0].user_id.as_deref(), Some(lower));
        }
        for ok in [
            "u",
            "anon:8f2c",
            "user@example.com",
            &"x".repeat(200),
            &"é".repeat(200),
        ] {
            let v = validate_body(&json!({"event_type": "a", "user_id": ok}), &rules()).unwrap();
            assert_eq!(v[0].user_id.as_deref(), Some(ok));
        }
        for bad in [
            json!(""),
            json!("x".repeat(201)),
            json!("a\u{0}b"),
            json!(7),
        ] {
            let errors =
                validate_body(&json!({"event_type": "a", "user_id": bad}), &rules()).unwrap_err();
            assert_eq!(errors[0].field, "user_id", "{bad}");
        }
    }

    #[test]
    fn batch_size_is_bounded() {
        let events: Vec<Value> = (0..1001).map(|_| json!({"event_type": "a"})).collect();
        let errors = validate_body(&json!({ "events": events }), &rules()).unwrap_err();
        assert_eq!(errors[0].field, "events");
        assert!(validate_body(&json!({"events": []}), &rules()).is_err());
        assert!(validate_body(&json!([1]), &rules()).is_err());
    }
}
