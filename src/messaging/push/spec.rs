//! What a push subscription is asked to do (`POST /subscriptions` or the config file), validated.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::{Invalid, check_name};

pub const DEFAULT_CONCURRENCY: u16 = 1;
pub const DEFAULT_TIMEOUT_SECS: f64 = 10.0;
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
pub const DEFAULT_INITIAL_MS: u64 = 200;
pub const DEFAULT_MAX_MS: u64 = 30_000;
/// Longest single attempt; a message held longer risks the broker's consumer timeout.
const MAX_TIMEOUT_SECS: f64 = 600.0;
/// Shorter than a millisecond, no webhook could ever answer.
const MIN_TIMEOUT_SECS: f64 = 0.001;
const MAX_CONCURRENCY: u16 = 1000;
const MAX_ATTEMPTS: u32 = 1000;
const MAX_BACKOFF_MS: u64 = 900_000;

/// A push subscription as requested.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionRequest {
    /// Unique name; the subscription's path is `/subscriptions/{name}`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,200}$")]
    pub name: String,
    /// Queue to consume.
    #[schema(min_length = 1, max_length = 255)]
    pub queue: String,
    /// URL each message is POSTed to, usually the app beside the gateway (`http://` or
    /// `https://`, checked against the system's CA certificates or `SSL_CERT_FILE`'s).
    pub url: String,
    /// Messages delivered at once (basic.qos prefetch); 1 keeps the queue's order (default 1).
    #[schema(minimum = 1, maximum = 1000)]
    pub concurrency: Option<u16>,
    /// Seconds one attempt may take before it counts as failed (default 10, from 0.001).
    #[schema(minimum = 0.001, maximum = 600)]
    pub timeout: Option<f64>,
    /// Attempts before the message is rejected, dead-lettered if the queue has a DLX (default 5).
    #[schema(minimum = 1, maximum = 1000)]
    pub max_attempts: Option<u32>,
    pub backoff: Option<BackoffRequest>,
    /// `raw` (default), `envelope`, `cloudevents` (binary mode) or `cloudevents-structured`.
    #[schema(value_type = Option<Format>)]
    pub format: Option<String>,
}

/// Delay before a retry: `initial_ms`, doubling per failed attempt up to `max_ms`, with jitter.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackoffRequest {
    /// Default 200; at most `max_ms`.
    #[schema(minimum = 1, maximum = 900000)]
    pub initial_ms: Option<u64>,
    /// Default 30000; at most 900000 (a message is held no longer than the gateway's lease_max).
    #[schema(minimum = 1, maximum = 900000)]
    pub max_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Backoff {
    pub initial_ms: u64,
    pub max_ms: u64,
}

/// How a message is written into the webhook request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// The body as published, with its Content-Type and `Amqp-*` headers.
    Raw,
    /// The JSON envelope of `GET /queues/{queue}/next`.
    Envelope,
    /// CloudEvents 1.0, HTTP binary mode: the body as published, attributes in `ce-*` headers.
    Cloudevents,
    /// CloudEvents 1.0, HTTP structured mode: one `application/cloudevents+json` document.
    CloudeventsStructured,
}

impl Format {
    fn parse(format: Option<&str>) -> Result<Self, Invalid> {
        match format {
            None | Some("raw") => Ok(Self::Raw),
            Some("envelope") => Ok(Self::Envelope),
            Some("cloudevents") => Ok(Self::Cloudevents),
            Some("cloudevents-structured") => Ok(Self::CloudeventsStructured),
            Some(other) => Err(Invalid(format!(
                "format {other:?} is not known; use raw, envelope, cloudevents or \
                 cloudevents-structured"
            ))),
        }
    }
}

/// A validated subscription; two requests for one name must agree on all of it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SubscriptionSpec {
    pub name: String,
    pub queue: String,
    pub url: String,
    /// `url`, parsed.
    #[serde(skip)]
    pub endpoint: reqwest::Url,
    pub concurrency: u16,
    /// Seconds.
    #[serde(serialize_with = "whole_if_whole")]
    pub timeout: f64,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub format: Format,
}

