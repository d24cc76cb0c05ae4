//! The records' stored form: [`codec`](super::codec) framing with [`RECORD_VERSION`], and
//! the decoders of every version ever written. A new layout gets a new version and a new
//! decoder here; old decoders stay.

use super::codec::{self, CodecError};
use crate::model::*;
pub(crate) use crate::storage::record::*;
use serde::Deserialize;

/// Format version of records written by this build. Version 2 added
/// [`EventIngested::order`]; version 1 bytes decode with `order` 0. Version 3 added
/// [`EventIngested::ordering_key`] and, to [`Webhook`], `ordering` (for the flag `ordered`),
/// `filter` and `body_format`; older bytes decode with none of them.
pub const RECORD_VERSION: u8 = 3;

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
    fn into_event(self, webhooks: Vec<WebhookId>, order: u16, ordering_key: Option<String>) -> EventIngested {
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
            ordering_key,
        }
    }
}

/// `Webhook` as versions 1 and 2 stored it, field for field.
#[derive(Deserialize)]
pub(super) struct WebhookV2 {
    id: WebhookId,
    account_id: AccountId,
    name: String,
    description: String,
    url: String,
    events: Vec<String>,
    secrets: Vec<Secret>,
    is_active: bool,
    max_retries: u32,
    timeout_ms: u64,
    method: Method,
    headers: Vec<(String, crate::security::seal::SealedText)>,
    signature_header: String,
    signature_prefix: String,
    ordered: bool,
    max_in_flight: u32,
    rate_limit: Option<u32>,
    created_at: Millis,
    updated_at: Millis,
}

impl From<WebhookV2> for Webhook {
    fn from(w: WebhookV2) -> Webhook {
        Webhook {
            id: w.id,
            account_id: w.account_id,
            name: w.name,
            description: w.description,
            url: w.url,
            events: w.events,
            secrets: w.secrets,
            is_active: w.is_active,
            max_retries: w.max_retries,
            timeout_ms: w.timeout_ms,
            method: w.method,
            headers: w.headers,
            signature_header: w.signature_header,
            signature_prefix: w.signature_prefix,
            ordering: if w.ordered { DeliveryOrder::Strict } else { DeliveryOrder::None },
            max_in_flight: w.max_in_flight,
            rate_limit: w.rate_limit,
            created_at: w.created_at,
            updated_at: w.updated_at,
            filter: None,
            body_format: BodyFormat::Original,
        }
    }
}

/// `EventIngested` as version 2 stored it: version 1's fields and `order`.
#[derive(Deserialize)]
struct EventV2 {
    fields: EventFieldsV1<Vec<WebhookId>>,
    order: u16,
}

/// `Record` as versions 1 and 2 stored it: the same variants in the same places, with the
/// webhook and event layouts of their time. (Version 1's events are read apart, without
/// `order`; see [`decode_old`].)
#[derive(Deserialize)]
enum RecordV2 {
    AdminTokenSet { hash: [u8; 32], at: Millis },
    AccountCreated { account: Account },
    AccountDeleted { account_id: AccountId, at: Millis },
    ApiKeyCreated { key: ApiKey },
    ApiKeyRevoked { key_id: KeyId, at: Millis },
    WebhookCreated { webhook: WebhookV2 },
    WebhookUpdated { webhook: WebhookV2 },
    SecretRotated { webhook: WebhookV2 },
    WebhookDeleted { webhook_id: WebhookId, at: Millis },
    EventIngested(Box<EventV2>),
    AttemptFinished(Box<AttemptFinished>),
    DeliveryDead { delivery: DeliveryRef, webhook_id: WebhookId, reason: DeadReason, at: Millis },
    DeliveryRequeued { delivery: DeliveryRef, webhook_id: WebhookId, at: Millis },
    WebhookStatusSet { webhook_id: WebhookId, status: WebhookStatus, at: Millis },
    DeliveryRetried { delivery: DeliveryRef, webhook_id: WebhookId, at: Millis },
    HistoryRemoved(Box<HistoryRemoved>),
}

