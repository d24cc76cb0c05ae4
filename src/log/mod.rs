//! The append-only log in sled, and the projection folded from it: the first implementation
//! of the storage interface ([`Log`] is a [`Ledger`]).
//!
//! Everything Herald knows is a record in this log; every row that answers a query is a
//! fold of those records (`projection`). The two live in one sled tree so that one atomic
//! batch and one flush make a record and its effect durable together (`writer`), which
//! makes the stored rows a checkpoint that is always exactly as new as the log: start-up
//! reads the rows, not the history, and its time does not grow with the history.
//!
//! Every module here is private: above the log, nothing names a key, a row version, the
//! codec, sled or the tree. It imports `storage`, `model`, `security` and `telemetry` only.
//!
//! - `codec` — the version byte + CRC framing of every stored value.
//! - `record` — the records' stored form, every version's decoder.
//! - `keys` — the key space of the tree.
//! - `pages` — records packed into log pages.
//! - `rows` — the row view a fold writes through (staged over sled, or in memory).
//! - `projection` — the fold.
//! - `preconditions` — each `Precondition` judged against the staged rows.
//! - `writer` — the single writer thread with group commit, and what it does when a write
//!   to disk fails (reopen from what is durable).
//! - `store` — the open database readers take for each request.
//! - `room` — free disk space: what the writer admits, and the space it keeps in reserve.
//! - `compaction` — retention.
//! - `index` — the chunked indexes lists read newest first (account events, webhook
//!   deliveries).
//! - `window` — a webhook's first due deliveries.
//! - `summary` — per-minute counters and event names seen, per account.
//! - `catalog` — the catalog loaded from the rows and kept in step with each commit.
//! - `verify` — a fresh fold of the whole log, compared with the stored projection.
//! - `rewrite` — a stopped node's log copied into a fresh directory, records transformed.
//! - [`load`] — a realistic mixed append load (`herald stress-log`, benchmarks).

mod catalog;
mod codec;
mod compaction;
mod index;
mod keys;
pub mod load;
mod pages;
mod preconditions;
mod projection;
mod record;
mod rewrite;
mod room;
mod rows;
mod store;
mod summary;
#[cfg(test)]
mod tests;
mod upgrade;
mod upstream;
mod verify;
mod window;
mod writer;

pub use compaction::{CompactionPolicy, CompactionReport};
pub use rewrite::{rewrite, RewriteError, Rewritten};
/// Free space the log keeps for its own writes beyond `min_free_disk`.
pub use room::SAFETY as DISK_MARGIN;
pub use upstream::{append_beside, migrate, Cluster, MigrateError, Migrated};
pub use verify::{NodeReport, StoreReport, VerifyReport, VerifyStoreError};

use crate::model::{IdKey, WebhookId};
use crate::security::create_private_dir;
use crate::storage::{
    AppendError, AppendTimer, Appended, Catalog, Command, Counters, DeliveryRow, EventEntry, EventIngested, Health,
    IntakeEntry, Ledger, Observer, Queued, Read, Record,
};
use futures_util::future::BoxFuture;
use record::Stored;
use rows::{Rows, RowsError, Txn};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use store::Store;
use writer::Writer;

/// Name of the sled tree holding records and rows.
pub(crate) const TREE: &str = "herald";

