//! The log writer: one thread that owns every write to the tree, with group commit, and what
//! happens when a write to disk fails.
//!
//! Callers send a [`Command`] (records plus an optional precondition) and wait for its
//! answer. The thread takes every command waiting, checks each one's precondition against
//! the state as the commands before it in the same group left it, admits it against the
//! free disk space ([`super::room`]), stages its records and their fold, and writes the
//! whole group with one `apply_batch`. A second thread, the flusher, then makes it durable
//! with one `flush`, updates the in-memory catalog, and only then answers every caller —
//! while the writer already stages the next group. The next group is applied only once the
//! flush before it has returned: sled's flush waits on the writes of every batch applied
//! before it, and a batch applied during a flush that then fails is one more thing sled
//! could leave half-done (data safety over the overlap; BENCHMARKS.md has the cost).
//!
//! When sled fails a write (a full disk no admission foresaw, an I/O error), the database
//! is poisoned: it refuses everything after, and what it applied in memory may be half a
//! batch. The writer then reopens it from what is durable ([`recover`]): it takes the
//! database from the [`Store`] (readers get 503 for those milliseconds), waits for its last
//! handles to go, opens it again (sled keeps whole batches or nothing of them), and answers
//! the callers of the groups caught in the failure by what the reopened log holds — success
//! for a group that is there, "nothing was written" for one that is not — then reloads the
//! catalog and tells the delivery engine to resynchronise. A caller is told its write failed
//! only if it did not happen; one whose outcome cannot be learnt (the disk never gave the
//! database back) is told the outcome is unknown.
//!
//! Invariants:
//! - An append is acknowledged only after its records and their effects are flushed.
//! - Records, their effects and the `applied` marker are in one atomic batch: after a crash
//!   or a failed flush the tree holds whole groups or nothing of them.
//! - Sequence numbers increase by one per record, with no gaps among acknowledged records (a
//!   rejected command gives its numbers back; so does a group a failure left absent).
//! - At most one group is applied and not yet flushed.
//! - Compaction runs on this thread too, so it can never race an append; its removals are
//!   admitted, applied and flushed like a group.
//! - Groups are flushed and answered in the order they were applied; a group's state is
//!   visible to the next group's preconditions as soon as it is applied (sled reads see
//!   applied batches), but to readers of the catalog only once it is durable.
//! - A failure is logged once when it happens and then at most every [`LOG_EVERY`], never
//!   once per request.

use super::catalog;
use super::compaction::{self, CompactionPolicy, CompactionReport};
use super::keys;
use super::pages;
use super::preconditions;
use super::projection;
use super::record::Stored;
use super::room::{self, Room};
use super::rows::{Rows, Txn};
use super::store::{Open, Store};
use super::upstream::{self, Upstream};
use super::OpenError;
use crate::model::now_millis;
use crate::pg::records::AppendError as PgAppendError;
use crate::storage::Change;
use crate::storage::{Admission, AppendError, AppendTimer, Appended, Catalog, Command, Observer};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Most records one group commit takes; more wait for the next flush.
const MAX_GROUP_RECORDS: usize = 16_384;
/// Longest a group waits for more callers once it has fewer than the last group had. Under
/// load the callers just answered come straight back; waiting a fraction of a flush for them
/// doubles the group and halves the flushes per record. An idle caller never waits: its
/// group had one caller last time too.
const LINGER: Duration = Duration::from_micros(200);

/// Commands that may wait for the writer before senders block (back-pressure).
const QUEUE_DEPTH: usize = 65_536;

/// A flush still running after this is poked (see [`Watchdog`]).
const POKE_AFTER: Duration = Duration::from_millis(250);
/// A flush that has not returned after this is given up on: the database is wedged.
const FLUSH_GIVE_UP: Duration = Duration::from_secs(15);
/// How long a reopen waits for the old database's last handles.
const RELEASE_WAIT: Duration = Duration::from_secs(5);
/// Between attempts to reopen.
const REOPEN_RETRY: Duration = Duration::from_millis(500);
/// Callers caught in a failure learn their outcome from the reopened log; if it takes longer
/// than this, they are told it is unknown.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);
/// A repeating failure is logged at most once per this.
const LOG_EVERY: Duration = Duration::from_secs(30);
/// How often the writer looks at the disk again while it refuses work for want of space.
const FULL_RECHECK: Duration = Duration::from_millis(500);
/// What a compaction step may take on disk (deletions: a small frame per removed key).
const COMPACTION_ESTIMATE: u64 = 1 << 20;

enum Msg {
    Append(Command, oneshot::Sender<Result<Appended, AppendError>>),
    Compact {
        now: u64,
        reply: oneshot::Sender<Result<CompactionReport, AppendError>>,
    },
    /// Commit what came before, flush and stop.
    Stop(mpsc::Sender<()>),
    /// Another node appended (cluster mode): fold what it wrote.
    CatchUp,
    /// What this node may deliver changed (cluster mode): `gained` partitions (of
    /// `partitions`) are its own now, and perhaps others are not.
    Owners {
        gained: std::collections::BTreeSet<u32>,
        /// Every partition work may start under now (`gained` included).
        startable: std::collections::BTreeSet<u32>,
        partitions: u32,
    },
    /// A webhook's actor handed its work over and stopped while this node still owns it
    /// (cluster mode): tell the engine its window again, in order with the changes.
    Regrant(crate::model::WebhookId),
}

/// Handle to the writer thread. Dropping every handle stops the thread after it has
/// committed what it was sent.
#[derive(Clone)]
pub struct Writer {
    tx: SyncSender<Msg>,
    /// Told how long each command took from hand-over to flush (the metrics' histogram).
    timer: Option<AppendTimer>,
}

/// Joins the writer thread.
pub struct WriterThread(Option<JoinHandle<()>>);

impl WriterThread {
    /// Waits until the thread has committed everything and stopped (all [`Writer`] handles
    /// must be dropped first).
    pub fn join(mut self) {
        if let Some(h) = self.0.take() {
            let _ = h.join();
        }
    }
}

pub(crate) struct WriterState {
    pub store: Arc<Store>,
    /// Set once the delivery engine watches; until then no notes are collected.
    pub observer: ObserverSlot,
    pub next_seq: u64,
    pub catalog: Arc<RwLock<Catalog>>,
    pub policy: CompactionPolicy,
    pub cursors: compaction::Cursors,
    pub room: Room,
    /// The data directory, to reopen the database in.
    pub dir: PathBuf,
    pub cache_bytes: u64,
    pub queue_window: usize,
    /// In cluster mode, the database the log is kept in; the tree is its fold.
    pub upstream: Option<Upstream>,
}

type Reply = oneshot::Sender<Result<Appended, AppendError>>;
type Changes = std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A staged group: applied to the tree (or about to be), waiting for its flush.
struct Group {
    changes: Changes,
    /// What the delivery engine hears of this group, after the flush.
    notes: Vec<Change>,
    replies: Vec<Reply>,
    outcomes: Vec<Result<Appended, AppendError>>,
    records: u64,
    started: Instant,
    /// The highest sequence number taken once this group is in: it is durable iff the
    /// durable `applied` marker reaches it.
    end_seq: u64,
    /// Its estimated bytes on disk.
    bytes: u64,
    /// Handed to sled (`apply_batch` called): only then can it be in the log.
    applied: bool,
}

impl Group {
    /// Records other nodes committed (and, for a retention step, its own removal), folded
    /// into the tree: no caller waits for them.
    fn folded(changes: Changes, notes: Option<Vec<Change>>, records: u64, started: Instant, end_seq: u64) -> Group {
        Group {
            changes,
            notes: notes.unwrap_or_default(),
            replies: Vec::new(),
            outcomes: Vec::new(),
            records,
            started,
            end_seq,
            bytes: 0,
            applied: true,
        }
    }

    fn answer(self, catalog: &RwLock<Catalog>, observer: &ObserverSlot) {
        catalog::absorb_committed(catalog, &self.changes);
        for (reply, outcome) in self.replies.into_iter().zip(self.outcomes) {
            let _ = reply.send(outcome);
        }
        if let (Some(observe), false) = (observer.get(), self.notes.is_empty()) {
            observe(self.notes);
        }
    }

