//! The operator's changes to flags, through the admin role (definitions are platform data; an
//! override is written into one tenant's rows, which only operators may do). Each change is one
//! transaction holding the change, its new version and its audit: a platform audit row always,
//! and for an override also a row in the tenant's own trail, both with the state before and
//! after. A change that changes nothing writes nothing and keeps the version.
//!
//! Locks keep a definition and its overrides of one JSON type: changing a definition locks its
//! row (`for update`), writing an override reads it `for share`.

use std::collections::{BTreeMap, BTreeSet};

use deadpool_postgres::{GenericClient, Transaction};
use serde_json::{json, Value};
use uuid::Uuid;

use super::model::{
    self, definition_from_row, json_type, plans_from, rollout_from, FlagVersion, FlagVersionPage,
    Override, DEFINITION_COLUMNS,
};
use super::{Definition, FlagError};
use crate::audit::{self, AuditAction};
use crate::db::PgPool;
use crate::error::FieldError;
use crate::tenancy::lifecycle::record_platform_action;

/// The outcome of a PUT: the stored value, and whether it was created or changed.
#[derive(Debug)]
pub struct Saved<T> {
    pub value: T,
    pub created: bool,
    pub changed: bool,
}

const ACTOR: &str = "operator";

async fn known_plans(tx: &impl GenericClient) -> Result<BTreeSet<String>, FlagError> {
    let rows = tx.query("select name from app.plans", &[]).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

async fn find_definition(
    tx: &impl GenericClient,
    key: &str,
    lock: &str,
) -> Result<Option<Definition>, FlagError> {
    let row = tx
        .query_opt(
            &format!("select {DEFINITION_COLUMNS} from app.flags where key = $1 {lock}"),
            &[&key],
        )
        .await?;
    row.map(|r| definition_from_row(&r, 0)).transpose()
}

/// Refuses a default of a JSON type that live overrides of the flag do not share.
async fn check_override_types(
    tx: &impl GenericClient,
    key: &str,
    default: &Value,
) -> Result<(), FlagError> {
    let wanted = json_type(default);
    let overrides: i64 = tx
        .query_one(
            "select count(*) from app.flag_overrides \
             where flag_key = $1 and deleted_at is null and jsonb_typeof(value) <> $2",
            &[&key, &wanted],
        )
        .await?
        .get(0);
    if overrides > 0 {
        return Err(FlagError::TypeConflict {
            key: key.to_string(),
            wanted,
            overrides,
        });
    }
    Ok(())
}

fn same_content(definition: &Definition, input: &model::DefinitionInput) -> bool {
    definition.description == input.description
        && definition.default == input.default
        && definition.plans == input.plans
        && definition.rollout_percent == input.rollout_percent
}

/// Writes `input` as the flag's next version (`before` is the current one, if any).
async fn write_version(
    tx: &Transaction<'_>,
    key: &str,
    before: Option<&Definition>,
    input: &model::DefinitionInput,
    change: &str,
    restored: Option<i32>,
    request_id: Option<&str>,
) -> Result<Definition, FlagError> {
    let version = before.map_or(1, |b| b.version + 1);
    let plans = json!(input.plans);
    let rollout = input.rollout_percent.map(i16::from);
    let row = tx
        .query_one(
            &format!(
                "insert into app.flags (key, description, default_value, plan_values, rollout_percent, version) \
                 values ($1, $2, $3, $4, $5, $6) \
                 on conflict (key) do update set description = excluded.description, \
                 default_value = excluded.default_value, plan_values = excluded.plan_values, \
                 rollout_percent = excluded.rollout_percent, version = excluded.version, \
                 updated_at = excluded.updated_at \
                 returning {DEFINITION_COLUMNS}"
            ),
            &[&key, &input.description, &input.default, &plans, &rollout, &version],
        )
        .await?;
    let after = definition_from_row(&row, 0)?;
    tx.execute(
        "insert into app.flag_versions (flag_key, version, description, default_value, plan_values, \
         rollout_percent, change, restored_version, actor, request_id) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &key,
            &version,
            &input.description,
            &input.default,
            &plans,
            &rollout,
            &change,
            &restored,
            &ACTOR,
            &request_id,
        ],
    )
    .await?;
    let mut details = json!({"key": key, "version": version, "before": before, "after": after});
    if let Some(restored) = restored {
        details["restored_version"] = json!(restored);
    }
    record_platform_action(
        tx,
        ACTOR,
        &format!("flag.{change}"),
        None,
        details,
        request_id,
    )
    .await?;
    Ok(after)
}

