//! Cluster load: real PostgreSQL servers (a primary and one synchronous standby, on
//! 127.0.0.1 ports the OS picks, started and stopped here) and real `herald` nodes on them,
//! bounded in count and time. Each phase gets a fresh cluster.
//!
//! `cargo bench --bench cluster` runs four phases:
//!
//! 1. `ceiling`: what PostgreSQL itself sustains here for exactly the statements a node's
//!    writer issues per group (lock the head, insert the group's records with `unnest`,
//!    move the head, notify, commit), with `pgbench`, for groups of 1, 16 and 64 records of
//!    1,200 bytes, from 1 and from 4 clients (the head lock serializes them).
//! 2. `ingest`: single 1 KiB events, 64 connections, closed loop, against 1 node and then 2
//!    nodes (connections split between them), 10 webhooks on a closed port (their breakers
//!    open after five refused attempts, so ingest is what is measured). Reports events/s,
//!    records and transactions per event (all of Herald's transactions, heartbeats and
//!    reads included), CPU per event per node.
//! 3. `combined`: ingest and delivery at once to 1 webhook (`max_in_flight` 64) on a
//!    receiver in this process, 32 connections, closed loop, with 1 and then 2 nodes:
//!    ingest/s, delivered/s, lag p50/p99 from each event's send to its receipt, CPU per
//!    delivery per node (the whole process over the run, idle included), peak RSS.
//! 4. `lag`: 1,000 events/s on a fixed schedule to 1 webhook, with 2 nodes: the events go
//!    in through both, the webhook is delivered by its owner.
//!
//! Options after `--`: `--phase ceiling|ingest|combined|lag`, `--seconds N` (per run,
//! default 10), `--nodes N` (ingest and combined: only with N nodes; 0 is one node on sled, the baseline `combined` runs first), `--connections N` (combined, default 32). Needs PostgreSQL's binaries (`HERALD_PG_BIN` or `/usr/lib/postgresql/*/bin`).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use common::pg::Cluster;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::sink::{self, Sink};
use support::{load, Server, ADMIN};

/// Longest a phase waits for its deliveries after the load stopped.
const DRAIN: Duration = Duration::from_secs(60);

