//! A webhook's health and circuit breaker (contract §5), as pure transitions of its
//! [`WebhookStatus`]: the endpoint actor asks [`gate`] whether it may send, and folds each
//! finished attempt with [`after_attempt`]; the status that comes out is written into the
//! `AttemptFinished` record, so a rebuild replays the breaker without a clock.
//!
//! Rules:
//! - `breaker_threshold` consecutive failed attempts open the breaker for `breaker_cooldown`;
//!   nothing is sent while it is open (a manual retry or a test send is the caller's
//!   exception, not this module's).
//! - When the cooldown is over, one probe goes out (half-open): a real attempt. Success
//!   closes the breaker and resets the cooldown; failure reopens it with the cooldown
//!   doubled, up to [`MAX_COOLDOWN`].
//! - Every attempt failing for `disable_after` (since the first failure of the run) disables
//!   the webhook; so does 410 Gone. A disabled webhook stays disabled until an edit sets `is_active: true`.

use crate::model::{HealthState, Millis, WebhookStatus};
use std::time::Duration;

/// The longest the breaker stays open between probes.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    pub threshold: u32,
    pub cooldown: Duration,
    pub disable_after: Duration,
}

/// Whether the actor may send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Send,
    /// The breaker is half-open: one attempt may go out, and nothing else until it ends.
    Probe,
    /// The breaker is open until then.
    Closed {
        until: Millis,
    },
    Disabled,
}

/// A change worth an operational event (`herald.circuit.*`, `herald.webhook.disabled`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    OpenedSecrets,
    Closed,
    Disabled(String),
}

impl Transition {
    /// Where the breaker went: `open`, `closed` or `disabled` (the metrics' `to` label).
    pub fn to(&self) -> &'static str {
        match self {
            Transition::OpenedSecrets => "open",
            Transition::Closed => "closed",
            Transition::Disabled(_) => "disabled",
        }
    }
}

