//! Times as the API shows them: RFC 3339 UTC, seconds unless the value has milliseconds.

use crate::model::Millis;
use std::time::{Duration, UNIX_EPOCH};

/// Parses an RFC 3339 UTC time (`2025-01-20T10:30:00Z`, fractions allowed).
pub fn parse_rfc3339(s: &str) -> Option<Millis> {
    let t = humantime::parse_rfc3339(s).ok()?;
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_millis() as Millis)
}

pub fn rfc3339(ms: Millis) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    if ms.is_multiple_of(1000) {
        humantime::format_rfc3339_seconds(t).to_string()
    } else {
        humantime::format_rfc3339_millis(t).to_string()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_as_the_spec_shows() {
        assert_eq!(super::rfc3339(1_737_369_000_000), "2025-01-20T10:30:00Z");
        assert_eq!(super::rfc3339(1_737_369_000_123), "2025-01-20T10:30:00.123Z");
        assert_eq!(super::parse_rfc3339("2025-01-20T10:30:00Z"), Some(1_737_369_000_000));
        assert_eq!(super::parse_rfc3339("2025-01-20T10:30:00.123Z"), Some(1_737_369_000_123));
        assert_eq!(super::parse_rfc3339("yesterday"), None);
        assert_eq!(super::parse_rfc3339("1969-12-31T23:59:59Z"), None);
    }
}
