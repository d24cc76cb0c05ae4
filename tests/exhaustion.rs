//! One tenant cannot take the node, through the real binary on 127.0.0.1: connections that
//! trickle a large body a byte at a time, more connections than the cap, bodies declared too
//! large, and many concurrent large batches. The node stays reachable (`/healthz`,
//! `/readyz`, normal requests answered at once), slow bodies are cut off after
//! `body_read_timeout`, an oversized body is refused from its `Content-Length` before it is
//! read, and the peak RSS stays within a stated bound. Bounded versions of the loads in
//! issue 13; the full-size ones are `full_size_exhaustion` (ignored; the README names it).

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Opens a connection that sends a valid request head declaring `length` body bytes, then
/// one byte of it.
fn trickler(h: &Herald, path: &str, length: usize) -> TcpStream {
    let addr = h.base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n["
    );
    s.write_all(head.as_bytes()).expect("send head");
    s
}

/// What the server sent on `s` within `within`, until it closed (or the time ran out).
fn answer_on(s: &mut TcpStream, within: Duration) -> (String, bool) {
    s.set_read_timeout(Some(within)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = Instant::now() + within;
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
        if Instant::now() >= end {
            break false;
        }
    };
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

/// A request on a connection of its own (the shared agent would reuse one opened before the
/// cap was taken): (status, body, Retry-After).
fn fresh(h: &Herald, method: &str, path: &str, body: Option<&Value>) -> (u16, Value, Option<String>) {
    fresh_on(&ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build(), h, method, path, body)
}

/// A request through `agent` (which keeps its connection open for as long as it lives).
fn fresh_on(
    agent: &ureq::Agent,
    h: &Herald,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value, Option<String>) {
    let req = agent.request(method, &h.url(path)).set("Authorization", &format!("Bearer {ADMIN}"));
    let sent = match body {
        Some(b) => req.send_json(b.clone()),
        None => req.call(),
    };
    let r = match sent {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: {e}"),
    };
    let (status, retry) = (r.status(), r.header("Retry-After").map(str::to_owned));
    let text = r.into_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)), retry)
}

/// The first answer on `s`, which must come within 2 s (the head and one byte of the body
/// are all that was sent: an answer that waited for the rest would never come).
fn first_answer(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).expect("an answer within 2 s, before the body");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn open_descriptors(h: &Herald) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", h.child.id())).map(|d| d.count()).unwrap_or(0)
}

/// Peak resident memory of the process so far, in bytes (`VmHWM`).
fn peak_rss(h: &Herald) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", h.child.id())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[test]
fn slow_bodies_and_more_connections_than_the_cap_leave_the_node_reachable() {
    let dir = tempfile::tempdir().unwrap();
    // The slow bodies must hold their slots through every check of the cap below, on a
    // loaded machine too (at 2 s, the first were cut off before the last check once).
    let env = [("HERALD_MAX_CONNECTIONS", "100"), ("HERALD_OPS_CONNECTIONS", "16"), ("HERALD_BODY_READ_TIMEOUT", "4s")];
    let h = herald_with(dir.path(), &env);
    let event = json!({"event": "lead.qualified", "data": {}});
    let baseline_fds = open_descriptors(&h);
    let started = Instant::now();
    // 110 connections, each with a valid key, a 1 MB body declared and one byte of it sent:
    // 99 more than the cap leaves room for, the last ten over it.
    let mut slow: Vec<TcpStream> = (0..110).map(|_| trickler(&h, "/api/v1/events", 1_000_000)).collect();
    // Those over the cap are told so at once and closed.
    std::thread::sleep(Duration::from_millis(300));
    let mut refused = 0;
    for s in slow.iter_mut() {
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 512];
        if let Ok(n) = s.read(&mut buf) {
            refused += usize::from(String::from_utf8_lossy(&buf[..n]).contains("too_many_connections"));
        }
        s.set_nonblocking(false).unwrap();
    }
    assert!(refused >= 9, "{refused} of the connections over the cap were refused at once");
    // A new API connection is answered at once: refused while the cap is taken, with a time
    // to come back; never left hanging. (A keep-alive connection the client library had open
    // from before may have closed meanwhile, and its slot is there for the first to come:
    // that one keeps it, in `holding`.) Checked before the operations' connections below,
    // whose closing the server counts a moment late: on a loaded machine a refusal seen
    // then could be theirs, with a slot free again just after.
    let mut holding = Vec::new();
    let mut refusal = None;
    wait_for("the cap to be taken", Duration::from_secs(3), || {
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
        let t = Instant::now();
        let (status, body, retry) = fresh_on(&agent, &h, "POST", "/api/v1/events", Some(&event));
        holding.push(agent);
        let refused = body["error"]["code"] == "too_many_connections";
        if refused {
            refusal = Some((status, retry, t.elapsed()));
        }
        refused
    });
    assert!(holding.len() <= 3, "at most the slot of a connection opened before: {}", holding.len());
    let (status, retry, took) = refusal.expect("refused");
    assert_eq!(status, 503);
    assert!(retry.is_some(), "503 says when to come back");
    assert!(took < Duration::from_secs(1), "answered in {took:?}");
    // Health, readiness and scrapes still get in, at once, on connections of their own.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let t = Instant::now();
        let (code, body, _) = fresh(&h, "GET", path, None);
        assert_eq!(code, 200, "{path}: {body}");
        assert!(t.elapsed() < Duration::from_secs(1), "{path} took {:?}", t.elapsed());
    }
    // Beyond the cap and the room for operations, connections wait in the kernel's backlog,
    // holding no descriptor of Herald's.
    slow.extend((0..200).filter_map(|_| TcpStream::connect(h.base.trim_start_matches("http://")).ok()));
    std::thread::sleep(Duration::from_millis(200));
    let fds = open_descriptors(&h);
    assert!(fds <= baseline_fds + 100 + 16 + 8, "descriptors bounded: {fds} (before the attack {baseline_fds})");

    // The slow bodies are cut off once body_read_timeout has passed: 408, connection closed.
    let mut timed_out = 0;
    for s in slow.iter_mut().take(110) {
        let left = Duration::from_secs(9).saturating_sub(started.elapsed()).max(Duration::from_millis(100));
        let (said, closed) = answer_on(s, left);
        assert!(closed, "the server closed a slow connection (got {said:?})");
        timed_out += usize::from(said.contains(" 408 ") && said.contains("body_timeout"));
    }
    // (A few see the close as a reset before they read the 408: the server closes with the
    // rest of their request unread.)
    assert!(timed_out >= 80, "{timed_out} answered 408, {refused} refused at once; all closed");
    drop(slow);
    drop(holding);
    wait_for("room again", Duration::from_secs(10), || fresh(&h, "POST", "/api/v1/events", Some(&event)).0 == 202);
}

