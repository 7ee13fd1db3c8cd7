//! Plans as data (API.md "Plans, settings, branding, feature flags"): the public list, the
//! operator's `PUT /admin/plans/{plan}` (which may create a plan: operators add plans without a
//! release, and the body is the whole plan either way), and moving a tenant to another plan.
//! Operator changes go through the admin role, each with a platform audit row in the same
//! transaction; moving a tenant also writes the tenant's own audit trail.
//!
//! Every limit is named in a plan written here (null: unlimited); a body that leaves one out is
//! refused rather than read as unlimited, since a forgotten limit would silently lift it.

use std::collections::BTreeMap;

use deadpool_postgres::GenericClient;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::load::{plan_from_columns, PlanColumns};
use super::snapshot::{Limit, Limits, Plan};
use super::{checked, printable, ConfigError};
use crate::audit::{self, AuditAction};
use crate::db::PgPool;
use crate::error::FieldError;
use crate::tenancy::{lifecycle, Tenant};

const PLAN_COLUMNS: &str = "name, display_name, rank, price_cents, currency, limits, features";

/// The largest number a limit or a price may be: far above any real plan, far below what
/// JSON numbers and bigint hold.
const MAX_AMOUNT: i64 = 1_000_000_000_000;

fn plan_from_row(row: &tokio_postgres::Row) -> Result<Plan, ConfigError> {
    Ok(plan_from_columns(PlanColumns {
        name: row.get(0),
        display_name: row.get(1),
        rank: row.get(2),
        price_cents: row.get(3),
        currency: row.get(4),
        limits: row.get(5),
        features: row.get(6),
    })?)
}

