//! A realistic, mixed append load on the log, for the crash tests (`herald stress-log`) and
//! the benchmarks: events fanned out to webhooks, attempts that succeed, retry or die,
//! re-queues of dead deliveries and webhook edits, from several threads at once.
//!
//! Each acknowledged append is reported through a callback with its sequence numbers, so a
//! test that kills the process can check afterwards that every acknowledged record is there.

use super::projection::load_delivery;
use super::rows::TreeRows;
use super::window::due_window;
use super::{Command, Log};
use crate::model::*;
use crate::storage::{AttemptFinished, DeliveryRow, EventIngested, Ledger, Precondition, Record};
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Webhooks the load creates for `acct_default` if it finds none.
pub const WEBHOOKS: usize = 4;

/// Creates the account's webhooks on first use; returns the live ones.
pub fn ensure_webhooks(log: &Log) -> Result<Vec<Webhook>, super::AppendError> {
    let account = AccountId::default_account();
    let existing: Vec<Webhook> =
        log.catalog().read().map(|c| c.webhooks_of(&account).cloned().collect()).unwrap_or_default();
    if !existing.is_empty() {
        return Ok(existing);
    }
    let at = now_millis();
    let mut records = vec![Record::AccountCreated {
        account: Account { id: account.clone(), name: "default".into(), created_at: at, deleted_at: None },
    }];
    let mut hooks = Vec::new();
    for i in 0..WEBHOOKS {
        let webhook = sample_webhook(&account, i, at);
        records.push(Record::WebhookCreated { webhook: webhook.clone() });
        hooks.push(webhook);
    }
    log.append_blocking(Command::new(records))?;
    Ok(hooks)
}

/// A webhook as the API would create it.
pub fn sample_webhook(account: &AccountId, i: usize, at: Millis) -> Webhook {
    Webhook {
        id: WebhookId::generate_at(at),
        account_id: account.clone(),
        name: format!("receiver-{i}"),
        description: String::new(),
        url: format!("https://hooks{i}.example.com/in"),
        events: vec!["lead.*".into()],
        // A load for the log alone (crash tests, benchmarks): no keyring, a made-up secret.
        secrets: vec![Secret {
            value: crate::security::seal::SealedText::in_clear(format!("whsec_load-test-secret-{i:04}")),
            created_at: at,
            expires_at: None,
        }],
        is_active: true,
        max_retries: 5,
        timeout_ms: 30_000,
        method: Method::Post,
        headers: Vec::new(),
        signature_header: "X-Webhook-Signature".into(),
        signature_prefix: "sha256=".into(),
        ordering: DeliveryOrder::None,
        max_in_flight: 16,
        rate_limit: None,
        created_at: at,
        updated_at: at,
        filter: None,
        body_format: BodyFormat::Original,
    }
}

/// An `EventIngested` record whose `data` is a JSON object of `data_len` bytes.
pub fn sample_event(account: &AccountId, webhooks: Vec<WebhookId>, data_len: usize, at: Millis) -> Record {
    let mut data = br#"{"lead_id":"lead_123","note":""#.to_vec();
    let pad = data_len.saturating_sub(data.len() + 2);
    data.extend(std::iter::repeat_n(b'x', pad));
    data.extend_from_slice(b"\"}");
    Record::EventIngested(Box::new(EventIngested::unkeyed(
        account.clone(),
        "lead.qualified".into(),
        data,
        webhooks,
        at,
    )))
}

/// An attempt record for `delivery`, with the precondition that it is still unfinished and
/// has made `attempt - 1` attempts (two writers may pick the same delivery).
pub fn attempt_command(delivery: DeliveryRef, row: &DeliveryRow, next: NextStep, at: Millis) -> Command {
    let attempt = row.attempts + 1;
    let webhook = row.webhook_id.clone();
    let success = matches!(next, NextStep::Succeeded);
    let record = Record::AttemptFinished(Box::new(AttemptFinished {
        delivery,
        webhook_id: webhook.clone(),
        attempt,
        started_at: at.saturating_sub(5),
        at,
        outcome: AttemptOutcome {
            result: if success { AttemptResult::Success } else { AttemptResult::HttpError },
            status_code: Some(if success { 200 } else { 503 }),
            latency_us: 5_000,
            error: (!success).then(|| "HTTP 503".to_owned()),
            response_excerpt: (!success).then(|| b"unavailable".to_vec()),
            request_headers: vec![("X-Webhook-Attempt".into(), attempt.to_string())],
        },
        next,
        status: WebhookStatus {
            last_attempt_at: Some(at),
            last_status_code: Some(if success { 200 } else { 503 }),
            ..Default::default()
        },
    }));
    Command::checked(vec![record], Precondition::DeliveryAt { delivery, webhook, attempts: attempt - 1 })
}

