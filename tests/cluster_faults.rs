//! Faults under load, with real servers this test starts: a PostgreSQL primary and two
//! streaming standbys (quorum-synchronous, `ANY 1`) on ports the OS picks, two or three
//! `herald` nodes, and a receiver that counts distinct `X-Webhook-Delivery-Id`s and the
//! attempts it is answering at once per webhook. A loader sends events one after another
//! through the nodes that are up (the same `Idempotency-Key` again, through the next node,
//! until one acknowledges it) to three ordered webhooks and three with `max_in_flight` 4, while
//! the receiver fails the first attempt of every tenth event (so retries and the head of an
//! ordered webhook waiting are part of it).
//!
//! Each case — (a) `kill -9` of a node, (b) SIGSTOP of a node past its lease then SIGCONT,
//! (c) `kill -9` of the primary, promotion of the most advanced standby and the other one
//! re-pointed, (d) a rolling restart of every node, (e) stalls past a node's own deadline
//! but within its lease — then checks: every acknowledged event
//! reached every webhook (0 lost); duplicates within the bound computed below; each ordered
//! webhook received its events in order (re-sends of the head aside); never more attempts
//! of a webhook at once than its limit; `herald verify --store` clean on every node.

mod common;

use common::pg::Cluster;
use common::receiver::{Hit, Receiver, Reply};
use common::{wait_for, Herald, ADMIN};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `ownership_ttl` of every node.
const TTL: Duration = Duration::from_secs(2);
/// How long the receiver takes to answer.
const DELAY: Duration = Duration::from_millis(10);
const ORDERED: usize = 3;
const UNORDERED: usize = 3;
const MAX_IN_FLIGHT: usize = 4;
/// How long an attempt's record may be on its way to the database when a node dies: the
/// attempts its webhooks finish meanwhile are sent again too (the commit of a group takes
/// a few milliseconds here; this allows ten times that).
const COMMIT_WINDOW: Duration = Duration::from_millis(100);
/// Events the loader sends at most per second, and at most in all.
const PACE: Duration = Duration::from_millis(4);
const MAX_EVENTS: usize = 6_000;

/// Duplicates one node's failure may cause, from the configuration: what its webhooks had
/// on the wire (each webhook's limit) plus what they finished while their records were on
/// their way (the limit again for every `DELAY` in `COMMIT_WINDOW`).
fn duplicate_bound(victims: usize) -> usize {
    let limits = ORDERED + UNORDERED * MAX_IN_FLIGHT;
    let windows = 1 + COMMIT_WINDOW.as_millis().div_ceil(DELAY.as_millis()) as usize;
    victims * limits * windows
}

fn node_env(store: &str) -> Vec<(&'static str, String)> {
    vec![
        ("HERALD_STORE", store.to_owned()),
        ("HERALD_ADMIN_TOKEN", ADMIN.to_owned()),
        ("HERALD_SEAL_KEY", common::pg::seal_key().to_owned()),
        ("HERALD_OWNERSHIP_TTL", format!("{}ms", TTL.as_millis())),
        ("HERALD_STORE_TIMEOUT", "3s".to_owned()),
        ("HERALD_INITIAL_BACKOFF", "20ms".to_owned()),
        ("HERALD_MAX_BACKOFF", "100ms".to_owned()),
        ("HERALD_BREAKER_THRESHOLD", "100000".to_owned()),
    ]
}

/// The servers of one case.
struct Rig {
    pg: Cluster,
    dirs: Vec<tempfile::TempDir>,
    nodes: Vec<Option<Herald>>,
    receiver: Receiver,
    key: String,
    /// Each webhook's path and whether it is ordered.
    hooks: Vec<(String, bool)>,
    /// The base URLs the loader may send through now.
    up: Arc<Mutex<Vec<String>>>,
}