/// `PUT /admin/flags/{key}`: creates the flag or writes its next version.
pub async fn put_definition(
    admin: &PgPool,
    key: &str,
    body: &Value,
    request_id: Option<&str>,
) -> Result<Saved<Definition>, FlagError> {
    let mut errors = Vec::new();
    model::check_key(key, &mut errors);
    let mut conn = admin.get().await?;
    let tx = conn.transaction().await?;
    let plans = known_plans(&tx).await?;
    let input = model::parse_definition(body, &plans, &mut errors);
    FlagError::check(errors)?;
    let input = input.ok_or_else(|| FlagError::Validation(Vec::new()))?;
    let before = find_definition(&tx, key, "for update").await?;
    if let Some(current) = before.as_ref().filter(|b| same_content(b, &input)) {
        return Ok(Saved {
            value: current.clone(),
            created: false,
            changed: false,
        });
    }
    check_override_types(&tx, key, &input.default).await?;
    let change = if before.is_some() { "update" } else { "create" };
    let after = write_version(&tx, key, before.as_ref(), &input, change, None, request_id).await?;
    tx.commit().await?;
    Ok(Saved {
        value: after,
        created: before.is_none(),
        changed: true,
    })
}

fn version_from_row(row: &tokio_postgres::Row) -> Result<FlagVersion, FlagError> {
    Ok(FlagVersion {
        version: row.get("version"),
        description: row.get("description"),
        default: row.get("default_value"),
        plans: plans_from("flag_versions.plan_values", row.get("plan_values"))?,
        rollout_percent: rollout_from("flag_versions.rollout_percent", row.get("rollout_percent"))?,
        change: row.get("change"),
        restored_version: row.get("restored_version"),
        actor: row.get("actor"),
        request_id: row.get("request_id"),
        created_at: row.get("created_at"),
    })
}

const VERSION_COLUMNS: &str = "version, description, default_value, plan_values, rollout_percent, \
     change, restored_version, actor, request_id, created_at";

/// `GET /admin/flags/{key}/versions`: newest first; the cursor is the last version listed.
pub async fn versions(
    admin: &PgPool,
    key: &str,
    limit: Option<i64>,
    cursor: Option<&str>,
) -> Result<FlagVersionPage, FlagError> {
    let mut errors = Vec::new();
    let limit = limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        errors.push(FieldError::new("limit", "must be between 1 and 500"));
    }
    let before: Option<i32> = match cursor.filter(|c| !c.is_empty()) {
        None => None,
        Some(raw) => match raw.parse::<i32>() {
            Ok(v) if v >= 1 => Some(v),
            _ => {
                errors.push(FieldError::new("cursor", "not a cursor of this list"));
                None
            }
        },
    };
    FlagError::check(errors)?;
    let mut conn = admin.get().await?;
    let tx = conn.transaction().await?;
    if find_definition(&tx, key, "").await?.is_none() {
        return Err(FlagError::NotFound("flag"));
    }
    let rows = tx
        .query(
            &format!(
                "select {VERSION_COLUMNS} from app.flag_versions \
                 where flag_key = $1 and ($2::int is null or version < $2) \
                 order by version desc limit $3"
            ),
            &[&key, &before, &(limit + 1)],
        )
        .await?;
    tx.commit().await?;
    let mut items = rows
        .iter()
        .map(version_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let kept = usize::try_from(limit).unwrap_or(0);
    let next_cursor = if items.len() > kept {
        items.truncate(kept);
        items.last().map(|v| v.version.to_string())
    } else {
        None
    };
    Ok(FlagVersionPage { items, next_cursor })
}

