//! The tenant operations behind `/webhooks`. Every one is for tenant admins on a plan with the
//! `webhooks` feature: endpoint URLs may carry credentials of the receiver in their query, and
//! the delivery log shows the receivers' answers, so members read nothing here either.
//! Another tenant's endpoint or delivery is 404, like one that does not exist.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::model::{
    Delivery, DeliveryQuery, NewWebhook, Queued, RotatedSecret, Webhook, WebhookPatch,
    WebhookQuery, WebhookStatus, DELIVERY_COLUMNS, WEBHOOK_COLUMNS,
};
use super::secret::{self, NewSecret};
use super::{check_pattern, WebhookError, TEST_EVENT};
use crate::actors::{ExecError, TenantOp};
use crate::audit::{self, AuditAction};
use crate::auth::Caller;
use crate::db::TenantTx;
use crate::error::FieldError;
use crate::net::ssrf::{self, Policy};
use crate::page::{CursorKey, Keyset, Page, TimeKey};
use crate::state::AppState;
use crate::tenant_config::snapshot::feature;

/// How long a rotated-out secret keeps signing beside the new one.
pub const ROTATION_OVERLAP_HOURS: i64 = 24;
const MAX_URL: usize = 2048;
const MAX_DESCRIPTION: usize = 1000;
const MAX_EVENTS: usize = 64;

/// Admins of a tenant whose plan has webhooks.
fn allowed(caller: &Caller) -> Result<Uuid, WebhookError> {
    let user = caller.admin()?;
    caller.plan().require_feature(feature::WEBHOOKS)?;
    Ok(user)
}

fn check(errors: Vec<FieldError>) -> Result<(), WebhookError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(WebhookError::Validation(errors))
    }
}

/// Checks a target URL before it is stored: its form, its scheme and every address its host
/// resolves to (the sender checks the address it connects to again). Done before the
/// operation is sent to the actor, so no transaction waits on DNS.
async fn vet_url(raw: &str, policy: Policy, errors: &mut Vec<FieldError>) -> String {
    if raw.len() > MAX_URL {
        errors.push(FieldError::new(
            "url",
            format!("use at most {MAX_URL} characters"),
        ));
        return raw.to_string();
    }
    match ssrf::check_url(raw, policy).await {
        Ok(url) => url.to_string(),
        Err(err) => {
            errors.push(FieldError::new("url", err.to_string()));
            raw.to_string()
        }
    }
}