/// Errors of opening the log.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("data directory {0} is in use by another process (is herald already running?)")]
    Locked(PathBuf),
    #[error("cannot open the log in {path}: {source}")]
    Sled { path: PathBuf, source: sled::Error },
    /// The file system is full: opening needs room for a snapshot of sled's page table.
    #[error(
        "cannot open the log in {path}: no space left on its file system ({free} bytes free); \
         free some space and try again (nothing in the data directory was changed)"
    )]
    NoSpace { path: PathBuf, free: u64 },
    #[error(transparent)]
    Rows(#[from] RowsError),
    #[error("cannot read the log: {0}")]
    Read(#[from] sled::Error),
    #[error("cannot start the log writer: {0}")]
    Thread(std::io::Error),
    /// Cluster mode: the database failed.
    #[error(transparent)]
    Store(crate::pg::PgError),
    /// Cluster mode: this node's tree cannot be a fold of the database's log.
    #[error("{0}")]
    Joined(String),
}

/// How the log is opened.
#[derive(Debug, Clone)]
pub struct LogOptions {
    pub compaction: CompactionPolicy,
    /// How many due deliveries per webhook recovery loads into memory; the rest stay on disk
    /// until the actor pages them in.
    pub queue_window: usize,
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
    /// Told each writer command's time to its flush (metrics), if anyone listens.
    pub append_timer: Option<AppendTimer>,
    /// `min_free_disk`: ingest is admitted only while this much would stay free.
    pub min_free_bytes: u64,
    /// `disk_reserve`: space held in `<data_dir>/reserved-space` for when the disk fills.
    pub reserve_bytes: u64,
    /// Cluster mode: the database the log is kept in (the tree in `dir` is its fold).
    pub cluster: Option<Cluster>,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            compaction: CompactionPolicy {
                retention: Duration::from_secs(7 * 86_400),
                dead_retention: Duration::from_secs(30 * 86_400),
                idempotency_window: Duration::from_secs(86_400),
                interval: Duration::from_secs(60),
            },
            queue_window: 1024,
            cache_bytes: 256 << 20,
            append_timer: None,
            min_free_bytes: 0,
            reserve_bytes: 0,
            cluster: None,
        }
    }
}

/// What start-up found.
#[derive(Debug, Default)]
pub struct Recovery {
    pub duration: Duration,
    /// Records after the `applied` marker folded at start (0 unless the last run was cut
    /// between a write and its fold, which the single-batch commit rules out).
    pub tail_records: u64,
    pub last_seq: u64,
    /// The first `queue_window` due deliveries of each live webhook, in due order.
    pub queues: HashMap<WebhookId, Vec<Queued>>,
    /// Unfinished deliveries over all webhooks.
    pub unfinished: u64,
    /// Damaged rows or records noticed while recovering; each was skipped.
    pub warnings: Vec<String>,
}

/// The open log: the database (behind its [`Store`]), its writer and the in-memory catalog.
pub struct Log {
    store: Arc<Store>,
    writer: Writer,
    thread: std::sync::Mutex<Option<writer::WriterThread>>,
    catalog: Arc<RwLock<Catalog>>,
    observer: writer::ObserverSlot,
    id_key: IdKey,
    path: PathBuf,
    /// Cluster mode: the leases on this node's share of the webhooks, and the task that
    /// tells the delivery engine when they change.
    owners: Option<(crate::pg::leases::Keeper, tokio::task::JoinHandle<()>)>,
}

/// Fails if another process holds the log in `dir` (sled's own lock, an exclusive `flock` on
/// its `db` file), or if `dir` cannot be created; lets the lock go again at once. For
/// `serve` to refuse before it binds its port: the open itself (recovery) comes after.
pub fn check_not_in_use(dir: &Path) -> Result<(), OpenError> {
    create_private_dir(dir).map_err(|source| OpenError::CreateDir { path: dir.to_owned(), source })?;
    let db = dir.join("log").join("db");
    let file = match std::fs::OpenOptions::new().read(true).write(true).open(&db) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(OpenError::Sled { path: dir.to_owned(), source: sled::Error::Io(source) }),
    };
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(OpenError::Locked(dir.to_owned())),
        Err(std::fs::TryLockError::Error(source)) => {
            Err(OpenError::Sled { path: dir.to_owned(), source: sled::Error::Io(source) })
        }
    }
}

