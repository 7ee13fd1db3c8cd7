//! What the operator sends and gets back, and the checks on it. Bodies are read member by member
//! from JSON (not through serde's derive) so that every refusal names its field path: `key`,
//! `default`, `plans.<plan>`, `rollout_percent`, or the name of an unknown member.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{Definition, FlagError};
use crate::error::FieldError;

pub const MAX_KEY: usize = 128;
pub const MAX_DESCRIPTION: usize = 1000;

/// `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`, as the table's CHECK.
pub fn valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    key.len() <= MAX_KEY
        && first.is_ascii_alphanumeric()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The JSON type of a value as `jsonb_typeof` names it. Flags hold one type: the plan values
/// and overrides of a flag have its default's type.
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The columns [`definition_from_row`] reads, of `app.flags`.
pub const DEFINITION_COLUMNS: &str =
    "key, description, default_value, plan_values, rollout_percent, version, updated_at";

pub(crate) fn plans_from(
    column: &'static str,
    value: Value,
) -> Result<BTreeMap<String, Value>, FlagError> {
    match value {
        Value::Object(map) => Ok(map.into_iter().collect()),
        other => Err(FlagError::CorruptRow {
            column,
            value: other.to_string(),
        }),
    }
}

pub(crate) fn rollout_from(
    column: &'static str,
    value: Option<i16>,
) -> Result<Option<u8>, FlagError> {
    match value {
        None => Ok(None),
        Some(p) => match u8::try_from(p) {
            Ok(p) if p <= 100 => Ok(Some(p)),
            _ => Err(FlagError::CorruptRow {
                column,
                value: p.to_string(),
            }),
        },
    }
}

/// A definition from a row holding [`DEFINITION_COLUMNS`] (in that order, from index `at`).
pub(crate) fn definition_from_row(row: &Row, at: usize) -> Result<Definition, FlagError> {
    Ok(Definition {
        key: row.get(at),
        description: row.get(at + 1),
        default: row.get(at + 2),
        plans: plans_from("flags.plan_values", row.get(at + 3))?,
        rollout_percent: rollout_from("flags.rollout_percent", row.get(at + 4))?,
        version: row.get(at + 5),
        updated_at: row.get(at + 6),
    })
}

/// `PUT /admin/flags/{key}`, as documented; the body is checked by [`parse_definition`].
#[derive(Debug, Deserialize, ToSchema)]
pub struct DefinitionBody {
    /// At most 1000 characters; absent: empty.
    pub description: Option<String>,
    /// The global default: any JSON value but null.
    #[schema(value_type = Value)]
    pub default: Value,
    /// Values by plan name (plans that exist), of the default's JSON type; absent: none.
    #[schema(value_type = Option<Object>)]
    pub plans: Option<BTreeMap<String, Value>>,
    /// 0..=100: the share of targeting keys that get their plan's value (docs/flags.md).
    pub rollout_percent: Option<u8>,
}

/// A checked definition body.
#[derive(Clone, Debug, PartialEq)]
pub struct DefinitionInput {
    pub description: String,
    pub default: Value,
    pub plans: BTreeMap<String, Value>,
    pub rollout_percent: Option<u8>,
}

/// `PUT /admin/tenants/{id}/flags/{key}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct OverrideBody {
    /// Of the flag's JSON type (its default's).
    #[schema(value_type = Value)]
    pub value: Value,
}

/// `POST /admin/flags/{key}/rollback`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RollbackBody {
    /// The version to restore (from `GET /admin/flags/{key}/versions`).
    pub version: i32,
}

fn members<'a>(
    body: &'a Value,
    allowed: &[&str],
    errors: &mut Vec<FieldError>,
) -> Option<&'a Map<String, Value>> {
    let Some(map) = body.as_object() else {
        errors.push(FieldError::new("body", "must be a JSON object"));
        return None;
    };
    for name in map.keys() {
        if !allowed.contains(&name.as_str()) {
            errors.push(FieldError::new(
                name,
                format!("unknown member; expected one of {}", allowed.join(", ")),
            ));
        }
    }
    Some(map)
}

