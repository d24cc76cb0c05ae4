//! Ingest load for the delivery benchmarks, bounded in count and time: single 1 KiB events
//! posted on keep-alive connections, either as fast as answers come (closed loop: awc, one
//! thread) or on a fixed schedule (open loop: one thread per sender), spread over one or
//! more nodes. Each
//! accepted event's send time is kept by its index, which the event carries as `data.i`, so
//! the [`Sink`](super::sink::Sink) can tell each delivery's lag.

use super::ADMIN;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Hard cap on events per run, whatever the duration.
pub const MAX_EVENTS: u64 = 2_000_000;

/// An event's `data`: about 1 KiB, its index first.
pub fn data(i: u64) -> String {
    format!(r#"{{"i":{i},"lead_id":"ld_{i}","notes":"{}"}}"#, "x".repeat(1000))
}

/// What a run sent: when each accepted event was sent, by index.
pub struct Sent {
    pub at: Vec<Option<Instant>>,
    pub accepted: u64,
    pub refused: u64,
    pub elapsed: Duration,
}

fn send(agent: &ureq::Agent, url: &str, i: u64) -> bool {
    let body = format!(r#"{{"event":"lead.qualified","data":{}}}"#, data(i));
    agent
        .post(url)
        .set("Authorization", &format!("Bearer {ADMIN}"))
        .set("Content-Type", "application/json")
        .timeout(Duration::from_secs(30))
        .send_string(&body)
        .is_ok()
}

fn run(bases: &[String], threads: u64, next: impl Fn(u64) -> Option<(u64, Instant)> + Sync) -> Sent {
    let at: Mutex<Vec<Option<Instant>>> = Mutex::new(Vec::new());
    let (accepted, refused) = (AtomicU64::new(0), AtomicU64::new(0));
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let url = format!("{}/api/v1/events", bases[t as usize % bases.len()]);
            let (at, accepted, refused, next) = (&at, &accepted, &refused, &next);
            scope.spawn(move || {
                let agent = ureq::AgentBuilder::new().max_idle_connections_per_host(1).build();
                while let Some((i, due)) = next(t) {
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let sent = Instant::now();
                    if send(&agent, &url, i) {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        let mut at = at.lock().unwrap();
                        if at.len() <= i as usize {
                            at.resize(i as usize + 1, None);
                        }
                        at[i as usize] = Some(sent);
                    } else {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    Sent {
        at: at.into_inner().unwrap(),
        accepted: accepted.into_inner(),
        refused: refused.into_inner(),
        elapsed: started.elapsed(),
    }
}

/// `connections` senders, each posting as soon as its last answer came, for `seconds`;
/// connection `c` goes to `bases[c % bases.len()]`. One thread drives them all (awc on an
/// actix system of its own), so the generator takes a small share of the machine's cores.
pub fn closed_loop(bases: &[String], connections: u64, seconds: u64) -> Sent {
    use std::cell::RefCell;
    use std::rc::Rc;
    let bases = bases.to_vec();
    actix_web::rt::System::new().block_on(async move {
        let started = Instant::now();
        let end = started + Duration::from_secs(seconds);
        let at: Rc<RefCell<Vec<Option<Instant>>>> = Rc::default();
        let counts: Rc<RefCell<(u64, u64, u64)>> = Rc::default();
        let mut tasks = Vec::new();
        for c in 0..connections {
            let url = format!("{}/api/v1/events", bases[c as usize % bases.len()]);
            let (at, counts) = (at.clone(), counts.clone());
            tasks.push(actix_web::rt::spawn(async move {
                let client = awc::Client::builder()
                    .connector(awc::Connector::new().limit(1))
                    .timeout(Duration::from_secs(30))
                    .add_default_header(("Authorization", format!("Bearer {ADMIN}")))
                    .add_default_header(("Content-Type", "application/json"))
                    .finish();
                while Instant::now() < end {
                    let i = {
                        let mut n = counts.borrow_mut();
                        n.0 += 1;
                        n.0 - 1
                    };
                    if i >= MAX_EVENTS {
                        break;
                    }
                    let body = format!(r#"{{"event":"lead.qualified","data":{}}}"#, data(i));
                    let sent = Instant::now();
                    let ok = match client.post(&url).send_body(body).await {
                        Ok(mut r) => {
                            let _ = r.body().limit(1 << 20).await;
                            r.status().as_u16() == 202
                        }
                        Err(_) => false,
                    };
                    let mut n = counts.borrow_mut();
                    if ok {
                        n.1 += 1;
                        let mut at = at.borrow_mut();
                        if at.len() <= i as usize {
                            at.resize(i as usize + 1, None);
                        }
                        at[i as usize] = Some(sent);
                    } else {
                        n.2 += 1;
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        let (_, accepted, refused) = *counts.borrow();
        Sent { at: at.take(), accepted, refused, elapsed: started.elapsed() }
    })
}

/// `rate` events/s for `seconds` on a fixed schedule, from 32 senders interleaved (sender
/// `t` sends the events `i ≡ t (mod 32)` to `bases[t % bases.len()]`): enough that the
/// schedule holds while answers take up to 32 intervals. Lag counts from the actual send, so
/// a sender held up by a slow answer delays its next event, not its lag.
pub fn open_loop(bases: &[String], rate: u64, seconds: u64) -> Sent {
    const SENDERS: u64 = 32;
    let total = (rate * seconds).min(MAX_EVENTS);
    let started = Instant::now() + Duration::from_millis(50);
    let cursors: Vec<AtomicU64> = (0..SENDERS).map(AtomicU64::new).collect();
    run(bases, SENDERS, |t| {
        let i = cursors[t as usize].fetch_add(SENDERS, Ordering::Relaxed);
        (i < total).then(|| (i, started + Duration::from_micros(i * 1_000_000 / rate)))
    })
}

/// Lag percentiles (ms) of what `sink` received, from each event's send; with the count.
pub struct Lags {
    pub sorted_ms: Vec<f64>,
}

impl Lags {
    pub fn of(sent: &Sent, arrivals: &[(u64, Instant)]) -> Lags {
        let mut sorted_ms: Vec<f64> = arrivals
            .iter()
            .filter_map(|(i, at)| {
                sent.at.get(*i as usize).copied().flatten().map(|s| at.duration_since(s).as_secs_f64() * 1e3)
            })
            .collect();
        sorted_ms.sort_by(|a, b| a.total_cmp(b));
        Lags { sorted_ms }
    }

    pub fn pct(&self, p: f64) -> f64 {
        if self.sorted_ms.is_empty() {
            return f64::NAN;
        }
        self.sorted_ms[((self.sorted_ms.len() as f64 * p).ceil() as usize).clamp(1, self.sorted_ms.len()) - 1]
    }
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; the fields after its `)` are fixed.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line; the first after the `)` is field 3.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// Peak resident memory of a process so far, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// Resident memory of a process now, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// A `kB` figure of `/proc/<pid>/status`.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
/// A histogram's cumulative buckets `(le, count)` from a node's `/metrics`: the series whose
/// line starts with `prefix` (up to the `le` label).
pub fn buckets(base: &str, prefix: &str) -> Vec<(f64, u64)> {
    let Ok(r) = ureq::get(&format!("{base}/metrics")).set("Authorization", &format!("Bearer {ADMIN}")).call() else {
        return Vec::new();
    };
    let body = r.into_string().unwrap_or_default();
    body.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|rest| {
            let rest = rest.strip_prefix("le=\"")?;
            let (le, count) = rest.split_once("\"} ")?;
            Some((if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? }, count.trim().parse().ok()?))
        })
        .collect()
}

/// The upper bounds (ms) of the buckets holding the p50 and p99 of what was observed
/// between two readings of [`buckets`]: what Herald itself took, without the generator.
pub fn bounds_ms(before: &[(f64, u64)], after: &[(f64, u64)]) -> (f64, f64) {
    let diff: Vec<(f64, u64)> =
        after.iter().map(|(le, n)| (*le, n - before.iter().find(|(l, _)| l == le).map_or(0, |(_, m)| *m))).collect();
    let total = diff.last().map_or(0, |(_, n)| *n);
    let bound = |q: f64| {
        diff.iter().find(|(_, n)| total > 0 && *n as f64 >= q * total as f64).map_or(f64::NAN, |(le, _)| le * 1e3)
    };
    (bound(0.5), bound(0.99))
}
