//! Accounts and API keys over real HTTP: admin-only routes, key lifecycle, tenancy of the
//! admin's `Herald-Account`, list paging, and every kind of bad input answered with the
//! the contract's status and error JSON.

mod common;

use common::*;
use serde_json::json;

fn error_code(a: &Answer) -> String {
    a.body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("error JSON expected, got {} {}", a.status, a.text))
        .to_owned()
}

#[test]
fn accounts_and_keys_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_for_api(dir.path());

    // acct_default exists from the start and cannot be deleted.
    let list = h.send("GET", "/api/v1/accounts", Some(ADMIN), &[], None);
    assert_eq!(list.status, 200);
    assert!(list.body["data"].as_array().unwrap().iter().any(|a| a["id"] == "acct_default"), "{}", list.text);
    let del = h.send("DELETE", "/api/v1/accounts/acct_default", Some(ADMIN), &[], None);
    assert_eq!((del.status, error_code(&del).as_str()), (409, "conflict"));

    let created = h.json("POST", "/api/v1/accounts", Some(ADMIN), &json!({"name": "AstroLeads"}));
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let key = created.body["api_key"].as_str().unwrap().to_owned();
    let key_id = created.body["key_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("acct_") && key.starts_with("hk_") && key_id.starts_with("key_"));
    assert_eq!(created.body["name"], "AstroLeads");

    // An API key is a valid credential, but not for admin routes: 403.
    let as_key = h.send("GET", "/api/v1/accounts", Some(&key), &[], None);
    assert_eq!((as_key.status, error_code(&as_key).as_str()), (403, "forbidden"));

    // Keys list shows prefixes, never the secret.
    let keys = h.send("GET", &format!("/api/v1/accounts/{id}/keys"), Some(ADMIN), &[], None);
    assert_eq!(keys.status, 200);
    assert_eq!(keys.body["data"][0]["id"], key_id.as_str());
    assert!(key.starts_with(keys.body["data"][0]["prefix"].as_str().unwrap()));
    assert!(!keys.text.contains(&key), "the secret never comes back");

    // A second key; revoking the first stops it at once, the second still works.
    let second = h.send("POST", &format!("/api/v1/accounts/{id}/keys"), Some(ADMIN), &[], None);
    assert_eq!(second.status, 201, "{}", second.text);
    let key2 = second.body["api_key"].as_str().unwrap().to_owned();
    let revoke = h.send("DELETE", &format!("/api/v1/accounts/{id}/keys/{key_id}"), Some(ADMIN), &[], None);
    assert_eq!(revoke.status, 204);
    assert_eq!(h.send("GET", "/api/v1/accounts", Some(&key), &[], None).status, 401);
    assert_eq!(h.send("GET", "/api/v1/accounts", Some(&key2), &[], None).status, 403);
    let again = h.send("DELETE", &format!("/api/v1/accounts/{id}/keys/{key_id}"), Some(ADMIN), &[], None);
    assert_eq!(again.status, 404);

    // A key id of another account answers 404, exactly as a missing one.
    let other = h.json("POST", "/api/v1/accounts", Some(ADMIN), &json!({"name": "LeadNest"}));
    let other_id = other.body["id"].as_str().unwrap().to_owned();
    let key2_id = second.body["id"].as_str().unwrap().to_owned();
    let cross = h.send("DELETE", &format!("/api/v1/accounts/{other_id}/keys/{key2_id}"), Some(ADMIN), &[], None);
    assert_eq!(cross.status, 404);
    assert_eq!(h.send("GET", "/api/v1/accounts", Some(&key2), &[], None).status, 403, "still valid");

    // Deleting the account: 204, then 404; its keys stop working.
    assert_eq!(h.send("DELETE", &format!("/api/v1/accounts/{id}"), Some(ADMIN), &[], None).status, 204);
    assert_eq!(h.send("DELETE", &format!("/api/v1/accounts/{id}"), Some(ADMIN), &[], None).status, 404);
    assert_eq!(h.send("GET", "/api/v1/accounts", Some(&key2), &[], None).status, 401);
    let listed = h.send("GET", "/api/v1/accounts", Some(ADMIN), &[], None);
    assert!(!listed.text.contains(&id), "deleted accounts are not listed");

    // The admin acting for a deleted or unknown account gets 404.
    let acting = h.send("GET", "/api/v1/accounts", Some(ADMIN), &[("Herald-Account", &id)], None);
    assert_eq!(acting.status, 404);
}

