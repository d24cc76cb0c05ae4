//! The domain's nouns: identifiers, accounts, API keys, webhooks, events, deliveries and
//! attempts, as they are stored and folded. Nothing here does I/O.
//!
//! Invariants:
//! - Every identifier is `<prefix>_<ULID>` (26 Crockford base-32 characters), so ids sort by
//!   creation time; `acct_default` is the one fixed exception.
//! - An event id encodes the event's place in its batch and its log sequence number under a
//!   per-node keyed permutation ([`IdKey`]), and a delivery id is its event's id plus the delivery's index in the fan-out
//!   list. Inside Herald a delivery is a [`DeliveryRef`] (sequence number, index): ingest
//!   writes no row per event or per delivery, only the record. The ids stay opaque.
//! - Times are unix milliseconds (`Millis`) chosen by the live process and written into log
//!   records; folding the log never reads a clock.

pub mod filter;
pub mod time;

use serde::{Deserialize, Serialize};
use std::fmt;

/// Unix time in milliseconds.
pub type Millis = u64;

/// The current wall-clock time in unix milliseconds. Only the live process calls this; the
/// fold of the log never does.
pub fn now_millis() -> Millis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap_or(0)
}

/// Errors of parsing an identifier supplied from outside.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {kind} id")]
pub struct BadId {
    pub kind: &'static str,
    pub value: String,
}

const ULID_LEN: usize = 26;

/// A ULID for time `at` that sorts after every one this process made before for the same
/// millisecond, so ids made in a burst keep their order ("newest first" lists rely on it).
fn monotonic_ulid(at: Millis) -> ulid::Ulid {
    static GENERATOR: std::sync::Mutex<Option<ulid::Generator>> = std::sync::Mutex::new(None);
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_millis(at);
    let made = GENERATOR
        .lock()
        .ok()
        .and_then(|mut g| g.get_or_insert_with(ulid::Generator::new).generate_from_datetime(when).ok());
    made.unwrap_or_else(|| ulid::Ulid::from_parts(at, rand::random::<u128>()))
}

fn is_ulid_text(s: &str) -> bool {
    // Only the canonical spelling, so one id has one text.
    s.len() == ULID_LEN && ulid::Ulid::from_string(s).is_ok_and(|u| u.to_string() == s)
}

/// An id's text, held inline: every id is at most [`IdText::CAPACITY`] bytes (`acct_` and a
/// ULID is the longest), so the catalog's maps, rows and indexes hold ids without a heap
/// allocation each (memory per idle webhook). Orders like its text (ids hold no NUL byte,
/// so the zero padding sorts first). Stored exactly as a `String` is.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdText {
    bytes: [u8; IdText::CAPACITY],
    len: u8,
}

impl IdText {
    pub const CAPACITY: usize = 31;

    /// `None` if `s` is longer than an id can be.
    pub fn new(s: &str) -> Option<Self> {
        let mut bytes = [0; Self::CAPACITY];
        bytes.get_mut(..s.len())?.copy_from_slice(s.as_bytes());
        Some(Self { bytes, len: s.len() as u8 })
    }

    pub fn as_str(&self) -> &str {
        // Always whole UTF-8: made from a `&str` cut at its own length.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }

    /// For ids made here from a prefix and a ULID, which always fit.
    fn made(s: &str) -> Self {
        debug_assert!(s.len() <= Self::CAPACITY, "{s}");
        Self::new(s).unwrap_or(Self { bytes: [0; Self::CAPACITY], len: 0 })
    }
}

impl fmt::Debug for IdText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for IdText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for IdText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).ok_or_else(|| serde::de::Error::invalid_length(s.len(), &"an id of at most 31 bytes"))
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(IdText);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh, time-sortable id.
            pub fn generate() -> Self {
                Self(IdText::made(&format!("{}{}", $prefix, ulid::Ulid::new())))
            }

            /// A fresh id whose time part is `at`, for ids that must agree with a record's time.
            pub fn generate_at(at: Millis) -> Self {
                Self(IdText::made(&format!("{}{}", $prefix, monotonic_ulid(at))))
            }

            /// Parses an id from outside input, checking its prefix and ULID body.
            pub fn parse(s: &str) -> Result<Self, BadId> {
                match s.strip_prefix($prefix) {
                    Some(body) if is_ulid_text(body) => Ok(Self(IdText::made(s))),
                    _ => Err(BadId { kind: $kind, value: s.chars().take(64).collect() }),
                }
            }

            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0.as_str())
            }
        }
    };
}

