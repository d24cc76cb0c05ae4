//! Retention compaction: removes finished history so the disk stays bounded.
//!
//! The unit removed is an event's whole history: its `EventIngested` record, every record
//! about its deliveries, their rows and their intake entries. It goes only when every
//! delivery of the event is finished and past its retention (`retention` for succeeded ones,
//! `dead_retention` for dead letters), the event's idempotency key is out of its window, and
//! none of its records is the one that set a webhook's current status. Webhook records
//! replaced by a newer one go once they are older than `retention`.
//!
//! Compaction walks the log from its oldest record and stops at the first event younger
//! than `retention`; what it must keep it steps over, and a cursor lets the next step go on
//! from there, so kept history never stalls the removal of what follows it.
//!
//! Invariant: a removal takes records and the rows they produced together, in one batch, so
//! `fold(remaining records) == projection` keeps holding. Compaction runs on the writer
//! thread, between group commits, and never races an append: a step only stages its
//! removals, and the writer admits, applies and flushes them as it does a group (so a step
//! on a full disk fails like any other write, cleanly). It reads the clock, which is fine:
//! it removes history, it never decides what the history says.

use super::index;
use super::keys;
use super::pages;
use super::projection::{self, IdempotencyRow};
use super::record::{EventIngested, HistoryRemoved, Record, Stored};
use super::rows::{Rows, RowsError, Txn};
use crate::model::{DeliveryRef, DeliveryState, Millis};
use crate::storage::{DeliveryRow, StatusRow};
use std::collections::BTreeMap;
use std::time::Duration;

/// Most records one compaction step examines before it lets appends in.
pub const STEP_RECORDS: usize = 4_000;

/// How long finished history is kept, and how often compaction runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionPolicy {
    pub retention: Duration,
    pub dead_retention: Duration,
    pub idempotency_window: Duration,
    pub interval: Duration,
}

/// What one compaction run removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionReport {
    pub removed_records: u64,
    pub removed_events: u64,
    pub removed_deliveries: u64,
    /// Whether everything due was examined (else another step follows soon).
    pub done: bool,
}

fn ms(d: Duration) -> Millis {
    d.as_millis().min(u64::MAX as u128) as Millis
}

/// Where the last step stopped, so the next goes on from there.
#[derive(Debug, Default)]
pub(crate) struct Cursors {
    log: Option<u64>,
    superseded: Option<Vec<u8>>,
}

/// The rows a step removes (`None`: a deletion), for the catalog.
pub(crate) type Removals = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// One step's removals, staged: the writer admits, applies and flushes them like a group.
pub(crate) struct Staged {
    pub report: CompactionReport,
    /// `None` when the step found nothing to remove.
    pub batch: Option<(sled::Batch, Removals)>,
}

/// Stages one bounded step of compaction over `tree`, continuing from `cursors` (and
/// leaving them where it stopped): what [`decide`] picks, removed by [`remove`].
pub(crate) fn step(
    tree: &sled::Tree,
    policy: &CompactionPolicy,
    now: Millis,
    budget: usize,
    cursors: &mut Cursors,
) -> Result<Staged, RowsError> {
    let mut txn = Txn::new(tree);
    let (done, removal) = decide(&txn, policy, now, budget, cursors)?;
    let mut report = CompactionReport { done, ..Default::default() };
    remove(&mut txn, &removal, &mut report)?;
    let batch = (!txn.is_empty()).then(|| txn.into_parts());
    Ok(Staged { report, batch })
}

/// Picks what one bounded step may remove as of `now`, reading the rows through `txn` (so a
/// cluster node decides on its fold with other nodes' records staged in it), continuing
/// from `cursors`. Returns whether everything due was examined, and the removal.
pub(crate) fn decide(
    txn: &Txn<'_>,
    policy: &CompactionPolicy,
    now: Millis,
    budget: usize,
    cursors: &mut Cursors,
) -> Result<(bool, HistoryRemoved), RowsError> {
    let tree = txn.tree();
    let mut removal = HistoryRemoved { at: now, ..Default::default() };
    let mut done = true;
    let mut examined = 0usize;
    let cutoff = now.saturating_sub(ms(policy.retention));

    // Webhook records a newer one replaced.
    let start = cursors.superseded.take().unwrap_or_else(|| vec![keys::SUPERSEDED]);
    for item in tree.range(start..) {
        let (key, _) = item?;
        if key.first() != Some(&keys::SUPERSEDED) {
            break;
        }
        let Some((at, seq)) = keys::superseded_parts(&key) else { continue };
        if at > cutoff {
            break;
        }
        if examined >= budget {
            cursors.superseded = Some(key.to_vec());
            done = false;
            break;
        }
        examined += 1;
        removal.superseded.push((at, seq));
    }

    // Event histories (and older removal records), oldest first.
    for item in pages::iter(tree, cursors.log.take().unwrap_or(0)) {
        let (seq, value) = match item {
            Ok(entry) => entry,
            // A damaged page is left for an operator (`herald verify` names it).
            Err(_) => continue,
        };
        if examined >= budget {
            cursors.log = Some(seq);
            done = false;
            break;
        }
        examined += 1;
        match Record::decode(&value) {
            Ok(Record::EventIngested(event)) => {
                if event.at > cutoff {
                    break;
                }
                if event_may_go(txn, policy, now, seq, &event)? {
                    removal.events.push(seq);
                }
            }
            Ok(Record::HistoryRemoved(old)) if old.at <= cutoff => removal.records.push(seq),
            _ => {}
        }
    }
    Ok((done, removal))
}

