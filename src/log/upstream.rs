//! The log kept in PostgreSQL (cluster mode, `docs/cluster.md`): this node's tree becomes a
//! fold of a log every node appends to, and this module is what connects the two.
//!
//! The writer appends a group under the database's head lock: it folds what other nodes
//! appended since its last look ([`fold_fetched`]), judges its commands on that fold, and
//! only once the transaction has committed — on the primary and, with synchronous
//! replication, a standby — applies the group to the tree and answers. Between appends it
//! folds what others wrote when a notification (or the poll) says there is news.
//!
//! Invariants:
//! - The tree never holds a record the database does not: it is applied after the commit.
//!   So the tree needs no flush to acknowledge anything — after a crash it is some prefix
//!   of the log, and the node folds the rest again from the database.
//! - The tree's `applied` marker is the last sequence number folded; every record at or
//!   below it that the database still holds is in the tree (or compacted from both).
//! - A tree folds one cluster's log only ([`keys::CLUSTER`]); a single node's own log, or a
//!   fold the database is behind (restored from a backup), is refused, never mixed in.
//! - Retention removes records from the database and from every fold alike: a
//!   [`Record::HistoryRemoved`] lists them, appended in the transaction that deletes them, and
//!   folding it removes them here. A fold older than some removed record starts afresh.

use super::keys;
use super::pages;
use super::projection;
use super::record::Stored;
use super::rows::Txn;
use super::OpenError;
use crate::pg::leases::Holding;
use crate::pg::records::Appender;
use crate::pg::{self, Database, PgError};
use crate::storage::{AppendError, Change, Command, Health, Precondition, Record, Rejection};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A failure that lasts is logged at most once per this.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// Records read from the database at a time when catching up.
pub const CHUNK: usize = 2_048;

/// What cluster mode opens the log with.
#[derive(Clone)]
pub struct Cluster {
    /// The database (its URL and client threads).
    pub db: Arc<Database>,
    /// Longest any append or read of the database may take (`store_timeout`).
    pub timeout: Duration,
    /// How often the node looks for other nodes' appends when no notification came.
    pub poll: Duration,
    /// This node's name among the cluster's (its leases are held under it).
    pub node: String,
    /// `ownership_ttl`: how long a lease lasts unrenewed.
    pub ownership_ttl: Duration,
    /// How many partitions the webhooks are hashed into (the first node's number holds
    /// for the whole cluster).
    pub partitions: u32,
    /// Told how long each group's append to the database took (the metrics).
    pub commit_timer: Option<crate::storage::AppendTimer>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("db", &self.db.shown_url()).field("timeout", &self.timeout).finish()
    }
}

/// The writer's connection to the database, and what it shares with the listener.
pub(crate) struct Upstream {
    pub cluster: Cluster,
    pub appender: Appender,
    /// The newest sequence number folded here: the listener wakes the writer only for
    /// notifications past it (each node is told of its own appends too).
    pub folded: Arc<AtomicU64>,
    /// Keeps the notification listener running.
    pub listener: Option<pg::Listener>,
    /// What this node's keeper holds: records of webhooks' work are appended under it.
    pub holdings: Option<tokio::sync::watch::Receiver<pg::leases::Holdings>>,
    /// Attempts' records were lost to a failure (nothing written): once the database takes
    /// appends again, the actors start over from the log, as after a reopen.
    pub resync_due: bool,
    /// The tree holds folds not yet flushed, and when it last was.
    pub unflushed: bool,
    pub flushed_at: Instant,
    /// The last group found nothing other nodes appended since this node's fold, so the
    /// next is appended optimistically, in one round trip (see the writer).
    pub uncontended: bool,
    /// The log's health says the database failed (this module set it, and clears it).
    failed: bool,
    /// The same failure is logged once, then at most every [`LOG_EVERY`].
    logged_at: Option<Instant>,
}

impl Upstream {
    pub fn new(cluster: Cluster, folded_to: u64) -> Upstream {
        Upstream {
            cluster,
            appender: Appender::new(),
            folded: Arc::new(AtomicU64::new(folded_to)),
            listener: None,
            holdings: None,
            resync_due: false,
            unflushed: false,
            flushed_at: Instant::now(),
            uncontended: false,
            failed: false,
            logged_at: None,
        }
    }

