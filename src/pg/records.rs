//! The record log's tables: appending a group under the head lock, and reading what was
//! appended after a sequence number (the tail, and catching up before an append).
//!
//! Invariants:
//! - Sequence numbers are handed out by the appender holding the head lock (`SELECT …
//!   FOR UPDATE` on `herald.head`), which it keeps until its commit: appends are serialized
//!   across every node, so commit order is sequence order, and a reader of `seq > n` sees
//!   a gapless prefix of the log, never a later record without an earlier one.
//! - A group is one transaction: its records, the new head and the wake-up notification
//!   commit together or not at all.
//! - A commit whose answer does not come within the deadline has an unknown outcome: the
//!   connection is dropped (its state is unknown too) and the caller must read the tail to
//!   learn what happened before it appends again.

use super::{Database, PgError};
use std::time::Duration;
use tokio_postgres::Statement;

/// The channel `NOTIFY` wakes other nodes on after each group (schema version 2's
/// `herald.append_at` names it too).
pub const CHANNEL: &str = "herald_log";

/// How an append ended badly.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Nothing was written.
    #[error(transparent)]
    Failed(#[from] PgError),
    /// The commit was sent and no answer came within the deadline: it may or may not have
    /// happened.
    #[error("the commit's outcome is unknown: PostgreSQL did not answer within {0:?}")]
    Unknown(Duration),
    /// A lease the group's records need is no longer this node's (or its epoch moved on):
    /// nothing was written.
    #[error("a lease this group needs was taken over: nothing was written")]
    Fenced,
    /// Another node appended after the head the group was numbered from: nothing was
    /// written.
    #[error("another node appended first: nothing was written")]
    HeadMoved,
}

/// One connection that appends, as a node's writer thread holds it.
///
/// Every append is on the critical path of every acknowledgement and appends are
/// serialized across the cluster by the head lock, so a group costs as few round trips as
/// it can: the statements are prepared once per connection (else each is parsed again, a
/// round trip of its own), `BEGIN` goes out with the lock, and the fence check goes out with
/// the writes — three round trips a group, the commit's wait for a standby included.
pub struct Appender {
    conn: Option<Conn>,
}

/// A connection with the appender's statements prepared on it.
struct Conn {
    client: tokio_postgres::Client,
    /// A transaction was begun and not ended (a [`Locked`] dropped unfinished, a write that
    /// failed): rolled back before the connection is used again. While it is open it holds
    /// the head row, so a caller that stops using the connection after a failure must drop
    /// it ([`Appender::reset`]), which ends the transaction with the session.
    open: bool,
    lock: Statement,
    read: Statement,
    fence: Statement,
    insert: Statement,
    head: Statement,
    notify: Statement,
    append_at: Statement,
}

/// The head lock, held: the transaction that appends one group.
pub struct Locked<'a> {
    conn: &'a mut Conn,
    /// The newest sequence number in the log as of the lock.
    pub last_seq: u64,
}

