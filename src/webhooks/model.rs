//! What the webhook routes take and answer.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::WebhookError;
use crate::input::Text;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookStatus {
    Enabled,
    Disabled,
}

impl WebhookStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookStatus::Enabled => "enabled",
            WebhookStatus::Disabled => "disabled",
        }
    }

    pub fn parse(value: &str) -> Result<WebhookStatus, WebhookError> {
        match value {
            "enabled" => Ok(WebhookStatus::Enabled),
            "disabled" => Ok(WebhookStatus::Disabled),
            other => Err(WebhookError::CorruptRow {
                column: "webhooks.status",
                value: other.to_string(),
            }),
        }
    }
}

/// An endpoint. The secret is shown once, by `POST /webhooks` (and by a rotation).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Webhook {
    pub id: Uuid,
    pub url: String,
    pub description: String,
    pub events: Vec<String>,
    pub status: WebhookStatus,
    /// Why the server disabled it (410 Gone, failing for 5 days), if it did.
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Only in the answer to `POST /webhooks`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

pub const WEBHOOK_COLUMNS: &str =
    "id, url, description, events, status, disabled_reason, created_at, updated_at";

impl Webhook {
    pub fn from_row(row: &Row) -> Result<Webhook, WebhookError> {
        Ok(Webhook {
            id: row.get("id"),
            url: row.get("url"),
            description: row.get("description"),
            events: row.get("events"),
            status: WebhookStatus::parse(row.get("status"))?,
            disabled_reason: row.get("disabled_reason"),
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
            secret: None,
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// https (http only with WEBHOOK_ALLOW_PRIVATE_TARGETS), to a public address.
    pub url: Text,
    /// Exact types (`task.created`) or wildcards (`project.*`, `*`).
    pub events: Vec<Text>,
    pub description: Option<Text>,
}

/// Every member is optional; `status: enabled` re-enables an endpoint the server disabled.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookPatch {
    pub url: Option<Text>,
    pub events: Option<Vec<Text>>,
    pub description: Option<Text>,
    pub status: Option<WebhookStatus>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WebhookQuery {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Succeeded,
    /// A retry follows at `next_retry_at`.
    Failed,
    /// The last retry failed: a dead letter, replayable.
    Dead,
    /// Never sent (over the payload limit): `error` says why.
    Refused,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Dead => "dead",
            DeliveryStatus::Refused => "refused",
        }
    }

    pub fn parse(value: &str) -> Result<DeliveryStatus, WebhookError> {
        match value {
            "succeeded" => Ok(DeliveryStatus::Succeeded),
            "failed" => Ok(DeliveryStatus::Failed),
            "dead" => Ok(DeliveryStatus::Dead),
            "refused" => Ok(DeliveryStatus::Refused),
            other => Err(WebhookError::CorruptRow {
                column: "webhook_deliveries.status",
                value: other.to_string(),
            }),
        }
    }
}

/// One attempt to deliver a message.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Delivery {
    pub id: Uuid,
    /// The message (the `webhook-id` header is `msg_` + its simple form); every attempt of
    /// one event to one endpoint shares it.
    pub message_id: Uuid,
    pub event_type: String,
    /// The message's attempt number, 1 for the first.
    pub attempt: i32,
    pub status: DeliveryStatus,
    pub response_code: Option<i32>,
    /// The first 4 KiB of the receiver's answer.
    pub response_body: Option<String>,
    pub duration_ms: Option<i32>,
    pub error: Option<String>,
    pub next_retry_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

pub const DELIVERY_COLUMNS: &str = "d.id, d.message_id, m.event_type, d.attempt, d.status, \
     d.response_code, d.response_body, d.duration_ms, d.error, d.next_retry_at, d.created_at";

impl Delivery {
    pub fn from_row(row: &Row) -> Result<Delivery, WebhookError> {
        Ok(Delivery {
            id: row.get("id"),
            message_id: row.get("message_id"),
            event_type: row.get("event_type"),
            attempt: row.get("attempt"),
            status: DeliveryStatus::parse(row.get("status"))?,
            response_code: row.get("response_code"),
            response_body: row.get("response_body"),
            duration_ms: row.get("duration_ms"),
            error: row.get("error"),
            next_retry_at: row.get("next_retry_at"),
            created_at: row.get("created_at"),
        })
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// `dead` lists the dead letters.
    pub status: Option<DeliveryStatus>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// The answer of `POST /webhooks/{id}/rotate-secret`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedSecret {
    pub secret: String,
    /// Until then the old secret signs beside the new one.
    pub previous_secret_expires_at: DateTime<Utc>,
}

/// The answer of a test send, a retry and a bulk replay: the messages queued.
#[derive(Debug, Serialize, ToSchema)]
pub struct Queued {
    pub message_ids: Vec<Uuid>,
}
