//! The dashboard (`/app/`, its deep links and `/app/operator/`), its hashed assets, and the API
//! reference (`/docs`), all from the files built into the binary (`crate::dashboard`).

use actix_web::http::header;
use actix_web::{get, web, HttpRequest, HttpResponse, HttpResponseBuilder};

use crate::dashboard;

pub fn configure(cfg: &mut web::ServiceConfig) {
    // The assets first: the deep-link route below matches every path under /app/.
    cfg.service(asset)
        .service(app_root)
        .service(app)
        .service(docs);
}

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

fn secured(mut response: HttpResponseBuilder, csp: &str) -> HttpResponseBuilder {
    response
        .insert_header((header::CONTENT_SECURITY_POLICY, csp))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"));
    response
}

fn page(req: &HttpRequest, html: &'static str) -> HttpResponse {
    let host = req.connection_info().host().to_string();
    secured(HttpResponse::Ok(), &dashboard::app_csp(&host))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .content_type("text/html; charset=utf-8")
        .body(html)
}

#[get("/app")]
async fn app_root() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/app/"))
        .finish()
}

/// The single page of the dashboard: it routes in the browser, so every path under /app/
/// (a bookmarked `/app/tasks`, `/app/operator/`) answers the same page.
#[utoipa::path(get, path = "/app/", tag = "operations",
    responses((status = 200, description = "The dashboard (HTML; tenant users sign in with the form's `tenant`, `email` and `password`; `/app/operator/` for platform operators); every path under /app/ serves it", content_type = "text/html")))]
#[get("/app/{tail:.*}")]
pub async fn app(req: HttpRequest) -> HttpResponse {
    page(&req, dashboard::index_html())
}

#[get("/app/assets/{hash}/{path:.*}")]
async fn asset(req: HttpRequest, path: web::Path<(String, String)>) -> HttpResponse {
    let (hash, path) = path.into_inner();
    let Some(found) = dashboard::asset(&hash, &path) else {
        return HttpResponse::NotFound()
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .finish();
    };
    let host = req.connection_info().host().to_string();
    secured(HttpResponse::Ok(), &dashboard::app_csp(&host))
        .insert_header((header::CACHE_CONTROL, IMMUTABLE))
        .content_type(dashboard::content_type(found.path))
        .body(found.bytes)
}

/// Redoc, served from this binary (no CDN), reading /openapi.json.
#[utoipa::path(get, path = "/docs", tag = "operations",
    responses((status = 200, description = "The browsable API reference (HTML) for /openapi.json", content_type = "text/html")))]
#[get("/docs")]
pub async fn docs() -> HttpResponse {
    secured(HttpResponse::Ok(), dashboard::DOCS_CSP)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .content_type("text/html; charset=utf-8")
        .body(dashboard::docs_html())
}
