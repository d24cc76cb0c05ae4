//! `/api/v1/webhooks`: create, list, read, edit, delete, rotate the secret, recover dead
//! deliveries. The secret is in
//! the answer only on create and rotate; credential-like custom header values are masked.

use super::auth::Auth;
use super::error::ApiError;
use super::page::{self, Page, PageQuery};
use crate::deliveries;
use crate::error::DomainError;
use crate::listing::TimeWindow;
use crate::log::StatusRow;
use crate::model::{HealthState, Method, Webhook, WebhookId};
use crate::time::rfc3339;
use crate::webhooks::{self, Settings, WebhookInput};
use actix_web::{delete, get, patch, post, web, HttpResponse};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Map, Value};

/// A present `null` is `Some(None)`; an absent field is `None`.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(rename_all = "UPPERCASE")]
enum MethodBody {
    Post,
    Put,
    Patch,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookBody {
    name: Option<String>,
    description: Option<String>,
    url: Option<String>,
    events: Option<Vec<String>>,
    secret: Option<String>,
    is_active: Option<bool>,
    max_retries: Option<u32>,
    timeout: Option<u64>,
    method: Option<MethodBody>,
    headers: Option<Map<String, Value>>,
    signature_header: Option<String>,
    signature_prefix: Option<String>,
    ordered: Option<bool>,
    max_in_flight: Option<u32>,
    #[serde(default, deserialize_with = "nullable")]
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
            ordered: self.ordered,
            max_in_flight: self.max_in_flight,
            rate_limit: self.rate_limit,
        })
    }
}

fn settings(auth: &Auth) -> Settings {
    let c = &auth.engine.config;
    Settings {
        policy: auth.engine.target.clone(),
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

/// The webhook as the API shows it; `with_secret` only on create and rotate.
fn view(w: &Webhook, status: &StatusRow, with_secret: bool) -> Value {
    let headers: Map<String, Value> = w
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(if webhooks::is_secret_header(k) { "****".into() } else { v.clone() })))
        .collect();
    let method = match w.method {
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Patch => "PATCH",
    };
    let s = &status.status;
    let mut out = json!({
        "id": w.id.to_string(),
        "name": w.name,
        "description": w.description,
        "url": w.url,
        "events": w.events,
        "is_active": w.is_active,
        "max_retries": w.max_retries,
        "timeout": w.timeout_ms / 1000,
        "method": method,
        "headers": headers,
        "signature_header": w.signature_header,
        "signature_prefix": w.signature_prefix,
        "ordered": w.ordered,
        "max_in_flight": w.max_in_flight,
        "rate_limit": w.rate_limit,
        "created_at": rfc3339(w.created_at),
        "updated_at": rfc3339(w.updated_at),
        "status": {
            "state": state_name(s.state),
            "consecutive_failures": s.consecutive_failures,
            "last_attempt_at": s.last_attempt_at.map(rfc3339),
            "last_status_code": s.last_status_code,
            "last_error": s.last_error,
            "disabled_reason": s.disabled_reason,
            "circuit_retry_at": s.breaker_until.map(rfc3339),
            "pending": status.pending,
            "dead_letters": status.dead,
        },
    });
    if with_secret {
        if let (Some(map), Some(secret)) = (out.as_object_mut(), w.secrets.first()) {
            map.insert("secret".into(), Value::String(secret.value.clone()));
        }
    }
    out
}

fn webhook_id(text: &str) -> Result<WebhookId, ApiError> {
    WebhookId::parse(text).map_err(|_| ApiError::not_found())
}

#[post("/api/v1/webhooks")]
pub async fn create(auth: Auth, body: web::Json<WebhookBody>) -> Result<HttpResponse, ApiError> {
    let input = body.into_inner().into_input()?;
    let w = webhooks::create(&auth.engine.log, &settings(&auth), auth.caller.account(), input).await?;
    Ok(HttpResponse::Created().json(view(&w, &StatusRow::default(), true)))
}

#[get("/api/v1/webhooks")]
pub async fn list(auth: Auth, query: web::Query<PageQuery>) -> Result<HttpResponse, ApiError> {
    let (limit, cursor) = query.parse(|c| WebhookId::parse(c).ok())?;
    let items = webhooks::list(&auth.engine.log, auth.caller.account(), cursor.as_ref(), limit + 1);
    Ok(HttpResponse::Ok().json(Page::of(items, limit, |(w, _)| w.id.to_string(), |(w, s)| view(w, s, false))))
}

#[get("/api/v1/webhooks/{id}")]
pub async fn read(auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (w, s) = webhooks::get(&auth.engine.log, auth.caller.account(), &webhook_id(&id)?)?;
    Ok(HttpResponse::Ok().json(view(&w, &s, false)))
}

#[patch("/api/v1/webhooks/{id}")]
pub async fn edit(auth: Auth, id: web::Path<String>, body: web::Json<WebhookBody>) -> Result<HttpResponse, ApiError> {
    let id = webhook_id(&id)?;
    let input = body.into_inner().into_input()?;
    let w = webhooks::update(&auth.engine.log, &settings(&auth), auth.caller.account(), &id, input).await?;
    let (_, s) = webhooks::get(&auth.engine.log, auth.caller.account(), &id)?;
    Ok(HttpResponse::Ok().json(view(&w, &s, false)))
}

#[delete("/api/v1/webhooks/{id}")]
pub async fn remove(auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    webhooks::delete(&auth.engine.log, auth.caller.account(), &webhook_id(&id)?).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[post("/api/v1/webhooks/{id}/rotate-secret")]
pub async fn rotate_secret(auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = webhook_id(&id)?;
    let w = webhooks::rotate_secret(&auth.engine.log, &settings(&auth), auth.caller.account(), &id).await?;
    let (_, s) = webhooks::get(&auth.engine.log, auth.caller.account(), &id)?;
    Ok(HttpResponse::Ok().json(view(&w, &s, true)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestBody {
    event: Option<String>,
}

/// One signed delivery of a sample payload, now: 200 with what the receiver said.
#[post("/api/v1/webhooks/{id}/test")]
pub async fn test(auth: Auth, id: web::Path<String>, body: web::Json<TestBody>) -> Result<HttpResponse, ApiError> {
    let id = webhook_id(&id)?;
    let event = body.into_inner().event;
    let engine = &auth.engine;
    let outcome = webhooks::test_send(
        &engine.log,
        &engine.delivery,
        &engine.config.event_types,
        auth.caller.account(),
        &id,
        event,
    )
    .await?;
    Ok(HttpResponse::Ok().json(outcome))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoverBody {
    since: String,
    until: Option<String>,
}

/// Re-queues the webhook's dead deliveries whose events arrived in `[since, until]`.
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
    let (engine, account, webhook) = (auth.engine.clone(), auth.caller.account().clone(), id.clone());
    let dead = web::block(move || deliveries::dead_in_window(&engine.log, &account, &webhook, window))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    let requeued = deliveries::requeue(&auth.engine.log, &id, &dead).await?;
    Ok(HttpResponse::Accepted().json(json!({ "requeued": requeued })))
}
