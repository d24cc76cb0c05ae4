//! A full check of a log at rest: every record's checksum, and the stored projection against
//! a fresh fold of the records that remain.
//!
//! This is what `herald verify` runs and what the crash tests assert after every SIGKILL:
//! nothing is half-applied (the `applied` marker equals the last record) and
//! `fold(records) == rows`, byte for byte. It reads the whole history, so it is a tool for
//! operators and tests, never part of start-up.

use super::keys;
use super::projection;
use super::record::{Record, Stored};
use super::rows::{show_key, MemRows, RowsError};
use std::collections::BTreeMap;

/// What a verification found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub records: u64,
    pub last_seq: u64,
    pub applied_seq: u64,
    /// Records that fail their checksum or do not decode: (seq, why).
    pub corrupt_records: Vec<(u64, String)>,
    /// Rows whose stored bytes differ from the fresh fold, or that only one side has.
    pub mismatched_rows: Vec<String>,
    pub rows: u64,
}

impl VerifyReport {
    /// No damage, no difference, and no record past the `applied` marker. The marker may be
    /// ahead of the last record: compaction can remove the newest ones.
    pub fn is_clean(&self) -> bool {
        self.corrupt_records.is_empty() && self.mismatched_rows.is_empty() && self.last_seq <= self.applied_seq
    }
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "records: {} (last seq {}, applied {})", self.records, self.last_seq, self.applied_seq)?;
        writeln!(f, "projection rows: {}", self.rows)?;
        for (seq, why) in &self.corrupt_records {
            writeln!(f, "corrupt record {seq}: {why}")?;
        }
        for (i, row) in self.mismatched_rows.iter().enumerate() {
            if i == 20 {
                writeln!(f, "… and {} more mismatched rows", self.mismatched_rows.len() - 20)?;
                break;
            }
            writeln!(f, "mismatched row {row}")?;
        }
        write!(f, "{}", if self.is_clean() { "clean" } else { "NOT clean" })
    }
}

/// Checks the tree as described in the module docs.
pub fn verify(tree: &sled::Tree) -> Result<VerifyReport, RowsError> {
    let mut report = VerifyReport::default();
    let mut fresh = MemRows::default();
    for item in super::pages::iter(tree, 0) {
        let (seq, v) = match item {
            Ok(entry) => entry,
            Err(e) => {
                report.corrupt_records.push((report.last_seq + 1, e.to_string()));
                continue;
            }
        };
        report.records += 1;
        report.last_seq = seq;
        match Record::decode(&v) {
            Ok(record) => projection::apply(&mut fresh, seq, &record)?,
            Err(e) => report.corrupt_records.push((seq, e.to_string())),
        }
    }
    report.applied_seq = super::applied_seq(tree)?;

    let mut stored: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for prefix in keys::PROJECTION_PREFIXES {
        for item in tree.scan_prefix([prefix]) {
            let (k, v) = item?;
            stored.insert(k.to_vec(), v.to_vec());
        }
    }
    report.rows = stored.len() as u64;
    // Summary rows are not history (see `summary`): only the projection is compared.
    let fresh: BTreeMap<Vec<u8>, Vec<u8>> =
        fresh.0.into_iter().filter(|(k, _)| k.first().is_some_and(|p| keys::PROJECTION_PREFIXES.contains(p))).collect();
    for (k, v) in &stored {
        if fresh.get(k) != Some(v) {
            report.mismatched_rows.push(show_key(k));
        }
    }
    for k in fresh.keys() {
        if !stored.contains_key(k) {
            report.mismatched_rows.push(format!("{} (missing)", show_key(k)));
        }
    }
    Ok(report)
}
