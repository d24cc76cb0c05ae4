//! Retries, dead letters and bounded failure (contract §5) against real receivers on 127.0.0.1
//! that misbehave on purpose, with retry timings configured in milliseconds.

mod common;

use common::receiver::{Receiver, Reply};
use common::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn ingest(h: &Herald, key: &str, event: &str, data: Value) -> Value {
    let a = h.json("POST", "/api/v1/events", Some(key), &json!({"event": event, "data": data}));
    assert_eq!(a.status, 202, "{}", a.text);
    a.body
}

fn get(h: &Herald, key: &str, path: &str) -> Value {
    let a = h.json("GET", path, Some(key), &Value::Null);
    assert_eq!(a.status, 200, "{path}: {}", a.text);
    a.body
}

/// The only delivery of an event.
fn delivery_of(h: &Herald, key: &str, event: &Value) -> Value {
    let e = get(h, key, &format!("/api/v1/events/{}", event["id"].as_str().unwrap()));
    e["deliveries"][0].clone()
}

fn wait_status(h: &Herald, key: &str, delivery: &str, status: &str) -> Value {
    let mut last = Value::Null;
    wait_for(&format!("{delivery} to be {status}"), Duration::from_secs(15), || {
        last = get(h, key, &format!("/api/v1/deliveries/{delivery}"));
        last["status"] == status
    });
    last
}

fn ms_between(a: &common::receiver::Hit, b: &common::receiver::Hit) -> u128 {
    b.at.duration_since(a.at).as_millis()
}

