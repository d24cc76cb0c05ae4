//! A [`Ledger`] in memory, written from the interface alone — no key layout, no codec — for
//! the domain's unit tests. That the domain runs on it shows the interface is all the domain
//! needs, and what a second backend must answer.
//!
//! Invariants: one lock over the whole state, so a command's preconditions and its records
//! are atomic; the fold follows the contract the sled log keeps (a record whose subject is
//! gone changes nothing; finishing, killing and re-queueing move the webhook's counters).
//! Nothing here is durable, and there is no compaction.

use super::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

/// What the records fold to.
#[derive(Default)]
struct State {
    records: BTreeMap<u64, Record>,
    last_seq: u64,
    deliveries: BTreeMap<DeliveryRef, DeliveryRow>,
    /// Each account's events, in sequence order.
    events: HashMap<AccountId, Vec<EventEntry>>,
    /// Each webhook's deliveries, in sequence order.
    intake: HashMap<WebhookId, Vec<IntakeEntry>>,
    /// Claimed idempotency keys: (seq, request hash, at).
    claims: HashMap<(AccountId, String), (u64, [u8; 32], Millis)>,
    counters: BTreeMap<(AccountId, u64), Counters>,
    names: BTreeSet<(AccountId, String)>,
    /// Live webhooks by account (what the per-account limit counts).
    webhooks_of: HashMap<AccountId, BTreeSet<WebhookId>>,
    closed: bool,
}

/// The in-memory ledger.
pub struct MemoryLedger {
    state: Mutex<State>,
    catalog: Arc<RwLock<Catalog>>,
    health: Health,
    id_key: IdKey,
    observer: std::sync::OnceLock<Observer>,
}

impl Default for MemoryLedger {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            catalog: Arc::default(),
            health: Health::default(),
            id_key: IdKey::generate(),
            observer: std::sync::OnceLock::new(),
        }
    }
}

/// Runs a future of the domain to completion on this thread (the tests are synchronous).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread().build() {
        Ok(runtime) => runtime.block_on(f),
        Err(e) => panic!("no runtime for a test: {e}"),
    }
}

impl MemoryLedger {
    fn apply_command(&self, cmd: Command) -> Result<Appended, AppendError> {
        let mut state = self.state.lock().map_err(|_| AppendError::Storage("poisoned".into()))?;
        if state.closed {
            return Err(AppendError::Closed);
        }
        let mut catalog = self.catalog.write().map_err(|_| AppendError::Storage("poisoned".into()))?;
        for rule in &cmd.preconditions {
            check(&state, &catalog, rule)?;
        }
        let mut seqs = Vec::with_capacity(cmd.records.len());
        let mut changes = Vec::new();
        for record in cmd.records {
            state.last_seq += 1;
            let seq = state.last_seq;
            fold(&mut state, &mut catalog, seq, &record);
            state.records.insert(seq, record.clone());
            changes.extend(Change::of(seq, record));
            seqs.push(seq);
        }
        drop(catalog);
        drop(state);
        if let (Some(observer), false) = (self.observer.get(), changes.is_empty()) {
            observer(changes);
        }
        Ok(Appended { seqs })
    }
}

fn account_live(catalog: &Catalog, id: &AccountId) -> Result<(), Rejection> {
    catalog.live_account(id).map(|_| ()).ok_or(Rejection::NotFound)
}

fn webhook_live(catalog: &Catalog, id: &WebhookId) -> bool {
    catalog.webhooks.get(id).is_some_and(|w| w.deleted_at.is_none())
}

