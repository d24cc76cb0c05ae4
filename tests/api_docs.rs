//! The API's own documentation, over real HTTP against the real binary: `/openapi.json` is a
//! valid OpenAPI 3 document (checked by `openapi-spec-validator`, an independent
//! implementation, which `.ci/run` installs), every route it documents is called and answers
//! with a documented status and a body that validates against the documented schema, and
//! `/docs` serves Swagger UI from Herald itself, pointing at that document.

mod common;

use common::receiver::Receiver;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

fn document(h: &Herald) -> Value {
    let (status, text) = h.get("/openapi.json");
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).expect("the document is JSON")
}

#[test]
fn openapi_document_is_valid_openapi_3() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_for_api(dir.path());
    let doc = document(&h);
    assert!(doc["openapi"].as_str().unwrap_or_default().starts_with("3."), "{}", doc["openapi"]);
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let out = Command::new("openapi-spec-validator")
        .arg(&file)
        .output()
        .expect("openapi-spec-validator runs (pip install openapi-spec-validator; .ci/run does)");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "openapi-spec-validator refused the document:\n{said}");
    assert!(said.contains("OK"), "{said}");

    // Every operation: a unique id, a summary, at least one success and one documented error.
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (verb, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(ids.insert(id.to_owned()), "{verb} {path}: operationId {id:?} twice");
            assert!(op["summary"].as_str().is_some_and(|s| !s.is_empty()), "{verb} {path} has no summary");
            let statuses: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
            // A success, or (`/`, `/admin/`) the redirect that is the whole answer.
            let redirect = statuses == ["308"];
            assert!(redirect || statuses.iter().any(|s| s.starts_with('2')), "{verb} {path}: {statuses:?}");
        }
    }
}

#[test]
fn docs_page_is_served_by_herald_and_reads_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_for_api(dir.path());
    let a = h.send("GET", "/docs", None, &[], None);
    // ureq follows the redirect to `/docs/`.
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(a.text.contains("swagger-ui"), "{}", a.text);
    // Offline: every script and stylesheet the page loads is Herald's own.
    for attr in ["src=\"", "href=\""] {
        for link in a.text.split(attr).skip(1).map(|s| s.split('"').next().unwrap_or_default()) {
            assert!(!link.contains("//"), "the docs page loads {link} from elsewhere");
            let (status, _) = h.get(&format!("/docs/{}", link.trim_start_matches("./")));
            assert_eq!(status, 200, "/docs/{link}");
        }
    }
    let (status, init) = h.get("/docs/swagger-initializer.js");
    assert_eq!(status, 200);
    assert!(init.contains("\"/openapi.json\""), "{init}");
}

/// The schema of a documented answer, with the document's components beside it so its
/// `$ref`s resolve.
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let mut root = schema.clone();
    if let Some(map) = root.as_object_mut() {
        map.insert("components".into(), doc["components"].clone());
    }
    jsonschema::draft202012::new(&root).unwrap_or_else(|e| panic!("schema {schema} does not compile: {e}"))
}

/// Calls one documented operation and checks its answer against the document.
fn check(h: &Herald, doc: &Value, id: &str, verb: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Value {
    let template = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, item)| item.get(verb).is_some_and(|op| op["operationId"] == id))
        .map(|(p, _)| p.clone())
        .unwrap_or_else(|| panic!("{id} is not documented as {verb}"));
    let op = &doc["paths"][&template][verb];
    let a = match body {
        Some(b) => h.json(&verb.to_uppercase(), path, token, &b),
        None => h.send(&verb.to_uppercase(), path, token, &[], None),
    };
    let documented = &op["responses"][a.status.to_string()];
    assert!(documented.is_object(), "{id} ({verb} {path}) answered {} which is not documented: {}", a.status, a.text);
    if let Some(schema) = documented.pointer("/content/application~1json/schema") {
        let errors: Vec<String> = validator(doc, schema).iter_errors(&a.body).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{id} answered {} with a body outside its schema: {errors:?}\n{}", a.status, a.text);
    } else if a.status != 204 {
        // Not JSON: the documented media type is the one served.
        let media = documented["content"].as_object().and_then(|c| c.keys().next().cloned()).unwrap_or_default();
        assert!(!media.is_empty(), "{id}: answer {} has no documented content", a.status);
        assert!(a.content_type.starts_with(&media), "{id}: served {}, documented {media}", a.content_type);
    }
    a.body
}