impl Rig {
    fn start(test: &str, nodes: usize) -> Option<Rig> {
        if !common::pg::available(test) {
            return None;
        }
        let pg = Cluster::start(2);
        let receiver = Receiver::start();
        let seen = Mutex::new(HashSet::new());
        receiver.answer(move |hit: &Hit| {
            // The first attempt of every tenth event fails.
            let i = hit.json()["data"]["i"].as_u64().unwrap_or(0);
            if i % 10 == 3 && seen.lock().unwrap().insert(hit.delivery_id()) {
                return Reply::status(500).after(DELAY);
            }
            Reply::ok().after(DELAY)
        });
        let dirs: Vec<tempfile::TempDir> = (0..nodes).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut rig =
            Rig { pg, dirs, nodes: Vec::new(), receiver, key: String::new(), hooks: Vec::new(), up: Arc::default() };
        for i in 0..nodes {
            let h = rig.spawn(i);
            rig.nodes.push(Some(h));
        }
        let a = rig.node(0);
        let created = a.json("POST", "/api/v1/accounts", Some(ADMIN), &json!({"name": "AutoReach"}));
        assert_eq!(created.status, 201, "{}", created.text);
        let key = created.body["api_key"].as_str().unwrap().to_owned();
        let mut hooks = Vec::new();
        for i in 0..ORDERED + UNORDERED {
            let ordered = i < ORDERED;
            let path = format!("/w{i}");
            let mut body = json!({"url": rig.receiver.url(&path), "events": ["lead.*"], "max_retries": 20});
            if ordered {
                body["ordered"] = json!(true);
            } else {
                body["max_in_flight"] = json!(MAX_IN_FLIGHT);
            }
            common::create_webhook(a, &key, body);
            hooks.push((path, ordered));
        }
        rig.key = key;
        rig.hooks = hooks;
        // Every node holds a share before the load begins.
        let want = nodes.to_string();
        wait_for("every node to hold leases", Duration::from_secs(15), || rig.owners() == want);
        let bases: Vec<String> = rig.nodes.iter().flatten().map(|h| h.base.clone()).collect();
        *rig.up.lock().unwrap() = bases;
        Some(rig)
    }

    fn spawn(&self, i: usize) -> Herald {
        let env = node_env(&self.pg.url());
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let h = Herald::serve(self.dirs[i].path(), &["--dev"], &env);
        h.wait_ready();
        h
    }

    /// How many nodes hold a lease now.
    fn owners(&self) -> String {
        self.pg.primary().psql("select count(distinct owner) from herald.leases where expires_at > now()")
    }

    fn node(&self, i: usize) -> &Herald {
        self.nodes[i].as_ref().expect("node running")
    }

    /// Node `i` no longer takes the loader's requests (before a fault is done to it).
    fn take_out(&self, i: usize) {
        let base = self.node(i).base.clone();
        self.up.lock().unwrap().retain(|b| *b != base);
    }

    fn put_back(&self, i: usize) {
        self.up.lock().unwrap().push(self.node(i).base.clone());
    }

    fn kill(&mut self, i: usize) {
        self.take_out(i);
        let mut h = self.nodes[i].take().expect("node running");
        h.signal(libc::SIGKILL);
        h.wait_exit(Duration::from_secs(10));
    }

    fn restart(&mut self, i: usize) {
        let h = self.spawn(i);
        self.nodes[i] = Some(h);
        self.put_back(i);
    }

    /// Waits until every acknowledged event reached every webhook, then checks what the
    /// module docs list; `victims` is how many nodes' failures the duplicates may come from.
    fn check(mut self, acked: &[u64], victims: usize) {
        let r = &self.receiver;
        let accepted_on = |path: &str| -> Vec<(String, u64)> {
            r.hits_on(path)
                .into_iter()
                .filter(|h| (200..300).contains(&h.status))
                .map(|h| (h.delivery_id(), h.json()["data"]["i"].as_u64().unwrap_or(u64::MAX)))
                .collect()
        };
        for (path, _) in &self.hooks {
            wait_for(&format!("all {} events on {path}", acked.len()), Duration::from_secs(40), || {
                let got: HashSet<u64> = accepted_on(path).into_iter().map(|(_, i)| i).collect();
                acked.iter().all(|i| got.contains(i))
            });
        }
        let mut duplicates = 0;
        for (path, ordered) in &self.hooks {
            let accepted = accepted_on(path);
            let distinct: HashMap<&str, u64> = accepted.iter().map(|(id, i)| (id.as_str(), *i)).collect();
            // One delivery per event: no event was made twice.
            let events: HashSet<u64> = distinct.values().copied().collect();
            assert_eq!(events.len(), distinct.len(), "{path}: one delivery id per event");
            duplicates += accepted.len() - distinct.len();
            if *ordered {
                let mut first = HashSet::new();
                let order: Vec<u64> =
                    accepted.iter().filter(|(id, _)| first.insert(id.clone())).map(|(_, i)| *i).collect();
                if let Some(at) = order.windows(2).position(|w| w[0] >= w[1]) {
                    let around = &order[at.saturating_sub(5)..(at + 5).min(order.len())];
                    // Every request of the events involved, in arrival order, to tell which
                    // attempt went when (the nodes' logs are in the test's output too).
                    let (a, b) = (order[at], order[at + 1]);
                    let t0 = r.hits_on(path).first().map(|h| h.at);
                    let told: Vec<String> = r
                        .hits_on(path)
                        .iter()
                        .filter(|h| [a, b].contains(&h.json()["data"]["i"].as_u64().unwrap_or(u64::MAX)))
                        .map(|h| {
                            format!(
                                "i={} status={} attempt={} at={:?}",
                                h.json()["data"]["i"],
                                h.status,
                                h.header("X-Webhook-Attempt").unwrap_or("?"),
                                t0.map(|t| h.at - t)
                            )
                        })
                        .collect();
                    panic!("{path}: ordered webhook received {a} before {b} (around: {around:?}); requests: {told:#?}");
                }
            }
            let limit = if *ordered { 1 } else { MAX_IN_FLIGHT };
            let most = r.max_concurrency_on(path);
            assert!(most <= limit, "{path}: {most} attempts at once (limit {limit})");
        }
        let bound = duplicate_bound(victims);
        eprintln!("{} events acknowledged, {duplicates} duplicates (bound {bound})", acked.len());
        assert!(duplicates <= bound, "{duplicates} duplicates (bound {bound})");

        // Stopped, every node's data directory agrees with the database's records.
        let store = self.pg.url();
        for (i, slot) in self.nodes.iter_mut().enumerate() {
            if let Some(mut h) = slot.take() {
                h.signal(libc::SIGTERM);
                h.wait_exit(Duration::from_secs(20));
            }
            let env = [("HERALD_STORE", store.as_str()), ("HERALD_SEAL_KEY", common::pg::seal_key())];
            let (code, out, err) = common::run(self.dirs[i].path(), &["verify"], &env);
            assert_eq!(code, 0, "herald verify on node {i}: {out}\n{err}");
            assert!(out.contains("node tree:") && out.ends_with("clean\n") && !out.contains("NOT clean"), "{out}");
        }
    }
}

