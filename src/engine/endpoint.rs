//! The endpoint actor: one per webhook. It owns the webhook's waiting deliveries (a window in
//! memory, the rest on disk), its attempts in flight, its one timer, its rate limit and its
//! circuit breaker, and it records every attempt in the log.
//!
//! Invariants:
//! - Attempts are tasks of their own (on the actor's arbiter, or spread over all of them
//!   once [`SPREAD_FROM`] are in flight), never awaited in the actor, so edits, new
//!   deliveries and test sends reach a busy actor at once; an attempt's answer comes back
//!   as a message ([`Answered`]). Not futures spawned in the actor's context:
//!   actix polls every one of those whenever any of them wakes, so 64 attempts on the wire
//!   cost 64 polls per answer.
//! - One timer per actor: the earliest moment something may change (the next due delivery,
//!   the breaker's probe time, the rate limit's next slot, the next TTL sweep).
//! - A delivery is in exactly one of: the window, its event being read (`loading`), in
//!   flight, being recorded (its `AttemptFinished` submitted, not yet acknowledged) — so a
//!   refill from disk, which may still show it as waiting, never sends it twice.
//! - Storage is never waited on in a turn: a read is a future polled once where it is
//!   needed; an answer storage has at once (the sled log) is used in place, one it must wait
//!   for arrives as the future completes, the deliveries it concerns held in `loading`
//!   meanwhile (counted against `max_in_flight`). Reads begun before a [`Resync`] are ignored.
//! - The breaker gates everything but a manual retry and a test send; `max_in_flight` (1
//!   when `ordered`) and `rate_limit` gate everything but a test send.

use super::breaker::{self, Gate, Transition};
use super::notices::Notice;
use super::outcome;
use super::queue::{Item, Queue};
use super::sender::{Request, Response, Sender};
use super::{recorder, signature, Prepared, Shared, TestOutcome};
use crate::model::*;
use crate::storage::{DeliveryRow, EventIngested, QueueEntry, Queued, Read, Record};
use actix::prelude::*;
use futures_util::future::{AbortHandle, Abortable};
use std::cell::OnceCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

thread_local! {
    /// The awc client of this arbiter (awc clients are bound to their thread).
    static SENDER: OnceCell<Rc<Sender>> = const { OnceCell::new() };
}

fn sender(shared: &Shared) -> Rc<Sender> {
    SENDER.with(|s| s.get_or_init(|| Rc::new(Sender::new(shared.policy.target.clone()))).clone())
}

/// Events of waiting deliveries one read of a missing event fetches besides.
const PREFETCH: usize = 63;

/// Attempts in flight from which a webhook's next attempts are spread over the arbiters.
const SPREAD_FROM: usize = 4;

/// While the log takes no writes, how often an actor with work looks again.
const PAUSED_RECHECK_MS: Millis = 250;

pub struct Endpoint {
    /// Storage, the keyring, the metrics and the rules every actor shares.
    shared: Arc<Shared>,
    /// The webhook as last defined (the catalog's copy, replaced on every edit).
    webhook: Arc<Webhook>,
    /// Its secrets and header values, opened from their sealed form for sending.
    opened: signature::OpenedSecrets,
    /// Health and breaker state; each attempt's record carries what it became.
    status: WebhookStatus,
    /// The waiting deliveries held in memory.
    queue: Queue,
    /// Manual retries: sent before the rest, even while the breaker is open.
    urgent: VecDeque<Item>,
    /// Deliveries with an attempt on the wire, with their public ids.
    in_flight: HashMap<DeliveryRef, (AbortHandle, DeliveryId)>,
    /// Deliveries whose last records are not acknowledged by the writer yet, with their
    /// public ids.
    recording: HashMap<DeliveryRef, DeliveryId>,
    /// Deliveries taken from the window whose event is being read from storage, and what
    /// they were taken for.
    loading: HashMap<DeliveryRef, (Item, Then)>,
    /// Records whose events a read under way brings.
    reading: HashSet<u64>,
    /// A refill of the window from storage is under way.
    refilling: bool,
    /// Reads of re-queued deliveries under way.
    reads: usize,
    /// Bumped when the actor starts over ([`Resync`]): reads begun before are ignored.
    generation: u64,
    /// A half-open probe is out.
    probing: bool,
    /// Earliest time (µs) the rate limit lets the next attempt go.
    next_slot_us: u64,
    /// The one timer: when it fires, and its handle (to move it earlier).
    timer: Option<(Millis, SpawnHandle)>,
    /// When the window is next checked for deliveries past their TTL.
    next_sweep: Millis,
    /// The intake chunk the next refill starts from (the first that still held an untaken
    /// delivery when the last refill read it).
    intake_from: Option<u64>,
    /// Shutting down: nothing new goes out.
    draining: bool,
    /// Cluster mode: another node owns the webhook's work now; the actor stops once what is
    /// on the wire is recorded.
    handed_over: bool,
    /// Where the next attempt is sent from (an index into the arbiters).
    next_arbiter: usize,
    /// Records of this turn, submitted together at its end, and the deliveries they are about.
    batch: Vec<Record>,
    batch_of: Vec<DeliveryRef>,
    batch_due: bool,
    /// Messages handled that the dispatcher counted when it routed them ([`super::Route`]).
    received: u64,
    /// Test sends on the wire (the actor does not stop under them).
    testing: usize,
    /// Started for one test send only (see [`Endpoint::for_test_send`]), not yet received.
    test_only: bool,
    /// When the actor last had something to do (ms).
    touched: Millis,
    /// A check whether the actor may stop is scheduled.
    retire_due: bool,
}

