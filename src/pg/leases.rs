//! Ownership of webhooks' work in a cluster: the webhooks are hashed into a fixed number of
//! partitions, each held by at most one node at a time under a lease that the database's
//! clock times out, and every holding numbered by an epoch.
//!
//! Invariants:
//! - A partition changes hands only once its lease has expired (or its holder let it go),
//!   and every change raises its epoch: an epoch names one holding, never two.
//! - Renewing is the holder's alone: a node whose lease expired and was taken renews
//!   nothing, and learns it from the answer.
//! - Fencing: an append that carries `(partition, epoch)` checks them with `FOR SHARE` in
//!   its own transaction ([`fenced`]), so a takeover either committed before it (the append
//!   sees the new epoch and is refused) or waits until it has committed (the new holder then
//!   reads those records before it delivers).
//! - A partition is let go in two steps ([`Plan`]): announced leaving (no work starts
//!   under it; attempts on the wire get [`Keeper::handover_grace`], then are cut), let go a
//!   round later. So a new holder never sends while the old one still does.
//! - Expiry is judged by the database's clock alone; a holder's own clock only decides when
//!   it stops starting work ([`stop_by`]), well before the database could call it expired.

use super::PgError;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_postgres::GenericClient;

/// The partition a webhook's work belongs to (the same on every node).
pub fn partition_of(webhook: &str, partitions: u32) -> u32 {
    let digest = Sha256::digest(webhook.as_bytes());
    let n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    n % partitions.max(1)
}

/// One partition held: which, and the epoch its records carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Holding {
    pub part: u32,
    pub epoch: u64,
}

/// How many partitions `node` should hold with `live` nodes sharing `partitions`: an even
/// share, rounded up so that every partition has a holder.
pub fn fair_share(partitions: u32, live: u32) -> u32 {
    partitions.div_ceil(live.max(1))
}

/// The local instant by which a holder renewed at `renew_sent` (when it *sent* the renewal:
/// the database's expiry counts from a moment after that) must stop starting work, keeping
/// `margin` for work under way to end.
pub fn stop_by(renew_sent: Instant, ttl: Duration, margin: Duration) -> Instant {
    renew_sent + ttl.saturating_sub(margin)
}

/// Creates the partitions' rows (once, whoever asks first; later calls change nothing).
pub async fn ensure_partitions(client: &impl GenericClient, partitions: u32) -> Result<(), PgError> {
    client
        .execute(
            "INSERT INTO herald.leases (part) SELECT generate_series(0, $1::int - 1) ON CONFLICT (part) DO NOTHING",
            &[&(partitions as i32)],
        )
        .await?;
    Ok(())
}

/// Says `node` is alive for another `ttl`, and counts the nodes alive now (itself included).
pub async fn heartbeat(client: &impl GenericClient, node: &str, ttl: Duration) -> Result<u32, PgError> {
    let ms = ttl.as_millis() as f64;
    client
        .execute(
            "INSERT INTO herald.nodes (node, expires_at) VALUES ($1, now() + $2 * interval '1 millisecond')
             ON CONFLICT (node) DO UPDATE SET expires_at = EXCLUDED.expires_at",
            &[&node, &ms],
        )
        .await?;
    let row = client.query_one("SELECT count(*) FROM herald.nodes WHERE expires_at > now()", &[]).await?;
    Ok(row.get::<_, i64>(0) as u32)
}

/// Extends every lease `node` still holds by `ttl`; returns those holdings (a lease taken
/// from it is simply absent).
pub async fn renew(client: &impl GenericClient, node: &str, ttl: Duration) -> Result<Vec<Holding>, PgError> {
    let ms = ttl.as_millis() as f64;
    let rows = client
        .query(
            "UPDATE herald.leases SET expires_at = now() + $2 * interval '1 millisecond'
             WHERE owner = $1 AND expires_at > now() RETURNING part, epoch",
            &[&node, &ms],
        )
        .await?;
    Ok(holdings(&rows))
}