/// Sends events one after another until told to stop (or `MAX_EVENTS`, or 60 s): each
/// through the next node that is up, the same `Idempotency-Key` again through the next one
/// until a node answers 202 (or 200: an earlier try made it). Returns the events acknowledged, in order.
struct Loader {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<u64>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Loader {
    fn start(rig: &Rig) -> Loader {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (up, key, halt, done) = (rig.up.clone(), rig.key.clone(), stop.clone(), acked.clone());
        let thread = std::thread::spawn(move || {
            let began = Instant::now();
            let mut turn = 0usize;
            for i in 0..MAX_EVENTS as u64 {
                if halt.load(Ordering::SeqCst) || began.elapsed() > Duration::from_secs(60) {
                    return;
                }
                let body = json!({"event": "lead.qualified", "data": {"i": i}}).to_string();
                let give_up = Instant::now() + Duration::from_secs(30);
                let mut last = String::new();
                loop {
                    assert!(Instant::now() < give_up, "event {i}: no node acknowledged it within 30 s (last: {last})");
                    let base = {
                        let up = up.lock().unwrap();
                        turn += 1;
                        up.get(turn % up.len().max(1)).cloned()
                    };
                    let Some(base) = base else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    let sent = ureq::post(&format!("{base}/api/v1/events"))
                        .timeout(Duration::from_secs(5))
                        .set("Authorization", &format!("Bearer {key}"))
                        .set("Content-Type", "application/json")
                        .set("Idempotency-Key", &format!("load-{i}"))
                        .send_string(&body);
                    match sent {
                        // 200: an earlier try with this key made the event (its answer
                        // was lost with a node, or was "outcome unknown").
                        Ok(r) if r.status() == 202 || r.status() == 200 => break,
                        Ok(r) => last = format!("{base}: {} {}", r.status(), r.into_string().unwrap_or_default()),
                        Err(ureq::Error::Status(code, r)) => {
                            last = format!("{base}: {code} {}", r.into_string().unwrap_or_default())
                        }
                        Err(e) => last = format!("{base}: {e}"),
                    }
                    // Refused (the node is failing over, or unsure of the outcome),
                    // unreachable or stopped: the next node, the same key.
                    std::thread::sleep(Duration::from_millis(20));
                }
                done.lock().unwrap().push(i);
                std::thread::sleep(PACE);
            }
        });
        Loader { stop, acked, thread: Some(thread) }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until `more` events beyond those acknowledged now are.
    fn wait_for_more(&self, more: usize, what: &str) {
        let target = self.acked() + more;
        wait_for(what, Duration::from_secs(40), || self.acked() >= target);
    }

    fn finish(mut self) -> Vec<u64> {
        self.stop.store(true, Ordering::SeqCst);
        let t = self.thread.take().unwrap();
        assert!(t.join().is_ok(), "the loader failed (an event no node acknowledged)");
        let acked = self.acked.lock().unwrap().clone();
        acked
    }
}

#[test]
fn a_node_killed_under_load_loses_nothing_and_its_webhooks_move() {
    let Some(mut rig) = Rig::start("a_node_killed_under_load", 2) else { return };
    let load = Loader::start(&rig);
    load.wait_for_more(300, "load under way");
    rig.kill(1);
    // Past the lease, the survivor delivers the dead node's webhooks too.
    load.wait_for_more(600, "load through the survivor");
    let acked = load.finish();
    rig.check(&acked, 1);
}

#[test]
fn a_node_frozen_past_its_lease_then_thawed_has_its_late_records_refused() {
    let Some(rig) = Rig::start("a_node_frozen_past_its_lease", 2) else { return };
    let load = Loader::start(&rig);
    load.wait_for_more(300, "load under way");
    rig.take_out(1);
    rig.node(1).signal(libc::SIGSTOP);
    // Frozen past its lease: the other node takes its partitions meanwhile.
    let frozen = Instant::now();
    wait_for("node 0 to hold every partition", Duration::from_secs(20), || {
        let q = "select count(distinct owner) = 1 and count(*) = (select count(*) from herald.leases)
                 from herald.leases where expires_at > now()";
        rig.pg.primary().psql(q) == "t"
    });
    load.wait_for_more(200, "load through node 0");
    eprintln!("node 1 frozen for {:?}", frozen.elapsed());
    rig.node(1).signal(libc::SIGCONT);
    rig.put_back(1);
    // Thawed, it finds its leases gone and takes a share again (in two steps on the other).
    wait_for("both nodes to hold leases again", Duration::from_secs(15), || rig.owners() == "2");
    load.wait_for_more(300, "load through both again");
    let acked = load.finish();
    rig.check(&acked, 1);
}

#[test]
fn the_primary_killed_under_load_a_standby_promoted_and_the_nodes_follow() {
    let Some(mut rig) = Rig::start("the_primary_killed_under_load", 2) else { return };
    let load = Loader::start(&rig);
    load.wait_for_more(300, "load under way");
    rig.pg.servers[0].kill();
    let new = rig.pg.fail_over_from(0);
    eprintln!("promoted {}", rig.pg.servers[new].name);
    load.wait_for_more(600, "load on the new primary");
    let acked = load.finish();
    // Both nodes lose the commits they had under way.
    rig.check(&acked, 2);
}

#[test]
fn a_rolling_restart_of_every_node_under_load_loses_nothing() {
    let Some(mut rig) = Rig::start("a_rolling_restart", 3) else { return };
    let load = Loader::start(&rig);
    load.wait_for_more(300, "load under way");
    for i in 0..3 {
        rig.take_out(i);
        let mut h = rig.nodes[i].take().expect("node running");
        h.signal(libc::SIGTERM);
        assert!(h.wait_exit(Duration::from_secs(20)).success(), "node {i} stopped cleanly");
        rig.restart(i);
        load.wait_for_more(200, &format!("load after restarting node {i}"));
    }
    let acked = load.finish();
    // A graceful stop finishes what is on the wire; the bound allows one node's worth each.
    rig.check(&acked, 3);
}

/// A stall shorter than the lease but longer than the node's own deadline (two thirds of
/// the TTL after its last renewal): the node stops starting work and hands its webhooks
/// over, then its renewal keeps the same leases. Nothing moved to another node, so the
/// node must take the work back from the log — not start afresh from the next arrival,
/// which would send it before the backlog the handover left in the log.
#[test]
fn a_node_stalled_past_its_own_deadline_but_not_its_lease_takes_its_work_back_in_order() {
    let Some(rig) = Rig::start("a_node_stalled_past_its_own_deadline", 2) else { return };
    let load = Loader::start(&rig);
    load.wait_for_more(200, "load under way");
    // Renewals go every quarter of the TTL, so a stall of 60 % of it passes the local
    // deadline most times and the database's expiry never.
    let stall = TTL * 3 / 5;
    for round in 0..6 {
        let i = round % 2;
        rig.take_out(i);
        rig.node(i).signal(libc::SIGSTOP);
        std::thread::sleep(stall);
        rig.node(i).signal(libc::SIGCONT);
        rig.put_back(i);
        load.wait_for_more(60, &format!("load after stall {round}"));
    }
    // No partition changed hands: every stall kept its leases, and at least one passed the
    // node's own deadline (else this tested nothing).
    assert_eq!(rig.owners(), "2");
    let lapses: u64 = (0..2).map(|i| rig.node(i).metric("herald_cluster_lease_lapses_total")).sum();
    eprintln!("{lapses} lapses in 6 stalls");
    assert!(lapses >= 1, "no stall passed a node's local deadline");
    let acked = load.finish();
    rig.check(&acked, 6);
}
