//! What goes into storage: a [`Command`] of records, appended atomically if every
//! [`Precondition`] holds against the state the commands before it left; and what comes
//! back: [`Appended`] or an [`AppendError`].
//!
//! Invariant: a precondition is data, not code, so every backend checks the same rule where
//! it can do so atomically with the append (the sled log on its writer thread, a database in
//! the same transaction) and two concurrent commands cannot both pass it.

use super::record::Record;
use crate::model::*;
use std::sync::Arc;
use std::time::Duration;

/// A rule a command's records may be appended under, checked against the state as the
/// commands before it (also in the same group commit) left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// No account with this id was ever created. Else [`Rejection::Conflict`].
    AccountAbsent(AccountId),
    /// The webhooks' work is this node's: a single node owns everything; in a cluster, the
    /// node holds the lease of each one's partition, and the append checks the lease's
    /// epoch in its own transaction (fencing: a node that lost a lease cannot record under
    /// it). Else [`Rejection::Conflict`].
    Owned(Vec<WebhookId>),
    /// No admin token was ever issued (nodes starting together on an empty cluster issue
    /// one between them). Else [`Rejection::Conflict`].
    AdminTokenAbsent,
    /// The account exists and is not deleted. Else [`Rejection::NotFound`].
    AccountLive(AccountId),
    /// The key exists, belongs to `account` and is not revoked. Else [`Rejection::NotFound`].
    KeyLive { key: KeyId, account: AccountId },
    /// The webhook exists, is not deleted and belongs to `account` ([`Rejection::NotFound`]
    /// otherwise) and, if `version` is given, is still defined by that record — the one the
    /// change was computed from ([`Rejection::Conflict`]: two concurrent edits cannot
    /// silently undo each other).
    WebhookOwned { webhook: WebhookId, account: AccountId, version: Option<u64> },
    /// The webhook exists and is not deleted. Else [`Rejection::NotFound`].
    WebhookLive(WebhookId),
    /// The account is live ([`Rejection::NotFound`]) and has fewer than `max` webhooks
    /// ([`Rejection::Limit`]).
    WebhookRoom { account: AccountId, max: u32 },
    /// The delivery is dead ([`Rejection::NotFound`] if there is none, else
    /// [`Rejection::Conflict`]) and its webhook is not deleted ([`Rejection::Conflict`]).
    DeliveryDead { delivery: DeliveryRef, webhook: WebhookId },
    /// The delivery is unfinished and has had exactly `attempts` attempts: the record about
    /// its next attempt is the only one ([`Rejection::Conflict`] otherwise).
    DeliveryAt { delivery: DeliveryRef, webhook: WebhookId, attempts: u32 },
    /// The account's idempotency key is not claimed by an event ingested at or after
    /// `since`. Else [`Rejection::Duplicate`], saying whether the claim's request had
    /// `request_hash` too.
    IdempotencyFree { account: AccountId, key: String, since: Millis, request_hash: [u8; 32] },
}

/// Why a precondition refused a command. Nothing of the command was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The idempotency key is already claimed by the event of record `seq`.
    #[error("idempotency key already used by an earlier event")]
    Duplicate { same_request: bool, seq: u64 },
    #[error("limit reached: {0}")]
    Limit(String),
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
}

/// What a command is, for admission against free disk space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Admission {
    /// New events from clients: refused below `min_free_disk`.
    Ingest,
    /// Everything else: attempts, edits, compaction — may use the reserve.
    #[default]
    Work,
}

/// Records to append atomically, if every precondition allows.
#[derive(Debug, Clone)]
pub struct Command {
    pub records: Vec<Record>,
    pub preconditions: Vec<Precondition>,
    /// How the command is admitted against free disk space.
    pub admission: Admission,
}

impl Command {
    pub fn new(records: Vec<Record>) -> Self {
        Self { records, preconditions: Vec::new(), admission: Admission::Work }
    }

    /// The records, if `rule` holds.
    pub fn checked(records: Vec<Record>, rule: Precondition) -> Self {
        Self { records, preconditions: vec![rule], admission: Admission::Work }
    }

    /// New events from a client: refused below `min_free_disk`.
    pub fn ingest(mut self) -> Self {
        self.admission = Admission::Ingest;
        self
    }
}

/// What an acknowledged append got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The sequence number of each record, in order.
    pub seqs: Vec<u64>,
}

/// A command did not fit on the disk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not enough free disk space ({free} bytes free, {needed} needed); nothing was written")]
pub struct NoRoom {
    pub free: u64,
    pub needed: u64,
}

/// Why a read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The storage is being reopened or failed over (for a moment): try again.
    #[error("the log is being reopened after a storage failure; try again")]
    Unavailable,
    /// A stored value does not decode.
    #[error("{0}")]
    Damaged(String),
    #[error("storage error: {0}")]
    Failed(String),
}

/// Why an append failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// Reading the state the command is checked and folded against failed; nothing was
    /// written.
    #[error(transparent)]
    Read(#[from] StorageError),
    #[error("record does not encode: {0}")]
    Encode(String),
    /// Refused for want of disk space before anything was written.
    #[error(transparent)]
    NoRoom(#[from] NoRoom),
    /// The storage failed and the command is not in the log: nothing was written.
    #[error("storage failed, nothing was written: {0}")]
    Storage(String),
    /// The storage failed and whether the command is in the log could not be learnt.
    #[error("storage failed; the write may or may not have happened: {0}")]
    Unknown(String),
    #[error("the log writer has stopped")]
    Closed,
}

/// Receives the time each command took from hand-over to its flush. Storage knows nothing of
/// metrics: whoever opens it hands one in.
#[derive(Clone)]
pub struct AppendTimer(Arc<dyn Fn(Duration) + Send + Sync>);

impl AppendTimer {
    pub fn new(f: impl Fn(Duration) + Send + Sync + 'static) -> Self {
        AppendTimer(Arc::new(f))
    }

    pub fn took(&self, d: Duration) {
        (self.0)(d)
    }
}

impl std::fmt::Debug for AppendTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppendTimer")
    }
}
