//! The catalog ([`Catalog`]) as the sled log fills it: loaded from the mirrored rows at
//! start, then given every committed row change after the flush and before the writer
//! answers the callers.

use super::codec::{self, CodecError};
use super::keys;
use super::rows::{ROW_VERSION, WEBHOOK_ROW_VERSION};
use crate::model::*;
use crate::storage::{Catalog, StatusRow, WebhookRow};

/// A catalog read from the rows, and what could not be read.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub catalog: Catalog,
    /// Rows that do not decode (skipped), as messages.
    pub warnings: Vec<String>,
    /// Every status row was read: what each webhook is owed is known.
    pub statuses_whole: bool,
}

/// Reads every mirrored row of `tree`.
pub(crate) fn load(tree: &sled::Tree) -> Result<Loaded, sled::Error> {
    let mut loaded = Loaded { statuses_whole: true, ..Default::default() };
    for prefix in [keys::ACCOUNT, keys::KEY, keys::WEBHOOK, keys::STATUS, keys::ADMIN] {
        for item in tree.scan_prefix([prefix]) {
            let (k, v) = item?;
            if let Err(e) = absorb(&mut loaded.catalog, &k, Some(&v)) {
                loaded.warnings.push(format!("row {} skipped: {e}", super::rows::show_key(&k)));
                loaded.statuses_whole &= prefix != keys::STATUS;
            }
        }
    }
    Ok(loaded)
}

/// Takes in one row change; other prefixes are ignored.
pub(crate) fn absorb(catalog: &mut Catalog, key: &[u8], value: Option<&[u8]>) -> Result<(), CodecError> {
    let Some(prefix) = key.first() else {
        return Ok(());
    };
    let name = || std::str::from_utf8(&key[1..]).unwrap_or_default();
    match *prefix {
        keys::ADMIN if key == keys::ADMIN_TOKEN => {
            catalog.admin_token = value.and_then(|v| v.try_into().ok());
        }
        keys::ACCOUNT => {
            let Ok(id) = AccountId::parse_any(name()) else {
                return Ok(());
            };
            match value {
                Some(v) => {
                    catalog.accounts.insert(id, codec::decode(ROW_VERSION, v)?);
                }
                None => {
                    catalog.accounts.remove(&id);
                }
            }
        }
        keys::KEY => {
            let Ok(id) = KeyId::parse(name()) else {
                return Ok(());
            };
            match value {
                Some(v) => {
                    catalog.keys.insert(id, codec::decode(ROW_VERSION, v)?);
                }
                None => {
                    catalog.keys.remove(&id);
                }
            }
        }
        keys::WEBHOOK => {
            let Ok(id) = WebhookId::parse(name()) else {
                return Ok(());
            };
            let row: Option<WebhookRow> = value.map(|v| codec::decode(WEBHOOK_ROW_VERSION, v)).transpose()?;
            catalog.set_webhook(id, row);
        }
        keys::STATUS => {
            let Ok(id) = WebhookId::parse(name()) else {
                return Ok(());
            };
            let row: Option<StatusRow> = value.map(|v| codec::decode(ROW_VERSION, v)).transpose()?;
            catalog.set_status(id, row);
        }
        _ => {}
    }
    Ok(())
}

/// Takes in every mirrored row of a committed batch. A row that does not decode is logged
/// and left out (the stored row stays what `herald verify` reports).
pub(crate) fn absorb_committed(
    catalog: &std::sync::RwLock<Catalog>,
    changes: &std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>,
) {
    let Ok(mut catalog) = catalog.write() else {
        return;
    };
    for (key, value) in changes.iter().filter(|(k, _)| wants(k)) {
        if let Err(e) = absorb(&mut catalog, key, value.as_deref()) {
            tracing::error!(error = %e, row = %super::rows::show_key(key), "catalog could not absorb a committed row");
        }
    }
}

/// Whether a row under this key is mirrored in the catalog.
pub(crate) fn wants(key: &[u8]) -> bool {
    matches!(key.first(), Some(&keys::ACCOUNT | &keys::KEY | &keys::WEBHOOK | &keys::STATUS))
        || key == keys::ADMIN_TOKEN
}
