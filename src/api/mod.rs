//! The HTTP API (SPEC §3). Handlers are thin: parse and validate, call the domain, map
//! errors through [`error`]. This module is the only one that knows about HTTP.

pub mod error;
pub mod health;

use actix_web::{web, HttpResponse};
use error::ApiError;

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(health::healthz).service(health::readyz).default_service(web::to(not_found));
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found())
}
