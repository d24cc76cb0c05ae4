//! Reading what ingest did, over real HTTP: event and delivery lists with their filters and
//! cursors, one delivery with its attempts, retry and recover of dead letters, stats and
//! the event catalog.
//!
//! Until the delivery actors exist, attempts are written the way they will write them:
//! Herald is stopped, the test appends `AttemptFinished` records to the real log on disk
//! through the library, and Herald is started again on the same files.

mod common;

use common::*;
use herald::log::{Log, LogOptions};
use herald::model::*;
use herald::storage::{AttemptFinished, Command, Ledger, Record};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

fn ingest(h: &Herald, key: &str, event: &str, n: u64) -> String {
    let a = h.json("POST", "/api/v1/events", Some(key), &json!({"event": event, "data": {"n": n}}));
    assert_eq!(a.status, 202, "{}", a.text);
    a.body["id"].as_str().unwrap().to_owned()
}

fn get(h: &Herald, key: &str, path: &str) -> Answer {
    h.send("GET", path, Some(key), &[], None)
}

fn ids(a: &Answer) -> Vec<String> {
    a.body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {}", a.text))
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Follows `next_cursor` to the end; returns every id in order.
fn all_pages(h: &Herald, key: &str, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            None => path.to_owned(),
            Some(c) => format!("{path}{sep}cursor={c}"),
        };
        let a = get(h, key, &url);
        assert_eq!(a.status, 200, "{url}: {}", a.text);
        out.extend(ids(&a));
        match a.body["next_cursor"].as_str() {
            None => return out,
            Some(c) => cursor = Some(c.to_owned()),
        }
    }
    panic!("more than 100 pages");
}

#[test]
fn events_list_newest_first_with_filters_and_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_for_api(dir.path());
    let key = account(&h, "AstroLeads");
    let other = account(&h, "LeadNest");
    let mut sent = Vec::new();
    for n in 0..7 {
        let name = if n % 2 == 0 { "lead.qualified" } else { "email.bounced" };
        sent.push((ingest(&h, &key, name, n), name));
    }
    ingest(&h, &other, "lead.qualified", 99);
    let newest_first: Vec<String> = sent.iter().rev().map(|(id, _)| id.clone()).collect();

    let a = get(&h, &key, "/api/v1/events");
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(ids(&a), newest_first, "the account's own events, newest first");
    assert_eq!(a.body["next_cursor"], Value::Null);
    assert_eq!(a.body["data"][0]["event"], sent[6].1);
    assert!(a.body["data"][0].get("data").is_none(), "lists leave payloads out");

    let page = get(&h, &key, "/api/v1/events?limit=3");
    assert_eq!(ids(&page), newest_first[..3]);
    assert_eq!(page.body["next_cursor"], newest_first[2].as_str());
    assert_eq!(all_pages(&h, &key, "/api/v1/events?limit=3"), newest_first);
    assert_eq!(all_pages(&h, &key, "/api/v1/events?limit=1"), newest_first);

    let bounced: Vec<String> =
        sent.iter().rev().filter(|(_, n)| *n == "email.bounced").map(|(id, _)| id.clone()).collect();
    assert_eq!(all_pages(&h, &key, "/api/v1/events?event=email.bounced&limit=2"), bounced);
    assert!(ids(&get(&h, &key, "/api/v1/events?event=nobody.sends_this")).is_empty());

    // Time window: everything is within the last minute, nothing in 2001.
    let now = std::time::SystemTime::now();
    let minute_ago = humantime::format_rfc3339_seconds(now - Duration::from_secs(60)).to_string();
    assert_eq!(ids(&get(&h, &key, &format!("/api/v1/events?since={minute_ago}"))), newest_first);
    assert!(ids(&get(&h, &key, "/api/v1/events?until=2001-01-01T00:00:00Z")).is_empty());
    assert!(ids(&get(&h, &key, "/api/v1/events?since=2999-01-01T00:00:00Z")).is_empty());

    // Bad filters are field errors; nothing leaks another account's events.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("cursor=garbage", "cursor"),
        ("cursor=evt_01JD6Z1M8Q4W9X2Y3Z4A5B6C7D", "cursor"),
        ("since=yesterday", "since"),
        ("until=2025-13-01T00:00:00Z", "until"),
        ("since=2025-02-01T00:00:00Z&until=2025-01-01T00:00:00Z", "since"),
        ("event=Not%20A%20Name", "event"),
    ] {
        let a = get(&h, &key, &format!("/api/v1/events?{query}"));
        assert_eq!(a.status, 422, "{query}: {}", a.text);
        assert_eq!(a.body["error"]["field"], field, "{query}: {}", a.text);
    }
    for query in ["limit=abc", "colour=red", "limit=-1"] {
        let a = get(&h, &key, &format!("/api/v1/events?{query}"));
        assert!(a.status == 422 || a.status == 400, "{query}: {}", a.text);
        assert!(a.body["error"]["code"].is_string(), "{query}: {}", a.text);
    }
    let a = get(&h, &other, "/api/v1/events");
    assert_eq!(ids(&a).len(), 1);
    // A cursor from one account walks only the caller's own index.
    let foreign = get(&h, &other, &format!("/api/v1/events?cursor={}", newest_first[0]));
    assert_eq!(foreign.status, 200);
    assert!(ids(&foreign).iter().all(|id| !newest_first.contains(id)));
}

