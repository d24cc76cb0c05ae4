//! The records: one per state change (contract §5). Every backend keeps these; how one
//! stores them (bytes, versions) is its own business.
//!
//! Invariants:
//! - A record says everything its fold needs: times, jittered due times, breaker decisions
//!   and generated ids are chosen by the live process and written here, so folding the log
//!   reads no clock and no random source.
//! - Records that describe a webhook carry the whole webhook, so the newest one supersedes
//!   the older ones (compaction may drop those).
//! - An event's payload is written once, in its `EventIngested` record, however many webhooks
//!   it fans out to; deliveries point at that record by its sequence number
//!   ([`DeliveryRef`]). The event's public id is derived from that number, not stored.
//! - A new variant goes at the end: stored forms name variants by their place.

use crate::model::*;
use serde::{Deserialize, Serialize};

/// One state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// The admin token was generated or reset; only its SHA-256 is kept.
    AdminTokenSet {
        hash: [u8; 32],
        at: Millis,
    },
    AccountCreated {
        account: Account,
    },
    /// Deletes the account's webhooks (their queued deliveries die with reason `deleted`)
    /// and revokes its keys.
    AccountDeleted {
        account_id: AccountId,
        at: Millis,
    },
    ApiKeyCreated {
        key: ApiKey,
    },
    ApiKeyRevoked {
        key_id: KeyId,
        at: Millis,
    },
    WebhookCreated {
        webhook: Webhook,
    },
    WebhookUpdated {
        webhook: Webhook,
    },
    SecretRotated {
        webhook: Webhook,
    },
    /// Queued deliveries of the webhook die with reason `deleted`.
    WebhookDeleted {
        webhook_id: WebhookId,
        at: Millis,
    },
    /// An event and the deliveries it owes: delivery `i` goes to `webhooks[i]`, first due at
    /// `at`.
    EventIngested(Box<EventIngested>),
    /// One attempt of one delivery finished (or was cut off); `status` is the webhook's
    /// health after it.
    AttemptFinished(Box<AttemptFinished>),
    /// A delivery stopped for a reason other than its last attempt (expiry, disabling).
    DeliveryDead {
        delivery: DeliveryRef,
        webhook_id: WebhookId,
        reason: DeadReason,
        at: Millis,
    },
    /// A dead delivery re-queued with fresh attempts and a fresh TTL, due at once. One record
    /// per delivery, so compacting one event's history never removes another's re-queue.
    DeliveryRequeued {
        delivery: DeliveryRef,
        webhook_id: WebhookId,
        at: Millis,
    },
    /// A change of a webhook's health outside an attempt (an edit enabling it again).
    WebhookStatusSet {
        webhook_id: WebhookId,
        status: WebhookStatus,
        at: Millis,
    },
    /// A dead delivery retried by hand (`POST /deliveries/{id}/retry`): folded exactly like
    /// [`Record::DeliveryRequeued`], but its first attempt may go out while the breaker is
    /// open. (A variant added at the end: version 1 bytes still decode.)
    DeliveryRetried {
        delivery: DeliveryRef,
        webhook_id: WebhookId,
        at: Millis,
    },
    /// Cluster mode: retention removed these records from the database's log, in this
    /// record's own transaction, and every node removes them — and the rows they produced —
    /// from its fold when it folds this one. It changes nothing else: the fold of what
    /// remains has none of their effects to begin with. (A variant added at the end.)
    HistoryRemoved(Box<HistoryRemoved>),
}

/// What one retention step removed from a cluster's log (see [`Record::HistoryRemoved`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRemoved {
    /// When the step ran; a removal record is itself removed once older than `retention`.
    pub at: Millis,
    /// Events whose whole history goes: the `EventIngested` at each sequence number and
    /// every record about its deliveries.
    pub events: Vec<u64>,
    /// Webhook records a newer one replaced: (when replaced, sequence number).
    pub superseded: Vec<(Millis, u64)>,
    /// Records that produced no rows (older removal records).
    pub records: Vec<u64>,
}

