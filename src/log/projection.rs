//! The projection: state as a fold of the log. [`apply`] turns one record into row changes.
//!
//! Invariants:
//! - `apply` is deterministic and total: the same records in the same order give the same
//!   rows, whatever the clock, and a record whose subject is gone (compacted or deleted)
//!   changes nothing rather than failing. Whether a record *may* be appended now is decided
//!   before, by the writer's preconditions, not here.
//! - Writes are upserts keyed by the record's subject, so a log from which compaction has
//!   removed finished history still folds to exactly the rows the live projection keeps:
//!   `fold(remaining records) == projection` at every commit (checked by `verify`).
//! - A delivery has a `d` row only once it left its first state (attempted, killed);
//!   before that its `q` entry, due at its event's ingest time, is all there is.
//! - `StatusRow::pending` counts the webhook's `q` entries; `StatusRow::dead` its kept dead
//!   letters.

use super::keys::{self, Finished};
use super::record::{AttemptFinished, EventIngested, Record};
use super::rows::{Rows, RowsError};
use crate::model::*;
use serde::{Deserialize, Serialize};

/// A webhook as the projection keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookRow {
    pub webhook: Webhook,
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

/// An event's place in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRow {
    pub seq: u64,
    pub at: Millis,
    pub deliveries: u32,
}

/// What a webhook's queue holds for one unfinished delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    /// The `EventIngested` record holding the body.
    pub event_seq: u64,
    /// Attempts made so far (0 when new).
    pub attempts: u32,
    /// Attempts made before the latest (re-)queue: the budget of `1 + max_retries` counts
    /// from here.
    pub base_attempts: u32,
    /// When it was queued or re-queued: start of its TTL.
    pub queued_at: Millis,
}

/// A delivery that has left its first state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRow {
    pub webhook_id: WebhookId,
    pub event_seq: u64,
    pub state: DeliveryState,
    pub attempts: u32,
    pub base_attempts: u32,
    pub queued_at: Millis,
    /// While unfinished: when it is due (its `q` key).
    pub next_due: Option<Millis>,
    pub finished_at: Option<Millis>,
    /// Every record about this delivery after its ingest: attempts, deaths, re-queues.
    pub seqs: Vec<u64>,
}

impl DeliveryRow {
    fn from_queue(webhook_id: WebhookId, due: Millis, q: QueueEntry) -> Self {
        Self {
            webhook_id,
            event_seq: q.event_seq,
            state: if q.attempts == q.base_attempts {
                DeliveryState::Pending
            } else {
                DeliveryState::Retrying
            },
            attempts: q.attempts,
            base_attempts: q.base_attempts,
            queued_at: q.queued_at,
            next_due: Some(due),
            finished_at: None,
            seqs: Vec::new(),
        }
    }

    fn queue_entry(&self) -> QueueEntry {
        QueueEntry {
            event_seq: self.event_seq,
            attempts: self.attempts,
            base_attempts: self.base_attempts,
            queued_at: self.queued_at,
        }
    }
}

/// An idempotency key claimed by an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRow {
    pub event_id: EventId,
    pub request_hash: [u8; 32],
    pub at: Millis,
    pub seq: u64,
}

/// The due time of a delivery that has no row yet: its event's ingest time, which is the
/// time in the event id.
pub fn first_due(id: DeliveryId) -> Millis {
    ulid::Ulid(id.event).timestamp_ms()
}

/// Where a delivery stands now, from its row or, before it has one, from its queue entry.
pub fn load_delivery<R: Rows>(
    rows: &R,
    id: DeliveryId,
    webhook: &WebhookId,
) -> Result<Option<DeliveryRow>, RowsError> {
    if let Some(row) = rows.get_row::<DeliveryRow>(&keys::delivery(id))? {
        return Ok(Some(row));
    }
    let due = first_due(id);
    Ok(rows
        .get_row::<QueueEntry>(&keys::queue(webhook, due, id))?
        .map(|q| DeliveryRow::from_queue(webhook.clone(), due, q)))
}

fn status<R: Rows>(rows: &R, webhook: &WebhookId) -> Result<StatusRow, RowsError> {
    Ok(rows.get_row(&keys::status(webhook))?.unwrap_or_default())
}

