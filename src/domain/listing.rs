//! What every list of events or deliveries shares: a time window filter, a page with its
//! cursor, and a scan budget.
//!
//! Lists are read newest first from storage's indexes ([`Ledger::events_before`],
//! [`Ledger::deliveries_before`]), a chunk at a time ([`Entries`]). A filter can skip
//! many entries (say, the dead deliveries among millions of successes), so one request
//! examines at most [`SCAN_BUDGET`] entries; if it runs out, the page carries what it found
//! (possibly fewer than `limit` items, even none) and a cursor to go on from where it
//! stopped. A `null` cursor always means the end.

use crate::domain::error::DomainError;
use crate::model::{AccountId, Millis, WebhookId};
use crate::storage::{EventEntry, IntakeEntry, Ledger};
use std::collections::VecDeque;

/// Index entries read from storage at once.
const CHUNK: usize = 256;

/// Most index entries one list request examines.
pub const SCAN_BUDGET: usize = 20_000;

/// Ingest times are read before the append, so an index in sequence order is in time order
/// only up to the time a group commit takes; a scan stops this far below `since`.
const ORDER_SLACK_MS: Millis = 60_000;

/// `since` / `until`, inclusive, on the time Herald received the event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeWindow {
    pub since: Option<Millis>,
    pub until: Option<Millis>,
}

impl TimeWindow {
    pub fn new(since: Option<Millis>, until: Option<Millis>) -> Result<Self, DomainError> {
        if let (Some(s), Some(u)) = (since, until) {
            if s > u {
                return Err(DomainError::invalid("since", "must not be after until"));
            }
        }
        Ok(Self { since, until })
    }

    pub fn contains(&self, at: Millis) -> bool {
        self.since.is_none_or(|s| at >= s) && self.until.is_none_or(|u| at <= u)
    }

    /// Whether a newest-first scan that reached `at` can stop: nothing older can match.
    pub fn is_behind(&self, at: Millis) -> bool {
        self.since.is_some_and(|s| at.saturating_add(ORDER_SLACK_MS) < s)
    }
}

/// One page of a list: its items, newest first, and where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Counts what a list request examined against [`SCAN_BUDGET`].
#[derive(Debug, Default)]
pub struct Budget(usize);

impl Budget {
    /// Takes one unit; `false` once the budget is spent.
    pub fn take(&mut self) -> bool {
        self.0 += 1;
        self.0 <= SCAN_BUDGET
    }
}

/// An invalid cursor, answered as a field error.
pub fn bad_cursor() -> DomainError {
    DomainError::invalid("cursor", "not a cursor this list gave")
}

/// A newest-first walk over one of storage's indexes, read a chunk of entries at a time
/// below the position the walk started from.
pub struct Entries<T> {
    read: VecDeque<T>,
    /// Sequence number the next chunk is read below (`None`: from the newest).
    before: Option<u64>,
    done: bool,
}

impl<T> Entries<T> {
    pub fn new(before: Option<u64>) -> Self {
        Self { read: VecDeque::new(), before, done: false }
    }

    fn take(&mut self, chunk: Vec<T>, seq: impl Fn(&T) -> u64) {
        self.done = chunk.len() < CHUNK;
        self.before = chunk.last().map(seq).or(self.before);
        self.read.extend(chunk);
    }
}

impl Entries<EventEntry> {
    /// The account's next older event.
    pub async fn next_event(
        &mut self,
        ledger: &dyn Ledger,
        account: &AccountId,
    ) -> Result<Option<EventEntry>, DomainError> {
        if self.read.is_empty() && !self.done {
            let chunk = ledger.events_before(account, self.before, CHUNK).await?;
            self.take(chunk, |e| e.seq);
        }
        Ok(self.read.pop_front())
    }
}

impl Entries<IntakeEntry> {
    /// The webhook's next older delivery.
    pub async fn next_delivery(
        &mut self,
        ledger: &dyn Ledger,
        webhook: &WebhookId,
    ) -> Result<Option<IntakeEntry>, DomainError> {
        if self.read.is_empty() && !self.done {
            let chunk = ledger.deliveries_before(webhook, self.before, CHUNK).await?;
            self.take(chunk, |e| e.delivery.seq);
        }
        Ok(self.read.pop_front())
    }
}
