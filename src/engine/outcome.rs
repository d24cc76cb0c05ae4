//! What one finished attempt decides, as a pure function ([`decide`]): the attempt's answer,
//! the webhook's policy and breaker state, the time and the random draw in; the record to
//! write, the webhook's new status, the next step (with its due time), the operational
//! events to ingest and the counters to move out. The endpoint actor calls it and does only
//! the I/O (metrics, logs, the writer, its queue).
//!
//! Invariants:
//! - No clock and no random source is read here: `now` and `draw` are inputs, so every
//!   decision can be tested without waiting, and is the one the record carries.
//! - A webhook disabled by this attempt (410, `disable_after`) or before it turns a retry
//!   into death by `disabled`; its one `herald.webhook.disabled` speaks for every delivery
//!   that dies with it, so none of those gets a `herald.delivery.dead` of its own.
//! - Herald's own events never cause another (`herald.delivery.dead` of a `herald.*` event
//!   is not emitted).

use super::breaker::{self, BreakerPolicy, Transition};
use super::notices::Notice;
use super::retry::{self, Backoff, Standing, Verdict};
use crate::model::*;
use crate::storage::AttemptFinished;
use std::time::{Duration, SystemTime};

/// One attempt that ended, and what came back.
#[derive(Debug, Clone)]
pub struct Ended<'a> {
    pub delivery: DeliveryRef,
    /// The event's name (`herald.*` events send no notice of their deaths).
    pub event: &'a str,
    /// When the event was ingested (its delivery lag is measured from there) and its place
    /// in its batch: with the sequence number, its public id (wanted only for a death's
    /// notice, so only made then).
    pub event_at: Millis,
    pub event_order: u16,
    /// 1-based, counted since the delivery was created.
    pub attempt: u32,
    /// Attempts made before its latest (re-)queue, and when that was (its TTL's start).
    pub base_attempts: u32,
    pub queued_at: Millis,
    pub started_at: Millis,
    /// The breaker's half-open probe.
    pub probe: bool,
    /// The headers as recorded (see `endpoint::recorded`).
    pub request_headers: Vec<(String, String)>,
    pub result: AttemptResult,
    pub status_code: Option<u16>,
    pub retry_after: Option<String>,
    pub error: Option<String>,
    pub latency: Duration,
    /// Up to the excerpt limit of the receiver's answer.
    pub body: Vec<u8>,
}

/// The rules an attempt is judged by.
#[derive(Debug, Clone)]
pub struct Rules<'a> {
    pub webhook_id: &'a WebhookId,
    /// Derives the public ids a notice names.
    pub id_key: &'a IdKey,
    pub max_retries: u32,
    pub backoff: &'a Backoff,
    pub breaker: &'a BreakerPolicy,
    pub ttl: Duration,
}

/// What the attempt decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub verdict: Verdict,
    pub next: NextStep,
    /// The webhook's health after it (also in `record`).
    pub status: WebhookStatus,
    pub transition: Option<Transition>,
    pub record: AttemptFinished,
    /// Herald's own events to ingest with the record, in order.
    pub notices: Vec<Notice>,
    pub counters: Tally,
}

/// What the metrics count of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tally {
    pub result: AttemptResult,
    pub latency_seconds: f64,
    /// Delivered: seconds from ingest to success.
    pub delivered_after_seconds: Option<f64>,
    pub died: bool,
}

