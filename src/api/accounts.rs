//! `/api/v1/accounts` (admin token only): accounts and their API keys.

use super::auth::Auth;
use super::error::ApiError;
use super::error::{AdminOnly, BadBody, BadQuery, Conflicting, Missing, Unauthenticated};
use super::page::{Page, PageQuery};
use crate::domain::accounts;
use crate::model::time::rfc3339;
use crate::model::{Account, AccountId, ApiKey, KeyId};
use actix_web::{delete, get, post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    #[schema(example = "AstroLeads")]
    name: String,
}

#[derive(Serialize, ToSchema)]
pub struct AccountView {
    id: String,
    name: String,
    created_at: String,
}

impl From<&Account> for AccountView {
    fn from(a: &Account) -> Self {
        Self { id: a.id.to_string(), name: a.name.clone(), created_at: rfc3339(a.created_at) }
    }
}

/// An API key, without its secret.
#[derive(Serialize, ToSchema)]
pub struct KeyView {
    id: String,
    prefix: String,
    created_at: String,
    revoked_at: Option<String>,
}

impl From<&ApiKey> for KeyView {
    fn from(k: &ApiKey) -> Self {
        Self {
            id: k.id.to_string(),
            prefix: k.prefix.clone(),
            created_at: rfc3339(k.created_at),
            revoked_at: k.revoked_at.map(rfc3339),
        }
    }
}

fn account_id(text: &str) -> Result<AccountId, ApiError> {
    AccountId::parse_any(text).map_err(|_| ApiError::not_found())
}

/// A new account and its first API key.
#[derive(Serialize, ToSchema)]
pub struct AccountCreated {
    #[serde(flatten)]
    account: AccountView,
    /// The key's secret, shown only here.
    api_key: String,
    key_id: String,
}

/// A new API key.
#[derive(Serialize, ToSchema)]
pub struct KeyIssued {
    #[serde(flatten)]
    key: KeyView,
    /// The key's secret, shown only here.
    api_key: String,
}

/// Create an account (admin token only); the answer carries its first API key.
#[utoipa::path(operation_id = "accounts_create", tag = "accounts", security(("bearer" = [])),
    responses((status = 201, description = "Created", body = AccountCreated), Unauthenticated, AdminOnly, BadBody, Conflicting))]
#[post("/api/v1/accounts")]
pub async fn create(auth: Auth, body: web::Json<CreateAccount>) -> Result<HttpResponse, ApiError> {
    auth.admin()?;
    let (account, issued) = accounts::create(&*auth.node.ledger, &body.name).await?;
    Ok(HttpResponse::Created().json(AccountCreated {
        account: AccountView::from(&account),
        api_key: issued.secret,
        key_id: issued.key.id.to_string(),
    }))
}

/// Every account (admin token only).
#[utoipa::path(operation_id = "accounts_list", tag = "accounts", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, description = "A page of accounts", body = Page<AccountView>), Unauthenticated, AdminOnly, BadQuery))]
#[get("/api/v1/accounts")]
pub async fn list(auth: Auth, query: web::Query<PageQuery>) -> Result<HttpResponse, ApiError> {
    auth.admin()?;
    let (limit, cursor) = query.parse(|c| AccountId::parse_any(c).ok())?;
    let items = accounts::list(&*auth.node.ledger, cursor.as_ref(), limit + 1);
    Ok(HttpResponse::Ok().json(Page::of(items, limit, |a| a.id.to_string(), |a| AccountView::from(a))))
}

/// Delete an account with its keys and webhooks (admin token only).
#[utoipa::path(operation_id = "accounts_remove", tag = "accounts", security(("bearer" = [])), params(("id" = String, Path, description = "Account id")),
    responses((status = 204, description = "Deleted"), Unauthenticated, AdminOnly, Missing, Conflicting))]
#[delete("/api/v1/accounts/{id}")]
pub async fn remove(auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    auth.admin()?;
    accounts::delete(&*auth.node.ledger, &account_id(&id)?).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Issue another API key for an account (admin token only).
#[utoipa::path(operation_id = "accounts_issue_key", tag = "accounts", security(("bearer" = [])), params(("id" = String, Path, description = "Account id")),
    responses((status = 201, description = "Issued", body = KeyIssued), Unauthenticated, AdminOnly, Missing, Conflicting))]
#[post("/api/v1/accounts/{id}/keys")]
pub async fn issue_key(auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    auth.admin()?;
    let issued = accounts::issue_key(&*auth.node.ledger, &account_id(&id)?).await?;
    Ok(HttpResponse::Created().json(KeyIssued { key: KeyView::from(&issued.key), api_key: issued.secret }))
}

/// An account's API keys, revoked ones included (admin token only).
#[utoipa::path(operation_id = "accounts_list_keys", tag = "accounts", security(("bearer" = [])),
    params(("id" = String, Path, description = "Account id"), PageQuery),
    responses((status = 200, description = "A page of keys", body = Page<KeyView>), Unauthenticated, AdminOnly, Missing, BadQuery))]
#[get("/api/v1/accounts/{id}/keys")]
pub async fn list_keys(
    auth: Auth,
    id: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    auth.admin()?;
    let account = account_id(&id)?;
    accounts::get(&*auth.node.ledger, &account)?;
    let (limit, cursor) = query.parse(|c| KeyId::parse(c).ok())?;
    let keys: Vec<ApiKey> = accounts::keys_of(&*auth.node.ledger, &account)
        .into_iter()
        .filter(|k| cursor.as_ref().is_none_or(|c| &k.id < c))
        .take(limit + 1)
        .collect();
    Ok(HttpResponse::Ok().json(Page::of(keys, limit, |k| k.id.to_string(), |k| KeyView::from(k))))
}

/// Revoke an API key: every route answers it 401 from now on (admin token only).
#[utoipa::path(operation_id = "accounts_revoke_key", tag = "accounts", security(("bearer" = [])),
    params(("id" = String, Path, description = "Account id"), ("key_id" = String, Path, description = "Key id")),
    responses((status = 204, description = "Revoked"), Unauthenticated, AdminOnly, Missing))]
#[delete("/api/v1/accounts/{id}/keys/{key_id}")]
pub async fn revoke_key(auth: Auth, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    auth.admin()?;
    let (id, key_id) = path.into_inner();
    let key_id = KeyId::parse(&key_id).map_err(|_| ApiError::not_found())?;
    accounts::revoke_key(&*auth.node.ledger, &account_id(&id)?, &key_id).await?;
    Ok(HttpResponse::NoContent().finish())
}
