//! The projection: state as a fold of the log. [`apply`] turns one record into row changes.
//!
//! Invariants:
//! - `apply` is deterministic and total: the same records in the same order give the same
//!   rows, whatever the clock and however the records were grouped into commits, and a record
//!   whose subject is gone (compacted or deleted) changes nothing rather than failing.
//!   Whether a record *may* be appended now is decided before, by the writer's
//!   preconditions, not here.
//! - Writes are upserts keyed by the record's subject, so a log from which compaction has
//!   removed finished history still folds to exactly the rows the live projection keeps:
//!   `fold(remaining records) == projection` at every commit (checked by `verify`).
//! - A new delivery is an entry in its webhook's intake chunk (`n`), shared by the 64 records
//!   around it, so ingest costs one key per event plus a few per group commit. A delivery
//!   gets a row (`d`) of its own once it leaves intake (first attempt finished, or killed);
//!   from then on the row is the truth and the intake entry only history.
//! - `StatusRow::pending` counts the webhook's unfinished deliveries; `StatusRow::dead` its
//!   kept dead letters.

use super::codec::CodecError;
use super::index;
use super::keys;
use super::record::{AttemptFinished, EventIngested, Record};
use super::rows::{decode_entries, read_entries, retain_entries, show_key, FixedEntry, Rows, RowsError};
use super::summary;
use crate::model::*;
pub(crate) use crate::storage::{DeliveryRow, IntakeEntry, StatusRow, WebhookRow};
use serde::{Deserialize, Serialize};

/// The first fields of a stored [`WebhookRow`] (bincode reads a prefix and stops): whose
/// webhook it is, without decoding the rest.
#[derive(Debug, Deserialize)]
struct WebhookRowHead {
    webhook: WebhookOwner,
}

#[derive(Debug, Deserialize)]
struct WebhookOwner {
    /// Read to reach `account_id` (fields are positional); checked by a test.
    #[cfg_attr(not(test), allow(dead_code))]
    id: WebhookId,
    account_id: AccountId,
}

/// An idempotency key claimed by an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRow {
    pub seq: u64,
    pub request_hash: [u8; 32],
    pub at: Millis,
}

impl FixedEntry for IntakeEntry {
    const LEN: usize = 18;

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.delivery.to_bytes());
        out.extend_from_slice(&self.at.to_be_bytes());
    }

    fn read(e: &[u8]) -> Option<Self> {
        Some(IntakeEntry {
            delivery: DeliveryRef::from_bytes(e.get(..10)?)?,
            at: u64::from_be_bytes(e.get(10..18)?.try_into().ok()?),
        })
    }
}

/// Decodes an intake chunk.
pub fn intake_entries(bytes: &[u8]) -> Result<Vec<IntakeEntry>, CodecError> {
    decode_entries(bytes)
}

/// Removes one delivery's entry from its intake chunk (compaction).
pub fn remove_intake<R: Rows>(rows: &mut R, webhook: &WebhookId, d: DeliveryRef) -> Result<(), RowsError> {
    retain_entries(rows, keys::intake(webhook, d.seq), |e: &IntakeEntry| e.delivery != d)
}

/// Where a delivery stands now: its row, or, while it is in intake, its intake entry.
/// `None` if there is no such delivery.
pub fn load_delivery<R: Rows>(rows: &R, d: DeliveryRef, webhook: &WebhookId) -> Result<Option<DeliveryRow>, RowsError> {
    if let Some(row) = rows.get_row::<DeliveryRow>(&keys::delivery(d))? {
        return Ok(Some(row));
    }
    let entries: Vec<IntakeEntry> = read_entries(rows, &keys::intake(webhook, d.seq))?;
    Ok(entries.iter().find(|e| e.delivery == d).map(|e| DeliveryRow::from_intake(webhook.clone(), e.at)))
}