/// Checks the key of a new flag.
pub fn check_key(key: &str, errors: &mut Vec<FieldError>) {
    if !valid_key(key) {
        errors.push(FieldError::new(
            "key",
            "use 1 to 128 characters: letters, digits, '.', '_' and '-', starting with a letter or digit",
        ));
    }
}

/// Checks a definition body against the plans that exist.
pub fn parse_definition(
    body: &Value,
    known_plans: &BTreeSet<String>,
    errors: &mut Vec<FieldError>,
) -> Option<DefinitionInput> {
    let map = members(
        body,
        &["description", "default", "plans", "rollout_percent"],
        errors,
    )?;
    let description = match map.get("description") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => {
            let text = text.trim();
            if text.chars().count() > MAX_DESCRIPTION {
                errors.push(FieldError::new(
                    "description",
                    format!("use at most {MAX_DESCRIPTION} characters"),
                ));
            }
            text.to_string()
        }
        Some(_) => {
            errors.push(FieldError::new("description", "must be a string"));
            String::new()
        }
    };
    let default = match map.get("default") {
        None => {
            errors.push(FieldError::new("default", "required"));
            None
        }
        Some(Value::Null) => {
            errors.push(FieldError::new(
                "default",
                "must be a boolean, string, number, array or object, not null",
            ));
            None
        }
        Some(value) => Some(value.clone()),
    };
    let mut plans = BTreeMap::new();
    match map.get("plans") {
        None | Some(Value::Null) => {}
        Some(Value::Object(given)) => {
            for (plan, value) in given {
                let field = format!("plans.{plan}");
                if !known_plans.contains(plan) {
                    let names: Vec<&str> = known_plans.iter().map(String::as_str).collect();
                    errors.push(FieldError::new(
                        &field,
                        format!("no such plan; plans are {}", names.join(", ")),
                    ));
                }
                if let Some(default) = &default {
                    check_type(&field, value, default, errors);
                }
                plans.insert(plan.clone(), value.clone());
            }
        }
        Some(_) => errors.push(FieldError::new(
            "plans",
            "must be an object of plan names to values",
        )),
    }
    let rollout_percent = match map.get("rollout_percent") {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_u64().and_then(|p| u8::try_from(p).ok()) {
            Some(p) if p <= 100 => Some(p),
            _ => {
                errors.push(FieldError::new(
                    "rollout_percent",
                    "must be an integer from 0 to 100",
                ));
                None
            }
        },
    };
    Some(DefinitionInput {
        description,
        default: default?,
        plans,
        rollout_percent,
    })
}

/// `value` must be of the flag's JSON type (`like`'s).
pub fn check_type(field: &str, value: &Value, like: &Value, errors: &mut Vec<FieldError>) {
    let (got, want) = (json_type(value), json_type(like));
    if got != want {
        errors.push(FieldError::new(
            field,
            format!("must be a {want} like the flag's default, not {got}"),
        ));
    }
}

/// Checks an override body against the flag's default.
pub fn parse_override(
    body: &Value,
    default: &Value,
    errors: &mut Vec<FieldError>,
) -> Option<Value> {
    let map = members(body, &["value"], errors)?;
    match map.get("value") {
        None => {
            errors.push(FieldError::new("value", "required"));
            None
        }
        Some(value) => {
            check_type("value", value, default, errors);
            Some(value.clone())
        }
    }
}

pub fn parse_rollback(body: &Value, errors: &mut Vec<FieldError>) -> Option<i32> {
    let map = members(body, &["version"], errors)?;
    match map.get("version").and_then(Value::as_i64) {
        Some(v) if v >= 1 => i32::try_from(v).ok(),
        _ => {
            errors.push(FieldError::new(
                "version",
                "must be a version number (1 or more)",
            ));
            None
        }
    }
}

