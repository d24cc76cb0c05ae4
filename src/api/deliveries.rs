//! `/api/v1/deliveries` (alias `/api/v1/webhooks/deliveries`), one delivery with its
//! attempts, and re-queueing a dead one. Lists read sled, so they run on the blocking pool,
//! never on the threads that answer ingest.

use super::auth::Auth;
use super::error::ApiError;
use super::page::{self, Page};
use crate::deliveries::{self, DeliveryFilter, DeliveryInfo, StatusFilter};
use crate::error::DomainError;
use crate::listing::TimeWindow;
use crate::log::record::AttemptFinished;
use crate::model::{AttemptResult, DeliveryId, DeliveryState, EventId, WebhookId};
use crate::time::rfc3339;
use actix_web::{get, post, web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The filters of every delivery list.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    status: Option<String>,
    webhook_id: Option<String>,
    event_id: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

impl DeliveriesQuery {
    fn filter(&self, webhook: Option<WebhookId>) -> Result<DeliveryFilter, ApiError> {
        let status = self.status.as_deref().map(StatusFilter::parse).transpose()?;
        let webhook = match (webhook, self.webhook_id.as_deref()) {
            (Some(w), _) => Some(w),
            (None, None) => None,
            (None, Some(text)) => {
                Some(WebhookId::parse(text).map_err(|_| DomainError::invalid("webhook_id", "is not a webhook id"))?)
            }
        };
        let event = match self.event_id.as_deref() {
            None => None,
            Some(text) => {
                Some(EventId::parse(text).map_err(|_| DomainError::invalid("event_id", "is not an event id"))?)
            }
        };
        let window = TimeWindow::new(page::time("since", &self.since)?, page::time("until", &self.until)?)?;
        Ok(DeliveryFilter { status, webhook, event, window })
    }
}

fn state_fields(state: &DeliveryState) -> (&'static str, Option<&'static str>) {
    match state {
        DeliveryState::Dead(reason) => ("dead", Some(reason.as_str())),
        other => (other.as_str(), None),
    }
}

/// A delivery as every list shows it.
pub fn view(d: &DeliveryInfo) -> Value {
    let (status, reason) = state_fields(&d.row.state);
    json!({
        "id": d.id.to_string(),
        "event_id": d.event_id.to_string(),
        "event": d.event,
        "webhook_id": d.webhook_id.to_string(),
        "status": status,
        "dead_reason": reason,
        "attempt_count": d.row.attempts,
        "next_attempt_at": d.row.next_due.map(rfc3339),
        "created_at": rfc3339(d.created_at),
        "queued_at": rfc3339(d.row.queued_at),
        "finished_at": d.row.finished_at.map(rfc3339),
    })
}

fn result_name(r: &AttemptResult) -> &'static str {
    match r {
        AttemptResult::Success => "success",
        AttemptResult::HttpError => "http_error",
        AttemptResult::Timeout => "timeout",
        AttemptResult::NetworkError => "network_error",
        AttemptResult::Refused => "refused",
    }
}

/// One attempt: its request headers were masked before they were recorded.
fn attempt_view(a: &AttemptFinished) -> Value {
    let headers: Map<String, Value> =
        a.outcome.request_headers.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    json!({
        "attempt": a.attempt,
        "started_at": rfc3339(a.started_at),
        "finished_at": rfc3339(a.at),
        "result": result_name(&a.outcome.result),
        "status_code": a.outcome.status_code,
        "latency_ms": a.outcome.latency_us as f64 / 1000.0,
        "error": a.outcome.error,
        "request_headers": headers,
        "response_body": a.outcome.response_excerpt.as_deref().map(String::from_utf8_lossy),
    })
}

async fn list_answer(auth: Auth, query: DeliveriesQuery, webhook: Option<WebhookId>) -> Result<HttpResponse, ApiError> {
    let filter = query.filter(webhook)?;
    let limit = page::limit(query.limit)?;
    let engine = auth.engine.clone();
    let account = auth.caller.account().clone();
    let listing =
        web::block(move || deliveries::list(&engine.log, &account, &filter, page::cursor(&query.cursor), limit))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(HttpResponse::Ok().json(Page::new(listing.items.iter().map(view).collect(), listing.next_cursor)))
}

#[get("/api/v1/deliveries")]
pub async fn list(auth: Auth, query: web::Query<DeliveriesQuery>) -> Result<HttpResponse, ApiError> {
    list_answer(auth, query.into_inner(), None).await
}

/// The alias SPEC §3 names; registered before `/api/v1/webhooks/{id}`.
#[get("/api/v1/webhooks/deliveries")]
pub async fn list_alias(auth: Auth, query: web::Query<DeliveriesQuery>) -> Result<HttpResponse, ApiError> {
    list_answer(auth, query.into_inner(), None).await
}

#[get("/api/v1/webhooks/{id}/deliveries")]
pub async fn of_webhook(
    auth: Auth,
    id: web::Path<String>,
    query: web::Query<DeliveriesQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    if query.webhook_id.is_some() {
        return Err(DomainError::invalid("webhook_id", "is given by the path").into());
    }
    let id = WebhookId::parse(&id).map_err(|_| ApiError::not_found())?;
    list_answer(auth, query, Some(id)).await
}

fn delivery_id(text: &str) -> Result<DeliveryId, ApiError> {
    DeliveryId::parse(text).map_err(|_| ApiError::not_found())
}

#[get("/api/v1/deliveries/{id}")]
pub async fn read(auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = delivery_id(&id)?;
    let (info, attempts) = deliveries::get(&auth.engine.log, auth.caller.account(), &id)?;
    let mut out = view(&info);
    out["attempts"] = attempts.iter().map(attempt_view).collect();
    Ok(HttpResponse::Ok().json(out))
}

#[post("/api/v1/deliveries/{id}/retry")]
pub async fn retry(auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = delivery_id(&id)?;
    let info = deliveries::retry(&auth.engine.log, auth.caller.account(), &id).await?;
    Ok(HttpResponse::Accepted().json(view(&info)))
}