id_type!(
    /// An account (tenant). See also [`AccountId::default_account`].
    AccountId, "acct_", "account"
);
id_type!(
    /// An API key's public id; the secret part is never stored.
    KeyId, "key_", "key"
);
id_type!(
    /// A webhook endpoint.
    WebhookId, "wh_", "webhook"
);
id_type!(
    /// An ingested event.
    EventId, "evt_", "event"
);

impl AccountId {
    pub const DEFAULT: &'static str = "acct_default";

    /// `acct_default`, the account that always exists.
    pub fn default_account() -> Self {
        Self(IdText::made(Self::DEFAULT))
    }

    /// Like [`AccountId::parse`], but also accepts `acct_default`.
    pub fn parse_any(s: &str) -> Result<Self, BadId> {
        if s == Self::DEFAULT {
            Ok(Self::default_account())
        } else {
            Self::parse(s)
        }
    }
}

/// Where a delivery lives inside Herald: its event's log sequence number and its index in
/// the event's fan-out list. Records and rows use this; clients see [`DeliveryId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeliveryRef {
    pub seq: u64,
    pub index: u16,
}

impl DeliveryRef {
    /// Big-endian bytes: sorts by event, then index.
    pub fn to_bytes(self) -> [u8; 10] {
        let mut out = [0u8; 10];
        out[..8].copy_from_slice(&self.seq.to_be_bytes());
        out[8..].copy_from_slice(&self.index.to_be_bytes());
        out
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != 10 {
            return None;
        }
        Some(Self {
            seq: u64::from_be_bytes(b[..8].try_into().ok()?),
            index: u16::from_be_bytes(b[8..].try_into().ok()?),
        })
    }
}

/// The per-node key that makes public ids opaque. An event id is a ULID whose time part is
/// the ingest time and whose random part is the event's place in its batch and its log
/// sequence number under a keyed permutation ([`EventId::from_seq`]): ids need no index to
/// be found, yet reveal neither the sequence nor the node's volume to a tenant.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IdKey(pub [u8; 16]);

impl fmt::Debug for IdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdKey(<redacted>)")
    }
}

const FEISTEL_ROUNDS: u8 = 4;

impl IdKey {
    pub fn generate() -> Self {
        Self(rand::random())
    }

    fn round(&self, r: u8, half: u32) -> u32 {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.0);
        h.update([r]);
        h.update(half.to_be_bytes());
        let d = h.finalize();
        u32::from_be_bytes([d[0], d[1], d[2], d[3]])
    }

    /// A keyed bijection on u64 (a balanced Feistel network).
    pub fn permute(&self, x: u64) -> u64 {
        let (mut l, mut r) = ((x >> 32) as u32, x as u32);
        for round in 0..FEISTEL_ROUNDS {
            (l, r) = (r, l ^ self.round(round, r));
        }
        ((l as u64) << 32) | r as u64
    }

    pub fn unpermute(&self, y: u64) -> u64 {
        let (mut l, mut r) = ((y >> 32) as u32, y as u32);
        for round in (0..FEISTEL_ROUNDS).rev() {
            (l, r) = (r ^ self.round(round, l), l);
        }
        ((l as u64) << 32) | r as u64
    }
}

impl EventId {
    /// The public id of the event ingested at `at` as record `seq`, `order`-th of its batch
    /// (0: not in a batch). The ULID's 80 bits after the time are `order` (16) then the
    /// permuted sequence number (64): ids of one millisecond sort by their place in their
    /// batch, and say nothing of the node's volume. Ids issued before `order` existed have
    /// 0 there and read the same.
    pub fn from_seq(at: Millis, seq: u64, order: u16, key: &IdKey) -> Self {
        let tail = (u128::from(order) << 64) | u128::from(key.permute(seq));
        Self(IdText::made(&format!("{}{}", Self::PREFIX, ulid::Ulid::from_parts(at, tail))))
    }