/// Judges one ended attempt. `status` is the webhook's health before it, `now` when it
/// ended, `draw` uniform in `[0, 1)` (the backoff's jitter).
pub fn decide(ended: Ended<'_>, rules: &Rules<'_>, status: &WebhookStatus, now: Millis, draw: f64) -> Decision {
    let wall = SystemTime::UNIX_EPOCH + Duration::from_millis(now);
    let verdict = retry::classify(ended.result, ended.status_code, ended.retry_after.as_deref(), wall);
    let seen = breaker::Outcome {
        success: verdict == Verdict::Success,
        gone: verdict == Verdict::Gone,
        status_code: ended.status_code,
        error: ended.error.clone(),
        at: now,
        probe: ended.probe,
    };
    let (status, transition) = breaker::after_attempt(status, &seen, rules.breaker);
    let standing = Standing {
        attempt: ended.attempt,
        base_attempts: ended.base_attempts,
        max_retries: rules.max_retries,
        queued_at: ended.queued_at,
    };
    let mut next = retry::next_step(verdict, standing, rules.backoff, rules.ttl, now, draw);
    let disabled = status.state == HealthState::Disabled;
    if disabled && matches!(next, NextStep::RetryAt(_)) {
        next = NextStep::Dead(DeadReason::Disabled);
    }

    let mut notices = Vec::new();
    if let Some(t) = &transition {
        notices.push(Notice::of_transition(t, rules.webhook_id, &status));
    }
    if let (NextStep::Dead(reason), false) = (&next, disabled) {
        let delivery_id = DeliveryId::from_ref(ended.delivery, ended.event_at, ended.event_order, rules.id_key);
        notices.extend(Notice::delivery_dead(ended.event, &delivery_id, rules.webhook_id, reason, ended.attempt));
    }
    let counters = Tally {
        result: ended.result,
        latency_seconds: ended.latency.as_secs_f64(),
        delivered_after_seconds: matches!(next, NextStep::Succeeded)
            .then(|| now.saturating_sub(ended.event_at) as f64 / 1000.0),
        died: matches!(next, NextStep::Dead(_)),
    };
    let failed = verdict != Verdict::Success;
    let record = AttemptFinished {
        delivery: ended.delivery,
        webhook_id: rules.webhook_id.clone(),
        attempt: ended.attempt,
        started_at: ended.started_at,
        at: now,
        outcome: AttemptOutcome {
            result: ended.result,
            status_code: ended.status_code,
            latency_us: ended.latency.as_micros() as u64,
            error: ended.error,
            response_excerpt: (failed && !ended.body.is_empty()).then_some(ended.body),
            request_headers: ended.request_headers,
        },
        next: next.clone(),
        status: status.clone(),
    };
    Decision { verdict, next, status, transition, record, notices, counters }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_800_000_000_000;

    fn key() -> IdKey {
        IdKey([7; 16])
    }

    fn ended(attempt: u32, result: AttemptResult, status_code: Option<u16>) -> Ended<'static> {
        Ended {
            delivery: DeliveryRef { seq: 42, index: 0 },
            event: "lead.qualified",
            event_at: NOW - 5_000,
            event_order: 0,
            attempt,
            base_attempts: 0,
            queued_at: NOW - 5_000,
            started_at: NOW - 20,
            probe: false,
            request_headers: vec![("X-Team".into(), "sales".into())],
            result,
            status_code,
            retry_after: None,
            error: None,
            latency: Duration::from_millis(20),
            body: b"nope".to_vec(),
        }
    }

    fn ok(attempt: u32) -> Ended<'static> {
        ended(attempt, AttemptResult::Success, Some(200))
    }

    fn failing(attempt: u32, code: u16) -> Ended<'static> {
        ended(attempt, AttemptResult::HttpError, Some(code))
    }

    struct Policy {
        webhook: WebhookId,
        key: IdKey,
        backoff: Backoff,
        breaker: BreakerPolicy,
    }

    fn policy() -> Policy {
        Policy {
            webhook: WebhookId::parse("wh_01JZ8YQ3N6V2K7T9R4M1X5C8D0").unwrap(),
            key: key(),
            backoff: Backoff { initial: Duration::from_secs(1), max: Duration::from_secs(3600) },
            breaker: BreakerPolicy {
                threshold: 3,
                cooldown: Duration::from_secs(30),
                disable_after: Duration::from_secs(5 * 86_400),
            },
        }
    }

    fn rules(p: &Policy, max_retries: u32) -> Rules<'_> {
        Rules {
            webhook_id: &p.webhook,
            id_key: &p.key,
            max_retries,
            backoff: &p.backoff,
            breaker: &p.breaker,
            ttl: Duration::from_secs(72 * 3600),
        }
    }

    fn names(d: &Decision) -> Vec<&'static str> {
        d.notices.iter().map(Notice::name).collect()
    }

    #[test]
    fn a_success_is_recorded_counted_with_its_lag_and_keeps_no_answer() {
        let p = policy();
        let d = decide(ok(1), &rules(&p, 5), &WebhookStatus::default(), NOW, 0.5);
        assert_eq!((d.verdict, &d.next), (Verdict::Success, &NextStep::Succeeded));
        assert_eq!(d.counters.delivered_after_seconds, Some(5.0));
        assert!(!d.counters.died && d.notices.is_empty() && d.transition.is_none());
        assert_eq!(d.record.outcome.response_excerpt, None, "a success's answer is not kept");
        assert_eq!(d.record.status.state, HealthState::Healthy);
        assert_eq!((d.record.at, d.record.next.clone()), (NOW, NextStep::Succeeded));
    }

    #[test]
    fn a_failure_retries_with_backoff_and_jitter_from_the_draw() {
        let p = policy();
        // Failure 3 waits 4 s plus up to 10 %: the draw 0.5 gives 5 %.
        let d = decide(failing(3, 500), &rules(&p, 5), &WebhookStatus::default(), NOW, 0.5);
        assert_eq!(d.next, NextStep::RetryAt(NOW + 4_200));
        assert_eq!(d.record.outcome.response_excerpt.as_deref(), Some(&b"nope"[..]));
        assert_eq!(d.status.consecutive_failures, 1);
        let same = decide(failing(3, 500), &rules(&p, 5), &WebhookStatus::default(), NOW, 0.5);
        assert_eq!(same, d, "the same inputs, the same decision");
    }

    #[test]
    fn retry_after_of_a_429_or_503_is_honoured_up_to_the_longest_backoff() {
        let p = policy();
        for code in [429, 503] {
            let mut e = failing(1, code);
            e.retry_after = Some("120".into());
            let d = decide(e, &rules(&p, 5), &WebhookStatus::default(), NOW, 0.0);
            assert_eq!(d.next, NextStep::RetryAt(NOW + 120_000), "{code}");
        }
        let mut e = failing(1, 500);
        e.retry_after = Some("120".into());
        assert_eq!(decide(e, &rules(&p, 5), &WebhookStatus::default(), NOW, 0.0).next, NextStep::RetryAt(NOW + 1_000));
    }

    #[test]
    fn gone_disables_the_webhook_with_one_notice_for_every_delivery_it_kills() {
        let p = policy();
        let d = decide(failing(1, 410), &rules(&p, 5), &WebhookStatus::default(), NOW, 0.0);
        assert_eq!(d.next, NextStep::Dead(DeadReason::Gone));
        assert_eq!(d.status.state, HealthState::Disabled);
        assert!(matches!(d.transition, Some(Transition::Disabled(_))));
        assert_eq!(names(&d), ["herald.webhook.disabled"], "no herald.delivery.dead beside it");
        assert!(d.counters.died);
    }

    #[test]
    fn retries_exhausted_and_expired_deliveries_die_with_a_notice() {
        let p = policy();
        let d = decide(failing(6, 500), &rules(&p, 5), &WebhookStatus::default(), NOW, 0.0);
        assert_eq!(d.next, NextStep::Dead(DeadReason::RetriesExhausted));
        assert_eq!(names(&d), ["herald.delivery.dead"]);
        let Notice::DeliveryDead { reason, attempts, delivery_id, .. } = &d.notices[0] else {
            panic!("{:?}", d.notices)
        };
        assert_eq!((reason.as_str(), *attempts), ("retries_exhausted", 6));
        let expected = DeliveryId::from_ref(DeliveryRef { seq: 42, index: 0 }, NOW - 5_000, 0, &key());
        assert_eq!(delivery_id, &expected);
        let data: serde_json::Value = serde_json::from_slice(&d.notices[0].data()).unwrap();
        assert_eq!(data["event_id"], expected.event_id().as_str());

        let mut old = failing(2, 500);
        old.queued_at = NOW - 73 * 3_600_000;
        let d = decide(old, &rules(&p, 5), &WebhookStatus::default(), NOW, 0.0);
        assert_eq!(d.next, NextStep::Dead(DeadReason::Expired));

        // Herald's own events die quietly.
        let mut own = failing(6, 500);
        own.event = "herald.circuit.opened";
        assert!(decide(own, &rules(&p, 5), &WebhookStatus::default(), NOW, 0.0).notices.is_empty());
    }

    #[test]
    fn the_breaker_opens_probes_closes_and_reopens_for_twice_as_long() {
        let p = policy();
        let r = rules(&p, 20);
        let mut status = WebhookStatus::default();
        for n in 1..=2 {
            let d = decide(failing(n, 500), &r, &status, NOW, 0.0);
            assert!(d.transition.is_none(), "{n}");
            status = d.status;
        }
        let opened = decide(failing(3, 500), &r, &status, NOW, 0.0);
        assert_eq!(opened.transition, Some(Transition::OpenedSecrets));
        assert_eq!(names(&opened), ["herald.circuit.opened"]);
        assert_eq!((opened.status.state, opened.status.breaker_until), (HealthState::CircuitOpen, Some(NOW + 30_000)));

        // The half-open probe fails: open again, for twice as long.
        let mut probe = failing(4, 500);
        probe.probe = true;
        let later = NOW + 30_000;
        let reopened = decide(probe, &r, &opened.status, later, 0.0);
        assert_eq!(reopened.status.state, HealthState::CircuitOpen);
        assert_eq!(reopened.status.breaker_until, Some(later + 60_000));
        assert!(reopened.transition.is_none(), "still open: no new notice");

        // The next probe succeeds: closed, with its notice.
        let mut probe = ok(5);
        probe.probe = true;
        let closed = decide(probe, &r, &reopened.status, later + 60_000, 0.0);
        assert_eq!(closed.transition, Some(Transition::Closed));
        assert_eq!(names(&closed), ["herald.circuit.closed"]);
        assert_eq!(closed.status.state, HealthState::Healthy);
    }

    #[test]
    fn an_ordered_head_that_fails_stays_the_head_until_it_succeeds_or_dies() {
        // Order is the actor's (one in flight); what it needs from here is that a failed
        // head gets a due time and not a death while retries remain, and dies once they run out.
        let p = policy();
        let r = rules(&p, 2);
        assert!(matches!(decide(failing(1, 500), &r, &WebhookStatus::default(), NOW, 0.0).next, NextStep::RetryAt(_)));
        assert!(matches!(decide(failing(2, 500), &r, &WebhookStatus::default(), NOW, 0.0).next, NextStep::RetryAt(_)));
        // The first attempt and two retries: the third failure is the last.
        assert_eq!(
            decide(failing(3, 500), &r, &WebhookStatus::default(), NOW, 0.0).next,
            NextStep::Dead(DeadReason::RetriesExhausted)
        );
    }

    #[test]
    fn a_webhook_disabled_before_the_attempt_ends_it_as_disabled_without_a_notice() {
        let p = policy();
        let status = WebhookStatus { state: HealthState::Disabled, ..WebhookStatus::default() };
        let d = decide(failing(1, 500), &rules(&p, 5), &status, NOW, 0.0);
        assert_eq!(d.next, NextStep::Dead(DeadReason::Disabled));
        assert!(d.notices.is_empty());
    }
}
