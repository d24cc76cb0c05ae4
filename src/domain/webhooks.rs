//! Webhooks (domain): validation of what a caller asks for, the per-account limit, secrets
//! and their rotation, and the records that create, change and delete a webhook.
//!
//! Invariants:
//! - A webhook belongs to one account; another account's webhook is `NotFound`, exactly
//!   like a missing one.
//! - Every change appends a record carrying the whole webhook under a precondition storage
//!   checks atomically with the append (the account's limit cannot be raced past).
//! - Custom headers never override what Herald or HTTP itself sets ([`header_rules`]).
//! - A webhook stored before a rule tightened keeps working (the wire leaves out what the
//!   rules now refuse), is reported ([`violations`]), and must satisfy every rule on its next
//!   edit.
//! - A masked value ([`header_rules::MASK`]) sent back in an edit keeps the stored value.
//! - Secrets and header values are sealed ([`crate::security::seal`]) before the record that carries
//!   them is made: the log never sees them in clear.

use crate::domain::error::DomainError;
use crate::model::*;
use crate::security::header_rules::{self, MASK};
use crate::security::safety::TargetPolicy;
use crate::security::seal::{Keyring, SealedText};
use crate::storage::{Command, Ledger, Precondition, Record, StatusRow};
use rand::RngCore;

pub const MAX_NAME: usize = 100;
pub const MAX_DESCRIPTION: usize = 1000;
pub const MAX_EVENTS: usize = 100;
pub const MAX_HEADERS: usize = 20;
pub const MAX_HEADER_BYTES: usize = 1024;
pub const MAX_IN_FLIGHT: u32 = 256;
pub const MAX_RATE_LIMIT: u32 = 100_000;
pub use crate::security::header_rules::DEFAULT_SIGNATURE_HEADER;
pub const DEFAULT_SIGNATURE_PREFIX: &str = "sha256=";
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 16;

/// What a caller may set; `None` leaves the current value (or the default, on create).
#[derive(Debug, Clone, Default)]
pub struct WebhookInput {
    pub name: Option<String>,
    pub description: Option<String>,
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub secret: Option<String>,
    pub is_active: Option<bool>,
    pub max_retries: Option<u32>,
    pub timeout_secs: Option<u64>,
    pub method: Option<Method>,
    pub headers: Option<Vec<(String, String)>>,
    pub signature_header: Option<String>,
    pub signature_prefix: Option<String>,
    pub ordering: Option<DeliveryOrder>,
    pub max_in_flight: Option<u32>,
    /// `Some(None)` removes the limit.
    pub rate_limit: Option<Option<u32>>,
    /// `Some(None)` removes the filter.
    pub filter: Option<Option<serde_json::Value>>,
    pub body_format: Option<BodyFormat>,
}

/// Defaults for new webhooks and the rules for targets, from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub policy: TargetPolicy,
    /// Seals secrets and header values before they are stored.
    pub keyring: std::sync::Arc<crate::security::seal::Keyring>,
    pub default_max_retries: u32,
    pub default_timeout_ms: u64,
    pub max_per_account: u32,
    pub secret_overlap_ms: u64,
}

/// `whsec_` + base64 of 24 random bytes.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    use base64::Engine;
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn text(field: &str, value: &str, max: usize) -> Result<String, DomainError> {
    if value.chars().count() > max || value.chars().any(|c| c.is_control() && c != '\n') {
        return Err(DomainError::invalid(
            field,
            format!("must be at most {max} characters, without control characters"),
        ));
    }
    Ok(value.trim().to_owned())
}

