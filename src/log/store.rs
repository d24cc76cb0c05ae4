//! The open sled database behind the log, shared by every reader and the writer, and the
//! log's health as readiness reports it.
//!
//! sled cannot take back what it applied in memory when a write to disk fails, and it
//! refuses everything after ("poisoned"). So after a storage fault the writer reopens the
//! database from what is durable ([`super::writer`]) and puts the fresh one here; readers
//! take the current one for each request ([`Store::tree`]) and so never read a poisoned
//! database's half-applied state.
//!
//! Invariants:
//! - Nobody keeps a [`sled::Tree`] beyond one request or one writer step: the file lock of
//!   a database is released only when its last handle is gone, and a reopen waits for it.
//! - While the database is being reopened there is none: reads answer
//!   [`RowsError::Unavailable`] (503) for those few milliseconds.

use super::rows::RowsError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// An open database and the log's tree in it.
pub(crate) struct Open {
    pub db: sled::Db,
    pub tree: sled::Tree,
}

/// Where readers find the current database.
pub struct Store {
    slot: RwLock<Option<Arc<Open>>>,
    health: Health,
}

impl Store {
    pub(crate) fn new(open: Open) -> Self {
        Self { slot: RwLock::new(Some(Arc::new(open))), health: Health::default() }
    }

    /// The log's tree, for reads: the current database's, or `Unavailable` while it is
    /// being reopened.
    pub fn tree(&self) -> Result<sled::Tree, RowsError> {
        self.current().map(|open| open.tree.clone())
    }

    pub(crate) fn current(&self) -> Result<Arc<Open>, RowsError> {
        let slot = self.slot.read().map_err(|_| RowsError::Unavailable)?;
        slot.clone().ok_or(RowsError::Unavailable)
    }

    /// Takes the database out (the writer is about to reopen it).
    pub(crate) fn take(&self) -> Option<Arc<Open>> {
        self.slot.write().ok().and_then(|mut slot| slot.take())
    }

    pub(crate) fn put(&self, open: Open) {
        if let Ok(mut slot) = self.slot.write() {
            *slot = Some(Arc::new(open));
        }
    }

    pub fn health(&self) -> &Health {
        &self.health
    }
}

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

    pub(crate) fn ingest_refused(&self) {
        self.ingest_refused_at.store(crate::model::now_millis(), Ordering::Relaxed);
    }

    /// Whether attempts can be recorded now (actors send nothing they could not record).
    pub fn takes_work(&self) -> bool {
        !self.failing_now.load(Ordering::Relaxed) && !self.full.load(Ordering::Relaxed)
    }

    pub(crate) fn fail(&self, why: String) {
        if let Ok(mut w) = self.failing.lock() {
            *w = Some(why);
        }
        self.failing_now.store(true, Ordering::Relaxed);
    }

    pub(crate) fn recovered(&self) {
        self.failing_now.store(false, Ordering::Relaxed);
        if let Ok(mut w) = self.failing.lock() {
            *w = None;
        }
    }

    pub(crate) fn set_full(&self, full: bool) {
        self.full.store(full, Ordering::Relaxed);
    }
}
