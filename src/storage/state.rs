//! What a backend reads back: the state the records fold to, as typed values. Every backend
//! answers with these; none of them says how it is stored.

use crate::model::*;
use serde::{Deserialize, Serialize};

/// A webhook as the projection keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookRow {
    /// Shared with the catalog's readers and the webhook's actor (stored as a plain
    /// `Webhook`: serde writes an `Arc<T>` as its `T`).
    pub webhook: std::sync::Arc<Webhook>,
    /// The record that last defined the webhook; older ones are superseded.
    pub seq: u64,
    pub deleted_at: Option<Millis>,
}

/// A webhook's health and counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StatusRow {
    pub status: WebhookStatus,
    /// The record that last set `status`: compaction keeps it, or a fold of what remains
    /// would show an older status.
    pub status_seq: u64,
    pub pending: u64,
    pub dead: u64,
}

/// What a webhook's retry queue holds for one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    /// Attempts made so far.
    pub attempts: u32,
    /// Attempts made before the latest (re-)queue: the budget of `1 + max_retries` counts
    /// from here.
    pub base_attempts: u32,
    /// When it was queued or re-queued: start of its TTL.
    pub queued_at: Millis,
}

/// A delivery that has left intake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRow {
    pub webhook_id: WebhookId,
    pub state: DeliveryState,
    pub attempts: u32,
    pub base_attempts: u32,
    pub queued_at: Millis,
    /// While unfinished: when it is due (its `q` key, or its ingest time in intake).
    pub next_due: Option<Millis>,
    pub finished_at: Option<Millis>,
    /// Every record about this delivery after its ingest: attempts, deaths, re-queues.
    pub seqs: Vec<u64>,
    /// Whether it still sits in intake (no `q` entry): true only before it has a row, so
    /// always false in a stored row.
    #[serde(skip)]
    pub in_intake: bool,
}

impl DeliveryRow {
    /// A delivery still in intake, as its intake entry shows it.
    pub fn from_intake(webhook_id: WebhookId, at: Millis) -> Self {
        Self {
            webhook_id,
            state: DeliveryState::Pending,
            attempts: 0,
            base_attempts: 0,
            queued_at: at,
            next_due: Some(at),
            finished_at: None,
            seqs: Vec::new(),
            in_intake: true,
        }
    }

    pub fn queue_entry(&self) -> QueueEntry {
        QueueEntry { attempts: self.attempts, base_attempts: self.base_attempts, queued_at: self.queued_at }
    }
}

/// One delivery in an intake chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntakeEntry {
    pub delivery: DeliveryRef,
    /// Ingest time: first due time and start of the TTL.
    pub at: Millis,
}

/// An unfinished delivery, as a webhook's actor takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queued {
    pub delivery: DeliveryRef,
    pub due: Millis,
    pub entry: QueueEntry,
}

/// One event in its account's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventEntry {
    pub seq: u64,
    /// Ingest time.
    pub at: Millis,
    /// [`name_hash`] of the event name: filters by name without reading the record.
    pub name_hash: u32,
    /// How many deliveries the event owes.
    pub deliveries: u16,
}

/// A short hash of an event name ([`EventEntry::name_hash`]): a filter by name, confirmed
/// against the record.
pub fn name_hash(name: &str) -> u32 {
    crc32fast::hash(name.as_bytes())
}

/// One account's activity in one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub events: u64,
    pub attempts: u64,
    pub succeeded: u64,
}

/// The minute a time falls in (minutes since the epoch), as [`Counters`] are kept.
pub fn minute(at: Millis) -> u64 {
    at / 60_000
}
