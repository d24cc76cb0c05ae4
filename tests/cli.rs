//! The `herald` binary as an operator meets it: defaults, layered configuration, health,
//! the admin token, graceful shutdown, the data directory's mode.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

#[test]
fn serve_starts_with_no_configuration_and_reports_health() {
    let dir = tempfile::tempdir().unwrap();
    let mut herald = Herald::serve(dir.path(), &[], &[]);
    assert_eq!(herald.get("/healthz").0, 200);
    herald.wait_ready();
    let (_, body) = herald.get("/readyz");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["status"], "ready");

    // Defaults: data in ./herald-data, created 0700.
    let data = dir.path().join("herald-data");
    assert!(data.join("log").exists());
    assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);

    // Unknown routes answer the JSON error format.
    let (status, body) = herald.get("/nope");
    assert_eq!(status, 404);
    let err: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"]["code"], "not_found");

    herald.signal(libc::SIGTERM);
    let status = herald.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "graceful exit, got {status:?}");
    assert!(herald.stderr().contains("stopped"));
}

#[test]
fn first_start_prints_an_admin_token_once_and_stores_only_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let data_arg = data.to_str().unwrap();
    let token = {
        let mut herald = Herald::serve(dir.path(), &["--data-dir", data_arg], &[]);
        herald.wait_ready();
        // On stdout, never in the log stream.
        let stdout = herald.stdout.lock().unwrap().clone();
        let token = stdout.split_whitespace().find(|w| w.starts_with("hadm_")).expect("token printed").to_owned();
        assert!(!herald.stderr().contains("hadm_"), "the token is not logged");
        herald.signal(libc::SIGINT);
        assert!(herald.wait_exit(Duration::from_secs(20)).success());
        token
    };
    // The token itself is nowhere on disk.
    let mut found = false;
    for entry in walk(&data) {
        let bytes = std::fs::read(&entry).unwrap();
        found |= bytes.windows(token.len()).any(|w| w == token.as_bytes());
    }
    assert!(!found, "the admin token is stored in clear");

    // A second start prints none.
    let mut herald = Herald::serve(dir.path(), &["--data-dir", data_arg], &[]);
    herald.wait_ready();
    assert!(!herald.stderr().contains("hadm_") && !herald.stdout.lock().unwrap().contains("hadm_"));
    herald.signal(libc::SIGTERM);
    assert!(herald.wait_exit(Duration::from_secs(20)).success());

    // A reset issues a new one: alone on stdout, so `T=$(herald admin-token reset)` works.
    let (code, stdout, stderr) = run(dir.path(), &["--data-dir", data_arg, "admin-token", "reset"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let new = stdout.trim();
    assert!(new.starts_with("hadm_") && !new.contains(char::is_whitespace), "{stdout:?}");
    assert_ne!(new, token);
    assert!(!stderr.contains("hadm_"));
    // And it works, where the old one no longer does.
    let herald = Herald::serve(dir.path(), &["--data-dir", data_arg], &[]);
    herald.wait_ready();
    assert_eq!(herald.send("GET", "/api/v1/accounts", Some(new), &[], None).status, 200);
    assert_eq!(herald.send("GET", "/api/v1/accounts", Some(&token), &[], None).status, 401);
}

#[test]
fn admin_token_reset_refuses_a_directory_with_no_log_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("herald-dtaa");
    let (code, stdout, stderr) = run(dir.path(), &["--data-dir", typo.to_str().unwrap(), "admin-token", "reset"], &[]);
    assert_ne!(code, 0);
    assert!(stdout.is_empty() && stderr.contains("holds no Herald log"), "{stderr}");
    assert!(!typo.exists(), "nothing created");
    assert_eq!(stderr.matches("holds no Herald log").count(), 1, "the error is printed once: {stderr}");
}

#[test]
fn a_directory_in_use_fails_before_the_port_is_bound() {
    let dir = tempfile::tempdir().unwrap();
    let first = Herald::serve(dir.path(), &[], &[]);
    first.wait_ready();
    let (code, _, stderr) = run(dir.path(), &["--listen", "127.0.0.1:0", "serve"], &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("in use"), "{stderr}");
    assert!(!stderr.contains("listening"), "refused before binding: {stderr}");
    assert_eq!(stderr.matches("in use").count(), 1, "printed once: {stderr}");
}

#[test]
fn shutdown_says_which_deliveries_it_abandoned_when_the_grace_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = herald_with(dir.path(), &[("HERALD_SHUTDOWN_GRACE", "1s")]);
    webhook(&h, ADMIN, serde_json::json!(["*"]), true);
    let e = h.json("POST", "/api/v1/events", Some(ADMIN), &serde_json::json!({"event": "lead.qualified", "data": {}}));
    let delivery = {
        let event = e.body["id"].as_str().unwrap();
        let read = h.send("GET", &format!("/api/v1/events/{event}"), Some(ADMIN), &[], None);
        read.body["deliveries"][0]["id"].as_str().unwrap().to_owned()
    };
    // The receiver never answers: the attempt is on the wire when the grace runs out.
    std::thread::sleep(Duration::from_millis(300));
    let t = std::time::Instant::now();
    h.signal(libc::SIGTERM);
    assert!(h.wait_exit(Duration::from_secs(10)).success());
    assert!(t.elapsed() < Duration::from_secs(3), "within the grace: {:?}", t.elapsed());
    let said = h.stderr();
    assert!(said.contains("abandoned at shutdown") && said.contains(&delivery), "{said}");
}