    /// The database failed: the log's health says so (readiness; the actors start nothing
    /// they could not record) until [`Upstream::working`].
    pub fn failing(&mut self, health: &Health, why: &str) {
        health.fail(why.to_owned());
        self.failed = true;
        if self.logged_at.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            self.logged_at = Some(Instant::now());
            tracing::error!(error = %why, "the log's database failed");
        }
    }

    /// Whether the database failed on its last use.
    pub fn is_failing(&self) -> bool {
        self.failed
    }

    /// The database answered again.
    pub fn working(&mut self, health: &Health) {
        if self.failed {
            self.failed = false;
            self.logged_at = None;
            health.recovered();
            tracing::info!("the log's database answers again");
        }
    }

    pub fn set_folded(&self, seq: u64) {
        self.folded.store(seq, Ordering::Relaxed);
    }

    /// Up to [`CHUNK`] records after `after`, without the head lock. Blocks.
    pub fn read_after(&mut self, after: u64) -> Result<Vec<(u64, Vec<u8>)>, PgError> {
        let Upstream { cluster, appender, .. } = self;
        cluster.db.block_on(appender.read_after(&cluster.db, after, CHUNK, cluster.timeout))
    }
}

/// Sorts out the commands that record webhooks' work ([`Precondition::Owned`]): those
/// whose webhooks' partitions this node no longer holds are refused at once (their records
/// would be fenced off anyway); for the others, returns the holdings the append must find
/// current in its transaction. A partition leaving, or past the local deadline, still
/// takes the records of attempts that finish within the handover's grace: the epoch check
/// in the transaction is what keeps a late holder's records out.
pub(crate) fn owned_holdings<R>(
    up: &Upstream,
    appends: Vec<(Command, R)>,
    refuse: impl Fn(R, AppendError),
) -> (Vec<(Command, R)>, Vec<Holding>) {
    let Some(holdings) = &up.holdings else { return (appends, Vec::new()) };
    let h = holdings.borrow().clone();
    let mut fence = std::collections::BTreeSet::new();
    let mut kept = Vec::with_capacity(appends.len());
    for (cmd, reply) in appends {
        let needed: Option<Vec<Holding>> = cmd
            .preconditions
            .iter()
            .filter_map(|rule| match rule {
                Precondition::Owned(webhooks) => Some(webhooks),
                _ => None,
            })
            .flatten()
            .map(|w| h.recording_under(w.as_str()))
            .collect();
        match needed {
            Some(needed) => {
                fence.extend(needed);
                kept.push((cmd, reply));
            }
            None => refuse(reply, not_owner()),
        }
    }
    (kept, fence.into_iter().collect())
}

/// What a command recording work this node no longer owns is refused with.
pub(crate) fn not_owner() -> AppendError {
    Rejection::Conflict("this node no longer holds the lease of the webhook's work".into()).into()
}

/// Whether a command records webhooks' work (an actor's attempts).
pub(crate) fn records_work(cmd: &Command) -> bool {
    cmd.preconditions.iter().any(|p| matches!(p, Precondition::Owned(_)))
}

/// Whether a notification's payload (the sequence number a group ended at) is news to a
/// node that has folded up to `folded`. A payload that does not parse is news: looking
/// costs one query, missing an append costs a poll interval.
pub fn is_news(payload: Option<&str>, folded: u64) -> bool {
    match payload.map(str::parse::<u64>) {
        Some(Ok(seq)) => seq > folded,
        _ => true,
    }
}

/// Folds records fetched from the database into `txn`, in order: their effects, their
/// bytes for the log pages (`encoded`), and what the delivery engine hears (`notes`).
/// `next_seq` moves past the last one. A record this binary cannot decode (written by a
/// newer node) is kept in the log unfolded and reported.
pub(crate) fn fold_fetched(
    txn: &mut Txn<'_>,
    fetched: Vec<(u64, Vec<u8>)>,
    next_seq: &mut u64,
    encoded: &mut Vec<(u64, Vec<u8>)>,
    mut notes: Option<&mut Vec<Change>>,
) -> Result<(), AppendError> {
    for (seq, body) in fetched {
        if seq < *next_seq {
            // Already folded (a read raced an append of this node's own): never twice.
            continue;
        }
        match Record::decode(&body) {
            Ok(record) => {
                projection::apply(txn, seq, &record)?;
                if let Record::HistoryRemoved(removal) = &record {
                    super::compaction::remove(txn, removal, &mut Default::default())?;
                }
                if let Some(notes) = notes.as_deref_mut() {
                    notes.extend(Change::of(seq, record));
                }
            }
            Err(e) => tracing::error!(seq, error = %e, "a record in the database does not decode: not folded"),
        }
        encoded.push((seq, body));
        *next_seq = seq + 1;
    }
    Ok(())
}

