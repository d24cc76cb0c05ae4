//! The chunked indexes lists are read from, newest first: each account's events (`e`) and
//! each webhook's deliveries (its intake chunks, `n`).
//!
//! Invariants:
//! - An account's event chunk holds one fixed-size entry per `EventIngested` record of the
//!   account among 64 consecutive sequence numbers, in sequence order. Like intake chunks
//!   it is written once per group commit, not once per event, and compaction removes an
//!   entry together with the event's records, so the index is part of the projection
//!   (`verify` compares it).
//! - An intake entry stays in its chunk after the delivery left intake (the `d` row is then
//!   the truth), so a webhook's intake chunks list every delivery it was ever owed that
//!   compaction has not removed.
//! - Readers here only read: they walk the tree backwards from a position, so a page of a
//!   list costs a few chunk reads whatever the history's length.

use super::codec::CodecError;
use super::keys;
use super::projection::intake_entries;
use super::rows::{decode_entries, retain_entries, show_key, FixedEntry, Rows, RowsError};
use crate::model::{AccountId, WebhookId};
pub(crate) use crate::storage::{name_hash, EventEntry, IntakeEntry};

impl FixedEntry for EventEntry {
    const LEN: usize = 22;

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.at.to_be_bytes());
        out.extend_from_slice(&self.name_hash.to_be_bytes());
        out.extend_from_slice(&self.deliveries.to_be_bytes());
    }

    fn read(e: &[u8]) -> Option<Self> {
        Some(EventEntry {
            seq: u64::from_be_bytes(e.get(..8)?.try_into().ok()?),
            at: u64::from_be_bytes(e.get(8..16)?.try_into().ok()?),
            name_hash: u32::from_be_bytes(e.get(16..20)?.try_into().ok()?),
            deliveries: u16::from_be_bytes(e.get(20..22)?.try_into().ok()?),
        })
    }
}

/// Decodes an account event chunk.
pub fn event_entries(bytes: &[u8]) -> Result<Vec<EventEntry>, CodecError> {
    decode_entries(bytes)
}

/// Adds an event to its account's index (the fold of `EventIngested`).
pub(super) fn add_event<R: Rows>(rows: &mut R, account: &AccountId, entry: EventEntry) -> Result<(), RowsError> {
    rows.append_entry(keys::account_events(account, entry.seq), &entry.to_bytes())
}

/// Removes an event from its account's index (compaction).
pub(super) fn remove_event<R: Rows>(rows: &mut R, account: &AccountId, seq: u64) -> Result<(), RowsError> {
    retain_entries(rows, keys::account_events(account, seq), |e: &EventEntry| e.seq != seq)
}

/// Walks chunks under `prefix` backwards from the one holding `before` (exclusive), decoding
/// each with `decode` and yielding its entries newest first.
fn newest_first<'a, T: 'a>(
    tree: &'a sled::Tree,
    prefix: Vec<u8>,
    before: Option<u64>,
    decode: fn(&[u8]) -> Result<Vec<T>, CodecError>,
    seq_of: fn(&T) -> u64,
) -> impl Iterator<Item = Result<T, RowsError>> + 'a {
    let mut end = prefix.clone();
    match before {
        Some(seq) => end.extend_from_slice(&(seq / keys::INTAKE_CHUNK).to_be_bytes()),
        None => end.extend_from_slice(&u64::MAX.to_be_bytes()),
    }
    tree.range(prefix..=end).rev().flat_map(move |item| -> Vec<Result<T, RowsError>> {
        let (k, v) = match item {
            Ok(kv) => kv,
            Err(e) => return vec![Err(e.into())],
        };
        match decode(&v) {
            Ok(mut entries) => {
                entries.retain(|e| before.is_none_or(|b| seq_of(e) < b));
                entries.into_iter().rev().map(Ok).collect()
            }
            Err(source) => vec![Err(RowsError::Codec { key: show_key(&k), source })],
        }
    })
}

/// The account's events, newest first, starting below sequence number `before`.
pub fn events_newest_first<'a>(
    tree: &'a sled::Tree,
    account: &AccountId,
    before: Option<u64>,
) -> impl Iterator<Item = Result<EventEntry, RowsError>> + 'a {
    newest_first(tree, keys::account_events_of(account), before, event_entries, |e| e.seq)
}

/// The webhook's deliveries (its intake entries), newest first, starting below record
/// `before`. Entries of one record come out in descending index order.
pub fn deliveries_newest_first<'a>(
    tree: &'a sled::Tree,
    webhook: &WebhookId,
    before: Option<u64>,
) -> impl Iterator<Item = Result<IntakeEntry, RowsError>> + 'a {
    newest_first(tree, keys::intake_of(webhook), before, intake_entries, |e| e.delivery.seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::rows::Txn;

    #[test]
    fn events_come_back_newest_first_across_chunks_and_from_a_position() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        let (a, b) = (AccountId::default_account(), AccountId::generate());
        let mut txn = Txn::new(&tree);
        for seq in 1..=200u64 {
            let account = if seq % 3 == 0 { &b } else { &a };
            let entry = EventEntry { seq, at: 1000 + seq, name_hash: name_hash("x"), deliveries: (seq % 4) as u16 };
            add_event(&mut txn, account, entry).unwrap();
        }
        remove_event(&mut txn, &a, 100).unwrap();
        let (batch, _) = txn.into_parts();
        tree.apply_batch(batch).unwrap();

        let seqs =
            |before| -> Vec<u64> { events_newest_first(&tree, &a, before).map(|e| e.unwrap().seq).collect::<Vec<_>>() };
        let expected: Vec<u64> = (1..=200u64).rev().filter(|s| s % 3 != 0 && *s != 100).collect();
        assert_eq!(seqs(None), expected);
        assert_eq!(seqs(Some(130)), expected.iter().copied().filter(|s| *s < 130).collect::<Vec<_>>());
        assert_eq!(seqs(Some(1)), Vec::<u64>::new());
        let other: Vec<u64> = events_newest_first(&tree, &b, None).map(|e| e.unwrap().seq).collect();
        assert!(other.iter().all(|s| s % 3 == 0) && other.len() == 66);
    }
}
