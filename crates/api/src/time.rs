//! Times on the wire: RFC 3339 in UTC with milliseconds (`2024-05-01T12:00:00.000Z`),
//! the text the store keeps and every answer has always carried. For
//! `#[serde(with = "berth_api::time")]` (and `time::option` for an optional one).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// A time as the API writes it.
pub fn stamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A time as the API (or the store) wrote it; any RFC 3339 time is read.
pub fn parse(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc))
}

pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&stamp(t))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let text = String::deserialize(d)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// The same for an optional time (`null` when absent).
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&stamp(t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| parse(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_keep_the_store_s_text() {
        for text in ["2024-05-01T12:00:00.000Z", "1999-12-31T23:59:59.999Z"] {
            assert_eq!(super::stamp(&super::parse(text).unwrap()), text);
        }
        assert_eq!(
            super::stamp(&super::parse("2024-05-01T14:00:00+02:00").unwrap()),
            "2024-05-01T12:00:00.000Z"
        );
    }
}
