//! Webhooks over real HTTP: lifecycle, secrets, tenancy, the per-account limit, validation
//! of every field, masking, and the target rules of contract §6 at create time.

mod common;

use common::*;
use serde_json::{json, Value};

fn new_account(h: &Herald, name: &str) -> (String, String) {
    let a = h.json("POST", "/api/v1/accounts", Some(ADMIN), &json!({ "name": name }));
    assert_eq!(a.status, 201, "{}", a.text);
    (a.body["id"].as_str().unwrap().to_owned(), a.body["api_key"].as_str().unwrap().to_owned())
}

/// A JSON object with one more field.
trait Merged {
    fn merged(self, field: &str, value: Value) -> Value;
}

impl Merged for Value {
    fn merged(mut self, field: &str, value: Value) -> Value {
        self[field] = value;
        self
    }
}

fn hook(url: &str) -> Value {
    json!({"url": url, "events": ["lead.*", "new_lead"], "name": "crm"})
}

#[test]
fn webhook_lifecycle_with_secrets_and_masking() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_for_api(dir.path());
    let (_, key) = new_account(&h, "AstroLeads");

    let mut body = hook("http://127.0.0.1:9/in");
    body["headers"] = json!({"Authorization": "Bearer s3cr3t-value", "X-Api-Key": "k-123", "X-Team": "sales"});
    let created = h.json("POST", "/api/v1/webhooks", Some(&key), &body);
    assert_eq!(created.status, 201, "{}", created.text);
    let c = &created.body;
    let id = c["id"].as_str().unwrap().to_owned();
    let secret = c["secret"].as_str().unwrap().to_owned();
    assert!(id.starts_with("wh_") && secret.starts_with("whsec_"), "{c}");
    assert_eq!(
        (c["max_retries"].as_u64(), c["timeout"].as_u64(), c["method"].as_str()),
        (Some(5), Some(30), Some("POST"))
    );
    assert_eq!(
        (c["signature_header"].as_str(), c["signature_prefix"].as_str()),
        (Some("X-Webhook-Signature"), Some("sha256="))
    );
    assert_eq!(
        (c["is_active"].as_bool(), c["ordered"].as_bool(), c["max_in_flight"].as_u64()),
        (Some(true), Some(false), Some(16))
    );
    assert_eq!(c["status"]["state"], "healthy");
    assert_eq!(c["headers"]["Authorization"], "****");
    assert_eq!(c["headers"]["X-Api-Key"], "****");
    assert_eq!(c["headers"]["X-Team"], "sales");
    assert!(!created.text.contains("s3cr3t-value"));

    let read = h.send("GET", &format!("/api/v1/webhooks/{id}"), Some(&key), &[], None);
    assert_eq!(read.status, 200);
    assert!(read.body.get("secret").is_none() && !read.text.contains(&secret), "secret only on create: {}", read.text);
    let list = h.send("GET", "/api/v1/webhooks", Some(&key), &[], None);
    assert_eq!(list.body["data"][0]["id"], id.as_str());
    assert!(!list.text.contains(&secret));

    let patched = h.json(
        "PATCH",
        &format!("/api/v1/webhooks/{id}"),
        Some(&key),
        &json!({"name": "crm v2", "rate_limit": 50, "is_active": false, "method": "PUT", "timeout": 10}),
    );
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!((patched.body["name"].as_str(), patched.body["rate_limit"].as_u64()), (Some("crm v2"), Some(50)));
    assert_eq!((patched.body["method"].as_str(), patched.body["timeout"].as_u64()), (Some("PUT"), Some(10)));
    assert_eq!(patched.body["url"], "http://127.0.0.1:9/in", "untouched fields stay");
    assert_eq!(patched.body["status"]["state"], "paused", "a paused webhook says so");
    let cleared = h.json("PATCH", &format!("/api/v1/webhooks/{id}"), Some(&key), &json!({"rate_limit": null}));
    assert_eq!(cleared.body["rate_limit"], Value::Null);
    assert_eq!(
        (&c["ordering"], &c["filter"], &c["body_format"]),
        (&json!("none"), &Value::Null, &json!("original")),
        "the defaults"
    );
    // `ordering`, and `ordered` as its alias.
    let edit = |body: Value| {
        let a = h.json("PATCH", &format!("/api/v1/webhooks/{id}"), Some(&key), &body);
        assert_eq!(a.status, 200, "{body}: {}", a.text);
        (a.body["ordering"].as_str().unwrap().to_owned(), a.body["ordered"].as_bool().unwrap())
    };
    assert_eq!(edit(json!({"ordering": "strict"})), ("strict".into(), true));
    assert_eq!(edit(json!({"ordered": false})), ("none".into(), false));
    assert_eq!(edit(json!({"ordered": true, "ordering": "strict"})), ("strict".into(), true));
    assert_eq!(edit(json!({"name": "crm v3"})), ("strict".into(), true), "untouched by other edits");
    let formatted =
        h.json("PATCH", &format!("/api/v1/webhooks/{id}"), Some(&key), &json!({"body_format": "javascript"}));
    assert_eq!(formatted.body["body_format"], "javascript", "{}", formatted.text);

    let rotated = h.send("POST", &format!("/api/v1/webhooks/{id}/rotate-secret"), Some(&key), &[], None);
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let new_secret = rotated.body["secret"].as_str().unwrap();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);

    assert_eq!(h.send("DELETE", &format!("/api/v1/webhooks/{id}"), Some(&key), &[], None).status, 204);
    assert_eq!(h.send("GET", &format!("/api/v1/webhooks/{id}"), Some(&key), &[], None).status, 404);
    assert_eq!(h.send("DELETE", &format!("/api/v1/webhooks/{id}"), Some(&key), &[], None).status, 404);
    let list = h.send("GET", "/api/v1/webhooks", Some(&key), &[], None);
    assert_eq!(list.body["data"].as_array().unwrap().len(), 0);
}