#[test]
fn retries_follow_the_schedule_and_retry_after_then_die_and_come_back_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_with(
        dir.path(),
        &[("HERALD_INITIAL_BACKOFF", "100ms"), ("HERALD_MAX_BACKOFF", "5s"), ("HERALD_BREAKER_THRESHOLD", "100")],
    );
    let key = account(&h, "LeadNest");
    let r = Receiver::start();
    let failing = Arc::new(AtomicUsize::new(1));
    let f = failing.clone();
    let limited = Arc::new(AtomicUsize::new(0));
    let l = limited.clone();
    r.answer(move |hit| match hit.path.as_str() {
        "/limited" if l.fetch_add(1, Ordering::SeqCst) == 0 => Reply::status(429).header("Retry-After", "1"),
        "/dead" if f.load(Ordering::SeqCst) == 1 => Reply::status(500).body("boom"),
        "/ops" | "/limited" | "/dead" => Reply::ok(),
        _ => Reply::status(404),
    });
    let limited_hook = create_webhook(&h, &key, json!({"url": r.url("/limited"), "events": ["lead.qualified"]}));
    let dead_hook =
        create_webhook(&h, &key, json!({"url": r.url("/dead"), "events": ["email.bounced"], "max_retries": 2}));
    create_webhook(&h, &key, json!({"url": r.url("/ops"), "events": ["herald.*"]}));

    // 429 with Retry-After: 1 replaces the 100 ms backoff.
    let e = ingest(&h, &key, "lead.qualified", json!({"n": 1}));
    wait_for("the retry after Retry-After", Duration::from_secs(10), || r.hits_on("/limited").len() >= 2);
    let hits = r.hits_on("/limited");
    let gap = ms_between(&hits[0], &hits[1]);
    assert!((950..3000).contains(&gap), "waited {gap} ms for Retry-After: 1");
    let d = wait_status(&h, &key, delivery_of(&h, &key, &e)["id"].as_str().unwrap(), "succeeded");
    assert_eq!(d["attempts"][0]["status_code"], 429);
    assert_eq!(d["attempts"][0]["result"], "http_error");
    let _ = limited_hook;

    // 1 + max_retries attempts, backoff 100 ms then 200 ms (+ up to 10 % jitter), then dead.
    let e = ingest(&h, &key, "email.bounced", json!({"to": "x@example.com"}));
    let id = delivery_of(&h, &key, &e)["id"].as_str().unwrap().to_owned();
    let d = wait_status(&h, &key, &id, "dead");
    assert_eq!(d["dead_reason"], "retries_exhausted");
    let hits = r.hits_on("/dead");
    assert_eq!(hits.len(), 3, "exactly 1 + max_retries attempts");
    let (g1, g2) = (ms_between(&hits[0], &hits[1]), ms_between(&hits[1], &hits[2]));
    assert!((95..1000).contains(&g1) && (190..1500).contains(&g2), "gaps {g1} ms, {g2} ms");
    assert_eq!(d["attempts"].as_array().unwrap().len(), 3);
    assert_eq!(d["attempts"][2]["response_body"], "boom");
    assert!(d["next_attempt_at"].is_null());

    // The platform hears of it through its own stream.
    wait_for("herald.delivery.dead", Duration::from_secs(10), || !r.hits_on("/ops").is_empty());
    let ops = r.hits_on("/ops")[0].json();
    assert_eq!(ops["event"], "herald.delivery.dead");
    assert_eq!(ops["data"]["delivery_id"], id.as_str());
    assert_eq!(ops["data"]["reason"], "retries_exhausted");
    assert_eq!(ops["data"]["webhook_id"], dead_hook.as_str());
    assert_eq!(ops["data"]["attempts"], 3);

    // A manual retry gets fresh attempts; the receiver is back.
    failing.store(0, Ordering::SeqCst);
    let a = h.json("POST", &format!("/api/v1/deliveries/{id}/retry"), Some(&key), &json!({}));
    assert_eq!(a.status, 202, "{}", a.text);
    let d = wait_status(&h, &key, &id, "succeeded");
    assert_eq!(d["attempt_count"], 4);
    assert_eq!(r.hits_on("/dead")[3].header("x-webhook-attempt"), Some("4"));

    // Recover: two more die while it is down, then come back together.
    failing.store(1, Ordering::SeqCst);
    let since = get(&h, &key, &format!("/api/v1/deliveries/{id}"))["created_at"].as_str().unwrap().to_owned();
    let ids: Vec<String> = (0..2)
        .map(|i| {
            delivery_of(&h, &key, &ingest(&h, &key, "email.bounced", json!({"i": i})))["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    for id in &ids {
        wait_status(&h, &key, id, "dead");
    }
    failing.store(0, Ordering::SeqCst);
    let a = h.json("POST", &format!("/api/v1/webhooks/{dead_hook}/recover"), Some(&key), &json!({"since": since}));
    assert_eq!((a.status, a.body["requeued"].as_u64()), (202, Some(2)), "{}", a.text);
    for id in &ids {
        let d = wait_status(&h, &key, id, "succeeded");
        assert_eq!(d["attempt_count"], 4, "fresh attempts after 3 failed ones");
    }
    // One herald.delivery.dead per death: the first delivery's and the two recovered ones'.
    wait_for("three herald.delivery.dead", Duration::from_secs(10), || r.hits_on("/ops").len() >= 3);
    assert_eq!(r.hits_on("/ops").len(), 3);
    assert_eq!(r.distinct().len(), 1 + 3 + 3, "limited, three to /dead, three operational events");
}

#[test]
fn misbehaving_receivers_end_attempts_as_timeouts_network_errors_and_http_errors() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_with(dir.path(), &[]);
    let key = account(&h, "AutoReach");
    let r = Receiver::start();
    r.answer(|hit| match hit.path.as_str() {
        "/slow" => Reply::ok().after(Duration::from_secs(4)),
        "/redirect" => Reply::status(302).header("Location", "/target"),
        "/huge" => Reply::status(500).body(vec![b'x'; 10 << 20]),
        "/huge-ok" => Reply::ok().body(vec![b'y'; 10 << 20]),
        _ => Reply::ok(),
    });
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cases = [
        ("slow", r.url("/slow"), "timeout"),
        ("refused", format!("http://127.0.0.1:{closed}/in"), "network_error"),
        ("redirect", r.url("/redirect"), "http_error"),
        ("huge", r.url("/huge"), "http_error"),
        ("huge.ok", r.url("/huge-ok"), "success"),
    ];
    for (name, url, _) in &cases {
        create_webhook(
            &h,
            &key,
            json!({"url": url, "events": [format!("case.{name}")], "max_retries": 0, "timeout": 1}),
        );
    }
    for (name, _, expected) in &cases {
        let e = ingest(&h, &key, &format!("case.{name}"), json!({}));
        let id = delivery_of(&h, &key, &e)["id"].as_str().unwrap().to_owned();
        let want = if *expected == "success" { "succeeded" } else { "dead" };
        let d = wait_status(&h, &key, &id, want);
        let attempt = &d["attempts"][0];
        assert_eq!(attempt["result"], *expected, "{name}: {attempt}");
        match *name {
            "slow" => assert!(attempt["latency_ms"].as_f64().unwrap() < 3000.0, "{attempt}"),
            "redirect" => assert_eq!(attempt["status_code"], 302),
            "huge" => assert_eq!(attempt["response_body"].as_str().unwrap().len(), 4096, "capped at 4 KiB"),
            "huge.ok" => assert!(attempt["response_body"].is_null(), "bodies of successes are not kept"),
            _ => {}
        }
    }
    assert!(r.hits_on("/target").is_empty(), "redirects are not followed");
}

