//! The API's own documentation: the OpenAPI document's root (title, security schemes,
//! tags), `GET /openapi.json`, and Swagger UI at `/docs`. The paths and schemas come from
//! the route table ([`super::routes`]), never from a hand-kept list; Swagger UI's files are
//! embedded in the binary (`utoipa-swagger-ui`'s `vendored`), so `/docs` works offline.

use super::error::ErrorBody;
use actix_web::{get, http::header, web, HttpResponse};
use std::sync::OnceLock;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_actix_web::service_config::ServiceConfig;
use utoipa_swagger_ui::{Config, SwaggerUi};

/// Patterns of Swagger UI's routes, left out of the document (`/docs` only redirects to
/// `/docs/`; the files under it are Swagger UI's).
pub const PAGE_PATTERNS: &[&str] = &["/docs", "/docs/{_:.*}"];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald",
        description = "Self-hosted webhook delivery engine: ingest events, deliver them signed to \
                       subscribed webhooks with retries, circuit breakers and a dead-letter queue.",
        license(name = "Apache-2.0")
    ),
    modifiers(&SecuritySchemes),
    components(schemas(ErrorBody)),
    tags(
        (name = "events", description = "Ingest events and read them back"),
        (name = "webhooks", description = "The account's webhooks: subscriptions, secrets, health"),
        (name = "deliveries", description = "Deliveries and their attempts; retry and recover"),
        (name = "stats", description = "The account at a glance"),
        (name = "accounts", description = "Accounts and API keys (admin token only)"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
        (name = "admin page", description = "The admin page and its files, embedded in the binary"),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An account's API key, or the admin token (add `Herald-Account: acct_…` to act \
                         for an account)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "metrics_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("`metrics_token` from the configuration, when set"))
                    .build(),
            ),
        );
    }
}

/// The document as JSON, built once on first request.
fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        super::document().to_json().unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
    })
}

/// This document: OpenAPI 3.1, generated from the route table.
#[utoipa::path(operation_id = "docs_openapi_json", tag = "operations",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)))]
#[get("/openapi.json")]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(document_json())
}

async fn docs_slash() -> HttpResponse {
    HttpResponse::PermanentRedirect().insert_header((header::LOCATION, "/docs/")).finish()
}

/// `/docs` → Swagger UI reading `/openapi.json`.
pub fn pages(cfg: &mut ServiceConfig) {
    cfg.route("/docs", web::get().to(docs_slash)).map(|actix| {
        // No validator badge: it would send the document to validator.swagger.io.
        let config = Config::from("/openapi.json").validator_url("none").try_it_out_enabled(true);
        actix.service(SwaggerUi::new("/docs/{_:.*}").config(config));
        actix
    });
}
