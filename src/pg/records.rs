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

/// The channel `NOTIFY` wakes other nodes on after each group.
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
}

/// One connection that appends, as a node's writer thread holds it.
pub struct Appender {
    client: Option<tokio_postgres::Client>,
}

/// The head lock, held: the transaction that appends one group.
pub struct Locked<'a> {
    txn: tokio_postgres::Transaction<'a>,
    /// The newest sequence number in the log as of the lock.
    pub last_seq: u64,
}

impl Appender {
    pub fn new() -> Appender {
        Appender { client: None }
    }

    /// Opens a transaction and takes the head lock (connecting first if need be), within
    /// `deadline`.
    pub async fn lock<'a>(&'a mut self, db: &Database, deadline: Duration) -> Result<Locked<'a>, PgError> {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.client = None;
        }
        let client = match &mut self.client {
            Some(client) => client,
            slot => slot.insert(db.connect().await?),
        };
        let locking = async {
            let txn = client.transaction().await?;
            let row = txn.query_one("SELECT last_seq FROM herald.head WHERE id = 1 FOR UPDATE", &[]).await?;
            let last: i64 = row.get(0);
            Ok::<_, PgError>(Locked { txn, last_seq: last as u64 })
        };
        match tokio::time::timeout(deadline, locking).await {
            Ok(locked) => locked,
            Err(_) => Err(PgError::Timeout(deadline)),
        }
    }

    /// Forgets the connection (after an unknown outcome): the next lock connects afresh.
    pub fn reset(&mut self) {
        self.client = None;
    }
}

impl Default for Appender {
    fn default() -> Self {
        Appender::new()
    }
}

impl Locked<'_> {
    /// Records after `after` (up to the head as of the lock), oldest first: what other
    /// nodes appended since this one last folded.
    pub async fn records_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, PgError> {
        read_after(&self.txn, after, limit).await
    }

    /// Appends `records` (their numbers follow `last_seq` without a gap), moves the head,
    /// wakes the other nodes and commits, within `deadline`. Consumes the lock whatever
    /// the outcome.
    pub async fn commit(self, records: &[(u64, Vec<u8>)], deadline: Duration) -> Result<(), AppendError> {
        let Locked { txn, last_seq } = self;
        let mut expected = last_seq + 1;
        for (seq, _) in records {
            if *seq != expected {
                return Err(PgError::Query(format!("record {seq} does not follow {}", expected - 1)).into());
            }
            expected += 1;
        }
        let writing = async {
            if !records.is_empty() {
                let seqs: Vec<i64> = records.iter().map(|(s, _)| *s as i64).collect();
                let bodies: Vec<&[u8]> = records.iter().map(|(_, b)| b.as_slice()).collect();
                txn.execute(
                    "INSERT INTO herald.records (seq, body) SELECT * FROM unnest($1::bigint[], $2::bytea[])",
                    &[&seqs, &bodies],
                )
                .await?;
                let last = (expected - 1) as i64;
                txn.execute("UPDATE herald.head SET last_seq = $1 WHERE id = 1", &[&last]).await?;
                txn.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &last.to_string()]).await?;
            }
            Ok::<_, PgError>(txn)
        };
        let txn = match tokio::time::timeout(deadline, writing).await {
            Ok(Ok(txn)) => txn,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(PgError::Timeout(deadline).into()),
        };
        match tokio::time::timeout(deadline, txn.commit()).await {
            Ok(Ok(())) => Ok(()),
            // The server refused the commit (it rolled back): nothing was written.
            Ok(Err(e)) if e.as_db_error().is_some() => Err(PgError::from(e).into()),
            Ok(Err(_)) | Err(_) => Err(AppendError::Unknown(deadline)),
        }
    }
}

/// Up to `limit` records after `after`, oldest first, on any connection.
pub async fn read_after(
    client: &impl tokio_postgres::GenericClient,
    after: u64,
    limit: usize,
) -> Result<Vec<(u64, Vec<u8>)>, PgError> {
    let rows = client
        .query(
            "SELECT seq, body FROM herald.records WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[&(after as i64), &(limit as i64)],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, Vec<u8>>(1))).collect())
}

/// The newest sequence number appended.
pub async fn head(client: &impl tokio_postgres::GenericClient) -> Result<u64, PgError> {
    let row = client.query_one("SELECT last_seq FROM herald.head WHERE id = 1", &[]).await?;
    Ok(row.get::<_, i64>(0) as u64)
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