fn vet_events(events: &[crate::input::Text], errors: &mut Vec<FieldError>) -> Vec<String> {
    if events.is_empty() || events.len() > MAX_EVENTS {
        errors.push(FieldError::new(
            "events",
            format!("name 1 to {MAX_EVENTS} event types"),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for (i, event) in events.iter().enumerate() {
        if let Err(message) = check_pattern(event) {
            errors.push(FieldError::new(&format!("events[{i}]"), message));
        }
        if !out.iter().any(|e| e == event.as_str()) {
            out.push(event.to_string());
        }
    }
    out
}

fn vet_description(description: &str, errors: &mut Vec<FieldError>) -> String {
    let trimmed = description.trim();
    if trimmed.chars().count() > MAX_DESCRIPTION {
        errors.push(FieldError::new(
            "description",
            format!("use at most {MAX_DESCRIPTION} characters"),
        ));
    }
    trimmed.to_string()
}

fn audit_json(webhook: &Webhook) -> Value {
    // Never the secret: the audit trail is readable by every admin, forever.
    json!({"id": webhook.id, "url": webhook.url, "events": webhook.events,
        "description": webhook.description, "status": webhook.status})
}

/// `POST /webhooks`: vets the URL, then creates the endpoint in the tenant's actor.
pub async fn create(
    state: &AppState,
    caller: &Caller,
    body: NewWebhook,
) -> Result<Webhook, ExecError<WebhookError>> {
    allowed(caller).map_err(ExecError::Op)?;
    let mut errors = Vec::new();
    let url = vet_url(
        &body.url,
        Policy::webhooks(state.config.webhook_allow_private_targets),
        &mut errors,
    )
    .await;
    let events = vet_events(&body.events, &mut errors);
    let description = vet_description(body.description.as_deref().unwrap_or(""), &mut errors);
    check(errors).map_err(ExecError::Op)?;
    let secret = secret::new_secret(&state.secrets)
        .map_err(|err| ExecError::Op(WebhookError::Secret(err)))?;
    state
        .execute(
            caller.clone(),
            CreateWebhook {
                url,
                events,
                description,
                secret,
            },
        )
        .await
}

/// `PATCH /webhooks/{id}`: vets a new URL, then updates the endpoint.
pub async fn update(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    patch: WebhookPatch,
) -> Result<Webhook, ExecError<WebhookError>> {
    allowed(caller).map_err(ExecError::Op)?;
    let mut errors = Vec::new();
    let url = match &patch.url {
        Some(raw) => Some(
            vet_url(
                raw,
                Policy::webhooks(state.config.webhook_allow_private_targets),
                &mut errors,
            )
            .await,
        ),
        None => None,
    };
    let events = patch.events.as_ref().map(|e| vet_events(e, &mut errors));
    let description = patch
        .description
        .as_deref()
        .map(|d| vet_description(d, &mut errors));
    if url.is_none() && events.is_none() && description.is_none() && patch.status.is_none() {
        errors.push(FieldError::new("body", "nothing to change"));
    }
    check(errors).map_err(ExecError::Op)?;
    state
        .execute(
            caller.clone(),
            UpdateWebhook {
                id,
                url,
                events,
                description,
                status: patch.status,
            },
        )
        .await
}

macro_rules! webhook_op {
    ($op:ty => $out:ty, $f:path) => {
        impl TenantOp for $op {
            type Output = $out;
            type Error = WebhookError;
            // Webhooks live in the shared schema.
            const OPENS_TENANT_SCHEMA: bool = false;

            fn run<'a>(
                self,
                tx: &'a TenantTx<'a>,
                caller: &'a Caller,
            ) -> BoxFuture<'a, Result<$out, WebhookError>> {
                Box::pin($f(tx, caller, self))
            }
        }
    };
}

async fn find(
    tx: &TenantTx<'_>,
    tenant: Uuid,
    id: Uuid,
    for_update: bool,
) -> Result<Webhook, WebhookError> {
    let sql = format!(
        "select {WEBHOOK_COLUMNS} from app.webhooks \
         where tenant_id = $1 and id = $2 and deleted_at is null{}",
        if for_update { " for update" } else { "" }
    );
    let stmt = tx.prepare_cached(&sql).await?;
    match tx.query_opt(&stmt, &[&tenant, &id]).await? {
        Some(row) => Webhook::from_row(&row),
        None => Err(WebhookError::NotFound("webhook")),
    }
}

/// Created by [`create`] once the URL has been vetted.
pub struct CreateWebhook {
    url: String,
    events: Vec<String>,
    description: String,
    secret: NewSecret,
}

async fn create_webhook(
    tx: &TenantTx<'_>,
    caller: &Caller,
    op: CreateWebhook,
) -> Result<Webhook, WebhookError> {
    allowed(caller)?;
    let id = Uuid::now_v7();
    let NewSecret { plain, sealed } = op.secret;
    let stmt = tx
        .prepare_cached(&format!(
            "insert into app.webhooks \
             (tenant_id, id, url, description, events, secret_ciphertext, secret_key_id) \
             values ($1, $2, $3, $4, $5, $6, $7) returning {WEBHOOK_COLUMNS}"
        ))
        .await?;
    let row = tx
        .query_one(
            &stmt,
            &[
                &caller.tenant_id,
                &id,
                &op.url,
                &op.description,
                &op.events,
                &sealed.ciphertext,
                &sealed.key_id,
            ],
        )
        .await?;
    let mut webhook = Webhook::from_row(&row)?;
    audit::record(
        tx,
        caller,
        audit::Entry {
            action: AuditAction::Create,
            resource: "webhook",
            resource_id: id.to_string(),
            before: None,
            after: Some(audit_json(&webhook)),
            extra: None,
        },
    )
    .await?;
    webhook.secret = Some(plain);
    Ok(webhook)
}
webhook_op!(CreateWebhook => Webhook, create_webhook);

static WEBHOOKS: Keyset<TimeKey> = Keyset::ascending("webhooks", &["created_at", "id"]);

pub struct ListWebhooks(pub WebhookQuery, pub CursorKey);

async fn list_webhooks(
    tx: &TenantTx<'_>,
    caller: &Caller,
    ListWebhooks(q, cursors): ListWebhooks,
) -> Result<Page<Webhook>, WebhookError> {
    allowed(caller)?;
    let page = WEBHOOKS.parse(&cursors, q.limit, q.cursor.as_deref())?;
    page.fetch(
        tx,
        &format!(
            "select {WEBHOOK_COLUMNS} from app.webhooks where tenant_id = $1 and deleted_at is null"
        ),
        &[&caller.tenant_id],
        Webhook::from_row,
        |w| TimeKey {
            at: w.created_at,
            id: w.id,
        },
    )
    .await
}
webhook_op!(ListWebhooks => Page<Webhook>, list_webhooks);

pub struct GetWebhook(pub Uuid);

async fn get_webhook(
    tx: &TenantTx<'_>,
    caller: &Caller,
    GetWebhook(id): GetWebhook,
) -> Result<Webhook, WebhookError> {
    allowed(caller)?;
    find(tx, caller.tenant_id, id, false).await
}
webhook_op!(GetWebhook => Webhook, get_webhook);

/// Made by [`update`] once a new URL has been vetted.
pub struct UpdateWebhook {
    id: Uuid,
    url: Option<String>,
    events: Option<Vec<String>>,
    description: Option<String>,
    status: Option<WebhookStatus>,
}

async fn update_webhook(
    tx: &TenantTx<'_>,
    caller: &Caller,
    op: UpdateWebhook,
) -> Result<Webhook, WebhookError> {
    allowed(caller)?;
    let before = find(tx, caller.tenant_id, op.id, true).await?;
    let status = op.status.unwrap_or(before.status);
    // Enabling clears the server's reason and the failure clock: the endpoint starts afresh.
    let enabling = status == WebhookStatus::Enabled && before.status == WebhookStatus::Disabled;
    let disabled_reason = match status {
        WebhookStatus::Enabled => None,
        WebhookStatus::Disabled
            if op.status.is_some() && before.status == WebhookStatus::Enabled =>
        {
            Some("disabled by an admin".to_string())
        }
        WebhookStatus::Disabled => before.disabled_reason.clone(),
    };
    let stmt = tx
        .prepare_cached(&format!(
            "update app.webhooks set url = $3, events = $4, description = $5, status = $6, \
             disabled_reason = $7, \
             failing_since = case when $8 then null else failing_since end, updated_at = now() \
             where tenant_id = $1 and id = $2 and deleted_at is null returning {WEBHOOK_COLUMNS}"
        ))
        .await?;
    let row = tx
        .query_one(
            &stmt,
            &[
                &caller.tenant_id,
                &op.id,
                &op.url.as_ref().unwrap_or(&before.url),
                &op.events.as_ref().unwrap_or(&before.events),
                &op.description.as_ref().unwrap_or(&before.description),
                &status.as_str(),
                &disabled_reason,
                &enabling,
            ],
        )
        .await?;
    let webhook = Webhook::from_row(&row)?;
    audit::record(
        tx,
        caller,
        audit::Entry {
            action: AuditAction::Update,
            resource: "webhook",
            resource_id: op.id.to_string(),
            before: Some(audit_json(&before)),
            after: Some(audit_json(&webhook)),
            extra: None,
        },
    )
    .await?;
    Ok(webhook)
}
webhook_op!(UpdateWebhook => Webhook, update_webhook);

pub struct DeleteWebhook(pub Uuid);

async fn delete_webhook(
    tx: &TenantTx<'_>,
    caller: &Caller,
    DeleteWebhook(id): DeleteWebhook,
) -> Result<(), WebhookError> {
    allowed(caller)?;
    let before = find(tx, caller.tenant_id, id, true).await?;
    let stmt = tx
        .prepare_cached(
            "update app.webhooks set deleted_at = now(), updated_at = now() \
             where tenant_id = $1 and id = $2 and deleted_at is null",
        )
        .await?;
    tx.execute(&stmt, &[&caller.tenant_id, &id]).await?;
    // Nothing more is sent to it; its history goes with the tenant's other deleted rows.
    let stmt = tx
        .prepare_cached(
            "update app.webhook_messages set deleted_at = now() \
             where tenant_id = $1 and webhook_id = $2 and status = 'pending' and deleted_at is null",
        )
        .await?;
    tx.execute(&stmt, &[&caller.tenant_id, &id]).await?;
    audit::record(
        tx,
        caller,
        audit::Entry {
            action: AuditAction::Delete,
            resource: "webhook",
            resource_id: id.to_string(),
            before: Some(audit_json(&before)),
            after: None,
            extra: None,
        },
    )
    .await?;
    Ok(())
}
webhook_op!(DeleteWebhook => (), delete_webhook);

/// `POST /webhooks/{id}/rotate-secret`: a new secret; the current one keeps signing beside it
/// for [`ROTATION_OVERLAP_HOURS`] (a second rotation within that time ends the first overlap).
/// The new secret is made and sealed by the caller (`secret::new_secret`).
pub struct RotateSecret(pub Uuid, pub NewSecret);

async fn rotate_secret(
    tx: &TenantTx<'_>,
    caller: &Caller,
    RotateSecret(id, NewSecret { plain, sealed }): RotateSecret,
) -> Result<RotatedSecret, WebhookError> {
    allowed(caller)?;
    find(tx, caller.tenant_id, id, true).await?;
    let expires: DateTime<Utc> = Utc::now() + ChronoDuration::hours(ROTATION_OVERLAP_HOURS);
    let stmt = tx
        .prepare_cached(
            "update app.webhooks set \
             previous_secret_ciphertext = secret_ciphertext, \
             previous_secret_key_id = secret_key_id, previous_secret_expires_at = $5, \
             secret_ciphertext = $3, secret_key_id = $4, updated_at = now() \
             where tenant_id = $1 and id = $2 and deleted_at is null",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &caller.tenant_id,
            &id,
            &sealed.ciphertext,
            &sealed.key_id,
            &expires,
        ],
    )
    .await?;
    audit::record(
        tx,
        caller,
        audit::Entry {
            action: AuditAction::Update,
            resource: "webhook",
            resource_id: id.to_string(),
            before: None,
            after: None,
            extra: Some(
                [("secret_rotated".to_string(), Value::Bool(true))]
                    .into_iter()
                    .collect(),
            ),
        },
    )
    .await?;
    Ok(RotatedSecret {
        secret: plain,
        previous_secret_expires_at: expires,
    })
}
webhook_op!(RotateSecret => RotatedSecret, rotate_secret);