#[test]
fn delivery_lists_filter_by_webhook_event_status_and_time_and_page_with_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_for_api(dir.path());
    let key = account(&h, "AutoReach");
    let leads = webhook(&h, &key, json!(["lead.*"]), true);
    let all = webhook(&h, &key, json!(["*"]), true);
    let e1 = ingest(&h, &key, "lead.qualified", 1); // → leads, all
    let e2 = ingest(&h, &key, "email.opened", 2); // → all
    let e3 = ingest(&h, &key, "lead.created", 3); // → leads, all

    let a = get(&h, &key, "/api/v1/deliveries");
    assert_eq!(a.status, 200, "{}", a.text);
    let data = a.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 5, "{}", a.text);
    let events: Vec<&str> = data.iter().map(|d| d["event_id"].as_str().unwrap()).collect();
    assert_eq!(events, [&e3, &e3, &e2, &e1, &e1], "newest event first");
    for d in data {
        assert_eq!(d["status"], "pending");
        assert_eq!(d["attempt_count"], 0);
        assert!(d["id"].as_str().unwrap().starts_with("dlv_"));
        assert!(d["next_attempt_at"].is_string());
        assert_eq!(d["dead_reason"], Value::Null);
    }
    let every: Vec<String> = ids(&a);
    assert_eq!(every.iter().collect::<HashSet<_>>().len(), 5, "distinct ids");
    assert_eq!(all_pages(&h, &key, "/api/v1/deliveries?limit=2"), every);
    assert_eq!(ids(&get(&h, &key, "/api/v1/webhooks/deliveries")), every, "the alias answers the same");

    // By webhook: the filter and the nested route agree.
    let of_leads = ids(&get(&h, &key, &format!("/api/v1/deliveries?webhook_id={leads}")));
    assert_eq!(of_leads.len(), 2);
    assert_eq!(ids(&get(&h, &key, &format!("/api/v1/webhooks/{leads}/deliveries"))), of_leads);
    assert_eq!(all_pages(&h, &key, &format!("/api/v1/webhooks/{all}/deliveries?limit=1")).len(), 3);
    // By event, and by both.
    let of_e1 = get(&h, &key, &format!("/api/v1/deliveries?event_id={e1}"));
    assert_eq!(ids(&of_e1).len(), 2);
    assert!(of_e1.body["data"].as_array().unwrap().iter().all(|d| d["event"] == "lead.qualified"));
    let both = ids(&get(&h, &key, &format!("/api/v1/deliveries?event_id={e1}&webhook_id={all}")));
    assert_eq!(both.len(), 1);
    // By status and time.
    assert_eq!(ids(&get(&h, &key, "/api/v1/deliveries?status=pending")).len(), 5);
    assert!(ids(&get(&h, &key, "/api/v1/deliveries?status=dead")).is_empty());
    assert!(ids(&get(&h, &key, "/api/v1/deliveries?until=2001-01-01T00:00:00Z")).is_empty());

    // The event read lists its deliveries.
    let read = get(&h, &key, &format!("/api/v1/events/{e3}"));
    let listed: Vec<&str> =
        read.body["deliveries"].as_array().unwrap().iter().map(|d| d["webhook_id"].as_str().unwrap()).collect();
    assert_eq!(listed, [leads.as_str(), all.as_str()]);

    // One delivery.
    let one = get(&h, &key, &format!("/api/v1/deliveries/{}", every[0]));
    assert_eq!(one.status, 200, "{}", one.text);
    assert_eq!(one.body["id"], every[0].as_str());
    assert_eq!(one.body["attempts"], json!([]));

    // Retrying what is not dead is a conflict; recovering nothing re-queues nothing.
    let r = h.send("POST", &format!("/api/v1/deliveries/{}/retry", every[0]), Some(&key), &[], None);
    assert_eq!(r.status, 409, "{}", r.text);
    let since = humantime::format_rfc3339_seconds(std::time::SystemTime::now() - Duration::from_secs(3600)).to_string();
    let r = h.json("POST", &format!("/api/v1/webhooks/{leads}/recover"), Some(&key), &json!({ "since": since }));
    assert_eq!((r.status, &r.body["requeued"]), (202, &json!(0)), "{}", r.text);

    // Bad filters.
    for (query, field) in [
        ("status=lost", "status"),
        ("webhook_id=nope", "webhook_id"),
        ("event_id=nope", "event_id"),
        ("cursor=dlv_nope", "cursor"),
        ("limit=1000", "limit"),
        ("since=2025-01-01", "since"),
    ] {
        let a = get(&h, &key, &format!("/api/v1/deliveries?{query}"));
        assert_eq!(a.status, 422, "{query}: {}", a.text);
        assert_eq!(a.body["error"]["field"], field, "{query}: {}", a.text);
    }
    let a = get(&h, &key, &format!("/api/v1/webhooks/{leads}/deliveries?webhook_id={all}"));
    assert_eq!(a.status, 422, "{}", a.text);
    // Missing and deleted webhooks, missing events: 404.
    for path in [
        "/api/v1/deliveries?webhook_id=wh_01JD6Z1M8Q4W9X2Y3Z4A5B6C7D".to_owned(),
        "/api/v1/deliveries?event_id=evt_01JD6Z1M8Q4W9X2Y3Z4A5B6C7D".to_owned(),
        "/api/v1/webhooks/wh_01JD6Z1M8Q4W9X2Y3Z4A5B6C7D/deliveries".to_owned(),
        "/api/v1/deliveries/dlv_01JD6Z1M8Q4W9X2Y3Z4A5B6C7D000".to_owned(),
    ] {
        assert_eq!(get(&h, &key, &path).status, 404, "{path}");
    }

    // Deleting a webhook kills its queued deliveries with reason `deleted`; they cannot be
    // retried, and the deleted webhook has no deliveries route any more.
    assert_eq!(h.send("DELETE", &format!("/api/v1/webhooks/{leads}"), Some(&key), &[], None).status, 204);
    let dead = get(&h, &key, "/api/v1/deliveries?status=dead");
    assert_eq!(ids(&dead).len(), 2, "{}", dead.text);
    assert!(dead.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["dead_reason"] == "deleted" && d["finished_at"].is_string()));
    assert_eq!(ids(&get(&h, &key, "/api/v1/deliveries?status=pending")).len(), 3);
    let r = h.send("POST", &format!("/api/v1/deliveries/{}/retry", ids(&dead)[0]), Some(&key), &[], None);
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(get(&h, &key, &format!("/api/v1/webhooks/{leads}/deliveries")).status, 404);
}