impl Endpoint {
    /// An actor for one test send only, on a node that does not own the webhook's work (in
    /// a cluster a test send goes out from whichever node was asked; it records nothing):
    /// it delivers nothing else and stops once the test send has its answer.
    pub fn for_test_send(shared: Arc<Shared>, webhook: Arc<Webhook>, status: WebhookStatus) -> Self {
        let mut actor = Endpoint::new(shared, webhook, status, &[]);
        actor.handed_over = true;
        actor.draining = true;
        actor.testing = 1;
        actor.test_only = true;
        actor
    }

    pub fn new(shared: Arc<Shared>, webhook: Arc<Webhook>, status: WebhookStatus, waiting: &[Queued]) -> Self {
        let mut queue = Queue::new(webhook.is_strict(), shared.policy.window);
        for q in waiting {
            queue.admit(Item::from_log(q));
        }
        if waiting.len() >= shared.policy.window {
            // Recovery read a full window: more may wait on disk.
            queue.admit_overflow();
        }
        let opened = signature::OpenedSecrets::of(&webhook, &shared.keyring);
        let next_slot_us = first_slot_us(&webhook, &status);
        Endpoint {
            shared,
            webhook,
            opened,
            status,
            queue,
            urgent: VecDeque::new(),
            in_flight: HashMap::new(),
            recording: HashMap::new(),
            loading: HashMap::new(),
            reading: HashSet::new(),
            refilling: false,
            reads: 0,
            generation: 0,
            probing: false,
            next_slot_us,
            timer: None,
            next_sweep: 0,
            intake_from: None,
            draining: false,
            handed_over: false,
            next_arbiter: 0,
            batch: Vec::new(),
            batch_of: Vec::new(),
            batch_due: false,
            received: 0,
            testing: 0,
            test_only: false,
            touched: now_millis(),
            retire_due: false,
        }
    }

    /// A routed message arrived: counted, and the actor is busy now.
    fn heard(&mut self) {
        self.received += 1;
        self.touched = now_millis();
    }

    /// Nothing waits, nothing is on the wire or being recorded: the actor may stop, since a
    /// fresh one would start from the catalog and the log in the same state.
    fn idle(&self) -> bool {
        self.queue.is_empty()
            && !self.queue.overflowed()
            && self.urgent.is_empty()
            && self.in_flight.is_empty()
            && self.recording.is_empty()
            && self.loading.is_empty()
            && !self.refilling
            && self.reads == 0
            && self.batch_of.is_empty()
            && self.testing == 0
            && !self.draining
    }

    /// When the actor, idle since it was last touched, has been so for `actor_idle`.
    fn quiet_until(&self) -> Millis {
        self.touched.saturating_add(self.shared.policy.idle.as_millis() as u64)
    }

    /// Once idle, checks again after `actor_idle` whether the actor may stop.
    fn retire_when_idle(&mut self, ctx: &mut Context<Self>) {
        if self.retire_due || !self.idle() {
            return;
        }
        self.retire_due = true;
        let wait = Duration::from_millis(self.quiet_until().saturating_sub(now_millis()));
        ctx.run_later(wait, |act, ctx| {
            act.retire_due = false;
            act.retire(ctx);
        });
    }

    /// Stops the actor if it stayed idle for `actor_idle` and nothing was routed to it that
    /// it has not handled; removing its route under the routing lock means whatever comes
    /// next starts a new actor.
    fn retire(&mut self, ctx: &mut Context<Self>) {
        if !self.idle() {
            return;
        }
        if now_millis() < self.quiet_until() {
            return self.retire_when_idle(ctx);
        }
        let Ok(mut routes) = self.shared.routes.lock() else { return };
        let id = &self.webhook.id;
        if routes.get(id).is_some_and(|r| r.sent == self.received && r.addr == ctx.address()) {
            routes.remove(id);
            drop(routes);
            tracing::debug!(webhook_id = %id, "actor idle, stopped");
            ctx.stop();
        }
        // Otherwise messages wait in the mailbox: handling them makes the actor busy again.
    }

    fn known(&self, d: DeliveryRef) -> bool {
        self.queue.contains(d) || held_elsewhere(&self.in_flight, &self.recording, &self.loading, &self.urgent, d)
    }

    fn capacity(&self) -> usize {
        let limit = if self.webhook.is_strict() { 1 } else { self.webhook.max_in_flight.max(1) as usize };
        let loading = self.loading.values().filter(|(_, then)| matches!(then, Then::Send { .. })).count();
        limit.saturating_sub(self.in_flight.len() + loading)
    }

    fn sweep_interval(&self) -> u64 {
        (self.shared.policy.ttl.as_millis() as u64 / 10).clamp(10, 60_000)
    }

    /// Sends what may go now, sets the timer for what comes next and, when nothing is left
    /// to do, arranges for the actor to stop.
    fn drive(&mut self, ctx: &mut Context<Self>) {
        if self.handed_over {
            if self.in_flight.is_empty() && self.recording.is_empty() && self.testing == 0 {
                self.submit_batch(ctx);
                // What was routed to it meanwhile is the new owner's, or comes back from
                // the log when this node is granted the webhook again.
                let regrant = match self.shared.routes.lock() {
                    Ok(mut routes) if routes.get(&self.webhook.id).is_some_and(|r| r.addr == ctx.address()) => {
                        routes.remove(&self.webhook.id).is_some_and(|r| r.regrant)
                    }
                    _ => false,
                };
                // Granted afresh while handing over: the window is read again now, after
                // this actor's records (asked with the routing lock released: the writer
                // takes it to route).
                if regrant {
                    self.shared.ledger.regrant(&self.webhook.id);
                }
                tracing::debug!(webhook_id = %self.webhook.id, "handed over, stopped");
                ctx.stop();
            }
            return;
        }
        self.advance(ctx);
        self.retire_when_idle(ctx);
    }

