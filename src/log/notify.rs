//! What a committed group changed that the delivery engine acts on: new deliveries, re-queued
//! ones, webhook definitions and deletions, status changes made outside an attempt.
//!
//! Invariant: an observer hears of a group only after the group is flushed (or, after a
//! storage fault, found in the reopened log) and its callers are answered, so nothing is delivered that a crash could still take back, and a
//! notification never delays an acknowledgement. Groups are told in commit order.

use super::record::{EventIngested, Record};
use crate::model::*;
use std::sync::Arc;

/// One change, as the delivery engine needs it.
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
        queues: std::collections::HashMap<WebhookId, Vec<super::Queued>>,
    },
}

/// Receives each committed group's changes, on the log's flusher thread: it must return
/// quickly (hand the work to another thread).
pub type Observer = Box<dyn Fn(Vec<Change>) + Send + Sync>;

/// The change a committed record makes, if the delivery engine cares.
pub(crate) fn change_of(seq: u64, record: Record) -> Option<Change> {
    Some(match record {
        Record::EventIngested(event) if !event.webhooks.is_empty() => Change::Ingested { seq, event: Arc::from(event) },
        Record::DeliveryRequeued { delivery, webhook_id, .. } => {
            Change::Requeued { delivery, webhook_id, manual: false }
        }
        Record::DeliveryRetried { delivery, webhook_id, .. } => Change::Requeued { delivery, webhook_id, manual: true },
        Record::WebhookCreated { webhook } | Record::WebhookUpdated { webhook } | Record::SecretRotated { webhook } => {
            Change::WebhookDefined(Box::new(webhook))
        }
        Record::WebhookDeleted { webhook_id, .. } => Change::WebhookDeleted(webhook_id),
        Record::AccountDeleted { account_id, .. } => Change::AccountDeleted(account_id),
        Record::WebhookStatusSet { webhook_id, status, .. } => Change::StatusSet { webhook_id, status },
        _ => return None,
    })
}