/// `POST /admin/flags/{key}/rollback`: writes a new version equal to version `version`.
pub async fn rollback(
    admin: &PgPool,
    key: &str,
    body: &Value,
    request_id: Option<&str>,
) -> Result<Definition, FlagError> {
    let mut errors = Vec::new();
    let version = model::parse_rollback(body, &mut errors);
    FlagError::check(errors)?;
    let version = version.ok_or_else(|| FlagError::Validation(Vec::new()))?;
    let mut conn = admin.get().await?;
    let tx = conn.transaction().await?;
    let current = find_definition(&tx, key, "for update")
        .await?
        .ok_or(FlagError::NotFound("flag"))?;
    let old = tx
        .query_opt(
            &format!(
                "select {VERSION_COLUMNS} from app.flag_versions where flag_key = $1 and version = $2"
            ),
            &[&key, &version],
        )
        .await?
        .ok_or(FlagError::NotFound("flag version"))?;
    let old = version_from_row(&old)?;
    let plans = known_plans(&tx).await?;
    let gone: Vec<FieldError> = old
        .plans
        .keys()
        .filter(|p| !plans.contains(*p))
        .map(|p| FieldError::new(&format!("plans.{p}"), "this plan no longer exists"))
        .collect();
    if !gone.is_empty() {
        return Err(FlagError::NotRestorable {
            version,
            errors: gone,
        });
    }
    check_override_types(&tx, key, &old.default).await?;
    let input = model::DefinitionInput {
        description: old.description,
        default: old.default,
        plans: old.plans.into_iter().collect::<BTreeMap<_, _>>(),
        rollout_percent: old.rollout_percent,
    };
    let after = write_version(
        &tx,
        key,
        Some(&current),
        &input,
        "rollback",
        Some(version),
        request_id,
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

/// The tenant must exist and not be deleted; its row is held `for share` so that a concurrent
/// delete, which marks every row of the tenant, waits for this change.
async fn live_tenant(tx: &impl GenericClient, tenant: Uuid) -> Result<(), FlagError> {
    tx.query_opt(
        "select 1 from app.tenants where id = $1 and deleted_at is null for share",
        &[&tenant],
    )
    .await?
    .map(|_| ())
    .ok_or(FlagError::NotFound("tenant"))
}

const OVERRIDE_COLUMNS: &str = "tenant_id, flag_key, value, version, updated_at";

fn override_from_row(row: &tokio_postgres::Row) -> Override {
    Override {
        tenant_id: row.get(0),
        key: row.get(1),
        value: row.get(2),
        version: row.get(3),
        updated_at: row.get(4),
    }
}

/// The tenant's live override of `key`, locked for the change that follows.
async fn live_override(
    tx: &impl GenericClient,
    tenant: Uuid,
    key: &str,
) -> Result<Option<Override>, FlagError> {
    let row = tx
        .query_opt(
            &format!(
                "select {OVERRIDE_COLUMNS} from app.flag_overrides \
                 where tenant_id = $1 and flag_key = $2 and deleted_at is null for update"
            ),
            &[&tenant, &key],
        )
        .await?;
    Ok(row.as_ref().map(override_from_row))
}

/// Both trails: the tenant's (actor `platform`) and the platform's.
async fn audit_override(
    tx: &Transaction<'_>,
    tenant: Uuid,
    key: &str,
    action: AuditAction,
    before: Option<&Override>,
    after: Option<&Override>,
    request_id: Option<&str>,
) -> Result<(), FlagError> {
    let (before, after) = (before.map(|o| json!(o)), after.map(|o| json!(o)));
    audit::record_platform(
        tx,
        tenant,
        audit::Entry {
            action,
            resource: "flag_override",
            resource_id: key.to_string(),
            before: before.clone(),
            after: after.clone(),
            extra: None,
        },
        request_id,
    )
    .await?;
    let platform_action = if action == AuditAction::Delete {
        "flag_override.delete"
    } else {
        "flag_override.set"
    };
    record_platform_action(
        tx,
        ACTOR,
        platform_action,
        Some(tenant),
        json!({"key": key, "before": before, "after": after}),
        request_id,
    )
    .await?;
    Ok(())
}

/// `PUT /admin/tenants/{id}/flags/{key}`.
pub async fn put_override(
    admin: &PgPool,
    tenant: Uuid,
    key: &str,
    body: &Value,
    request_id: Option<&str>,
) -> Result<Saved<Override>, FlagError> {
    let mut conn = admin.get().await?;
    let tx = conn.transaction().await?;
    live_tenant(&tx, tenant).await?;
    let default: Value = tx
        .query_opt(
            "select default_value from app.flags where key = $1 for share",
            &[&key],
        )
        .await?
        .ok_or(FlagError::NotFound("flag"))?
        .get(0);
    let mut errors = Vec::new();
    let value = model::parse_override(body, &default, &mut errors);
    FlagError::check(errors)?;
    let value = value.ok_or_else(|| FlagError::Validation(Vec::new()))?;
    let before = live_override(&tx, tenant, key).await?;
    if let Some(current) = before.as_ref().filter(|o| o.value == value) {
        return Ok(Saved {
            value: current.clone(),
            created: false,
            changed: false,
        });
    }
    let row = tx
        .query_one(
            &format!(
                "insert into app.flag_overrides (tenant_id, flag_key, value) values ($1, $2, $3) \
                 on conflict (tenant_id, flag_key) do update set value = excluded.value, \
                 version = app.flag_overrides.version + 1, updated_at = excluded.updated_at, deleted_at = null \
                 returning {OVERRIDE_COLUMNS}"
            ),
            &[&tenant, &key, &value],
        )
        .await?;
    let after = override_from_row(&row);
    let action = if before.is_some() {
        AuditAction::Update
    } else {
        AuditAction::Create
    };
    audit_override(
        &tx,
        tenant,
        key,
        action,
        before.as_ref(),
        Some(&after),
        request_id,
    )
    .await?;
    tx.commit().await?;
    Ok(Saved {
        value: after,
        created: before.is_none(),
        changed: true,
    })
}

/// `DELETE /admin/tenants/{id}/flags/{key}`: the tenant falls back to its plan's value.
pub async fn delete_override(
    admin: &PgPool,
    tenant: Uuid,
    key: &str,
    request_id: Option<&str>,
) -> Result<(), FlagError> {
    let mut conn = admin.get().await?;
    let tx = conn.transaction().await?;
    live_tenant(&tx, tenant).await?;
    let before = live_override(&tx, tenant, key)
        .await?
        .ok_or(FlagError::NotFound("flag override"))?;
    tx.execute(
        "update app.flag_overrides set deleted_at = now(), updated_at = now(), version = version + 1 \
         where tenant_id = $1 and flag_key = $2",
        &[&tenant, &key],
    )
    .await?;
    audit_override(
        &tx,
        tenant,
        key,
        AuditAction::Delete,
        Some(&before),
        None,
        request_id,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
