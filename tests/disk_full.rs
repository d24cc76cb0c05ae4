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
