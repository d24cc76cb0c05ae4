//! The retry policy of contract §5, in two separate steps (as Vector's `retries.rs` does):
//! [`classify`] says what an attempt's outcome means — success, retry (perhaps after the
//! receiver's `Retry-After`), or gone — and [`Backoff`] says when the next attempt is due;
//! [`next_step`] puts them together with the attempt budget and the TTL.
//! Neither sends, sleeps or reads a clock of its own: the caller passes `now` and the
//! random draw, so the schedule is tested without waiting and the chosen due time can be
//! written into the `AttemptFinished` record (a rebuild reads no clock and no randomness).

use crate::model::{AttemptResult, DeadReason, Millis, NextStep};
use std::time::{Duration, SystemTime};

/// What an attempt's outcome asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    /// Try again; `after` is the receiver's own `Retry-After` (429 and 503 only).
    Retry {
        after: Option<Duration>,
    },
    /// 410 Gone: the endpoint is gone for good (the webhook is disabled).
    Gone,
}

/// Classifies one attempt. A 2xx is success, 410 is gone, every other status, timeout,
/// connection error and refusal is retried (a 3xx too: redirects are not followed).
pub fn classify(result: AttemptResult, status: Option<u16>, retry_after: Option<&str>, now: SystemTime) -> Verdict {
    match (result, status) {
        (AttemptResult::Success, _) => Verdict::Success,
        (_, Some(s)) if (200..300).contains(&s) => Verdict::Success,
        (_, Some(410)) => Verdict::Gone,
        (_, Some(429 | 503)) => Verdict::Retry { after: retry_after.and_then(|v| parse_retry_after(v, now)) },
        _ => Verdict::Retry { after: None },
    }
}

/// `Retry-After`: delay-seconds or an HTTP date (a date in the past means now).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The exponential schedule: after failure `n` (1-based, counted since the delivery was
/// last queued) the next attempt waits `d = min(initial · 2^(n-1), max)`, drawn in
/// `[d, 1.1·d]`; a `Retry-After` replaces `d` (no jitter: the receiver asked for a time),
/// capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The base delay after failure `n`, before jitter.
    pub fn base(&self, n: u32) -> Duration {
        let doublings = n.saturating_sub(1).min(63);
        let factor = 1u64 << doublings;
        let ms = (self.initial.as_millis() as u64).saturating_mul(factor);
        Duration::from_millis(ms).min(self.max)
    }

    /// The delay after failure `n`; `draw` is uniform in `[0, 1)` (the caller's randomness).
    pub fn delay(&self, n: u32, retry_after: Option<Duration>, draw: f64) -> Duration {
        if let Some(asked) = retry_after {
            return asked.min(self.max);
        }
        let d = self.base(n);
        d + d.mul_f64(0.1 * draw.clamp(0.0, 1.0))
    }
}

/// Where a delivery stands when one of its attempts ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// The attempt that just ended (1-based, counted since the delivery was created).
    pub attempt: u32,
    /// Attempts made before its latest (re-)queue: the budget counts from here.
    pub base_attempts: u32,
    pub max_retries: u32,
    /// When it was (re-)queued: start of its TTL.
    pub queued_at: Millis,
}

