//! How records are stored: packed into log pages of consecutive records.
//!
//! sled costs about the same per key for a 300-byte value as for a 4 KiB one, so the writer
//! packs the records of a group commit into pages of up to [`PAGE_RECORDS`] records (or
//! [`PAGE_BYTES`] bytes), each under the key `L` + the sequence number of its first record.
//! A record is found by its sequence number with one range lookup (the page whose key is the
//! greatest at or below it).
//!
//! Page layout: `[PAGE_VERSION][count: u16]` then, per record, `[seq: u64][len: u32][record]`,
//! big-endian. Each record keeps its own version byte and CRC ([`codec`](super::codec)), so a
//! damaged record is detected on its own and its neighbours stay readable; a damaged page
//! header is reported as such.
//!
//! Invariants: page keys increase with the sequence numbers they hold; a page key is never
//! greater than any sequence number in the page, even after compaction removed records from
//! it (the key stays, the page shrinks, an empty page is deleted).

use super::keys;
use super::rows::{Rows, RowsError, Txn};

/// Most records per page.
pub const PAGE_RECORDS: usize = 16;
/// A page is closed once it holds this many bytes.
pub const PAGE_BYTES: usize = 8 * 1024;
const PAGE_VERSION: u8 = 1;
const HEADER: usize = 3;
const ENTRY_HEADER: usize = 12;

/// Why a page could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("log page at {key_seq} is damaged: {why}")]
    Damaged { key_seq: u64, why: &'static str },
}

/// One record inside a page: its sequence number and where its bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub seq: u64,
    pub start: usize,
    pub end: usize,
}

/// The records of a page, in order.
pub fn slots(key_seq: u64, page: &[u8]) -> Result<Vec<Slot>, PageError> {
    let damaged = |why| PageError::Damaged { key_seq, why };
    if page.len() < HEADER || page[0] != PAGE_VERSION {
        return Err(damaged("bad header"));
    }
    let count = u16::from_be_bytes([page[1], page[2]]) as usize;
    let mut out = Vec::with_capacity(count);
    let mut at = HEADER;
    for _ in 0..count {
        let head = page.get(at..at + ENTRY_HEADER).ok_or_else(|| damaged("truncated entry"))?;
        let seq = u64::from_be_bytes(head[..8].try_into().map_err(|_| damaged("bad entry"))?);
        let len = u32::from_be_bytes(head[8..].try_into().map_err(|_| damaged("bad entry"))?) as usize;
        let start = at + ENTRY_HEADER;
        let end = start.checked_add(len).filter(|e| *e <= page.len()).ok_or_else(|| damaged("entry past the end"))?;
        if seq < key_seq || out.last().is_some_and(|s: &Slot| s.seq >= seq) {
            return Err(damaged("sequence numbers out of order"));
        }
        out.push(Slot { seq, start, end });
        at = end;
    }
    if at != page.len() {
        return Err(damaged("trailing bytes"));
    }
    Ok(out)
}

