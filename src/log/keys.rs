//! The key space of the one sled tree that holds the log and its projection.
//!
//! sled batches are atomic within one tree only, so records, the rows they change and the
//! `applied` marker share a tree under distinct one-byte prefixes; one batch makes a record
//! and its effect durable together. Numbers are big-endian so byte order is numeric order.
//! Variable-length parts are followed by a 0 byte (ids never contain one) or come last.
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `L` | seq | a [`Record`](super::record::Record) |
//! | `M` | name | meta: `applied` (u64 seq), `admin` (token hash) |
//! | `a` | account | [`Account`](crate::model::Account) |
//! | `k` | key id | [`ApiKey`](crate::model::ApiKey) |
//! | `K` | account, key id | () — keys of an account |
//! | `w` | webhook | [`WebhookRow`](super::projection::WebhookRow) |
//! | `W` | account, webhook | () — webhooks of an account |
//! | `s` | webhook | [`StatusRow`](super::projection::StatusRow) |
//! | `e` | account, event ulid | [`EventRow`](super::projection::EventRow) |
//! | `d` | delivery | [`DeliveryRow`](super::projection::DeliveryRow), once it left its first state |
//! | `q` | webhook, due, delivery | [`QueueEntry`](super::projection::QueueEntry) — unfinished deliveries |
//! | `p` | kind, finish time, delivery | () — finished deliveries, for compaction (kind 0 succeeded, 1 dead) |
//! | `x` | time superseded, seq | () — webhook records a newer one replaced, for compaction |
//! | `i` | account, idempotency key | [`IdempotencyRow`](super::projection::IdempotencyRow) |

use crate::model::{AccountId, DeliveryId, EventId, KeyId, Millis, WebhookId};

pub const LOG: u8 = b'L';
pub const META: u8 = b'M';
pub const ACCOUNT: u8 = b'a';
pub const KEY: u8 = b'k';
pub const ACCOUNT_KEYS: u8 = b'K';
pub const WEBHOOK: u8 = b'w';
pub const ACCOUNT_WEBHOOKS: u8 = b'W';
pub const STATUS: u8 = b's';
pub const EVENT: u8 = b'e';
pub const DELIVERY: u8 = b'd';
pub const QUEUE: u8 = b'q';
pub const PURGE: u8 = b'p';
pub const IDEMPOTENCY: u8 = b'i';
pub const SUPERSEDED: u8 = b'x';

/// Every prefix that holds projection rows (not records, not meta).
pub const PROJECTION_PREFIXES: [u8; 12] = [
    ACCOUNT,
    KEY,
    ACCOUNT_KEYS,
    WEBHOOK,
    ACCOUNT_WEBHOOKS,
    STATUS,
    EVENT,
    DELIVERY,
    QUEUE,
    PURGE,
    IDEMPOTENCY,
    SUPERSEDED,
];

pub const APPLIED: &[u8] = b"Mapplied";
pub const ADMIN_TOKEN: &[u8] = b"Madmin";

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
    key(
        ACCOUNT_KEYS,
        &[account.as_str().as_bytes(), &[0], id.as_str().as_bytes()],
    )
}

pub fn webhook(id: &WebhookId) -> Vec<u8> {
    key(WEBHOOK, &[id.as_str().as_bytes()])
}

pub fn account_webhooks(account: &AccountId) -> Vec<u8> {
    key(ACCOUNT_WEBHOOKS, &[account.as_str().as_bytes(), &[0]])
}

pub fn account_webhook(account: &AccountId, id: &WebhookId) -> Vec<u8> {
    key(
        ACCOUNT_WEBHOOKS,
        &[account.as_str().as_bytes(), &[0], id.as_str().as_bytes()],
    )
}

/// The webhook id at the end of a `W` key.
pub fn webhook_of_account_key(key: &[u8]) -> Option<WebhookId> {
    let at = key.iter().position(|b| *b == 0)?;
    WebhookId::parse(std::str::from_utf8(&key[at + 1..]).ok()?).ok()
}

