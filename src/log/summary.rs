//! Summary rows: per-minute counters of each account (events, attempts, successes) and the
//! event names each account has sent. `GET /stats` and `GET /event-types` read them.
//!
//! Invariants:
//! - They are folded from records like every row (so a rebuild gives them back), but they
//!   are not history: when an account's first event of a minute is folded, its counters
//!   older than [`KEEP_MINUTES`] before that minute go (by record time, so the fold stays
//!   clock-free, and per account, so no sweep over every account is ever needed); a name
//!   stays known after compaction removed every event that used it. `verify` therefore
//!   leaves them out of `fold == rows`.
//! - The fold writes each summary key at most once per group commit's batch (the staged
//!   overlay absorbs the rest), so they add a few keys per commit, not per event.

use super::keys;
use super::rows::{Rows, RowsError};
use crate::model::{AccountId, Millis};
pub(crate) use crate::storage::{minute, Counters};

/// How long per-minute counters are kept.
pub const KEEP_MINUTES: u64 = 120;

fn bump<R: Rows>(
    rows: &mut R,
    account: &AccountId,
    at: Millis,
    change: impl FnOnce(&mut Counters),
) -> Result<(), RowsError> {
    let key = keys::counters(account, minute(at));
    if !rows.contains(&key)? {
        forget_old_minutes(rows, account, minute(at))?;
    }
    rows.update_row(key, change)
}

/// Deletes the account's counters older than [`KEEP_MINUTES`] before `current`. Rows are
/// in minute order, so the oldest come first and the scan stops at the first kept one.
fn forget_old_minutes<R: Rows>(rows: &mut R, account: &AccountId, current: u64) -> Result<(), RowsError> {
    let oldest_kept = current.saturating_sub(KEEP_MINUTES);
    for (k, _) in rows.scan(&keys::counters_of(account), 2 * KEEP_MINUTES as usize)? {
        match keys::trailing_u64(&k) {
            Some(m) if m < oldest_kept => rows.delete(k),
            _ => break,
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::rows::MemRows;

    #[test]
    fn counters_add_up_per_minute_and_old_minutes_go_when_a_new_one_starts() {
        let mut rows = MemRows::default();
        let acct = AccountId::default_account();
        let other = AccountId::generate();
        let at = |m: u64| m * 60_000 + 5;
        event(&mut rows, &acct, "lead.qualified", at(0)).unwrap();
        event(&mut rows, &acct, "lead.qualified", at(0)).unwrap();
        attempt(&mut rows, &acct, at(0), true).unwrap();
        event(&mut rows, &other, "new_lead", at(0)).unwrap();
        event(&mut rows, &acct, "email.bounced", at(100)).unwrap();
        let minutes = |rows: &MemRows, a: &AccountId| -> Vec<u64> {
            rows.scan(&keys::counters_of(a), 1000).unwrap().iter().filter_map(|(k, _)| keys::trailing_u64(k)).collect()
        };
        assert_eq!(minutes(&rows, &acct), [0, 100]);
        let c: Counters = rows.get_row(&keys::counters(&acct, 0)).unwrap().unwrap();
        assert_eq!(c, Counters { events: 2, attempts: 1, succeeded: 1 });
        event(&mut rows, &acct, "lead.qualified", at(121)).unwrap();
        assert_eq!(minutes(&rows, &acct), [100, 121], "minute 0 is more than 120 minutes before 121");
        assert_eq!(minutes(&rows, &other), [0], "another account's rows are its own business");
        let names: Vec<String> = rows
            .scan(&keys::event_names_of(&acct), 10)
            .unwrap()
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(&k[keys::event_names_of(&acct).len()..]).into_owned())
            .collect();
        assert_eq!(names, ["email.bounced", "lead.qualified"]);
    }
}
