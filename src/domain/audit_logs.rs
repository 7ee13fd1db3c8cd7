//! GET /audit-logs: the tenant's audit trail (written by [`crate::audit`]), for its admins,
//! newest first.

use serde::Deserialize;
use tokio_postgres::types::ToSql;
use utoipa::IntoParams;

use super::{check, tenant_op, DomainError};
use crate::audit::{AuditLog, AUDIT_COLUMNS};
use crate::auth::Caller;
use crate::db::TenantTx;
use crate::error::FieldError;
use crate::input::Text;
use crate::page::{and_equal, CursorKey, Keyset, Page, TimeKey};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    pub resource: Option<Text>,
    pub action: Option<Text>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

static AUDIT_LOGS: Keyset<TimeKey> = Keyset::descending("audit logs", &["created_at", "id"]);

/// GET /audit-logs: tenant admins only, newest first.
pub struct ListAuditLogs(pub AuditQuery, pub CursorKey);

async fn list(
    tx: &TenantTx<'_>,
    caller: &Caller,
    ListAuditLogs(q, cursors): ListAuditLogs,
) -> Result<Page<AuditLog>, DomainError> {
    caller.admin()?;
    let page = AUDIT_LOGS.parse(&cursors, q.limit, q.cursor.as_deref())?;
    let mut errors = Vec::new();
    for (field, value) in [("resource", &q.resource), ("action", &q.action)] {
        if value.as_ref().is_some_and(|v| v.is_empty() || v.len() > 64) {
            errors.push(FieldError::new(field, "use 1 to 64 characters"));
        }
    }
    check(errors)?;

    let mut sql = format!(
        "select {AUDIT_COLUMNS} from app.audit_logs where tenant_id = $1 and deleted_at is null"
    );
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&caller.tenant_id];
    and_equal(
        &mut sql,
        &mut params,
        &[
            ("resource", q.resource.as_ref().map(|v| v as _)),
            ("action", q.action.as_ref().map(|v| v as _)),
        ],
    );
    page.fetch(
        tx,
        &sql,
        &params,
        |r| Ok(AuditLog::from_row(r)),
        |log| TimeKey {
            at: log.created_at,
            id: log.id,
        },
    )
    .await
}

tenant_op!(ListAuditLogs => Page<AuditLog>, list);