#[test]
fn another_account_cannot_see_or_touch_a_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_for_api(dir.path());
    let (a_id, a) = new_account(&h, "A");
    let (_, b) = new_account(&h, "B");
    let created = h.json("POST", "/api/v1/webhooks", Some(&a), &hook("http://127.0.0.1:9/a"));
    let id = created.body["id"].as_str().unwrap().to_owned();
    let missing = "wh_01JD6Z1M8Q4W9X2Y3Z4A5B6C7D";
    for target in [id.as_str(), missing, "garbage"] {
        let path = format!("/api/v1/webhooks/{target}");
        for (method, body) in [("GET", None), ("DELETE", None), ("PATCH", Some(json!({"name": "x"})))] {
            let a = match &body {
                Some(json) => h.json(method, &path, Some(&b), json),
                None => h.send(method, &path, Some(&b), &[], None),
            };
            assert_eq!((a.status, a.body["error"]["code"].as_str()), (404, Some("not_found")), "{method} {target}");
        }
        let r = h.send("POST", &format!("{path}/rotate-secret"), Some(&b), &[], None);
        assert_eq!(r.status, 404);
    }
    assert_eq!(h.send("GET", "/api/v1/webhooks", Some(&b), &[], None).body["data"].as_array().unwrap().len(), 0);
    // Still there for its owner, and for the admin acting for it.
    assert_eq!(h.send("GET", &format!("/api/v1/webhooks/{id}"), Some(&a), &[], None).status, 200);
    let admin = h.send("GET", &format!("/api/v1/webhooks/{id}"), Some(ADMIN), &[("Herald-Account", &a_id)], None);
    assert_eq!(admin.status, 200);
    assert_eq!(
        h.send("GET", &format!("/api/v1/webhooks/{id}"), Some(ADMIN), &[], None).status,
        404,
        "acct_default's view"
    );
}

#[test]
fn an_account_has_at_most_ten_webhooks() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_for_api(dir.path());
    let (_, key) = new_account(&h, "A");
    for i in 0..10 {
        let a = h.json("POST", "/api/v1/webhooks", Some(&key), &hook(&format!("http://127.0.0.1:9/{i}")));
        assert_eq!(a.status, 201, "{i}: {}", a.text);
    }
    let over = h.json("POST", "/api/v1/webhooks", Some(&key), &hook("http://127.0.0.1:9/x"));
    assert_eq!((over.status, over.body["error"]["code"].as_str()), (409, Some("limit_reached")), "{}", over.text);
    // Deleting one frees a place.
    let first = h.send("GET", "/api/v1/webhooks?limit=1", Some(&key), &[], None).body["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(h.send("DELETE", &format!("/api/v1/webhooks/{first}"), Some(&key), &[], None).status, 204);
    assert_eq!(h.json("POST", "/api/v1/webhooks", Some(&key), &hook("http://127.0.0.1:9/y")).status, 201);
}

