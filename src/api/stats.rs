//! `GET /api/v1/stats`: the caller's account at a glance.

use super::auth::Auth;
use super::error::ApiError;
use super::error::Unauthenticated;
use crate::domain::stats;
use crate::model::now_millis;
use crate::model::time::rfc3339;
use actix_web::{get, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

/// Counters of one minute.
#[derive(Serialize, ToSchema)]
pub struct MinuteView {
    /// Start of the minute, RFC 3339.
    minute: String,
    events: u64,
    attempts: u64,
    succeeded: u64,
}

/// The caller's account at a glance: only its own events, attempts and webhooks.
#[derive(Serialize, ToSchema)]
pub struct StatsView {
    window_minutes: u64,
    /// Oldest first; the last is the current, unfinished minute.
    per_minute: Vec<MinuteView>,
    /// Events ingested in the window.
    events: u64,
    /// Delivery attempts made in the window.
    attempts: u64,
    succeeded: u64,
    /// Succeeded attempts over all attempts in the window; `null` without attempts.
    success_ratio: Option<f64>,
    webhooks: u64,
    /// Deliveries not finished.
    pending: u64,
    dead_letters: u64,
    /// Webhooks whose circuit breaker is open.
    open_breakers: u64,
}

/// Activity of the last hour by minute, success ratio, pending, dead letters, open breakers.
#[utoipa::path(operation_id = "stats_read", tag = "stats", security(("bearer" = [])),
    responses((status = 200, description = "The account's figures", body = StatsView), Unauthenticated))]
#[get("/api/v1/stats")]
pub async fn read(auth: Auth) -> Result<HttpResponse, ApiError> {
    let s = stats::of_account(&*auth.node.ledger, auth.caller.account(), now_millis()).await?;
    let per_minute = s
        .minutes
        .iter()
        .map(|(at, c)| MinuteView {
            minute: rfc3339(*at),
            events: c.events,
            attempts: c.attempts,
            succeeded: c.succeeded,
        })
        .collect();
    Ok(HttpResponse::Ok().json(StatsView {
        window_minutes: stats::WINDOW_MINUTES,
        per_minute,
        events: s.total.events,
        attempts: s.total.attempts,
        succeeded: s.total.succeeded,
        success_ratio: s.success_ratio,
        webhooks: s.webhooks,
        pending: s.pending,
        dead_letters: s.dead_letters,
        open_breakers: s.open_breakers,
    }))
}
