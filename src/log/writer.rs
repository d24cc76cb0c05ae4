//! The log writer: one thread that owns every write to the tree, with group commit.
//!
//! Callers send a [`Command`] (records plus an optional precondition) and wait for its
//! answer. The thread takes every command waiting, checks each one's precondition against
//! the state as the commands before it in the same group left it, stages its records and
//! their fold, and writes the whole group with one `apply_batch`. A second thread, the
//! flusher, then makes it durable with one `flush`, updates the in-memory catalog, and only
//! then answers every caller — while the writer already stages the next group. So a slow
//! `fsync` (tens of milliseconds on a busy disk) delays one group, not the staging of the
//! next, and the requests that queued behind it are answered one flush later, not one
//! staging plus one flush later.
//!
//! Invariants:
//! - An append is acknowledged only after its records and their effects are flushed.
//! - Records, their effects and the `applied` marker are in one atomic batch: after a crash
//!   the tree holds whole groups or nothing of them.
//! - Sequence numbers increase by one per record, with no gaps among acknowledged records (a
//!   rejected command gives its numbers back).
//! - Compaction runs on this thread too, so it can never race an append; it waits for the
//!   flusher first, so the catalog absorbs changes in the order they were written.
//! - Groups are flushed and answered in the order they were applied; a group's state is
//!   visible to the next group's preconditions as soon as it is applied (sled reads see
//!   applied batches), but to readers of the catalog only once it is durable.

use super::catalog::Catalog;
use super::compaction::{self, CompactionPolicy, CompactionReport};
use super::keys;
use super::notify::{change_of, Change, Observer};
use super::pages;
use super::projection;
use super::record::Record;
use super::rows::{Rows, RowsError, Txn};
use crate::model::{now_millis, EventId};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, RwLock};
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

/// Why a precondition refused a command. Nothing of the command was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The idempotency key is already claimed by `event_id`.
    #[error("idempotency key already used by {event_id}")]
    Duplicate { event_id: EventId, same_request: bool, seq: u64 },
    #[error("limit reached: {0}")]
    Limit(String),
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
}

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Rows(#[from] RowsError),
    #[error("record does not encode: {0}")]
    Encode(#[from] super::codec::CodecError),
    #[error("storage failed: {0}")]
    Storage(String),
    #[error("the log writer has stopped")]
    Closed,
}

/// A precondition, run on the writer thread against the state the command would change.
pub type Check = Box<dyn FnOnce(&Txn<'_>) -> Result<(), Rejection> + Send>;

/// What an acknowledged append got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The sequence number of each record, in order.
    pub seqs: Vec<u64>,
}

/// Records to append atomically, if `check` allows.
pub struct Command {
    pub records: Vec<Record>,
    pub check: Option<Check>,
}

impl Command {
    pub fn new(records: Vec<Record>) -> Self {
        Self { records, check: None }
    }

    pub fn checked(
        records: Vec<Record>,
        check: impl FnOnce(&Txn<'_>) -> Result<(), Rejection> + Send + 'static,
    ) -> Self {
        Self { records, check: Some(Box::new(check)) }
    }
}

enum Msg {
    Append(Command, oneshot::Sender<Result<Appended, AppendError>>),
    Compact {
        now: u64,
        reply: oneshot::Sender<Result<CompactionReport, RowsError>>,
    },
    /// Commit what came before, flush and stop.
    Stop(oneshot::Sender<()>),
}

/// Handle to the writer thread. Dropping every handle stops the thread after it has
/// committed what it was sent.
#[derive(Clone)]
pub struct Writer {
    tx: SyncSender<Msg>,
    /// Told how long each command took from hand-over to flush (the metrics' histogram).
    timer: Option<AppendTimer>,
}

/// Receives the time each writer command took from hand-over to its flush. The log knows
/// nothing of metrics: whoever opens it hands one in ([`super::LogOptions::append_timer`]).
#[derive(Clone)]
pub struct AppendTimer(Arc<dyn Fn(Duration) + Send + Sync>);

impl AppendTimer {
    pub fn new(f: impl Fn(Duration) + Send + Sync + 'static) -> Self {
        AppendTimer(Arc::new(f))
    }

    fn took(&self, d: Duration) {
        (self.0)(d)
    }
}

impl std::fmt::Debug for AppendTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppendTimer")
    }
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
    pub tree: sled::Tree,
    /// Set once the delivery engine watches; until then no notes are collected.
    pub observer: ObserverSlot,
    pub next_seq: u64,
    pub catalog: Arc<RwLock<Catalog>>,
    pub policy: CompactionPolicy,
    pub cursors: compaction::Cursors,
}

