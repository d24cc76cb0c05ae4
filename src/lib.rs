//! Herald, a self-hosted webhook delivery engine.
//!
//! A platform posts its events to Herald's HTTP API; Herald writes them to a durable,
//! append-only log, fans each one out to the webhooks subscribed to it, and delivers every
//! copy signed, with retries, a circuit breaker per endpoint and a dead-letter queue.
//! `ARCHITECTURE.md` has the bird's-eye view. The folders are the layers, top to bottom;
//! each may import only from the layers below it (the table is in `ARCHITECTURE.md`, and
//! `tests/layers.rs` enforces it):
//!
//! - [`server`]: start-up, recovery before readiness, graceful shutdown; wires the rest.
//! - [`api`]: the HTTP API, the only module that knows HTTP.
//! - [`node`]: what the API and the delivery engine share while the node runs.
//! - [`domain`]: the rules of accounts, webhooks, events and deliveries, on the storage
//!   interface; knows nothing of HTTP or actors.
//! - [`engine`]: the delivery engine — one actor per webhook, the dispatcher that feeds
//!   them, the wire format, retries, the circuit breaker, the sender.
//! - [`log`]: the append-only sled log, the storage interface's first implementation.
//! - [`storage`]: the storage interface — what is kept, how it is read and appended.
//! - [`pg`]: cluster mode's record log in PostgreSQL (`docs/cluster.md`);
//!   bytes and sequence numbers, no records.
//! - [`config`], [`metrics`], [`telemetry`]: settings, Prometheus metrics, logging; told
//!   what they need, they name nothing above them.
//! - [`model`]: identifiers and the domain's nouns.
//! - [`security`]: tokens, sealing secrets at rest, where Herald may send, which headers a
//!   webhook may set.

pub mod api;
pub mod config;
pub mod domain;
pub mod engine;
pub mod log;
pub mod metrics;
pub mod model;
pub mod node;
pub mod pg;
pub mod security;
pub mod server;
pub mod storage;
pub mod telemetry;