#[test]
fn an_endpoint_that_stays_down_expires_its_deliveries_even_with_the_breaker_open() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_with(
        dir.path(),
        &[
            ("HERALD_DELIVERY_TTL", "1s"),
            ("HERALD_INITIAL_BACKOFF", "100ms"),
            ("HERALD_BREAKER_THRESHOLD", "2"),
            ("HERALD_BREAKER_COOLDOWN", "1h"),
        ],
    );
    let key = account(&h, "AstroLeads");
    let r = Receiver::start();
    r.answer(|hit| if hit.path == "/ops" { Reply::ok() } else { Reply::status(503) });
    let hook = create_webhook(
        &h,
        &key,
        json!({"url": r.url("/down"), "events": ["lead.*"], "max_retries": 20, "max_in_flight": 1}),
    );
    create_webhook(
        &h,
        &key,
        json!({"url": r.url("/ops"), "events": ["herald.circuit.opened", "herald.delivery.dead"]}),
    );
    let events: Vec<Value> = (0..5).map(|i| ingest(&h, &key, "lead.created", json!({"i": i}))).collect();
    for e in &events {
        let id = delivery_of(&h, &key, e)["id"].as_str().unwrap().to_owned();
        let d = wait_status(&h, &key, &id, "dead");
        assert_eq!(d["dead_reason"], "expired", "{d}");
    }
    assert_eq!(r.hits_on("/down").len(), 2, "the breaker opened after two attempts; nothing went out after");
    let w = get(&h, &key, &format!("/api/v1/webhooks/{hook}"));
    assert_eq!(w["status"]["state"], "circuit_open");
    assert_eq!((w["status"]["pending"].as_u64(), w["status"]["dead_letters"].as_u64()), (Some(0), Some(5)));
    wait_for("the operational events", Duration::from_secs(10), || r.hits_on("/ops").len() >= 6);
    let names: Vec<String> = r.hits_on("/ops").iter().map(|h| h.json()["event"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names.iter().filter(|n| *n == "herald.circuit.opened").count(), 1, "{names:?}");
    assert_eq!(names.iter().filter(|n| *n == "herald.delivery.dead").count(), 5, "{names:?}");
}

