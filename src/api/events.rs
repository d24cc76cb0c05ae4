//! `POST /api/v1/events`, `POST /api/v1/events/batch`, `GET /api/v1/events` and
//! `GET /api/v1/events/{id}`.
//!
//! Bodies are read as bytes and parsed here, so that `data` is taken as the raw JSON it
//! arrived as (kept byte for byte) and so that every malformed, oversized or mistyped body
//! gets the contract's answer.

use super::auth::Auth;
use super::deliveries::DeliveryView;
use super::error::ApiError;
use super::error::{BadBody, BadQuery, Conflicting, ErrorBody, Missing, RateLimited, Unauthenticated};
use super::page::{self, Page};
use crate::domain::error::DomainError;
use crate::domain::events::{self, EventFilter, EventInput, IngestRules, Ingested};
use crate::domain::listing::TimeWindow;
use crate::model::time::{parse_rfc3339, rfc3339};
use crate::model::EventId;
use crate::storage::EventIngested;
use actix_web::http::{header, StatusCode};
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

/// Most events in one batch.
pub const MAX_BATCH: usize = 1000;
/// Room for the envelope around `data` in a single-event body.
pub const ENVELOPE_BYTES: usize = 64 * 1024;

/// An event to deliver to every webhook of the account that subscribes to its name.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventBody {
    /// Lowercase words separated by `.` or `_`.
    #[schema(example = "lead.qualified")]
    event: String,
    /// The payload: a JSON object with no key twice, stored and delivered exactly as its
    /// bytes arrived.
    #[schema(value_type = Object, example = json!({"lead_id": "ld_123", "score": 87}))]
    data: Box<RawValue>,
    /// RFC 3339 UTC; the ingest time when absent.
    timestamp: Option<String>,
    /// Your own id of the event, kept and shown.
    id: Option<String>,
    /// At most 256 bytes (a lead id, say): a webhook with `"ordering": "key"` delivers the
    /// events of one key one at a time, in order.
    #[schema(example = "lead_789xyz")]
    ordering_key: Option<String>,
}

/// A batch: up to 1,000 items, each meant to be an [`EventBody`]. The schema does not hold
/// the items to that shape because the route does not: an item that breaks it is answered
/// with its own error in its slot, and the others go in.
pub struct BatchBody;

impl utoipa::PartialSchema for BatchBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, Object, SchemaType};
        ArrayBuilder::new()
            .items(Object::with_type(SchemaType::AnyValue))
            .max_items(Some(MAX_BATCH))
            .description(Some(
                "Up to 1,000 items, each meant to be an EventBody (`event`, `data`, `timestamp`?, `id`?); \
                 an item that is not one gets its own error in its slot of the answer.",
            ))
            .into()
    }
}

impl ToSchema for BatchBody {}

/// An accepted event.
#[derive(Serialize, ToSchema)]
pub struct IngestAnswer {
    #[schema(example = "evt_01JZ8YQ3N6V2K7T9R4M1X5C8D0")]
    id: String,
    event: String,
    /// Webhooks it will be delivered to.
    deliveries: usize,
}

/// One slot per event of the batch, in order: accepted, or why not.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum BatchSlot {
    Accepted(IngestAnswer),
    Refused(ErrorBody),
}

#[derive(Serialize, ToSchema)]
pub struct BatchAnswer {
    results: Vec<BatchSlot>,
}

/// An event as lists show it.
#[derive(Serialize, ToSchema)]
pub struct EventSummary {
    id: String,
    event: String,
    timestamp: String,
    created_at: String,
    external_id: Option<String>,
    ordering_key: Option<String>,
    delivery_count: usize,
}

/// An event with its payload and its deliveries.
#[derive(Serialize, ToSchema)]
pub struct EventDetail {
    #[serde(flatten)]
    summary: EventSummary,
    /// Exactly the bytes it arrived with.
    #[schema(value_type = Object)]
    data: Box<RawValue>,
    deliveries: Vec<DeliveryView>,
}

/// Reads the body up to `limit` bytes; more is a 413 in the contract's error format (actix's own
/// limit would answer in plain text). A declared `Content-Length` over the limit was refused
/// before this (see [`super::limits`]); one under it sizes the buffer once.
async fn read_body(req: &HttpRequest, mut payload: web::Payload, limit: usize) -> Result<web::Bytes, ApiError> {
    use futures_util::StreamExt;
    let too_large = || ApiError::from(DomainError::TooLarge(format!("body is larger than {limit} bytes")));
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut buf = web::BytesMut::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            if super::limits::is_timeout(&e) {
                ApiError::body_timeout()
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "malformed_body", e.to_string())
            }
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// `ingest_rate_limit`: 429 with `Retry-After` once the account's events per second are used.
fn rate_limit(auth: &Auth, events: usize) -> Result<(), ApiError> {
    let Some(limiter) = &auth.node.ingest_limiter else { return Ok(()) };
    limiter.take(auth.caller.account(), events).map_err(|secs| {
        let mut e = ApiError::from(DomainError::RateLimited("ingest rate limit reached for this account".into()));
        e.retry_after = Some(secs);
        e
    })
}