type Params<'a> = &'a [&'a (dyn tokio_postgres::types::ToSql + Sync)];

const LOCK: &str = "SELECT last_seq FROM herald.head WHERE id = 1 FOR UPDATE";
const READ: &str = "SELECT seq, body FROM herald.records WHERE seq > $1 ORDER BY seq LIMIT $2";
const INSERT: &str = "INSERT INTO herald.records (seq, body) SELECT * FROM unnest($1::bigint[], $2::bytea[])";
const HEAD: &str = "UPDATE herald.head SET last_seq = $1 WHERE id = 1";
const NOTIFY: &str = "SELECT pg_notify($1, $2)";
const APPEND_AT: &str = "SELECT herald.append_at($1, $2, $3, $4, $5, $6)";

impl Appender {
    pub fn new() -> Appender {
        Appender { conn: None }
    }

    /// Opens a transaction and takes the head lock (connecting first if need be), within
    /// `deadline`.
    pub async fn lock<'a>(&'a mut self, db: &Database, deadline: Duration) -> Result<Locked<'a>, PgError> {
        let locking = async {
            let conn = self.conn(db, deadline).await?;
            conn.open = true;
            let (begun, row) = tokio::join!(conn.client.batch_execute("BEGIN"), conn.client.query_one(&conn.lock, &[]));
            begun?;
            let last: i64 = row?.get(0);
            Ok::<_, PgError>(Locked { conn, last_seq: last as u64 })
        };
        match tokio::time::timeout(deadline, locking).await {
            Ok(locked) => locked,
            Err(_) => Err(PgError::Timeout(deadline)),
        }
    }

    /// Up to `limit` records after `after`, oldest first, without the head lock (the tail:
    /// what committed is a gapless prefix, so reading it needs no lock), within `deadline`.
    pub async fn read_after(
        &mut self,
        db: &Database,
        after: u64,
        limit: usize,
        deadline: Duration,
    ) -> Result<Vec<(u64, Vec<u8>)>, PgError> {
        let reading = async {
            let conn = self.conn(db, deadline).await?;
            conn.read_after(after, limit).await
        };
        let read = super::within(deadline, reading).await;
        if read.is_err() {
            self.reset();
        }
        read
    }

    /// The connection, made (and its statements prepared) afresh if there is none or it has
    /// closed; a transaction left open rolled back.
    ///
    /// The server ends a transaction of this connection left idle longer than `deadline`
    /// (`idle_in_transaction_session_timeout`): while open it holds the head row, and a node
    /// frozen mid-append (SIGSTOP, a stalled VM) would otherwise stall every node's appends
    /// for as long as it stays frozen. It could not have been answered within its deadline
    /// anyway: its caller has heard "unknown" and reads the tail.
    async fn conn(&mut self, db: &Database, deadline: Duration) -> Result<&mut Conn, PgError> {
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.conn = None;
        }
        let conn = match &mut self.conn {
            Some(conn) => conn,
            slot => {
                let client = db.connect().await?;
                let idle_ms = deadline.as_millis().clamp(100, i32::MAX as u128);
                client.batch_execute(&format!("SET idle_in_transaction_session_timeout = {idle_ms}")).await?;
                let (lock, read, fence, insert, head, notify, append_at) = tokio::try_join!(
                    client.prepare(LOCK),
                    client.prepare(READ),
                    client.prepare(super::leases::FENCE),
                    client.prepare(INSERT),
                    client.prepare(HEAD),
                    client.prepare(NOTIFY),
                    client.prepare(APPEND_AT),
                )?;
                slot.insert(Conn { client, open: false, lock, read, fence, insert, head, notify, append_at })
            }
        };
        if conn.open {
            conn.client.batch_execute("ROLLBACK").await?;
            conn.open = false;
        }
        Ok(conn)
    }

    /// Appends `records` in one round trip, commit included, if the log's head is still at
    /// `expected` (the numbers of `records` follow it) and every holding in `held` is still
    /// `node`'s: [`AppendError::HeadMoved`] if another node appended first (nothing was
    /// written: fold what it did and append under the lock), [`AppendError::Fenced`] if a
    /// lease moved on. Within `deadline`.
    pub async fn append_at(
        &mut self,
        db: &Database,
        expected: u64,
        records: &[(u64, Vec<u8>)],
        node: &str,
        held: &[super::leases::Holding],
        deadline: Duration,
    ) -> Result<(), AppendError> {
        follows(expected, records)?;
        let seqs: Vec<i64> = records.iter().map(|(s, _)| *s as i64).collect();
        let bodies: Vec<&[u8]> = records.iter().map(|(_, b)| b.as_slice()).collect();
        let parts = super::leases::parts_of(held);
        let epochs: Vec<i64> = held.iter().map(|h| h.epoch as i64).collect();
        let expected = expected as i64;
        let conn = super::within(deadline, self.conn(db, deadline)).await?;
        let params: Params = &[&expected, &seqs, &bodies, &parts, &epochs, &node];
        match tokio::time::timeout(deadline, conn.client.execute(&conn.append_at, params)).await {
            Ok(Ok(_)) => Ok(()),
            // The statement failed, so its transaction rolled back: nothing was written.
            Ok(Err(e)) => match e.code().map(|c| c.code()) {
                Some("HR001") => Err(AppendError::HeadMoved),
                Some("HR002") => Err(AppendError::Fenced),
                Some(_) => Err(PgError::from(e).into()),
                None => Err(AppendError::Unknown(deadline)),
            },
            Err(_) => Err(AppendError::Unknown(deadline)),
        }
    }

    /// Forgets the connection (after an unknown outcome): the next lock connects afresh.
    pub fn reset(&mut self) {
        self.conn = None;
    }
}

impl Default for Appender {
    fn default() -> Self {
        Appender::new()
    }
}

impl Conn {
    async fn read_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, PgError> {
        let rows = self.client.query(&self.read, &[&(after as i64), &(limit as i64)]).await?;
        Ok(rows.iter().map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, Vec<u8>>(1))).collect())
    }
}