/// A group applied to the tree, waiting for its flush.
struct Applied {
    changes: Changes,
    /// What the delivery engine hears of this group, after the flush.
    notes: Vec<Change>,
    replies: Vec<Reply>,
    outcomes: Vec<Result<Appended, AppendError>>,
    records: u64,
    started: Instant,
}

enum FlushJob {
    Group(Applied),
    /// Answered once every group sent before is flushed and answered.
    Barrier(mpsc::Sender<()>),
}

/// The flusher thread: flushes applied groups in order, updates the catalog, answers.
struct Flusher {
    tx: Option<SyncSender<FlushJob>>,
    handle: Option<JoinHandle<()>>,
}

impl Flusher {
    fn spawn(tree: sled::Tree, catalog: Arc<RwLock<Catalog>>, observer: ObserverSlot) -> std::io::Result<Flusher> {
        // One group flushing and one waiting: the writer stages a third meanwhile, and
        // blocks rather than running further ahead of the disk.
        let (tx, rx) = mpsc::sync_channel::<FlushJob>(1);
        let handle = std::thread::Builder::new().name("herald-log-flush".into()).spawn(move || {
            for job in rx {
                match job {
                    FlushJob::Group(group) => flush_and_answer(&tree, &catalog, &observer, group),
                    FlushJob::Barrier(done) => {
                        let _ = done.send(());
                    }
                }
            }
        })?;
        Ok(Flusher { tx: Some(tx), handle: Some(handle) })
    }

    fn send(&self, group: Applied) {
        let Some(tx) = &self.tx else { return fail_all(group.replies, "the log flusher has stopped") };
        if let Err(mpsc::SendError(FlushJob::Group(group))) = tx.send(FlushJob::Group(group)) {
            fail_all(group.replies, "the log flusher has stopped");
        }
    }

    /// Waits until every group sent so far is flushed and answered.
    fn drain(&self) {
        let (done, wait) = mpsc::channel();
        if let Some(tx) = &self.tx {
            if tx.send(FlushJob::Barrier(done)).is_ok() {
                let _ = wait.recv();
            }
        }
    }

    /// Flushes and answers what is queued, then stops the thread.
    fn stop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn flush_and_answer(tree: &sled::Tree, catalog: &Arc<RwLock<Catalog>>, observer: &ObserverSlot, group: Applied) {
    let t = Instant::now();
    match tree.flush() {
        Ok(_) => {
            Catalog::absorb_committed(catalog, &group.changes);
            for (reply, outcome) in group.replies.into_iter().zip(group.outcomes) {
                let _ = reply.send(outcome);
            }
            if let (Some(observe), false) = (observer.get(), group.notes.is_empty()) {
                observe(group.notes);
            }
            tracing::trace!(
                records = group.records,
                flush_us = t.elapsed().as_micros() as u64,
                elapsed_us = group.started.elapsed().as_micros() as u64,
                "group committed"
            );
        }
        Err(e) => {
            // The group may or may not be on disk: tell every caller it failed.
            tracing::error!(error = %e, "log flush failed");
            fail_all(group.replies, &e.to_string());
        }
    }
}

/// Tells every caller of a group that it failed.
fn fail_all(replies: Vec<Reply>, why: &str) {
    for reply in replies {
        let _ = reply.send(Err(AppendError::Storage(why.to_owned())));
    }
}

impl Writer {
    pub(crate) fn spawn(state: WriterState, timer: Option<AppendTimer>) -> std::io::Result<(Writer, WriterThread)> {
        let (tx, rx) = mpsc::sync_channel(QUEUE_DEPTH);
        let flusher = Flusher::spawn(state.tree.clone(), state.catalog.clone(), state.observer.clone())?;
        let handle =
            std::thread::Builder::new().name("herald-log-writer".into()).spawn(move || run(state, flusher, rx))?;
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

    /// Commits everything sent before, flushes and stops the thread; later appends fail
    /// with [`AppendError::Closed`].
    pub fn stop_blocking(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Msg::Stop(reply)).is_ok() {
            let _ = rx.blocking_recv();
        }
    }

    /// Runs compaction to completion as of `now` (milliseconds), between appends.
    pub fn compact_blocking(&self, now: u64) -> Result<CompactionReport, AppendError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Msg::Compact { now, reply }).map_err(|_| AppendError::Closed)?;
        Ok(rx.blocking_recv().map_err(|_| AppendError::Closed)??)
    }
}

/// Where the observer is put once the delivery engine starts.
pub(crate) type ObserverSlot = Arc<std::sync::OnceLock<Observer>>;

