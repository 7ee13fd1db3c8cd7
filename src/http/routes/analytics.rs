//! Analytics (API.md "Analytics"): event ingestion and the summary and time-series reads.

use actix_web::{get, post, web, HttpResponse};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::analytics::buckets::{to_micros, Interval};
use crate::analytics::query::{
    self, GetSeries, GetSummary, Metric, Series, SeriesRequest, Summary,
};
use crate::analytics::{model, AnalyticsError, EventBatch, IngestRules};
use crate::error::FieldError;
use crate::http::extract::{Json, Query};
use crate::http::problem::Problem;
use crate::http::tenant::TenantRequest;
use crate::input::Text;
use crate::tenant_config::Limit;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(ingest_events)
        .service(get_summary)
        .service(get_timeseries);
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    /// Events stored (committed) by this request.
    pub accepted: u64,
}

#[utoipa::path(post, path = "/analytics/events", tag = "analytics",
    request_body(content = EventBatch,
        description = "`{events: [...]}` with 1 to 1,000 events, or one event object; 1 MiB at most"),
    security(("bearer" = [])),
    responses(
        (status = 202, body = Accepted, description = "Stored: the events are committed"),
        (status = 401), (status = 413, description = "Body over 1 MiB"),
        (status = 422, description = "Field errors, e.g. `events[3].timestamp`"),
        (status = 503, description = "Too many events pending for the tenant, or the database is unavailable; nothing was stored. See Retry-After")))]
#[post("/analytics/events")]
pub async fn ingest_events(req: TenantRequest, body: Json<Value>) -> Result<HttpResponse, Problem> {
    req.user()?;
    let committer = req.state().analytics.committer(req.tenant_id);
    // The plan's retention bounds late events: from the tenant's config snapshot.
    let rules = IngestRules {
        now: Utc::now(),
        retention_days: req
            .plan()
            .limit(Limit::AnalyticsRetentionDays)
            .map(|days| u32::try_from(days.max(0)).unwrap_or(u32::MAX)),
    };
    let events = model::validate_body(&body, &rules).map_err(AnalyticsError::Validation)?;
    let single = body.get("events").is_none();
    let accepted = committer.submit(events).await.map_err(|err| match err {
        // The committer names fields as in a batch; a single event's are the body's own.
        AnalyticsError::Validation(fields) if single => AnalyticsError::Validation(
            fields
                .into_iter()
                .map(|f| FieldError {
                    field: f.field.trim_start_matches("events[0].").to_string(),
                    ..f
                })
                .collect(),
        ),
        other => other,
    })?;
    Ok(HttpResponse::Accepted().json(Accepted { accepted }))
}

#[derive(Deserialize, IntoParams)]
pub struct SummaryParams {
    /// RFC 3339; default: 30 days before `to`.
    pub from: Option<Text>,
    /// RFC 3339, exclusive; default: now.
    pub to: Option<Text>,
}

#[derive(Deserialize, IntoParams)]
pub struct SeriesParams {
    /// `events` (default), `active_users` or `api_calls`.
    pub metric: Option<Text>,
    /// Only events of this type (metrics `events` and `active_users`).
    pub event_type: Option<Text>,
    /// `hour` (default) or `day`, in UTC.
    pub interval: Option<Text>,
    /// RFC 3339; default: 24 hours (interval=hour) or 30 days (interval=day) before `to`.
    pub from: Option<Text>,
    /// RFC 3339, exclusive; default: now.
    pub to: Option<Text>,
}

fn parse_time(
    field: &str,
    raw: &Option<Text>,
    errors: &mut Vec<FieldError>,
) -> Option<DateTime<Utc>> {
    let raw = raw.as_deref().filter(|s| !s.is_empty())?;
    match DateTime::parse_from_rfc3339(raw) {
        Ok(t) => Some(to_micros(t.with_timezone(&Utc))),
        Err(_) => {
            errors.push(FieldError::new(field, "must be an RFC 3339 timestamp"));
            None
        }
    }
}

fn range(
    params_from: &Option<Text>,
    params_to: &Option<Text>,
    default_span: Duration,
    errors: &mut Vec<FieldError>,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let to = parse_time("to", params_to, errors).unwrap_or_else(|| to_micros(Utc::now()));
    let from = parse_time("from", params_from, errors).unwrap_or(to - default_span);
    (from, to)
}

#[utoipa::path(get, path = "/analytics/summary", tag = "analytics", params(SummaryParams),
    security(("bearer" = [])),
    responses((status = 200, body = Summary), (status = 401), (status = 422)))]
#[get("/analytics/summary")]
pub async fn get_summary(
    req: TenantRequest,
    params: Query<SummaryParams>,
) -> Result<HttpResponse, Problem> {
    req.user()?;
    let mut errors = Vec::new();
    let (from, to) = range(&params.from, &params.to, query::MAU_WINDOW, &mut errors);
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    let summary = req.execute(GetSummary { from, to }).await?;
    Ok(HttpResponse::Ok().json(summary))
}

#[utoipa::path(get, path = "/analytics/timeseries", tag = "analytics", params(SeriesParams),
    security(("bearer" = [])),
    responses((status = 200, body = Series), (status = 401),
        (status = 422, description = "Bad parameter, or more than 10,000 points")))]
#[get("/analytics/timeseries")]
pub async fn get_timeseries(
    req: TenantRequest,
    params: Query<SeriesParams>,
) -> Result<HttpResponse, Problem> {
    req.user()?;
    let mut errors = Vec::new();
    let metric = match params.metric.as_deref().filter(|s| !s.is_empty()) {
        None => Metric::Events,
        Some(raw) => Metric::parse(raw).unwrap_or_else(|| {
            errors.push(FieldError::new(
                "metric",
                "must be events, active_users or api_calls",
            ));
            Metric::Events
        }),
    };
    let interval = match params.interval.as_deref().filter(|s| !s.is_empty()) {
        None | Some("hour") => Interval::Hour,
        Some("day") => Interval::Day,
        Some(_) => {
            errors.push(FieldError::new("interval", "must be hour or day"));
            Interval::Hour
        }
    };
    let default_span = match interval {
        Interval::Hour => Duration::hours(24),
        Interval::Day => Duration::days(30),
    };
    let (from, to) = range(&params.from, &params.to, default_span, &mut errors);
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    let event_type = params
        .event_type
        .clone()
        .filter(|s| !s.is_empty())
        .map(Text::into_string);
    let series = req
        .execute(GetSeries(SeriesRequest {
            metric,
            event_type,
            interval,
            from,
            to,
        }))
        .await?;
    Ok(HttpResponse::Ok().json(series))
}