/// `min_free_disk`: 503 with `Retry-After` before anything is parsed or written (the body is
/// read first, within the body budget, so that the client gets to read the answer).
fn disk_room(auth: &Auth) -> Result<(), ApiError> {
    if auth.node.disk.is_low() {
        return Err(DomainError::LowOnDisk.into());
    }
    Ok(())
}

fn rules(auth: &Auth) -> IngestRules {
    let c = &auth.node.config;
    IngestRules {
        max_payload_bytes: c.max_payload_bytes as usize,
        idempotency_window_ms: c.idempotency_window.0.as_millis() as u64,
        strict_events: c.strict_events,
        known_events: c.event_types.iter().map(|t| t.name.clone()).collect(),
        max_pending_per_webhook: c.max_pending_per_webhook,
    }
}

fn require_json(req: &HttpRequest) -> Result<(), ApiError> {
    let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/json") || mime.to_ascii_lowercase().ends_with("+json") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send Content-Type: application/json",
        ))
    }
}

fn malformed(e: serde_json::Error) -> ApiError {
    if e.is_data() {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", crate::domain::error::json_message(&e))
    } else {
        ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", crate::domain::error::json_message(&e))
    }
}

/// Checks one parsed event; `data`, a JSON object with no key twice, is kept as its bytes
/// arrived.
/// `order` is its place in its batch, from 1 (0 for a single event).
fn parse_event(body: EventBody, idempotency_key: Option<String>, order: u16) -> Result<EventInput, DomainError> {
    events::check_data(body.data.get())?;
    let data = body.data.get().as_bytes().to_vec();
    let timestamp = match &body.timestamp {
        None => None,
        Some(t) => Some(parse_rfc3339(t).ok_or_else(|| {
            DomainError::invalid("timestamp", "must be an RFC 3339 UTC time like 2025-01-20T10:30:00Z")
        })?),
    };
    Ok(EventInput {
        event: body.event,
        data,
        timestamp,
        external_id: body.id,
        idempotency_key,
        order,
        ordering_key: body.ordering_key,
    })
}

/// Ingests one parsed event and counts it (a replay is not a new event).
async fn ingest_one(auth: &Auth, rules: &IngestRules, input: EventInput) -> Result<Ingested, ApiError> {
    let done = events::ingest(&*auth.node.ledger, rules, auth.caller.account(), input).await?;
    if !done.replayed {
        auth.node.metrics.event_ingested(&done.event);
    }
    Ok(done)
}

fn answer(i: &Ingested) -> IngestAnswer {
    IngestAnswer { id: i.id.to_string(), event: i.event.clone(), deliveries: i.deliveries }
}

/// Ingest one event: durable before the answer.
///
/// An `Idempotency-Key` seen within `idempotency_window` answers 200 with the first answer
/// instead of ingesting again.
#[utoipa::path(operation_id = "events_ingest", tag = "events", security(("bearer" = [])), request_body = EventBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retried request safe")),
    responses(
        (status = 202, description = "Accepted and durable", body = IngestAnswer),
        (status = 200, description = "A replay of an earlier request with the same Idempotency-Key", body = IngestAnswer),
        Unauthenticated, BadBody, RateLimited, Conflicting))]
#[post("/api/v1/events")]
pub async fn ingest(auth: Auth, req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    require_json(&req)?;
    rate_limit(&auth, 1)?;
    let rules = rules(&auth);
    let body = read_body(&req, payload, rules.max_payload_bytes + ENVELOPE_BYTES).await?;
    // After the body: a client still sending it would see a broken pipe, not the answer.
    disk_room(&auth)?;
    let key = match req.headers().get("Idempotency-Key") {
        None => None,
        Some(v) => {
            Some(v.to_str().map_err(|_| DomainError::invalid("Idempotency-Key", "must be visible ASCII"))?.to_owned())
        }
    };
    let parsed: EventBody = serde_json::from_slice(&body).map_err(malformed)?;
    let input = parse_event(parsed, key, 0)?;
    let done = ingest_one(&auth, &rules, input).await?;
    let status = if done.replayed { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok(HttpResponse::build(status).json(answer(&done)))
}

/// Ingest up to 1,000 events; each is accepted or refused on its own.
///
/// The body must be a JSON array of at most 1,000 items; each item is then validated and
/// ingested by itself, so an item that breaks the event schema gets its own error in
/// `results` (and the others go in) rather than a 422 for the whole batch.
#[utoipa::path(operation_id = "events_ingest_batch", tag = "events", security(("bearer" = [])), request_body = BatchBody,
    responses((status = 202, description = "One result per event, in order", body = BatchAnswer),
        Unauthenticated, BadBody, RateLimited))]
