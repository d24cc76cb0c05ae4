//! The README's examples, run as a reader runs them.
//!
//! Every ```` ```sh ```` block of `README.md` except the quick start's (which starts Herald
//! and runs this suite) runs, in order, in one `bash` with `set -euo pipefail`, against a
//! fresh `herald serve --dev` — with `HERALD`, `ADMIN` (the token the first start printed on
//! stdout) and `PORT` (a free port for the receiver) set, as a reader sets them. A block
//! whose info string names a file (```` ```python receiver.py ````) is saved under that
//! name first, as the README tells the reader to. Shell snippets not meant to run here use
//! another info string (`text`, `console`).
//!
//! Then the receivers themselves: each (Python and Node, each form of signature) must accept
//! what Herald signs — with a generated `whsec_` secret, a secret of the user's own, both
//! secrets of a rotation overlap — and refuse a forgery.

mod common;

use common::*;
use serde_json::json;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// One fenced block: its info string and its text.
struct Block {
    info: String,
    text: String,
    /// The `##` section it is in.
    section: String,
}

fn blocks() -> Vec<Block> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut out = Vec::new();
    let mut section = String::new();
    let mut open: Option<Block> = None;
    for line in readme.lines() {
        let fence = line.trim_start().starts_with("```");
        match open.take() {
            Some(b) if fence => out.push(b),
            Some(mut b) => {
                b.text.push_str(line);
                b.text.push('\n');
                open = Some(b);
            }
            None if fence => {
                let info = line.trim_start().trim_start_matches('`').trim().to_owned();
                open = Some(Block { info, text: String::new(), section: section.clone() });
            }
            None => {
                if let Some(title) = line.strip_prefix("## ") {
                    section = title.to_owned();
                }
            }
        }
    }
    assert!(open.is_none(), "README.md has an unclosed code block");
    out
}

/// The file a block says it is (`python receiver.py` → `receiver.py`).
fn file_name(info: &str) -> Option<&str> {
    info.split_whitespace().nth(1)
}

