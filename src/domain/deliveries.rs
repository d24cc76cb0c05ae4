//! Deliveries (domain): reading them — lists with filters, one with its attempts — and
//! putting dead ones back to work (retry one, recover a webhook's window).
//!
//! Invariants:
//! - A tenant reaches a delivery only through its own account: a delivery id is resolved
//!   to the event record that owes it, and the record's account must be the caller's and
//!   the id must be exactly the one Herald derived for it; anything else is `NotFound`,
//!   the same answer as for an id that never existed.
//! - Retry and recover only append `DeliveryRetried` / `DeliveryRequeued` records. Whether
//!   the delivery is still dead and its webhook still there is a precondition storage checks
//!   atomically with the append, so two retries of one delivery cannot both re-queue it.

use crate::domain::error::DomainError;
use crate::domain::events;
use crate::domain::listing::{bad_cursor, Budget, Entries, Listing, TimeWindow};
use crate::model::*;
use crate::storage::{AttemptFinished, Command, DeliveryRow, EventIngested, Ledger, Precondition, Record};

/// Most re-queue records one append carries when recovering a window.
const RECOVER_CHUNK: usize = 1_000;

/// The `status=` filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Pending,
    Retrying,
    Succeeded,
    Dead,
}

impl StatusFilter {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        match s {
            "pending" => Ok(Self::Pending),
            "retrying" => Ok(Self::Retrying),
            "succeeded" => Ok(Self::Succeeded),
            "dead" => Ok(Self::Dead),
            _ => Err(DomainError::invalid("status", "must be pending, retrying, succeeded or dead")),
        }
    }

    fn matches(self, state: &DeliveryState) -> bool {
        matches!(
            (self, state),
            (Self::Pending, DeliveryState::Pending)
                | (Self::Retrying, DeliveryState::Retrying)
                | (Self::Succeeded, DeliveryState::Succeeded)
                | (Self::Dead, DeliveryState::Dead(_))
        )
    }
}

/// Filters of a delivery list.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub status: Option<StatusFilter>,
    pub webhook: Option<WebhookId>,
    pub event: Option<EventId>,
    pub window: TimeWindow,
}

/// A delivery as lists and reads show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryInfo {
    pub id: DeliveryId,
    pub event_id: EventId,
    pub event: String,
    pub webhook_id: WebhookId,
    /// When its event was ingested.
    pub created_at: Millis,
    pub row: DeliveryRow,
    /// When it will really be tried next ([`next_attempt`]).
    pub next_attempt_at: Option<Millis>,
}

impl DeliveryInfo {
    /// `at` and `order` are its event's (`EventIngested`): both are part of the id.
    fn new(
        ledger: &dyn Ledger,
        d: DeliveryRef,
        (at, order): (Millis, u16),
        webhook: &WebhookId,
        event: String,
        row: DeliveryRow,
    ) -> Self {
        let id = DeliveryId::from_ref(d, at, order, ledger.id_key());
        let next_attempt_at = ledger.catalog().read().ok().and_then(|c| {
            let active = c.webhooks.get(webhook).is_some_and(|w| w.webhook.is_active && w.deleted_at.is_none());
            let never_tried = WebhookStatus::default();
            let status = c.statuses.get(webhook).map_or(&never_tried, |s| &s.status);
            next_attempt(row.next_due, active, status, now_millis())
        });
        DeliveryInfo {
            event_id: id.event_id(),
            id,
            event,
            webhook_id: webhook.clone(),
            created_at: at,
            row,
            next_attempt_at,
        }
    }
}

/// When a waiting delivery will really be tried: its own due time, unless its webhook's
/// breaker is open — then not before the probe may go (`breaker_until`), and never at a time
/// already past, since it goes only once a probe has closed the breaker. `None` once it is
/// finished, and while its webhook is paused or disabled (nothing is scheduled then).
pub fn next_attempt(
    next_due: Option<Millis>,
    webhook_active: bool,
    status: &WebhookStatus,
    now: Millis,
) -> Option<Millis> {
    let due = next_due?;
    if !webhook_active || status.state == HealthState::Disabled {
        return None;
    }
    Some(match status.state {
        HealthState::CircuitOpen => due.max(status.breaker_until.unwrap_or(now)).max(now),
        _ => due,
    })
}