/// Read-modify-write of a webhook's status row (created on first use).
pub(crate) fn update_status<R: Rows>(
    rows: &mut R,
    webhook: &WebhookId,
    change: impl FnOnce(&mut StatusRow),
) -> Result<(), RowsError> {
    rows.update_row(keys::status(webhook), change)
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
        Record::WebhookCreated { webhook } | Record::WebhookUpdated { webhook } | Record::SecretRotated { webhook } => {
            define_webhook(rows, seq, webhook)?
        }
        Record::WebhookDeleted { webhook_id, at } => delete_webhook(rows, webhook_id, *at)?,
        Record::EventIngested(event) => ingest(rows, seq, event)?,
        Record::AttemptFinished(attempt) => attempt_finished(rows, seq, attempt)?,
        Record::DeliveryDead { delivery, webhook_id, reason, at } => {
            if let Some(mut row) = load_delivery(rows, *delivery, webhook_id)? {
                if !row.state.is_finished() {
                    row.seqs.push(seq);
                    finish(rows, *delivery, &mut row, DeliveryState::Dead(reason.clone()), *at)?;
                }
            }
        }
        Record::DeliveryRequeued { delivery, webhook_id, at }
        | Record::DeliveryRetried { delivery, webhook_id, at } => requeue(rows, seq, *delivery, webhook_id, *at)?,
        Record::WebhookStatusSet { webhook_id, status: new_status, at } => {
            set_status(rows, seq, webhook_id, new_status, *at)?;
        }
        // Removes records, not state (the fold of what remains never had their effects):
        // the writer applies the removal itself (`compaction::remove`).
        Record::HistoryRemoved(_) => {}
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
    rows.put_row(key, &WebhookRow { webhook: std::sync::Arc::new(webhook.clone()), seq, deleted_at: None })?;
    rows.put(keys::account_webhook(&webhook.account_id, &webhook.id), Vec::new());
    if rows.get(&keys::status(&webhook.id))?.is_none() {
        rows.put_row(keys::status(&webhook.id), &StatusRow::default())?;
    }
    Ok(())
}

/// Every unfinished delivery of a webhook: its retry queue and what is left in its intake.
fn unfinished<R: Rows>(rows: &R, webhook: &WebhookId) -> Result<Vec<(DeliveryRef, DeliveryRow)>, RowsError> {
    let mut out = Vec::new();
    for (qkey, _) in rows.scan(&keys::queue_of(webhook), usize::MAX)? {
        if let Some((_, d)) = keys::queue_parts(&qkey) {
            if let Some(row) = rows.get_row::<DeliveryRow>(&keys::delivery(d))? {
                out.push((d, row));
            }
        }
    }
    for (ckey, value) in rows.scan(&keys::intake_of(webhook), usize::MAX)? {
        let entries = intake_entries(&value).map_err(|source| RowsError::Codec { key: show_key(&ckey), source })?;
        for e in entries {
            if rows.get(&keys::delivery(e.delivery))?.is_none() {
                out.push((e.delivery, DeliveryRow::from_intake(webhook.clone(), e.at)));
            }
        }
    }
    Ok(out)
}

fn delete_webhook<R: Rows>(rows: &mut R, id: &WebhookId, at: Millis) -> Result<(), RowsError> {
    let key = keys::webhook(id);
    let Some(mut row) = rows.get_row::<WebhookRow>(&key)? else { return Ok(()) };
    if row.deleted_at.is_some() {
        return Ok(());
    }
    row.deleted_at = Some(at);
    rows.delete(keys::account_webhook(&row.webhook.account_id, id));
    rows.put_row(key, &row)?;
    for (d, mut delivery) in unfinished(rows, id)? {
        finish(rows, d, &mut delivery, DeliveryState::Dead(DeadReason::Deleted), at)?;
    }
    Ok(())
}

