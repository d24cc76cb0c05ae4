//! A full check of a log at rest: every record's checksum, and the stored projection against
//! a fresh fold of the records that remain. In cluster mode ([`verify_store`]), the
//! database's records too, and a node's tree against them.
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
            // A stopped node an older build wrote: its rows as this build will read them.
            let v = super::upgrade::upgraded(&k, &v).unwrap_or_else(|| v.to_vec());
            stored.insert(k.to_vec(), v);
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

/// What `herald verify` found with a `store` (cluster mode): the database's records, each
/// checked as the sled log's are, and — when the data directory holds a node's tree — that
/// tree checked as [`verify`] does and against the database, record by record.
///
/// The database's records are read up to the head as it was when the check began, so the
/// check runs on a live cluster too (records are only ever appended). A node's tree can be
/// checked only while that node is stopped (its sled lock).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StoreReport {
    /// The head when the check began, and how many records up to it the database holds.
    pub head: u64,
    pub records: u64,
    /// Sequence numbers up to the head with no record that retention did not remove (at
    /// most [`SHOWN`] listed).
    pub missing: Vec<u64>,
    pub missing_count: u64,
    /// Sequence numbers up to the head retention removed (`herald.removed`).
    pub removed: u64,
    /// Records that fail their checksum or do not decode: (seq, why).
    pub corrupt_records: Vec<(u64, String)>,
    /// The node's tree, if the data directory holds one.
    pub node: Option<NodeReport>,
}

/// A node's tree against the database's records.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NodeReport {
    /// The tree on its own: checksums, and its rows against a fold of its records.
    pub tree: VerifyReport,
    /// Records the tree holds whose bytes differ from the database's under the same
    /// sequence number, or that the database lacks below its head (and retention did not
    /// remove since the node last folded).
    pub differing: Vec<u64>,
    /// Records the tree holds past the database's head (a database restored from an older
    /// backup: the node would refuse to start on it).
    pub beyond_head: u64,
}

/// How many missing or differing sequence numbers a report lists.
pub const SHOWN: usize = 20;

impl StoreReport {
    /// Notes the numbers of `seqs`, which have no record: removed where `removed` (ranges
    /// `[first, last]`, ascending) covers them, missing elsewhere.
    fn note_absent(&mut self, seqs: std::ops::Range<u64>, removed: &[(u64, u64)]) {
        let mut at = seqs.start;
        // The first range that ends at or after `at`.
        let mut i = removed.partition_point(|r| r.1 < at);
        while at < seqs.end {
            match removed.get(i) {
                Some(&(first, last)) if first <= at => {
                    let upto = (last + 1).min(seqs.end);
                    self.removed += upto - at;
                    at = upto;
                    i += 1;
                }
                next => {
                    let upto = next.map_or(seqs.end, |r| r.0.min(seqs.end));
                    self.missing_count += upto - at;
                    for seq in (at..upto).take(SHOWN.saturating_sub(self.missing.len())) {
                        self.missing.push(seq);
                    }
                    at = upto;
                }
            }
        }
    }

    pub fn is_clean(&self) -> bool {
        self.missing_count == 0
            && self.corrupt_records.is_empty()
            && self.node.as_ref().is_none_or(|n| n.tree.is_clean() && n.differing.is_empty() && n.beyond_head == 0)
    }
}

impl std::fmt::Display for StoreReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "database: {} records up to head {}", self.records, self.head)?;
        if self.removed > 0 {
            writeln!(f, "removed by retention: {} records", self.removed)?;
        }
        if self.missing_count > 0 {
            writeln!(f, "missing records: {} (first {:?})", self.missing_count, self.missing)?;
        }
        for (seq, why) in &self.corrupt_records {
            writeln!(f, "corrupt record {seq}: {why}")?;
        }
        match &self.node {
            None => writeln!(f, "no node tree in this data directory: the database alone was checked")?,
            Some(n) => {
                let t = &n.tree;
                writeln!(f, "node tree: {} records (folded to {}, head {})", t.records, t.applied_seq, self.head)?;
                writeln!(f, "node tree: {} projection rows", t.rows)?;
                for (seq, why) in &t.corrupt_records {
                    writeln!(f, "node tree: corrupt record {seq}: {why}")?;
                }
                for row in t.mismatched_rows.iter().take(SHOWN) {
                    writeln!(f, "node tree: mismatched row {row}")?;
                }
                if !n.differing.is_empty() {
                    writeln!(f, "node tree: records unlike the database's: {:?}", n.differing)?;
                }
                if n.beyond_head > 0 {
                    writeln!(f, "node tree: {} records past the database's head", n.beyond_head)?;
                }
            }
        }
        write!(f, "{}", if self.is_clean() { "clean" } else { "NOT clean" })
    }
}

