//! Summary rows: per-minute counters of each account (events, attempts, successes) and the
//! event names each account has sent. `GET /stats` and `GET /event-types` read them.
//!
//! Invariants:
//! - They are folded from records like every row (so a rebuild gives them back), but they
//!   are not history: counters older than [`KEEP_MINUTES`] are pruned by compaction, and a
//!   name stays known after compaction removed every event that used it. `verify`
//!   therefore leaves them out of `fold == rows`.
//! - The fold writes each summary key at most once per group commit's batch (the staged
//!   overlay absorbs the rest), so they add a few keys per commit, not per event.

use super::keys;
use super::rows::{Rows, RowsError};
use crate::model::{AccountId, Millis};
use serde::{Deserialize, Serialize};

/// How long per-minute counters are kept.
pub const KEEP_MINUTES: u64 = 120;

/// One account's activity in one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub events: u64,
    pub attempts: u64,
    pub succeeded: u64,
}

/// The minute a time falls in.
pub fn minute(at: Millis) -> u64 {
    at / 60_000
}

fn bump<R: Rows>(
    rows: &mut R,
    account: &AccountId,
    at: Millis,
    change: impl FnOnce(&mut Counters),
) -> Result<(), RowsError> {
    rows.update_row(keys::counters(account, minute(at)), change)
}

/// The fold of an ingested event.
pub(super) fn event<R: Rows>(rows: &mut R, account: &AccountId, name: &str, at: Millis) -> Result<(), RowsError> {
    rows.put(keys::event_name(account, name), Vec::new());
    bump(rows, account, at, |c| c.events += 1)
}

/// The fold of a finished attempt.
pub(super) fn attempt<R: Rows>(
    rows: &mut R,
    account: &AccountId,
    at: Millis,
    succeeded: bool,
) -> Result<(), RowsError> {
    bump(rows, account, at, |c| {
        c.attempts += 1;
        c.succeeded += u64::from(succeeded);
    })
}

/// The account's counters for minutes `from..=to`, oldest first (minutes with no activity
/// are absent).
pub fn counters(tree: &sled::Tree, account: &AccountId, from: u64, to: u64) -> Result<Vec<(u64, Counters)>, RowsError> {
    let mut out = Vec::new();
    for item in tree.range(keys::counters(account, from)..=keys::counters(account, to)) {
        let (k, v) = item?;
        let Some(m) = keys::trailing_u64(&k) else { continue };
        let c = super::codec::decode(super::rows::ROW_VERSION, &v)
            .map_err(|source| RowsError::Codec { key: super::rows::show_key(&k), source })?;
        out.push((m, c));
    }
    Ok(out)
}

/// The event names the account has sent, in name order, after `after`, at most `limit`.
pub fn names(
    tree: &sled::Tree,
    account: &AccountId,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<String>, RowsError> {
    let prefix = keys::event_names_of(account);
    let start = match after {
        Some(name) => {
            let mut k = keys::event_name(account, name);
            k.push(0);
            k
        }
        None => prefix.clone(),
    };
    let mut out = Vec::new();
    for item in tree.range(start..) {
        let (k, _) = item?;
        if !k.starts_with(&prefix) || out.len() >= limit {
            break;
        }
        if let Ok(name) = std::str::from_utf8(&k[prefix.len()..]) {
            out.push(name.to_owned());
        }
    }
    Ok(out)
}

/// Stages the removal of every counter row older than [`KEEP_MINUTES`] before `now`.
pub(super) fn prune<R: Rows>(rows: &mut R, tree: &sled::Tree, now: Millis) -> Result<usize, RowsError> {
    let oldest_kept = minute(now).saturating_sub(KEEP_MINUTES);
    let mut removed = 0;
    for item in tree.scan_prefix([keys::COUNTERS]) {
        let (k, _) = item?;
        if keys::trailing_u64(&k).is_some_and(|m| m < oldest_kept) {
            rows.delete(k.to_vec());
            removed += 1;
        }
    }
    Ok(removed)
}
