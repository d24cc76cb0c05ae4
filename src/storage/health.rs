//! Whether storage takes writes, for readiness and for the delivery actors. The backend sets
//! it; everyone above reads it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Whether the log takes writes, for readiness and for the delivery actors.
#[derive(Debug, Default)]
pub struct Health {
    /// A storage fault: why, while it lasts.
    failing: Mutex<Option<String>>,
    failing_now: AtomicBool,
    /// Writes other than ingest were refused for want of space (the reserve is used up).
    full: AtomicBool,
    /// When ingest was last refused for want of space (ms since the epoch, 0: never).
    ingest_refused_at: std::sync::atomic::AtomicU64,
}

/// How long an ingest refused for space keeps readiness at 503.
const INGEST_REFUSED_FOR: u64 = 5_000;

impl Health {
    /// What keeps the log from taking writes, if anything.
    pub fn problem(&self) -> Option<String> {
        if self.failing_now.load(Ordering::Relaxed) {
            let why = self.failing.lock().ok().and_then(|w| w.clone());
            return Some(format!("writes are failing: {}", why.unwrap_or_else(|| "storage fault".into())));
        }
        if self.full.load(Ordering::Relaxed) {
            return Some("writes are failing: the disk is full and Herald's reserved space is used up".into());
        }
        let refused = self.ingest_refused_at.load(Ordering::Relaxed);
        if refused > 0 && crate::model::now_millis().saturating_sub(refused) < INGEST_REFUSED_FOR {
            return Some("writes are failing: ingest is refused, free disk space is below min_free_disk".into());
        }
        None
    }

    pub fn ingest_refused(&self) {
        self.ingest_refused_at.store(crate::model::now_millis(), Ordering::Relaxed);
    }

    /// Whether attempts can be recorded now (actors send nothing they could not record).
    pub fn takes_work(&self) -> bool {
        !self.failing_now.load(Ordering::Relaxed) && !self.full.load(Ordering::Relaxed)
    }

    pub fn fail(&self, why: String) {
        if let Ok(mut w) = self.failing.lock() {
            *w = Some(why);
        }
        self.failing_now.store(true, Ordering::Relaxed);
    }

    pub fn recovered(&self) {
        self.failing_now.store(false, Ordering::Relaxed);
        if let Ok(mut w) = self.failing.lock() {
            *w = None;
        }
    }

    pub fn set_full(&self, full: bool) {
        self.full.store(full, Ordering::Relaxed);
    }
}
