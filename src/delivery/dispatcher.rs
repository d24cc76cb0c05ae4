//! The dispatcher: starts one [`Endpoint`] actor per live webhook on one arbiter per core,
//! and routes what the log commits to the actor it concerns.
//!
//! Invariants:
//! - Routing runs on the log's flusher thread right after a group is acknowledged, so it is
//!   cheap: one map lookup and one mailbox push per webhook per group; bodies are built by
//!   the actors, once per event.
//! - A webhook has at most one actor, created when the log says it exists and stopped when
//!   the log says it is gone.

use super::endpoint::{self, Endpoint};
use super::{Policy, Prepared, Shared};
use crate::log::{Change, Log, Queued};
use crate::metrics::Metrics;
use crate::model::*;
use actix::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a test send got back (`POST /webhooks/{id}/test`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TestOutcome {
    pub success: bool,
    pub status_code: Option<u16>,
    pub latency_ms: f64,
    pub response_body: String,
    pub error: Option<String>,
}

struct Route {
    account: AccountId,
    addr: Addr<Endpoint>,
}

struct Inner {
    shared: Arc<Shared>,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: AtomicUsize,
    routes: Mutex<HashMap<WebhookId, Route>>,
}

/// Handle to the delivery engine.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

impl Dispatcher {
    /// Starts the actors of every live webhook with the deliveries recovery found waiting,
    /// then watches the log. Call from within the actix system, before anything can ingest.
    pub fn start(
        log: &Log,
        mut waiting: HashMap<WebhookId, Vec<Queued>>,
        policy: Policy,
        metrics: Arc<Metrics>,
    ) -> Self {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arbiters = (0..threads).map(|_| Arbiter::new().handle()).collect();
        let shared = Arc::new(Shared {
            writer: log.writer().clone(),
            tree: log.tree().clone(),
            catalog: log.catalog().clone(),
            id_key: *log.id_key(),
            policy,
            metrics,
            busy: AtomicUsize::new(0),
        });
        let inner = Arc::new(Inner { shared, arbiters, next_arbiter: AtomicUsize::new(0), routes: Mutex::default() });
        let live: Vec<(Arc<Webhook>, WebhookStatus)> = match log.catalog().read() {
            Ok(c) => c
                .webhooks
                .values()
                .filter(|row| row.deleted_at.is_none())
                .map(|row| {
                    let status = c.statuses.get(&row.webhook.id).map(|s| s.status.clone()).unwrap_or_default();
                    (row.webhook.clone(), status)
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        for (webhook, status) in live {
            let queue = waiting.remove(&webhook.id).unwrap_or_default();
            inner.spawn(webhook, status, queue);
        }
        let routing = inner.clone();
        log.observe(Box::new(move |changes| routing.route(changes)));
        Dispatcher { inner }
    }

    /// Sends a sample event to the webhook now; `None` if it has no actor (deleted).
    pub async fn test_send(&self, webhook: &WebhookId, event: String, data: Vec<u8>) -> Option<TestOutcome> {
        let addr = self.inner.routes.lock().ok()?.get(webhook).map(|r| r.addr.clone())?;
        addr.send(endpoint::TestSend { event, data }).await.ok()
    }

    /// Stops sending, lets attempts in flight finish and their records reach the writer,
    /// for at most `grace`. Blocks: call it off the actix threads.
    pub fn drain(&self, grace: Duration) {
        if let Ok(routes) = self.inner.routes.lock() {
            for r in routes.values() {
                r.addr.do_send(endpoint::Drain);
            }
        }
        let deadline = Instant::now() + grace;
        while self.inner.shared.busy.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// How many webhooks have an actor.
    pub fn actors(&self) -> usize {
        self.inner.routes.lock().map_or(0, |r| r.len())
    }
}

impl Inner {
    fn spawn(&self, webhook: Arc<Webhook>, status: WebhookStatus, waiting: Vec<Queued>) {
        let n = self.next_arbiter.fetch_add(1, Ordering::Relaxed) % self.arbiters.len().max(1);
        let Some(arbiter) = self.arbiters.get(n) else { return };
        let (id, account) = (webhook.id.clone(), webhook.account_id.clone());
        let shared = self.shared.clone();
        let addr = Endpoint::start_in_arbiter(arbiter, move |_| Endpoint::new(shared, webhook, status, &waiting));
        if let Ok(mut routes) = self.routes.lock() {
            routes.insert(id, Route { account, addr });
        }
    }

    /// The catalog's copy of a webhook.
    fn defined(&self, id: &WebhookId) -> Option<Arc<Webhook>> {
        let catalog = self.shared.catalog.read().ok()?;
        catalog.webhooks.get(id).map(|row| row.webhook.clone())
    }

    fn route(&self, changes: Vec<Change>) {
        let mut arrivals: HashMap<WebhookId, Vec<(DeliveryRef, Arc<Prepared>)>> = HashMap::new();
        let Ok(mut routes) = self.routes.lock() else { return };
        // Arrivals go out at the end of the group, but before a later change in it (a
        // deletion) could stop their actor: flush them whenever another change comes.
        let flush = |arrivals: &mut HashMap<WebhookId, Vec<(DeliveryRef, Arc<Prepared>)>>,
                     routes: &HashMap<WebhookId, Route>| {
            for (webhook, list) in arrivals.drain() {
                if let Some(r) = routes.get(&webhook) {
                    r.addr.do_send(endpoint::Arrived(list));
                }
            }
        };
        for change in changes {
            match change {
                Change::Ingested { seq, event } => {
                    let prepared = Arc::new(Prepared::new(seq, event.clone()));
                    for (i, webhook) in event.webhooks.iter().enumerate() {
                        let d = DeliveryRef { seq, index: i as u16 };
                        arrivals.entry(webhook.clone()).or_default().push((d, prepared.clone()));
                    }
                    continue;
                }
                Change::Requeued { delivery, webhook_id, manual } => {
                    flush(&mut arrivals, &routes);
                    if let Some(r) = routes.get(&webhook_id) {
                        r.addr.do_send(endpoint::Requeued { delivery, manual });
                    }
                }
                Change::WebhookDefined(webhook) => {
                    flush(&mut arrivals, &routes);
                    // The catalog absorbed this group before the dispatcher hears of it: share
                    // its copy (a later edit in the same group is told next, in order).
                    let shared = self.defined(&webhook.id).filter(|w| w.updated_at == webhook.updated_at);
                    let webhook = shared.unwrap_or_else(|| Arc::new(*webhook));
                    match routes.get(&webhook.id) {
                        Some(r) => r.addr.do_send(endpoint::Redefined(webhook)),
                        None => {
                            drop(routes);
                            self.spawn(webhook, WebhookStatus::default(), Vec::new());
                            routes = match self.routes.lock() {
                                Ok(r) => r,
                                Err(_) => return,
                            };
                        }
                    }
                }
                Change::WebhookDeleted(id) => {
                    flush(&mut arrivals, &routes);
                    if let Some(r) = routes.remove(&id) {
                        r.addr.do_send(endpoint::Deleted);
                    }
                }
                Change::AccountDeleted(account) => {
                    flush(&mut arrivals, &routes);
                    let gone: Vec<WebhookId> =
                        routes.iter().filter(|(_, r)| r.account == account).map(|(id, _)| id.clone()).collect();
                    for id in gone {
                        if let Some(r) = routes.remove(&id) {
                            r.addr.do_send(endpoint::Deleted);
                        }
                    }
                }
                Change::StatusSet { webhook_id, status } => {
                    flush(&mut arrivals, &routes);
                    if let Some(r) = routes.get(&webhook_id) {
                        r.addr.do_send(endpoint::StatusChanged(status));
                    }
                }
            }
        }
        flush(&mut arrivals, &routes);
    }
}
