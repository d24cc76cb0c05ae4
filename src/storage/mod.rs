//! The storage interface: what everything above storage may know of it.
//!
//! Herald keeps one thing: a ledger of records (one per state change, [`Record`]) and the
//! state they fold to — accounts, keys, webhooks and their health, events, deliveries with
//! their attempts, per-minute activity. [`Ledger`] is how the domain and the delivery engine
//! reach it: typed reads, [`Command`]s of records appended under typed [`Precondition`]s,
//! and the [`Change`]s of every committed group told to one [`Observer`]. The sled log
//! (`crate::log`) is one implementation; `memory` (in memory, for the domain's unit
//! tests) is another.
//!
//! Invariants every implementation keeps:
//! - **Acknowledged means durable; refused means absent.** `append` answers only once the
//!   command's records and their effects would survive a crash; an error other than
//!   [`AppendError::Unknown`] means nothing of it was written.
//! - **State is a fold of the records.** Reads answer from the fold of every acknowledged
//!   record, never ahead of it; the in-memory [`Catalog`] mirrors the hot part and is updated
//!   before the append's caller is answered (read-your-writes).
//! - **Preconditions are atomic with the append**: two concurrent commands cannot both
//!   pass one.
//! - **Observers hear of a group after it is durable**, in commit order.
//! - **Nothing blocks an async thread**: every read and write that may touch a disk or a
//!   network is `async` (the sled log answers at once; a networked backend awaits).
//!
//! For a backend shared by several nodes: a webhook's work belongs to one node at a time
//! (the delivery engine asks [`Ledger::owns`] before it starts an actor for a webhook),
//! records a node appends for a webhook are fenced by that ownership (a precondition of the
//! backend's own), and another node's commits reach the observer as they do for local ones.

mod append;
mod catalog;
mod health;
#[cfg(test)]
pub(crate) mod memory;
pub mod record;
mod state;

pub use append::{
    Admission, AppendError, AppendTimer, Appended, Command, NoRoom, Precondition, Rejection, StorageError,
};
pub use catalog::Catalog;
pub use health::Health;
pub use record::{AttemptFinished, EventIngested, Record, MAX_ORDERING_KEY};
pub use state::{
    minute, name_hash, Counters, DeliveryRow, EventEntry, IntakeEntry, QueueEntry, Queued, StatusRow, WebhookRow,
};

use crate::model::*;
use futures_util::future::BoxFuture;
use std::sync::{Arc, RwLock};

/// One change, as the delivery engine needs it. An observer hears of a group only after it
/// is durable and its callers are answered, so nothing is delivered that a crash could
/// still take back, and a notification never delays an acknowledgement.
#[derive(Debug, Clone)]
pub enum Change {
    /// An event with at least one delivery; delivery `i` goes to `event.webhooks[i]`.
    Ingested {
        seq: u64,
        event: Arc<EventIngested>,
    },
    /// A dead delivery queued again; `manual` for a retry of one delivery (which may go out
    /// once even while the breaker is open), not for a recover.
    Requeued {
        delivery: DeliveryRef,
        webhook_id: WebhookId,
        manual: bool,
    },
    /// A webhook created, edited or given a new secret.
    WebhookDefined(Box<Webhook>),
    WebhookDeleted(WebhookId),
    AccountDeleted(AccountId),
    /// A webhook's health set outside an attempt (an edit that enables it again).
    StatusSet {
        webhook_id: WebhookId,
        status: WebhookStatus,
    },
    /// The log was reopened after a storage fault: what the actors hold in memory may be
    /// ahead of what is durable. Every actor starts over from the log: `queues` holds the
    /// first due deliveries of every webhook owed some, as start-up reads them.
    Reopened {
        queues: std::collections::HashMap<WebhookId, Vec<Queued>>,
    },
    /// Cluster mode: what this node may deliver changed ([`Ledger::owns`] says what it
    /// owns now). Actors of webhooks it no longer owns hand their work over; `gained` holds
    /// the first due deliveries of each webhook it now owns that is owed some.
    Owners {
        gained: std::collections::HashMap<WebhookId, Vec<Queued>>,
        /// The webhooks whose work this node may start as of this change. A delivery
        /// committed before it is in `gained`'s windows (or on disk behind them), so the
        /// engine starts no actor for a webhook on a live arrival until a change grants
        /// it: an actor started from the arrival alone would send it before the backlog.
        granted: Granted,
        /// The webhooks this change grants afresh (their partitions newly held, or held
        /// again after the local deadline lapsed): `gained` holds their windows, so work
        /// an actor handed over may start again from them.
        fresh: Granted,
    },
    /// Cluster mode: the window of a webhook whose actor handed its work over and stopped
    /// while the node still owned it, read in order with the changes (the answer to
    /// [`Ledger::regrant`]).
    Regranted {
        webhook: WebhookId,
        window: Vec<Queued>,
    },
}