/// Whether the whole history of the event at `seq` may go: every delivery finished and
/// past its retention, its idempotency key out of its window, and none of its records the
/// one that set its webhook's current status.
fn event_may_go(
    rows: &Txn<'_>,
    policy: &CompactionPolicy,
    now: Millis,
    seq: u64,
    event: &EventIngested,
) -> Result<bool, RowsError> {
    if event.idempotency_key.is_some() && event.at.saturating_add(ms(policy.idempotency_window)) > now {
        return Ok(false);
    }
    for (index, webhook) in event.webhooks.iter().enumerate() {
        let d = DeliveryRef { seq, index: index as u16 };
        let Some(row) = rows.get_row::<DeliveryRow>(&keys::delivery(d))? else { return Ok(false) };
        let keep = match row.state {
            DeliveryState::Succeeded => policy.retention,
            DeliveryState::Dead(_) => policy.dead_retention,
            _ => return Ok(false),
        };
        let Some(finished) = row.finished_at else { return Ok(false) };
        if finished.saturating_add(ms(keep)) > now {
            return Ok(false);
        }
        let status: StatusRow = rows.get_row(&keys::status(webhook))?.unwrap_or_default();
        if row.seqs.contains(&status.status_seq) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Stages the removal of what `removal` lists — records and the rows they produced
/// together — and counts it in `report`. Returns the sequence numbers of the records
/// removed. Whatever is already gone is stepped over, and a delivery this fold still has
/// unfinished (a node that fell behind the removal's own decision) leaves its queue and the
/// pending count with it, so `fold(remaining records) == rows` holds either way.
pub(crate) fn remove(
    txn: &mut Txn<'_>,
    removal: &HistoryRemoved,
    report: &mut CompactionReport,
) -> Result<Vec<u64>, RowsError> {
    let mut removed = Vec::new();
    for &(at, seq) in &removal.superseded {
        pages::remove(txn, seq)?;
        txn.delete(keys::superseded(at, seq));
        removed.push(seq);
    }
    for &seq in &removal.records {
        pages::remove(txn, seq)?;
        removed.push(seq);
    }
    for &seq in &removal.events {
        remove_event(txn, seq, &mut removed, report)?;
    }
    report.removed_records += removed.len() as u64;
    Ok(removed)
}

/// Removes the whole history of the event at `seq`, if this fold holds it.
fn remove_event(
    txn: &mut Txn<'_>,
    seq: u64,
    removed: &mut Vec<u64>,
    report: &mut CompactionReport,
) -> Result<(), RowsError> {
    let Some(bytes) = pages::read(txn.tree(), seq)? else { return Ok(()) };
    let Ok(Record::EventIngested(event)) = Record::decode(&bytes) else { return Ok(()) };
    for (index, webhook) in event.webhooks.iter().enumerate() {
        let d = DeliveryRef { seq, index: index as u16 };
        let Some(mut row) = projection::load_delivery(&*txn, d, webhook)? else { continue };
        for s in &row.seqs {
            pages::remove(txn, *s)?;
            removed.push(*s);
        }
        let dead = matches!(row.state, DeliveryState::Dead(_));
        let unfinished = !row.state.is_finished();
        if unfinished {
            projection::leave_queue(txn, d, &mut row);
        }
        if dead || unfinished {
            projection::update_status(txn, webhook, |st| {
                st.dead = st.dead.saturating_sub(u64::from(dead));
                st.pending = st.pending.saturating_sub(u64::from(unfinished));
            })?;
        }
        txn.delete(keys::delivery(d));
        projection::remove_intake(txn, webhook, d)?;
        report.removed_deliveries += 1;
    }
    pages::remove(txn, seq)?;
    removed.push(seq);
    index::remove_event(txn, &event.account_id, seq)?;
    report.removed_events += 1;
    if let Some(key) = &event.idempotency_key {
        let ikey = keys::idempotency(&event.account_id, key);
        if txn.get_row::<IdempotencyRow>(&ikey)?.is_some_and(|i| i.seq == seq) {
            txn.delete(ikey);
        }
    }
    Ok(())
}
