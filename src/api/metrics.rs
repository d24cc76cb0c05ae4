//! `GET /metrics`: the Prometheus text format. Open unless `metrics_token` is set; then it
//! takes `Authorization: Bearer <metrics_token>`, compared in constant time.

use super::error::{ApiError, ErrorBody};
use crate::domain::error::DomainError;
use crate::node::NodeHandle;
use crate::security::credentials;
use actix_web::http::header;
use actix_web::{get, web, HttpRequest, HttpResponse};

/// Prometheus text format (contract §7). With `metrics_token` set, `Authorization: Bearer` it.
#[utoipa::path(operation_id = "metrics_scrape", tag = "operations", security((), ("metrics_token" = [])),
    responses((status = 200, description = "Metrics", content_type = "text/plain; version=0.0.4", body = String),
        (status = 401, description = "metrics_token is set and was not given", body = ErrorBody),
        (status = 404, description = "metrics_enabled is false", body = ErrorBody)))]
#[get("/metrics")]
pub async fn scrape(req: HttpRequest, shared: web::Data<NodeHandle>) -> Result<HttpResponse, ApiError> {
    if !shared.metrics.enabled() {
        return Err(DomainError::NotFound.into());
    }
    if let Some(token) = &shared.config.metrics_token {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !credentials::token_matches(presented, &credentials::hash_token(token)) {
            return Err(DomainError::Unauthenticated.into());
        }
    }
    let text = shared
        .metrics
        .render(shared.node().map(|node| node.gauges()))
        .map_err(|e| ApiError::internal(format!("metrics did not encode: {e}")))?;
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(text))
}
