//! The domain's errors: what can go wrong in a request, independent of HTTP. `api/error.rs`
//! is the one place that turns them into statuses and JSON.

use crate::storage::{AppendError, Rejection, StorageError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// No credential, or one that matches nothing.
    #[error("missing or invalid credentials")]
    Unauthenticated,
    /// A valid API key on a route only the admin token may use.
    #[error("this route needs the admin token")]
    Forbidden,
    /// Missing, or another account's (indistinguishable on purpose).
    #[error("no such resource")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("limit reached: {0}")]
    Limit(String),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// A body or field over its size limit.
    #[error("{0}")]
    TooLarge(String),
    /// Back-pressure: try again later.
    #[error("{0}")]
    RateLimited(String),
    /// Free disk space is below `min_free_disk`.
    #[error("free disk space is below min_free_disk; nothing was written")]
    LowOnDisk,
    /// The storage failed and nothing was written.
    #[error("{0}")]
    Storage(String),
    /// The storage failed and the write may or may not have happened: retry with the same
    /// `Idempotency-Key`.
    #[error("{0}")]
    OutcomeUnknown(String),
    #[error("Herald is shutting down")]
    Closed,
}

impl DomainError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        DomainError::Invalid { field: field.to_owned(), message: message.into() }
    }
}

impl From<StorageError> for DomainError {
    fn from(e: StorageError) -> Self {
        DomainError::Storage(e.to_string())
    }
}

impl From<AppendError> for DomainError {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::Rejected(Rejection::NotFound) => DomainError::NotFound,
            AppendError::Rejected(Rejection::Conflict(m)) => DomainError::Conflict(m),
            AppendError::Rejected(Rejection::Limit(m)) => DomainError::Limit(m),
            AppendError::Rejected(r @ Rejection::Duplicate { .. }) => DomainError::Conflict(r.to_string()),
            AppendError::Closed => DomainError::Closed,
            AppendError::NoRoom(_) => DomainError::LowOnDisk,
            u @ AppendError::Unknown(_) => DomainError::OutcomeUnknown(u.to_string()),
            other => DomainError::Storage(other.to_string()),
        }
    }
}

/// What a caller is told about JSON that did not parse: serde_json's message, except where it
/// misleads. A `\u` escape of half a UTF-16 surrogate pair with no other half is text no
/// JSON string may hold, but serde_json calls it "unexpected end of hex escape" (a high half
/// alone) or "lone leading surrogate" (a low half alone).
pub fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    const LONE: &str = "a lone surrogate escape (\\ud800–\\udfff without its other half) is not valid text";
    for misleading in ["unexpected end of hex escape", "lone leading surrogate in hex escape"] {
        if let Some(rest) = text.strip_prefix(misleading) {
            return format!("{LONE}{rest}");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::json_message;

    fn message(json: &str) -> String {
        json_message(&serde_json::from_str::<serde_json::Value>(json).unwrap_err())
    }

    #[test]
    fn a_lone_surrogate_is_called_one_and_other_errors_keep_their_words() {
        for lone in [r#"{"x":"\ud800"}"#, r#"{"x":"\ud800x"}"#, r#"{"x":"\udc00"}"#, r#"{"x":"\ud800\u0041"}"#] {
            let m = message(lone);
            assert!(m.starts_with("a lone surrogate escape"), "{lone}: {m}");
            assert!(m.contains("at line 1 column"), "{lone}: {m}");
        }
        assert!(serde_json::from_str::<serde_json::Value>(r#"{"x":"\ud83d\ude00"}"#).is_ok(), "a whole pair is text");
        assert!(message(r#"{"x":"\u12"}"#).starts_with("invalid escape"), "{}", message(r#"{"x":"\u12"}"#));
        assert!(message("{").starts_with("EOF while parsing"));
    }
}