    fn advance(&mut self, ctx: &mut Context<Self>) {
        if self.draining {
            return;
        }
        let now = now_millis();
        if !self.shared.ledger.owns(&self.webhook.id) && self.revoke(ctx) {
            // Past this node's local deadline (its lease could not be renewed), or
            // leaving: start nothing. A grant afresh starts an actor again.
            self.hand_over(ctx);
            return;
        }
        if !self.shared.ledger.health().takes_work() {
            // Nothing could be recorded: send nothing (it would only be sent again), and
            // look again shortly. A reopened log resynchronises the actor anyway.
            if !self.queue.is_empty() || !self.urgent.is_empty() {
                self.wake_at(now + PAUSED_RECHECK_MS, ctx);
            }
            return;
        }
        if now >= self.next_sweep {
            self.next_sweep = now + self.sweep_interval();
            for item in self.queue.take_expired(now, self.shared.policy.ttl) {
                self.kill(item, DeadReason::Expired, ctx);
            }
        }
        if self.queue.wants_refill() && !self.refilling {
            self.refill(ctx);
        }
        if !self.queue.is_empty() {
            self.wake_at(self.next_sweep, ctx);
        }
        if !self.webhook.is_active {
            return;
        }
        while self.capacity() > 0 {
            let Some(item) = self.urgent.pop_front() else { break };
            self.start(item, false, ctx);
        }
        match breaker::gate(&self.status, now) {
            Gate::Disabled => {
                // The log killed every waiting delivery when the webhook was disabled; what
                // arrived since dies the same way.
                let left: Vec<Item> = std::iter::from_fn(|| self.queue.pop_due(Millis::MAX)).collect();
                for item in left {
                    self.kill(item, DeadReason::Disabled, ctx);
                }
            }
            Gate::Closed { until } => self.wake_at(until, ctx),
            Gate::Probe => {
                if self.in_flight.is_empty() && self.loading.is_empty() && !self.probing {
                    match self.queue.pop_due(now) {
                        Some(item) => {
                            self.probing = true;
                            self.start(item, true, ctx);
                        }
                        None => {
                            if let Some(due) = self.queue.next_due() {
                                self.wake_at(due, ctx)
                            }
                        }
                    }
                }
            }
            Gate::Send => self.send_due(now, ctx),
        }
    }

    fn send_due(&mut self, now: Millis, ctx: &mut Context<Self>) {
        let rate = self.webhook.rate_limit.filter(|r| *r > 0).map(|r| 1_000_000 / u64::from(r));
        let now_us = now.saturating_mul(1000);
        while self.capacity() > 0 {
            if rate.is_some() && now_us < self.next_slot_us {
                self.wake_at(self.next_slot_us.div_ceil(1000), ctx);
                return;
            }
            match self.queue.pop_due(now) {
                Some(item) if item.expired(now, self.shared.policy.ttl) => self.kill(item, DeadReason::Expired, ctx),
                Some(item) => {
                    // An attempt takes the rate limit's next slot; an expiry takes none.
                    if let Some(interval_us) = rate {
                        self.next_slot_us = self.next_slot_us.max(now_us) + interval_us;
                    }
                    self.start(item, false, ctx);
                }
                None => {
                    if let Some(due) = self.queue.next_due() {
                        self.wake_at(due, ctx);
                    }
                    return;
                }
            }
        }
    }

    fn wake_at(&mut self, at: Millis, ctx: &mut Context<Self>) {
        if let Some((t, handle)) = self.timer {
            if t <= at {
                return;
            }
            ctx.cancel_future(handle);
        }
        let wait = Duration::from_millis(at.saturating_sub(now_millis()));
        let handle = ctx.run_later(wait, |act, ctx| {
            act.timer = None;
            act.drive(ctx);
        });
        self.timer = Some((at, handle));
    }

    /// Reads the next window of waiting deliveries from storage. An answer storage has at
    /// once (the sled log) is taken in this turn; one it has to wait for arrives later.
    fn refill(&mut self, ctx: &mut Context<Self>) {
        self.refilling = true;
        let (ledger, webhook, n, from) =
            (self.shared.ledger.clone(), self.webhook.id.clone(), self.queue.window(), self.intake_from);
        let generation = self.generation;
        let mut read = Box::pin(async move { ledger.due_window(&webhook, n, from).await });
        match futures_util::FutureExt::now_or_never(&mut read) {
            Some(found) => self.refilled(generation, found),
            None => {
                ctx.spawn(read.into_actor(self).map(move |found, act, ctx| {
                    act.refilled(generation, found);
                    act.drive(ctx);
                }));
            }
        }
    }

    fn refilled(&mut self, generation: u64, found: Read<(Vec<Queued>, u64)>) {
        self.refilling = false;
        if self.generation != generation {
            return;
        }
        match found {
            Ok((found, from)) => {
                self.intake_from = Some(from);
                let (in_flight, recording, loading, urgent) =
                    (&self.in_flight, &self.recording, &self.loading, &self.urgent);
                self.queue.refill(&found, |d| held_elsewhere(in_flight, recording, loading, urgent, d));
            }
            Err(e) => tracing::error!(webhook_id = %self.webhook.id, error = %e, "cannot read waiting deliveries"),
        }
    }

    /// The event of a delivery, if another actor read it lately.
    fn recent_event(&self, seq: u64) -> Option<Arc<Prepared>> {
        self.shared.recent.lock().ok().and_then(|r| r.get(seq))
    }

