//! [`Precondition`]s checked against the staged state on the writer thread, so the state a
//! rule is judged on is the one the command's records are folded onto (two concurrent
//! commands cannot both pass it).

use super::keys;
use super::projection::{load_delivery, IdempotencyRow};
use super::rows::{Rows, RowsError};
use crate::model::*;
use crate::storage::{Precondition, Rejection, WebhookRow};

/// Whether `rule` holds in `rows`.
pub(crate) fn check<R: Rows>(rows: &R, rule: &Precondition) -> Result<(), Rejection> {
    let unreadable = |e: RowsError| Rejection::Conflict(e.to_string());
    match rule {
        Precondition::AccountAbsent(id) => match rows.get(&keys::account(id)) {
            Ok(None) => Ok(()),
            _ => Err(Rejection::Conflict("exists".into())),
        },
        // The tree knows no leases: in cluster mode the writer judges this against the
        // database (`upstream`), on one node everything is owned.
        Precondition::Owned(_) => Ok(()),
        Precondition::AdminTokenAbsent => match rows.get(keys::ADMIN_TOKEN) {
            Ok(None) => Ok(()),
            _ => Err(Rejection::Conflict("an admin token was issued already".into())),
        },
        Precondition::AccountLive(id) => account_live(rows, id),
        Precondition::KeyLive { key, account } => match rows.get_row::<ApiKey>(&keys::api_key(key)) {
            Ok(Some(k)) if &k.account_id == account && k.revoked_at.is_none() => Ok(()),
            _ => Err(Rejection::NotFound),
        },
        Precondition::WebhookOwned { webhook, account, version } => {
            match rows.get_row::<WebhookRow>(&keys::webhook(webhook)) {
                Ok(Some(row)) if row.deleted_at.is_none() && &row.webhook.account_id == account => match version {
                    Some(seq) if *seq != row.seq => {
                        Err(Rejection::Conflict("the webhook changed meanwhile; read it and retry".into()))
                    }
                    _ => Ok(()),
                },
                _ => Err(Rejection::NotFound),
            }
        }
        Precondition::WebhookLive(webhook) => {
            if webhook_live(rows, webhook).map_err(unreadable)? {
                Ok(())
            } else {
                Err(Rejection::NotFound)
            }
        }
        Precondition::WebhookRoom { account, max } => {
            account_live(rows, account)?;
            let count = rows.scan(&keys::account_webhooks(account), *max as usize + 1).map_err(unreadable)?.len();
            if count >= *max as usize {
                return Err(Rejection::Limit(format!("an account has at most {max} webhooks")));
            }
            Ok(())
        }
        Precondition::DeliveryDead { delivery, webhook } => {
            let Some(row) = load_delivery(rows, *delivery, webhook).map_err(unreadable)? else {
                return Err(Rejection::NotFound);
            };
            if !matches!(row.state, DeliveryState::Dead(_)) {
                return Err(Rejection::Conflict(format!("the delivery is {}, not dead", row.state.as_str())));
            }
            if !webhook_live(rows, webhook).map_err(unreadable)? {
                return Err(Rejection::Conflict("its webhook was deleted".into()));
            }
            Ok(())
        }
        Precondition::DeliveryAt { delivery, webhook, attempts } => {
            match load_delivery(rows, *delivery, webhook).map_err(unreadable)? {
                Some(d) if !d.state.is_finished() && d.attempts == *attempts => Ok(()),
                _ => Err(Rejection::Conflict("delivery moved on".into())),
            }
        }
        Precondition::IdempotencyFree { account, key, since, request_hash } => {
            match rows.get_row::<IdempotencyRow>(&keys::idempotency(account, key)).map_err(unreadable)? {
                Some(row) if row.at >= *since => {
                    Err(Rejection::Duplicate { same_request: row.request_hash == *request_hash, seq: row.seq })
                }
                _ => Ok(()),
            }
        }
    }
}

fn account_live<R: Rows>(rows: &R, id: &AccountId) -> Result<(), Rejection> {
    match rows.get_row::<Account>(&keys::account(id)) {
        Ok(Some(a)) if a.deleted_at.is_none() => Ok(()),
        _ => Err(Rejection::NotFound),
    }
}

fn webhook_live<R: Rows>(rows: &R, id: &WebhookId) -> Result<bool, RowsError> {
    Ok(rows.get_row::<WebhookRow>(&keys::webhook(id))?.is_some_and(|w| w.deleted_at.is_none()))
}
