//! The benchmark's reference endpoint: one transaction with set_config and a primary-key
//! SELECT through the shared pool, and nothing else (no actor, no token, no tenant
//! resolution), so the request pipeline's own cost shows as a ratio against it. It reads any
//! tenant's task without credentials, so it exists only when the server is started with
//! `tenantry serve --enable-bench-routes`.

use actix_web::{get, web, HttpResponse};
use uuid::Uuid;

use crate::db::{begin_tenant_tx, DbError};
use crate::domain::tasks::{Task, TASK_COLUMNS};
use crate::http::problem::Problem;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(reference_get_task);
}

#[get("/__bench/reference/{tenant}/{task}")]
async fn reference_get_task(
    state: web::Data<AppState>,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, Problem> {
    let (tenant, task) = path.into_inner();
    let mut conn = state.pools.app.get().await.map_err(DbError::from)?;
    let tx = begin_tenant_tx(&mut conn, tenant).await?;
    let stmt = tx
        .prepare_cached(&format!(
            "select {TASK_COLUMNS} from app.tasks where tenant_id = $1 and id = $2 and deleted_at is null"
        ))
        .await?;
    let row = tx.query_opt(&stmt, &[&tenant, &task]).await?;
    tx.commit().await?;
    match row {
        Some(row) => Ok(HttpResponse::Ok().json(Task::from_row(&row)?)),
        None => Err(Problem::not_found("task")),
    }
}
