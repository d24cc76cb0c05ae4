//! `/api/v1/webhooks`: create, list, read, edit, delete, rotate the secret, recover dead
//! deliveries. The secret is in
//! the answer only on create and rotate; credential-like custom header values are masked.

use super::auth::Auth;
use super::error::ApiError;
use super::error::{BadBody, BadQuery, Conflicting, Missing, Unauthenticated};
use super::page::{self, Page, PageQuery};
use crate::domain::deliveries;
use crate::domain::error::DomainError;
use crate::domain::listing::TimeWindow;
use crate::domain::webhooks::{self, Settings, WebhookInput};
use crate::engine::TestOutcome;
use crate::model::time::rfc3339;
use crate::model::{BodyFormat, DeliveryOrder, HealthState, Method, Webhook, WebhookId};
use crate::security::header_rules;
use crate::security::seal::Keyring;
use crate::storage::StatusRow;
use actix_web::{delete, get, patch, post, web, HttpResponse};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// A present `null` is `Some(None)`; an absent field is `None`.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
enum MethodBody {
    Post,
    Put,
    Patch,
}

/// In what order deliveries go.
#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum OrderingBody {
    /// Due order, up to `max_in_flight` at once.
    None,
    /// One attempt at a time, in event order.
    Strict,
}

/// How the body is written on the wire.
#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum BodyFormatBody {
    /// The contract's form: `data` exactly as it arrived.
    Original,
    /// Exactly what `JSON.stringify(JSON.parse(body))` gives in JavaScript, signed as such.
    Javascript,
}

/// A webhook to create (`name`, `url` and `events` required) or the fields to change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookBody {
    #[schema(example = "CRM sync")]
    name: Option<String>,
    description: Option<String>,
    /// `https://` only (plain http and private addresses only with `--dev`).
    #[schema(example = "https://crm.example.com/hooks/herald")]
    url: Option<String>,
    /// Exact event names, `family.*` prefixes, or `*`.
    #[schema(example = json!(["lead.qualified", "email.*"]))]
    events: Option<Vec<String>>,
    /// At least 16 characters; generated (`whsec_…`) when absent.
    secret: Option<String>,
    is_active: Option<bool>,
    /// Retries after the first attempt, 0–20.
    #[schema(example = 5, minimum = 0, maximum = 20)]
    max_retries: Option<u32>,
    /// Per-attempt timeout in seconds, 1–120.
    #[schema(example = 30, minimum = 1, maximum = 120)]
    timeout: Option<u64>,
    method: Option<MethodBody>,
    /// Custom request headers (string values; reserved names refused).
    #[schema(value_type = Option<HashMap<String, String>>)]
    headers: Option<Map<String, Value>>,
    signature_header: Option<String>,
    signature_prefix: Option<String>,
    /// `none` (default): due order, up to `max_in_flight` at once; `strict`: one attempt
    /// at a time, in event order. (Read as a string and matched here, so that a wrong type
    /// is a 422 naming the field like any other bad value.)
    #[schema(value_type = Option<OrderingBody>)]
    ordering: Option<Value>,
    /// Deprecated alias: `true` is `"ordering": "strict"`, `false` is `"none"`.
    ordered: Option<bool>,
    /// A condition on the envelope (`event`, `timestamp`, `data`) an event must pass,
    /// besides its name, to be delivered; `null` removes it. A field (dotted path or nested
    /// objects) equal to a bare value, or containing it if it is an array; operators `$eq
    /// $neq $gt $gte $lt $lte $in $nin $exist`; combinators `$and $or $not`. Numbers
    /// compare exactly as decimals. At most 4 KiB, 8 levels, 64 conditions (422 naming the
    /// problem). See the README's "Content filters".
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Object>, nullable, example = json!({"data.qualityScore": {"$gte": 80}}))]
    filter: Option<Option<Value>>,
    /// `original` (default): `data` as it arrived; `javascript`: the body as
    /// `JSON.stringify(JSON.parse(body))` writes it, for receivers that verify the signature
    /// over a re-serialized body (`JSON.stringify(req.body)` after `express.json()`).
    #[schema(value_type = Option<BodyFormatBody>)]
    body_format: Option<Value>,
    /// Attempts on the wire at once, 1–256.
    #[schema(example = 16, minimum = 1, maximum = 256)]
    max_in_flight: Option<u32>,
    /// Attempts per second, 1–100,000; `null` for none.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u32>, nullable, minimum = 1, maximum = 100_000)]
    rate_limit: Option<Option<u32>>,
}

