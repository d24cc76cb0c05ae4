//! Herald, a self-hosted webhook delivery engine.
//!
//! A platform posts its events to Herald's HTTP API; Herald writes them to a durable,
//! append-only log in sled, fans each one out to the webhooks subscribed to it, and delivers
//! every copy signed, with retries, a circuit breaker per endpoint and a dead-letter queue.
//! `ARCHITECTURE.md` has the bird's-eye view; this is the module map:
//!
//! - [`config`]: defaults, TOML file, `HERALD_*` variables and flags, validation, redaction.
//! - [`model`]: identifiers and the domain's nouns (accounts, webhooks, events, deliveries).
//! - [`log`]: the append-only sled log and the projection folded from it: records, group
//!   commit, recovery, compaction, verification. Knows nothing of HTTP or actors.
//! - [`credentials`]: issuing and checking tokens.
//! - [`accounts`]: accounts, API keys, and who a bearer token belongs to.
//! - [`events`]: event ingest — validation, matching, idempotency.
//! - [`webhooks`]: webhooks — validation, limits, secrets and rotation.
//! - [`header_rules`]: which custom headers a webhook may set, which values are masked, how a
//!   target URL is shown.
//! - [`deliveries`]: reading deliveries and their attempts; retry and recover.
//! - [`listing`]: what lists share — time window, cursor, scan budget.
//! - [`stats`]: an account's activity and queue state at a glance.
//! - [`event_types`]: the event catalog — configured names plus the names an account sent.
//! - [`ratelimit`]: `ingest_rate_limit`, per account.
//! - [`safety`]: which targets Herald may send to (contract §6).
//! - [`seal`]: secrets sealed at rest — the keyring, sealing and opening values.
//! - [`delivery`]: getting events to endpoints — one actor per webhook (queue, retries,
//!   circuit breaker), the dispatcher that feeds them from the log, the wire format and
//!   signatures, the retry schedule, the sender (connect-time address check, no redirects,
//!   capped response read).
//! - [`disk`]: `min_free_disk` — refusing ingest before the disk fills.
//! - [`error`]: the domain's errors (mapped to HTTP in `api/error.rs` only).
//! - [`time`]: RFC 3339 formatting of the API's times.
//! - [`api`]: the HTTP API; the only module that knows HTTP.
//! - [`server`]: start-up, recovery before readiness, graceful shutdown.
//! - [`telemetry`]: logging set-up.
//! - [`metrics`]: Prometheus metrics with bounded labels.

pub mod accounts;
pub mod api;
pub mod config;
pub mod credentials;
pub mod deliveries;
pub mod delivery;
pub mod disk;
pub mod error;
pub mod event_types;
pub mod events;
pub mod header_rules;
pub mod listing;
pub mod log;
pub mod metrics;
pub mod model;
pub mod ratelimit;
pub mod safety;
pub mod seal;
pub mod server;
pub mod stats;
pub mod storage;
pub mod telemetry;
pub mod time;
pub mod webhooks;