/// Applies one record at `seq` to the rows.
pub fn apply<R: Rows>(rows: &mut R, seq: u64, record: &Record) -> Result<(), RowsError> {
    match record {
        Record::AdminTokenSet { hash, .. } => rows.put(keys::ADMIN_TOKEN.to_vec(), hash.to_vec()),
        Record::AccountCreated { account } => rows.put_row(keys::account(&account.id), account)?,
        Record::AccountDeleted { account_id, at } => delete_account(rows, account_id, *at)?,
        Record::ApiKeyCreated { key } => {
            rows.put_row(keys::api_key(&key.id), key)?;
            rows.put(keys::account_key(&key.account_id, &key.id), Vec::new());
        }
        Record::ApiKeyRevoked { key_id, at } => revoke_key(rows, key_id, *at)?,
        Record::WebhookCreated { webhook }
        | Record::WebhookUpdated { webhook }
        | Record::SecretRotated { webhook } => define_webhook(rows, seq, webhook)?,
        Record::WebhookDeleted { webhook_id, at } => delete_webhook(rows, webhook_id, *at)?,
        Record::EventIngested(event) => ingest(rows, seq, event)?,
        Record::AttemptFinished(attempt) => attempt_finished(rows, seq, attempt)?,
        Record::DeliveryDead {
            delivery_id,
            webhook_id,
            reason,
            at,
        } => {
            if let Some(mut row) = load_delivery(rows, *delivery_id, webhook_id)? {
                if !row.state.is_finished() {
                    row.seqs.push(seq);
                    kill(rows, *delivery_id, &mut row, reason.clone(), *at)?;
                }
            }
        }
        Record::DeliveryRequeued {
            delivery_id,
            webhook_id,
            at,
        } => requeue(rows, seq, *delivery_id, webhook_id, *at)?,
        Record::WebhookStatusSet {
            webhook_id,
            status: new_status,
            ..
        } => {
            let mut st = status(rows, webhook_id)?;
            st.status = new_status.clone();
            st.status_seq = seq;
            rows.put_row(keys::status(webhook_id), &st)?;
        }
    }
    Ok(())
}

fn define_webhook<R: Rows>(rows: &mut R, seq: u64, webhook: &Webhook) -> Result<(), RowsError> {
    let key = keys::webhook(&webhook.id);
    if let Some(old) = rows.get_row::<WebhookRow>(&key)? {
        if old.deleted_at.is_some() {
            return Ok(());
        }
        if old.seq != seq {
            rows.put(keys::superseded(webhook.updated_at, old.seq), Vec::new());
        }
    }
    rows.put_row(
        key,
        &WebhookRow {
            webhook: webhook.clone(),
            seq,
            deleted_at: None,
        },
    )?;
    rows.put(
        keys::account_webhook(&webhook.account_id, &webhook.id),
        Vec::new(),
    );
    if rows.get(&keys::status(&webhook.id))?.is_none() {
        rows.put_row(keys::status(&webhook.id), &StatusRow::default())?;
    }
    Ok(())
}

fn delete_webhook<R: Rows>(rows: &mut R, id: &WebhookId, at: Millis) -> Result<(), RowsError> {
    let key = keys::webhook(id);
    let Some(mut row) = rows.get_row::<WebhookRow>(&key)? else {
        return Ok(());
    };
    if row.deleted_at.is_some() {
        return Ok(());
    }
    row.deleted_at = Some(at);
    rows.delete(keys::account_webhook(&row.webhook.account_id, id));
    rows.put_row(key, &row)?;
    for (qkey, _) in rows.scan(&keys::queue_of(id), usize::MAX)? {
        let Some((_, delivery)) = keys::queue_parts(&qkey) else {
            continue;
        };
        if let Some(mut d) = load_delivery(rows, delivery, id)? {
            kill(rows, delivery, &mut d, DeadReason::Deleted, at)?;
        }
    }
    Ok(())
}

fn delete_account<R: Rows>(rows: &mut R, id: &AccountId, at: Millis) -> Result<(), RowsError> {
    let key = keys::account(id);
    let Some(mut account) = rows.get_row::<Account>(&key)? else {
        return Ok(());
    };
    if account.deleted_at.is_some() {
        return Ok(());
    }
    account.deleted_at = Some(at);
    rows.put_row(key, &account)?;
    for (wkey, _) in rows.scan(&keys::account_webhooks(id), usize::MAX)? {
        if let Some(webhook) = keys::webhook_of_account_key(&wkey) {
            delete_webhook(rows, &webhook, at)?;
        }
    }
    let prefix = keys::account_keys(id);
    for (kkey, _) in rows.scan(&prefix, usize::MAX)? {
        let Ok(text) = std::str::from_utf8(&kkey[prefix.len()..]) else {
            continue;
        };
        if let Ok(key_id) = KeyId::parse(text) {
            revoke_key(rows, &key_id, at)?;
        }
    }
    Ok(())
}

fn revoke_key<R: Rows>(rows: &mut R, id: &KeyId, at: Millis) -> Result<(), RowsError> {
    let key = keys::api_key(id);
    if let Some(mut k) = rows.get_row::<ApiKey>(&key)? {
        if k.revoked_at.is_none() {
            k.revoked_at = Some(at);
            rows.put_row(key, &k)?;
        }
    }
    Ok(())
}