pub(crate) fn page_of(records: &[(u64, &[u8])]) -> Vec<u8> {
    let len = HEADER + records.iter().map(|(_, r)| ENTRY_HEADER + r.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.push(PAGE_VERSION);
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    for (seq, bytes) in records {
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// Packs consecutive encoded records into pages: `(key, page)` pairs.
pub fn pack(records: &[(u64, Vec<u8>)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut pages = Vec::new();
    let mut current: Vec<(u64, &[u8])> = Vec::new();
    let mut bytes = 0;
    for (seq, record) in records {
        current.push((*seq, record));
        bytes += record.len();
        if current.len() == PAGE_RECORDS || bytes >= PAGE_BYTES {
            pages.push((keys::log(current[0].0), page_of(&current)));
            current.clear();
            bytes = 0;
        }
    }
    if !current.is_empty() {
        pages.push((keys::log(current[0].0), page_of(&current)));
    }
    pages
}

/// The page that holds `seq`, if any: its key's sequence number and its bytes.
pub fn page_for(tree: &sled::Tree, seq: u64) -> Result<Option<(u64, sled::IVec)>, RowsError> {
    let Some(item) = tree.range(keys::log(0)..=keys::log(seq)).next_back() else { return Ok(None) };
    let (k, v) = item?;
    Ok(keys::log_seq(&k).map(|key_seq| (key_seq, v)))
}

/// The stored bytes of record `seq` (`None` if it is not, or no longer, in the log).
pub fn read(tree: &sled::Tree, seq: u64) -> Result<Option<Vec<u8>>, RowsError> {
    Ok(LogPage::holding(tree, seq)?.and_then(|page| page.record(seq).map(<[u8]>::to_vec)))
}

/// One page read from the tree and indexed, kept by a reader that will want its neighbours
/// next (an actor draining a backlog reads its events in order, so one tree lookup serves
/// a page's worth of them).
///
/// A page is written whole by one group commit and only ever shrinks (compaction), so a
/// kept copy can hold a record the tree no longer has, but never lacks one the tree has.
#[derive(Debug, Clone)]
pub struct LogPage {
    bytes: sled::IVec,
    slots: Vec<Slot>,
}

impl LogPage {
    /// The page that holds `seq`, if any.
    pub fn holding(tree: &sled::Tree, seq: u64) -> Result<Option<LogPage>, RowsError> {
        let Some((key_seq, bytes)) = page_for(tree, seq)? else { return Ok(None) };
        let slots = slots(key_seq, &bytes).map_err(RowsError::Page)?;
        Ok(Some(LogPage { bytes, slots }))
    }

    /// Whether `seq` falls inside this page's range (whether or not it is still stored).
    pub fn covers(&self, seq: u64) -> bool {
        matches!((self.slots.first(), self.slots.last()), (Some(a), Some(z)) if a.seq <= seq && seq <= z.seq)
    }

    /// The stored bytes of record `seq`, if this page holds it.
    pub fn record(&self, seq: u64) -> Option<&[u8]> {
        let i = self.slots.binary_search_by_key(&seq, |s| s.seq).ok()?;
        let slot = self.slots[i];
        Some(&self.bytes[slot.start..slot.end])
    }
}

/// The sequence number of the last record in the log (0 if empty).
pub fn last_seq(tree: &sled::Tree) -> Result<u64, RowsError> {
    let Some(item) = tree.scan_prefix([keys::LOG]).next_back() else { return Ok(0) };
    let (k, v) = item?;
    let key_seq = keys::log_seq(&k).unwrap_or(0);
    // A damaged page still tells its first number; the rest cannot be trusted.
    Ok(slots(key_seq, &v).ok().and_then(|s| s.last().map(|s| s.seq)).unwrap_or(key_seq))
}

/// Every record from `from` on, page by page: `(seq, bytes)`, or the damage of a page.
pub fn iter(tree: &sled::Tree, from: u64) -> impl Iterator<Item = Result<(u64, Vec<u8>), RowsError>> + '_ {
    let start = match page_for(tree, from) {
        Ok(Some((key_seq, _))) => key_seq,
        _ => from,
    };
    tree.range(keys::log(start)..)
        .take_while(|item| item.as_ref().map_or(true, |(k, _)| k.first() == Some(&keys::LOG)))
        .flat_map(move |item| -> Vec<Result<(u64, Vec<u8>), RowsError>> {
            let (k, page) = match item {
                Ok(kv) => kv,
                Err(e) => return vec![Err(e.into())],
            };
            let key_seq = keys::log_seq(&k).unwrap_or(0);
            match slots(key_seq, &page) {
                Ok(slots) => slots
                    .into_iter()
                    .filter(|s| s.seq >= from)
                    .map(|s| Ok((s.seq, page[s.start..s.end].to_vec())))
                    .collect(),
                Err(e) => vec![Err(RowsError::Page(e))],
            }
        })
}

/// Removes a record from its page (compaction), staged in `txn` so the removal lands in the
/// same batch as the rows it goes with.
pub fn remove(txn: &mut Txn<'_>, seq: u64) -> Result<(), RowsError> {
    let Some((key_seq, _)) = page_for(txn.tree(), seq)? else { return Ok(()) };
    let rows = txn;
    let key = keys::log(key_seq);
    let Some(page) = rows.get(&key)? else { return Ok(()) };
    let slots = slots(key_seq, &page).map_err(RowsError::Page)?;
    let kept: Vec<(u64, &[u8])> =
        slots.iter().filter(|s| s.seq != seq).map(|s| (s.seq, &page[s.start..s.end])).collect();
    if kept.len() == slots.len() {
        return Ok(());
    }
    if kept.is_empty() {
        rows.delete(key);
    } else {
        rows.put(key, page_of(&kept));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_pack_read_and_shrink() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        let records: Vec<(u64, Vec<u8>)> = (1..=40).map(|s| (s, vec![s as u8; 100 + s as usize])).collect();
        let pages = pack(&records);
        assert_eq!(pages.len(), 3, "16 + 16 + 8");
        for (k, v) in &pages {
            tree.insert(k, v.as_slice()).unwrap();
        }
        assert_eq!(last_seq(&tree).unwrap(), 40);
        for (seq, bytes) in &records {
            assert_eq!(read(&tree, *seq).unwrap().as_ref(), Some(bytes));
        }
        assert_eq!(read(&tree, 41).unwrap(), None);
        // A kept page answers for its whole range and only for it.
        let page = LogPage::holding(&tree, 20).unwrap().unwrap();
        assert!(page.covers(17) && page.covers(32) && !page.covers(16) && !page.covers(33));
        assert_eq!(page.record(25), Some(records[24].1.as_slice()));
        assert_eq!(page.record(33), None);
        let all: Vec<u64> = iter(&tree, 10).map(|r| r.unwrap().0).collect();
        assert_eq!(all, (10..=40).collect::<Vec<_>>());

        // Removing the first record of a page keeps the page findable for the rest.
        let mut rows = Txn::new(&tree);
        remove(&mut rows, 17).unwrap();
        let (batch, _) = rows.into_parts();
        tree.apply_batch(batch).unwrap();
        assert_eq!(read(&tree, 17).unwrap(), None);
        assert_eq!(read(&tree, 18).unwrap().as_ref(), Some(&records[17].1));
        // Removing every record of a page deletes it.
        for seq in 33..=40 {
            let mut rows = Txn::new(&tree);
            remove(&mut rows, seq).unwrap();
            let (batch, _) = rows.into_parts();
            tree.apply_batch(batch).unwrap();
        }
        assert_eq!(last_seq(&tree).unwrap(), 32);
    }

    #[test]
    fn damaged_headers_are_errors_not_panics() {
        let page = page_of(&[(5, b"abc"), (6, b"defg")]);
        assert!(slots(5, &page).is_ok());
        for cut in 0..page.len() {
            let _ = slots(5, &page[..cut]);
        }
        for i in 0..page.len() {
            let mut bad = page.clone();
            bad[i] ^= 0xff;
            let _ = slots(5, &bad);
        }
        assert!(slots(6, &page).is_err(), "a record below the page key");
    }
}
