//! Tenancy, route by route: with another account's key, a resource answers exactly what a
//! missing one does (same status, same body), lists never show it, nothing of it changes,
//! and API keys cannot use admin routes.

mod common;

use common::*;
use serde_json::{json, Value};

struct Tenant {
    key: String,
    account: String,
    key_id: String,
    webhook: String,
    event: String,
    delivery: String,
}

fn tenant(h: &Herald, name: &str) -> Tenant {
    let a = h.json("POST", "/api/v1/accounts", Some(ADMIN), &json!({ "name": name }));
    assert_eq!(a.status, 201, "{}", a.text);
    let key = a.body["api_key"].as_str().unwrap().to_owned();
    let w = h.json("POST", "/api/v1/webhooks", Some(&key), &json!({"url": format!("http://127.0.0.1:{}/in", common::receiver::black_hole()), "events": ["*"], "timeout": 120}));
    assert_eq!(w.status, 201, "{}", w.text);
    let e = h.json("POST", "/api/v1/events", Some(&key), &json!({"event": "lead.qualified", "data": {"who": name}}));
    assert_eq!(e.status, 202, "{}", e.text);
    let event = e.body["id"].as_str().unwrap().to_owned();
    let d = h.send("GET", &format!("/api/v1/events/{event}"), Some(&key), &[], None);
    Tenant {
        account: a.body["id"].as_str().unwrap().to_owned(),
        key_id: a.body["key_id"].as_str().unwrap().to_owned(),
        webhook: w.body["id"].as_str().unwrap().to_owned(),
        delivery: d.body["deliveries"][0]["id"].as_str().unwrap().to_owned(),
        event,
        key,
    }
}

/// Every route that names a resource, for the resource ids given.
fn routes(webhook: &str, event: &str, delivery: &str) -> Vec<(&'static str, String, Option<Value>)> {
    let since = json!({"since": "2001-01-01T00:00:00Z"});
    vec![
        ("GET", format!("/api/v1/webhooks/{webhook}"), None),
        ("PATCH", format!("/api/v1/webhooks/{webhook}"), Some(json!({"name": "taken over"}))),
        ("POST", format!("/api/v1/webhooks/{webhook}/rotate-secret"), None),
        ("POST", format!("/api/v1/webhooks/{webhook}/recover"), Some(since)),
        ("GET", format!("/api/v1/webhooks/{webhook}/deliveries"), None),
        ("GET", format!("/api/v1/deliveries?webhook_id={webhook}"), None),
        ("GET", format!("/api/v1/deliveries?event_id={event}"), None),
        ("GET", format!("/api/v1/events/{event}"), None),
        ("GET", format!("/api/v1/deliveries/{delivery}"), None),
        ("POST", format!("/api/v1/deliveries/{delivery}/retry"), None),
        ("DELETE", format!("/api/v1/webhooks/{webhook}"), None),
    ]
}

fn call(h: &Herald, key: &str, method: &str, path: &str, body: &Option<Value>) -> Answer {
    match body {
        Some(b) => h.json(method, path, Some(key), b),
        None => h.send(method, path, Some(key), &[], None),
    }
}

