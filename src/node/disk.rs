//! `min_free_disk` (contract §6), as the API sees it: below that many free bytes (plus the
//! storage's own safety margin, which it is told) on the data directory's file system,
//! ingest is refused with 503 and `Retry-After` before its body is even parsed, and
//! `/readyz` answers 503. The log writer enforces the same floor command by command, so
//! concurrent requests cannot overshoot it together; this is the cheap early answer.
//!
//! Invariant: the answer is at most [`RECHECK`] old; the check itself is one `statvfs`.
//! If the free space cannot be read, ingest is not refused (the writer's check still runs).

use crate::model::{now_millis, Millis};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// How long one measurement of the free space is trusted.
const RECHECK: Millis = 250;

/// Seconds a refused client is told to wait.
pub const RETRY_AFTER_SECS: u64 = 10;

pub struct DiskGuard {
    dir: PathBuf,
    min_free: u64,
    /// What storage keeps free beyond `min_free` for its own writes.
    margin: u64,
    checked_at: AtomicU64,
    low: AtomicBool,
}

impl DiskGuard {
    pub fn new(dir: PathBuf, min_free: u64, margin: u64) -> Self {
        Self { dir, min_free, margin, checked_at: AtomicU64::new(0), low: AtomicBool::new(false) }
    }

    /// Free bytes on the data directory's file system, if they can be read.
    pub fn free_bytes(&self) -> Option<u64> {
        fs4::available_space(&self.dir).ok()
    }

    /// Whether free space is below `min_free_disk` now.
    pub fn is_low(&self) -> bool {
        let now = now_millis();
        let last = self.checked_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= RECHECK
            && self.checked_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            let floor = self.min_free.saturating_add(self.margin);
            let low = self.free_bytes().is_some_and(|free| free < floor);
            if low && !self.low.load(Ordering::Relaxed) {
                tracing::warn!(
                    min_free_disk = self.min_free,
                    "free disk space is below min_free_disk: ingest answers 503"
                );
            } else if !low && self.low.load(Ordering::Relaxed) {
                tracing::info!("free disk space is above min_free_disk again: ingest is taken");
            }
            self.low.store(low, Ordering::Relaxed);
        }
        self.low.load(Ordering::Relaxed)
    }
}