impl Locked<'_> {
    /// Records after `after` (up to the head as of the lock), oldest first: what other
    /// nodes appended since this one last folded.
    pub async fn records_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, PgError> {
        self.conn.read_after(after, limit).await
    }

    /// [`Locked::commit_fenced`] for records that need no lease.
    pub async fn commit(self, records: &[(u64, Vec<u8>)], deadline: Duration) -> Result<(), AppendError> {
        self.commit_fenced(records, "", &[], deadline).await
    }

    /// Appends `records` (their numbers follow `last_seq` without a gap), moves the head and
    /// wakes the other nodes — if every holding in `held` is still `node`'s with its epoch
    /// (fencing: those leases stay locked until the commit) — and commits, within `deadline`.
    /// Consumes the lock whatever the outcome.
    pub async fn commit_fenced(
        self,
        records: &[(u64, Vec<u8>)],
        node: &str,
        held: &[super::leases::Holding],
        deadline: Duration,
    ) -> Result<(), AppendError> {
        let Locked { conn, last_seq } = self;
        let last = follows(last_seq, records)? as i64;
        let writing = async {
            let c = &conn.client;
            let fence = async {
                if held.is_empty() {
                    return Ok(true);
                }
                let rows = c.query(&conn.fence, &[&super::leases::parts_of(held), &node]).await?;
                Ok::<_, PgError>(super::leases::still_held(&rows, held))
            };
            let write = async {
                if records.is_empty() {
                    return Ok(());
                }
                let seqs: Vec<i64> = records.iter().map(|(s, _)| *s as i64).collect();
                let bodies: Vec<&[u8]> = records.iter().map(|(_, b)| b.as_slice()).collect();
                let notice = last.to_string();
                let (insert, head, notify): (Params, Params, Params) =
                    (&[&seqs, &bodies], &[&last], &[&CHANNEL, &notice]);
                tokio::try_join!(
                    c.execute(&conn.insert, insert),
                    c.execute(&conn.head, head),
                    c.execute(&conn.notify, notify),
                )?;
                Ok::<_, PgError>(())
            };
            // One round trip: the fence's rows are locked before the commit is sent.
            let (fence, write) = tokio::join!(fence, write);
            Ok::<_, PgError>((fence?, write))
        };
        let (held_still, written) = match tokio::time::timeout(deadline, writing).await {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(PgError::Timeout(deadline).into()),
        };
        if !held_still {
            // The head row stays locked until this transaction ends, and a fenced group does
            // not make the caller drop the connection: end it now, or every other node's
            // appends wait for this node's next one.
            if let Ok(Ok(())) = tokio::time::timeout(deadline, conn.client.batch_execute("ROLLBACK")).await {
                conn.open = false;
            }
            return Err(AppendError::Fenced);
        }
        written?;
        match tokio::time::timeout(deadline, conn.client.batch_execute("COMMIT")).await {
            Ok(Ok(())) => {
                conn.open = false;
                Ok(())
            }
            // The server refused the commit (it rolled back): nothing was written.
            Ok(Err(e)) if e.as_db_error().is_some() => {
                conn.open = false;
                Err(PgError::from(e).into())
            }
            Ok(Err(_)) | Err(_) => Err(AppendError::Unknown(deadline)),
        }
    }
}

impl Locked<'_> {
    /// Ends the transaction without writing, letting the head lock go at once (a dropped
    /// [`Locked`] holds it until the connection's next use), within `deadline`.
    pub async fn release(self, deadline: Duration) -> Result<(), PgError> {
        let Locked { conn, .. } = self;
        match tokio::time::timeout(deadline, conn.client.batch_execute("ROLLBACK")).await {
            Ok(Ok(())) => {
                conn.open = false;
                Ok(())
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(PgError::Timeout(deadline)),
        }
    }

    /// Retention: appends `record` (the removal's own record, numbered after `last_seq`),
    /// deletes the records `removed` lists, notes them in `herald.removed` and commits —
    /// all in this transaction, within `deadline`. Consumes the lock whatever the outcome.
    pub async fn commit_removal(
        self,
        record: (u64, Vec<u8>),
        removed: &[u64],
        deadline: Duration,
    ) -> Result<(), AppendError> {
        let Some(runs) = runs_of(removed) else { return self.commit(&[record], deadline).await };
        let (low, high) = (runs[0].0.saturating_sub(1) as i64, (runs[runs.len() - 1].1 + 1) as i64);
        let seqs: Vec<i64> = removed.iter().map(|s| *s as i64).collect();
        let noting = async {
            let c = &self.conn.client;
            let (gone, span): (Params, Params) = (&[&seqs], &[&low, &high]);
            let (_, touching) = tokio::try_join!(
                c.execute("DELETE FROM herald.records WHERE seq = ANY($1)", gone),
                c.query("SELECT first, last FROM herald.removed WHERE last >= $1 AND first <= $2", span),
            )?;
            let mut ranges = ranges_of(&touching);
            ranges.extend(runs);
            c.execute("DELETE FROM herald.removed WHERE last >= $1 AND first <= $2", span).await?;
            note_removed(c, &merge(ranges)).await
        };
        match tokio::time::timeout(deadline, noting).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(PgError::Timeout(deadline).into()),
        }
        self.commit(&[record], deadline).await
    }
}

