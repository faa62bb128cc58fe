//! Lenient readers of the request fields the gateway reads for accounting: the value when it
//! has the expected type, `None` for anything else (the upstream is the one to refuse it).

use serde::Deserializer;
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};

/// What a lenient reader found.
enum Found {
    U64(u64),
    /// A negative integer.
    I64(i64),
    F64(f64),
    Bool(bool),
    Object(Option<bool>),
    Other,
}

struct Any;

impl<'de> Visitor<'de> for Any {
    type Value = Found;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_u64<E>(self, v: u64) -> Result<Found, E> {
        Ok(Found::U64(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Found, E> {
        Ok(u64::try_from(v).map_or(Found::I64(v), Found::U64))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Found, E> {
        Ok(Found::F64(v))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Found, E> {
        Ok(Found::Bool(v))
    }
    fn visit_str<E>(self, _: &str) -> Result<Found, E> {
        Ok(Found::Other)
    }
    fn visit_unit<E>(self) -> Result<Found, E> {
        Ok(Found::Other)
    }
    fn visit_none<E>(self) -> Result<Found, E> {
        Ok(Found::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Found, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Found::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found, A::Error> {
        let mut include_usage = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "include_usage" {
                if let Found::Bool(b) = map.next_value_seed(Seed)? {
                    include_usage = Some(b);
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Found::Object(include_usage))
    }
}

struct Seed;

impl<'de> serde::de::DeserializeSeed<'de> for Seed {
    type Value = Found;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Found, D::Error> {
        d.deserialize_any(Any)
    }
}

pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match d.deserialize_any(Any)? {
        Found::U64(v) => Some(v),
        _ => None,
    })
}

/// Any JSON number.
pub fn number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(match d.deserialize_any(Any)? {
        Found::U64(v) => Some(v as f64),
        Found::I64(v) => Some(v as f64),
        Found::F64(v) => Some(v),
        _ => None,
    })
}

/// Whether the value is a JSON integer (of any sign).
pub fn integer<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(Some(matches!(d.deserialize_any(Any)?, Found::U64(_) | Found::I64(_))))
}

pub fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(match d.deserialize_any(Any)? {
        Found::Bool(v) => Some(v),
        _ => None,
    })
}

/// `Some(include_usage)` when `stream_options` is an object.
pub fn stream_options<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<bool>>, D::Error> {
    Ok(match d.deserialize_any(Any)? {
        Found::Object(include_usage) => Some(include_usage),
        _ => None,
    })
}