#[test]
fn every_documented_route_answers_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_for_api(dir.path());
    let receiver = Receiver::start();
    let doc = document(&h);
    let documented: BTreeSet<String> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values().map(|op| op["operationId"].as_str().unwrap().to_owned()))
        .collect();
    let mut called = BTreeSet::new();
    // Redirects, asked without following them.
    let no_follow = ureq::AgentBuilder::new().redirects(0).build();
    for (id, path) in [("admin_root", "/"), ("admin_dashboard_slash", "/admin/")] {
        called.insert(id.to_owned());
        let r = match no_follow.get(&h.url(path)).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{path}: {e}"),
        };
        assert_eq!((r.status(), r.header("Location")), (308, Some("/admin")), "{path}");
        let template = if path == "/" { "/" } else { "/admin/" };
        assert!(doc["paths"][template]["get"]["responses"]["308"].is_object(), "{id} documents its 308");
    }
    let mut call = |id: &str, verb: &str, path: &str, token: Option<&str>, body: Option<Value>| {
        called.insert(id.to_owned());
        check(&h, &doc, id, verb, path, token, body)
    };

    for (id, path) in [
        ("admin_dashboard", "/admin"),
        ("admin_webhooks", "/admin/webhooks"),
        ("admin_deliveries", "/admin/deliveries"),
        ("admin_script", "/admin/assets/app.js"),
        ("admin_style", "/admin/assets/app.css"),
    ] {
        call(id, "get", path, None, None);
    }
    call("health_healthz", "get", "/healthz", None, None);
    call("health_readyz", "get", "/readyz", None, None);
    call("docs_openapi_json", "get", "/openapi.json", None, None);
    let made = call("accounts_create", "post", "/api/v1/accounts", Some(ADMIN), Some(json!({"name": "Docs"})));
    let (account, key) = (made["id"].as_str().unwrap().to_owned(), made["api_key"].as_str().unwrap().to_owned());
    let key = key.as_str();
    call("accounts_list", "get", "/api/v1/accounts?limit=5", Some(ADMIN), None);
    let issued = call("accounts_issue_key", "post", &format!("/api/v1/accounts/{account}/keys"), Some(ADMIN), None);
    call("accounts_list_keys", "get", &format!("/api/v1/accounts/{account}/keys"), Some(ADMIN), None);
    let spare = issued["id"].as_str().unwrap();
    call("accounts_revoke_key", "delete", &format!("/api/v1/accounts/{account}/keys/{spare}"), Some(ADMIN), None);
    let other = call("accounts_create", "post", "/api/v1/accounts", Some(ADMIN), Some(json!({"name": "Gone"})));
    let other = other["id"].as_str().unwrap();
    call("accounts_remove", "delete", &format!("/api/v1/accounts/{other}"), Some(ADMIN), None);

    let hook = json!({"name": "docs", "url": receiver.url("/in"), "events": ["lead.*"],
                      "headers": {"X-Team": "sales"}, "rate_limit": null});
    let made = call("webhooks_create", "post", "/api/v1/webhooks", Some(key), Some(hook));
    let wh = made["id"].as_str().unwrap().to_owned();
    call("webhooks_list", "get", "/api/v1/webhooks", Some(key), None);
    let read = call("webhooks_read", "get", &format!("/api/v1/webhooks/{wh}"), Some(key), None);
    // The schemas have teeth: the same answer, mangled, does not validate.
    let schema =
        &doc["paths"]["/api/v1/webhooks/{id}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"];
    let mut mangled = read.clone();
    mangled["status"]["pending"] = json!("many");
    mangled.as_object_mut().unwrap().remove("url");
    assert_eq!(validator(&doc, schema).iter_errors(&mangled).count(), 2, "{mangled}");
    call("webhooks_edit", "patch", &format!("/api/v1/webhooks/{wh}"), Some(key), Some(json!({"max_retries": 3})));
    call("webhooks_rotate_secret", "post", &format!("/api/v1/webhooks/{wh}/rotate-secret"), Some(key), None);
    let tested = call("webhooks_test", "post", &format!("/api/v1/webhooks/{wh}/test"), Some(key), Some(json!({})));
    assert_eq!(tested["success"], true, "{tested}");

    let event = json!({"event": "lead.qualified", "data": {"lead_id": "ld_1"}});
    let ingested = call("events_ingest", "post", "/api/v1/events", Some(key), Some(event.clone()));
    let evt = ingested["id"].as_str().unwrap().to_owned();
    let batch = json!([event, {"event": "Not A Name", "data": {}}]);
    let answered = call("events_ingest_batch", "post", "/api/v1/events/batch", Some(key), Some(batch));
    assert!(answered["results"][1]["error"]["code"].is_string(), "{answered}");
    wait_for("the deliveries to arrive", Duration::from_secs(20), || receiver.accepted().len() >= 3);
    call("events_list", "get", "/api/v1/events?event=lead.qualified", Some(key), None);
    let read = call("events_read", "get", &format!("/api/v1/events/{evt}"), Some(key), None);
    let dlv = read["deliveries"][0]["id"].as_str().unwrap().to_owned();
    wait_for("the delivery to be recorded", Duration::from_secs(20), || {
        h.send("GET", &format!("/api/v1/deliveries/{dlv}"), Some(key), &[], None).body["status"] == "succeeded"
    });
    call("deliveries_list", "get", "/api/v1/deliveries?status=succeeded", Some(key), None);
    call("deliveries_list_alias", "get", "/api/v1/webhooks/deliveries", Some(key), None);
    call("deliveries_of_webhook", "get", &format!("/api/v1/webhooks/{wh}/deliveries"), Some(key), None);
    let one = call("deliveries_read", "get", &format!("/api/v1/deliveries/{dlv}"), Some(key), None);
    assert_eq!(one["attempts"][0]["status_code"], 200, "{one}");
    call("deliveries_retry", "post", &format!("/api/v1/deliveries/{dlv}/retry"), Some(key), None);
    let recover = json!({"since": "2020-01-01T00:00:00Z"});
    call("webhooks_recover", "post", &format!("/api/v1/webhooks/{wh}/recover"), Some(key), Some(recover));
    call("stats_read", "get", "/api/v1/stats", Some(key), None);
    call("event_types_list", "get", "/api/v1/event-types", Some(key), None);
    call("metrics_scrape", "get", "/metrics", None, None);
    call("webhooks_remove", "delete", &format!("/api/v1/webhooks/{wh}"), Some(key), None);

    // Errors are documented too: the same checks on a few refusals.
    call("webhooks_read", "get", &format!("/api/v1/webhooks/{wh}"), Some(key), None);
    call("webhooks_create", "post", "/api/v1/webhooks", Some(key), Some(json!({"url": 5})));
    call("accounts_list", "get", "/api/v1/accounts", Some(key), None);
    call("stats_read", "get", "/api/v1/stats", None, None);

    assert_eq!(called, documented, "every documented operation is called, and only those");
}

