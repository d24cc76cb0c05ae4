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