/// Takes up to `want` partitions that nobody holds (never held, let go, or expired), each
/// with a new epoch, for `ttl`. Rows another node is taking at the same moment are skipped.
pub async fn take(client: &impl GenericClient, node: &str, want: u32, ttl: Duration) -> Result<Vec<Holding>, PgError> {
    if want == 0 {
        return Ok(Vec::new());
    }
    let ms = ttl.as_millis() as f64;
    let rows = client
        .query(
            "UPDATE herald.leases SET owner = $1, epoch = epoch + 1, expires_at = now() + $3 * interval '1 millisecond'
             WHERE part IN (
                 SELECT part FROM herald.leases
                 WHERE owner IS NULL OR expires_at IS NULL OR expires_at <= now()
                 ORDER BY part LIMIT $2 FOR UPDATE SKIP LOCKED)
             RETURNING part, epoch",
            &[&node, &(want as i64), &ms],
        )
        .await?;
    Ok(holdings(&rows))
}

/// Lets `held` go (to even out the shares, or at shutdown): another node may take them at once.
pub async fn release(client: &impl GenericClient, node: &str, held: &[Holding]) -> Result<(), PgError> {
    let parts: Vec<i32> = held.iter().map(|h| h.part as i32).collect();
    client
        .execute(
            "UPDATE herald.leases SET owner = NULL, expires_at = NULL WHERE owner = $1 AND part = ANY($2)",
            &[&node, &parts],
        )
        .await?;
    Ok(())
}

/// Within an append's transaction: the current holdings among partitions `$1` of node `$2`
/// (epoch unchanged, lease unexpired), locking those rows until the transaction ends.
pub const FENCE: &str = "SELECT part, epoch FROM herald.leases
     WHERE part = ANY($1) AND owner = $2 AND expires_at > now() ORDER BY part FOR SHARE";

/// Within an append's transaction: whether every holding is still current (its epoch
/// unchanged and its lease unexpired), locking those rows until the transaction ends.
pub async fn fenced(client: &impl GenericClient, node: &str, held: &[Holding]) -> Result<bool, PgError> {
    if held.is_empty() {
        return Ok(true);
    }
    let rows = client.query(FENCE, &[&parts_of(held), &node]).await?;
    Ok(still_held(&rows, held))
}

/// What one round does with the holdings a node just renewed: the partitions it announced
/// as leaving a round ago are let go now (their work stopped since, within
/// [`Keeper::handover_grace`]); beyond its fair `share`, the rest are announced as leaving
/// (still held and renewed, so the records of attempts finishing meanwhile are accepted,
/// but nothing new starts under them); below it, it takes what is free.
///
/// Two steps rather than one, so that a partition never changes hands while its old
/// holder still has an attempt on the wire: another node can take it only after the
/// release, a round after the holder stopped starting and a round minus the grace after it
/// cut what was still sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Let go this round.
    pub release: Vec<Holding>,
    /// Still held after this round (the leaving ones included).
    pub kept: Vec<Holding>,
    /// Held but leaving: let go next round.
    pub leaving: BTreeSet<u32>,
    /// How many free partitions to take.
    pub take: u32,
}

/// See [`Plan`]. `renewed` is sorted by partition.
pub fn plan(renewed: Vec<Holding>, leaving: &BTreeSet<u32>, share: u32) -> Plan {
    let (release, kept): (Vec<Holding>, Vec<Holding>) = renewed.into_iter().partition(|h| leaving.contains(&h.part));
    let share = share as usize;
    let leaving = kept.iter().skip(share).map(|h| h.part).collect();
    let take = share.saturating_sub(kept.len()) as u32;
    Plan { release, kept, leaving, take }
}

/// The partitions of `held`, as [`FENCE`] takes them.
pub fn parts_of(held: &[Holding]) -> Vec<i32> {
    held.iter().map(|h| h.part as i32).collect()
}

/// Whether [`FENCE`]'s `rows` show every holding in `held` current.
pub fn still_held(rows: &[tokio_postgres::Row], held: &[Holding]) -> bool {
    let current = holdings(rows);
    held.iter().all(|h| current.contains(h))
}