    /// The log sequence number behind an id this node issued (a caller compares the id
    /// Herald derives from that record with this one before trusting it).
    pub fn seq(&self, key: &IdKey) -> Option<u64> {
        (self.ulid() != 0).then(|| key.unpermute(self.ulid() as u64))
    }

    pub fn ulid(&self) -> u128 {
        let body = self.as_str().get(Self::PREFIX.len()..).unwrap_or_default();
        ulid::Ulid::from_string(body).map(|u| u.0).unwrap_or(0)
    }

    /// The ingest time encoded in the id.
    pub fn millis(&self) -> Millis {
        ulid::Ulid(self.ulid()).timestamp_ms()
    }
}

/// A delivery's public id: its event's id followed by three base-32 digits, the delivery's
/// index in the event's fan-out list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId {
    pub event: u128,
    pub index: u16,
}

/// Most webhooks one event can fan out to (three base-32 digits).
pub const MAX_FANOUT: usize = 32 * 32 * 32;

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

impl DeliveryId {
    pub const PREFIX: &'static str = "dlv_";

    pub fn new(event: &EventId, index: usize) -> Self {
        debug_assert!(index < MAX_FANOUT);
        Self { event: event.ulid(), index: index as u16 }
    }

    pub fn from_ref(r: DeliveryRef, at: Millis, order: u16, key: &IdKey) -> Self {
        Self::new(&EventId::from_seq(at, r.seq, order, key), r.index as usize)
    }

    pub fn event_id(&self) -> EventId {
        EventId(IdText::made(&format!("{}{}", EventId::PREFIX, ulid::Ulid(self.event))))
    }

    /// Where the delivery lives, for an id this node issued.
    pub fn to_ref(&self, key: &IdKey) -> Option<DeliveryRef> {
        Some(DeliveryRef { seq: self.event_id().seq(key)?, index: self.index })
    }

    pub fn parse(s: &str) -> Result<Self, BadId> {
        let bad = || BadId { kind: "delivery", value: s.chars().take(64).collect() };
        let body = s.strip_prefix(Self::PREFIX).ok_or_else(bad)?;
        if body.len() != ULID_LEN + 3 || !body.is_ascii() {
            return Err(bad());
        }
        let (ulid_text, idx) = body.split_at(ULID_LEN);
        if !is_ulid_text(ulid_text) {
            return Err(bad());
        }
        let event = ulid::Ulid::from_string(ulid_text).map_err(|_| bad())?.0;
        let mut index: u16 = 0;
        for b in idx.bytes() {
            let digit = CROCKFORD.iter().position(|c| *c == b).ok_or_else(bad)?;
            index = index * 32 + digit as u16;
        }
        Ok(Self { event, index })
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = self.index as usize;
        let digits = [CROCKFORD[(i >> 10) & 31], CROCKFORD[(i >> 5) & 31], CROCKFORD[i & 31]];
        write!(f, "{}{}", Self::PREFIX, ulid::Ulid(self.event))?;
        f.write_str(std::str::from_utf8(&digits).map_err(|_| fmt::Error)?)
    }
}

/// A tenant of the platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: AccountId,
    pub name: String,
    pub created_at: Millis,
    /// Set when the account was deleted; the row stays as a tombstone so that ids are never
    /// reused and deleted resources answer 404 rather than reappearing.
    pub deleted_at: Option<Millis>,
}

/// An API key. Only a SHA-256 hash of the whole key is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: KeyId,
    pub account_id: AccountId,
    /// The first characters of the key, shown in listings so a user can tell keys apart.
    pub prefix: String,
    pub hash: [u8; 32],
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

/// HTTP method used to deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Method {
    #[default]
    Post,
    Put,
    Patch,
}

/// A signing secret and, once superseded by a rotation, when it stops signing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    /// Sealed before it is stored (see [`crate::security::seal`]).
    pub value: crate::security::seal::SealedText,
    pub created_at: Millis,
    pub expires_at: Option<Millis>,
}