fn delete_account<R: Rows>(rows: &mut R, id: &AccountId, at: Millis) -> Result<(), RowsError> {
    let key = keys::account(id);
    let Some(mut account) = rows.get_row::<Account>(&key)? else { return Ok(()) };
    if account.deleted_at.is_some() {
        return Ok(());
    }
    account.deleted_at = Some(at);
    rows.put_row(key, &account)?;
    for (wkey, _) in rows.scan(&keys::account_webhooks(id), usize::MAX)? {
        if let Some(webhook) = keys::id_after_separator(&wkey).and_then(|s| WebhookId::parse(s).ok()) {
            delete_webhook(rows, &webhook, at)?;
        }
    }
    for (kkey, _) in rows.scan(&keys::account_keys(id), usize::MAX)? {
        if let Some(key_id) = keys::id_after_separator(&kkey).and_then(|s| KeyId::parse(s).ok()) {
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
    if let Some(key) = &event.idempotency_key {
        let row = IdempotencyRow { seq, request_hash: event.request_hash, at: event.at };
        rows.put_row(keys::idempotency(&event.account_id, key), &row)?;
    }
    let entry = index::EventEntry {
        seq,
        at: event.at,
        name_hash: index::name_hash(&event.event),
        deliveries: event.webhooks.len().min(u16::MAX as usize) as u16,
    };
    index::add_event(rows, &event.account_id, entry)?;
    summary::event(rows, &event.account_id, &event.event, event.at)?;
    for (index, webhook) in event.webhooks.iter().enumerate() {
        let entry = IntakeEntry { delivery: DeliveryRef { seq, index: index as u16 }, at: event.at };
        rows.append_entry(keys::intake(webhook, seq), &entry.to_bytes())?;
        update_status(rows, webhook, |st| st.pending += 1)?;
    }
    Ok(())
}

fn attempt_finished<R: Rows>(rows: &mut R, seq: u64, a: &AttemptFinished) -> Result<(), RowsError> {
    let Some(mut row) = load_delivery(rows, a.delivery, &a.webhook_id)? else { return Ok(()) };
    if row.state.is_finished() {
        return Ok(());
    }
    row.attempts = a.attempt;
    row.seqs.push(seq);
    match &a.next {
        NextStep::Succeeded => finish(rows, a.delivery, &mut row, DeliveryState::Succeeded, a.at)?,
        NextStep::Dead(reason) => finish(rows, a.delivery, &mut row, DeliveryState::Dead(reason.clone()), a.at)?,
        NextStep::RetryAt(due) => {
            leave_queue(rows, a.delivery, &mut row);
            row.state = DeliveryState::Retrying;
            row.next_due = Some(*due);
            rows.put_row(keys::queue(&a.webhook_id, *due, a.delivery), &row.queue_entry())?;
            rows.put_row(keys::delivery(a.delivery), &row)?;
        }
    }
    set_status(rows, seq, &a.webhook_id, &a.status, a.at)?;
    // Only the owner is needed: decoding the whole webhook for every attempt cost the
    // writer more than the rest of this fold.
    if let Some(w) = rows.get_row::<WebhookRowHead>(&keys::webhook(&a.webhook_id))? {
        let succeeded = matches!(a.next, NextStep::Succeeded);
        summary::attempt(rows, &w.webhook.account_id, a.at, succeeded)?;
    }
    Ok(())
}

/// Sets a webhook's health. The change to disabled kills every unfinished delivery of the
/// webhook with reason `disabled` (contract §5), here in the fold, so a backlog on disk goes as
/// surely as the deliveries an actor holds in memory.
fn set_status<R: Rows>(
    rows: &mut R,
    seq: u64,
    webhook: &WebhookId,
    status: &WebhookStatus,
    at: Millis,
) -> Result<(), RowsError> {
    let was_disabled =
        rows.get_row::<StatusRow>(&keys::status(webhook))?.is_some_and(|st| st.status.state == HealthState::Disabled);
    update_status(rows, webhook, |st| {
        st.status = status.clone();
        st.status_seq = seq;
    })?;
    if status.state == HealthState::Disabled && !was_disabled {
        // The record is the webhook's, not these deliveries' (as for a deletion): compacting
        // their events' histories must not take it along.
        for (d, mut delivery) in unfinished(rows, webhook)? {
            finish(rows, d, &mut delivery, DeliveryState::Dead(DeadReason::Disabled), at)?;
        }
    }
    Ok(())
}

/// Takes the delivery out of its retry queue (a delivery in intake has no entry there).
pub(super) fn leave_queue<R: Rows>(rows: &mut R, d: DeliveryRef, row: &mut DeliveryRow) {
    if let Some(due) = row.next_due.take() {
        if !row.in_intake {
            rows.delete(keys::queue(&row.webhook_id, due, d));
        }
    }
    row.in_intake = false;
}

/// Moves an unfinished delivery into a final state.
fn finish<R: Rows>(
    rows: &mut R,
    d: DeliveryRef,
    row: &mut DeliveryRow,
    state: DeliveryState,
    at: Millis,
) -> Result<(), RowsError> {
    leave_queue(rows, d, row);
    let dead = matches!(state, DeliveryState::Dead(_));
    update_status(rows, &row.webhook_id, |st| {
        st.pending = st.pending.saturating_sub(1);
        st.dead += u64::from(dead);
    })?;
    row.state = state;
    row.finished_at = Some(at);
    rows.put_row(keys::delivery(d), row)
}

fn requeue<R: Rows>(rows: &mut R, seq: u64, d: DeliveryRef, webhook: &WebhookId, at: Millis) -> Result<(), RowsError> {
    let Some(mut row) = rows.get_row::<DeliveryRow>(&keys::delivery(d))? else { return Ok(()) };
    if !matches!(row.state, DeliveryState::Dead(_)) {
        return Ok(());
    }
    // A deleted webhook takes no work back.
    let live = rows.get_row::<WebhookRow>(&keys::webhook(webhook))?.is_some_and(|w| w.deleted_at.is_none());
    if !live {
        return Ok(());
    }
    row.state = DeliveryState::Pending;
    row.finished_at = None;
    row.base_attempts = row.attempts;
    row.queued_at = at;
    row.next_due = Some(at);
    row.seqs.push(seq);
    rows.put_row(keys::queue(webhook, at, d), &row.queue_entry())?;
    rows.put_row(keys::delivery(d), &row)?;
    update_status(rows, webhook, |st| {
        st.dead = st.dead.saturating_sub(1);
        st.pending += 1;
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::rows::{MemRows, Txn};
    use crate::storage::record::samples;

    fn event(webhooks: Vec<WebhookId>, at: Millis) -> Record {
        let event =
            EventIngested::unkeyed(AccountId::default_account(), "lead.qualified".into(), b"{}".to_vec(), webhooks, at);
        Record::EventIngested(Box::new(event))
    }

    fn attempt(delivery: DeliveryRef, webhook: &WebhookId, attempt: u32, next: NextStep, at: Millis) -> Record {
        Record::AttemptFinished(Box::new(AttemptFinished {
            delivery,
            webhook_id: webhook.clone(),
            attempt,
            started_at: at,
            at,
            outcome: AttemptOutcome {
                result: AttemptResult::HttpError,
                status_code: Some(500),
                latency_us: 1,
                error: None,
                response_excerpt: None,
                request_headers: Vec::new(),
            },
            next,
            status: WebhookStatus::default(),
        }))
    }

    /// A story of one webhook and its deliveries, and the rows it must leave.
    fn story() -> (Vec<Record>, WebhookId, WebhookId) {
        let account = AccountId::default_account();
        let a = samples::webhook(&account);
        let mut b = samples::webhook(&account);
        b.id = WebhookId::parse("wh_01JD6Z1M8Q4W9X2Y3Z4A5B6C7Z").unwrap();
        let (ai, bi) = (a.id.clone(), b.id.clone());
        let records = vec![
            Record::WebhookCreated { webhook: a },
            Record::WebhookCreated { webhook: b },
            event(vec![ai.clone(), bi.clone()], 1_000), // seq 3: deliveries (3,0)→a, (3,1)→b
            event(vec![ai.clone()], 1_001),             // seq 4: (4,0)→a
            attempt(DeliveryRef { seq: 3, index: 0 }, &ai, 1, NextStep::RetryAt(5_000), 2_000),
            attempt(DeliveryRef { seq: 3, index: 1 }, &bi, 1, NextStep::Succeeded, 2_001),
            attempt(DeliveryRef { seq: 3, index: 0 }, &ai, 2, NextStep::Dead(DeadReason::RetriesExhausted), 5_001),
            Record::DeliveryRequeued { delivery: DeliveryRef { seq: 3, index: 0 }, webhook_id: ai.clone(), at: 6_000 },
            Record::WebhookDeleted { webhook_id: ai.clone(), at: 7_000 },
        ];
        (records, ai, bi)
    }

    #[test]
    fn a_story_folds_to_the_expected_rows() {
        let (records, a, b) = story();
        let mut rows = MemRows::default();
        for (i, r) in records.iter().enumerate() {
            apply(&mut rows, i as u64 + 1, r).unwrap();
        }
        let st = |w: &WebhookId| rows.get_row::<StatusRow>(&keys::status(w)).unwrap().unwrap();
        // a: (3,0) retried, died, was re-queued, then killed by the deletion; (4,0) killed.
        assert_eq!((st(&a).pending, st(&a).dead), (0, 2));
        assert_eq!((st(&b).pending, st(&b).dead), (0, 0));
        let d30: DeliveryRow = rows.get_row(&keys::delivery(DeliveryRef { seq: 3, index: 0 })).unwrap().unwrap();
        assert_eq!(d30.state, DeliveryState::Dead(DeadReason::Deleted));
        assert_eq!((d30.attempts, d30.base_attempts, d30.queued_at), (2, 2, 6_000));
        // The deletion (seq 9) is the webhook's record, not this delivery's: compacting the
        // event's history must not take it along.
        assert_eq!(d30.seqs, vec![5, 7, 8]);
        let d31: DeliveryRow = rows.get_row(&keys::delivery(DeliveryRef { seq: 3, index: 1 })).unwrap().unwrap();
        assert_eq!(d31.state, DeliveryState::Succeeded);
        assert!(rows.scan(&keys::queue_of(&a), 10).unwrap().is_empty(), "no retry left queued");
        assert!(rows.get_row::<WebhookRow>(&keys::webhook(&a)).unwrap().unwrap().deleted_at.is_some());
    }

    #[test]
    fn a_webhook_rows_head_decodes_from_the_whole_row() {
        let account = AccountId::parse("acct_01JD6Z1M8Q4W9X2Y3Z4A5B6C7E").unwrap();
        let row = WebhookRow { webhook: std::sync::Arc::new(samples::webhook(&account)), seq: 3, deleted_at: None };
        let bytes = crate::log::codec::encode(crate::log::rows::WEBHOOK_ROW_VERSION, &row).unwrap();
        let head: WebhookRowHead = crate::log::codec::decode(crate::log::rows::WEBHOOK_ROW_VERSION, &bytes).unwrap();
        assert_eq!((head.webhook.id, head.webhook.account_id), (row.webhook.id.clone(), account));
    }

    #[test]
    fn grouping_into_commits_does_not_change_the_fold() {
        let (records, _, _) = story();
        let mut one_by_one = MemRows::default();
        for (i, r) in records.iter().enumerate() {
            apply(&mut one_by_one, i as u64 + 1, r).unwrap();
        }
        // The same records staged in a few sled batches.
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        for group in [0..3, 3..4, 4..9] {
            let mut txn = Txn::new(&tree);
            for i in group {
                apply(&mut txn, i as u64 + 1, &records[i]).unwrap();
            }
            let (batch, _) = txn.into_parts();
            tree.apply_batch(batch).unwrap();
        }
        let stored: std::collections::BTreeMap<Vec<u8>, Vec<u8>> =
            tree.iter().map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap()).collect();
        assert_eq!(stored, one_by_one.0);
    }
}