#[test]
fn a_body_declared_too_large_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_for_api(dir.path());
    for (path, length) in
        [("/api/v1/events/batch", 19_200_000), ("/api/v1/events", 2_000_000), ("/api/v1/webhooks", 100_000)]
    {
        // The head alone: an answer that waited for the body would never come.
        let mut s = trickler(&h, path, length);
        let said = first_answer(&mut s);
        assert!(said.starts_with("HTTP/1.1 413"), "{path}: {said}");
        assert!(said.contains("payload_too_large"), "{path}: {said}");
    }
}

#[test]
fn concurrent_large_batches_stay_within_the_body_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    // A budget of 96 MiB of weight: one 8 MiB batch (weighed 48 MiB) at a time, or two.
    let env = [("HERALD_MAX_BODY_MEMORY", "100663296"), ("HERALD_MAX_BATCH_BYTES", "16777216")];
    let h = herald_with(dir.path(), &env);
    let baseline = peak_rss(&h);
    let item = |i: usize| json!({"event": "lead.qualified", "data": {"i": i, "pad": "q".repeat(8_500)}});
    let batch = serde_json::to_vec(&Value::Array((0..1000).map(item).collect())).unwrap();
    assert!(batch.len() > 8 << 20);
    let statuses: Vec<(u16, String)> = std::thread::scope(|s| {
        let sent: Vec<_> = (0..20)
            .map(|_| {
                s.spawn(|| {
                    let a = h.send(
                        "POST",
                        "/api/v1/events/batch",
                        Some(ADMIN),
                        &[("Content-Type", "application/json")],
                        Some(&batch),
                    );
                    (a.status, a.body["error"]["code"].as_str().unwrap_or_default().to_owned())
                })
            })
            .collect();
        sent.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let taken = statuses.iter().filter(|(s, _)| *s == 202).count();
    let busy = statuses.iter().filter(|(s, c)| *s == 503 && c == "busy").count();
    assert_eq!(taken + busy, statuses.len(), "each taken or told to come back: {statuses:?}");
    assert!(taken >= 1, "{statuses:?}");
    let peak = peak_rss(&h);
    // Unbounded, 20 concurrent 8 MiB batches took over 800 MB here; the budget holds it to
    // about what two at a time cost.
    assert!(peak < baseline + (400 << 20), "peak RSS {} MB (baseline {} MB)", peak >> 20, baseline >> 20);
    eprintln!("taken {taken}, busy {busy}, peak RSS {} MB (baseline {} MB)", peak >> 20, baseline >> 20);

    // 50 connections declaring 18.3 MB each: refused from the header, nothing read.
    let mut conns: Vec<TcpStream> = (0..50).map(|_| trickler(&h, "/api/v1/events/batch", 19_200_000)).collect();
    for s in &mut conns {
        assert!(first_answer(s).starts_with("HTTP/1.1 413"));
    }
    assert!(peak_rss(&h) < baseline + (400 << 20));
}

/// The loads of issue 13 at full size: 20,100 slow connections against the default cap,
/// and 300 concurrent 18.3 MiB batches. Minutes and gigabytes of traffic: run by hand,
/// `cargo test --release --test exhaustion -- --ignored` (needs `ulimit -n` ≥ 25,000).
#[test]
#[ignore]
fn full_size_exhaustion() {
    let dir = tempfile::tempdir().unwrap();
    let h = herald_with(dir.path(), &[("HERALD_BODY_READ_TIMEOUT", "30s")]);
    let baseline = peak_rss(&h);
    let slow: Vec<TcpStream> = (0..20_100).filter_map(|_| {
        let addr = h.base.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).ok()?;
        let head = format!("POST /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n[");
        s.write_all(head.as_bytes()).ok()?;
        Some(s)
    }).collect();
    eprintln!("{} slow connections open", slow.len());
    for path in ["/healthz", "/readyz"] {
        let t = Instant::now();
        assert_eq!(h.get(path).0, 200, "{path}");
        assert!(t.elapsed() < Duration::from_secs(2), "{path} took {:?}", t.elapsed());
    }
    drop(slow);
    let big = vec![b' '; 18_300_000];
    std::thread::scope(|s| {
        for _ in 0..300 {
            s.spawn(|| {
                let a = h.send(
                    "POST",
                    "/api/v1/events/batch",
                    Some(ADMIN),
                    &[("Content-Type", "application/json")],
                    Some(&big),
                );
                assert_eq!(a.status, 413);
            });
        }
    });
    let peak = peak_rss(&h);
    eprintln!("peak RSS {} MB (baseline {} MB)", peak >> 20, baseline >> 20);
    assert!(peak < 512 << 20);
}
