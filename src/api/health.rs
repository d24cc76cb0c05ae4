//! `GET /healthz` (the process answers) and `GET /readyz` (the log is recovered and the
//! engine runs; 503 with `Retry-After` until then).

use super::error::ApiError;
use super::error::ErrorBody;
use crate::node::NodeHandle;
use actix_web::{get, web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct Alive {
    #[schema(example = "ok")]
    status: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct Ready {
    #[schema(example = "ready")]
    status: &'static str,
    /// How long start-up recovery took.
    recovery_ms: u64,
    /// Deliveries found unfinished at start-up, replayed.
    unfinished_deliveries: u64,
}

/// Liveness: 200 as soon as the HTTP server runs, recovery or not.
#[utoipa::path(operation_id = "health_healthz", tag = "operations", responses((status = 200, description = "Alive", body = Alive)))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Alive { status: "ok" })
}

/// Readiness: 200 once the log is recovered and the engine runs and while it takes writes;
/// 503 while recovering, while writes to the log fail, and while free disk space is below
/// `min_free_disk` (a load balancer should send ingest elsewhere; reads still work).
#[utoipa::path(operation_id = "health_readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = Ready),
        (status = 503, description = "Still recovering its log, writes to the log failing, or the disk below min_free_disk", body = ErrorBody)))]
#[get("/readyz")]
pub async fn readyz(shared: web::Data<NodeHandle>) -> Result<HttpResponse, ApiError> {
    let engine = shared.node().ok_or_else(ApiError::not_ready)?;
    if let Some(problem) = engine.ledger.health().problem() {
        return Err(ApiError::writes_failing(problem));
    }
    if engine.disk.is_low() {
        return Err(ApiError::writes_failing(
            "writes are failing: free disk space is below min_free_disk, ingest is refused".into(),
        ));
    }
    Ok(HttpResponse::Ok().json(Ready {
        status: "ready",
        recovery_ms: engine.recovery.duration.as_millis() as u64,
        unfinished_deliveries: engine.recovery.unfinished,
    }))
}