#[test]
fn credentials_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_for_api(dir.path());
    for (auth, what) in [
        (None, "no header"),
        (Some("Bearer"), "empty bearer"),
        (Some("Basic dXNlcjpwYXNz"), "basic auth"),
        (Some("Bearer wrong-token"), "unknown token"),
        (Some("Bearer hk_01JD6Z1M8Q4W9X2Y3Z4A5B6C7D_forged"), "forged key"),
        (Some("Bearer hk_garbage"), "malformed key"),
    ] {
        let headers: Vec<(&str, &str)> = auth.map(|a| vec![("Authorization", a)]).unwrap_or_default();
        let a = h.send("GET", "/api/v1/accounts", None, &headers, None);
        assert_eq!((a.status, error_code(&a).as_str()), (401, "unauthorized"), "{what}");
    }
    let bad_header = h.send("GET", "/api/v1/accounts", Some(ADMIN), &[("Herald-Account", "acct_nope")], None);
    assert_eq!(bad_header.status, 422);
}

#[test]
fn bad_input_gets_the_spec_answers_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_for_api(dir.path());
    let json_ct = [("Content-Type", "application/json")];
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let oversized = serde_json::to_vec(&json!({"name": "x".repeat(100_000)})).unwrap();
    let long_name = "é".repeat(101);
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u16);
    let cases: Vec<Case> = vec![
        ("malformed", json_ct.to_vec(), b"{\"name\": ".to_vec(), 400),
        ("not an object", json_ct.to_vec(), b"[1,2]".to_vec(), 422),
        ("wrong content type", vec![("Content-Type", "text/plain")], br#"{"name":"a"}"#.to_vec(), 415),
        ("no content type", vec![], br#"{"name":"a"}"#.to_vec(), 415),
        ("missing field", json_ct.to_vec(), b"{}".to_vec(), 422),
        ("extra field", json_ct.to_vec(), br#"{"name":"a","plan":"gold"}"#.to_vec(), 422),
        ("wrong type", json_ct.to_vec(), br#"{"name":42}"#.to_vec(), 422),
        ("empty name", json_ct.to_vec(), br#"{"name":"   "}"#.to_vec(), 422),
        ("long name", json_ct.to_vec(), serde_json::to_vec(&json!({ "name": long_name })).unwrap(), 422),
        ("control chars", json_ct.to_vec(), br#"{"name":"a\u0000b"}"#.to_vec(), 422),
        ("not UTF-8", json_ct.to_vec(), b"{\"name\":\"\xff\xfe\"}".to_vec(), 400),
        ("nested 10,000 deep", json_ct.to_vec(), deep.into_bytes(), 422),
        ("oversized", json_ct.to_vec(), oversized, 413),
    ];
    for (what, headers, body, status) in cases {
        let a = h.send("POST", "/api/v1/accounts", Some(ADMIN), &headers, Some(&body));
        assert_eq!(a.status, status, "{what}: {}", a.text);
        assert!(a.body["error"]["code"].is_string() && a.body["error"]["message"].is_string(), "{what}: {}", a.text);
    }
    let long = h.json("POST", "/api/v1/accounts", Some(ADMIN), &json!({"name": "n".repeat(101)}));
    assert_eq!(long.body["error"]["field"], "name");

    // Bad ids and paging parameters.
    for path in ["/api/v1/accounts/nope", "/api/v1/accounts/acct_01JD6Z1M8Q4W9X2Y3Z4A5B6C7D", "/api/v1/accounts/%ff%fe"]
    {
        assert_eq!(h.send("DELETE", path, Some(ADMIN), &[], None).status, 404, "{path}");
    }
    for q in ["limit=0", "limit=501", "limit=-1", "limit=ten", "cursor=garbage", "limit=99999999999999999999"] {
        let a = h.send("GET", &format!("/api/v1/accounts?{q}"), Some(ADMIN), &[], None);
        assert_eq!(a.status, 422, "{q}: {}", a.text);
    }

    // Nothing of the above created anything.
    let list = h.send("GET", "/api/v1/accounts", Some(ADMIN), &[], None);
    assert_eq!(list.body["data"].as_array().unwrap().len(), 1, "{}", list.text);
}

#[test]
fn lists_page_newest_first_with_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_for_api(dir.path());
    let mut ids = Vec::new();
    for i in 0..5 {
        let a = h.json("POST", "/api/v1/accounts", Some(ADMIN), &json!({ "name": format!("tenant {i}") }));
        ids.push(a.body["id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/accounts?limit=2&cursor={c}"),
            None => "/api/v1/accounts?limit=2".to_owned(),
        };
        let page = h.send("GET", &path, Some(ADMIN), &[], None);
        assert_eq!(page.status, 200);
        let data = page.body["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        seen.extend(data.iter().map(|a| a["id"].as_str().unwrap().to_owned()));
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    // Newest first: the five new ones in reverse order of creation, then acct_default.
    let mut expected: Vec<String> = ids.iter().rev().cloned().collect();
    expected.push("acct_default".into());
    assert_eq!(seen, expected);
}