pub fn gate(status: &WebhookStatus, now: Millis) -> Gate {
    match status.state {
        HealthState::Disabled => Gate::Disabled,
        HealthState::CircuitOpen => match status.breaker_until {
            Some(until) if now < until => Gate::Closed { until },
            _ => Gate::Probe,
        },
        HealthState::Healthy | HealthState::Failing => Gate::Send,
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

/// How one attempt ended, as far as health is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub success: bool,
    /// 410 Gone.
    pub gone: bool,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub at: Millis,
    /// The half-open probe (not an attempt that was already in flight when it opened).
    pub probe: bool,
}

/// The status after an attempt, and the transition it caused, if any.
pub fn after_attempt(
    status: &WebhookStatus,
    outcome: &Outcome,
    policy: &BreakerPolicy,
) -> (WebhookStatus, Option<Transition>) {
    let mut s = status.clone();
    s.last_attempt_at = Some(outcome.at);
    s.last_status_code = outcome.status_code;
    s.last_error = outcome.error.clone();
    if s.state == HealthState::Disabled {
        return (s, None);
    }
    if outcome.success {
        let was_open = s.state == HealthState::CircuitOpen;
        s.state = HealthState::Healthy;
        s.consecutive_failures = 0;
        s.failing_since = None;
        s.breaker_until = None;
        s.breaker_cooldown_ms = 0;
        return (s, was_open.then_some(Transition::Closed));
    }
    s.consecutive_failures = s.consecutive_failures.saturating_add(1);
    let since = *s.failing_since.get_or_insert(outcome.at);
    let reason = if outcome.gone {
        Some("the receiver answered 410 Gone".to_owned())
    } else if outcome.at.saturating_sub(since) >= ms(policy.disable_after) {
        Some(format!("every attempt failed for {}", humantime::format_duration(policy.disable_after)))
    } else {
        None
    };
    if let Some(reason) = reason {
        s.state = HealthState::Disabled;
        s.breaker_until = None;
        s.disabled_reason = Some(reason.clone());
        return (s, Some(Transition::Disabled(reason)));
    }
    if s.state == HealthState::CircuitOpen && !outcome.probe {
        // An attempt that was in flight when the breaker opened, or a manual retry: it
        // counts, but the cooldown stands.
        return (s, None);
    }
    if s.state == HealthState::CircuitOpen {
        // A failed probe: open again, for twice as long.
        s.breaker_cooldown_ms = (s.breaker_cooldown_ms.max(ms(policy.cooldown)) * 2).min(ms(MAX_COOLDOWN));
        s.breaker_until = Some(outcome.at + s.breaker_cooldown_ms);
        return (s, None);
    }
    if s.consecutive_failures >= policy.threshold.max(1) {
        s.state = HealthState::CircuitOpen;
        s.breaker_cooldown_ms = ms(policy.cooldown).min(ms(MAX_COOLDOWN));
        s.breaker_until = Some(outcome.at + s.breaker_cooldown_ms);
        return (s, Some(Transition::OpenedSecrets));
    }
    s.state = HealthState::Failing;
    (s, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            threshold: 3,
            cooldown: Duration::from_secs(30),
            disable_after: Duration::from_secs(5 * 86_400),
        }
    }

    fn fail(at: Millis) -> Outcome {
        Outcome { success: false, gone: false, status_code: Some(500), error: None, at, probe: false }
    }

    fn ok(at: Millis) -> Outcome {
        Outcome { success: true, gone: false, status_code: Some(200), error: None, at, probe: false }
    }

    #[test]
    fn opens_after_the_threshold_probes_after_the_cooldown_and_doubles_on_a_failed_probe() {
        let p = policy();
        let mut s = WebhookStatus::default();
        let mut transitions = Vec::new();
        for i in 0..3 {
            assert_eq!(gate(&s, i), Gate::Send);
            let (next, t) = after_attempt(&s, &fail(i), &p);
            s = next;
            transitions.extend(t);
        }
        assert_eq!(transitions, [Transition::OpenedSecrets]);
        assert_eq!(s.state, HealthState::CircuitOpen);
        assert_eq!(gate(&s, 10_000), Gate::Closed { until: 2 + 30_000 });
        assert_eq!(gate(&s, 2 + 30_000), Gate::Probe);

        // An attempt that was already in flight when it opened counts, but moves nothing.
        let (late, t) = after_attempt(&s, &fail(5_000), &p);
        assert_eq!((t, late.breaker_until, late.consecutive_failures), (None, s.breaker_until, 4));

        let probe = |at| Outcome { probe: true, ..fail(at) };
        let (s2, t) = after_attempt(&s, &probe(40_000), &p);
        assert_eq!((t, s2.breaker_cooldown_ms, s2.breaker_until), (None, 60_000, Some(100_000)));
        let mut s3 = s2;
        for k in 0..10 {
            let at = s3.breaker_until.unwrap();
            s3 = after_attempt(&s3, &probe(at + k), &p).0;
        }
        assert_eq!(s3.breaker_cooldown_ms, 600_000, "doubling stops at ten minutes");

        let (closed, t) = after_attempt(&s3, &ok(s3.breaker_until.unwrap()), &p);
        assert_eq!(t, Some(Transition::Closed));
        assert_eq!(
            (closed.state, closed.consecutive_failures, closed.breaker_cooldown_ms),
            (HealthState::Healthy, 0, 0)
        );
        assert_eq!(gate(&closed, 0), Gate::Send);
    }

    #[test]
    fn a_success_between_failures_resets_the_count() {
        let p = policy();
        let s = after_attempt(&WebhookStatus::default(), &fail(1), &p).0;
        let s = after_attempt(&s, &fail(2), &p).0;
        assert_eq!(s.state, HealthState::Failing);
        let s = after_attempt(&s, &ok(3), &p).0;
        let s = after_attempt(&s, &fail(4), &p).0;
        let s = after_attempt(&s, &fail(5), &p).0;
        assert_eq!((s.state, s.consecutive_failures), (HealthState::Failing, 2));
    }

    #[test]
    fn gone_or_failing_for_disable_after_disables_for_good() {
        let p = policy();
        let (s, t) =
            after_attempt(&WebhookStatus::default(), &Outcome { gone: true, status_code: Some(410), ..fail(1) }, &p);
        assert_eq!(s.state, HealthState::Disabled);
        assert!(matches!(t, Some(Transition::Disabled(ref r)) if r.contains("410")));
        assert_eq!(gate(&s, 99), Gate::Disabled);
        assert_eq!(after_attempt(&s, &ok(100), &p).0.state, HealthState::Disabled, "only an edit enables it again");

        let day = 86_400_000;
        let mut s = WebhookStatus::default();
        let mut last = None;
        for k in 0..=5 {
            let (next, t) = after_attempt(&s, &fail(k * day), &p);
            s = next;
            last = t.or(last);
        }
        assert_eq!(s.state, HealthState::Disabled);
        assert!(matches!(last, Some(Transition::Disabled(_))));
    }
}
