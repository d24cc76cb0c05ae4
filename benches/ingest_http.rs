//! HTTP ingest load: the real `herald` binary on loopback, driven by a load generator
//! written here (awc on one thread), bounded in time and in requests.
//!
//! `cargo bench --bench ingest_http` runs three phases against a fresh data directory with
//! 10 webhooks that all match the events, on a closed port (each breaker opens after five
//! refused attempts, so delivery costs next to nothing while ingest is measured):
//!
//! 1. `single`: `POST /api/v1/events` with 1 KiB of `data`, 64 requests in flight;
//! 2. `batch`: `POST /api/v1/events/batch` of 100 such events, 8 requests in flight;
//! 3. `paced`: single events at a fixed 5,000/s (open loop: sends are scheduled, not
//!    waited for), to read the latency at that rate.
//!
//! Each phase prints events/s and latency percentiles. Options after `--`:
//! `--seconds N` (per phase, default 10), `--phase single|batch|paced`, `--filters on`
//! (each webhook gets a content filter of four conditions that every event passes, so the
//! same deliveries are scheduled and only the filters' cost is added: run it paired with
//! `--filters off`, the default). Herald's own log
//! goes to stderr at `warn`, or at the filter in `BENCH_HERALD_LOG`.
//! Client and server share the machine's cores, so the figures are a floor.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

#[path = "support/mod.rs"]
mod support;

use support::ADMIN;
const WEBHOOKS: usize = 10;
/// Hard cap on requests per phase, whatever the duration.
const MAX_REQUESTS: u64 = 2_000_000;

/// Herald and the directory it runs in (removed after it stops: fields drop in order).
struct Running {
    server: support::Server,
    _dir: tempfile::TempDir,
}

fn start() -> Running {
    let dir = tempfile::tempdir().expect("temp dir");
    Running { server: support::spawn(dir.path(), &[]), _dir: dir }
}

/// One event with `data` of about 1 KiB.
fn event_json(i: u64) -> String {
    let filler = "x".repeat(1000);
    format!(r#"{{"event":"lead.qualified","data":{{"lead_id":"ld_{i}","score":87,"notes":"{filler}"}}}}"#)
}

fn batch_json(first: u64, n: u64) -> String {
    let items: Vec<String> = (first..first + n).map(event_json).collect();
    format!("[{}]", items.join(","))
}

#[derive(Default)]
struct Tally {
    events: u64,
    requests: u64,
    errors: u64,
    latencies_us: Vec<u64>,
    /// Paced phase only: from the moment the request was sent rather than scheduled, i.e.
    /// without the time the generator itself waited for a core.
    from_send_us: Vec<u64>,
}

impl Tally {
    /// One answered request: `events` accepted if `ok`, with its latency (and, paced, its
    /// latency from the actual send).
    fn record(&mut self, ok: bool, events: u64, latency_us: u64, from_send_us: Option<u64>) {
        self.requests += 1;
        if !ok {
            self.errors += 1;
            return;
        }
        self.events += events;
        self.latencies_us.push(latency_us);
        self.from_send_us.extend(from_send_us);
    }

    fn report(&mut self, phase: &str, elapsed: Duration) {
        self.latencies_us.sort_unstable();
        let pct = |p: f64| -> f64 {
            if self.latencies_us.is_empty() {
                return f64::NAN;
            }
            let i = ((self.latencies_us.len() as f64 * p).ceil() as usize).clamp(1, self.latencies_us.len()) - 1;
            self.latencies_us[i] as f64 / 1000.0
        };
        println!(
            "{phase:>6}: {:>8.0} events/s  {:>7.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms  ({} events, {} requests, {} errors, {:.1} s)",
            self.events as f64 / elapsed.as_secs_f64(),
            self.requests as f64 / elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.99),
            pct(1.0),
            self.events,
            self.requests,
            self.errors,
            elapsed.as_secs_f64(),
        );
        if !self.from_send_us.is_empty() {
            self.from_send_us.sort_unstable();
            let n = self.from_send_us.len();
            let at = |p: f64| self.from_send_us[((n as f64 * p).ceil() as usize).clamp(1, n) - 1] as f64 / 1000.0;
            println!("        from send: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms", at(0.5), at(0.99), at(1.0));
        }
    }
}

/// A client with at most 64 connections, as a platform's HTTP client pool would have: a
/// burst waits for a connection rather than opening hundreds.
fn client() -> awc::Client {
    awc::Client::builder()
        .connector(awc::Connector::new().limit(64))
        .timeout(Duration::from_secs(30))
        .add_default_header(("Authorization", format!("Bearer {ADMIN}")))
        .add_default_header(("Content-Type", "application/json"))
        .finish()
}

/// Sends one body; returns whether Herald answered 202.
async fn post(client: &awc::Client, url: &str, body: String) -> bool {
    match client.post(url).send_body(body).await {
        Ok(mut r) => {
            let ok = r.status().as_u16() == 202;
            let _ = r.body().limit(16 << 20).await;
            ok
        }
        Err(_) => false,
    }
}

/// What `--filters on` gives each webhook: every event of the load passes it.
const FILTER: &str = r#"{"event":{"$in":["lead.qualified","lead.created"]},"data.score":{"$gte":80},"data.lead_id":{"$exist":true},"$not":{"data.notes":"spam"}}"#;

