//! The circuit breaker (contract §5), counted at real receivers: an endpoint failing forever
//! gets only the probes once its breaker is open, with the cooldown doubling; it recovers
//! when the receiver comes back with no delivery lost; transitions reach subscribers as
//! `herald.circuit.*` events; and a dead endpoint does not slow a healthy one.

mod common;

use common::receiver::{Receiver, Reply};
use common::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn an_open_breaker_lets_only_probes_through_then_closes_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_with(
        dir.path(),
        &[
            ("HERALD_BREAKER_THRESHOLD", "3"),
            ("HERALD_BREAKER_COOLDOWN", "400ms"),
            ("HERALD_INITIAL_BACKOFF", "20ms"),
            ("HERALD_MAX_BACKOFF", "50ms"),
        ],
    );
    let key = account(&h, "AstroLeads");
    let r = Receiver::start();
    let up = Arc::new(AtomicBool::new(false));
    let u = up.clone();
    r.answer(move |hit| if hit.path == "/ops" || u.load(Ordering::SeqCst) { Reply::ok() } else { Reply::status(500) });
    let hook = create_webhook(
        &h,
        &key,
        json!({"url": r.url("/in"), "events": ["lead.*"], "max_retries": 20, "max_in_flight": 1}),
    );
    create_webhook(&h, &key, json!({"url": r.url("/ops"), "events": ["herald.circuit.*"]}));
    let batch: Vec<Value> = (0..10).map(|i| json!({"event": "lead.created", "data": {"i": i}})).collect();
    assert_eq!(h.json("POST", "/api/v1/events/batch", Some(&key), &json!(batch)).status, 202);

    wait_for("herald.circuit.opened", Duration::from_secs(10), || !r.hits_on("/ops").is_empty());
    let opened = r.hits_on("/ops")[0].json();
    assert_eq!(
        (opened["event"].as_str(), opened["data"]["webhook_id"].as_str()),
        (Some("herald.circuit.opened"), Some(hook.as_str()))
    );
    assert_eq!(r.hits_on("/in").len(), 3, "three failures opened it");
    let w = h.json("GET", &format!("/api/v1/webhooks/{hook}"), Some(&key), &Value::Null);
    assert_eq!(w.body["status"]["state"], "circuit_open", "{}", w.text);
    // Every waiting delivery says when it will really go: not before the breaker lets it,
    // and not at a time already past (its own retry time passed long ago: 20–50 ms backoff).
    let read_at = herald::model::now_millis();
    let waiting = h.json("GET", &format!("/api/v1/webhooks/{hook}/deliveries?limit=20"), Some(&key), &Value::Null);
    let waiting: Vec<&Value> =
        waiting.body["data"].as_array().unwrap().iter().filter(|d| d["status"] != "succeeded").collect();
    assert_eq!(waiting.len(), 10);
    for d in waiting {
        let next = herald::model::time::parse_rfc3339(d["next_attempt_at"].as_str().unwrap()).unwrap();
        assert!(next + 5 >= read_at, "next_attempt_at {} is in the past: {d}", next);
        assert!(next <= read_at + 1_000, "within the 400 ms cooldown: {d}");
    }

    // Two probes: after 400 ms, then after 800 ms; nothing in between.
    wait_for("two probes", Duration::from_secs(5), || r.hits_on("/in").len() >= 5);
    let hits = r.hits_on("/in");
    assert_eq!(hits.len(), 5, "only probes while open");
    let first = hits[3].at.duration_since(hits[2].at).as_millis();
    let second = hits[4].at.duration_since(hits[3].at).as_millis();
    assert!((380..1200).contains(&first), "first probe after {first} ms (cooldown 400 ms)");
    assert!((760..2000).contains(&second), "second probe after {second} ms (cooldown doubled)");

    // A test send goes out once even while the breaker is open.
    let t = h.json("POST", &format!("/api/v1/webhooks/{hook}/test"), Some(&key), &json!({}));
    assert_eq!((t.status, t.body["status_code"].as_u64()), (200, Some(500)), "{}", t.text);
    assert_eq!(r.hits_on("/in").len(), 6);

    // The receiver comes back: the next probe closes the breaker and everything arrives.
    up.store(true, Ordering::SeqCst);
    wait_for("all ten deliveries", Duration::from_secs(10), || {
        r.accepted()
            .iter()
            .filter(|h| h.path == "/in")
            .map(|h| h.delivery_id())
            .collect::<std::collections::HashSet<_>>()
            .len()
            == 10
    });
    let delivered: std::collections::HashSet<String> = r.accepted().iter().map(|h| h.delivery_id()).collect();
    assert!(delivered.contains(&hits[3].delivery_id()), "a probe is a real attempt of a waiting delivery");
    wait_for("herald.circuit.closed", Duration::from_secs(10), || r.hits_on("/ops").len() >= 2);
    assert_eq!(r.hits_on("/ops")[1].json()["event"], "herald.circuit.closed");
    // The receiver sees a delivery before Herald has recorded its answer, so `pending`
    // reaches 0 a moment after the last receipt.
    let status = || h.json("GET", &format!("/api/v1/webhooks/{hook}"), Some(&key), &Value::Null).body["status"].clone();
    wait_for("nothing pending", Duration::from_secs(5), || status()["pending"] == 0);
    assert_eq!(status()["state"], "healthy");
    let m = h.get("/metrics").1;
    assert!(m.contains("herald_circuit_transitions_total{to=\"open\"} 1"), "{m}");
    assert!(m.contains("herald_circuit_transitions_total{to=\"closed\"} 1"), "{m}");
}

