//! The small, hot part of the state every node keeps in memory: the admin token hash,
//! accounts, API keys, webhooks and their status rows. Ingest matches events against it and
//! authentication reads it without touching storage.
//!
//! Invariant: the catalog is a mirror of stored rows, never a fold of its own. A backend
//! loads it at start and then gives it every committed change after it is durable and before
//! the writer answers the callers, so a read after an acknowledged write sees the write.

use super::state::{StatusRow, WebhookRow};
use crate::model::*;
use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Catalog {
    /// SHA-256 of the admin token, once one was set.
    pub admin_token: Option<[u8; 32]>,
    /// Every account, deleted ones with their `deleted_at`.
    pub accounts: HashMap<AccountId, Account>,
    /// Every API key by its id, revoked ones with their `revoked_at`.
    pub keys: HashMap<KeyId, ApiKey>,
    /// Deleted webhooks stay here as tombstones (`deleted_at`), as in the rows.
    pub webhooks: HashMap<WebhookId, WebhookRow>,
    /// Boxed: a status row is several times the size of its key, and a map's table keeps
    /// room for more entries than it holds (memory per idle webhook).
    pub statuses: HashMap<WebhookId, Box<StatusRow>>,
    /// Live (not deleted) webhooks of each account, derived from `webhooks`.
    by_account: HashMap<AccountId, BTreeSet<WebhookId>>,
}

impl Catalog {
    /// Puts (or, with `None`, removes) one webhook's row.
    pub fn set_webhook(&mut self, id: WebhookId, row: Option<WebhookRow>) {
        if let Some(old) = self.webhooks.remove(&id) {
            if let Some(set) = self.by_account.get_mut(&old.webhook.account_id) {
                set.remove(&id);
            }
        }
        if let Some(row) = row {
            if row.deleted_at.is_none() {
                self.by_account.entry(row.webhook.account_id.clone()).or_default().insert(id.clone());
            }
            self.webhooks.insert(id, row);
        }
    }

    /// Puts (or removes) one webhook's status row.
    pub fn set_status(&mut self, id: WebhookId, row: Option<StatusRow>) {
        match row {
            // Status rows change with every commit that touches the webhook's deliveries:
            // overwrite the box rather than allocate a new one.
            Some(row) => match self.statuses.get_mut(&id) {
                Some(held) => **held = row,
                None => {
                    self.statuses.insert(id, Box::new(row));
                }
            },
            None => {
                self.statuses.remove(&id);
            }
        }
    }

    /// The account's live webhooks, oldest first.
    pub fn webhooks_of<'a>(&'a self, account: &AccountId) -> impl Iterator<Item = &'a Webhook> + 'a {
        self.by_account
            .get(account)
            .into_iter()
            .flat_map(|set| set.iter())
            .filter_map(|id| self.webhooks.get(id))
            .map(|row| &*row.webhook)
    }

    /// The live webhooks of the account that subscribe to `event`, oldest first: not paused
    /// (`is_active: false`) and not disabled.
    pub fn matching<'a>(&'a self, account: &AccountId, event: &'a str) -> impl Iterator<Item = &'a Webhook> + 'a {
        self.webhooks_of(account).filter(move |w| {
            w.is_active
                && w.matches(event)
                && self.statuses.get(&w.id).is_none_or(|s| s.status.state != HealthState::Disabled)
        })
    }

    /// An account that exists and is not deleted.
    pub fn live_account(&self, id: &AccountId) -> Option<&Account> {
        self.accounts.get(id).filter(|a| a.deleted_at.is_none())
    }

    /// The account's live webhook `id`.
    pub fn live_webhook(&self, account: &AccountId, id: &WebhookId) -> Option<&WebhookRow> {
        self.webhooks.get(id).filter(|r| r.deleted_at.is_none() && &r.webhook.account_id == account)
    }
}
