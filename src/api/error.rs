//! The one place where failures become HTTP answers (contract §3): always
//! `{"error": {"code", "message", "field"?}}` with the documented status, never a bare 500.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, ToSchema};

/// How often a storage failure that repeats with every request is logged.
const STORAGE_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
    /// The `Allow` header of a 405.
    pub allow: Option<String>,
}

/// Every error answer: `{"error": {...}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_field`, `not_found`, `rate_limited`.
    code: String,
    /// What went wrong, for a person.
    message: String,
    /// The request field at fault, for 422 answers about one field.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

/// The error answers an operation may give, documented by status (`responses(...)` of
/// `utoipa::path` takes these beside the success answer).
macro_rules! error_answers {
    ($($(#[$doc:meta])* $name:ident: $($status:literal => $what:literal),+;)*) => {$(
        $(#[$doc])*
        pub struct $name;
        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                error_responses(&[$(($status, $what)),+])
            }
        }
    )*};
}

fn error_responses(answers: &[(&str, &str)]) -> BTreeMap<String, RefOr<Response>> {
    answers
        .iter()
        .map(|(status, what)| {
            let content = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .example(Some(example_for(status)))
                .build();
            let response = ResponseBuilder::new().description(*what).content("application/json", content).build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

/// A realistic error answer for a documented status (the codes `From<DomainError>` and the
/// body and query handlers give it).
fn example_for(status: &str) -> serde_json::Value {
    let (code, message, field) = match status {
        "400" => ("malformed_json", "expected `,` or `}` at line 1 column 19", None),
        "401" => ("unauthorized", "missing or invalid credentials", None),
        "403" => ("forbidden", "this route needs the admin token", None),
        "404" => ("not_found", "no such resource", None),
        "408" => ("body_timeout", "the request body did not arrive within body_read_timeout", None),
        "409" => ("conflict", "this idempotency key was used with a different request", None),
        "413" => ("payload_too_large", "body is larger than 16777216 bytes", None),
        "415" => ("unsupported_media_type", "send Content-Type: application/json", None),
        "422" => ("invalid_field", "must be 0–20", Some("max_retries")),
        "429" => ("rate_limited", "ingest rate limit reached for this account", None),
        "503" => ("not_ready", "Herald is recovering its log", None),
        _ => ("error", "see the status", None),
    };
    let mut error = serde_json::json!({ "code": code, "message": message });
    if let Some(f) = field {
        error["field"] = serde_json::Value::String(f.into());
    }
    serde_json::json!({ "error": error })
}

error_answers! {
    /// Every authenticated route.
    Unauthenticated:
        "401" => "No bearer token, or one that is not a live API key or the admin token",
        "503" => "Recovering its log, shutting down, storage failing, (ingest) below min_free_disk, too many connections, or request bodies filling max_body_memory; see Retry-After";
    /// Admin-only routes, for an API key.
    AdminOnly: "403" => "Only the admin token may call this route";
    /// Routes naming a resource that may not exist (or belongs to another account).
    Missing: "404" => "No such resource in the caller's account";
    /// Routes taking a JSON body.
    BadBody:
        "400" => "The body is not well-formed JSON",
        "408" => "The body did not arrive within body_read_timeout",
        "413" => "The body is larger than allowed",
        "415" => "Content-Type is not application/json",
        "422" => "A field is missing, of the wrong type or out of range (`field` names it)";
    /// Routes taking query parameters.
    BadQuery: "422" => "A query parameter is malformed or out of range (`field` names it)";
    /// Ingest, over `ingest_rate_limit`.
    RateLimited: "429" => "Over the account's ingest rate limit (Retry-After)";
    /// Routes whose action may conflict with the resource's state or a limit.
    Conflicting: "409" => "The resource's state or a configured limit forbids this";
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), field: None, retry_after: None, allow: None }
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    pub fn not_ready() -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "Herald is recovering its log")
        }
    }

    /// A method the path does not take; `allow` lists those it does.
    pub fn method_not_allowed(method: &str, allow: String) -> Self {
        Self {
            allow: Some(allow.clone()),
            ..Self::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", format!("{method} is not one of {allow}"))
        }
    }

    /// A body that did not arrive within `body_read_timeout`.
    pub fn body_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "the request body did not arrive within body_read_timeout",
        )
    }

    /// `/readyz` while the log takes no writes (or ingest is refused for space).
    pub fn writes_failing(message: String) -> Self {
        Self {
            retry_after: Some(crate::node::disk::RETRY_AFTER_SECS),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "writes_failing", message)
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The JSON the answer carries (also one failed slot of a batch).
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail { code: self.code.into(), message: self.message.clone(), field: self.field.clone() },
        }
    }
}