/// One kept version of a definition.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct FlagVersion {
    pub version: i32,
    pub description: String,
    #[schema(value_type = Value)]
    #[serde(rename = "default")]
    pub default: Value,
    #[schema(value_type = Object)]
    pub plans: BTreeMap<String, Value>,
    pub rollout_percent: Option<u8>,
    /// `create`, `update` or `rollback`.
    pub change: String,
    /// For a rollback: the version it restored.
    pub restored_version: Option<i32>,
    /// Who made the change (`operator`).
    pub actor: String,
    pub request_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FlagVersionPage {
    /// Newest first.
    pub items: Vec<FlagVersion>,
    /// Pass as `?cursor=` for older versions; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VersionQuery {
    /// 1..=500, default 50.
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// A tenant's override of one flag.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Override {
    pub tenant_id: Uuid,
    pub key: String,
    #[schema(value_type = Value)]
    pub value: Value,
    /// Counts every change of this tenant's override of the flag, deletes included.
    pub version: i32,
    pub updated_at: DateTime<Utc>,
}

/// `GET /features`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Features {
    /// Every flag's value for the caller.
    #[schema(value_type = Object)]
    pub flags: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plans() -> BTreeSet<String> {
        ["free", "pro", "enterprise"]
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn keys() {
        for good in [
            "a",
            "new-dashboard",
            "Feature.flexibleRollout.10",
            "x_1",
            &"k".repeat(128),
        ] {
            assert!(valid_key(good), "{good}");
        }
        for bad in ["", "-a", ".a", "a b", "a/b", "é", &"k".repeat(129)] {
            assert!(!valid_key(bad), "{bad}");
        }
    }

    #[test]
    fn a_good_definition() {
        let mut errors = Vec::new();
        let input = parse_definition(
            &json!({"description": " Beta ", "default": false, "plans": {"pro": true}, "rollout_percent": 25}),
            &plans(),
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        let input = input.unwrap();
        assert_eq!(input.description, "Beta");
        assert_eq!(input.plans["pro"], json!(true));
        assert_eq!(input.rollout_percent, Some(25));
    }

    #[test]
    fn every_bad_field_is_named() {
        let mut errors = Vec::new();
        let input = parse_definition(
            &json!({"default": "on", "plans": {"gold": "x", "pro": 1}, "rollout_percent": 101, "colour": "red"}),
            &plans(),
            &mut errors,
        );
        assert!(input.is_some());
        let mut got = fields(&errors);
        got.sort();
        assert_eq!(
            got,
            vec!["colour", "plans.gold", "plans.pro", "rollout_percent"]
        );

        for (body, field) in [
            (json!({}), "default"),
            (json!({"default": null}), "default"),
            (
                json!({"default": 1, "rollout_percent": -1}),
                "rollout_percent",
            ),
            (
                json!({"default": 1, "rollout_percent": 2.5}),
                "rollout_percent",
            ),
            (
                json!({"default": 1, "rollout_percent": "10"}),
                "rollout_percent",
            ),
            (json!({"default": 1, "plans": [1]}), "plans"),
            (json!({"default": 1, "description": 3}), "description"),
            (
                json!({"default": 1, "description": "d".repeat(1001)}),
                "description",
            ),
            (json!([1]), "body"),
        ] {
            let mut errors = Vec::new();
            parse_definition(&body, &plans(), &mut errors);
            assert_eq!(fields(&errors), vec![field], "{body}");
        }
    }

    #[test]
    fn overrides_and_rollbacks() {
        let mut errors = Vec::new();
        assert_eq!(
            parse_override(&json!({"value": {"a": 1}}), &json!({}), &mut errors),
            Some(json!({"a": 1}))
        );
        assert!(errors.is_empty());
        for body in [json!({"value": "x"}), json!({}), json!({"value": null})] {
            let mut errors = Vec::new();
            parse_override(&body, &json!(true), &mut errors);
            assert_eq!(fields(&errors), vec!["value"], "{body}");
        }
        let mut errors = Vec::new();
        parse_override(
            &json!({"value": true, "tenant_id": "x"}),
            &json!(true),
            &mut errors,
        );
        assert_eq!(fields(&errors), vec!["tenant_id"]);
        let mut errors = Vec::new();
        assert_eq!(parse_rollback(&json!({"version": 2}), &mut errors), Some(2));
        for body in [json!({"version": 0}), json!({"version": "2"}), json!({})] {
            let mut errors = Vec::new();
            assert_eq!(parse_rollback(&body, &mut errors), None);
            assert_eq!(fields(&errors), vec!["version"]);
        }
    }
}