    /// Reads the event of a delivery the actor did not hear of from ingest (recovered,
    /// re-queued) from storage — in this turn if storage answers at once, else when it does —
    /// then does with it what it was taken from the window for. One read also fetches the
    /// events of the next [`PREFETCH`] deliveries waiting (into the shared cache): a backlog
    /// is drained a run of neighbouring records per read, not a read per delivery.
    fn load(&mut self, item: Item, then: Then, ctx: &mut Context<Self>) {
        let seq = item.delivery.seq;
        self.loading.insert(item.delivery, (item, then));
        if self.reading.contains(&seq) {
            // A read under way brings it.
            return;
        }
        let mut seqs = vec![seq];
        if let Ok(recent) = self.shared.recent.lock() {
            for next in self.queue.upcoming().filter(|i| i.event.is_none()).map(|i| i.delivery.seq) {
                if seqs.len() > PREFETCH {
                    break;
                }
                if !self.reading.contains(&next) && !seqs.contains(&next) && recent.get(next).is_none() {
                    seqs.push(next);
                }
            }
        }
        self.reading.extend(seqs.iter().copied());
        let ledger = self.shared.ledger.clone();
        let generation = self.generation;
        let asked = seqs.clone();
        let mut read = Box::pin(async move { ledger.events_to_deliver(asked).await });
        match futures_util::FutureExt::now_or_never(&mut read) {
            // At once (the sled log): as if read in place, the turn goes on.
            Some(found) => self.took_events(&seqs, generation, found, ctx),
            None => {
                ctx.spawn(read.into_actor(self).map(move |found, act, ctx| {
                    act.took_events(&seqs, generation, found, ctx);
                    act.drive(ctx);
                }));
            }
        }
    }

    /// The events of records `seqs` came back: the deliveries waiting for them go on.
    fn took_events(
        &mut self,
        seqs: &[u64],
        generation: u64,
        found: Read<Vec<(u64, EventIngested)>>,
        ctx: &mut Context<Self>,
    ) {
        for s in seqs {
            self.reading.remove(s);
        }
        if self.generation != generation {
            return;
        }
        let mut events: HashMap<u64, Arc<Prepared>> = HashMap::new();
        match found {
            Ok(found) => {
                let mut recent = self.shared.recent.lock().ok();
                for (seq, e) in found {
                    let p = Arc::new(Prepared::new(seq, Arc::new(e)));
                    if let Some(recent) = recent.as_mut() {
                        recent.insert(p.clone());
                    }
                    events.insert(seq, p);
                }
            }
            Err(e) => tracing::error!(webhook_id = %self.webhook.id, error = %e, "cannot read events to deliver"),
        }
        let waiting: Vec<DeliveryRef> = self.loading.keys().filter(|d| seqs.contains(&d.seq)).copied().collect();
        for d in waiting {
            let Some((item, then)) = self.loading.remove(&d) else { continue };
            self.loaded(item, then, events.get(&d.seq).cloned(), ctx);
        }
    }

    /// A delivery's event came back from storage (`None`: there is none, or it could not
    /// be read).
    fn loaded(&mut self, mut item: Item, then: Then, event: Option<Arc<Prepared>>, ctx: &mut Context<Self>) {
        match (then, event) {
            (Then::Kill(reason), event) => self.record_death(item, event, reason, ctx),
            (Then::Send { .. }, None) => self.record_death(item, None, DeadReason::Corrupt, ctx),
            (Then::Send { probe }, Some(event)) => {
                item.event = Some(event);
                if self.draining || !self.webhook.is_active {
                    // Things changed while it was read: it waits with the rest. (A webhook
                    // disabled meanwhile gets this one attempt, like one already on the wire.)
                    if probe {
                        self.probing = false;
                    }
                    self.queue.push(item);
                } else {
                    self.start(item, probe, ctx);
                }
            }
        }
    }

    fn start(&mut self, mut item: Item, probe: bool, ctx: &mut Context<Self>) {
        let Some(prepared) = item.event.take().or_else(|| self.recent_event(item.delivery.seq)) else {
            return self.load(item, Then::Send { probe }, ctx);
        };
        let d = item.delivery;
        self.shared.busy.fetch_add(1, Ordering::Relaxed);
        let key = &self.shared.id_key;
        let attempt = item.entry.attempts + 1;
        let started_at = now_millis();
        let delivery_id = prepared.delivery_id(d, key);
        let body = prepared.body(key, self.webhook.body_format);
        let headers = signature::headers(
            &self.webhook,
            &self.opened,
            &delivery_id,
            &prepared.event.event,
            attempt,
            started_at,
            &body,
        );
        let request = Request {
            method: self.webhook.method,
            url: self.webhook.url.clone(),
            headers,
            body,
            timeout: Duration::from_millis(self.webhook.timeout_ms),
        };
        let span = tracing::info_span!("attempt", webhook_id = %self.webhook.id, delivery_id = %delivery_id, attempt);
        let sent = Sent {
            item,
            event: prepared,
            attempt,
            started_at,
            headers: recorded(request.headers.clone(), &self.webhook, &self.shared.keyring),
            probe,
            span: span.clone(),
        };
        let me = ctx.address();
        let shared = self.shared.clone();
        let (cut, registration) = AbortHandle::new_pair();
        // Runs on the arbiter it is handed to: the awc client is that thread's.
        let go = move || {
            let send = async move {
                let response = sender(&shared).send(&request).instrument(span).await;
                me.do_send(Answered { sent, response });
            };
            actix::spawn(Abortable::new(send, registration));
        };
        // A few attempts go out from this thread (no hop, least latency); a busy webhook's
        // go round all the arbiters, so it can use every core.
        let arbiters = &self.shared.arbiters;
        let elsewhere = if self.in_flight.len() >= SPREAD_FROM {
            self.next_arbiter = self.next_arbiter.wrapping_add(1);
            arbiters.get(self.next_arbiter % arbiters.len().max(1))
        } else {
            None
        };
        match elsewhere {
            // Refused only once the system stops: the delivery stays owed in the log.
            Some(arbiter) => {
                if !arbiter.spawn_fn(go) {
                    tracing::warn!(webhook_id = %self.webhook.id, "arbiter stopped; attempt not sent");
                }
            }
            None => go(),
        }
        self.in_flight.insert(d, (cut, delivery_id));
    }

