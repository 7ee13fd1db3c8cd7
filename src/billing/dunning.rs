//! The grace check: an account past due since longer than `BILLING_GRACE_DAYS` is suspended
//! (the existing tenant suspension: reads work, writes answer 402 `tenant_suspended`) until an
//! invoice is paid ([`super::webhook`]). The check takes `now` as a parameter, so tests move
//! time instead of sleeping; the server's loop passes the wall clock.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::BillingError;
use crate::cache::Invalidation;
use crate::db::{begin_tenant_tx, PgPool};
use crate::state::AppState;

/// How often the server looks for accounts whose grace period is over.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// Suspends every account past due since `grace` before `now`, each in its own transaction
/// bound to its tenant. Returns the tenants whose suspension changed.
pub async fn suspend_overdue(
    pool: &PgPool,
    grace: chrono::Duration,
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>, BillingError> {
    let cutoff = now - grace;
    let due: Vec<Uuid> = {
        let conn = pool.get().await?;
        conn.query(
            "select tenant_id from app.billing_accounts_past_due($1)",
            &[&cutoff],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    let mut changed = Vec::new();
    for tenant in due {
        let mut conn = pool.get().await?;
        let tx = begin_tenant_tx(&mut conn, tenant).await?;
        let suspended = super::webhook::suspend_locked(&tx, tenant, cutoff).await?;
        tx.commit().await?;
        if suspended {
            tracing::info!(tenant_id = %tenant, "grace period over: tenant suspended for non-payment");
            changed.push(tenant);
        }
    }
    Ok(changed)
}

/// One pass at `now`: suspends, then has every instance reload the snapshots concerned.
pub async fn run_once(state: &AppState, now: DateTime<Utc>) -> Result<Vec<Uuid>, BillingError> {
    let grace = chrono::Duration::days(i64::from(state.config.billing.grace_days));
    let changed = suspend_overdue(&state.pools.app, grace, now).await?;
    for tenant in &changed {
        state.invalidate(Invalidation::Tenant(*tenant)).await;
    }
    Ok(changed)
}

/// The supervised loop (`crate::supervise`).
pub async fn run(state: actix_web::web::Data<AppState>, stop: CancellationToken) {
    loop {
        if let Err(err) = run_once(&state, Utc::now()).await {
            tracing::warn!(error = %crate::error::error_chain(&err), "billing grace check failed; will retry");
        }
        if !crate::supervise::pause(&stop, CHECK_INTERVAL).await {
            return;
        }
    }
}
