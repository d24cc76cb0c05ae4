//! `/api/v1/accounts` (admin token only): accounts and their API keys.

use super::auth::Auth;
use super::error::ApiError;
use super::page::{Page, PageQuery};
use crate::accounts;
use crate::model::{Account, AccountId, ApiKey, KeyId};
use crate::time::rfc3339;
use actix_web::{delete, get, post, web, HttpResponse};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    name: String,
}

#[derive(Serialize)]
struct AccountView {
    id: String,
    name: String,
    created_at: String,
}

impl From<&Account> for AccountView {
    fn from(a: &Account) -> Self {
        Self { id: a.id.to_string(), name: a.name.clone(), created_at: rfc3339(a.created_at) }
    }
}

#[derive(Serialize)]
struct KeyView {
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

#[post("/api/v1/accounts")]
pub async fn create(auth: Auth, body: web::Json<CreateAccount>) -> Result<HttpResponse, ApiError> {
    auth.admin()?;
    let (account, issued) = accounts::create(&auth.engine.log, &body.name).await?;
    Ok(HttpResponse::Created().json(serde_json::json!({
        "id": account.id.to_string(),
        "name": account.name,
        "created_at": rfc3339(account.created_at),
        "api_key": issued.secret,
        "key_id": issued.key.id.to_string(),
    })))
}

#[get("/api/v1/accounts")]
pub async fn list(auth: Auth, query: web::Query<PageQuery>) -> Result<HttpResponse, ApiError> {
    auth.admin()?;
    let (limit, cursor) = query.parse(|c| AccountId::parse_any(c).ok())?;
    let items = accounts::list(&auth.engine.log, cursor.as_ref(), limit + 1);
    Ok(HttpResponse::Ok().json(Page::of(items, limit, |a| a.id.to_string(), |a| AccountView::from(a))))
}

#[delete("/api/v1/accounts/{id}")]
pub async fn remove(auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    auth.admin()?;
    accounts::delete(&auth.engine.log, &account_id(&id)?).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[post("/api/v1/accounts/{id}/keys")]
pub async fn issue_key(auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    auth.admin()?;
    let issued = accounts::issue_key(&auth.engine.log, &account_id(&id)?).await?;
    let view = KeyView::from(&issued.key);
    Ok(HttpResponse::Created().json(serde_json::json!({
        "id": view.id, "prefix": view.prefix, "created_at": view.created_at, "api_key": issued.secret,
    })))
}

#[get("/api/v1/accounts/{id}/keys")]
pub async fn list_keys(
    auth: Auth,
    id: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    auth.admin()?;
    let account = account_id(&id)?;
    accounts::get(&auth.engine.log, &account)?;
    let (limit, cursor) = query.parse(|c| KeyId::parse(c).ok())?;
    let keys: Vec<ApiKey> = accounts::keys_of(&auth.engine.log, &account)
        .into_iter()
        .filter(|k| cursor.as_ref().is_none_or(|c| &k.id < c))
        .take(limit + 1)
        .collect();
    Ok(HttpResponse::Ok().json(Page::of(keys, limit, |k| k.id.to_string(), |k| KeyView::from(k))))
}

#[delete("/api/v1/accounts/{id}/keys/{key_id}")]
pub async fn revoke_key(auth: Auth, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    auth.admin()?;
    let (id, key_id) = path.into_inner();
    let key_id = KeyId::parse(&key_id).map_err(|_| ApiError::not_found())?;
    accounts::revoke_key(&auth.engine.log, &account_id(&id)?, &key_id).await?;
    Ok(HttpResponse::NoContent().finish())
}
