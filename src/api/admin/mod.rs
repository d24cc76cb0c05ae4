//! The admin page (`/admin`, `/admin/webhooks`, `/admin/deliveries`): one HTML page, a
//! script and a stylesheet, embedded in the binary — nothing to build, no CDN, no external
//! fonts. The page is a client of the public API only (its numbers come from the
//! account-scoped `/api/v1/stats`, never from `/metrics`); it keeps the caller's token in
//! `sessionStorage`, never in a URL. Everything it shows that a user or a receiver
//! controls is set as text, never parsed as HTML, and the Content-Security-Policy below
//! forbids inline scripts and other origins as a second wall.

use actix_web::http::header;
use actix_web::{get, HttpResponse};
use utoipa_actix_web::service_config::ServiceConfig;

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

/// Only this origin, no inline script or style, no framing.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                      connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

fn file(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

fn index() -> HttpResponse {
    file("text/html; charset=utf-8", INDEX)
}

fn to_admin() -> HttpResponse {
    HttpResponse::PermanentRedirect().insert_header((header::LOCATION, "/admin")).finish()
}

/// Herald's root: to the admin page.
#[utoipa::path(operation_id = "admin_root", tag = "admin page",
    responses((status = 308, description = "To the admin page (`Location: /admin`)")))]
#[get("/")]
pub async fn root() -> HttpResponse {
    to_admin()
}

/// `/admin/`: to `/admin`, the page's one address.
#[utoipa::path(operation_id = "admin_dashboard_slash", tag = "admin page",
    responses((status = 308, description = "To the admin page (`Location: /admin`)")))]
#[get("/admin/")]
pub async fn dashboard_slash() -> HttpResponse {
    to_admin()
}

/// The admin page: dashboard.
#[utoipa::path(operation_id = "admin_dashboard", tag = "admin page",
    responses((status = 200, description = "The page", content_type = "text/html", body = String)))]
#[get("/admin")]
pub async fn dashboard() -> HttpResponse {
    index()
}

/// The admin page: webhooks.
#[utoipa::path(operation_id = "admin_webhooks", tag = "admin page",
    responses((status = 200, description = "The page", content_type = "text/html", body = String)))]
#[get("/admin/webhooks")]
pub async fn webhooks() -> HttpResponse {
    index()
}

/// The admin page: deliveries.
#[utoipa::path(operation_id = "admin_deliveries", tag = "admin page",
    responses((status = 200, description = "The page", content_type = "text/html", body = String)))]
#[get("/admin/deliveries")]
pub async fn deliveries() -> HttpResponse {
    index()
}

/// The admin page's script.
#[utoipa::path(operation_id = "admin_script", tag = "admin page",
    responses((status = 200, description = "The script", content_type = "text/javascript", body = String)))]
#[get("/admin/assets/app.js")]
pub async fn script() -> HttpResponse {
    file("text/javascript; charset=utf-8", SCRIPT)
}

/// The admin page's stylesheet.
#[utoipa::path(operation_id = "admin_style", tag = "admin page",
    responses((status = 200, description = "The stylesheet", content_type = "text/css", body = String)))]
#[get("/admin/assets/app.css")]
pub async fn style() -> HttpResponse {
    file("text/css; charset=utf-8", STYLE)
}

/// The page's three views share one document; the script picks the view from the path.
pub fn pages(cfg: &mut ServiceConfig) {
    cfg.service(root)
        .service(dashboard)
        .service(dashboard_slash)
        .service(webhooks)
        .service(deliveries)
        .service(script)
        .service(style);
}
