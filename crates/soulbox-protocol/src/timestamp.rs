//! `google.protobuf.Timestamp` with the JSON form Go's protojson writes — `2026-01-01T10:00:00.123456789Z`: UTC
//! with `Z`, and 0, 3, 6 or 9 fractional digits. (pbjson-types writes `+00:00`, which strict clients may refuse.)
//! Parsing accepts any RFC 3339 offset.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, PartialEq, Eq, Hash, ::prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Timestamp {
    pub fn new(seconds: i64, nanos: i32) -> Timestamp {
        Timestamp { seconds, nanos }
    }

    fn to_datetime(self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(self.seconds, u32::try_from(self.nanos).ok()?)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let dt = self.to_datetime().ok_or_else(|| serde::ser::Error::custom("timestamp out of range"))?;
        let precision = match self.nanos {
            0 => SecondsFormat::Secs,
            n if n % 1_000_000 == 0 => SecondsFormat::Millis,
            n if n % 1_000 == 0 => SecondsFormat::Micros,
            _ => SecondsFormat::Nanos,
        };
        serializer.serialize_str(&dt.to_rfc3339_opts(precision, true))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        let dt = DateTime::parse_from_rfc3339(&raw).map_err(serde::de::Error::custom)?;
        Ok(Timestamp { seconds: dt.timestamp(), nanos: dt.timestamp_subsec_nanos() as i32 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_protojson_format() {
        let json = |s, n| serde_json::to_string(&Timestamp::new(s, n)).unwrap();
        assert_eq!(json(1_767_261_600, 0), r#""2026-01-01T10:00:00Z""#);
        assert_eq!(json(1_767_261_600, 123_000_000), r#""2026-01-01T10:00:00.123Z""#);
        assert_eq!(json(1_767_261_600, 123_456_000), r#""2026-01-01T10:00:00.123456Z""#);
        assert_eq!(json(1_767_261_600, 123_456_789), r#""2026-01-01T10:00:00.123456789Z""#);
        let back: Timestamp = serde_json::from_str(r#""2026-01-01T12:00:00.5+02:00""#).unwrap();
        assert_eq!(back, Timestamp::new(1_767_261_600, 500_000_000));
    }
}