/// Cluster mode: which webhooks' work a [`Change::Owners`] granted (see there).
#[derive(Clone)]
pub struct Granted(Arc<dyn Fn(&WebhookId) -> bool + Send + Sync>);

impl Granted {
    pub fn new(covers: impl Fn(&WebhookId) -> bool + Send + Sync + 'static) -> Granted {
        Granted(Arc::new(covers))
    }

    /// What a cluster node holds before its first [`Change::Owners`].
    pub fn nothing() -> Granted {
        Granted::new(|_| false)
    }

    pub fn covers(&self, webhook: &WebhookId) -> bool {
        (self.0)(webhook)
    }
}

impl std::fmt::Debug for Granted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Granted(..)")
    }
}

impl Change {
    /// The change a committed record makes, if the delivery engine cares.
    pub fn of(seq: u64, record: Record) -> Option<Change> {
        Some(match record {
            Record::EventIngested(event) if !event.webhooks.is_empty() => {
                Change::Ingested { seq, event: Arc::from(event) }
            }
            Record::DeliveryRequeued { delivery, webhook_id, .. } => {
                Change::Requeued { delivery, webhook_id, manual: false }
            }
            Record::DeliveryRetried { delivery, webhook_id, .. } => {
                Change::Requeued { delivery, webhook_id, manual: true }
            }
            Record::WebhookCreated { webhook }
            | Record::WebhookUpdated { webhook }
            | Record::SecretRotated { webhook } => Change::WebhookDefined(Box::new(webhook)),
            Record::WebhookDeleted { webhook_id, .. } => Change::WebhookDeleted(webhook_id),
            Record::AccountDeleted { account_id, .. } => Change::AccountDeleted(account_id),
            Record::WebhookStatusSet { webhook_id, status, .. } => Change::StatusSet { webhook_id, status },
            _ => return None,
        })
    }
}

/// A cluster node's ownership, as the metrics show it: the partitions it holds now, and
/// monotonic counts since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ownership {
    pub partitions_held: u64,
    /// Lease rounds (heartbeat and renewals) that worked, and that failed.
    pub renewals: u64,
    pub renewal_failures: u64,
    /// Partitions newly held, and no longer held (let go or lost): handovers.
    pub gained: u64,
    pub lost: u64,
    /// Times the local deadline passed before a renewal came (the node stopped starting
    /// work though it kept its leases: a stall, or a slow database).
    pub lapses: u64,
}

/// Receives each committed group's changes, on a thread of the backend's: it must return
/// quickly (hand the work to another thread).
pub type Observer = Box<dyn Fn(Vec<Change>) + Send + Sync>;

/// A backend's answer to a read.
pub type Read<T> = Result<T, StorageError>;

/// Where Herald keeps its records and reads back their state.
#[async_trait::async_trait]
pub trait Ledger: Send + Sync {
    /// Appends `cmd` if its preconditions hold and waits until it is durable.
    async fn append(&self, cmd: Command) -> Result<Appended, AppendError>;

