//! The OpenFeature Remote Evaluation Protocol over HTTP (`flags::ofrep`, docs/flags.md). The
//! tenant and the user come from the credentials, as on every tenant route: a JWT or an API key
//! in `Authorization: Bearer`; their refusals (400 no tenant, 401, 403, 404 unknown tenant, 429
//! and 503 with `Retry-After`) are problem documents like everywhere else. Evaluation failures
//! have the protocol's own bodies: 400 `PARSE_ERROR` / `INVALID_CONTEXT`, 404 `FLAG_NOT_FOUND`.

use actix_web::http::{header, StatusCode};
use actix_web::{post, web, HttpRequest, HttpResponse};

use crate::flags::ofrep::{
    self, BulkEvaluationSuccess, ErrorCode, EvaluationFailure, EvaluationRequest,
    EvaluationSuccess, Failure,
};
use crate::flags::ops;
use crate::http::problem::{internal, Problem};
use crate::http::tenant::TenantRequest;

/// Under one scope: the router matches its static prefix with a string comparison, so the
/// OFREP routes can be tried before the others (`http::configure`) at almost no cost to them,
/// and an evaluation no longer walks every other route's regex first.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/ofrep/v1")
            .service(evaluate_flag)
            .service(evaluate_flags),
    );
}

fn failure(failure: &Failure, key: Option<&str>) -> HttpResponse {
    let status = match failure.code {
        ErrorCode::ParseError | ErrorCode::InvalidContext => StatusCode::BAD_REQUEST,
        ErrorCode::FlagNotFound => StatusCode::NOT_FOUND,
    };
    HttpResponse::build(status).json(failure.body(key))
}

#[utoipa::path(post, path = "/ofrep/v1/evaluate/flags/{key}", tag = "ofrep",
    request_body = EvaluationRequest, security(("bearer" = [])),
    responses((status = 200, body = EvaluationSuccess),
        (status = 400, body = EvaluationFailure, description = "PARSE_ERROR or INVALID_CONTEXT"),
        (status = 401), (status = 403),
        (status = 404, body = EvaluationFailure, description = "FLAG_NOT_FOUND"),
        (status = 429, description = "Rate limited: Retry-After")))]
#[post("/evaluate/flags/{key}")]
pub async fn evaluate_flag(
    req: TenantRequest,
    key: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, Problem> {
    let context = match ofrep::parse_request(&body) {
        Ok(context) => context,
        Err(refused) => return Ok(failure(&refused, Some(&key))),
    };
    let definitions = req.state().flag_definitions().await?;
    let inputs = ops::for_user(&definitions, &req.caller)?;
    let subject = context
        .targeting_key
        .unwrap_or_else(|| ops::targeting_key(&req));
    Ok(
        match inputs.evaluate(&key, &req.config.plan.name, &subject) {
            Some((definition, evaluation)) => {
                HttpResponse::Ok().json(EvaluationSuccess::new(definition, &evaluation))
            }
            None => failure(&Failure::not_found(&key), Some(&key)),
        },
    )
}

#[utoipa::path(post, path = "/ofrep/v1/evaluate/flags", tag = "ofrep",
    request_body = EvaluationRequest, security(("bearer" = [])),
    params(("If-None-Match" = Option<String>, Header, description = "The ETag of an earlier answer")),
    responses((status = 200, body = BulkEvaluationSuccess, headers(("ETag" = String))),
        (status = 304, description = "Unchanged since the ETag in If-None-Match"),
        (status = 400, body = EvaluationFailure, description = "PARSE_ERROR or INVALID_CONTEXT"),
        (status = 401), (status = 403),
        (status = 429, description = "Rate limited: Retry-After")))]
#[post("/evaluate/flags")]
pub async fn evaluate_flags(
    req: TenantRequest,
    http: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, Problem> {
    let context = match ofrep::parse_request(&body) {
        Ok(context) => context,
        Err(refused) => return Ok(failure(&refused, None)),
    };
    let definitions = req.state().flag_definitions().await?;
    let inputs = ops::for_user(&definitions, &req.caller)?;
    let subject = context
        .targeting_key
        .unwrap_or_else(|| ops::targeting_key(&req));
    let bulk = BulkEvaluationSuccess {
        flags: inputs
            .evaluate_all(&req.config.plan.name, &subject)
            .map(|(definition, evaluation)| EvaluationSuccess::new(definition, &evaluation))
            .collect(),
    };
    let bytes = serde_json::to_vec(&bulk).map_err(|err| internal(&err))?;
    let etag = ofrep::etag(&bytes);
    let unchanged = http
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| ofrep::none_match(value, &etag));
    let mut response = if unchanged {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, etag))
        // A cache may keep the answer but must ask again (If-None-Match) before using it.
        .insert_header((header::CACHE_CONTROL, "private, no-cache"));
    Ok(if unchanged {
        response.finish()
    } else {
        response.content_type("application/json").body(bytes)
    })
}
