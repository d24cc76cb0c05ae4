//! The small, hot part of the projection kept in memory: the admin token hash, accounts,
//! API keys, webhooks and their status rows. Ingest matches events against it and
//! authentication reads it without touching disk.
//!
//! Invariant: the catalog is a mirror of rows, never a fold of its own. It is loaded from the
//! rows at start and then absorbs every committed row change after the flush and before the
//! writer answers the callers, so a read after an acknowledged write sees the write.

use super::codec::{self, CodecError};
use super::keys;
use super::projection::{StatusRow, WebhookRow};
use super::rows::ROW_VERSION;
use crate::model::*;
use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Catalog {
    pub admin_token: Option<[u8; 32]>,
    pub accounts: HashMap<AccountId, Account>,
    pub keys: HashMap<KeyId, ApiKey>,
    /// Deleted webhooks stay here as tombstones (`deleted_at`), as in the rows.
    pub webhooks: HashMap<WebhookId, WebhookRow>,
    /// Boxed: a status row is several times the size of its key, and a map's table keeps
    /// room for more entries than it holds (memory per idle webhook).
    pub statuses: HashMap<WebhookId, Box<StatusRow>>,
    /// Live (not deleted) webhooks of each account, derived from `webhooks`.
    by_account: HashMap<AccountId, BTreeSet<WebhookId>>,
}

/// A catalog read from the rows, and what could not be read.
#[derive(Debug, Default)]
pub struct Loaded {
    pub catalog: Catalog,
    /// Rows that do not decode (skipped), as messages.
    pub warnings: Vec<String>,
    /// Every status row was read: what each webhook is owed is known.
    pub statuses_whole: bool,
}

impl Catalog {
    /// Reads every mirrored row of `tree`.
    pub fn load(tree: &sled::Tree) -> Result<Loaded, sled::Error> {
        let mut loaded = Loaded { statuses_whole: true, ..Default::default() };
        for prefix in [keys::ACCOUNT, keys::KEY, keys::WEBHOOK, keys::STATUS, keys::ADMIN] {
            for item in tree.scan_prefix([prefix]) {
                let (k, v) = item?;
                if let Err(e) = loaded.catalog.absorb(&k, Some(&v)) {
                    loaded.warnings.push(format!("row {} skipped: {e}", super::rows::show_key(&k)));
                    loaded.statuses_whole &= prefix != keys::STATUS;
                }
            }
        }
        Ok(loaded)
    }

    /// Takes in one row change; other prefixes are ignored.
    pub fn absorb(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), CodecError> {
        let Some(prefix) = key.first() else {
            return Ok(());
        };
        let name = || std::str::from_utf8(&key[1..]).unwrap_or_default();
        match *prefix {
            keys::ADMIN if key == keys::ADMIN_TOKEN => {
                self.admin_token = value.and_then(|v| v.try_into().ok());
            }
            keys::ACCOUNT => {
                let Ok(id) = AccountId::parse_any(name()) else {
                    return Ok(());
                };
                match value {
                    Some(v) => {
                        self.accounts.insert(id, codec::decode(ROW_VERSION, v)?);
                    }
                    None => {
                        self.accounts.remove(&id);
                    }
                }
            }
            keys::KEY => {
                let Ok(id) = KeyId::parse(name()) else {
                    return Ok(());
                };
                match value {
                    Some(v) => {
                        self.keys.insert(id, codec::decode(ROW_VERSION, v)?);
                    }
                    None => {
                        self.keys.remove(&id);
                    }
                }
            }
            keys::WEBHOOK => {
                let Ok(id) = WebhookId::parse(name()) else {
                    return Ok(());
                };
                if let Some(old) = self.webhooks.remove(&id) {
                    if let Some(set) = self.by_account.get_mut(&old.webhook.account_id) {
                        set.remove(&id);
                    }
                }
                if let Some(v) = value {
                    let row: WebhookRow = codec::decode(ROW_VERSION, v)?;
                    if row.deleted_at.is_none() {
                        self.by_account.entry(row.webhook.account_id.clone()).or_default().insert(id.clone());
                    }
                    self.webhooks.insert(id, row);
                }
            }
            keys::STATUS => {
                let Ok(id) = WebhookId::parse(name()) else {
                    return Ok(());
                };
                match value {
                    Some(v) => {
                        // Status rows change with every commit that touches the webhook's
                        // deliveries: overwrite the box rather than allocate a new one.
                        let row: StatusRow = codec::decode(ROW_VERSION, v)?;
                        match self.statuses.get_mut(&id) {
                            Some(held) => **held = row,
                            None => {
                                self.statuses.insert(id, Box::new(row));
                            }
                        }
                    }
                    None => {
                        self.statuses.remove(&id);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Takes in every mirrored row of a committed batch. A row that does not decode is
    /// logged and left out (the stored row stays what `herald verify` reports).
    pub fn absorb_committed(
        catalog: &std::sync::RwLock<Catalog>,
        changes: &std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    ) {
        let Ok(mut catalog) = catalog.write() else {
            return;
        };
        for (key, value) in changes.iter().filter(|(k, _)| Catalog::wants(k)) {
            if let Err(e) = catalog.absorb(key, value.as_deref()) {
                tracing::error!(error = %e, row = %super::rows::show_key(key), "catalog could not absorb a committed row");
            }
        }
    }

    /// Whether a row under this key is mirrored here.
    pub fn wants(key: &[u8]) -> bool {
        matches!(key.first(), Some(&keys::ACCOUNT | &keys::KEY | &keys::WEBHOOK | &keys::STATUS))
            || key == keys::ADMIN_TOKEN
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
}
