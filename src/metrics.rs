//! Prometheus metrics (contract §7), served at `GET /metrics`.
//!
//! Invariants:
//! - Label values are bounded: `event` is a configured event type or `other`, `route` is
//!   the route pattern (never the raw path), `status` an HTTP status code. A tenant cannot
//!   create series.
//! - Every label value exists from start, so series exist before the first event: every
//!   `event`, `result` and `to`, and every route pattern with every status the API answers.
//! - Gauges that mirror state (pending deliveries, dead letters, log size) are read from
//!   the catalog and storage when scraped ([`Gauges`], handed in), so they cannot drift from
//!   what is stored.
//! - Metrics are told what they count (the settings, the route patterns, each transition's
//!   name): this module names nothing of Herald's above the model.
//!
//! - Delivery series (attempts by result, successes, deaths, attempt duration, lag, breaker
//!   transitions) are counted by the endpoint actors as attempts end.
//! - `log_append_duration_seconds` is timed around every writer command (ingest's appends
//!   and the actors' attempt records alike), from handing it over to the flush.
//! - Cluster mode adds `cluster_partitions_owned`, `cluster_lease_renewals_total{result}`,
//!   `cluster_partitions_gained_total`, `cluster_partitions_lost_total`,
//!   `cluster_lease_lapses_total` (read from the lease
//!   keeper when scraped) and `store_commit_duration_seconds` (timed by the writer around
//!   each group's append to PostgreSQL); a single node exports none of them.
//! - With `metrics_enabled = false` every counting method returns at once (the hot paths
//!   pay one branch) and `/metrics` answers 404. With `metrics_per_webhook` one more family,
//!   `webhook_delivery_attempts_total{webhook_id,result}`, counts attempts per webhook; no
//!   other series carries a webhook label.

use crate::model::{AttemptResult, WebhookId};
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use std::collections::HashSet;
use std::time::Duration;

/// What the metrics are set up with.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// `metrics_enabled`: when false nothing is counted.
    pub enabled: bool,
    /// `metrics_per_webhook`.
    pub per_webhook: bool,
    /// The configured event types: `events_ingested_total`'s `event` label values.
    pub event_types: Vec<String>,
    /// Every `route` label value (the route patterns, and the label of what matched none).
    pub routes: Vec<String>,
    /// Every `status` label value the API answers with.
    pub statuses: Vec<&'static str>,
    /// Cluster mode: the ownership and store families are exported too.
    pub cluster: bool,
}

/// The state gauges, read when scraped.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Gauges {
    pub recovery_seconds: f64,
    pub deliveries_pending: u64,
    pub dead_letters: u64,
    pub breakers_open: u64,
    pub log_bytes: u64,
    pub actors: u64,
    /// Cluster mode only.
    pub ownership: Option<OwnershipGauges>,
}

/// A cluster node's ownership as read when scraped: the partitions held now, and counts
/// since the node started (exported as counters).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OwnershipGauges {
    pub partitions_held: u64,
    pub renewals: u64,
    pub renewal_failures: u64,
    pub gained: u64,
    pub lost: u64,
    pub lapses: u64,
}

/// The cluster families: per node, so a dashboard sums them over nodes (each partition is
/// held by one node: the sum is the cluster's, counted once).
struct ClusterFamilies {
    partitions_owned: IntGauge,
    renewals: IntCounterVec,
    gained: IntCounter,
    lost: IntCounter,
    lapses: IntCounter,
    store_commit: Histogram,
}

impl ClusterFamilies {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let partitions_owned =
            IntGauge::new("cluster_partitions_owned", "Partitions of webhooks whose lease this node holds")?;
        let renewals = IntCounterVec::new(
            Opts::new("cluster_lease_renewals_total", "Rounds of this node's lease renewals, by result"),
            &["result"],
        )?;
        let gained = IntCounter::new("cluster_partitions_gained_total", "Partitions this node came to hold")?;
        let lost = IntCounter::new("cluster_partitions_lost_total", "Partitions this node stopped holding")?;
        let lapses = IntCounter::new(
            "cluster_lease_lapses_total",
            "Times this node's local deadline passed before a lease renewal came (it stopped starting work)",
        )?;
        let store_commit = Histogram::with_opts(
            HistogramOpts::new("store_commit_duration_seconds", "Time one group's append to PostgreSQL took")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0]),
        )?;
        for result in ["ok", "failed"] {
            renewals.with_label_values(&[result]);
        }
        registry.register(Box::new(partitions_owned.clone()))?;
        registry.register(Box::new(renewals.clone()))?;
        registry.register(Box::new(gained.clone()))?;
        registry.register(Box::new(lost.clone()))?;
        registry.register(Box::new(lapses.clone()))?;
        registry.register(Box::new(store_commit.clone()))?;
        Ok(Self { partitions_owned, renewals, gained, lost, lapses, store_commit })
    }

    fn set(&self, o: &OwnershipGauges) {
        // The counts are the keeper's, monotonic: a counter follows them by their growth.
        let follow = |c: &IntCounter, to: u64| c.inc_by(to.saturating_sub(c.get()));
        self.partitions_owned.set(o.partitions_held as i64);
        follow(&self.renewals.with_label_values(&["ok"]), o.renewals);
        follow(&self.renewals.with_label_values(&["failed"]), o.renewal_failures);
        follow(&self.gained, o.gained);
        follow(&self.lost, o.lost);
        follow(&self.lapses, o.lapses);
    }
}