fn holdings(rows: &[tokio_postgres::Row]) -> Vec<Holding> {
    let mut out: Vec<Holding> =
        rows.iter().map(|r| Holding { part: r.get::<_, i32>(0) as u32, epoch: r.get::<_, i64>(1) as u64 }).collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_spread_webhooks_and_agree_everywhere() {
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            counts[partition_of(&format!("wh_{i:026}"), 8) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
        assert_eq!(partition_of("wh_01J0000000000000000000000", 64), partition_of("wh_01J0000000000000000000000", 64));
        assert_eq!(partition_of("anything", 0), 0);
    }

    #[test]
    fn shares_cover_every_partition() {
        assert_eq!(fair_share(64, 1), 64);
        assert_eq!(fair_share(64, 3), 22);
        assert_eq!(fair_share(64, 0), 64);
        for live in 1..10 {
            assert!(fair_share(64, live) * live >= 64);
        }
    }

    fn held(parts: &[u32]) -> Vec<Holding> {
        parts.iter().map(|&part| Holding { part, epoch: 7 }).collect()
    }

    #[test]
    fn a_share_too_big_is_announced_leaving_a_round_before_it_is_let_go() {
        // Alone with 8 partitions, a second node arrives: the share drops to 4.
        let first = plan(held(&[0, 1, 2, 3, 4, 5, 6, 7]), &BTreeSet::new(), 4);
        assert!(first.release.is_empty(), "nothing is let go in the round that decides it");
        assert_eq!(first.kept, held(&[0, 1, 2, 3, 4, 5, 6, 7]));
        assert_eq!(first.leaving, BTreeSet::from([4, 5, 6, 7]));
        assert_eq!(first.take, 0);
        // The next round lets those go and keeps the rest.
        let second = plan(first.kept, &first.leaving, 4);
        assert_eq!(second.release, held(&[4, 5, 6, 7]));
        assert_eq!(second.kept, held(&[0, 1, 2, 3]));
        assert!(second.leaving.is_empty());
        assert_eq!(second.take, 0);
    }

    #[test]
    fn a_leaving_partition_lost_meanwhile_is_not_let_go_twice_and_a_short_share_takes() {
        // Partition 5 expired and was taken by another node: renewal did not return it.
        let p = plan(held(&[0, 1, 4]), &BTreeSet::from([4, 5]), 4);
        assert_eq!(p.release, held(&[4]));
        assert_eq!(p.kept, held(&[0, 1]));
        assert!(p.leaving.is_empty());
        assert_eq!(p.take, 2);
    }

    #[test]
    fn a_renewal_after_the_local_deadline_counts_a_lapse_and_one_before_it_does_not() {
        let now = Instant::now();
        let held = |stop_by: Instant, lapses: u64| Holdings {
            held: BTreeMap::from([(0, 3)]),
            leaving: BTreeSet::new(),
            stop_by: Some(stop_by),
            partitions: 2,
            lapses,
        };
        let published = held(now + Duration::from_millis(100), 4);
        let renewed = held(now + Duration::from_secs(2), 4);
        // In time: the same holding goes on.
        assert_eq!(lapses_after(&published, &renewed, now), 4);
        // Late: whatever read the holdings meanwhile found nothing it may start.
        assert_eq!(lapses_after(&published, &renewed, now + Duration::from_millis(100)), 5);
        // A failed round publishes nothing new, however late.
        assert_eq!(lapses_after(&published, &published, now + Duration::from_secs(5)), 4);
        // Nothing was held, so nothing was handed over.
        let empty = Holdings { held: BTreeMap::new(), ..published.clone() };
        assert_eq!(lapses_after(&empty, &renewed, now + Duration::from_secs(5)), 4);
    }

    #[test]
    fn holdings_start_nothing_under_a_leaving_partition_but_still_record_under_it() {
        let now = Instant::now();
        let h = Holdings {
            held: BTreeMap::from([(0, 3), (1, 4)]),
            leaving: BTreeSet::from([1]),
            stop_by: Some(now + Duration::from_secs(1)),
            partitions: 2,
            lapses: 0,
        };
        assert!(h.may_start(0, now));
        assert!(!h.may_start(1, now));
        assert_eq!(h.startable(now), BTreeSet::from([Holding { part: 0, epoch: 3 }]));
        let w = (0..).map(|i| format!("wh_{i}")).find(|w| partition_of(w, 2) == 1).unwrap();
        assert_eq!(h.holding_of(&w, now), None);
        assert_eq!(h.recording_under(&w), Some(Holding { part: 1, epoch: 4 }));
        // Past the local deadline nothing starts; what finishes is still recorded (the
        // epoch decides in the database).
        let late = now + Duration::from_secs(2);
        assert!(h.startable(late).is_empty());
        assert_eq!(h.recording_under(&w), Some(Holding { part: 1, epoch: 4 }));
    }

    #[test]
    fn a_holder_stops_before_the_database_can_call_it_expired() {
        let sent = Instant::now();
        assert_eq!(stop_by(sent, Duration::from_secs(10), Duration::from_secs(3)), sent + Duration::from_secs(7));
        assert_eq!(stop_by(sent, Duration::from_secs(1), Duration::from_secs(3)), sent);
    }
}

/// What a node holds now, as its [`Keeper`] last learned it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holdings {
    /// Partition → epoch, the leaving ones included.
    pub held: BTreeMap<u32, u64>,
    /// Held partitions this node is letting go at its next round ([`Plan`]): no work
    /// starts under them.
    pub leaving: BTreeSet<u32>,
    /// Past this local instant nothing may be started under them (renewals failed).
    pub stop_by: Option<Instant>,
    /// The number of partitions the cluster agreed on (0 before the first round).
    pub partitions: u32,
    /// How many times a renewal came only after the local deadline had passed. Each one
    /// voids what the node had granted its work: meanwhile its actors may have handed
    /// their webhooks over, and seen from the holdings alone nothing changed (same
    /// partitions, same epochs), so whoever follows them must count it as a new holding.
    pub lapses: u64,
}

