//! `GET /api/v1/stats`: the caller's account at a glance.

use super::auth::Auth;
use super::error::ApiError;
use crate::model::now_millis;
use crate::stats;
use crate::time::rfc3339;
use actix_web::{get, HttpResponse};
use serde_json::{json, Value};

#[get("/api/v1/stats")]
pub async fn read(auth: Auth) -> Result<HttpResponse, ApiError> {
    let s = stats::of_account(&auth.engine.log, auth.caller.account(), now_millis())?;
    let per_minute: Vec<Value> = s
        .minutes
        .iter()
        .map(|(at, c)| json!({"minute": rfc3339(*at), "events": c.events, "attempts": c.attempts, "succeeded": c.succeeded}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "window_minutes": stats::WINDOW_MINUTES,
        "per_minute": per_minute,
        "events": s.total.events,
        "attempts": s.total.attempts,
        "succeeded": s.total.succeeded,
        "success_ratio": s.success_ratio,
        "webhooks": s.webhooks,
        "pending": s.pending,
        "dead_letters": s.dead_letters,
        "open_breakers": s.open_breakers,
    })))
}
