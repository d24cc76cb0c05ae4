//! List answers (contract §3): `{"data": [...], "next_cursor": "…" | null}`, newest first,
//! `limit` 1–500 (default 50), `cursor` = the last id of the previous page.

use super::error::ApiError;
use crate::domain::error::DomainError;
use crate::model::time::parse_rfc3339;
use crate::model::Millis;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1–500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// `limit=`: 1–500, default 50.
pub fn limit(value: Option<i64>) -> Result<usize, ApiError> {
    match value {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT as i64).contains(&n) => Ok(n as usize),
        Some(_) => Err(DomainError::invalid("limit", format!("must be 1–{MAX_LIMIT}")).into()),
    }
}

/// An empty `cursor=` is no cursor.
pub fn cursor(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|c| !c.is_empty())
}

/// `since=` / `until=`: RFC 3339 UTC times.
pub fn time(field: &str, value: &Option<String>) -> Result<Option<Millis>, ApiError> {
    match value.as_deref() {
        None | Some("") => Ok(None),
        Some(t) => parse_rfc3339(t).map(Some).ok_or_else(|| {
            DomainError::invalid(field, "must be an RFC 3339 UTC time like 2025-01-20T10:30:00Z").into()
        }),
    }
}

impl PageQuery {
    /// The limit, and the cursor parsed by `parse_cursor` (422 if it does not parse).
    pub fn parse<C>(&self, parse_cursor: impl Fn(&str) -> Option<C>) -> Result<(usize, Option<C>), ApiError> {
        let limit = limit(self.limit)?;
        let cursor = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(c) => {
                Some(parse_cursor(c).ok_or_else(|| DomainError::invalid("cursor", "not a cursor this list gave"))?)
            }
        };
        Ok((limit, cursor))
    }
}

/// One page of a list, newest first.
#[derive(Serialize, ToSchema)]
pub struct Page<V> {
    data: Vec<V>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

impl<V> Page<V> {
    /// A page the domain already cut (see `listing`).
    pub fn new(data: Vec<V>, next_cursor: Option<String>) -> Self {
        Page { data, next_cursor }
    }

    /// `items` holds up to `limit + 1` entries; the extra one only says another page exists.
    pub fn of<T>(mut items: Vec<T>, limit: usize, id: impl Fn(&T) -> String, view: impl Fn(&T) -> V) -> Self {
        let more = items.len() > limit;
        items.truncate(limit);
        let next_cursor = if more { items.last().map(&id) } else { None };
        Page { data: items.iter().map(view).collect(), next_cursor }
    }
}