/// The body every message carries: `{type, timestamp, data}`.
pub fn message_body(event_type: &str, at: DateTime<Utc>, data: &Value) -> String {
    json!({
        "type": event_type,
        "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": data,
    })
    .to_string()
}

/// `POST /webhooks/{id}/test`: a `webhook.test` message to this endpoint only (sent even when
/// it does not subscribe to the type, and only while it is enabled).
pub struct SendTest(pub Uuid);

async fn send_test(
    tx: &TenantTx<'_>,
    caller: &Caller,
    SendTest(id): SendTest,
) -> Result<Queued, WebhookError> {
    allowed(caller)?;
    find(tx, caller.tenant_id, id, false).await?;
    let message = Uuid::now_v7();
    let body = message_body(
        TEST_EVENT,
        Utc::now(),
        &json!({"webhook_id": id, "message": "a test event sent from tenantry"}),
    );
    let stmt = tx
        .prepare_cached(
            "insert into app.webhook_messages (tenant_id, id, webhook_id, event_type, body) \
             values ($1, $2, $3, $4, $5)",
        )
        .await?;
    tx.execute(
        &stmt,
        &[&caller.tenant_id, &message, &id, &TEST_EVENT, &body],
    )
    .await?;
    Ok(Queued {
        message_ids: vec![message],
    })
}
webhook_op!(SendTest => Queued, send_test);