    fn finished(&mut self, sent: Sent, response: Response, ctx: &mut Context<Self>) {
        let d = sent.item.delivery;
        self.touched = now_millis();
        let held = self.in_flight.remove(&d).map(|(_, id)| id);
        if held.is_none() && self.handed_over {
            // Cut off at the handover while its answer was already on its way: counted out
            // then, and not recorded (the next owner sends it again).
            return;
        }
        self.shared.busy.fetch_sub(1, Ordering::Relaxed);
        if sent.probe {
            self.probing = false;
        }
        let now = now_millis();
        let prepared = sent.event;
        let delivery_id = held.unwrap_or_else(|| prepared.delivery_id(d, &self.shared.id_key));
        let policy = &self.shared.policy;
        let ended = outcome::Ended {
            delivery: d,
            event: &prepared.event.event,
            event_at: prepared.event.at,
            event_order: prepared.event.order,
            attempt: sent.attempt,
            base_attempts: sent.item.entry.base_attempts,
            queued_at: sent.item.entry.queued_at,
            started_at: sent.started_at,
            probe: sent.probe,
            request_headers: sent.headers,
            result: response.result,
            status_code: response.status_code,
            retry_after: response.retry_after,
            error: response.error,
            latency: response.latency,
            body: response.body,
        };
        let rules = outcome::Rules {
            webhook_id: &self.webhook.id,
            id_key: &self.shared.id_key,
            max_retries: self.webhook.max_retries,
            backoff: &policy.backoff,
            breaker: &policy.breaker,
            ttl: policy.ttl,
        };
        let decision = outcome::decide(ended, &rules, &self.status, now, rand::random());

        let metrics = &self.shared.metrics;
        let c = &decision.counters;
        metrics.attempt_finished(&self.webhook.id, c.result, c.latency_seconds);
        if let Some(lag) = c.delivered_after_seconds {
            metrics.delivery_succeeded(lag);
        }
        if c.died {
            metrics.delivery_dead();
        }
        if let Some(t) = &decision.transition {
            metrics.circuit_transition(t.to());
        }
        log_outcome(&sent.span, &decision.record.outcome, &decision.next, now);

        let mut records = vec![Record::AttemptFinished(Box::new(decision.record))];
        records.extend(decision.notices.iter().map(|n| self.operational(n, now)));
        if matches!(decision.transition, Some(Transition::Disabled(_))) {
            // The log kills what waits (in memory and on disk) in the same commit.
            self.queue.clear();
            self.urgent.clear();
        }
        self.status = decision.status;
        if let NextStep::RetryAt(due) = decision.next {
            let entry = QueueEntry { attempts: sent.attempt, ..sent.item.entry };
            self.queue.push(Item { delivery: d, due, entry, event: Some(prepared) });
        }
        self.record(d, delivery_id, records, ctx);
        self.drive(ctx);
    }

    /// A delivery that dies without an attempt (expired, disabled): its event is needed for
    /// the notice, read first if the actor does not hold it.
    fn kill(&mut self, mut item: Item, reason: DeadReason, ctx: &mut Context<Self>) {
        match item.event.take().or_else(|| self.recent_event(item.delivery.seq)) {
            Some(event) => self.record_death(item, Some(event), reason, ctx),
            None => self.load(item, Then::Kill(reason), ctx),
        }
    }

    /// Records that a delivery died without an attempt; `event`, if it could be read, for the
    /// notice.
    fn record_death(&mut self, item: Item, event: Option<Arc<Prepared>>, reason: DeadReason, ctx: &mut Context<Self>) {
        let now = now_millis();
        let d = item.delivery;
        let mut records = vec![Record::DeliveryDead {
            delivery: d,
            webhook_id: self.webhook.id.clone(),
            reason: reason.clone(),
            at: now,
        }];
        // Without its event the id's time part is unknown: shown with time 0 (logs only).
        let mut delivery_id = DeliveryId::from_ref(d, 0, 0, &self.shared.id_key);
        if let Some(prepared) = event {
            delivery_id = prepared.delivery_id(d, &self.shared.id_key);
            let notice = Notice::delivery_dead(
                &prepared.event.event,
                &delivery_id,
                &self.webhook.id,
                &reason,
                item.entry.attempts,
            );
            records.extend(notice.map(|n| self.operational(&n, now)));
        }
        self.shared.metrics.delivery_dead();
        self.record(d, delivery_id, records, ctx);
    }

    /// Records `records` about delivery `d` without holding up the actor (they go with this
    /// turn's batch); until the writer acknowledges them, a refill from disk leaves `d` alone.
    fn record(&mut self, d: DeliveryRef, id: DeliveryId, records: Vec<Record>, ctx: &mut Context<Self>) {
        self.recording.insert(d, id);
        self.shared.busy.fetch_add(1, Ordering::Relaxed);
        self.batch.extend(records);
        self.batch_of.push(d);
        if !self.batch_due {
            // Submitted once this turn's messages and finished attempts are handled: one
            // writer command for all of them instead of one each.
            self.batch_due = true;
            ctx.spawn(actix::fut::ready(()).map(|_, act: &mut Self, ctx| act.submit_batch(ctx)));
        }
    }

    fn submit_batch(&mut self, ctx: &mut Context<Self>) {
        self.batch_due = false;
        let records = std::mem::take(&mut self.batch);
        let about = std::mem::take(&mut self.batch_of);
        if about.is_empty() {
            return;
        }
        let committed = recorder::record(&self.shared.ledger, &self.webhook.id, records);
        let me = ctx.address();
        actix::spawn(async move { me.do_send(Recorded { about, committed: committed.await == Ok(true) }) });
    }

