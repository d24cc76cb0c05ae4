//! What a webhook owes next: its first due deliveries, read from the rows.
//!
//! A webhook's unfinished deliveries are in two places: its retry queue (`q`, in due order)
//! and its intake chunks (`n`, in log order, which is ingest-time order), minus the intake
//! entries that have since got a row of their own. Recovery and the delivery actors page
//! through both with [`due_window`], which reads at most what it returns plus what the
//! intake hint lets it skip.

use super::keys;
use super::projection::intake_entries;
use super::rows::{self, show_key, RowsError};
use crate::model::WebhookId;
pub(crate) use crate::storage::{QueueEntry, Queued};

/// The first `n` due deliveries of `webhook`, in due order, and the intake chunk from which
/// a later read must start (the first that still holds an untaken delivery, else the last).
pub fn due_window(tree: &sled::Tree, webhook: &WebhookId, n: usize) -> Result<(Vec<Queued>, u64), RowsError> {
    due_window_from(tree, webhook, n, None)
}

/// [`due_window`], reading intake from chunk `from` (what the previous read returned) rather
/// than from the stored hint: an actor paging through a long backlog reads each taken
/// intake entry about once, not once per page.
pub fn due_window_from(
    tree: &sled::Tree,
    webhook: &WebhookId,
    n: usize,
    from: Option<u64>,
) -> Result<(Vec<Queued>, u64), RowsError> {
    let mut window = Vec::new();
    for item in tree.scan_prefix(keys::queue_of(webhook)).take(n) {
        let (k, v) = item?;
        let (due, delivery) = keys::queue_parts(&k).ok_or_else(|| RowsError::Codec {
            key: show_key(&k),
            source: super::codec::CodecError::Truncated(k.len()),
        })?;
        let entry = super::codec::decode(rows::ROW_VERSION, &v)
            .map_err(|source| RowsError::Codec { key: show_key(&k), source })?;
        window.push(Queued { delivery, due, entry });
    }

    let hint = match from {
        Some(chunk) => chunk,
        None => tree
            .get(keys::intake_hint(webhook))?
            .and_then(|v| v.as_ref().try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0),
    };
    let mut first_open = None;
    let mut last_chunk = hint;
    let mut from_intake = 0;
    'chunks: for item in tree.range(keys::intake_chunk(webhook, hint)..) {
        let (k, v) = item?;
        if !k.starts_with(&keys::intake_of(webhook)) {
            break;
        }
        let entries = intake_entries(&v).map_err(|source| RowsError::Codec { key: show_key(&k), source })?;
        last_chunk = keys::intake_chunk_number(&k).unwrap_or(last_chunk);
        for e in entries {
            if tree.contains_key(keys::delivery(e.delivery))? {
                continue;
            }
            if first_open.is_none() {
                first_open = keys::intake_chunk_number(&k);
            }
            if from_intake == n {
                break 'chunks;
            }
            from_intake += 1;
            window.push(Queued {
                delivery: e.delivery,
                due: e.at,
                entry: QueueEntry { attempts: 0, base_attempts: 0, queued_at: e.at },
            });
        }
    }
    window.sort_by_key(|q| (q.due, q.delivery));
    window.truncate(n);
    Ok((window, first_open.unwrap_or(last_chunk)))
}