/// p99 of the lags (ms) from each event's send to its receipt at `r` on `path`.
fn paced_lag_p99(h: &Herald, key: &str, r: &Receiver, path: &str, n: usize, tag: &str) -> f64 {
    let mut sent = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let due = start + Duration::from_millis(10 * i as u64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        sent.push(Instant::now());
        let a = h.json(
            "POST",
            "/api/v1/events",
            Some(key),
            &json!({"event": "lead.created", "data": {"tag": tag, "i": i}}),
        );
        assert_eq!(a.status, 202);
    }
    let mine = |r: &Receiver| -> Vec<common::receiver::Hit> {
        r.hits_on(path).into_iter().filter(|h| h.json()["data"]["tag"] == tag).collect()
    };
    wait_for("every paced event", Duration::from_secs(20), || mine(r).len() >= n);
    let mut lags: Vec<f64> = mine(r)
        .iter()
        .map(|hit| {
            let i = hit.json()["data"]["i"].as_u64().unwrap() as usize;
            hit.at.duration_since(sent[i]).as_secs_f64() * 1000.0
        })
        .collect();
    lags.sort_by(|a, b| a.partial_cmp(b).unwrap());
    lags[(lags.len() * 99 / 100).min(lags.len() - 1)]
}

#[test]
fn a_dead_endpoint_does_not_slow_a_healthy_one() {
    let dir = tempfile::tempdir().unwrap();
    // The breaker never opens here: the dead endpoint keeps all its slots busy with
    // attempts that hang until they time out, and keeps being retried, throughout.
    let h = herald_with(dir.path(), &[("HERALD_BREAKER_THRESHOLD", "100000"), ("HERALD_INITIAL_BACKOFF", "100ms")]);
    let key = account(&h, "LeadNest");
    let healthy = Receiver::start();
    create_webhook(&h, &key, json!({"url": healthy.url("/in"), "events": ["lead.*"]}));
    let hanging = format!("http://127.0.0.1:{}/in", common::receiver::black_hole());
    let dead = [create_webhook(
        &h,
        &key,
        json!({"url": hanging, "events": ["lead.*"], "timeout": 1, "max_retries": 20, "max_in_flight": 16}),
    )];
    let set_dead = |active: bool| {
        for id in &dead {
            let a = h.json("PATCH", &format!("/api/v1/webhooks/{id}"), Some(&key), &json!({"is_active": active}));
            assert_eq!(a.status, 200, "{}", a.text);
        }
    };
    set_dead(false);
    paced_lag_p99(&h, &key, &healthy, "/in", 100, "warm-up");
    // Noisy shared machines: compare fresh pairs of measurements, up to three times.
    let mut seen = Vec::new();
    for round in 0..3 {
        set_dead(false);
        let alone = paced_lag_p99(&h, &key, &healthy, "/in", 200, &format!("alone-{round}"));
        set_dead(true);
        let beside_dead = paced_lag_p99(&h, &key, &healthy, "/in", 200, &format!("dead-{round}"));
        seen.push((alone, beside_dead));
        if beside_dead <= 1.2 * alone + 5.0 {
            return;
        }
    }
    panic!("healthy p99 lag in ms (alone, beside dead endpoints): {seen:?}");
}

