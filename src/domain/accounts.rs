//! Accounts (tenants) and their API keys: creating, listing, revoking, deleting, and
//! telling who a bearer token belongs to.
//!
//! Invariants:
//! - `acct_default` always exists (created on first start).
//! - An API key is `hk_<ULID>_<secret>`: the ULID names its row (`key_<ULID>`), the whole
//!   key is stored only as SHA-256 and compared in constant time. A revoked key, or a key of
//!   a deleted account, stops working with the commit that revoked it.
//! - Every change is a record appended through the storage interface, with a precondition
//!   checked atomically with the append, so concurrent requests cannot race past each other.

use crate::domain::error::DomainError;
use crate::model::*;
use crate::security::credentials;
use crate::storage::{AppendError, Command, Ledger, Precondition, Record};
use rand::RngCore;

/// Prefix of API keys.
pub const API_KEY_PREFIX: &str = "hk_";
/// Characters of a key shown in listings.
const SHOWN_PREFIX: usize = 12;
/// Longest account name.
pub const MAX_NAME: usize = 100;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The admin token, acting on `account` (`Herald-Account`, else `acct_default`).
    Admin { account: AccountId },
    /// An account's API key.
    Key { account: AccountId, key: KeyId },
}

impl Caller {
    pub fn account(&self) -> &AccountId {
        match self {
            Caller::Admin { account } | Caller::Key { account, .. } => account,
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Caller::Admin { .. })
    }
}

/// A key as issued: the only moment its secret exists outside the caller.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub key: ApiKey,
    pub secret: String,
}