/// The runs of consecutive numbers in `seqs` (any order), as `[first, last]`, ascending;
/// `None` for none.
fn runs_of(seqs: &[u64]) -> Option<Vec<(u64, u64)>> {
    let mut sorted = seqs.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for s in sorted {
        match runs.last_mut() {
            Some(run) if run.1 + 1 == s => run.1 = s,
            _ => runs.push((s, s)),
        }
    }
    (!runs.is_empty()).then_some(runs)
}

/// Ranges merged where they overlap or touch, ascending.
fn merge(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (first, last) in ranges {
        match out.last_mut() {
            Some(prev) if first <= prev.1.saturating_add(1) => prev.1 = prev.1.max(last),
            _ => out.push((first, last)),
        }
    }
    out
}

/// Every range of sequence numbers retention removed, ascending (none on a schema older
/// than version 3, which had no retention).
pub async fn removed_ranges(client: &impl tokio_postgres::GenericClient) -> Result<Vec<(u64, u64)>, PgError> {
    let exists = client.query_one("SELECT to_regclass('herald.removed') IS NOT NULL", &[]).await?;
    if !exists.get::<_, bool>(0) {
        return Ok(Vec::new());
    }
    let rows = client.query("SELECT first, last FROM herald.removed ORDER BY first", &[]).await?;
    Ok(ranges_of(&rows))
}

/// Rows of `(first, last)` as ranges.
fn ranges_of(rows: &[tokio_postgres::Row]) -> Vec<(u64, u64)> {
    rows.iter().map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64)).collect()
}

/// Inserts `ranges` into `herald.removed` (the caller deleted what they replace).
async fn note_removed(client: &impl tokio_postgres::GenericClient, ranges: &[(u64, u64)]) -> Result<(), PgError> {
    let firsts: Vec<i64> = ranges.iter().map(|r| r.0 as i64).collect();
    let lasts: Vec<i64> = ranges.iter().map(|r| r.1 as i64).collect();
    client
        .execute(
            "INSERT INTO herald.removed (first, last) SELECT * FROM unnest($1::bigint[], $2::bigint[])",
            &[&firsts, &lasts],
        )
        .await?;
    Ok(())
}

