//! Human units in profiles: byte sizes ("512M", "4G") and durations ("90s", "2h").

use serde::de::{self, Deserializer, Visitor};
use std::fmt;

/// A byte count written as an integer or as a string with a binary suffix (K, M, G, T).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Bytes(pub u64);

/// A duration written as integer seconds or as a string with a suffix (ms, s, m, h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Millis(pub u64);

/// A size or duration that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnitError {
    #[error("expected a {what} such as {example}, found {found:?}")]
    NotANumber {
        what: &'static str,
        example: &'static str,
        found: String,
    },
    #[error("unknown {what} suffix {suffix:?} (use {known})")]
    UnknownSuffix {
        what: &'static str,
        suffix: String,
        known: &'static str,
    },
    #[error("{what} {found:?} is too large")]
    TooLarge { what: &'static str, found: String },
}

/// A kind of quantity: its name, an example, its suffixes in words and their multipliers.
struct Unit {
    what: &'static str,
    example: &'static str,
    known: &'static str,
    multiplier: fn(&str) -> Option<u64>,
}

/// A number followed by a unit suffix, scaled by the suffix's multiplier.
fn parse_scaled(s: &str, unit: &Unit) -> Result<u64, UnitError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| UnitError::NotANumber {
        what: unit.what,
        example: unit.example,
        found: s.into(),
    })?;
    let m = (unit.multiplier)(suffix.trim()).ok_or_else(|| UnitError::UnknownSuffix {
        what: unit.what,
        suffix: suffix.trim().into(),
        known: unit.known,
    })?;
    n.checked_mul(m).ok_or_else(|| UnitError::TooLarge {
        what: unit.what,
        found: s.into(),
    })
}

const SIZE: Unit = Unit {
    what: "size",
    example: "\"512M\" or \"4G\"",
    known: "K, M, G or T",
    multiplier: |suffix| {
        Some(match suffix.to_ascii_uppercase().as_str() {
            "" | "B" => 1,
            "K" | "KB" | "KIB" => 1 << 10,
            "M" | "MB" | "MIB" => 1 << 20,
            "G" | "GB" | "GIB" => 1 << 30,
            "T" | "TB" | "TIB" => 1 << 40,
            _ => return None,
        })
    },
};

const DURATION: Unit = Unit {
    what: "duration",
    example: "\"90s\" or \"2h\"",
    known: "ms, s, m, h or d",
    multiplier: |suffix| {
        Some(match suffix {
            "ms" => 1,
            "" | "s" => 1000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        })
    },
};

pub fn parse_bytes(s: &str) -> Result<u64, UnitError> {
    parse_scaled(s, &SIZE)
}

pub fn parse_millis(s: &str) -> Result<u64, UnitError> {
    parse_scaled(s, &DURATION)
}

struct UnitVisitor {
    what: &'static str,
    int_mult: u64,
    parse: fn(&str) -> Result<u64, UnitError>,
}

impl Visitor<'_> for UnitVisitor {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.what)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        let v = u64::try_from(v).map_err(|_| E::custom(format!("{} must not be negative", self.what)))?;
        v.checked_mul(self.int_mult)
            .ok_or_else(|| E::custom("value is too large"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        (self.parse)(v).map_err(E::custom)
    }
}

impl<'de> serde::Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UnitVisitor {
            what: "a size in bytes (integer) or a string such as \"512M\"",
            int_mult: 1,
            parse: parse_bytes,
        })
        .map(Bytes)
    }
}

impl<'de> serde::Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UnitVisitor {
            what: "a duration in seconds (integer) or a string such as \"90s\"",
            int_mult: 1000,
            parse: parse_millis,
        })
        .map(Millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512M"), Ok(512 << 20));
        assert_eq!(parse_bytes("4G"), Ok(4 << 30));
        assert_eq!(parse_bytes("100"), Ok(100));
        assert!(parse_bytes("4Q").unwrap_err().to_string().contains("suffix"));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("99999999999T")
            .unwrap_err()
            .to_string()
            .contains("too large"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_millis("90s"), Ok(90_000));
        assert_eq!(parse_millis("2h"), Ok(7_200_000));
        assert_eq!(parse_millis("250ms"), Ok(250));
        assert_eq!(parse_millis("5"), Ok(5000));
        assert_eq!(parse_millis("5d"), Ok(5 * 86_400_000));
        assert!(parse_millis("5w").is_err());
    }
}
