//! A full disk, through the real binary on a tmpfs of the test's own (root; skipped with a
//! message elsewhere, never under CI): starting or verifying on a full disk fails cleanly and
//! changes nothing, a partial snapshot left by an earlier failure is recovered from, and
//! running out of room while serving loses nothing acknowledged and leaves a log `herald
//! verify` calls clean.

mod common;

use common::disk::SmallDisk;
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

fn ingest_batches(h: &Herald, batches: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for b in 0..batches {
        let items: Vec<Value> = (0..100)
            .map(|i| json!({"event": "lead.qualified", "data": {"batch": b, "i": i, "pad": "x".repeat(200)}}))
            .collect();
        let a = h.json("POST", "/api/v1/events/batch", Some(ADMIN), &Value::Array(items));
        assert_eq!(a.status, 202, "{}", a.text);
        for r in a.body["results"].as_array().unwrap() {
            ids.push(r["id"].as_str().expect("every item stored").to_owned());
        }
    }
    ids
}

fn partial_snapshots(data: &Path) -> Vec<String> {
    std::fs::read_dir(data.join("log"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".generating"))
        .collect()
}

fn files(data: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data.join("log"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn starting_or_verifying_on_a_full_disk_fails_cleanly_and_changes_nothing() {
    let Some(disk) = SmallDisk::mount("starting_or_verifying_on_a_full_disk", 64) else { return };
    let data = disk.path().join("data");
    let data_arg = data.to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let env = [("HERALD_ADMIN_TOKEN", ADMIN), ("HERALD_MIN_FREE_DISK", "0")];
    let h = Herald::serve(work.path(), &["--dev", "--data-dir", data_arg], &env);
    h.wait_ready();
    let ids = ingest_batches(&h, 10);
    // Killed, so the next open has a snapshot to write: what a full disk refuses.
    drop(h);
    let before = files(&data);

    disk.fill();
    let (code, _, err) = run(work.path(), &["--data-dir", data_arg, "verify"], &[]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("no space left"), "a clear message: {err}");
    assert_eq!(partial_snapshots(&data), Vec::<String>::new(), "no partial snapshot left behind");
    assert_eq!(files(&data), before, "the directory is as it was");

    let mut cmd = std::process::Command::new(BIN);
    cmd.current_dir(work.path()).args(["--dev", "--listen", "127.0.0.1:0", "--data-dir", data_arg, "serve"]);
    cmd.envs(env).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    let out = spawn_tied(cmd).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("no space left"), "a clear message: {err}");
    assert_eq!(files(&data), before, "the directory is as it was");

    // A partial snapshot from some earlier failure (an older Herald left it) is recovered from.
    disk.release();
    std::fs::write(data.join("log").join("snap.00000000FFFFFFFF.generating"), b"").unwrap();
    let (code, out, err) = run(work.path(), &["--data-dir", data_arg, "verify"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("clean") && err.contains("removed a partial snapshot"), "{out}{err}");
    assert_eq!(partial_snapshots(&data), Vec::<String>::new());

    // Everything acknowledged is there.
    let h = Herald::serve(work.path(), &["--dev", "--data-dir", data_arg], &env);
    h.wait_ready();
    for id in &ids {
        let e = h.send("GET", &format!("/api/v1/events/{id}"), Some(ADMIN), &[], None);
        assert_eq!(e.status, 200, "{id}: {}", e.text);
    }
}

/// What ingest answered, item by item: each item carries its own `id` (Herald's idempotency
/// key for batch items), so whether it is in the log can be asked again later.
#[derive(Default)]
struct Answers {
    acked: Vec<(String, String)>,
    /// Told nothing was written (`storage_unavailable`, `low_on_disk`).
    refused: Vec<String>,
    /// Told the outcome is unknown.
    unknown: Vec<String>,
    other: Vec<String>,
}

fn item(marker: &str) -> Value {
    json!({"event": "lead.qualified", "id": marker, "data": {"m": marker, "pad": "p".repeat(500)}})
}

/// Posts batches of 100 from `threads` threads until `until` says stop (checked between
/// batches) or `limit` passes; a batch refused whole counts each of its items as refused.
fn load(h: &Herald, tag: &str, threads: usize, limit: Duration, until: &(dyn Fn(&Answers) -> bool + Sync)) -> Answers {
    let all = std::sync::Mutex::new(Answers::default());
    let end = std::time::Instant::now() + limit;
    std::thread::scope(|s| {
        for t in 0..threads {
            let all = &all;
            s.spawn(move || {
                let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(20)).build();
                for b in 0.. {
                    if std::time::Instant::now() >= end || until(&all.lock().unwrap()) {
                        return;
                    }
                    let markers: Vec<String> = (0..100).map(|i| format!("{tag}-{t}-{b}-{i}")).collect();
                    let body = Value::Array(markers.iter().map(|m| item(m)).collect());
                    let sent = agent
                        .post(&h.url("/api/v1/events/batch"))
                        .set("Authorization", &format!("Bearer {ADMIN}"))
                        .send_json(body);
                    let (status, answer): (u16, Value) = match sent {
                        Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
                        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
                        Err(e) => panic!("ingest did not answer: {e}"),
                    };
                    let mut a = all.lock().unwrap();
                    if status != 202 {
                        let code = answer["error"]["code"].as_str().unwrap_or_default().to_owned();
                        assert_eq!(status, 503, "{answer}");
                        match code.as_str() {
                            "low_on_disk" | "storage_unavailable" => a.refused.extend(markers),
                            "outcome_unknown" => a.unknown.extend(markers),
                            _ => a.other.push(answer.to_string()),
                        }
                        continue;
                    }
                    for (m, r) in markers.into_iter().zip(answer["results"].as_array().unwrap()) {
                        match (r["id"].as_str(), r["error"]["code"].as_str()) {
                            (Some(id), _) => a.acked.push((m, id.to_owned())),
                            (_, Some("low_on_disk" | "storage_unavailable")) => a.refused.push(m),
                            (_, Some("outcome_unknown")) => a.unknown.push(m),
                            _ => a.other.push(r.to_string()),
                        }
                    }
                }
            });
        }
    });
    all.into_inner().unwrap()
}

/// Sends items again with the same `id` (their idempotency key): one acknowledged must be
/// found (200, the same event id), one refused must not (202, a new event). A sample of each.
fn every_answer_was_true(h: &Herald, runs: &[&Answers]) {
    let again = |marker: &str| h.json("POST", "/api/v1/events", Some(ADMIN), &item(marker));
    let acked: Vec<&(String, String)> = runs.iter().flat_map(|a| &a.acked).collect();
    let refused: Vec<&String> = runs.iter().flat_map(|a| &a.refused).collect();
    let step = |n: usize| (n / 200).max(1);
    for (m, id) in acked.iter().step_by(step(acked.len())) {
        let a = again(m);
        assert_eq!((a.status, a.body["id"].as_str()), (200, Some(id.as_str())), "{m} was acknowledged: {}", a.text);
    }
    for m in refused.iter().step_by(step(refused.len())) {
        let a = again(m);
        assert_eq!(a.status, 202, "{m} was refused, so it must not be in the log: {}", a.text);
    }
}

/// SIGTERM: the node stops within its `shutdown_grace` (4 s, plus a second of slack), and
/// `herald verify` calls what it left clean.
fn stop_within_grace_and_verify(h: Herald, work: &Path, data: &str) {
    let mut h = h;
    let t = std::time::Instant::now();
    h.signal(libc::SIGTERM);
    assert!(h.wait_exit(Duration::from_secs(10)).success());
    assert!(t.elapsed() < Duration::from_secs(6), "stopped in {:?}", t.elapsed());
    let (code, out, err) = run(work, &["--data-dir", data, "verify"], &[]);
    assert_eq!(code, 0, "verify is clean after the episode: {out}{err}");
}

fn errors_logged(h: &Herald) -> usize {
    h.stderr().lines().filter(|l| l.contains("ERROR")).count()
}

#[test]
fn running_out_of_disk_while_serving_loses_nothing_and_recovers() {
    let Some(disk) = SmallDisk::mount("running_out_of_disk_while_serving", 64) else { return };
    let data = disk.path().join("data");
    let data_arg = data.to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let r = common::receiver::Receiver::start();
    let env = |min_free: &'static str| {
        [
            ("HERALD_ADMIN_TOKEN", ADMIN),
            ("HERALD_MIN_FREE_DISK", min_free),
            ("HERALD_DISK_RESERVE", "8388608"),
            ("HERALD_SHUTDOWN_GRACE", "4s"),
        ]
    };

    // min_free_disk holds under concurrent batches: the writer admits one command at a time.
    // (No webhook yet: nothing but ingest writes.)
    let h = Herald::serve(work.path(), &["--dev", "--data-dir", data_arg], &env("25165824"));
    h.wait_ready();
    let lowest = std::sync::atomic::AtomicU64::new(u64::MAX);
    let first = load(&h, "a", 4, Duration::from_secs(30), &|a| {
        lowest.fetch_min(disk.free(), std::sync::atomic::Ordering::Relaxed);
        a.refused.len() >= 1000
    });
    // Ingest refused for want of room: a load balancer is told to send it elsewhere.
    let (code, body) = h.get("/readyz");
    assert!(code == 503 && body.contains("min_free_disk"), "{code} {body}");
    let lowest = lowest.into_inner();
    assert!(!first.acked.is_empty() && first.other.is_empty(), "{:?}", first.other);
    assert!(lowest >= 24 << 20, "min_free_disk (24 MiB) kept: lowest free {lowest}");
    // Two more seconds of it: still refused (an item small enough may still fit above the
    // floor), and the floor still holds.
    let refused = load(&h, "b", 4, Duration::from_secs(2), &|_| false);
    assert!(refused.refused.len() > 10 * refused.acked.len(), "ingest refused at the floor");
    assert!(disk.free() >= 24 << 20, "still kept: {}", disk.free());
    let mut h = h;
    h.signal(libc::SIGTERM);
    assert!(h.wait_exit(Duration::from_secs(10)).success());

    // Now with min_free_disk = 0: ingest fills the disk, and something else takes the rest.
    let h = Herald::serve(work.path(), &["--dev", "--data-dir", data_arg], &env("0"));
    h.wait_ready();
    create_webhook(&h, ADMIN, json!({"url": r.url("/in"), "events": ["*"]}));
    let errors_before = errors_logged(&h);
    let filled = std::sync::atomic::AtomicBool::new(false);
    let second = load(&h, "c", 4, Duration::from_secs(40), &|a| {
        if disk.free() < 12 << 20 && !filled.swap(true, std::sync::atomic::Ordering::Relaxed) {
            // While Herald still writes: another process takes every byte left.
            disk.fill();
        }
        filled.load(std::sync::atomic::Ordering::Relaxed) && a.refused.len() + a.unknown.len() >= 1000
    });
    let third = load(&h, "d", 4, Duration::from_secs(2), &|_| false);
    assert!(second.other.is_empty() && third.other.is_empty(), "{:?} {:?}", second.other, third.other);
    assert!(third.acked.is_empty(), "nothing is taken on a full disk");

    // The node stays reachable and tells the truth while the disk is full.
    let t = std::time::Instant::now();
    assert_eq!(h.get("/healthz").0, 200);
    assert!(t.elapsed() < Duration::from_secs(2), "healthz answers at once");
    let (code, body) = h.get("/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("writes are failing"), "{body}");
    let sampled: Vec<&String> =
        first.acked.iter().chain(&second.acked).step_by(97).take(40).map(|(_, id)| id).collect();
    let mut refused_reads = 0;
    for id in &sampled {
        let e = h.send("GET", &format!("/api/v1/events/{id}"), Some(ADMIN), &[], None);
        // Another process took the last byte under a write, so sled may refuse a read that
        // needs what it failed to write (README, "When the disk fills": 503, retry) — never
        // any other answer, and never "not found".
        let retry = e.status == 503 && e.text.contains("storage_unavailable");
        assert!(e.status == 200 || retry, "acknowledged events stay readable or say retry: {} {}", e.status, e.text);
        refused_reads += usize::from(retry);
    }
    eprintln!("{refused_reads} of {} reads answered 503 while the disk was full", sampled.len());
    let logged = errors_logged(&h) - errors_before;
    assert!(logged <= 20, "a repeating failure is logged once per interval, not per request: {logged}\n{}", h.stderr());

    // Room again: Herald takes writes without a restart.
    disk.release();
    disk.resize(160);
    wait_for("/readyz to answer 200 again", Duration::from_secs(20), || h.get("/readyz").0 == 200);
    for id in &sampled {
        let e = h.send("GET", &format!("/api/v1/events/{id}"), Some(ADMIN), &[], None);
        assert_eq!(e.status, 200, "acknowledged events are readable once there is room: {}", e.text);
    }
    let after = h.json("POST", "/api/v1/events", Some(ADMIN), &item("after-the-episode"));
    assert_eq!(after.status, 202, "{}", after.text);

    stop_within_grace_and_verify(h, work.path(), data_arg);

    // Every answer was true: what was acknowledged is there, what was refused is not.
    let h = Herald::serve(work.path(), &["--dev", "--data-dir", data_arg], &env("0"));
    h.wait_ready();
    every_answer_was_true(&h, &[&first, &refused, &second, &third]);
    // The rows agree with the records: stats and lists count what is there.
    let stats = h.send("GET", "/api/v1/stats", Some(ADMIN), &[], None);
    assert_eq!(stats.body["dead_letters"], 0, "{}", stats.text);
    wait_for("every delivery made", Duration::from_secs(60), || {
        h.send("GET", "/api/v1/stats", Some(ADMIN), &[], None).body["pending"] == 0
    });
    let count = |path: &str| {
        let (mut n, mut cursor) = (0, String::new());
        loop {
            let page = h.send("GET", &format!("{path}?limit=500{cursor}"), Some(ADMIN), &[], None);
            n += page.body["data"].as_array().unwrap().len();
            match page.body["next_cursor"].as_str() {
                Some(c) => cursor = format!("&cursor={c}"),
                None => return n,
            }
        }
    };
    let (events, deliveries) = (count("/api/v1/events"), count("/api/v1/deliveries"));
    let before_webhook = first.acked.len() + refused.acked.len();
    assert_eq!(deliveries, events - before_webhook, "one delivery per event after the webhook, each listed once");
    assert!(events >= first.acked.len() + second.acked.len());
}

#[test]
fn a_write_sled_cannot_make_is_answered_truthfully_and_the_log_reopens_by_itself() {
    // A disk that fails every write, for as long as the test says: the real binary with a
    // libc shim preloaded (tests/fault/enospc.c) that answers ENOSPC to writes under the
    // data directory while a flag file exists — what no free-space check can foresee.
    let work = tempfile::tempdir().unwrap();
    let shim = work.path().join("libenospc.so");
    let built = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&shim)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fault/enospc.c"))
        .arg("-ldl")
        .status()
        .is_ok_and(|s| s.success());
    if !built {
        let why = "a_write_sled_cannot_make: skipped: no C compiler (cc) to build the fault shim";
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "{why} — under CI this test must run");
        eprintln!("{why}");
        return;
    }
    let data = work.path().join("data");
    let flag = work.path().join("disk-fails");
    let r = common::receiver::Receiver::start();
    let env = [
        ("HERALD_ADMIN_TOKEN", ADMIN),
        ("HERALD_MIN_FREE_DISK", "0"),
        ("HERALD_DISK_RESERVE", "0"),
        ("HERALD_SHUTDOWN_GRACE", "4s"),
        ("LD_PRELOAD", shim.to_str().unwrap()),
        ("FAULT_FLAG", flag.to_str().unwrap()),
        ("FAULT_DIR", data.to_str().unwrap()),
    ];
    let data_arg = data.to_str().unwrap();
    let h = Herald::serve(work.path(), &["--dev", "--data-dir", data_arg], &env);
    h.wait_ready();
    create_webhook(&h, ADMIN, json!({"url": r.url("/in"), "events": ["*"]}));

    let stop = std::sync::atomic::AtomicBool::new(false);
    let (answers, during) = std::thread::scope(|s| {
        let loading =
            s.spawn(|| load(&h, "f", 3, Duration::from_secs(30), &|_| stop.load(std::sync::atomic::Ordering::Relaxed)));
        wait_for("some events in", Duration::from_secs(10), || r.count() >= 200);
        std::fs::write(&flag, b"").unwrap();
        wait_for("/readyz to say writes are failing", Duration::from_secs(10), || {
            let (code, body) = h.get("/readyz");
            code == 503 && body.contains("writes are failing")
        });
        let t = std::time::Instant::now();
        let alive = h.get("/healthz").0;
        let fast = t.elapsed();
        // Reads go on while the disk fails (a delivery the receiver got names its event). The
        // failed database serves them; one that needs what sled failed to write, or comes
        // while the writer is reopening the tree (it waits up to 2 s for sled's lock), is
        // refused (503) and a later one gets through — the disk stays broken until then.
        let event = r.hits()[0].json()["id"].as_str().unwrap().to_owned();
        let mut read = 0;
        wait_for("a durable event read while writes fail", Duration::from_secs(10), || {
            read = h.send("GET", &format!("/api/v1/events/{event}"), Some(ADMIN), &[], None).status;
            read == 200
        });
        std::thread::sleep(Duration::from_millis(1500)); // the disk stays broken a while
        std::fs::remove_file(&flag).unwrap();
        wait_for("/readyz to answer 200 again", Duration::from_secs(15), || h.get("/readyz").0 == 200);
        let after = h.json("POST", "/api/v1/events", Some(ADMIN), &item("after-the-fault"));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (loading.join().unwrap(), (alive, fast, read, after.status))
    });
    assert_eq!(during.0, 200, "healthz");
    assert!(during.1 < Duration::from_secs(2), "healthz answered in {:?}", during.1);
    assert_eq!(during.2, 200, "a durable event is readable while writes fail");
    assert_eq!(during.3, 202, "writes are taken again once the disk is back, without a restart");
    assert!(answers.other.is_empty(), "{:?}", answers.other);
    assert!(!answers.acked.is_empty(), "some acknowledged");
    assert!(!answers.refused.is_empty() || !answers.unknown.is_empty(), "the fault was felt");
    // Every acknowledged delivery arrives (the actors start over from the reopened log).
    wait_for("every delivery made", Duration::from_secs(60), || {
        h.send("GET", "/api/v1/stats", Some(ADMIN), &[], None).body["pending"] == 0
    });
    let delivered: std::collections::HashSet<String> =
        r.hits().iter().filter_map(|hit| hit.json()["id"].as_str().map(str::to_owned)).collect();
    for (m, id) in &answers.acked {
        assert!(delivered.contains(id), "{m} ({id}) was acknowledged and never delivered");
    }
    let logged = errors_logged(&h);
    assert!(logged <= 30, "a repeating failure is logged once per interval: {logged}\n{}", h.stderr());

    stop_within_grace_and_verify(h, work.path(), data_arg);
    let h = Herald::serve(work.path(), &["--dev", "--data-dir", data_arg], &env);
    h.wait_ready();
    every_answer_was_true(&h, &[&answers]);
    eprintln!("acked {}, refused {}, unknown {}", answers.acked.len(), answers.refused.len(), answers.unknown.len());
}
