//! Durations as flags, variables and the file give them: `30s`, `15m`, `1h 30m`, or a bare
//! number of seconds, the only form before and still accepted everywhere.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{Deserialize, Deserializer, Error, Unexpected, Visitor};

use super::settings::Setting;

/// A whole number of seconds: every limit the gateway reports (`lease_max (900 s)`) and every
/// lease a client asks for is counted in seconds, so a `500ms` setting could not be honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub Duration);

impl Setting for Duration {
    type Input = Seconds;
}

impl From<Seconds> for Duration {
    fn from(seconds: Seconds) -> Self {
        seconds.0
    }
}

impl FromStr for Seconds {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Ok(seconds) = text.parse::<u64>() {
            return Ok(Self(Duration::from_secs(seconds)));
        }
        let duration = humantime::parse_duration(text).map_err(|error| {
            format!("{text:?} is not a duration ({error}); write e.g. 30s, 15m, 1h or 900")
        })?;
        if duration.subsec_nanos() != 0 {
            return Err(format!("{text:?} is not a whole number of seconds"));
        }
        Ok(Self(duration))
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecondsVisitor;

        impl Visitor<'_> for SecondsVisitor {
            type Value = Seconds;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a number of seconds or a duration such as 30s, 15m or 1h")
            }

            fn visit_u64<E: Error>(self, seconds: u64) -> Result<Seconds, E> {
                Ok(Seconds(Duration::from_secs(seconds)))
            }

            fn visit_i64<E: Error>(self, seconds: i64) -> Result<Seconds, E> {
                u64::try_from(seconds)
                    .map(|seconds| Seconds(Duration::from_secs(seconds)))
                    .map_err(|_| E::invalid_value(Unexpected::Signed(seconds), &self))
            }

            fn visit_str<E: Error>(self, text: &str) -> Result<Seconds, E> {
                text.parse().map_err(E::custom)
            }
        }

        // Any: YAML hands `900` over as a number and `15m` as a string.
        deserializer.deserialize_any(SecondsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seconds(text: &str) -> Result<u64, String> {
        text.parse::<Seconds>().map(|seconds| seconds.0.as_secs())
    }

    #[test]
    fn flags_and_variables_take_units_or_bare_seconds() {
        for (text, want) in [
            ("30s", 30),
            ("15m", 900),
            ("1h", 3600),
            ("1h 30m", 5400),
            ("900", 900),
            ("0", 0),
        ] {
            assert_eq!(seconds(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn other_text_is_refused_with_the_forms_it_takes() {
        for text in ["", "15 parsecs", "-5", "1.5", "m"] {
            let error = seconds(text).expect_err(text);
            assert!(error.contains("30s, 15m, 1h or 900"), "{error}");
        }
        let error = seconds("1500ms").expect_err("not whole seconds");
        assert!(error.contains("whole number of seconds"), "{error}");
    }

    #[test]
    fn the_file_takes_numbers_and_strings() {
        for (yaml, want) in [("900", 900), ("15m", 900), ("\"30s\"", 30), ("\"45\"", 45)] {
            let parsed: Seconds = yaml_serde::from_str(yaml).expect(yaml);
            assert_eq!(parsed.0.as_secs(), want, "{yaml}");
        }
        for yaml in ["-1", "1.5", "[1]", "soon"] {
            yaml_serde::from_str::<Seconds>(yaml).expect_err(yaml);
        }
    }
}
