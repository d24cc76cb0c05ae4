//! Reading and writing projection rows during a fold, over sled or over memory.
//!
//! The fold ([`projection::apply`](super::projection::apply)) is written against [`Rows`], so
//! one piece of code both maintains the live projection (through a [`Txn`] that stages
//! changes over the sled tree until the group commit writes them in one batch) and rebuilds
//! a projection from scratch in memory ([`MemRows`]) to check the live one against.
//! Queries read committed rows through [`TreeRows`].
//!
//! Invariant: nothing staged in a [`Txn`] reaches sled except through
//! [`Txn::into_batch`], whose batch the writer applies and flushes together with the records
//! that caused it.

use super::codec::{self, CodecError};
use crate::storage::{AppendError, StorageError};
use serde::{de::DeserializeOwned, Serialize};
use std::any::Any;
use std::collections::{BTreeMap, HashMap};

/// Format version of projection rows.
pub const ROW_VERSION: u8 = 1;

/// Format version of webhook rows (`w`): version 2 holds the webhook as record version 3
/// does. A version 1 row is rewritten when the log opens ([`super::upgrade`]).
pub const WEBHOOK_ROW_VERSION: u8 = 2;

/// The format version of the row at `key`: it depends on the key space.
pub fn row_version(key: &[u8]) -> u8 {
    match key.first() {
        Some(&super::keys::WEBHOOK) => WEBHOOK_ROW_VERSION,
        _ => ROW_VERSION,
    }
}

/// Failures of the storage under a fold.
#[derive(Debug, thiserror::Error)]
pub enum RowsError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("row {key} is damaged: {source}")]
    Codec { key: String, source: CodecError },
    #[error(transparent)]
    Page(#[from] super::pages::PageError),
    /// The log is being reopened after a storage fault (for a few milliseconds).
    #[error("the log is being reopened after a storage failure; try again")]
    Unavailable,
}

impl From<RowsError> for StorageError {
    fn from(e: RowsError) -> Self {
        match e {
            RowsError::Unavailable => StorageError::Unavailable,
            e @ (RowsError::Codec { .. } | RowsError::Page(_)) => StorageError::Damaged(e.to_string()),
            RowsError::Sled(e) => StorageError::Failed(e.to_string()),
        }
    }
}

impl From<RowsError> for AppendError {
    fn from(e: RowsError) -> Self {
        AppendError::Read(e.into())
    }
}

/// Printable form of a key for error messages: prefix byte plus hex.
pub fn show_key(key: &[u8]) -> String {
    let mut out = String::new();
    if let Some((first, rest)) = key.split_first() {
        out.push(*first as char);
        out.push(':');
        for b in rest {
            if b.is_ascii_alphanumeric() || *b == b'_' {
                out.push(*b as char);
            } else {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
    }
    out
}

/// Key-value pairs, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A key-value view a fold reads and writes.
pub trait Rows {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, RowsError>;
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>);
    fn delete(&mut self, key: Vec<u8>);
    /// Every entry under `prefix`, in key order, at most `limit`.
    fn scan(&self, prefix: &[u8], limit: usize) -> Result<Entries, RowsError>;

    fn contains(&self, key: &[u8]) -> Result<bool, RowsError> {
        Ok(self.get(key)?.is_some())
    }

    fn get_row<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, RowsError>
    where
        Self: Sized,
    {
        match self.get(key)? {
            None => Ok(None),
            Some(bytes) => codec::decode(row_version(key), &bytes)
                .map(Some)
                .map_err(|source| RowsError::Codec { key: show_key(key), source }),
        }
    }

    fn put_row<T: Serialize>(&mut self, key: Vec<u8>, row: &T) -> Result<(), RowsError>
    where
        Self: Sized,
    {
        let bytes =
            codec::encode(row_version(&key), row).map_err(|source| RowsError::Codec { key: show_key(&key), source })?;
        self.put(key, bytes);
        Ok(())
    }

    /// Read-modify-write of a row (created as `T::default()`). For rows a group commit
    /// changes many times (a webhook's counters change once per delivery), [`Txn`] keeps the
    /// row decoded and encodes it once, when the group is written.
    fn update_row<T>(&mut self, key: Vec<u8>, change: impl FnOnce(&mut T)) -> Result<(), RowsError>
    where
        Self: Sized,
        T: Serialize + DeserializeOwned + Default + Clone + 'static,
    {
        let mut row: T = self.get_row(&key)?.unwrap_or_default();
        change(&mut row);
        self.put_row(key, &row)
    }

    /// Appends `entry` to a row of fixed-size entries framed by [`codec::frame_raw`],
    /// creating it if absent. The checksum is extended, not recomputed, so an append costs
    /// the entry, not the row (and damage already in the row stays detectable).
    fn append_entry(&mut self, key: Vec<u8>, entry: &[u8]) -> Result<(), RowsError> {
        let value = match self.get(&key)? {
            None => codec::frame_raw(ROW_VERSION, entry),
            Some(mut framed) => {
                codec::append_raw(&mut framed, entry)
                    .map_err(|source| RowsError::Codec { key: show_key(&key), source })?;
                framed
            }
        };
        self.put(key, value);
        Ok(())
    }
}

/// An entry of a chunk row (intake chunks, account event chunks): a fixed size and a byte
/// layout of its own, not bincode, so appending one is a copy (see [`Rows::append_entry`]).
pub trait FixedEntry: Sized {
    const LEN: usize;
    fn write(&self, out: &mut Vec<u8>);
    fn read(bytes: &[u8]) -> Option<Self>;

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        self.write(&mut out);
        out
    }
}