#[test]
fn every_field_is_validated() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_for_api(dir.path());
    let (_, key) = new_account(&h, "A");
    let ok = hook("http://127.0.0.1:9/in");
    let with = |field: &str, value: Value| {
        let mut b = ok.clone();
        b[field] = value;
        b
    };
    let many_headers: serde_json::Map<String, Value> = (0..21).map(|i| (format!("X-H{i}"), json!("v"))).collect();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("no url", json!({"events": ["*"]}), "url"),
        ("no events", json!({"url": "http://127.0.0.1:9/in"}), "events"),
        ("empty events", with("events", json!([])), "events"),
        ("bad event name", with("events", json!(["Lead Qualified"])), "events"),
        ("bad family", with("events", json!(["lead.*.*"])), "events"),
        ("101 events", with("events", json!((0..101).map(|i| format!("e{i}")).collect::<Vec<_>>())), "events"),
        ("short secret", with("secret", json!("too-short")), "secret"),
        ("long secret", with("secret", json!("s".repeat(257))), "secret"),
        ("whsec_ secret, not base64", with("secret", json!("whsec_not-base64-at-all!!")), "secret"),
        ("whsec_ secret, no padding", with("secret", json!("whsec_bmV3bmV3bmV3bmV3bmV3bmV3bg")), "secret"),
        ("long name", with("name", json!("n".repeat(101))), "name"),
        ("long description", with("description", json!("d".repeat(1001))), "description"),
        ("reserved Content-Type", with("headers", json!({"Content-Type": "text/plain"})), "headers"),
        ("reserved X-Webhook-Event", with("headers", json!({"x-webhook-event": "x"})), "headers"),
        ("reserved webhook-id", with("headers", json!({"webhook-id": "x"})), "headers"),
        ("header not a string", with("headers", json!({"X-Count": 3})), "headers"),
        ("bad header name", with("headers", json!({"Bad Name": "x"})), "headers"),
        ("header with newline", with("headers", json!({"X-A": "a\r\nX-Injected: 1"})), "headers"),
        ("huge header", with("headers", json!({"X-A": "v".repeat(1100)})), "headers"),
        ("21 headers", with("headers", Value::Object(many_headers)), "headers"),
        ("timeout 0", with("timeout", json!(0)), "timeout"),
        ("timeout 121", with("timeout", json!(121)), "timeout"),
        ("max_retries 21", with("max_retries", json!(21)), "max_retries"),
        ("signature prefix", with("signature_prefix", json!("md5=")), "signature_prefix"),
        ("signature header reserved", with("signature_header", json!("Content-Type")), "signature_header"),
        ("max_in_flight 0", with("max_in_flight", json!(0)), "max_in_flight"),
        ("rate_limit 0", with("rate_limit", json!(0)), "rate_limit"),
        ("ftp url", with("url", json!("ftp://example.com/x")), "url"),
        ("not a url", with("url", json!("not a url")), "url"),
        ("long url", with("url", json!(format!("https://example.com/{}", "a".repeat(2048)))), "url"),
        ("ordered contradicts ordering", with("ordering", json!("none")).merged("ordered", json!(true)), "ordered"),
        ("filter not an object", with("filter", json!("data.a = 1")), "filter"),
        ("filter with an unknown operator", with("filter", json!({"data.a": {"$like": "x"}})), "filter"),
    ];
    for (what, body, field) in cases {
        let a = h.json("POST", "/api/v1/webhooks", Some(&key), &body);
        assert_eq!(a.status, 422, "{what}: {}", a.text);
        assert_eq!(a.body["error"]["field"], field, "{what}: {}", a.text);
    }
    // Wrong types, unknown fields, bad enums: 422 from the body parser.
    for body in [
        with("timeout", json!("30")),
        with("max_retries", json!(-1)),
        with("events", json!("lead.*")),
        with("method", json!("GET")),
        with("is_active", json!("yes")),
        with("colour", json!("blue")),
        with("ordering", json!("random")),
        with("ordering", json!(true)),
        with("body_format", json!("xml")),
    ] {
        let a = h.json("POST", "/api/v1/webhooks", Some(&key), &body);
        assert_eq!(a.status, 422, "{body}: {}", a.text);
    }
    // Malformed JSON, wrong content type.
    assert_eq!(
        h.send("POST", "/api/v1/webhooks", Some(&key), &[("Content-Type", "application/json")], Some(b"{\"url\":"))
            .status,
        400
    );
    assert_eq!(
        h.send("POST", "/api/v1/webhooks", Some(&key), &[("Content-Type", "text/plain")], Some(b"{}")).status,
        415
    );
    // None of it created anything.
    assert_eq!(h.send("GET", "/api/v1/webhooks", Some(&key), &[], None).body["data"].as_array().unwrap().len(), 0);
}

