//! The tenant operations behind `GET /features` and OFREP: they load what evaluation needs
//! (definitions and the tenant's live overrides) in the tenant's transaction; the caller then
//! evaluates with [`super::eval`]. Loading per request is what the tenant actor's config
//! snapshot is meant to replace: it will hold the same [`FlagInputs`] and skip these queries.

use futures_util::future::BoxFuture;
use serde_json::Value;
use tokio_postgres::Row;

use super::model::{definition_from_row, Features};
use super::{FlagError, FlagInputs};
use crate::actors::TenantOp;
use crate::auth::Caller;
use crate::db::TenantTx;

/// [`super::model::DEFINITION_COLUMNS`] of `f`, then the override of the current tenant. An
/// override of another type than the flag's is left out: operators cannot write one, but a
/// tenant restored after its flag changed type may bring one back.
macro_rules! select {
    ($tail:literal) => {
        concat!(
            "select f.key, f.description, f.default_value, f.plan_values, f.rollout_percent, \
             f.version, f.updated_at, o.value \
             from app.flags f left join app.flag_overrides o \
             on o.tenant_id = $1 and o.flag_key = f.key and o.deleted_at is null \
             and jsonb_typeof(o.value) = jsonb_typeof(f.default_value) ",
            $tail
        )
    };
}

fn add_row(inputs: &mut FlagInputs, row: &Row) -> Result<(), FlagError> {
    let definition = definition_from_row(row, 0)?;
    if let Some(value) = row.get::<_, Option<Value>>(7) {
        inputs.overrides.insert(definition.key.clone(), value);
    }
    inputs
        .definitions
        .insert(definition.key.clone(), definition);
    Ok(())
}

/// The subject of an evaluation when the request names none: the user, else the tenant.
pub fn targeting_key(caller: &Caller) -> String {
    caller
        .user_id
        .unwrap_or(caller.tenant_id)
        .hyphenated()
        .to_string()
}

/// `GET /features`: every flag's value for the caller.
pub fn features(inputs: &FlagInputs, caller: &Caller) -> Features {
    let key = targeting_key(caller);
    Features {
        flags: inputs
            .evaluate_all(&caller.config.plan.name, &key)
            .map(|(definition, evaluation)| (definition.key.clone(), evaluation.value.clone()))
            .collect(),
    }
}

/// Every flag, for the caller's tenant.
pub struct LoadFlags;

impl TenantOp for LoadFlags {
    type Output = FlagInputs;
    type Error = FlagError;
    // Flags live in the shared schema.
    const OPENS_TENANT_SCHEMA: bool = false;

    fn run<'a>(
        self,
        tx: &'a TenantTx<'a>,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<FlagInputs, FlagError>> {
        Box::pin(async move {
            caller.user()?;
            let stmt = tx.prepare_cached(select!("order by f.key")).await?;
            let rows = tx.query(&stmt, &[&caller.tenant_id]).await?;
            let mut inputs = FlagInputs::default();
            for row in &rows {
                add_row(&mut inputs, row)?;
            }
            Ok(inputs)
        })
    }
}

/// One flag, for the caller's tenant: its definition and override, or nothing when no such
/// flag exists. A single statement, sent with the tenant context under one Sync.
pub struct LoadFlag(pub String);

impl TenantOp for LoadFlag {
    type Output = FlagInputs;
    type Error = FlagError;
    const SINGLE_STATEMENT: bool = true;
    const OPENS_TENANT_SCHEMA: bool = false;

    fn run<'a>(
        self,
        tx: &'a TenantTx<'a>,
        caller: &'a Caller,
    ) -> BoxFuture<'a, Result<FlagInputs, FlagError>> {
        Box::pin(async move {
            caller.user()?;
            let stmt = tx.prepare_cached(select!("where f.key = $2")).await?;
            let row = tx
                .query_opt_then_commit(&stmt, &[&caller.tenant_id, &self.0])
                .await?;
            let mut inputs = FlagInputs::default();
            if let Some(row) = row {
                add_row(&mut inputs, &row)?;
            }
            Ok(inputs)
        })
    }
}
