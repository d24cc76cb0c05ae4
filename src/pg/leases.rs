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
//! - Expiry is judged by the database's clock alone; a holder's own clock only decides when
//!   it stops starting work ([`stop_by`]), well before the database could call it expired.

use super::PgError;
use sha2::{Digest, Sha256};
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

/// Within an append's transaction: whether every holding is still current (its epoch
/// unchanged and its lease unexpired), locking those rows until the transaction ends.
pub async fn fenced(client: &impl GenericClient, node: &str, held: &[Holding]) -> Result<bool, PgError> {
    if held.is_empty() {
        return Ok(true);
    }
    let parts: Vec<i32> = held.iter().map(|h| h.part as i32).collect();
    let rows = client
        .query(
            "SELECT part, epoch FROM herald.leases
             WHERE part = ANY($1) AND owner = $2 AND expires_at > now() ORDER BY part FOR SHARE",
            &[&parts, &node],
        )
        .await?;
    let current = holdings(&rows);
    Ok(held.iter().all(|h| current.contains(h)))
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
    /// Partition → epoch.
    pub held: std::collections::BTreeMap<u32, u64>,
    /// Past this local instant nothing may be started under them (renewals failed).
    pub stop_by: Option<Instant>,
}

impl Holdings {
    /// Whether work of partition `part` may be started now.
    pub fn may_start(&self, part: u32, now: Instant) -> bool {
        self.held.contains_key(&part) && self.stop_by.is_some_and(|by| now < by)
    }
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
        let thread = std::thread::Builder::new()
            .name("herald-leases".into())
            .spawn(move || keep(&db, &options, &publish, &stopped, first))
            .map_err(PgError::Runtime)?;
        let _ = first_done.recv_timeout(CONNECT_DEADLINE);
        Ok(Keeper { state, stop, thread: Some(thread) })
    }

    /// What the node holds now.
    pub fn holdings(&self) -> Holdings {
        self.state.borrow().clone()
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
}

impl Drop for Keeper {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// How long the keeper's first round may take before `spawn` returns anyway.
const CONNECT_DEADLINE: Duration = Duration::from_secs(15);

fn keep(
    db: &super::Database,
    o: &KeeperOptions,
    publish: &tokio::sync::watch::Sender<Holdings>,
    stopped: &std::sync::mpsc::Receiver<bool>,
    first: std::sync::mpsc::Sender<()>,
) {
    let mut session: Option<(tokio_postgres::Client, u32)> = None;
    let mut current = Holdings::default();
    let mut first = Some(first);
    loop {
        let sent = Instant::now();
        let round = db.block_on(async { tokio::time::timeout(o.ttl / 2, round(db, &mut session, o)).await });
        match round {
            Ok(Ok(held)) => {
                current = Holdings {
                    held: held.into_iter().map(|h| (h.part, h.epoch)).collect(),
                    stop_by: Some(stop_by(sent, o.ttl, o.ttl / 3)),
                };
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, node = %o.node, "cannot renew this node's leases");
                session = None;
            }
            Err(_) => {
                tracing::warn!(node = %o.node, "renewing this node's leases timed out");
                session = None;
            }
        }
        publish.send_if_modified(|h| {
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

/// One round: heartbeat, renew, then even out the share. A new connection first agrees on
/// the number of partitions (the first node to ask sets it for the cluster).
async fn round(
    db: &super::Database,
    session: &mut Option<(tokio_postgres::Client, u32)>,
    o: &KeeperOptions,
) -> Result<Vec<Holding>, PgError> {
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
    let mut held = renew(c, &o.node, o.ttl).await?;
    let share = fair_share(*partitions, live) as usize;
    if held.len() > share {
        let extra = held.split_off(share);
        release(c, &o.node, &extra).await?;
    } else if held.len() < share {
        held.extend(take(c, &o.node, (share - held.len()) as u32, o.ttl).await?);
        held.sort();
    }
    Ok(held)
}