impl From<crate::domain::error::DomainError> for ApiError {
    fn from(e: crate::domain::error::DomainError) -> Self {
        use crate::domain::error::DomainError as D;
        let message = e.to_string();
        match e {
            D::Unauthenticated => Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message),
            D::Forbidden => Self::new(StatusCode::FORBIDDEN, "forbidden", message),
            D::NotFound => Self::not_found(),
            D::Conflict(_) => Self::new(StatusCode::CONFLICT, "conflict", message),
            D::Limit(_) => Self::new(StatusCode::CONFLICT, "limit_reached", message),
            D::Invalid { field, message } => {
                Self { field: Some(field), ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message) }
            }
            D::TooLarge(_) => Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message),
            D::RateLimited(_) => {
                Self { retry_after: Some(1), ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message) }
            }
            D::LowOnDisk => Self {
                retry_after: Some(crate::node::disk::RETRY_AFTER_SECS),
                ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "low_on_disk", message)
            },
            D::Storage(_) => {
                // A failing disk fails every request: one line per interval, not one each.
                static LOGGED: crate::telemetry::Every = crate::telemetry::Every::new(STORAGE_LOG_EVERY);
                if let Some(held_back) = LOGGED.due(crate::model::now_millis()) {
                    tracing::error!(error = %message, held_back, "storage failure answering requests");
                }
                Self {
                    retry_after: Some(1),
                    ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", message)
                }
            }
            D::OutcomeUnknown(_) => {
                static LOGGED: crate::telemetry::Every = crate::telemetry::Every::new(STORAGE_LOG_EVERY);
                if let Some(held_back) = LOGGED.due(crate::model::now_millis()) {
                    tracing::error!(error = %message, held_back, "storage failure: outcome of writes unknown");
                }
                Self {
                    retry_after: Some(1),
                    ..Self::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "outcome_unknown",
                        format!("{message}; send it again with the same Idempotency-Key"),
                    )
                }
            }
            D::Closed => {
                Self { retry_after: Some(1), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message) }
            }
        }
    }
}

/// Turns actix's JSON body errors into the contract's answers: 413 too large, 415 not JSON,
/// 422 a field of the wrong type, 400 anything else malformed.
pub fn json_error(err: actix_web::error::JsonPayloadError, _req: &actix_web::HttpRequest) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as J;
    let api = match &err {
        J::OverflowKnownLength { limit, .. } | J::Overflow { limit } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("body is larger than {limit} bytes"),
        ),
        J::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send Content-Type: application/json",
        ),
        J::Deserialize(e) if e.is_data() => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", crate::domain::error::json_message(e))
        }
        J::Deserialize(e) => {
            ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", crate::domain::error::json_message(e))
        }
        J::Payload(p) if super::limits::is_timeout(p) => ApiError::body_timeout(),
        other => ApiError::new(StatusCode::BAD_REQUEST, "malformed_body", other.to_string()),
    };
    api.into()
}

/// Query-string errors: a parameter of the wrong form is an invalid field.
pub fn query_error(err: actix_web::error::QueryPayloadError, _req: &actix_web::HttpRequest) -> actix_web::Error {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_query", err.to_string()).into()
}

/// Path errors (a segment that does not parse) answer 404, like an id that does not exist.
pub fn path_error(_err: actix_web::error::PathError, _req: &actix_web::HttpRequest) -> actix_web::Error {
    ApiError::not_found().into()
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            res.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        if let Some(allow) = &self.allow {
            res.insert_header((header::ALLOW, allow.as_str()));
        }
        res.json(self.body())
    }
}