#[test]
fn targets_must_be_https_and_public_without_dev() {
    let dir = tempfile::tempdir().unwrap();
    let h = Herald::serve(dir.path(), &[], &[("HERALD_ADMIN_TOKEN", ADMIN)]);
    h.wait_ready();
    for url in [
        "http://hooks.example.com/in",
        "https://127.0.0.1/in",
        "https://10.1.2.3/in",
        "https://[::1]/in",
        "https://169.254.169.254/latest",
        "https://localhost/in",
        // Embedded and translated forms of forbidden IPv4 addresses are judged as those.
        "https://[::127.0.0.1]/in",
        "https://[::ffff:127.0.0.1]/in",
        "https://[2002:7f00:1::]/in",
        "https://[2002:a9fe:a9fe::1]/in",
        "https://[64:ff9b::a00:1]/in",
        "https://[::ffff:a00:1]/in",
        // The rest of the IANA special-purpose registries.
        "https://198.18.0.1/in",
        "https://198.19.255.254/in",
        "https://192.0.2.10/in",
        "https://[2001:db8::1]/in",
        "https://[fd00::1]/in",
        "https://[64:ff9b:1::1]/in",
        "https://[2001::1]/in",
        // Names that mean loopback by definition, whatever DNS says.
        "https://localhost./in",
        "https://api.localhost/in",
        "https://LOCALHOST.localdomain/in",
        "https://ip6-localhost/in",
        "https://ip6-loopback/in",
        // Other spellings of 127.0.0.1 that URL parsing turns into it.
        "https://127.0.0.1./in",
        "https://2130706433/in",
        "https://0x7f.0.0.1/in",
    ] {
        let a = h.json("POST", "/api/v1/webhooks", Some(ADMIN), &hook(url));
        assert_eq!((a.status, a.body["error"]["field"].as_str()), (422, Some("url")), "{url}: {}", a.text);
    }
    // A name that does not resolve (yet) is accepted; the connect-time check still applies.
    let a = h.json("POST", "/api/v1/webhooks", Some(ADMIN), &hook("https://hooks.example.invalid/in"));
    assert_eq!(a.status, 201, "{}", a.text);
    // Public addresses, also in embedded forms, are accepted.
    for url in ["https://93.184.216.34/in", "https://[2002:5db8:d822::1]/in", "https://[64:ff9b::5db8:d822]/in"] {
        let a = h.json("POST", "/api/v1/webhooks", Some(ADMIN), &hook(url));
        assert_eq!(a.status, 201, "{url}: {}", a.text);
        let id = a.body["id"].as_str().unwrap();
        assert_eq!(h.send("DELETE", &format!("/api/v1/webhooks/{id}"), Some(ADMIN), &[], None).status, 204);
    }
    drop(h);

    // allowed_cidrs admits a private range in every form of its addresses, and nothing else.
    let dir = tempfile::tempdir().unwrap();
    let h = Herald::serve(
        dir.path(),
        &[],
        &[("HERALD_ADMIN_TOKEN", ADMIN), ("HERALD_ALLOWED_CIDRS", "10.0.0.0/8"), ("HERALD_ALLOW_HTTP", "true")],
    );
    h.wait_ready();
    for url in ["http://10.1.2.3/in", "http://[::ffff:10.1.2.3]/in", "http://[2002:a01:203::]/in"] {
        let a = h.json("POST", "/api/v1/webhooks", Some(ADMIN), &hook(url));
        assert_eq!(a.status, 201, "{url}: {}", a.text);
        let id = a.body["id"].as_str().unwrap();
        assert_eq!(h.send("DELETE", &format!("/api/v1/webhooks/{id}"), Some(ADMIN), &[], None).status, 204);
    }
    for url in ["http://127.0.0.1/in", "http://[2002:7f00:1::]/in", "http://localhost/in"] {
        let a = h.json("POST", "/api/v1/webhooks", Some(ADMIN), &hook(url));
        assert_eq!(a.status, 422, "{url}: {}", a.text);
    }
    drop(h);

    // --dev keeps allowing loopback names (local receivers).
    let dir = tempfile::tempdir().unwrap();
    let h = herald_for_api(dir.path());
    let a = h.json("POST", "/api/v1/webhooks", Some(ADMIN), &hook("http://localhost:9/in"));
    assert_eq!(a.status, 201, "{}", a.text);
}
