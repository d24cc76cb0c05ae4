//! The key space of the one sled tree that holds the log and its projection.
//!
//! sled batches are atomic within one tree only, so records, the rows they change and the
//! `applied` marker share a tree under distinct one-byte prefixes; one batch makes a record
//! and its effect durable together. Numbers are big-endian so byte order is numeric order.
//! Variable-length parts are followed by a 0 byte (ids never contain one) or come last.
//!
//! sled costs about the same per key whatever the value, so records are packed into log
//! pages ([`pages`](super::pages)) and ingest writes a few keys per group commit (pages,
//! intake chunks, status counters), never one per event or per delivery.
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `L` | seq of the page's first record | a log page of up to 16 [`Record`](super::record::Record)s |
//! | `M` | name | meta, outside the projection: `applied` (u64), `idkey`, `intake` hints |
//! | `a` | account | [`Account`](crate::model::Account) |
//! | `k` | key id | [`ApiKey`](crate::model::ApiKey) |
//! | `K` | account, key id | () — keys of an account |
//! | `w` | webhook | [`WebhookRow`](super::projection::WebhookRow) |
//! | `W` | account, webhook | () — webhooks of an account |
//! | `s` | webhook | [`StatusRow`](super::projection::StatusRow) |
//! | `n` | webhook, seq / 64 | intake chunk: the webhook's deliveries of those 64 records |
//! | `d` | seq, index | [`DeliveryRow`](super::projection::DeliveryRow), once it left intake |
//! | `q` | webhook, due, seq, index | [`QueueEntry`](super::projection::QueueEntry) — retries, re-queues |
//! | `i` | account, idempotency key | [`IdempotencyRow`](super::projection::IdempotencyRow) |
//! | `x` | time superseded, seq | () — webhook records a newer one replaced, for compaction |
//! | `A` | admin | the admin token's hash |
//! | `e` | account, seq / 64 | event chunk: the account's events of those 64 records ([`index`](super::index)) |
//! | `t` | account, event name | () — names the account has sent (summary) |
//! | `c` | account, minute | [`Counters`](super::summary::Counters) of that minute (summary) |
//!
//! Summary rows (`t`, `c`) are folded from records like the others, but they outlive the
//! records compaction removes (the names an account used) or are pruned on their own
//! schedule (per-minute counters, see `summary`), so `verify` does not compare them.

use crate::model::{AccountId, DeliveryRef, KeyId, Millis, WebhookId};

pub const LOG: u8 = b'L';
pub const META: u8 = b'M';
pub const ACCOUNT: u8 = b'a';
pub const KEY: u8 = b'k';
pub const ACCOUNT_KEYS: u8 = b'K';
pub const WEBHOOK: u8 = b'w';
pub const ACCOUNT_WEBHOOKS: u8 = b'W';
pub const STATUS: u8 = b's';
pub const INTAKE: u8 = b'n';
pub const DELIVERY: u8 = b'd';
pub const QUEUE: u8 = b'q';
pub const IDEMPOTENCY: u8 = b'i';
pub const SUPERSEDED: u8 = b'x';
pub const ADMIN: u8 = b'A';
pub const ACCOUNT_EVENTS: u8 = b'e';
pub const EVENT_NAMES: u8 = b't';
pub const COUNTERS: u8 = b'c';

/// Every prefix that holds projection rows (not records, not meta).
pub const PROJECTION_PREFIXES: [u8; 13] = [
    ACCOUNT,
    KEY,
    ACCOUNT_KEYS,
    WEBHOOK,
    ACCOUNT_WEBHOOKS,
    STATUS,
    INTAKE,
    DELIVERY,
    QUEUE,
    IDEMPOTENCY,
    SUPERSEDED,
    ADMIN,
    ACCOUNT_EVENTS,
];

/// Prefixes of summary rows: folded from records, not compared by `verify`.
pub const SUMMARY_PREFIXES: [u8; 2] = [EVENT_NAMES, COUNTERS];

pub const APPLIED: &[u8] = b"Mapplied";
pub const ID_KEY: &[u8] = b"Midkey";
/// In cluster mode, the id of the cluster whose log this tree folds (a node's tree is a
/// cache of one cluster's log, never of two).
pub const CLUSTER: &[u8] = b"Mcluster";
pub const ADMIN_TOKEN: &[u8] = b"Aadmin";

