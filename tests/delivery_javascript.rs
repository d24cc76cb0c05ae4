//! `body_format: javascript`, against the receiver a platform really published: seeds/000's
//! Express handler (tests/js/seed000_handler.js, verbatim; tests/js/seed000.cjs runs it under
//! Node with Express from tests/js/package-lock.json, which `.ci/run` installs). That
//! handler verifies the signature over `JSON.stringify(req.body)` after `express.json()`,
//! not over the bytes it received, so the payloads JavaScript re-serializes differently fail
//! it — unless Herald sends, and signs, the body in that form.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const SECRET: &str = "astroleads-secret-0123456789";

/// The handler under Node; its port.
fn seed_receiver() -> (std::process::Child, u16) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js");
    assert!(
        std::path::Path::new(dir).join("node_modules/express").exists(),
        "Express is not installed: run `npm ci --prefix tests/js` (.ci/run does)"
    );
    let mut cmd = Command::new("node");
    cmd.arg(format!("{dir}/seed000.cjs")).env("WEBHOOK_SECRET", SECRET).stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = spawn_tied(cmd);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("the receiver said nothing").unwrap();
    let port = first.strip_prefix("listening ").and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("{first}"));
    // Keep reading so the pipe never fills; what it answered shows in Herald's attempts.
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    (child, port)
}

/// The payloads: one that any JSON parser gives back as it was, and one of each kind that
/// JavaScript writes back differently.
const PAYLOADS: &[(&str, &str)] = &[
    ("plain", r#"{"leadId":"lead_789xyz","email":"marie@techcorp.com","qualityScore":92,"source":"linkedin"}"#),
    ("decimal 87.50", r#"{"leadId":"lead_1","qualityScore":87.50}"#),
    ("exponent 1e3", r#"{"campaignId":"cmp_123","totalLeads":1e3}"#),
    ("integer-like keys", r#"{"leadId":"lead_2","2":"second","1":"first"}"#),
    ("integer beyond 2^53", r#"{"leadId":"lead_3","crmId":9007199254740993}"#),
    ("escaped \\u00e9", r#"{"leadId":"lead_4","firstName":"Ren\u00e9e"}"#),
    ("spaces", r#"{"leadId": "lead_5", "qualityScore": 90}"#),
];

fn ingest(h: &Herald, key: &str, data: &str) -> String {
    let body = format!(r#"{{"event":"lead.qualified","data":{data}}}"#);
    let a = h.send("POST", "/api/v1/events", Some(key), &[("Content-Type", "application/json")], Some(body.as_bytes()));
    assert_eq!(a.status, 202, "{}", a.text);
    assert_eq!(a.body["deliveries"], 2, "{}", a.text);
    a.body["id"].as_str().unwrap().to_owned()
}

/// Event id → (status, last attempt's status code) of every delivery of `webhook`.
fn outcomes(h: &Herald, key: &str, webhook: &str) -> BTreeMap<String, (String, Option<u64>)> {
    let a = h.json("GET", &format!("/api/v1/deliveries?webhook_id={webhook}&limit=100"), Some(key), &Value::Null);
    assert_eq!(a.status, 200, "{}", a.text);
    let mut out = BTreeMap::new();
    for d in a.body["data"].as_array().unwrap() {
        let id = d["id"].as_str().unwrap();
        let detail = h.json("GET", &format!("/api/v1/deliveries/{id}"), Some(key), &Value::Null).body;
        let code = detail["attempts"].as_array().and_then(|a| a.last()).and_then(|a| a["status_code"].as_u64());
        out.insert(d["event_id"].as_str().unwrap().to_owned(), (d["status"].as_str().unwrap().to_owned(), code));
    }
    out
}

#[test]
fn the_seeds_express_handler_verifies_every_payload_with_body_format_javascript_and_not_all_without() {
    let (mut node, port) = seed_receiver();
    let dir = tempfile::tempdir().unwrap();
    let h = herald_for_api(dir.path());
    let key = account(&h, "AstroLeads");
    let url = format!("http://127.0.0.1:{port}/webhooks/astroleads");
    let webhook = |format: &str| {
        create_webhook(
            &h,
            &key,
            json!({"name": format, "url": url, "events": ["lead.qualified"], "secret": SECRET,
                   "signature_header": "X-AstroLeads-Signature", "signature_prefix": "sha256=",
                   "max_retries": 0, "body_format": format}),
        )
    };
    let js = webhook("javascript");
    let original = webhook("original");
    let shown = h.json("GET", &format!("/api/v1/webhooks/{js}"), Some(&key), &Value::Null).body;
    assert_eq!(shown["body_format"], "javascript");

    let events: Vec<(&str, String)> = PAYLOADS.iter().map(|(name, data)| (*name, ingest(&h, &key, data))).collect();
    let finished = |w: &str| {
        let o = outcomes(&h, &key, w);
        o.len() == events.len() && o.values().all(|(s, _)| s == "succeeded" || s == "dead")
    };
    wait_for("every delivery finished", Duration::from_secs(30), || finished(&js) && finished(&original));

    let with = outcomes(&h, &key, &js);
    let without = outcomes(&h, &key, &original);
    let mut failing_without = Vec::new();
    for (name, event) in &events {
        let (js_status, js_code) = &with[event];
        let (status, code) = &without[event];
        eprintln!("{name:24} javascript: {js_status} ({js_code:?})   original: {status} ({code:?})");
        assert_eq!((js_status.as_str(), *js_code), ("succeeded", Some(200)), "{name} with body_format javascript");
        if status != "succeeded" {
            assert_eq!((status.as_str(), *code), ("dead", Some(401)), "{name}: refused by the signature check");
            failing_without.push(*name);
        }
    }
    // Everything JavaScript writes back differently fails the handler's check in the
    // contract's form; the payload it gives back as it was passes in both.
    let expected: Vec<&str> = PAYLOADS.iter().map(|(n, _)| *n).filter(|n| *n != "plain").collect();
    assert_eq!(failing_without, expected);
    let _ = node.kill();
}

/// The harness runs the seed's code as published: the copy is the seed's two JavaScript
/// blocks, verbatim (checked when the seeds are beside the repository, as in CI).
#[test]
fn the_handler_under_test_is_the_seeds_code_verbatim() {
    let seeds = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/seeds");
    let Some(seed) = std::fs::read_dir(seeds)
        .ok()
        .and_then(|d| d.flatten().find(|e| e.file_name().to_string_lossy().starts_with("000_")))
    else {
        assert!(std::env::var_os("CI").is_none(), "{seeds} is missing");
        eprintln!("skipped: {seeds} is not beside the repository");
        return;
    };
    let seed = std::fs::read_to_string(seed.path()).unwrap();
    let copy = include_str!("js/seed000_handler.js");
    let blocks: Vec<&str> = seed.split("```javascript\n").skip(1).filter_map(|b| b.split("```").next()).collect();
    assert_eq!(blocks.len(), 2);
    for block in blocks {
        assert!(copy.contains(block), "tests/js/seed000_handler.js differs from the seed:\n{block}");
    }
}
