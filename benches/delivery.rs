//! Delivery load: the real `herald` binary on loopback delivering to a fast receiver that
//! runs in this process (actix-web, one worker), bounded in count and time.
//!
//! `cargo bench --bench delivery` runs five phases, each against a fresh data directory:
//!
//! 1. `one`: a backlog of 100,000 deliveries (1 KiB `data`) to 1 webhook with
//!    `max_in_flight` 64, written to the log while Herald is stopped; Herald starts and
//!    drains it. Deliveries/s from `/readyz` to the last receipt.
//! 2. `many`: the same with 1,000 webhooks, 100 events each, spread over a receiver
//!    listening on 8 ports (125 webhooks each), as 1,000 webhooks rarely share one host.
//! 3. `lag`: events ingested one by one at 1,000/s for 10 s to 1 webhook; lag from the
//!    moment the ingest request was sent to the moment the receiver got the delivery.
//! 4. `dead`: 1 webhook to a closed port; once its breaker is open, attempts/s over 10 s
//!    (`herald_delivery_attempts_total`).
//! 5. `memory`: resident memory per idle webhook: RSS of a node holding 10,000 webhooks,
//!    restarted (so every actor is up and nothing is cached from creating them), minus the
//!    RSS of an empty node, divided by 10,000.
//!
//! Options after `--`: `--phase one|many|lag|dead|memory`, `--seconds N` (lag and dead
//! phases, default 10), `--keep DIR` (memory phase: build the 10,000 webhooks in `DIR` and
//! leave it, to profile a node holding them). Herald's own log goes to stderr at `warn` (or
//! `BENCH_HERALD_LOG`).

use herald::log::{Log, LogOptions};
use herald::model::{now_millis, AccountId, WebhookId};
use herald::storage::{Command, EventIngested, Record};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/mod.rs"]
mod support;

use support::sink::{self, Sink};
use support::{load, Server, ADMIN};
/// Longest any phase may wait for its deliveries.
const DEADLINE: Duration = Duration::from_secs(180);