fn check(state: &State, catalog: &Catalog, rule: &Precondition) -> Result<(), Rejection> {
    match rule {
        Precondition::AccountAbsent(id) if catalog.accounts.contains_key(id) => {
            Err(Rejection::Conflict("exists".into()))
        }
        Precondition::AccountAbsent(_) => Ok(()),
        Precondition::AdminTokenAbsent if catalog.admin_token.is_some() => {
            Err(Rejection::Conflict("an admin token was issued already".into()))
        }
        Precondition::AdminTokenAbsent | Precondition::Owned(_) => Ok(()),
        Precondition::AccountLive(id) => account_live(catalog, id),
        Precondition::KeyLive { key, account } => match catalog.keys.get(key) {
            Some(k) if &k.account_id == account && k.revoked_at.is_none() => Ok(()),
            _ => Err(Rejection::NotFound),
        },
        Precondition::WebhookOwned { webhook, account, version } => match catalog.live_webhook(account, webhook) {
            Some(row) if version.is_some_and(|v| v != row.seq) => {
                Err(Rejection::Conflict("the webhook changed meanwhile; read it and retry".into()))
            }
            Some(_) => Ok(()),
            None => Err(Rejection::NotFound),
        },
        Precondition::WebhookLive(id) if webhook_live(catalog, id) => Ok(()),
        Precondition::WebhookLive(_) => Err(Rejection::NotFound),
        Precondition::WebhookRoom { account, max } => {
            account_live(catalog, account)?;
            if state.webhooks_of.get(account).map_or(0, BTreeSet::len) >= *max as usize {
                return Err(Rejection::Limit(format!("an account has at most {max} webhooks")));
            }
            Ok(())
        }
        Precondition::DeliveryDead { delivery, webhook } => {
            let row = state.deliveries.get(delivery).filter(|r| &r.webhook_id == webhook).ok_or(Rejection::NotFound)?;
            if !matches!(row.state, DeliveryState::Dead(_)) {
                return Err(Rejection::Conflict(format!("the delivery is {}, not dead", row.state.as_str())));
            }
            if !webhook_live(catalog, webhook) {
                return Err(Rejection::Conflict("its webhook was deleted".into()));
            }
            Ok(())
        }
        Precondition::DeliveryAt { delivery, webhook, attempts } => match state.deliveries.get(delivery) {
            Some(d) if &d.webhook_id == webhook && !d.state.is_finished() && d.attempts == *attempts => Ok(()),
            _ => Err(Rejection::Conflict("delivery moved on".into())),
        },
        Precondition::IdempotencyFree { account, key, since, request_hash } => {
            match state.claims.get(&(account.clone(), key.clone())) {
                Some((seq, hash, at)) if at >= since => {
                    Err(Rejection::Duplicate { same_request: hash == request_hash, seq: *seq })
                }
                _ => Ok(()),
            }
        }
    }
}

/// Moves the webhook's counters of a delivery leaving `Pending`/`Retrying` for `state`.
fn finish(catalog: &mut Catalog, row: &mut DeliveryRow, state: DeliveryState, at: Millis) {
    let dead = matches!(state, DeliveryState::Dead(_));
    status_of(catalog, &row.webhook_id, |st| {
        st.pending = st.pending.saturating_sub(1);
        st.dead += u64::from(dead);
    });
    row.state = state;
    row.next_due = None;
    row.in_intake = false;
    row.finished_at = Some(at);
}

fn status_of(catalog: &mut Catalog, webhook: &WebhookId, change: impl FnOnce(&mut StatusRow)) {
    let mut row = catalog.statuses.get(webhook).map(|s| StatusRow::clone(s)).unwrap_or_default();
    change(&mut row);
    catalog.set_status(webhook.clone(), Some(row));
}

/// Kills every unfinished delivery of `webhook` with `reason`.
fn kill_all(state: &mut State, catalog: &mut Catalog, webhook: &WebhookId, reason: DeadReason, at: Millis) {
    for row in state.deliveries.values_mut().filter(|r| &r.webhook_id == webhook && !r.state.is_finished()) {
        finish(catalog, row, DeliveryState::Dead(reason.clone()), at);
    }
}

fn delete_webhook(state: &mut State, catalog: &mut Catalog, id: &WebhookId, at: Millis) {
    let Some(mut row) = catalog.webhooks.get(id).cloned().filter(|r| r.deleted_at.is_none()) else { return };
    row.deleted_at = Some(at);
    if let Some(set) = state.webhooks_of.get_mut(&row.webhook.account_id) {
        set.remove(id);
    }
    catalog.set_webhook(id.clone(), Some(row));
    kill_all(state, catalog, id, DeadReason::Deleted, at);
}

fn set_status(state: &mut State, catalog: &mut Catalog, seq: u64, webhook: &WebhookId, s: &WebhookStatus, at: Millis) {
    let was_disabled = catalog.statuses.get(webhook).is_some_and(|st| st.status.state == HealthState::Disabled);
    status_of(catalog, webhook, |st| {
        st.status = s.clone();
        st.status_seq = seq;
    });
    if s.state == HealthState::Disabled && !was_disabled {
        kill_all(state, catalog, webhook, DeadReason::Disabled, at);
    }
}

fn count(state: &mut State, account: &AccountId, at: Millis, change: impl FnOnce(&mut Counters)) {
    change(state.counters.entry((account.clone(), minute(at))).or_default());
}

