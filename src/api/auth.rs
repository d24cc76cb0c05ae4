//! Authentication as an extractor: `Authorization: Bearer <token>` becomes a [`Caller`], or
//! 401 (no or unknown token), 503 (still recovering). `Herald-Account` lets the admin token
//! act for an account.

use super::error::ApiError;
use crate::domain::accounts::{self, Caller};
use crate::node::{Node, NodeHandle};
use actix_web::dev::Payload;
use actix_web::{http::header, web, FromRequest, HttpRequest};
use std::future::{ready, Ready};
use std::sync::Arc;

/// The authenticated caller and the node it talks to.
pub struct Auth {
    pub caller: Caller,
    pub node: Arc<Node>,
}

impl Auth {
    /// For admin-only routes: 403 for an API key.
    pub fn admin(&self) -> Result<(), ApiError> {
        if self.caller.is_admin() {
            Ok(())
        } else {
            Err(crate::domain::error::DomainError::Forbidden.into())
        }
    }
}

fn authenticate(req: &HttpRequest) -> Result<Auth, ApiError> {
    let shared = req.app_data::<web::Data<NodeHandle>>().ok_or_else(|| ApiError::internal("no state"))?;
    let engine = shared.node().cloned().ok_or_else(ApiError::not_ready)?;
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(crate::domain::error::DomainError::Unauthenticated)?;
    let acting_for = match req.headers().get("Herald-Account") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| crate::domain::error::DomainError::invalid("Herald-Account", "not an account id"))?,
        ),
    };
    let caller = accounts::authenticate(&*engine.ledger, engine.config.admin_token.as_deref(), token, acting_for)?;
    Ok(Auth { caller, node: engine })
}

impl FromRequest for Auth {
    type Error = ApiError;
    type Future = Ready<Result<Auth, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}