    /// Hands `cmd` over now and returns what will tell its outcome. Commands submitted one
    /// after another from one thread are committed in that order, whenever the caller gets
    /// round to waiting (the delivery actors record attempts this way).
    fn submit(&self, cmd: Command) -> BoxFuture<'static, Result<Appended, AppendError>>;

    /// The hot rows, in memory (no I/O: a lock held for the length of one lookup).
    fn catalog(&self) -> &Arc<RwLock<Catalog>>;

    /// The key that turns sequence numbers into public ids and back.
    fn id_key(&self) -> &IdKey;

    /// Whether storage takes writes now.
    fn health(&self) -> &Health;

    /// Tells `observer` every later committed group's changes (once; a second call is
    /// ignored and returns false).
    fn observe(&self, observer: Observer) -> bool;

    /// Whether this node may start the webhook's work now. A single node owns everything;
    /// in a cluster, the node holding the lease of the webhook's partition, until its local
    /// deadline (`Change::Owners` tells when this changes).
    fn owns(&self, _webhook: &WebhookId) -> bool {
        true
    }

    /// Cluster mode: asks for a [`Change::Regranted`] with the webhook's window, read in
    /// order with the changes. A single node never hands work over.
    fn regrant(&self, _webhook: &WebhookId) {}

    /// How long a webhook's attempts on the wire may go on once this node stops starting
    /// its work (the lease is leaving or its local deadline passed) before they are cut off.
    /// A single node never hands work over.
    fn handover_grace(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// In a cluster, this node's share of the webhooks and what its leases went through
    /// (for the metrics); `None` on a single node, which owns everything.
    fn ownership(&self) -> Option<Ownership> {
        None
    }

    /// The record at `seq`, if it is still kept.
    async fn record(&self, seq: u64) -> Read<Option<Record>>;

    /// The events of records `seqs` (in any order) as deliveries need them: each event's
    /// webhook list may be left empty. Records that are not events, or gone, are left out.
    /// One call for many, because a backlog is drained in runs of neighbouring records.
    async fn events_to_deliver(&self, seqs: Vec<u64>) -> Read<Vec<(u64, EventIngested)>>;

    /// The newest sequence number handed out.
    async fn last_seq(&self) -> Read<u64>;

    /// Where delivery `d` of `webhook` stands, if there is one.
    async fn delivery(&self, d: DeliveryRef, webhook: &WebhookId) -> Read<Option<DeliveryRow>>;

    /// Up to `max` of the account's events, newest first, below sequence number `before`.
    async fn events_before(&self, account: &AccountId, before: Option<u64>, max: usize) -> Read<Vec<EventEntry>>;

    /// Up to `max` of the webhook's deliveries, newest first, of events below `before`.
    async fn deliveries_before(&self, webhook: &WebhookId, before: Option<u64>, max: usize) -> Read<Vec<IntakeEntry>>;

    /// The webhook's first `n` unfinished deliveries, in due order, and where the next read
    /// of its new deliveries starts (hand it back as `from`; `None` starts from what the
    /// backend remembers).
    async fn due_window(&self, webhook: &WebhookId, n: usize, from: Option<u64>) -> Read<(Vec<Queued>, u64)>;

    /// The account's activity per minute (minutes `from..=to` since the epoch), oldest first;
    /// minutes with none are absent.
    async fn counters(&self, account: &AccountId, from: u64, to: u64) -> Read<Vec<(u64, Counters)>>;

    /// The event names the account has sent, in name order, after `after`, at most `limit`.
    async fn event_names(&self, account: &AccountId, after: Option<String>, limit: usize) -> Read<Vec<String>>;

    /// Bytes the stored state takes (0 if the backend cannot tell).
    fn size_on_disk(&self) -> u64;

    /// Commits what was handed over and stops taking writes, waiting at most `grace`; later
    /// appends fail with [`AppendError::Closed`]. Blocks: call it off the async threads.
    fn close(&self, grace: std::time::Duration);
}