#[test]
fn a_manual_retry_goes_out_once_while_the_breaker_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_with(dir.path(), &[("HERALD_BREAKER_THRESHOLD", "3"), ("HERALD_BREAKER_COOLDOWN", "1h")]);
    let key = account(&h, "AutoReach");
    let r = Receiver::start();
    r.answer(|_| Reply::status(500));
    // No retries: each failure is a dead letter, and three of them open the breaker.
    let hook =
        create_webhook(&h, &key, json!({"url": r.url("/in"), "events": ["*"], "max_retries": 0, "max_in_flight": 1}));
    let ids: Vec<String> = (0..4)
        .map(|i| {
            let e = h.json("POST", "/api/v1/events", Some(&key), &json!({"event": "email.sent", "data": {"i": i}}));
            let ev =
                h.json("GET", &format!("/api/v1/events/{}", e.body["id"].as_str().unwrap()), Some(&key), &Value::Null);
            ev.body["deliveries"][0]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    wait_for("the breaker to open", Duration::from_secs(10), || {
        h.json("GET", &format!("/api/v1/webhooks/{hook}"), Some(&key), &Value::Null).body["status"]["state"]
            == "circuit_open"
    });
    assert_eq!(r.count(), 3, "the fourth delivery waits behind the open breaker");
    r.answer(|_| Reply::ok());
    let a = h.json("POST", &format!("/api/v1/deliveries/{}/retry", ids[0]), Some(&key), &json!({}));
    assert_eq!(a.status, 202, "{}", a.text);
    wait_for("the retried delivery", Duration::from_secs(10), || {
        h.json("GET", &format!("/api/v1/deliveries/{}", ids[0]), Some(&key), &Value::Null).body["status"] == "succeeded"
    });
    assert_eq!(r.hits()[3].delivery_id(), ids[0], "the retried one went out first, through the open breaker");
    // Its success showed the endpoint works: the breaker closes and the waiting one follows,
    // without waiting out the hour-long cooldown.
    wait_for("the waiting delivery", Duration::from_secs(10), || {
        h.json("GET", &format!("/api/v1/deliveries/{}", ids[3]), Some(&key), &Value::Null).body["status"] == "succeeded"
    });
    let w = h.json("GET", &format!("/api/v1/webhooks/{hook}"), Some(&key), &Value::Null);
    assert_eq!(w.body["status"]["state"], "healthy", "{}", w.text);
    assert_eq!(r.count(), 5);
}

#[test]
fn edits_reach_the_actor_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_with(dir.path(), &[("HERALD_INITIAL_BACKOFF", "50ms"), ("HERALD_MAX_BACKOFF", "50ms")]);
    let key = account(&h, "LeadNest");
    let r = Receiver::start();
    let up = Arc::new(AtomicBool::new(true));
    let u = up.clone();
    r.answer(move |_| if u.load(Ordering::SeqCst) { Reply::ok() } else { Reply::status(503) });
    let hook = create_webhook(&h, &key, json!({"url": r.url("/a"), "events": ["*"], "max_retries": 20}));
    let patch = |body: Value| {
        let a = h.json("PATCH", &format!("/api/v1/webhooks/{hook}"), Some(&key), &body);
        assert_eq!(a.status, 200, "{}", a.text);
    };
    let send = |i: u32| {
        let e = h.json("POST", "/api/v1/events", Some(&key), &json!({"event": "lead.created", "data": {"i": i}}));
        assert_eq!(e.status, 202, "{}", e.text);
        e.body
    };
    send(0);
    wait_for("the first delivery at /a", Duration::from_secs(10), || r.hits_on("/a").len() == 1);

    // A new URL and a new custom header apply to the very next attempt.
    patch(json!({"url": r.url("/b"), "headers": {"X-Edit": "2"}}));
    send(1);
    wait_for("the next delivery at /b", Duration::from_secs(10), || r.hits_on("/b").len() == 1);
    assert_eq!(r.hits_on("/b")[0].header("x-edit"), Some("2"));

    // Paused: a delivery being retried stops going out until the webhook is enabled again.
    up.store(false, Ordering::SeqCst);
    let e = send(2);
    wait_for("a few failed attempts", Duration::from_secs(10), || r.hits_on("/b").len() >= 3);
    patch(json!({"is_active": false}));
    let paused_at = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(500)); // the window observed for silence
    let during: Vec<_> =
        r.hits_on("/b").into_iter().filter(|h| h.at > paused_at + Duration::from_millis(100)).collect();
    assert!(during.is_empty(), "{} attempts while paused", during.len());
    up.store(true, Ordering::SeqCst);
    patch(json!({"is_active": true}));
    let ev = h.json("GET", &format!("/api/v1/events/{}", e["id"].as_str().unwrap()), Some(&key), &Value::Null);
    let id = ev.body["deliveries"][0]["id"].as_str().unwrap().to_owned();
    wait_for("the paused delivery to go out", Duration::from_secs(10), || {
        h.json("GET", &format!("/api/v1/deliveries/{id}"), Some(&key), &Value::Null).body["status"] == "succeeded"
    });

    // Deleted: what waits dies with reason `deleted`, nothing more goes out.
    up.store(false, Ordering::SeqCst);
    let e = send(3);
    let ev = h.json("GET", &format!("/api/v1/events/{}", e["id"].as_str().unwrap()), Some(&key), &Value::Null);
    let id = ev.body["deliveries"][0]["id"].as_str().unwrap().to_owned();
    wait_for("a failed attempt", Duration::from_secs(10), || {
        r.hits_on("/b").iter().any(|h| h.json()["data"]["i"] == 3)
    });
    assert_eq!(h.json("DELETE", &format!("/api/v1/webhooks/{hook}"), Some(&key), &Value::Null).status, 204);
    let d = h.json("GET", &format!("/api/v1/deliveries/{id}"), Some(&key), &Value::Null);
    assert_eq!(
        (d.body["status"].as_str(), d.body["dead_reason"].as_str()),
        (Some("dead"), Some("deleted")),
        "{}",
        d.text
    );
    // The actor hears of the deletion just after its 204: let an attempt already on its way land.
    std::thread::sleep(Duration::from_millis(100));
    let after = r.count();
    std::thread::sleep(Duration::from_millis(300)); // the window observed for silence
    assert_eq!(r.count(), after, "a deleted webhook sends nothing");
}