/// Appends one finished attempt for each delivery, the way the delivery actors record them.
fn record_attempts(data_dir: &std::path::Path, deliveries: &[(String, String)], next: NextStep) {
    let (log, _) = Log::open(data_dir, LogOptions::default()).expect("open the stopped node's log");
    let records: Vec<Record> = deliveries
        .iter()
        .map(|(dlv, webhook)| {
            let id = DeliveryId::parse(dlv).unwrap();
            let at = now_millis();
            Record::AttemptFinished(Box::new(AttemptFinished {
                delivery: id.to_ref(log.id_key()).expect("an id this node issued"),
                webhook_id: WebhookId::parse(webhook).unwrap(),
                attempt: 1,
                started_at: at - 25,
                at,
                outcome: AttemptOutcome {
                    result: AttemptResult::HttpError,
                    status_code: Some(503),
                    latency_us: 25_000,
                    error: Some("receiver answered 503".into()),
                    response_excerpt: Some(b"upstream unavailable".to_vec()),
                    request_headers: vec![
                        ("X-Webhook-Attempt".into(), "1".into()),
                        ("X-Api-Token".into(), "****".into()),
                    ],
                },
                next: next.clone(),
                status: WebhookStatus::default(),
            }))
        })
        .collect();
    log.append_blocking(Command::new(records)).expect("append attempts");
    log.close();
}