#[test]
fn another_accounts_resources_answer_exactly_like_missing_ones() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_for_api(dir.path());
    let a = tenant(&h, "AstroLeads");
    let b = tenant(&h, "LeadNest");
    // Well-formed ids that never existed; the delivery one points at a's real event with an
    // index it does not have, the event one is a's event id with its time part changed.
    let guessed_event = {
        // a's event with one character of its time part changed: the random part still
        // decodes to a's record, but the id is not the one Herald derived for it.
        let mut chars: Vec<char> = a.event.chars().collect();
        chars[4 + 9] = if chars[4 + 9] == '0' { '1' } else { '0' };
        chars.into_iter().collect::<String>()
    };
    let missing = routes(
        "wh_01JD6Z1M8Q4W9X2Y3Z4A5B6C7D",
        "evt_01JD6Z1M8Q4W9X2Y3Z4A5B6C7D",
        &format!("{}{}", &a.delivery[..a.delivery.len() - 3], "0Z9"),
    );
    let foreign = routes(&a.webhook, &a.event, &a.delivery);
    let guessed = routes(&a.webhook, &guessed_event, &format!("dlv_{}000", &guessed_event[4..]));
    for ((m, missing_path, body), (_, foreign_path, _)) in missing.iter().zip(&foreign) {
        let want = call(&h, &b.key, m, missing_path, body);
        assert_eq!(want.status, 404, "{m} {missing_path}: {}", want.text);
        let got = call(&h, &b.key, m, foreign_path, body);
        assert_eq!((got.status, &got.text), (want.status, &want.text), "{m} {foreign_path} with another account's key");
    }
    for (m, path, body) in &guessed {
        if path.contains(&a.webhook) {
            continue;
        }
        let got = call(&h, &a.key, m, path, body);
        assert_eq!(got.status, 404, "{m} {path}: a guessed id is not found even by its account: {}", got.text);
    }

    // Lists show only the caller's own.
    for path in ["/api/v1/webhooks", "/api/v1/events", "/api/v1/deliveries", "/api/v1/webhooks/deliveries"] {
        let l = h.send("GET", path, Some(&b.key), &[], None);
        assert_eq!(l.status, 200, "{path}: {}", l.text);
        for id in [&a.webhook, &a.event, &a.delivery] {
            assert!(!l.text.contains(id.as_str()), "{path} leaks {id}");
        }
        assert!(!l.text.contains("AstroLeads"), "{path}");
    }
    let stats = h.send("GET", "/api/v1/stats", Some(&b.key), &[], None);
    assert_eq!((stats.body["events"].as_u64(), stats.body["webhooks"].as_u64()), (Some(1), Some(1)), "{}", stats.text);

    // Nothing of a's changed: its webhook still has its name, secret and delivery.
    let w = h.send("GET", &format!("/api/v1/webhooks/{}", a.webhook), Some(&a.key), &[], None);
    assert_eq!(w.status, 200, "{}", w.text);
    assert_eq!(w.body["name"], "");
    let d = h.send("GET", &format!("/api/v1/deliveries/{}", a.delivery), Some(&a.key), &[], None);
    assert_eq!((d.status, d.body["status"].as_str()), (200, Some("pending")), "{}", d.text);

    // The admin token reaches an account only by naming it.
    let as_admin = h.send("GET", &format!("/api/v1/webhooks/{}", a.webhook), Some(ADMIN), &[], None);
    assert_eq!(as_admin.status, 404, "the admin token acts for acct_default unless told otherwise");
    let named = h.send(
        "GET",
        &format!("/api/v1/webhooks/{}", a.webhook),
        Some(ADMIN),
        &[("Herald-Account", a.account.as_str())],
        None,
    );
    assert_eq!(named.status, 200, "{}", named.text);
}

#[test]
fn api_keys_cannot_manage_accounts_and_a_revoked_key_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_for_api(dir.path());
    let a = tenant(&h, "AutoReach");
    let b = tenant(&h, "LeadNest");
    let admin_routes = [
        ("POST", "/api/v1/accounts".to_owned(), Some(json!({"name": "mine now"}))),
        ("GET", "/api/v1/accounts".to_owned(), None),
        ("DELETE", format!("/api/v1/accounts/{}", b.account), None),
        ("POST", format!("/api/v1/accounts/{}/keys", b.account), Some(json!({}))),
        ("GET", format!("/api/v1/accounts/{}/keys", b.account), None),
        ("DELETE", format!("/api/v1/accounts/{}/keys/{}", b.account, b.key_id), None),
        ("GET", format!("/api/v1/accounts/{}/keys", a.account), None),
    ];
    for (m, path, body) in &admin_routes {
        let r = call(&h, &a.key, m, path, body);
        assert_eq!(r.status, 403, "{m} {path}: {}", r.text);
        assert_eq!(r.body["error"]["code"], "forbidden");
    }
    // b still works: none of those changed anything.
    assert_eq!(h.send("GET", "/api/v1/webhooks", Some(&b.key), &[], None).status, 200);

    // Herald-Account from an API key is not a way into another account.
    let r = h.send("GET", "/api/v1/webhooks", Some(&a.key), &[("Herald-Account", b.account.as_str())], None);
    assert!(r.status == 403 || (r.status == 200 && !r.text.contains(&b.webhook)), "{}", r.text);

    let revoke = h.send("DELETE", &format!("/api/v1/accounts/{}/keys/{}", a.account, a.key_id), Some(ADMIN), &[], None);
    assert_eq!(revoke.status, 204, "{}", revoke.text);
    for (m, path, body) in routes(&a.webhook, &a.event, &a.delivery) {
        let r = call(&h, &a.key, m, &path, &body);
        assert_eq!(r.status, 401, "{m} {path} with a revoked key: {}", r.text);
    }
    let r = h.json("POST", "/api/v1/events", Some(&a.key), &json!({"event": "new_lead", "data": {}}));
    assert_eq!(r.status, 401);
}