impl HistoryRemoved {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.superseded.is_empty() && self.records.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventIngested {
    pub account_id: AccountId,
    pub event: String,
    /// The event's own time (client-supplied or the ingest time).
    pub timestamp: Millis,
    pub external_id: Option<String>,
    /// The `Idempotency-Key` header or the client's `id`, claimed by this record.
    pub idempotency_key: Option<String>,
    /// SHA-256 of the request body, to tell a replay from a conflicting reuse of the key.
    pub request_hash: [u8; 32],
    /// The event's `data`: the JSON object exactly as it arrived (key order, numbers).
    /// Serialized as bytes, not as a sequence of u8: the same bincode bytes, written in
    /// one copy instead of one call per byte.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    pub webhooks: Vec<WebhookId>,
    /// Ingest time: first due time and start of every delivery's TTL.
    pub at: Millis,
    /// Its place in the batch it came in, from 1 (0: not in a batch, or written before
    /// version 2). Part of the public id, so one batch's ids sort in batch order.
    pub order: u16,
    /// The client's `ordering_key` (at most [`MAX_ORDERING_KEY`] bytes): a webhook with
    /// `ordering: key` sends one key's deliveries one at a time (record version 3).
    pub ordering_key: Option<String>,
}

/// Longest `ordering_key`, in bytes.
pub const MAX_ORDERING_KEY: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptFinished {
    pub delivery: DeliveryRef,
    pub webhook_id: WebhookId,
    /// 1-based, counted since the delivery was created (re-queues do not reset it).
    pub attempt: u32,
    pub started_at: Millis,
    pub at: Millis,
    pub outcome: AttemptOutcome,
    pub next: NextStep,
    pub status: WebhookStatus,
}

impl EventIngested {
    /// An event without a client id or idempotency key (Herald's own operational events,
    /// generated loads), owed to `webhooks`, happening and ingested at `at`.
    pub fn unkeyed(account_id: AccountId, event: String, data: Vec<u8>, webhooks: Vec<WebhookId>, at: Millis) -> Self {
        EventIngested {
            account_id,
            event,
            timestamp: at,
            external_id: None,
            idempotency_key: None,
            request_hash: [0; 32],
            data,
            webhooks,
            at,
            order: 0,
            ordering_key: None,
        }
    }
}

impl Record {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::AdminTokenSet { .. } => "admin_token_set",
            Record::AccountCreated { .. } => "account_created",
            Record::AccountDeleted { .. } => "account_deleted",
            Record::ApiKeyCreated { .. } => "api_key_created",
            Record::ApiKeyRevoked { .. } => "api_key_revoked",
            Record::WebhookCreated { .. } => "webhook_created",
            Record::WebhookUpdated { .. } => "webhook_updated",
            Record::SecretRotated { .. } => "secret_rotated",
            Record::WebhookDeleted { .. } => "webhook_deleted",
            Record::EventIngested(_) => "event_ingested",
            Record::AttemptFinished(_) => "attempt_finished",
            Record::DeliveryDead { .. } => "delivery_dead",
            Record::DeliveryRequeued { .. } => "delivery_requeued",
            Record::WebhookStatusSet { .. } => "webhook_status_set",
            Record::DeliveryRetried { .. } => "delivery_retried",
            Record::HistoryRemoved(_) => "history_removed",
        }
    }
}

#[cfg(test)]
pub(crate) mod samples {
    //! One sample of every record variant, shared by the codec tests and the fold tests.
    use super::*;

