//! Crash safety of the log with the real process: `herald stress-log` appends a mixed load
//! from several threads and is killed with SIGKILL at random moments, round after round.
//! After each kill, `herald verify` finds nothing half-applied and the stored projection
//! equal to a fresh fold of the records, and every acknowledged record reads back through
//! the storage interface. (Damage is reported, not a panic: `src/log/tests/damage.rs`.)

mod common;

use common::*;
use herald::log::{Log, LogOptions};
use herald::storage::Ledger;
use rand::{Rng, SeedableRng};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One round: start, wait until it has acknowledged `min_acks` records, let it run a random
/// while longer, SIGKILL. Returns the acknowledged sequence numbers and the recovery line.
fn load_and_kill(data: &Path, seed: u64, min_acks: usize, extra_ms: u64) -> (Vec<u64>, String) {
    let mut child = Command::new(BIN)
        .args(["--data-dir", data.to_str().unwrap(), "stress-log", "--writers", "8", "--seed", &seed.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let first_line = Arc::new(Mutex::new(String::new()));
    let out = child.stdout.take().unwrap();
    let (sink, first) = (acked.clone(), first_line.clone());
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(seq) = line.strip_prefix("ack ") {
                sink.lock().unwrap().push(seq.parse::<u64>().unwrap());
            } else if line.starts_with("recovered") {
                *first.lock().unwrap() = line;
            }
        }
    });
    wait_for("the load to get going", Duration::from_secs(60), || acked.lock().unwrap().len() >= min_acks);
    // Random moment: the point of this sleep is to land the kill anywhere in the load.
    std::thread::sleep(Duration::from_millis(extra_ms));
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed, not exited");
    reader.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    let line = first_line.lock().unwrap().clone();
    (acked, line)
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_record_and_leaves_nothing_half_applied() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x4e7a1d);
    let mut highest_acked = 0u64;
    for round in 0..6 {
        let (acked, recovered) = load_and_kill(&data, round, 200, rng.gen_range(0..400));
        assert!(!acked.is_empty());
        // What the restart recovered covers everything acknowledged before.
        let last: u64 =
            recovered.split_whitespace().find_map(|w| w.strip_prefix("last_seq=")).unwrap().parse().unwrap();
        assert!(last >= highest_acked, "round {round}: recovered up to {last}, but {highest_acked} was acknowledged");
        assert!(recovered.contains("tail=0") && recovered.contains("warnings=0"), "{recovered}");

        let (code, out, err) = run(dir.path(), &["--data-dir", data.to_str().unwrap(), "verify"], &[]);
        assert_eq!(code, 0, "round {round}: {out}{err}");
        assert!(out.contains("\nclean") && !out.contains("projection rows: 0\n"), "round {round}: {out}");

        let (log, _) = Log::open(&data, LogOptions::default()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        for seq in &acked {
            let record = runtime.block_on(log.record(*seq)).unwrap();
            assert!(record.is_some(), "round {round}: acknowledged record {seq} is missing");
        }
        log.close();
        drop(log);
        highest_acked = highest_acked.max(*acked.iter().max().unwrap());
    }
}
