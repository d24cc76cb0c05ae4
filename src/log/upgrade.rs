//! Rows an older build wrote, brought to this build's form when the log opens, before
//! anything reads them.
//!
//! Records are never rewritten: every record version keeps its decoder
//! ([`record`](super::record)). Rows are a fold of the records, so a row whose layout
//! changed is rewritten in place, exactly as a fold by this build would write it — which
//! keeps `verify`'s `fold(records) == rows`, byte for byte, true for an upgraded directory.
//!
//! | row | from | to |
//! |---|---|---|
//! | webhook (`w`) | version 1 (webhook as records 1–2 held it) | version 2 (as record version 3 holds it) |

use super::codec;
use super::keys;
use super::record::WebhookV2;
use super::rows::WEBHOOK_ROW_VERSION;
use crate::model::Millis;
use crate::storage::WebhookRow;
use serde::Deserialize;

/// A webhook row as version 1 stored it.
#[derive(Deserialize)]
struct WebhookRowV1 {
    webhook: WebhookV2,
    seq: u64,
    deleted_at: Option<Millis>,
}

/// The row at `key` in this build's form, if `value` is of an older one (`None`: it is
/// current, or does not decode — then it is reported as damaged like any other).
pub fn upgraded(key: &[u8], value: &[u8]) -> Option<Vec<u8>> {
    if key.first() != Some(&keys::WEBHOOK) {
        return None;
    }
    let Ok((1, body)) = codec::unframe(value) else { return None };
    let old = codec::decode_body::<WebhookRowV1>(body).ok()?;
    let row = WebhookRow { webhook: std::sync::Arc::new(old.webhook.into()), seq: old.seq, deleted_at: old.deleted_at };
    codec::encode(WEBHOOK_ROW_VERSION, &row).ok()
}

/// Rewrites every row of an older layout in one batch, flushed; the number rewritten.
pub fn rows(tree: &sled::Tree) -> Result<usize, sled::Error> {
    let mut batch = sled::Batch::default();
    let mut rewritten = 0;
    for item in tree.scan_prefix([keys::WEBHOOK]) {
        let (key, value) = item?;
        if let Some(bytes) = upgraded(&key, &value) {
            batch.insert(key, bytes);
            rewritten += 1;
        }
    }
    if rewritten > 0 {
        tree.apply_batch(batch)?;
        tree.flush()?;
        tracing::info!(rows = rewritten, "webhook rows rewritten in this build's form");
    }
    Ok(rewritten)
}
