//! Prometheus metrics (SPEC §7), served at `GET /metrics`.
//!
//! Invariants:
//! - Label values are bounded: `event` is a configured event type or `other`, `route` is
//!   the route pattern (never the raw path), `status` an HTTP status code. A tenant cannot
//!   create series.
//! - Every `event` value exists from start, so series exist before the first event.
//! - Gauges that mirror state (pending deliveries, dead letters, log size) are read from
//!   the catalog and the tree when scraped, so they cannot drift from what is stored.
//!
//! Delivery, breaker and lag metrics come with the delivery actors.

use crate::config::Config;
use crate::server::Engine;
use prometheus::{Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
use std::collections::HashSet;

pub struct Metrics {
    registry: Registry,
    known_events: HashSet<String>,
    events_ingested: IntCounterVec,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    recovery_duration: Gauge,
    deliveries_pending: IntGauge,
    dead_letter_size: IntGauge,
    log_bytes: IntGauge,
}

/// The label `other` stands for every event name not in `event_types`.
const OTHER: &str = "other";

impl Metrics {
    pub fn new(config: &Config) -> Result<Self, prometheus::Error> {
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
        registry.register(Box::new(events_ingested.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(recovery_duration.clone()))?;
        registry.register(Box::new(deliveries_pending.clone()))?;
        registry.register(Box::new(dead_letter_size.clone()))?;
        registry.register(Box::new(log_bytes.clone()))?;
        let known_events: HashSet<String> = config.event_types.iter().map(|t| t.name.clone()).collect();
        for name in known_events.iter().map(String::as_str).chain([OTHER]) {
            events_ingested.with_label_values(&[name]);
        }
        Ok(Self {
            registry,
            known_events,
            events_ingested,
            http_requests,
            http_duration,
            recovery_duration,
            deliveries_pending,
            dead_letter_size,
            log_bytes,
        })
    }

    pub fn event_ingested(&self, name: &str) {
        let label = if self.known_events.contains(name) { name } else { OTHER };
        self.events_ingested.with_label_values(&[label]).inc();
    }

    pub fn request_answered(&self, route: &str, status: u16, seconds: f64) {
        self.http_requests.with_label_values(&[route, &status.to_string()]).inc();
        self.http_duration.with_label_values(&[route]).observe(seconds);
    }

    /// The text exposition, with the state gauges read now.
    pub fn render(&self, engine: Option<&Engine>) -> Result<String, prometheus::Error> {
        if let Some(engine) = engine {
            self.recovery_duration.set(engine.recovery.duration.as_secs_f64());
            if let Ok(catalog) = engine.log.catalog().read() {
                let live = catalog.webhooks.iter().filter(|(_, w)| w.deleted_at.is_none());
                let (pending, dead) = live
                    .filter_map(|(id, _)| catalog.statuses.get(id))
                    .fold((0u64, 0u64), |(p, d), s| (p + s.pending, d + s.dead));
                self.deliveries_pending.set(pending as i64);
                self.dead_letter_size.set(dead as i64);
            }
            self.log_bytes.set(engine.log.size_on_disk() as i64);
        }
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}
