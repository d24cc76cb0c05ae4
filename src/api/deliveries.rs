//! `/api/v1/deliveries` (alias `/api/v1/webhooks/deliveries`), one delivery with its
//! attempts, and re-queueing a dead one. Lists read sled, so they run on the blocking pool,
//! never on the threads that answer ingest.

use super::auth::Auth;
use super::error::ApiError;
use super::error::{BadQuery, Conflicting, Missing, Unauthenticated};
use super::page::{self, Page};
use crate::domain::deliveries::{self, DeliveryFilter, DeliveryInfo, StatusFilter};
use crate::domain::error::DomainError;
use crate::domain::listing::TimeWindow;
use crate::model::time::rfc3339;
use crate::model::{AttemptResult, DeliveryId, DeliveryState, EventId, WebhookId};
use crate::storage::AttemptFinished;
use actix_web::{get, post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

/// A delivery status, as `status=` filters by it.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
enum StatusName {
    Pending,
    Retrying,
    Succeeded,
    Dead,
}

/// The filters of every delivery list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// `pending`, `retrying`, `succeeded` or `dead`.
    #[param(inline, value_type = Option<StatusName>)]
    status: Option<String>,
    webhook_id: Option<String>,
    event_id: Option<String>,
    /// Events ingested at or after this RFC 3339 time.
    since: Option<String>,
    /// Events ingested at or before this RFC 3339 time.
    until: Option<String>,
    /// Items per page, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
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

/// One delivery: an event owed to one webhook.
#[derive(Serialize, ToSchema)]
pub struct DeliveryView {
    #[schema(example = "dlv_01JZ8YQ3N6V2K7T9R4M1X5C8D0")]
    id: String,
    event_id: String,
    event: String,
    webhook_id: String,
    /// `pending`, `retrying` (an attempt failed, another is due), `succeeded` or `dead`.
    #[schema(example = "succeeded")]
    status: &'static str,
    /// Why it is dead: `retries_exhausted`, `expired`, `deleted`, `disabled`, `gone` or `corrupt`.
    dead_reason: Option<&'static str>,
    attempt_count: u32,
    /// When it will be tried next — behind an open circuit breaker, not before the breaker
    /// lets it go; null once finished and while its webhook is paused or disabled.
    next_attempt_at: Option<String>,
    /// When its event was ingested.
    created_at: String,
    queued_at: String,
    finished_at: Option<String>,
}

/// A delivery with every attempt made.
#[derive(Serialize, ToSchema)]
pub struct DeliveryDetail {
    #[serde(flatten)]
    delivery: DeliveryView,
    attempts: Vec<AttemptView>,
}

/// One HTTP attempt and what came back.
#[derive(Serialize, ToSchema)]
pub struct AttemptView {
    attempt: u32,
    started_at: String,
    finished_at: String,
    /// `success`, `http_error`, `timeout`, `network_error` or `refused`.
    #[schema(example = "success")]
    result: &'static str,
    status_code: Option<u16>,
    latency_ms: f64,
    error: Option<String>,
    /// The headers sent, credential-like values masked.
    #[schema(value_type = HashMap<String, String>)]
    request_headers: Map<String, Value>,
    /// The first 4 KiB of the receiver's answer to a failed attempt (not kept for successes).
    response_body: Option<String>,
}

pub fn view(d: &DeliveryInfo) -> DeliveryView {
    let (status, dead_reason) = state_fields(&d.row.state);
    DeliveryView {
        id: d.id.to_string(),
        event_id: d.event_id.to_string(),
        event: d.event.clone(),
        webhook_id: d.webhook_id.to_string(),
        status,
        dead_reason,
        attempt_count: d.row.attempts,
        next_attempt_at: d.next_attempt_at.map(rfc3339),
        created_at: rfc3339(d.created_at),
        queued_at: rfc3339(d.row.queued_at),
        finished_at: d.row.finished_at.map(rfc3339),
    }
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

/// One attempt: credential-like header values were never recorded; the other custom ones
/// were recorded sealed and are opened here (masked if this node cannot).
fn attempt_view(a: &AttemptFinished, keyring: &crate::security::seal::Keyring) -> AttemptView {
    AttemptView {
        attempt: a.attempt,
        started_at: rfc3339(a.started_at),
        finished_at: rfc3339(a.at),
        result: result_name(&a.outcome.result),
        status_code: a.outcome.status_code,
        latency_ms: a.outcome.latency_us as f64 / 1000.0,
        error: a.outcome.error.clone(),
        request_headers: a
            .outcome
            .request_headers
            .iter()
            .map(|(k, v)| {
                let shown = keyring.open_str(v).unwrap_or_else(|_| crate::security::header_rules::MASK.to_owned());
                (k.clone(), Value::String(shown))
            })
            .collect(),
        response_body: a.outcome.response_excerpt.as_deref().map(|b| String::from_utf8_lossy(b).into_owned()),
    }
}

async fn list_answer(auth: Auth, query: DeliveriesQuery, webhook: Option<WebhookId>) -> Result<HttpResponse, ApiError> {
    let filter = query.filter(webhook)?;
    let limit = page::limit(query.limit)?;
    let (ledger, account) = (&*auth.node.ledger, auth.caller.account());
    let listing = deliveries::list(ledger, account, &filter, page::cursor(&query.cursor), limit).await?;
    Ok(HttpResponse::Ok().json(Page::new(listing.items.iter().map(view).collect(), listing.next_cursor)))
}

/// The account's deliveries, filtered.
#[utoipa::path(operation_id = "deliveries_list", tag = "deliveries", security(("bearer" = [])), params(DeliveriesQuery),
    responses((status = 200, description = "A page of deliveries", body = Page<DeliveryView>), Unauthenticated, Missing, BadQuery))]
