//! Property tests over the real HTTP API: arbitrary bodies for event ingest and webhook
//! creation — random bytes, JSON of every shape, and well-formed requests with hostile field
//! values — and arbitrary filters, cursors and ids for the lists and reads, never get a 5xx,
//! always get the error JSON when refused, and leave the server serving. Run more cases with `PROPTEST_CASES=5000 cargo test --release --test api_fuzz`.

mod common;

use common::*;
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

/// One Herald for every case (starting one per case would dominate the run).
fn server() -> &'static (tempfile::TempDir, Herald, String) {
    static SERVER: OnceLock<(tempfile::TempDir, Herald, String)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let h = Herald::serve(
            dir.path(),
            &["--dev"],
            &[("HERALD_ADMIN_TOKEN", ADMIN), ("HERALD_MAX_PAYLOAD_BYTES", "4096")],
        );
        h.wait_ready();
        let a = h.json("POST", "/api/v1/accounts", Some(ADMIN), &json!({"name": "fuzz"}));
        let key = a.body["api_key"].as_str().unwrap().to_owned();
        let w =
            h.json("POST", "/api/v1/webhooks", Some(&key), &json!({"url": format!("http://127.0.0.1:{}/in", common::receiver::black_hole()), "events": ["*"], "timeout": 120}));
        assert_eq!(w.status, 201);
        (dir, h, key)
    })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
        "[a-z._]{1,30}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((".{0,12}", inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Objects with the real field names and values of any shape.
fn shaped(fields: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop::collection::vec((prop::sample::select(fields), json_value()), 0..fields.len() + 2)
        .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        shaped(&["event", "data", "timestamp", "id", "ordering_key"]).prop_map(|v| serde_json::to_vec(&v).unwrap()),
        shaped(&[
            "url",
            "events",
            "name",
            "description",
            "secret",
            "headers",
            "timeout",
            "max_retries",
            "method",
            "signature_header",
            "signature_prefix",
            "ordered",
            "ordering",
            "filter",
            "body_format",
            "max_in_flight",
            "rate_limit",
            "is_active",
        ])
        .prop_map(|v| serde_json::to_vec(&v).unwrap()),
    ]
}

fn check(path: &str, bytes: &[u8], content_type: &str) -> Result<(), TestCaseError> {
    let (_, h, key) = server();
    let a = h.send("POST", path, Some(key), &[("Content-Type", content_type)], Some(bytes));
    prop_assert!(a.status < 500, "{path} answered {}: {}", a.status, a.text);
    if a.status >= 400 {
        prop_assert!(
            a.body["error"]["code"].is_string() && a.body["error"]["message"].is_string(),
            "{path}: {}",
            a.text
        );
    } else {
        prop_assert!((200..=202).contains(&a.status), "{path}: {} {}", a.status, a.text);
    }
    Ok(())
}

fn encoded(raw: &str) -> String {
    url::form_urlencoded::byte_serialize(raw.as_bytes()).collect()
}

/// Query strings with the real filter names (and some others), values of any text.
fn query() -> impl Strategy<Value = String> {
    let names = &["limit", "cursor", "since", "until", "event", "status", "webhook_id", "event_id", "colour"][..];
    let value = prop_oneof![
        ".{0,60}",
        "-?[0-9]{1,25}",
        "(evt|dlv|wh)_[0-9A-Z]{0,30}",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z",
    ];
    prop::collection::vec((prop::sample::select(names), value), 0..5)
        .prop_map(|pairs| pairs.iter().map(|(k, v)| format!("{k}={}", encoded(v))).collect::<Vec<_>>().join("&"))
}

fn check_read(method: &str, path: &str, body: Option<&[u8]>) -> Result<(), TestCaseError> {
    let (_, h, key) = server();
    let a = h.send(method, path, Some(key), &[("Content-Type", "application/json")], body);
    prop_assert!(a.status < 500, "{method} {path} answered {}: {}", a.status, a.text);
    if a.status >= 400 {
        prop_assert!(a.body["error"]["code"].is_string(), "{method} {path}: {}", a.text);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    #[test]
    fn lists_and_reads_never_fail_badly(q in query(), id in prop_oneof![".{0,80}", "(evt|dlv|wh)_[0-9A-Z]{26,29}"], bytes in body()) {
        for list in ["/api/v1/events", "/api/v1/deliveries", "/api/v1/webhooks/deliveries", "/api/v1/event-types", "/api/v1/webhooks"] {
            check_read("GET", &format!("{list}?{q}"), None)?;
        }
        let id = encoded(&id);
        check_read("GET", &format!("/api/v1/events/{id}"), None)?;
        check_read("GET", &format!("/api/v1/deliveries/{id}"), None)?;
        check_read("GET", &format!("/api/v1/webhooks/{id}/deliveries?{q}"), None)?;
        check_read("POST", &format!("/api/v1/deliveries/{id}/retry"), None)?;
        check_read("POST", &format!("/api/v1/webhooks/{id}/recover"), Some(&bytes))?;
    }

    #[test]
    fn ingest_never_fails_badly(bytes in body(), ct in prop::sample::select(&["application/json", "text/plain", "application/x-www-form-urlencoded"][..])) {
        check("/api/v1/events", &bytes, ct)?;
        check("/api/v1/events/batch", &bytes, "application/json")?;
    }

    #[test]
    fn webhook_create_never_fails_badly(bytes in body()) {
        check("/api/v1/webhooks", &bytes, "application/json")?;
    }
}

#[test]
fn the_server_still_serves_after_the_fuzzing() {
    let (_, h, key) = server();
    let a = h.json("POST", "/api/v1/events", Some(key), &json!({"event": "lead.qualified", "data": {}}));
    assert_eq!(a.status, 202, "{}", a.text);
    assert_eq!(h.get("/readyz").0, 200);
}