impl From<RecordV2> for Record {
    fn from(r: RecordV2) -> Record {
        match r {
            RecordV2::AdminTokenSet { hash, at } => Record::AdminTokenSet { hash, at },
            RecordV2::AccountCreated { account } => Record::AccountCreated { account },
            RecordV2::AccountDeleted { account_id, at } => Record::AccountDeleted { account_id, at },
            RecordV2::ApiKeyCreated { key } => Record::ApiKeyCreated { key },
            RecordV2::ApiKeyRevoked { key_id, at } => Record::ApiKeyRevoked { key_id, at },
            RecordV2::WebhookCreated { webhook } => Record::WebhookCreated { webhook: webhook.into() },
            RecordV2::WebhookUpdated { webhook } => Record::WebhookUpdated { webhook: webhook.into() },
            RecordV2::SecretRotated { webhook } => Record::SecretRotated { webhook: webhook.into() },
            RecordV2::WebhookDeleted { webhook_id, at } => Record::WebhookDeleted { webhook_id, at },
            RecordV2::EventIngested(e) => {
                let EventV2 { mut fields, order } = *e;
                let webhooks = std::mem::take(&mut fields.webhooks);
                Record::EventIngested(Box::new(fields.into_event(webhooks, order, None)))
            }
            RecordV2::AttemptFinished(a) => Record::AttemptFinished(a),
            RecordV2::DeliveryDead { delivery, webhook_id, reason, at } => {
                Record::DeliveryDead { delivery, webhook_id, reason, at }
            }
            RecordV2::DeliveryRequeued { delivery, webhook_id, at } => {
                Record::DeliveryRequeued { delivery, webhook_id, at }
            }
            RecordV2::WebhookStatusSet { webhook_id, status, at } => {
                Record::WebhookStatusSet { webhook_id, status, at }
            }
            RecordV2::DeliveryRetried { delivery, webhook_id, at } => {
                Record::DeliveryRetried { delivery, webhook_id, at }
            }
            RecordV2::HistoryRemoved(h) => Record::HistoryRemoved(h),
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

/// Versions 1 and 2: the webhook layout before version 3; version 1's `EventIngested` had
/// no `order` either.
fn decode_old(version: u8, body: &[u8]) -> Result<Record, CodecError> {
    let config = bincode::config::standard();
    let (variant, used): (u32, usize) = bincode::decode_from_slice(body, config)?;
    if version == 1 && variant == EVENT_INGESTED_VARIANT {
        let mut v: EventFieldsV1<Vec<WebhookId>> = codec::decode_body(&body[used..])?;
        let webhooks = std::mem::take(&mut v.webhooks);
        return Ok(Record::EventIngested(Box::new(v.into_event(webhooks, 0, None))));
    }
    Ok(codec::decode_body::<RecordV2>(body)?.into())
}

/// How a record is kept in the tree.
pub(crate) trait Stored: Sized {
    fn encode(&self) -> Result<Vec<u8>, CodecError>;
    fn decode(bytes: &[u8]) -> Result<Self, CodecError>;
    fn decode_event_to_deliver(bytes: &[u8]) -> Result<Option<EventIngested>, CodecError>;
}

impl Stored for Record {
    fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(RECORD_VERSION, self)
    }

    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let (version, body) = codec::unframe(bytes)?;
        match version {
            1 | 2 => decode_old(version, body),
            3 => codec::decode_body(body),
            other => Err(CodecError::UnknownVersion(other)),
        }
    }

    /// The event of an `EventIngested` record, read to deliver it: everything but its
    /// webhook list, which is stepped over without being decoded (`webhooks` comes back
    /// empty). An event fanned out to 1,000 webhooks carries 1,000 ids, and each of those
    /// webhooks' actors may read the record: decoding the ids was most of the work.
    /// `None` if the record is of another kind.
    fn decode_event_to_deliver(bytes: &[u8]) -> Result<Option<EventIngested>, CodecError> {
        let (version, body) = codec::unframe(bytes)?;
        if !matches!(version, 1..=3) {
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
        // Version 2 carries `order` after the fields version 1 had, version 3 then `ordering_key`.
        let rest = &rest[used..];
        let (order, used) = match version {
            1 => (0, 0),
            _ => bincode::serde::decode_from_slice::<u16, _>(rest, config)?,
        };
        let ordering_key = match version {
            3 => bincode::serde::decode_from_slice::<Option<String>, _>(&rest[used..], config)?.0,
            _ => None,
        };
        Ok(Some(v.into_event(Vec::new(), order, ordering_key)))
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
        for version in 1..=RECORD_VERSION {
            let samples = samples::as_of(version);
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
        assert_eq!(bytes[0], RECORD_VERSION);
        assert_eq!(Record::decode(&bytes).unwrap(), placed);
        let light = Record::decode_event_to_deliver(&bytes).unwrap().unwrap();
        assert_eq!((light.order, light.at, &light.data), (7, sample.at, &sample.data));
        assert_eq!(light.ordering_key.as_deref(), Some("lead_789xyz"), "version 3's key, read to deliver too");

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

    /// Version 3 changed the webhook's layout: webhook records of versions 1 and 2 read with
    /// `ordered` as `ordering`, no filter and the original body format, and a webhook row of
    /// version 1 is rewritten as this build folds it.
    #[test]
    fn webhooks_of_older_versions_read_with_the_fields_they_had() {
        for version in [1u8, 2] {
            let path = format!("{}/tests/data/records_v{version}.hex", env!("CARGO_MANIFEST_DIR"));
            let stored = std::fs::read_to_string(&path).unwrap();
            let webhook = stored
                .lines()
                .map(|l| {
                    (0..l.len()).step_by(2).map(|i| u8::from_str_radix(&l[i..i + 2], 16).unwrap()).collect::<Vec<u8>>()
                })
                .find_map(|b| match Record::decode(&b) {
                    Ok(Record::WebhookCreated { webhook }) => Some(webhook),
                    _ => None,
                })
                .unwrap();
            assert_eq!(webhook.ordering, DeliveryOrder::None);
            assert_eq!((webhook.filter, webhook.body_format), (None, BodyFormat::Original));
            assert_eq!(webhook.rate_limit, Some(50), "the fields after the changed one still line up");
        }
    }

    /// Added after the version files were written: it round-trips, and it is never mistaken
    /// for an event.
    #[test]
    fn a_removal_record_round_trips() {
        let removal = Record::HistoryRemoved(Box::new(HistoryRemoved {
            at: 1_700_000_000_000,
            events: vec![5, 9, 1 << 40],
            superseded: vec![(1_700_000_000_001, 3)],
            records: vec![4],
        }));
        let bytes = removal.encode().unwrap();
        assert_eq!(Record::decode(&bytes).unwrap(), removal);
        assert_eq!(Record::decode_event_to_deliver(&bytes).unwrap(), None);
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