#[test]
fn a_known_path_asked_with_another_method_answers_405_with_allow_and_head_works_wherever_get_does() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_for_api(dir.path());
    for (method, path, allow) in [
        ("TRACE", "/api/v1/events", "GET, POST, HEAD"),
        ("PUT", "/api/v1/webhooks", "GET, POST, HEAD"),
        ("POST", "/healthz", "GET, HEAD"),
        ("DELETE", "/readyz", "GET, HEAD"),
        ("POST", "/admin", "GET, HEAD"),
        ("PUT", "/api/v1/webhooks/wh_01JZ8YQ3N6V2K7T9R4M1X5C8D0", "GET, PATCH, DELETE, HEAD"),
        // Fixed paths a pattern with a parameter also matches are their own resources.
        ("GET", "/api/v1/events/batch", "POST"),
        ("OPTIONS", "/api/v1/events/batch", "POST"),
        ("DELETE", "/api/v1/webhooks/deliveries", "GET, HEAD"),
    ] {
        let a = h.send(method, path, Some(ADMIN), &[], None);
        assert_eq!(a.status, 405, "{method} {path}: {}", a.text);
        assert_eq!(a.body["error"]["code"], "method_not_allowed", "{method} {path}");
        let got = ureq::request(method, &h.url(path)).call().err().and_then(|e| match e {
            ureq::Error::Status(_, r) => r.header("Allow").map(str::to_owned),
            _ => None,
        });
        assert_eq!(got.as_deref(), Some(allow), "{method} {path}");
    }
    // A path Herald does not serve at all is still 404.
    assert_eq!(h.send("PUT", "/api/v1/nothing", Some(ADMIN), &[], None).status, 404);
    // HEAD: the status and headers of GET, no body.
    for path in ["/admin", "/healthz", "/openapi.json", "/admin/assets/app.js"] {
        let r = ureq::head(&h.url(path)).call().unwrap();
        assert_eq!(r.status(), 200, "HEAD {path}");
        let length: usize = r.header("Content-Length").unwrap().parse().unwrap();
        assert!(length > 0, "HEAD {path} tells the length of the body");
        assert!(r.into_string().unwrap().is_empty(), "HEAD {path} has no body");
    }
}

