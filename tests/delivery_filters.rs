//! Content filters through the real API and a real receiver: what passes is delivered, what
//! does not schedules nothing (the ingest answer counts no delivery for it), numbers compare
//! as decimals, and every bad filter is a 422 that names the problem.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

fn ingest(h: &Herald, key: &str, event: &str, data: &str) -> (String, u64) {
    let body = format!(r#"{{"event":"{event}","data":{data}}}"#);
    let a = h.send("POST", "/api/v1/events", Some(key), &[("Content-Type", "application/json")], Some(body.as_bytes()));
    assert_eq!(a.status, 202, "{}", a.text);
    (a.body["id"].as_str().unwrap().to_owned(), a.body["deliveries"].as_u64().unwrap())
}

#[test]
fn a_filtered_out_event_schedules_nothing_and_what_passes_is_delivered() {
    let receiver = receiver::Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let h = herald_for_api(dir.path());
    let key = account(&h, "AstroLeads");
    // Seed 000: "triggered when a lead scores above your threshold".
    let threshold = create_webhook(
        &h,
        &key,
        json!({"url": receiver.url("/qualified"), "events": ["lead.qualified"],
               "filter": {"data.qualityScore": {"$gte": 80}}}),
    );
    let everything = create_webhook(&h, &key, json!({"url": receiver.url("/all"), "events": ["lead.qualified"]}));
    let a = h.json("GET", &format!("/api/v1/webhooks/{threshold}"), Some(&key), &Value::Null);
    assert_eq!(a.body["filter"], json!({"data.qualityScore": {"$gte": 80}}));
    assert_eq!(
        h.json("GET", &format!("/api/v1/webhooks/{everything}"), Some(&key), &Value::Null).body["filter"],
        Value::Null
    );

    let cases = [
        (r#"{"leadId":"a","qualityScore":92}"#, true),
        (r#"{"leadId":"b","qualityScore":79.99}"#, false),
        (r#"{"leadId":"c","qualityScore":80.0}"#, true),
        (r#"{"leadId":"d","qualityScore":"92"}"#, false),
        (r#"{"leadId":"e"}"#, false),
        (r#"{"leadId":"f","qualityScore":8e1}"#, true),
    ];
    let mut passing = Vec::new();
    for (data, passes) in cases {
        let (id, deliveries) = ingest(&h, &key, "lead.qualified", data);
        assert_eq!(deliveries, 1 + u64::from(passes), "{data}");
        if passes {
            passing.push(id);
        }
    }
    wait_for("every delivery", Duration::from_secs(20), || receiver.count() == cases.len() + passing.len());
    let mut delivered: Vec<String> =
        receiver.hits_on("/qualified").iter().map(|hit| hit.json()["id"].as_str().unwrap().to_owned()).collect();
    delivered.sort();
    passing.sort();
    assert_eq!(delivered, passing);
    assert_eq!(receiver.hits_on("/all").len(), cases.len());
    // The filtered webhook's own list holds only what passed.
    let listed = h.json("GET", &format!("/api/v1/deliveries?webhook_id={threshold}"), Some(&key), &Value::Null);
    assert_eq!(listed.body["data"].as_array().unwrap().len(), passing.len());
}

#[test]
fn numbers_compare_exactly_and_filters_edit_and_go() {
    let receiver = receiver::Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let h = herald_for_api(dir.path());
    let key = account(&h, "LeadNest");
    let filter: Value =
        serde_json::from_str(r#"{"data.crmId": 9007199254740993, "data.score": {"$eq": 87.50}}"#).unwrap();
    let w = create_webhook(&h, &key, json!({"url": receiver.url("/x"), "events": ["*"], "filter": filter}));
    // Shown exactly as set, numbers as written.
    let shown = h.json("GET", &format!("/api/v1/webhooks/{w}"), Some(&key), &Value::Null).text;
    assert!(shown.contains(r#""filter":{"data.crmId":9007199254740993,"data.score":{"$eq":87.50}}"#), "{shown}");
    assert_eq!(ingest(&h, &key, "lead.created", r#"{"crmId":9007199254740993,"score":87.5}"#).1, 1);
    assert_eq!(
        ingest(&h, &key, "lead.created", r#"{"crmId":9007199254740992,"score":87.5}"#).1,
        0,
        "2^53 is not 2^53 + 1"
    );
    assert_eq!(ingest(&h, &key, "lead.created", r#"{"crmId":9007199254740993.0,"score":8.750e1}"#).1, 1);

    // A bad edit changes nothing; `null` removes the filter.
    let bad =
        h.json("PATCH", &format!("/api/v1/webhooks/{w}"), Some(&key), &json!({"filter": {"data.a": {"$regex": "x"}}}));
    assert_eq!(bad.status, 422, "{}", bad.text);
    assert_eq!(ingest(&h, &key, "lead.created", r#"{"crmId":1}"#).1, 0);
    let removed = h.json("PATCH", &format!("/api/v1/webhooks/{w}"), Some(&key), &json!({"filter": null}));
    assert_eq!((removed.status, &removed.body["filter"]), (200, &Value::Null), "{}", removed.text);
    assert_eq!(ingest(&h, &key, "lead.created", r#"{"crmId":1}"#).1, 1);
    let set = h.json("PATCH", &format!("/api/v1/webhooks/{w}"), Some(&key), &json!({"filter": {"event": "lead.won"}}));
    assert_eq!(set.status, 200, "{}", set.text);
    assert_eq!(ingest(&h, &key, "lead.created", r#"{}"#).1, 0);
    assert_eq!(ingest(&h, &key, "lead.won", r#"{}"#).1, 1);
    wait_for("the deliveries", Duration::from_secs(20), || receiver.count() == 4);

    // The filter outlives a restart (it is in the log, compiled again from its text).
    drop(h);
    let h = herald_for_api(dir.path());
    assert_eq!(ingest(&h, &key, "lead.created", r#"{}"#).1, 0);
    assert_eq!(ingest(&h, &key, "lead.won", r#"{}"#).1, 1);
}

#[test]
fn bad_filters_are_refused_with_the_problem_named() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_for_api(dir.path());
    let key = account(&h, "AutoReach");
    let mut deep = json!({"data.a": 1});
    for _ in 0..8 {
        deep = json!({ "$not": deep });
    }
    let many: serde_json::Map<String, Value> = (0..65).map(|i| (format!("data.f{i}"), json!(i))).collect();
    let cases: Vec<(Value, &str)> = vec![
        (json!({"data.email": {"$regex": ".*@corp"}}), "unknown operator `$regex`"),
        (json!({"data.a": {"$where": "1"}}), "unknown operator `$where`"),
        (json!("data.a == 1"), "must be a JSON object"),
        (json!(5), "must be a JSON object"),
        (json!([{"data.a": 1}]), "must be a JSON object"),
        (json!({}), "empty condition"),
        (json!({"score": 1}), "no field `score`"),
        (json!({"id": "evt_1"}), "assigned after filters run"),
        (json!({"data.a": {"$gt": [1]}}), "number or a string"),
        (json!({"data.a": {"$in": "x"}}), "array of values"),
        (json!({"data.a": {"$exist": "yes"}}), "true or false"),
        (json!({"$or": []}), "non-empty array"),
        (json!({"$gte": 1}), "must be applied to a field"),
        (deep, "levels deep"),
        (Value::Object(many), "more than 64 conditions"),
        (json!({"data.a": {"$in": vec!["x".repeat(200); 30]}}), "at most 4096"),
    ];
    let url = "https://hooks.example.com/in";
    for (filter, why) in &cases {
        let created =
            h.json("POST", "/api/v1/webhooks", Some(&key), &json!({"url": url, "events": ["*"], "filter": filter}));
        assert_eq!(created.status, 422, "{filter}: {}", created.text);
        assert_eq!(created.body["error"]["field"], "filter", "{}", created.text);
        let message = created.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{filter}: {message}");
    }
    // Nesting past what the JSON parser takes is a 400 too, never a 500.
    let hostile = format!(r#"{{"url":"{url}","events":["*"],"filter":{}1{}}}"#, "[".repeat(5000), "]".repeat(5000));
    let a = h.send(
        "POST",
        "/api/v1/webhooks",
        Some(&key),
        &[("Content-Type", "application/json")],
        Some(hostile.as_bytes()),
    );
    assert!(a.status == 400 || a.status == 422, "{} {}", a.status, a.text);
    let listed = h.json("GET", "/api/v1/webhooks", Some(&key), &Value::Null);
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 0, "nothing was created");
}

#[test]
fn the_test_send_says_whether_its_sample_passes_the_filter() {
    let receiver = receiver::Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let h = herald_for_api(dir.path());
    let key = account(&h, "AstroLeads");
    let filtered = create_webhook(
        &h,
        &key,
        json!({"url": receiver.url("/f"), "events": ["*"], "filter": {"event": "lead.qualified"}}),
    );
    let plain = create_webhook(&h, &key, json!({"url": receiver.url("/p"), "events": ["*"]}));
    let test = |w: &str, event: &str| {
        let a = h.json("POST", &format!("/api/v1/webhooks/{w}/test"), Some(&key), &json!({"event": event}));
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(a.body["success"], true, "{}", a.text);
        a.body["filter_passed"].clone()
    };
    assert_eq!(test(&filtered, "lead.qualified"), json!(true));
    assert_eq!(test(&filtered, "lead.created"), json!(false));
    assert_eq!(test(&plain, "lead.created"), Value::Null);
    // A test send goes out either way.
    assert_eq!(receiver.hits_on("/f").len(), 2);
}