#[get("/api/v1/deliveries")]
pub async fn list(auth: Auth, query: web::Query<DeliveriesQuery>) -> Result<HttpResponse, ApiError> {
    list_answer(auth, query.into_inner(), None).await
}

/// The account's deliveries, filtered: the alias of `/api/v1/deliveries` contract §3 names.
#[utoipa::path(operation_id = "deliveries_list_alias", tag = "deliveries", security(("bearer" = [])), params(DeliveriesQuery),
    responses((status = 200, description = "A page of deliveries", body = Page<DeliveryView>), Unauthenticated, Missing, BadQuery))]
#[get("/api/v1/webhooks/deliveries")]
pub async fn list_alias(auth: Auth, query: web::Query<DeliveriesQuery>) -> Result<HttpResponse, ApiError> {
    list_answer(auth, query.into_inner(), None).await
}

/// One webhook's deliveries, filtered (`webhook_id` is the path's).
#[utoipa::path(operation_id = "deliveries_of_webhook", tag = "deliveries", security(("bearer" = [])),
    params(("id" = String, Path, description = "Webhook id"), DeliveriesQuery),
    responses((status = 200, description = "A page of deliveries", body = Page<DeliveryView>), Unauthenticated, Missing, BadQuery))]
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

/// One delivery with every attempt: request headers, response status and body, latency, error.
#[utoipa::path(operation_id = "deliveries_read", tag = "deliveries", security(("bearer" = [])), params(("id" = String, Path, description = "Delivery id")),
    responses((status = 200, description = "The delivery", body = DeliveryDetail), Unauthenticated, Missing))]
#[get("/api/v1/deliveries/{id}")]
pub async fn read(auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = delivery_id(&id)?;
    let (info, attempts) = deliveries::get(&*auth.node.ledger, auth.caller.account(), &id).await?;
    Ok(HttpResponse::Ok().json(DeliveryDetail {
        delivery: view(&info),
        attempts: attempts.iter().map(|a| attempt_view(a, &auth.node.keyring)).collect(),
    }))
}

/// Queue a dead delivery again, now, with fresh attempts (409 if it is not dead).
#[utoipa::path(operation_id = "deliveries_retry", tag = "deliveries", security(("bearer" = [])), params(("id" = String, Path, description = "Delivery id")),
    responses((status = 202, description = "Queued again", body = DeliveryView), Unauthenticated, Missing, Conflicting))]
#[post("/api/v1/deliveries/{id}/retry")]
pub async fn retry(auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = delivery_id(&id)?;
    let info = deliveries::retry(&*auth.node.ledger, auth.caller.account(), &id).await?;
    Ok(HttpResponse::Accepted().json(view(&info)))
}
