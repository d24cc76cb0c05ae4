//! What the domain's unit tests share: the in-memory ledger with `acct_default` in it,
//! webhook settings that take loopback targets, ingest rules, a webhook.

use super::events::IngestRules;
use super::webhooks::{self, Settings, WebhookInput};
use crate::model::*;
use crate::security::safety::TargetPolicy;
use crate::security::seal::Keyring;
pub use crate::storage::memory::{block_on, MemoryLedger};
use std::sync::Arc;

/// A ledger in memory holding `acct_default`.
pub fn ledger() -> MemoryLedger {
    let ledger = MemoryLedger::default();
    block_on(super::accounts::ensure_default_account(&ledger)).unwrap();
    ledger
}

/// Webhook settings as `--dev` has them (loopback targets allowed), at most `max` per account.
pub fn settings(max: u32) -> Settings {
    Settings {
        policy: TargetPolicy { dev: true, allow_http: true, allowed_cidrs: Vec::new(), lookup: Default::default() },
        keyring: Arc::new(Keyring::generate()),
        default_max_retries: 3,
        default_timeout_ms: 5_000,
        max_per_account: max,
        secret_overlap_ms: 60_000,
    }
}

pub fn rules() -> IngestRules {
    IngestRules {
        max_payload_bytes: 64 * 1024,
        idempotency_window_ms: 60_000,
        strict_events: false,
        known_events: Vec::new(),
        max_pending_per_webhook: 1_000,
    }
}

/// A webhook of `account` on a loopback target, subscribed to `events`.
pub fn webhook(ledger: &MemoryLedger, account: &AccountId, events: &[&str]) -> Webhook {
    let input = WebhookInput {
        url: Some("http://127.0.0.1:9/hook".into()),
        events: Some(events.iter().map(|e| e.to_string()).collect()),
        ..Default::default()
    };
    block_on(webhooks::create(ledger, &settings(100), account, input)).unwrap()
}