#[test]
fn refusals_found_undocumented_before_are_documented_and_error_examples_fit_their_status() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_for_api(dir.path());
    let doc = document(&h);
    check(&h, &doc, "accounts_remove", "delete", "/api/v1/accounts/acct_default", Some(ADMIN), None);
    let unknown = "wh_01JZ8YQ3N6V2K7T9R4M1X5C8D0";
    check(&h, &doc, "deliveries_list", "get", &format!("/api/v1/deliveries?webhook_id={unknown}"), Some(ADMIN), None);
    check(
        &h,
        &doc,
        "deliveries_list_alias",
        "get",
        &format!("/api/v1/webhooks/deliveries?webhook_id={unknown}"),
        Some(ADMIN),
        None,
    );
    let keyed = |data: Value| {
        let body = serde_json::to_vec(&json!({"event": "lead.qualified", "data": data})).unwrap();
        h.send(
            "POST",
            "/api/v1/events",
            Some(ADMIN),
            &[("Content-Type", "application/json"), ("Idempotency-Key", "k-1")],
            Some(&body),
        )
    };
    assert_eq!(keyed(json!({"n": 1})).status, 202);
    let again = keyed(json!({"n": 2}));
    assert_eq!(again.status, 409, "{}", again.text);
    assert!(doc["paths"]["/api/v1/events"]["post"]["responses"]["409"].is_object(), "409 documented on ingest");
    // Every error example shows the code of its status, not one code for all.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (verb, op) in item.as_object().unwrap() {
            for (status, answer) in op["responses"].as_object().unwrap() {
                let Some(example) = answer.pointer("/content/application~1json/example") else { continue };
                let Some(code) = example.pointer("/error/code").and_then(Value::as_str) else { continue };
                assert!(status == "422" || code != "invalid_field", "{verb} {path} {status}: {example}");
            }
        }
    }
    let ex = |p: &str, v: &str, s: &str| {
        doc["paths"][p][v]["responses"][s]["content"]["application/json"]["example"]["error"]["code"].clone()
    };
    assert_eq!(ex("/api/v1/webhooks", "get", "401"), "unauthorized");
    assert_eq!(ex("/api/v1/webhooks", "post", "422"), "invalid_field");
    // Schema examples are realistic values, inside the documented ranges.
    let body = &doc["components"]["schemas"]["WebhookBody"]["properties"];
    assert_eq!(
        (body["max_retries"]["example"].as_u64(), body["timeout"]["example"].as_u64()),
        (Some(5), Some(30)),
        "{body}"
    );
}

#[test]
fn the_committed_document_is_what_the_server_serves() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_for_api(dir.path());
    let served = document(&h);
    let committed: Value = serde_json::from_str(include_str!("../docs/openapi.json")).unwrap();
    assert!(
        served == committed,
        "docs/openapi.json is not what /openapi.json serves: run `cargo run --release -- openapi > docs/openapi.json`"
    );
}