    fn fail(self, error: impl Fn() -> AppendError) {
        for reply in self.replies {
            let _ = reply.send(Err(error()));
        }
    }
}

/// A group handed to the flusher; whoever takes it out answers its callers.
type Handed = Arc<Mutex<Option<Group>>>;

/// What the flusher says of a group.
enum Flushed {
    /// Durable and answered.
    Done,
    /// The flush failed; the group is still in its slot, unanswered.
    Failed(String),
}

/// The flusher thread: flushes applied groups one at a time, updates the catalog, answers.
struct Flusher {
    tx: Option<SyncSender<(sled::Tree, Handed)>>,
    done: Receiver<Flushed>,
    handle: Option<JoinHandle<()>>,
    /// The group on its way, and its estimated bytes.
    outstanding: Option<(Handed, u64)>,
}

/// How a wait for the group on its way ended badly.
enum FlushFailed {
    /// The flush failed: the group (if still unanswered).
    Failed(Option<Box<Group>>, String),
    /// The flush never returned.
    Wedged(Option<Box<Group>>),
}

impl Flusher {
    fn spawn(
        catalog: Arc<RwLock<Catalog>>,
        observer: ObserverSlot,
        watchdog: Arc<Watchdog>,
    ) -> std::io::Result<Flusher> {
        let (tx, rx) = mpsc::sync_channel::<(sled::Tree, Handed)>(1);
        let (done_tx, done) = mpsc::channel();
        let handle = std::thread::Builder::new().name("herald-log-flush".into()).spawn(move || {
            for (tree, handed) in rx {
                let t = Instant::now();
                watchdog.watch(&tree);
                let flushed = tree.flush();
                watchdog.unwatch();
                drop(tree);
                let said = match flushed {
                    Ok(_) => {
                        let group = handed.lock().ok().and_then(|mut g| g.take());
                        if let Some(group) = group {
                            let (records, started) = (group.records, group.started);
                            group.answer(&catalog, &observer);
                            tracing::trace!(
                                records,
                                flush_us = t.elapsed().as_micros() as u64,
                                elapsed_us = started.elapsed().as_micros() as u64,
                                "group committed"
                            );
                        }
                        Flushed::Done
                    }
                    Err(e) => Flushed::Failed(e.to_string()),
                };
                if done_tx.send(said).is_err() {
                    return;
                }
            }
        })?;
        Ok(Flusher { tx: Some(tx), done, handle: Some(handle), outstanding: None })
    }

    fn send(&mut self, tree: sled::Tree, group: Group) {
        let bytes = group.bytes;
        let handed: Handed = Arc::new(Mutex::new(Some(group)));
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send((tree, handed.clone())).is_ok());
        if sent {
            self.outstanding = Some((handed, bytes));
        } else if let Some(group) = handed.lock().ok().and_then(|mut g| g.take()) {
            group.fail(|| AppendError::Unknown("the log flusher has stopped".into()));
        }
    }

    /// Bytes of the group on its way to disk, not yet flushed.
    fn pending_bytes(&self) -> u64 {
        self.outstanding.as_ref().map_or(0, |(_, b)| *b)
    }

    /// Waits until the group on its way (if any) is flushed and answered.
    fn wait(&mut self) -> Result<(), FlushFailed> {
        let Some((handed, _)) = self.outstanding.take() else { return Ok(()) };
        let take = || handed.lock().ok().and_then(|mut g| g.take()).map(Box::new);
        match self.done.recv_timeout(FLUSH_GIVE_UP) {
            Ok(Flushed::Done) => Ok(()),
            Ok(Flushed::Failed(why)) => Err(FlushFailed::Failed(take(), why)),
            Err(_) => Err(FlushFailed::Wedged(take())),
        }
    }

    /// Flushes and answers what is queued, then stops the thread.
    fn stop(&mut self) {
        let _ = self.wait();
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Wakes a flush that sled left waiting. sled 0.34 sets its "storage failed" error from a
/// background write without waking the threads waiting for that write
/// (`pagecache/logger.rs`, `exit_reservation`); a flush waiting then waits for ever. Any
/// other flush that finds the error set wakes them all on its way out, so a flush that takes
/// longer than [`POKE_AFTER`] gets a second one from a short-lived thread. (Safe only because
/// nothing applies a batch while a flush runs: a poke waits for no lock.)
#[derive(Default)]
struct Watchdog {
    watched: Mutex<Option<(Instant, sled::Tree)>>,
    pokes: AtomicUsize,
}

impl Watchdog {
    fn spawn() -> std::io::Result<Arc<Watchdog>> {
        let dog = Arc::new(Watchdog::default());
        let weak = Arc::downgrade(&dog);
        std::thread::Builder::new().name("herald-log-watchdog".into()).spawn(move || {
            let mut last_poke = Instant::now();
            while let Some(dog) = weak.upgrade() {
                let due = dog.watched.lock().ok().and_then(|w| {
                    w.as_ref().filter(|(since, _)| since.elapsed() >= POKE_AFTER).map(|(_, tree)| tree.clone())
                });
                if let Some(tree) = due {
                    if last_poke.elapsed() >= POKE_AFTER && dog.pokes.load(Ordering::Relaxed) < 4 {
                        last_poke = Instant::now();
                        dog.pokes.fetch_add(1, Ordering::Relaxed);
                        let poker = dog.clone();
                        let spawned = std::thread::Builder::new().name("herald-log-poke".into()).spawn(move || {
                            let _ = tree.flush();
                            poker.pokes.fetch_sub(1, Ordering::Relaxed);
                        });
                        if spawned.is_err() {
                            dog.pokes.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                }
                drop(dog);
                std::thread::sleep(Duration::from_millis(50));
            }
        })?;
        Ok(dog)
    }

    fn watch(&self, tree: &sled::Tree) {
        if let Ok(mut w) = self.watched.lock() {
            *w = Some((Instant::now(), tree.clone()));
        }
    }

    fn unwatch(&self) {
        if let Ok(mut w) = self.watched.lock() {
            *w = None;
        }
    }
}

/// Flushes `tree` on this thread under the watchdog.
fn flush_watched(watchdog: &Watchdog, tree: &sled::Tree) -> sled::Result<usize> {
    watchdog.watch(tree);
    let flushed = tree.flush();
    watchdog.unwatch();
    flushed
}

/// Logs a repeating failure once, then at most every [`LOG_EVERY`], with how many were not
/// logged.
#[derive(Default)]
struct Quiet {
    last: Option<Instant>,
    held_back: u64,
}

impl Quiet {
    fn error(&mut self, what: &str, why: &str) {
        if self.last.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            self.held_back += 1;
            return;
        }
        tracing::error!(error = %why, repeated = self.held_back, "{what}");
        self.last = Some(Instant::now());
        self.held_back = 0;
    }
}

impl Writer {
    pub(crate) fn spawn(mut state: WriterState, timer: Option<AppendTimer>) -> std::io::Result<(Writer, WriterThread)> {
        let (tx, rx) = mpsc::sync_channel(QUEUE_DEPTH);
        if let Some(up) = &mut state.upstream {
            // Woken by the other nodes' appends; a full queue means the writer is busy, and
            // its next append folds them anyway.
            let (wake, folded) = (tx.clone(), up.folded.clone());
            up.listener = Some(up.cluster.db.listen(super::super::pg::records::CHANNEL, move |payload| {
                if upstream::is_news(payload, folded.load(Ordering::Relaxed)) {
                    let _ = wake.try_send(Msg::CatchUp);
                }
            }));
        }
        let watchdog = Watchdog::spawn()?;
        let flusher = Flusher::spawn(state.catalog.clone(), state.observer.clone(), watchdog.clone())?;
        let handle = std::thread::Builder::new()
            .name("herald-log-writer".into())
            .spawn(move || run(state, flusher, watchdog, rx))?;
        Ok((Writer { tx, timer }, WriterThread(Some(handle))))
    }

    /// Appends and waits for the flush.
    pub async fn append(&self, cmd: Command) -> Result<Appended, AppendError> {
        self.submit(cmd).await
    }

    /// Hands `cmd` to the writer now and returns what will tell its outcome. Commands
    /// submitted one after another from one thread are committed in that order, whenever
    /// the caller gets round to waiting (the delivery actors record attempts this way
    /// without holding a send slot until the flush).
    pub fn submit(&self, cmd: Command) -> impl std::future::Future<Output = Result<Appended, AppendError>> + 'static {
        let started = Instant::now();
        let timer = self.timer.clone();
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.send(Msg::Append(cmd, reply)).is_ok();
        async move {
            if !sent {
                return Err(AppendError::Closed);
            }
            let answer = rx.await.map_err(|_| AppendError::Closed)?;
            if let Some(t) = &timer {
                t.took(started.elapsed());
            }
            answer
        }
    }

    /// Appends from a thread outside any async runtime and waits for the flush.
    pub fn append_blocking(&self, cmd: Command) -> Result<Appended, AppendError> {
        let started = Instant::now();
        let (reply, rx) = oneshot::channel();
        self.tx.send(Msg::Append(cmd, reply)).map_err(|_| AppendError::Closed)?;
        let answer = rx.blocking_recv().map_err(|_| AppendError::Closed)?;
        if let Some(t) = &self.timer {
            t.took(started.elapsed());
        }
        answer
    }

    /// Commits everything sent before, flushes and stops the thread, waiting at most
    /// `grace`; later appends fail with [`AppendError::Closed`]. False if the writer did not
    /// answer in time (it is stuck in a failing disk).
    pub fn stop_within(&self, grace: Duration) -> bool {
        let (done, stopped) = mpsc::channel();
        let tx = self.tx.clone();
        // The queue may be full behind a stuck writer: hand the stop over from a thread of
        // its own, so this one can still give up in time.
        let handed = std::thread::Builder::new().name("herald-log-stop".into()).spawn(move || {
            let _ = tx.send(Msg::Stop(done));
        });
        // Disconnected: the writer has stopped already.
        handed.is_ok() && matches!(stopped.recv_timeout(grace), Ok(()) | Err(RecvTimeoutError::Disconnected))
    }

    /// Cluster mode: tells the engine (through the writer, so after everything folded so
    /// far) that this node may work every partition `holdings` lets it start now.
    pub(crate) fn announce_owners(&self, holdings: &crate::pg::leases::Holdings) {
        if holdings.partitions == 0 {
            return;
        }
        let startable: std::collections::BTreeSet<u32> =
            holdings.startable(Instant::now()).iter().map(|h| h.part).collect();
        let _ = self.tx.send(Msg::Owners { gained: startable.clone(), startable, partitions: holdings.partitions });
    }

    /// Cluster mode: follows what `keeper` says this node holds, telling the writer (and
    /// through it the delivery engine) whenever the holdings work may start under change —
    /// a partition taken or lost, or the local deadline passed without a renewal.
    pub(crate) fn follow_owners(
        &self,
        db: &crate::pg::Database,
        keeper: &crate::pg::leases::Keeper,
    ) -> tokio::task::JoinHandle<()> {
        let tx = self.tx.clone();
        let mut holdings = keeper.watch();
        db.spawn(async move {
            let mut before = std::collections::BTreeSet::new();
            let mut lapses = 0;
            loop {
                let now = Instant::now();
                let h = holdings.borrow_and_update().clone();
                if h.lapses != lapses {
                    // The local deadline passed before a renewal came: what was granted
                    // before is void (actors may have handed their work over), so all
                    // of it is granted afresh.
                    lapses = h.lapses;
                    before.clear();
                }
                let startable = h.startable(now);
                let gained: std::collections::BTreeSet<u32> = startable.difference(&before).map(|h| h.part).collect();
                let lost = before.difference(&startable).next().is_some();
                if !gained.is_empty() || lost {
                    let tx = tx.clone();
                    let parts = startable.iter().map(|h| h.part).collect();
                    let told = tokio::task::spawn_blocking(move || {
                        tx.send(Msg::Owners { gained, startable: parts, partitions: h.partitions })
                    });
                    if !matches!(told.await, Ok(Ok(()))) {
                        return;
                    }
                }
                before = startable;
                let until_deadline = h.stop_by.map(|by| by.saturating_duration_since(now)).filter(|d| !d.is_zero());
                match until_deadline {
                    Some(wait) => {
                        tokio::select! {
                            changed = holdings.changed() => if changed.is_err() { return },
                            _ = tokio::time::sleep(wait) => {}
                        }
                    }
                    None => {
                        if holdings.changed().await.is_err() {
                            return;
                        }
                    }
                }
            }
        })
    }

    /// Cluster mode: asks for a [`Change::Regranted`] of `webhook`, with its window read
    /// after everything committed so far.
    pub(crate) fn regrant(&self, webhook: crate::model::WebhookId) {
        let _ = self.tx.send(Msg::Regrant(webhook));
    }

    /// Runs compaction to completion as of `now` (milliseconds), between appends.
    pub fn compact_blocking(&self, now: u64) -> Result<CompactionReport, AppendError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Msg::Compact { now, reply }).map_err(|_| AppendError::Closed)?;
        rx.blocking_recv().map_err(|_| AppendError::Closed)?
    }
}