/// An endpoint an account subscribed, with its delivery policy. A record carrying a
/// `Webhook` carries all of it, so the newest record of a webhook supersedes the older ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub id: WebhookId,
    pub account_id: AccountId,
    pub name: String,
    pub description: String,
    pub url: String,
    /// Exact names, `family.*` prefixes or `*`.
    pub events: Vec<String>,
    /// Newest first; older ones sign Standard Webhooks signatures until they expire.
    pub secrets: Vec<Secret>,
    pub is_active: bool,
    pub max_retries: u32,
    pub timeout_ms: u64,
    pub method: Method,
    /// Custom headers: names in clear, values sealed before they are stored.
    pub headers: Vec<(String, crate::security::seal::SealedText)>,
    pub signature_header: String,
    pub signature_prefix: String,
    /// In what order its deliveries go (record version 3; before, a flag for `Strict`).
    pub ordering: DeliveryOrder,
    pub max_in_flight: u32,
    pub rate_limit: Option<u32>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// A condition on the envelope an event must pass besides its name (record version 3).
    pub filter: Option<filter::Filter>,
    /// How the body is written on the wire (record version 3).
    pub body_format: BodyFormat,
}

/// In what order a webhook's deliveries go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum DeliveryOrder {
    /// Due order, up to `max_in_flight` at once.
    #[default]
    None,
    /// One at a time, in event order (once `ordered: true`).
    Strict,
    /// One at a time per `ordering_key`, in event order; different keys in parallel.
    Key,
}

impl DeliveryOrder {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOrder::None => "none",
            DeliveryOrder::Strict => "strict",
            DeliveryOrder::Key => "key",
        }
    }
}

/// How a delivery's body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum BodyFormat {
    /// The contract's form: compact envelope, `data` exactly as it arrived.
    #[default]
    Original,
    /// Exactly what `JSON.stringify(JSON.parse(body))` gives, for receivers that check the
    /// signature over a re-serialized body.
    Javascript,
}

impl BodyFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            BodyFormat::Original => "original",
            BodyFormat::Javascript => "javascript",
        }
    }
}

impl Webhook {
    /// Whether this webhook subscribes to an event name.
    pub fn matches(&self, event: &str) -> bool {
        self.events.iter().any(|pattern| event_matches(pattern, event))
    }

    /// Whether at most one delivery is in flight at a time (`Strict`).
    pub fn is_strict(&self) -> bool {
        self.ordering == DeliveryOrder::Strict
    }
}

/// The family of Herald's own operational events (contract §5); clients cannot ingest names in it.
pub const OPERATIONAL_PREFIX: &str = "herald.";

/// `*` matches every platform event; `family.*` matches names under `family.`; anything else
/// exactly. Operational events (`herald.…`) are matched only by patterns that name their
/// family (`herald.*`, `herald.circuit.*`, an exact name): a webhook on `*` does not start
/// receiving Herald's own events unasked.
pub fn event_matches(pattern: &str, event: &str) -> bool {
    if pattern == "*" {
        return !event.starts_with(OPERATIONAL_PREFIX);
    }
    match pattern.strip_suffix('*') {
        Some(prefix) => event.starts_with(prefix),
        None => pattern == event,
    }
}

/// Longest event name accepted.
pub const MAX_EVENT_NAME: usize = 100;

/// An event name: lowercase words of letters and digits separated by `.` or `_`
/// (`new_lead`, `lead.qualified`), at most [`MAX_EVENT_NAME`] bytes.
pub fn is_event_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_EVENT_NAME
        && name
            .split(['.', '_'])
            .all(|word| !word.is_empty() && word.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

/// The health a webhook shows in the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum HealthState {
    #[default]
    Healthy,
    Failing,
    CircuitOpen,
    Disabled,
}

/// A webhook's delivery health and counters, as folded from its attempts. Every field that
/// depends on time or chance was decided by the live process and written in a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct WebhookStatus {
    pub state: HealthState,
    pub consecutive_failures: u32,
    pub last_attempt_at: Option<Millis>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    /// Start of the current run of failed attempts (for `disable_after`).
    pub failing_since: Option<Millis>,
    /// While the breaker is open: when the next probe may go out.
    pub breaker_until: Option<Millis>,
    /// The breaker's current cooldown (doubles on every failed probe).
    pub breaker_cooldown_ms: u64,
    pub disabled_reason: Option<String>,
}