/// Records per intake chunk and per account event chunk.
pub const INTAKE_CHUNK: u64 = 64;

fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len = 1 + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.push(prefix);
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

pub fn log(seq: u64) -> Vec<u8> {
    key(LOG, &[&seq.to_be_bytes()])
}

/// The sequence number of a `L` key.
pub fn log_seq(key: &[u8]) -> Option<u64> {
    match key {
        [LOG, rest @ ..] if rest.len() == 8 => Some(u64::from_be_bytes(rest.try_into().ok()?)),
        _ => None,
    }
}

pub fn account(id: &AccountId) -> Vec<u8> {
    key(ACCOUNT, &[id.as_str().as_bytes()])
}

pub fn api_key(id: &KeyId) -> Vec<u8> {
    key(KEY, &[id.as_str().as_bytes()])
}

pub fn account_keys(account: &AccountId) -> Vec<u8> {
    key(ACCOUNT_KEYS, &[account.as_str().as_bytes(), &[0]])
}

pub fn account_key(account: &AccountId, id: &KeyId) -> Vec<u8> {
    key(ACCOUNT_KEYS, &[account.as_str().as_bytes(), &[0], id.as_str().as_bytes()])
}

pub fn webhook(id: &WebhookId) -> Vec<u8> {
    key(WEBHOOK, &[id.as_str().as_bytes()])
}

pub fn account_webhooks(account: &AccountId) -> Vec<u8> {
    key(ACCOUNT_WEBHOOKS, &[account.as_str().as_bytes(), &[0]])
}

pub fn account_webhook(account: &AccountId, id: &WebhookId) -> Vec<u8> {
    key(ACCOUNT_WEBHOOKS, &[account.as_str().as_bytes(), &[0], id.as_str().as_bytes()])
}

/// The id after the 0 byte of a `W` or `K` key.
pub fn id_after_separator(key: &[u8]) -> Option<&str> {
    let at = key.iter().position(|b| *b == 0)?;
    std::str::from_utf8(&key[at + 1..]).ok()
}

pub fn status(id: &WebhookId) -> Vec<u8> {
    key(STATUS, &[id.as_str().as_bytes()])
}

/// All intake chunks of a webhook, oldest first.
pub fn intake_of(webhook: &WebhookId) -> Vec<u8> {
    key(INTAKE, &[webhook.as_str().as_bytes(), &[0]])
}

/// The intake chunk holding record `seq`'s delivery to `webhook`.
pub fn intake(webhook: &WebhookId, seq: u64) -> Vec<u8> {
    intake_chunk(webhook, seq / INTAKE_CHUNK)
}

pub fn intake_chunk(webhook: &WebhookId, chunk: u64) -> Vec<u8> {
    key(INTAKE, &[webhook.as_str().as_bytes(), &[0], &chunk.to_be_bytes()])
}

/// The chunk number at the end of a `n` key.
pub fn intake_chunk_number(key: &[u8]) -> Option<u64> {
    let tail = key.len().checked_sub(8)?;
    Some(u64::from_be_bytes(key[tail..].try_into().ok()?))
}

/// Meta: the first intake chunk of `webhook` that may still hold an untaken delivery.
/// A hint for recovery, outside the projection: a lower value only costs time.
pub fn intake_hint(webhook: &WebhookId) -> Vec<u8> {
    let mut k = b"Mintake/".to_vec();
    k.extend_from_slice(webhook.as_str().as_bytes());
    k
}

pub fn delivery(d: DeliveryRef) -> Vec<u8> {
    key(DELIVERY, &[&d.to_bytes()])
}

/// All queue entries of a webhook, in due order.
pub fn queue_of(webhook: &WebhookId) -> Vec<u8> {
    key(QUEUE, &[webhook.as_str().as_bytes(), &[0]])
}

pub fn queue(webhook: &WebhookId, due: Millis, d: DeliveryRef) -> Vec<u8> {
    key(QUEUE, &[webhook.as_str().as_bytes(), &[0], &due.to_be_bytes(), &d.to_bytes()])
}

