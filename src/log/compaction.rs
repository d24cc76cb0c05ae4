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
use super::record::{Record, Stored};
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
/// leaving them where it stopped).
pub(crate) fn step(
    tree: &sled::Tree,
    policy: &CompactionPolicy,
    now: Millis,
    budget: usize,
    cursors: &mut Cursors,
) -> Result<Staged, RowsError> {
    let mut txn = Txn::new(tree);
    let mut report = CompactionReport { done: true, ..Default::default() };
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
            report.done = false;
            break;
        }
        examined += 1;
        pages::remove(&mut txn, seq)?;
        txn.delete(key.to_vec());
        report.removed_records += 1;
    }

    // Event histories, oldest first.
    for item in pages::iter(tree, cursors.log.take().unwrap_or(0)) {
        let (seq, value) = match item {
            Ok(entry) => entry,
            // A damaged page is left for an operator (`herald verify` names it).
            Err(_) => continue,
        };
        if examined >= budget {
            cursors.log = Some(seq);
            report.done = false;
            break;
        }
        examined += 1;
        let Ok(Record::EventIngested(event)) = Record::decode(&value) else { continue };
        if event.at > cutoff {
            break;
        }
        remove_event_if_done(&mut txn, policy, now, seq, &event, &mut report)?;
    }

    let batch = (!txn.is_empty()).then(|| txn.into_parts());
    Ok(Staged { report, batch })
}

/// Removes the history of the event at `seq` if all of it may go.
fn remove_event_if_done(
    txn: &mut Txn<'_>,
    policy: &CompactionPolicy,
    now: Millis,
    seq: u64,
    event: &super::record::EventIngested,
    report: &mut CompactionReport,
) -> Result<(), RowsError> {
    if event.idempotency_key.is_some() && event.at.saturating_add(ms(policy.idempotency_window)) > now {
        return Ok(());
    }
    let mut rows = Vec::with_capacity(event.webhooks.len());
    for (index, webhook) in event.webhooks.iter().enumerate() {
        let d = DeliveryRef { seq, index: index as u16 };
        let Some(row) = txn.get_row::<DeliveryRow>(&keys::delivery(d))? else { return Ok(()) };
        let keep = match row.state {
            DeliveryState::Succeeded => policy.retention,
            DeliveryState::Dead(_) => policy.dead_retention,
            _ => return Ok(()),
        };
        let Some(finished) = row.finished_at else { return Ok(()) };
        if finished.saturating_add(ms(keep)) > now {
            return Ok(());
        }
        let status: StatusRow = txn.get_row(&keys::status(webhook))?.unwrap_or_default();
        if row.seqs.contains(&status.status_seq) {
            return Ok(());
        }
        rows.push((d, row));
    }
    pages::remove(txn, seq)?;
    index::remove_event(txn, &event.account_id, seq)?;
    report.removed_records += 1;
    report.removed_events += 1;
    if let Some(key) = &event.idempotency_key {
        let ikey = keys::idempotency(&event.account_id, key);
        if txn.get_row::<IdempotencyRow>(&ikey)?.is_some_and(|i| i.seq == seq) {
            txn.delete(ikey);
        }
    }
    for (d, row) in rows {
        for s in &row.seqs {
            pages::remove(txn, *s)?;
        }
        report.removed_records += row.seqs.len() as u64;
        report.removed_deliveries += 1;
        txn.delete(keys::delivery(d));
        projection::remove_intake(txn, &row.webhook_id, d)?;
        if matches!(row.state, DeliveryState::Dead(_)) {
            projection::update_status(txn, &row.webhook_id, |st| st.dead = st.dead.saturating_sub(1))?;
        }
    }
    Ok(())
}