/// Why a delivery stopped being attempted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeadReason {
    /// Every allowed attempt failed.
    RetriesExhausted,
    /// Still unfinished `delivery_ttl` after it was queued.
    Expired,
    /// The webhook or its account was deleted.
    Deleted,
    /// The webhook was disabled (410 Gone or `disable_after`).
    Disabled,
    /// The receiver answered 410 Gone.
    Gone,
    /// The stored event could not be read back (checksum mismatch).
    Corrupt,
}

impl DeadReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            DeadReason::RetriesExhausted => "retries_exhausted",
            DeadReason::Expired => "expired",
            DeadReason::Deleted => "deleted",
            DeadReason::Disabled => "disabled",
            DeadReason::Gone => "gone",
            DeadReason::Corrupt => "corrupt",
        }
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryState {
    /// Queued, not attempted since it was (re-)queued.
    Pending,
    /// At least one failed attempt; another is due.
    Retrying,
    Succeeded,
    Dead(DeadReason),
}

impl DeliveryState {
    pub fn is_finished(&self) -> bool {
        matches!(self, DeliveryState::Succeeded | DeliveryState::Dead(_))
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Retrying => "retrying",
            DeliveryState::Succeeded => "succeeded",
            DeliveryState::Dead(_) => "dead",
        }
    }
}

/// How an attempt ended, classified for metrics and retry decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttemptResult {
    Success,
    HttpError,
    Timeout,
    NetworkError,
    /// Refused by Herald itself (forbidden address, breaker open for a manual send, …).
    Refused,
}

/// What was observed of one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptOutcome {
    pub result: AttemptResult,
    pub status_code: Option<u16>,
    pub latency_us: u64,
    pub error: Option<String>,
    /// First 4 KiB of the response body, kept for failed attempts only.
    #[serde(with = "serde_bytes")]
    pub response_excerpt: Option<Vec<u8>>,
    /// The request headers as sent, with secret-bearing values already masked.
    pub request_headers: Vec<(String, String)>,
}