    /// A notice as the record that ingests it into the webhook's account, owed to the
    /// webhooks that subscribe to it now.
    fn operational(&self, notice: &Notice, at: Millis) -> Record {
        let account = &self.webhook.account_id;
        match self.shared.ledger.catalog().read() {
            Ok(catalog) => notice.record(&catalog, account, at),
            Err(_) => notice.record(&Default::default(), account, at),
        }
    }
}

/// Logs how an attempt ended, inside its `attempt` span: a success at `debug`, a failure
/// that will be retried at `info`, a death at `warn`.
fn log_outcome(span: &tracing::Span, outcome: &AttemptOutcome, next: &NextStep, now: Millis) {
    let _in = span.enter();
    let latency_ms = outcome.latency_us / 1000;
    let (result, status, error) = (&outcome.result, outcome.status_code, outcome.error.as_deref());
    match next {
        NextStep::Succeeded => tracing::debug!(status, latency_ms, "delivered"),
        NextStep::RetryAt(at) => tracing::info!(
            result = ?result,
            status,
            error,
            latency_ms,
            retry_in_ms = at.saturating_sub(now),
            "attempt failed, will retry"
        ),
        NextStep::Dead(reason) => tracing::warn!(
            result = ?result,
            status,
            error,
            latency_ms,
            reason = ?reason,
            "attempt failed, delivery dead"
        ),
    }
}

/// Whether the actor holds `d` outside its window: on the wire, being recorded, or a manual
/// retry waiting to go out. (Fields, not `&Endpoint`, so a refill can ask while it fills
/// the window.)
fn held_elsewhere(
    in_flight: &HashMap<DeliveryRef, (AbortHandle, DeliveryId)>,
    recording: &HashMap<DeliveryRef, DeliveryId>,
    loading: &HashMap<DeliveryRef, (Item, Then)>,
    urgent: &VecDeque<Item>,
    d: DeliveryRef,
) -> bool {
    in_flight.contains_key(&d)
        || recording.contains_key(&d)
        || loading.contains_key(&d)
        || urgent.iter().any(|i| i.delivery == d)
}

/// What a delivery taken from the window whose event is being read goes on to.
enum Then {
    /// An attempt (a half-open probe if `probe`).
    Send { probe: bool },
    /// Its death without an attempt, with the event's notice.
    Kill(DeadReason),
}

/// An attempt that went out.
struct Sent {
    /// The delivery as it waited (its event moved to `event` while it is on the wire).
    item: Item,
    event: Arc<Prepared>,
    attempt: u32,
    started_at: Millis,
    headers: Vec<(String, String)>,
    probe: bool,
    /// `attempt` with the webhook, delivery and attempt ids: the send and its outcome are
    /// logged inside it.
    span: tracing::Span,
}

/// The headers as recorded with the attempt: custom header values sealed like the webhook's
/// own (the log never holds one in clear), and those whose names suggest a credential not
/// kept at all.
fn recorded(
    mut headers: Vec<(String, String)>,
    webhook: &Webhook,
    keyring: &crate::security::seal::Keyring,
) -> Vec<(String, String)> {
    for (k, v) in &mut headers {
        if webhook.headers.iter().any(|(name, _)| name == k) {
            *v = if crate::security::header_rules::is_secret_header(k) {
                crate::security::header_rules::MASK.to_owned()
            } else {
                keyring.seal(v).stored().to_owned()
            };
        }
    }
    headers
}

impl Actor for Endpoint {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.drive(ctx);
    }
}

/// An attempt's answer, from the task that sent it.
#[derive(Message)]
#[rtype(result = "()")]
struct Answered {
    sent: Sent,
    response: Response,
}

impl Handler<Answered> for Endpoint {
    type Result = ();

    fn handle(&mut self, msg: Answered, ctx: &mut Context<Self>) {
        self.finished(msg.sent, msg.response, ctx);
    }
}

/// The writer's answer for a batch of this actor's records.
#[derive(Message)]
#[rtype(result = "()")]
struct Recorded {
    about: Vec<DeliveryRef>,
    committed: bool,
}

impl Handler<Recorded> for Endpoint {
    type Result = ();

    fn handle(&mut self, msg: Recorded, ctx: &mut Context<Self>) {
        for d in &msg.about {
            self.recording.remove(d);
        }
        self.shared.busy.fetch_sub(msg.about.len(), Ordering::Relaxed);
        if !msg.committed {
            // The attempts happened but their records are lost: the deliveries are attempted
            // again (at-least-once) once the log takes writes again and resynchronises the
            // actor, or after a restart. (The recorder logged why, once per interval.)
            tracing::debug!(webhook_id = %self.webhook.id, deliveries = msg.about.len(), "attempts not recorded");
        }
        self.retire_when_idle(ctx);
    }
}

/// New deliveries from ingest.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Arrived(pub Vec<(DeliveryRef, Arc<Prepared>)>);

impl Handler<Arrived> for Endpoint {
    type Result = ();

    fn handle(&mut self, msg: Arrived, ctx: &mut Context<Self>) {
        self.heard();
        for (delivery, prepared) in msg.0 {
            let at = prepared.event.at;
            let entry = QueueEntry { attempts: 0, base_attempts: 0, queued_at: at };
            self.queue.admit(Item { delivery, due: at, entry, event: Some(prepared) });
        }
        self.drive(ctx);
    }
}

/// A dead delivery queued again (retry or recover).
#[derive(Message)]
#[rtype(result = "()")]
pub struct QueuedAgain {
    pub delivery: DeliveryRef,
    pub manual: bool,
}

impl Handler<QueuedAgain> for Endpoint {
    type Result = ();

