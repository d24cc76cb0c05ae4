//! Event ingest (domain): validating an event, matching it to the account's webhooks,
//! idempotency, and the `EventIngested` record that makes it durable with the deliveries
//! it owes.
//!
//! Invariants:
//! - `data` is stored once, exactly the bytes it arrived as, after [`check_data`] found it a
//!   JSON object with no key twice (events an older Herald stored keep their compact form).
//! - An idempotency key is claimed by the very record that stores the event, in a
//!   precondition storage checks atomically with the append: two identical requests at the
//!   same moment cannot both ingest. A replay within the window returns the first event; the same key with a
//!   different request is a conflict.
//! - An event is acknowledged only once durable; its id is derived from its log sequence
//!   number and its place in its batch (see `model::IdKey`), so the answer is computed after
//!   the append.

use crate::domain::error::DomainError;
use crate::domain::listing::{bad_cursor, Budget, Entries, Listing, TimeWindow};
use crate::model::*;
use crate::storage::{
    name_hash, AppendError, Command, EventIngested, Ledger, Precondition, Record, Rejection, MAX_ORDERING_KEY,
};
use sha2::{Digest, Sha256};

/// Longest idempotency key or client event id.
pub const MAX_KEY_CHARS: usize = 255;

/// An event as a client sent it, already parsed.
#[derive(Debug, Clone)]
pub struct EventInput {
    pub event: String,
    /// The `data` object, exactly as it arrived.
    pub data: Vec<u8>,
    pub timestamp: Option<Millis>,
    pub external_id: Option<String>,
    /// The `Idempotency-Key` header (else `external_id` serves).
    pub idempotency_key: Option<String>,
    /// Its place in its batch, from 1; 0 for a single event.
    pub order: u16,
    /// At most [`MAX_ORDERING_KEY`] bytes.
    pub ordering_key: Option<String>,
}

/// What ingest settled on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    pub id: EventId,
    pub event: String,
    pub deliveries: usize,
    /// A replay of an earlier request within the idempotency window.
    pub replayed: bool,
}

/// Limits and catalog rules from the configuration.
#[derive(Debug, Clone)]
pub struct IngestRules {
    pub max_payload_bytes: usize,
    pub idempotency_window_ms: u64,
    pub strict_events: bool,
    pub known_events: Vec<String>,
    pub max_pending_per_webhook: u64,
}

/// Checks the fields that do not need the store.
pub fn validate(input: &EventInput, rules: &IngestRules) -> Result<(), DomainError> {
    if !is_event_name(&input.event) {
        return Err(DomainError::invalid(
            "event",
            "must be lowercase words separated by . or _ (at most 100 characters)",
        ));
    }
    if input.event.starts_with(OPERATIONAL_PREFIX) {
        return Err(DomainError::invalid("event", "names starting with herald. are reserved for Herald's own events"));
    }
    if rules.strict_events && !rules.known_events.iter().any(|e| e == &input.event) {
        return Err(DomainError::invalid("event", "is not in the configured event types (strict_events is on)"));
    }
    if input.data.len() > rules.max_payload_bytes {
        return Err(DomainError::TooLarge(format!("data is larger than {} bytes", rules.max_payload_bytes)));
    }
    for (field, value) in [("id", &input.external_id), ("Idempotency-Key", &input.idempotency_key)] {
        if let Some(v) = value {
            if v.is_empty() || v.chars().count() > MAX_KEY_CHARS || v.chars().any(char::is_control) {
                return Err(DomainError::invalid(
                    field,
                    format!("must be 1–{MAX_KEY_CHARS} characters, no control characters"),
                ));
            }
        }
    }
    if let Some(k) = &input.ordering_key {
        if k.is_empty() || k.len() > MAX_ORDERING_KEY || k.chars().any(char::is_control) {
            return Err(DomainError::invalid(
                "ordering_key",
                format!("must be 1–{MAX_ORDERING_KEY} bytes, no control characters"),
            ));
        }
    }
    Ok(())
}

