//! Recording attempts: the records every actor of one arbiter produced in one tick of its
//! event loop go to the writer as one command.
//!
//! A command per attempt cost more than the attempt's fold (a channel send and a wake-up of
//! the writer thread each, a reply each): batching per actor turn doubled the drain rate of
//! one busy webhook, and batching per arbiter tick does the same for many quiet ones.
//!
//! Invariants:
//! - Records keep their order: an actor's records are appended in the order it recorded
//!   them (one arbiter thread, one batch at a time, `Ledger::submit` in order).
//! - Every caller hears whether its records were committed; a failed command fails every
//!   caller in it (their deliveries are attempted again after a restart: at-least-once).

use crate::model::WebhookId;
use crate::storage::{Command, Ledger, Precondition, Record};
use std::cell::RefCell;
use std::sync::Arc;
use tokio::sync::oneshot;

#[derive(Default)]
struct Batch {
    records: Vec<Record>,
    /// Whose work the records are: appended only while this node owns them (fencing).
    webhooks: Vec<WebhookId>,
    waiting: Vec<oneshot::Sender<bool>>,
    scheduled: bool,
}

thread_local! {
    static BATCH: RefCell<Batch> = RefCell::new(Batch::default());
}

/// Adds `records` to this arbiter's batch; the answer says whether they were committed.
/// Call from an arbiter thread (the batch is sent by a task spawned on it).
pub fn record(ledger: &Arc<dyn Ledger>, webhook: &WebhookId, records: Vec<Record>) -> oneshot::Receiver<bool> {
    let (tx, rx) = oneshot::channel();
    let schedule = BATCH.with(|b| {
        let mut b = b.borrow_mut();
        b.records.extend(records);
        if !b.webhooks.contains(webhook) {
            b.webhooks.push(webhook.clone());
        }
        b.waiting.push(tx);
        !std::mem::replace(&mut b.scheduled, true)
    });
    if schedule {
        // Runs after the tasks already woken on this thread: what they record joins.
        let ledger = ledger.clone();
        actix::spawn(async move {
            let (records, webhooks, waiting) = BATCH.with(|b| {
                let mut b = b.borrow_mut();
                b.scheduled = false;
                (std::mem::take(&mut b.records), std::mem::take(&mut b.webhooks), std::mem::take(&mut b.waiting))
            });
            let committed = ledger.submit(Command::checked(records, Precondition::Owned(webhooks))).await;
            if let Err(e) = &committed {
                static LOGGED: crate::telemetry::Every =
                    crate::telemetry::Every::new(std::time::Duration::from_secs(30));
                if let Some(held_back) = LOGGED.due(crate::model::now_millis()) {
                    tracing::error!(error = %e, callers = waiting.len(), held_back, "cannot record attempts");
                }
            }
            for w in waiting {
                let _ = w.send(committed.is_ok());
            }
        });
    }
    rx
}