/// Decodes a chunk row: codec framing around fixed-size entries.
pub fn decode_entries<T: FixedEntry>(bytes: &[u8]) -> Result<Vec<T>, CodecError> {
    let (version, body) = codec::unframe(bytes)?;
    if version != ROW_VERSION {
        return Err(CodecError::UnknownVersion(version));
    }
    if body.len() % T::LEN != 0 {
        return Err(CodecError::Truncated(body.len()));
    }
    Ok(body.chunks_exact(T::LEN).filter_map(T::read).collect())
}

/// The entries of the chunk row at `key` (none if absent).
pub fn read_entries<T: FixedEntry, R: Rows>(rows: &R, key: &[u8]) -> Result<Vec<T>, RowsError> {
    match rows.get(key)? {
        None => Ok(Vec::new()),
        Some(bytes) => decode_entries(&bytes).map_err(|source| RowsError::Codec { key: show_key(key), source }),
    }
}

/// Keeps the entries of the chunk row at `key` that `keep` accepts; deletes the row if none is
/// left (compaction).
pub fn retain_entries<T: FixedEntry, R: Rows>(
    rows: &mut R,
    key: Vec<u8>,
    keep: impl Fn(&T) -> bool,
) -> Result<(), RowsError> {
    let mut entries: Vec<T> = read_entries(rows, &key)?;
    entries.retain(|e| keep(e));
    if entries.is_empty() {
        rows.delete(key);
    } else {
        let mut body = Vec::with_capacity(entries.len() * T::LEN);
        for e in &entries {
            e.write(&mut body);
        }
        rows.put(key, codec::frame_raw(ROW_VERSION, &body));
    }
    Ok(())
}

/// Encodes a [`Decoded`] value under a version (`None` if it is not of the type it was
/// made with).
type EncodeAny = fn(&dyn Any, u8) -> Option<Result<Vec<u8>, CodecError>>;

/// A row [`Txn`] keeps decoded until the group is written.
struct Decoded {
    value: Box<dyn Any>,
    encode: EncodeAny,
}

impl Decoded {
    fn new<T: Serialize + Clone + 'static>(value: T) -> Self {
        Decoded {
            value: Box::new(value),
            encode: |v, version| v.downcast_ref::<T>().map(|v| codec::encode(version, v)),
        }
    }

    fn bytes(&self, key: &[u8]) -> Result<Vec<u8>, RowsError> {
        match (self.encode)(self.value.as_ref(), row_version(key)) {
            Some(Ok(bytes)) => Ok(bytes),
            Some(Err(source)) => Err(RowsError::Codec { key: show_key(key), source }),
            None => Err(RowsError::Codec { key: show_key(key), source: CodecError::Truncated(0) }),
        }
    }
}

/// Changes staged over a sled tree, visible to later reads of the same transaction.
pub struct Txn<'a> {
    tree: &'a sled::Tree,
    /// `None` marks a deletion.
    overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// The overlay's previous entry for each change, newest last, for [`Txn::rollback`].
    undo: Vec<Undo>,
    /// Rows changed through [`Rows::update_row`], decoded; they shadow `overlay`.
    decoded: HashMap<Vec<u8>, Decoded>,
    /// The previous decoded entry for each change of `decoded`, newest last.
    decoded_undo: Vec<(Vec<u8>, Option<Decoded>)>,
}

/// A key and the overlay's entry for it before a change (`None`: there was none).
type Undo = (Vec<u8>, Option<Option<Vec<u8>>>);

/// A point a transaction can roll back to.
#[derive(Debug, Clone, Copy)]
pub struct Savepoint(usize, usize);

