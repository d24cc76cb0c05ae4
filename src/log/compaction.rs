//! Retention compaction: removes finished history so the disk stays bounded.
//!
//! The unit removed is an event's whole history: its `EventIngested` record, every record
//! about its deliveries, and their rows. It goes only when every delivery of the event is
//! finished and past its retention (`retention` for succeeded ones, `dead_retention` for dead
//! letters), the event's idempotency key is out of its window, and none of its records is
//! the one that set a webhook's current status. Webhook records replaced by a newer one go
//! once they are older than `retention`.
//!
//! Invariant: a removal takes records and the rows they produced together, in one batch, so
//! `fold(remaining records) == projection` keeps holding. Compaction runs on the writer
//! thread, between group commits, and never races an append. It reads the clock, which is
//! fine: it removes history, it never decides what the history says.

use super::catalog::Catalog;
use super::keys::{self, Finished};
use super::projection::{DeliveryRow, EventRow, IdempotencyRow, StatusRow, WebhookRow};
use super::record::Record;
use super::rows::{Rows, RowsError, Txn};
use super::writer::WriterState;
use crate::model::{DeliveryId, DeliveryState, EventId, Millis};
use std::collections::HashSet;
use std::time::Duration;

/// Most candidate entries one compaction step examines before it lets appends in.
pub const STEP_GROUPS: usize = 2_000;

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

/// Runs steps until compaction has examined everything due as of `now`.
pub(crate) fn run_to_end(state: &WriterState, now: Millis) -> Result<CompactionReport, RowsError> {
    let mut total = CompactionReport::default();
    let mut cursors = Cursors::default();
    loop {
        let r = step_from(state, now, STEP_GROUPS, &mut cursors)?;
        total.removed_records += r.removed_records;
        total.removed_events += r.removed_events;
        total.removed_deliveries += r.removed_deliveries;
        if r.done {
            total.done = true;
            return Ok(total);
        }
    }
}

/// Where the last step stopped in each index, so entries that must stay (an event with an
/// unfinished sibling) do not stall the ones after them.
#[derive(Debug, Default)]
pub(crate) struct Cursors {
    superseded: Option<Vec<u8>>,
    finished: [Option<Vec<u8>>; 2],
}

/// One bounded step of background compaction, continuing where the last one stopped.
pub(crate) fn step(
    state: &mut WriterState,
    now: Millis,
    budget: usize,
) -> Result<CompactionReport, RowsError> {
    let mut cursors = std::mem::take(&mut state.cursors);
    let report = step_from(state, now, budget, &mut cursors);
    state.cursors = cursors;
    report
}

fn step_from(
    state: &WriterState,
    now: Millis,
    budget: usize,
    cursors: &mut Cursors,
) -> Result<CompactionReport, RowsError> {
    let policy = &state.policy;
    let mut txn = Txn::new(&state.tree);
    let mut report = CompactionReport {
        done: true,
        ..Default::default()
    };
    let mut examined = 0usize;

    // Webhook records a newer one replaced.
    let cutoff = now.saturating_sub(ms(policy.retention));
    let start = cursors
        .superseded
        .take()
        .unwrap_or_else(|| vec![keys::SUPERSEDED]);
    for item in state.tree.range(start..).take_while(|r| {
        r.as_ref()
            .map_or(true, |(k, _)| k.first() == Some(&keys::SUPERSEDED))
    }) {
        let (key, _) = item?;
        let Some((at, seq)) = keys::superseded_parts(&key) else {
            continue;
        };
        if at > cutoff {
            break;
        }
        if examined >= budget {
            cursors.superseded = Some(key.to_vec());
            report.done = false;
            break;
        }
        examined += 1;
        txn.delete(keys::log(seq));
        txn.delete(key.to_vec());
        report.removed_records += 1;
    }

    // Finished deliveries, by event.
    let mut seen: HashSet<u128> = HashSet::new();
    for (slot, kind, keep) in [
        (0, Finished::Succeeded, policy.retention),
        (1, Finished::Dead, policy.dead_retention),
    ] {
        let cutoff = now.saturating_sub(ms(keep));
        let prefix = keys::purge_of(kind);
        let start = cursors.finished[slot]
            .take()
            .unwrap_or_else(|| prefix.clone());
        for item in state.tree.range(start..) {
            let (key, _) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            let Some((at, delivery)) = keys::purge_parts(&key) else {
                continue;
            };
            if at > cutoff {
                break;
            }
            if examined >= budget {
                cursors.finished[slot] = Some(key.to_vec());
                report.done = false;
                break;
            }
            examined += 1;
            if !seen.insert(delivery.event) {
                continue;
            }
            remove_event_if_done(&mut txn, policy, now, delivery, &mut report)?;
        }
    }

    if !txn.is_empty() {
        let (batch, changes) = txn.into_parts();
        state.tree.apply_batch(batch)?;
        state.tree.flush()?;
        Catalog::absorb_committed(&state.catalog, &changes);
    }
    Ok(report)
}