/// Checks the database's records up to `head`, read oldest first by `next(after)` (an
/// empty chunk ends them), and `tree` against them; numbers in the ranges `removed()`
/// returns, asked once every record was read, were removed by retention. See
/// [`StoreReport`].
pub fn verify_store<E: std::fmt::Display>(
    head: u64,
    mut next: impl FnMut(u64) -> Result<Vec<(u64, Vec<u8>)>, E>,
    removed: impl FnOnce() -> Result<Vec<(u64, u64)>, E>,
    tree: Option<&sled::Tree>,
) -> Result<StoreReport, VerifyStoreError> {
    let mut report = StoreReport { head, ..Default::default() };
    let mut node = tree.map(verify).transpose()?.map(|tree| NodeReport { tree, ..Default::default() });
    let mut theirs = tree.map(|t| super::pages::iter(t, 0).peekable());
    // Numbers the database has no record for, and records only the tree has: told apart
    // from retention's removals once every record was read (a removal that commits during
    // the check is in `removed` by then).
    let mut gaps = Vec::new();
    let mut tree_only = Vec::new();
    let mut after = 0;
    'chunks: loop {
        let chunk = next(after).map_err(|e| VerifyStoreError::Read(e.to_string()))?;
        if chunk.is_empty() {
            break;
        }
        for (seq, body) in chunk {
            if seq > head {
                break 'chunks;
            }
            if seq > after + 1 {
                gaps.push(after + 1..seq);
            }
            after = seq;
            report.records += 1;
            if let Err(e) = Record::decode(&body) {
                report.corrupt_records.push((seq, e.to_string()));
            }
            // The tree's records at or below `seq` must be the database's, byte for byte.
            if let (Some(iter), Some(n)) = (theirs.as_mut(), node.as_mut()) {
                while let Some(Ok((tseq, tbody))) = iter.next_if(|item| item.as_ref().is_ok_and(|(s, _)| *s <= seq)) {
                    if tseq != seq {
                        tree_only.push(tseq);
                    } else if tbody != body {
                        push_shown(&mut n.differing, tseq);
                    }
                }
                // A damaged page is the tree report's to tell.
                while iter.next_if(|item| item.is_err()).is_some() {}
            }
        }
    }
    if head > after {
        gaps.push(after + 1..head + 1);
    }
    if let (Some(iter), Some(n)) = (theirs, node.as_mut()) {
        for (tseq, _) in iter.flatten() {
            if tseq > head {
                n.beyond_head += 1;
            } else {
                tree_only.push(tseq);
            }
        }
    }
    let removed = removed().map_err(|e| VerifyStoreError::Read(e.to_string()))?;
    for gap in gaps {
        report.note_absent(gap, &removed);
    }
    // What the tree holds and the database lacks was either removed by retention after the
    // node last folded, or is wrong.
    if let Some(n) = node.as_mut() {
        for tseq in tree_only.into_iter().filter(|s| !covers(&removed, *s)) {
            push_shown(&mut n.differing, tseq);
        }
    }
    report.node = node;
    Ok(report)
}

/// Whether one of the `removed` ranges (ascending) holds `seq`.
fn covers(removed: &[(u64, u64)], seq: u64) -> bool {
    let i = removed.partition_point(|r| r.1 < seq);
    removed.get(i).is_some_and(|r| r.0 <= seq)
}

fn push_shown(list: &mut Vec<u64>, seq: u64) {
    if list.len() < SHOWN {
        list.push(seq);
    }
}

/// Why a check against the database could not be made.
#[derive(Debug, thiserror::Error)]
pub enum VerifyStoreError {
    #[error("cannot read the database's records: {0}")]
    Read(String),
    #[error(transparent)]
    Rows(#[from] RowsError),
    #[error(transparent)]
    Open(#[from] super::OpenError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_numbers_are_removed_where_a_range_covers_them_and_missing_elsewhere() {
        let mut r = StoreReport::default();
        let removed = [(2, 3), (6, 6), (9, 20)];
        r.note_absent(1..11, &removed);
        assert_eq!(r.removed, 2 + 1 + 2);
        assert_eq!((r.missing_count, r.missing.clone()), (5, vec![1, 4, 5, 7, 8]));
        r.note_absent(15..17, &removed);
        assert_eq!((r.removed, r.missing_count), (7, 5));
        r.note_absent(21..23, &removed);
        assert_eq!((r.missing_count, &r.missing[5..]), (7, &[21, 22][..]));
        r.note_absent(5..5, &removed);
        assert_eq!((r.removed, r.missing_count), (7, 7));
    }
}