impl WebhookBody {
    fn into_input(self) -> Result<WebhookInput, DomainError> {
        let headers = match self.headers {
            None => None,
            Some(map) => Some(
                map.into_iter()
                    .map(|(k, v)| match v {
                        Value::String(s) => Ok((k, s)),
                        _ => Err(DomainError::invalid("headers", format!("the value of {k} must be a string"))),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let ordering = self.ordering.map(|v| match v.as_str() {
            Some("none") => Ok(OrderingBody::None),
            Some("strict") => Ok(OrderingBody::Strict),
            _ => Err(DomainError::invalid("ordering", "must be \"none\" or \"strict\"")),
        });
        let body_format = self.body_format.map(|v| match v.as_str() {
            Some("original") => Ok(BodyFormat::Original),
            Some("javascript") => Ok(BodyFormat::Javascript),
            _ => Err(DomainError::invalid("body_format", "must be \"original\" or \"javascript\"")),
        });
        let ordering = match (ordering.transpose()?, self.ordered) {
            (Some(o), Some(alias)) if matches!(o, OrderingBody::Strict) != alias => {
                return Err(DomainError::invalid("ordered", "contradicts `ordering`; send only `ordering`"));
            }
            (Some(OrderingBody::None), _) | (None, Some(false)) => Some(DeliveryOrder::None),
            (Some(OrderingBody::Strict), _) | (None, Some(true)) => Some(DeliveryOrder::Strict),
            (None, None) => None,
        };
        Ok(WebhookInput {
            name: self.name,
            description: self.description,
            url: self.url,
            events: self.events,
            secret: self.secret,
            is_active: self.is_active,
            max_retries: self.max_retries,
            timeout_secs: self.timeout,
            method: self.method.map(|m| match m {
                MethodBody::Post => Method::Post,
                MethodBody::Put => Method::Put,
                MethodBody::Patch => Method::Patch,
            }),
            headers,
            signature_header: self.signature_header,
            signature_prefix: self.signature_prefix,
            ordering,
            max_in_flight: self.max_in_flight,
            rate_limit: self.rate_limit,
            filter: self.filter,
            body_format: body_format.transpose()?,
        })
    }
}

fn settings(auth: &Auth) -> Settings {
    let c = &auth.node.config;
    Settings {
        policy: auth.node.target.clone(),
        keyring: auth.node.keyring.clone(),
        default_max_retries: c.default_max_retries,
        default_timeout_ms: c.default_timeout.0.as_millis() as u64,
        max_per_account: c.max_webhooks_per_account,
        secret_overlap_ms: c.secret_overlap.0.as_millis() as u64,
    }
}

fn state_name(s: HealthState) -> &'static str {
    match s {
        HealthState::Healthy => "healthy",
        HealthState::Failing => "failing",
        HealthState::CircuitOpen => "circuit_open",
        HealthState::Disabled => "disabled",
    }
}

/// A webhook as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct WebhookView {
    #[schema(example = "wh_01JZ8YQ3N6V2K7T9R4M1X5C8D0")]
    id: String,
    name: String,
    description: String,
    url: String,
    events: Vec<String>,
    is_active: bool,
    max_retries: u32,
    /// Seconds.
    timeout: u64,
    #[schema(example = "POST")]
    method: &'static str,
    /// Credential-like values (authorization, tokens, keys) shown as `****`.
    #[schema(value_type = HashMap<String, String>)]
    headers: Map<String, Value>,
    signature_header: String,
    signature_prefix: String,
    /// `none` or `strict`.
    #[schema(example = "none")]
    ordering: &'static str,
    /// `ordering` is `strict` (kept for clients of the older field).
    ordered: bool,
    max_in_flight: u32,
    rate_limit: Option<u32>,
    /// The content filter, as it was set; `null` if none.
    #[schema(value_type = Option<Object>)]
    filter: Option<Value>,
    /// `original` or `javascript`.
    #[schema(example = "original")]
    body_format: &'static str,
    created_at: String,
    updated_at: String,
    status: WebhookStatusView,
    /// The signing secret: only in the answers to create and rotate-secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

/// A webhook's health (contract §5).
#[derive(Serialize, ToSchema)]
pub struct WebhookStatusView {
    /// `healthy`, `failing`, `circuit_open`, `disabled` (by Herald: 410 Gone or
    /// `disable_after`; a `PATCH` with `"is_active": true` enables it), or `paused`
    /// (`is_active` false: new events skip it).
    #[schema(example = "healthy")]
    state: &'static str,
    consecutive_failures: u32,
    last_attempt_at: Option<String>,
    last_status_code: Option<u16>,
    last_error: Option<String>,
    disabled_reason: Option<String>,
    /// While the circuit is open: when the next probe may go out.
    circuit_retry_at: Option<String>,
    pending: u64,
    dead_letters: u64,
}

/// The webhook as the API shows it; `with_secret` only on create and rotate.
fn view(w: &Webhook, status: &StatusRow, with_secret: bool, keyring: &Keyring) -> WebhookView {
    let headers: Map<String, Value> = w
        .headers
        .iter()
        .map(|(k, v)| {
            // A value this node cannot open is shown masked, like a credential.
            let shown = match header_rules::is_secret_header(k) {
                true => None,
                false => keyring.open(v).ok(),
            };
            (k.clone(), Value::String(shown.unwrap_or_else(|| header_rules::MASK.into())))
        })
        .collect();
    let method = match w.method {
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Patch => "PATCH",
    };
    let s = &status.status;
    WebhookView {
        id: w.id.to_string(),
        name: w.name.clone(),
        description: w.description.clone(),
        url: header_rules::masked_url(&w.url),
        events: w.events.clone(),
        is_active: w.is_active,
        max_retries: w.max_retries,
        timeout: w.timeout_ms / 1000,
        method,
        headers,
        signature_header: w.signature_header.clone(),
        signature_prefix: w.signature_prefix.clone(),
        ordering: w.ordering.as_str(),
        ordered: w.is_strict(),
        max_in_flight: w.max_in_flight,
        rate_limit: w.rate_limit,
        filter: w.filter.as_ref().and_then(|f| serde_json::from_str(f.text()).ok()),
        body_format: w.body_format.as_str(),
        created_at: rfc3339(w.created_at),
        updated_at: rfc3339(w.updated_at),
        status: WebhookStatusView {
            state: match (s.state, w.is_active) {
                (HealthState::Disabled, _) => "disabled",
                (_, false) => "paused",
                (state, true) => state_name(state),
            },
            consecutive_failures: s.consecutive_failures,
            last_attempt_at: s.last_attempt_at.map(rfc3339),
            last_status_code: s.last_status_code,
            last_error: s.last_error.clone(),
            disabled_reason: s.disabled_reason.clone(),
            circuit_retry_at: s.breaker_until.map(rfc3339),
            pending: status.pending,
            dead_letters: status.dead,
        },
        secret: if with_secret { w.secrets.first().and_then(|s| keyring.open(&s.value).ok()) } else { None },
    }
}

fn webhook_id(text: &str) -> Result<WebhookId, ApiError> {
    WebhookId::parse(text).map_err(|_| ApiError::not_found())
}

/// Create a webhook. The answer carries its signing secret, shown only here.
#[utoipa::path(operation_id = "webhooks_create", tag = "webhooks", security(("bearer" = [])),
    responses((status = 201, description = "Created", body = WebhookView), Unauthenticated, BadBody, Conflicting))]
#[post("/api/v1/webhooks")]
pub async fn create(auth: Auth, body: web::Json<WebhookBody>) -> Result<HttpResponse, ApiError> {
    let input = body.into_inner().into_input()?;
    let w = webhooks::create(&*auth.node.ledger, &settings(&auth), auth.caller.account(), input).await?;
    Ok(HttpResponse::Created().json(view(&w, &StatusRow::default(), true, &auth.node.keyring)))
}

/// The account's webhooks with their health.
#[utoipa::path(operation_id = "webhooks_list", tag = "webhooks", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, description = "A page of webhooks", body = Page<WebhookView>), Unauthenticated, BadQuery))]
#[get("/api/v1/webhooks")]
pub async fn list(auth: Auth, query: web::Query<PageQuery>) -> Result<HttpResponse, ApiError> {
    let (limit, cursor) = query.parse(|c| WebhookId::parse(c).ok())?;
    let items = webhooks::list(&*auth.node.ledger, auth.caller.account(), cursor.as_ref(), limit + 1);
    Ok(HttpResponse::Ok().json(Page::of(
        items,
        limit,
        |(w, _)| w.id.to_string(),
        |(w, s)| view(w, s, false, &auth.node.keyring),
    )))
}

/// One webhook with its health.
#[utoipa::path(operation_id = "webhooks_read", tag = "webhooks", security(("bearer" = [])), params(("id" = String, Path, description = "Webhook id")),
    responses((status = 200, description = "The webhook", body = WebhookView), Unauthenticated, Missing))]