impl<'a> Txn<'a> {
    pub fn new(tree: &'a sled::Tree) -> Self {
        Self { tree, overlay: BTreeMap::new(), undo: Vec::new(), decoded: HashMap::new(), decoded_undo: Vec::new() }
    }

    /// The committed tree under the staged changes.
    pub fn tree(&self) -> &'a sled::Tree {
        self.tree
    }

    pub fn savepoint(&self) -> Savepoint {
        Savepoint(self.undo.len(), self.decoded_undo.len())
    }

    /// Forgets every change made since `sp`. The two undo stacks restore disjoint maps,
    /// so each can be unwound on its own.
    pub fn rollback(&mut self, sp: Savepoint) {
        while self.undo.len() > sp.0 {
            let Some((key, previous)) = self.undo.pop() else {
                break;
            };
            match previous {
                Some(entry) => self.overlay.insert(key, entry),
                None => self.overlay.remove(&key),
            };
        }
        while self.decoded_undo.len() > sp.1 {
            let Some((key, previous)) = self.decoded_undo.pop() else {
                break;
            };
            match previous {
                Some(entry) => self.decoded.insert(key, entry),
                None => self.decoded.remove(&key),
            };
        }
    }

    fn stage(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        // A raw write replaces a decoded row of the same key.
        if let Some(previous) = self.decoded.remove(&key) {
            self.decoded_undo.push((key.clone(), Some(previous)));
        }
        let previous = self.overlay.insert(key.clone(), value);
        self.undo.push((key, previous));
    }

    pub fn is_empty(&self) -> bool {
        self.overlay.is_empty() && self.decoded.is_empty()
    }

    /// The sled batch that makes the staged changes, and the changes themselves (for the
    /// observers told after the commit).
    pub fn into_parts(mut self) -> (sled::Batch, BTreeMap<Vec<u8>, Option<Vec<u8>>>) {
        for (key, row) in std::mem::take(&mut self.decoded) {
            match row.bytes(&key) {
                Ok(bytes) => {
                    self.overlay.insert(key, Some(bytes));
                }
                // Encoding a value that was decoded from the same type cannot fail; if it
                // did, the row keeps its committed value rather than a wrong one.
                Err(e) => tracing::error!(error = %e, "row not written"),
            }
        }
        let mut batch = sled::Batch::default();
        for (k, v) in &self.overlay {
            match v {
                Some(v) => batch.insert(k.as_slice(), v.as_slice()),
                None => batch.remove(k.as_slice()),
            }
        }
        (batch, self.overlay)
    }
}

impl Rows for Txn<'_> {
    /// Without encoding a decoded row (`get` would).
    fn contains(&self, key: &[u8]) -> Result<bool, RowsError> {
        if self.decoded.contains_key(key) {
            return Ok(true);
        }
        match self.overlay.get(key) {
            Some(staged) => Ok(staged.is_some()),
            None => Ok(self.tree.contains_key(key)?),
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, RowsError> {
        if let Some(row) = self.decoded.get(key) {
            return row.bytes(key).map(Some);
        }
        match self.overlay.get(key) {
            Some(staged) => Ok(staged.clone()),
            None => Ok(self.tree.get(key)?.map(|v| v.to_vec())),
        }
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.stage(key, Some(value));
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.stage(key, None);
    }

    fn update_row<T>(&mut self, key: Vec<u8>, change: impl FnOnce(&mut T)) -> Result<(), RowsError>
    where
        T: Serialize + DeserializeOwned + Default + Clone + 'static,
    {
        if let Some(row) = self.decoded.get_mut(&key) {
            if let Some(value) = row.value.downcast_mut::<T>() {
                let before = value.clone();
                change(value);
                self.decoded_undo.push((key, Some(Decoded::new(before))));
                return Ok(());
            }
        }
        let mut value: T = self.get_row(&key)?.unwrap_or_default();
        change(&mut value);
        let previous = self.decoded.insert(key.clone(), Decoded::new(value));
        self.decoded_undo.push((key, previous));
        Ok(())
    }

    fn scan(&self, prefix: &[u8], limit: usize) -> Result<Entries, RowsError> {
        // Merge the tree's entries with the staged ones; staged entries win.
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        let staged = self.overlay.range(prefix.to_vec()..).take_while(|(k, _)| k.starts_with(prefix));
        let mut staged_count = 0;
        for (k, v) in staged {
            merged.insert(k.clone(), v.clone());
            staged_count += 1;
        }
        for (k, row) in self.decoded.iter().filter(|(k, _)| k.starts_with(prefix)) {
            merged.insert(k.clone(), Some(row.bytes(k)?));
            staged_count += 1;
        }
        // Deleted entries may hide tree entries, so read enough to still fill `limit`.
        for item in self.tree.scan_prefix(prefix).take(limit.saturating_add(staged_count)) {
            let (k, v) = item?;
            merged.entry(k.to_vec()).or_insert_with(|| Some(v.to_vec()));
        }
        Ok(merged.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).take(limit).collect())
    }
}

