//! Actors that stop when idle (`actor_idle`): a webhook with nothing to send gives up its
//! actor, and its next delivery starts a fresh one that picks up where the log says the
//! webhook stands — nothing lost, nothing sent twice, the breaker's state kept.

mod common;

use common::receiver::{Receiver, Reply};
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// `herald_endpoint_actors` as `/metrics` reports it now.
fn actors(h: &Herald) -> u64 {
    let (status, text) = h.get("/metrics");
    assert_eq!(status, 200);
    text.lines()
        .find_map(|l| l.strip_prefix("herald_endpoint_actors "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no herald_endpoint_actors in:\n{text}"))
}

#[test]
fn actors_stop_when_idle_and_start_again_losing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Actors stop 5 ms after their last work: between the paced events below they stop and
    // start again over and over, racing the events routed to them.
    let h = herald_with(dir.path(), &[("HERALD_ACTOR_IDLE", "5ms")]);
    let key = account(&h, "LeadNest");
    let r = Receiver::start();
    for i in 0..3 {
        create_webhook(&h, &key, json!({"url": r.url(&format!("/in/{i}")), "events": ["lead.*"]}));
    }
    assert_eq!(actors(&h), 0, "a webhook owed nothing has no actor");

    let mut stopped_between = 0;
    for i in 0..150u64 {
        let a = h.json("POST", "/api/v1/events", Some(&key), &json!({"event": "lead.created", "data": {"i": i}}));
        assert_eq!(a.status, 202, "{}", a.text);
        // Pauses of 0 to 12 ms, a fixed sequence: some shorter than the idle time, some longer.
        std::thread::sleep(Duration::from_millis((i * 7) % 13));
        if i % 30 == 29 {
            wait_for("the actors to stop", Duration::from_secs(10), || actors(&h) == 0);
            stopped_between += 1;
        }
    }
    wait_for("all 450 deliveries", Duration::from_secs(20), || r.distinct().len() == 450);
    assert_eq!(stopped_between, 5);
    assert_eq!(r.count(), 450, "no delivery went out twice");
    for i in 0..3 {
        assert_eq!(r.hits_on(&format!("/in/{i}")).len(), 150);
    }
    wait_for("every actor stopped", Duration::from_secs(10), || actors(&h) == 0);
    let s = h.json("GET", "/api/v1/stats", Some(&key), &Value::Null);
    assert_eq!(s.body["pending"], 0, "{}", s.text);
}

#[test]
fn an_open_breaker_stays_open_while_its_actor_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_with(
        dir.path(),
        &[("HERALD_ACTOR_IDLE", "50ms"), ("HERALD_BREAKER_THRESHOLD", "2"), ("HERALD_BREAKER_COOLDOWN", "1h")],
    );
    let key = account(&h, "AutoReach");
    let r = Receiver::start();
    r.answer(|_| Reply::status(500));
    let hook = create_webhook(&h, &key, json!({"url": r.url("/in"), "events": ["*"], "max_retries": 0}));
    for i in 0..2 {
        let a = h.json("POST", "/api/v1/events", Some(&key), &json!({"event": "email.bounced", "data": {"i": i}}));
        assert_eq!(a.status, 202);
    }
    let status = || h.json("GET", &format!("/api/v1/webhooks/{hook}"), Some(&key), &Value::Null).body["status"].clone();
    // Both deliveries died on their one attempt; the two failures opened the breaker.
    wait_for("the breaker to open", Duration::from_secs(10), || status()["state"] == "circuit_open");
    wait_for("the actor to stop", Duration::from_secs(10), || actors(&h) == 0);
    assert_eq!(r.count(), 2);

    // A new event starts a new actor, which reads the open breaker from the log: nothing goes
    // out for the hour-long cooldown.
    let a = h.json("POST", "/api/v1/events", Some(&key), &json!({"event": "email.bounced", "data": {"i": 2}}));
    assert_eq!(a.status, 202);
    wait_for("the webhook to owe one delivery", Duration::from_secs(10), || status()["pending"] == 1);
    let deadline = std::time::Instant::now() + Duration::from_millis(500);
    while std::time::Instant::now() < deadline {
        assert_eq!(r.count(), 2, "an attempt went out through an open breaker");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(actors(&h), 1, "the waiting delivery keeps its actor up");
    assert_eq!(status()["state"], "circuit_open");
}