#[test]
fn gone_disables_the_webhook_and_kills_what_waits_until_it_is_enabled_again() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_with(dir.path(), &[]);
    let key = account(&h, "LeadNest");
    let r = Receiver::start();
    let gone = Arc::new(AtomicUsize::new(1));
    let g = gone.clone();
    r.answer(move |hit| match hit.path.as_str() {
        "/ops" => Reply::ok(),
        _ if g.load(Ordering::SeqCst) == 1 => Reply::status(410).after(Duration::from_millis(300)),
        _ => Reply::ok(),
    });
    let hook = create_webhook(&h, &key, json!({"url": r.url("/in"), "events": ["new_lead"], "max_in_flight": 1}));
    create_webhook(&h, &key, json!({"url": r.url("/ops"), "events": ["herald.*"]}));
    let events: Vec<Value> = (0..4).map(|i| ingest(&h, &key, "new_lead", json!({"i": i}))).collect();
    let first = delivery_of(&h, &key, &events[0])["id"].as_str().unwrap().to_owned();
    assert_eq!(wait_status(&h, &key, &first, "dead")["dead_reason"], "gone");
    for e in &events[1..] {
        let id = delivery_of(&h, &key, e)["id"].as_str().unwrap().to_owned();
        assert_eq!(wait_status(&h, &key, &id, "dead")["dead_reason"], "disabled");
    }
    assert_eq!(r.hits_on("/in").len(), 1, "one attempt, then nothing");
    let w = get(&h, &key, &format!("/api/v1/webhooks/{hook}"));
    assert_eq!(w["status"]["state"], "disabled");
    assert!(w["status"]["disabled_reason"].as_str().unwrap().contains("410"), "{w}");
    wait_for("herald.webhook.disabled", Duration::from_secs(10), || !r.hits_on("/ops").is_empty());
    let ops = r.hits_on("/ops")[0].json();
    assert_eq!(
        (ops["event"].as_str(), ops["data"]["webhook_id"].as_str()),
        (Some("herald.webhook.disabled"), Some(hook.as_str()))
    );
    // One notice for all: no herald.delivery.dead per delivery that died with it (they would
    // have been ingested in the same commit, so delivered at about the same moment).
    std::thread::sleep(Duration::from_millis(300)); // the window observed for silence
    assert_eq!(r.hits_on("/ops").len(), 1, "{:?}", r.hits_on("/ops").iter().map(|h| h.json()).collect::<Vec<_>>());

    // A disabled webhook takes no new events.
    assert_eq!(ingest(&h, &key, "new_lead", json!({}))["deliveries"], 0);
    // Enabled again by hand: a fresh start.
    gone.store(0, Ordering::SeqCst);
    let a = h.json("PATCH", &format!("/api/v1/webhooks/{hook}"), Some(&key), &json!({"is_active": true}));
    assert_eq!((a.status, a.body["status"]["state"].as_str()), (200, Some("healthy")), "{}", a.text);
    let e = ingest(&h, &key, "new_lead", json!({"after": "enable"}));
    assert_eq!(e["deliveries"], 1);
    wait_status(&h, &key, delivery_of(&h, &key, &e)["id"].as_str().unwrap(), "succeeded");
}

#[test]
fn continuous_failure_for_disable_after_disables_the_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_with(
        dir.path(),
        &[
            ("HERALD_DISABLE_AFTER", "1s"),
            ("HERALD_INITIAL_BACKOFF", "50ms"),
            ("HERALD_MAX_BACKOFF", "100ms"),
            ("HERALD_BREAKER_THRESHOLD", "1000"),
        ],
    );
    let key = account(&h, "AutoReach");
    let r = Receiver::start();
    r.answer(|_| Reply::status(500));
    let hook = create_webhook(&h, &key, json!({"url": r.url("/in"), "events": ["*"], "max_retries": 20}));
    let e = ingest(&h, &key, "email.opened", json!({}));
    let id = delivery_of(&h, &key, &e)["id"].as_str().unwrap().to_owned();
    let d = wait_status(&h, &key, &id, "dead");
    assert_eq!(d["dead_reason"], "disabled");
    // The delivery's row can be read one flush before the webhook's status is (reads may run
    // a flush ahead of acknowledgements, ARCHITECTURE.md): the same record carries both.
    let mut w = Value::Null;
    wait_for("the webhook to be disabled", Duration::from_secs(5), || {
        w = get(&h, &key, &format!("/api/v1/webhooks/{hook}"));
        w["status"]["state"] == "disabled"
    });
    assert!(w["status"]["disabled_reason"].as_str().unwrap().contains("every attempt failed for 1s"), "{w}");
    let hits = r.hits_on("/in");
    let span = ms_between(&hits[0], hits.last().unwrap());
    // Herald times the run from the attempts' ends, in whole milliseconds; the receiver
    // sees their arrivals, each a little earlier than its end (seen once: 999 ms).
    assert!((980..5000).contains(&span), "failed for {span} ms before it was disabled");
}