/// Rows in memory, for folding a log from scratch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemRows(pub BTreeMap<Vec<u8>, Vec<u8>>);

impl Rows for MemRows {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, RowsError> {
        Ok(self.0.get(key).cloned())
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.0.insert(key, value);
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.0.remove(&key);
    }

    fn scan(&self, prefix: &[u8], limit: usize) -> Result<Entries, RowsError> {
        Ok(self
            .0
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

/// Read-only [`Rows`] over the committed tree: reads for a query, not a fold (what a
/// [`Txn`] would stage is dropped).
pub(crate) struct TreeRows<'a>(pub &'a sled::Tree);

impl Rows for TreeRows<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, RowsError> {
        Ok(self.0.get(key)?.map(|v| v.to_vec()))
    }
    fn put(&mut self, _: Vec<u8>, _: Vec<u8>) {}
    fn delete(&mut self, _: Vec<u8>) {}
    fn scan(&self, prefix: &[u8], limit: usize) -> Result<Entries, RowsError> {
        let mut out = Vec::new();
        for item in self.0.scan_prefix(prefix).take(limit) {
            let (k, v) = item?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_changes_shadow_the_tree_and_roll_back() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        tree.insert(b"qa", b"1").unwrap();
        tree.insert(b"qb", b"2").unwrap();
        tree.insert(b"qc", b"3").unwrap();
        let mut txn = Txn::new(&tree);
        txn.delete(b"qa".to_vec());
        txn.put(b"qd".to_vec(), b"4".to_vec());
        let sp = txn.savepoint();
        txn.put(b"qb".to_vec(), b"20".to_vec());
        txn.delete(b"qc".to_vec());
        assert_eq!(txn.get(b"qb").unwrap(), Some(b"20".to_vec()));
        let keys = |t: &Txn| t.scan(b"q", 10).unwrap().into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(keys(&txn), vec![b"qb".to_vec(), b"qd".to_vec()]);
        txn.rollback(sp);
        assert_eq!(txn.get(b"qb").unwrap(), Some(b"2".to_vec()));
        assert_eq!(keys(&txn), vec![b"qb".to_vec(), b"qc".to_vec(), b"qd".to_vec()]);
        assert_eq!(txn.scan(b"q", 2).unwrap().len(), 2);
        let (batch, _) = txn.into_parts();
        tree.apply_batch(batch).unwrap();
        assert_eq!(tree.get(b"qa").unwrap(), None);
        assert_eq!(tree.get(b"qd").unwrap().as_deref(), Some(&b"4"[..]));
    }

    #[test]
    fn decoded_rows_read_back_roll_back_and_are_written_once() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        let mut txn = Txn::new(&tree);
        let mut mem = MemRows::default();
        for i in 0..3u64 {
            txn.update_row(b"c1".to_vec(), |n: &mut u64| *n += i + 1).unwrap();
            mem.update_row(b"c1".to_vec(), |n: &mut u64| *n += i + 1).unwrap();
        }
        assert_eq!(txn.get_row::<u64>(b"c1").unwrap(), Some(6));
        assert_eq!(txn.get(b"c1").unwrap(), mem.get(b"c1").unwrap(), "same bytes as a plain read-modify-write");
        let sp = txn.savepoint();
        txn.update_row(b"c1".to_vec(), |n: &mut u64| *n += 100).unwrap();
        txn.update_row(b"c2".to_vec(), |n: &mut u64| *n += 1).unwrap();
        txn.put(b"c1".to_vec(), b"raw".to_vec());
        assert_eq!(txn.get(b"c1").unwrap(), Some(b"raw".to_vec()));
        assert_eq!(txn.scan(b"c", 10).unwrap().len(), 2);
        txn.rollback(sp);
        assert_eq!(txn.get_row::<u64>(b"c1").unwrap(), Some(6));
        assert_eq!(txn.get(b"c2").unwrap(), None);
        let (batch, changes) = txn.into_parts();
        tree.apply_batch(batch).unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(tree.get(b"c1").unwrap().map(|v| v.to_vec()), mem.get(b"c1").unwrap());
    }
}