/// Removes the history of `delivery`'s event if all of it may go.
fn remove_event_if_done(
    txn: &mut Txn<'_>,
    policy: &CompactionPolicy,
    now: Millis,
    delivery: DeliveryId,
    report: &mut CompactionReport,
) -> Result<(), RowsError> {
    let Some(row) = txn.get_row::<DeliveryRow>(&keys::delivery(delivery))? else {
        return Ok(());
    };
    let Some(webhook) = txn.get_row::<WebhookRow>(&keys::webhook(&row.webhook_id))? else {
        return Ok(());
    };
    let account = webhook.webhook.account_id;
    let event_id: EventId = delivery.event_id();
    let event_key = keys::event(&account, &event_id);
    let Some(event) = txn.get_row::<EventRow>(&event_key)? else {
        return Ok(());
    };
    let Some(bytes) = txn.get(&keys::log(event.seq))? else {
        return Ok(());
    };
    let ingested = match Record::decode(&bytes) {
        Ok(Record::EventIngested(e)) => e,
        // A damaged or unexpected record is left for an operator to look at.
        _ => return Ok(()),
    };
    if ingested.idempotency_key.is_some()
        && ingested.at.saturating_add(ms(policy.idempotency_window)) > now
    {
        return Ok(());
    }
    let mut rows = Vec::with_capacity(ingested.webhooks.len());
    for index in 0..ingested.webhooks.len() {
        let id = DeliveryId::new(&event_id, index);
        let Some(d) = txn.get_row::<DeliveryRow>(&keys::delivery(id))? else {
            return Ok(());
        };
        let (keep, kind) = match d.state {
            DeliveryState::Succeeded => (policy.retention, Finished::Succeeded),
            DeliveryState::Dead(_) => (policy.dead_retention, Finished::Dead),
            _ => return Ok(()),
        };
        let Some(finished) = d.finished_at else {
            return Ok(());
        };
        if finished.saturating_add(ms(keep)) > now {
            return Ok(());
        }
        let status: StatusRow = txn
            .get_row(&keys::status(&d.webhook_id))?
            .unwrap_or_default();
        if d.seqs.contains(&status.status_seq) {
            return Ok(());
        }
        rows.push((id, d, kind, finished));
    }
    txn.delete(keys::log(event.seq));
    txn.delete(event_key);
    report.removed_records += 1;
    report.removed_events += 1;
    if let Some(key) = &ingested.idempotency_key {
        let ikey = keys::idempotency(&account, key);
        if txn
            .get_row::<IdempotencyRow>(&ikey)?
            .is_some_and(|i| i.seq == event.seq)
        {
            txn.delete(ikey);
        }
    }
    for (id, d, kind, finished) in rows {
        for seq in &d.seqs {
            txn.delete(keys::log(*seq));
        }
        report.removed_records += d.seqs.len() as u64;
        report.removed_deliveries += 1;
        txn.delete(keys::delivery(id));
        txn.delete(keys::purge(kind, finished, id));
        if kind == Finished::Dead {
            let skey = keys::status(&d.webhook_id);
            let mut status: StatusRow = txn.get_row(&skey)?.unwrap_or_default();
            status.dead = status.dead.saturating_sub(1);
            txn.put_row(skey, &status)?;
        }
    }
    Ok(())
}
