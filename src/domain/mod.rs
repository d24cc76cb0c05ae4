//! The domain: what Herald does with accounts, webhooks, events and deliveries, as rules over
//! the storage interface ([`crate::storage::Ledger`]). It knows nothing of HTTP (the API maps
//! its [`error::DomainError`]s) and nothing of actors (the delivery engine hears of what it
//! appends from storage). It may import `storage`, `model`, `security`, `config` and
//! `telemetry`, nothing above.
//!
//! - [`accounts`]: accounts, API keys, and who a bearer token belongs to.
//! - [`webhooks`]: webhooks — validation, limits, secrets and rotation.
//! - [`events`]: event ingest — validation, matching, idempotency; reading events back.
//! - [`deliveries`]: reading deliveries and their attempts; retry and recover.
//! - [`stats`]: an account's activity and queue state at a glance.
//! - [`event_types`]: the event catalog — configured names plus the names an account sent.
//! - [`listing`]: what lists share — time window, cursor, scan budget.
//! - [`error`]: the domain's errors.

pub mod accounts;
pub mod deliveries;
pub mod error;
pub mod event_types;
pub mod events;
#[cfg(test)]
mod fixtures;
pub mod listing;
pub mod stats;
pub mod webhooks;
