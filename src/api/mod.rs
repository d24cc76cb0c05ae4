//! The HTTP API (contract §3). Handlers are thin: parse and validate, call the domain, map
//! errors through [`error`]. This module is the only one that knows about HTTP.
//!
//! - [`admin`] — the admin page (`/admin`), its files embedded in the binary.
//! - [`auth`] — bearer token → caller.
//! - [`accounts`] — accounts and API keys (admin).
//! - [`health`] — `/healthz`, `/readyz`.
//! - [`limits`] — what one client may take of the node: connections, time to send a body,
//!   memory for bodies.
//! - [`metrics`] — `/metrics`.
//! - [`events`] — event ingest (single, batch), listing and reading events.
//! - [`deliveries`] — delivery lists, one delivery with its attempts, retry.
//! - [`docs`] — the OpenAPI document's root, `/openapi.json`, Swagger UI at `/docs`.
//! - [`stats`] — the account at a glance.
//! - [`event_types`] — the event catalog.
//! - [`page`] — list answers and their cursors.
//! - [`webhooks`] — webhooks of the caller's account.

pub mod accounts;
pub mod admin;
pub mod auth;
pub mod deliveries;
pub mod docs;
pub mod error;
pub mod event_types;
pub mod events;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod page;
pub mod stats;
pub mod webhooks;

use actix_web::{web, HttpResponse};
use error::ApiError;
use utoipa_actix_web::service_config::ServiceConfig;

/// Largest body of a management request (accounts, keys, webhooks).
pub const MANAGEMENT_BODY_BYTES: usize = 64 * 1024;

/// Every status the API answers with (contract §3, and 308 from `/docs` to `/docs/`), for the
/// metrics' `status` label.
pub const STATUSES: &[&str] = &[
    "200", "201", "202", "204", "308", "400", "401", "403", "404", "408", "409", "413", "415", "422", "429", "500",
    "503",
];
/// The metrics' `route` label of a request no route took.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The route table: registers every route and documents it in the same call, so
/// `/openapi.json` cannot drift from what the server answers. Only Swagger UI's own files
/// (`/docs/…`, served by `utoipa-swagger-ui`) are left out of the document.
pub fn routes(cfg: &mut ServiceConfig) {
    cfg.app_data(web::JsonConfig::default().limit(MANAGEMENT_BODY_BYTES).error_handler(error::json_error))
        .app_data(web::QueryConfig::default().error_handler(error::query_error))
        .app_data(web::PathConfig::default().error_handler(error::path_error))
        // Ingest first: routes are tried in order, and the ones with `{id}` match by regex.
        .service(events::ingest)
        .service(events::ingest_batch)
        .service(health::healthz)
        .service(health::readyz)
        .service(metrics::scrape)
        .service(docs::openapi_json)
        .service(accounts::create)
        .service(accounts::list)
        .service(accounts::remove)
        .service(accounts::issue_key)
        .service(accounts::list_keys)
        .service(accounts::revoke_key)
        .service(events::list)
        .service(events::read)
        .service(deliveries::list)
        // Before `/api/v1/webhooks/{id}`, which would take `deliveries` for an id.
        .service(deliveries::list_alias)
        .service(deliveries::read)
        .service(deliveries::retry)
        .service(deliveries::of_webhook)
        .service(stats::read)
        .service(event_types::list)
        .service(webhooks::create)
        .service(webhooks::list)
        .service(webhooks::read)
        .service(webhooks::edit)
        .service(webhooks::remove)
        .service(webhooks::rotate_secret)
        .service(webhooks::recover)
        .service(webhooks::test)
        .configure(docs::pages)
        .configure(admin::pages)
        .default_service(web::to(not_routed));
}

/// The API's OpenAPI document, built from [`routes`] alone (no server needed).
pub fn document() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    use utoipa_actix_web::AppExt;
    actix_web::App::new().into_utoipa_app().openapi(docs::ApiDoc::openapi()).configure(routes).split_for_parts().1
}

/// Every route pattern the metrics' `route` label can show: the document's paths and Swagger
/// UI's.
pub fn route_patterns() -> Vec<String> {
    let mut patterns: Vec<String> = document().paths.paths.keys().cloned().collect();
    patterns.extend(docs::PAGE_PATTERNS.iter().map(|p| p.to_string()));
    patterns
}

/// What a request no route took gets: 405 with `Allow` if its path is one Herald serves
/// with other methods, else 404 — both in the API's error shape.
async fn not_routed(req: actix_web::HttpRequest) -> Result<HttpResponse, ApiError> {
    let allowed = allowed_methods(req.path());
    if allowed.is_empty() {
        return Err(ApiError::not_found());
    }
    Err(ApiError::method_not_allowed(req.method().as_str(), allowed.join(", ")))
}