impl Holdings {
    /// Whether work of partition `part` may be started now.
    pub fn may_start(&self, part: u32, now: Instant) -> bool {
        self.held.contains_key(&part) && !self.leaving.contains(&part) && self.stop_by.is_some_and(|by| now < by)
    }

    /// The holding `webhook`'s work may be started under at `now`, if any.
    pub fn holding_of(&self, webhook: &str, now: Instant) -> Option<Holding> {
        if self.partitions == 0 {
            return None;
        }
        let part = partition_of(webhook, self.partitions);
        let epoch = *self.held.get(&part)?;
        self.may_start(part, now).then_some(Holding { part, epoch })
    }

    /// The holding the records of `webhook`'s finished work go under: its partition's, as
    /// long as this node believes it holds it — leaving, or past the local deadline, too
    /// (the epoch is checked in the append's transaction, so a lease taken over meanwhile
    /// refuses them).
    pub fn recording_under(&self, webhook: &str) -> Option<Holding> {
        if self.partitions == 0 {
            return None;
        }
        let part = partition_of(webhook, self.partitions);
        self.held.get(&part).map(|&epoch| Holding { part, epoch })
    }

    /// The holdings work may be started under at `now`: all of them before the local
    /// deadline, none after.
    pub fn startable(&self, now: Instant) -> BTreeSet<Holding> {
        match self.stop_by {
            Some(by) if now < by => self
                .held
                .iter()
                .filter(|(part, _)| !self.leaving.contains(part))
                .map(|(&part, &epoch)| Holding { part, epoch })
                .collect(),
            _ => Default::default(),
        }
    }
}

/// The lapse count of `renewed` when it replaces `published` at `now`: one more if it
/// renews holdings whose local deadline had passed (see [`Holdings::lapses`]).
pub fn lapses_after(published: &Holdings, renewed: &Holdings, now: Instant) -> u64 {
    let renewal = renewed.stop_by != published.stop_by;
    let lapsed = published.stop_by.is_some_and(|by| now >= by) && !published.held.is_empty();
    published.lapses + u64::from(renewal && lapsed)
}

/// How a node keeps its share of the partitions.
#[derive(Debug, Clone)]
pub struct KeeperOptions {
    pub node: String,
    pub partitions: u32,
    /// `ownership_ttl`: how long a lease lasts unrenewed.
    pub ttl: Duration,
}

