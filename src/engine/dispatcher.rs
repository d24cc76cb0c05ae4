//! The dispatcher: starts one [`Endpoint`] actor per webhook that has work, on one arbiter
//! per core, and routes what the log commits to the actor it concerns.
//!
//! Invariants:
//! - Routing runs on the log's flusher thread right after a group is acknowledged, so it is
//!   cheap: one map lookup and one mailbox push per webhook per group; bodies are built by
//!   the actors, once per event.
//! - A webhook has at most one actor: started when the webhook has work (deliveries at start
//!   or from ingest, a re-queue, a test send) and none is running; stopped when the log says
//!   the webhook is gone, or by itself after `actor_idle` with nothing to do (see
//!   [`Route`] for why no message can be lost to an actor that stops).

use super::endpoint::{self, Endpoint};
use super::recent::RecentEvents;
use super::{Policy, Prepared, Route, Shared};
use crate::metrics::Metrics;
use crate::model::*;
use crate::storage::{Change, Granted, Ledger, Queued};
use actix::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a test send got back (`POST /webhooks/{id}/test`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct TestOutcome {
    /// A 2xx answer.
    pub success: bool,
    pub status_code: Option<u16>,
    pub latency_ms: f64,
    /// The first 4 KiB of the receiver's answer.
    pub response_body: String,
    /// Why no answer came (timeout, refused address, connection error).
    pub error: Option<String>,
}

/// Bytes of events read back from the log kept for the other webhooks they are owed to.
const RECENT_EVENTS_BYTES: usize = 16 << 20;

struct Inner {
    shared: Arc<Shared>,
    /// Cluster mode: the webhooks the last `Change::Owners` granted (nothing before the
    /// first); `None` on a single node, which owns everything.
    granted: Mutex<Option<Granted>>,
    next_arbiter: AtomicUsize,
    /// Shutting down: no new actors (what would have started them stays on disk).
    draining: AtomicBool,
}

/// Handle to the delivery engine.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

impl Dispatcher {
    /// Starts an actor for every live webhook that recovery found owed deliveries, with
    /// the window it read, then watches the log. Call from within the actix system, before
    /// anything can ingest.
    pub fn start(
        ledger: Arc<dyn Ledger>,
        waiting: HashMap<WebhookId, Vec<Queued>>,
        policy: Policy,
        metrics: Arc<Metrics>,
        keyring: Arc<crate::security::seal::Keyring>,
    ) -> Self {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arbiters: Arc<[ArbiterHandle]> = (0..threads).map(|_| Arbiter::new().handle()).collect();
        let shared = Arc::new(Shared {
            id_key: *ledger.id_key(),
            ledger: ledger.clone(),
            keyring,
            policy,
            metrics,
            busy: AtomicUsize::new(0),
            routes: Mutex::default(),
            revoked: Mutex::default(),
            arbiters,
            recent: Mutex::new(RecentEvents::new(RECENT_EVENTS_BYTES)),
        });
        // A cluster node starts actors only for what a `Change::Owners` grants: the log
        // announces what the node holds once the engine observes it.
        let granted = Mutex::new(ledger.ownership().is_some().then(Granted::nothing));
        let inner =
            Arc::new(Inner { shared, granted, next_arbiter: AtomicUsize::new(0), draining: AtomicBool::new(false) });
        if let Ok(mut routes) = inner.shared.routes.lock() {
            for (id, window) in waiting.into_iter().filter(|(_, w)| !w.is_empty()) {
                inner.spawn(&mut routes, &id, window);
            }
        }
        let routing = inner.clone();
        ledger.observe(Box::new(move |changes| routing.route(changes)));
        Dispatcher { inner }
    }

    /// Sends a sample event to the webhook now; `None` if it is gone (deleted) or Herald is
    /// shutting down.
    pub async fn test_send(&self, webhook: &WebhookId, event: String, data: Vec<u8>) -> Option<TestOutcome> {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        {
            let mut routes = self.inner.shared.routes.lock().ok()?;
            let msg = endpoint::TestSend { event, data, reply };
            match self.inner.actor(&mut routes, webhook) {
                Some(route) => route.tell(msg),
                // Another node owns the webhook's work: the test goes out from here all the same.
                None => self.inner.tester(webhook)?.do_send(msg),
            }
        }
        outcome.await.ok()
    }

    /// Stops sending, lets attempts in flight finish and their records reach the writer,
    /// for at most `grace`. Blocks: call it off the actix threads.
    pub fn drain(&self, grace: Duration) {
        self.inner.draining.store(true, Ordering::SeqCst);
        if let Ok(routes) = self.inner.shared.routes.lock() {
            for r in routes.values() {
                r.addr.do_send(endpoint::Drain);
            }
        }
        let deadline = Instant::now() + grace;
        while self.inner.shared.busy.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = self.inner.shared.busy.load(Ordering::Relaxed);
        if left > 0 {
            // Said by each actor, with its webhook and the deliveries it leaves on the wire.
            tracing::warn!(left, "shutdown_grace ran out with attempts in flight or being recorded");
            if let Ok(routes) = self.inner.shared.routes.lock() {
                for r in routes.values() {
                    r.addr.do_send(endpoint::Abandon);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// How many webhooks have an actor running.
    pub fn actors(&self) -> usize {
        self.inner.shared.routes.lock().map_or(0, |r| r.len())
    }
}

impl Inner {
    /// Starts the actor of a live webhook with the deliveries `waiting` for it, reading the
    /// webhook and its health from the catalog; `None` if the webhook is gone, or its work
    /// is another node's (storage says which).
    fn spawn<'r>(
        &self,
        routes: &'r mut HashMap<WebhookId, Route>,
        id: &WebhookId,
        waiting: Vec<Queued>,
    ) -> Option<&'r mut Route> {
        if self.draining.load(Ordering::SeqCst) {
            return None;
        }
        let granted = self.granted.lock().ok()?.as_ref().is_none_or(|g| g.covers(id));
        if !granted {
            return None;
        }
        if !self.shared.ledger.owns(id) {
            // Granted, but nothing may start now (past the local deadline, or leaving):
            // what this brought stays in the log, and only a grant afresh starts the
            // webhook again (see `Shared::revoked`).
            if let Ok(mut revoked) = self.shared.revoked.lock() {
                revoked.insert(id.clone());
            }
            return None;
        }
        if self.shared.revoked.lock().ok()?.contains(id) {
            return None;
        }
        let (webhook, status) = self.live(id)?;
        let arbiters = &self.shared.arbiters;
        let n = self.next_arbiter.fetch_add(1, Ordering::Relaxed) % arbiters.len().max(1);
        let arbiter = arbiters.get(n)?;
        let account = webhook.account_id.clone();
        let shared = self.shared.clone();
        let addr = Endpoint::start_in_arbiter(arbiter, move |_| Endpoint::new(shared, webhook, status, &waiting));
        routes.insert(id.clone(), Route { account, addr, sent: 0, regrant: false });
        routes.get_mut(id)
    }

    /// A live webhook and its health, from the catalog; `None` if it is gone.
    fn live(&self, id: &WebhookId) -> Option<(Arc<Webhook>, WebhookStatus)> {
        let catalog = self.shared.ledger.catalog().read().ok()?;
        let row = catalog.webhooks.get(id).filter(|row| row.deleted_at.is_none())?;
        let status = catalog.statuses.get(id).map(|s| s.status.clone()).unwrap_or_default();
        Some((row.webhook.clone(), status))
    }

    /// An actor for one test send of a live webhook whose work is another node's.
    fn tester(&self, id: &WebhookId) -> Option<Addr<Endpoint>> {
        if self.draining.load(Ordering::SeqCst) {
            return None;
        }
        let (webhook, status) = self.live(id)?;
        let arbiter = self.shared.arbiters.first()?;
        let shared = self.shared.clone();
        Some(Endpoint::start_in_arbiter(arbiter, move |_| Endpoint::for_test_send(shared, webhook, status)))
    }

    /// The webhook's running actor, started if it has none.
    fn actor<'r>(&self, routes: &'r mut HashMap<WebhookId, Route>, id: &WebhookId) -> Option<&'r mut Route> {
        if routes.contains_key(id) {
            routes.get_mut(id)
        } else {
            self.spawn(routes, id, Vec::new())
        }
    }

    /// The catalog's copy of a webhook.
    fn defined(&self, id: &WebhookId) -> Option<Arc<Webhook>> {
        let catalog = self.shared.ledger.catalog().read().ok()?;
        catalog.webhooks.get(id).map(|row| row.webhook.clone())
    }

    /// Hands each webhook its arrivals of the group so far.
    fn deliver(&self, arrivals: &mut Arrivals, routes: &mut HashMap<WebhookId, Route>) {
        for (webhook, list) in arrivals.drain() {
            if let Some(r) = self.actor(routes, &webhook) {
                r.tell(endpoint::Arrived(list));
            }
        }
    }

    fn route(&self, changes: Vec<Change>) {
        let mut arrivals = Arrivals::new();
        let Ok(mut guard) = self.shared.routes.lock() else { return };
        let routes = &mut *guard;
        for change in changes {
            // Arrivals go out at the end of the group, but before a later change in it (a
            // deletion) could stop their actor: hand them over whenever another change comes.
            if !matches!(change, Change::Ingested { .. }) {
                self.deliver(&mut arrivals, routes);
            }
            match change {
                Change::Ingested { seq, event } => {
                    let prepared = Arc::new(Prepared::new(seq, event.clone()));
                    for (i, webhook) in event.webhooks.iter().enumerate() {
                        let d = DeliveryRef { seq, index: i as u16 };
                        arrivals.entry(webhook.clone()).or_default().push((d, prepared.clone()));
                    }
                }
                Change::Requeued { delivery, webhook_id, manual } => {
                    if let Some(r) = self.actor(routes, &webhook_id) {
                        r.tell(endpoint::QueuedAgain { delivery, manual });
                    }
                }
                Change::WebhookDefined(webhook) => {
                    // A webhook without an actor needs none yet: its actor reads the catalog
                    // when it starts. The catalog absorbed this group before the dispatcher
                    // hears of it: share its copy (a later edit in the same group is told
                    // next, in order).
                    if let Some(r) = routes.get_mut(&webhook.id) {
                        let shared = self.defined(&webhook.id).filter(|w| w.updated_at == webhook.updated_at);
                        r.tell(endpoint::Redefined(shared.unwrap_or_else(|| Arc::new(*webhook))));
                    }
                }
                Change::WebhookDeleted(id) => {
                    if let Some(r) = routes.remove(&id) {
                        r.addr.do_send(endpoint::Deleted);
                    }
                }
                Change::AccountDeleted(account) => {
                    routes.retain(|_, r| {
                        let keep = r.account != account;
                        if !keep {
                            r.addr.do_send(endpoint::Deleted);
                        }
                        keep
                    });
                }
                Change::StatusSet { webhook_id, status } => {
                    if let Some(r) = routes.get_mut(&webhook_id) {
                        r.tell(endpoint::StatusChanged(status));
                    }
                }
                Change::Owners { gained, granted, fresh } => {
                    if let Ok(mut g) = self.granted.lock() {
                        *g = Some(granted);
                    }
                    // Work this node no longer owns is handed over: the actor starts
                    // nothing more, cuts what is still on the wire after the handover's
                    // grace, and stops. Its route stays until then, so that a grant
                    // afresh meanwhile waits for it (`Route::regrant`) instead of starting
                    // a second actor beside attempts still on the wire.
                    if let Ok(mut revoked) = self.shared.revoked.lock() {
                        for (id, r) in routes.iter() {
                            if !self.shared.ledger.owns(id) && revoked.insert(id.clone()) {
                                r.addr.do_send(endpoint::HandedOver);
                            }
                        }
                    }
                    // Only the actors of webhooks gained start over from the log.
                    self.start_over(routes, gained, false, &fresh);
                }
                Change::Reopened { queues } => {
                    // Every running actor starts over from the log; a webhook owed
                    // deliveries without one gets one, as at start-up. The windows of every
                    // webhook owed some were read in order with the changes, so this grants
                    // every revoked webhook afresh (a grant or a regrant lost to the reopen
                    // cannot leave one revoked for good).
                    self.start_over(routes, queues, true, &Granted::new(|_| true));
                }
                Change::Regranted { webhook, window } => {
                    // Ignored if the webhook was granted afresh meanwhile (it has an actor,
                    // or is no longer revoked): that grant read its window too.
                    let revoked = !routes.contains_key(&webhook)
                        && self.shared.revoked.lock().is_ok_and(|mut r| r.remove(&webhook));
                    if revoked && !window.is_empty() {
                        self.spawn(routes, &webhook, window);
                    }
                }
            }
        }
        self.deliver(&mut arrivals, routes);
    }
}

impl Inner {
    /// Actors start over from the log with the windows in `queues` (every running one with
    /// `every_actor`, after a reopen, else those `queues` names); a webhook owed deliveries
    /// without an actor gets one, as at start-up. Revoked webhooks that `fresh` covers are
    /// granted again: started from their window, or, if their actor is still handing over,
    /// once it has stopped (it asks for its window then, read after its own records).
    fn start_over(
        &self,
        routes: &mut HashMap<WebhookId, Route>,
        mut queues: HashMap<WebhookId, Vec<Queued>>,
        every_actor: bool,
        fresh: &Granted,
    ) {
        let mut handing_over = std::collections::HashSet::new();
        if let Ok(mut revoked) = self.shared.revoked.lock() {
            revoked.retain(|id| match routes.get_mut(id) {
                Some(r) => {
                    r.regrant |= fresh.covers(id);
                    handing_over.insert(id.clone());
                    true
                }
                None => !fresh.covers(id),
            });
        }
        for (id, r) in routes.iter_mut() {
            let window = match queues.remove(id) {
                Some(window) => window,
                None if every_actor => Vec::new(),
                None => continue,
            };
            if handing_over.contains(id) {
                continue;
            }
            let catalog = self.shared.ledger.catalog().read().ok();
            let status = catalog.and_then(|c| c.statuses.get(id).map(|s| s.status.clone()));
            r.tell(endpoint::Resync { window, status: status.unwrap_or_default(), reopened: every_actor });
        }
        for (id, window) in queues.into_iter().filter(|(_, w)| !w.is_empty()) {
            self.spawn(routes, &id, window);
        }
    }
}

/// New deliveries of a group, by webhook.
type Arrivals = HashMap<WebhookId, Vec<(DeliveryRef, Arc<Prepared>)>>;