/// Every plan, the cheapest first.
pub async fn list(pool: &PgPool) -> Result<Vec<Plan>, ConfigError> {
    let conn = pool.get().await?;
    let stmt = conn
        .prepare_cached(&format!(
            "select {PLAN_COLUMNS} from app.plans order by price_cents, rank, name"
        ))
        .await?;
    conn.query(&stmt, &[])
        .await?
        .iter()
        .map(plan_from_row)
        .collect()
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 31
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn valid_feature(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn integer(
    field: &str,
    value: Option<&Value>,
    range: std::ops::RangeInclusive<i64>,
    errors: &mut Vec<FieldError>,
) -> Option<i64> {
    let Some(value) = value else {
        errors.push(FieldError::new(field, "is required"));
        return None;
    };
    match value.as_i64() {
        Some(n) if range.contains(&n) => Some(n),
        _ => {
            errors.push(FieldError::new(
                field,
                format!(
                    "must be an integer from {} to {}",
                    range.start(),
                    range.end()
                ),
            ));
            None
        }
    }
}

/// `body` as the plan `name` (from the path): the whole plan, as `GET /plans` shows one.
pub fn parse_plan(name: &str, body: &Value) -> Result<Plan, ConfigError> {
    let mut errors = Vec::new();
    if !valid_name(name) {
        errors.push(FieldError::new(
            "name",
            "a plan name is 1 to 31 characters: a lowercase letter, then lowercase letters, digits or _",
        ));
    }
    let Some(object) = body.as_object() else {
        return Err(ConfigError::invalid("body", "must be a plan object"));
    };
    for key in object.keys() {
        if ![
            "name",
            "display_name",
            "rank",
            "price_cents",
            "currency",
            "limits",
            "features",
        ]
        .contains(&key.as_str())
        {
            errors.push(FieldError::new(key, "unknown member"));
        }
    }
    match object.get("name") {
        None => {}
        Some(Value::String(given)) if given == name => {}
        Some(_) => errors.push(FieldError::new(
            "name",
            "must be the plan named in the path",
        )),
    }
    let display_name = match object.get("display_name") {
        Some(Value::String(s)) if (1..=100).contains(&s.trim().chars().count()) && printable(s) => {
            s.trim().to_string()
        }
        Some(_) => {
            errors.push(FieldError::new(
                "display_name",
                "must be 1 to 100 printable characters",
            ));
            String::new()
        }
        None => {
            errors.push(FieldError::new("display_name", "is required"));
            String::new()
        }
    };
    let rank = integer("rank", object.get("rank"), 0..=1_000_000, &mut errors).unwrap_or(0);
    let price_cents = integer(
        "price_cents",
        object.get("price_cents"),
        0..=MAX_AMOUNT,
        &mut errors,
    )
    .unwrap_or(0);
    let currency = match object.get("currency") {
        Some(Value::String(c)) if c.len() == 3 && c.chars().all(|ch| ch.is_ascii_alphabetic()) => {
            c.to_ascii_lowercase()
        }
        Some(_) => {
            errors.push(FieldError::new(
                "currency",
                "must be an ISO 4217 code such as usd",
            ));
            String::new()
        }
        None => {
            errors.push(FieldError::new("currency", "is required"));
            String::new()
        }
    };
    let limits = parse_limits(object.get("limits"), &mut errors);
    let features = parse_features(object.get("features"), &mut errors);
    checked(
        Plan {
            name: name.to_string(),
            display_name,
            rank: i32::try_from(rank).unwrap_or(0),
            price_cents,
            currency,
            limits,
            features,
        },
        errors,
    )
}

fn parse_limits(value: Option<&Value>, errors: &mut Vec<FieldError>) -> Limits {
    let mut limits = Limits::default();
    let Some(value) = value else {
        errors.push(FieldError::new("limits", "is required"));
        return limits;
    };
    let Some(given) = value.as_object() else {
        errors.push(FieldError::new("limits", "must be an object"));
        return limits;
    };
    for key in given.keys() {
        if key == super::load::USAGE_QUOTAS {
            limits.usage_quotas = parse_usage_quotas(&given[key], errors);
        } else if Limit::parse(key).is_none() {
            errors.push(FieldError::new(&format!("limits.{key}"), "unknown limit"));
        }
    }
    for limit in Limit::ALL {
        let field = format!("limits.{}", limit.key());
        match given.get(limit.key()) {
            None => errors.push(FieldError::new(&field, "is required (null: unlimited)")),
            Some(Value::Null) => limits.set(limit, None),
            Some(v) => {
                if let Some(n) = integer(&field, Some(v), limit.minimum()..=MAX_AMOUNT, errors) {
                    limits.set(limit, Some(n));
                }
            }
        }
    }
    limits
}

/// `usage_quotas`: optional (absent: none); `{metric: n | null}`, for metrics clients post
/// (`api_calls` has its own `api_calls_per_month`; the sampled gauges have none).
fn parse_usage_quotas(value: &Value, errors: &mut Vec<FieldError>) -> BTreeMap<String, i64> {
    let mut quotas = BTreeMap::new();
    let Some(given) = value.as_object() else {
        if !value.is_null() {
            errors.push(FieldError::new("limits.usage_quotas", "must be an object"));
        }
        return quotas;
    };
    for (metric, limit) in given {
        let field = format!("limits.usage_quotas.{metric}");
        if let Err(message) = crate::usage::events::check_metric(metric) {
            errors.push(FieldError::new(&field, message));
            continue;
        }
        if limit.is_null() {
            continue;
        }
        if let Some(n) = integer(&field, Some(limit), 0..=MAX_AMOUNT, errors) {
            quotas.insert(metric.clone(), n);
        }
    }
    quotas
}

fn parse_features(value: Option<&Value>, errors: &mut Vec<FieldError>) -> BTreeMap<String, bool> {
    let mut features: BTreeMap<String, bool> = super::snapshot::feature::KNOWN
        .iter()
        .map(|f| (f.to_string(), false))
        .collect();
    let Some(value) = value else {
        errors.push(FieldError::new("features", "is required"));
        return features;
    };
    let Some(given) = value.as_object() else {
        errors.push(FieldError::new("features", "must be an object"));
        return features;
    };
    for (key, on) in given {
        let field = format!("features.{key}");
        if !valid_feature(key) {
            errors.push(FieldError::new(
                &field,
                "a feature name is a lowercase letter, then lowercase letters, digits or _ (63 at most)",
            ));
            continue;
        }
        match on.as_bool() {
            Some(on) => {
                features.insert(key.clone(), on);
            }
            None => errors.push(FieldError::new(&field, "must be true or false")),
        }
    }
    features
}

fn stored_limits(limits: &Limits) -> Value {
    let mut stored = Limit::ALL
        .iter()
        .map(|l| (l.key().to_string(), json!(limits.get(*l))))
        .collect::<Map<String, Value>>();
    stored.insert(
        super::load::USAGE_QUOTAS.to_string(),
        json!(limits.usage_quotas),
    );
    Value::Object(stored)
}

/// What [`save`] did.
pub struct SavedPlan {
    pub plan: Plan,
    pub created: bool,
    /// The live tenants on the plan, whose snapshots are now stale.
    pub tenants: Vec<Uuid>,
}

/// Creates or replaces `plan`, with a platform audit row holding it before and after.
pub async fn save(
    admin: &PgPool,
    plan: Plan,
    request_id: Option<&str>,
) -> Result<SavedPlan, ConfigError> {
    let mut conn = admin.get().await?;
    let tx = conn.transaction().await?;
    let before = match tx
        .query_opt(
            &format!("select {PLAN_COLUMNS} from app.plans where name = $1 for update"),
            &[&plan.name],
        )
        .await?
    {
        Some(row) => Some(plan_from_row(&row)?),
        None => None,
    };
    let features = serde_json::to_value(&plan.features).unwrap_or_else(|_| json!({}));
    let row = tx
        .query_one(
            &format!(
                "insert into app.plans ({PLAN_COLUMNS}) values ($1, $2, $3, $4, $5, $6, $7) \
                 on conflict (name) do update set display_name = excluded.display_name, \
                 rank = excluded.rank, price_cents = excluded.price_cents, \
                 currency = excluded.currency, limits = excluded.limits, \
                 features = excluded.features, updated_at = excluded.updated_at \
                 returning {PLAN_COLUMNS}"
            ),
            &[
                &plan.name,
                &plan.display_name,
                &plan.rank,
                &plan.price_cents,
                &plan.currency,
                &stored_limits(&plan.limits),
                &features,
            ],
        )
        .await?;
    let after = plan_from_row(&row)?;
    let tenants: Vec<Uuid> = tx
        .query(
            "select id from app.tenants where plan = $1 and deleted_at is null",
            &[&plan.name],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let created = before.is_none();
    lifecycle::record_platform_action(
        &tx,
        "operator",
        if created {
            "plan.create"
        } else {
            "plan.update"
        },
        None,
        json!({"plan": after.name, "before": before, "after": after}),
        request_id,
    )
    .await?;
    tx.commit().await?;
    Ok(SavedPlan {
        plan: after,
        created,
        tenants,
    })
}

/// `PUT /admin/tenants/{id}/plan`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanChange {
    pub plan: String,
}

/// Moves a live tenant to `change.plan` (422 `plan` when no such plan exists). Moving it to
/// the plan it is on changes nothing and records nothing.
pub async fn move_tenant(
    admin: &PgPool,
    tenant: Uuid,
    change: PlanChange,
    request_id: Option<&str>,
) -> Result<Tenant, ConfigError> {
    let mut conn = admin.get().await?;
    let tx = conn.transaction().await?;
    let before: String = tx
        .query_opt(
            "select plan from app.tenants where id = $1 and deleted_at is null for update",
            &[&tenant],
        )
        .await?
        .ok_or(ConfigError::TenantNotFound)?
        .get(0);
    let target = change.plan.trim();
    let known = valid_name(target)
        && tx
            .query_opt("select 1 from app.plans where name = $1", &[&target])
            .await?
            .is_some();
    if !known {
        return Err(ConfigError::invalid("plan", "no such plan"));
    }
    if before != target {
        tx.execute(
            "update app.tenants set plan = $2, updated_at = now() where id = $1",
            &[&tenant, &target],
        )
        .await?;
        audit::record_platform(
            &tx,
            tenant,
            audit::Entry {
                action: AuditAction::Update,
                resource: "tenant",
                resource_id: tenant.to_string(),
                before: Some(json!({"plan": before})),
                after: Some(json!({"plan": target})),
                extra: None,
            },
            request_id,
        )
        .await?;
        lifecycle::record_platform_action(
            &tx,
            "operator",
            "tenant.plan",
            Some(tenant),
            json!({"before": before, "after": target}),
            request_id,
        )
        .await?;
        crate::billing::outbound::on_plan_changed(&tx, tenant, target).await?;
    }
    let after = lifecycle::find(tx.client(), &tenant.to_string()).await?;
    tx.commit().await?;
    Ok(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> Value {
        json!({
            "name": "team",
            "display_name": "Team",
            "rank": 1,
            "price_cents": 1900,
            "currency": "EUR",
            "limits": {
                "max_users": 25, "api_calls_per_month": null, "rate_limit_per_minute": 1200,
                "webhook_deliveries_per_minute": 100, "analytics_retention_days": 90
            },
            "features": {"api_access": true, "sso": false}
        })
    }

    fn fields(err: ConfigError) -> Vec<String> {
        match err {
            ConfigError::Validation(errors) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_whole_plan_parses() {
        let plan = parse_plan("team", &body()).unwrap();
        assert_eq!(plan.currency, "eur");
        assert_eq!(plan.limits.max_users, Some(25));
        assert_eq!(plan.limits.api_calls_per_month, None);
        assert!(plan.has("api_access") && !plan.has("webhooks"));
        assert!(plan.features.contains_key("custom_integrations"));
    }

    #[test]
    fn every_bad_member_is_named() {
        let mut b = body();
        b["name"] = json!("other");
        b["rank"] = json!(-1);
        b["limits"]["max_users"] = json!("many");
        b["limits"]["rate_limit_per_minute"] = json!(0);
        b["limits"]["seats"] = json!(3);
        b["limits"]
            .as_object_mut()
            .unwrap()
            .remove("analytics_retention_days");
        b["features"]["Bad-Name"] = json!(true);
        b["features"]["webhooks"] = json!("yes");
        b["color"] = json!("blue");
        let mut got = fields(parse_plan("team", &b).unwrap_err());
        got.sort();
        assert_eq!(
            got,
            [
                "color",
                "features.Bad-Name",
                "features.webhooks",
                "limits.analytics_retention_days",
                "limits.max_users",
                "limits.rate_limit_per_minute",
                "limits.seats",
                "name",
                "rank",
            ]
        );
        assert_eq!(
            fields(parse_plan("Team!", &body()).unwrap_err()),
            ["name", "name"]
        );
        assert_eq!(
            fields(parse_plan("team", &json!([1])).unwrap_err()),
            ["body"]
        );
    }
}