#[get("/api/v1/webhooks/{id}")]
pub async fn read(auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (w, s) = webhooks::get(&*auth.node.ledger, auth.caller.account(), &webhook_id(&id)?)?;
    Ok(HttpResponse::Ok().json(view(&w, &s, false, &auth.node.keyring)))
}

/// Change some fields of a webhook; the delivery engine sees the change at once.
#[utoipa::path(operation_id = "webhooks_edit", tag = "webhooks", security(("bearer" = [])), params(("id" = String, Path, description = "Webhook id")),
    responses((status = 200, description = "The changed webhook", body = WebhookView), Unauthenticated, Missing, BadBody, Conflicting))]
#[patch("/api/v1/webhooks/{id}")]
pub async fn edit(auth: Auth, id: web::Path<String>, body: web::Json<WebhookBody>) -> Result<HttpResponse, ApiError> {
    let id = webhook_id(&id)?;
    let input = body.into_inner().into_input()?;
    let w = webhooks::update(&*auth.node.ledger, &settings(&auth), auth.caller.account(), &id, input).await?;
    let (_, s) = webhooks::get(&*auth.node.ledger, auth.caller.account(), &id)?;
    Ok(HttpResponse::Ok().json(view(&w, &s, false, &auth.node.keyring)))
}

/// Delete a webhook; its queued deliveries die with reason `deleted`.
#[utoipa::path(operation_id = "webhooks_remove", tag = "webhooks", security(("bearer" = [])), params(("id" = String, Path, description = "Webhook id")),
    responses((status = 204, description = "Deleted"), Unauthenticated, Missing))]