    fn handle(&mut self, msg: QueuedAgain, ctx: &mut Context<Self>) {
        self.heard();
        let d = msg.delivery;
        if self.known(d) {
            return;
        }
        self.reads += 1;
        let (ledger, webhook) = (self.shared.ledger.clone(), self.webhook.id.clone());
        let generation = self.generation;
        let mut read = Box::pin(async move { ledger.delivery(d, &webhook).await });
        let manual = msg.manual;
        match futures_util::FutureExt::now_or_never(&mut read) {
            Some(row) => {
                self.requeue_read(d, manual, generation, row);
                self.drive(ctx);
            }
            None => {
                ctx.spawn(read.into_actor(self).map(move |row, act, ctx| {
                    act.requeue_read(d, manual, generation, row);
                    act.drive(ctx);
                }));
            }
        }
    }
}

impl Endpoint {
    /// Where a re-queued delivery stands came back from storage.
    fn requeue_read(&mut self, d: DeliveryRef, manual: bool, generation: u64, row: Read<Option<DeliveryRow>>) {
        self.reads -= 1;
        // The fold may have ignored the re-queue (the delivery was not dead any more).
        let row = row.ok().flatten().filter(|r| r.state == DeliveryState::Pending);
        if let Some(row) = row.filter(|_| self.generation == generation && !self.known(d)) {
            let due = row.next_due.unwrap_or(row.queued_at);
            let item = Item { delivery: d, due, entry: row.queue_entry(), event: None };
            if manual {
                self.urgent.push_back(item);
            } else {
                self.queue.admit(item);
            }
        }
    }
}

/// The webhook was edited (URL, secret, policy, pause).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Redefined(pub Arc<Webhook>);

impl Handler<Redefined> for Endpoint {
    type Result = ();

    fn handle(&mut self, msg: Redefined, ctx: &mut Context<Self>) {
        self.heard();
        self.queue.set_ordered(msg.0.is_strict());
        if self.webhook.rate_limit != msg.0.rate_limit {
            self.next_slot_us = 0;
        }
        self.opened = signature::OpenedSecrets::of(&msg.0, &self.shared.keyring);
        self.webhook = msg.0;
        self.drive(ctx);
    }
}

/// The webhook's health was set outside an attempt (enabled again by an edit).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StatusChanged(pub WebhookStatus);

impl Handler<StatusChanged> for Endpoint {
    type Result = ();

    fn handle(&mut self, msg: StatusChanged, ctx: &mut Context<Self>) {
        self.heard();
        let was_disabled = self.status.state == HealthState::Disabled;
        self.status = msg.0;
        if was_disabled && self.status.state != HealthState::Disabled {
            self.probing = false;
        }
        self.drive(ctx);
    }
}

/// The webhook (or its account) was deleted: the log killed what waited.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deleted;

impl Handler<Deleted> for Endpoint {
    type Result = ();

    fn handle(&mut self, _: Deleted, ctx: &mut Context<Self>) {
        // Attempts in flight are cut off (their deliveries are dead already); records already
        // submitted are committed by the writer all the same.
        // This turn's records go to the writer now; it commits them though the actor stops.
        self.submit_batch(ctx);
        self.shared.busy.fetch_sub(self.in_flight.len() + self.recording.len(), Ordering::Relaxed);
        for (_, (task, _)) in self.in_flight.drain() {
            task.abort();
        }
        self.recording.clear();
        self.loading.clear();
        ctx.stop();
    }
}

/// The first slot (µs) the rate limit gives an actor that starts: one interval after the
/// webhook's last recorded attempt ended, whichever node or process made it — so the limit
/// holds across a handover and a restart.
fn first_slot_us(webhook: &Webhook, status: &WebhookStatus) -> u64 {
    match (webhook.rate_limit.filter(|r| *r > 0), status.last_attempt_at) {
        (Some(rate), Some(at)) => at.saturating_mul(1000).saturating_add(1_000_000 / u64::from(rate)),
        _ => 0,
    }
}

/// Cluster mode: this node no longer owns the webhook's work. The actor starts nothing
/// more; attempts on the wire finish and are recorded within the handover's grace (or are
/// cut off), then it stops (the new owner reads the deliveries from the log).
#[derive(Message)]
#[rtype(result = "()")]
pub struct HandedOver;

impl Handler<HandedOver> for Endpoint {
    type Result = ();

    fn handle(&mut self, _: HandedOver, ctx: &mut Context<Self>) {
        self.hand_over(ctx);
    }
}

impl Endpoint {
    /// Starts nothing more. Attempts on the wire get the handover's grace to finish (and be
    /// recorded: the lease is still this node's meanwhile), then are cut off — past it the
    /// next owner may be sending the same deliveries, and a receiver must never see two
    /// attempts of an ordered webhook at once. A cut attempt records nothing: its delivery
    /// stays owed in the log and the next owner sends it.
    fn hand_over(&mut self, ctx: &mut Context<Self>) {
        if !self.handed_over {
            self.handed_over = true;
            self.draining = true;
            if let Some((_, handle)) = self.timer.take() {
                ctx.cancel_future(handle);
            }
            if !self.in_flight.is_empty() {
                ctx.run_later(self.shared.ledger.handover_grace(), |act, ctx| act.cut_attempts(ctx));
            }
        }
        self.drive(ctx);
    }

    /// This node may not start the webhook's work now: revokes its grant (see
    /// [`super::Shared::revoked`]) unless ownership came back meanwhile (false). Checked
    /// again under the routing lock: a grant afresh is routed under it and comes after the
    /// renewal that ends the lapse, so it either came before this check (which then sees
    /// the webhook owned) or finds the revocation.
    fn revoke(&self, ctx: &mut Context<Self>) -> bool {
        let Ok(routes) = self.shared.routes.lock() else { return true };
        if self.shared.ledger.owns(&self.webhook.id) {
            return false;
        }
        // Not its route: it was deleted meanwhile, or the actor started for a test send.
        if routes.get(&self.webhook.id).is_some_and(|r| r.addr == ctx.address()) {
            if let Ok(mut revoked) = self.shared.revoked.lock() {
                revoked.insert(self.webhook.id.clone());
            }
        }
        true
    }

