//! List answers (SPEC §3): `{"data": [...], "next_cursor": "…" | null}`, newest first,
//! `limit` 1–500 (default 50), `cursor` = the last id of the previous page.

use super::error::ApiError;
use crate::error::DomainError;
use serde::{Deserialize, Serialize};

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    limit: Option<i64>,
    cursor: Option<String>,
}

impl PageQuery {
    /// The limit, and the cursor parsed by `parse_cursor` (422 if it does not parse).
    pub fn parse<C>(&self, parse_cursor: impl Fn(&str) -> Option<C>) -> Result<(usize, Option<C>), ApiError> {
        let limit = match self.limit {
            None => DEFAULT_LIMIT,
            Some(n) if (1..=MAX_LIMIT as i64).contains(&n) => n as usize,
            Some(_) => return Err(DomainError::invalid("limit", format!("must be 1–{MAX_LIMIT}")).into()),
        };
        let cursor = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(c) => {
                Some(parse_cursor(c).ok_or_else(|| DomainError::invalid("cursor", "not a cursor this list gave"))?)
            }
        };
        Ok((limit, cursor))
    }
}

#[derive(Serialize)]
pub struct Page<V> {
    data: Vec<V>,
    next_cursor: Option<String>,
}

impl<V> Page<V> {
    /// `items` holds up to `limit + 1` entries; the extra one only says another page exists.
    pub fn of<T>(mut items: Vec<T>, limit: usize, id: impl Fn(&T) -> String, view: impl Fn(&T) -> V) -> Self {
        let more = items.len() > limit;
        items.truncate(limit);
        let next_cursor = if more { items.last().map(&id) } else { None };
        Page { data: items.iter().map(view).collect(), next_cursor }
    }
}
