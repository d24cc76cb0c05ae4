//! The log's records: one per state change (contract §5), and their stored form.
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
//! - The stored form is [`codec`](super::codec) framing with [`RECORD_VERSION`]. A new
//!   layout gets a new version and a new decoder here; old decoders stay.

use super::codec::{self, CodecError};
use crate::model::*;
use serde::{Deserialize, Serialize};

/// Format version of records written by this build. Version 2 added
/// [`EventIngested::order`]; version 1 bytes decode with `order` 0.
pub const RECORD_VERSION: u8 = 2;

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
}

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

/// `Record::EventIngested`'s place among the variants (checked by a test).
const EVENT_INGESTED_VARIANT: u32 = 9;

/// `EventIngested` as version 1 stored it, field for field (version 2 appends `order`),
/// with the webhook list as `W`: decoded (`Vec<WebhookId>`) or stepped over ([`Skipped`],
/// for [`Record::decode_event_to_deliver`]).
#[derive(Deserialize)]
struct EventFieldsV1<W> {
    account_id: AccountId,
    event: String,
    timestamp: Millis,
    external_id: Option<String>,
    idempotency_key: Option<String>,
    request_hash: [u8; 32],
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
    webhooks: W,
    at: Millis,
}

impl<W> EventFieldsV1<W> {
    fn into_event(self, webhooks: Vec<WebhookId>, order: u16) -> EventIngested {
        EventIngested {
            account_id: self.account_id,
            event: self.event,
            timestamp: self.timestamp,
            external_id: self.external_id,
            idempotency_key: self.idempotency_key,
            request_hash: self.request_hash,
            data: self.data,
            webhooks,
            at: self.at,
            order,
        }
    }
}

/// A sequence of strings read past, borrowed from the input, never copied.
struct Skipped;

impl<'de> Deserialize<'de> for Skipped {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Past;
        impl<'de> serde::de::Visitor<'de> for Past {
            type Value = Skipped;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sequence of strings")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Skipped, A::Error> {
                // As bytes: a string's stored form, without checking its UTF-8.
                while seq.next_element::<&'de [u8]>()?.is_some() {}
                Ok(Skipped)
            }
        }
        d.deserialize_seq(Past)
    }
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
        }
    }
}

impl Record {
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(RECORD_VERSION, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let (version, body) = codec::unframe(bytes)?;
        match version {
            1 => Self::decode_v1(body),
            2 => codec::decode_body(body),
            other => Err(CodecError::UnknownVersion(other)),
        }
    }

    /// Version 1 differs from version 2 only in `EventIngested`, which had no `order`.
    fn decode_v1(body: &[u8]) -> Result<Self, CodecError> {
        let config = bincode::config::standard();
        let (variant, used): (u32, usize) = bincode::decode_from_slice(body, config)?;
        if variant != EVENT_INGESTED_VARIANT {
            return codec::decode_body(body);
        }
        let mut v: EventFieldsV1<Vec<WebhookId>> = codec::decode_body(&body[used..])?;
        let webhooks = std::mem::take(&mut v.webhooks);
        Ok(Record::EventIngested(Box::new(v.into_event(webhooks, 0))))
    }