fn request_hash(input: &EventInput) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [input.event.as_bytes(), &input.data, input.external_id.as_deref().unwrap_or("").as_bytes()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update(input.timestamp.unwrap_or(u64::MAX).to_be_bytes());
    // Only when present, so that a key an older build hashed still matches its retry.
    if let Some(k) = &input.ordering_key {
        h.update(b"ordering_key");
        h.update((k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
    }
    h.finalize().into()
}

/// Checks an event's `data` as it arrived: a JSON object with no key twice in any object,
/// at any depth (a parser that kept one of them would deliver something the client did not
/// say). The bytes themselves are kept and sent as they are.
pub fn check_data(raw: &str) -> Result<(), DomainError> {
    if !raw.trim_start().starts_with('{') {
        return Err(DomainError::invalid("data", "must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_str(raw);
    serde::de::DeserializeSeed::deserialize(distinct::Keys, &mut de)
        .map_err(|e| DomainError::invalid("data", crate::domain::error::json_message(&e)))
}

/// A walk over a JSON value that refuses an object holding a key twice.
mod distinct {
    use serde::de::{DeserializeSeed, Deserializer, Error, MapAccess, SeqAccess, Visitor};
    use std::borrow::Cow;
    use std::collections::HashSet;
    use std::fmt;

    pub struct Keys;

    impl<'de> DeserializeSeed<'de> for Keys {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(Walk)
        }
    }

    struct Walk;

    impl<'de> Visitor<'de> for Walk {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON value")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen: HashSet<Cow<'de, str>> = HashSet::new();
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                if seen.contains(&key) {
                    return Err(A::Error::custom(format!("the key `{key}` appears twice in one object")));
                }
                seen.insert(key);
                map.next_value_seed(Keys)?;
            }
            Ok(())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(Keys)?.is_some() {}
            Ok(())
        }

        fn visit_bool<E: Error>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E: Error>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E: Error>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E: Error>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E: Error>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E: Error>(self) -> Result<(), E> {
            Ok(())
        }
    }
}

/// The envelope content filters read, built once per event and only if a filter asks.
struct LazyEnvelope<'a> {
    input: &'a EventInput,
    at: Millis,
    built: Option<(String, filter::Document<'a>)>,
}

impl<'a> LazyEnvelope<'a> {
    fn new(input: &'a EventInput, at: Millis) -> Self {
        Self { input, at, built: None }
    }

    fn passes(&mut self, f: &filter::Filter) -> bool {
        let input = self.input;
        let at = self.at;
        let (timestamp, data) = self.built.get_or_insert_with(|| {
            // `data` was checked to be a JSON object; were it not, it has no fields.
            let text = std::str::from_utf8(&input.data).unwrap_or("{}");
            (crate::model::time::rfc3339(input.timestamp.unwrap_or(at)), filter::Document::new(text))
        });
        f.matches(&filter::Envelope { event: &input.event, timestamp, data })
    }
}

/// Ingests one event for `account`.
pub async fn ingest(
    ledger: &dyn Ledger,
    rules: &IngestRules,
    account: &AccountId,
    input: EventInput,
) -> Result<Ingested, DomainError> {
    validate(&input, rules)?;
    let at = now_millis();
    let webhooks: Vec<WebhookId> = {
        let catalog = ledger.catalog().read().map_err(|_| DomainError::Storage("catalog unavailable".into()))?;
        let mut envelope = LazyEnvelope::new(&input, at);
        let matched: Vec<WebhookId> = catalog
            .matching(account, &input.event)
            .filter(|w| w.filter.as_ref().is_none_or(|f| envelope.passes(f)))
            .map(|w| w.id.clone())
            .collect();
        for id in &matched {
            if catalog.statuses.get(id).is_some_and(|s| s.pending >= rules.max_pending_per_webhook) {
                return Err(DomainError::RateLimited(format!(
                    "webhook {id} has {} deliveries queued",
                    rules.max_pending_per_webhook
                )));
            }
        }
        matched
    };
    let key = input.idempotency_key.clone().or_else(|| input.external_id.clone());
    // Only a request with a key can be compared with an earlier one.
    let hash = if key.is_some() { request_hash(&input) } else { [0; 32] };
    let record = EventIngested {
        account_id: account.clone(),
        event: input.event.clone(),
        timestamp: input.timestamp.unwrap_or(at),
        external_id: input.external_id,
        idempotency_key: key.clone(),
        request_hash: hash,
        data: input.data,
        webhooks,
        at,
        order: input.order,
        ordering_key: input.ordering_key.clone(),
    };
    let deliveries = record.webhooks.len();
    let cmd = match key {
        None => Command::new(vec![Record::EventIngested(Box::new(record))]),
        Some(key) => {
            let since = at.saturating_sub(rules.idempotency_window_ms);
            let claim = Precondition::IdempotencyFree { account: account.clone(), key, since, request_hash: hash };
            Command::checked(vec![Record::EventIngested(Box::new(record))], claim)
        }
    };
    match ledger.append(cmd.ingest()).await {
        Ok(appended) => {
            let seq = appended.seqs[0];
            Ok(Ingested {
                id: EventId::from_seq(at, seq, input.order, ledger.id_key()),
                event: input.event,
                deliveries,
                replayed: false,
            })
        }
        Err(AppendError::Rejected(Rejection::Duplicate { same_request: true, seq, .. })) => {
            first_result(ledger, seq).await
        }
        Err(AppendError::Rejected(Rejection::Duplicate { same_request: false, .. })) => {
            Err(DomainError::Conflict("this idempotency key was used with a different request".into()))
        }
        Err(e) => Err(e.into()),
    }
}

/// The answer the first request with an idempotency key got.
async fn first_result(ledger: &dyn Ledger, seq: u64) -> Result<Ingested, DomainError> {
    match ledger.record(seq).await? {
        Some(Record::EventIngested(e)) => Ok(Ingested {
            id: EventId::from_seq(e.at, seq, e.order, ledger.id_key()),
            event: e.event,
            deliveries: e.webhooks.len(),
            replayed: true,
        }),
        _ => Err(DomainError::Storage(format!("record {seq} is not the event its idempotency key names"))),
    }
}

/// The sequence number a list cursor (an event id, or the event part of a delivery id)
/// points at. Every 64-bit value decodes to some sequence number, so the id's time must be
/// its record's: a made-up cursor is refused. A cursor whose event was compacted since is
/// still a place in the list.
pub async fn cursor_seq(ledger: &dyn Ledger, id: &EventId) -> Result<u64, DomainError> {
    let seq = id.seq(ledger.id_key()).ok_or_else(bad_cursor)?;
    match ledger.record(seq).await? {
        Some(Record::EventIngested(e)) if e.at == id.millis() => Ok(seq),
        None if seq <= ledger.last_seq().await? => Ok(seq),
        _ => Err(bad_cursor()),
    }
}

/// The account's event by id, with the record that holds it.
pub async fn get(ledger: &dyn Ledger, account: &AccountId, id: &EventId) -> Result<(u64, EventIngested), DomainError> {
    let seq = id.seq(ledger.id_key()).ok_or(DomainError::NotFound)?;
    match ledger.record(seq).await? {
        Some(Record::EventIngested(e))
            if &e.account_id == account && EventId::from_seq(e.at, seq, e.order, ledger.id_key()) == *id =>
        {
            Ok((seq, *e))
        }
        _ => Err(DomainError::NotFound),
    }
}

/// Filters of the event list.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// An exact event name.
    pub event: Option<String>,
    pub window: TimeWindow,
}

/// The account's events matching `filter`, newest first, after `cursor` (an event id a
/// previous page gave).
pub async fn list(
    ledger: &dyn Ledger,
    account: &AccountId,
    filter: &EventFilter,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Listing<(EventId, EventIngested)>, DomainError> {
    if let Some(name) = &filter.event {
        if !is_event_name(name) {
            return Err(DomainError::invalid("event", "is not an event name like lead.qualified"));
        }
    }
    let before = match cursor {
        None => None,
        Some(c) => Some(cursor_seq(ledger, &EventId::parse(c).map_err(|_| bad_cursor())?).await?),
    };
    let hash = filter.event.as_deref().map(name_hash);
    let mut budget = Budget::default();
    let mut items: Vec<(EventId, EventIngested)> = Vec::new();
    // The last entry examined, as (seq, at): where the next page starts if the budget runs out.
    let mut last: Option<(u64, Millis)> = None;
    let mut entries = Entries::new(before);
    while let Some(entry) = entries.next_event(ledger, account).await? {
        if filter.window.is_behind(entry.at) {
            break;
        }
        if !budget.take() {
            // A cursor is read for its sequence number only: no need to load the record.
            let next_cursor = last.map(|(seq, at)| EventId::from_seq(at, seq, 0, ledger.id_key()).to_string());
            return Ok(Listing { items, next_cursor });
        }
        last = Some((entry.seq, entry.at));
        if !filter.window.contains(entry.at) || hash.is_some_and(|h| h != entry.name_hash) {
            continue;
        }
        let Some(Record::EventIngested(e)) = ledger.record(entry.seq).await? else {
            continue;
        };
        if filter.event.as_ref().is_some_and(|name| name != &e.event) {
            continue;
        }
        if items.len() == limit {
            let next_cursor = items.last().map(|(id, _)| id.to_string());
            return Ok(Listing { items, next_cursor });
        }
        items.push((EventId::from_seq(entry.at, entry.seq, e.order, ledger.id_key()), *e));
    }
    Ok(Listing { items, next_cursor: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures::{block_on, ledger, rules, webhook};

    fn event(name: &str, data: &str, key: Option<&str>) -> EventInput {
        EventInput {
            event: name.into(),
            data: data.as_bytes().to_vec(),
            timestamp: None,
            external_id: None,
            idempotency_key: key.map(str::to_owned),
            order: 0,
            ordering_key: None,
        }
    }

    #[test]
    fn an_idempotency_key_replays_the_first_answer_and_refuses_another_request() {
        let ledger = ledger();
        let account = AccountId::default_account();
        let w = webhook(&ledger, &account, &["lead.*"]);
        let first =
            block_on(ingest(&ledger, &rules(), &account, event("lead.qualified", r#"{"id":1}"#, Some("k1")))).unwrap();
        assert_eq!((first.deliveries, first.replayed), (1, false));
        let again =
            block_on(ingest(&ledger, &rules(), &account, event("lead.qualified", r#"{"id":1}"#, Some("k1")))).unwrap();
        assert_eq!((again.id, again.replayed), (first.id.clone(), true));
        let other = block_on(ingest(&ledger, &rules(), &account, event("lead.qualified", r#"{"id":2}"#, Some("k1"))));
        assert!(matches!(other, Err(DomainError::Conflict(_))), "{other:?}");
        let (_, stored) = block_on(get(&ledger, &account, &first.id)).unwrap();
        assert_eq!((stored.data, stored.webhooks), (br#"{"id":1}"#.to_vec(), vec![w.id]));
    }

    #[test]
    fn an_event_is_read_only_by_its_own_account_and_its_exact_id() {
        let ledger = ledger();
        let account = AccountId::default_account();
        let (other, _) = block_on(crate::domain::accounts::create(&ledger, "other")).unwrap();
        let done = block_on(ingest(&ledger, &rules(), &account, event("new_lead", "{}", None))).unwrap();
        assert_eq!(done.deliveries, 0, "no webhook subscribes");
        assert!(block_on(get(&ledger, &account, &done.id)).is_ok());
        assert_eq!(block_on(get(&ledger, &other.id, &done.id)).err(), Some(DomainError::NotFound));
        let forged = EventId::from_seq(done.id.millis() + 1, done.id.seq(ledger.id_key()).unwrap(), 0, ledger.id_key());
        assert_eq!(block_on(get(&ledger, &account, &forged)).err(), Some(DomainError::NotFound));
        assert!(block_on(cursor_seq(&ledger, &forged)).is_err(), "a made-up cursor is refused");
    }

    #[test]
    fn the_event_list_pages_newest_first_by_name_and_window() {
        let ledger = ledger();
        let account = AccountId::default_account();
        let mut ids = Vec::new();
        for i in 0..7 {
            let name = if i % 2 == 0 { "lead.qualified" } else { "email.bounced" };
            ids.push(block_on(ingest(&ledger, &rules(), &account, event(name, "{}", None))).unwrap().id);
        }
        let filter = EventFilter { event: Some("lead.qualified".into()), window: TimeWindow::default() };
        let page = block_on(list(&ledger, &account, &filter, None, 3)).unwrap();
        let got: Vec<EventId> = page.items.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(got, vec![ids[6].clone(), ids[4].clone(), ids[2].clone()]);
        let rest = block_on(list(&ledger, &account, &filter, page.next_cursor.as_deref(), 3)).unwrap();
        assert_eq!(rest.items.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(), vec![ids[0].clone()]);
        assert_eq!(rest.next_cursor, None);
        let bad = EventFilter { event: Some("Not A Name".into()), window: TimeWindow::default() };
        assert!(matches!(block_on(list(&ledger, &account, &bad, None, 3)), Err(DomainError::Invalid { .. })));
        let future =
            EventFilter { event: None, window: TimeWindow::new(Some(now_millis() + 3_600_000), None).unwrap() };
        assert!(block_on(list(&ledger, &account, &future, None, 3)).unwrap().items.is_empty());
    }

    #[test]
    fn a_webhook_with_too_many_queued_is_back_pressure_and_nothing_is_written() {
        let ledger = ledger();
        let account = AccountId::default_account();
        webhook(&ledger, &account, &["lead.*"]);
        let rules = IngestRules { max_pending_per_webhook: 2, ..rules() };
        for _ in 0..2 {
            block_on(ingest(&ledger, &rules, &account, event("lead.new", "{}", None))).unwrap();
        }
        let before = block_on(ledger.last_seq()).unwrap();
        let refused = block_on(ingest(&ledger, &rules, &account, event("lead.new", "{}", None)));
        assert!(matches!(refused, Err(DomainError::RateLimited(_))), "{refused:?}");
        assert_eq!(block_on(ledger.last_seq()).unwrap(), before);
        let reserved = block_on(ingest(&ledger, &rules, &account, event("herald.circuit.opened", "{}", None)));
        assert!(matches!(reserved, Err(DomainError::Invalid { .. })));
    }

    #[test]
    fn data_is_an_object_with_no_key_twice_at_any_depth() {
        for ok in [
            r#"{}"#,
            r#" { "a" : 1.0E+2, "b": [1e3, -0.0, 123456789012345678901234567890], "c": {"a": 1} } "#,
            r#"{"a": [{"k": 1}, {"k": 2}], "s": "caf\u00e9 \/"}"#,
            r#"{"$serde_json::private::Number": 1}"#,
        ] {
            assert_eq!(check_data(ok), Ok(()), "{ok}");
        }
        for bad in [
            r#"{"a": 1, "a": 2}"#,
            r#"{"x": {"k": 1, "k": 1}}"#,
            r#"{"x": [[{"k": 1, "\u006b": 2}]]}"#,
            r#"[{"a": 1}]"#,
            r#""text""#,
            "7",
        ] {
            assert!(check_data(bad).is_err(), "{bad}");
        }
    }
}
