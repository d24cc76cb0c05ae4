//! Where Herald may send (contract §6), checked at create time and again at connect time with
//! the real binary: a name that passes at create time and resolves to 127.0.0.1 when the
//! delivery goes out (through `hosts_file`, a resolver the test swaps) is refused without
//! `--dev`; a literal loopback address accepted under `--dev` is refused after a restart
//! without it. (Redirects, the response cap and reserved headers: `delivery_failures.rs`
//! and `api_webhooks.rs`.)

mod common;

use common::receiver::Receiver;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

fn delivery(h: &Herald, key: &str, event: &Value) -> Value {
    let e = h.json("GET", &format!("/api/v1/events/{}", event["id"].as_str().unwrap()), Some(key), &Value::Null);
    e.body["deliveries"][0].clone()
}

fn dead_attempt(h: &Herald, key: &str, event: &Value) -> Value {
    let id = delivery(h, key, event)["id"].as_str().unwrap().to_owned();
    let mut last = Value::Null;
    wait_for("the delivery to die", Duration::from_secs(15), || {
        last = h.json("GET", &format!("/api/v1/deliveries/{id}"), Some(key), &Value::Null).body;
        last["status"] == "dead"
    });
    last["attempts"][0].clone()
}

#[test]
fn a_name_that_rebinds_to_loopback_after_creation_is_refused_at_connect_time() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "93.184.216.34 rebind.test\n").unwrap();
    let r = Receiver::start();
    let env = [("HERALD_ADMIN_TOKEN", ADMIN), ("HERALD_HOSTS_FILE", hosts.to_str().unwrap())];
    let h = Herald::serve(dir.path(), &[], &env);
    h.wait_ready();
    let key = account(&h, "AstroLeads");

    // At create time the name resolves to a public address: accepted.
    let url = format!("https://rebind.test:{}/in", r.port);
    let a = h.json("POST", "/api/v1/webhooks", Some(&key), &json!({"url": url, "events": ["*"], "max_retries": 0}));
    assert_eq!(a.status, 201, "{}", a.text);
    // A name that resolves to loopback now is refused at create time.
    std::fs::write(&hosts, "93.184.216.34 rebind.test\n127.0.0.1 inside.test\n").unwrap();
    let inside = json!({"url": format!("https://inside.test:{}/in", r.port), "events": ["*"]});
    let b = h.json("POST", "/api/v1/webhooks", Some(&key), &inside);
    assert_eq!((b.status, b.body["error"]["field"].as_str()), (422, Some("url")), "{}", b.text);

    // Then the name moves to 127.0.0.1: the send is refused, nothing reaches the receiver.
    std::fs::write(&hosts, "127.0.0.1 rebind.test\n").unwrap();
    let e = h.json("POST", "/api/v1/events", Some(&key), &json!({"event": "lead.created", "data": {}}));
    assert_eq!(e.status, 202, "{}", e.text);
    let attempt = dead_attempt(&h, &key, &e.body);
    assert_eq!(attempt["result"], "refused", "{attempt}");
    assert!(attempt["error"].as_str().unwrap().contains("forbidden"), "{attempt}");
    assert_eq!(r.count(), 0);
}

#[test]
fn the_swapped_resolver_is_the_one_deliveries_use() {
    // Under --dev the same name, pinned to the receiver, is delivered to: the refusal above
    // is the address check, not a name that never resolved.
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 rebind.test\n").unwrap();
    let r = Receiver::start();
    let env = [("HERALD_ADMIN_TOKEN", ADMIN), ("HERALD_HOSTS_FILE", hosts.to_str().unwrap())];
    let h = Herald::serve(dir.path(), &["--dev"], &env);
    h.wait_ready();
    let key = account(&h, "LeadNest");
    let url = format!("http://rebind.test:{}/in", r.port);
    let a = h.json("POST", "/api/v1/webhooks", Some(&key), &json!({"url": url, "events": ["*"]}));
    assert_eq!(a.status, 201, "{}", a.text);
    let e = h.json("POST", "/api/v1/events", Some(&key), &json!({"event": "lead.created", "data": {}}));
    assert_eq!(e.status, 202);
    wait_for("the delivery", Duration::from_secs(10), || r.count() == 1);
    assert_eq!(r.hits()[0].header("host"), Some(format!("rebind.test:{}", r.port).as_str()));
}

#[test]
fn a_literal_loopback_target_is_checked_again_when_sending() {
    let dir = tempfile::tempdir().unwrap();
    let r = Receiver::start();
    let mut h = Herald::serve(dir.path(), &["--dev"], &[("HERALD_ADMIN_TOKEN", ADMIN)]);
    h.wait_ready();
    let key = account(&h, "AutoReach");
    let a = h.json(
        "POST",
        "/api/v1/webhooks",
        Some(&key),
        &json!({"url": r.url("/in"), "events": ["*"], "max_retries": 0}),
    );
    assert_eq!(a.status, 201, "{}", a.text);
    h.signal(libc::SIGTERM);
    h.wait_exit(Duration::from_secs(20));

    // The same node without --dev (and with http allowed, so only the address is at stake).
    let h = Herald::serve(dir.path(), &[], &[("HERALD_ADMIN_TOKEN", ADMIN), ("HERALD_ALLOW_HTTP", "true")]);
    h.wait_ready();
    let e = h.json("POST", "/api/v1/events", Some(&key), &json!({"event": "email.sent", "data": {}}));
    assert_eq!(e.status, 202, "{}", e.text);
    let attempt = dead_attempt(&h, &key, &e.body);
    assert_eq!(attempt["result"], "refused", "{attempt}");
    assert!(attempt["error"].as_str().unwrap().contains("127.0.0.1"), "{attempt}");
    assert_eq!(r.count(), 0);
}