#[test]
fn ordered_webhooks_keep_event_order_behind_a_failing_head_until_it_dies() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_with(dir.path(), &[("HERALD_INITIAL_BACKOFF", "50ms")]);
    let key = account(&h, "LeadNest");
    let r = Receiver::start();
    // Event 0 fails forever (and dies after 3 attempts); event 3 fails twice, then passes.
    let three = Arc::new(AtomicUsize::new(0));
    let t = three.clone();
    r.answer(move |hit| match hit.json()["data"]["n"].as_u64() {
        Some(0) => Reply::status(500),
        Some(3) if t.fetch_add(1, Ordering::SeqCst) < 2 => Reply::status(503),
        _ => Reply::ok().after(Duration::from_millis(5)),
    });
    create_webhook(
        &h,
        &key,
        json!({"url": r.url("/in"), "events": ["*"], "ordered": true, "max_retries": 2, "max_in_flight": 8}),
    );
    for n in 0..10 {
        ingest(&h, &key, "lead.updated", json!({"n": n}));
    }
    wait_for("ten distinct deliveries", Duration::from_secs(15), || {
        r.hits().iter().filter(|h| h.json()["data"]["n"] == 9).count() == 1
    });
    let order: Vec<u64> = r.hits().iter().map(|h| h.json()["data"]["n"].as_u64().unwrap()).collect();
    assert_eq!(order, vec![0, 0, 0, 1, 2, 3, 3, 3, 4, 5, 6, 7, 8, 9], "strict order, head retried first");
    assert_eq!(r.max_concurrency(), 1);
}

#[test]
fn max_in_flight_and_rate_limit_hold_at_the_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_with(dir.path(), &[]);
    let key = account(&h, "AstroLeads");
    let slow = Receiver::start();
    slow.answer(|_| Reply::ok().after(Duration::from_millis(100)));
    let paced = Receiver::start();
    create_webhook(&h, &key, json!({"url": slow.url("/in"), "events": ["lead.*"], "max_in_flight": 4}));
    create_webhook(&h, &key, json!({"url": paced.url("/in"), "events": ["email.*"], "rate_limit": 20}));
    let batch: Vec<Value> = (0..40).map(|i| json!({"event": "lead.created", "data": {"i": i}})).collect();
    assert_eq!(h.json("POST", "/api/v1/events/batch", Some(&key), &json!(batch)).status, 202);
    let batch: Vec<Value> = (0..30).map(|i| json!({"event": "email.sent", "data": {"i": i}})).collect();
    assert_eq!(h.json("POST", "/api/v1/events/batch", Some(&key), &json!(batch)).status, 202);
    wait_for("all deliveries", Duration::from_secs(20), || slow.count() == 40 && paced.count() == 30);
    assert_eq!(slow.max_concurrency(), 4, "at most max_in_flight at once, and it is used");
    let hits = paced.hits();
    let span = ms_between(&hits[0], &hits[29]);
    assert!(span >= 1350, "30 deliveries at 20/s took {span} ms");
    for (i, first) in hits.iter().enumerate() {
        let within = hits[i..].iter().filter(|h| h.at.duration_since(first.at) < Duration::from_secs(1)).count();
        assert!(within <= 21, "{within} deliveries within one second at rate_limit 20");
    }
}
