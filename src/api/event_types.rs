//! `GET /api/v1/event-types`: configured event types plus the names the account has sent.

use super::auth::Auth;
use super::error::ApiError;
use super::page::{self, Page};
use crate::event_types;
use actix_web::{get, web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTypesQuery {
    limit: Option<i64>,
    cursor: Option<String>,
}

#[get("/api/v1/event-types")]
pub async fn list(auth: Auth, query: web::Query<EventTypesQuery>) -> Result<HttpResponse, ApiError> {
    let limit = page::limit(query.limit)?;
    let listing = event_types::list(
        &auth.engine.log,
        &auth.engine.config.event_types,
        auth.caller.account(),
        page::cursor(&query.cursor),
        limit,
    )?;
    let data: Vec<Value> = listing
        .items
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "description": t.description,
                "sample": t.sample.as_ref().and_then(|s| serde_json::to_value(s).ok()),
                "configured": t.configured,
                "sent": t.sent,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(Page::new(data, listing.next_cursor)))
}