    pub fn webhook(account: &AccountId) -> Webhook {
        Webhook {
            id: WebhookId::parse("wh_01JD6Z1M8Q4W9X2Y3Z4A5B6C7D").unwrap(),
            account_id: account.clone(),
            name: "crm".into(),
            description: "leads to the CRM".into(),
            url: "https://hooks.example.com/in".into(),
            events: vec!["lead.*".into(), "new_lead".into()],
            // The log stores whatever it is given; sealing is the domain's (a sample in clear).
            secrets: vec![Secret {
                value: crate::security::seal::SealedText::in_clear("whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"),
                created_at: 1_700_000_000_000,
                expires_at: None,
            }],
            is_active: true,
            max_retries: 5,
            timeout_ms: 30_000,
            method: Method::Post,
            headers: vec![("X-Team".into(), crate::security::seal::SealedText::in_clear("sales"))],
            signature_header: "X-Webhook-Signature".into(),
            signature_prefix: "sha256=".into(),
            ordering: DeliveryOrder::Key,
            max_in_flight: 16,
            rate_limit: Some(50),
            created_at: 1_700_000_000_000,
            updated_at: 1_700_000_000_000,
            filter: Some(
                crate::model::filter::Filter::from_text(r#"{"data.score":{"$gte":80.50},"event":"lead.qualified"}"#)
                    .unwrap(),
            ),
            body_format: BodyFormat::Javascript,
        }
    }

    /// The samples as a build writing record `version` knew them: what a later version
    /// added left at its default (what the older bytes decode to).
    pub fn as_of(version: u8) -> Vec<Record> {
        let old_webhook = |w: Webhook| Webhook {
            ordering: DeliveryOrder::None,
            filter: None,
            body_format: BodyFormat::Original,
            ..w
        };
        all()
            .into_iter()
            .map(|r| match (version, r) {
                (..=2, Record::WebhookCreated { webhook }) => Record::WebhookCreated { webhook: old_webhook(webhook) },
                (..=2, Record::WebhookUpdated { webhook }) => Record::WebhookUpdated { webhook: old_webhook(webhook) },
                (..=2, Record::SecretRotated { webhook }) => Record::SecretRotated { webhook: old_webhook(webhook) },
                (..=2, Record::EventIngested(e)) => {
                    Record::EventIngested(Box::new(EventIngested { ordering_key: None, ..*e }))
                }
                (_, r) => r,
            })
            .collect()
    }

    pub fn all() -> Vec<Record> {
        let acct = AccountId::parse("acct_01JD6Z1M8Q4W9X2Y3Z4A5B6C7E").unwrap();
        let wh = webhook(&acct);
        let dlv = DeliveryRef { seq: 7, index: 0 };
        vec![
            Record::AdminTokenSet { hash: [7; 32], at: 1 },
            Record::AccountCreated {
                account: Account { id: acct.clone(), name: "AstroLeads".into(), created_at: 2, deleted_at: None },
            },
            Record::ApiKeyCreated {
                key: ApiKey {
                    id: KeyId::parse("key_01JD6Z1M8Q4W9X2Y3Z4A5B6C7G").unwrap(),
                    account_id: acct.clone(),
                    prefix: "hk_01JD6".into(),
                    hash: [3; 32],
                    created_at: 3,
                    revoked_at: None,
                },
            },
            Record::WebhookCreated { webhook: wh.clone() },
            Record::WebhookUpdated { webhook: Webhook { name: "crm-2".into(), ..wh.clone() } },
            Record::SecretRotated { webhook: wh.clone() },
            Record::EventIngested(Box::new(EventIngested {
                account_id: acct.clone(),
                event: "lead.qualified".into(),
                timestamp: 1_700_000_000_500,
                external_id: Some("lead_123".into()),
                idempotency_key: Some("k-1".into()),
                request_hash: [9; 32],
                data: br#"{"b":1,"a":2.50,"nested":{"z":[1,2,3]}}"#.to_vec(),
                webhooks: vec![wh.id.clone()],
                at: 1_700_000_000_600,
                // 0, as every version 1 record reads (the version 1 bytes are these samples).
                order: 0,
                ordering_key: Some("lead_789xyz".into()),
            })),
            Record::AttemptFinished(Box::new(AttemptFinished {
                delivery: dlv,
                webhook_id: wh.id.clone(),
                attempt: 1,
                started_at: 1_700_000_000_700,
                at: 1_700_000_000_750,
                outcome: AttemptOutcome {
                    result: AttemptResult::HttpError,
                    status_code: Some(503),
                    latency_us: 50_000,
                    error: Some("HTTP 503".into()),
                    response_excerpt: Some(b"busy".to_vec()),
                    request_headers: vec![("X-Webhook-Attempt".into(), "1".into())],
                },
                next: NextStep::RetryAt(1_700_000_001_800),
                status: WebhookStatus { state: HealthState::Failing, consecutive_failures: 1, ..Default::default() },
            })),
            Record::DeliveryDead {
                delivery: dlv,
                webhook_id: wh.id.clone(),
                reason: DeadReason::Expired,
                at: 1_700_000_002_000,
            },
            Record::DeliveryRequeued { delivery: dlv, webhook_id: wh.id.clone(), at: 1_700_000_003_000 },
            Record::WebhookStatusSet {
                webhook_id: wh.id.clone(),
                status: WebhookStatus::default(),
                at: 1_700_000_004_000,
            },
            Record::ApiKeyRevoked { key_id: KeyId::parse("key_01JD6Z1M8Q4W9X2Y3Z4A5B6C7G").unwrap(), at: 5 },
            Record::WebhookDeleted { webhook_id: wh.id.clone(), at: 1_700_000_005_000 },
            Record::AccountDeleted { account_id: acct, at: 1_700_000_006_000 },
        ]
    }
}
