//! What the load benchmarks share: the real `herald` binary started on 127.0.0.1:0 in a
//! directory of the caller's, its address read from stderr, killed when dropped; the
//! receiver ([`sink`]) and the ingest load ([`load`]) the delivery benchmarks share.

#![allow(dead_code)]

pub mod load;
pub mod sink;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_herald");
pub const ADMIN: &str = "bench-admin-token-0123456789";

/// A running `herald serve --dev`.
pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Herald in `dir` with the benchmark admin token and `env`; returns once it printed
/// its address (not once it is ready). Its log goes to stderr at `warn`, or at
/// `BENCH_HERALD_LOG`.
pub fn spawn(dir: &Path, env: &[(&str, &str)]) -> Server {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .args(["--listen", "127.0.0.1:0", "--dev", "serve"])
        .env("HERALD_ADMIN_TOKEN", ADMIN)
        .env("RUST_LOG", std::env::var("BENCH_HERALD_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start herald");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            match line.strip_prefix("herald listening on ") {
                Some(addr) => {
                    let _ = tx.send(addr.trim().to_owned());
                }
                None => eprintln!("{line}"),
            }
        }
    });
    let base = rx.recv_timeout(Duration::from_secs(30)).expect("herald printed its address");
    Server { child, base }
}

/// A benchmark's options after `--`: `--name value` pairs.
pub struct Args(Vec<String>);

impl Args {
    pub fn from_env() -> Args {
        Args(std::env::args().collect())
    }

    /// The value after `--name`, if given.
    pub fn value(&self, name: &str) -> Option<String> {
        self.0.iter().position(|a| a == name).and_then(|i| self.0.get(i + 1)).cloned()
    }

    /// `--seconds`, within 1..=`max` (`default` if absent or not a number).
    pub fn seconds(&self, default: u64, max: u64) -> u64 {
        self.value("--seconds").and_then(|s| s.parse().ok()).unwrap_or(default).clamp(1, max)
    }

    /// Whether `phase` runs: every phase without `--phase`, else the one named.
    pub fn runs(&self, phase: &str) -> bool {
        self.value("--phase").is_none_or(|only| only == phase)
    }
}