/// Starts Herald in `dir` (room for 20,000 webhooks in one account) and waits until it
/// is ready.
fn start(dir: &Path, env: &[(&str, &str)]) -> Server {
    let mut all = vec![("HERALD_MAX_WEBHOOKS_PER_ACCOUNT", "20000")];
    all.extend_from_slice(env);
    let server = support::spawn(dir, &all);
    let ready_by = Instant::now() + Duration::from_secs(60);
    while get(&server, "/readyz").0 != 200 {
        assert!(Instant::now() < ready_by, "herald was not ready within 60 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    server
}

fn stop(mut server: Server) {
    unsafe {
        libc::kill(server.child.id() as i32, libc::SIGTERM);
    }
    let _ = server.child.wait();
}

fn get(s: &Server, path: &str) -> (u16, String) {
    match ureq::get(&format!("{}{path}", s.base)).set("Authorization", &format!("Bearer {ADMIN}")).call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

fn post(s: &Server, path: &str, body: &serde_json::Value) -> serde_json::Value {
    let r = ureq::post(&format!("{}{path}", s.base))
        .set("Authorization", &format!("Bearer {ADMIN}"))
        .send_json(body.clone())
        .expect(path);
    r.into_json().unwrap_or(serde_json::Value::Null)
}

/// Creates `n` webhooks in the default account, spread over `urls` in turn; returns their ids.
fn webhooks(s: &Server, n: usize, urls: &[String], max_in_flight: u32) -> Vec<WebhookId> {
    (0..n)
        .map(|i| {
            let url = &urls[i % urls.len()];
            let w = post(
                s,
                "/api/v1/webhooks",
                &serde_json::json!({"name": format!("w{i}"), "url": url, "events": ["lead.*"], "max_in_flight": max_in_flight}),
            );
            WebhookId::parse(w["id"].as_str().expect("webhook id")).expect("id")
        })
        .collect()
}

/// Writes `events` events owed to every webhook in `hooks` into the stopped node's log.
fn write_backlog(data_dir: &Path, hooks: &[WebhookId], events: u64) {
    let (log, _) = Log::open(data_dir, LogOptions::default()).expect("open the stopped node's log");
    let mut i = 0;
    while i < events {
        let at = now_millis();
        let records: Vec<Record> = (i..(i + 500).min(events))
            .map(|n| {
                let event = "lead.qualified".into();
                Record::EventIngested(Box::new(EventIngested::unkeyed(
                    AccountId::default_account(),
                    event,
                    load::data(n).into_bytes(),
                    hooks.to_vec(),
                    at,
                )))
            })
            .collect();
        i += records.len() as u64;
        log.append_blocking(Command::new(records)).expect("append backlog");
    }
    log.close();
}

/// Backlog drain: deliveries/s from ready to the last receipt, to a receiver on `ports` ports.
fn drain(name: &str, hooks: usize, events: u64, max_in_flight: u32, ports: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let sink = Arc::new(Sink::default());
    let urls: Vec<String> =
        sink::start(sink.clone(), ports).iter().map(|port| format!("http://127.0.0.1:{port}/in")).collect();
    let s = start(dir.path(), &[]);
    let ids = webhooks(&s, hooks, &urls, max_in_flight);
    stop(s);
    write_backlog(&dir.path().join("herald-data"), &ids, events);
    let total = events * hooks as u64;
    let s = start(dir.path(), &[]);
    let ready_us = sink.now_us();
    let end = Instant::now() + DEADLINE;
    while sink.count.load(Ordering::Relaxed) < total && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    let got = sink.count.load(Ordering::Relaxed);
    let secs = (sink.last_us.load(Ordering::Relaxed).saturating_sub(ready_us)) as f64 / 1e6;
    println!(
        "{name:>6}: {:>8.0} deliveries/s  ({got} of {total} to {hooks} webhook(s), max_in_flight {max_in_flight}, {secs:.2} s from ready to the last)",
        got as f64 / secs
    );
    drop(s);
}

/// End-to-end lag at a fixed ingest rate.
fn lag(seconds: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let sink = Arc::new(Sink::default());
    let port = sink::start(sink.clone(), 1)[0];
    let s = start(dir.path(), &[]);
    webhooks(&s, 1, &[format!("http://127.0.0.1:{port}/in")], 16);
    sink.record_arrivals.store(true, Ordering::Relaxed);
    let rate = 1000u64;
    let sent = load::open_loop(std::slice::from_ref(&s.base), rate, seconds);
    let end = Instant::now() + Duration::from_secs(30);
    while sink.arrivals.lock().unwrap().len() < sent.accepted as usize && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    let lags = load::Lags::of(&sent, &sink.arrivals.lock().unwrap());
    println!(
        "   lag: {rate} events/s for {seconds} s: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} of {} delivered)",
        lags.pct(0.5),
        lags.pct(0.99),
        lags.pct(1.0),
        lags.sorted_ms.len(),
        sent.accepted
    );
    drop(s);
}

/// Attempts/s against a dead endpoint once its breaker is open.
fn dead(seconds: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let s = start(dir.path(), &[("HERALD_INITIAL_BACKOFF", "10ms"), ("HERALD_MAX_BACKOFF", "100ms")]);
    webhooks(&s, 1, &[format!("http://127.0.0.1:{closed}/in")], 64);
    let batch: Vec<serde_json::Value> =
        (0..1000).map(|i| serde_json::json!({"event": "lead.qualified", "data": {"i": i}})).collect();
    for _ in 0..10 {
        post(&s, "/api/v1/events/batch", &serde_json::Value::Array(batch.clone()));
    }
    let attempts = || -> u64 {
        get(&s, "/metrics")
            .1
            .lines()
            .filter(|l| l.starts_with("herald_delivery_attempts_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let end = Instant::now() + Duration::from_secs(30);
    while !get(&s, "/metrics").1.contains("herald_circuit_breakers_open 1") && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = attempts();
    std::thread::sleep(Duration::from_secs(seconds));
    let after = attempts();
    println!(
        "  dead: {:.2} attempts/s over {seconds} s with the breaker open ({before} attempts before it opened; 10,000 deliveries waiting)",
        (after - before) as f64 / seconds as f64
    );
    drop(s);
}

/// Resident memory per idle webhook.
fn memory(keep: Option<&Path>) {
    const N: usize = 10_000;
    let empty_dir = tempfile::tempdir().expect("temp dir");
    let empty = start(empty_dir.path(), &[]);
    std::thread::sleep(Duration::from_millis(500));
    let base = load::rss_kib(empty.child.id());
    drop(empty);

    let temp = tempfile::tempdir().expect("temp dir");
    let dir = keep.unwrap_or(temp.path());
    let s = start(dir, &[]);
    let url = ["http://127.0.0.1:9/in".to_string()];
    let created = Instant::now();
    std::thread::scope(|scope| {
        // N is a multiple of the 8 creating threads.
        for _ in 0..8 {
            let (s, url) = (&s, &url);
            scope.spawn(move || {
                webhooks(s, N / 8, url, 16);
            });
        }
    });
    let created = created.elapsed();
    stop(s);
    let s = start(dir, &[]);
    std::thread::sleep(Duration::from_millis(500));
    let full = load::rss_kib(s.child.id());
    println!(
        "memory: {:.0} bytes per idle webhook (RSS {} MiB with {N} webhooks, {} MiB empty; created in {:.1} s)",
        (full.saturating_sub(base) * 1024) as f64 / N as f64,
        full / 1024,
        base / 1024,
        created.as_secs_f64()
    );
    drop(s);
}

fn main() {
    let args = support::Args::from_env();
    let seconds = args.seconds(10, 60);
    let run = |phase: &str| args.runs(phase);
    let value = |name: &str| args.value(name);
    if run("one") {
        drain("one", 1, 100_000, 64, 1);
    }
    if run("many") {
        drain("many", 1000, 100, 16, 8);
    }
    if run("lag") {
        lag(seconds);
    }
    if run("dead") {
        dead(seconds);
    }
    if run("memory") {
        memory(value("--keep").as_deref().map(Path::new));
    }
}
