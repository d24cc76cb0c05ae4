//! The one place where failures become HTTP answers (SPEC §3): always
//! `{"error": {"code", "message", "field"?}}` with the documented status, never a bare 500.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), field: None, retry_after: None }
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

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<crate::error::DomainError> for ApiError {
    fn from(e: crate::error::DomainError) -> Self {
        use crate::error::DomainError as D;
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
                retry_after: Some(crate::disk::RETRY_AFTER_SECS),
                ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "low_on_disk", message)
            },
            D::Storage(_) => {
                tracing::error!(error = %message, "storage failure answering a request");
                Self {
                    retry_after: Some(1),
                    ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", message)
                }
            }
            D::Closed => {
                Self { retry_after: Some(1), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message) }
            }
        }
    }
}

/// Turns actix's JSON body errors into the SPEC's answers: 413 too large, 415 not JSON,
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
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", e.to_string())
        }
        J::Deserialize(e) => ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", e.to_string()),
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
        res.json(Body { error: Inner { code: self.code, message: &self.message, field: self.field.as_deref() } })
    }
}
