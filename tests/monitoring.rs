//! Monitoring (contract §7): the real `/metrics` of a running Herald checked by `promtool`,
//! the Grafana dashboard and its provisioning checked against what Herald exports, the
//! alert rules checked and unit-tested by `promtool`, and the logs: JSON on request, spans
//! carrying the attempt's ids, `RUST_LOG` obeyed, no secret anywhere.
//!
//! `promtool` comes from Debian's `prometheus` package (`.ci/run` installs it); these tests
//! fail, not skip, without it.

mod common;

use common::receiver::{Receiver, Reply};
use common::*;
use promql_parser::parser::{self, Expr};
use promql_parser::util::{walk_expr, ExprVisitor};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs `promtool` with `args` (and `stdin`), returning whether it succeeded and all it said.
fn promtool(args: &[&str], cwd: &Path, stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`; .ci/run installs it)");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), said)
}

/// The sample names in a text exposition (`_bucket`, `_sum`, `_count` included).
fn sample_names(text: &str) -> HashSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

/// A Herald that has ingested and delivered (one attempt failed, then succeeded), and its
/// `/metrics` text.
fn busy_herald_metrics(dir: &Path) -> (Herald, String) {
    // Five first attempts fail in a row: a breaker threshold above that keeps it closed.
    let h = herald_with(
        dir,
        &[
            ("HERALD_INITIAL_BACKOFF", "10ms"),
            ("HERALD_BREAKER_THRESHOLD", "50"),
            ("HERALD_METRICS_PER_WEBHOOK", "true"),
        ],
    );
    let key = account(&h, "AstroLeads");
    let r = Receiver::start();
    r.answer(|hit| if hit.header("x-webhook-attempt") == Some("1") { Reply::status(500) } else { Reply::ok() });
    create_webhook(&h, &key, json!({"url": r.url("/in"), "events": ["lead.*"]}));
    for i in 0..5 {
        let a = h.json("POST", "/api/v1/events", Some(&key), &json!({"event": "lead.qualified", "data": {"i": i}}));
        assert_eq!(a.status, 202, "{}", a.text);
    }
    wait_for("five deliveries to succeed", Duration::from_secs(20), || r.accepted().len() >= 5);
    assert_eq!(h.get("/no/such/path/evt_123").0, 404);
    let text = |h: &Herald| h.get("/metrics").1;
    wait_for("the successes to be counted", Duration::from_secs(10), || {
        text(&h).contains("herald_deliveries_succeeded_total 5")
    });
    let t = text(&h);
    (h, t)
}

/// The families only a node of a cluster exports (the dashboard's cluster panels).
const CLUSTER_PREFIXES: [&str; 2] = ["herald_cluster_", "herald_store_"];

/// A node on a PostgreSQL store the test starts (no standby: its metrics are what is
/// checked), once it has committed a group; its `/metrics`. `None` where PostgreSQL's
/// binaries are missing (outside CI; under CI that fails).
fn cluster_node_metrics(dir: &Path) -> Option<(common::pg::Cluster, Herald, String)> {
    if !common::pg::available("the cluster families of /metrics") {
        return None;
    }
    let cluster = common::pg::Cluster::start(0);
    let url = cluster.url();
    let h = herald_with(dir, &[("HERALD_STORE", &url), ("HERALD_SEAL_KEY", common::pg::seal_key())]);
    let key = account(&h, "LeadNest");
    create_webhook(&h, &key, json!({"url": "http://127.0.0.1:9/in", "events": ["new_lead"]}));
    let mut text = String::new();
    wait_for("a node holding every partition, its renewals and a commit counted", Duration::from_secs(20), || {
        text = h.get("/metrics").1;
        text.contains("herald_cluster_partitions_owned 128")
            && !text.contains("herald_cluster_lease_renewals_total{result=\"ok\"} 0")
            && !text.contains("herald_store_commit_duration_seconds_count 0")
    });
    Some((cluster, h, text))
}

/// Every metric contract §7 names, as it appears in the exposition.
const SPEC_METRICS: &[&str] = &[
    "herald_events_ingested_total",
    "herald_delivery_attempts_total",
    "herald_deliveries_succeeded_total",
    "herald_deliveries_dead_total",
    "herald_deliveries_pending",
    "herald_dead_letter_size",
    "herald_delivery_attempt_duration_seconds_bucket",
    "herald_delivery_lag_seconds_bucket",
    "herald_circuit_breakers_open",
    "herald_circuit_transitions_total",
    "herald_log_append_duration_seconds_bucket",
    "herald_log_bytes",
    "herald_recovery_duration_seconds",
    "herald_http_requests_total",
    "herald_http_request_duration_seconds_bucket",
];

/// Metric names a PromQL expression selects, and the selectors that do not pick the
/// dashboard's `$instance`.
#[derive(Default)]
struct Names {
    names: BTreeSet<String>,
    without_instance: Vec<String>,
}

impl ExprVisitor for Names {
    type Error = ();
    fn pre_visit(&mut self, e: &Expr) -> Result<bool, ()> {
        let vs = match e {
            Expr::VectorSelector(v) => v,
            Expr::MatrixSelector(m) => &m.vs,
            _ => return Ok(true),
        };
        self.names.extend(vs.name.clone());
        // As Grafana substitutes it: the instance variable's value inside the matcher.
        let picks_instance = vs.matchers.matchers.iter().any(|m| {
            m.name == "instance" && matches!(m.op, promql_parser::label::MatchOp::Re(_)) && m.value == INSTANCE_VALUE
        });
        if !picks_instance {
            self.without_instance.push(vs.name.clone().unwrap_or_default());
        }
        Ok(true)
    }
}

/// What the test substitutes for `$instance` before parsing.
const INSTANCE_VALUE: &str = "127.0.0.1:8080";

fn dashboard() -> Value {
    let text = std::fs::read_to_string(repo("grafana/dashboards/herald.json")).unwrap();
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

fn yaml(path: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(repo(path)).unwrap();
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

#[test]
fn metrics_pass_promtool_and_hold_every_name_the_dashboard_queries() {
    let dir = tempfile::tempdir().unwrap();
    let (_h, text) = busy_herald_metrics(dir.path());
    let exported = sample_names(&text);
    for name in SPEC_METRICS {
        assert!(exported.contains(*name), "{name} missing from /metrics:\n{text}");
    }
    // Attempt durations from 1 ms to 120 s, lag up to 72 h.
    assert!(text.contains("herald_delivery_attempt_duration_seconds_bucket{le=\"0.001\"}"));
    assert!(text.contains("herald_delivery_attempt_duration_seconds_bucket{le=\"120\"}"));
    assert!(text.contains("herald_delivery_lag_seconds_bucket{le=\"259200\"}"));
    // Every result and transition label exists before it happens.
    for result in ["success", "http_error", "timeout", "network_error", "refused"] {
        assert!(text.contains(&format!("herald_delivery_attempts_total{{result=\"{result}\"}}")), "{result}");
    }
    for to in ["open", "closed", "disabled"] {
        assert!(text.contains(&format!("herald_circuit_transitions_total{{to=\"{to}\"}}")), "{to}");
    }
    // What happened is counted: one failed attempt and one success per event.
    assert!(text.contains("herald_delivery_attempts_total{result=\"http_error\"} 5"), "{text}");
    assert!(text.contains("herald_delivery_attempts_total{result=\"success\"} 5"), "{text}");
    assert!(text.contains("herald_webhook_delivery_attempts_total{result=\"success\",webhook_id=\"wh_"), "{text}");
    // Requests by route pattern and status: every pattern and status exists from start,
    // and no label is anything but a pattern (a raw path would be a tenant-made series).
    assert!(text.contains("herald_http_requests_total{route=\"/api/v1/events\",status=\"202\"} 5"), "{text}");
    assert!(text.contains("herald_http_requests_total{route=\"/api/v1/events\",status=\"503\"} 0"), "{text}");
    assert!(text.contains("herald_http_requests_total{route=\"/api/v1/webhooks/{id}/test\",status=\"200\"} 0"));
    assert!(text.contains("herald_http_requests_total{route=\"unmatched\",status=\"404\"} 1"), "{text}");
    let known = herald::api::route_patterns();
    let patterns: HashSet<&str> = known.iter().map(String::as_str).chain(["unmatched"]).collect();
    for line in text.lines().filter(|l| l.starts_with("herald_http_request")) {
        let route = line.split("route=\"").nth(1).and_then(|r| r.split('"').next()).unwrap();
        assert!(patterns.contains(route), "route label {route} is not a route pattern");
    }

    let (ok, said) = promtool(&["check", "metrics"], dir.path(), Some(&text));
    assert!(ok && said.trim().is_empty(), "promtool check metrics complained:\n{said}");
    // A single node exports none of the cluster families; a node of a cluster does, and
    // they pass promtool too.
    assert!(!CLUSTER_PREFIXES.iter().any(|p| text.contains(p)), "a single node exports cluster families");
    let mut exported = exported;
    let node_dir = tempfile::tempdir().unwrap();
    let cluster = cluster_node_metrics(node_dir.path());
    if let Some((_, _, cluster_text)) = &cluster {
        let (ok, said) = promtool(&["check", "metrics"], dir.path(), Some(cluster_text));
        assert!(ok && said.trim().is_empty(), "promtool check metrics complained of a cluster node:\n{said}");
        for result in ["ok", "failed"] {
            assert!(cluster_text.contains(&format!("herald_cluster_lease_renewals_total{{result=\"{result}\"}}")));
        }
        exported.extend(sample_names(cluster_text));
    }

    // Every PromQL expression of the dashboard parses and selects only exported names.
    let mut checked = 0;
    for panel in dashboard()["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            // Grafana's own variables, as Grafana would substitute them.
            let promql = expr
                .replace("$__rate_interval", "1m")
                .replace("$__interval", "15s")
                .replace("$instance", INSTANCE_VALUE);
            let ast = parser::parse(&promql).unwrap_or_else(|e| panic!("panel {}: {expr}: {e}", panel["title"]));
            let mut names = Names::default();
            walk_expr(&mut names, &ast).unwrap();
            assert!(!names.names.is_empty(), "panel {} selects no metric: {expr}", panel["title"]);
            assert!(
                names.without_instance.is_empty(),
                "panel {}: {:?} not limited to $instance: {expr}",
                panel["title"],
                names.without_instance
            );
            for name in names.names {
                if cluster.is_none() && CLUSTER_PREFIXES.iter().any(|p| name.starts_with(p)) {
                    continue;
                }
                assert!(
                    exported.contains(&name),
                    "panel {} queries {name}, which Herald does not export",
                    panel["title"]
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} expressions");
}

#[test]
fn metrics_switched_off_answer_404() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_with(dir.path(), &[("HERALD_METRICS_ENABLED", "false")]);
    let (status, body) = h.get("/metrics");
    assert_eq!(status, 404, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert!(error["error"].is_object() || error["error"].is_string(), "{body}");
}

#[test]
fn dashboard_is_well_formed_and_uses_the_provisioned_datasource() {
    let sources = yaml("grafana/provisioning/datasources/herald.yml");
    assert_eq!(sources["apiVersion"], 1);
    let uids: HashSet<&str> = sources["datasources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert_eq!(d["type"], "prometheus");
            assert!(d["url"].as_str().is_some_and(|u| u.starts_with("http")), "{d}");
            d["uid"].as_str().unwrap()
        })
        .collect();
    assert!(!uids.is_empty());

    let providers = yaml("grafana/provisioning/dashboards/herald.yml");
    assert_eq!(providers["apiVersion"], 1);
    let provider = &providers["providers"][0];
    assert_eq!(provider["type"], "file");
    assert!(provider["options"]["path"].as_str().is_some_and(|p| !p.is_empty()), "{provider}");

    let d = dashboard();
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()));
    // The variables: a Prometheus datasource of any uid (the provisioned one by default), and
    // the instances it scrapes, all by default.
    let vars = d["templating"]["list"].as_array().unwrap();
    let var = |name: &str| vars.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no ${name} variable"));
    let ds = var("datasource");
    assert_eq!((ds["type"].as_str(), ds["query"].as_str()), (Some("datasource"), Some("prometheus")), "{ds}");
    let default = ds["current"]["value"].as_str().unwrap_or_default();
    assert!(uids.contains(default), "the datasource variable defaults to {default}, which is not provisioned");
    let instance = var("instance");
    assert_eq!(instance["type"], "query", "{instance}");
    assert_eq!(instance["datasource"], serde_json::json!({"type": "prometheus", "uid": "${datasource}"}));
    let query = instance["query"]["query"].as_str().or(instance["query"].as_str()).unwrap_or_default();
    assert!(query.starts_with("label_values(herald_") && query.ends_with(", instance)"), "{query}");
    assert_eq!((instance["includeAll"].as_bool(), instance["multi"].as_bool()), (Some(true), Some(true)));
    assert!(d.get("__inputs").is_none(), "file provisioning ignores __inputs: use the variable");
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    let panels = d["panels"].as_array().unwrap();
    let mut ids = HashSet::new();
    let mut cells = HashSet::new();
    let mut titles = Vec::new();
    for p in panels {
        let title = p["title"].as_str().unwrap();
        titles.push(title.to_owned());
        assert!(ids.insert(p["id"].as_u64().expect("numeric id")), "panel id of {title} repeats");
        // Through the variable, never a fixed uid: an import into a Grafana whose Prometheus
        // has another uid works as well as provisioning from files (which ignores `__inputs`).
        for ds in
            std::iter::once(&p["datasource"]).chain(p["targets"].as_array().unwrap().iter().map(|t| &t["datasource"]))
        {
            assert_eq!(ds, &serde_json::json!({"type": "prometheus", "uid": "${datasource}"}), "{title}");
        }
        let g = &p["gridPos"];
        let (x, y, w, h) =
            (g["x"].as_u64().unwrap(), g["y"].as_u64().unwrap(), g["w"].as_u64().unwrap(), g["h"].as_u64().unwrap());
        assert!(w >= 1 && h >= 1 && x + w <= 24, "{title}: gridPos {g} outside the 24 columns");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{title} overlaps another panel at ({cx}, {cy})");
            }
        }
    }
    // The panels the operators asked for.
    for wanted in [
        "Ingest rate by event",
        "Attempts by result",
        "Success ratio over time",
        "Attempt latency",
        "Delivery lag",
        "Pending deliveries",
        "Dead letters",
        "Circuit breakers",
        "Log append latency",
        "Log size",
        "API requests by route",
        "API errors by route",
    ] {
        assert!(titles.iter().any(|t| t == wanted), "no panel {wanted}");
    }
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = repo("grafana/prometheus");
    let (ok, said) = promtool(&["check", "rules", "alerts.yml"], &dir, None);
    assert!(ok, "promtool check rules:\n{said}");
    let (ok, said) = promtool(&["test", "rules", "alerts.test.yml"], &dir, None);
    assert!(ok, "promtool test rules:\n{said}");
    // Each alert has a unit test.
    let rules = yaml("grafana/prometheus/alerts.yml");
    let tests = std::fs::read_to_string(dir.join("alerts.test.yml")).unwrap();
    let alerts: Vec<&str> =
        rules["groups"][0]["rules"].as_array().unwrap().iter().map(|r| r["alert"].as_str().unwrap()).collect();
    assert!(alerts.len() >= 4, "{alerts:?}");
    for alert in alerts {
        assert!(tests.contains(&format!("alertname: {alert}")), "{alert} has no unit test");
    }
    // promtool's config check accepts the example scrape configuration with its rules.
    let (ok, said) = promtool(&["check", "config", "prometheus.yml"], &dir, None);
    assert!(ok, "promtool check config:\n{said}");
}

#[test]
fn json_logs_carry_attempt_spans_and_never_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let admin = "planted-admin-token-6b1e0c7d2f";
    let metrics_token = "planted-metrics-token-93ad51";
    let secret = "whsec_cGxhbnRlZFNlY3JldDAxMjM0NTY3ODlhYmNkZWY=";
    let header_token = "planted-header-token-4c2e9a";
    let h = Herald::serve(
        dir.path(),
        &["--dev"],
        &[
            ("HERALD_ADMIN_TOKEN", admin),
            ("HERALD_METRICS_TOKEN", metrics_token),
            ("HERALD_LOG_FORMAT", "json"),
            ("HERALD_INITIAL_BACKOFF", "10ms"),
            ("RUST_LOG", "debug"),
        ],
    );
    h.wait_ready();
    let a = h.json("POST", "/api/v1/accounts", Some(admin), &json!({"name": "LeadNest"}));
    assert_eq!(a.status, 201, "{}", a.text);
    let key = a.body["api_key"].as_str().unwrap().to_owned();
    let r = Receiver::start();
    r.answer(|hit| if hit.header("x-webhook-attempt") == Some("1") { Reply::status(503) } else { Reply::ok() });
    let id = create_webhook(
        &h,
        &key,
        json!({"url": r.url("/in"), "events": ["lead.*"], "secret": secret,
               "headers": {"Authorization": format!("Bearer {header_token}")}}),
    );
    let rotated = h.json("POST", &format!("/api/v1/webhooks/{id}/rotate-secret"), Some(&key), &Value::Null);
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let new_secret = rotated.body["secret"].as_str().unwrap().to_owned();
    for i in 0..3 {
        let a = h.json("POST", "/api/v1/events", Some(&key), &json!({"event": "lead.qualified", "data": {"i": i}}));
        assert_eq!(a.status, 202, "{}", a.text);
    }
    wait_for("three deliveries", Duration::from_secs(20), || r.accepted().len() >= 3);
    // Bad credentials are logged about, never echoed.
    let bad = h.json("GET", "/api/v1/webhooks", Some("hk_planted-wrong-key-77"), &Value::Null);
    assert_eq!(bad.status, 401);
    let metrics = h.send("GET", "/metrics", Some(metrics_token), &[], None);
    assert_eq!(metrics.status, 200);

    let logs = h.stderr();
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
        .collect();
    assert!(lines.iter().all(|l| l["level"].is_string() && l["timestamp"].is_string()));
    let failed: Vec<&Value> = lines.iter().filter(|l| l["fields"]["message"] == "attempt failed, will retry").collect();
    assert_eq!(failed.len(), 3, "one failed first attempt per event:\n{logs}");
    for l in &failed {
        let span = &l["span"];
        assert_eq!(span["name"], "attempt", "{l}");
        assert_eq!(span["webhook_id"], id.as_str(), "{l}");
        assert!(span["delivery_id"].as_str().is_some_and(|d| d.starts_with("dlv_")), "{l}");
        assert_eq!(span["attempt"], 1, "{l}");
        assert_eq!(l["fields"]["status"], 503, "{l}");
    }
    let delivered = lines.iter().filter(|l| l["fields"]["message"] == "delivered").count();
    assert_eq!(delivered, 3, "debug logs show each success");

    for (what, planted) in [
        ("admin token", admin),
        ("metrics token", metrics_token),
        ("webhook secret", secret),
        ("rotated secret", new_secret.as_str()),
        ("custom header token", header_token),
        ("API key", key.as_str()),
        ("wrong key", "planted-wrong-key-77"),
    ] {
        assert!(!logs.contains(planted), "the {what} is in the logs");
        assert!(!metrics.text.contains(planted), "the {what} is in /metrics");
    }
}

#[test]
fn rust_log_sets_what_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let quiet = Herald::serve(dir.path(), &["--dev"], &[("HERALD_ADMIN_TOKEN", ADMIN), ("RUST_LOG", "warn")]);
    quiet.wait_ready();
    let dir2 = tempfile::tempdir().unwrap();
    let chatty = Herald::serve(dir2.path(), &["--dev"], &[("HERALD_ADMIN_TOKEN", ADMIN), ("RUST_LOG", "info")]);
    chatty.wait_ready();
    // Human-readable by default: "<time>  INFO <target>: <message>".
    wait_for("the ready line", Duration::from_secs(10), || chatty.stderr().contains(" INFO "));
    assert!(chatty.stderr().lines().any(|l| l.contains(" INFO ") && l.contains("ready")), "{}", chatty.stderr());
    assert!(!quiet.stderr().contains(" INFO "), "RUST_LOG=warn still logged info:\n{}", quiet.stderr());
}