/// Whether an I/O error says the file system is full (or the quota is used up).
pub fn is_no_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Removes what an interrupted snapshot left in sled's directory: sled writes its snapshot
/// to `snap.<lsn>.generating` and renames it when whole, but it also *reads* such a file as
/// the newest snapshot — so a partial one (a start on a full disk leaves it empty) makes the
/// log unopenable ("Read corrupted data"). The previous snapshot and the log segments are
/// still there, and sled rebuilds the snapshot from them. Returns how many were removed.
fn remove_partial_snapshots(log_dir: &Path) -> std::io::Result<usize> {
    let entries = match std::fs::read_dir(log_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// How long an open waits for a lock on the log that its own process may still hold.
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether sled refused to open because the log's file is locked; sled wraps the lock failure
/// in an error of its own kind, and its text is what is stable.
fn is_lock_refusal(io: &std::io::Error) -> bool {
    io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("could not acquire lock")
}

pub(crate) fn open_db(dir: &Path, cache_bytes: u64) -> Result<sled::Db, OpenError> {
    create_private_dir(dir).map_err(|source| OpenError::CreateDir { path: dir.to_owned(), source })?;
    let log_dir = dir.join("log");
    let sled_error = |source| OpenError::Sled { path: dir.to_owned(), source };
    match remove_partial_snapshots(&log_dir) {
        Ok(0) => {}
        Ok(n) => tracing::warn!(removed = n, "removed a partial snapshot an interrupted start left behind"),
        Err(e) => return Err(sled_error(sled::Error::Io(e))),
    }
    let config = sled::Config::new().path(&log_dir).cache_capacity(cache_bytes).flush_every_ms(None);
    // sled's own I/O threads keep the file (and its lock) for a moment after the last handle
    // of a database is dropped, so a reopen by the same process (a command after an
    // inspection, a reopen after a fault) can find its own lock still held: wait that out.
    let deadline = std::time::Instant::now() + LOCK_GRACE;
    let mut opened = config.open();
    while matches!(&opened, Err(sled::Error::Io(io)) if is_lock_refusal(io)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
        opened = config.open();
    }
    opened.map_err(|source| {
        // A failed open must leave the directory as openable as it found it.
        let _ = remove_partial_snapshots(&log_dir);
        match source {
            // sled wraps the lock failure in an error of its own kind; its text is what is stable.
            sled::Error::Io(ref io) if is_lock_refusal(io) => OpenError::Locked(dir.to_owned()),
            sled::Error::Io(ref io) if is_no_space(io) => {
                OpenError::NoSpace { path: dir.to_owned(), free: fs4::available_space(dir).unwrap_or(0) }
            }
            source => sled_error(source),
        }
    })
}

fn last_seq(tree: &sled::Tree) -> Result<u64, RowsError> {
    pages::last_seq(tree)
}

pub(crate) fn applied_seq(tree: &sled::Tree) -> Result<u64, RowsError> {
    Ok(tree.get(keys::APPLIED)?.and_then(|v| v.as_ref().try_into().ok()).map(u64::from_be_bytes).unwrap_or(0))
}

/// A database opened and recovered: what start-up and a reopen after a storage fault share.
pub(crate) struct Recovered {
    pub open: store::Open,
    /// The last sequence number ever handed out.
    pub last_seq: u64,
    pub catalog: Catalog,
    pub tail_records: u64,
    pub queues: HashMap<WebhookId, Vec<Queued>>,
    pub unfinished: u64,
    pub warnings: Vec<String>,
}

/// Opens the database in `dir`, folds any unapplied tail, loads the catalog and the first
/// due deliveries of every webhook owed some.
pub(crate) fn open_and_recover(dir: &Path, cache_bytes: u64, queue_window: usize) -> Result<Recovered, OpenError> {
    open_joined(dir, cache_bytes, queue_window, None)
}

/// [`open_and_recover`], in cluster mode first tying the tree to the cluster's log and
/// folding it up to the database's head.
fn open_joined(
    dir: &Path,
    cache_bytes: u64,
    queue_window: usize,
    cluster: Option<&Cluster>,
) -> Result<Recovered, OpenError> {
    let db = open_db(dir, cache_bytes)?;
    let tree = db.open_tree(TREE).map_err(|source| OpenError::Sled { path: dir.to_owned(), source })?;
    upgrade::rows(&tree)?;
    let mut warnings = Vec::new();
    let joined = match cluster {
        Some(cluster) => upstream::join(&tree, cluster)?.folded,
        None => 0,
    };
    let applied = applied_seq(&tree)?;
    let last_stored = last_seq(&tree)?;
    let tail_records = if last_stored > applied { fold_tail(&tree, applied, last_stored, &mut warnings)? } else { 0 };
    // Compaction may have removed the newest records (an event nobody subscribed to, long
    // finished); the `applied` marker still remembers their numbers, and numbers — hence
    // event ids — are never handed out twice.
    let last = last_stored.max(applied);

    let catalog::Loaded { catalog, warnings: unread, statuses_whole } = catalog::load(&tree)?;
    warnings.extend(unread);
    let mut queues = HashMap::new();
    let mut unfinished = 0;
    for (id, row) in &catalog.webhooks {
        let pending = catalog.statuses.get(id).map_or(0, |s| s.pending);
        // The fold counts what waits: a webhook owed nothing has no queue to read (and
        // reading 10,000 empty ones would fill sled's cache for nothing) — unless a
        // status row could not be read, and with it what its webhook is owed.
        if row.deleted_at.is_some() || (pending == 0 && statuses_whole) {
            continue;
        }
        match window::due_window(&tree, id, queue_window) {
            Ok((window, hint)) => {
                // Recovery runs where nothing else writes (before the writer starts, or on
                // the writer's own thread): the hint (meta, outside the projection) can be
                // written directly — when it moved (a write per idle webhook at every start
                // costs memory and time).
                let key = keys::intake_hint(id);
                if tree.get(&key)?.as_deref() != Some(&hint.to_be_bytes()[..]) {
                    tree.insert(key, &hint.to_be_bytes())?;
                }
                queues.insert(id.clone(), window);
            }
            Err(e) => warnings.push(format!("queue of {id} not loaded: {e}")),
        }
        unfinished += pending;
    }
    for w in &warnings {
        tracing::warn!("{w}");
    }
    Ok(Recovered {
        open: store::Open { db, tree },
        last_seq: last,
        catalog,
        tail_records: tail_records + joined,
        queues,
        unfinished,
        warnings,
    })
}

impl Log {
    /// Opens (or creates) the log in `dir`, folds any unapplied tail, loads the catalog and
    /// the due windows, and starts the writer.
    pub fn open(dir: &Path, options: LogOptions) -> Result<(Log, Recovery), OpenError> {
        let started = Instant::now();
        // Opening writes a snapshot: on a full disk the reserve makes room for it.
        let mut room = room::Room::new(dir, options.reserve_bytes, options.min_free_bytes);
        let cluster = options.cluster.as_ref();
        let recovered = match open_joined(dir, options.cache_bytes, options.queue_window, cluster) {
            Err(OpenError::NoSpace { .. }) if room.release() => {
                tracing::warn!("the disk is full: used the reserved space to open the log");
                open_joined(dir, options.cache_bytes, options.queue_window, cluster)?
            }
            other => other?,
        };
        let tree = &recovered.open.tree;
        let id_key = match tree.get(keys::ID_KEY)? {
            Some(v) => IdKey(v.as_ref().try_into().map_err(|_| {
                OpenError::Rows(RowsError::Codec {
                    key: "Midkey".into(),
                    source: codec::CodecError::Truncated(v.len()),
                })
            })?),
            None => {
                let key = IdKey::generate();
                tree.insert(keys::ID_KEY, &key.0)?;
                tree.flush()?;
                key
            }
        };
        let recovery = Recovery {
            duration: Duration::ZERO,
            tail_records: recovered.tail_records,
            last_seq: recovered.last_seq,
            queues: recovered.queues,
            unfinished: recovered.unfinished,
            warnings: recovered.warnings,
        };
        let recovered_last = recovered.last_seq;
        let catalog = Arc::new(RwLock::new(recovered.catalog));
        let store = Arc::new(Store::new(recovered.open));
        let observer = writer::ObserverSlot::default();
        let state = writer::WriterState {
            store: store.clone(),
            observer: observer.clone(),
            next_seq: recovered.last_seq + 1,
            catalog: catalog.clone(),
            policy: options.compaction,
            cursors: Default::default(),
            room,
            dir: dir.to_owned(),
            cache_bytes: options.cache_bytes,
            queue_window: options.queue_window,
            upstream: options.cluster.clone().map(|c| upstream::Upstream::new(c, recovered_last)),
        };
        let keeper = match &options.cluster {
            Some(cluster) => Some(
                crate::pg::leases::Keeper::spawn(
                    cluster.db.clone(),
                    crate::pg::leases::KeeperOptions {
                        node: cluster.node.clone(),
                        partitions: cluster.partitions,
                        ttl: cluster.ownership_ttl,
                    },
                )
                .map_err(OpenError::Store)?,
            ),
            None => None,
        };
        let mut state = state;
        if let (Some(up), Some(keeper)) = (&mut state.upstream, &keeper) {
            up.holdings = Some(keeper.watch());
        }
        let (writer, thread) = Writer::spawn(state, options.append_timer.clone()).map_err(OpenError::Thread)?;
        let owners = match (&options.cluster, keeper) {
            (Some(cluster), Some(keeper)) => {
                let following = writer.follow_owners(&cluster.db, &keeper);
                Some((keeper, following))
            }
            _ => None,
        };
        let recovery = Recovery { duration: started.elapsed(), ..recovery };
        Ok((
            Log {
                store,
                writer,
                thread: std::sync::Mutex::new(Some(thread)),
                catalog,
                observer,
                id_key,
                path: dir.to_owned(),
                owners,
            },
            recovery,
        ))
    }

    /// Appends from a thread outside any async runtime (start-up, the CLI) and waits for the
    /// flush.
    pub fn append_blocking(&self, cmd: Command) -> Result<Appended, AppendError> {
        self.writer.append_blocking(cmd)
    }

    /// Runs compaction to completion as of `now` (milliseconds), between appends. Blocks.
    pub fn compact_blocking(&self, now: u64) -> Result<CompactionReport, AppendError> {
        self.writer.compact_blocking(now)
    }

    /// The tree, for one read (keep it no longer: see [`store`]). Writes go through the
    /// [`Writer`] only.
    fn tree(&self) -> Result<sled::Tree, rows::RowsError> {
        self.store.tree()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Commits what was sent, flushes, and stops the writer; later appends fail with
    /// [`AppendError::Closed`]. Blocks: call it off the async runtime.
    pub fn close(&self) {
        self.close_within(Duration::from_secs(3600));
    }

    /// [`Log::close`], waiting at most `grace` for the writer
    /// (a writer stuck in a failing disk is left behind: what was acknowledged is durable
    /// already).
    pub fn close_within(&self, grace: Duration) {
        if !self.writer.stop_within(grace) {
            tracing::error!(
                grace_ms = grace.as_millis() as u64,
                "the log writer did not stop in time (storage failing?); stopping without it"
            );
            return;
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            t.join();
        }
        if let Ok(open) = self.store.current() {
            if let Err(e) = open.db.flush() {
                tracing::error!(error = %e, "flush at close failed");
            }
        }
        if let Some((keeper, following)) = &self.owners {
            following.abort();
            // The other nodes take this node's webhooks at their next round, not after the TTL.
            keeper.let_go(Duration::from_secs(3));
        }
    }
}

/// The record at `seq` in `tree`, if it is still in the log.
fn read_record(tree: &sled::Tree, seq: u64) -> Result<Option<Record>, RowsError> {
    match pages::read(tree, seq)? {
        None => Ok(None),
        Some(bytes) => {
            Record::decode(&bytes).map(Some).map_err(|source| RowsError::Codec { key: format!("record {seq}"), source })
        }
    }
}

/// Opens a stopped node's log for offline inspection, without folding or starting a writer.
fn open_for_inspection(dir: &Path) -> Result<sled::Tree, OpenError> {
    if !dir.join("log").exists() {
        return Err(OpenError::Sled {
            path: dir.to_owned(),
            source: sled::Error::Unsupported("no herald log in this directory".into()),
        });
    }
    let db = open_db(dir, 64 << 20)?;
    db.open_tree(TREE).map_err(|source| OpenError::Sled { path: dir.to_owned(), source })
}

/// Folds records `applied+1..=last` that are in the log but not yet in the rows.
fn fold_tail(tree: &sled::Tree, applied: u64, last: u64, warnings: &mut Vec<String>) -> Result<u64, RowsError> {
    let mut txn = Txn::new(tree);
    let mut folded = 0;
    for item in pages::iter(tree, applied + 1) {
        let (seq, v) = match item {
            Ok(entry) => entry,
            Err(e) => {
                warnings.push(format!("records after {applied} not folded: {e}"));
                continue;
            }
        };
        if seq > last {
            break;
        }
        match Record::decode(&v) {
            Ok(record) => {
                projection::apply(&mut txn, seq, &record)?;
                folded += 1;
            }
            Err(e) => warnings.push(format!("record {seq} not folded: {e}")),
        }
    }
    txn.put(keys::APPLIED.to_vec(), last.to_be_bytes().to_vec());
    let (batch, _) = txn.into_parts();
    tree.apply_batch(batch)?;
    tree.flush()?;
    Ok(folded)
}

/// What `herald verify` finds in a stopped node's data directory.
pub struct Inspection {
    pub report: VerifyReport,
    /// The catalog as the stored rows have it.
    pub catalog: Catalog,
}

/// Checks a stopped node's log (`herald verify`): every record's checksum, `applied ==
/// last`, and a fresh fold of the records against the stored rows; and reads its catalog.
pub fn inspect(dir: &Path) -> Result<Inspection, OpenError> {
    let tree = open_for_inspection(dir)?;
    let report = verify::verify(&tree)?;
    let catalog = catalog::load(&tree)?.catalog;
    Ok(Inspection { report, catalog })
}

/// `herald verify` with a `store`: the database's records up to `head` (read oldest first
/// by `next(after)`; numbers in the ranges `removed()` returns were removed by retention) and, if `dir` holds a node's tree, that tree on its own and against
/// them (the node must be stopped); see [`StoreReport`].
pub fn verify_against_store<E: std::fmt::Display>(
    dir: &Path,
    head: u64,
    next: impl FnMut(u64) -> Result<Vec<(u64, Vec<u8>)>, E>,
    removed: impl FnOnce() -> Result<Vec<(u64, u64)>, E>,
) -> Result<StoreReport, VerifyStoreError> {
    let tree = match dir.join("log").exists() {
        true => Some(open_for_inspection(dir)?),
        false => None,
    };
    verify::verify_store(head, next, removed, tree.as_ref())
}

#[async_trait::async_trait]
impl Ledger for Log {
    async fn append(&self, cmd: Command) -> Result<Appended, AppendError> {
        self.writer.append(cmd).await
    }

    fn submit(&self, cmd: Command) -> BoxFuture<'static, Result<Appended, AppendError>> {
        Box::pin(self.writer.submit(cmd))
    }

    fn catalog(&self) -> &Arc<RwLock<Catalog>> {
        &self.catalog
    }

    fn id_key(&self) -> &IdKey {
        &self.id_key
    }

    fn health(&self) -> &Health {
        self.store.health()
    }

    fn observe(&self, observer: Observer) -> bool {
        let set = self.observer.set(observer).is_ok();
        // Cluster mode: what the node holds is announced to the observer now, with windows
        // read after everything folded so far (a change the writer saw before anyone
        // observed went nowhere).
        if let (true, Some((keeper, _))) = (set, &self.owners) {
            self.writer.announce_owners(&keeper.holdings());
        }
        set
    }

    fn owns(&self, webhook: &WebhookId) -> bool {
        match &self.owners {
            Some((keeper, _)) => keeper.may_start(webhook.as_str()),
            None => true,
        }
    }

    fn regrant(&self, webhook: &WebhookId) {
        // Not owned now: the renewal that makes it owned again grants it afresh
        // (`Holdings::lapses`), or the partition comes back with a new epoch.
        if self.owns(webhook) {
            self.writer.regrant(webhook.clone());
        }
    }

    fn handover_grace(&self) -> Duration {
        self.owners.as_ref().map_or(Duration::ZERO, |(keeper, _)| keeper.handover_grace())
    }

    fn ownership(&self) -> Option<crate::storage::Ownership> {
        use std::sync::atomic::Ordering::Relaxed;
        let (keeper, _) = self.owners.as_ref()?;
        let counts = keeper.counts();
        Some(crate::storage::Ownership {
            partitions_held: keeper.holdings().held.len() as u64,
            renewals: counts.renewals.load(Relaxed),
            renewal_failures: counts.renewal_failures.load(Relaxed),
            gained: counts.gained.load(Relaxed),
            lost: counts.lost.load(Relaxed),
            lapses: keeper.holdings().lapses,
        })
    }

    async fn record(&self, seq: u64) -> Read<Option<Record>> {
        Ok(read_record(&self.tree()?, seq)?)
    }

    async fn events_to_deliver(&self, mut seqs: Vec<u64>) -> Read<Vec<(u64, EventIngested)>> {
        let tree = self.tree()?;
        seqs.sort_unstable();
        seqs.dedup();
        let mut out = Vec::with_capacity(seqs.len());
        // Neighbouring records share a page: each page is read and parsed once.
        let mut page: Option<pages::LogPage> = None;
        for seq in seqs {
            if !page.as_ref().is_some_and(|p| p.covers(seq)) {
                page = pages::LogPage::holding(&tree, seq)?;
            }
            let Some(bytes) = page.as_ref().and_then(|p| p.record(seq)) else { continue };
            match Record::decode_event_to_deliver(bytes) {
                Ok(Some(event)) => out.push((seq, event)),
                Ok(None) => {}
                // Left out like a missing one: its delivery dies as unreadable, the others go.
                Err(e) => tracing::error!(seq, error = %e, "a record to deliver does not decode"),
            }
        }
        Ok(out)
    }

    async fn last_seq(&self) -> Read<u64> {
        Ok(last_seq(&self.tree()?)?)
    }

    async fn delivery(&self, d: crate::model::DeliveryRef, webhook: &WebhookId) -> Read<Option<DeliveryRow>> {
        let tree = self.tree()?;
        Ok(projection::load_delivery(&rows::TreeRows(&tree), d, webhook)?)
    }

    async fn events_before(
        &self,
        account: &crate::model::AccountId,
        before: Option<u64>,
        max: usize,
    ) -> Read<Vec<EventEntry>> {
        let tree = self.tree()?;
        let found: Result<Vec<_>, _> = index::events_newest_first(&tree, account, before).take(max).collect();
        Ok(found?)
    }

    async fn deliveries_before(&self, webhook: &WebhookId, before: Option<u64>, max: usize) -> Read<Vec<IntakeEntry>> {
        let tree = self.tree()?;
        let found: Result<Vec<_>, _> = index::deliveries_newest_first(&tree, webhook, before).take(max).collect();
        Ok(found?)
    }

    async fn due_window(&self, webhook: &WebhookId, n: usize, from: Option<u64>) -> Read<(Vec<Queued>, u64)> {
        Ok(window::due_window_from(&self.tree()?, webhook, n, from)?)
    }

    async fn counters(&self, account: &crate::model::AccountId, from: u64, to: u64) -> Read<Vec<(u64, Counters)>> {
        Ok(summary::counters(&self.tree()?, account, from, to)?)
    }

    async fn event_names(
        &self,
        account: &crate::model::AccountId,
        after: Option<String>,
        limit: usize,
    ) -> Read<Vec<String>> {
        Ok(summary::names(&self.tree()?, account, after.as_deref(), limit)?)
    }

    fn size_on_disk(&self) -> u64 {
        self.store.current().ok().and_then(|open| open.db.size_on_disk().ok()).unwrap_or(0)
    }

    fn close(&self, grace: Duration) {
        self.close_within(grace)
    }
}