impl SubscriptionRequest {
    pub fn validate(self) -> Result<SubscriptionSpec, Invalid> {
        check_subscription_name(&self.name)?;
        check_name("queue", &self.queue)?;
        let endpoint = endpoint(&self.url)?;
        let concurrency = self.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
            return Err(Invalid(format!(
                "concurrency must be between 1 and {MAX_CONCURRENCY}"
            )));
        }
        let timeout = self.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if !(MIN_TIMEOUT_SECS..=MAX_TIMEOUT_SECS).contains(&timeout) {
            return Err(Invalid(format!(
                "timeout must be between {MIN_TIMEOUT_SECS} and {MAX_TIMEOUT_SECS} seconds"
            )));
        }
        let max_attempts = self.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
        if !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
            return Err(Invalid(format!(
                "max_attempts must be between 1 (no retries) and {MAX_ATTEMPTS}"
            )));
        }
        let backoff = self.backoff.map_or(
            Backoff {
                initial_ms: DEFAULT_INITIAL_MS,
                max_ms: DEFAULT_MAX_MS,
            },
            |asked| {
                let initial_ms = asked.initial_ms.unwrap_or(DEFAULT_INITIAL_MS);
                Backoff {
                    initial_ms,
                    max_ms: asked.max_ms.unwrap_or(DEFAULT_MAX_MS.max(initial_ms)),
                }
            },
        );
        if backoff.initial_ms == 0 || backoff.initial_ms > backoff.max_ms {
            return Err(Invalid(
                "backoff.initial_ms must be at least 1 and at most backoff.max_ms".into(),
            ));
        }
        if backoff.max_ms > MAX_BACKOFF_MS {
            return Err(Invalid(format!(
                "backoff.max_ms must be at most {MAX_BACKOFF_MS}: a message is held no longer \
                 than the gateway's lease_max"
            )));
        }
        Ok(SubscriptionSpec {
            name: self.name,
            queue: self.queue,
            url: self.url,
            endpoint,
            concurrency,
            timeout,
            max_attempts,
            backoff,
            format: Format::parse(self.format.as_deref())?,
        })
    }
}

impl SubscriptionSpec {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout)
    }
}

/// `10` reads back as `10`, not `10.0`.
fn whole_if_whole<S: serde::Serializer>(seconds: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    if seconds.fract() == 0.0 && *seconds <= MAX_TIMEOUT_SECS {
        serializer.serialize_u64(*seconds as u64)
    } else {
        serializer.serialize_f64(*seconds)
    }
}

/// Names travel in paths and metric labels: keep them to a plain, short alphabet.
pub fn check_subscription_name(name: &str) -> Result<(), Invalid> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > 200 || !name.chars().all(plain) {
        return Err(Invalid(format!(
            "subscription name {name:?} must be 1 to 200 letters, digits, '-', '_' or '.'"
        )));
    }
    Ok(())
}

fn endpoint(url: &str) -> Result<reqwest::Url, Invalid> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|error| Invalid(format!("url {url:?} is not a valid URL: {error}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(Invalid(format!(
            "url {url:?} must be an absolute http:// or https:// URL"
        )));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> Result<SubscriptionSpec, String> {
        serde_json::from_value::<SubscriptionRequest>(json)
            .map_err(|error| error.to_string())?
            .validate()
            .map_err(|error| error.0)
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let spec = request(serde_json::json!({
            "name": "to-app", "queue": "orders", "url": "http://127.0.0.1:3000/hook"
        }))
        .expect("valid");
        assert_eq!(spec.concurrency, 1);
        assert_eq!(spec.max_attempts, 5);
        assert_eq!(spec.format, Format::Raw);
        assert_eq!(
            spec.backoff,
            Backoff {
                initial_ms: 200,
                max_ms: 30_000
            }
        );
    }

    #[test]
    fn bad_settings_say_what_to_fix() {
        let base = serde_json::json!({"name": "s", "queue": "q", "url": "http://app/hook"});
        let with = |key: &str, value: serde_json::Value| {
            let mut json = base.clone();
            json[key] = value;
            request(json).expect_err("invalid")
        };
        assert!(with("url", "ftp://app/x".into()).contains("http://"));
        assert!(with("url", "/hook".into()).contains("not a valid URL"));
        assert!(with("concurrency", 0.into()).contains("concurrency"));
        assert!(with("timeout", 0.into()).contains("timeout"));
        assert!(with("max_attempts", 0.into()).contains("max_attempts"));
        assert!(with("format", "xml".into()).contains("cloudevents"));
        assert!(with("name", "a/b".into()).contains("subscription name"));
        assert!(
            with(
                "backoff",
                serde_json::json!({"initial_ms": 500, "max_ms": 100})
            )
            .contains("initial_ms")
        );
        assert!(with("extra", true.into()).contains("unknown field"));
    }
}