#[delete("/api/v1/webhooks/{id}")]
pub async fn remove(auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    webhooks::delete(&*auth.node.ledger, auth.caller.account(), &webhook_id(&id)?).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Issue a new signing secret, shown only in this answer.
///
/// The previous secret keeps signing Standard Webhooks signatures for `secret_overlap`.
#[utoipa::path(operation_id = "webhooks_rotate_secret", tag = "webhooks", security(("bearer" = [])), params(("id" = String, Path, description = "Webhook id")),
    responses((status = 200, description = "The webhook with its new secret", body = WebhookView), Unauthenticated, Missing))]
#[post("/api/v1/webhooks/{id}/rotate-secret")]
pub async fn rotate_secret(auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = webhook_id(&id)?;
    let w = webhooks::rotate_secret(&*auth.node.ledger, &settings(&auth), auth.caller.account(), &id).await?;
    let (_, s) = webhooks::get(&*auth.node.ledger, auth.caller.account(), &id)?;
    Ok(HttpResponse::Ok().json(view(&w, &s, true, &auth.node.keyring)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestBody {
    /// Event name of the sample (its configured sample, else `{"test":true}`).
    #[schema(example = "lead.qualified")]
    event: Option<String>,
}

/// What a test send found.
#[derive(Serialize, ToSchema)]
pub struct TestAnswer {
    #[serde(flatten)]
    outcome: TestOutcome,
    /// Whether the sample passes the webhook's content filter (`null`: it has none). The
    /// test goes out either way; a live event that fails the filter is not delivered.
    filter_passed: Option<bool>,
}

/// One signed delivery of a sample payload, now, whatever the breaker says; not recorded.
#[utoipa::path(operation_id = "webhooks_test", tag = "webhooks", security(("bearer" = [])), params(("id" = String, Path, description = "Webhook id")),
    responses((status = 200, description = "What the receiver answered", body = TestAnswer), Unauthenticated, Missing, BadBody))]
#[post("/api/v1/webhooks/{id}/test")]
pub async fn test(auth: Auth, id: web::Path<String>, body: web::Json<TestBody>) -> Result<HttpResponse, ApiError> {
    let id = webhook_id(&id)?;
    let event = body.into_inner().event;
    let node = &auth.node;
    let (event, data) =
        webhooks::test_sample(&*node.ledger, &node.config.event_types, auth.caller.account(), &id, event)?;
    let (webhook, _) = webhooks::get(&*node.ledger, auth.caller.account(), &id)?;
    let filter_passed = webhooks::sample_passes(&webhook, &event, &data, crate::model::now_millis());
    // `None`: the webhook went (deleted) meanwhile, or the node is shutting down.
    let outcome = node.delivery.test_send(&id, event, data).await.ok_or(DomainError::NotFound)?;
    Ok(HttpResponse::Ok().json(TestAnswer { outcome, filter_passed }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverBody {
    /// RFC 3339 UTC time.
    #[schema(example = "2025-01-20T10:30:00Z")]
    since: String,
    until: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Requeued {
    /// Dead deliveries queued again, with fresh attempts and TTL.
    requeued: u64,
}

/// Re-queue the webhook's dead deliveries whose events arrived in `[since, until]`.
#[utoipa::path(operation_id = "webhooks_recover", tag = "webhooks", security(("bearer" = [])), params(("id" = String, Path, description = "Webhook id")),
    responses((status = 202, description = "Re-queued", body = Requeued), Unauthenticated, Missing, BadBody))]
#[post("/api/v1/webhooks/{id}/recover")]
pub async fn recover(
    auth: Auth,
    id: web::Path<String>,
    body: web::Json<RecoverBody>,
) -> Result<HttpResponse, ApiError> {
    let id = webhook_id(&id)?;
    let body = body.into_inner();
    let since = page::time("since", &Some(body.since))?.ok_or_else(|| DomainError::invalid("since", "is required"))?;
    let window = TimeWindow::new(Some(since), page::time("until", &body.until)?)?;
    let dead = deliveries::dead_in_window(&*auth.node.ledger, auth.caller.account(), &id, window).await?;
    let requeued = deliveries::requeue(&*auth.node.ledger, &id, &dead).await?;
    Ok(HttpResponse::Accepted().json(Requeued { requeued }))
}
