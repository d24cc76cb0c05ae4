//! Delivery (contract §4–5): getting every acknowledged event to every subscribed endpoint.
//!
//! One actix actor per webhook ([`endpoint::Endpoint`]) owns that webhook's waiting
//! deliveries, its in-flight attempts, its retry timer and its circuit breaker; actors are
//! spread over one arbiter (thread) per core, each with its own awc client. The
//! [`Dispatcher`] feeds them from the log: it watches committed groups
//! ([`crate::storage::Change`]) and hands new and re-queued deliveries, webhook edits and
//! deletions to the actor concerned; at start it gives each webhook that is owed deliveries
//! an actor with the window of due deliveries recovery read from disk. An actor runs while
//! its webhook has work and stops after `actor_idle` without any (its health lives in the
//! log, so nothing is lost): 10,000 quiet webhooks cost no actors.
//!
//! Invariants:
//! - A delivery is sent only after the record that created (or re-queued) it is durable.
//! - Every attempt ends in an `AttemptFinished` record (or `DeliveryDead` for one that
//!   expired before it could go out) that carries its outcome, the next due time with its
//!   jitter, and the breaker's new state, so a restart resumes exactly where the records
//!   stop. Actors do not wait for that record's flush before sending more: a crash repeats
//!   at most the attempts in flight (`max_in_flight` per webhook) plus those finished in
//!   the last flush window (a few milliseconds).
//! - Nothing here knows HTTP routes; the log knows nothing of actors.
//!
//! - [`signature`] — the wire format: body and headers, both signature forms.
//! - [`retry`] — what an outcome means and when the next attempt is due.
//! - [`breaker`] — health and circuit breaker transitions.
//! - [`sender`] — one HTTP attempt under the safety rules.
//! - [`queue`] — an endpoint's in-memory window of waiting deliveries.
//! - [`endpoint`] — the actor.
//! - [`recorder`] — one writer command per arbiter tick for the attempts it recorded.
//! - [`recent`] — events lately read back from the log, shared by the actors.
//! - [`dispatcher`] — arbiters, actors, routing the log's changes.

pub mod breaker;
pub mod dispatcher;
pub mod endpoint;
pub mod js_json;
pub mod notices;
pub mod outcome;
pub mod queue;
pub mod recent;
pub mod recorder;
pub mod retry;
pub mod sender;
pub mod signature;

pub use dispatcher::{Dispatcher, TestOutcome};

use crate::metrics::Metrics;
use crate::model::{AccountId, BodyFormat, DeliveryId, DeliveryRef, EventId, IdKey, WebhookId};
use crate::security::safety::TargetPolicy;
use crate::storage::{EventIngested, Ledger};
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The delivery rules from the configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    pub backoff: retry::Backoff,
    pub breaker: breaker::BreakerPolicy,
    pub ttl: Duration,
    /// Deliveries per webhook held in memory; the rest wait on disk.
    pub window: usize,
    pub target: TargetPolicy,
    /// How long an actor with nothing to do stays up before it stops.
    pub idle: Duration,
}

/// An event as the actors send it: the stored record and its body, built once (by the first
/// actor that needs it) and shared by every delivery of the event.
#[derive(Debug)]
pub struct Prepared {
    pub seq: u64,
    /// The event; read back from the log, without its webhook list (nothing on the way
    /// out needs it).
    pub event: Arc<EventIngested>,
    body: OnceLock<actix_web::web::Bytes>,
    /// The body as JavaScript re-serializes it, for webhooks that ask for that form.
    js_body: OnceLock<actix_web::web::Bytes>,
}

impl Prepared {
    pub fn new(seq: u64, event: Arc<EventIngested>) -> Self {
        Self { seq, event, body: OnceLock::new(), js_body: OnceLock::new() }
    }

    pub fn id(&self, key: &IdKey) -> EventId {
        EventId::from_seq(self.event.at, self.seq, self.event.order, key)
    }

    /// The public id of delivery `d` of this event.
    pub fn delivery_id(&self, d: DeliveryRef, key: &IdKey) -> DeliveryId {
        DeliveryId::from_ref(d, self.event.at, self.event.order, key)
    }

    /// The body in `format`, each form built once per event.
    pub fn body(&self, key: &IdKey, format: BodyFormat) -> actix_web::web::Bytes {
        let original = || {
            self.body
                .get_or_init(|| {
                    let e = &self.event;
                    signature::body(&self.id(key), &e.event, e.timestamp, &e.data).into()
                })
                .clone()
        };
        match format {
            BodyFormat::Original => original(),
            BodyFormat::Javascript => self.js_body.get_or_init(|| signature::formatted(format, original())).clone(),
        }
    }
}

/// What every actor shares.
pub struct Shared {
    /// Where attempts are recorded and waiting deliveries and their events read; whether
    /// storage takes writes (actors send nothing while their attempts could not be
    /// recorded); the catalog, to match operational events to the webhooks that subscribe.
    pub ledger: Arc<dyn Ledger>,
    /// Opens webhooks' sealed secrets and header values, and seals what attempts record.
    pub keyring: Arc<crate::security::seal::Keyring>,
    pub id_key: IdKey,
    pub policy: Policy,
    pub metrics: Arc<Metrics>,
    /// Attempts in flight and records not yet acknowledged, over every actor (graceful
    /// shutdown waits for both to reach zero).
    pub busy: AtomicUsize,
    /// The running actors, by webhook. The dispatcher adds one when a webhook gets work and
    /// has none; an actor removes itself when it has been idle (see [`Route`]).
    pub routes: Mutex<HashMap<WebhookId, Route>>,
    /// Cluster mode: webhooks whose work was handed over (or refused) while this node's
    /// grant still covered them — past the local deadline, or as the partition left. No
    /// actor starts for them from an arrival alone (it would send that arrival before the
    /// backlog the handover left in the log); only a window read in order with the changes
    /// ([`crate::storage::Change::Owners`]'s `fresh`, or [`crate::storage::Change::Regranted`])
    /// starts them again. Locked after `routes`, never before.
    pub revoked: Mutex<std::collections::HashSet<WebhookId>>,
    /// One arbiter (thread) per core: actors live on them, and a busy actor spreads its
    /// attempts over all of them, so one webhook can use every core.
    pub arbiters: Arc<[actix::prelude::ArbiterHandle]>,
    /// Events read back from the log, so an event owed to many webhooks is read and
    /// decoded once.
    pub recent: Mutex<recent::RecentEvents>,
}

/// How messages reach a running actor.
///
/// `sent` counts the messages routed to the actor, and every routed message is sent with
/// the `routes` lock held; the actor counts those it handled. An idle actor removes its
/// route, under the same lock, only when the two counts agree: nothing can be waiting in
/// its mailbox, and whatever comes after finds no route and starts a fresh actor (which
/// reads the webhook and its health from the catalog).
pub struct Route {
    pub account: AccountId,
    pub addr: actix::Addr<endpoint::Endpoint>,
    pub sent: u64,
    /// Cluster mode: the actor is handing its work over, and the node was granted the
    /// webhook afresh meanwhile: once it stops, it asks for its window again
    /// ([`crate::storage::Ledger::regrant`]), read after its own records.
    pub regrant: bool,
}

impl Route {
    /// Sends `msg` to the actor, counted.
    pub fn tell<M>(&mut self, msg: M)
    where
        M: actix::Message + Send + 'static,
        M::Result: Send,
        endpoint::Endpoint: actix::Handler<M>,
    {
        self.sent += 1;
        self.addr.do_send(msg);
    }
}