/// Where one delivery stands, with what a list shows of it.
async fn info(
    ledger: &dyn Ledger,
    d: DeliveryRef,
    webhook: &WebhookId,
    event: &EventIngested,
) -> Result<Option<DeliveryInfo>, DomainError> {
    let row = ledger.delivery(d, webhook).await?;
    Ok(row.map(|row| DeliveryInfo::new(ledger, d, (event.at, event.order), webhook, event.event.clone(), row)))
}

/// Gathers one page of a delivery list while a source offers deliveries newest first.
struct DeliveryPage<'a> {
    ledger: &'a dyn Ledger,
    filter: &'a DeliveryFilter,
    limit: usize,
    budget: Budget,
    items: Vec<DeliveryInfo>,
    /// The last delivery examined: where the next page starts if the budget runs out.
    last: Option<(DeliveryRef, Millis)>,
    next_cursor: Option<String>,
}

impl<'a> DeliveryPage<'a> {
    fn new(ledger: &'a dyn Ledger, filter: &'a DeliveryFilter, limit: usize) -> Self {
        Self { ledger, filter, limit, budget: Budget::default(), items: Vec::new(), last: None, next_cursor: None }
    }

    /// Counts one step of the scan; `false` (with the cursor set) once the budget is spent.
    fn step(&mut self) -> bool {
        if self.budget.take() {
            return true;
        }
        // A cursor is read for its sequence number and index only.
        self.next_cursor = self.last.map(|(d, at)| DeliveryId::from_ref(d, at, 0, self.ledger.id_key()).to_string());
        false
    }

    /// Offers one delivery; `false` when the page is complete. `event` is its event's name
    /// and place in its batch if the source already read the record (else it is read only
    /// for a delivery shown).
    async fn offer(
        &mut self,
        d: DeliveryRef,
        at: Millis,
        webhook: &WebhookId,
        event: Option<(&str, u16)>,
    ) -> Result<bool, DomainError> {
        if !self.step() {
            return Ok(false);
        }
        if !self.filter.window.contains(at) || self.filter.webhook.as_ref().is_some_and(|w| w != webhook) {
            self.last = Some((d, at));
            return Ok(true);
        }
        let Some(row) = self.ledger.delivery(d, webhook).await? else { return Ok(true) };
        self.last = Some((d, at));
        if self.filter.status.is_some_and(|s| !s.matches(&row.state)) {
            return Ok(true);
        }
        if self.items.len() == self.limit {
            // One more match exists: the page is full and another follows.
            self.next_cursor = self.items.last().map(|i| i.id.to_string());
            return Ok(false);
        }
        let (event, order) = match event {
            Some((name, order)) => (name.to_owned(), order),
            None => match self.ledger.record(d.seq).await? {
                Some(Record::EventIngested(e)) => (e.event, e.order),
                _ => return Ok(true),
            },
        };
        self.items.push(DeliveryInfo::new(self.ledger, d, (at, order), webhook, event, row));
        Ok(true)
    }

    fn done(self) -> Listing<DeliveryInfo> {
        Listing { items: self.items, next_cursor: self.next_cursor }
    }
}