/// A node's lease keeper: a thread that beats the node's heart, renews its leases, takes
/// its fair share of free partitions and lets go of more than its share, every quarter of
/// the TTL; and publishes what it holds. A holder whose renewals fail keeps its holdings
/// until its local deadline (a third of the TTL before the database's expiry), then holds
/// nothing it may start work under.
pub struct Keeper {
    state: tokio::sync::watch::Receiver<Holdings>,
    /// How long work handed over may still have attempts on the wire.
    grace: Duration,
    counts: std::sync::Arc<Counts>,
    stop: std::sync::mpsc::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Keeper {
    /// Starts keeping (the first round runs before this returns, so a node starts with its
    /// share when there is one to take).
    pub fn spawn(db: std::sync::Arc<super::Database>, options: KeeperOptions) -> Result<Keeper, PgError> {
        let (publish, state) = tokio::sync::watch::channel(Holdings::default());
        let (stop, stopped) = std::sync::mpsc::channel::<bool>();
        let (first, first_done) = std::sync::mpsc::channel::<()>();
        let counts = std::sync::Arc::new(Counts::default());
        let counting = counts.clone();
        let grace = handover_grace(options.ttl);
        let thread = std::thread::Builder::new()
            .name("herald-leases".into())
            .spawn(move || keep(&db, &options, &publish, &stopped, first, &counting))
            .map_err(PgError::Runtime)?;
        let _ = first_done.recv_timeout(CONNECT_DEADLINE);
        Ok(Keeper { state, grace, counts, stop, thread: Some(thread) })
    }

    /// How long after this node stops starting a partition's work (it is leaving, or the
    /// local deadline passed) its attempts still on the wire may run before they are cut:
    /// an eighth of the TTL, well inside the quarter until the leaving partition is let go
    /// and the third between the local deadline and the database's expiry.
    pub fn handover_grace(&self) -> Duration {
        self.grace
    }

    /// What this keeper did since it started.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// What the node holds now.
    pub fn holdings(&self) -> Holdings {
        self.state.borrow().clone()
    }

    /// Whether this node may start work of `webhook` now.
    pub fn may_start(&self, webhook: &str) -> bool {
        self.state.borrow().holding_of(webhook, Instant::now()).is_some()
    }

    /// Told each time the holdings change.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<Holdings> {
        self.state.clone()
    }

