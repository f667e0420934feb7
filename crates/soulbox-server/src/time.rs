//! RFC 3339 times as the SDKs parse them (`dateutil.isoparse`, `new Date()`).

use chrono::{DateTime, SecondsFormat, Utc};

pub fn rfc3339(unix_ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(unix_ms).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 time (any offset) to unix milliseconds.
pub fn parse_rfc3339_ms(raw: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(raw.trim()).ok().map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_python_offsets() {
        let s = rfc3339(1_700_000_000_123);
        assert_eq!(s, "2023-11-14T22:13:20.123Z");
        assert_eq!(parse_rfc3339_ms(&s), Some(1_700_000_000_123));
        assert_eq!(parse_rfc3339_ms("2023-11-14T22:13:20.123000+00:00"), Some(1_700_000_000_123));
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }
}