/// The account's deliveries matching `filter`, newest first, after `cursor`.
pub async fn list(
    ledger: &dyn Ledger,
    account: &AccountId,
    filter: &DeliveryFilter,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Listing<DeliveryInfo>, DomainError> {
    let after = match cursor {
        None => None,
        Some(c) => {
            let id = DeliveryId::parse(c).map_err(|_| bad_cursor())?;
            Some(DeliveryRef { seq: events::cursor_seq(ledger, &id.event_id()).await?, index: id.index })
        }
    };
    let before_seq = after.map(|d| d.seq.saturating_add(1));
    let is_next = |d: DeliveryRef| after.is_none_or(|a| d < a);
    if let Some(w) = &filter.webhook {
        owned_webhook(ledger, account, w)?;
    }
    let mut page = DeliveryPage::new(ledger, filter, limit);

    if let Some(event_id) = &filter.event {
        let (seq, event) = events::get(ledger, account, event_id).await?;
        for (index, webhook) in event.webhooks.iter().enumerate().rev() {
            let d = DeliveryRef { seq, index: index as u16 };
            if is_next(d) && !page.offer(d, event.at, webhook, Some((&event.event, event.order))).await? {
                break;
            }
        }
    } else if let Some(webhook) = &filter.webhook {
        let mut entries = Entries::new(before_seq);
        while let Some(entry) = entries.next_delivery(ledger, webhook).await? {
            if filter.window.is_behind(entry.at) {
                break;
            }
            if is_next(entry.delivery) && !page.offer(entry.delivery, entry.at, webhook, None).await? {
                break;
            }
        }
    } else {
        let mut entries = Entries::new(before_seq);
        'events: while let Some(entry) = entries.next_event(ledger, account).await? {
            if filter.window.is_behind(entry.at) {
                break;
            }
            if entry.deliveries == 0 || !filter.window.contains(entry.at) {
                if !page.step() {
                    break;
                }
                // The cursor moves past it too, or a long run of such events would hand
                // back the same cursor page after page.
                page.last = Some((DeliveryRef { seq: entry.seq, index: 0 }, entry.at));
                continue;
            }
            let Some(Record::EventIngested(event)) = ledger.record(entry.seq).await? else { continue };
            for (index, webhook) in event.webhooks.iter().enumerate().rev() {
                let d = DeliveryRef { seq: entry.seq, index: index as u16 };
                if is_next(d) && !page.offer(d, entry.at, webhook, Some((&event.event, event.order))).await? {
                    break 'events;
                }
            }
        }
    }
    Ok(page.done())
}

/// A live webhook of the account, else `NotFound` (a deleted webhook is gone, as for
/// `GET /webhooks/{id}`).
fn owned_webhook(ledger: &dyn Ledger, account: &AccountId, id: &WebhookId) -> Result<(), DomainError> {
    let catalog = ledger.catalog().read().map_err(|_| DomainError::Storage("catalog unavailable".into()))?;
    catalog.live_webhook(account, id).map(|_| ()).ok_or(DomainError::NotFound)
}

/// The delivery behind a public id, if it is the account's.
async fn resolve(
    ledger: &dyn Ledger,
    account: &AccountId,
    id: &DeliveryId,
) -> Result<(DeliveryRef, EventIngested), DomainError> {
    let d = id.to_ref(ledger.id_key()).ok_or(DomainError::NotFound)?;
    let (seq, event) = events::get(ledger, account, &id.event_id()).await?;
    if seq != d.seq || usize::from(d.index) >= event.webhooks.len() {
        return Err(DomainError::NotFound);
    }
    Ok((d, event))
}

/// Every delivery an event owes, in fan-out order.
pub async fn of_event(ledger: &dyn Ledger, seq: u64, event: &EventIngested) -> Result<Vec<DeliveryInfo>, DomainError> {
    let mut out = Vec::with_capacity(event.webhooks.len());
    for (index, webhook) in event.webhooks.iter().enumerate() {
        let d = DeliveryRef { seq, index: index as u16 };
        if let Some(i) = info(ledger, d, webhook, event).await? {
            out.push(i);
        }
    }
    Ok(out)
}

/// One delivery of the account with every attempt it made, oldest first.
pub async fn get(
    ledger: &dyn Ledger,
    account: &AccountId,
    id: &DeliveryId,
) -> Result<(DeliveryInfo, Vec<AttemptFinished>), DomainError> {
    let (d, event) = resolve(ledger, account, id).await?;
    let webhook = &event.webhooks[usize::from(d.index)];
    let info = info(ledger, d, webhook, &event).await?.ok_or(DomainError::NotFound)?;
    let mut attempts = Vec::new();
    for seq in &info.row.seqs {
        if let Some(Record::AttemptFinished(a)) = ledger.record(*seq).await? {
            attempts.push(*a);
        }
    }
    Ok((info, attempts))
}

/// Re-queues one dead delivery of the account, due now, with fresh attempts and TTL. Whether
/// it is still dead and its webhook still there is checked atomically with the append.
pub async fn retry(ledger: &dyn Ledger, account: &AccountId, id: &DeliveryId) -> Result<DeliveryInfo, DomainError> {
    let (d, event) = resolve(ledger, account, id).await?;
    let webhook = event.webhooks[usize::from(d.index)].clone();
    let record = Record::DeliveryRetried { delivery: d, webhook_id: webhook.clone(), at: now_millis() };
    let rule = Precondition::DeliveryDead { delivery: d, webhook: webhook.clone() };
    ledger.append(Command::checked(vec![record], rule)).await?;
    info(ledger, d, &webhook, &event).await?.ok_or(DomainError::NotFound)
}

