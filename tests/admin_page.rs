//! The admin page: served by Herald with its files embedded and a strict
//! Content-Security-Policy, and driven in real headless Chromium (Debian's `chromium`,
//! through `playwright-core` from npm — `.ci/run` installs both) by
//! `tests/browser/admin.mjs`: sign in, create a webhook pointing at a receiver here, send a
//! test, see the delivery and its attempt, make the receiver fail until a delivery is dead,
//! retry it from the page, see it succeed — with markup planted in the webhook's name, a
//! custom header and the receiver's answers, none of which may run. Screenshots land in
//! `target/tmp/browser-artifacts/`.

mod common;

use common::receiver::{Receiver, Reply};
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HOSTILE_NAME: &str = "<script>window.__pwned='name'</script>\"><img src=x onerror=\"window.__pwned='name-img'\">";
const HOSTILE_HEADER: &str = "\"><img src=x onerror=\"window.__pwned='header'\"><script>window.__pwned=1</script>";
const HOSTILE_BODY: &str = "<img src=x onerror=\"window.__pwned='body'\"><script>window.__pwned='body-script'</script>";

#[test]
fn admin_files_are_embedded_and_locked_down() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_for_api(dir.path());
    for path in ["/admin", "/admin/webhooks", "/admin/deliveries", "/admin/assets/app.js", "/admin/assets/app.css"] {
        let r = ureq::get(&h.url(path)).call().unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(r.status(), 200, "{path}");
        let csp = r.header("Content-Security-Policy").unwrap_or_default().to_owned();
        assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'"), "{path}: {csp}");
        assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"), "{path}");
        let kind = r.content_type().to_owned();
        let text = r.into_string().unwrap();
        let expected = match path {
            p if p.ends_with(".js") => "text/javascript",
            p if p.ends_with(".css") => "text/css",
            _ => "text/html",
        };
        assert_eq!(kind, expected, "{path}");
        // No CDN, no external font, no inline script: everything comes from /admin/assets.
        assert!(!text.contains("http://") && !text.contains("https://"), "{path} names another origin");
        if expected == "text/html" {
            assert!(text.contains("<script src=\"/admin/assets/app.js\" defer></script>"), "{text}");
            assert_eq!(text.matches("<script").count(), 1, "{path}: one script, from a file");
        }
        if expected == "text/javascript" {
            assert!(!text.contains("innerHTML") && !text.contains("eval("), "the script builds the page as text");
        }
    }
    // Not a catch-all: other paths under /admin are the API's 404.
    assert_eq!(h.get("/admin/secret").0, 404);
}

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

#[test]
fn admin_page_drives_a_delivery_from_test_send_to_retried_dead_letter_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        Path::new(&chromium()).exists(),
        "Chromium is missing: `apt-get install chromium` (.ci/run does), or set CHROMIUM"
    );
    assert!(
        root.join("tests/browser/node_modules/playwright-core").exists(),
        "playwright-core is missing: `npm ci --prefix tests/browser` (.ci/run does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let h = herald_with(
        dir.path(),
        &[("HERALD_INITIAL_BACKOFF", "50ms"), ("HERALD_MAX_BACKOFF", "100ms"), ("HERALD_BREAKER_THRESHOLD", "1000")],
    );
    let key = account(&h, "Browser & <Co>");
    // Another tenant's activity, which the page must not count.
    let neighbour = account(&h, "Neighbour");
    webhook(&h, &neighbour, serde_json::json!(["*"]), true);
    for n in 0..5 {
        let a = h.json(
            "POST",
            "/api/v1/events",
            Some(&neighbour),
            &serde_json::json!({"event": "lead.qualified", "data": {"n": n}}),
        );
        assert_eq!(a.status, 202, "{}", a.text);
    }

    let receiver = Receiver::start();
    let failing = Arc::new(AtomicBool::new(false));
    let switch = failing.clone();
    receiver.answer(move |hit| match hit.path.as_str() {
        "/control/fail" => {
            switch.store(true, Ordering::SeqCst);
            Reply::ok()
        }
        "/control/ok" => {
            switch.store(false, Ordering::SeqCst);
            Reply::ok()
        }
        _ if switch.load(Ordering::SeqCst) => Reply::status(500).body(HOSTILE_BODY),
        _ => Reply::ok().body(HOSTILE_BODY),
    });

    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-artifacts");
    let _ = std::fs::remove_dir_all(&artifacts);
    let mut node = Command::new("node");
    node.current_dir(root)
        .arg("tests/browser/admin.mjs")
        .env("HERALD_URL", &h.base)
        .env("API_KEY", &key)
        .env("ADMIN_TOKEN", ADMIN)
        .env("RECEIVER_URL", receiver.url("/in"))
        .env("CONTROL_URL", receiver.url(""))
        .env("ARTIFACTS", &artifacts)
        .env("CHROMIUM", chromium())
        .env("HOSTILE_NAME", HOSTILE_NAME)
        .env("HOSTILE_HEADER", HOSTILE_HEADER)
        .env("HOSTILE_BODY", HOSTILE_BODY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn_tied(node);
    let end = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("the browser test did not finish within 180 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = child.wait_with_output().expect("node output");
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(status.success(), "the browser test failed (screenshots in {}):\n{said}", artifacts.display());
    assert!(said.contains("OK: 0 external requests, 0 console errors"), "{said}");

    // The page deleted the webhook of the account it was acting for, not the neighbour's.
    let listed =
        |key: &str| h.send("GET", "/api/v1/webhooks", Some(key), &[], None).body["data"].as_array().map(Vec::len);
    assert_eq!(listed(&key), Some(0));
    assert_eq!(listed(&neighbour), Some(1));

    // What the page did, seen from the receiver: the test send, the first delivery, the two
    // failed attempts of the dead one and its retry, every one carrying the planted header.
    let hits = receiver.hits_on("/in");
    assert!(hits.len() >= 5, "{} requests reached the receiver", hits.len());
    assert!(hits.iter().all(|hit| hit.header("X-Note") == Some(HOSTILE_HEADER)));
    for shot in ["01-signin", "03-webhook-created", "05-delivery-succeeded", "06-delivery-dead", "07-delivery-retried"]
    {
        let file = artifacts.join(format!("{shot}.png"));
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "{} is missing or empty", file.display());
    }
}
