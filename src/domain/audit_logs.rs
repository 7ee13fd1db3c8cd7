//! GET /audit-logs: the tenant's audit trail (written by [`crate::audit`]), for its admins,
//! newest first.

use serde::Deserialize;
use tokio_postgres::types::ToSql;
use utoipa::IntoParams;

use super::page::{Cursor, Page, PageRequest};
use super::{check, query, tenant_op, DomainError};
use crate::audit::{AuditLog, AUDIT_COLUMNS};
use crate::auth::Caller;
use crate::db::TenantTx;
use crate::error::FieldError;
use crate::input::Text;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    pub resource: Option<Text>,
    pub action: Option<Text>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// GET /audit-logs: tenant admins only, newest first.
pub struct ListAuditLogs(pub AuditQuery);

async fn list(
    tx: &TenantTx<'_>,
    caller: &Caller,
    ListAuditLogs(q): ListAuditLogs,
) -> Result<Page<AuditLog>, DomainError> {
    caller.admin()?;
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
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
    let fetch = page.fetch();
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&caller.tenant_id, &fetch];
    if let Some(resource) = &q.resource {
        params.push(resource);
        sql.push_str(&format!(" and resource = ${}", params.len()));
    }
    if let Some(action) = &q.action {
        params.push(action);
        sql.push_str(&format!(" and action = ${}", params.len()));
    }
    let after = page.after;
    if let Some(cursor) = &after {
        params.push(&cursor.created_at);
        params.push(&cursor.id);
        sql.push_str(&format!(
            " and (created_at, id) < (${}, ${})",
            params.len() - 1,
            params.len()
        ));
    }
    sql.push_str(" order by created_at desc, id desc limit $2");
    let rows = query(tx, &sql, &params).await?;
    let items = rows.iter().map(AuditLog::from_row).collect();
    Ok(page.finish(items, |log: &AuditLog| Cursor {
        created_at: log.created_at,
        id: log.id,
    }))
}

tenant_op!(ListAuditLogs => Page<AuditLog>, list);
