//! Liveness and readiness.

use std::time::Duration;

use actix_web::{get, web, HttpResponse};
use serde_json::json;

use crate::http::problem::Problem;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(healthz).service(readyz);
}

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The process is alive")))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "PostgreSQL and Redis are reachable"),
    (status = 503, description = "A dependency is down", content_type = "application/problem+json")))]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, Problem> {
    let timeout = Duration::from_secs(2);
    let postgres = tokio::time::timeout(timeout, async {
        let conn = state.pools.app.get().await.map_err(|e| e.to_string())?;
        conn.simple_query("select 1")
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    })
    .await
    .unwrap_or_else(|_| Err("timed out".into()));
    let redis = tokio::time::timeout(timeout, async {
        let mut conn = state
            .redis
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    })
    .await
    .unwrap_or_else(|_| Err("timed out".into()));
    let status = |r: &Result<(), String>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("down: {e}"),
    };
    if postgres.is_ok() && redis.is_ok() {
        Ok(HttpResponse::Ok().json(json!({"status": "ready", "postgres": "ok", "redis": "ok"})))
    } else {
        Err(Problem::unavailable("a dependency is unavailable", 5)
            .with("postgres", status(&postgres))
            .with("redis", status(&redis)))
    }
}