/// The webhook's dead deliveries whose events arrived in `window`, newest first. Reads the
/// webhook's whole history in the window.
pub async fn dead_in_window(
    ledger: &dyn Ledger,
    account: &AccountId,
    webhook: &WebhookId,
    window: TimeWindow,
) -> Result<Vec<DeliveryRef>, DomainError> {
    owned_webhook(ledger, account, webhook)?;
    let mut dead = Vec::new();
    let mut entries = Entries::new(None);
    while let Some(entry) = entries.next_delivery(ledger, webhook).await? {
        if window.is_behind(entry.at) {
            break;
        }
        if !window.contains(entry.at) {
            continue;
        }
        if let Some(row) = ledger.delivery(entry.delivery, webhook).await? {
            if matches!(row.state, DeliveryState::Dead(_)) {
                dead.push(entry.delivery);
            }
        }
    }
    Ok(dead)
}

/// Re-queues `dead` (newest first, as [`dead_in_window`] gives them) oldest first, so the
/// work goes out in event order; returns how many were re-queued. A delivery no longer dead
/// when its record is applied is left as it is (the fold ignores it).
pub async fn requeue(ledger: &dyn Ledger, webhook: &WebhookId, dead: &[DeliveryRef]) -> Result<u64, DomainError> {
    let mut requeued = 0u64;
    for chunk in dead.rchunks(RECOVER_CHUNK) {
        let at = now_millis();
        let records: Vec<Record> = chunk
            .iter()
            .rev()
            .map(|d| Record::DeliveryRequeued { delivery: *d, webhook_id: webhook.clone(), at })
            .collect();
        ledger.append(Command::checked(records, Precondition::WebhookLive(webhook.clone()))).await?;
        requeued += chunk.len() as u64;
    }
    Ok(requeued)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::events::{ingest, EventInput};
    use crate::domain::fixtures::{block_on, ledger, rules, webhook};

    /// One event of `account` owed to its webhooks subscribed to `lead.*`; its seq.
    fn one_event(ledger: &crate::domain::fixtures::MemoryLedger, account: &AccountId) -> EventId {
        let input = EventInput {
            event: "lead.qualified".into(),
            data: b"{}".to_vec(),
            timestamp: None,
            external_id: None,
            idempotency_key: None,
            order: 0,
            ordering_key: None,
        };
        block_on(ingest(ledger, &rules(), account, input)).unwrap().id
    }

    /// Records the delivery's attempt as the engine would, ending it with `next`.
    fn attempt(ledger: &crate::domain::fixtures::MemoryLedger, d: DeliveryRef, webhook: &WebhookId, next: NextStep) {
        let at = now_millis();
        let record = Record::AttemptFinished(Box::new(AttemptFinished {
            delivery: d,
            webhook_id: webhook.clone(),
            attempt: 1,
            started_at: at,
            at,
            outcome: AttemptOutcome {
                result: AttemptResult::HttpError,
                status_code: Some(503),
                latency_us: 1_000,
                error: Some("HTTP 503".into()),
                response_excerpt: None,
                request_headers: Vec::new(),
            },
            next,
            status: WebhookStatus::default(),
        }));
        block_on(ledger.append(Command::new(vec![record]))).unwrap();
    }

    #[test]
    fn a_dead_delivery_is_retried_once_and_shows_its_attempts() {
        let ledger = ledger();
        let account = AccountId::default_account();
        let w = webhook(&ledger, &account, &["lead.*"]);
        let event = one_event(&ledger, &account);
        let id = DeliveryId::new(&event, 0);
        let d = id.to_ref(ledger.id_key()).unwrap();
        let listed = block_on(list(&ledger, &account, &DeliveryFilter::default(), None, 10)).unwrap();
        assert_eq!(
            listed.items.iter().map(|i| (&i.id, &i.row.state)).collect::<Vec<_>>(),
            vec![(&id, &DeliveryState::Pending)]
        );
        assert!(matches!(block_on(retry(&ledger, &account, &id)), Err(DomainError::Conflict(_))), "not dead");

        attempt(&ledger, d, &w.id, NextStep::Dead(DeadReason::RetriesExhausted));
        let (info, attempts) = block_on(get(&ledger, &account, &id)).unwrap();
        assert!(matches!(info.row.state, DeliveryState::Dead(_)));
        assert_eq!(attempts.iter().map(|a| a.outcome.status_code).collect::<Vec<_>>(), vec![Some(503)]);
        let dead = DeliveryFilter { status: Some(StatusFilter::Dead), ..Default::default() };
        assert_eq!(block_on(list(&ledger, &account, &dead, None, 10)).unwrap().items.len(), 1);

        let again = block_on(retry(&ledger, &account, &id)).unwrap();
        assert_eq!(again.row.state, DeliveryState::Pending);
        assert!(matches!(block_on(retry(&ledger, &account, &id)), Err(DomainError::Conflict(_))), "twice");
        let (other, _) = block_on(crate::domain::accounts::create(&ledger, "other")).unwrap();
        assert_eq!(block_on(get(&ledger, &other.id, &id)).err(), Some(DomainError::NotFound));
    }

    #[test]
    fn recover_requeues_the_dead_letters_of_a_window_oldest_first() {
        let ledger = ledger();
        let account = AccountId::default_account();
        let w = webhook(&ledger, &account, &["lead.*"]);
        let events: Vec<EventId> = (0..4).map(|_| one_event(&ledger, &account)).collect();
        let refs: Vec<DeliveryRef> =
            events.iter().map(|e| DeliveryId::new(e, 0).to_ref(ledger.id_key()).unwrap()).collect();
        for (i, d) in refs.iter().enumerate() {
            let next = if i == 1 { NextStep::Succeeded } else { NextStep::Dead(DeadReason::RetriesExhausted) };
            attempt(&ledger, *d, &w.id, next);
        }
        let dead = block_on(dead_in_window(&ledger, &account, &w.id, TimeWindow::default())).unwrap();
        assert_eq!(dead, vec![refs[3], refs[2], refs[0]], "newest first, the success left out");
        assert_eq!(block_on(requeue(&ledger, &w.id, &dead)).unwrap(), 3);
        // One record per delivery, oldest first: the work goes out in event order.
        let last = block_on(ledger.last_seq()).unwrap();
        let requeued: Vec<DeliveryRef> = (last - 2..=last)
            .filter_map(|seq| match block_on(ledger.record(seq)).unwrap() {
                Some(Record::DeliveryRequeued { delivery, .. }) => Some(delivery),
                _ => None,
            })
            .collect();
        assert_eq!(requeued, vec![refs[0], refs[2], refs[3]]);
        let (window, _) = block_on(ledger.due_window(&w.id, 10, None)).unwrap();
        assert_eq!(window.len(), 3, "owed again");
        let (other, _) = block_on(crate::domain::accounts::create(&ledger, "other")).unwrap();
        assert_eq!(
            block_on(dead_in_window(&ledger, &other.id, &w.id, TimeWindow::default())).err(),
            Some(DomainError::NotFound)
        );
    }

    fn status(state: HealthState, breaker_until: Option<Millis>) -> WebhookStatus {
        WebhookStatus { state, breaker_until, ..WebhookStatus::default() }
    }

    #[test]
    fn the_next_attempt_is_when_the_breaker_lets_it_go_and_never_in_the_past() {
        let now = 10_000;
        let healthy = status(HealthState::Healthy, None);
        assert_eq!(next_attempt(Some(9_000), true, &healthy, now), Some(9_000), "due: going now");
        assert_eq!(next_attempt(Some(12_000), true, &healthy, now), Some(12_000));
        assert_eq!(next_attempt(None, true, &healthy, now), None, "finished");
        let open = status(HealthState::CircuitOpen, Some(40_000));
        assert_eq!(next_attempt(Some(9_000), true, &open, now), Some(40_000), "held until the probe");
        assert_eq!(next_attempt(Some(50_000), true, &open, now), Some(50_000), "its own time is later");
        let probing = status(HealthState::CircuitOpen, Some(8_000));
        assert_eq!(next_attempt(Some(9_000), true, &probing, now), Some(now), "behind a probe: not in the past");
        assert_eq!(next_attempt(Some(9_000), false, &healthy, now), None, "paused");
        assert_eq!(next_attempt(Some(9_000), true, &status(HealthState::Disabled, None), now), None);
    }
}