#[post("/api/v1/events/batch")]
pub async fn ingest_batch(auth: Auth, req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    require_json(&req)?;
    let body = read_body(&req, payload, auth.node.config.max_batch_bytes as usize).await?;
    disk_room(&auth)?;
    let items: Vec<&RawValue> = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_batch",
            format!("the body must be a JSON array of events: {}", crate::domain::error::json_message(&e)),
        )
    })?;
    if items.len() > MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "batch_too_large",
            format!("at most {MAX_BATCH} events per batch"),
        ));
    }
    rate_limit(&auth, items.len())?;
    let rules = rules(&auth);
    // Every valid item is appended concurrently, so they share group commits.
    // Each item's place (from 1; at most MAX_BATCH, so it fits) goes into its id, so one
    // batch's ids sort in batch order.
    let (auth, rules) = (&auth, &rules);
    let results = futures_util::future::join_all(items.iter().zip(1u16..).map(|(raw, order)| async move {
        let parsed: EventBody = serde_json::from_str(raw.get()).map_err(malformed)?;
        ingest_one(auth, rules, parse_event(parsed, None, order)?).await
    }))
    .await;
    let results = results
        .into_iter()
        .map(|r| match r {
            Ok(i) => BatchSlot::Accepted(answer(&i)),
            Err(e) => BatchSlot::Refused(e.body()),
        })
        .collect();
    Ok(HttpResponse::Accepted().json(BatchAnswer { results }))
}

/// An event as lists show it (without `data`, which may be a mebibyte per event).
fn summary(id: &EventId, e: &EventIngested) -> EventSummary {
    EventSummary {
        id: id.to_string(),
        event: e.event.clone(),
        timestamp: rfc3339(e.timestamp),
        created_at: rfc3339(e.at),
        external_id: e.external_id.clone(),
        ordering_key: e.ordering_key.clone(),
        delivery_count: e.webhooks.len(),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only events of this name.
    event: Option<String>,
    /// Ingested at or after this RFC 3339 time.
    since: Option<String>,
    /// Ingested at or before this RFC 3339 time.
    until: Option<String>,
    /// Items per page, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The account's events, newest first.
#[utoipa::path(operation_id = "events_list", tag = "events", security(("bearer" = [])), params(EventsQuery),
    responses((status = 200, description = "A page of events", body = Page<EventSummary>), Unauthenticated, BadQuery))]
#[get("/api/v1/events")]
pub async fn list(auth: Auth, query: web::Query<EventsQuery>) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let window = TimeWindow::new(page::time("since", &query.since)?, page::time("until", &query.until)?)?;
    let filter = EventFilter { event: query.event.clone(), window };
    let limit = page::limit(query.limit)?;
    let (ledger, account) = (&*auth.node.ledger, auth.caller.account());
    let listing = events::list(ledger, account, &filter, page::cursor(&query.cursor), limit).await?;
    let data = listing.items.iter().map(|(id, e)| summary(id, e)).collect();
    Ok(HttpResponse::Ok().json(Page::new(data, listing.next_cursor)))
}

/// One event with its `data` exactly as it arrived and every delivery it owes.
#[utoipa::path(operation_id = "events_read", tag = "events", security(("bearer" = [])), params(("id" = String, Path, description = "Event id")),
    responses((status = 200, description = "The event", body = EventDetail), Unauthenticated, Missing))]
#[get("/api/v1/events/{id}")]
pub async fn read(auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = EventId::parse(&id).map_err(|_| ApiError::not_found())?;
    let ledger = &*auth.node.ledger;
    let (seq, mut e) = events::get(ledger, auth.caller.account(), &id).await?;
    // Stored data is JSON that parsed at ingest; anything else would be a damaged record.
    // (Taken, not copied: nothing below reads it.)
    let data = String::from_utf8(std::mem::take(&mut e.data))
        .ok()
        .and_then(|text| RawValue::from_string(text).ok())
        .ok_or_else(|| ApiError::from(DomainError::Storage("the event's data is damaged".into())))?;
    let deliveries =
        crate::domain::deliveries::of_event(ledger, seq, &e).await?.iter().map(super::deliveries::view).collect();
    Ok(HttpResponse::Ok().json(EventDetail { summary: summary(&id, &e), data, deliveries }))
}
