//! The caller's account at a glance (`GET /api/v1/stats`): activity per minute over the
//! last hour from the summary counters, and the queue and breaker state from the catalog.
//!
//! Invariant: counts only the caller's account; minutes without activity are zeros, so a
//! chart of the answer always has 60 points.

use crate::domain::error::DomainError;
use crate::model::{AccountId, HealthState, Millis};
use crate::storage::{minute, Counters, Ledger};

/// Minutes the stats cover.
pub const WINDOW_MINUTES: u64 = 60;

#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Start of each minute (ms) and its counters, oldest first; the last is the current,
    /// unfinished minute.
    pub minutes: Vec<(Millis, Counters)>,
    pub total: Counters,
    /// Succeeded attempts over all attempts in the window; `None` without attempts.
    pub success_ratio: Option<f64>,
    pub webhooks: u64,
    pub pending: u64,
    pub dead_letters: u64,
    pub open_breakers: u64,
}

pub async fn of_account(ledger: &dyn Ledger, account: &AccountId, now: Millis) -> Result<Stats, DomainError> {
    let last = minute(now);
    let first = (last + 1).saturating_sub(WINDOW_MINUTES);
    let found = ledger.counters(account, first, last).await?;
    let mut minutes: Vec<(Millis, Counters)> = (first..=last).map(|m| (m * 60_000, Counters::default())).collect();
    let mut total = Counters::default();
    for (m, c) in found {
        if let Some(slot) = minutes.get_mut(m.saturating_sub(first) as usize) {
            slot.1 = c;
        }
        total.events += c.events;
        total.attempts += c.attempts;
        total.succeeded += c.succeeded;
    }
    let success_ratio = (total.attempts > 0).then(|| total.succeeded as f64 / total.attempts as f64);
    let catalog = ledger.catalog().read().map_err(|_| DomainError::Storage("catalog unavailable".into()))?;
    let mut stats = Stats { minutes, total, success_ratio, webhooks: 0, pending: 0, dead_letters: 0, open_breakers: 0 };
    for w in catalog.webhooks_of(account) {
        stats.webhooks += 1;
        if let Some(st) = catalog.statuses.get(&w.id) {
            stats.pending += st.pending;
            stats.dead_letters += st.dead;
            stats.open_breakers += u64::from(st.status.state == HealthState::CircuitOpen);
        }
    }
    Ok(stats)
}
