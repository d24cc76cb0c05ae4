//! A delivery on the wire (contract §4), checked by receivers written afresh here: the checks of
//! seed 000's receiver (`sha256=` + hex under its own header — over the raw body: its
//! `JSON.stringify` of the parsed body matches only when the platform sent `data` in exactly
//! the form JavaScript writes it), seed 001's (bare hex of the raw body under
//! `X-Webhook-Signature`) and Standard Webhooks
//! (`v1,` base64 over `{id}.{timestamp}.{body}`), including the two signatures of a
//! rotation overlap. Also the test-send route.

mod common;

use base64::Engine as _;
use common::receiver::{Receiver, Reply};
use common::*;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use std::time::Duration;

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Seed 000's header form (Node): `sha256=` + hex HMAC, here of the raw body.
fn seed_000_verifies(body: &[u8], header: &str, secret: &str) -> bool {
    header == format!("sha256={}", hex(&hmac(secret.as_bytes(), body)))
}

/// Seed 001 (Python): bare hex HMAC of the raw body.
fn seed_001_verifies(body: &[u8], header: &str, secret: &str) -> bool {
    header == hex(&hmac(secret.as_bytes(), body))
}

/// Standard Webhooks: any of the space-separated `v1,` signatures verifies with `secret`.
fn standard_verifies(id: &str, ts: &str, body: &[u8], header: &str, secret: &str) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = match secret.strip_prefix("whsec_") {
        Some(rest) => b64.decode(rest).unwrap(),
        None => secret.as_bytes().to_vec(),
    };
    let mut signed = format!("{id}.{ts}.").into_bytes();
    signed.extend_from_slice(body);
    let expected = format!("v1,{}", b64.encode(hmac(&key, &signed)));
    header.split(' ').any(|s| s == expected)
}

fn herald(dir: &std::path::Path) -> Herald {
    herald_for_api(dir)
}

fn create(h: &Herald, key: &str, body: serde_json::Value) -> serde_json::Value {
    let a = h.json("POST", "/api/v1/webhooks", Some(key), &body);
    assert_eq!(a.status, 201, "{}", a.text);
    a.body
}

fn ingest(h: &Herald, key: &str, raw: &str) -> serde_json::Value {
    let a = h.send("POST", "/api/v1/events", Some(key), &[("Content-Type", "application/json")], Some(raw.as_bytes()));
    assert_eq!(a.status, 202, "{}", a.text);
    a.body
}