/// Stages the log pages of `encoded` and the `applied` marker at `last` in `txn`.
pub(crate) fn stage_pages(txn: &mut Txn<'_>, encoded: &[(u64, Vec<u8>)], last: u64) {
    use super::rows::Rows;
    for (key, page) in pages::pack(encoded) {
        txn.put(key, page);
    }
    txn.put(keys::APPLIED.to_vec(), last.to_be_bytes().to_vec());
}

/// What opening found in the database for this node's tree.
pub(crate) struct Joined {
    /// Records folded to bring the tree up to the database's head.
    pub folded: u64,
}

/// Ties `tree` to the cluster's log and folds it up to the database's head: the cluster's
/// id and id key are created once for the whole cluster; a tree that folds something else,
/// or is ahead of the database, is refused. Blocks.
pub(crate) fn join(tree: &sled::Tree, cluster: &Cluster) -> Result<Joined, OpenError> {
    let db = &cluster.db;
    let (cluster_id, id_key, head, removed_through) = db
        .block_within(cluster.timeout, async {
            let client = db.connect().await?;
            let id =
                pg::records::shared_setting(&client, "cluster_id", || crate::model::IdKey::generate().0[..16].to_vec())
                    .await?;
            let key =
                pg::records::shared_setting(&client, "id_key", || crate::model::IdKey::generate().0.to_vec()).await?;
            let head = pg::records::head(&client).await?;
            let removed_through = pg::records::removed_through(&client).await?;
            Ok::<_, PgError>((id, key, head, removed_through))
        })
        .map_err(OpenError::Store)?;
    let id_key = crate::model::IdKey(
        id_key.as_slice().try_into().map_err(|_| OpenError::Joined("the database's id key is damaged".into()))?,
    );
    let mut applied = super::applied_seq(tree)?;
    match tree.get(keys::CLUSTER)? {
        Some(v) if v.as_ref() == cluster_id.as_slice() => {}
        Some(_) => {
            return Err(OpenError::Joined(
                "data_dir holds the fold of another cluster's log; give this node an empty data_dir (in cluster \
                 mode it is a cache, refolded from the database)"
                    .into(),
            ))
        }
        None if applied > 0 || super::last_seq(tree)? > 0 => {
            return Err(OpenError::Joined(
                "data_dir holds a single node's log: `herald migrate --from <data_dir> --to <store>` moves it \
                 into an empty cluster's database (once); a node of a cluster starts on an empty data_dir"
                    .into(),
            ))
        }
        None => {
            tree.insert(keys::CLUSTER, cluster_id.as_slice())?;
        }
    }
    if applied > 0 && removed_through > applied {
        // Records this fold never saw were removed, and with them, maybe, the removal
        // records that would have taken their events out of it: only a fold from the start
        // is exact. (A node stopped for less than `retention` never gets here: retention
        // removes only records older than that.)
        tracing::warn!(
            folded = applied,
            removed_through,
            "this node's fold is older than the history the cluster keeps: folding the database's log afresh"
        );
        tree.clear()?;
        tree.insert(keys::CLUSTER, cluster_id.as_slice())?;
        applied = 0;
    }
    if applied > head {
        return Err(OpenError::Joined(format!(
            "this node has folded up to record {applied} but the database's log ends at {head} (was it restored \
             from a backup?); give this node an empty data_dir to fold the database's log afresh"
        )));
    }
    if tree.get(keys::ID_KEY)?.as_deref() != Some(&id_key.0[..]) {
        tree.insert(keys::ID_KEY, &id_key.0)?;
    }
    let mut upstream = Upstream::new(cluster.clone(), applied);
    let mut next_seq = applied + 1;
    let mut folded = 0;
    while next_seq <= head {
        let fetched = upstream.read_after(next_seq - 1).map_err(OpenError::Store)?;
        if fetched.is_empty() {
            // The newest records were compacted: their numbers are still taken.
            next_seq = head + 1;
            break;
        }
        folded += fetched.len() as u64;
        let mut txn = Txn::new(tree);
        let mut encoded = Vec::with_capacity(fetched.len());
        fold_fetched(&mut txn, fetched, &mut next_seq, &mut encoded, None)
            .map_err(|e| OpenError::Joined(format!("cannot fold the database's log: {e}")))?;
        stage_pages(&mut txn, &encoded, next_seq - 1);
        let (batch, _) = txn.into_parts();
        tree.apply_batch(batch)?;
    }
    if next_seq - 1 > applied {
        let mut txn = Txn::new(tree);
        stage_pages(&mut txn, &[], next_seq - 1);
        tree.apply_batch(txn.into_parts().0)?;
    }
    tree.flush()?;
    Ok(Joined { folded })
}