#[test]
fn dead_letters_show_their_attempts_and_go_back_to_work_by_retry_and_recover() {
    if common::pg::sled_only("dead_letters_show_their_attempts", "writes attempts into the sled log") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut h = herald_for_api(dir.path());
    let key = account(&h, "LeadNest");
    let wh = webhook(&h, &key, json!(["lead.*"]), true);
    for n in 0..4 {
        ingest(&h, &key, "lead.qualified", n);
    }
    let dlvs = ids(&get(&h, &key, "/api/v1/deliveries"));
    assert_eq!(dlvs.len(), 4);
    h.signal(libc::SIGTERM);
    assert!(h.wait_exit(Duration::from_secs(20)).success());
    drop(h);

    let pairs: Vec<(String, String)> = dlvs.iter().map(|d| (d.clone(), wh.clone())).collect();
    record_attempts(&dir.path().join("herald-data"), &pairs, NextStep::Dead(DeadReason::RetriesExhausted));

    let h = herald_for_api(dir.path());
    let dead = get(&h, &key, "/api/v1/deliveries?status=dead");
    assert_eq!(ids(&dead), dlvs, "{}", dead.text);
    assert!(dead.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["dead_reason"] == "retries_exhausted" && d["attempt_count"] == 1));

    let one = get(&h, &key, &format!("/api/v1/deliveries/{}", dlvs[0]));
    assert_eq!(one.status, 200, "{}", one.text);
    let attempt = &one.body["attempts"][0];
    assert_eq!(attempt["attempt"], 1);
    assert_eq!(attempt["status_code"], 503);
    assert_eq!(attempt["result"], "http_error");
    assert_eq!(attempt["latency_ms"], 25.0);
    assert_eq!(attempt["response_body"], "upstream unavailable");
    assert_eq!(attempt["request_headers"]["X-Api-Token"], "****");

    let stats = get(&h, &key, "/api/v1/stats");
    assert_eq!(
        (stats.body["dead_letters"].as_u64(), stats.body["pending"].as_u64()),
        (Some(4), Some(0)),
        "{}",
        stats.text
    );
    assert_eq!((stats.body["attempts"].as_u64(), stats.body["success_ratio"].as_f64()), (Some(4), Some(0.0)));

    // Retry one: 202, pending again with fresh attempts; a second retry is a conflict.
    let r = h.send("POST", &format!("/api/v1/deliveries/{}/retry", dlvs[0]), Some(&key), &[], None);
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!((r.body["status"].as_str(), r.body["attempt_count"].as_u64()), (Some("pending"), Some(1)));
    let again = h.send("POST", &format!("/api/v1/deliveries/{}/retry", dlvs[0]), Some(&key), &[], None);
    assert_eq!(again.status, 409, "{}", again.text);
    // Another account cannot retry it, or even see it.
    let other = account(&h, "AstroLeads");
    let r = h.send("POST", &format!("/api/v1/deliveries/{}/retry", dlvs[1]), Some(&other), &[], None);
    assert_eq!(r.status, 404);

    // Recover: a window in the past re-queues nothing; the last hour re-queues the other three.
    let r = h.json(
        "POST",
        &format!("/api/v1/webhooks/{wh}/recover"),
        Some(&key),
        &json!({"since": "2001-01-01T00:00:00Z", "until": "2001-01-02T00:00:00Z"}),
    );
    assert_eq!((r.status, &r.body["requeued"]), (202, &json!(0)), "{}", r.text);
    let since = humantime::format_rfc3339_seconds(std::time::SystemTime::now() - Duration::from_secs(3600)).to_string();
    let r = h.json("POST", &format!("/api/v1/webhooks/{wh}/recover"), Some(&key), &json!({ "since": since }));
    assert_eq!((r.status, &r.body["requeued"]), (202, &json!(3)), "{}", r.text);
    assert!(ids(&get(&h, &key, "/api/v1/deliveries?status=dead")).is_empty());
    assert_eq!(ids(&get(&h, &key, "/api/v1/deliveries?status=pending")).len(), 4);
    let stats = get(&h, &key, "/api/v1/stats");
    assert_eq!((stats.body["dead_letters"].as_u64(), stats.body["pending"].as_u64()), (Some(0), Some(4)));

    // Recover's body is checked like any other.
    for body in [json!({}), json!({"since": "soon"}), json!({"since": since, "extra": 1}), json!({"since": 5})] {
        let r = h.json("POST", &format!("/api/v1/webhooks/{wh}/recover"), Some(&key), &body);
        assert!(r.status == 422 || r.status == 400, "{body}: {}", r.text);
        assert!(r.body["error"]["code"].is_string());
    }
    let r = h.json("POST", &format!("/api/v1/webhooks/{wh}/recover"), Some(&other), &json!({ "since": since }));
    assert_eq!(r.status, 404);
}

#[test]
fn stats_and_event_types_describe_the_callers_account() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("herald.toml"),
        r#"