/// What follows an attempt: done, dead (with why), or the next attempt's due time. `draw`
/// is uniform in `[0, 1)`; `now` is when the attempt ended. Pure, so the decision can be
/// written into the record and tested without waiting.
pub fn next_step(
    verdict: Verdict,
    standing: Standing,
    backoff: &Backoff,
    ttl: Duration,
    now: Millis,
    draw: f64,
) -> NextStep {
    let failures = standing.attempt.saturating_sub(standing.base_attempts);
    match verdict {
        Verdict::Success => NextStep::Succeeded,
        Verdict::Gone => NextStep::Dead(DeadReason::Gone),
        Verdict::Retry { .. } if failures > standing.max_retries => NextStep::Dead(DeadReason::RetriesExhausted),
        Verdict::Retry { .. } if now >= standing.queued_at.saturating_add(ttl.as_millis() as u64) => {
            NextStep::Dead(DeadReason::Expired)
        }
        Verdict::Retry { after } => {
            let delay = backoff.delay(failures.max(1), after, draw);
            NextStep::RetryAt(now.saturating_add(delay.as_millis() as u64))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_plus_max_retries_attempts_then_dead_and_a_requeue_grants_them_again() {
        let b = backoff();
        let ttl = Duration::from_secs(72 * 3600);
        let fail = Verdict::Retry { after: None };
        let at = |attempt, base| Standing { attempt, base_attempts: base, max_retries: 3, queued_at: 0 };
        // Attempts 1..=3 fail and are retried after 1, 2, 4 s; attempt 4 is the last.
        assert_eq!(next_step(fail, at(1, 0), &b, ttl, 10_000, 0.0), NextStep::RetryAt(11_000));
        assert_eq!(next_step(fail, at(2, 0), &b, ttl, 10_000, 0.0), NextStep::RetryAt(12_000));
        assert_eq!(next_step(fail, at(3, 0), &b, ttl, 10_000, 0.0), NextStep::RetryAt(14_000));
        assert_eq!(next_step(fail, at(4, 0), &b, ttl, 10_000, 0.0), NextStep::Dead(DeadReason::RetriesExhausted));
        // Re-queued after 4 attempts: four fresh ones, the schedule starts over.
        assert_eq!(next_step(fail, at(5, 4), &b, ttl, 10_000, 0.0), NextStep::RetryAt(11_000));
        assert_eq!(next_step(fail, at(8, 4), &b, ttl, 10_000, 0.0), NextStep::Dead(DeadReason::RetriesExhausted));
        assert_eq!(next_step(Verdict::Success, at(8, 4), &b, ttl, 10_000, 0.0), NextStep::Succeeded);
        assert_eq!(next_step(Verdict::Gone, at(1, 0), &b, ttl, 10_000, 0.0), NextStep::Dead(DeadReason::Gone));
        // The receiver's Retry-After wins over the schedule.
        let busy = Verdict::Retry { after: Some(Duration::from_secs(30)) };
        assert_eq!(next_step(busy, at(1, 0), &b, ttl, 10_000, 0.9), NextStep::RetryAt(40_000));
        // Past its TTL a failed delivery is dead, expired.
        let old = Standing { queued_at: 0, ..at(1, 0) };
        assert_eq!(next_step(fail, old, &b, Duration::from_secs(5), 5_000, 0.0), NextStep::Dead(DeadReason::Expired));
    }

    fn backoff() -> Backoff {
        Backoff { initial: Duration::from_secs(1), max: Duration::from_secs(3600) }
    }

    #[test]
    fn the_schedule_doubles_from_one_second_as_seed_001_lists_and_caps() {
        let b = backoff();
        let bases: Vec<u64> = (1..=5).map(|n| b.base(n).as_secs()).collect();
        assert_eq!(bases, [1, 2, 4, 8, 16]);
        assert_eq!(b.base(13), Duration::from_secs(3600), "capped at max_backoff");
        assert_eq!(b.base(200), Duration::from_secs(3600), "no overflow");
    }

    #[test]
    fn jitter_stays_within_ten_percent_above() {
        let b = backoff();
        for n in 1..=20 {
            let d = b.base(n);
            assert_eq!(b.delay(n, None, 0.0), d);
            let hi = b.delay(n, None, 0.999_999);
            assert!(hi >= d && hi <= d + d / 10, "{n}: {hi:?} vs {d:?}");
        }
    }

    #[test]
    fn retry_after_replaces_the_delay_capped_at_max() {
        let b = backoff();
        assert_eq!(b.delay(1, Some(Duration::from_secs(30)), 0.5), Duration::from_secs(30));
        assert_eq!(b.delay(1, Some(Duration::from_secs(86_400)), 0.5), Duration::from_secs(3600));
    }

    #[test]
    fn outcomes_are_classified_as_spec_section_5_says() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let c = |r, s, ra| classify(r, s, ra, now);
        assert_eq!(c(AttemptResult::Success, Some(200), None), Verdict::Success);
        assert_eq!(c(AttemptResult::HttpError, Some(204), None), Verdict::Success);
        assert_eq!(c(AttemptResult::HttpError, Some(410), None), Verdict::Gone);
        for s in [301, 302, 400, 404, 500, 502] {
            assert_eq!(c(AttemptResult::HttpError, Some(s), Some("5")), Verdict::Retry { after: None }, "{s}");
        }
        assert_eq!(
            c(AttemptResult::HttpError, Some(429), Some("7")),
            Verdict::Retry { after: Some(Duration::from_secs(7)) }
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(
            c(AttemptResult::HttpError, Some(503), Some(&date)),
            Verdict::Retry { after: Some(Duration::from_secs(90)) }
        );
        assert_eq!(c(AttemptResult::HttpError, Some(503), Some("soon")), Verdict::Retry { after: None });
        assert_eq!(c(AttemptResult::Timeout, None, None), Verdict::Retry { after: None });
        assert_eq!(c(AttemptResult::NetworkError, None, None), Verdict::Retry { after: None });
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
    }
}
