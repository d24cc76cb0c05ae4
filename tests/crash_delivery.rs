//! Crash replay with the real binary (contract §5, at-least-once): thousands of deliveries
//! pending or in flight to a receiver that is down or slow, `kill -9` at random moments,
//! restart, receiver back: every delivery arrives — the receiver counts distinct
//! `X-Webhook-Delivery-Id`s, none missing — and the duplicates per crash stay within the
//! documented bound (attempts in flight, `max_in_flight` per webhook, plus those finished in
//! the last flush window).

mod common;

use common::receiver::{Receiver, Reply};
use common::*;
use rand::Rng;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WEBHOOKS: usize = 2;
const MAX_IN_FLIGHT: usize = 16;
const EVENTS_PER_ROUND: usize = 1000;
/// What the last flush window may add per crash, over every webhook: attempts finish a few
/// hundred per millisecond at most here and a flush takes a few milliseconds.
const FLUSH_WINDOW_SLACK: usize = 400;

/// Receiver modes.
const DOWN: u8 = 0;
const SLOW: u8 = 1;
const UP: u8 = 2;

fn start(dir: &std::path::Path) -> Herald {
    let h = Herald::serve(
        dir,
        &["--dev"],
        &[
            ("HERALD_ADMIN_TOKEN", ADMIN),
            ("HERALD_INITIAL_BACKOFF", "50ms"),
            ("HERALD_MAX_BACKOFF", "200ms"),
            ("HERALD_BREAKER_COOLDOWN", "200ms"),
        ],
    );
    h.wait_ready();
    h
}

fn kill(mut h: Herald) {
    h.signal(libc::SIGKILL);
    h.wait_exit(Duration::from_secs(10));
}

#[test]
fn every_delivery_arrives_across_repeated_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let r = Receiver::start();
    let mode = Arc::new(AtomicU8::new(UP));
    let m = mode.clone();
    r.answer(move |_| match m.load(Ordering::SeqCst) {
        DOWN => Reply::status(503),
        SLOW => Reply::ok().after(Duration::from_millis(30)),
        _ => Reply::ok(),
    });
    let mut rng = rand::thread_rng();
    let h = start(dir.path());
    let key = account(&h, "AstroLeads");
    for i in 0..WEBHOOKS {
        let body = json!({"url": r.url(&format!("/w{i}")), "events": ["*"], "max_retries": 20, "max_in_flight": MAX_IN_FLIGHT});
        assert_eq!(h.json("POST", "/api/v1/webhooks", Some(&key), &body).status, 201);
    }
    let mut h = Some(h);
    let mut expected = 0usize;
    let mut duplicates_before = 0usize;
    for round in 0..5 {
        let herald = h.take().unwrap_or_else(|| start(dir.path()));
        mode.store(if round % 2 == 0 { DOWN } else { SLOW }, Ordering::SeqCst);
        for b in 0..EVENTS_PER_ROUND / 100 {
            let batch: Vec<Value> = (0..100)
                .map(|i| json!({"event": "lead.created", "data": {"round": round, "i": b * 100 + i}}))
                .collect();
            let a = herald.json("POST", "/api/v1/events/batch", Some(&key), &json!(batch));
            assert_eq!(a.status, 202, "{}", a.text);
        }
        expected += EVENTS_PER_ROUND * WEBHOOKS;
        // First crash: while the receiver is down or slow.
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..400)));
        kill(herald);

        // Second crash: the receiver is back and the replay is under way.
        mode.store(UP, Ordering::SeqCst);
        let herald = start(dir.path());
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..300)));
        kill(herald);

        let herald = start(dir.path());
        wait_for(&format!("round {round}: all {expected} deliveries"), Duration::from_secs(90), || {
            accepted_ids(&r).len() >= expected
        });
        let accepted = r.accepted();
        let distinct = accepted_ids(&r).len();
        assert_eq!(distinct, expected, "round {round}: no delivery missing, none invented");
        let duplicates = accepted.len() - distinct - duplicates_before;
        duplicates_before += duplicates;
        let bound = 2 * (WEBHOOKS * MAX_IN_FLIGHT + FLUSH_WINDOW_SLACK);
        eprintln!("round {round}: {expected} deliveries, {duplicates} duplicates over 2 crashes (bound {bound})");
        assert!(duplicates <= bound, "round {round}: {duplicates} duplicates over two crashes (bound {bound})");
        // Nothing is left pending once the last attempts are recorded.
        wait_for("no delivery pending", Duration::from_secs(10), || {
            herald.json("GET", "/api/v1/stats", Some(&key), &Value::Null).body["pending"].as_u64() == Some(0)
        });
        h = Some(herald);
    }
}

fn accepted_ids(r: &Receiver) -> HashSet<String> {
    r.accepted().iter().map(|h| h.delivery_id()).collect()
}