[[event_types]]
name = "lead.qualified"
description = "A lead met the qualification rules"
sample = { lead_id = "ld_1", score = 87 }

[[event_types]]
name = "new_lead"
"#,
    )
    .unwrap();
    let h = Herald::serve(dir.path(), &["--dev", "--config", "herald.toml"], &[("HERALD_ADMIN_TOKEN", ADMIN)]);
    h.wait_ready();
    let key = account(&h, "AstroLeads");
    let other = account(&h, "LeadNest");
    webhook(&h, &key, json!(["*"]), true);
    webhook(&h, &key, json!(["lead.*"]), true);
    for n in 0..3 {
        ingest(&h, &key, "lead.qualified", n);
    }
    ingest(&h, &key, "email.bounced", 9);
    ingest(&h, &other, "secret.project_x", 1);

    let s = get(&h, &key, "/api/v1/stats");
    assert_eq!(s.status, 200, "{}", s.text);
    assert_eq!(s.body["per_minute"].as_array().unwrap().len(), 60);
    assert_eq!(s.body["events"], 4);
    let per_minute_sum: u64 =
        s.body["per_minute"].as_array().unwrap().iter().map(|m| m["events"].as_u64().unwrap()).sum();
    assert_eq!(per_minute_sum, 4);
    assert_eq!((s.body["webhooks"].as_u64(), s.body["pending"].as_u64()), (Some(2), Some(7)));
    assert_eq!((s.body["dead_letters"].as_u64(), s.body["open_breakers"].as_u64()), (Some(0), Some(0)));
    assert_eq!(s.body["success_ratio"], Value::Null, "no attempts yet");
    let s2 = get(&h, &other, "/api/v1/stats");
    assert_eq!((s2.body["events"].as_u64(), s2.body["webhooks"].as_u64()), (Some(1), Some(0)));

    let t = get(&h, &key, "/api/v1/event-types");
    assert_eq!(t.status, 200, "{}", t.text);
    let names: Vec<&str> = t.body["data"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["email.bounced", "lead.qualified", "new_lead"], "{}", t.text);
    let q = &t.body["data"][1];
    assert_eq!((q["configured"].as_bool(), q["sent"].as_bool()), (Some(true), Some(true)));
    assert_eq!(q["sample"], json!({"lead_id": "ld_1", "score": 87}));
    assert_eq!(q["description"], "A lead met the qualification rules");
    assert_eq!(
        (t.body["data"][0]["configured"].as_bool(), t.body["data"][2]["sent"].as_bool()),
        (Some(false), Some(false))
    );
    assert!(!t.text.contains("project_x"), "another account's names stay private");
    let names_paged = all_pages_names(&h, &key);
    assert_eq!(names_paged, names);
    assert_eq!(get(&h, &key, "/api/v1/event-types?cursor=Bad%20Name").status, 422);
}

fn all_pages_names(h: &Herald, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut path = "/api/v1/event-types?limit=1".to_owned();
    for _ in 0..10 {
        let a = get(h, key, &path);
        out.extend(a.body["data"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_owned()));
        match a.body["next_cursor"].as_str() {
            None => return out,
            Some(c) => path = format!("/api/v1/event-types?limit=1&cursor={c}"),
        }
    }
    panic!("too many pages");
}

#[test]
fn a_selective_filter_over_a_long_history_pages_on_with_cursors_and_ends() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_for_api(dir.path());
    let key = account(&h, "LeadNest");
    webhook(&h, &key, json!(["lead.*"]), true);
    let wanted = ingest(&h, &key, "lead.qualified", 0);
    // More unmatched events after it than one request may examine (listing::SCAN_BUDGET).
    let batch: Vec<Value> = (0..1000).map(|n| json!({"event": "email.opened", "data": {"n": n}})).collect();
    let body = serde_json::to_vec(&batch).unwrap();
    for _ in 0..21 {
        let a =
            h.send("POST", "/api/v1/events/batch", Some(&key), &[("Content-Type", "application/json")], Some(&body));
        assert_eq!(a.status, 202);
    }
    let first = get(&h, &key, "/api/v1/deliveries?limit=10");
    assert_eq!(first.status, 200, "{}", first.text);
    assert!(ids(&first).is_empty(), "the budget ran out before reaching the one delivery");
    assert!(first.body["next_cursor"].is_string(), "…and says where to go on: {}", first.text);
    let all = all_pages(&h, &key, "/api/v1/deliveries?limit=10");
    assert_eq!(all.len(), 1, "{all:?}");
    let events = all_pages(&h, &key, "/api/v1/events?event=lead.qualified");
    assert_eq!(events, [wanted]);
}