pub fn status(id: &WebhookId) -> Vec<u8> {
    key(STATUS, &[id.as_str().as_bytes()])
}

pub fn account_events(account: &AccountId) -> Vec<u8> {
    key(EVENT, &[account.as_str().as_bytes(), &[0]])
}

pub fn event(account: &AccountId, id: &EventId) -> Vec<u8> {
    key(
        EVENT,
        &[account.as_str().as_bytes(), &[0], &id.ulid().to_be_bytes()],
    )
}

pub fn delivery(id: DeliveryId) -> Vec<u8> {
    key(DELIVERY, &[&id.to_bytes()])
}

/// All queue entries of a webhook, in due order.
pub fn queue_of(webhook: &WebhookId) -> Vec<u8> {
    key(QUEUE, &[webhook.as_str().as_bytes(), &[0]])
}

pub fn queue(webhook: &WebhookId, due: Millis, id: DeliveryId) -> Vec<u8> {
    key(
        QUEUE,
        &[
            webhook.as_str().as_bytes(),
            &[0],
            &due.to_be_bytes(),
            &id.to_bytes(),
        ],
    )
}

/// The due time and delivery at the end of a `q` key.
pub fn queue_parts(key: &[u8]) -> Option<(Millis, DeliveryId)> {
    let tail = key.len().checked_sub(26)?;
    let due = u64::from_be_bytes(key[tail..tail + 8].try_into().ok()?);
    Some((due, DeliveryId::from_bytes(&key[tail + 8..])?))
}

/// Which retention a finished delivery is kept for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Kept for `retention`.
    Succeeded = 0,
    /// A dead letter, kept for `dead_retention`.
    Dead = 1,
}

pub fn purge_of(kind: Finished) -> Vec<u8> {
    key(PURGE, &[&[kind as u8]])
}

pub fn purge(kind: Finished, at: Millis, id: DeliveryId) -> Vec<u8> {
    key(PURGE, &[&[kind as u8], &at.to_be_bytes(), &id.to_bytes()])
}

/// The finish time and delivery of a `p` key.
pub fn purge_parts(key: &[u8]) -> Option<(Millis, DeliveryId)> {
    if key.len() != 2 + 8 + 18 {
        return None;
    }
    let at = u64::from_be_bytes(key[2..10].try_into().ok()?);
    Some((at, DeliveryId::from_bytes(&key[10..])?))
}

pub fn superseded(at: Millis, seq: u64) -> Vec<u8> {
    key(SUPERSEDED, &[&at.to_be_bytes(), &seq.to_be_bytes()])
}

/// The time and sequence number of a `x` key.
pub fn superseded_parts(key: &[u8]) -> Option<(Millis, u64)> {
    if key.len() != 17 {
        return None;
    }
    Some((
        u64::from_be_bytes(key[1..9].try_into().ok()?),
        u64::from_be_bytes(key[9..].try_into().ok()?),
    ))
}

pub fn idempotency(account: &AccountId, idem_key: &str) -> Vec<u8> {
    key(
        IDEMPOTENCY,
        &[account.as_str().as_bytes(), &[0], idem_key.as_bytes()],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_parts_sort_numerically_and_parse_back() {
        assert!(log(255) < log(256));
        assert_eq!(log_seq(&log(1 << 40)), Some(1 << 40));
        let wh = WebhookId::generate();
        let d = DeliveryId::new(&EventId::generate(), 3);
        assert!(queue(&wh, 999, d) < queue(&wh, 1000, d));
        assert!(queue(&wh, 5, d).starts_with(&queue_of(&wh)));
        assert_eq!(queue_parts(&queue(&wh, 77, d)), Some((77, d)));
        assert_eq!(purge_parts(&purge(Finished::Dead, 88, d)), Some((88, d)));
        assert!(purge(Finished::Dead, 88, d).starts_with(&purge_of(Finished::Dead)));
        assert_eq!(superseded_parts(&superseded(5, 6)), Some((5, 6)));
        let acct = AccountId::default_account();
        assert_eq!(
            webhook_of_account_key(&account_webhook(&acct, &wh)),
            Some(wh)
        );
    }
}
