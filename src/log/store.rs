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
use crate::storage::Health;
use std::sync::{Arc, RwLock};

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