    /// Stops keeping: with `release`, lets every lease go at once (a graceful shutdown; the
    /// others take them next round) — without it, as a crash would, leaving them to expire.
    pub fn stop(mut self, release: bool) {
        let _ = self.stop.send(release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Lets every lease go (a graceful shutdown) and stops keeping, waiting at most
    /// `within` for the database to hear it.
    pub fn let_go(&self, within: Duration) {
        let _ = self.stop.send(true);
        let until = Instant::now() + within;
        while Instant::now() < until && self.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// What a keeper did since it started (for the metrics): monotonic counts.
#[derive(Debug, Default)]
pub struct Counts {
    /// Rounds that renewed (heartbeat, renewals, evening out) within their deadline.
    pub renewals: AtomicU64,
    /// Rounds that failed or timed out.
    pub renewal_failures: AtomicU64,
    /// Partitions newly held (taken, or taken back with a new epoch).
    pub gained: AtomicU64,
    /// Partitions no longer held (let go to even out shares, or lost to another node).
    pub lost: AtomicU64,
}

impl Counts {
    /// Counts one round's outcome: `before` and `after` are the holdings around it.
    fn round(&self, before: &Holdings, after: Option<&Holdings>) {
        let Some(after) = after else {
            self.renewal_failures.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.renewals.fetch_add(1, Ordering::Relaxed);
        let gained = after.held.iter().filter(|(p, e)| before.held.get(p) != Some(e)).count();
        let lost = before.held.iter().filter(|(p, e)| after.held.get(p) != Some(e)).count();
        self.gained.fetch_add(gained as u64, Ordering::Relaxed);
        self.lost.fetch_add(lost as u64, Ordering::Relaxed);
    }
}

/// See [`Keeper::handover_grace`].
pub fn handover_grace(ttl: Duration) -> Duration {
    ttl / 8
}

/// How long the keeper's first round may take before `spawn` returns anyway.
const CONNECT_DEADLINE: Duration = Duration::from_secs(15);

fn keep(
    db: &super::Database,
    o: &KeeperOptions,
    publish: &tokio::sync::watch::Sender<Holdings>,
    stopped: &std::sync::mpsc::Receiver<bool>,
    first: std::sync::mpsc::Sender<()>,
    counts: &Counts,
) {
    let mut session: Option<(tokio_postgres::Client, u32)> = None;
    let mut current = Holdings::default();
    let mut first = Some(first);
    loop {
        let sent = Instant::now();
        let leaving = &current.leaving;
        let round = db.block_on(async { tokio::time::timeout(o.ttl / 2, round(db, &mut session, o, leaving)).await });
        match round {
            Ok(Ok((held, leaving, partitions))) => {
                let renewed = Holdings {
                    held: held.into_iter().map(|h| (h.part, h.epoch)).collect(),
                    leaving,
                    stop_by: Some(stop_by(sent, o.ttl, o.ttl / 3)),
                    partitions,
                    lapses: current.lapses,
                };
                counts.round(&current, Some(&renewed));
                current = renewed;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, node = %o.node, "cannot renew this node's leases");
                counts.round(&current, None);
                session = None;
            }
            Err(_) => {
                tracing::warn!(node = %o.node, "renewing this node's leases timed out");
                counts.round(&current, None);
                session = None;
            }
        }
        publish.send_if_modified(|h| {
            // Judged under the lock every `may_start` reads through: whoever found the
            // deadline passed read the holdings before this, so sees it counted.
            current.lapses = lapses_after(h, &current, Instant::now());
            let changed = *h != current;
            *h = current.clone();
            changed
        });
        if let Some(f) = first.take() {
            let _ = f.send(());
        }
        match stopped.recv_timeout(o.ttl / 4) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Ok(release_all) => {
                if release_all {
                    let held: Vec<Holding> =
                        current.held.iter().map(|(&part, &epoch)| Holding { part, epoch }).collect();
                    let releasing = async {
                        let c = db.connect().await?;
                        release(&c, &o.node, &held).await?;
                        c.execute("DELETE FROM herald.nodes WHERE node = $1", &[&o.node]).await?;
                        Ok::<_, PgError>(())
                    };
                    let _ = db.block_on(async { tokio::time::timeout(o.ttl / 2, releasing).await });
                }
                publish.send_replace(Holdings::default());
                return;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// One round: heartbeat, renew, then even out the share ([`plan`]); returns what is held,
/// what of it is leaving, and the number of partitions. A new connection first agrees on
/// the number of partitions (the first node to ask sets it for the cluster).
async fn round(
    db: &super::Database,
    session: &mut Option<(tokio_postgres::Client, u32)>,
    o: &KeeperOptions,
    leaving: &BTreeSet<u32>,
) -> Result<(Vec<Holding>, BTreeSet<u32>, u32), PgError> {
    if session.as_ref().is_some_and(|(c, _)| c.is_closed()) {
        *session = None;
    }
    let (c, partitions) = match session {
        Some(open) => open,
        slot => {
            let c = db.connect().await?;
            let agreed =
                super::records::shared_setting(&c, "partitions", || o.partitions.to_be_bytes().to_vec()).await?;
            let partitions = agreed.try_into().map(u32::from_be_bytes).unwrap_or(o.partitions).max(1);
            if partitions != o.partitions {
                tracing::warn!(
                    configured = o.partitions,
                    agreed = partitions,
                    "the cluster uses another number of partitions"
                );
            }
            ensure_partitions(&c, partitions).await?;
            slot.insert((c, partitions))
        }
    };
    let live = heartbeat(c, &o.node, o.ttl).await?;
    let renewed = renew(c, &o.node, o.ttl).await?;
    let Plan { release: going, kept: mut held, leaving, take: want } =
        plan(renewed, leaving, fair_share(*partitions, live));
    if !going.is_empty() {
        release(c, &o.node, &going).await?;
    }
    if want > 0 {
        held.extend(take(c, &o.node, want, o.ttl).await?);
        held.sort();
    }
    Ok((held, leaving, *partitions))
}