    fn cut_attempts(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight.is_empty() {
            return;
        }
        tracing::info!(
            webhook_id = %self.webhook.id,
            attempts = self.in_flight.len(),
            "handed over: attempts still on the wire cut off (the next owner sends them again)"
        );
        self.shared.busy.fetch_sub(self.in_flight.len(), Ordering::Relaxed);
        for (_, (task, _)) in self.in_flight.drain() {
            task.abort();
        }
        self.drive(ctx);
    }
}

/// The log was reopened after a storage fault: what the actor holds in memory may be ahead
/// of what is durable, so it starts over from the log — its health from the catalog, its
/// window as recovery read it. Attempts on the wire finish and are recorded as usual (the
/// window leaves their deliveries out).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Resync {
    pub window: Vec<Queued>,
    pub status: WebhookStatus,
    /// After a reopen: records not acknowledged yet may be lost, so their deliveries are
    /// taken back too. Otherwise (ownership changed) they will commit, and are left out.
    pub reopened: bool,
}

impl Handler<Resync> for Endpoint {
    type Result = ();

    fn handle(&mut self, msg: Resync, ctx: &mut Context<Self>) {
        self.heard();
        self.next_slot_us = self.next_slot_us.max(first_slot_us(&self.webhook, &msg.status));
        self.status = msg.status;
        self.probing = false;
        self.urgent.clear();
        self.intake_from = None;
        // Reads begun before answer for a state the actor no longer holds.
        self.generation += 1;
        self.loading.clear();
        self.reading.clear();
        let mut queue = Queue::new(self.webhook.is_strict(), self.shared.policy.window);
        let mut before = std::mem::replace(&mut self.queue, Queue::new(false, 1));
        let full = msg.window.len() >= self.shared.policy.window;
        for q in &msg.window {
            if !self.in_flight.contains_key(&q.delivery) && (msg.reopened || !self.recording.contains_key(&q.delivery))
            {
                queue.admit(Item::from_log(q));
            }
        }
        if !msg.reopened {
            // A delivery whose attempt's record is on the way and whose retry this actor
            // already scheduled: the window shows it as it was before that attempt, or not
            // at all; the actor's item is the newer. (Left out, a strict webhook's next
            // delivery went before it: seen under load in tests/cluster_faults.rs.)
            for d in self.recording.keys() {
                if let Some(retry) = before.take(*d) {
                    queue.push(retry);
                }
            }
        }
        if full {
            queue.admit_overflow();
        }
        self.queue = queue;
        self.drive(ctx);
    }
}

/// Shutting down: send nothing new; what is in flight finishes and is recorded.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

impl Handler<Drain> for Endpoint {
    type Result = ();

    fn handle(&mut self, _: Drain, ctx: &mut Context<Self>) {
        self.draining = true;
        if let Some((_, handle)) = self.timer.take() {
            ctx.cancel_future(handle);
        }
    }
}

/// Shutdown's grace ran out: say which attempts are left on the wire (their deliveries are
/// owed in the log and go out again at the next start).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Abandon;

impl Handler<Abandon> for Endpoint {
    type Result = ();

    fn handle(&mut self, _: Abandon, _: &mut Context<Self>) {
        if self.in_flight.is_empty() && self.recording.is_empty() {
            return;
        }
        let in_flight: Vec<String> = self.in_flight.values().map(|(_, id)| id.to_string()).collect();
        let recording: Vec<String> = self.recording.values().map(DeliveryId::to_string).collect();
        tracing::warn!(
            webhook_id = %self.webhook.id,
            in_flight = ?in_flight,
            unrecorded = ?recording,
            "abandoned at shutdown: these deliveries are sent again at the next start"
        );
    }
}

/// `POST /webhooks/{id}/test`: one signed delivery of a sample event, now, not recorded;
/// the outcome goes to `reply`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TestSend {
    pub event: String,
    pub data: Vec<u8>,
    pub reply: tokio::sync::oneshot::Sender<TestOutcome>,
}

impl Handler<TestSend> for Endpoint {
    type Result = ();

    fn handle(&mut self, msg: TestSend, ctx: &mut Context<Self>) {
        self.heard();
        let key = &self.shared.id_key;
        let now = now_millis();
        // A sample has no record: its ids are derived from a number no record has (the top
        // of the range), so they look like every other id and lead nowhere.
        let event_id = EventId::from_seq(now, u64::MAX - u64::from(rand::random::<u32>()), 0, key);
        let delivery_id = DeliveryId::new(&event_id, 0);
        let body = signature::formatted(
            self.webhook.body_format,
            signature::body(&event_id, &msg.event, now, &msg.data).into(),
        );
        let headers = signature::headers(&self.webhook, &self.opened, &delivery_id, &msg.event, 1, now, &body);
        let request = Request {
            method: self.webhook.method,
            url: self.webhook.url.clone(),
            headers,
            body,
            timeout: Duration::from_millis(self.webhook.timeout_ms),
        };
        // A test-send-only actor counted this one from its start (it must not stop first).
        if !std::mem::take(&mut self.test_only) {
            self.testing += 1;
        }
        let send = sender(&self.shared).send(&request);
        let reply = msg.reply;
        ctx.spawn(actix::fut::wrap_future::<_, Self>(send).map(move |r, act, ctx| {
            act.testing -= 1;
            act.touched = now_millis();
            if act.handed_over {
                act.drive(ctx);
            }
            let _ = reply.send(TestOutcome {
                success: r.result == AttemptResult::Success,
                status_code: r.status_code,
                latency_ms: r.latency.as_secs_f64() * 1000.0,
                response_body: String::from_utf8_lossy(&r.body).into_owned(),
                error: r.error,
            });
            act.retire_when_idle(ctx);
        }));
    }
}