/// The newest sequence number retention removed (0: none).
pub async fn removed_through(client: &impl tokio_postgres::GenericClient) -> Result<u64, PgError> {
    let row = client.query_one("SELECT coalesce(max(last), 0) FROM herald.removed", &[]).await?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// What `herald migrate` brings into an empty cluster besides the records.
#[derive(Debug, Clone)]
pub struct Import {
    /// The new cluster's id.
    pub cluster_id: Vec<u8>,
    /// The single node's id key, so its public ids stay what they were.
    pub id_key: Vec<u8>,
    /// The single node's seal canary, so only nodes with its seal key start.
    pub seal_canary: Option<Vec<u8>>,
    /// The last sequence number the node handed out (at or past its last record).
    pub head: u64,
}

/// Why an import did not happen (nothing was written).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the database already holds a cluster's log (up to record {0}): herald migrate moves a node into an empty cluster only")]
    NotEmpty(u64),
    #[error("cannot read the data directory's log: {0}")]
    Source(String),
    #[error(transparent)]
    Database(#[from] PgError),
}

/// Imports a single node's log into an empty cluster in one transaction under the head
/// lock: every record `next_chunk` yields (ascending, `None` ends them) under its own
/// sequence number, the numbers it lacks up to `import.head` noted as removed (the node's
/// compaction took them), the head, and the shared settings. Each statement within
/// `deadline`. Returns how many records it copied.
pub async fn import(
    db: &Database,
    import: &Import,
    mut next_chunk: impl FnMut() -> Result<Option<Vec<(u64, Vec<u8>)>>, String>,
    deadline: Duration,
) -> Result<u64, ImportError> {
    let mut client = super::within(deadline, db.connect()).await?;
    let tx = super::within(deadline, async { Ok(client.transaction().await?) }).await?;
    let last: i64 = super::within(deadline, async { Ok(tx.query_one(LOCK, &[]).await?.get(0)) }).await?;
    if last > 0 {
        return Err(ImportError::NotEmpty(last as u64));
    }
    let (mut copied, mut after, mut gaps) = (0u64, 0u64, Vec::new());
    while let Some(chunk) = next_chunk().map_err(ImportError::Source)? {
        let mut seqs = Vec::with_capacity(chunk.len());
        for (seq, _) in &chunk {
            if *seq <= after || *seq > import.head {
                return Err(ImportError::Source(format!("record {seq} is out of order (after {after})")));
            }
            if *seq > after + 1 {
                gaps.push((after + 1, *seq - 1));
            }
            after = *seq;
            seqs.push(*seq as i64);
        }
        let bodies: Vec<&[u8]> = chunk.iter().map(|(_, b)| b.as_slice()).collect();
        super::within(deadline, async { Ok(tx.execute(INSERT, &[&seqs, &bodies]).await?) }).await?;
        copied += chunk.len() as u64;
    }
    if import.head > after {
        gaps.push((after + 1, import.head));
    }
    let head = import.head as i64;
    let mut settings: Vec<(&str, &[u8])> = vec![("cluster_id", &import.cluster_id), ("id_key", &import.id_key)];
    if let Some(canary) = &import.seal_canary {
        settings.push(("seal_canary", canary));
    }
    super::within(deadline, async {
        note_removed(&tx, &gaps).await?;
        tx.execute(HEAD, &[&head]).await?;
        // A node that started on this empty database and stopped before writing anything
        // may have created settings: a migrated node's replace them.
        for (key, value) in settings {
            tx.execute(
                "INSERT INTO herald.meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&key, &value],
            )
            .await?;
        }
        Ok(())
    })
    .await?;
    super::within(deadline, async { Ok(tx.commit().await?) }).await?;
    Ok(copied)
}

/// That `records` are numbered from `after + 1` without a gap; the last number.
fn follows(after: u64, records: &[(u64, Vec<u8>)]) -> Result<u64, PgError> {
    let mut last = after;
    for (seq, _) in records {
        if *seq != last + 1 {
            return Err(PgError::Query(format!("record {seq} does not follow {last}")));
        }
        last = *seq;
    }
    Ok(last)
}

/// Up to `limit` records after `after`, oldest first, on any connection.
pub async fn read_after(
    client: &impl tokio_postgres::GenericClient,
    after: u64,
    limit: usize,
) -> Result<Vec<(u64, Vec<u8>)>, PgError> {
    let rows = client.query(READ, &[&(after as i64), &(limit as i64)]).await?;
    Ok(rows.iter().map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, Vec<u8>>(1))).collect())
}

/// The newest sequence number appended.
pub async fn head(client: &impl tokio_postgres::GenericClient) -> Result<u64, PgError> {
    let row = client.query_one("SELECT last_seq FROM herald.head WHERE id = 1", &[]).await?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// The shared setting `key`, if some node created it.
pub async fn setting(client: &impl tokio_postgres::GenericClient, key: &str) -> Result<Option<Vec<u8>>, PgError> {
    let row = client.query_opt("SELECT value FROM herald.meta WHERE key = $1", &[&key]).await?;
    Ok(row.map(|r| r.get(0)))
}

/// The shared setting `key`, created as `generate()` by whichever node asks first (one
/// value for the whole cluster however many nodes ask at once).
pub async fn shared_setting(
    client: &impl tokio_postgres::GenericClient,
    key: &str,
    generate: impl FnOnce() -> Vec<u8>,
) -> Result<Vec<u8>, PgError> {
    let fresh = generate();
    client
        .execute("INSERT INTO herald.meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", &[&key, &fresh])
        .await?;
    let row = client.query_one("SELECT value FROM herald.meta WHERE key = $1", &[&key]).await?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_numbers_are_kept_as_merged_runs() {
        assert_eq!(runs_of(&[]), None);
        assert_eq!(runs_of(&[7, 3, 4, 5, 9, 8, 4]), Some(vec![(3, 5), (7, 9)]));
        // A run that fills the hole between two ranges joins them; apart ones stay apart.
        assert_eq!(merge(vec![(1, 4), (10, 12), (5, 9), (20, 20)]), vec![(1, 12), (20, 20)]);
        assert_eq!(merge(vec![(5, 5), (1, 3)]), vec![(1, 3), (5, 5)]);
    }
}
