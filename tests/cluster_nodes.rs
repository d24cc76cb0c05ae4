//! Herald nodes on one PostgreSQL cluster this test starts (a primary and a synchronous
//! standby on ports the OS picks): what one node acknowledges, another serves; a node killed
//! with SIGKILL comes back from the database; nodes starting together issue one admin token.

mod common;

use common::pg::Cluster;
use common::receiver::{Receiver, Reply};
use common::{wait_for, Herald, ADMIN};
use serde_json::json;
use std::time::Duration;

/// A node on `store` in `dir` (its data directory: a cache of the database's log).
fn node(dir: &std::path::Path, store: &str, extra: &[(&str, &str)]) -> Herald {
    let mut env =
        vec![("HERALD_STORE", store), ("HERALD_ADMIN_TOKEN", ADMIN), ("HERALD_SEAL_KEY", common::pg::seal_key())];
    env.extend_from_slice(extra);
    let h = Herald::serve(dir, &["--dev"], &env);
    h.wait_ready();
    h
}

/// The webhooks' own signing secret, so the test can check every node signs with it.
const SECRET: &str = "whsec-cluster-test-0123456789";

fn cluster(test: &str, standbys: usize) -> Option<Cluster> {
    common::pg::available(test).then(|| Cluster::start(standbys))
}