fn events(list: &[String]) -> Result<Vec<String>, DomainError> {
    if list.is_empty() || list.len() > MAX_EVENTS {
        return Err(DomainError::invalid("events", format!("must hold 1–{MAX_EVENTS} entries")));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for e in list {
        let ok = e == "*" || is_event_name(e) || e.strip_suffix(".*").is_some_and(is_event_name);
        if !ok {
            let shown: String = e.chars().take(60).collect();
            return Err(DomainError::invalid("events", format!("`{shown}` is not an event name, `family.*` or `*`")));
        }
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    Ok(out)
}

fn headers(list: &[(String, String)], signature_header: &str) -> Result<Vec<(String, String)>, DomainError> {
    if list.len() > MAX_HEADERS {
        return Err(DomainError::invalid("headers", format!("at most {MAX_HEADERS} headers")));
    }
    let mut out: Vec<(String, String)> = Vec::with_capacity(list.len());
    for (name, value) in list {
        if let Some(problem) = header_rules::custom_header_problem(name, signature_header) {
            return Err(DomainError::invalid("headers", problem));
        }
        if actix_web::http::header::HeaderValue::from_str(value).is_err() {
            return Err(DomainError::invalid("headers", format!("the value of {name} is not a valid header value")));
        }
        if name.len() + value.len() > MAX_HEADER_BYTES {
            return Err(DomainError::invalid(
                "headers",
                format!("{name}: name and value must fit in {MAX_HEADER_BYTES} bytes"),
            ));
        }
        if out.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            return Err(DomainError::invalid("headers", format!("{name} is given twice")));
        }
        out.push((name.clone(), value.clone()));
    }
    Ok(out)
}

/// The headers an edit asks for, with every masked credential value the caller sent back
/// replaced by the value stored under that name (what it read is what it keeps).
fn unmasked(
    list: Vec<(String, String)>,
    stored: &[(String, SealedText)],
    keyring: &Keyring,
) -> Result<Vec<(String, String)>, DomainError> {
    list.into_iter()
        .map(|(name, value)| {
            let kept = (value == MASK && header_rules::is_secret_header(&name))
                .then(|| stored.iter().find(|(n, _)| n.eq_ignore_ascii_case(&name)))
                .flatten();
            match kept {
                Some((_, v)) => Ok((name, keyring.open(v).map_err(|e| DomainError::Storage(e.to_string()))?)),
                None => Ok((name, value)),
            }
        })
        .collect()
}

/// What in a stored webhook the current rules refuse, as (field, why): webhooks stored
/// before a rule tightened. They keep working (the wire leaves such headers out and signs
/// under the default header), are reported at start and by `herald verify`, and an edit
/// must fix them.
pub fn violations(w: &Webhook, policy: &TargetPolicy) -> Vec<(&'static str, String)> {
    let mut found = Vec::new();
    if let Err(e) = policy.check_url(&w.url) {
        found.push(("url", format!("{}: {e}", header_rules::masked_url(&w.url))));
    }
    if let Some(p) = header_rules::signature_header_problem(&w.signature_header) {
        found.push(("signature_header", format!("{}: {p}", w.signature_header)));
    }
    for (name, _) in &w.headers {
        if let Some(p) = header_rules::custom_header_problem(name, &w.signature_header) {
            found.push(("headers", p));
        }
    }
    found
}

fn secret(value: &str) -> Result<String, DomainError> {
    let n = value.chars().count();
    if !(16..=256).contains(&n) || value.chars().any(char::is_control) {
        return Err(DomainError::invalid("secret", "must be 16–256 characters, without control characters"));
    }
    // Receivers base64-decode what follows `whsec_` for the Standard Webhooks key and use
    // any other secret as it is; a `whsec_` secret that is not canonical base64 would be
    // read one way by Herald and another by lenient decoders.
    if value.starts_with("whsec_") && !crate::security::credentials::is_standard_form(value) {
        return Err(DomainError::invalid(
            "secret",
            "a secret starting with whsec_ must be standard base64 after it (with its = padding); \
             any other secret is used as its UTF-8 bytes",
        ));
    }
    Ok(value.to_owned())
}

/// Applies `input` over `base` (a new webhook's defaults, or the current one) and checks
/// every field. The URL's reachability is checked separately ([`TargetPolicy::check_target`]).
fn merge(mut w: Webhook, input: WebhookInput, settings: &Settings, at: Millis) -> Result<Webhook, DomainError> {
    if let Some(v) = input.name {
        w.name = text("name", &v, MAX_NAME)?;
    }
    if let Some(v) = input.description {
        w.description = text("description", &v, MAX_DESCRIPTION)?;
    }
    if let Some(v) = input.url {
        // The URL as answers show it (query values masked), sent back unchanged: kept.
        if v != w.url && !(v == header_rules::masked_url(&w.url) && v.contains(MASK)) {
            w.url = settings.policy.check_url(&v).map_err(|e| DomainError::invalid("url", e.0))?.to_string();
        }
    }
    if let Some(v) = input.events {
        w.events = events(&v)?;
    }
    if let Some(v) = input.secret {
        w.secret_replace(settings.keyring.seal(&secret(&v)?), at);
    }
    if let Some(v) = input.is_active {
        w.is_active = v;
    }
    if let Some(v) = input.max_retries {
        if v > 20 {
            return Err(DomainError::invalid("max_retries", "must be 0–20"));
        }
        w.max_retries = v;
    }
    if let Some(v) = input.timeout_secs {
        if !(1..=120).contains(&v) {
            return Err(DomainError::invalid("timeout", "must be 1–120 seconds"));
        }
        w.timeout_ms = v * 1000;
    }
    if let Some(v) = input.method {
        w.method = v;
    }
    if let Some(v) = input.signature_header {
        if let Some(problem) = header_rules::signature_header_problem(&v) {
            return Err(DomainError::invalid("signature_header", problem));
        }
        w.signature_header = v;
    }
    if let Some(v) = input.headers {
        let clear = headers(&unmasked(v, &w.headers, &settings.keyring)?, &w.signature_header)?;
        w.headers = clear.into_iter().map(|(name, value)| (name, settings.keyring.seal(&value))).collect();
    }
    // Whatever the edit left as it was must pass today's rules too (a webhook stored
    // before a rule tightened is fixed on its next edit).
    if let Some(problem) = header_rules::signature_header_problem(&w.signature_header) {
        return Err(DomainError::invalid("signature_header", format!("{problem} (stored before this rule; fix it)")));
    }
    for (name, _) in &w.headers {
        if let Some(problem) = header_rules::custom_header_problem(name, &w.signature_header) {
            return Err(DomainError::invalid("headers", format!("{problem} (stored before this rule; fix it)")));
        }
    }
    if let Some(v) = input.signature_prefix {
        if v != DEFAULT_SIGNATURE_PREFIX && !v.is_empty() {
            return Err(DomainError::invalid("signature_prefix", "must be \"sha256=\" or \"\""));
        }
        w.signature_prefix = v;
    }
    if let Some(v) = input.ordering {
        w.ordering = v;
    }
    if let Some(v) = input.filter {
        w.filter = match v {
            None => None,
            Some(f) => Some(filter::Filter::parse(&f).map_err(|e| DomainError::invalid("filter", e.0))?),
        };
    }
    if let Some(v) = input.body_format {
        w.body_format = v;
    }
    if let Some(v) = input.max_in_flight {
        if !(1..=MAX_IN_FLIGHT).contains(&v) {
            return Err(DomainError::invalid("max_in_flight", format!("must be 1–{MAX_IN_FLIGHT}")));
        }
        w.max_in_flight = v;
    }
    if let Some(v) = input.rate_limit {
        if v.is_some_and(|r| !(1..=MAX_RATE_LIMIT).contains(&r)) {
            return Err(DomainError::invalid(
                "rate_limit",
                format!("must be null or 1–{MAX_RATE_LIMIT} deliveries per second"),
            ));
        }
        w.rate_limit = v;
    }
    w.updated_at = at;
    Ok(w)
}

impl Webhook {
    /// Replaces every secret with `value` (a caller-chosen secret, set on create or edit).
    fn secret_replace(&mut self, value: SealedText, at: Millis) {
        self.secrets = vec![Secret { value, created_at: at, expires_at: None }];
    }
}

/// Precondition: the webhook exists, is the account's, is not deleted, and — if `seen` is
/// given — is still the version the change was computed from (two concurrent edits cannot
/// silently undo each other: the later one gets 409 and retries).
fn owned(account: &AccountId, id: &WebhookId, seen: Option<u64>) -> Precondition {
    Precondition::WebhookOwned { webhook: id.clone(), account: account.clone(), version: seen }
}

/// The version (defining record) of the account's webhook as the catalog has it.
fn version(ledger: &dyn Ledger, id: &WebhookId) -> Option<u64> {
    ledger.catalog().read().ok().and_then(|c| c.webhooks.get(id).map(|r| r.seq))
}

/// The account's webhook and its status, or `NotFound`.
pub fn get(ledger: &dyn Ledger, account: &AccountId, id: &WebhookId) -> Result<(Webhook, StatusRow), DomainError> {
    let catalog = ledger.catalog().read().map_err(|_| DomainError::Storage("catalog unavailable".into()))?;
    let row = catalog.live_webhook(account, id).ok_or(DomainError::NotFound)?;
    Ok((Webhook::clone(&row.webhook), catalog.statuses.get(id).map(|s| StatusRow::clone(s)).unwrap_or_default()))
}

/// The account's webhooks, newest first, after `cursor`, at most `limit`.
pub fn list(
    ledger: &dyn Ledger,
    account: &AccountId,
    cursor: Option<&WebhookId>,
    limit: usize,
) -> Vec<(Webhook, StatusRow)> {
    let Ok(catalog) = ledger.catalog().read() else { return Vec::new() };
    let mut all: Vec<&Webhook> = catalog.webhooks_of(account).collect();
    all.sort_by(|a, b| b.id.cmp(&a.id));
    all.into_iter()
        .filter(|w| cursor.is_none_or(|c| &w.id < c))
        .take(limit)
        .map(|w| (w.clone(), catalog.statuses.get(&w.id).map(|s| StatusRow::clone(s)).unwrap_or_default()))
        .collect()
}

/// Creates a webhook; `url` and `events` are required.
pub async fn create(
    ledger: &dyn Ledger,
    settings: &Settings,
    account: &AccountId,
    input: WebhookInput,
) -> Result<Webhook, DomainError> {
    if input.url.is_none() {
        return Err(DomainError::invalid("url", "is required"));
    }
    if input.events.is_none() {
        return Err(DomainError::invalid("events", "is required"));
    }
    let at = now_millis();
    let base = Webhook {
        id: WebhookId::generate_at(at),
        account_id: account.clone(),
        name: String::new(),
        description: String::new(),
        url: String::new(),
        events: Vec::new(),
        secrets: vec![Secret { value: settings.keyring.seal(&generate_secret()), created_at: at, expires_at: None }],
        is_active: true,
        max_retries: settings.default_max_retries,
        timeout_ms: settings.default_timeout_ms,
        method: Method::Post,
        headers: Vec::new(),
        signature_header: DEFAULT_SIGNATURE_HEADER.into(),
        signature_prefix: DEFAULT_SIGNATURE_PREFIX.into(),
        ordering: DeliveryOrder::None,
        max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        rate_limit: None,
        created_at: at,
        updated_at: at,
        filter: None,
        body_format: BodyFormat::Original,
    };
    let target = input.url.clone().unwrap_or_default();
    let webhook = merge(base, input, settings, at)?;
    settings.policy.check_target(&target).await.map_err(|e| DomainError::invalid("url", e.0))?;
    let room = Precondition::WebhookRoom { account: account.clone(), max: settings.max_per_account };
    ledger.append(Command::checked(vec![Record::WebhookCreated { webhook: webhook.clone() }], room)).await?;
    Ok(webhook)
}

/// Edits a webhook (PATCH semantics).
pub async fn update(
    ledger: &dyn Ledger,
    settings: &Settings,
    account: &AccountId,
    id: &WebhookId,
    input: WebhookInput,
) -> Result<Webhook, DomainError> {
    let seen = version(ledger, id);
    let (current, status) = get(ledger, account, id)?;
    let target = input.url.clone();
    let enable = input.is_active == Some(true);
    let at = now_millis();
    let webhook = merge(current, input, settings, at)?;
    if let Some(t) = target {
        settings.policy.check_target(&t).await.map_err(|e| DomainError::invalid("url", e.0))?;
    }
    let mut records = vec![Record::WebhookUpdated { webhook: webhook.clone() }];
    if enable && status.status.state == HealthState::Disabled {
        // Enabled again by hand: a fresh start, breaker closed, failure run forgotten.
        records.push(Record::WebhookStatusSet { webhook_id: id.clone(), status: WebhookStatus::default(), at });
    }
    ledger.append(Command::checked(records, owned(account, id, seen))).await?;
    Ok(webhook)
}

/// What `POST /webhooks/{id}/test` sends when the caller names no event.
pub const TEST_EVENT: &str = "webhook.test";

/// What a test send of `event` to the account's webhook carries: the event's name (default
/// [`TEST_EVENT`]) and its configured `sample`, else `{"test":true}`. The delivery engine
/// sends it, now, whatever the breaker says, and records nothing.
pub fn test_sample(
    ledger: &dyn Ledger,
    event_types: &[crate::config::EventType],
    account: &AccountId,
    id: &WebhookId,
    event: Option<String>,
) -> Result<(String, Vec<u8>), DomainError> {
    get(ledger, account, id)?;
    let event = event.unwrap_or_else(|| TEST_EVENT.to_owned());
    if !is_event_name(&event) {
        return Err(DomainError::invalid("event", "must be lowercase words separated by . or _"));
    }
    let sample = event_types.iter().find(|t| t.name == event).and_then(|t| t.sample.as_ref());
    let data = match sample {
        Some(table) => serde_json::to_vec(table).map_err(|e| DomainError::Storage(e.to_string()))?,
        None => br#"{"test":true}"#.to_vec(),
    };
    Ok((event, data))
}

/// Whether a test send's sample would pass the webhook's content filter, sent `at`
/// (`None`: the webhook has none). A test send goes out either way.
pub fn sample_passes(webhook: &Webhook, event: &str, data: &[u8], at: Millis) -> Option<bool> {
    let f = webhook.filter.as_ref()?;
    let data = filter::Document::new(std::str::from_utf8(data).unwrap_or("{}"));
    let timestamp = crate::model::time::rfc3339(at);
    Some(f.matches(&filter::Envelope { event, timestamp: &timestamp, data: &data }))
}

/// Deletes a webhook; its queued deliveries die with reason `deleted`.
pub async fn delete(ledger: &dyn Ledger, account: &AccountId, id: &WebhookId) -> Result<(), DomainError> {
    let record = Record::WebhookDeleted { webhook_id: id.clone(), at: now_millis() };
    ledger.append(Command::checked(vec![record], owned(account, id, None))).await?;
    Ok(())
}

/// Issues a new secret; the previous newest keeps signing Standard Webhooks signatures for
/// `secret_overlap`. Secrets already expired are dropped.
pub async fn rotate_secret(
    ledger: &dyn Ledger,
    settings: &Settings,
    account: &AccountId,
    id: &WebhookId,
) -> Result<Webhook, DomainError> {
    let seen = version(ledger, id);
    let (mut webhook, _) = get(ledger, account, id)?;
    let at = now_millis();
    webhook.secrets.retain(|s| s.expires_at.is_none_or(|e| e > at));
    for s in &mut webhook.secrets {
        if s.expires_at.is_none() {
            s.expires_at = Some(at + settings.secret_overlap_ms);
        }
    }
    webhook
        .secrets
        .insert(0, Secret { value: settings.keyring.seal(&generate_secret()), created_at: at, expires_at: None });
    webhook.updated_at = at;
    ledger
        .append(Command::checked(vec![Record::SecretRotated { webhook: webhook.clone() }], owned(account, id, seen)))
        .await?;
    Ok(webhook)
}

/// Whether a stored webhook holds a secret or header value in clear (written by a Herald
/// from before sealing; `herald seal` rewrites such a log).
pub fn holds_clear_values(w: &Webhook) -> bool {
    w.secrets.iter().any(|s| !s.value.is_sealed()) || w.headers.iter().any(|(_, v)| !v.is_sealed())
}

/// What `herald seal` does to one record of an older log: every secret and custom header
/// value a webhook record carries, and the custom header values an attempt recorded, sealed
/// with `seal` (opened first with `open` if already sealed). `None` when there is nothing to
/// seal in it.
pub fn sealed_record(record: &Record, open: &Keyring, seal: &Keyring) -> Result<Option<Record>, String> {
    let reseal = |v: &SealedText| open.open(v).map(|clear| seal.seal(&clear)).map_err(|e| e.to_string());
    let webhook = |w: &Webhook| -> Result<Webhook, String> {
        let mut w = w.clone();
        for s in &mut w.secrets {
            s.value = reseal(&s.value)?;
        }
        for (_, v) in &mut w.headers {
            *v = reseal(v)?;
        }
        Ok(w)
    };
    Ok(Some(match record {
        Record::WebhookCreated { webhook: w } => Record::WebhookCreated { webhook: webhook(w)? },
        Record::WebhookUpdated { webhook: w } => Record::WebhookUpdated { webhook: webhook(w)? },
        Record::SecretRotated { webhook: w } => Record::SecretRotated { webhook: webhook(w)? },
        Record::AttemptFinished(a) => {
            let mut a = a.clone();
            let mut changed = false;
            for (name, value) in &mut a.outcome.request_headers {
                // Herald's own headers hold nothing secret; a credential was never recorded.
                if header_rules::is_herald_header(name) || value == MASK {
                    continue;
                }
                let clear = open.open_str(value).map_err(|e| e.to_string())?;
                *value = seal.seal(&clear).stored().to_owned();
                changed = true;
            }
            if !changed {
                return Ok(None);
            }
            Record::AttemptFinished(a)
        }
        _ => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures::{block_on, ledger, settings};

    fn input(url: &str, events: &[&str]) -> WebhookInput {
        WebhookInput {
            url: Some(url.into()),
            events: Some(events.iter().map(|e| e.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn an_account_has_at_most_its_limit_of_webhooks_and_a_deleted_one_frees_its_place() {
        let ledger = ledger();
        let account = AccountId::default_account();
        let settings = settings(2);
        let first = block_on(create(&ledger, &settings, &account, input("http://127.0.0.1:9/a", &["lead.*"]))).unwrap();
        block_on(create(&ledger, &settings, &account, input("http://127.0.0.1:9/b", &["new_lead"]))).unwrap();
        let third = block_on(create(&ledger, &settings, &account, input("http://127.0.0.1:9/c", &["new_lead"])));
        assert!(matches!(third, Err(DomainError::Limit(_))), "{third:?}");
        block_on(delete(&ledger, &account, &first.id)).unwrap();
        assert!(block_on(create(&ledger, &settings, &account, input("http://127.0.0.1:9/c", &["new_lead"]))).is_ok());
        assert_eq!(list(&ledger, &account, None, 10).len(), 2);
    }

    #[test]
    fn a_webhook_is_reached_only_through_its_own_account() {
        let ledger = ledger();
        let settings = settings(10);
        let owner = AccountId::default_account();
        let (other, _) = block_on(crate::domain::accounts::create(&ledger, "other")).unwrap();
        let w = block_on(create(&ledger, &settings, &owner, input("http://127.0.0.1:9/a", &["lead.*"]))).unwrap();
        assert_eq!(get(&ledger, &other.id, &w.id).err(), Some(DomainError::NotFound));
        assert_eq!(block_on(delete(&ledger, &other.id, &w.id)), Err(DomainError::NotFound));
        let edit = WebhookInput { name: Some("mine now".into()), ..Default::default() };
        assert_eq!(block_on(update(&ledger, &settings, &other.id, &w.id, edit)).err(), Some(DomainError::NotFound));
        assert_eq!(get(&ledger, &owner, &w.id).unwrap().0.name, w.name, "unchanged");
        assert!(test_sample(&ledger, &[], &other.id, &w.id, None).is_err());
        assert_eq!(
            test_sample(&ledger, &[], &owner, &w.id, None).unwrap(),
            (TEST_EVENT.to_owned(), br#"{"test":true}"#.to_vec())
        );
    }

    #[test]
    fn required_fields_and_bad_values_are_refused_before_anything_is_written() {
        let ledger = ledger();
        let settings = settings(10);
        let account = AccountId::default_account();
        let no_url = WebhookInput { events: Some(vec!["lead.*".into()]), ..Default::default() };
        assert!(matches!(block_on(create(&ledger, &settings, &account, no_url)), Err(DomainError::Invalid { .. })));
        let mut bad_secret = input("http://127.0.0.1:9/a", &["lead.*"]);
        bad_secret.secret = Some("whsec_not base64!!".into());
        assert!(matches!(block_on(create(&ledger, &settings, &account, bad_secret)), Err(DomainError::Invalid { .. })));
        assert!(list(&ledger, &account, None, 10).is_empty());
        assert_eq!(block_on(ledger.last_seq()).unwrap(), 1, "only acct_default was ever written");
    }

    #[test]
    fn an_edit_computed_from_an_older_version_is_refused() {
        let ledger = ledger();
        let settings = settings(10);
        let account = AccountId::default_account();
        let w = block_on(create(&ledger, &settings, &account, input("http://127.0.0.1:9/a", &["lead.*"]))).unwrap();
        let seen = version(&ledger, &w.id);
        block_on(rotate_secret(&ledger, &settings, &account, &w.id)).unwrap();
        let stale = Command::checked(
            vec![Record::WebhookDeleted { webhook_id: w.id.clone(), at: 1 }],
            owned(&account, &w.id, seen),
        );
        let refused = block_on(ledger.append(stale));
        assert!(matches!(refused, Err(crate::storage::AppendError::Rejected(crate::storage::Rejection::Conflict(_)))));
        let (now, _) = get(&ledger, &account, &w.id).unwrap();
        assert_eq!(now.secrets.len(), 2, "rotated: the new secret and the old one for the overlap");
    }
}