#[test]
fn deliveries_carry_every_header_and_verify_as_the_seed_receivers_check_them() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald(dir.path());
    let key = account(&h, "AstroLeads");
    let r = Receiver::start();
    let astro_secret = "astroleads_webhook_secret_0123";
    create(
        &h,
        &key,
        json!({
            "url": r.url("/astro"), "events": ["lead.*"], "secret": astro_secret,
            "signature_header": "X-AstroLeads-Signature", "signature_prefix": "sha256=",
            "headers": {"X-Team": "sales"}
        }),
    );
    let nest = create(&h, &key, json!({"url": r.url("/nest"), "events": ["new_lead"], "signature_prefix": ""}));
    let nest_secret = nest["secret"].as_str().unwrap().to_owned();
    assert!(nest_secret.starts_with("whsec_"));

    // Key order, spacing, escapes, exponents, trailing zeros and integers beyond 64 bits must
    // survive byte for byte.
    let data = r#"{"leadId":"lead_789xyz", "score":92.50,"zeta":1,"alpha":{ "n":-0.0010,"big":123456789012345678901234567890,"list":[3,1,2],"e":1.0E+2 },"email":"marie@techcorp.com","name":"Ren\u00e9e \/ \"R\""}"#;
    let qualified =
        ingest(&h, &key, &format!(r#"{{"event":"lead.qualified","timestamp":"2025-01-20T10:30:00Z","data":{data}}}"#));
    let new_lead = ingest(&h, &key, &format!(r#"{{"event":"new_lead","data":{data}}}"#));
    wait_for("both deliveries", Duration::from_secs(10), || r.count() >= 2);

    let a = &r.hits_on("/astro")[0];
    let expected_body = format!(
        r#"{{"id":"{}","event":"lead.qualified","timestamp":"2025-01-20T10:30:00Z","data":{data}}}"#,
        qualified["id"].as_str().unwrap()
    );
    assert_eq!(String::from_utf8_lossy(&a.body), expected_body, "compact, data exactly as sent");
    assert_eq!(a.method, "POST");
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert!(a.header("user-agent").unwrap().starts_with("Herald/"));
    assert_eq!(a.header("x-team"), Some("sales"));
    assert_eq!(a.header("x-webhook-event"), Some("lead.qualified"));
    assert_eq!(a.header("x-webhook-attempt"), Some("1"));
    let id = a.header("x-webhook-delivery-id").unwrap();
    assert!(id.starts_with("dlv_"));
    assert_eq!(a.header("webhook-id"), Some(id));
    let ts = a.header("x-webhook-timestamp").unwrap();
    assert_eq!(a.header("webhook-timestamp"), Some(ts));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(ts.parse::<u64>().unwrap().abs_diff(now) < 60);
    assert!(seed_000_verifies(&a.body, a.header("x-astroleads-signature").unwrap(), astro_secret));
    assert!(a.header("x-webhook-signature").is_none(), "the custom header replaces the default one");
    assert!(standard_verifies(id, ts, &a.body, a.header("webhook-signature").unwrap(), astro_secret));
    assert!(!standard_verifies(id, ts, &a.body, a.header("webhook-signature").unwrap(), "another_secret_0123456"));

    let n = &r.hits_on("/nest")[0];
    assert!(String::from_utf8_lossy(&n.body).contains(new_lead["id"].as_str().unwrap()));
    assert!(String::from_utf8_lossy(&n.body).ends_with(&format!(r#""data":{data}}}"#)));
    let sig = n.header("x-webhook-signature").unwrap();
    assert!(seed_001_verifies(&n.body, sig, &nest_secret), "bare hex of the raw body");
    let (nid, nts) = (n.header("webhook-id").unwrap(), n.header("webhook-timestamp").unwrap());
    assert!(standard_verifies(nid, nts, &n.body, n.header("webhook-signature").unwrap(), &nest_secret));

    // Rotation: the new secret signs everything; the old one still signs webhook-signature.
    let nest_id = nest["id"].as_str().unwrap();
    let rotated = h.json("POST", &format!("/api/v1/webhooks/{nest_id}/rotate-secret"), Some(&key), &json!({}));
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let new_secret = rotated.body["secret"].as_str().unwrap().to_owned();
    ingest(&h, &key, r#"{"event":"new_lead","data":{"after":"rotation"}}"#);
    wait_for("the delivery after rotation", Duration::from_secs(10), || r.hits_on("/nest").len() >= 2);
    let n2 = &r.hits_on("/nest")[1];
    let (id2, ts2) = (n2.header("webhook-id").unwrap(), n2.header("webhook-timestamp").unwrap());
    let standard = n2.header("webhook-signature").unwrap();
    assert_eq!(standard.split(' ').count(), 2, "{standard}");
    assert!(standard_verifies(id2, ts2, &n2.body, standard, &new_secret));
    assert!(standard_verifies(id2, ts2, &n2.body, standard, &nest_secret));
    assert!(seed_001_verifies(&n2.body, n2.header("x-webhook-signature").unwrap(), &new_secret));
    assert!(!seed_001_verifies(&n2.body, n2.header("x-webhook-signature").unwrap(), &nest_secret));

    // The API shows the delivery succeeded, with its attempt and masked-nothing headers.
    let d = h.json("GET", &format!("/api/v1/deliveries/{id}"), Some(&key), &json!(null));
    assert_eq!(d.status, 200, "{}", d.text);
    assert_eq!(d.body["status"], "succeeded", "{}", d.text);
    assert_eq!(d.body["attempts"][0]["status_code"], 200);
    assert_eq!(d.body["attempts"][0]["request_headers"]["X-Team"], "sales");
}

#[test]
fn the_same_bytes_go_out_on_every_attempt_with_a_stable_delivery_id() {
    let dir = tempfile::tempdir().unwrap();
    let h = Herald::serve(dir.path(), &["--dev"], &[("HERALD_ADMIN_TOKEN", ADMIN), ("HERALD_INITIAL_BACKOFF", "50ms")]);
    h.wait_ready();
    let key = account(&h, "LeadNest");
    let r = Receiver::start();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = calls.clone();
    r.answer(
        move |_| {
            if c.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
                Reply::status(500)
            } else {
                Reply::ok()
            }
        },
    );
    let w = create(&h, &key, json!({"url": r.url("/in"), "events": ["*"]}));
    let secret = w["secret"].as_str().unwrap().to_owned();
    ingest(&h, &key, r#"{"event":"email.bounced","data":{"to":"x@example.com","n":1.0}}"#);
    wait_for("three attempts", Duration::from_secs(10), || r.count() >= 3);
    let hits = r.hits();
    for (i, hit) in hits.iter().enumerate() {
        assert_eq!(hit.body, hits[0].body);
        assert_eq!(hit.delivery_id(), hits[0].delivery_id());
        assert_eq!(hit.header("x-webhook-attempt"), Some((i + 1).to_string().as_str()));
        assert!(seed_001_verifies(
            &hit.body,
            hit.header("x-webhook-signature").unwrap().trim_start_matches("sha256="),
            &secret
        ));
    }
    wait_for("the delivery to show succeeded", Duration::from_secs(10), || {
        let d = h.json("GET", &format!("/api/v1/deliveries/{}", hits[0].delivery_id()), Some(&key), &json!(null));
        d.body["status"] == "succeeded" && d.body["attempt_count"] == 3
    });
}

#[test]
fn test_send_delivers_a_signed_sample_and_reports_what_the_receiver_said() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald(dir.path());
    let key = account(&h, "AutoReach");
    let other = account(&h, "Other");
    let r = Receiver::start();
    r.answer(|hit| if hit.path == "/fail" { Reply::status(503).body("try later") } else { Reply::ok().body("thanks") });
    let ok = create(&h, &key, json!({"url": r.url("/ok"), "events": ["*"]}));
    let fail = create(&h, &key, json!({"url": r.url("/fail"), "events": ["*"]}));
    let (ok_id, fail_id) = (ok["id"].as_str().unwrap(), fail["id"].as_str().unwrap());

    let a = h.json("POST", &format!("/api/v1/webhooks/{ok_id}/test"), Some(&key), &json!({"event": "lead.qualified"}));
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!((a.body["success"].as_bool(), a.body["status_code"].as_u64()), (Some(true), Some(200)));
    assert_eq!(a.body["response_body"], "thanks");
    assert!(a.body["latency_ms"].as_f64().unwrap() >= 0.0);
    let hit = &r.hits_on("/ok")[0];
    assert_eq!(hit.header("x-webhook-event"), Some("lead.qualified"));
    assert!(seed_000_verifies(&hit.body, hit.header("x-webhook-signature").unwrap(), ok["secret"].as_str().unwrap()));

    let b = h.json("POST", &format!("/api/v1/webhooks/{fail_id}/test"), Some(&key), &json!({}));
    assert_eq!(b.status, 200, "{}", b.text);
    assert_eq!((b.body["success"].as_bool(), b.body["status_code"].as_u64()), (Some(false), Some(503)));
    assert_eq!(b.body["response_body"], "try later");
    assert_eq!(r.hits_on("/fail")[0].header("x-webhook-event"), Some("webhook.test"));

    // Hostile and malformed input.
    let path = format!("/api/v1/webhooks/{ok_id}/test");
    let bad = |body: &[u8], ct: &str| h.send("POST", &path, Some(&key), &[("Content-Type", ct)], Some(body));
    assert_eq!(bad(b"{", "application/json").status, 400);
    assert_eq!(bad(b"{}", "text/plain").status, 415);
    assert_eq!(bad(br#"{"event": 5}"#, "application/json").status, 422);
    assert_eq!(bad(br#"{"event": "x", "extra": 1}"#, "application/json").status, 422);
    let e = bad(br#"{"event": "Not An Event"}"#, "application/json");
    assert_eq!((e.status, e.body["error"]["field"].as_str()), (422, Some("event")), "{}", e.text);
    assert_eq!(bad(&vec![b' '; 200_000], "application/json").status, 413);
    let before = r.count();
    for (token, id) in [(&other, ok_id), (&key, "wh_01JD6Z1M8Q4W9X2Y3Z4A5B6C7D"), (&key, "nope")] {
        let x = h.json("POST", &format!("/api/v1/webhooks/{id}/test"), Some(token), &json!({}));
        assert_eq!(x.status, 404, "{}", x.text);
    }
    assert_eq!(r.count(), before, "nothing sent for a refused request");
}

#[test]
fn credentials_are_masked_everywhere_shown_and_a_masked_value_sent_back_keeps_the_stored_one() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald(dir.path());
    let key = account(&h, "AutoReach");
    let r = Receiver::start();
    let created = create(
        &h,
        &key,
        json!({
            "url": r.url("/in?token=q-s3cr3t&team=sales"), "events": ["lead.*"],
            "headers": {"Proxy-Authorization": "Basic p-s3cr3t", "X-Password": "pw-s3cr3t",
                        "X-Auth": "a-s3cr3t", "X-Team": "sales"}
        }),
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let shown = h.json("GET", &format!("/api/v1/webhooks/{id}"), Some(&key), &json!(null));
    for answer in [&created, &shown.body] {
        let text = answer.to_string();
        assert!(!text.contains("s3cr3t"), "{text}");
        assert_eq!(answer["url"], r.url("/in?token=****&team=****"), "{text}");
        for name in ["Proxy-Authorization", "X-Password", "X-Auth"] {
            assert_eq!(answer["headers"][name], "****", "{name}: {text}");
        }
        assert_eq!(answer["headers"]["X-Team"], "sales");
    }

    // What the caller read, sent back unchanged with another change: the stored values stay.
    let edit = json!({"name": "renamed", "url": shown.body["url"], "headers": shown.body["headers"]});
    let edited = h.json("PATCH", &format!("/api/v1/webhooks/{id}"), Some(&key), &edit);
    assert_eq!(edited.status, 200, "{}", edited.text);
    assert_eq!(edited.body["name"], "renamed");
    ingest(&h, &key, r#"{"event":"lead.qualified","data":{"n":1}}"#);
    wait_for("the delivery", Duration::from_secs(10), || r.count() >= 1);
    let hit = &r.hits()[0];
    assert_eq!(hit.query, "token=q-s3cr3t&team=sales", "the real query string went out");
    assert_eq!(hit.header("proxy-authorization"), Some("Basic p-s3cr3t"));
    assert_eq!(hit.header("x-password"), Some("pw-s3cr3t"));
    assert_eq!(hit.header("x-auth"), Some("a-s3cr3t"));
    // A masked value for a header not stored before is a value like any other.
    let added = json!({"headers": {"X-Password": "****", "X-Api-Key": "****"}});
    let a = h.json("PATCH", &format!("/api/v1/webhooks/{id}"), Some(&key), &added);
    assert_eq!(a.status, 200, "{}", a.text);
    ingest(&h, &key, r#"{"event":"lead.qualified","data":{"n":2}}"#);
    wait_for("the second delivery", Duration::from_secs(10), || r.count() >= 2);
    let second = &r.hits()[1];
    assert_eq!(second.header("x-password"), Some("pw-s3cr3t"));
    assert_eq!(second.header("x-api-key"), Some("****"));
    assert_eq!(second.header("proxy-authorization"), None, "headers replaced as a whole");

    // The delivery as recorded: credential values masked in its request headers.
    let dlv = second.delivery_id();
    // The receiver saw the attempt before Herald recorded how it ended.
    let read = || h.json("GET", &format!("/api/v1/deliveries/{dlv}"), Some(&key), &json!(null));
    wait_for("the attempt recorded", Duration::from_secs(10), || read().body["status"] == "succeeded");
    let d = read();
    assert_eq!(d.body["attempts"][0]["request_headers"]["X-Password"], "****", "{}", d.text);
    assert!(!d.text.contains("s3cr3t"), "{}", d.text);
    assert!(!h.stderr().contains("s3cr3t"), "no credential in the logs");

    // Framing, hop-by-hop and client headers are refused, and so are unusable signature headers.
    for name in [
        "Transfer-Encoding",
        "Connection",
        "Expect",
        "Upgrade",
        "TE",
        "Trailer",
        "Keep-Alive",
        "Proxy-Connection",
        "Date",
        "Accept-Encoding",
    ] {
        let body = json!({"url": r.url("/in"), "events": ["*"], "headers": {name: "x"}});
        let a = h.json("POST", "/api/v1/webhooks", Some(&key), &body);
        assert_eq!((a.status, a.body["error"]["field"].as_str()), (422, Some("headers")), "{name}: {}", a.text);
    }
    let long = format!("X-{}", "s".repeat(63));
    for sig in ["Transfer-Encoding", "Expect", "Content-Length", "Date", "webhook-id", long.as_str(), "Bad Name"] {
        let body = json!({"url": r.url("/in"), "events": ["*"], "signature_header": sig});
        let a = h.json("POST", "/api/v1/webhooks", Some(&key), &body);
        assert_eq!((a.status, a.body["error"]["field"].as_str()), (422, Some("signature_header")), "{sig}: {}", a.text);
    }
}

#[test]
fn a_webhook_stored_before_the_header_rules_keeps_working_is_reported_and_is_fixed_on_its_next_edit() {
    if common::pg::sled_only("a_webhook_stored_before_the_header_rules", "writes a webhook into the sled log") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let r = Receiver::start();
    // A node with an account, stopped.
    let mut h = herald(dir.path());
    h.signal(libc::SIGTERM);
    assert!(h.wait_exit(Duration::from_secs(20)).success());
    drop(h);
    // A webhook as an older Herald stored it, written straight into the log.
    let data = dir.path().join("herald-data");
    let (log, _) = herald::log::Log::open(&data, herald::log::LogOptions::default()).unwrap();
    let secret = "legacy_webhook_secret_0123";
    let webhook = herald::model::Webhook {
        signature_header: "Transfer-Encoding".into(),
        ..legacy_webhook(r.url("/legacy"), secret, &[("Expect", "100-continue"), ("X-Team", "sales")])
    };
    let id = webhook.id.to_string();
    let record = herald::storage::Record::WebhookCreated { webhook };
    log.append_blocking(herald::storage::Command::new(vec![record])).unwrap();
    log.close();
    drop(log);
    let (code, out, _) = run(dir.path(), &["--dev", "verify"], &[]);
    assert_eq!(code, 0, "reported, not damage: {out}");
    assert!(out.contains("notice:") && out.contains(&id) && out.contains("Transfer-Encoding"), "{out}");

    let h = herald(dir.path());
    wait_for("the start-up report", Duration::from_secs(5), || h.stderr().contains("breaks a current rule"));
    let said = h.stderr();
    assert!(said.contains(&id) && said.contains("Transfer-Encoding") && said.contains("Expect"), "{said}");
    // It keeps working: the body arrives whole, signed under the default header.
    let e = ingest(&h, ADMIN, r#"{"event":"lead.qualified","data":{"legacy":true}}"#);
    wait_for("the legacy delivery", Duration::from_secs(10), || r.count() >= 1);
    let hit = &r.hits()[0];
    assert!(String::from_utf8_lossy(&hit.body).contains(e["id"].as_str().unwrap()), "the body went out");
    assert_eq!(hit.header("expect"), None);
    assert_eq!(hit.header("x-team"), Some("sales"));
    assert!(seed_000_verifies(&hit.body, hit.header("x-webhook-signature").unwrap(), secret));
    // Its next edit must fix it, whatever else it changes.
    let path = format!("/api/v1/webhooks/{id}");
    let a = h.json("PATCH", &path, Some(ADMIN), &json!({"name": "renamed"}));
    assert_eq!((a.status, a.body["error"]["field"].as_str()), (422, Some("signature_header")), "{}", a.text);
    let a = h.json("PATCH", &path, Some(ADMIN), &json!({"signature_header": "X-Legacy-Signature"}));
    assert_eq!((a.status, a.body["error"]["field"].as_str()), (422, Some("headers")), "{}", a.text);
    let fixed = json!({"signature_header": "X-Legacy-Signature", "headers": {"X-Team": "sales"}});
    let a = h.json("PATCH", &path, Some(ADMIN), &fixed);
    assert_eq!(a.status, 200, "{}", a.text);
    let mut h = h;
    h.signal(libc::SIGTERM);
    assert!(h.wait_exit(Duration::from_secs(20)).success());
    let (code, out, _) = run(dir.path(), &["--dev", "verify"], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("breaks a current rule"), "fixed: nothing to report: {out}");
}