/// What comes after an attempt, decided by the live process (jitter included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NextStep {
    Succeeded,
    RetryAt(Millis),
    Dead(DeadReason),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_hide_and_give_back_their_sequence_number() {
        let key = IdKey::generate();
        let other = IdKey::generate();
        for seq in [0u64, 1, 2, 1 << 20, u64::MAX] {
            assert_eq!(key.unpermute(key.permute(seq)), seq);
            let id = EventId::from_seq(1_700_000_000_123, seq, 0, &key);
            assert_eq!(EventId::parse(id.as_str()), Ok(id.clone()));
            assert_eq!(id.seq(&key), Some(seq));
            let in_batch = EventId::from_seq(1_700_000_000_123, seq, 999, &key);
            assert_eq!(in_batch.seq(&key), Some(seq), "the place in a batch does not hide the record");
            assert_ne!(id.seq(&other), Some(seq));
            assert_eq!(id.millis(), 1_700_000_000_123);
        }
        // Neighbouring sequence numbers do not give neighbouring ids.
        assert!(key.permute(1000).abs_diff(key.permute(1001)) > 1 << 20);
    }

    #[test]
    fn ids_of_one_batch_sort_in_batch_order_whatever_their_sequence_numbers() {
        let key = IdKey::generate();
        for first in [0u64, 7, 1 << 40] {
            // One millisecond, or spread over a few: sorted either way.
            let ids: Vec<String> = (0..1000u64)
                .map(|i| EventId::from_seq(1_700_000_000_000 + i / 400, first + i, (i + 1) as u16, &key).to_string())
                .collect();
            let mut sorted = ids.clone();
            sorted.sort();
            assert_eq!(sorted, ids, "batch from {first}");
        }
        // Without a place (single events), one millisecond's ids are in no particular order.
        let singles: Vec<String> =
            (0..100).map(|s| EventId::from_seq(1_700_000_000_000, s, 0, &key).to_string()).collect();
        let mut sorted = singles.clone();
        sorted.sort();
        assert_ne!(sorted, singles);
    }

    #[test]
    fn delivery_ids_round_trip_and_sort_with_their_event() {
        let key = IdKey::generate();
        let evt = EventId::from_seq(1_700_000_000_000, 42, 3, &key);
        for index in [0usize, 1, 31, 32, 1000, MAX_FANOUT - 1] {
            let id = DeliveryId::new(&evt, index);
            let text = id.to_string();
            assert_eq!(DeliveryId::parse(&text), Ok(id));
            assert_eq!(id.event_id(), evt);
            let r = DeliveryRef { seq: 42, index: index as u16 };
            assert_eq!(id.to_ref(&key), Some(r));
            assert_eq!(DeliveryRef::from_bytes(&r.to_bytes()), Some(r));
            assert_eq!(DeliveryId::from_ref(r, 1_700_000_000_000, 3, &key), id);
        }
        let a = DeliveryId::new(&evt, 2).to_string();
        let b = DeliveryId::new(&evt, 10).to_string();
        assert!(a < b);
    }

    #[test]
    fn ids_reject_garbage() {
        for bad in ["", "wh_", "wh_123", "evt_01ARZ3NDEKTSV4RRFFQ69G5FAV", "wh_01ARZ3NDEKTSV4RRFFQ69G5FA\u{e9}"] {
            assert!(WebhookId::parse(bad).is_err(), "{bad}");
        }
        assert!(WebhookId::parse("wh_01ARZ3NDEKTSV4RRFFQ69G5FAV").is_ok());
        for bad in [
            "dlv_",
            "dlv_01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "dlv_01ARZ3NDEKTSV4RRFFQ69G5FAV00U",
            "dlv_01ARZ3NDEKTSV4RRFFQ69G5FAV\u{e9}0",
        ] {
            assert!(DeliveryId::parse(bad).is_err(), "{bad}");
        }
        assert!(AccountId::parse_any("acct_default").is_ok());
        assert!(AccountId::parse("acct_default").is_err());
    }

    #[test]
    fn ids_kept_inline_store_and_sort_as_their_text() {
        let ids = [
            "acct_default",
            "acct_01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "wh_01ARZ3NDEKTSV4RRFFQ69G5FA",
            "wh_01ARZ3NDEKTSV4RRFFQ69G5FAV",
        ];
        let config = bincode::config::standard();
        for (a, b) in ids.iter().zip(&ids[1..]) {
            let (x, y) = (IdText::new(a).unwrap(), IdText::new(b).unwrap());
            assert_eq!(x.cmp(&y), a.cmp(b), "{a} vs {b}");
        }
        for text in ids {
            let id = IdText::new(text).unwrap();
            assert_eq!(id.as_str(), text);
            let stored = bincode::serde::encode_to_vec(&id, config).unwrap();
            assert_eq!(stored, bincode::serde::encode_to_vec(text, config).unwrap(), "stored as a String is");
            let (back, _): (IdText, _) = bincode::serde::decode_from_slice(&stored, config).unwrap();
            assert_eq!(back, id);
        }
        let long = "acct_".to_owned() + &"0".repeat(27);
        assert!(IdText::new(&long).is_none());
        let stored = bincode::serde::encode_to_vec(&long, config).unwrap();
        assert!(bincode::serde::decode_from_slice::<IdText, _>(&stored, config).is_err(), "no truncation");
    }

    #[test]
    fn event_names_are_lowercase_words() {
        for good in ["new_lead", "lead.qualified", "email.opened", "a1.b2_c3"] {
            assert!(is_event_name(good), "{good}");
        }
        for bad in ["", "Lead", "lead..x", ".lead", "lead.", "lead-x", "lead qualified", "léad", &"a".repeat(101)] {
            assert!(!is_event_name(bad), "{bad}");
        }
    }

    #[test]
    fn patterns_match_as_documented() {
        assert!(event_matches("*", "lead.qualified"));
        assert!(event_matches("lead.*", "lead.qualified"));
        assert!(!event_matches("lead.*", "leads.qualified"));
        assert!(!event_matches("lead.*", "email.bounced"));
        assert!(!event_matches("*", "herald.circuit.opened"));
        assert!(event_matches("herald.*", "herald.circuit.opened"));
        assert!(event_matches("herald.delivery.dead", "herald.delivery.dead"));
        assert!(event_matches("new_lead", "new_lead"));
        assert!(!event_matches("new_lead", "new_lead2"));
    }
}
