//! Event ingest over real HTTP: matching, exact `data`, tenancy, idempotency (also under
//! concurrency and across a restart), durability across SIGKILL, batches, bad input.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

fn post_raw(h: &Herald, key: &str, body: &[u8], extra: &[(&str, &str)]) -> Answer {
    let mut headers = vec![("Content-Type", "application/json")];
    headers.extend_from_slice(extra);
    h.send("POST", "/api/v1/events", Some(key), &headers, Some(body))
}

#[test]
fn events_fan_out_to_matching_active_webhooks_and_keep_their_data_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_for_api(dir.path());
    let key = account(&h, "AstroLeads");
    webhook(&h, &key, json!(["lead.*"]), true);
    webhook(&h, &key, json!(["new_lead", "email.bounced"]), true);
    webhook(&h, &key, json!(["*"]), false);
    webhook(&h, &key, json!(["*"]), true);

    // `data` is kept as its bytes arrived: spacing, escapes, exponents, big and trailing-zero
    // numbers, key order.
    let data = r#"{ "b": 1, "a": 2.50, "big": 12345678901234567890, "s": "caf\u00e9 \/ \"q\"",
        "e": 1.0E+2, "n": [1e3, -0.0], "k": {"2": true, "1": null} }"#;
    let body = format!(r#"{{"event": "lead.qualified", "data": {data}}}"#).into_bytes();
    let a = post_raw(&h, &key, &body, &[]);
    assert_eq!(a.status, 202, "{}", a.text);
    assert_eq!((a.body["event"].as_str(), a.body["deliveries"].as_u64()), (Some("lead.qualified"), Some(2)));
    let id = a.body["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("evt_"));

    let b = post_raw(&h, &key, br#"{"event":"new_lead","data":{}}"#, &[]);
    assert_eq!(b.body["deliveries"], 2, "{}", b.text);
    let c = post_raw(&h, &key, br#"{"event":"nobody.listens_here","data":{}}"#, &[]);
    assert_eq!(c.body["deliveries"], 1, "only the active `*`: {}", c.text);

    let read = h.send("GET", &format!("/api/v1/events/{id}"), Some(&key), &[], None);
    assert_eq!(read.status, 200, "{}", read.text);
    assert!(read.text.contains(&format!(r#""data":{data},"#)), "{}", read.text);
    assert_eq!(read.body["ordering_key"], Value::Null);
    let keyed = "é".repeat(128);
    let k =
        post_raw(&h, &key, format!(r#"{{"event":"new_lead","data":{{}},"ordering_key":"{keyed}"}}"#).as_bytes(), &[]);
    assert_eq!(k.status, 202, "256 bytes is the most: {}", k.text);
    let shown = h.send("GET", &format!("/api/v1/events/{}", k.body["id"].as_str().unwrap()), Some(&key), &[], None);
    assert_eq!(shown.body["ordering_key"], keyed.as_str());
    assert_eq!(read.body["deliveries"].as_array().map(Vec::len), Some(2), "{}", read.text);

    // Another account, or a made-up id, sees nothing.
    let other = account(&h, "LeadNest");
    assert_eq!(h.send("GET", &format!("/api/v1/events/{id}"), Some(&other), &[], None).status, 404);
    for bad in ["evt_01JD6Z1M8Q4W9X2Y3Z4A5B6C7D", "evt_", "nope"] {
        assert_eq!(h.send("GET", &format!("/api/v1/events/{bad}"), Some(&key), &[], None).status, 404, "{bad}");
    }
}

#[test]
fn idempotency_keys_replay_conflict_race_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let args = ["--dev", "--data-dir", data.to_str().unwrap()];
    let mut h = Herald::serve(dir.path(), &args, &[("HERALD_ADMIN_TOKEN", ADMIN)]);
    h.wait_ready();
    webhook(&h, ADMIN, json!(["*"]), true);
    let body = br#"{"event":"lead.qualified","data":{"lead":"L1"}}"#;

    let first = post_raw(&h, ADMIN, body, &[("Idempotency-Key", "order-1")]);
    assert_eq!(first.status, 202);
    let again = post_raw(&h, ADMIN, body, &[("Idempotency-Key", "order-1")]);
    assert_eq!((again.status, &again.body["id"]), (200, &first.body["id"]), "{}", again.text);
    let other_body =
        post_raw(&h, ADMIN, br#"{"event":"lead.qualified","data":{"lead":"L2"}}"#, &[("Idempotency-Key", "order-1")]);
    assert_eq!(other_body.status, 409, "{}", other_body.text);
    // The client's own `id` serves as the key when there is no header.
    let with_id = br#"{"event":"lead.qualified","data":{},"id":"lead-77"}"#;
    let x = post_raw(&h, ADMIN, with_id, &[]);
    let y = post_raw(&h, ADMIN, with_id, &[]);
    assert_eq!((x.status, y.status), (202, 200));
    assert_eq!(x.body["id"], y.body["id"]);

    // Many identical requests at the same moment: exactly one event.
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..24)
            .map(|_| {
                s.spawn(|| {
                    let a = post_raw(
                        &h,
                        ADMIN,
                        br#"{"event":"lead.qualified","data":{"n":1}}"#,
                        &[("Idempotency-Key", "burst")],
                    );
                    (a.status, a.body["id"].clone())
                })
            })
            .collect();
        handles.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(answers.iter().filter(|(s, _)| *s == 202).count(), 1, "{answers:?}");
    assert_eq!(answers.iter().filter(|(s, _)| *s == 200).count(), 23, "{answers:?}");
    assert!(answers.iter().all(|(_, id)| *id == answers[0].1));

    // Across a restart the key still holds.
    h.signal(libc::SIGTERM);
    assert!(h.wait_exit(Duration::from_secs(20)).success());
    let h = Herald::serve(dir.path(), &args, &[("HERALD_ADMIN_TOKEN", ADMIN)]);
    h.wait_ready();
    let after = post_raw(&h, ADMIN, body, &[("Idempotency-Key", "order-1")]);
    assert_eq!((after.status, &after.body["id"]), (200, &first.body["id"]), "{}", after.text);
}

#[test]
fn an_accepted_event_survives_sigkill_right_after_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let args = ["--dev", "--data-dir", data.to_str().unwrap()];
    let mut h = Herald::serve(dir.path(), &args, &[("HERALD_ADMIN_TOKEN", ADMIN)]);
    h.wait_ready();
    webhook(&h, ADMIN, json!(["lead.*"]), true);
    webhook(&h, ADMIN, json!(["*"]), true);
    let ids: Vec<String> = (0..20)
        .map(|i| {
            let body = format!(r#"{{"event":"lead.created","data":{{"i":{i}}}}}"#);
            let a = post_raw(&h, ADMIN, body.as_bytes(), &[]);
            assert_eq!(a.status, 202);
            a.body["id"].as_str().unwrap().to_owned()
        })
        .collect();
    h.signal(libc::SIGKILL);
    h.wait_exit(Duration::from_secs(10));
    let h = Herald::serve(dir.path(), &args, &[("HERALD_ADMIN_TOKEN", ADMIN)]);
    h.wait_ready();
    for id in &ids {
        let a = h.send("GET", &format!("/api/v1/events/{id}"), Some(ADMIN), &[], None);
        assert_eq!(a.status, 200, "{id}: {}", a.text);
        let deliveries = a.body["deliveries"].as_array().expect("deliveries");
        assert_eq!(deliveries.len(), 2, "{id}: {}", a.text);
        assert!(deliveries.iter().all(|d| d["status"] == "pending"), "{id}: {}", a.text);
    }
    let ready = h.get("/readyz").1;
    let ready: Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["unfinished_deliveries"], 40, "every acknowledged delivery is still owed: {ready}");
}

#[test]
fn batches_answer_item_by_item_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_for_api(dir.path());
    webhook(&h, ADMIN, json!(["*"]), true);
    let batch = json!([
        {"event": "lead.qualified", "data": {"n": 1}},
        {"event": "Not Valid", "data": {}},
        {"event": "lead.qualified", "data": [1, 2]},
        {"event": "lead.qualified"},
        {"event": "new_lead", "data": {"n": 2}, "timestamp": "2025-01-20T10:30:00Z"},
        "not an object",
    ]);
    let a = h.json("POST", "/api/v1/events/batch", Some(ADMIN), &batch);
    assert_eq!(a.status, 202, "{}", a.text);
    let r = a.body["results"].as_array().unwrap();
    assert_eq!(r.len(), 6);
    assert!(r[0]["id"].is_string() && r[4]["id"].is_string(), "{}", a.text);
    assert_eq!(r[1]["error"]["field"], "event");
    assert_eq!(r[2]["error"]["field"], "data");
    assert_eq!(r[3]["error"]["code"], "invalid_field");
    assert_eq!(r[5]["error"]["code"], "invalid_field");
    let read = h.send("GET", &format!("/api/v1/events/{}", r[4]["id"].as_str().unwrap()), Some(ADMIN), &[], None);
    assert_eq!(read.body["timestamp"], "2025-01-20T10:30:00Z");

    let too_many: Vec<Value> = (0..1001).map(|_| json!({"event": "e", "data": {}})).collect();
    assert_eq!(h.json("POST", "/api/v1/events/batch", Some(ADMIN), &Value::Array(too_many)).status, 400);
    assert_eq!(h.json("POST", "/api/v1/events/batch", Some(ADMIN), &json!({"event": "e"})).status, 400);
    let junk =
        h.send("POST", "/api/v1/events/batch", Some(ADMIN), &[("Content-Type", "application/json")], Some(b"[{"));
    assert_eq!(junk.status, 400);
}

#[test]
fn bad_events_get_the_spec_answers() {
    let dir = tempfile::tempdir().unwrap();
    let h = Herald::serve(
        dir.path(),
        &["--dev"],
        &[
            ("HERALD_ADMIN_TOKEN", ADMIN),
            ("HERALD_MAX_PAYLOAD_BYTES", "1024"),
            ("HERALD_STRICT_EVENTS", "true"),
            ("HERALD_EVENT_TYPES", r#"[{name = "lead.qualified"}]"#),
        ],
    );
    h.wait_ready();
    let deep = format!(r#"{{"event":"lead.qualified","data":{{"x":{}1{}}}}}"#, "[".repeat(10_000), "]".repeat(10_000));
    let big = format!(r#"{{"event":"lead.qualified","data":{{"x":"{}"}}}}"#, "a".repeat(2000));
    let huge = format!(r#"{{"event":"lead.qualified","data":{{"x":"{}"}}}}"#, "a".repeat(200_000));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("malformed", b"{\"event\":".to_vec(), 400),
        ("not UTF-8", b"{\"event\":\"lead.qualified\",\"data\":{\"x\":\"\xff\"}}".to_vec(), 400),
        ("missing event", br#"{"data":{}}"#.to_vec(), 422),
        ("missing data", br#"{"event":"lead.qualified"}"#.to_vec(), 422),
        ("data not an object", br#"{"event":"lead.qualified","data":"x"}"#.to_vec(), 422),
        ("data an array", br#"{"event":"lead.qualified","data":[{}]}"#.to_vec(), 422),
        ("a key twice in data", br#"{"event":"lead.qualified","data":{"a":1,"b":2,"a":3}}"#.to_vec(), 422),
        ("a key twice, deep", br#"{"event":"lead.qualified","data":{"x":[{"k":1,"\u006b":2}]}}"#.to_vec(), 422),
        ("a lone surrogate", br#"{"event":"lead.qualified","data":{"x":"\ud800"}}"#.to_vec(), 422),
        ("event wrong type", br#"{"event":7,"data":{}}"#.to_vec(), 422),
        ("unknown field", br#"{"event":"lead.qualified","data":{},"extra":1}"#.to_vec(), 422),
        ("bad name", br#"{"event":"Lead-Qualified","data":{}}"#.to_vec(), 422),
        ("unknown name in strict mode", br#"{"event":"lead.lost","data":{}}"#.to_vec(), 422),
        ("bad timestamp", br#"{"event":"lead.qualified","data":{},"timestamp":"yesterday"}"#.to_vec(), 422),
        (
            "ordering_key over 256 bytes",
            format!(r#"{{"event":"lead.qualified","data":{{}},"ordering_key":"{}"}}"#, "k".repeat(257)).into_bytes(),
            422,
        ),
        ("ordering_key empty", br#"{"event":"lead.qualified","data":{},"ordering_key":""}"#.to_vec(), 422),
        ("ordering_key a number", br#"{"event":"lead.qualified","data":{},"ordering_key":7}"#.to_vec(), 422),
        (
            "ordering_key with a newline",
            br#"{"event":"lead.qualified","data":{},"ordering_key":"a\u000ab"}"#.to_vec(),
            422,
        ),
        ("data over max_payload_bytes", big.into_bytes(), 413),
        ("body far over the limit", huge.into_bytes(), 413),
    ];
    for (what, body, status) in cases {
        let a = post_raw(&h, ADMIN, &body, &[]);
        assert_eq!(a.status, status, "{what}: {}", a.text);
        assert!(a.body["error"]["code"].is_string(), "{what}: {}", a.text);
    }
    // A lone surrogate is called one, wherever it is (serde_json says "end of hex escape").
    for body in [&br#"{"event":"lead.qualified","data":{"x":"\ud800"}}"#[..], br#"{"event":"lead.\udc00","data":{}}"#] {
        let a = post_raw(&h, ADMIN, body, &[]);
        let message = a.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("a lone surrogate escape"), "{}", a.text);
    }
    let twice = post_raw(&h, ADMIN, br#"{"event":"lead.qualified","data":{"a":1,"a":1}}"#, &[]);
    assert_eq!(twice.body["error"]["field"], "data", "{}", twice.text);
    assert!(twice.text.contains("the key `a` appears twice"), "{}", twice.text);
    let deep = post_raw(&h, ADMIN, deep.as_bytes(), &[]);
    assert!(matches!(deep.status, 400 | 422), "nested 10,000 deep: {}", deep.text);
    let wrong_type = h.send("POST", "/api/v1/events", Some(ADMIN), &[("Content-Type", "text/plain")], Some(b"{}"));
    assert_eq!(wrong_type.status, 415);
    assert_eq!(
        h.send("POST", "/api/v1/events", None, &[("Content-Type", "application/json")], Some(b"{}")).status,
        401
    );
    // Still serving, and nothing was stored.
    let ok = post_raw(&h, ADMIN, br#"{"event":"lead.qualified","data":{}}"#, &[]);
    assert_eq!(ok.status, 202, "{}", ok.text);
}

#[test]
fn ingest_rate_limit_answers_429_with_retry_after_per_account() {
    let dir = tempfile::tempdir().unwrap();
    let h = Herald::serve(dir.path(), &["--dev"], &[("HERALD_ADMIN_TOKEN", ADMIN), ("HERALD_INGEST_RATE_LIMIT", "5")]);
    h.wait_ready();
    let other = account(&h, "LeadNest");
    let statuses: Vec<Answer> =
        (0..12).map(|_| post_raw(&h, ADMIN, br#"{"event":"lead.qualified","data":{}}"#, &[])).collect();
    let accepted = statuses.iter().filter(|a| a.status == 202).count();
    // Five a second: the burst gets about five through (a little more if a second passes).
    assert!((5..=7).contains(&accepted), "{accepted} accepted");
    let limited: Vec<&Answer> = statuses.iter().filter(|a| a.status == 429).collect();
    assert_eq!(limited.len(), 12 - accepted);
    for a in limited {
        assert_eq!(a.body["error"]["code"], "rate_limited", "{}", a.text);
        assert!(
            a.retry_after.as_deref().and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s >= 1),
            "{:?}",
            a.retry_after
        );
    }
    // Another account has its own budget; a batch counts every item.
    assert_eq!(post_raw(&h, &other, br#"{"event":"lead.qualified","data":{}}"#, &[]).status, 202);
    let batch: Vec<Value> = (0..10).map(|_| json!({"event": "e", "data": {}})).collect();
    let a = h.json("POST", "/api/v1/events/batch", Some(&other), &Value::Array(batch));
    assert_eq!(a.status, 429, "ten events need a full bucket, four are left: {}", a.text);
    assert_eq!(a.retry_after.as_deref(), Some("1"));
}

#[test]
fn ingest_answers_503_with_retry_after_below_min_free_disk_and_stores_nothing() {
    if common::pg::sled_only(
        "ingest_answers_503_with_retry_after_below_min_free_disk_and_stores_nothing",
        "the embedded log's disk room",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // More free space than any disk has: every ingest is refused.
    let env = [("HERALD_ADMIN_TOKEN", ADMIN), ("HERALD_MIN_FREE_DISK", "9000000000000000000")];
    let mut h = Herald::serve(dir.path(), &["--dev"], &env);
    // Up, and telling a load balancer to send ingest elsewhere.
    wait_for("/readyz to say the disk is low", Duration::from_secs(30), || {
        let (code, body) = h.get("/readyz");
        code == 503 && body.contains("writes_failing") && body.contains("min_free_disk")
    });
    webhook(&h, ADMIN, json!(["*"]), true);
    let a = post_raw(&h, ADMIN, br#"{"event":"new_lead","data":{}}"#, &[]);
    assert_eq!(a.status, 503, "{}", a.text);
    assert_eq!(a.body["error"]["code"], "low_on_disk");
    assert!(a.retry_after.as_deref().and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s > 0), "Retry-After");
    let b = h.send(
        "POST",
        "/api/v1/events/batch",
        Some(ADMIN),
        &[("Content-Type", "application/json")],
        Some(br#"[{"event":"new_lead","data":{}}]"#),
    );
    assert_eq!(b.status, 503, "{}", b.text);
    // Reads still work, and nothing was stored.
    let list = h.send("GET", "/api/v1/events", Some(ADMIN), &[], None);
    assert_eq!((list.status, list.body["data"].as_array().map(Vec::len)), (200, Some(0)), "{}", list.text);
    h.signal(libc::SIGTERM);
    h.wait_exit(Duration::from_secs(20));
    drop(h);

    // With room again, the same request is accepted (the same embedded log: the room
    // measured is the data directory's).
    let h = Herald::serve(dir.path(), &["--dev"], &env[..1]);
    h.wait_ready();
    let a = post_raw(&h, ADMIN, br#"{"event":"new_lead","data":{}}"#, &[]);
    assert_eq!(a.status, 202, "{}", a.text);
}

#[test]
fn metrics_count_ingest_with_bounded_labels_and_honour_metrics_token() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("herald.toml"), "[[event_types]]\nname = \"lead.qualified\"\n").unwrap();
    let env = [("HERALD_ADMIN_TOKEN", ADMIN), ("HERALD_METRICS_TOKEN", "scrape-token-0123456789")];
    let h = Herald::serve(dir.path(), &["--dev", "--config", "herald.toml"], &env);
    h.wait_ready();
    let scrape = |token: Option<&str>| h.send("GET", "/metrics", token, &[], None);
    assert_eq!(scrape(None).status, 401);
    assert_eq!(scrape(Some("wrong")).status, 401);
    let before = scrape(Some("scrape-token-0123456789"));
    assert_eq!(before.status, 200, "{}", before.text);
    // Series exist before the first event.
    assert!(before.text.contains("herald_events_ingested_total{event=\"lead.qualified\"} 0"), "{}", before.text);
    assert!(before.text.contains("herald_events_ingested_total{event=\"other\"} 0"));

    webhook(&h, ADMIN, json!(["*"]), true);
    let mut ids = Vec::new();
    for name in ["lead.qualified", "lead.qualified", "tenant.made_up_name"] {
        let a = post_raw(&h, ADMIN, format!(r#"{{"event":"{name}","data":{{}}}}"#).as_bytes(), &[]);
        assert_eq!(a.status, 202);
        ids.push(a.body["id"].as_str().unwrap().to_owned());
    }
    h.send("GET", &format!("/api/v1/events/{}", ids[0]), Some(ADMIN), &[], None);
    let after = scrape(Some("scrape-token-0123456789")).text;
    assert!(after.contains("herald_events_ingested_total{event=\"lead.qualified\"} 2"), "{after}");
    assert!(after.contains("herald_events_ingested_total{event=\"other\"} 1"), "{after}");
    assert!(!after.contains("made_up_name"), "tenants cannot create label values");
    assert!(after.contains(r#"herald_http_requests_total{route="/api/v1/events",status="202"} 3"#), "{after}");
    assert!(after.contains(r#"route="/api/v1/events/{id}""#), "route patterns, not paths: {after}");
    assert!(!after.contains(&ids[0]), "no raw ids in labels");
    assert!(after.contains("herald_deliveries_pending 3"), "{after}");
    assert!(after.contains("herald_recovery_duration_seconds"));
}

/// A temporary directory holding `herald-data`, the data directory an older Herald wrote
/// (`tests/data/log_before_batch_order.tar.gz`), and where that file is.
fn older_data_dir() -> (tempfile::TempDir, &'static str) {
    let dir = tempfile::tempdir().unwrap();
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    let untar = std::process::Command::new("tar")
        .args(["xzf", &format!("{data}/log_before_batch_order.tar.gz"), "-C"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(untar.success());
    (dir, data)
}

/// A data directory an older Herald wrote (before records carried a batch place, before the
/// storage interface) opens unchanged: `herald verify` finds every record and a fresh fold
/// of them equal to the stored rows.
#[test]
fn a_data_directory_an_older_herald_wrote_verifies_clean() {
    if common::pg::sled_only(
        "a_data_directory_an_older_herald_wrote_verifies_clean",
        "verifies a data directory an older single node wrote",
    ) {
        return;
    }
    let (dir, _) = older_data_dir();
    let (code, out, err) = run(dir.path(), &["--data-dir", "herald-data", "verify"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("records: 19 (last seq 19, applied 19)") && out.contains("\nclean"), "{out}");
}

/// One batch's ids sort in batch order — and the ids a Herald issued before ids carried their
/// place in a batch keep resolving, events and deliveries alike (a data directory that
/// Herald wrote, committed as `tests/data/log_before_batch_order.tar.gz` with the ids it
/// answered).
#[test]
fn a_batchs_ids_sort_in_batch_order_and_ids_issued_before_still_resolve() {
    if common::pg::sled_only(
        "a_batchs_ids_sort_in_batch_order_and_ids_issued_before_still_resolve",
        "opens a data directory an older single node wrote",
    ) {
        return;
    }
    let (dir, data) = older_data_dir();
    let before: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{data}/log_before_batch_order.json")).unwrap()).unwrap();
    let token = before["admin_token"].as_str().unwrap();
    let h = Herald::serve(dir.path(), &["--dev"], &[("HERALD_ADMIN_TOKEN", token)]);
    h.wait_ready();
    let get = |path: &str| h.send("GET", path, Some(token), &[], None);

    let old_events: Vec<&str> =
        before["batch"].as_array().unwrap().iter().chain([&before["single"]]).map(|v| v.as_str().unwrap()).collect();
    let mut old_deliveries: Vec<String> = Vec::new();
    for id in &old_events {
        let e = get(&format!("/api/v1/events/{id}"));
        assert_eq!((e.status, e.body["id"].as_str()), (200, Some(*id)), "{}", e.text);
        for d in e.body["deliveries"].as_array().unwrap() {
            old_deliveries.push(d["id"].as_str().unwrap().to_owned());
        }
    }
    let mut expected: Vec<String> =
        before["deliveries"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    expected.sort();
    old_deliveries.sort();
    assert_eq!(old_deliveries, expected, "the deliveries of the old events have the ids they had");
    for d in &expected {
        let a = get(&format!("/api/v1/deliveries/{d}"));
        assert_eq!((a.status, a.body["id"].as_str()), (200, Some(d.as_str())), "{}", a.text);
    }
    let listed = get("/api/v1/events?limit=100");
    // (Herald's own herald.delivery.dead events are in the stream too.)
    let listed: Vec<&str> = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"].as_str().is_some_and(|n| n.starts_with("lead.")))
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    let mut want = old_events.clone();
    want.sort();
    let mut got = listed.clone();
    got.sort();
    assert_eq!(got, want, "the list shows the ids issued");

    // A new batch: its ids sort in its order, and they resolve.
    let batch: Vec<Value> = (0..200).map(|i| json!({"event": "lead.created", "data": {"i": i}})).collect();
    let a = h.json("POST", "/api/v1/events/batch", Some(token), &json!(batch));
    assert_eq!(a.status, 202, "{}", a.text);
    let ids: Vec<String> =
        a.body["results"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 200);
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, ids, "one batch's ids sort in batch order");
    for (i, id) in ids.iter().enumerate().step_by(37) {
        let e = get(&format!("/api/v1/events/{id}"));
        assert_eq!((e.status, e.text.contains(&format!(r#""data":{{"i":{i}}}"#))), (200, true), "{}", e.text);
    }
    // An id with another place in the batch is not that event.
    let mut forged = ids[5].clone().into_bytes();
    forged[4 + 10] = if forged[4 + 10] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap();
    assert_eq!(get(&format!("/api/v1/events/{forged}")).status, 404, "{forged}");
}