static DELIVERIES: Keyset<TimeKey> =
    Keyset::descending("webhook_deliveries", &["d.created_at", "d.id"]);

/// `GET /webhooks/{id}/deliveries`: the attempts, newest first; `?status=dead` the dead letters.
pub struct ListDeliveries(pub Uuid, pub DeliveryQuery, pub CursorKey);

async fn list_deliveries(
    tx: &TenantTx<'_>,
    caller: &Caller,
    ListDeliveries(id, q, cursors): ListDeliveries,
) -> Result<Page<Delivery>, WebhookError> {
    allowed(caller)?;
    let page = DELIVERIES.parse(&cursors, q.limit, q.cursor.as_deref())?;
    find(tx, caller.tenant_id, id, false).await?;
    let status = q.status.map(|s| s.as_str());
    let mut sql = format!(
        "select {DELIVERY_COLUMNS} from app.webhook_deliveries d \
         join app.webhook_messages m on m.tenant_id = d.tenant_id and m.id = d.message_id \
         where d.tenant_id = $1 and d.webhook_id = $2 and d.deleted_at is null"
    );
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&caller.tenant_id, &id];
    if let Some(status) = &status {
        params.push(status);
        sql.push_str(&format!(" and d.status = ${}", params.len()));
    }
    page.fetch(tx, &sql, &params, Delivery::from_row, |d| TimeKey {
        at: d.created_at,
        id: d.id,
    })
    .await
}
webhook_op!(ListDeliveries => Page<Delivery>, list_deliveries);

