//! Usage metering (API.md "Usage metering and billing"; docs/usage.md): usage events in, hourly
//! and daily totals out.

use actix_web::{get, post, web, HttpResponse};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::error::FieldError;
use crate::http::extract::{Json, Query};
use crate::http::problem::Problem;
use crate::http::tenant::TenantRequest;
use crate::input::Text;
use crate::usage::events::validate_body;
use crate::usage::rollup::{Granularity, ReadUsage, UsageItem};
use crate::usage::UsageError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(post_events).service(get_usage);
}

/// One usage event (`POST /usage/events` takes one, or `{events: [...]}`).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct UsageEventBody {
    /// Unique per tenant: a repeat is ignored (still 202) and counted once. 1 to 200 characters.
    pub idempotency_key: String,
    /// `^[a-z][a-z0-9_]{0,62}$`; not `api_calls`, `active_users` or `storage_bytes`.
    pub metric: String,
    /// A non-negative integer.
    pub quantity: i64,
    /// RFC 3339 within [now - 48 h, now + 5 min]; default: now.
    pub occurred_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct UsageAccepted {
    /// Events stored (committed) by this request.
    pub accepted: usize,
    /// Events whose idempotency key was already stored: ignored, not counted again.
    pub duplicates: usize,
}

#[derive(Serialize, ToSchema)]
pub struct UsageList {
    pub items: Vec<UsageItem>,
}

#[utoipa::path(post, path = "/usage/events", tag = "usage",
    request_body(content = UsageEventBody,
        description = "One event, or `{events: [...]}` with 1 to 1,000 events; 1 MiB at most"),
    security(("bearer" = [])),
    responses(
        (status = 202, body = UsageAccepted, description = "Stored: the events are committed"),
        (status = 401), (status = 413, description = "Body over 1 MiB or over 1,000 events"),
        (status = 422, description = "Field errors, e.g. `events[3].occurred_at`"),
        (status = 429, description = "Over a metered quota of the period: `{metric, limit, used}`, Retry-After")))]
#[post("/usage/events")]
pub async fn post_events(req: TenantRequest, body: Json<Value>) -> Result<HttpResponse, Problem> {
    let events = validate_body(&body, Utc::now())?;
    let stored = crate::usage::ingest(req.state(), &req.caller, events).await?;
    Ok(HttpResponse::Accepted().json(UsageAccepted {
        accepted: stored.inserted.len(),
        duplicates: stored.submitted - stored.inserted.len(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    /// RFC 3339, inclusive; default: 24 hours (hour) or 30 days (day) before `to`.
    pub from: Option<Text>,
    /// RFC 3339, exclusive; default: now.
    pub to: Option<Text>,
    /// `hour` or `day` (default), UTC buckets.
    pub granularity: Option<Text>,
}

/// The widest range of one read: 31 days of hours, 400 days of days.
fn max_span(granularity: Granularity) -> TimeDelta {
    match granularity {
        Granularity::Hour => TimeDelta::days(31),
        Granularity::Day => TimeDelta::days(400),
    }
}

fn parse_time(
    field: &str,
    raw: &Option<Text>,
    errors: &mut Vec<FieldError>,
) -> Option<DateTime<Utc>> {
    let raw = raw.as_deref().filter(|s| !s.is_empty())?;
    match DateTime::parse_from_rfc3339(raw) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(_) => {
            errors.push(FieldError::new(field, "must be an RFC 3339 timestamp"));
            None
        }
    }
}

fn read_params(params: &UsageParams, now: DateTime<Utc>) -> Result<ReadUsage, UsageError> {
    let mut errors = Vec::new();
    let granularity = match params.granularity.as_deref().filter(|s| !s.is_empty()) {
        None | Some("day") => Granularity::Day,
        Some("hour") => Granularity::Hour,
        Some(_) => {
            errors.push(FieldError::new("granularity", "must be hour or day"));
            Granularity::Day
        }
    };
    let to = parse_time("to", &params.to, &mut errors).unwrap_or(now);
    let default_span = match granularity {
        Granularity::Hour => TimeDelta::hours(24),
        Granularity::Day => TimeDelta::days(30),
    };
    let from = parse_time("from", &params.from, &mut errors).unwrap_or(to - default_span);
    if errors.is_empty() {
        if from >= to {
            errors.push(FieldError::new("from", "must be before to"));
        } else if to - from > max_span(granularity) {
            errors.push(FieldError::new(
                "to",
                match granularity {
                    Granularity::Hour => "at most 31 days after from with granularity=hour",
                    Granularity::Day => "at most 400 days after from with granularity=day",
                },
            ));
        }
    }
    if !errors.is_empty() {
        return Err(UsageError::Validation(errors));
    }
    Ok(ReadUsage {
        from,
        to,
        granularity,
    })
}

#[utoipa::path(get, path = "/usage", tag = "usage", params(UsageParams),
    security(("bearer" = [])),
    responses((status = 200, body = UsageList,
        description = "Buckets starting in [from, to), by period_start then metric"),
        (status = 401), (status = 422)))]
#[get("/usage")]
pub async fn get_usage(
    req: TenantRequest,
    params: Query<UsageParams>,
) -> Result<HttpResponse, Problem> {
    req.user()?;
    let read = read_params(&params, Utc::now())?;
    let items = req.execute(read).await?;
    Ok(HttpResponse::Ok().json(UsageList { items }))
}