fn run(mut state: WriterState, mut flusher: Flusher, rx: Receiver<Msg>) {
    let mut next_compaction = Instant::now() + state.policy.interval;
    let mut compaction_behind = false;
    let mut last_callers = 0usize;
    loop {
        let wait =
            if compaction_behind { Duration::ZERO } else { next_compaction.saturating_duration_since(Instant::now()) };
        let first = match rx.recv_timeout(wait) {
            Ok(msg) => msg,
            Err(RecvTimeoutError::Timeout) => {
                flusher.drain();
                let now = now_millis();
                match compaction::step(&mut state, now, compaction::STEP_RECORDS) {
                    Ok(report) => {
                        compaction_behind = !report.done;
                        if report.removed_records > 0 {
                            tracing::debug!(removed = report.removed_records, "compacted log");
                        }
                    }
                    Err(e) => {
                        compaction_behind = false;
                        tracing::error!(error = %e, "log compaction failed");
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
                Msg::Compact { now, reply } => {
                    // Commit what came before, so compaction sees it.
                    commit_group(&mut state, &flusher, std::mem::take(&mut appends));
                    flusher.drain();
                    records = 0;
                    let _ = reply.send(compaction::run_to_end(&state, now));
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
        commit_group(&mut state, &flusher, appends);
        if let Some(reply) = stop {
            flusher.stop();
            flush_and_stop(&state);
            let _ = reply.send(());
            return;
        }
    }
    flusher.stop();
    flush_and_stop(&state);
}

fn flush_and_stop(state: &WriterState) {
    if let Err(e) = state.tree.flush() {
        tracing::error!(error = %e, "final log flush failed");
    }
}

type Reply = oneshot::Sender<Result<Appended, AppendError>>;

fn commit_group(state: &mut WriterState, flusher: &Flusher, appends: Vec<(Command, Reply)>) {
    if appends.is_empty() {
        return;
    }
    let started = Instant::now();
    let first_seq = state.next_seq;
    let mut txn = Txn::new(&state.tree);
    let mut outcomes: Vec<Result<Appended, AppendError>> = Vec::with_capacity(appends.len());
    let mut encoded: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut notes = state.observer.get().map(|_| Vec::new());
    let mut replies = Vec::with_capacity(appends.len());
    for (cmd, reply) in appends {
        replies.push(reply);
        let sp = txn.savepoint();
        let seq_before = state.next_seq;
        let kept_before = encoded.len();
        let notes_before = notes.as_ref().map_or(0, Vec::len);
        let outcome = stage(&mut txn, &mut state.next_seq, cmd, &mut encoded, notes.as_mut());
        if outcome.is_err() {
            txn.rollback(sp);
            state.next_seq = seq_before;
            encoded.truncate(kept_before);
            if let Some(n) = notes.as_mut() {
                n.truncate(notes_before);
            }
        }
        outcomes.push(outcome);
    }
    for (key, page) in pages::pack(&encoded) {
        txn.put(key, page);
    }
    if state.next_seq > first_seq {
        txn.put(keys::APPLIED.to_vec(), (state.next_seq - 1).to_be_bytes().to_vec());
    }
    let records = state.next_seq - first_seq;
    let (batch, changes) = txn.into_parts();
    let t = Instant::now();
    match state.tree.apply_batch(batch) {
        Ok(()) => {
            tracing::trace!(records, apply_us = t.elapsed().as_micros() as u64, "group applied");
            flusher.send(Applied { changes, notes: notes.unwrap_or_default(), replies, outcomes, records, started });
        }
        Err(e) => {
            // Nothing of the group is in the tree (a batch is atomic): tell every caller.
            tracing::error!(error = %e, "log group commit failed");
            fail_all(replies, &e.to_string());
        }
    }
}

fn stage(
    txn: &mut Txn<'_>,
    next_seq: &mut u64,
    cmd: Command,
    encoded: &mut Vec<(u64, Vec<u8>)>,
    mut notes: Option<&mut Vec<Change>>,
) -> Result<Appended, AppendError> {
    if let Some(check) = cmd.check {
        check(txn)?;
    }
    let mut seqs = Vec::with_capacity(cmd.records.len());
    for record in cmd.records {
        let seq = *next_seq;
        encoded.push((seq, record.encode()?));
        projection::apply(txn, seq, &record)?;
        *next_seq += 1;
        seqs.push(seq);
        if let Some(notes) = notes.as_deref_mut() {
            notes.extend(change_of(seq, record));
        }
    }
    Ok(Appended { seqs })
}

type Changes = std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>;
