//! When to try a failed webhook again: exponential backoff with jitter, or the app's Retry-After.

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderValue;

use super::spec::Backoff;

/// The wait after `failed` attempts (1 after the first failure).
///
/// Half of each step is fixed so waits still grow; the other half is random so that many
/// messages failing together do not come back together. A Retry-After from the app is a
/// floor: the gateway never comes back sooner than asked.
pub fn delay(backoff: Backoff, failed: u32, retry_after: Option<Duration>) -> Duration {
    let doublings = failed.saturating_sub(1).min(32);
    let step = backoff
        .initial_ms
        .saturating_mul(1_u64 << doublings)
        .min(backoff.max_ms);
    let fixed = step / 2;
    let jittered = Duration::from_millis(fixed + fastrand::u64(0..=step - fixed));
    retry_after.map_or(jittered, |asked| asked.max(jittered))
}

/// `Retry-After` as delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff {
        initial_ms: 100,
        max_ms: 1000,
    };

    #[test]
    fn waits_double_within_their_jitter_and_stop_at_the_max() {
        for (failed, step) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            for _ in 0..50 {
                let wait = delay(BACKOFF, failed, None).as_millis();
                assert!((step / 2..=step).contains(&wait), "{failed}: {wait}");
            }
        }
    }

    #[test]
    fn retry_after_is_a_floor() {
        let asked = Duration::from_secs(3);
        assert_eq!(delay(BACKOFF, 1, Some(asked)), asked);
        assert!(delay(BACKOFF, 5, Some(Duration::ZERO)) >= Duration::from_millis(500));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").expect("date");
        let parse = |text: &'static str| parse_retry_after(&HeaderValue::from_static(text), now);
        assert_eq!(parse("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse("Wed, 21 Oct 2015 07:28:30 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse("Wed, 21 Oct 2015 07:27:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse("soon"), None);
    }
}