/// Appends `records` to a cluster's log straight in the database, under the head lock like
/// any node's group, for a command run beside the nodes (`herald admin-token reset`): the
/// nodes fold them within moments (the append's notification wakes them). No precondition
/// is judged: what is appended this way must hold whatever the log says. Returns the last
/// sequence number. Blocks.
pub fn append_beside(db: &Database, timeout: Duration, records: &[Record]) -> Result<u64, OpenError> {
    let mut bodies = Vec::with_capacity(records.len());
    for r in records {
        bodies.push(r.encode().map_err(|e| OpenError::Joined(format!("cannot encode a record: {e}")))?);
    }
    db.block_on(async {
        let mut appender = Appender::new();
        let locked = appender.lock(db, timeout).await.map_err(OpenError::Store)?;
        let first = locked.last_seq + 1;
        let numbered: Vec<(u64, Vec<u8>)> = (first..).zip(bodies).collect();
        let last = first + numbered.len() as u64 - 1;
        match locked.commit(&numbered, timeout).await {
            Ok(()) => Ok(last),
            Err(pg::records::AppendError::Failed(e)) => Err(OpenError::Store(e)),
            Err(other) => Err(OpenError::Joined(other.to_string())),
        }
    })
}

/// What `herald migrate` moved into the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// Records copied, under their own sequence numbers.
    pub records: u64,
    /// The last sequence number the node had handed out: the cluster's head.
    pub head: u64,
    /// Numbers up to the head the node's compaction had removed (noted as removed).
    pub removed: u64,
}

/// Why `herald migrate` moved nothing.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("{0} holds a cluster node's cache, not a single node's log: there is nothing to migrate")]
    ClusterCache(String),
    #[error("{dir}'s log does not verify clean, so it is not moved; `herald verify` shows:\n{report}")]
    NotClean { dir: String, report: super::VerifyReport },
    #[error("{0}'s log has no id key (it was never opened by `herald serve`?)")]
    NoIdKey(String),
    #[error(transparent)]
    Import(#[from] pg::records::ImportError),
    #[error(transparent)]
    Rows(#[from] super::rows::RowsError),
}

/// Records copied per statement.
const MIGRATE_CHUNK: usize = 1_000;

/// Moves the log of a stopped single node in `dir` into an empty cluster's database, in
/// one transaction: every record under its own sequence number (the numbers compaction
/// took noted as removed), the head at the last number the node handed out, a new cluster
/// id, the node's id key (its public ids stay valid) and its seal canary (only nodes with
/// its seal key start). `dir` is only read: it stays a single node's log. Blocks.
pub fn migrate(dir: &std::path::Path, db: &Database, timeout: Duration) -> Result<Migrated, MigrateError> {
    let shown = dir.display().to_string();
    let tree = super::open_for_inspection(dir)?;
    if tree.get(keys::CLUSTER).map_err(OpenError::from)?.is_some() {
        return Err(MigrateError::ClusterCache(shown));
    }
    let report = super::verify::verify(&tree)?;
    if !report.is_clean() {
        return Err(MigrateError::NotClean { dir: shown, report });
    }
    let id_key = tree.get(keys::ID_KEY).map_err(OpenError::from)?.ok_or_else(|| MigrateError::NoIdKey(shown))?;
    let head = super::applied_seq(&tree)?.max(super::last_seq(&tree)?);
    let seal_canary = match std::fs::read_to_string(dir.join(crate::security::seal::CANARY_FILE)) {
        Ok(text) => Some(text.trim().as_bytes().to_vec()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(OpenError::Joined(format!("cannot read the seal canary: {e}")).into()),
    };
    let import = pg::records::Import {
        cluster_id: crate::model::IdKey::generate().0[..16].to_vec(),
        id_key: id_key.to_vec(),
        seal_canary,
        head,
    };
    let mut records = pages::iter(&tree, 0);
    let next_chunk = || {
        let mut chunk = Vec::with_capacity(MIGRATE_CHUNK);
        for item in records.by_ref() {
            chunk.push(item.map_err(|e| e.to_string())?);
            if chunk.len() == MIGRATE_CHUNK {
                break;
            }
        }
        Ok((!chunk.is_empty()).then_some(chunk))
    };
    let copied = db.block_on(pg::records::import(db, &import, next_chunk, timeout))?;
    Ok(Migrated { records: copied, head, removed: head - copied })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_later_sequence_number_is_news() {
        assert!(is_news(Some("11"), 10));
        assert!(!is_news(Some("10"), 10));
        assert!(!is_news(Some("3"), 10));
        assert!(is_news(None, 10), "a new connection may have missed notifications");
        assert!(is_news(Some("garbage"), 10));
    }
}
