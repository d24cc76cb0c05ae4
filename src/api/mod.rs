//! The HTTP API (SPEC §3). Handlers are thin: parse and validate, call the domain, map
//! errors through [`error`]. This module is the only one that knows about HTTP.
//!
//! - [`auth`] — bearer token → caller.
//! - [`accounts`] — accounts and API keys (admin).
//! - [`health`] — `/healthz`, `/readyz`.
//! - [`metrics`] — `/metrics`.
//! - [`events`] — event ingest (single, batch), listing and reading events.
//! - [`deliveries`] — delivery lists, one delivery with its attempts, retry.
//! - [`stats`] — the account at a glance.
//! - [`event_types`] — the event catalog.
//! - [`page`] — list answers and their cursors.
//! - [`webhooks`] — webhooks of the caller's account.

pub mod accounts;
pub mod auth;
pub mod deliveries;
pub mod error;
pub mod event_types;
pub mod events;
pub mod health;
pub mod metrics;
pub mod page;
pub mod stats;
pub mod webhooks;

use actix_web::{web, HttpResponse};
use error::ApiError;

/// Largest body of a management request (accounts, keys, webhooks).
const MANAGEMENT_BODY_BYTES: usize = 64 * 1024;

/// Every route pattern [`routes`] registers, as the metrics' `route` label shows it (a unit
/// test compares it with the handlers' attributes), and the label of a request no route took.
pub const ROUTE_PATTERNS: &[&str] = &[
    "/api/v1/accounts",
    "/api/v1/accounts/{id}",
    "/api/v1/accounts/{id}/keys",
    "/api/v1/accounts/{id}/keys/{key_id}",
    "/api/v1/deliveries",
    "/api/v1/deliveries/{id}",
    "/api/v1/deliveries/{id}/retry",
    "/api/v1/event-types",
    "/api/v1/events",
    "/api/v1/events/batch",
    "/api/v1/events/{id}",
    "/api/v1/stats",
    "/api/v1/webhooks",
    "/api/v1/webhooks/deliveries",
    "/api/v1/webhooks/{id}",
    "/api/v1/webhooks/{id}/deliveries",
    "/api/v1/webhooks/{id}/recover",
    "/api/v1/webhooks/{id}/rotate-secret",
    "/api/v1/webhooks/{id}/test",
    "/healthz",
    "/metrics",
    "/readyz",
];
pub const UNMATCHED_ROUTE: &str = "unmatched";
/// Every status the API answers with (SPEC §3), for the metrics' `status` label.
pub const STATUSES: &[&str] =
    &["200", "201", "202", "204", "400", "401", "403", "404", "409", "413", "415", "422", "429", "500", "503"];

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::JsonConfig::default().limit(MANAGEMENT_BODY_BYTES).error_handler(error::json_error))
        .app_data(web::QueryConfig::default().error_handler(error::query_error))
        .app_data(web::PathConfig::default().error_handler(error::path_error))
        // Ingest first: routes are tried in order, and the ones with `{id}` match by regex.
        .service(events::ingest)
        .service(events::ingest_batch)
        .service(health::healthz)
        .service(health::readyz)
        .service(metrics::scrape)
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
        .default_service(web::to(not_found));
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The route attributes of every handler file, so a new route cannot miss the list.
    #[test]
    fn route_patterns_are_exactly_the_handlers_routes() {
        let sources = [
            include_str!("accounts.rs"),
            include_str!("deliveries.rs"),
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
                for verb in ["#[get(\"", "#[post(\"", "#[put(\"", "#[patch(\"", "#[delete(\""] {
                    if let Some(rest) = line.strip_prefix(verb) {
                        found.insert(rest.split('"').next().unwrap_or_default().to_owned());
                    }
                }
            }
        }
        let listed: BTreeSet<String> = ROUTE_PATTERNS.iter().map(|s| s.to_string()).collect();
        assert_eq!(found, listed);
    }
}