/// A node on the cluster at `store` (or on its own sled log), in a data directory of its
/// own under `dir`, ready.
fn node(dir: &Path, name: &str, store: Option<&str>) -> Server {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).expect("node dir");
    let mut env = vec![("HERALD_SEAL_KEY", common::pg::seal_key()), ("HERALD_MAX_WEBHOOKS_PER_ACCOUNT", "1000")];
    env.extend(store.map(|url| ("HERALD_STORE", url)));
    let s = support::spawn(&dir, &env);
    let ready_by = Instant::now() + Duration::from_secs(60);
    while get(&s, "/readyz").0 != 200 {
        assert!(Instant::now() < ready_by, "node {name} was not ready within 60 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    s
}

/// `n` nodes on `cluster`, started together, once the partitions are shared out evenly.
fn nodes(dir: &Path, cluster: &Cluster, n: usize) -> Vec<Server> {
    let url = cluster.url();
    let started: Vec<Server> = (0..n).map(|i| node(dir, &format!("node{i}"), Some(&url))).collect();
    let by = Instant::now() + Duration::from_secs(30);
    loop {
        let shares = cluster
            .primary()
            .psql("select count(*) from herald.leases where expires_at > now() and owner is not null group by owner");
        let shares: Vec<u32> = shares.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if shares.len() == n && shares.iter().max().copied().unwrap_or(0) <= 128u32.div_ceil(n as u32) {
            break;
        }
        assert!(Instant::now() < by, "partitions not shared out evenly within 30 s: {shares:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    started
}

fn get(s: &Server, path: &str) -> (u16, String) {
    match ureq::get(&format!("{}{path}", s.base)).set("Authorization", &format!("Bearer {ADMIN}")).call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

fn webhook(s: &Server, i: usize, url: &str) {
    let body = serde_json::json!({"name": format!("w{i}"), "url": url, "events": ["lead.*"], "max_in_flight": 64});
    ureq::post(&format!("{}/api/v1/webhooks", s.base))
        .set("Authorization", &format!("Bearer {ADMIN}"))
        .send_json(body)
        .expect("create webhook");
}

/// One number from the primary.
fn count(cluster: &Cluster, sql: &str) -> f64 {
    cluster.primary().psql(sql).trim().parse().unwrap_or(f64::NAN)
}

/// Herald's histograms of ingest answers and of appends (as `/metrics` names them).
const INGEST_SECONDS: &str = r#"herald_http_request_duration_seconds_bucket{route="/api/v1/events","#;
const APPEND_SECONDS: &str = "herald_log_append_duration_seconds_bucket{";

const RECORDS: &str = "select count(*) from herald.records";
const COMMITS: &str = "select xact_commit from pg_stat_database where datname = 'postgres'";

fn cpu(nodes: &[Server]) -> Vec<f64> {
    nodes.iter().map(|s| load::cpu_seconds(s.child.id())).collect()
}

fn per_node(before: &[f64], after: &[f64], per: f64) -> String {
    let us: Vec<String> = before.iter().zip(after).map(|(b, a)| format!("{:.0}", (a - b) * 1e6 / per)).collect();
    us.join(" + ")
}

/// The pgbench script of one writer group of `n` records.
fn group_script(n: u32) -> String {
    format!(
        "BEGIN;\n\
         SELECT last_seq AS s FROM herald.head WHERE id = 1 FOR UPDATE \\gset\n\
         INSERT INTO herald.records (seq, body) SELECT :s + g, convert_to(repeat('x', 1200), 'UTF8') FROM generate_series(1, {n}) g;\n\
         UPDATE herald.head SET last_seq = :s + {n} WHERE id = 1;\n\
         SELECT pg_notify('herald_log', (:s + {n})::text);\n\
         END;\n"
    )
}

fn ceiling(seconds: u64) {
    let cluster = Cluster::start(1);
    let dir = tempfile::tempdir().expect("temp dir");
    // A node creates the schema; the statements then run on it without the node.
    drop(node(dir.path(), "schema", Some(&cluster.url())));
    let secs = seconds.to_string();
    for n in [1u32, 16, 64] {
        for clients in ["1", "4"] {
            let out = cluster.primary().pgbench(&group_script(n), &["-M", "prepared", "-c", clients, "-T", &secs]);
            let tps: f64 = out
                .lines()
                .find_map(|l| l.strip_prefix("tps = "))
                .and_then(|l| l.split_whitespace().next()?.parse().ok())
                .unwrap_or(f64::NAN);
            let latency = out.lines().find_map(|l| l.strip_prefix("latency average = ")).unwrap_or("?").trim();
            println!(
                "ceiling: groups of {n:>2}, {clients} client(s): {tps:>7.0} groups/s  {:>7.0} records/s  (latency {latency})",
                tps * n as f64
            );
        }
    }
}

fn ingest(seconds: u64, n: usize) {
    let cluster = Cluster::start(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let nodes = nodes(dir.path(), &cluster, n);
    for i in 0..10 {
        webhook(&nodes[i % n], i, "http://127.0.0.1:9/in");
    }
    let bases: Vec<String> = nodes.iter().map(|s| s.base.clone()).collect();
    let (records, commits, cpu_before) = (count(&cluster, RECORDS), count(&cluster, COMMITS), cpu(&nodes));
    let sent = load::closed_loop(&bases, 64, seconds);
    let (records, commits) = (count(&cluster, RECORDS) - records, count(&cluster, COMMITS) - commits);
    let events = sent.accepted as f64;
    println!(
        " ingest: {n} node(s): {:>7.0} events/s  ({} accepted, {} refused)  {:.2} records/event  {:.3} transactions/event  CPU µs/event per node: {}",
        events / sent.elapsed.as_secs_f64(),
        sent.accepted,
        sent.refused,
        records / events,
        commits / events,
        per_node(&cpu_before, &cpu(&nodes), events)
    );
}

/// Ingest at `connections` (closed loop) or at `rate` events/s (open loop) through every
/// node, delivered to one webhook; prints what came through and when.
/// `n == 0`: one node on its embedded sled log instead, the same load (the paired baseline).
fn deliver(name: &str, seconds: u64, n: usize, connections: u64, rate: Option<u64>) {
    let cluster = (n > 0).then(|| Cluster::start(1));
    let dir = tempfile::tempdir().expect("temp dir");
    let sink = Arc::new(Sink::default());
    let port = sink::start(sink.clone(), 1)[0];
    let nodes = match &cluster {
        Some(cluster) => nodes(dir.path(), cluster, n),
        None => vec![node(dir.path(), "sled", None)],
    };
    let count = |sql: &str| cluster.as_ref().map_or(f64::NAN, |c| count(c, sql));
    webhook(&nodes[0], 0, &format!("http://127.0.0.1:{port}/in"));
    let bases: Vec<String> = nodes.iter().map(|s| s.base.clone()).collect();
    sink.record_arrivals.store(true, Ordering::Relaxed);
    let (records, commits, cpu_before) = (count(RECORDS), count(COMMITS), cpu(&nodes));
    let histograms = || (load::buckets(&bases[0], INGEST_SECONDS), load::buckets(&bases[0], APPEND_SECONDS));
    let (ingest_before, append_before) = histograms();
    let sent = match rate {
        Some(rate) => load::open_loop(&bases, rate, seconds),
        None => load::closed_loop(&bases, connections, seconds),
    };
    let delivered_during = sink.count.load(Ordering::Relaxed);
    let end = Instant::now() + DRAIN;
    while sink.count.load(Ordering::Relaxed) < sent.accepted && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    let (ingest_after, append_after) = histograms();
    let drained = sink.count.load(Ordering::Relaxed);
    let cpu_after = cpu(&nodes);
    let (records, commits) = (count(RECORDS) - records, count(COMMITS) - commits);
    let lags = load::Lags::of(&sent, &sink.arrivals.lock().unwrap());
    let secs = sent.elapsed.as_secs_f64();
    let load = match rate {
        Some(rate) => format!("{rate} events/s"),
        None => format!("{connections} connections"),
    };
    let rss: Vec<String> = nodes.iter().map(|s| format!("{}", load::peak_rss_kib(s.child.id()) / 1024)).collect();
    println!(
        "{name:>8}: {} node(s), {load}, {seconds} s: ingest {:>6.0}/s  delivered {:>6.0}/s during the load  lag p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  ({drained} of {} delivered, {} refused)  {:.2} records, {:.3} transactions per event  CPU µs/delivery per node: {}  peak RSS MiB: {}",
        if n == 0 { "1 sled".to_string() } else { n.to_string() },
        sent.accepted as f64 / secs,
        delivered_during as f64 / secs,
        lags.pct(0.5),
        lags.pct(0.99),
        lags.pct(1.0),
        sent.accepted,
        sent.refused,
        records / sent.accepted.max(1) as f64,
        commits / sent.accepted.max(1) as f64,
        per_node(&cpu_before, &cpu_after, drained.max(1) as f64),
        rss.join(" + ")
    );
    let (ingest, append) =
        (load::bounds_ms(&ingest_before, &ingest_after), load::bounds_ms(&append_before, &append_after));
    println!(
        "          node 0's own view: ingest answered in p50 ≤ {} ms, p99 ≤ {} ms; appends p50 ≤ {} ms, p99 ≤ {} ms",
        ingest.0, ingest.1, append.0, append.1
    );
}

fn main() {
    let args = support::Args::from_env();
    let seconds = args.seconds(10, 60);
    let run = |phase: &str| args.runs(phase);
    let value = |name: &str| args.value(name);
    let counts: Vec<usize> = match value("--nodes").and_then(|n| n.parse().ok()) {
        Some(n) => vec![n],
        None => vec![0, 1, 2],
    };
    let connections: u64 = value("--connections").and_then(|c| c.parse().ok()).unwrap_or(32).clamp(1, 256);
    if !common::pg::available("cluster benchmark") {
        return;
    }
    if run("ceiling") {
        ceiling(seconds);
    }
    if run("ingest") {
        for &n in counts.iter().filter(|&&n| n > 0) {
            ingest(seconds, n);
        }
    }
    if run("combined") {
        for &n in &counts {
            deliver("combined", seconds, n, connections, None);
        }
    }
    if run("lag") {
        deliver("lag", seconds, 2, 4, Some(1_000));
    }
}
