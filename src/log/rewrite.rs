//! Rewriting a stopped node's log into a fresh directory, every record passed through a
//! transformation (`herald seal` seals the secrets an older Herald stored in clear).
//!
//! sled cannot rewrite a value in place so that no copy of the old one is left on disk (its
//! segments keep old versions until they are reused), so this writes a new directory and
//! leaves the old one for the operator to delete.
//!
//! Invariants:
//! - Records keep their sequence numbers and their pages, so every public id stays valid
//!   (`idkey` and every other meta row are copied).
//! - The projection of the new directory is the fold of its (transformed) records, so
//!   `verify` holds there; summary rows, which are not history, are copied as they were.

use super::keys;
use super::pages;
use super::projection;
use super::record::{Record, Stored};
use super::rows::{RowsError, Txn};
use super::OpenError;
use std::path::Path;

/// Records folded per batch written to the new directory.
const FOLD_BATCH: usize = 4096;

/// What a rewrite did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    pub records: u64,
    /// Records the transformation changed.
    pub changed: u64,
}

/// Why a rewrite stopped.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Rows(#[from] RowsError),
    #[error("{0} already holds a log; rewrite into a new directory")]
    NotEmpty(std::path::PathBuf),
    #[error("record {seq}: {why}")]
    Record { seq: u64, why: String },
}

/// Copies the log in `from` (a stopped node's) into `to` (which must not hold one),
/// passing every record through `transform` (`Ok(None)`: unchanged).
pub fn rewrite(
    from: &Path,
    to: &Path,
    mut transform: impl FnMut(&Record) -> Result<Option<Record>, String>,
) -> Result<Rewritten, RewriteError> {
    if to.join("log").exists() {
        return Err(RewriteError::NotEmpty(to.to_owned()));
    }
    let source = super::open_for_inspection(from)?;
    let db = super::open_db(to, 64 << 20)?;
    let dest = db.open_tree(super::TREE).map_err(|source| OpenError::Sled { path: to.to_owned(), source })?;
    let mut done = Rewritten::default();

    // Records, page by page, each record transformed; meta and summary rows as they were.
    let mut batch = sled::Batch::default();
    let mut pending = 0;
    for item in source.iter() {
        let (key, value) = item.map_err(RowsError::from)?;
        let prefix = key.first().copied();
        let copy = match prefix {
            Some(keys::LOG) => {
                let key_seq = keys::log_seq(&key).unwrap_or(0);
                let slots = pages::slots(key_seq, &value).map_err(RowsError::Page)?;
                let mut records: Vec<(u64, Vec<u8>)> = Vec::with_capacity(slots.len());
                for slot in &slots {
                    let bytes = &value[slot.start..slot.end];
                    let record = Record::decode(bytes)
                        .map_err(|e| RewriteError::Record { seq: slot.seq, why: e.to_string() })?;
                    done.records += 1;
                    let out = match transform(&record).map_err(|why| RewriteError::Record { seq: slot.seq, why })? {
                        Some(changed) => {
                            done.changed += 1;
                            changed.encode().map_err(|e| RewriteError::Record { seq: slot.seq, why: e.to_string() })?
                        }
                        None => bytes.to_vec(),
                    };
                    records.push((slot.seq, out));
                }
                let refs: Vec<(u64, &[u8])> = records.iter().map(|(s, b)| (*s, b.as_slice())).collect();
                Some(pages::page_of(&refs))
            }
            Some(p) if p == keys::META || keys::SUMMARY_PREFIXES.contains(&p) => Some(value.to_vec()),
            // Projection rows are folded anew below.
            _ => None,
        };
        if let Some(v) = copy {
            batch.insert(key.to_vec(), v);
            pending += 1;
        }
        if pending >= FOLD_BATCH {
            dest.apply_batch(std::mem::take(&mut batch)).map_err(RowsError::from)?;
            pending = 0;
        }
    }
    dest.apply_batch(batch).map_err(RowsError::from)?;

    // The projection: a fold of the records now in the new directory, in order.
    let summary_before: Vec<(sled::IVec, sled::IVec)> = keys::SUMMARY_PREFIXES
        .iter()
        .flat_map(|p| dest.scan_prefix([*p]))
        .collect::<Result<_, _>>()
        .map_err(RowsError::from)?;
    let mut txn = Txn::new(&dest);
    let mut folded = 0;
    for item in pages::iter(&dest, 0) {
        let (seq, bytes) = item?;
        let record = Record::decode(&bytes).map_err(|e| RewriteError::Record { seq, why: e.to_string() })?;
        projection::apply(&mut txn, seq, &record)?;
        folded += 1;
        if folded % FOLD_BATCH == 0 {
            let (b, _) = txn.into_parts();
            dest.apply_batch(b).map_err(RowsError::from)?;
            txn = Txn::new(&dest);
        }
    }
    let (b, _) = txn.into_parts();
    dest.apply_batch(b).map_err(RowsError::from)?;
    // Summary rows stay as the old node had them (the fold cannot rebuild what compaction
    // removed the history of).
    let mut summary = sled::Batch::default();
    for p in keys::SUMMARY_PREFIXES {
        for item in dest.scan_prefix([p]) {
            let (k, _) = item.map_err(RowsError::from)?;
            summary.remove(k);
        }
    }
    for (k, v) in summary_before {
        summary.insert(k, v);
    }
    dest.apply_batch(summary).map_err(RowsError::from)?;
    dest.flush().map_err(RowsError::from)?;
    db.flush().map_err(RowsError::from)?;
    Ok(done)
}