pub struct Metrics {
    /// `metrics_enabled`: when false nothing is counted.
    enabled: bool,
    registry: Registry,
    known_events: HashSet<String>,
    events_ingested: IntCounterVec,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    recovery_duration: Gauge,
    deliveries_pending: IntGauge,
    dead_letter_size: IntGauge,
    log_bytes: IntGauge,
    attempts: IntCounterVec,
    succeeded: IntCounter,
    dead: IntCounter,
    attempt_duration: Histogram,
    lag: Histogram,
    breakers_open: IntGauge,
    transitions: IntCounterVec,
    actors: IntGauge,
    log_append: Histogram,
    /// Attempts per webhook, only with `metrics_per_webhook`.
    per_webhook: Option<IntCounterVec>,
    /// Cluster mode only.
    cluster: Option<ClusterFamilies>,
}

/// Every `result` label of `delivery_attempts_total`.
const RESULTS: [&str; 5] = ["success", "http_error", "timeout", "network_error", "refused"];
/// Every `to` label of `circuit_transitions_total`.
const TRANSITIONS: [&str; 3] = ["open", "closed", "disabled"];

/// The label `other` stands for every event name not in `event_types`.
const OTHER: &str = "other";

impl Metrics {
    pub fn new(settings: &Setup) -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("herald".into()), None)?;
        let events_ingested = IntCounterVec::new(
            Opts::new("events_ingested_total", "Events accepted by ingest (replays not counted)"),
            &["event"],
        )?;
        let http_requests =
            IntCounterVec::new(Opts::new("http_requests_total", "HTTP requests answered"), &["route", "status"])?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "Time to answer an HTTP request")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["route"],
        )?;
        let recovery_duration =
            Gauge::with_opts(Opts::new("recovery_duration_seconds", "Time the last start took to recover the log"))?;
        let deliveries_pending = IntGauge::with_opts(Opts::new("deliveries_pending", "Unfinished deliveries"))?;
        let dead_letter_size = IntGauge::with_opts(Opts::new("dead_letter_size", "Dead deliveries kept"))?;
        let log_bytes = IntGauge::with_opts(Opts::new("log_bytes", "Bytes the log takes on disk"))?;
        let attempts = IntCounterVec::new(
            Opts::new("delivery_attempts_total", "Delivery attempts finished, by how they ended"),
            &["result"],
        )?;
        let succeeded = IntCounter::new("deliveries_succeeded_total", "Deliveries that reached their endpoint")?;
        let dead = IntCounter::new("deliveries_dead_total", "Deliveries that went to the dead-letter queue")?;
        let attempt_duration = Histogram::with_opts(
            HistogramOpts::new("delivery_attempt_duration_seconds", "Time one delivery attempt took").buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
            ]),
        )?;
        let lag = Histogram::with_opts(
            HistogramOpts::new("delivery_lag_seconds", "Time from ingest to a delivery's success").buckets(vec![
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1.0,
                5.0,
                30.0,
                60.0,
                300.0,
                900.0,
                3600.0,
                4.0 * 3600.0,
                12.0 * 3600.0,
                24.0 * 3600.0,
                72.0 * 3600.0,
            ]),
        )?;
        let breakers_open = IntGauge::new("circuit_breakers_open", "Webhooks whose circuit breaker is open")?;
        let transitions = IntCounterVec::new(
            Opts::new("circuit_transitions_total", "Circuit breaker transitions, by the state entered"),
            &["to"],
        )?;
        let actors = IntGauge::new(
            "endpoint_actors",
            "Webhooks with an endpoint actor running (an idle one stops after actor_idle)",
        )?;
        let log_append = Histogram::with_opts(
            HistogramOpts::new(
                "log_append_duration_seconds",
                "Time from handing records to the log writer to their flush (one command)",
            )
            .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]),
        )?;
        let per_webhook = if settings.per_webhook {
            let family = IntCounterVec::new(
                Opts::new("webhook_delivery_attempts_total", "Delivery attempts finished, by webhook and result"),
                &["webhook_id", "result"],
            )?;
            registry.register(Box::new(family.clone()))?;
            Some(family)
        } else {
            None
        };
        for r in RESULTS {
            attempts.with_label_values(&[r]);
        }
        for t in TRANSITIONS {
            transitions.with_label_values(&[t]);
        }
        registry.register(Box::new(attempts.clone()))?;
        registry.register(Box::new(succeeded.clone()))?;
        registry.register(Box::new(dead.clone()))?;
        registry.register(Box::new(attempt_duration.clone()))?;
        registry.register(Box::new(lag.clone()))?;
        registry.register(Box::new(breakers_open.clone()))?;
        registry.register(Box::new(transitions.clone()))?;
        registry.register(Box::new(actors.clone()))?;
        registry.register(Box::new(events_ingested.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(recovery_duration.clone()))?;
        registry.register(Box::new(deliveries_pending.clone()))?;
        registry.register(Box::new(dead_letter_size.clone()))?;
        registry.register(Box::new(log_bytes.clone()))?;
        registry.register(Box::new(log_append.clone()))?;
        for route in &settings.routes {
            http_duration.with_label_values(&[route]);
            for status in &settings.statuses {
                http_requests.with_label_values(&[route, status]);
            }
        }
        let cluster = if settings.cluster { Some(ClusterFamilies::register(&registry)?) } else { None };
        let known_events: HashSet<String> = settings.event_types.iter().cloned().collect();
        for name in known_events.iter().map(String::as_str).chain([OTHER]) {
            events_ingested.with_label_values(&[name]);
        }
        Ok(Self {
            enabled: settings.enabled,
            registry,
            known_events,
            events_ingested,
            http_requests,
            http_duration,
            recovery_duration,
            deliveries_pending,
            dead_letter_size,
            log_bytes,
            attempts,
            succeeded,
            dead,
            attempt_duration,
            lag,
            breakers_open,
            transitions,
            actors,
            log_append,
            per_webhook,
            cluster,
        })
    }

    /// Whether anything is counted (`metrics_enabled`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// One storage command took `took` from hand-over to its flush.
    pub fn append_took(&self, took: Duration) {
        if self.enabled {
            self.log_append.observe(took.as_secs_f64());
        }
    }

    /// Cluster mode: one group's append to the database took `took`.
    pub fn store_commit_took(&self, took: Duration) {
        if let (true, Some(c)) = (self.enabled, &self.cluster) {
            c.store_commit.observe(took.as_secs_f64());
        }
    }

    pub fn attempt_finished(&self, webhook: &WebhookId, result: AttemptResult, seconds: f64) {
        if !self.enabled {
            return;
        }
        let label = match result {
            AttemptResult::Success => RESULTS[0],
            AttemptResult::HttpError => RESULTS[1],
            AttemptResult::Timeout => RESULTS[2],
            AttemptResult::NetworkError => RESULTS[3],
            AttemptResult::Refused => RESULTS[4],
        };
        self.attempts.with_label_values(&[label]).inc();
        self.attempt_duration.observe(seconds);
        if let Some(family) = &self.per_webhook {
            family.with_label_values(&[webhook.as_str(), label]).inc();
        }
    }

    /// A delivery succeeded `lag_seconds` after its event was ingested.
    pub fn delivery_succeeded(&self, lag_seconds: f64) {
        if !self.enabled {
            return;
        }
        self.succeeded.inc();
        self.lag.observe(lag_seconds);
    }

    pub fn delivery_dead(&self) {
        if self.enabled {
            self.dead.inc();
        }
    }

    /// A breaker moved `to` one of `open`, `closed`, `disabled`.
    pub fn circuit_transition(&self, to: &str) {
        if !self.enabled {
            return;
        }
        if let Some(label) = TRANSITIONS.iter().find(|t| **t == to) {
            self.transitions.with_label_values(&[label]).inc();
        }
    }

    pub fn event_ingested(&self, name: &str) {
        if !self.enabled {
            return;
        }
        let label = if self.known_events.contains(name) { name } else { OTHER };
        self.events_ingested.with_label_values(&[label]).inc();
    }

    /// A request to `route` (its pattern) was answered with `status` (e.g. "202").
    pub fn request_answered(&self, route: &str, status: &str, seconds: f64) {
        if !self.enabled {
            return;
        }
        self.http_requests.with_label_values(&[route, status]).inc();
        self.http_duration.with_label_values(&[route]).observe(seconds);
    }

    /// The text exposition, with the state gauges as read now (none while recovering).
    pub fn render(&self, gauges: Option<Gauges>) -> Result<String, prometheus::Error> {
        if let Some(g) = gauges {
            self.recovery_duration.set(g.recovery_seconds);
            self.deliveries_pending.set(g.deliveries_pending as i64);
            self.dead_letter_size.set(g.dead_letters as i64);
            self.breakers_open.set(g.breakers_open as i64);
            self.log_bytes.set(g.log_bytes as i64);
            self.actors.set(g.actors as i64);
            if let (Some(c), Some(o)) = (&self.cluster, &g.ownership) {
                c.set(o);
            }
        }
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}