type RouteTable = Vec<(actix_web::dev::ResourceDef, Vec<&'static str>)>;

/// The methods a path of the document has an operation for, with those operations.
fn operations(
    item: &utoipa::openapi::path::PathItem,
) -> impl Iterator<Item = (&'static str, &utoipa::openapi::path::Operation)> {
    [("GET", &item.get), ("POST", &item.post), ("PUT", &item.put), ("PATCH", &item.patch), ("DELETE", &item.delete)]
        .into_iter()
        .filter_map(|(name, op)| op.as_ref().map(|op| (name, op)))
}

/// Every path pattern with the methods it takes (`HEAD` wherever `GET`), from the document.
static TABLE: std::sync::LazyLock<RouteTable> = std::sync::LazyLock::new(|| {
    let doc = document();
    let mut table: RouteTable = doc
        .paths
        .paths
        .iter()
        .map(|(pattern, item)| {
            let mut methods: Vec<&'static str> = operations(item).map(|(name, _)| name).collect();
            if methods.contains(&"GET") {
                methods.push("HEAD");
            }
            (actix_web::dev::ResourceDef::new(pattern.as_str()), methods)
        })
        .collect();
    table.extend(docs::PAGE_PATTERNS.iter().map(|p| (actix_web::dev::ResourceDef::new(*p), vec!["GET", "HEAD"])));
    table
});

/// Fixed paths that a pattern with a parameter also matches (`/api/v1/events/batch` and
/// `/api/v1/events/{id}`), with the methods the fixed path takes.
static SHADOWED: std::sync::LazyLock<std::collections::HashMap<String, Vec<&'static str>>> =
    std::sync::LazyLock::new(|| {
        TABLE
            .iter()
            .filter(|(def, _)| !def.pattern().unwrap_or_default().contains('{'))
            .filter_map(|(def, methods)| {
                let path = def.pattern()?;
                let shadowed = TABLE.iter().any(|(other, _)| other.pattern() != Some(path) && other.is_match(path));
                shadowed.then(|| (path.to_owned(), methods.clone()))
            })
            .collect()
    });

/// The methods Herald answers on `path`, by the route table (`HEAD` wherever `GET`). A fixed
/// path is its own resource, whatever a pattern with a parameter would also match.
pub fn allowed_methods(path: &str) -> Vec<&'static str> {
    if let Some(methods) = SHADOWED.get(path) {
        return methods.clone();
    }
    let mut allowed: Vec<&'static str> = Vec::new();
    for (def, methods) in TABLE.iter() {
        if def.is_match(path) {
            for m in methods {
                if !allowed.contains(m) {
                    allowed.push(m);
                }
            }
        }
    }
    allowed
}

/// The answer to a fixed path asked with a method only a parameterised sibling takes
/// (`GET /api/v1/events/batch`): 405 for that path, rather than being routed as an id.
/// Checked before routing; one hash lookup.
pub fn refused_on_fixed_path(path: &str, method: &str) -> Option<ApiError> {
    let methods = SHADOWED.get(path)?;
    (!methods.contains(&method)).then(|| ApiError::method_not_allowed(method, methods.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The fixed paths a parameterised pattern also matches: each answers for itself.
    #[test]
    fn fixed_paths_shadowed_by_a_pattern_are_known_and_keep_their_methods() {
        let mut shadowed: Vec<(&str, Vec<&str>)> = SHADOWED.iter().map(|(p, m)| (p.as_str(), m.clone())).collect();
        shadowed.sort();
        assert_eq!(
            shadowed,
            [("/api/v1/events/batch", vec!["POST"]), ("/api/v1/webhooks/deliveries", vec!["GET", "HEAD"])]
        );
        assert!(refused_on_fixed_path("/api/v1/events/batch", "GET").is_some());
        assert!(refused_on_fixed_path("/api/v1/events/batch", "POST").is_none());
        assert!(refused_on_fixed_path("/api/v1/events/evt_01M8RT353B000A6ZY5390EXG4N", "GET").is_none());
    }

    /// The route attributes of every handler file, so a handler cannot be left out of the
    /// table (and so out of the document).
    #[test]
    fn the_document_has_exactly_the_handlers_routes() {
        let sources = [
            include_str!("accounts.rs"),
            include_str!("admin/mod.rs"),
            include_str!("deliveries.rs"),
            include_str!("docs.rs"),
            include_str!("event_types.rs"),
            include_str!("events.rs"),
            include_str!("health.rs"),
            include_str!("metrics.rs"),
            include_str!("stats.rs"),
            include_str!("webhooks.rs"),
        ];
        let mut found = BTreeSet::new();
        for source in sources {
            for line in source.lines().map(str::trim) {
                for verb in ["get", "post", "put", "patch", "delete"] {
                    if let Some(rest) = line.strip_prefix(&format!("#[{verb}(\"")) {
                        found.insert(format!("{verb} {}", rest.split('"').next().unwrap_or_default()));
                    }
                }
            }
        }
        let doc = document();
        let mut documented = BTreeSet::new();
        for (path, item) in &doc.paths.paths {
            for (verb, _) in operations(item) {
                documented.insert(format!("{} {path}", verb.to_lowercase()));
            }
        }
        assert_eq!(found, documented);
        assert_eq!(found.len(), 36, "{found:#?}");
    }
}