fn save_files(dir: &Path) {
    let mut saved = Vec::new();
    for b in blocks() {
        if let Some(name) = file_name(&b.info) {
            std::fs::write(dir.join(name), &b.text).unwrap();
            saved.push(name.to_owned());
        }
    }
    saved.sort();
    assert_eq!(saved, ["receiver.js", "receiver.py"], "the receivers the README shows");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The admin token a first start printed on stdout.
fn first_token(h: &Herald) -> String {
    let mut token = String::new();
    wait_for("the first start's admin token on stdout", Duration::from_secs(10), || {
        let out = h.stdout.lock().unwrap();
        token = out.split_whitespace().find(|w| w.starts_with("hadm_")).unwrap_or_default().to_owned();
        !token.is_empty()
    });
    token
}

/// Kills a whole process group (the script's background receivers too) when dropped.
struct Group(i32);

impl Drop for Group {
    fn drop(&mut self) {
        unsafe {
            libc::kill(-self.0, libc::SIGKILL);
        }
    }
}

#[test]
fn the_readme_examples_run_in_order_against_a_fresh_herald() {
    let dir = tempfile::tempdir().unwrap();
    let h = Herald::serve(dir.path(), &["--dev"], &[]);
    h.wait_ready();
    let admin = first_token(&h);
    assert!(h.stderr().contains("DEV MODE: webhook target checks are OFF"), "--dev says so loudly");
    save_files(dir.path());

    let shell: Vec<Block> = blocks().into_iter().filter(|b| b.info == "sh" && b.section != "Quick start").collect();
    assert!(shell.len() >= 5, "the README's shell examples: {}", shell.len());
    let mut script = String::from("set -euo pipefail\n");
    for (i, b) in shell.iter().enumerate() {
        script.push_str(&format!("echo '== README sh block {} ({})' >&2\n{}\n", i + 1, b.section, b.text));
    }
    script.push_str("printf 'KEY=%s\\nWH=%s\\nEVT=%s\\n' \"$KEY\" \"$WH\" \"$EVT\" > readme.vars\n");

    let port = free_port();
    let mut cmd = Command::new("bash");
    cmd.current_dir(dir.path())
        .env("HERALD", &h.base)
        .env("ADMIN", &admin)
        .env("PORT", port.to_string())
        .stdin(Stdio::piped())
        // Files, not pipes: the receivers the script leaves running would hold a pipe open.
        .stdout(std::fs::File::create(dir.path().join("readme.out")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("readme.err")).unwrap())
        .process_group(0);
    let mut child = cmd.spawn().unwrap();
    let _group = Group(child.id() as i32);
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let status = {
        let end = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(std::time::Instant::now() < end, "the README's examples did not finish in 120 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let vars = std::fs::read_to_string(dir.path().join("readme.vars")).unwrap_or_default();
    let said = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    assert!(
        status.success(),
        "the README's examples failed ({status}):\n{}\n{}\nHerald said:\n{}",
        said("readme.out"),
        said("readme.err"),
        h.stderr()
    );
    let var =
        |name: &str| vars.lines().find_map(|l| l.strip_prefix(&format!("{name}="))).unwrap_or_default().to_owned();
    let (key, wh, evt) = (var("KEY"), var("WH"), var("EVT"));
    assert!(key.starts_with("hk_") && wh.starts_with("wh_") && evt.starts_with("evt_"), "{vars}");

    // What the examples sent reached the README's receiver, which verified each signature:
    // the two events of the content filter example, the lead.qualified event and the
    // batch's new_lead, all for the webhook the examples kept, across the secret rotation
    // they did.
    let deliveries = || h.json("GET", &format!("/api/v1/webhooks/{wh}/deliveries"), Some(&key), &json!(null));
    wait_for("both deliveries succeeded", Duration::from_secs(30), || {
        let d = deliveries();
        let list = d.body["data"].as_array().cloned().unwrap_or_default();
        list.len() == 4 && list.iter().all(|x| x["status"] == "succeeded")
    });
    let event = h.json("GET", &format!("/api/v1/events/{evt}"), Some(&key), &json!(null));
    assert_eq!(event.body["event"], "lead.qualified", "{}", event.text);
    assert!(event.text.contains(r#""data":{"lead_id": "lead_123", "score": 87.50}"#), "{}", event.text);
}

/// A receiver the README shows, running on a port of its own.
struct Running {
    _group: Group,
    child: std::process::Child,
    port: u16,
}

impl Running {
    fn start(dir: &Path, program: &str, file: &str, check: &str, secrets: &str) -> Running {
        let port = free_port();
        let mut cmd = Command::new(program);
        cmd.current_dir(dir)
            .arg(file)
            .env("WEBHOOK_SECRETS", secrets)
            .env("CHECK", check)
            .env("PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = cmd.spawn().unwrap();
        let group = Group(child.id() as i32);
        wait_for(&format!("{file} to listen"), Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Running { _group: group, child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/herald", self.port)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_readme_receivers_accept_what_herald_signs_and_refuse_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    save_files(dir.path());
    let h = herald_for_api(dir.path());
    let key = account(&h, "AstroLeads");
    let mut sent = 0;
    let mut delivered = |url: &str, wh: &str, what: &str| {
        sent += 1;
        let patch = h.json("PATCH", &format!("/api/v1/webhooks/{wh}"), Some(&key), &json!({"url": url}));
        assert_eq!(patch.status, 200, "{}", patch.text);
        let body = json!({"event": "lead.qualified", "data": {"n": sent, "score": 87.50, "name": "Ren\u{e9}e"}});
        let a = h.json("POST", "/api/v1/events", Some(&key), &body);
        assert_eq!(a.status, 202, "{}", a.text);
        let evt = a.body["id"].as_str().unwrap().to_owned();
        wait_for(what, Duration::from_secs(20), || {
            let e = h.json("GET", &format!("/api/v1/events/{evt}"), Some(&key), &json!(null));
            e.body["deliveries"][0]["status"] == "succeeded"
        });
    };

    for (program, file) in [("python3", "receiver.py"), ("node", "receiver.js")] {
        for check in ["standard", "hex"] {
            let case = format!("{file} with CHECK={check}");
            // A secret of the user's own (seed 000's kind), then Herald's generated ones.
            let own = "your_webhook_secret_0123";
            let r = Running::start(dir.path(), program, file, check, own);
            let created = h.json(
                "POST",
                "/api/v1/webhooks",
                Some(&key),
                &json!({"url": r.url(), "events": ["lead.*"], "secret": own, "max_retries": 20}),
            );
            assert_eq!(created.status, 201, "{}", created.text);
            let wh = created.body["id"].as_str().unwrap().to_owned();
            delivered(&r.url(), &wh, &format!("{case}: a chosen secret"));

            // A forgery: Herald's headers with the wrong key, or a body changed after signing.
            let forged = ureq::post(&r.url())
                .set("Content-Type", "application/json")
                .set("X-Webhook-Signature", &format!("sha256={}", "0".repeat(64)))
                .set("webhook-id", "dlv_forged")
                .set("webhook-timestamp", &std::time::UNIX_EPOCH.elapsed().unwrap().as_secs().to_string())
                .set("webhook-signature", "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
                .send_string(r#"{"id":"evt_x","event":"lead.qualified","data":{}}"#);
            assert!(matches!(forged, Err(ureq::Error::Status(401, _))), "{case}: {forged:?}");
            drop(r);

            // Herald's own secret, rotated: during the overlap the receiver holds both.
            let rotated = h.json("POST", &format!("/api/v1/webhooks/{wh}/rotate-secret"), Some(&key), &json!({}));
            assert_eq!(rotated.status, 200, "{}", rotated.text);
            let new = rotated.body["secret"].as_str().unwrap().to_owned();
            assert!(new.starts_with("whsec_"));
            let rotated_again = h.json("POST", &format!("/api/v1/webhooks/{wh}/rotate-secret"), Some(&key), &json!({}));
            let newest = rotated_again.body["secret"].as_str().unwrap().to_owned();
            let r = Running::start(dir.path(), program, file, check, &format!("{newest} {new}"));
            delivered(&r.url(), &wh, &format!("{case}: both secrets of an overlap"));
            if check == "standard" {
                // Only the older secret still verifies `webhook-signature` during the overlap.
                drop(r);
                let r = Running::start(dir.path(), program, file, check, &new);
                delivered(&r.url(), &wh, &format!("{case}: the older secret during the overlap"));
            }
            assert_eq!(h.send("DELETE", &format!("/api/v1/webhooks/{wh}"), Some(&key), &[], None).status, 204);
        }
    }
}
