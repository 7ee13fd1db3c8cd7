//! The current tenant, for its own users: GET /tenant and the GDPR export.

use actix_web::{get, web, HttpResponse};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::error::error_chain;
use crate::http::problem::Problem;
use crate::http::tenant::TenantRequest;
use crate::tenancy::current::{ExportTenant, GetCurrentTenant};
use crate::tenancy::Tenant;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(current_tenant).service(export_tenant);
}

#[utoipa::path(get, path = "/tenant", tag = "tenant", security(("bearer" = [])),
    responses((status = 200, body = Tenant), (status = 401)))]
#[get("/tenant")]
pub async fn current_tenant(req: TenantRequest) -> Result<HttpResponse, Problem> {
    req.user()?;
    let tenant = req.execute(GetCurrentTenant).await?;
    Ok(HttpResponse::Ok().json(tenant))
}

#[utoipa::path(get, path = "/tenant/export", tag = "tenant", security(("bearer" = [])),
    responses((status = 200, description = "Every row of the tenant's shared tables and its raw analytics events (not the rollups derived from them), one JSON object a line with a `type` member",
        content_type = "application/x-ndjson"), (status = 403)))]
#[get("/tenant/export")]
pub async fn export_tenant(req: TenantRequest) -> Result<HttpResponse, Problem> {
    req.admin()?;
    let (lines, rx) = mpsc::channel::<String>(256);
    // The export runs as its own task so the response can start streaming at once; if it fails
    // half way the stream ends with an error line rather than silently.
    let errors = lines.clone();
    actix_web::rt::spawn(async move {
        if let Err(err) = req.execute(ExportTenant { out: lines }).await {
            tracing::error!(error = %error_chain(&err), "tenant export failed");
            let _ = errors
                .send(
                    serde_json::json!({"type": "error", "detail": "export interrupted"})
                        .to_string(),
                )
                .await;
        }
    });
    let body =
        tokio_stream_from(rx).map(|line| Ok::<_, actix_web::Error>(web::Bytes::from(line + "\n")));
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(body))
}

fn tokio_stream_from(mut rx: mpsc::Receiver<String>) -> impl futures_util::Stream<Item = String> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