/// The due time and delivery at the end of a `q` key.
pub fn queue_parts(key: &[u8]) -> Option<(Millis, DeliveryRef)> {
    let tail = key.len().checked_sub(18)?;
    let due = u64::from_be_bytes(key[tail..tail + 8].try_into().ok()?);
    Some((due, DeliveryRef::from_bytes(&key[tail + 8..])?))
}

pub fn idempotency(account: &AccountId, idem_key: &str) -> Vec<u8> {
    key(IDEMPOTENCY, &[account.as_str().as_bytes(), &[0], idem_key.as_bytes()])
}

/// All event chunks of an account, oldest first.
pub fn account_events_of(account: &AccountId) -> Vec<u8> {
    key(ACCOUNT_EVENTS, &[account.as_str().as_bytes(), &[0]])
}

/// The event chunk of `account` holding record `seq`.
pub fn account_events(account: &AccountId, seq: u64) -> Vec<u8> {
    key(ACCOUNT_EVENTS, &[account.as_str().as_bytes(), &[0], &(seq / INTAKE_CHUNK).to_be_bytes()])
}

pub fn event_names_of(account: &AccountId) -> Vec<u8> {
    key(EVENT_NAMES, &[account.as_str().as_bytes(), &[0]])
}

pub fn event_name(account: &AccountId, name: &str) -> Vec<u8> {
    key(EVENT_NAMES, &[account.as_str().as_bytes(), &[0], name.as_bytes()])
}

pub fn counters_of(account: &AccountId) -> Vec<u8> {
    key(COUNTERS, &[account.as_str().as_bytes(), &[0]])
}

/// The counters of `account` for the minute `minute` (milliseconds / 60,000).
pub fn counters(account: &AccountId, minute: u64) -> Vec<u8> {
    key(COUNTERS, &[account.as_str().as_bytes(), &[0], &minute.to_be_bytes()])
}

/// The number at the end of a key that ends in a big-endian u64 (`n`, `e`, `c`).
pub fn trailing_u64(key: &[u8]) -> Option<u64> {
    let tail = key.len().checked_sub(8)?;
    Some(u64::from_be_bytes(key[tail..].try_into().ok()?))
}

pub fn superseded(at: Millis, seq: u64) -> Vec<u8> {
    key(SUPERSEDED, &[&at.to_be_bytes(), &seq.to_be_bytes()])
}

/// The time and sequence number of a `x` key.
pub fn superseded_parts(key: &[u8]) -> Option<(Millis, u64)> {
    if key.len() != 17 {
        return None;
    }
    Some((u64::from_be_bytes(key[1..9].try_into().ok()?), u64::from_be_bytes(key[9..].try_into().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_parts_sort_numerically_and_parse_back() {
        assert!(log(255) < log(256));
        assert_eq!(log_seq(&log(1 << 40)), Some(1 << 40));
        let wh = WebhookId::generate();
        let d = DeliveryRef { seq: 300, index: 3 };
        assert!(queue(&wh, 999, d) < queue(&wh, 1000, d));
        assert!(queue(&wh, 5, d).starts_with(&queue_of(&wh)));
        assert_eq!(queue_parts(&queue(&wh, 77, d)), Some((77, d)));
        assert_eq!(intake(&wh, 63), intake(&wh, 0));
        assert!(intake(&wh, 64) > intake(&wh, 63));
        assert_eq!(intake_chunk_number(&intake(&wh, 130)), Some(2));
        assert!(intake(&wh, 1).starts_with(&intake_of(&wh)));
        assert_eq!(superseded_parts(&superseded(5, 6)), Some((5, 6)));
        let acct = AccountId::default_account();
        assert_eq!(id_after_separator(&account_webhook(&acct, &wh)), Some(wh.as_str()));
        assert!(account_events(&acct, 64) > account_events(&acct, 63));
        assert!(account_events(&acct, 1).starts_with(&account_events_of(&acct)));
        assert_eq!(trailing_u64(&counters(&acct, 29_000_000)), Some(29_000_000));
        assert!(event_name(&acct, "lead.qualified").starts_with(&event_names_of(&acct)));
    }
}