fn fold(state: &mut State, catalog: &mut Catalog, seq: u64, record: &Record) {
    match record {
        Record::AdminTokenSet { hash, .. } => catalog.admin_token = Some(*hash),
        Record::AccountCreated { account } => {
            catalog.accounts.insert(account.id.clone(), account.clone());
        }
        Record::AccountDeleted { account_id, at } => {
            let Some(account) = catalog.accounts.get_mut(account_id).filter(|a| a.deleted_at.is_none()) else {
                return;
            };
            account.deleted_at = Some(*at);
            let hooks: Vec<WebhookId> = state.webhooks_of.get(account_id).into_iter().flatten().cloned().collect();
            for id in hooks {
                delete_webhook(state, catalog, &id, *at);
            }
            for key in catalog.keys.values_mut().filter(|k| &k.account_id == account_id && k.revoked_at.is_none()) {
                key.revoked_at = Some(*at);
            }
        }
        Record::ApiKeyCreated { key } => {
            catalog.keys.insert(key.id.clone(), key.clone());
        }
        Record::ApiKeyRevoked { key_id, at } => {
            if let Some(k) = catalog.keys.get_mut(key_id).filter(|k| k.revoked_at.is_none()) {
                k.revoked_at = Some(*at);
            }
        }
        Record::WebhookCreated { webhook } | Record::WebhookUpdated { webhook } | Record::SecretRotated { webhook } => {
            if catalog.webhooks.get(&webhook.id).is_some_and(|r| r.deleted_at.is_some()) {
                return;
            }
            state.webhooks_of.entry(webhook.account_id.clone()).or_default().insert(webhook.id.clone());
            let row = WebhookRow { webhook: Arc::new(webhook.clone()), seq, deleted_at: None };
            catalog.set_webhook(webhook.id.clone(), Some(row));
            status_of(catalog, &webhook.id, |_| {});
        }
        Record::WebhookDeleted { webhook_id, at } => delete_webhook(state, catalog, webhook_id, *at),
        Record::EventIngested(e) => {
            if let Some(key) = &e.idempotency_key {
                state.claims.insert((e.account_id.clone(), key.clone()), (seq, e.request_hash, e.at));
            }
            let deliveries = e.webhooks.len().min(u16::MAX as usize) as u16;
            let entry = EventEntry { seq, at: e.at, name_hash: name_hash(&e.event), deliveries };
            state.events.entry(e.account_id.clone()).or_default().push(entry);
            state.names.insert((e.account_id.clone(), e.event.clone()));
            count(state, &e.account_id, e.at, |c| c.events += 1);
            for (index, webhook) in e.webhooks.iter().enumerate() {
                let d = DeliveryRef { seq, index: index as u16 };
                state.intake.entry(webhook.clone()).or_default().push(IntakeEntry { delivery: d, at: e.at });
                state.deliveries.insert(d, DeliveryRow::from_intake(webhook.clone(), e.at));
                status_of(catalog, webhook, |st| st.pending += 1);
            }
        }
        Record::AttemptFinished(a) => {
            let Some(mut row) = state.deliveries.get(&a.delivery).cloned().filter(|r| !r.state.is_finished()) else {
                return;
            };
            row.attempts = a.attempt;
            row.seqs.push(seq);
            match &a.next {
                NextStep::Succeeded => finish(catalog, &mut row, DeliveryState::Succeeded, a.at),
                NextStep::Dead(reason) => finish(catalog, &mut row, DeliveryState::Dead(reason.clone()), a.at),
                NextStep::RetryAt(due) => {
                    row.state = DeliveryState::Retrying;
                    row.next_due = Some(*due);
                    row.in_intake = false;
                }
            }
            state.deliveries.insert(a.delivery, row);
            set_status(state, catalog, seq, &a.webhook_id, &a.status, a.at);
            if let Some(owner) = catalog.webhooks.get(&a.webhook_id).map(|w| w.webhook.account_id.clone()) {
                let succeeded = matches!(a.next, NextStep::Succeeded);
                count(state, &owner, a.at, |c| {
                    c.attempts += 1;
                    c.succeeded += u64::from(succeeded);
                });
            }
        }
        Record::DeliveryDead { delivery, reason, at, .. } => {
            if let Some(mut row) = state.deliveries.get(delivery).cloned().filter(|r| !r.state.is_finished()) {
                row.seqs.push(seq);
                finish(catalog, &mut row, DeliveryState::Dead(reason.clone()), *at);
                state.deliveries.insert(*delivery, row);
            }
        }
        Record::DeliveryRequeued { delivery, webhook_id, at }
        | Record::DeliveryRetried { delivery, webhook_id, at } => {
            if !webhook_live(catalog, webhook_id) {
                return;
            }
            let Some(row) = state.deliveries.get_mut(delivery).filter(|r| matches!(r.state, DeliveryState::Dead(_)))
            else {
                return;
            };
            row.state = DeliveryState::Pending;
            row.finished_at = None;
            row.base_attempts = row.attempts;
            row.queued_at = *at;
            row.next_due = Some(*at);
            row.seqs.push(seq);
            status_of(catalog, webhook_id, |st| {
                st.dead = st.dead.saturating_sub(1);
                st.pending += 1;
            });
        }
        Record::WebhookStatusSet { webhook_id, status, at } => set_status(state, catalog, seq, webhook_id, status, *at),
        // Written by the cluster's retention, which this in-memory ledger has none of.
        Record::HistoryRemoved(_) => {}
    }
}