fn new_key(account: &AccountId, at: Millis) -> IssuedKey {
    let id = KeyId::generate_at(at);
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    use base64::Engine;
    let secret = format!(
        "{API_KEY_PREFIX}{}_{}",
        &id.as_str()[KeyId::PREFIX.len()..],
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let key = ApiKey {
        id,
        account_id: account.clone(),
        prefix: secret.chars().take(SHOWN_PREFIX).collect(),
        hash: credentials::hash_token(&secret),
        created_at: at,
        revoked_at: None,
    };
    IssuedKey { key, secret }
}

/// Creates `acct_default` if it does not exist yet.
pub async fn ensure_default_account(ledger: &dyn Ledger) -> Result<(), DomainError> {
    let id = AccountId::default_account();
    if ledger.catalog().read().map(|c| c.accounts.contains_key(&id)).unwrap_or(true) {
        return Ok(());
    }
    let account = Account { id: id.clone(), name: "default".into(), created_at: now_millis(), deleted_at: None };
    let cmd = Command::checked(vec![Record::AccountCreated { account }], Precondition::AccountAbsent(id));
    match ledger.append(cmd).await {
        Ok(_) | Err(AppendError::Rejected(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Checks an account name.
fn valid_name(name: &str) -> Result<String, DomainError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(DomainError::invalid("name", format!("must be 1–{MAX_NAME} characters, no control characters")));
    }
    Ok(name.to_owned())
}

/// Creates an account with its first API key.
pub async fn create(ledger: &dyn Ledger, name: &str) -> Result<(Account, IssuedKey), DomainError> {
    let name = valid_name(name)?;
    let at = now_millis();
    let account = Account { id: AccountId::generate_at(at), name, created_at: at, deleted_at: None };
    let issued = new_key(&account.id, at);
    let records =
        vec![Record::AccountCreated { account: account.clone() }, Record::ApiKeyCreated { key: issued.key.clone() }];
    ledger.append(Command::new(records)).await?;
    Ok((account, issued))
}

/// Deletes an account: its webhooks go (their queued deliveries die `deleted`) and its keys
/// stop working. `acct_default` cannot be deleted.
pub async fn delete(ledger: &dyn Ledger, id: &AccountId) -> Result<(), DomainError> {
    if id.as_str() == AccountId::DEFAULT {
        return Err(DomainError::Conflict("acct_default always exists and cannot be deleted".into()));
    }
    let record = Record::AccountDeleted { account_id: id.clone(), at: now_millis() };
    ledger.append(Command::checked(vec![record], Precondition::AccountLive(id.clone()))).await?;
    Ok(())
}

/// Issues another key for a live account.
pub async fn issue_key(ledger: &dyn Ledger, account: &AccountId) -> Result<IssuedKey, DomainError> {
    let issued = new_key(account, now_millis());
    let record = Record::ApiKeyCreated { key: issued.key.clone() };
    ledger.append(Command::checked(vec![record], Precondition::AccountLive(account.clone()))).await?;
    Ok(issued)
}

/// Revokes one of the account's keys (404 for a key of another account, as for none).
pub async fn revoke_key(ledger: &dyn Ledger, account: &AccountId, key_id: &KeyId) -> Result<(), DomainError> {
    let record = Record::ApiKeyRevoked { key_id: key_id.clone(), at: now_millis() };
    let rule = Precondition::KeyLive { key: key_id.clone(), account: account.clone() };
    ledger.append(Command::checked(vec![record], rule)).await?;
    Ok(())
}

/// Live accounts, newest first, after `cursor`, at most `limit`.
pub fn list(ledger: &dyn Ledger, cursor: Option<&AccountId>, limit: usize) -> Vec<Account> {
    let Ok(catalog) = ledger.catalog().read() else { return Vec::new() };
    let mut all: Vec<&Account> = catalog.accounts.values().filter(|a| a.deleted_at.is_none()).collect();
    all.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
    let start = match cursor {
        Some(c) => all.iter().position(|a| &a.id == c).map_or(all.len(), |i| i + 1),
        None => 0,
    };
    all.into_iter().skip(start).take(limit).cloned().collect()
}

/// The account's keys (revoked ones included, marked), newest first.
pub fn keys_of(ledger: &dyn Ledger, account: &AccountId) -> Vec<ApiKey> {
    let Ok(catalog) = ledger.catalog().read() else { return Vec::new() };
    let mut out: Vec<ApiKey> = catalog.keys.values().filter(|k| &k.account_id == account).cloned().collect();
    out.sort_by(|a, b| b.id.cmp(&a.id));
    out
}

/// A live account, or `NotFound`.
pub fn get(ledger: &dyn Ledger, id: &AccountId) -> Result<Account, DomainError> {
    ledger.catalog().read().ok().and_then(|c| c.live_account(id).cloned()).ok_or(DomainError::NotFound)
}

/// Who a bearer token belongs to. `admin_token` is the configured one, if any (else the
/// stored hash counts). `acting_for` is the `Herald-Account` header, honoured for the admin.
pub fn authenticate(
    ledger: &dyn Ledger,
    admin_token: Option<&str>,
    token: &str,
    acting_for: Option<&str>,
) -> Result<Caller, DomainError> {
    let catalog = ledger.catalog().read().map_err(|_| DomainError::Storage("catalog unavailable".into()))?;
    let is_admin = match admin_token {
        Some(configured) => credentials::token_matches(token, &credentials::hash_token(configured)),
        None => catalog.admin_token.as_ref().is_some_and(|stored| credentials::token_matches(token, stored)),
    };
    if is_admin {
        let account = match acting_for {
            None => AccountId::default_account(),
            Some(text) => {
                AccountId::parse_any(text).map_err(|_| DomainError::invalid("Herald-Account", "not an account id"))?
            }
        };
        if catalog.live_account(&account).is_none() {
            return Err(DomainError::NotFound);
        }
        return Ok(Caller::Admin { account });
    }
    let key_id = token
        .strip_prefix(API_KEY_PREFIX)
        .and_then(|rest| rest.split_once('_'))
        .and_then(|(ulid, _)| KeyId::parse(&format!("{}{ulid}", KeyId::PREFIX)).ok())
        .ok_or(DomainError::Unauthenticated)?;
    let key = catalog.keys.get(&key_id).ok_or(DomainError::Unauthenticated)?;
    if key.revoked_at.is_some()
        || !credentials::token_matches(token, &key.hash)
        || catalog.live_account(&key.account_id).is_none()
    {
        return Err(DomainError::Unauthenticated);
    }
    Ok(Caller::Key { account: key.account_id.clone(), key: key_id })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures::{block_on, ledger};

    #[test]
    fn a_key_works_until_it_is_revoked_or_its_account_deleted() {
        let ledger = ledger();
        let (account, issued) = block_on(create(&ledger, "  AstroLeads ")).unwrap();
        assert_eq!(account.name, "AstroLeads");
        let caller = authenticate(&ledger, None, &issued.secret, None).unwrap();
        assert_eq!(caller, Caller::Key { account: account.id.clone(), key: issued.key.id.clone() });
        assert_eq!(
            authenticate(&ledger, None, &format!("{}x", issued.secret), None),
            Err(DomainError::Unauthenticated)
        );

        let second = block_on(issue_key(&ledger, &account.id)).unwrap();
        block_on(revoke_key(&ledger, &account.id, &issued.key.id)).unwrap();
        assert_eq!(authenticate(&ledger, None, &issued.secret, None), Err(DomainError::Unauthenticated));
        assert!(authenticate(&ledger, None, &second.secret, None).is_ok(), "the other key still works");
        assert_eq!(block_on(revoke_key(&ledger, &account.id, &issued.key.id)), Err(DomainError::NotFound), "twice");

        block_on(delete(&ledger, &account.id)).unwrap();
        assert_eq!(authenticate(&ledger, None, &second.secret, None), Err(DomainError::Unauthenticated));
        assert_eq!(get(&ledger, &account.id), Err(DomainError::NotFound));
        assert_eq!(block_on(issue_key(&ledger, &account.id)).err(), Some(DomainError::NotFound));
    }

    #[test]
    fn a_key_of_one_account_cannot_be_revoked_through_another() {
        let ledger = ledger();
        let (a, key_a) = block_on(create(&ledger, "a")).unwrap();
        let (b, _) = block_on(create(&ledger, "b")).unwrap();
        assert_eq!(block_on(revoke_key(&ledger, &b.id, &key_a.key.id)), Err(DomainError::NotFound));
        assert!(authenticate(&ledger, None, &key_a.secret, None).is_ok());
        assert_eq!(keys_of(&ledger, &a.id).len(), 1);
        assert!(keys_of(&ledger, &b.id).iter().all(|k| k.account_id == b.id));
    }

    #[test]
    fn the_default_account_exists_once_and_cannot_be_deleted() {
        let ledger = ledger();
        block_on(ensure_default_account(&ledger)).unwrap();
        let default = AccountId::default_account();
        assert_eq!(list(&ledger, None, 10).iter().filter(|a| a.id == default).count(), 1);
        assert!(matches!(block_on(delete(&ledger, &default)), Err(DomainError::Conflict(_))));
        assert!(get(&ledger, &default).is_ok());
    }

    #[test]
    fn the_admin_token_acts_for_a_live_account_it_names() {
        let ledger = ledger();
        let (account, _) = block_on(create(&ledger, "leadnest")).unwrap();
        let admin = authenticate(&ledger, Some("configured-admin-token"), "configured-admin-token", None).unwrap();
        assert_eq!(admin, Caller::Admin { account: AccountId::default_account() });
        let acting =
            authenticate(&ledger, Some("configured-admin-token"), "configured-admin-token", Some(account.id.as_str()));
        assert_eq!(acting.unwrap(), Caller::Admin { account: account.id.clone() });
        let bad = authenticate(&ledger, Some("configured-admin-token"), "configured-admin-token", Some("acct_nope"));
        assert!(matches!(bad, Err(DomainError::Invalid { .. })));
        block_on(delete(&ledger, &account.id)).unwrap();
        let gone =
            authenticate(&ledger, Some("configured-admin-token"), "configured-admin-token", Some(account.id.as_str()));
        assert_eq!(gone, Err(DomainError::NotFound));
        assert!(matches!(block_on(create(&ledger, "")), Err(DomainError::Invalid { .. })));
    }
}
