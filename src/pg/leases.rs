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
