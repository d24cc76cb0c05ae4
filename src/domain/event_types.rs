//! The event catalog (`GET /api/v1/event-types`): the names configured in `event_types`,
//! with description and sample payload, merged with the names the account has sent.
//!
//! Invariant: the list is in name order and a name appears once (`configured` and `sent`
//! say where it comes from); the cursor is the last name of the previous page.

use crate::config::EventType;
use crate::domain::error::DomainError;
use crate::domain::listing::Listing;
use crate::model::{is_event_name, AccountId};
use crate::storage::Ledger;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct EventTypeInfo {
    pub name: String,
    pub description: Option<String>,
    pub sample: Option<toml::Table>,
    pub configured: bool,
    pub sent: bool,
}

pub async fn list(
    ledger: &dyn Ledger,
    configured: &[EventType],
    account: &AccountId,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Listing<EventTypeInfo>, DomainError> {
    if cursor.is_some_and(|c| !is_event_name(c)) {
        return Err(crate::domain::listing::bad_cursor());
    }
    let after = |name: &str| cursor.is_none_or(|c| name > c);
    let mut merged: BTreeMap<String, EventTypeInfo> = configured
        .iter()
        .filter(|t| after(&t.name))
        .map(|t| {
            let info = EventTypeInfo {
                name: t.name.clone(),
                description: Some(t.description.clone()).filter(|d| !d.is_empty()),
                sample: t.sample.clone(),
                configured: true,
                sent: false,
            };
            (t.name.clone(), info)
        })
        .collect();
    let sent = ledger.event_names(account, cursor.map(str::to_owned), limit + 1).await?;
    for name in sent {
        merged
            .entry(name.clone())
            .or_insert_with(|| EventTypeInfo { name, description: None, sample: None, configured: false, sent: false })
            .sent = true;
    }
    let mut items: Vec<EventTypeInfo> = merged.into_values().take(limit + 1).collect();
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|i| i.name.clone())
    } else {
        None
    };
    Ok(Listing { items, next_cursor })
}