    /// The event of an `EventIngested` record, read to deliver it: everything but its
    /// webhook list, which is stepped over without being decoded (`webhooks` comes back
    /// empty). An event fanned out to 1,000 webhooks carries 1,000 ids, and each of those
    /// webhooks' actors may read the record: decoding the ids was most of the work.
    /// `None` if the record is of another kind.
    pub fn decode_event_to_deliver(bytes: &[u8]) -> Result<Option<EventIngested>, CodecError> {
        let (version, body) = codec::unframe(bytes)?;
        if !matches!(version, 1 | 2) {
            return Err(CodecError::UnknownVersion(version));
        }
        // serde enums in bincode: the variant's index, then its fields.
        let config = bincode::config::standard();
        let (variant, used): (u32, usize) = bincode::decode_from_slice(body, config)?;
        if variant != EVENT_INGESTED_VARIANT {
            return Ok(None);
        }
        let rest = &body[used..];
        let (v, used): (EventFieldsV1<Skipped>, usize) = bincode::serde::borrow_decode_from_slice(rest, config)?;
        // Version 2 carries `order` after the fields version 1 had.
        let order = match version {
            1 => 0,
            _ => bincode::serde::decode_from_slice::<u16, _>(&rest[used..], config)?.0,
        };
        Ok(Some(v.into_event(Vec::new(), order)))
    }

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
                value: crate::seal::SealedText::in_clear("whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"),
                created_at: 1_700_000_000_000,
                expires_at: None,
            }],
            is_active: true,
            max_retries: 5,
            timeout_ms: 30_000,
            method: Method::Post,
            headers: vec![("X-Team".into(), crate::seal::SealedText::in_clear("sales"))],
            signature_header: "X-Webhook-Signature".into(),
            signature_prefix: "sha256=".into(),
            ordered: false,
            max_in_flight: 16,
            rate_limit: Some(50),
            created_at: 1_700_000_000_000,
            updated_at: 1_700_000_000_000,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_read_to_deliver_is_the_event_without_its_webhook_list() {
        let mut found = 0;
        for record in samples::all() {
            let bytes = record.encode().unwrap();
            let light = Record::decode_event_to_deliver(&bytes).unwrap();
            match record {
                Record::EventIngested(full) => {
                    assert!(!full.webhooks.is_empty(), "the sample must have webhooks to skip");
                    let mut expected = *full;
                    expected.webhooks.clear();
                    assert_eq!(light, Some(expected));
                    found += 1;
                }
                other => assert_eq!(light, None, "{}", other.kind()),
            }
        }
        assert!(found > 0);
    }

    #[test]
    fn every_variant_round_trips() {
        for record in samples::all() {
            let bytes = record.encode().unwrap();
            assert_eq!(bytes[0], RECORD_VERSION);
            assert_eq!(Record::decode(&bytes).unwrap(), record, "{}", record.kind());
        }
    }

    /// Bytes written by every version must stay readable by every later build. If this
    /// fails, the layout changed: add a new version with its own decoder and keep the old
    /// ones. (Run with `HERALD_BLESS=1` only to create the file of a new version: it writes
    /// the current version's file alone.)
    #[test]
    fn bytes_of_every_version_still_decode() {
        let samples = samples::all();
        for version in 1..=RECORD_VERSION {
            let path = format!("{}/tests/data/records_v{version}.hex", env!("CARGO_MANIFEST_DIR"));
            if version == RECORD_VERSION && std::env::var_os("HERALD_BLESS").is_some() {
                let text: String = samples.iter().map(|r| hex(&r.encode().unwrap()) + "\n").collect();
                std::fs::write(&path, text).unwrap();
            }
            let stored = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let lines: Vec<&str> = stored.lines().collect();
            assert_eq!(lines.len(), samples.len());
            for (line, expected) in lines.iter().zip(&samples) {
                let bytes: Vec<u8> =
                    (0..line.len()).step_by(2).map(|i| u8::from_str_radix(&line[i..i + 2], 16).unwrap()).collect();
                assert_eq!(bytes[0], version, "{path}");
                assert_eq!(&Record::decode(&bytes).unwrap(), expected, "version {version}: {}", expected.kind());
            }
        }
    }

    /// Version 2 added `order`: it round-trips, also through the light decoding for
    /// delivery, and version 1 bytes of an event read as `order` 0 both ways.
    #[test]
    fn an_events_place_in_its_batch_is_kept_and_old_events_have_none() {
        let Some(Record::EventIngested(sample)) =
            samples::all().into_iter().find(|r| matches!(r, Record::EventIngested(_)))
        else {
            panic!("no event sample")
        };
        let placed = Record::EventIngested(Box::new(EventIngested { order: 7, ..*sample.clone() }));
        let bytes = placed.encode().unwrap();
        assert_eq!(bytes[0], 2);
        assert_eq!(Record::decode(&bytes).unwrap(), placed);
        let light = Record::decode_event_to_deliver(&bytes).unwrap().unwrap();
        assert_eq!((light.order, light.at, &light.data), (7, sample.at, &sample.data));

        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/records_v1.hex");
        let stored = std::fs::read_to_string(path).unwrap();
        let v1 = stored
            .lines()
            .map(|l| {
                (0..l.len()).step_by(2).map(|i| u8::from_str_radix(&l[i..i + 2], 16).unwrap()).collect::<Vec<u8>>()
            })
            .find(|b| matches!(Record::decode(b), Ok(Record::EventIngested(_))))
            .unwrap();
        assert_eq!(v1[0], 1);
        let Ok(Record::EventIngested(old)) = Record::decode(&v1) else { unreachable!() };
        assert_eq!(old.order, 0);
        assert_eq!(Record::decode_event_to_deliver(&v1).unwrap().unwrap().order, 0);
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
