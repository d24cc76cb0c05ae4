//! `GET /healthz` (the process answers) and `GET /readyz` (the log is recovered and the
//! engine runs; 503 with `Retry-After` until then).

use super::error::ApiError;
use crate::server::Shared;
use actix_web::{get, web, HttpResponse};
use serde_json::json;

#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

#[get("/readyz")]
pub async fn readyz(shared: web::Data<Shared>) -> Result<HttpResponse, ApiError> {
    let engine = shared.engine().ok_or_else(ApiError::not_ready)?;
    Ok(HttpResponse::Ok().json(json!({
        "status": "ready",
        "recovery_ms": engine.recovery.duration.as_millis() as u64,
        "unfinished_deliveries": engine.recovery.unfinished,
    })))
}