#[test]
fn what_one_node_acknowledges_another_serves_and_a_killed_node_comes_back_from_the_database() {
    let Some(c) = cluster("what_one_node_acknowledges", 1) else { return };
    let url = c.url();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = node(dir_a.path(), &url, &[]);
    assert!(a.stderr().contains("commits wait for a synchronous standby"), "{}", a.stderr());
    let r = Receiver::start();
    r.answer(|_| Reply::ok());
    let created = a.json("POST", "/api/v1/accounts", Some(ADMIN), &json!({"name": "AstroLeads"}));
    assert_eq!(created.status, 201, "{}", created.text);
    let key = created.body["api_key"].as_str().unwrap().to_owned();
    let hook = common::create_webhook(&a, &key, json!({"url": r.url("/in"), "events": ["lead.*"]}));
    let sent = a.json("POST", "/api/v1/events", Some(&key), &json!({"event": "lead.qualified", "data": {"n": 1}}));
    assert_eq!(sent.status, 202, "{}", sent.text);
    let event = sent.body["id"].as_str().unwrap().to_owned();
    wait_for("the delivery", Duration::from_secs(10), || r.count() == 1);
    assert_eq!(r.hits()[0].json()["id"], event);

    // A second node with an empty data directory folds the database's log: the same
    // account, key, webhook and event, under the same public ids.
    let b = node(dir_b.path(), &url, &[]);
    let got = b.send("GET", &format!("/api/v1/webhooks/{hook}"), Some(&key), &[], None);
    assert_eq!(got.status, 200, "{}", got.text);
    let got = b.send("GET", &format!("/api/v1/events/{event}"), Some(&key), &[], None);
    assert_eq!(got.status, 200, "{}", got.text);

    // What node A appends next reaches node B without a restart.
    let second = a.json("POST", "/api/v1/webhooks", Some(&key), &json!({"url": r.url("/two"), "events": ["x"]}));
    assert_eq!(second.status, 201, "{}", second.text);
    let second = second.body["id"].as_str().unwrap().to_owned();
    wait_for("node B to see the new webhook", Duration::from_secs(2), || {
        b.send("GET", &format!("/api/v1/webhooks/{second}"), Some(&key), &[], None).status == 200
    });

    // Killed with SIGKILL, node A comes back: what it acknowledged is in the database.
    a.signal(libc::SIGKILL);
    a.wait_exit(Duration::from_secs(10));
    let sent = b.json("POST", "/api/v1/events", Some(&key), &json!({"event": "lead.lost", "data": {"n": 2}}));
    assert_eq!(sent.status, 202, "{}", sent.text);
    let a = node(dir_a.path(), &url, &[]);
    let listed = a.send("GET", "/api/v1/events?limit=10", Some(&key), &[], None);
    assert_eq!(listed.status, 200, "{}", listed.text);
    let names: Vec<&str> =
        listed.body["data"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(names, ["lead.lost", "lead.qualified"], "{}", listed.text);
    // Written by both nodes, in one log: one record after another, no gap.
    let p = c.primary();
    assert_eq!(p.psql("select count(*) = max(seq) from herald.records"), "t");
}

/// Events for `hooks` webhooks (one path each) sent alternately through `nodes`; returns
/// how many deliveries are owed.
fn ingest_through(nodes: &[&Herald], key: &str, events: usize) -> usize {
    for i in 0..events {
        let sent = nodes[i % nodes.len()].json(
            "POST",
            "/api/v1/events",
            Some(key),
            &json!({"event": "lead.qualified", "data": {"i": i}}),
        );
        assert_eq!(sent.status, 202, "{}", sent.text);
    }
    events
}

#[test]
fn each_webhook_is_delivered_by_the_one_node_that_owns_it_and_a_dead_nodes_webhooks_move() {
    let Some(c) = cluster("each_webhook_is_delivered_by_the_one_node", 1) else { return };
    let url = c.url();
    let ttl = [("HERALD_OWNERSHIP_TTL", "2s")];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = node(dir_a.path(), &url, &ttl);
    let b = node(dir_b.path(), &url, &ttl);
    let r = Receiver::start();
    r.answer(|_| Reply::ok());
    let created = a.json("POST", "/api/v1/accounts", Some(ADMIN), &json!({"name": "LeadNest"}));
    let key = created.body["api_key"].as_str().unwrap().to_owned();
    let hooks = 10;
    let ids: Vec<String> = (0..hooks)
        .map(|i| {
            let body = json!({"url": r.url(&format!("/h{i}")), "events": ["lead.qualified"], "secret": SECRET});
            common::create_webhook(&a, &key, body)
        })
        .collect();
    // Both nodes hold a share of the partitions (each node's share is half, at the next round).
    wait_for("both nodes to hold leases", Duration::from_secs(10), || {
        let owners = c.primary().psql("select count(distinct owner) from herald.leases where expires_at > now()");
        owners == "2"
    });
    let events = ingest_through(&[&a, &b], &key, 20);
    let owed = events * hooks;
    wait_for("every delivery", Duration::from_secs(20), || r.distinct().len() >= owed);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(r.count(), owed, "each delivery sent once, by its owner alone");

    // A test send goes out from whichever node is asked, owner or not, and records nothing.
    for h in [&a, &b] {
        let tested = h.json("POST", &format!("/api/v1/webhooks/{}/test", ids[0]), Some(&key), &json!({}));
        assert_eq!(tested.status, 200, "{}", tested.text);
        assert_eq!(tested.body["success"], true, "{}", tested.text);
    }
    wait_for("both test sends", Duration::from_secs(5), || r.count() == owed + 2);
    let owed = owed + 2;

    // Each node's metrics show its own share; summed over the nodes, every partition once.
    let owned = |h: &Herald| h.metric("herald_cluster_partitions_owned");
    wait_for("the shares to settle at half each", Duration::from_secs(10), || owned(&a) == 64 && owned(&b) == 64);
    let gained_before = b.metric("herald_cluster_partitions_gained_total");

    // Node A dies: its webhooks move to B within the TTL and what it was owed goes out.
    a.signal(libc::SIGKILL);
    a.wait_exit(Duration::from_secs(10));
    let started = std::time::Instant::now();
    ingest_through(&[&b], &key, 5);
    let owed = owed + 5 * hooks;
    wait_for("the dead node's webhooks to be delivered by the live one", Duration::from_secs(15), || {
        r.distinct().len() >= owed
    });
    assert!(started.elapsed() < Duration::from_secs(8), "took over after {:?}", started.elapsed());
    assert_eq!(r.count(), owed, "nothing sent twice");
    // Whichever node sent it, each delivery is signed with the webhook's secret: every node
    // opens what another sealed.
    let unsigned = r.hits().iter().filter(|h| !h.signed_with(SECRET)).count();
    assert_eq!(unsigned, 0, "deliveries not signed with the webhook's secret");
    // B's metrics count the handover: it holds every partition, gained A's 64.
    assert_eq!(b.metric("herald_cluster_partitions_owned"), 128);
    assert_eq!(b.metric("herald_cluster_partitions_gained_total") - gained_before, 64);
    assert_eq!(b.metric(r#"herald_cluster_lease_renewals_total{result="failed"}"#), 0);
}

#[test]
fn a_commit_no_standby_confirms_answers_503_outcome_unknown_and_the_retry_finds_it() {
    let Some(mut c) = cluster("a_commit_no_standby_confirms", 1) else { return };
    let url = c.url();
    let dir = tempfile::tempdir().unwrap();
    let h = node(dir.path(), &url, &[("HERALD_STORE_TIMEOUT", "2s")]);
    let created = h.json("POST", "/api/v1/accounts", Some(ADMIN), &json!({"name": "AutoReach"}));
    assert_eq!(created.status, 201, "{}", created.text);
    let key = created.body["api_key"].as_str().unwrap().to_owned();

    // The only synchronous standby goes: the commit waits for it, and the caller hears at
    // store_timeout that the outcome is unknown — not a hang, not a success.
    c.servers[1].kill();
    // SIGKILL reaches the standby's postmaster; its WAL receiver lives on until it notices.
    wait_for("the primary to lose its standby", Duration::from_secs(10), || {
        c.primary().psql("select count(*) from pg_stat_replication") == "0"
    });
    let body = serde_json::to_vec(&json!({"event": "email.bounced", "data": {"to": "x@example.com"}})).unwrap();
    let headers = [("Content-Type", "application/json"), ("Idempotency-Key", "bounce-1")];
    let started = std::time::Instant::now();
    let sent = h.send("POST", "/api/v1/events", Some(&key), &headers, Some(&body));
    assert_eq!(sent.status, 503, "{}", sent.text);
    assert_eq!(sent.body["error"]["code"], "outcome_unknown", "{}", sent.text);
    assert!(started.elapsed() < Duration::from_secs(8), "answered after {:?}", started.elapsed());
    wait_for("readiness to say the store fails", Duration::from_secs(5), || h.get("/readyz").0 == 503);

    // The standby comes back: the commit completes after all, readiness recovers, and the
    // caller's retry with the same key finds the event it could not be told about.
    c.servers[1].start();
    wait_for("readiness to recover", Duration::from_secs(20), || h.get("/readyz").0 == 200);
    let again = h.send("POST", "/api/v1/events", Some(&key), &headers, Some(&body));
    assert!(again.status == 200 || again.status == 202, "{}", again.text);
    let listed = h.send("GET", "/api/v1/events?limit=10", Some(&key), &[], None);
    let events = listed.body["data"].as_array().unwrap().clone();
    assert_eq!(events.len(), 1, "one event, not two: {}", listed.text);
    assert_eq!(events[0]["id"], again.body["id"], "{}", again.text);
}

#[test]
fn limits_idempotency_and_revocations_hold_across_nodes() {
    let Some(c) = cluster("limits_idempotency_and_revocations_hold_across_nodes", 1) else { return };
    let url = c.url();
    let limit = [("HERALD_MAX_WEBHOOKS_PER_ACCOUNT", "3")];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = std::sync::Arc::new(node(dir_a.path(), &url, &limit));
    let b = std::sync::Arc::new(node(dir_b.path(), &url, &limit));
    let created = a.json("POST", "/api/v1/accounts", Some(ADMIN), &json!({"name": "LeadNest"}));
    let account = created.body["id"].as_str().unwrap().to_owned();
    let key = created.body["api_key"].as_str().unwrap().to_owned();
    wait_for("node B to know the key", Duration::from_secs(2), || {
        b.send("GET", "/api/v1/webhooks", Some(&key), &[], None).status == 200
    });

    // Eight creates at once, half through each node: the account's limit of 3 holds for
    // the cluster, not per node.
    let creates: Vec<_> = (0..8)
        .map(|i| {
            let (h, key) = (if i % 2 == 0 { a.clone() } else { b.clone() }, key.clone());
            std::thread::spawn(move || {
                let body = json!({"url": format!("http://127.0.0.1:9/{i}"), "events": ["lead.qualified"]});
                h.json("POST", "/api/v1/webhooks", Some(&key), &body).status
            })
        })
        .collect();
    let statuses: Vec<u16> = creates.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 3, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 201 || *s == 409), "{statuses:?}");

    // One Idempotency-Key sent through both nodes at once: one event.
    let sends: Vec<_> = (0..6)
        .map(|i| {
            let (h, key) = (if i % 2 == 0 { a.clone() } else { b.clone() }, key.clone());
            std::thread::spawn(move || {
                let body = serde_json::to_vec(&json!({"event": "lead.qualified", "data": {"lead": 7}})).unwrap();
                let headers = [("Content-Type", "application/json"), ("Idempotency-Key", "lead-7")];
                let sent = h.send("POST", "/api/v1/events", Some(&key), &headers, Some(&body));
                assert!(sent.status == 200 || sent.status == 202, "{}", sent.text);
                sent.body["id"].as_str().unwrap().to_owned()
            })
        })
        .collect();
    let ids: std::collections::HashSet<String> = sends.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");

    // A webhook deleted and a key revoked through node A stop working through node B
    // within 2 s.
    let listed = b.send("GET", "/api/v1/webhooks", Some(&key), &[], None);
    let hook = listed.body["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(a.send("DELETE", &format!("/api/v1/webhooks/{hook}"), Some(&key), &[], None).status, 204);
    wait_for("node B to forget the webhook", Duration::from_secs(2), || {
        b.send("GET", &format!("/api/v1/webhooks/{hook}"), Some(&key), &[], None).status == 404
    });
    let keys = a.send("GET", &format!("/api/v1/accounts/{account}/keys"), Some(ADMIN), &[], None);
    let key_id = keys.body["data"][0]["id"].as_str().unwrap().to_owned();
    let revoked = a.send("DELETE", &format!("/api/v1/accounts/{account}/keys/{key_id}"), Some(ADMIN), &[], None);
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    wait_for("node B to refuse the revoked key", Duration::from_secs(2), || {
        b.send("GET", "/api/v1/webhooks", Some(&key), &[], None).status == 401
    });
}

#[test]
fn admin_token_reset_against_a_running_cluster_replaces_the_token_on_every_node() {
    let Some(c) = cluster("admin_token_reset_against_a_running_cluster", 0) else { return };
    let url = c.url();
    // Nodes without a configured admin token: the cluster issues one, stored hashed.
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let env = [("HERALD_STORE", url.as_str()), ("HERALD_SEAL_KEY", common::pg::seal_key())];
    let a = Herald::serve(dir_a.path(), &["--dev"], &env);
    a.wait_ready();
    let b = Herald::serve(dir_b.path(), &["--dev"], &env);
    b.wait_ready();
    let first = a.stdout.lock().unwrap().lines().map(str::trim).find(|l| l.starts_with("hadm_")).unwrap().to_owned();
    let accounts = |h: &Herald, token: &str| h.send("GET", "/api/v1/accounts", Some(token), &[], None).status;
    wait_for("the first token to work on both nodes", Duration::from_secs(2), || {
        accounts(&a, &first) == 200 && accounts(&b, &first) == 200
    });

    // Reset beside the running nodes, through the database: the token alone on stdout.
    let cwd = tempfile::tempdir().unwrap();
    let (code, out, err) = common::run(cwd.path(), &["admin-token", "reset"], &env);
    assert_eq!(code, 0, "{err}");
    let second = out.trim().to_owned();
    assert!(second.starts_with("hadm_") && second != first, "{out}");
    assert!(!err.contains(&second), "the token is not logged: {err}");
    wait_for("the new token to work and the old to fail on both nodes", Duration::from_secs(2), || {
        [&a, &b].iter().all(|h| accounts(h, &second) == 200 && accounts(h, &first) == 401)
    });
    // Gapless: the reset is one record after the nodes' own.
    let p = c.primary();
    assert_eq!(p.psql("select count(*) = max(seq) from herald.records"), "t");
}

#[test]
fn verify_with_a_store_checks_the_database_and_a_stopped_nodes_tree_against_it() {
    let Some(c) = cluster("verify_with_a_store", 0) else { return };
    let url = c.url();
    let (dir, empty) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut h = node(dir.path(), &url, &[]);
    let created = h.json("POST", "/api/v1/accounts", Some(ADMIN), &json!({"name": "LeadNest"}));
    let key = created.body["api_key"].as_str().unwrap().to_owned();
    for i in 0..3 {
        let sent = h.json("POST", "/api/v1/events", Some(&key), &json!({"event": "new_lead", "data": {"i": i}}));
        assert_eq!(sent.status, 202, "{}", sent.text);
    }
    let verify = |dir: &std::path::Path| {
        let env = [("HERALD_STORE", url.as_str()), ("HERALD_SEAL_KEY", common::pg::seal_key())];
        let (code, out, err) = common::run(dir, &["verify"], &env);
        (code, format!("{out}{err}"))
    };
    // On a live cluster, the database alone (a running node's tree is its own to hold).
    let (code, out) = verify(empty.path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no node tree") && out.trim_end().ends_with("clean"), "{out}");
    h.signal(libc::SIGTERM);
    h.wait_exit(Duration::from_secs(20));
    let (code, out) = verify(dir.path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("node tree:") && !out.contains("NOT clean"), "{out}");

    // A record altered in the database: corrupt there, and unlike the node's copy.
    let p = c.primary();
    p.psql("update herald.records set body = overlay(body placing '\\xff'::bytea from 12 for 1) where seq = 2");
    let (code, out) = verify(dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("corrupt record 2"), "{out}");
    assert!(out.contains("records unlike the database's: [2]"), "{out}");
    // A record gone from the database.
    p.psql("delete from herald.records where seq = 3");
    let (code, out) = verify(empty.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("missing records: 1 (first [3])") && out.trim_end().ends_with("NOT clean"), "{out}");
}

/// One request a [`Hanging`] receiver saw: its path, delivery id, when it came, when it
/// ended (answered, or the sender hung up), and whether it was answered 200.
#[derive(Clone, Debug)]
struct Held {
    path: String,
    delivery: String,
    from: std::time::Instant,
    to: std::time::Instant,
    answered: bool,
}

/// A receiver on raw sockets that holds each path's first request for `hold` — unless the
/// sender hangs up first, which it notices (actix-web's handlers run on after a hang-up, so
/// they would count an attempt Herald cut off as still in flight) — and answers the rest at
/// once.
struct Hanging {
    port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Held>>>,
    /// Requests read so far (held ones included).
    begun: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Hanging {
    fn start(hold: Duration) -> Hanging {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: std::sync::Arc<std::sync::Mutex<Vec<Held>>> = Default::default();
        let firsts = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
        let begun: std::sync::Arc<std::sync::atomic::AtomicUsize> = Default::default();
        let (log, counting) = (seen.clone(), begun.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().map_while(Result::ok) {
                let (log, firsts, counting) = (log.clone(), firsts.clone(), counting.clone());
                std::thread::spawn(move || {
                    let mut conn = conn;
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    loop {
                        // One request: the head, then Content-Length bytes of body.
                        let head_end = loop {
                            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break at + 4;
                            }
                            match conn.read(&mut chunk) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                        let header =
                            |name: &str| head.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_owned());
                        let length: usize = header("content-length:").and_then(|v| v.parse().ok()).unwrap_or(0);
                        while buf.len() < head_end + length {
                            match conn.read(&mut chunk) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..head_end + length);
                        let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
                        let delivery = header("x-webhook-delivery-id:").unwrap_or_default();
                        let from = std::time::Instant::now();
                        counting.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let mut answered = true;
                        if firsts.lock().unwrap().insert(path.clone()) {
                            // Held: until `hold` passes, or the sender hangs up.
                            conn.set_read_timeout(Some(hold)).unwrap();
                            if let Ok(0) = conn.read(&mut chunk) {
                                answered = false;
                            }
                            conn.set_read_timeout(None).unwrap();
                        }
                        let to = std::time::Instant::now();
                        log.lock().unwrap().push(Held { path, delivery, from, to, answered });
                        if !answered || conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Hanging { port, seen, begun }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn seen(&self) -> Vec<Held> {
        self.seen.lock().unwrap().clone()
    }

    /// The most requests on `path` it held at once (a request ends when answered, or when
    /// its sender hung up).
    fn most_at_once(&self, path: &str) -> usize {
        let held: Vec<Held> = self.seen().into_iter().filter(|h| h.path == path).collect();
        held.iter().map(|h| held.iter().filter(|o| o.from <= h.from && h.from < o.to).count()).max().unwrap_or(0)
    }
}

#[test]
fn a_webhook_handed_over_mid_attempt_never_has_two_attempts_at_once() {
    let Some(c) = cluster("a_webhook_handed_over_mid_attempt", 0) else { return };
    let url = c.url();
    let env = [("HERALD_OWNERSHIP_TTL", "2s"), ("HERALD_MAX_WEBHOOKS_PER_ACCOUNT", "16")];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(dir_a.path(), &url, &env);
    // Each webhook's first attempt is held far longer than a handover takes.
    let r = Hanging::start(Duration::from_secs(6));
    let created = a.json("POST", "/api/v1/accounts", Some(ADMIN), &json!({"name": "AstroLeads"}));
    let key = created.body["api_key"].as_str().unwrap().to_owned();
    let hooks = 16;
    for i in 0..hooks {
        let body = json!({"url": r.url(&format!("/o{i}")), "events": ["lead.*"], "ordered": true, "timeout": 10});
        common::create_webhook(&a, &key, body);
    }
    ingest_through(&[&a], &key, 2);
    wait_for("every webhook's first attempt held", Duration::from_secs(10), || {
        r.begun.load(std::sync::atomic::Ordering::SeqCst) >= hooks
    });
    // A second node arrives: node A lets half its partitions go — in two steps, cutting
    // what is still on the wire before node B may take them.
    let b = node(dir_b.path(), &url, &env);
    wait_for("every delivery made", Duration::from_secs(30), || {
        (0..hooks).all(|i| {
            let path = format!("/o{i}");
            let got: std::collections::HashSet<String> =
                r.seen().into_iter().filter(|h| h.path == path && h.answered).map(|h| h.delivery).collect();
            got.len() == 2
        })
    });
    let owners = c.primary().psql("select count(distinct owner) from herald.leases where expires_at > now()");
    assert_eq!(owners, "2", "node B took a share");
    for i in 0..hooks {
        let path = format!("/o{i}");
        assert_eq!(r.most_at_once(&path), 1, "{path}: two attempts at once across the handover: {:?}", r.seen());
    }
    // Some webhooks moved while their first attempt was held: node A cut it off.
    let cut = r.seen().iter().filter(|h| !h.answered).count();
    assert!(cut > 0, "no attempt was handed over mid-flight (the webhooks all stayed on node A)");
    drop(b);
}

/// The ids of the events a node lists for `key`, newest first.
fn listed_events(h: &Herald, key: &str) -> Vec<String> {
    let listed = h.send("GET", "/api/v1/events?limit=100", Some(key), &[], None);
    assert_eq!(listed.status, 200, "{}", listed.text);
    listed.body["data"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn retention_removes_finished_history_from_the_database_and_from_every_nodes_fold() {
    let Some(c) = cluster("retention_removes_finished_history", 0) else { return };
    let url = c.url();
    let short = [
        ("HERALD_RETENTION", "1s"),
        ("HERALD_DEAD_RETENTION", "1s"),
        ("HERALD_IDEMPOTENCY_WINDOW", "1s"),
        ("HERALD_OWNERSHIP_TTL", "2s"),
    ];
    // Only A runs retention: the others remove history by folding A's removal records.
    let compacting: Vec<(&str, &str)> = [&short[..], &[("HERALD_COMPACTION_INTERVAL", "200ms")]].concat();
    let folding: Vec<(&str, &str)> = [&short[..], &[("HERALD_COMPACTION_INTERVAL", "1h")]].concat();
    let (dir_a, dir_b, dir_c) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = node(dir_a.path(), &url, &compacting);
    let mut b = node(dir_b.path(), &url, &folding);
    let r = Receiver::start();
    r.answer(|_| Reply::ok());
    let created = a.json("POST", "/api/v1/accounts", Some(ADMIN), &json!({"name": "AutoReach"}));
    let key = created.body["api_key"].as_str().unwrap().to_owned();
    common::create_webhook(&a, &key, json!({"url": r.url("/in"), "events": ["lead.qualified"]}));
    for i in 0..20 {
        let through = if i % 2 == 0 { &a } else { &b };
        let idem = format!("retention-{i}");
        let body = json!({"event": "lead.qualified", "data": {"i": i}}).to_string();
        let headers = [("Content-Type", "application/json"), ("Idempotency-Key", idem.as_str())];
        let sent = through.send("POST", "/api/v1/events", Some(&key), &headers, Some(body.as_bytes()));
        assert_eq!(sent.status, 202, "{}", sent.text);
    }
    wait_for("the first deliveries", Duration::from_secs(10), || r.distinct().len() >= 20);
    let p = c.primary();
    let before: u64 = p.psql("select count(*) from herald.records").parse().unwrap();

    // B stops; what A takes next is removed too before B comes back, so B's fold is older
    // than what the cluster keeps.
    b.signal(libc::SIGTERM);
    b.wait_exit(Duration::from_secs(20));
    ingest_through(&[&a], &key, 10);
    wait_for("the later deliveries", Duration::from_secs(10), || r.distinct().len() >= 30);

    // Finished history goes from the database: every event but the one whose attempt set the
    // webhook's current status (kept, as on one node), with the records about its delivery.
    wait_for("retention to empty the log", Duration::from_secs(15), || listed_events(&a, &key).len() == 1);
    let kept = listed_events(&a, &key);
    let after: u64 = p.psql("select count(*) from herald.records").parse().unwrap();
    assert!(after < 15 && after < before, "records before {before}, after {after}");
    assert_ne!(p.psql("select count(*) from herald.removed"), "0");

    // B folds the database afresh and answers as A does; so does a node that never ran.
    b = node(dir_b.path(), &url, &folding);
    assert!(b.stderr().contains("folding the database's log afresh"), "{}", b.stderr());
    assert_eq!(listed_events(&b, &key), kept);
    let fresh = node(dir_c.path(), &url, &folding);
    assert_eq!(listed_events(&fresh, &key), kept);
    // One more event, delivered once, whichever node owns the webhook now.
    let sent = fresh.json("POST", "/api/v1/events", Some(&key), &json!({"event": "lead.qualified", "data": {}}));
    assert_eq!(sent.status, 202, "{}", sent.text);
    wait_for("the last delivery", Duration::from_secs(10), || r.distinct().len() >= 31);
    assert_eq!(r.distinct().len(), 31);

    // With three nodes up, one of them removes each step's history and the others remove
    // the same from their folds as they fold its record: all three list the same events.
    ingest_through(&[&fresh, &a, &b], &key, 6);
    wait_for("the newest deliveries", Duration::from_secs(10), || r.distinct().len() >= 37);
    wait_for("every node to list the same single event", Duration::from_secs(15), || {
        let on_a = listed_events(&a, &key);
        on_a.len() == 1 && on_a == listed_events(&b, &key) && on_a == listed_events(&fresh, &key)
    });

    // Every node's fold, stopped, is the database's record for record; the gaps are
    // retention's, not losses.
    drop(fresh);
    for (h, dir) in [(&mut a, &dir_a), (&mut b, &dir_b)] {
        h.signal(libc::SIGTERM);
        h.wait_exit(Duration::from_secs(20));
        let env = [("HERALD_STORE", url.as_str()), ("HERALD_SEAL_KEY", common::pg::seal_key())];
        let (code, out, err) = common::run(dir.path(), &["verify"], &env);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("removed by retention: ") && out.contains("node tree:"), "{out}");
        assert!(!out.contains("missing records") && out.trim_end().ends_with("clean"), "{out}");
    }
}

#[test]
fn migrate_moves_a_stopped_single_node_into_a_cluster_with_its_history_and_pending_deliveries() {
    let Some(c) = cluster("migrate_moves_a_stopped_single_node", 0) else { return };
    let url = c.url();
    let (single, dir_a) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let r = Receiver::start();
    let later_ok = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = later_ok.clone();
    // `/later` refuses until the test says so: its deliveries are pending when the node stops.
    r.answer(move |hit| match hit.path.as_str() {
        "/later" if !flag.load(std::sync::atomic::Ordering::SeqCst) => Reply::status(503),
        _ => Reply::ok(),
    });
    let env = [
        ("HERALD_ADMIN_TOKEN", ADMIN),
        ("HERALD_SEAL_KEY", common::pg::seal_key()),
        ("HERALD_RETENTION", "1s"),
        ("HERALD_COMPACTION_INTERVAL", "200ms"),
        ("HERALD_INITIAL_BACKOFF", "300ms"),
        ("HERALD_MAX_BACKOFF", "1s"),
        ("HERALD_BREAKER_THRESHOLD", "1000"),
    ];
    let mut one = Herald::serve(single.path(), &["--dev"], &env);
    one.wait_ready();
    let created = one.json("POST", "/api/v1/accounts", Some(ADMIN), &json!({"name": "LeadNest"}));
    let key = created.body["api_key"].as_str().unwrap().to_owned();
    let body =
        |path: &str, event: &str| json!({"url": r.url(path), "events": [event], "secret": SECRET, "max_retries": 20});
    let done_hook = common::create_webhook(&one, &key, body("/ok", "lead.qualified"));
    let later_hook = common::create_webhook(&one, &key, body("/later", "email.bounced"));
    let send = |h: &Herald, event: &str, i: usize| {
        let sent = h.json("POST", "/api/v1/events", Some(&key), &json!({"event": event, "data": {"i": i}}));
        assert_eq!(sent.status, 202, "{}", sent.text);
        sent.body["id"].as_str().unwrap().to_owned()
    };
    // Finished history the node compacts away (gaps in its numbers), then pending work.
    for i in 0..10 {
        send(&one, "lead.qualified", i);
    }
    wait_for("the first deliveries", Duration::from_secs(10), || r.accepted().len() >= 10);
    wait_for("the node to compact", Duration::from_secs(10), || {
        one.send("GET", "/api/v1/events?limit=100", Some(&key), &[], None).body["data"].as_array().unwrap().len() == 1
    });
    let pending: Vec<String> = (0..3).map(|i| send(&one, "email.bounced", i)).collect();
    wait_for("the pending deliveries to fail once", Duration::from_secs(10), || r.hits_on("/later").len() >= 3);
    let before = one.send("GET", "/api/v1/events?limit=100", Some(&key), &[], None).body["data"].clone();

    // A running node is not moved: its log is locked.
    let from = single.path().join("herald-data");
    let migrate =
        |dir: &std::path::Path| common::run(dir, &["migrate", "--from", from.to_str().unwrap(), "--to", &url], &env);
    let (code, _, err) = migrate(single.path());
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("in use by another process"), "{err}");
    one.signal(libc::SIGTERM);
    one.wait_exit(Duration::from_secs(20));
    let (code, out, err) = migrate(single.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("into the cluster") && out.contains("compacted away"), "{out}");
    // Once only: the cluster is no longer empty.
    let (code, _, err) = migrate(single.path());
    assert_ne!(code, 0);
    assert!(err.contains("already holds a cluster's log"), "{err}");
    // The source is only read, and its log is the database's record for record.
    let (code, out, err) = common::run(single.path(), &["verify", "--store", &url], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("removed by retention: ") && out.trim_end().ends_with("clean"), "{out}");

    // A node on the cluster serves what the single node held, under the same ids, with the
    // same key; the pending deliveries go out once the receiver takes them, under the
    // delivery ids they had.
    let a = node(dir_a.path(), &url, &env[2..]);
    assert_eq!(a.send("GET", "/api/v1/events?limit=100", Some(&key), &[], None).body["data"], before);
    for hook in [&done_hook, &later_hook] {
        let got = a.send("GET", &format!("/api/v1/webhooks/{hook}"), Some(&key), &[], None);
        assert_eq!(got.status, 200, "{}", got.text);
    }
    let tried: std::collections::HashSet<String> = r.hits_on("/later").iter().map(|h| h.delivery_id()).collect();
    assert_eq!(tried.len(), 3);
    later_ok.store(true, std::sync::atomic::Ordering::SeqCst);
    wait_for("the pending deliveries", Duration::from_secs(15), || {
        r.accepted().iter().filter(|h| h.path == "/later").count() >= 3
    });
    let delivered: std::collections::HashSet<String> =
        r.accepted().iter().filter(|h| h.path == "/later").map(|h| h.delivery_id()).collect();
    assert_eq!(delivered, tried, "the same deliveries, not new ones");
    let events: std::collections::HashSet<String> = r
        .accepted()
        .iter()
        .filter(|h| h.path == "/later")
        .map(|h| h.json()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(events, pending.iter().cloned().collect());
    assert!(r.hits_on("/later").iter().all(|h| h.signed_with(SECRET)), "signed with the migrated secret");
    // New events follow the migrated ones.
    let next = send(&a, "lead.qualified", 99);
    let listed = a.send("GET", "/api/v1/events?limit=1", Some(&key), &[], None);
    assert_eq!(listed.body["data"][0]["id"], next);
}

/// The gaps between the requests a webhook's receiver got, in arrival order.
fn gaps(r: &Receiver, path: &str) -> Vec<Duration> {
    r.hits_on(path).windows(2).map(|w| w[1].at - w[0].at).collect()
}

/// The webhooks a node has attempted to deliver (from `metrics_per_webhook`).
fn attempted_by(h: &Herald) -> std::collections::HashSet<String> {
    let (_, text) = h.get("/metrics");
    text.lines()
        .filter(|l| l.starts_with("herald_webhook_delivery_attempts_total{"))
        .filter_map(|l| l.split("webhook_id=\"").nth(1)?.split('"').next().map(str::to_owned))
        .collect()
}

#[test]
fn the_breaker_the_retry_schedule_and_the_rate_limit_hold_across_a_handover() {
    let Some(c) = cluster("the_breaker_the_retry_schedule_and_the_rate_limit", 0) else { return };
    let url = c.url();
    let backoff = Duration::from_millis(300);
    let cooldown = Duration::from_secs(4);
    let env = [
        // A short TTL makes the handover (a quarter of it, and a round) shorter than the
        // rate limit's second.
        ("HERALD_OWNERSHIP_TTL", "1s"),
        ("HERALD_INITIAL_BACKOFF", "300ms"),
        ("HERALD_MAX_BACKOFF", "300ms"),
        ("HERALD_BREAKER_THRESHOLD", "3"),
        ("HERALD_BREAKER_COOLDOWN", "4s"),
        ("HERALD_METRICS_PER_WEBHOOK", "true"),
        ("HERALD_MAX_WEBHOOKS_PER_ACCOUNT", "32"),
    ];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(dir_a.path(), &url, &env);
    let r = Receiver::start();
    r.answer(|hit| if hit.path.starts_with("/f") { Reply::status(500) } else { Reply::ok() });
    let key = common::account(&a, "LeadNest");
    let hooks = 12;
    let (mut failing, mut limited) = (Vec::new(), Vec::new());
    for i in 0..hooks {
        // Ordered, so its attempts go one after another: three failures 300 ms apart open
        // the breaker, the probe may go only 4 s after the third.
        let body = json!({"url": r.url(&format!("/f{i}")), "events": ["lead.*"], "ordered": true, "max_retries": 20});
        failing.push((common::create_webhook(&a, &key, body), format!("/f{i}")));
        // One attempt a second: a handover (a quarter of the TTL between the last attempt
        // of one owner and the first of the next, then the taker's round) can be shorter.
        let body = json!({"url": r.url(&format!("/r{i}")), "events": ["lead.*"], "rate_limit": 1});
        limited.push((common::create_webhook(&a, &key, body), format!("/r{i}")));
    }
    let events = 8;
    ingest_through(&[&a], &key, events);
    wait_for("every failing webhook's breaker open on node A", Duration::from_secs(10), || {
        failing.iter().all(|(id, _)| {
            let w = a.send("GET", &format!("/api/v1/webhooks/{id}"), Some(&key), &[], None);
            w.body["status"]["state"] == "circuit_open"
        })
    });
    // A second node arrives and takes half the partitions while the breakers are open and
    // the rate-limited backlogs drain — just after an attempt of theirs, so that the
    // handover ends well inside their second.
    let third = |(_, p): &(String, String)| r.hits_on(p).len() >= 3;
    wait_for("the third attempt of every rate-limited webhook", Duration::from_secs(10), || limited.iter().all(third));
    let b = node(dir_b.path(), &url, &env);
    wait_for("every event delivered and a probe made", Duration::from_secs(30), || {
        limited.iter().all(|(_, p)| r.hits_on(p).len() >= events)
            && failing.iter().all(|(_, p)| r.hits_on(p).len() >= 4)
    });
    let (on_a, on_b) = (attempted_by(&a), attempted_by(&b));
    let moved =
        |list: &[(String, String)]| list.iter().filter(|(id, _)| on_a.contains(id) && on_b.contains(id)).count();
    assert!(moved(&failing) > 0, "no failing webhook moved mid-schedule: A {on_a:?}, B {on_b:?}");
    assert!(moved(&limited) > 0, "no rate-limited webhook moved mid-backlog: A {on_a:?}, B {on_b:?}");
    // Timer slack: an attempt is never early by more than this.
    let slack = Duration::from_millis(40);
    for (_, path) in &failing {
        let g = gaps(&r, path);
        // Two retries at the backoff, then the breaker's cooldown before the probe — kept
        // by whichever node owned the webhook then.
        assert!(g[..2].iter().all(|d| *d + slack >= backoff), "{path}: retried early: {g:?}");
        assert!(g[2] + slack >= cooldown, "{path}: probed {:?} after the breaker opened: {g:?}", g[2]);
    }
    for (_, path) in &limited {
        let g = gaps(&r, path);
        assert!(g.iter().all(|d| *d + slack >= Duration::from_secs(1)), "{path}: faster than 1/s: {g:?}");
    }
}
