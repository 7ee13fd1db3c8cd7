//! What `GET /features` and OFREP evaluate, without a query on the request path: the flag
//! definitions the process keeps (`cache::Caches::flag_definitions`, read here from PostgreSQL
//! once per change or cache TTL) and the tenant's overrides, which its config snapshot holds
//! (`tenant_config::load`).

use super::model::{definition_from_row, Features, DEFINITION_COLUMNS};
use super::{Definitions, FlagError, FlagInputs};
use crate::auth::Caller;
use crate::db::{DbError, PgPool};

/// Every flag definition. Definitions are platform data: no tenant context is needed.
pub async fn read_definitions(pool: &PgPool) -> Result<Definitions, FlagError> {
    let conn = pool.get().await.map_err(DbError::from)?;
    let stmt = conn
        .prepare_cached(&format!(
            "select {DEFINITION_COLUMNS} from app.flags order by key"
        ))
        .await?;
    let mut definitions = Definitions::new();
    for row in conn.query(&stmt, &[]).await? {
        let definition = definition_from_row(&row, 0)?;
        definitions.insert(definition.key.clone(), definition);
    }
    Ok(definitions)
}

/// The inputs of the caller's evaluations: tenant users only (a JWT or an API key).
pub fn for_user<'a>(
    definitions: &'a Definitions,
    caller: &'a Caller,
) -> Result<FlagInputs<'a>, FlagError> {
    caller.user()?;
    Ok(FlagInputs {
        definitions,
        overrides: &caller.config.flags,
    })
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
pub fn features(inputs: FlagInputs<'_>, caller: &Caller) -> Features {
    let key = targeting_key(caller);
    Features {
        flags: inputs
            .evaluate_all(&caller.config.plan.name, &key)
            .map(|(definition, evaluation)| (definition.key.clone(), evaluation.value.clone()))
            .collect(),
    }
}