impl MemoryLedger {
    fn read(&self) -> Read<std::sync::MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| StorageError::Unavailable)
    }
}

#[async_trait::async_trait]
impl Ledger for MemoryLedger {
    async fn append(&self, cmd: Command) -> Result<Appended, AppendError> {
        self.apply_command(cmd)
    }

    fn submit(&self, cmd: Command) -> BoxFuture<'static, Result<Appended, AppendError>> {
        let answer = self.apply_command(cmd);
        Box::pin(async move { answer })
    }

    fn catalog(&self) -> &Arc<RwLock<Catalog>> {
        &self.catalog
    }

    fn id_key(&self) -> &IdKey {
        &self.id_key
    }

    fn health(&self) -> &Health {
        &self.health
    }

    fn observe(&self, observer: Observer) -> bool {
        self.observer.set(observer).is_ok()
    }

    async fn record(&self, seq: u64) -> Read<Option<Record>> {
        Ok(self.read()?.records.get(&seq).cloned())
    }

    async fn events_to_deliver(&self, seqs: Vec<u64>) -> Read<Vec<(u64, EventIngested)>> {
        let state = self.read()?;
        let event = |seq: u64| match state.records.get(&seq) {
            Some(Record::EventIngested(e)) => {
                Some((seq, EventIngested { webhooks: Vec::new(), ..EventIngested::clone(e) }))
            }
            _ => None,
        };
        Ok(seqs.into_iter().filter_map(event).collect())
    }

    async fn last_seq(&self) -> Read<u64> {
        Ok(self.read()?.last_seq)
    }

    async fn delivery(&self, d: DeliveryRef, webhook: &WebhookId) -> Read<Option<DeliveryRow>> {
        Ok(self.read()?.deliveries.get(&d).filter(|r| &r.webhook_id == webhook).cloned())
    }

    async fn events_before(&self, account: &AccountId, before: Option<u64>, max: usize) -> Read<Vec<EventEntry>> {
        let state = self.read()?;
        let all = state.events.get(account).map_or(&[][..], Vec::as_slice);
        Ok(all.iter().rev().filter(|e| before.is_none_or(|b| e.seq < b)).take(max).copied().collect())
    }

    async fn deliveries_before(&self, webhook: &WebhookId, before: Option<u64>, max: usize) -> Read<Vec<IntakeEntry>> {
        let state = self.read()?;
        let all = state.intake.get(webhook).map_or(&[][..], Vec::as_slice);
        Ok(all.iter().rev().filter(|e| before.is_none_or(|b| e.delivery.seq < b)).take(max).copied().collect())
    }

    async fn due_window(&self, webhook: &WebhookId, n: usize, _from: Option<u64>) -> Read<(Vec<Queued>, u64)> {
        let state = self.read()?;
        let mut due: Vec<Queued> = state
            .deliveries
            .iter()
            .filter(|(_, r)| &r.webhook_id == webhook && !r.state.is_finished())
            .filter_map(|(d, r)| Some(Queued { delivery: *d, due: r.next_due?, entry: r.queue_entry() }))
            .collect();
        due.sort_by_key(|q| (q.due, q.delivery));
        due.truncate(n);
        Ok((due, 0))
    }

    async fn counters(&self, account: &AccountId, from: u64, to: u64) -> Read<Vec<(u64, Counters)>> {
        let state = self.read()?;
        let range = (account.clone(), from)..=(account.clone(), to);
        Ok(state.counters.range(range).map(|((_, m), c)| (*m, *c)).collect())
    }

    async fn event_names(&self, account: &AccountId, after: Option<String>, limit: usize) -> Read<Vec<String>> {
        let state = self.read()?;
        let names = state.names.iter().filter(|(a, _)| a == account).map(|(_, n)| n);
        Ok(names.filter(|n| after.as_ref().is_none_or(|a| *n > a)).take(limit).cloned().collect())
    }

    fn size_on_disk(&self) -> u64 {
        0
    }

    fn close(&self, _grace: std::time::Duration) {
        if let Ok(mut state) = self.state.lock() {
            state.closed = true;
        }
    }
}
