//! Herald's own events about delivery (contract §5), typed: `herald.circuit.opened`,
//! `herald.circuit.closed`, `herald.webhook.disabled` and `herald.delivery.dead`, with the
//! payload each carries. The one place their names and fields are written.
//!
//! Invariants:
//! - A notice is never about one of Herald's own events ([`Notice::delivery_dead`] answers
//!   `None` for a `herald.*` event), so notices cannot feed each other.

use super::breaker::Transition;
use crate::model::time::rfc3339;
use crate::model::*;
use crate::storage::{Catalog, EventIngested, Record};

/// One operational event to ingest into the webhook's account.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    CircuitOpened {
        webhook_id: WebhookId,
        consecutive_failures: u32,
        last_status_code: Option<u16>,
        last_error: Option<String>,
        /// When the half-open probe may go out.
        probe_at: Option<Millis>,
    },
    CircuitClosed {
        webhook_id: WebhookId,
    },
    WebhookDisabled {
        webhook_id: WebhookId,
        reason: String,
    },
    DeliveryDead {
        /// Its event's id is part of it.
        delivery_id: DeliveryId,
        event: String,
        webhook_id: WebhookId,
        reason: DeadReason,
        attempts: u32,
    },
}

impl Notice {
    /// The notice of a breaker transition, from the status it left.
    pub fn of_transition(t: &Transition, webhook_id: &WebhookId, status: &WebhookStatus) -> Notice {
        let webhook_id = webhook_id.clone();
        match t {
            Transition::OpenedSecrets => Notice::CircuitOpened {
                webhook_id,
                consecutive_failures: status.consecutive_failures,
                last_status_code: status.last_status_code,
                last_error: status.last_error.clone(),
                probe_at: status.breaker_until,
            },
            Transition::Closed => Notice::CircuitClosed { webhook_id },
            Transition::Disabled(reason) => Notice::WebhookDisabled { webhook_id, reason: reason.clone() },
        }
    }

    /// `herald.delivery.dead` of a delivery of `event`, or `None` if `event` is Herald's own.
    pub fn delivery_dead(
        event: &str,
        delivery_id: &DeliveryId,
        webhook_id: &WebhookId,
        reason: &DeadReason,
        attempts: u32,
    ) -> Option<Notice> {
        (!event.starts_with(OPERATIONAL_PREFIX)).then(|| Notice::DeliveryDead {
            delivery_id: *delivery_id,
            event: event.to_owned(),
            webhook_id: webhook_id.clone(),
            reason: reason.clone(),
            attempts,
        })
    }

    /// The notice as the record that ingests it into `account`'s stream, owed to the webhooks
    /// that subscribe to it now (`data` is a compact JSON object).
    pub fn record(&self, catalog: &Catalog, account: &AccountId, at: Millis) -> Record {
        let name = self.name();
        let data = self.data();
        // Content filters hold for Herald's own events too.
        let document = crate::model::filter::Document::new(std::str::from_utf8(&data).unwrap_or("{}"));
        let timestamp = crate::model::time::rfc3339(at);
        let envelope = crate::model::filter::Envelope { event: name, timestamp: &timestamp, data: &document };
        let webhooks = catalog
            .matching(account, name)
            .filter(|w| w.filter.as_ref().is_none_or(|f| f.matches(&envelope)))
            .map(|w| w.id.clone())
            .collect();
        Record::EventIngested(Box::new(EventIngested::unkeyed(account.clone(), name.to_owned(), data, webhooks, at)))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Notice::CircuitOpened { .. } => "herald.circuit.opened",
            Notice::CircuitClosed { .. } => "herald.circuit.closed",
            Notice::WebhookDisabled { .. } => "herald.webhook.disabled",
            Notice::DeliveryDead { .. } => "herald.delivery.dead",
        }
    }

    /// The event's `data`, compact JSON.
    pub fn data(&self) -> Vec<u8> {
        let value = match self {
            Notice::CircuitOpened { webhook_id, consecutive_failures, last_status_code, last_error, probe_at } => {
                serde_json::json!({
                    "webhook_id": webhook_id.as_str(),
                    "consecutive_failures": consecutive_failures,
                    "last_status_code": last_status_code,
                    "last_error": last_error,
                    "probe_at": probe_at.map(rfc3339),
                })
            }
            Notice::CircuitClosed { webhook_id } => serde_json::json!({ "webhook_id": webhook_id.as_str() }),
            Notice::WebhookDisabled { webhook_id, reason } => {
                serde_json::json!({ "webhook_id": webhook_id.as_str(), "reason": reason })
            }
            Notice::DeliveryDead { delivery_id, event, webhook_id, reason, attempts } => serde_json::json!({
                "delivery_id": delivery_id.to_string(),
                "event_id": delivery_id.event_id().as_str(),
                "event": event,
                "webhook_id": webhook_id.as_str(),
                "reason": reason.as_str(),
                "attempts": attempts,
            }),
        };
        serde_json::to_vec(&value).unwrap_or_else(|_| b"{}".to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_carry_the_fields_receivers_read() {
        let wh = WebhookId::parse("wh_01JZ8YQ3N6V2K7T9R4M1X5C8D0").unwrap();
        let status = WebhookStatus {
            consecutive_failures: 5,
            last_status_code: Some(500),
            breaker_until: Some(1_800_000_000_000),
            ..WebhookStatus::default()
        };
        let opened = Notice::of_transition(&Transition::OpenedSecrets, &wh, &status);
        let data: serde_json::Value = serde_json::from_slice(&opened.data()).unwrap();
        assert_eq!(opened.name(), "herald.circuit.opened");
        assert_eq!(data["consecutive_failures"], 5);
        assert_eq!(data["probe_at"], "2027-01-15T08:00:00Z");
        let key = IdKey([1; 16]);
        let event = EventId::from_seq(1_800_000_000_000, 9, 0, &key);
        let dead =
            Notice::delivery_dead("lead.qualified", &DeliveryId::new(&event, 2), &wh, &DeadReason::Expired, 3).unwrap();
        let data: serde_json::Value = serde_json::from_slice(&dead.data()).unwrap();
        assert_eq!((data["reason"].as_str(), data["attempts"].as_u64()), (Some("expired"), Some(3)));
        assert!(data["delivery_id"].as_str().unwrap().ends_with("002"));
        assert_eq!(data["event_id"], event.as_str());
        assert!(Notice::delivery_dead(
            "herald.delivery.dead",
            &DeliveryId::new(&event, 0),
            &wh,
            &DeadReason::Expired,
            1
        )
        .is_none());
    }
}
