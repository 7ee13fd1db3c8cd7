//! Plans as the guards read them: each tenant's plan names a row of `app.plans` (plans are
//! data, not code) whose features and limits the plan gates compare against, answering with
//! [`AccessError::PlanRequired`] or [`AccessError::PlanLimit`].

use super::{AccessError, AuthError};
use crate::db::{DbError, PgPool};

#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    pub rank: i32,
    pub limits: serde_json::Value,
    pub features: serde_json::Value,
}

impl Plan {
    pub fn feature(&self, key: &str) -> bool {
        self.features
            .get(key)
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    }

    /// A numeric limit; None means unlimited.
    pub fn limit(&self, key: &str) -> Option<i64> {
        self.limits.get(key).and_then(|v| v.as_i64())
    }
}

/// The plan called `name`; [`AuthError::UnknownPlan`] when no row has that name.
pub async fn find(pool: &PgPool, name: &str) -> Result<Plan, AuthError> {
    let conn = pool.get().await.map_err(DbError::from)?;
    let stmt = conn
        .prepare_cached("select name, rank, limits, features from app.plans where name = $1")
        .await?;
    let row = conn
        .query_opt(&stmt, &[&name])
        .await?
        .ok_or_else(|| AuthError::UnknownPlan(name.to_string()))?;
    Ok(Plan {
        name: row.get(0),
        rank: row.get(1),
        limits: row.get(2),
        features: row.get(3),
    })
}

/// The plan gate on a feature: `PlanRequired` naming the cheapest plan that has `feature`,
/// unless `plan` has it.
pub async fn require_feature(pool: &PgPool, plan: &Plan, feature: &str) -> Result<(), AuthError> {
    if plan.feature(feature) {
        return Ok(());
    }
    Err(AccessError::PlanRequired {
        feature: feature.to_string(),
        plan: plan.name.clone(),
        required_plan: cheapest_with(pool, feature).await?,
    }
    .into())
}

async fn cheapest_with(pool: &PgPool, feature: &str) -> Result<Option<String>, AuthError> {
    let conn = pool.get().await.map_err(DbError::from)?;
    let row = conn
        .query_opt(
            "select name from app.plans where coalesce((features ->> $1)::boolean, false) order by rank limit 1",
            &[&feature],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}