fn ingest<R: Rows>(rows: &mut R, seq: u64, event: &EventIngested) -> Result<(), RowsError> {
    rows.put_row(
        keys::event(&event.account_id, &event.id),
        &EventRow {
            seq,
            at: event.at,
            deliveries: event.webhooks.len() as u32,
        },
    )?;
    if let Some(key) = &event.idempotency_key {
        let row = IdempotencyRow {
            event_id: event.id.clone(),
            request_hash: event.request_hash,
            at: event.at,
            seq,
        };
        rows.put_row(keys::idempotency(&event.account_id, key), &row)?;
    }
    let entry = QueueEntry {
        event_seq: seq,
        attempts: 0,
        base_attempts: 0,
        queued_at: event.at,
    };
    for (index, webhook) in event.webhooks.iter().enumerate() {
        let id = DeliveryId::new(&event.id, index);
        rows.put_row(keys::queue(webhook, first_due(id), id), &entry)?;
        let mut st = status(rows, webhook)?;
        st.pending += 1;
        rows.put_row(keys::status(webhook), &st)?;
    }
    Ok(())
}

fn attempt_finished<R: Rows>(rows: &mut R, seq: u64, a: &AttemptFinished) -> Result<(), RowsError> {
    let Some(mut row) = load_delivery(rows, a.delivery_id, &a.webhook_id)? else {
        return Ok(());
    };
    if row.state.is_finished() {
        return Ok(());
    }
    row.attempts = a.attempt;
    row.seqs.push(seq);
    match &a.next {
        NextStep::Succeeded => finish(
            rows,
            a.delivery_id,
            &mut row,
            DeliveryState::Succeeded,
            a.at,
        )?,
        NextStep::Dead(reason) => finish(
            rows,
            a.delivery_id,
            &mut row,
            DeliveryState::Dead(reason.clone()),
            a.at,
        )?,
        NextStep::RetryAt(due) => {
            if let Some(old) = row.next_due {
                rows.delete(keys::queue(&a.webhook_id, old, a.delivery_id));
            }
            row.state = DeliveryState::Retrying;
            row.next_due = Some(*due);
            rows.put_row(
                keys::queue(&a.webhook_id, *due, a.delivery_id),
                &row.queue_entry(),
            )?;
            rows.put_row(keys::delivery(a.delivery_id), &row)?;
        }
    }
    let mut st = status(rows, &a.webhook_id)?;
    st.status = a.status.clone();
    st.status_seq = seq;
    rows.put_row(keys::status(&a.webhook_id), &st)
}

fn kill<R: Rows>(
    rows: &mut R,
    id: DeliveryId,
    row: &mut DeliveryRow,
    reason: DeadReason,
    at: Millis,
) -> Result<(), RowsError> {
    finish(rows, id, row, DeliveryState::Dead(reason), at)
}

/// Takes an unfinished delivery out of its queue into a final state.
fn finish<R: Rows>(
    rows: &mut R,
    id: DeliveryId,
    row: &mut DeliveryRow,
    state: DeliveryState,
    at: Millis,
) -> Result<(), RowsError> {
    if let Some(due) = row.next_due.take() {
        rows.delete(keys::queue(&row.webhook_id, due, id));
    }
    let mut st = status(rows, &row.webhook_id)?;
    st.pending = st.pending.saturating_sub(1);
    let kind = if matches!(state, DeliveryState::Dead(_)) {
        st.dead += 1;
        Finished::Dead
    } else {
        Finished::Succeeded
    };
    rows.put_row(keys::status(&row.webhook_id), &st)?;
    row.state = state;
    row.finished_at = Some(at);
    rows.put(keys::purge(kind, at, id), Vec::new());
    rows.put_row(keys::delivery(id), row)
}

fn requeue<R: Rows>(
    rows: &mut R,
    seq: u64,
    id: DeliveryId,
    webhook: &WebhookId,
    at: Millis,
) -> Result<(), RowsError> {
    let Some(mut row) = rows.get_row::<DeliveryRow>(&keys::delivery(id))? else {
        return Ok(());
    };
    if !matches!(row.state, DeliveryState::Dead(_)) {
        return Ok(());
    }
    if let Some(finished) = row.finished_at.take() {
        rows.delete(keys::purge(Finished::Dead, finished, id));
    }
    row.state = DeliveryState::Pending;
    row.base_attempts = row.attempts;
    row.queued_at = at;
    row.next_due = Some(at);
    row.seqs.push(seq);
    rows.put_row(keys::queue(webhook, at, id), &row.queue_entry())?;
    rows.put_row(keys::delivery(id), &row)?;
    let mut st = status(rows, webhook)?;
    st.dead = st.dead.saturating_sub(1);
    st.pending += 1;
    rows.put_row(keys::status(webhook), &st)
}
