//! What the API and the delivery engine share while the node runs: the [`Node`] (storage,
//! the dispatcher, the keyring, the target policy, the node-wide guards) once recovery has
//! finished, and the [`NodeHandle`] every handler holds from the first request on. It may
//! import the engine, the domain, storage, config, metrics, model and security (not the
//! log: it holds storage as a [`Ledger`]); the API imports it, the engine
//! and the domain never do.
//!
//! - [`ratelimit`]: `ingest_rate_limit`, a token bucket per account, in memory.
//! - [`disk`]: `min_free_disk` as ingest sees it, answered before a body is read.

pub mod disk;
pub mod ratelimit;

use crate::config::Config;
use crate::engine::Dispatcher;
use crate::storage::Ledger;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// What recovery reported, kept for `/readyz` and the logs.
#[derive(Debug, Clone, Default)]
pub struct RecoverySummary {
    pub duration: Duration,
    pub unfinished: u64,
    pub tail_records: u64,
    pub warnings: usize,
}

/// Everything that exists once storage is recovered: what the API and the delivery engine
/// share while the node runs.
pub struct Node {
    pub config: Arc<Config>,
    /// Where everything is kept (the sled log on one node).
    pub ledger: Arc<dyn Ledger>,
    pub recovery: RecoverySummary,
    /// `ingest_rate_limit`, if configured.
    pub ingest_limiter: Option<ratelimit::IngestLimiter>,
    /// `min_free_disk`.
    pub disk: disk::DiskGuard,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Where webhooks may point (create-time checks; the actors hold the same policy).
    pub target: crate::security::safety::TargetPolicy,
    /// The delivery actors.
    pub delivery: Dispatcher,
    /// Seals secrets and header values at rest, and opens them to send and to show.
    pub keyring: Arc<crate::security::seal::Keyring>,
}

/// The node as every handler sees it, also while it recovers.
pub struct NodeHandle {
    pub config: Arc<Config>,
    /// Exists before the engine, so requests answered while recovering are counted too.
    pub metrics: Arc<crate::metrics::Metrics>,
    node: OnceLock<Arc<Node>>,
    /// Why recovery failed, if it did.
    pub failure: OnceLock<String>,
}

impl NodeHandle {
    pub fn new(config: Arc<Config>, metrics: Arc<crate::metrics::Metrics>) -> Self {
        Self { config, metrics, node: OnceLock::new(), failure: OnceLock::new() }
    }

    /// The node, once recovery finished.
    pub fn node(&self) -> Option<&Arc<Node>> {
        self.node.get()
    }

    /// Recovery finished: `node` answers from now on (once; a second call is ignored).
    pub fn ready(&self, node: Arc<Node>) {
        let _ = self.node.set(node);
    }
}

impl Node {
    /// The state gauges of `/metrics`, read now.
    pub fn gauges(&self) -> crate::metrics::Gauges {
        let mut g = crate::metrics::Gauges {
            recovery_seconds: self.recovery.duration.as_secs_f64(),
            log_bytes: self.ledger.size_on_disk(),
            actors: self.delivery.actors() as u64,
            ownership: self.ledger.ownership().map(|o| crate::metrics::OwnershipGauges {
                partitions_held: o.partitions_held,
                renewals: o.renewals,
                renewal_failures: o.renewal_failures,
                gained: o.gained,
                lost: o.lost,
                lapses: o.lapses,
            }),
            ..Default::default()
        };
        if let Ok(catalog) = self.ledger.catalog().read() {
            let live = catalog.webhooks.iter().filter(|(_, w)| w.deleted_at.is_none());
            for status in live.filter_map(|(id, _)| catalog.statuses.get(id)) {
                g.deliveries_pending += status.pending;
                g.dead_letters += status.dead;
                g.breakers_open += u64::from(status.status.state == crate::model::HealthState::CircuitOpen);
            }
        }
        g
    }
}