/// Where the observer is put once the delivery engine starts.
pub(crate) type ObserverSlot = Arc<std::sync::OnceLock<Observer>>;

/// A failure the writer must recover from: the groups caught in it (oldest first) and why.
struct Fault {
    caught: Vec<Group>,
    why: String,
    /// The flush never returned: the database cannot be given back.
    wedged: bool,
}

fn run(mut state: WriterState, mut flusher: Flusher, watchdog: Arc<Watchdog>, rx: Receiver<Msg>) {
    let mut next_compaction = Instant::now() + state.policy.interval;
    let mut compaction_behind = false;
    let mut last_callers = 0usize;
    let mut quiet = Quiet::default();
    loop {
        let mut wait =
            if compaction_behind { Duration::ZERO } else { next_compaction.saturating_duration_since(Instant::now()) };
        if !state.store.health().takes_work() {
            wait = wait.min(FULL_RECHECK);
        }
        if let Some(up) = &state.upstream {
            wait = wait.min(up.cluster.poll);
        }
        let idle = match rx.try_recv() {
            Ok(msg) => Ok(msg),
            Err(mpsc::TryRecvError::Disconnected) => break,
            Err(mpsc::TryRecvError::Empty) => {
                // Nothing to stage: let the group on its way finish first, so that a failed
                // flush is dealt with now, not when the next caller comes.
                if let Err(fault) = flusher.wait().map_err(fault_of) {
                    if let Some(stop) = recover(&mut state, &rx, fault) {
                        return stop_now(&mut flusher, &watchdog, &state, Some(stop));
                    }
                    continue;
                }
                rx.recv_timeout(wait)
            }
        };
        let first = match idle {
            Ok(msg) => msg,
            Err(RecvTimeoutError::Timeout) => {
                recheck_room(&mut state);
                if state.upstream.is_some() {
                    if let Err(fault) = catch_up(&mut state, true) {
                        if let Some(stop) = recover(&mut state, &rx, fault) {
                            return stop_now(&mut flusher, &watchdog, &state, Some(stop));
                        }
                    }
                }
                if Instant::now() < next_compaction && !compaction_behind {
                    continue;
                }
                match compact_step(&mut state, &mut flusher, &watchdog, now_millis(), None) {
                    Ok(report) => {
                        compaction_behind = !report.done;
                        if report.removed_records > 0 {
                            tracing::debug!(removed = report.removed_records, "compacted log");
                        }
                    }
                    Err(Stepped::Refused(e)) => {
                        compaction_behind = false;
                        quiet.error("log compaction failed", &e.to_string());
                    }
                    Err(Stepped::Fault(fault)) => {
                        compaction_behind = false;
                        if let Some(stop) = recover(&mut state, &rx, fault) {
                            return stop_now(&mut flusher, &watchdog, &state, Some(stop));
                        }
                    }
                }
                if !compaction_behind {
                    next_compaction = Instant::now() + state.policy.interval;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut appends = Vec::new();
        let mut records = 0;
        let mut pending = Some(first);
        let mut stop = None;
        let mut faulted = None;
        let mut news = false;
        let linger_until = Instant::now() + LINGER;
        while let Some(msg) = pending.take() {
            match msg {
                Msg::Stop(reply) => {
                    stop = Some(reply);
                    break;
                }
                Msg::Append(cmd, reply) => {
                    records += cmd.records.len();
                    appends.push((cmd, reply));
                }
                Msg::CatchUp => news = true,
                Msg::Owners { gained, startable, partitions } => {
                    if let Err(fault) = commit_group(&mut state, &mut flusher, std::mem::take(&mut appends)) {
                        faulted = Some(fault);
                        break;
                    }
                    records = 0;
                    if let Err(fault) = owners_changed(&mut state, &gained, startable, partitions) {
                        faulted = Some(fault);
                        break;
                    }
                }
                Msg::Regrant(webhook) => {
                    if let Err(fault) = commit_group(&mut state, &mut flusher, std::mem::take(&mut appends)) {
                        faulted = Some(fault);
                        break;
                    }
                    records = 0;
                    regranted(&state, webhook);
                }
                Msg::Compact { now, reply } => {
                    // Commit what came before, so compaction sees it.
                    if let Err(fault) = commit_group(&mut state, &mut flusher, std::mem::take(&mut appends)) {
                        faulted = Some(fault);
                        let _ = reply.send(Err(AppendError::Storage("the log failed before compaction".into())));
                        break;
                    }
                    records = 0;
                    match compact_to_end(&mut state, &mut flusher, &watchdog, now) {
                        Ok(report) => {
                            let _ = reply.send(Ok(report));
                        }
                        Err(Stepped::Refused(e)) => {
                            let _ = reply.send(Err(e));
                        }
                        Err(Stepped::Fault(fault)) => {
                            let _ = reply.send(Err(AppendError::Storage(fault.why.clone())));
                            faulted = Some(fault);
                            break;
                        }
                    }
                }
            }
            if records < MAX_GROUP_RECORDS {
                pending = rx.try_recv().ok();
                if pending.is_none() && appends.len() < last_callers {
                    let left = linger_until.saturating_duration_since(Instant::now());
                    pending = if left.is_zero() { None } else { rx.recv_timeout(left).ok() };
                }
            }
        }
        last_callers = appends.len();
        if faulted.is_none() {
            // An append folds every other node's records first: news matters only alone.
            let alone = appends.is_empty();
            if let Err(fault) = commit_group(&mut state, &mut flusher, appends) {
                faulted = Some(fault);
            } else if news && alone {
                if let Err(fault) = catch_up(&mut state, false) {
                    faulted = Some(fault);
                }
            }
        } else {
            fail_all(appends, "the log failed before this write; nothing was written");
        }
        if let Some(fault) = faulted {
            if let Some(stop) = recover(&mut state, &rx, fault) {
                return stop_now(&mut flusher, &watchdog, &state, Some(stop));
            }
        }
        if let Some(reply) = stop {
            return stop_now(&mut flusher, &watchdog, &state, Some(reply));
        }
    }
    stop_now(&mut flusher, &watchdog, &state, None);
}

/// Flushes what is on its way, stops the flusher and answers the stop.
fn stop_now(flusher: &mut Flusher, watchdog: &Watchdog, state: &WriterState, reply: Option<mpsc::Sender<()>>) {
    flusher.stop();
    if let Ok(open) = state.store.current() {
        if let Err(e) = flush_watched(watchdog, &open.tree) {
            tracing::error!(error = %e, "final log flush failed");
        }
    }
    if let Some(reply) = reply {
        let _ = reply.send(());
    }
}

fn fault_of(failed: FlushFailed) -> Fault {
    match failed {
        FlushFailed::Failed(group, why) => {
            Fault { caught: group.into_iter().map(|g| *g).collect(), why, wedged: false }
        }
        FlushFailed::Wedged(group) => Fault {
            caught: group.into_iter().map(|g| *g).collect(),
            why: format!("a flush did not return within {}s", FLUSH_GIVE_UP.as_secs()),
            wedged: true,
        },
    }
}

/// Tells every caller of a batch that it failed with nothing written.
fn fail_all(appends: Vec<(Command, Reply)>, why: &str) {
    for (_, reply) in appends {
        let _ = reply.send(Err(AppendError::Storage(why.to_owned())));
    }
}

/// While work is refused for want of space, whether there is room again.
fn recheck_room(state: &mut WriterState) {
    let health = state.store.health();
    if health.takes_work() {
        return;
    }
    let mut budget = state.room.budget(0);
    if budget.admit(Admission::Work, 0).is_ok() {
        health.set_full(false);
    }
}

/// Stages, admits and applies one group, and hands it to the flusher. A storage failure
/// comes back as a [`Fault`] holding every group it caught, for [`recover`].
fn commit_group(state: &mut WriterState, flusher: &mut Flusher, appends: Vec<(Command, Reply)>) -> Result<(), Fault> {
    if appends.is_empty() {
        return Ok(());
    }
    let open = match state.store.current() {
        Ok(open) => open,
        Err(e) => {
            fail_all(appends, &e.to_string());
            return Ok(());
        }
    };
    if state.upstream.is_some() {
        return commit_upstream(state, &open, appends);
    }
    let started = Instant::now();
    let first_seq = state.next_seq;
    let mut txn = Txn::new(&open.tree);
    let mut encoded: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut notes = state.observer.get().map(|_| Vec::new());
    let pending = flusher.pending_bytes();
    let Staged { replies, outcomes, bytes } =
        stage_all(state, &mut txn, appends, pending, &mut encoded, notes.as_mut());
    for (key, page) in pages::pack(&encoded) {
        txn.put(key, page);
    }
    if state.next_seq > first_seq {
        txn.put(keys::APPLIED.to_vec(), (state.next_seq - 1).to_be_bytes().to_vec());
    }
    let records = state.next_seq - first_seq;
    let (batch, changes) = txn.into_parts();
    let group = Group {
        changes,
        notes: notes.unwrap_or_default(),
        replies,
        outcomes,
        records,
        started,
        end_seq: state.next_seq - 1,
        bytes,
        applied: false,
    };
    // The group before must be durable (or known lost) before this one is applied.
    if let Err(failed) = flusher.wait() {
        let mut fault = fault_of(failed);
        fault.caught.push(group);
        return Err(fault);
    }
    if records == 0 && group.changes.is_empty() {
        // Nothing to write (every command refused): answer at once, in order.
        group.answer(&state.catalog, &state.observer);
        return Ok(());
    }
    let t = Instant::now();
    let mut group = group;
    group.applied = true;
    match open.tree.apply_batch(batch) {
        Ok(()) => {
            tracing::trace!(records, apply_us = t.elapsed().as_micros() as u64, "group applied");
            flusher.send(open.tree.clone(), group);
            Ok(())
        }
        Err(e) => Err(Fault { caught: vec![group], why: e.to_string(), wedged: false }),
    }
}

/// The commands of a group, staged one after another.
struct Staged {
    replies: Vec<Reply>,
    /// Each command's outcome, in order (an error: nothing of it is staged).
    outcomes: Vec<Result<Appended, AppendError>>,
    /// Their estimated bytes on disk.
    bytes: u64,
}

/// Stages each command on `txn` after the ones before it: its preconditions judged, its
/// records folded and admitted against free disk space. A command refused leaves nothing
/// staged (its sequence numbers are given back); the others go on. Records the disk's state
/// in the log's health.
fn stage_all(
    state: &mut WriterState,
    txn: &mut Txn<'_>,
    appends: Vec<(Command, Reply)>,
    pending: u64,
    encoded: &mut Vec<(u64, Vec<u8>)>,
    mut notes: Option<&mut Vec<Change>>,
) -> Staged {
    let mut outcomes: Vec<Result<Appended, AppendError>> = Vec::with_capacity(appends.len());
    let mut replies = Vec::with_capacity(appends.len());
    let mut bytes = 0;
    let mut short_of_room = None;
    let mut budget = state.room.budget(pending);
    for (cmd, reply) in appends {
        replies.push(reply);
        let sp = txn.savepoint();
        let seq_before = state.next_seq;
        let kept_before = encoded.len();
        let notes_before = notes.as_ref().map_or(0, |n| n.len());
        let admission = cmd.admission;
        let mut outcome = stage(txn, &mut state.next_seq, cmd, encoded, notes.as_deref_mut());
        if outcome.is_ok() {
            let size: usize = encoded[kept_before..].iter().map(|(_, e)| e.len()).sum();
            let estimate = room::estimate(size);
            match budget.admit(admission, estimate) {
                Ok(()) => bytes += estimate,
                Err(no_room) => {
                    match admission {
                        Admission::Work => short_of_room = Some(no_room.clone()),
                        Admission::Ingest => state.store.health().ingest_refused(),
                    }
                    outcome = Err(no_room.into());
                }
            }
        }
        if outcome.is_err() {
            txn.rollback(sp);
            state.next_seq = seq_before;
            encoded.truncate(kept_before);
            if let Some(n) = notes.as_deref_mut() {
                n.truncate(notes_before);
            }
        }
        outcomes.push(outcome);
    }
    let health = state.store.health();
    match &short_of_room {
        Some(no_room) => {
            if health.takes_work() {
                tracing::warn!(%no_room, "the disk is full and the reserved space used up: writes are refused");
            }
            health.set_full(true);
        }
        None if bytes > 0 => health.set_full(false),
        None => {}
    }
    Staged { replies, outcomes, bytes }
}

fn stage(
    txn: &mut Txn<'_>,
    next_seq: &mut u64,
    cmd: Command,
    encoded: &mut Vec<(u64, Vec<u8>)>,
    mut notes: Option<&mut Vec<Change>>,
) -> Result<Appended, AppendError> {
    for rule in &cmd.preconditions {
        preconditions::check(&*txn, rule)?;
    }
    let mut seqs = Vec::with_capacity(cmd.records.len());
    for record in cmd.records {
        let seq = *next_seq;
        encoded.push((seq, record.encode().map_err(|e| AppendError::Encode(e.to_string()))?));
        projection::apply(txn, seq, &record)?;
        *next_seq += 1;
        seqs.push(seq);
        if let Some(notes) = notes.as_deref_mut() {
            notes.extend(Change::of(seq, record));
        }
    }
    Ok(Appended { seqs })
}

/// How a compaction step ended badly.
enum Stepped {
    /// Refused (no room) or unreadable: nothing was written.
    Refused(AppendError),
    Fault(Fault),
}

/// One compaction step (or a run to the end, with `cursors` of its own), committed like a
/// group and flushed before it returns.
fn compact_step(
    state: &mut WriterState,
    flusher: &mut Flusher,
    watchdog: &Watchdog,
    now: u64,
    cursors: Option<&mut compaction::Cursors>,
) -> Result<CompactionReport, Stepped> {
    flusher.wait().map_err(|f| Stepped::Fault(fault_of(f)))?;
    let open = state.store.current().map_err(|e| Stepped::Refused(e.into()))?;
    let mut own = std::mem::take(&mut state.cursors);
    let cursors_used = match cursors {
        Some(c) => c,
        None => &mut own,
    };
    if state.upstream.is_some() {
        let stepped = compact_upstream(state, &open, now, cursors_used);
        state.cursors = own;
        return stepped;
    }
    let staged = compaction::step(&open.tree, &state.policy, now, compaction::STEP_RECORDS, cursors_used);
    state.cursors = own;
    let staged = staged.map_err(|e| Stepped::Refused(e.into()))?;
    let Some((batch, changes)) = staged.batch else { return Ok(staged.report) };
    let mut budget = state.room.budget(0);
    budget.admit(Admission::Work, COMPACTION_ESTIMATE).map_err(|e| Stepped::Refused(e.into()))?;
    let failed = |why: String| Stepped::Fault(Fault { caught: Vec::new(), why, wedged: false });
    open.tree.apply_batch(batch).map_err(|e| failed(e.to_string()))?;
    flush_watched(watchdog, &open.tree).map_err(|e| failed(e.to_string()))?;
    catalog::absorb_committed(&state.catalog, &changes);
    Ok(staged.report)
}

/// Compaction steps until everything due as of `now` was examined.
fn compact_to_end(
    state: &mut WriterState,
    flusher: &mut Flusher,
    watchdog: &Watchdog,
    now: u64,
) -> Result<CompactionReport, Stepped> {
    let mut total = CompactionReport::default();
    let mut cursors = compaction::Cursors::default();
    loop {
        let r = compact_step(state, flusher, watchdog, now, Some(&mut cursors))?;
        total.removed_records += r.removed_records;
        total.removed_events += r.removed_events;
        total.removed_deliveries += r.removed_deliveries;
        if r.done {
            total.done = true;
            return Ok(total);
        }
    }
}

/// Waits for the readers of a database taken out of the store to finish with it, then drops
/// it — on a thread of its own, since sled may flush, or hang, in its destructor — so that
/// its file lock goes and it can be opened again.
fn release(
    old: Option<Arc<Open>>,
    refuse_for: &dyn Fn(Duration, &mut Option<mpsc::Sender<()>>) -> bool,
    stop: &mut Option<mpsc::Sender<()>>,
) {
    let Some(old) = old else { return };
    let until = Instant::now() + RELEASE_WAIT;
    while Arc::strong_count(&old) > 1 && Instant::now() < until {
        if !refuse_for(Duration::from_millis(5), stop) {
            break;
        }
    }
    let (dropped, gone) = mpsc::channel();
    let _ = std::thread::Builder::new().name("herald-log-release".into()).spawn(move || {
        drop(old);
        let _ = dropped.send(());
    });
    if gone.recv_timeout(RELEASE_WAIT).is_err() {
        tracing::error!("the failed database was not released; Herald must be restarted to write again");
    }
}

/// Whether the data directory takes a write of what a reopen needs (sled's snapshot is a few
/// kilobytes per thousand pages; 1 MiB, synced, is ample).
fn can_write(dir: &std::path::Path) -> bool {
    use std::io::Write;
    let probe = dir.join("log").join("herald-write-probe");
    let wrote = std::fs::File::create(&probe).and_then(|mut f| {
        f.write_all(&vec![0u8; 1 << 20])?;
        f.sync_all()
    });
    let _ = std::fs::remove_file(&probe);
    wrote.is_ok()
}

/// Recovers from a storage fault (see the module docs): reopens the database from what is
/// durable and answers the groups the fault caught by what it holds. Everything sent
/// meanwhile is refused with nothing written. Returns a stop request that came meanwhile.
fn recover(state: &mut WriterState, rx: &Receiver<Msg>, fault: Fault) -> Option<mpsc::Sender<()>> {
    let Fault { caught, why, wedged } = fault;
    let health = state.store.health();
    health.fail(why.clone());
    tracing::error!(error = %why, caught = caught.len(), "a write to the log failed: reopening it from what is durable");
    // A group never handed to sled is not in the log, whatever comes next.
    let (mut caught, never): (Vec<Group>, Vec<Group>) = caught.into_iter().partition(|g| g.applied);
    for group in never {
        group.fail(|| AppendError::Storage(format!("{why}; this write is not in the log")));
    }
    let answer_by = Instant::now() + ANSWER_WITHIN;
    let mut quiet = Quiet::default();
    let answer_unknown = |caught: &mut Vec<Group>, why: &str| {
        for group in caught.drain(..) {
            group.fail(|| AppendError::Unknown(why.to_owned()));
        }
    };
    // Refuses what arrives meanwhile; false when asked to stop.
    let refuse_for = |wait: Duration, stop: &mut Option<mpsc::Sender<()>>| -> bool {
        match rx.recv_timeout(wait) {
            Ok(Msg::Append(_, reply)) => {
                let _ =
                    reply.send(Err(AppendError::Storage("the log is being reopened after a storage failure".into())));
                true
            }
            Ok(Msg::Compact { reply, .. }) => {
                let _ = reply.send(Err(AppendError::Storage("the log is being reopened".into())));
                true
            }
            Ok(Msg::Stop(reply)) => {
                *stop = Some(reply);
                false
            }
            Ok(Msg::CatchUp) | Err(RecvTimeoutError::Timeout) => true,
            // Told again once the log is back (the dispatcher resynchronises every actor,
            // and takes back the work of those that handed it over).
            Ok(Msg::Owners { .. } | Msg::Regrant(_)) => true,
            Err(RecvTimeoutError::Disconnected) => false,
        }
    };
    let mut stop = None;

    // The poisoned database keeps serving reads until it can be replaced: what is durable
    // in it reads as ever, and what the failure caught (one group, perhaps half of it if it
    // failed while being applied) goes with it when it is replaced.
    let mut old = state.store.current().ok();
    let recovered = loop {
        // Reopening writes a snapshot: only worth giving up the old database for once the
        // disk takes writes again (the reserve gives room on a full one).
        // A wedged flush holds the old database for ever: it cannot be given back, so it
        // stays for reads and the node must be restarted to write again.
        let feasible = !wedged
            && (old.is_none() || {
                let writable = can_write(&state.dir);
                if !writable && state.room.release() {
                    tracing::warn!("the disk is full: the reserved space goes to reopening the log");
                    can_write(&state.dir)
                } else {
                    writable
                }
            });
        if feasible {
            if let Some(open) = old.take() {
                drop(open);
                release(state.store.take(), &refuse_for, &mut stop);
                if stop.is_some() {
                    answer_unknown(&mut caught, "Herald stopped before the log was reopened");
                    return stop;
                }
            }
            match super::open_and_recover(&state.dir, state.cache_bytes, state.queue_window) {
                Ok(r) => break r,
                Err(e) => {
                    if matches!(e, OpenError::NoSpace { .. }) && state.room.release() {
                        tracing::warn!("the disk is full: the reserved space goes to reopening the log");
                        continue;
                    }
                    quiet.error("cannot reopen the log yet", &e.to_string());
                }
            }
        } else if wedged {
            quiet.error(
                "a flush never returned: restart Herald to write again (what was acknowledged is durable)",
                &why,
            );
        } else {
            quiet.error("the disk takes no writes yet; the log stays as it was", &why);
        }
        if Instant::now() >= answer_by {
            answer_unknown(&mut caught, "the log could not be reopened to learn it");
        }
        if !refuse_for(REOPEN_RETRY, &mut stop) {
            answer_unknown(&mut caught, "Herald stopped before the log was reopened");
            return stop;
        }
    };

    // A group is in the log iff the durable marker reaches it and every group before it is
    // in: only then were its preconditions (and refusals) judged against what is durable.
    let durable = super::applied_seq(&recovered.open.tree).unwrap_or(0);
    let mut whole = true;
    for group in caught {
        whole &= group.end_seq <= durable;
        if whole {
            // Its changes reach the actors through the resynchronisation below.
            group.answer(&state.catalog, &ObserverSlot::default());
        } else {
            group.fail(|| AppendError::Storage(format!("{why}; this write is not in the log")));
        }
    }
    state.next_seq = recovered.last_seq + 1;
    state.cursors = Default::default();
    if let Ok(mut catalog) = state.catalog.write() {
        *catalog = recovered.catalog;
    }
    state.store.put(Open { db: recovered.open.db, tree: recovered.open.tree });
    health.recovered();
    health.set_full(false);
    tracing::warn!(
        last_seq = recovered.last_seq,
        unfinished = recovered.unfinished,
        "the log was reopened from what is durable; writes are taken again"
    );
    if let Some(observe) = state.observer.get() {
        observe(vec![Change::Reopened { queues: recovered.queues }]);
    }
    stop
}

/// How often, at most, the tree is flushed in cluster mode: it acknowledges nothing (the
/// database does), so a flush only bounds what a restart folds again.
const CLUSTER_FLUSH_EVERY: Duration = Duration::from_secs(1);

/// How an append to the database went.
enum Upshot {
    /// Committed: the staged group is in the database's log.
    Committed(Staged),
    /// Refused by the database, or its connection failed before the commit: nothing was
    /// written.
    Failed(Staged, String),
    /// The commit went unanswered within the deadline.
    Unknown(Staged, String),
    /// A lease the group's records need was taken over meanwhile: nothing was written (the
    /// database is fine; the new owner sends those attempts again).
    Fenced(Staged),
    /// The head lock or the other nodes' records could not be had: nothing was staged, and
    /// the callers were answered.
    NotLocked(String),
}

/// Appends a group under the head lock: takes it, folds every record other nodes appended
/// since this node's fold, judges and stages the group on that, and commits it fenced.
fn append_locked(
    state: &mut WriterState,
    up: &mut Upstream,
    txn: &mut Txn<'_>,
    appends: Vec<(Command, Reply)>,
    fence: &[crate::pg::leases::Holding],
    encoded: &mut Vec<(u64, Vec<u8>)>,
    mut notes: Option<&mut Vec<Change>>,
) -> Upshot {
    let local_last = state.next_seq - 1;
    let cluster = up.cluster.clone();
    let appender = &mut up.appender;
    let upshot = cluster.db.block_on(async {
        let locking =
            lock_and_fold(appender, &cluster, local_last, &mut state.next_seq, txn, encoded, notes.as_deref_mut());
        let locked = match locking.await {
            Ok(locked) => locked,
            Err(why) => {
                fail_all(appends, &why);
                return (Upshot::NotLocked(why), 0);
            }
        };
        let foreign = encoded.len();
        let staged = stage_all(state, txn, appends, 0, encoded, notes);
        // Fencing: a lease taken over since the holdings were read refuses the group (its
        // attempts are sent again by the new owner: at-least-once).
        let done = locked.commit_fenced(&encoded[foreign..], &cluster.node, fence, cluster.timeout).await;
        (Upshot::of(staged, done), foreign)
    });
    let (upshot, foreign) = upshot;
    // Nothing of other nodes' came before this group: the next may take the fast path.
    up.uncontended = foreign == 0 && matches!(upshot, Upshot::Committed(_));
    upshot
}

/// Takes the database's head lock and folds into `txn` every record other nodes appended
/// after this node's fold (`next_seq` moves past them).
async fn lock_and_fold<'a>(
    appender: &'a mut crate::pg::records::Appender,
    cluster: &upstream::Cluster,
    local_last: u64,
    next_seq: &mut u64,
    txn: &mut Txn<'_>,
    encoded: &mut Vec<(u64, Vec<u8>)>,
    mut notes: Option<&mut Vec<Change>>,
) -> Result<crate::pg::records::Locked<'a>, String> {
    let locked = (appender.lock(&cluster.db, cluster.timeout).await)
        .map_err(|e| format!("cannot append to the database: {e}"))?;
    if locked.last_seq < local_last {
        return Err(format!(
            "the database's log ends at record {} but this node has folded up to {local_last} (was the database \
             restored from a backup?): stop this node and give it an empty data_dir",
            locked.last_seq
        ));
    }
    while *next_seq <= locked.last_seq {
        let fetched = (locked.records_after(*next_seq - 1, upstream::CHUNK).await)
            .map_err(|e| format!("cannot read the other nodes' records: {e}"))?;
        if fetched.is_empty() {
            // The newest records were compacted; their numbers stay taken.
            *next_seq = locked.last_seq + 1;
            break;
        }
        upstream::fold_fetched(txn, fetched, next_seq, encoded, notes.as_deref_mut())
            .map_err(|e| format!("cannot fold the other nodes' records: {e}"))?;
    }
    Ok(locked)
}

/// Records one cluster retention step examines at most: its deletions hold the head lock,
/// so every node's appends wait for them.
const CLUSTER_STEP_RECORDS: usize = 1_000;

/// Cluster mode: one retention step (`docs/cluster.md`, "Retention"). Under the head lock,
/// with every other node's record folded, it decides on this node's fold exactly as one node
/// would, and appends the removal as a record in the transaction that deletes what it lists
/// from the database; every node removes the same from its fold when it folds that record.
fn compact_upstream(
    state: &mut WriterState,
    open: &Open,
    now: u64,
    cursors: &mut compaction::Cursors,
) -> Result<CompactionReport, Stepped> {
    let Some(mut up) = state.upstream.take() else { return Ok(CompactionReport { done: true, ..Default::default() }) };
    let stepped = compact_upstream_with(state, &mut up, open, now, cursors);
    state.upstream = Some(up);
    stepped
}

fn compact_upstream_with(
    state: &mut WriterState,
    up: &mut Upstream,
    open: &Open,
    now: u64,
    cursors: &mut compaction::Cursors,
) -> Result<CompactionReport, Stepped> {
    let started = Instant::now();
    let local_last = state.next_seq - 1;
    let cluster = up.cluster.clone();
    let policy = state.policy;
    let mut txn = Txn::new(&open.tree);
    let mut encoded: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut notes = state.observer.get().map(|_| Vec::new());
    let mut report = CompactionReport::default();
    let next_seq = &mut state.next_seq;
    let appender = &mut up.appender;
    let stepped: Result<(), String> = cluster.db.block_on(async {
        let locked =
            lock_and_fold(appender, &cluster, local_last, next_seq, &mut txn, &mut encoded, notes.as_mut()).await?;
        let decided = compaction::decide(&txn, &policy, now, CLUSTER_STEP_RECORDS, cursors).and_then(|(done, r)| {
            report.done = done;
            let removed = compaction::remove(&mut txn, &r, &mut report)?;
            Ok((r, removed))
        });
        let (removal, removed) = match decided {
            Ok(decided) => decided,
            Err(e) => {
                let _ = locked.release(cluster.timeout).await;
                return Err(format!("cannot read this node's fold: {e}"));
            }
        };
        if removal.is_empty() {
            return locked.release(cluster.timeout).await.map_err(|e| e.to_string());
        }
        let record = crate::storage::Record::HistoryRemoved(Box::new(removal));
        let body = record.encode().map_err(|e| format!("cannot encode the removal: {e}"))?;
        let seq = *next_seq;
        encoded.push((seq, body.clone()));
        *next_seq += 1;
        locked.commit_removal((seq, body), &removed, cluster.timeout).await.map_err(|e| e.to_string())
    });
    let health = state.store.health();
    if let Err(why) = stepped {
        // Nothing of it is in the tree; what the database holds is folded next time.
        state.next_seq = local_last + 1;
        up.appender.reset();
        up.failing(health, &why);
        return Err(Stepped::Refused(AppendError::Storage(why)));
    }
    up.working(health);
    if encoded.is_empty() {
        return Ok(report);
    }
    upstream::stage_pages(&mut txn, &encoded, state.next_seq - 1);
    let (batch, changes) = txn.into_parts();
    let group = Group::folded(changes, notes, encoded.len() as u64, started, state.next_seq - 1);
    let applied = open.tree.apply_batch(batch);
    group.answer(&state.catalog, &state.observer);
    up.set_folded(state.next_seq - 1);
    if let Err(e) = applied {
        return Err(Stepped::Fault(Fault { caught: Vec::new(), why: e.to_string(), wedged: false }));
    }
    up.unflushed = true;
    Ok(report)
}

impl Upshot {
    /// How an append of `staged` that reached the database ended.
    fn of(staged: Staged, done: Result<(), PgAppendError>) -> Upshot {
        match done {
            Ok(()) => Upshot::Committed(staged),
            Err(PgAppendError::Fenced) => Upshot::Fenced(staged),
            Err(PgAppendError::Failed(e)) => Upshot::Failed(staged, e.to_string()),
            Err(moved @ PgAppendError::HeadMoved) => Upshot::Failed(staged, moved.to_string()),
            Err(unknown @ PgAppendError::Unknown(_)) => Upshot::Unknown(staged, unknown.to_string()),
        }
    }
}

/// Cluster mode: appends a group to the database's log under its head lock (see
/// [`upstream`]), then applies it — with the other nodes' records folded before it — to
/// the tree and answers. A sled failure after the commit answers the callers first (their
/// records are committed) and comes back as a [`Fault`] with nothing caught.
fn commit_upstream(state: &mut WriterState, open: &Open, appends: Vec<(Command, Reply)>) -> Result<(), Fault> {
    let Some(mut up) = state.upstream.take() else {
        fail_all(appends, "the log's database is gone");
        return Ok(());
    };
    let done = commit_upstream_with(state, &mut up, open, appends);
    state.upstream = Some(up);
    done
}

fn commit_upstream_with(
    state: &mut WriterState,
    up: &mut Upstream,
    open: &Open,
    appends: Vec<(Command, Reply)>,
) -> Result<(), Fault> {
    let started = Instant::now();
    let works = appends.iter().any(|(cmd, _)| upstream::records_work(cmd));
    let offered = appends.len();
    let (appends, fence) = upstream::owned_holdings(up, appends, |reply, e| {
        let _ = reply.send(Err(e));
    });
    // Refused records of work may include other webhooks' (one command per arbiter tick).
    up.resync_due |= works && appends.len() < offered;
    if appends.is_empty() {
        return Ok(());
    }
    let local_last = state.next_seq - 1;
    let cluster = up.cluster.clone();
    let mut txn = Txn::new(&open.tree);
    let mut encoded: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut notes = state.observer.get().map(|_| Vec::new());
    let appending = Instant::now();
    let upshot = if up.uncontended {
        // The fast path: this node's fold is likely the database's head (the last group
        // found nothing of other nodes'), so the group is judged on it, numbered after it and
        // appended in one round trip — refused, nothing written, if the head moved after all.
        let copies: Vec<Command> = appends.iter().map(|(cmd, _)| cmd.clone()).collect();
        let staged = stage_all(state, &mut txn, appends, 0, &mut encoded, notes.as_mut());
        let appending =
            up.appender.append_at(&cluster.db, local_last, &encoded, &cluster.node, &fence, cluster.timeout);
        match cluster.db.block_on(appending) {
            Err(PgAppendError::HeadMoved) => {
                // Nothing of the staging is anywhere but in `txn`: start again, under the lock.
                up.uncontended = false;
                state.next_seq = local_last + 1;
                encoded.clear();
                notes = state.observer.get().map(|_| Vec::new());
                txn = Txn::new(&open.tree);
                let appends = copies.into_iter().zip(staged.replies).collect();
                append_locked(state, up, &mut txn, appends, &fence, &mut encoded, notes.as_mut())
            }
            done => Upshot::of(staged, done),
        }
    } else {
        append_locked(state, up, &mut txn, appends, &fence, &mut encoded, notes.as_mut())
    };
    if let Some(timer) = &cluster.commit_timer {
        timer.took(appending.elapsed());
    }
    let health = state.store.health();
    // A failure: the staged group (if it got that far), what its callers hear, and whether
    // the database failed (rather than a lease moving on).
    let (staged, failure) = match upshot {
        Upshot::Committed(staged) => (staged, None),
        Upshot::Failed(staged, why) => (staged, Some((AppendError::Storage(why), true))),
        Upshot::Unknown(staged, why) => (staged, Some((AppendError::Unknown(why), true))),
        Upshot::Fenced(staged) => {
            tracing::info!("a lease this node's records needed was taken over: the group was refused");
            (staged, Some((upstream::not_owner(), false)))
        }
        // Nothing was staged; the callers were answered already.
        Upshot::NotLocked(why) => {
            let none = Staged { replies: Vec::new(), outcomes: Vec::new(), bytes: 0 };
            (none, Some((AppendError::Storage(why), true)))
        }
    };
    if let Some((failure, database_failed)) = failure {
        // Nothing of the group is in the tree; what the database holds is folded next time.
        up.resync_due |= works;
        state.next_seq = local_last + 1;
        if database_failed {
            up.appender.reset();
            up.failing(health, &failure.to_string());
        }
        for (reply, outcome) in staged.replies.into_iter().zip(staged.outcomes) {
            let _ = reply.send(outcome.and(Err(failure.clone())));
        }
        return Ok(());
    }
    up.working(health);
    upstream::stage_pages(&mut txn, &encoded, state.next_seq - 1);
    let (batch, changes) = txn.into_parts();
    let records = state.next_seq - 1 - local_last;
    let group = Group {
        changes,
        notes: notes.unwrap_or_default(),
        replies: staged.replies,
        outcomes: staged.outcomes,
        records,
        started,
        end_seq: state.next_seq - 1,
        bytes: staged.bytes,
        applied: true,
    };
    let applied = open.tree.apply_batch(batch);
    // Committed in the database: acknowledged whatever the tree does next.
    group.answer(&state.catalog, &state.observer);
    up.set_folded(state.next_seq - 1);
    if let Err(e) = applied {
        return Err(Fault { caught: Vec::new(), why: e.to_string(), wedged: false });
    }
    up.unflushed = true;
    resync_if_due(state, up);
    flush_now_and_then(up, &open.tree)
}

/// Cluster mode: once appends work again after attempts' records were lost, every actor
/// starts over from the log (`Change::Reopened`, as after a reopen of the tree), so no
/// delivery stays stuck in an actor's memory as "being recorded".
fn resync_if_due(state: &WriterState, up: &mut Upstream) {
    if !up.resync_due || up.is_failing() {
        return;
    }
    up.resync_due = false;
    let Some(observe) = state.observer.get() else { return };
    // Every webhook owed deliveries, not only those held now: a webhook left out must mean
    // nothing owed, since the engine grants afresh every one it was told of (what this node
    // does not own it does not start).
    let queues = due_windows(state, |_| true);
    tracing::info!(webhooks = queues.len(), "appends work again: the actors start over from the log");
    observe(vec![Change::Reopened { queues }]);
}

/// The first due deliveries of every live webhook owed some that `wanted` picks.
fn due_windows(
    state: &WriterState,
    wanted: impl Fn(&crate::model::WebhookId) -> bool,
) -> std::collections::HashMap<crate::model::WebhookId, Vec<crate::storage::Queued>> {
    let mut queues = std::collections::HashMap::new();
    let owed: Vec<crate::model::WebhookId> = match state.catalog.read() {
        Ok(catalog) => catalog
            .webhooks
            .iter()
            .filter(|(id, row)| {
                row.deleted_at.is_none() && catalog.statuses.get(*id).is_some_and(|s| s.pending > 0) && wanted(id)
            })
            .map(|(id, _)| id.clone())
            .collect(),
        Err(_) => Vec::new(),
    };
    if let Ok(tree) = state.store.tree() {
        for id in owed {
            match super::window::due_window(&tree, &id, state.queue_window) {
                Ok((window, _)) => {
                    queues.insert(id, window);
                }
                Err(e) => tracing::error!(webhook_id = %id, error = %e, "a webhook's due deliveries cannot be read"),
            }
        }
    }
    queues
}

/// Flushes the tree if it was not flushed for [`CLUSTER_FLUSH_EVERY`] (cluster mode).
fn flush_now_and_then(up: &mut Upstream, tree: &sled::Tree) -> Result<(), Fault> {
    if up.unflushed && up.flushed_at.elapsed() >= CLUSTER_FLUSH_EVERY {
        up.unflushed = false;
        up.flushed_at = Instant::now();
        tree.flush().map_err(|e| Fault { caught: Vec::new(), why: e.to_string(), wedged: false })?;
    }
    Ok(())
}

/// Cluster mode: folds what other nodes appended after this node's fold, a chunk at a time
/// until caught up (or a few chunks: appends wait meanwhile). A database that cannot be read
/// marks the log failing (readiness says so, the actors start nothing) until it can.
fn catch_up(state: &mut WriterState, idle: bool) -> Result<(), Fault> {
    let Some(mut up) = state.upstream.take() else { return Ok(()) };
    let mut caught = catch_up_with(state, &mut up);
    if caught.is_ok() && idle {
        if let Ok(open) = state.store.current() {
            caught = flush_now_and_then(&mut up, &open.tree);
        }
    }
    state.upstream = Some(up);
    caught
}

/// Chunks one catch-up folds at most before the writer looks at its queue again.
const CATCH_UP_CHUNKS: usize = 8;

fn catch_up_with(state: &mut WriterState, up: &mut Upstream) -> Result<(), Fault> {
    let Ok(open) = state.store.current() else { return Ok(()) };
    let health = state.store.health();
    for _ in 0..CATCH_UP_CHUNKS {
        let started = Instant::now();
        let fetched = match up.read_after(state.next_seq - 1) {
            Ok(fetched) => fetched,
            Err(e) => {
                up.failing(health, &format!("cannot read the database's log: {e}"));
                return Ok(());
            }
        };
        up.working(health);
        if fetched.is_empty() {
            resync_if_due(state, up);
            return Ok(());
        }
        let whole = fetched.len() < upstream::CHUNK;
        let before = state.next_seq;
        let mut txn = Txn::new(&open.tree);
        let mut encoded = Vec::with_capacity(fetched.len());
        let mut notes = state.observer.get().map(|_| Vec::new());
        if let Err(e) = upstream::fold_fetched(&mut txn, fetched, &mut state.next_seq, &mut encoded, notes.as_mut()) {
            state.next_seq = before;
            up.failing(health, &format!("cannot fold the other nodes' records: {e}"));
            return Ok(());
        }
        upstream::stage_pages(&mut txn, &encoded, state.next_seq - 1);
        let (batch, changes) = txn.into_parts();
        if let Err(e) = open.tree.apply_batch(batch) {
            state.next_seq = before;
            return Err(Fault { caught: Vec::new(), why: e.to_string(), wedged: false });
        }
        up.unflushed = true;
        up.set_folded(state.next_seq - 1);
        let group = Group::folded(changes, notes, encoded.len() as u64, started, state.next_seq - 1);
        group.answer(&state.catalog, &state.observer);
        if whole {
            return Ok(());
        }
    }
    Ok(())
}

/// Cluster mode: what this node may deliver changed. It first folds everything the database
/// holds (a partition's previous owner may have appended up to its last moment), then tells
/// the delivery engine, with the first due deliveries of each webhook it gained that is owed
/// some.
fn owners_changed(
    state: &mut WriterState,
    gained: &std::collections::BTreeSet<u32>,
    startable: std::collections::BTreeSet<u32>,
    partitions: u32,
) -> Result<(), Fault> {
    loop {
        let before = state.next_seq;
        catch_up(state, false)?;
        if state.next_seq == before || state.upstream.as_ref().is_some_and(|up| up.is_failing()) {
            break;
        }
    }
    let Some(observe) = state.observer.get() else { return Ok(()) };
    let queues = if gained.is_empty() {
        Default::default()
    } else {
        due_windows(state, |id| gained.contains(&crate::pg::leases::partition_of(id.as_str(), partitions)))
    };
    let granted = crate::storage::Granted::new(move |id| {
        startable.contains(&crate::pg::leases::partition_of(id.as_str(), partitions))
    });
    let gained = gained.clone();
    let fresh = crate::storage::Granted::new(move |id| {
        gained.contains(&crate::pg::leases::partition_of(id.as_str(), partitions))
    });
    observe(vec![Change::Owners { gained: queues, granted, fresh }]);
    Ok(())
}

/// Cluster mode: tells the delivery engine the window of a webhook whose actor handed its
/// work over while the node kept its lease (read here, so in order with the changes).
fn regranted(state: &WriterState, webhook: crate::model::WebhookId) {
    let Some(observe) = state.observer.get() else { return };
    let mut queues = due_windows(state, |id| *id == webhook);
    let window = queues.remove(&webhook).unwrap_or_default();
    observe(vec![Change::Regranted { webhook, window }]);
}
