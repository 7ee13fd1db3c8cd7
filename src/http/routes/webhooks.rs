//! /webhooks: outgoing webhook endpoints, their delivery log, replays and secret rotation
//! (API.md "Outgoing webhooks"). Tenant admins on a plan with the `webhooks` feature.

use actix_web::{delete, get, patch, post, web, HttpResponse};
use uuid::Uuid;

use crate::http::extract::{Json, Query};
use crate::http::problem::Problem;
use crate::http::tenant::TenantRequest;
use crate::page::Page;
use crate::webhooks::delivery::wake;
use crate::webhooks::model::{
    Delivery, DeliveryQuery, NewWebhook, Queued, RotatedSecret, Webhook, WebhookPatch, WebhookQuery,
};
use crate::webhooks::ops::{
    self, DeleteWebhook, GetWebhook, ListDeliveries, ListWebhooks, ReplayDead, RetryDelivery,
    RotateSecret, SendTest,
};
use crate::webhooks::secret::new_secret;
use crate::webhooks::WebhookError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list_webhooks)
        .service(create_webhook)
        .service(get_webhook)
        .service(update_webhook)
        .service(delete_webhook)
        .service(test_webhook)
        .service(rotate_secret)
        .service(list_deliveries)
        .service(retry_delivery)
        .service(replay_dead);
}

#[utoipa::path(get, path = "/webhooks", tag = "webhooks", params(WebhookQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<Webhook>), (status = 403, description = "Not an admin, or `plan_required`"), (status = 422)))]
#[get("/webhooks")]
pub async fn list_webhooks(
    req: TenantRequest,
    query: Query<WebhookQuery>,
) -> Result<HttpResponse, Problem> {
    let page = req
        .execute(ListWebhooks(
            query.into_inner(),
            req.state().cursors.clone(),
        ))
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

#[utoipa::path(post, path = "/webhooks", tag = "webhooks", request_body = NewWebhook, security(("bearer" = [])),
    responses((status = 201, body = Webhook, description = "Created; `secret` (whsec_...) is shown this once"),
        (status = 403, description = "Not an admin, or `plan_required`"),
        (status = 422, description = "Bad URL (scheme, private or unresolvable address) or event types")))]
#[post("/webhooks")]
pub async fn create_webhook(
    req: TenantRequest,
    body: Json<NewWebhook>,
) -> Result<HttpResponse, Problem> {
    let webhook = ops::create(req.state(), &req, body.into_inner()).await?;
    Ok(HttpResponse::Created().json(webhook))
}

#[utoipa::path(get, path = "/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    responses((status = 200, body = Webhook), (status = 403), (status = 404)))]
#[get("/webhooks/{id}")]
pub async fn get_webhook(req: TenantRequest, id: web::Path<Uuid>) -> Result<HttpResponse, Problem> {
    let webhook = req.execute(GetWebhook(*id)).await?;
    Ok(HttpResponse::Ok().json(webhook))
}

#[utoipa::path(patch, path = "/webhooks/{id}", tag = "webhooks", request_body = WebhookPatch, security(("bearer" = [])),
    responses((status = 200, body = Webhook), (status = 403), (status = 404), (status = 422)))]
#[patch("/webhooks/{id}")]
pub async fn update_webhook(
    req: TenantRequest,
    id: web::Path<Uuid>,
    body: Json<WebhookPatch>,
) -> Result<HttpResponse, Problem> {
    let webhook = ops::update(req.state(), &req, *id, body.into_inner()).await?;
    wake(&req.state().config.wakes);
    Ok(HttpResponse::Ok().json(webhook))
}

#[utoipa::path(delete, path = "/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    responses((status = 204, description = "Deleted; its pending messages are dropped"), (status = 403), (status = 404)))]
#[delete("/webhooks/{id}")]
pub async fn delete_webhook(
    req: TenantRequest,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    req.execute(DeleteWebhook(*id)).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/webhooks/{id}/test", tag = "webhooks", security(("bearer" = [])),
    responses((status = 202, body = Queued, description = "A `webhook.test` message is queued for this endpoint"),
        (status = 403), (status = 404)))]
#[post("/webhooks/{id}/test")]
pub async fn test_webhook(
    req: TenantRequest,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    let queued = req.execute(SendTest(*id)).await?;
    wake(&req.state().config.wakes);
    Ok(HttpResponse::Accepted().json(queued))
}

#[utoipa::path(post, path = "/webhooks/{id}/rotate-secret", tag = "webhooks", security(("bearer" = [])),
    responses((status = 200, body = RotatedSecret, description = "The new secret; the old one signs beside it for 24 hours"),
        (status = 403), (status = 404)))]
#[post("/webhooks/{id}/rotate-secret")]
pub async fn rotate_secret(
    req: TenantRequest,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    let rotated = req
        .execute(RotateSecret(
            *id,
            new_secret(&req.state().secrets).map_err(WebhookError::Secret)?,
        ))
        .await?;
    Ok(HttpResponse::Ok().json(rotated))
}

#[utoipa::path(get, path = "/webhooks/{id}/deliveries", tag = "webhooks", params(DeliveryQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<Delivery>, description = "Attempts, newest first"),
        (status = 403), (status = 404), (status = 422)))]
#[get("/webhooks/{id}/deliveries")]
pub async fn list_deliveries(
    req: TenantRequest,
    id: web::Path<Uuid>,
    query: Query<DeliveryQuery>,
) -> Result<HttpResponse, Problem> {
    let page = req
        .execute(ListDeliveries(
            *id,
            query.into_inner(),
            req.state().cursors.clone(),
        ))
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

#[utoipa::path(post, path = "/webhooks/{id}/deliveries/{delivery_id}/retry", tag = "webhooks", security(("bearer" = [])),
    responses((status = 202, body = Queued, description = "The delivery's message is queued again (dead letters too)"),
        (status = 403), (status = 404), (status = 422, description = "A refused message")))]
#[post("/webhooks/{id}/deliveries/{delivery_id}/retry")]
pub async fn retry_delivery(
    req: TenantRequest,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, Problem> {
    let (id, delivery) = path.into_inner();
    let queued = req.execute(RetryDelivery(id, delivery)).await?;
    wake(&req.state().config.wakes);
    Ok(HttpResponse::Accepted().json(queued))
}

#[utoipa::path(post, path = "/webhooks/{id}/replay-dead", tag = "webhooks", security(("bearer" = [])),
    responses((status = 202, body = Queued, description = "Every dead letter of the endpoint is queued again"),
        (status = 403), (status = 404)))]
#[post("/webhooks/{id}/replay-dead")]
pub async fn replay_dead(req: TenantRequest, id: web::Path<Uuid>) -> Result<HttpResponse, Problem> {
    let queued = req.execute(ReplayDead(*id)).await?;
    wake(&req.state().config.wakes);
    Ok(HttpResponse::Accepted().json(queued))
}