#[test]
fn admin_token_reset_refuses_while_the_server_runs() {
    let dir = tempfile::tempdir().unwrap();
    let herald = Herald::serve(dir.path(), &[], &[]);
    herald.wait_ready();
    let (code, _, stderr) = run(dir.path(), &["admin-token", "reset"], &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("in use"), "{stderr}");
}

#[test]
fn configuration_layers_file_then_env_then_flags_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    std::fs::write(
        &file,
        "retention = \"2s\"\nlisten = \"127.0.0.1:9001\"\nmetrics_token = \"file-secret-metrics-token\"\n",
    )
    .unwrap();
    let (code, out, err) = run(
        dir.path(),
        &["--config", file.to_str().unwrap(), "--listen", "127.0.0.1:9003", "config"],
        &[
            ("HERALD_LISTEN", "127.0.0.1:9002"),
            ("HERALD_ADMIN_TOKEN", "env-secret-admin-token-123"),
            ("HERALD_DEFAULT_MAX_RETRIES", "3"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let effective: toml::Table = out.parse().unwrap();
    assert_eq!(effective["listen"].as_str(), Some("127.0.0.1:9003"));
    assert_eq!(effective["retention"].as_str(), Some("2s"));
    assert_eq!(effective["default_max_retries"].as_integer(), Some(3));
    assert!(!out.contains("env-secret-admin-token") && !out.contains("file-secret-metrics-token"), "{out}");
    assert_eq!(effective["admin_token"].as_str(), Some("<redacted>"));
}

#[test]
fn bad_configuration_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    std::fs::write(&file, "breaker_treshold = 3\n").unwrap();
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["--config", file.to_str().unwrap(), "serve"], vec![], "breaker_treshold"),
        (vec!["serve"], vec![("HERALD_MAX_BACKOF", "1h")], "HERALD_MAX_BACKOF"),
        (vec!["serve"], vec![("HERALD_INITIAL_BACKOFF", "fast")], "HERALD_INITIAL_BACKOFF"),
        (vec!["serve"], vec![("HERALD_DEFAULT_TIMEOUT", "500s")], "default_timeout"),
        (vec!["--listen", "not-an-address", "serve"], vec![], "listen"),
    ];
    for (args, env, key) in cases {
        let (code, _, stderr) = run(dir.path(), &args, &env);
        assert_eq!(code, 2, "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains(key), "message names {key}: {stderr}");
        assert!(!dir.path().join("herald-data").exists(), "nothing was created");
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn no_doc_in_the_repo_points_outside_it_or_at_a_file_that_is_not_there() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs = vec![root.join("README.md"), root.join("ARCHITECTURE.md"), root.join("BENCHMARKS.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push(path);
        }
    }
    let prefixes = ["src/", "tests/", "docs/", "grafana/", "benches/", ".ci/"];
    for doc in docs {
        let text = std::fs::read_to_string(&doc).unwrap();
        let name = doc.strip_prefix(root).unwrap().display().to_string();
        assert!(!text.contains("../"), "{name} points outside the repo");
        // Every path in backticks that names a file or folder of the repo exists.
        for quoted in text.split('`').skip(1).step_by(2) {
            let path = quoted.split([' ', ':', '#', '(']).next().unwrap_or_default().trim_end_matches(['.', ',']);
            if prefixes.iter().any(|p| path.starts_with(p)) && !path.contains(['*', '<', '{', '…']) {
                let bare = path.split("::").next().unwrap_or(path);
                assert!(root.join(bare).exists(), "{name} names `{path}`, which is not in the repo");
            }
        }
    }
}

/// The systemd unit in the repo (also checked by `systemd-analyze verify` in `.ci/run`): what
/// it must hold, and its settings are ones Herald accepts.
#[test]
fn the_systemd_unit_runs_herald_hardened_with_settings_herald_accepts() {
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/systemd/herald.service")).unwrap();
    let lines: Vec<&str> = unit.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
    for wanted in [
        "User=herald",
        "ExecStart=/usr/local/bin/herald serve",
        "StateDirectory=herald",
        "EnvironmentFile=/etc/herald/herald.env",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
    ] {
        assert!(lines.contains(&wanted), "the unit lacks {wanted}");
    }
    // The data directory is inside the state directory, the one path ProtectSystem=strict
    // leaves writable.
    let env: Vec<(&str, &str)> =
        lines.iter().filter_map(|l| l.strip_prefix("Environment=")).filter_map(|kv| kv.split_once('=')).collect();
    let data_dir = env.iter().find(|(k, _)| *k == "HERALD_DATA_DIR").map(|(_, v)| *v).unwrap();
    assert!(data_dir.starts_with("/var/lib/herald/"), "{data_dir}");
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(dir.path(), &["config"], &env);
    assert_eq!(code, 0, "herald config with the unit's settings: {err}");
    assert!(out.contains("/var/lib/herald/data") && out.contains("json"), "{out}");
}