async fn setup(base: &str, filters: bool) {
    let c = client();
    let ready_by = Instant::now() + Duration::from_secs(30);
    loop {
        let status = c.get(format!("{base}/readyz")).send().await.map(|r| r.status().as_u16()).unwrap_or(0);
        if status == 200 {
            break;
        }
        assert!(Instant::now() < ready_by, "herald was not ready within 30 s");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..WEBHOOKS {
        let filter = if filters { FILTER } else { "null" };
        let body =
            format!(r#"{{"name":"crm-{i}","url":"http://127.0.0.1:9/in","events":["lead.*"],"filter":{filter}}}"#);
        let mut r = c.post(format!("{base}/api/v1/webhooks")).send_body(body).await.expect("create webhook");
        assert_eq!(r.status().as_u16(), 201, "{:?}", r.body().await);
    }
}

/// `concurrency` loops, each sending as soon as its last answer came.
async fn closed_loop(base: &str, path: &str, concurrency: usize, per_request: u64, seconds: u64) -> (Tally, Duration) {
    let tally = Rc::new(RefCell::new(Tally::default()));
    let url = format!("{base}{path}");
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds);
    let sent = Rc::new(RefCell::new(0u64));
    let mut loops = Vec::new();
    for _ in 0..concurrency {
        let (tally, url, sent) = (tally.clone(), url.clone(), sent.clone());
        loops.push(actix_web::rt::spawn(async move {
            let c = client();
            while Instant::now() < end && *sent.borrow() < MAX_REQUESTS {
                let n = {
                    let mut s = sent.borrow_mut();
                    *s += 1;
                    *s
                };
                let body = if per_request == 1 { event_json(n) } else { batch_json(n * per_request, per_request) };
                let t = Instant::now();
                let ok = post(&c, &url, body).await;
                let us = t.elapsed().as_micros() as u64;
                tally.borrow_mut().record(ok, per_request, us, None);
            }
        }));
    }
    for l in loops {
        let _ = l.await;
    }
    let elapsed = started.elapsed();
    let tally = Rc::try_unwrap(tally).map(RefCell::into_inner).unwrap_or_default();
    (tally, elapsed)
}

/// Requests scheduled at a fixed rate, each on its own task, latency from its scheduled time
/// (so a stall counts against the server, not hidden by the generator).
async fn open_loop(base: &str, rate: u64, seconds: u64) -> (Tally, Duration) {
    let tally = Rc::new(RefCell::new(Tally::default()));
    let url = format!("{base}/api/v1/events");
    let c = client();
    let started = Instant::now();
    let total = (rate * seconds).min(MAX_REQUESTS);
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = started + interval * i as u32;
        let now = Instant::now();
        if due > now {
            actix_web::rt::time::sleep(due - now).await;
        }
        let (tally, url, c) = (tally.clone(), url.clone(), c.clone());
        tasks.push(actix_web::rt::spawn(async move {
            let sent = Instant::now();
            let ok = post(&c, &url, event_json(i)).await;
            let us = due.elapsed().as_micros() as u64;
            tally.borrow_mut().record(ok, 1, us, Some(sent.elapsed().as_micros() as u64));
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed();
    let tally = Rc::try_unwrap(tally).map(RefCell::into_inner).unwrap_or_default();
    (tally, elapsed)
}

/// Herald's own `http_request_duration_seconds` buckets for single ingest: (le, count).
async fn server_buckets(base: &str) -> Vec<(f64, u64)> {
    let Ok(mut r) = client().get(format!("{base}/metrics")).send().await else { return Vec::new() };
    let Ok(body) = r.body().limit(16 << 20).await else { return Vec::new() };
    let prefix = r#"herald_http_request_duration_seconds_bucket{route="/api/v1/events",le=""#;
    String::from_utf8_lossy(&body)
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            Some((if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? }, count.trim().parse().ok()?))
        })
        .collect()
}

/// The server-side p50/p99 of a phase, as the upper bounds of the histogram buckets that hold
/// them: what Herald itself took, without the load generator's own scheduling delays.
fn report_server_side(before: &[(f64, u64)], after: &[(f64, u64)]) {
    let diff: Vec<(f64, u64)> =
        after.iter().map(|(le, n)| (*le, n - before.iter().find(|(l, _)| l == le).map_or(0, |(_, m)| *m))).collect();
    let Some(total) = diff.last().map(|(_, n)| *n).filter(|n| *n > 0) else { return };
    let bound = |q: f64| diff.iter().find(|(_, n)| *n as f64 >= q * total as f64).map_or(f64::NAN, |(le, _)| *le);
    println!(
        "        server side: p50 ≤ {} ms, p99 ≤ {} ms ({total} requests)",
        bound(0.5) * 1000.0,
        bound(0.99) * 1000.0
    );
}

fn main() {
    let args = support::Args::from_env();
    let seconds = args.seconds(10, 120);
    let run = |phase: &str| args.runs(phase);
    let filters = args.value("--filters").as_deref() == Some("on");

    let server = start();
    let base = server.server.base.clone();
    actix_web::rt::System::new().block_on(async move {
        setup(&base, filters).await;
        let filtered = if filters { " (each with a content filter they pass)" } else { "" };
        println!("herald at {base}, {WEBHOOKS} matching webhooks{filtered}, {seconds} s per phase");
        if run("single") {
            let (mut t, d) = closed_loop(&base, "/api/v1/events", 64, 1, seconds).await;
            t.report("single", d);
        }
        if run("batch") {
            let (mut t, d) = closed_loop(&base, "/api/v1/events/batch", 8, 100, seconds).await;
            t.report("batch", d);
        }
        if run("paced") {
            let before = server_buckets(&base).await;
            let (mut t, d) = open_loop(&base, 5_000, seconds).await;
            t.report("paced", d);
            let after = server_buckets(&base).await;
            report_server_side(&before, &after);
        }
    });
    drop(server);
}
