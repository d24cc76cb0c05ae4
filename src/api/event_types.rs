//! `GET /api/v1/event-types`: configured event types plus the names the account has sent.

use super::auth::Auth;
use super::error::ApiError;
use super::error::{BadQuery, Unauthenticated};
use super::page::{self, Page};
use crate::domain::event_types;
use actix_web::{get, web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventTypesQuery {
    /// Items per page, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// An event type: configured in `event_types`, or a name the account has sent.
#[derive(Serialize, ToSchema)]
pub struct EventTypeView {
    #[schema(example = "lead.qualified")]
    name: String,
    description: Option<String>,
    /// The configured sample payload (what a test send delivers).
    #[schema(value_type = Option<Object>)]
    sample: Option<Value>,
    configured: bool,
    /// The account has sent events of this name.
    sent: bool,
}

/// The event catalog: configured types and the names the account sent.
#[utoipa::path(operation_id = "event_types_list", tag = "events", security(("bearer" = [])), params(EventTypesQuery),
    responses((status = 200, description = "A page of event types", body = Page<EventTypeView>), Unauthenticated, BadQuery))]
#[get("/api/v1/event-types")]
pub async fn list(auth: Auth, query: web::Query<EventTypesQuery>) -> Result<HttpResponse, ApiError> {
    let limit = page::limit(query.limit)?;
    let listing = event_types::list(
        &*auth.node.ledger,
        &auth.node.config.event_types,
        auth.caller.account(),
        page::cursor(&query.cursor),
        limit,
    )
    .await?;
    let data = listing
        .items
        .iter()
        .map(|t| EventTypeView {
            name: t.name.clone(),
            description: t.description.clone(),
            sample: t.sample.as_ref().and_then(|s| serde_json::to_value(s).ok()),
            configured: t.configured,
            sent: t.sent,
        })
        .collect();
    Ok(HttpResponse::Ok().json(Page::new(data, listing.next_cursor)))
}
