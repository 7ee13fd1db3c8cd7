//! The outermost middleware: a request id, a tracing span for the whole request, one log line
//! when it ends.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};
use tracing::Instrument;

use super::extract::RequestId;
use crate::state::AppState;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

fn incoming_request_id(req: &ServiceRequest) -> Option<String> {
    let value = req.headers().get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let sane = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    sane.then(|| value.to_string())
}

pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let request_id = incoming_request_id(&req).unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %req.method(),
        path = %req.path(),
        tenant_id = tracing::field::Empty,
    );
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let method = req.method().to_string();
    let started = Instant::now();
    let result = next.call(req).instrument(span.clone()).await;
    let _entered = span.enter();
    match result {
        Ok(mut response) => {
            if let Ok(value) = HeaderValue::from_str(&request_id) {
                response
                    .headers_mut()
                    .insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
            }
            super::ratelimit::write_headers(&mut response);
            let route = response
                .request()
                .match_pattern()
                .unwrap_or_else(|| "unmatched".into());
            if let Some(state) = &state {
                state
                    .metrics
                    .http_duration
                    .with_label_values(&[
                        method.as_str(),
                        route.as_str(),
                        response.status().as_str(),
                    ])
                    .observe(started.elapsed().as_secs_f64());
            }
            tracing::info!(
                status = response.status().as_u16(),
                route = %route,
                latency_ms = started.elapsed().as_secs_f64() * 1000.0,
                "request finished"
            );
            Ok(response)
        }
        Err(err) => {
            tracing::warn!(error = %err, "request failed");
            Err(err)
        }
    }
}
