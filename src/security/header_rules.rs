//! What a webhook's own headers may be, which of their values are shown masked, and how a
//! target URL is shown: rules shared by validation (`webhooks`), the wire (`delivery`) and
//! every answer or log that shows a webhook.
//!
//! Invariants:
//! - A custom header never sets what Herald sets itself (`Content-Type`, `Host`,
//!   `Content-Length`, `User-Agent`, `X-Webhook-*`, `webhook-*`, the signature header) nor
//!   anything that belongs to the connection or the message's framing (hop-by-hop headers,
//!   `Transfer-Encoding`, `Expect`, …) or to the HTTP client (`Date`, `Accept-Encoding`):
//!   `Expect: 100-continue` would make the client withhold the body, `Transfer-Encoding`
//!   would change how the receiver reads it.
//! - A value whose header name suggests a credential is shown as [`MASK`], everywhere it is
//!   shown; so is every value of a target URL's query string. A masked value sent back
//!   unchanged means "keep what is stored" (`webhooks::update`).

/// What a masked value is shown as.
pub const MASK: &str = "****";

/// Longest accepted `signature_header`.
pub const MAX_SIGNATURE_HEADER: usize = 64;

/// The default signature header (also a Herald header, so a custom header cannot take it).
pub const DEFAULT_SIGNATURE_HEADER: &str = "X-Webhook-Signature";

/// Headers Herald sets on every delivery.
pub fn is_herald_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(n.as_str(), "content-type" | "host" | "content-length" | "user-agent")
        || n.starts_with("x-webhook-")
        || n.starts_with("webhook-")
}

/// Headers that belong to the connection, the message's framing or the HTTP client
/// (RFC 9110 §7.6.1 hop-by-hop fields, `Transfer-Encoding`, `Expect`, `Date`,
/// `Accept-Encoding`): never a webhook's to set.
pub fn is_transport_header(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "transfer-encoding"
            | "connection"
            | "expect"
            | "upgrade"
            | "te"
            | "trailer"
            | "keep-alive"
            | "proxy-connection"
            | "date"
            | "accept-encoding"
    )
}

/// Whether a custom header of this name is refused (before the signature header is known).
pub fn is_reserved(name: &str) -> bool {
    is_herald_header(name) || is_transport_header(name)
}

/// Whether `name` is a syntactically valid HTTP header name.
pub fn is_valid_name(name: &str) -> bool {
    actix_web::http::header::HeaderName::from_bytes(name.as_bytes()).is_ok()
}

/// Why `name` cannot be a webhook's `signature_header`, if it cannot: it must be a valid
/// name of at most [`MAX_SIGNATURE_HEADER`] characters that neither the transport nor Herald
/// uses (the default excepted).
pub fn signature_header_problem(name: &str) -> Option<String> {
    if !is_valid_name(name) || name.len() > MAX_SIGNATURE_HEADER {
        return Some(format!("must be a valid header name of at most {MAX_SIGNATURE_HEADER} characters"));
    }
    if name.eq_ignore_ascii_case(DEFAULT_SIGNATURE_HEADER) {
        return None;
    }
    if is_reserved(name) {
        return Some(format!("{name} is set by Herald or by HTTP itself; pick another name"));
    }
    None
}

/// Why a webhook's custom header `name` is refused, given its signature header.
pub fn custom_header_problem(name: &str, signature_header: &str) -> Option<String> {
    if !is_valid_name(name) {
        return Some("a header name is not a valid HTTP header name".into());
    }
    if is_transport_header(name) {
        return Some(format!("{name} belongs to HTTP's framing or connection and cannot be set"));
    }
    if is_herald_header(name) || name.eq_ignore_ascii_case(signature_header) {
        return Some(format!("{name} is set by Herald and cannot be overridden"));
    }
    None
}

/// Words in a header name that suggest its value is a credential.
const CREDENTIAL_WORDS: &[&str] = &[
    "auth",
    "token",
    "key",
    "secret",
    "pass",
    "pwd",
    "cookie",
    "session",
    "credential",
    "signature",
    "bearer",
    "jwt",
    "csrf",
    "xsrf",
    "private",
];

/// Whether a header name suggests a credential, so its value is masked in every answer and
/// record (`Authorization`, `Proxy-Authorization`, `X-Auth`, `X-Password`, `X-Api-Key`, …).
pub fn is_secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    CREDENTIAL_WORDS.iter().any(|w| n.contains(w))
}

/// `url` with every query value shown as [`MASK`] (the names stay, so a reader sees which
/// parameters there are). A URL without a query, or one that does not parse, is shown as is
/// (stored URLs always parse).
pub fn masked_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else { return url.to_owned() };
    if parsed.query().is_none_or(str::is_empty) {
        return url.to_owned();
    }
    let names: Vec<String> = parsed.query_pairs().map(|(k, _)| k.into_owned()).collect();
    {
        let mut q = parsed.query_pairs_mut();
        q.clear();
        for n in &names {
            q.append_pair(n, MASK);
        }
    }
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_and_herald_headers_are_refused_as_custom_headers() {
        for name in [
            "Transfer-Encoding",
            "connection",
            "Expect",
            "Upgrade",
            "TE",
            "Trailer",
            "Keep-Alive",
            "Proxy-Connection",
            "Date",
            "Accept-Encoding",
            "Content-Type",
            "Host",
            "Content-Length",
            "User-Agent",
            "X-Webhook-Event",
            "webhook-id",
            "X-Sig",
        ] {
            assert!(custom_header_problem(name, "X-Sig").is_some(), "{name}");
        }
        for name in ["X-Team", "Authorization", "Proxy-Authorization", "Accept", "X-Trace"] {
            assert_eq!(custom_header_problem(name, "X-Sig"), None, "{name}");
        }
    }

    #[test]
    fn signature_header_rules() {
        for ok in ["X-Webhook-Signature", "X-Signature", "X-Hub-Signature-256"] {
            assert_eq!(signature_header_problem(ok), None, "{ok}");
        }
        for bad in ["Transfer-Encoding", "Content-Type", "Expect", "Date", "webhook-id", "Bad Name", ""] {
            assert!(signature_header_problem(bad).is_some(), "{bad}");
        }
        assert!(signature_header_problem(&format!("X-{}", "a".repeat(63))).is_some());
        assert_eq!(signature_header_problem(&format!("X-{}", "a".repeat(62))), None);
    }

    #[test]
    fn credential_like_names_are_masked() {
        for name in [
            "Authorization",
            "Proxy-Authorization",
            "X-Password",
            "X-Auth",
            "X-Api-Key",
            "Cookie",
            "X-Session-Id",
            "X-Access-Token",
            "X-Client-Secret",
            "X-Passwd",
        ] {
            assert!(is_secret_header(name), "{name}");
        }
        for name in ["X-Team", "Accept", "X-Request-Id", "X-Tenant"] {
            assert!(!is_secret_header(name), "{name}");
        }
    }

    #[test]
    fn query_values_are_masked_names_kept() {
        assert_eq!(masked_url("https://a.example.com/in?token=abc&x=1"), "https://a.example.com/in?token=****&x=****");
        assert_eq!(masked_url("https://a.example.com/in"), "https://a.example.com/in");
        assert_eq!(masked_url("https://a.example.com/in?"), "https://a.example.com/in?");
        assert!(!masked_url("https://a.example.com/in?k=s3cr3t#frag").contains("s3cr3t"));
    }
}