/// Runs `writers` threads appending a mix of records until `stop` is set or `limit` records
/// were acknowledged. `acked` is told the sequence numbers of every acknowledged append.
pub fn run(
    log: &Log,
    writers: usize,
    limit: u64,
    seed: u64,
    stop: &AtomicBool,
    acked: &(dyn Fn(&[u64]) + Sync),
) -> Result<u64, super::AppendError> {
    let hooks = ensure_webhooks(log)?;
    let count = AtomicU64::new(0);
    let dead = DeadList::default();
    std::thread::scope(|s| {
        for w in 0..writers {
            let (hooks, count, dead) = (&hooks, &count, &dead);
            s.spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_mul(1000).wrapping_add(w as u64));
                while !stop.load(Ordering::Relaxed) && count.load(Ordering::Relaxed) < limit {
                    let Some(cmd) = next_command(log, hooks, dead, &mut rng) else {
                        continue;
                    };
                    match log.append_blocking(cmd) {
                        Ok(appended) => {
                            count.fetch_add(appended.seqs.len() as u64, Ordering::Relaxed);
                            acked(&appended.seqs);
                        }
                        Err(super::AppendError::Rejected(_)) => {}
                        Err(e) => {
                            tracing::error!(error = %e, "load append failed");
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
            });
        }
    });
    Ok(count.load(Ordering::Relaxed))
}

/// Deliveries the load has seen die (it may re-queue them). Some may have moved on.
type DeadList = std::sync::Mutex<Vec<(DeliveryRef, WebhookId)>>;

fn next_command(log: &Log, hooks: &[Webhook], dead: &DeadList, rng: &mut impl Rng) -> Option<Command> {
    let at = now_millis();
    let account = AccountId::default_account();
    let roll = rng.gen_range(0..100);
    let hook = &hooks[rng.gen_range(0..hooks.len())];
    if roll < 60 {
        let fanout = rng.gen_range(1..=hooks.len());
        let targets = hooks.iter().take(fanout).map(|h| h.id.clone()).collect();
        return Some(Command::new(vec![sample_event(&account, targets, rng.gen_range(100..400), at)]));
    }
    if roll < 94 {
        // An attempt on one of the webhook's first due deliveries.
        let tree = log.tree().ok()?;
        let (window, _) = due_window(&tree, &hook.id, 32).ok()?;
        if window.is_empty() {
            return None;
        }
        let delivery = window[rng.gen_range(0..window.len())].delivery;
        let row = load_delivery(&TreeRows(&tree), delivery, &hook.id).ok()??;
        let next = match rng.gen_range(0..10) {
            0..=5 => NextStep::Succeeded,
            6..=8 => NextStep::RetryAt(at + rng.gen_range(0..5_000)),
            _ => NextStep::Dead(DeadReason::RetriesExhausted),
        };
        if matches!(next, NextStep::Dead(_)) {
            if let Ok(mut dead) = dead.lock() {
                dead.push((delivery, hook.id.clone()));
            }
        }
        return Some(attempt_command(delivery, &row, next, at));
    }
    if roll < 97 {
        let (delivery, webhook_id) = dead.lock().ok()?.pop()?;
        let record = Record::DeliveryRequeued { delivery, webhook_id: webhook_id.clone(), at };
        return Some(Command::checked(vec![record], Precondition::DeliveryDead { delivery, webhook: webhook_id }));
    }
    let mut webhook = Webhook::clone(&log.catalog().read().ok()?.webhooks.get(&hook.id)?.webhook);
    webhook.name = format!("receiver-{}", rng.gen_range(0..1000));
    webhook.updated_at = at;
    Some(Command::new(vec![Record::WebhookUpdated { webhook }]))
}