/// Puts messages back in the queue for a new round of the retry schedule, due now. A message
/// being sent keeps its lease, so a replay never makes a second concurrent attempt.
async fn requeue(
    tx: &TenantTx<'_>,
    tenant: Uuid,
    webhook: Uuid,
    messages: &[Uuid],
) -> Result<Vec<Uuid>, WebhookError> {
    let stmt = tx
        .prepare_cached(
            "update app.webhook_messages set status = 'pending', round_attempts = 0, \
             next_attempt_at = now(), updated_at = now() \
             where tenant_id = $1 and webhook_id = $2 and id = any($3) and deleted_at is null \
             and status <> 'refused' returning id",
        )
        .await?;
    let rows = tx.query(&stmt, &[&tenant, &webhook, &messages]).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// `POST /webhooks/{id}/deliveries/{delivery_id}/retry`: sends that delivery's message again
/// (a dead letter, a failed or a succeeded one alike).
pub struct RetryDelivery(pub Uuid, pub Uuid);

async fn retry_delivery(
    tx: &TenantTx<'_>,
    caller: &Caller,
    RetryDelivery(id, delivery): RetryDelivery,
) -> Result<Queued, WebhookError> {
    allowed(caller)?;
    find(tx, caller.tenant_id, id, false).await?;
    let stmt = tx
        .prepare_cached(
            "select message_id, status from app.webhook_deliveries \
             where tenant_id = $1 and webhook_id = $2 and id = $3 and deleted_at is null",
        )
        .await?;
    let Some(row) = tx
        .query_opt(&stmt, &[&caller.tenant_id, &id, &delivery])
        .await?
    else {
        return Err(WebhookError::NotFound("delivery"));
    };
    let status: &str = row.get(1);
    if status == "refused" {
        return Err(WebhookError::Validation(vec![FieldError::new(
            "delivery_id",
            "this message was refused (over the payload limit) and cannot be sent",
        )]));
    }
    let message: Uuid = row.get(0);
    let message_ids = requeue(tx, caller.tenant_id, id, &[message]).await?;
    Ok(Queued { message_ids })
}
webhook_op!(RetryDelivery => Queued, retry_delivery);

/// `POST /webhooks/{id}/replay-dead`: every dead letter of the endpoint, queued again.
pub struct ReplayDead(pub Uuid);

async fn replay_dead(
    tx: &TenantTx<'_>,
    caller: &Caller,
    ReplayDead(id): ReplayDead,
) -> Result<Queued, WebhookError> {
    allowed(caller)?;
    find(tx, caller.tenant_id, id, false).await?;
    let stmt = tx
        .prepare_cached(
            "select id from app.webhook_messages \
             where tenant_id = $1 and webhook_id = $2 and status = 'dead' and deleted_at is null",
        )
        .await?;
    let dead: Vec<Uuid> = tx
        .query(&stmt, &[&caller.tenant_id, &id])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let message_ids = requeue(tx, caller.tenant_id, id, &dead).await?;
    Ok(Queued { message_ids })
}
webhook_op!(ReplayDead => Queued, replay_dead);
