//! Secrets sealed at rest, through the real binary: a new data directory never holds a
//! webhook secret (current or rotated out) or a custom header value in clear in any file;
//! the key lives outside it (mode 0600) and a directory without its key does not start; a
//! key can be rotated while old records stay readable; and `herald seal` rewrites a log an
//! older Herald wrote in clear into a new directory where nothing is left in clear.

mod common;

use common::receiver::Receiver;
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// Every file under `dir` that contains `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

fn stop(h: Herald) {
    let mut h = h;
    h.signal(libc::SIGTERM);
    assert!(h.wait_exit(Duration::from_secs(20)).success());
}

#[test]
fn no_file_of_a_new_data_directory_holds_a_secret_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("herald-data");
    let r = Receiver::start();
    let h = herald_for_api(dir.path());
    let key = account(&h, "AstroLeads");
    let chosen = "planted-webhook-secret-0123456789";
    let created = h.json(
        "POST",
        "/api/v1/webhooks",
        Some(&key),
        &json!({"url": r.url("/in"), "events": ["*"], "secret": chosen,
                "headers": {"X-Api-Key": "planted-api-key-value", "X-Team": "planted-team-value"}}),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.body["id"].as_str().unwrap().to_owned();
    // Rotated twice: the chosen secret and a generated one are rotated out, still live.
    let first = h.json("POST", &format!("/api/v1/webhooks/{id}/rotate-secret"), Some(&key), &json!({}));
    let generated = first.body["secret"].as_str().unwrap().to_owned();
    let second = h.json("POST", &format!("/api/v1/webhooks/{id}/rotate-secret"), Some(&key), &json!({}));
    let current = second.body["secret"].as_str().unwrap().to_owned();
    // Another webhook, its secret generated, its headers edited.
    let other = create_webhook(
        &h,
        &key,
        json!({"url": r.url("/other"), "events": ["*"], "headers": {"X-Old": "planted-old-header"}}),
    );
    let edit = json!({"headers": {"X-New": "planted-new-header", "Authorization": "Bearer planted-bearer"}});
    assert_eq!(h.json("PATCH", &format!("/api/v1/webhooks/{other}"), Some(&key), &edit).status, 200);
    // Deliveries record their request headers; a test send goes out too.
    for i in 0..5 {
        assert_eq!(
            h.json("POST", "/api/v1/events", Some(&key), &json!({"event": "lead.qualified", "data": {"i": i}})).status,
            202
        );
    }
    assert_eq!(h.json("POST", &format!("/api/v1/webhooks/{id}/test"), Some(&key), &json!({})).status, 200);
    wait_for("the deliveries", Duration::from_secs(10), || {
        r.hits_on("/in").len() >= 6 && r.hits_on("/other").len() >= 5
    });
    let hit = &r.hits_on("/in")[0];
    assert!(hit.signed_with(&current), "signed with the newest secret, opened from its sealed form");
    assert_eq!(hit.header("x-team"), Some("planted-team-value"));
    assert_eq!(r.hits_on("/other")[0].header("x-new"), Some("planted-new-header"));
    // Shown as before: headers opened, credentials masked; attempts too.
    let shown = h.send("GET", &format!("/api/v1/webhooks/{id}"), Some(&key), &[], None);
    assert_eq!(shown.body["headers"]["X-Team"], "planted-team-value");
    assert_eq!(shown.body["headers"]["X-Api-Key"], "****");
    let dlv = hit.delivery_id();
    let d = h.send("GET", &format!("/api/v1/deliveries/{dlv}"), Some(&key), &[], None);
    assert_eq!(d.body["attempts"][0]["request_headers"]["X-Team"], "planted-team-value", "{}", d.text);
    stop(h);

    for planted in [
        chosen,
        generated.as_str(),
        current.as_str(),
        "planted-api-key-value",
        "planted-team-value",
        "planted-old-header",
        "planted-new-header",
        "planted-bearer",
    ] {
        assert_eq!(files_containing(&data, planted), Vec::<String>::new(), "{planted} in clear");
    }
    // The key is outside the data directory, readable by its owner only.
    let key_file = dir.path().join("herald-data.seal-key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!files_containing(&data, "sealed:v1:").is_empty(), "values are there, sealed");

    // Without its key the directory does not start, and says which key it needs.
    let kept = std::fs::read_to_string(&key_file).unwrap();
    std::fs::remove_file(&key_file).unwrap();
    let (code, _, err) =
        run(dir.path(), &["--dev", "--listen", "127.0.0.1:0", "serve"], &[("HERALD_ADMIN_TOKEN", ADMIN)]);
    assert_ne!(code, 0);
    let key_id = kept.lines().find(|l| !l.starts_with('#')).unwrap().split(' ').next().unwrap();
    assert!(err.contains("no seal key file") && err.contains(key_id), "{err}");
    assert!(!key_file.exists(), "no new key is made for a sealed directory");
    // Nor with another key.
    std::fs::write(&key_file, "other AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n").unwrap();
    let (code, _, err) =
        run(dir.path(), &["--dev", "--listen", "127.0.0.1:0", "serve"], &[("HERALD_ADMIN_TOKEN", ADMIN)]);
    assert!(code != 0 && err.contains(key_id), "{err}");

    // Rotation: a new key seals from now on, the old one still opens what it sealed.
    std::fs::write(&key_file, &kept).unwrap();
    let (code, out, err) = run(dir.path(), &["seal-key", "rotate"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let rotated = std::fs::read_to_string(&key_file).unwrap();
    let new_id = rotated.lines().find(|l| !l.starts_with('#')).unwrap().split(' ').next().unwrap().to_owned();
    assert!(new_id != key_id && rotated.contains(key_id));
    let h = herald_for_api(dir.path());
    assert_eq!(
        h.json(
            "POST",
            "/api/v1/events",
            Some(&key),
            &json!({"event": "lead.qualified", "data": {"after": "rotation"}})
        )
        .status,
        202
    );
    wait_for("a delivery after rotation", Duration::from_secs(10), || r.hits_on("/in").len() >= 7);
    assert!(r.hits_on("/in").last().unwrap().signed_with(&current), "an old record's secret still opens");
    create_webhook(&h, &key, json!({"url": r.url("/third"), "events": ["*"], "secret": "planted-after-rotation-0123"}));
    stop(h);
    assert!(!files_containing(&data, &format!("sealed:v1:{new_id}:")).is_empty(), "sealed with the new key");
    assert!(files_containing(&data, "planted-after-rotation-0123").is_empty());
}

#[test]
fn herald_seal_rewrites_a_log_written_in_clear_into_a_directory_with_nothing_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let r = Receiver::start();
    // A node as an older Herald left it: a webhook with its secret and headers in clear.
    let old = dir.path().join("herald-data");
    let (log, _) = herald::log::Log::open(&old, herald::log::LogOptions::default()).unwrap();
    let secret = "legacy-secret-in-clear-0123456789";
    let webhook = legacy_webhook(r.url("/legacy"), secret, &[("X-Legacy", "legacy-header-in-clear")]);
    log.append_blocking(herald::storage::Command::new(vec![herald::storage::Record::WebhookCreated { webhook }]))
        .unwrap();
    log.close();
    drop(log);
    // Upgraded: it runs, warns, and what it writes now is sealed — but the old records are not.
    let h = herald_for_api(dir.path());
    wait_for("the notice", Duration::from_secs(5), || h.stderr().contains("stored in clear by an older Herald"));
    let e = h.json("POST", "/api/v1/events", Some(ADMIN), &json!({"event": "lead.qualified", "data": {"n": 1}}));
    assert_eq!(e.status, 202);
    let event = e.body["id"].as_str().unwrap().to_owned();
    wait_for("the delivery", Duration::from_secs(10), || r.count() >= 1);
    assert!(r.hits()[0].signed_with(secret));
    stop(h);
    assert!(!files_containing(&old, secret).is_empty(), "the old records hold it in clear");

    let new = dir.path().join("sealed-data");
    let (code, out, err) = run(dir.path(), &["seal", "--to", new.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("still holds them in clear"), "{out}");
    for planted in [secret, "legacy-header-in-clear"] {
        assert_eq!(files_containing(&new, planted), Vec::<String>::new(), "{planted} in clear");
    }
    let (code, out, _) = run(dir.path(), &["--data-dir", new.to_str().unwrap(), "verify"], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("stored in clear"), "{out}");
    // The new directory is the same node: the same event ids, the same secret signing.
    let h =
        Herald::serve(dir.path(), &["--dev", "--data-dir", new.to_str().unwrap()], &[("HERALD_ADMIN_TOKEN", ADMIN)]);
    h.wait_ready();
    assert_eq!(h.send("GET", &format!("/api/v1/events/{event}"), Some(ADMIN), &[], None).status, 200);
    let again = h.json("POST", "/api/v1/events", Some(ADMIN), &json!({"event": "lead.qualified", "data": {"n": 2}}));
    assert_eq!(again.status, 202);
    wait_for("the delivery from the new directory", Duration::from_secs(10), || r.count() >= 2);
    let hit = r.hits().into_iter().find(|h| h.json()["id"] == again.body["id"]).unwrap();
    assert!(hit.signed_with(secret));
    assert_eq!(hit.header("x-legacy"), Some("legacy-header-in-clear"));
    let shown: Value = h.send("GET", "/api/v1/webhooks", Some(ADMIN), &[], None).body;
    assert_eq!(shown["data"][0]["headers"]["X-Legacy"], "legacy-header-in-clear");
    // A second rewrite into a directory that holds a log is refused.
    stop(h);
    let (code, _, err) = run(dir.path(), &["seal", "--to", new.to_str().unwrap()], &[]);
    assert!(code != 0 && err.contains("already holds a log"), "{err}");
}

/// A key kept outside the state directory can be made before the first start: rotating a key
/// file that does not exist creates it with one key and touches no data directory.
#[test]
fn seal_key_rotate_creates_a_missing_key_file_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("keys").join("seal-key");
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    let env = [("HERALD_SEAL_KEY_FILE", key.to_str().unwrap())];
    let (code, out, err) = run(dir.path(), &["seal-key", "rotate"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("created with sealing key"), "{out}");
    let keys = |text: String| text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).count();
    assert_eq!(keys(std::fs::read_to_string(&key).unwrap()), 1);
    assert!(!dir.path().join("herald-data").exists(), "no data directory was created");
    let (code, out, err) = run(dir.path(), &["seal-key", "rotate"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("kept:"), "{out}");
    assert_eq!(keys(std::fs::read_to_string(&key).unwrap()), 2);
    // The node starts with it.
    let h = Herald::serve(dir.path(), &[], &[("HERALD_SEAL_KEY_FILE", key.to_str().unwrap())]);
    h.wait_ready();
}
