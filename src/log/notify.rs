//! What a committed group changed that the delivery engine acts on: new deliveries, re-queued
//! ones, webhook definitions and deletions, status changes made outside an attempt.
//!
//! Invariant: an observer hears of a group only after the group is flushed (or, after a
//! storage fault, found in the reopened log) and its callers are answered, so nothing is delivered that a crash could still take back, and a
//! notification never delays an acknowledgement. Groups are told in commit order.

use super::record::Record;
use crate::storage::Change;
use std::sync::Arc;

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
